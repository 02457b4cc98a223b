//! `kiln::sandbox` against the real kernel: a busybox rootfs run through the kiln binary as
//! init. Skips with a printed reason where namespaces or overlay are unavailable (fails then
//! under KILN_REQUIRE_PEERS); every case is written to hold as root and rootless.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln::sandbox::{
    self, EtcFiles, ExitStatus, IdMapping, IdSpec, MountSpec, NetworkMode, RootfsSpec, RunSpec,
    SandboxError, Stream,
};

use crate::util::peer_ready;

/// True in the run of this suite with `KILN_SANDBOX_ROOTFS=copy` (no overlay).
fn copying() -> bool {
    std::env::var_os(sandbox::ROOTFS_ENV).is_some_and(|v| v == "copy")
}

fn init() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kiln"))
}

/// True when the sandbox works here; prints why not otherwise.
fn ready(test: &str) -> bool {
    if !Path::new("/bin/busybox").is_file() {
        return peer_ready(
            test,
            Some("/bin/busybox (busybox-static) is missing".into()),
        );
    }
    let unavailable = sandbox::probe_with(init())
        .err()
        .map(|e| format!("the sandbox cannot run here: {e}"));
    peer_ready(test, unavailable)
}

/// A two-layer busybox rootfs with empty upper, work and target dirs.
struct Fixture {
    dir: tempfile::TempDir,
    lower: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let bin = base.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        let top = dir.path().join("top");
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("data")).unwrap();
        std::fs::write(top.join("etc/lower-file"), "from lower\n").unwrap();
        std::fs::write(top.join("data/keep"), "kept\n").unwrap();
        for name in ["upper", "work", "target"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        Fixture {
            lower: vec![base, top],
            dir,
        }
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    fn spec(&self, script: &str) -> RunSpec {
        RunSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: IdSpec {
                uid: 0,
                gid: 0,
                additional_gids: Vec::new(),
            },
            hostname: "kiln-test".into(),
            rootfs: RootfsSpec {
                lower: self.lower.clone(),
                upper: self.upper(),
                work: self.dir.path().join("work"),
                target: self.dir.path().join("target"),
                volatile: true,
            },
            mounts: Vec::new(),
            network: NetworkMode::None,
            etc: EtcFiles {
                hosts: "127.0.0.1 localhost kiln-test\n".into(),
                resolv_conf: "nameserver 192.0.2.1\n".into(),
                hostname: "kiln-test\n".into(),
            },
            capabilities: sandbox::default_capabilities(),
        }
    }

    /// Paths in upper, relative, sorted.
    fn upper_paths(&self) -> Vec<String> {
        let upper = self.upper();
        let mut paths: Vec<String> = walkdir::WalkDir::new(&upper)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(&upper)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        paths.sort();
        paths
    }
}

impl Drop for Fixture {
    /// Volatile mounts leave mode-000 directories in the work dir, which TempDir's own
    /// removal cannot enter without root.
    fn drop(&mut self) {
        let _ = kiln::store::remove_tree(self.dir.path());
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(spec: &RunSpec) -> Result<Output, SandboxError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status = sandbox::run_with(init(), spec, &mut |stream, bytes| match stream {
        Stream::Stdout => stdout.extend_from_slice(bytes),
        Stream::Stderr => stderr.extend_from_slice(bytes),
    })?;
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        signal: None,
    }
}

