//! `kiln build` end to end: the real binary on contexts made in temp dirs, the store in
//! another; cache hits and misses with their reasons, errors, metadata, the store commands.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use crate::util::{kiln, Run};

/// A build context and a store, both temporary.
struct Project {
    context: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Project {
    fn new(files: &[(&str, &str)]) -> Project {
        let project = Project {
            context: tempfile::tempdir().expect("temp context"),
            store: tempfile::tempdir().expect("temp store"),
        };
        for (path, text) in files {
            project.write(path, text);
        }
        project
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.context.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("context dirs");
        }
        fs::write(path, text).expect("context file");
    }

    fn root(&self) -> &str {
        self.store.path().to_str().expect("utf-8 temp path")
    }

    /// `kiln build --root … --progress plain <extra> <context>`.
    fn build(&self, extra: &[&str]) -> Run {
        self.build_with_stdin(extra, b"")
    }

    fn build_with_stdin(&self, extra: &[&str], stdin: &[u8]) -> Run {
        let context = self.context.path().to_str().expect("utf-8 temp path");
        let mut args = vec!["build", "--root", self.root(), "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(context);
        kiln(&args, stdin)
    }

    fn ok(&self, extra: &[&str]) -> Build {
        let run = self.build(extra);
        assert_eq!(run.code, Some(0), "build failed:\n{}", run.stderr);
        Build::from(run)
    }

    fn kiln(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--root", self.root()]);
        kiln(&all, b"")
    }
}

/// What one successful build printed: the digest and each step's outcome.
struct Build {
    digest: String,
    stderr: String,
    /// Step text (after `[k/n] `) → `CACHED`, or the cache-miss reasons joined by `; `.
    steps: BTreeMap<String, String>,
}

impl From<Run> for Build {
    fn from(run: Run) -> Build {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for line in run.stderr.lines() {
            let Some((vertex, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' '))
            else {
                continue;
            };
            if let Some(step) = rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
                if !step.0.starts_with("internal") {
                    names.insert(vertex.to_string(), step.1.to_string());
                }
                continue;
            }
            let Some(name) = names.get(vertex) else {
                continue;
            };
            if rest == "CACHED" {
                steps.insert(name.clone(), "CACHED".to_string());
            } else if let Some(reason) = rest.strip_prefix("cache miss: ") {
                let entry: &mut String = steps.entry(name.clone()).or_default();
                if !entry.is_empty() {
                    entry.push_str("; ");
                }
                entry.push_str(reason);
            }
        }
        Build {
            digest: run.stdout.trim().to_string(),
            stderr: run.stderr,
            steps,
        }
    }
}

impl Build {
    fn outcome(&self, step: &str) -> &str {
        self.steps
            .get(step)
            .unwrap_or_else(|| panic!("no step {step:?} in:\n{}", self.stderr))
    }

    fn ran(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(_, outcome)| *outcome != "CACHED")
            .map(|(step, _)| step.as_str())
            .collect()
    }
}

const APP: &str = "FROM scratch
COPY a.txt /a.txt
ARG VERSION=1.0
ENV V=$VERSION
COPY dir /dir/
WORKDIR /app
COPY b.txt ./
LABEL version=$VERSION
COPY c-$VERSION.txt /c.txt
";

fn app() -> Project {
    Project::new(&[
        ("Dockerfile", APP),
        ("a.txt", "a"),
        ("dir/x", "x"),
        ("dir/sub/y", "y"),
        ("b.txt", "b"),
        ("c-1.0.txt", "c1"),
        ("c-1.1.txt", "c11"),
        ("ignored.log", "noise"),
        (".dockerignore", "*.log\n"),
    ])
}

#[test]
fn a_rebuild_without_changes_runs_nothing_and_gives_the_same_image() {
    let project = app();
    let first = project.ok(&["-t", "app"]);
    assert!(first.digest.starts_with("sha256:"), "{}", first.digest);
    assert_eq!(
        first.outcome("COPY a.txt /a.txt"),
        "no earlier build of this step"
    );
    let second = project.ok(&["-t", "app"]);
    assert!(second.ran().is_empty(), "ran: {:?}", second.ran());
    assert_eq!(second.digest, first.digest);
}

