//! `kiln run`, `ps`, `rm`, `commit` and `bundle` through the real binary. Tests named
//! `versus_docker_*` run the same image (built by both tools from one busybox Dockerfile)
//! with the same flags under `docker run` and compare output and exit code; `kiln_*` tests
//! need only kiln (CI runs them rootless too). Everything skips with a printed reason where
//! the sandbox, busybox, docker or runc is missing, and fails instead under
//! `KILN_REQUIRE_PEERS`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{peer_available, peer_ready};

/// The test image: busybox with applets, a user and group, env, workdir and a CMD; the `ep`
/// stage adds an exec-form ENTRYPOINT and a STOPSIGNAL.
const DOCKERFILE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY etc/ /etc/
ENV FOO=bar
WORKDIR /srv
CMD ["echo", "default", "cmd"]

FROM base AS ep
ENTRYPOINT ["/bin/echo", "ep"]
STOPSIGNAL SIGUSR1
"#;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n";

/// The tags both tools know the two stages by.
const BASE: &str = "kiln-run-base:1";
const EP: &str = "kiln-run-ep:1";

fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

fn docker_bin() -> String {
    std::env::var("KILN_DOCKER").unwrap_or_else(|_| "/usr/bin/docker".to_owned())
}

/// The build context, written once per test process.
fn context() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
        std::fs::create_dir(ctx.join("etc")).unwrap();
        std::fs::write(ctx.join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(ctx.join("etc/group"), GROUP).unwrap();
        dir
    })
    .path()
}

/// True when kiln can run containers here; prints why not otherwise.
fn kiln_ready(test: &str) -> bool {
    if !Path::new("/bin/busybox").is_file() {
        return peer_ready(
            test,
            Some("/bin/busybox (busybox-static) is missing".into()),
        );
    }
    let unavailable = kiln::sandbox::probe_with(Path::new(kiln_bin()))
        .err()
        .map(|e| format!("the sandbox cannot run here: {e}"));
    peer_ready(test, unavailable)
}

fn docker_ready(test: &str) -> bool {
    if !(kiln_ready(test) && peer_available("docker", test)) {
        return false;
    }
    let out = Command::new(docker_bin())
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let unavailable = match out {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "docker does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("docker does not run: {e}")),
    };
    peer_ready(test, unavailable)
}

/// True when ids other than 0 exist in the sandbox (root, or rootless with subordinate ids).
fn many_ids() -> bool {
    !matches!(
        kiln::sandbox::IdMapping::detect(),
        kiln::sandbox::IdMapping::Single { .. }
    )
}

/// A kiln store with both images, when kiln can run containers here (else says why not).
fn kiln_store(test: &str) -> Option<Store> {
    kiln_ready(test).then(Store::new)
}

/// [`kiln_store`], when docker answers too and has built the same images.
fn docker_store(test: &str) -> Option<Store> {
    if !docker_ready(test) {
        return None;
    }
    docker_images().expect("docker builds the test images");
    Some(Store::new())
}

/// A kiln store with both images built.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let store = Store { dir };
        for (tag, target) in [(BASE, "base"), (EP, "ep")] {
            let out = store.kiln(
                &[
                    "build",
                    "-q",
                    "-t",
                    tag,
                    "--target",
                    target,
                    &context().to_string_lossy(),
                ],
                b"",
            );
            assert_eq!(out.code, Some(0), "kiln build {tag}: {}", out.stderr);
        }
        store
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `kiln ARGS` with `--root` added after the subcommand.
    fn kiln(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = vec![args[0], "--root"];
        let root = self.root().to_string_lossy().into_owned();
        all.push(&root);
        all.extend(&args[1..]);
        output(Command::new(kiln_bin()).args(&all), stdin)
    }

    fn containers(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.root().join("kiln/containers")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn output(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Builds both images in docker, once.
fn docker_images() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            for (tag, target) in [(BASE, "base"), (EP, "ep")] {
                let out = Command::new(docker_bin())
                    .env("DOCKER_BUILDKIT", "1")
                    .args(["build", "-q", "-t", tag, "--target", target])
                    .arg(context())
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
            Ok(())
        })
        .clone()
}

