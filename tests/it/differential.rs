//! Differential tests: the same Dockerfile built by `docker build` (BuildKit in dockerd) and by
//! kiln, both images flattened and compared path by path (type, mode, owner, size, content
//! digest, link target, hardlink groups) and config field by field; and cache scenarios whose
//! CACHED steps must match between the two.
//!
//! Cases live in fixtures/differential/<case>/ (see `fixture` for the files), cache scenarios
//! in fixtures/differential/_cache/<scenario>/, and the shared base image in
//! fixtures/differential/_base/ (built FROM scratch with the host's busybox, tagged
//! `kiln-diff-base:1` in docker and in each kiln store; no registry is ever contacted).
//! When docker is unreachable the tests print why and pass, unless `KILN_REQUIRE_PEERS` is set.

mod fixture;
pub(crate) mod image;
mod peers;
pub(crate) mod tree;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rayon::prelude::*;

use fixture::Case;
use tree::Checks;

/// The base image every case may build on, under the same name in both tools.
const BASE_TAG: &str = "kiln-diff-base:1";

fn root() -> PathBuf {
    crate::util::fixtures_dir("differential")
}

fn docker_ready(test: &str) -> bool {
    crate::util::peer_available("docker", test)
        && crate::util::peer_ready(test, peers::docker_unreachable())
}

fn base_case() -> Case {
    Case {
        name: "_base".to_owned(),
        dir: root().join("_base"),
    }
}

/// Builds the base image in docker once per test process.
fn docker_base() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
            let ctx = tmp.path().join("ctx");
            let dockerfile = base_case().prepare(&ctx)?;
            peers::docker_build(&ctx, &dockerfile, &[], BASE_TAG).map(drop)
        })
        .clone()
}

/// Builds the base image into the kiln store at `store`.
fn kiln_base(store: &Path, scratch: &Path) -> Result<(), String> {
    let ctx = scratch.join("base-ctx");
    base_case().prepare(&ctx)?;
    peers::kiln_build(store, &ctx, &ctx.join("Dockerfile"), &[], BASE_TAG).map(drop)
}

/// True if and only if either Dockerfile of the prepared case names the base image.
fn uses_base(ctx: &Path, docker_dockerfile: &Path) -> bool {
    [ctx.join("Dockerfile"), docker_dockerfile.to_owned()]
        .iter()
        .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(BASE_TAG)))
}

fn docker_tag(case: &str) -> String {
    format!("kiln-diff-{case}:1")
}

/// Builds `case` in docker and reads the image back.
fn docker_image(
    case: &Case,
    scratch: &Path,
    tag: &str,
    extra: &[&str],
) -> Result<image::Image, String> {
    let ctx = scratch.join("ctx");
    let dockerfile = if ctx.exists() {
        docker_dockerfile(case, &ctx)
    } else {
        case.prepare(&ctx)?
    };
    if uses_base(&ctx, &dockerfile) {
        docker_base()?;
    }
    let mut args = case.args("args")?;
    args.extend(extra.iter().map(|s| s.to_string()));
    peers::docker_build(&ctx, &dockerfile, &args, tag)?;
    let saved = scratch.join(format!("{}.tar", tag.replace(':', "_")));
    peers::docker_save(tag, &saved)?;
    let unpacked = scratch.join(format!("{}.d", tag.replace(':', "_")));
    image::from_docker_save(&saved, &unpacked)
}

/// The Dockerfile docker builds for an already prepared context.
fn docker_dockerfile(case: &Case, ctx: &Path) -> PathBuf {
    if case.dir.join("Dockerfile.docker").is_file() {
        ctx.with_extension("Dockerfile.docker")
    } else {
        ctx.join("Dockerfile")
    }
}

/// Builds one case with both tools; Err holds the readable list of differences.
fn run_case(case: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tag = docker_tag(&case.name);
    let docker = docker_image(case, tmp.path(), &tag, &[])?;
    let ctx = tmp.path().join("ctx");
    let store = tmp.path().join("kiln-root");
    if uses_base(&ctx, &docker_dockerfile(case, &ctx)) {
        kiln_base(&store, tmp.path())?;
    }
    peers::kiln_build(
        &store,
        &ctx,
        &ctx.join("Dockerfile"),
        &case.args("args")?,
        &tag,
    )?;
    let kiln = image::from_oci_layout(&store, &format!("docker.io/library/{tag}"))?;
    let checks = Checks {
        mtime: case.mtime_checks()?,
    };
    let mut diffs = tree::compare(&docker.tree, &kiln.tree, ("docker", "kiln"), &checks);
    diffs.extend(image::compare_config(
        &docker.config,
        &kiln.config,
        ("docker", "kiln"),
    ));
    outcome(diffs)
}

