//! Layers: other tar readers (GNU tar, python3's tarfile) read what `write_layer` writes,
//! write → unpack round trips, `RootfsView` over stacked snapshots, and unsafe tars.

use crate::util::{peer_available, peer_ready};
use kiln::layer::{
    unpack, write_layer, EntryKind, FileKind, Follow, LayerEntry, LayerError, RootfsView, Timestamp,
};
use std::path::Path;
use std::process::Command;

fn entry(path: &str, kind: EntryKind, mode: u32) -> LayerEntry {
    LayerEntry {
        path: path.to_string(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        },
        xattrs: Vec::new(),
    }
}

fn dir(path: &str) -> LayerEntry {
    entry(path, EntryKind::Dir, 0o755)
}

fn file(src: &Path, path: &str, content: &[u8]) -> LayerEntry {
    let source = src.join(path.replace('/', "_"));
    std::fs::write(&source, content).unwrap();
    entry(path, EntryKind::File { source }, 0o644)
}

fn symlink(path: &str, target: &str) -> LayerEntry {
    entry(
        path,
        EntryKind::Symlink {
            target: target.to_string(),
        },
        0o777,
    )
}

fn long_name() -> String {
    format!("app/{}", "a-long-directory-name-".repeat(6))
}

/// A layer using every feature other readers must understand.
fn rich_entries(src: &Path) -> Vec<LayerEntry> {
    let long = long_name();
    vec![
        dir("app"),
        file(src, "app/main.txt", b"main\n"),
        entry(
            "app/hard",
            EntryKind::Hardlink {
                target: "app/main.txt".into(),
            },
            0o644,
        ),
        symlink("app/rel", "main.txt"),
        symlink("app/far", &format!("/{}", "t".repeat(130))),
        dir(&long),
        LayerEntry {
            uid: 1000,
            gid: 1001,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 250_000_000,
            },
            xattrs: vec![("user.kiln.note".into(), b"hello".to_vec())],
            ..file(src, &format!("{long}/{}", "f".repeat(110)), b"deep\n")
        },
        file(src, "app/grüße.txt", b"utf-8\n"),
        entry("app/removed", EntryKind::Whiteout, 0o600),
        entry("app", EntryKind::Opaque, 0o755),
        dir("etc"),
        entry("etc/old", EntryKind::Whiteout, 0o600),
    ]
}

/// Tar names in the order the writer must emit them.
fn rich_names() -> Vec<String> {
    let long = long_name();
    vec![
        "app/".into(),
        "app/.wh..wh..opq".into(),
        "app/.wh.removed".into(),
        format!("{long}/"),
        format!("{long}/{}", "f".repeat(110)),
        "app/far".into(),
        "app/grüße.txt".into(),
        "app/hard".into(),
        "app/main.txt".into(),
        "app/rel".into(),
        "etc/".into(),
        "etc/.wh.old".into(),
    ]
}

fn write_rich(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let out = dir.join("layer.tar");
    let file = std::fs::File::create(&out).unwrap();
    write_layer(rich_entries(&src), file, None).unwrap();
    out
}

#[test]
fn gnu_tar_lists_our_layers() {
    if !peer_available("tar", "gnu_tar_lists_our_layers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = write_rich(dir.path());
    let out = Command::new("tar").arg("-tf").arg(&layer).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // "app/hard" sorts before "app/main.txt", so it carries the content and main.txt links to it.
    assert_eq!(names, rich_names());
    let verbose = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&layer)
        .output()
        .unwrap();
    assert!(verbose.status.success());
    let text = String::from_utf8(verbose.stdout).unwrap();
    assert!(text.contains("app/main.txt link to app/hard"), "{text}");
    assert!(text.contains("app/rel -> main.txt"), "{text}");
    assert!(text.contains("1000/1001"), "{text}");
    assert!(text.contains("drwxr-xr-x 0/0"), "{text}");
    // GNU tar extracts it, xattrs included, and gets the same content.
    let into = dir.path().join("gnu");
    std::fs::create_dir(&into).unwrap();
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xf"])
        .arg(&layer)
        .arg("-C")
        .arg(&into)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(into.join("app/main.txt")).unwrap(), b"main\n");
    let deep = into.join(long_name()).join("f".repeat(110));
    assert_eq!(std::fs::read(deep).unwrap(), b"deep\n");
}