/// `run --rm FLAGS... IMAGE ARGS...` in both tools; `{}` in `args` marks where the image goes.
fn both(store: &Store, args: &[&str], stdin: &[u8]) -> (Output, Output) {
    let mut kiln_args = vec!["run", "--rm"];
    kiln_args.extend(args);
    let kiln = store.kiln(
        &kiln_args
            .iter()
            .map(|a| if *a == "{}" { BASE } else { a })
            .collect::<Vec<_>>(),
        stdin,
    );
    let docker_args: Vec<&str> = ["run", "--rm"]
        .into_iter()
        .chain(args.iter().map(|a| if *a == "{}" { BASE } else { a }))
        .collect();
    let docker = output(Command::new(docker_bin()).args(&docker_args), stdin);
    (kiln, docker)
}

/// Replaces `{}` by `image` in `args`.
fn with_image<'a>(args: &[&'a str], image: &'a str) -> Vec<&'a str> {
    args.iter()
        .map(|a| if *a == "{}" { image } else { a })
        .collect()
}

#[test]
fn versus_docker_commands_env_user_workdir_and_exit_codes() {
    let Some(store) = docker_store("versus_docker_commands_env_user_workdir_and_exit_codes") else {
        return;
    };
    // docker's env-file rules: comments and blank lines skipped, a bare name taken from the
    // caller's environment (left out when unset there), spaces kept; `-e` comes after.
    let env_dir = tempfile::tempdir().unwrap();
    let env_file = env_dir.path().join("run.env");
    std::fs::write(
        &env_file,
        "# comment\nA=from file\n\n  B= spaced \nKILN_TEST_UNSET_NAME\nPATH\n",
    )
    .unwrap();
    let env_file = env_file.to_str().unwrap();
    // (flags and args with {} for the image, which image, stdin, compare stderr too)
    let mut cases: Vec<(Vec<&str>, &str, &[u8])> = vec![
        (
            vec!["--hostname", "h", "--env-file", env_file, "{}", "env"],
            BASE,
            b"",
        ),
        (
            vec![
                "--hostname",
                "h",
                "--env-file",
                env_file,
                "-e",
                "A=flag",
                "{}",
                "env",
            ],
            BASE,
            b"",
        ),
        (vec!["{}"], BASE, b""),
        (vec!["{}", "echo", "given"], BASE, b""),
        (vec!["{}"], EP, b""),
        (vec!["{}", "a", "b"], EP, b""),
        (vec!["--entrypoint", "/bin/echo", "{}"], EP, b""),
        (vec!["--entrypoint", "/bin/echo", "{}", "x", "-n"], EP, b""),
        (vec!["--entrypoint", "", "{}", "echo", "cleared"], EP, b""),
        (vec!["--entrypoint", "sh", "{}", "-c", "exit 42"], BASE, b""),
        (vec!["--entrypoint", "nope", "{}"], BASE, b""),
        (vec!["--entrypoint", "/etc", "{}"], BASE, b""),
        (vec!["--hostname", "h", "{}", "env"], BASE, b""),
        (
            vec!["--hostname", "h", "-e", "A=1", "-e", "FOO=x", "{}", "env"],
            BASE,
            b"",
        ),
        (vec!["--hostname", "h", "-t", "{}", "env"], BASE, b""),
        (
            vec![
                "--hostname",
                "h",
                "{}",
                "sh",
                "-c",
                "hostname; cat /etc/hostname",
            ],
            BASE,
            b"",
        ),
        (vec!["{}", "pwd"], BASE, b""),
        (vec!["-w", "/new/dir", "{}", "pwd"], BASE, b""),
        (vec!["{}", "id"], BASE, b""),
        (vec!["-i", "{}", "cat"], BASE, b"from stdin\n"),
        (vec!["{}", "cat"], BASE, b"not read\n"),
        (vec!["-t", "{}", "sh", "-c", "tty; echo $TERM"], BASE, b""),
        (
            vec![
                "--read-only",
                "{}",
                "sh",
                "-c",
                "touch /x; echo $?; touch /tmp/y 2>/dev/null; echo $?",
            ],
            BASE,
            b"",
        ),
        (
            vec![
                "--network",
                "host",
                "{}",
                "sh",
                "-c",
                "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf; env",
            ],
            BASE,
            b"",
        ),
        (
            vec!["--network", "none", "{}", "sh", "-c", "ls /sys/class/net"],
            BASE,
            b"",
        ),
        (
            vec!["{}", "sh", "-c", "echo out; echo err >&2; exit 3"],
            BASE,
            b"",
        ),
    ];
    if many_ids() {
        cases.extend([
            (
                vec!["-u", "app", "{}", "sh", "-c", "id; echo $HOME"],
                BASE,
                &b""[..],
            ),
            (vec!["-u", "1000:1000", "{}", "id"], BASE, b""),
            (vec!["-u", "1000", "{}", "id"], BASE, b""),
            (vec!["-u", "0:5", "{}", "id"], BASE, b""),
        ]);
    }
    let mut failures = Vec::new();
    for (args, image, stdin) in &cases {
        let args = with_image(args, image);
        let (kiln, docker) = both(&store, &args, stdin);
        // Messages of a failed start differ in wording; the code must not. dockerd does not
        // keep the order of several `-e` (it passed through a map: seen both ways in CI), so
        // `env` output is compared as a set of lines.
        let sorted = |out: &Output| {
            let mut lines: Vec<&str> = out.stdout.split_inclusive('\n').collect();
            lines.sort_unstable();
            lines.concat()
        };
        let same_output = match args.last() {
            Some(&"env") => sorted(&kiln) == sorted(&docker),
            _ => kiln.stdout == docker.stdout,
        };
        let same = kiln.code == docker.code && (kiln.code.unwrap_or(0) >= 125 || same_output);
        if !same {
            failures.push(format!("{args:?}:\n  kiln   {kiln:?}\n  docker {docker:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(store.containers().is_empty(), "--rm left containers behind");
}

#[test]
fn versus_docker_volumes_read_only_and_read_write() {
    let Some(store) = docker_store("versus_docker_volumes_read_only_and_read_write") else {
        return;
    };
    for tool in ["kiln", "docker"] {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("in"), "host file\n").unwrap();
        let rw = format!("{}:/data", host.path().display());
        let ro = format!("{}:/ro:ro", host.path().display());
        let mount = format!(
            "type=bind,source={},target=/m,readonly",
            host.path().display()
        );
        let script = "cat /data/in; echo made > /data/out; echo $?; \
                      touch /ro/x 2>/dev/null; echo $?; touch /m/x 2>/dev/null; echo $?; \
                      echo t > /t/f && cat /t/f";
        let args = [
            "run",
            "--rm",
            "-v",
            &rw,
            "-v",
            &ro,
            "--mount",
            &mount,
            "--mount",
            "type=tmpfs,target=/t",
            BASE,
            "sh",
            "-c",
            script,
        ];
        let out = match tool {
            "kiln" => store.kiln(&args, b""),
            _ => output(Command::new(docker_bin()).args(args), b""),
        };
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(0), "host file\n0\n1\n1\nt\n"),
            "{tool}: {}",
            out.stderr
        );
        assert_eq!(
            std::fs::read_to_string(host.path().join("out")).unwrap(),
            "made\n",
            "{tool}"
        );
    }
}

/// Starts `run` with a shell that traps `signal`, waits for it to say so, signals the
/// client, and returns its output.
fn trapped(mut command: Command, signal: i32) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    // SAFETY: kill with our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    Output {
        code: status.code(),
        stdout: rest,
        stderr: String::new(),
    }
}

