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
pub(crate) mod peers;
mod run;
pub(crate) mod tree;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rayon::prelude::*;

use fixture::{Case, Failure};
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

/// An image docker built and read back.
struct DockerImage {
    image: image::Image,
    /// The build's plain progress.
    progress: String,
    /// Where the `docker save` archive was unpacked.
    unpacked: PathBuf,
}

/// Prepares the context of `case` under `scratch` unless it exists, builds the base image in
/// docker when the case names it, and returns the context and docker's Dockerfile.
fn docker_context(case: &Case, scratch: &Path) -> Result<(PathBuf, PathBuf), String> {
    let ctx = scratch.join("ctx");
    let dockerfile = if ctx.exists() {
        docker_dockerfile(case, &ctx)
    } else {
        case.prepare(&ctx)?
    };
    if uses_base(&ctx, &dockerfile) {
        docker_base()?;
    }
    Ok((ctx, dockerfile))
}

/// The arguments docker gets for `file`: the case's, then its docker-only ones.
fn docker_args(case: &Case, file: &str, ctx: &Path) -> Result<Vec<String>, String> {
    let mut args = case.args(file, ctx)?;
    args.extend(case.args("args.docker", ctx)?);
    Ok(args)
}

/// Builds `case` in docker and reads the image back.
fn docker_image(
    case: &Case,
    scratch: &Path,
    tag: &str,
    extra: &[&str],
) -> Result<DockerImage, String> {
    let (ctx, dockerfile) = docker_context(case, scratch)?;
    let mut args = docker_args(case, "args", &ctx)?;
    args.extend(extra.iter().map(|s| s.to_string()));
    let built = peers::docker_build(&ctx, &dockerfile, &args, tag)?;
    let (image, unpacked) = docker_read(tag, scratch)?;
    Ok(DockerImage {
        image,
        progress: built.progress,
        unpacked,
    })
}

/// Saves the docker image `tag` under `scratch` and reads it back.
fn docker_read(tag: &str, scratch: &Path) -> Result<(image::Image, PathBuf), String> {
    let saved = scratch.join(format!("{}.tar", tag.replace(':', "_")));
    peers::docker_save(tag, &saved)?;
    let unpacked = scratch.join(format!("{}.d", tag.replace(':', "_")));
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok((image::from_docker_save(&saved, &unpacked)?, unpacked))
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
    let expect = case.expectations()?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tag = docker_tag(&case.name);
    if let Some(failure) = expect.fails {
        return run_failing_case(case, tmp.path(), &tag, failure);
    }
    let docker = docker_image(case, tmp.path(), &tag, &[])?;
    let ctx = tmp.path().join("ctx");
    let store = tmp.path().join("kiln-root");
    if uses_base(&ctx, &docker_dockerfile(case, &ctx)) {
        kiln_base(&store, tmp.path())?;
    }
    let built = match peers::kiln_build(
        &store,
        &ctx,
        &ctx.join("Dockerfile"),
        &case.args("args", &ctx)?,
        &tag,
    ) {
        Err(e) if run::kiln_pending(&case.name, &e) => return Ok(()),
        other => other?,
    };
    let kiln = image::from_oci_layout(&store, &format!("docker.io/library/{tag}"))?;
    let checks = Checks {
        mtime: expect.mtime,
    };
    let mut diffs = tree::compare(&docker.image.tree, &kiln.tree, ("docker", "kiln"), &checks);
    diffs.extend(image::compare_config(
        &docker.image.config,
        &kiln.config,
        ("docker", "kiln"),
    ));
    diffs.extend(run::leaks(
        &expect.absent,
        &docker.unpacked,
        &docker.progress,
        "docker",
    ));
    diffs.extend(run::leaks(&expect.absent, &store, &built.progress, "kiln"));
    outcome(diffs)
}