#[test]
fn touching_mtimes_or_ignored_files_runs_nothing() {
    let project = app();
    let first = project.ok(&[]);
    let file = fs::File::options()
        .write(true)
        .open(project.path("b.txt"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .expect("touch");
    project.write("ignored.log", "other noise");
    let second = project.ok(&[]);
    assert!(second.ran().is_empty(), "ran: {:?}", second.ran());
    assert_eq!(second.digest, first.digest);
}

#[test]
fn a_changed_file_reruns_its_copy_and_what_follows_with_the_reason() {
    let project = app();
    project.ok(&[]);
    project.write("b.txt", "b changed");
    let second = project.ok(&[]);
    assert_eq!(second.ran(), ["COPY b.txt ./", "COPY c-1.0.txt /c.txt"]);
    let reason = second.outcome("COPY b.txt ./");
    assert!(
        reason.starts_with("b.txt changed (sha256:") && reason.contains(" → sha256:"),
        "{reason}"
    );
    assert_eq!(
        second.outcome("COPY c-1.0.txt /c.txt"),
        "parent step re-ran"
    );
}

#[test]
fn a_changed_build_arg_reruns_only_the_steps_that_use_it() {
    let project = app();
    project.ok(&[]);
    let second = project.ok(&["--build-arg", "VERSION=1.1"]);
    assert_eq!(second.ran(), ["COPY c-1.1.txt /c.txt"]);
    let reason = second.outcome("COPY c-1.1.txt /c.txt");
    assert!(
        reason.contains(r#"build arg VERSION changed ("1.0" → "1.1")"#),
        "{reason}"
    );
}

#[test]
fn no_cache_and_no_cache_filter_say_so() {
    let project = Project::new(&[
        (
            "Dockerfile",
            "FROM scratch AS base\nCOPY a /a\nFROM scratch AS final\nCOPY --from=base /a /b\nCOPY a /c\n",
        ),
        ("a", "a"),
    ]);
    project.ok(&[]);
    let all = project.ok(&["--no-cache"]);
    assert_eq!(all.outcome("COPY a /a"), "--no-cache");
    assert_eq!(all.outcome("COPY a /c"), "--no-cache");
    let filtered = project.ok(&["--no-cache-filter", "final"]);
    assert_eq!(filtered.outcome("COPY a /a"), "CACHED");
    assert_eq!(filtered.outcome("COPY a /c"), "--no-cache-filter final");
}

#[test]
fn the_dockerfile_can_come_from_stdin_or_elsewhere() {
    let project = Project::new(&[
        ("a", "a"),
        ("other/Build.file", "FROM scratch\nCOPY a /x\n"),
    ]);
    let run = project.build_with_stdin(&["-f", "-"], b"FROM scratch\nCOPY a /a\n");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let elsewhere = project.path("other/Build.file");
    let run = project.build(&["-f", elsewhere.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("[internal] load build definition from Build.file"),
        "{}",
        run.stderr
    );
}

#[test]
fn errors_point_at_the_dockerfile() {
    let missing = Project::new(&[("Dockerfile", "FROM scratch\n\nCOPY nope.txt /x\n")]);
    let run = missing.build(&[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(":3:1: error: COPY nope.txt /x: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nope.txt"), "{}", run.stderr);
    assert!(
        run.stderr.contains("  3 | COPY nope.txt /x"),
        "{}",
        run.stderr
    );

    // No shell in an empty image: the RUN fails, located, whatever the sandbox can do here.
    let run_step = Project::new(&[("Dockerfile", "FROM scratch\nRUN echo hi\n")]);
    let run = run_step.build(&[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains(":2:1: error: RUN echo hi: "),
        "{}",
        run.stderr
    );

    let no_base = Project::new(&[("Dockerfile", "FROM nothing-here:1\n")]);
    let run = no_base.build(&[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains(":1:1: error: FROM nothing-here:1: image"),
        "{}",
        run.stderr
    );

    let typo = Project::new(&[("Dockerfile", "FROM scratch\nCOPPY a /a\n")]);
    let run = typo.build(&[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("did you mean 'COPY'?"),
        "{}",
        run.stderr
    );

    let run = kiln(&["build", "/definitely/not/here"], b"");
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("is not a directory"), "{}", run.stderr);
}

#[test]
fn the_metadata_file_has_digests_and_each_steps_outcome() {
    let project = app();
    let metadata = project.context.path().join("meta.json");
    project.write(".dockerignore", "*.log\nmeta.json\n");
    let build = project.ok(&["--metadata-file", metadata.to_str().unwrap(), "-t", "app:1"]);
    let document: serde_json::Value =
        serde_json::from_slice(&fs::read(&metadata).expect("metadata file")).expect("json");
    assert_eq!(document["containerimage.digest"], build.digest.as_str());
    assert!(document["containerimage.config.digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(document["image.name"], "docker.io/library/app:1");
    let steps = document["kiln.steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 5, "{steps:?}");
    for step in steps {
        assert_eq!(step["cached"], false);
        assert!(step["reasons"].as_array().is_some_and(|r| !r.is_empty()));
        assert!(step["layer"]
            .as_str()
            .is_some_and(|l| l.starts_with("sha256:")));
        assert!(step["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("sha256:")));
    }
}

#[test]
fn explain_prints_the_key_difference() {
    let project = app();
    project.ok(&[]);
    project.write("b.txt", "b changed");
    let run = project.build(&["--explain"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("~ files/b.txt"), "{}", run.stderr);
}

#[test]
fn only_the_stages_the_target_needs_are_built() {
    let project = Project::new(&[
        (
            "Dockerfile",
            "FROM scratch AS one\nCOPY a /a\nFROM scratch AS broken\nCOPY missing /m\nFROM one AS two\nCOPY a /again\n",
        ),
        ("a", "a"),
    ]);
    let build = project.ok(&["--target", "two"]);
    assert!(build.steps.contains_key("COPY a /again"));
    assert!(!build.steps.contains_key("COPY missing /m"));
    assert!(
        build.stderr.contains("[two 1/1] COPY a /again"),
        "{}",
        build.stderr
    );
}

#[test]
fn images_tag_history_inspect_and_rmi() {
    let project = app();
    let build = project.ok(&["-t", "app"]);
    let tag = project.kiln(&["tag", "app", "registry.example:5000/team/app:2"]);
    assert_eq!(tag.code, Some(0), "{}", tag.stderr);
    let images = project.kiln(&["images"]);
    assert_eq!(images.code, Some(0), "{}", images.stderr);
    let id = &build.digest["sha256:".len().."sha256:".len() + 12];
    assert!(images.stdout.starts_with("REPOSITORY"), "{}", images.stdout);
    assert!(images.stdout.contains("app "), "{}", images.stdout);
    assert!(
        images.stdout.contains("registry.example:5000/team/app   2"),
        "{}",
        images.stdout
    );
    assert!(images.stdout.contains(id), "{}", images.stdout);

    let history = project.kiln(&["history", "app"]);
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    assert!(
        history.stdout.contains("COPY b.txt ./ # buildkit"),
        "{}",
        history.stdout
    );
    assert!(
        history.stdout.contains("LABEL version=1.0"),
        "{}",
        history.stdout
    );

    let inspect = project.kiln(&["inspect", id]);
    assert_eq!(inspect.code, Some(0), "{}", inspect.stderr);
    let document: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("json");
    assert_eq!(document[0]["Id"], build.digest.as_str());
    assert_eq!(document[0]["Config"]["config"]["WorkingDir"], "/app");
    assert_eq!(document[0]["Config"]["config"]["Labels"]["version"], "1.0");

    let rmi = project.kiln(&["rmi", "app"]);
    assert_eq!(rmi.code, Some(0), "{}", rmi.stderr);
    assert!(
        rmi.stdout.contains("Untagged: app:latest"),
        "{}",
        rmi.stdout
    );
    let images = project.kiln(&["images"]);
    assert!(!images.stdout.contains("\napp "), "{}", images.stdout);
    let gone = project.kiln(&["rmi", "app"]);
    assert_eq!(gone.code, Some(1));

    // The cache survives rmi: the next build of the same Dockerfile runs nothing.
    let again = project.ok(&["-t", "app"]);
    assert!(again.ran().is_empty(), "ran: {:?}", again.ran());
}

#[test]
fn cache_ls_du_and_prune() {
    let project = app();
    project.ok(&[]);
    let ls = project.kiln(&["cache", "ls"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert!(ls.stdout.contains("COPY b.txt ./"), "{}", ls.stdout);
    let du = project.kiln(&["cache", "du"]);
    assert_eq!(du.code, Some(0), "{}", du.stderr);
    assert!(du.stdout.contains("snapshots"), "{}", du.stdout);
    let keep_recent = project.kiln(&["cache", "prune", "--filter", "until=24h"]);
    assert_eq!(keep_recent.code, Some(0), "{}", keep_recent.stderr);
    assert!(
        keep_recent.stdout.contains("Deleted 0 cache entries"),
        "{}",
        keep_recent.stdout
    );
    let prune = project.kiln(&["cache", "prune"]);
    assert_eq!(prune.code, Some(0), "{}", prune.stderr);
    let after = project.ok(&[]);
    assert_eq!(
        after.outcome("COPY a.txt /a.txt"),
        "no earlier build of this step"
    );
}

#[test]
fn two_builds_at_once_share_one_store() {
    let project = app();
    let other = Project::new(&[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "f")]);
    let root = project.root().to_string();
    let other_context = other.context.path().to_str().unwrap().to_string();
    let first = std::thread::spawn({
        let root = root.clone();
        let context = project.context.path().to_str().unwrap().to_string();
        move || kiln(&["build", "--root", &root, "-t", "one", &context], b"")
    });
    let second = kiln(
        &["build", "--root", &root, "-t", "two", &other_context],
        b"",
    );
    let first = first.join().expect("thread");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    let images = project.kiln(&["images"]);
    assert!(images.stdout.contains("one "), "{}", images.stdout);
    assert!(images.stdout.contains("two "), "{}", images.stdout);
}

#[test]
fn independent_stages_build_and_name_like_buildkit() {
    let project = Project::new(&[
        (
            "Dockerfile",
            "FROM scratch\nCOPY a /a\nFROM scratch\nCOPY b /b\nFROM scratch\nCOPY --from=0 /a /a\nCOPY --from=1 /b /b\n",
        ),
        ("a", "a"),
        ("b", "b"),
    ]);
    let build = project.ok(&[]);
    for name in [
        "[stage-0 1/1] COPY a /a",
        "[stage-1 1/1] COPY b /b",
        "[stage-2 1/2] COPY --from=0 /a /a",
    ] {
        assert!(build.stderr.contains(name), "{name} in\n{}", build.stderr);
    }
}

/// A base image built by kiln, then used by name; its ONBUILD trigger runs in the child.
#[test]
fn onbuild_triggers_run_in_the_child_build() {
    let project = Project::new(&[
        (
            "base/Dockerfile",
            "FROM scratch\nCOPY f /f\nONBUILD COPY f /from-trigger\n",
        ),
        ("Dockerfile", "FROM kiln-test-base\nCOPY f /g\n"),
        ("f", "f"),
    ]);
    let base = project.path("base/Dockerfile");
    project.ok(&["-f", base.to_str().unwrap(), "-t", "kiln-test-base"]);
    let child = project.ok(&["-t", "child"]);
    assert!(
        child.steps.contains_key("COPY f /from-trigger"),
        "{}",
        child.stderr
    );
    let inspect = project.kiln(&["inspect", "child"]);
    let document: serde_json::Value = serde_json::from_str(&inspect.stdout).expect("json");
    assert!(
        document[0]["Config"]["config"]["OnBuild"].is_null(),
        "{}",
        inspect.stdout
    );
}

/// README.md's main job builds this image.
#[test]
fn the_readme_example_builds() {
    let store = tempfile::tempdir().expect("temp store");
    let root = store.path().to_str().expect("utf-8");
    let run = kiln(
        &["build", "--root", root, "-t", "hello", "fixtures/hello"],
        b"",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let history = kiln(&["history", "--root", root, "hello"], b"");
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    assert!(
        history
            .stdout
            .contains("COPY --from=site /srv/www/ ./ # buildkit"),
        "{}",
        history.stdout
    );
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    assert!(
        readme.contains("./target/release/kiln build -t hello fixtures/hello"),
        "README.md's main job no longer builds fixtures/hello"
    );
}

/// `--progress=json`: one event per line, each a JSON object naming its event.
#[test]
fn json_progress_is_one_event_per_line() {
    let project = Project::new(&[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "a")]);
    let context = project.context.path().to_str().unwrap();
    let run = kiln(
        &[
            "build",
            "--root",
            project.root(),
            "--progress",
            "json",
            context,
        ],
        b"",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let started: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "started")
        .filter_map(|event| event["name"].as_str())
        .collect();
    assert!(started.contains(&"[1/1] COPY a /a"), "{started:?}");
    assert!(events
        .iter()
        .any(|event| event["event"] == "miss"
            && event["reasons"][0] == "no earlier build of this step"));
    assert!(events.iter().any(|event| event["event"] == "done"));
}

/// True when kiln's sandbox works here; otherwise prints why the caller skips (and fails
/// under `KILN_REQUIRE_PEERS`).
fn sandbox_ready(test: &str) -> bool {
    let init = std::path::Path::new(env!("CARGO_BIN_EXE_kiln"));
    let busybox = std::path::Path::new("/bin/busybox");
    let problem = match kiln::sandbox::probe_with(init) {
        Err(error) => Some(format!("kiln's sandbox cannot run here: {error}")),
        Ok(_) if !busybox.is_file() => Some("/bin/busybox (busybox-static) is missing".into()),
        Ok(_) => None,
    };
    crate::util::peer_ready(test, problem)
}

/// A context whose base stage is busybox with its applets installed.
fn busybox_project(rest: &str) -> Project {
    busybox_project_from("FROM scratch", rest)
}

/// [`busybox_project`] whose first stage starts with `from`, e.g. to name it.
fn busybox_project_from(from: &str, rest: &str) -> Project {
    let project = Project::new(&[(
        "Dockerfile",
        &format!(
            "{from}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{rest}"
        ),
    )]);
    fs::copy("/bin/busybox", project.path("busybox")).expect("copies busybox");
    project
}

#[test]
fn run_steps_stream_output_cache_and_fail_with_their_exit_code() {
    if !sandbox_ready("run_steps_stream_output_cache_and_fail_with_their_exit_code") {
        return;
    }
    let project = busybox_project(
        "RUN echo hello from run && echo to stderr >&2 && rm /bin/ls && echo made > /made\n",
    );
    let first = project.ok(&["-t", "ran"]);
    assert!(
        first.stderr.contains(" hello from run\n"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains(" to stderr\n"), "{}", first.stderr);
    let second = project.ok(&["-t", "ran"]);
    assert!(second.ran().is_empty(), "ran: {:?}", second.ran());
    assert_eq!(second.digest, first.digest);

    // The whole output stays retrievable by the step's cache key.
    let history = project.kiln(&["history", "--no-trunc", "ran"]);
    let key = history
        .stdout
        .lines()
        .find(|line| line.contains("RUN echo hello"))
        .and_then(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("sha256:"))
        })
        .unwrap_or_else(|| panic!("no key in\n{}", history.stdout))
        .to_string();
    let logs = project.kiln(&["logs", &key]);
    assert_eq!(logs.code, Some(0), "{}", logs.stderr);
    assert!(
        logs.stdout.contains("hello from run\nto stderr\n"),
        "{}",
        logs.stdout
    );

    project.write(
        "Dockerfile",
        &format!(
            "{}RUN echo last words; exit 3\n",
            fs::read_to_string(project.path("Dockerfile")).unwrap()
        ),
    );
    let failed = project.build(&[]);
    assert_eq!(failed.code, Some(1));
    assert!(
        failed
            .stderr
            .contains(":5:1: error: RUN echo last words; exit 3: "),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("exit code: 3"), "{}", failed.stderr);
    assert!(failed.stderr.contains("  last words"), "{}", failed.stderr);
}

/// `RUN --mount=type=ssh` forwards the socket `--ssh` names and points SSH_AUTH_SOCK at it;
/// a required agent that was not given fails the step.
#[test]
fn ssh_mounts_forward_the_agent_socket() {
    if !sandbox_ready("ssh_mounts_forward_the_agent_socket") {
        return;
    }
    let project = busybox_project(
        "RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /agent\n",
    );
    let sockets = tempfile::tempdir().expect("temp dir");
    let socket = sockets.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
    let ssh = format!("default={}", socket.display());
    let build = project.ok(&["--ssh", &ssh]);
    assert!(build.steps.values().all(|outcome| outcome != "CACHED"));
    let missing = busybox_project("RUN --mount=type=ssh,required=true true\n");
    let run = missing.build(&[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("ssh agent \"default\" not found"),
        "{}",
        run.stderr
    );
}

/// Two stages that depend on nothing of each other run at the same time: each RUN leaves a
/// mark in a shared cache mount and waits for the other's, so the build only passes when
/// both commands are running together.
#[test]
fn independent_stages_run_at_the_same_time() {
    if !sandbox_ready("independent_stages_run_at_the_same_time") {
        return;
    }
    let meet = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=meeting,target=/meet,sharing=shared \
             touch /meet/{me} && i=0 && while [ ! -e /meet/{other} ]; do \
             i=$((i+1)); [ $i -lt 300 ] || exit 7; sleep 0.1; done && echo {me} > /{me}\n"
        )
    };
    let project = busybox_project_from("FROM scratch AS busybox", &format!(
        "FROM busybox AS left\n{}FROM busybox AS right\n{}FROM scratch\nCOPY --from=left /left /\nCOPY --from=right /right /\n",
        meet("left", "right"),
        meet("right", "left"),
    ));
    let build = project.build(&["-t", "met"]);
    assert_eq!(
        build.code,
        Some(0),
        "the two stages did not run together:\n{}",
        build.stderr
    );
}

/// `sharing=locked` cache users take turns: the second RUN starts only when the first has
/// left, so neither sees the other's marker while it runs.
#[test]
fn locked_cache_mounts_are_used_one_step_at_a_time() {
    if !sandbox_ready("locked_cache_mounts_are_used_one_step_at_a_time") {
        return;
    }
    let turn = |me: &str| {
        format!(
            "RUN --mount=type=cache,id=turns,target=/turns,sharing=locked \
             [ ! -e /turns/busy ] && touch /turns/busy && sleep 1 && rm /turns/busy && echo {me} > /{me}\n"
        )
    };
    let project = busybox_project_from("FROM scratch AS busybox", &format!(
        "FROM busybox AS left\n{}FROM busybox AS right\n{}FROM scratch\nCOPY --from=left /left /\nCOPY --from=right /right /\n",
        turn("left"),
        turn("right"),
    ));
    let build = project.build(&[]);
    assert_eq!(build.code, Some(0), "{}", build.stderr);
}

/// On a terminal, `--progress=auto` draws the tty view: one line per step that ends with its
/// outcome (`DONE 0.0s`, `CACHED`), redrawn in place, with cache misses printed above it.
/// `script` (util-linux) gives kiln a pseudo-terminal as its standard error.
#[test]
fn a_terminal_gets_one_redrawn_line_per_step() {
    if !crate::util::peer_available("script", "a_terminal_gets_one_redrawn_line_per_step") {
        return;
    }
    let project = Project::new(&[
        ("Dockerfile", "FROM scratch\nCOPY a /a\nCOPY b /b\n"),
        ("a", "a"),
        ("b", "b"),
    ]);
    let on_terminal = || {
        let command = format!(
            "{} build --root {} {}",
            env!("CARGO_BIN_EXE_kiln"),
            project.root(),
            project.context.path().display()
        );
        let output = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("TERM", "xterm")
            .output()
            .expect("runs script");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = on_terminal();
    for expected in [
        "\x1b[2K",
        "#4 [1/2] COPY a /a  DONE ",
        "#4 cache miss: no earlier build of this step",
        "#5 [2/2] COPY b /b  DONE ",
        "#6 exporting to image  DONE",
    ] {
        assert!(first.contains(expected), "{expected:?} in {first:?}");
    }
    assert!(!first.contains("#4 DONE"), "plain lines in {first:?}");
    let second = on_terminal();
    for expected in ["#4 [1/2] COPY a /a  CACHED", "#5 [2/2] COPY b /b  CACHED"] {
        assert!(second.contains(expected), "{expected:?} in {second:?}");
    }
}

/// The files a RUN writes belong to the ids the command had inside, whoever runs kiln: as
/// root they are the host's; rootless they are host ids of the user namespace, mapped back.
#[test]
fn files_a_run_writes_belong_to_the_containers_ids() {
    if !sandbox_ready("files_a_run_writes_belong_to_the_containers_ids") {
        return;
    }
    // With a single mapped id (rootless without newuidmap) no other user can exist inside.
    let other_user = kiln::sandbox::IdMapping::detect().maps(1000);
    let mut steps = "RUN mkdir -m 1777 /made && echo x > /made/by-root\n".to_string();
    if other_user {
        steps.push_str("USER 1000:1000\nRUN echo x > /made/by-user\n");
    }
    let project = busybox_project(&steps);
    project.ok(&["-t", "owners"]);
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("saved.tar");
    let saved_arg = saved.to_str().unwrap();
    let save = project.kiln(&["save", "owners", "--compression", "none", "-o", saved_arg]);
    assert_eq!(save.code, Some(0), "{}", save.stderr);
    let unpacked = out.path().join("unpacked");
    tar::Archive::new(fs::File::open(&saved).unwrap())
        .unpack(&unpacked)
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    // Each layer's owners for /made, later layers over earlier ones.
    let mut owners = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let file = fs::File::open(unpacked.join(layer.as_str().unwrap())).unwrap();
        for entry in tar::Archive::new(file).entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let path = path.trim_end_matches('/');
            if path.starts_with("made") {
                let header = entry.header();
                owners.insert(
                    path.to_string(),
                    (header.uid().unwrap(), header.gid().unwrap()),
                );
            }
        }
    }
    let mut expected = BTreeMap::from([
        ("made".to_string(), (0, 0)),
        ("made/by-root".to_string(), (0, 0)),
    ]);
    if other_user {
        expected.insert("made/by-user".to_string(), (1000, 1000));
    }
    assert_eq!(owners, expected);
}

/// A user's private directory from a lower layer stays theirs in later steps: a RUN as that
/// user writes into it, `COPY --from` reads it into another stage with its owners and set-id
/// bits, and `type=local` hands the caller files it can read. Rootless, this is what kiln's
/// own user namespace with subordinate ranges is for: outside it, the build process could
/// neither give those owners nor read the directory once they are given.
#[test]
fn a_users_private_directory_serves_later_steps_and_stages() {
    let name = "a_users_private_directory_serves_later_steps_and_stages";
    if !sandbox_ready(name) {
        return;
    }
    if !kiln::sandbox::IdMapping::detect().maps(1000) {
        eprintln!("{name}: skipped, only id 0 is mapped (rootless without newuidmap and /etc/subuid ranges)");
        return;
    }
    let project = busybox_project_from(
        "FROM scratch AS base",
        "RUN mkdir -p -m 700 /home/u && echo old > /home/u/old && cp /bin/busybox /home/u/suid \\\n\
         && chown -R 1000:1000 /home/u && chmod 4755 /home/u/suid\n\
         USER 1000:1000\n\
         RUN echo new > /home/u/new && cat /home/u/old /home/u/new > /home/u/both\n\
         FROM scratch\n\
         COPY --from=base /home/u /u\n",
    );
    let out = tempfile::tempdir().unwrap();
    let tar_path = out.path().join("rootfs.tar");
    let tar_dest = format!("type=tar,dest={}", tar_path.display());
    project.ok(&["-o", &tar_dest]);
    let mut found = BTreeMap::new();
    for entry in tar::Archive::new(fs::File::open(&tar_path).unwrap())
        .entries()
        .unwrap()
    {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let header = entry.header();
        let owner = (header.uid().unwrap(), header.gid().unwrap());
        let mode = header.mode().unwrap() & 0o7777;
        let mut text = String::new();
        if path == "u/both" {
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        }
        found.insert(path.trim_end_matches('/').to_string(), (owner, mode, text));
    }
    let user = (1000, 1000);
    let expected = BTreeMap::from([
        // A directory's contents are copied; the destination is made as BuildKit makes it.
        ("u".to_string(), ((0, 0), 0o755, String::new())),
        (
            "u/both".to_string(),
            (user, 0o644, "old\nnew\n".to_string()),
        ),
        ("u/new".to_string(), (user, 0o644, String::new())),
        ("u/old".to_string(), (user, 0o644, String::new())),
        ("u/suid".to_string(), (user, 0o4755, String::new())),
    ]);
    assert_eq!(found, expected);
    let local = out.path().join("local");
    let local_dest = format!("type=local,dest={}", local.display());
    project.ok(&["-o", &local_dest]);
    assert_eq!(
        fs::read_to_string(local.join("u/both")).unwrap(),
        "old\nnew\n"
    );
}