const TRAP: &str = "trap 'echo got INT; exit 7' INT; trap 'echo got TERM; exit 8' TERM; \
                    trap 'echo got HUP; exit 9' HUP; trap 'echo got USR1; exit 10' USR1; \
                    echo ready; while :; do sleep 0.05; done";

#[test]
fn versus_docker_signals_reach_the_command() {
    let Some(store) = docker_store("versus_docker_signals_reach_the_command") else {
        return;
    };
    let root = store.root().to_string_lossy().into_owned();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut kiln = Command::new(kiln_bin());
        kiln.args(["run", "--root", &root, "--rm", BASE, "sh", "-c", TRAP]);
        let mut docker = Command::new(docker_bin());
        docker.args(["run", "--rm", BASE, "sh", "-c", TRAP]);
        let (kiln, docker) = (trapped(kiln, signal), trapped(docker, signal));
        assert_eq!(kiln, docker, "signal {signal}");
    }
}

#[test]
fn kiln_signals_stop_signal_and_killed_commands() {
    let Some(store) = kiln_store("kiln_signals_stop_signal_and_killed_commands") else {
        return;
    };
    let root = store.root().to_string_lossy().into_owned();
    // SIGTERM to kiln becomes the image's STOPSIGNAL (SIGUSR1 in the `ep` image).
    let mut command = Command::new(kiln_bin());
    command.args([
        "run",
        "--root",
        &root,
        "--rm",
        "--entrypoint",
        "sh",
        EP,
        "-c",
        TRAP,
    ]);
    let out = trapped(command, libc::SIGTERM);
    assert_eq!((out.code, out.stdout.as_str()), (Some(10), "got USR1\n"));
    for (script, code) in [("kill -9 $$", 137), ("kill -TERM $$", 143), ("exit 0", 0)] {
        let out = store.kiln(&["run", "--rm", BASE, "sh", "-c", script], b"");
        assert_eq!(out.code, Some(code), "{script}: {}", out.stderr);
    }
    // The reaper: orphans are reaped, so no zombie stays while the command runs on.
    let script = "for i in 1 2 3 4 5; do (sleep 0.01 &) ; done; sleep 0.5; ps -o stat,comm | grep -c '^Z' || true";
    let out = store.kiln(&["run", "--rm", BASE, "sh", "-c", script], b"");
    assert_eq!(out.stdout.trim(), "0", "{}", out.stderr);
}