/// Builds a case that must fail in a RUN with both tools and checks how each fails.
fn run_failing_case(
    case: &Case,
    scratch: &Path,
    tag: &str,
    failure: Failure,
) -> Result<(), String> {
    let (ctx, dockerfile) = docker_context(case, scratch)?;
    let docker = peers::docker_build(&ctx, &dockerfile, &docker_args(case, "args", &ctx)?, tag)
        .map(|b| b.progress);
    let mut diffs = run::failure_mismatch("docker", &docker, failure, false);
    let store = scratch.join("kiln-root");
    if uses_base(&ctx, &dockerfile) {
        kiln_base(&store, scratch)?;
    }
    let args = case.args("args", &ctx)?;
    match peers::kiln_build(&store, &ctx, &ctx.join("Dockerfile"), &args, tag) {
        Err(e) if run::kiln_pending(&case.name, &e) => {}
        kiln => diffs.extend(run::failure_mismatch(
            "kiln",
            &kiln.map(|b| b.progress),
            failure,
            true,
        )),
    }
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
    let expect = case.expectations()?;
    let mut diffs = Vec::new();
    let mut kiln_runs = true;
    for (round, args_file) in [("first build", "args"), ("rebuild", "args.after")] {
        if round == "rebuild" {
            fixture::apply(&ctx, &case.lines("edit")?)?;
        }
        let args = match case.args(args_file, &ctx)? {
            after if after.is_empty() => case.args("args", &ctx)?,
            after => after,
        };
        let mut for_docker = args.clone();
        for_docker.extend(case.args("args.docker", &ctx)?);
        let docker = peers::docker_build(&ctx, &dockerfile, &for_docker, &tag)?;
        let d = peers::steps(&docker.progress);
        if d.is_empty() {
            diffs.push(format!("{round}: docker's progress shows no steps"));
        }
        if round == "rebuild" {
            diffs.extend(peers::expected_steps(&d, &expect.rebuild, "docker"));
        }
        if !kiln_runs {
            continue;
        }
        let kiln = match peers::kiln_build(&store, &ctx, &ctx.join("Dockerfile"), &args, &tag) {
            Err(e) if run::kiln_pending(&case.name, &e) => {
                kiln_runs = false;
                continue;
            }
            other => other?,
        };
        let k = peers::steps(&kiln.progress);
        if round == "rebuild" {
            diffs.extend(peers::expected_steps(&k, &expect.rebuild, "kiln"));
        }
        for line in peers::compare_steps(&d, &k, ("docker", "kiln")) {
            diffs.push(format!("{round}: {line}"));
        }
    }
    let wanted = std::fs::read(ctx.join(".nonce")).map_err(|e| e.to_string())?;
    for path in &expect.nonce {
        let (docker, _) = docker_read(&tag, tmp.path())?;
        diffs.extend(nonce_mismatch("docker", &docker.tree, path, &wanted));
        if kiln_runs {
            let kiln = image::from_oci_layout(&store, &format!("docker.io/library/{tag}"))?;
            diffs.extend(nonce_mismatch("kiln", &kiln.tree, path, &wanted));
        }
    }
    outcome(diffs)
}

/// A line when `path` in `tree` is not a file holding exactly `wanted`.
fn nonce_mismatch(who: &str, tree: &tree::Tree, path: &str, wanted: &[u8]) -> Option<String> {
    let want = tree::Kind::File {
        size: wanted.len() as u64,
        sha256: tree::hex(&<sha2::Sha256 as sha2::Digest>::digest(wanted)),
    };
    let found = tree
        .nodes
        .get(path.trim_start_matches('/'))
        .map(|n| &n.kind);
    (found != Some(&want)).then(|| {
        format!(
            "rebuild: {who}'s {path} is {} where the nonce ({}) was expected",
            found.map_or_else(|| "missing".to_owned(), tree::Kind::describe),
            want.describe()
        )
    })
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
/// A case that must fail has to fail both times as its `check` says.
fn docker_twice(case: &Case) -> Result<(), String> {
    let expect = case.expectations()?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let again = format!("kiln-diff-{}:again", case.name);
    if let Some(failure) = expect.fails {
        let (ctx, dockerfile) = docker_context(case, tmp.path())?;
        let mut diffs = Vec::new();
        for (tag, extra) in [(docker_tag(&case.name), None), (again, Some("--no-cache"))] {
            let mut args = docker_args(case, "args", &ctx)?;
            args.extend(extra.map(str::to_owned));
            let built = peers::docker_build(&ctx, &dockerfile, &args, &tag).map(|b| b.progress);
            diffs.extend(run::failure_mismatch("docker", &built, failure, false));
        }
        return outcome(diffs);
    }
    let first = docker_image(case, tmp.path(), &docker_tag(&case.name), &[])?;
    let second = docker_image(case, tmp.path(), &again, &["--no-cache"])?;
    let checks = Checks {
        mtime: expect.mtime,
    };
    let names = ("first", "second");
    let mut diffs = tree::compare(&first.image.tree, &second.image.tree, names, &checks);
    diffs.extend(image::compare_config(
        &first.image.config,
        &second.image.config,
        names,
    ));
    for built in [&first, &second] {
        diffs.extend(run::leaks(
            &expect.absent,
            &built.unpacked,
            &built.progress,
            "docker",
        ));
    }
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
    let base = docker_image(&base_case(), tmp.path(), BASE_TAG, &[])
        .expect("base builds")
        .image;
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