#[test]
fn output_streams_separately_and_exit_codes_come_back() {
    if !ready("output_streams_separately_and_exit_codes_come_back") {
        return;
    }
    let fixture = Fixture::new();
    let table = [
        (
            "echo out; echo err >&2; exit 3",
            exited(3),
            "out\n",
            "err\n",
        ),
        ("echo one; echo two", exited(0), "one\ntwo\n", ""),
        ("exit 255", exited(255), "", ""),
    ];
    for (script, status, stdout, stderr) in table {
        let got = run(&fixture.spec(script)).unwrap();
        assert_eq!(
            (got.status, got.stdout.as_str(), got.stderr.as_str()),
            (status, stdout, stderr),
            "{script}"
        );
    }
    // A process group of its own: `kill 0` must not reach this test process.
    let got = run(&fixture.spec("kill -USR1 0; echo survived")).unwrap();
    assert_eq!(got.stdout, "survived\n");
    let mut missing = fixture.spec("");
    missing.argv = vec!["no-such-tool".into()];
    let error = run(&missing).err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("executable file `no-such-tool` not found in $PATH")
    );
}

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == want) {
            found.push(pid);
        }
    }
    found
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_command_killed_by_a_signal_reports_the_signal() {
    if !ready("a_command_killed_by_a_signal_reports_the_signal") {
        return;
    }
    let fixture = Fixture::new();
    let mut spec = fixture.spec("");
    spec.argv = vec!["sleep".into(), "31.7".into()];
    let killer = std::thread::spawn(|| {
        let mut pids = Vec::new();
        wait_for("the sleep", || {
            pids = processes(&["sleep", "31.7"]);
            !pids.is_empty()
        });
        for pid in pids {
            // SAFETY: kill with plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let got = run(&spec).unwrap();
    killer.join().unwrap();
    assert_eq!(
        got.status,
        ExitStatus {
            code: None,
            signal: Some(libc::SIGKILL)
        }
    );
}

#[test]
fn env_is_exactly_the_spec_and_a_missing_cwd_is_created() {
    if !ready("env_is_exactly_the_spec_and_a_missing_cwd_is_created") {
        return;
    }
    let fixture = Fixture::new();
    let mut spec = fixture.spec("pwd; env | sort");
    spec.env = vec!["PATH=/bin".into(), "FOO=bar baz".into()];
    spec.cwd = "/work/a/b".into();
    let got = run(&spec).unwrap();
    let mut lines = got.stdout.lines();
    assert_eq!(lines.next(), Some("/work/a/b"));
    let names: BTreeSet<&str> = lines.filter_map(|l| l.split('=').next()).collect();
    let extra: Vec<&&str> = names
        .iter()
        .filter(|n| !["FOO", "PATH", "PWD", "SHLVL", "_"].contains(n))
        .collect();
    assert!(
        extra.is_empty(),
        "unexpected variables {extra:?} in {}",
        got.stdout
    );
    assert!(got.stdout.contains("FOO=bar baz\n"), "{}", got.stdout);
    let meta = std::fs::metadata(fixture.upper().join("work/a/b")).unwrap();
    assert_eq!((meta.is_dir(), meta.mode() & 0o7777), (true, 0o755));
}

/// `id -u; id -g; id -G` through the shell, and the signal, capability and no_new_privs lines
/// of the status of a directly exec'd grep (a shell would ignore SIGQUIT for its children).
fn identity(fixture: &Fixture, user: &IdSpec) -> Result<(String, String), SandboxError> {
    let mut ids = fixture.spec("id -u; id -g; id -G");
    ids.user = user.clone();
    let mut status = fixture.spec("");
    status.user = user.clone();
    status.argv = [
        "grep",
        "-E",
        "^(Sig(Blk|Ign)|Cap|NoNewPrivs)",
        "/proc/self/status",
    ]
    .map(String::from)
    .to_vec();
    Ok((run(&ids)?.stdout, run(&status)?.stdout))
}

fn status_lines(permitted: &str) -> String {
    format!(
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nCapInh:\t0000000000000000\n\
         CapPrm:\t{permitted}\nCapEff:\t{permitted}\nCapBnd:\t00000000a80425fb\n\
         CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
    )
}

#[test]
fn the_command_runs_as_the_spec_user_with_docker_capabilities() {
    if !ready("the_command_runs_as_the_spec_user_with_docker_capabilities") {
        return;
    }
    let fixture = Fixture::new();
    let root = IdSpec {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
    };
    let (ids, status) = identity(&fixture, &root).unwrap();
    let mapping = IdMapping::detect();
    // With a single-id map setgroups is denied: the caller's own groups stay, unmapped.
    match mapping {
        IdMapping::Single { .. } => assert!(ids.starts_with("0\n0\n"), "{ids}"),
        _ => assert_eq!(ids, "0\n0\n0\n"),
    }
    assert_eq!(status, status_lines("00000000a80425fb"));

    let user = IdSpec {
        uid: 1000,
        gid: 1001,
        additional_gids: vec![5, 20],
    };
    match (mapping, identity(&fixture, &user)) {
        (IdMapping::Single { .. }, Err(SandboxError::UnmappedId { id: 1000, .. })) => {}
        (_, Ok((ids, status))) => {
            assert_eq!(ids, "1000\n1001\n1001 5 20\n");
            assert_eq!(status, status_lines("0000000000000000"));
        }
        (mapping, Err(error)) => panic!("{mapping:?}: {error}"),
    }
}

#[test]
fn namespaces_hostname_pid_and_etc_files() {
    if !ready("namespaces_hostname_pid_and_etc_files") {
        return;
    }
    let fixture = Fixture::new();
    let script = "hostname; echo $$; ls /sys/class/net; cat /sys/class/net/lo/flags; \
                  cat /etc/hostname /etc/hosts /etc/resolv.conf; echo x > /etc/hosts || echo ro; \
                  touch /sys/x || echo sys-ro; ls /dev | tr '\\n' ' '; echo; \
                  grep -E ' /dev/(pts|shm) ' /proc/mounts | cut -d' ' -f2,3; \
                  wc -c < /proc/keys; ls /sys/firmware | wc -l; \
                  (echo kiln-test > /proc/sys/kernel/hostname) 2>/dev/null || echo sysctl-ro";
    let got = run(&fixture.spec(script)).unwrap();
    let want = "kiln-test\n1\nlo\n0x9\nkiln-test\n127.0.0.1 localhost kiln-test\nnameserver 192.0.2.1\nro\nsys-ro\n\
                fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n\
                /dev/pts devpts\n/dev/shm tmpfs\n0\n0\nsysctl-ro\n";
    assert_eq!(got.stdout, want, "stderr: {}", got.stderr);

    // Only stdin, stdout, stderr (and ls's own directory) whatever kiln inherited.
    let mut fds = fixture.spec("");
    fds.argv = ["ls", "/proc/self/fd"].map(String::from).to_vec();
    assert_eq!(run(&fds).unwrap().stdout, "0\n1\n2\n3\n");

    // Docker (other tests use it) may add or drop a veth at any moment, even one that lives
    // only while the command runs, so the sandbox must see every interface the host had both
    // before and after, and none it never had but such a veth.
    let host_interfaces = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut host = fixture.spec("ls /sys/class/net");
    host.network = NetworkMode::Host;
    let before = host_interfaces();
    let got = run(&host).unwrap();
    let after = host_interfaces();
    let seen: std::collections::BTreeSet<String> = got.stdout.lines().map(str::to_string).collect();
    assert!(
        before.intersection(&after).all(|name| seen.contains(name)),
        "{seen:?} vs {before:?}"
    );
    assert!(
        seen.iter()
            .all(|name| before.contains(name) || after.contains(name) || name.starts_with("veth")),
        "{seen:?} vs {after:?}"
    );
}

#[test]
fn writes_land_in_upper_and_deletions_are_whiteouts() {
    if !ready("writes_land_in_upper_and_deletions_are_whiteouts") {
        return;
    }
    let fixture = Fixture::new();
    let script =
        "echo new > /new; rm /etc/lower-file; echo more >> /data/keep; ls /proc/1 >/dev/null";
    let got = run(&fixture.spec(script)).unwrap();
    assert_eq!(got.status, exited(0), "{}", got.stderr);
    // Nothing else: the mount points for /proc, /dev, /sys and /etc/* are gone again.
    assert_eq!(
        fixture.upper_paths(),
        ["data", "data/keep", "etc", "etc/lower-file", "new"]
    );
    assert_eq!(
        std::fs::read_to_string(fixture.upper().join("new")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.upper().join("data/keep")).unwrap(),
        "kept\nmore\n"
    );
    let whiteout = std::fs::symlink_metadata(fixture.upper().join("etc/lower-file")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    let top = &fixture.lower[1];
    assert_eq!(
        std::fs::read_to_string(top.join("etc/lower-file")).unwrap(),
        "from lower\n"
    );
    assert_eq!(
        std::fs::read_to_string(top.join("data/keep")).unwrap(),
        "kept\n"
    );
    assert!(!fixture.dir.path().join("target/new").exists());
}

/// A RUN's upper is scratch: its overlay must not sync the host filesystem at unmount.
#[test]
fn a_scratch_upper_is_mounted_volatile_and_a_kept_one_is_not() {
    if !ready("a_scratch_upper_is_mounted_volatile_and_a_kept_one_is_not") {
        return;
    }
    for volatile in [true, false] {
        // A fresh work dir each time: overlayfs refuses a work dir a volatile mount used.
        let fixture = Fixture::new();
        let mut spec = fixture.spec("grep ' / ' /proc/mounts");
        spec.rootfs.volatile = volatile;
        let got = run(&spec).unwrap();
        assert_eq!(got.status, exited(0), "{}", got.stderr);
        let options = got.stdout.split_whitespace().nth(3).unwrap_or_default();
        // Linux 6.x shows the option as `fsync=volatile`.
        let mounted_volatile = options
            .split(',')
            .any(|option| option == "volatile" || option == "fsync=volatile");
        // A copied rootfs is a bind mount, never volatile.
        assert_eq!(mounted_volatile, volatile && !copying(), "{}", got.stdout);
    }
}

#[test]
fn an_empty_lower_list_runs_on_an_empty_root() {
    if !ready("an_empty_lower_list_runs_on_an_empty_root") {
        return;
    }
    let fixture = Fixture::new();
    let mut spec = fixture.spec("");
    spec.rootfs.lower = Vec::new();
    spec.argv = vec!["/bin/sh".into()];
    let error = run(&spec).err().map(|e| e.to_string());
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with("sandbox setup failed executing the command (/bin/sh)"),
        "{error}"
    );
    assert_eq!(fixture.upper_paths(), Vec::<String>::new());
}

#[test]
fn run_mounts_bind_read_only_read_write_and_tmpfs() {
    if !ready("run_mounts_bind_read_only_read_write_and_tmpfs") {
        return;
    }
    let fixture = Fixture::new();
    let host = tempfile::tempdir().unwrap();
    let (ro, rw, file) = (
        host.path().join("ro"),
        host.path().join("rw"),
        host.path().join("file"),
    );
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    std::fs::write(ro.join("f"), "ro content\n").unwrap();
    std::fs::write(&file, "a file\n").unwrap();
    let script = "cat /m/ro/f; touch /m/ro/x 2>/dev/null || echo refused; echo w > /m/rw/out; \
                  cat /etc/app.conf; touch /scratch/t && echo tmp-ok; \
                  grep ' /scratch ' /proc/mounts | grep -o 'size=[0-9a-z]*'; cat /scratch/inner/f";
    let mut spec = fixture.spec(script);
    spec.mounts = vec![
        MountSpec::Bind {
            source: ro.clone(),
            target: "/m/ro".into(),
            readonly: true,
        },
        MountSpec::Bind {
            source: rw.clone(),
            target: "/m/rw".into(),
            readonly: false,
        },
        MountSpec::Bind {
            source: file,
            target: "/etc/app.conf".into(),
            readonly: true,
        },
        MountSpec::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
        },
        // Under the tmpfs above, which hides the mount point made before it.
        MountSpec::Bind {
            source: ro.clone(),
            target: "/scratch/inner".into(),
            readonly: true,
        },
    ];
    let got = run(&spec).unwrap();
    assert_eq!(
        got.stdout, "ro content\nrefused\na file\ntmp-ok\nsize=1024k\nro content\n",
        "stderr: {}",
        got.stderr
    );
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "w\n");
    assert!(!ro.join("x").exists());
    // The mount points are removed; with an overlay /etc stays copied up with its lower
    // metadata, a copied rootfs leaves nothing.
    if copying() {
        assert_eq!(fixture.upper_paths(), Vec::<String>::new());
        return;
    }
    assert_eq!(fixture.upper_paths(), ["etc"]);
    let (upper_etc, lower_etc) = (fixture.upper().join("etc"), fixture.lower[1].join("etc"));
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    assert_eq!(mtime(&upper_etc), mtime(&lower_etc));
}

#[test]
fn nothing_stays_mounted_on_the_host() {
    if !ready("nothing_stays_mounted_on_the_host") {
        return;
    }
    let fixture = Fixture::new();
    let mut spec = fixture.spec("true");
    spec.mounts = vec![MountSpec::Tmpfs {
        target: "/t".into(),
        size: None,
    }];
    run(&spec).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = fixture.dir.path().to_string_lossy().into_owned();
    let left: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&ours)).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Not a test on its own: the body of the child process