/// `-t` on a terminal: the container's pseudo-terminal starts at the caller's size and
/// follows it when it changes (the kernel's SIGWINCH to kiln, passed on as a new size).
#[test]
fn kiln_tty_follows_the_callers_window_size() {
    let Some(store) = kiln_store("kiln_tty_follows_the_callers_window_size") else {
        return;
    };
    let root = store.root().to_string_lossy().into_owned();
    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let slave_name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let set_size = |rows: u16, cols: u16| {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, size).unwrap();
    };
    set_size(30, 100);
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(slave_name.to_str().unwrap())
        .unwrap();
    let script = "stty size; trap 'stty size; exit 7' WINCH; echo ready; \
                  while :; do sleep 0.05; done";
    let mut command = Command::new(kiln_bin());
    command
        .args([
            "run", "--root", &root, "--rm", "-t", BASE, "sh", "-c", script,
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: setsid and TIOCSCTTY between fork and exec: async-signal-safe calls only. The
    // pseudo-terminal becomes kiln's controlling terminal, whose size changes signal it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(command);
    let mut seen = String::new();
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let mut read_until = |want: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buffer = [0u8; 4096];
        while !seen.contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} in {seen:?}");
            match std::io::Read::read(&mut reader, &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    };
    read_until("ready", &mut seen);
    assert!(seen.contains("30 100"), "{seen:?}");
    set_size(40, 120);
    read_until("40 120", &mut seen);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{seen:?}");
}

#[test]
fn kiln_ps_rm_and_commit() {
    let Some(store) = kiln_store("kiln_ps_rm_and_commit") else {
        return;
    };
    let out = store.kiln(
        &[
            "run",
            "--name",
            "keep",
            BASE,
            "sh",
            "-c",
            "echo changed > /srv/new; rm /bin/vi; exit 4",
        ],
        b"",
    );
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    let ps = store.kiln(&["ps"], b"");
    assert!(
        !ps.stdout.contains("keep"),
        "ps without -a lists only running ones:\n{}",
        ps.stdout
    );
    let ps = store.kiln(&["ps", "-a"], b"");
    let lines: Vec<&str> = ps.stdout.lines().collect();
    assert!(
        lines[0].starts_with("CONTAINER ID   IMAGE"),
        "{}",
        ps.stdout
    );
    assert!(
        lines[1].contains("Exited (4)") && lines[1].ends_with("keep"),
        "{}",
        ps.stdout
    );
    let dup = store.kiln(&["run", "--name", "keep", BASE, "true"], b"");
    assert_eq!(dup.code, Some(125));
    assert!(dup.stderr.contains("already in use"), "{}", dup.stderr);

    let commit = store.kiln(&["commit", "-m", "by test", "keep", "committed:1"], b"");
    assert_eq!(commit.code, Some(0), "{}", commit.stderr);
    assert!(commit.stdout.starts_with("sha256:"), "{}", commit.stdout);
    let out = store.kiln(
        &[
            "run",
            "--rm",
            "committed:1",
            "sh",
            "-c",
            "cat /srv/new; ls /bin/vi 2>&1 >/dev/null | wc -l",
        ],
        b"",
    );
    assert_eq!(out.stdout, "changed\n1\n", "{}", out.stderr);
    // The committed config keeps the container's command.
    let out = store.kiln(&["run", "--rm", "committed:1"], b"");
    assert_eq!(out.code, Some(4), "{}", out.stderr);

    let rm = store.kiln(&["rm", "keep"], b"");
    assert_eq!(
        (rm.code, rm.stdout.as_str()),
        (Some(0), "keep\n"),
        "{}",
        rm.stderr
    );
    assert!(store.containers().is_empty());
    let missing = store.kiln(&["rm", "keep"], b"");
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains("no such container"),
        "{}",
        missing.stderr
    );
}