#[test]
fn python_tarfile_reads_our_layers() {
    if !peer_available("python3", "python_tarfile_reads_our_layers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = write_rich(dir.path());
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1], format=tarfile.PAX_FORMAT) as t:
    for m in t.getmembers():
        x = sorted(k for k in m.pax_headers if k.startswith("SCHILY.xattr."))
        print(m.name, m.type.decode(), oct(m.mode), m.uid, m.gid, repr(m.uname), m.mtime, m.linkname, ",".join(x), sep="|")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&layer)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let names: Vec<String> = rows.iter().map(|r| r[0].to_string()).collect();
    let want: Vec<String> = rich_names()
        .into_iter()
        .map(|n| n.trim_end_matches('/').to_string())
        .collect();
    assert_eq!(names, want);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(row("app")[1..4], ["5", "0o40755", "0"]);
    assert_eq!(row("app/.wh.removed")[1..3], ["0", "0o600"]);
    assert_eq!(row("app/.wh..wh..opq")[1..3], ["0", "0o755"]);
    assert_eq!(row("app/main.txt")[1], "1");
    assert_eq!(row("app/main.txt")[7], "app/hard");
    assert_eq!(row("app/far")[7], format!("/{}", "t".repeat(130)));
    let deep = row(&format!("{}/{}", long_name(), "f".repeat(110)));
    assert_eq!(deep[3..5], ["1000", "1001"]);
    assert_eq!(deep[5], "''", "no owner names");
    assert_eq!(deep[6], "1700000000.25");
    assert_eq!(deep[8], "SCHILY.xattr.user.kiln.note");
}