/// Runs `run` over every case in parallel and reports through `util::finish`.
fn run_all(suite: &str, cases: Vec<Case>, run: fn(&Case) -> Result<(), String>) {
    let failures: Vec<String> = cases
        .par_iter()
        .filter_map(|case| {
            run(case)
                .err()
                .map(|e| format!("--- {}\n{}", case.name, indent(&e)))
        })
        .collect();
    crate::util::finish(suite, cases.len(), &failures);
}

/// Ok when nothing differs, else the difference lines.
fn outcome(diffs: Vec<String>) -> Result<(), String> {
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn differential_cases_match_docker_build() {
    if !docker_ready("differential_cases_match_docker_build") {
        return;
    }
    let cases = fixture::cases(&root()).expect("fixtures/differential lists");
    assert!(cases.len() >= 18, "only {} differential cases", cases.len());
    run_all("differential", cases, run_case);
}

/// Builds a cache scenario twice with each tool, editing the context in between, and compares
/// which steps each took from its cache, on both builds.
fn run_cache_scenario(case: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ctx = tmp.path().join("ctx");
    let dockerfile = case.prepare(&ctx)?;
    // dockerd's cache outlives test runs; a fresh nonce, copied by each scenario's first step,
    // makes both builds new to it, as they are to kiln's fresh store.
    let nonce = format!(
        "{}-{:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    std::fs::write(ctx.join(".nonce"), nonce).map_err(|e| e.to_string())?;
    let store = tmp.path().join("kiln-root");
    if uses_base(&ctx, &dockerfile) {
        docker_base()?;
        kiln_base(&store, tmp.path())?;
    }
    let tag = format!("kiln-diff-cache-{}:1", case.name);
    let mut diffs = Vec::new();
    for (round, args_file) in [("first build", "args"), ("rebuild", "args.after")] {
        if round == "rebuild" {
            fixture::apply(&ctx, &case.lines("edit")?)?;
        }
        let args = match case.args(args_file)? {
            after if after.is_empty() => case.args("args")?,
            after => after,
        };
        let docker = peers::docker_build(&ctx, &dockerfile, &args, &tag)?;
        let kiln = peers::kiln_build(&store, &ctx, &ctx.join("Dockerfile"), &args, &tag)?;
        let (d, k) = (peers::steps(&docker.progress), peers::steps(&kiln.progress));
        if d.is_empty() {
            diffs.push(format!("{round}: docker's progress shows no steps"));
        }
        for line in peers::compare_steps(&d, &k, ("docker", "kiln")) {
            diffs.push(format!("{round}: {line}"));
        }
    }
    outcome(diffs)
}

#[test]
fn cache_hits_match_docker_build() {
    if !docker_ready("cache_hits_match_docker_build") {
        return;
    }
    let cases = fixture::cases(&root().join("_cache")).expect("fixtures/differential/_cache lists");
    assert!(cases.len() >= 5, "only {} cache scenarios", cases.len());
    run_all("differential cache", cases, run_cache_scenario);
}

/// Builds `case` in docker twice, the second time with `--no-cache`; Err lists what differs.
fn docker_twice(case: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let first = docker_image(case, tmp.path(), &docker_tag(&case.name), &[])?;
    let again = format!("kiln-diff-{}:again", case.name);
    let second = docker_image(case, tmp.path(), &again, &["--no-cache"])?;
    let checks = Checks {
        mtime: case.mtime_checks()?,
    };
    let names = ("first", "second");
    let mut diffs = tree::compare(&first.tree, &second.tree, names, &checks);
    diffs.extend(image::compare_config(&first.config, &second.config, names));
    outcome(diffs)
}

/// The docker half of the harness checked against itself: a case built twice (the second time
/// with `--no-cache`) flattens to equal trees and configs, and the trees hold what the
/// Dockerfiles say, so a kiln comparison rests on a sound reading of docker's images.
#[test]
fn docker_side_reads_images_faithfully() {
    if !docker_ready("docker_side_reads_images_faithfully") {
        return;
    }
    let cases = fixture::cases(&root()).expect("fixtures/differential lists");
    run_all("differential docker self-check", cases, docker_twice);

    // Known facts of the base image, read through the same extraction.
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = docker_image(&base_case(), tmp.path(), BASE_TAG, &[]).expect("base builds");
    let busybox = &base.tree.nodes["bin/busybox"];
    let host = std::fs::read("/bin/busybox").expect("host busybox");
    let digest = tree::hex(&<sha2::Sha256 as sha2::Digest>::digest(&host));
    assert_eq!(
        busybox.kind,
        tree::Kind::File {
            size: host.len() as u64,
            sha256: digest
        }
    );
    assert_eq!((busybox.mode, busybox.uid, busybox.gid), (0o755, 0, 0));
    assert_eq!(
        base.tree.nodes["bin/sh"].kind,
        tree::Kind::Symlink("busybox".to_owned())
    );
}