/// `killing_the_build_process_ends_the_sandbox` kills. Runs the spec in
/// `KILN_SANDBOX_TEST_SPEC` when set.
#[test]
#[ignore]
fn sandbox_child_process() {
    if let Ok(json) = std::env::var("KILN_SANDBOX_TEST_SPEC") {
        let spec: RunSpec = serde_json::from_str(&json).unwrap();
        let _ = run(&spec);
    }
}

#[test]
fn killing_the_build_process_ends_the_sandbox() {
    if !ready("killing_the_build_process_ends_the_sandbox") {
        return;
    }
    let fixture = Fixture::new();
    let mut spec = fixture.spec("");
    spec.argv = vec!["sleep".into(), "41.3".into()];
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sandbox::sandbox_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "KILN_SANDBOX_TEST_SPEC",
            serde_json::to_string(&spec).unwrap(),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the sleep", || !processes(&["sleep", "41.3"]).is_empty());
    let init: Vec<i32> = processes(&[init().to_str().unwrap(), sandbox::INIT_ARG])
        .into_iter()
        .filter(|pid| stat_field(*pid, 1).as_deref() == Some(&child.id().to_string()))
        .collect();
    assert_eq!(init.len(), 1, "the sandbox init of the child");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the sandbox to end", || {
        let running = |pid: &i32| stat_field(*pid, 0).is_some_and(|state| state != "Z");
        processes(&["sleep", "41.3"]).is_empty() && !init.iter().any(running)
    });
}

/// Field `index` of /proc/PID/stat after the command name (0: state, 1: parent pid).
fn stat_field(pid: i32, index: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(index)?
            .to_string(),
    )
}

/// The whole suite again in a child process with the snapshots copied instead of mounted (the
/// fallback where the kernel refuses overlay): same outputs, same upper directory.
#[test]
fn the_suite_passes_with_copied_snapshots() {
    if copying() || !ready("the_suite_passes_with_copied_snapshots") {
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sandbox::",
            "--skip",
            "sandbox::the_suite_passes_with_copied_snapshots",
        ])
        .env(sandbox::ROOTFS_ENV, "copy")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ran = stdout.contains("test result: ok.") && !stdout.contains("ok. 0 passed");
    assert!(ran, "{stdout}");
    let probe = sandbox::probe_with(init()).unwrap();
    assert!(probe.overlay);
}