/// Every file of a view's subtree as comparable text (content digested).
fn describe(view: &RootfsView) -> Vec<String> {
    view.walk("/")
        .unwrap()
        .into_iter()
        // The snapshot root is the directory the caller made, not a layer entry.
        .filter(|f| f.path != "/")
        .map(|f| {
            let m = &f.metadata;
            let content = if m.kind == FileKind::File {
                kiln::digest::Digest::of(&std::fs::read(&f.host_path).unwrap()).short()
            } else {
                String::new()
            };
            format!(
                "{} {:?} {:o} {}:{} {} {}.{:09} {:?} {content}",
                f.path,
                m.kind,
                m.mode,
                m.uid,
                m.gid,
                m.size,
                m.mtime.secs,
                m.mtime.nanos,
                m.link_target
            )
        })
        .collect()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn write_unpack_round_trip_gives_the_same_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let written = dir.path().join("written");
    let mut bytes = Vec::new();
    let summary = write_layer(rich_entries(&src), &mut bytes, Some(&written)).unwrap();
    let unpacked = dir.path().join("unpacked");
    let back = unpack(&bytes[..], &unpacked).unwrap();
    assert_eq!(back.diff_id, summary.diff_id);
    assert_eq!(back.size, summary.size);
    assert_eq!(back.entries, 12);
    let a = describe(&RootfsView::new(vec![written.clone()]));
    let b = describe(&RootfsView::new(vec![unpacked.clone()]));
    assert_eq!(a, b);
    // Hard links share an inode in the snapshot.
    let view = RootfsView::new(vec![unpacked]);
    let main = view.lookup("/app/main.txt", Follow::All).unwrap().unwrap();
    let hard = view.lookup("/app/hard", Follow::All).unwrap().unwrap();
    assert_eq!(main.metadata.ino, hard.metadata.ino);
    assert_eq!(main.metadata.nlink, 2);
    assert_eq!(
        view.read_file("app/rel").unwrap().as_deref(),
        Some(&b"main\n"[..])
    );
    let deep = format!("{}/{}", long_name(), "f".repeat(110));
    let deep = view.lookup(&deep, Follow::All).unwrap().unwrap();
    assert_eq!(deep.metadata.mtime.nanos, 250_000_000);
    if is_root() {
        assert_eq!((deep.metadata.uid, deep.metadata.gid), (1000, 1001));
        let value = xattr(&deep.host_path, "user.kiln.note");
        assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Lower layer: /etc/{a,b}, /app/{x,y/z}, symlinks; upper removes /etc/a, makes /app opaque
/// with one new file, and adds links that test chroot-style resolution.
fn stacked(dir: &Path) -> RootfsView {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let lower = dir.join("lower");
    let upper = dir.join("upper");
    write_layer(
        vec![
            dir_entry("etc"),
            file(&src, "etc/a", b"a"),
            file(&src, "etc/b", b"b"),
            dir_entry("app"),
            file(&src, "app/x", b"x"),
            dir_entry("app/y"),
            file(&src, "app/y/z", b"z"),
            symlink("etc/up", "../../../etc/b"),
            symlink("etc/abs", "/etc/b"),
            symlink("loop1", "loop2"),
            symlink("loop2", "loop1"),
        ],
        std::io::sink(),
        Some(&lower),
    )
    .unwrap();
    write_layer(
        vec![
            dir_entry("etc"),
            entry("etc/a", EntryKind::Whiteout, 0o600),
            file(&src, "etc/c", b"c"),
            dir_entry("app"),
            entry("app", EntryKind::Opaque, 0o755),
            file(&src, "app/new", b"new"),
            symlink("lib", "/etc"),
        ],
        std::io::sink(),
        Some(&upper),
    )
    .unwrap();
    RootfsView::new(vec![lower, upper])
}

fn dir_entry(path: &str) -> LayerEntry {
    dir(path)
}

#[test]
fn rootfs_view_merges_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let view = stacked(tmp.path());
    let names = |path: &str| -> Vec<String> {
        view.read_dir(path)
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    assert_eq!(names("/etc"), ["abs", "b", "c", "up"]);
    assert_eq!(names("/app"), ["new"]);
    assert_eq!(names("/"), ["app", "etc", "lib", "loop1", "loop2"]);
    assert_eq!(names("/lib"), ["abs", "b", "c", "up"]);
    assert!(view.lookup("/etc/a", Follow::All).unwrap().is_none());
    assert!(view.lookup("/app/y/z", Follow::All).unwrap().is_none());
    // Chroot-style: `..` stops at the root, absolute targets start at the rootfs root.
    for path in [
        "/etc/up",
        "/etc/abs",
        "/lib/b",
        "lib/../etc/b",
        "/../../etc/b",
    ] {
        let found = view.lookup(path, Follow::All).unwrap().unwrap();
        assert_eq!(found.path, "/etc/b", "{path}");
        assert_eq!(view.read_file(path).unwrap().as_deref(), Some(&b"b"[..]));
    }
    let link = view.lookup("/lib", Follow::NotLast).unwrap().unwrap();
    assert_eq!(link.metadata.kind, FileKind::Symlink);
    assert_eq!(link.metadata.link_target.as_deref(), Some("/etc"));
    let c = view.lookup("/lib/c", Follow::NotLast).unwrap().unwrap();
    assert_eq!(c.path, "/etc/c");
    assert!(c.host_path.starts_with(tmp.path().join("upper")));
    match view.lookup("/loop1", Follow::All) {
        Err(LayerError::SymlinkLoop { path }) => assert_eq!(path, "/loop1"),
        other => panic!("{other:?}"),
    }
    assert!(view.lookup("/loop1", Follow::NotLast).unwrap().is_some());
    let walked: Vec<String> = view
        .walk("/")
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(
        walked,
        [
            "/", "/app", "/app/new", "/etc", "/etc/abs", "/etc/b", "/etc/c", "/etc/up", "/lib",
            "/loop1", "/loop2"
        ]
    );
    assert!(matches!(
        view.read_dir("/etc/b"),
        Err(LayerError::NotADirectory { .. })
    ));
    assert!(matches!(
        view.read_file("/etc"),
        Err(LayerError::NotAFile { .. })
    ));
}

/// One raw tar entry: name, type flag, link name, content.
type RawEntry<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

/// A tar from raw headers, so paths the `tar` crate's builder refuses can be written.
fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, content) in entries {
        let mut header = tar::Header::new_ustar();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(content.len() as u64);
        header.set_entry_type(tar::EntryType::new(*kind));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn unpack_refuses_unsafe_tars() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "layer tar entry \"../evil\": expected no '..' component",
            raw_tar(&[(b"../evil", b'0', b"", b"x")]),
        ),
        (
            "layer tar entry \"/evil\": expected a relative path, found a leading '/'",
            raw_tar(&[(b"/evil", b'0', b"", b"x")]),
        ),
        (
            "layer tar entry \"link/evil\": expected \"link\" to be a directory, found a symlink or file",
            raw_tar(&[(b"link", b'2', b"/tmp", b""), (b"link/evil", b'0', b"", b"x")]),
        ),
        (
            "layer tar entry \"hard\": expected no '..' component",
            raw_tar(&[(b"hard", b'1', b"../../etc/passwd", b"")]),
        ),
        (
            "layer tar entry \"link/passwd\": expected \"link\" to be a directory, found a symlink or file",
            raw_tar(&[(b"link", b'2', b"/etc", b""), (b"h", b'1', b"link/passwd", b"")]),
        ),
    ];
    for (want, bytes) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("snap");
        let err = unpack(&bytes[..], &snap).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert!(!tmp.path().join("evil").exists());
    }
    // A symlink replaced by a file is written as a new file, never through the link.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"keep").unwrap();
    let target = outside.to_str().unwrap().as_bytes().to_vec();
    let bytes = raw_tar(&[(b"f", b'2', &target, b""), (b"f", b'0', b"", b"new")]);
    let snap = tmp.path().join("snap");
    unpack(&bytes[..], &snap).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    assert_eq!(std::fs::read(snap.join("f")).unwrap(), b"new");
}