fn mounted_under(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let text = path.to_string_lossy();
    mounts.lines().any(|line| line.contains(text.as_ref()))
}

#[test]
fn kiln_kill_9_leaves_no_mount_and_the_next_start_cleans_up() {
    let Some(store) = kiln_store("kiln_kill_9_leaves_no_mount_and_the_next_start_cleans_up") else {
        return;
    };
    let root = store.root().to_string_lossy().into_owned();
    for remove in [true, false] {
        let mut command = Command::new(kiln_bin());
        command.args(["run", "--root", &root]);
        if remove {
            command.arg("--rm");
        }
        command.args([BASE, "sh", "-c", "echo ready; sleep 30"]);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let running = store.kiln(&["ps"], b"");
        assert_eq!(running.stdout.lines().count(), 2, "{}", running.stdout);
        assert!(running.stdout.contains("Up "), "{}", running.stdout);
        child.kill().unwrap();
        child.wait().unwrap();
        // The sandbox dies with kiln (PR_SET_PDEATHSIG) and its mounts with its namespace.
        let started = Instant::now();
        while mounted_under(store.root()) && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !mounted_under(store.root()),
            "a mount under the store survived kill -9"
        );
        assert_eq!(store.containers().len(), 1);
        let ps = store.kiln(&["ps", "-a"], b"");
        if remove {
            assert_eq!(ps.stdout.lines().count(), 1, "{}", ps.stdout);
            assert!(store.containers().is_empty(), "the --rm container stayed");
        } else {
            assert!(ps.stdout.contains("Exited (137)"), "{}", ps.stdout);
            let rm = store.kiln(
                &[
                    "rm",
                    "-f",
                    ps.stdout
                        .lines()
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap(),
                ],
                b"",
            );
            assert_eq!(rm.code, Some(0), "{}", rm.stderr);
        }
    }
}

#[test]
fn kiln_bundle_runs_in_runc_as_in_kiln_run() {
    let test = "kiln_bundle_runs_in_runc_as_in_kiln_run";
    if !kiln_ready(test) || !peer_available("runc", test) {
        return;
    }
    if rustix::process::geteuid().as_raw() != 0 {
        // runc rootless needs a cgroup manager or --cgroup-manager setup this test does not
        // make; the bundle's rootless config is covered by its unit-level shape only.
        eprintln!("skipping {test}: runc is run as root only");
        return;
    }
    let store = Store::new();
    let script = "id; pwd; echo $FOO; ls /bin/busybox; cat /srv/../etc/group | wc -l";
    let kiln = store.kiln(&["run", "--rm", BASE, "sh", "-c", script], b"");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let out = store.kiln(
        &[
            "bundle",
            BASE,
            &bundle.to_string_lossy(),
            "sh",
            "-c",
            script,
        ],
        b"",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["cwd"], "/srv");
    let name = format!("kiln-test-{}", std::process::id());
    let runc = output(
        Command::new("runc")
            .args([
                "--root",
                &dir.path().join("runc-state").to_string_lossy(),
                "run",
                "--bundle",
            ])
            .arg(&bundle)
            .arg(&name),
        b"",
    );
    assert_eq!(
        (runc.code, &runc.stdout),
        (kiln.code, &kiln.stdout),
        "runc: {}",
        runc.stderr
    );
    assert_eq!(kiln.code, Some(0), "{}", kiln.stderr);
}

#[test]
fn kiln_run_reports_what_it_cannot_do() {
    let Some(store) = kiln_store("kiln_run_reports_what_it_cannot_do") else {
        return;
    };
    let table: [(&[&str], i32, &str); 6] = [
        (&["run", "--rm", "missing:1"], 125, "no such image"),
        (
            &["run", "--rm", "-v", "named:/x", BASE],
            125,
            "named volumes are not supported",
        ),
        (
            &[
                "run",
                "--rm",
                "--mount",
                "type=bind,source=/nonexistent/kiln,target=/x",
                BASE,
            ],
            125,
            "bind source path does not exist",
        ),
        (
            &["run", "--rm", "-w", "rel", BASE],
            125,
            "needs to be an absolute path",
        ),
        (
            &["run", "--rm", "--entrypoint", "", BASE],
            125,
            "no command specified",
        ),
        (
            &["run", "--rm", "--network", "bridge", BASE],
            125,
            "not supported",
        ),
    ];
    for (args, code, text) in table {
        let out = store.kiln(args, b"");
        assert_eq!(out.code, Some(code), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(text), "{args:?}: {}", out.stderr);
    }
    assert!(store.containers().is_empty());
}