#[test]
fn unpack_reads_docker_style_headers() {
    // GNU tar's own output (GNU long names, ./ prefixes) unpacks too.
    if !peer_available("tar", "unpack_reads_docker_style_headers") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let long = "n".repeat(150);
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d").join(&long), b"long").unwrap();
    std::os::unix::fs::symlink("d", tree.join("s")).unwrap();
    let layer = tmp.path().join("gnu.tar");
    let status = Command::new("tar")
        .args(["--format=gnu", "-cf"])
        .arg(&layer)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let snap = tmp.path().join("snap");
    unpack(std::fs::File::open(&layer).unwrap(), &snap).unwrap();
    let view = RootfsView::new(vec![snap]);
    assert_eq!(
        view.read_file(&format!("/s/{long}")).unwrap().as_deref(),
        Some(&b"long"[..])
    );
}

#[test]
fn devices_and_owners_need_root() {
    let reason = (!is_root()).then(|| "devices and chown need root".to_string());
    if !peer_ready("devices_and_owners_need_root", reason) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let entries = vec![
        dir("dev"),
        LayerEntry {
            uid: 4242,
            gid: 4343,
            ..entry(
                "dev/null",
                EntryKind::CharDevice { major: 1, minor: 3 },
                0o666,
            )
        },
        entry(
            "dev/loop",
            EntryKind::BlockDevice { major: 7, minor: 0 },
            0o660,
        ),
        entry("dev/pipe", EntryKind::Fifo, 0o644),
    ];
    let mut bytes = Vec::new();
    write_layer(entries, &mut bytes, Some(&snap)).unwrap();
    let view = RootfsView::new(vec![snap]);
    let null = view.lookup("/dev/null", Follow::All).unwrap().unwrap();
    assert_eq!(
        null.metadata.kind,
        FileKind::CharDevice { major: 1, minor: 3 }
    );
    assert_eq!((null.metadata.uid, null.metadata.gid), (4242, 4343));
    assert_eq!(null.metadata.mode, 0o666);
    let again = tmp.path().join("again");
    let summary = unpack(&bytes[..], &again).unwrap();
    assert_eq!(summary.skipped, 0);
    assert_eq!(describe(&view), describe(&RootfsView::new(vec![again])));
}
