//! `layer::diff_upper`: overlay upper directories (hand-made, and from a real overlay mount)
//! read as layers, written with `write_layer`, read back with the tar crate, and unpacked over
//! their lower snapshot.

use crate::util::peer_ready;
use kiln::layer::{
    diff_upper, unpack, write_layer, DiffOptions, EntryKind, FileKind, IdExtent, IdMap, LayerEntry,
    RootfsView, Timestamp,
};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// True if and only if the test may run: whiteout devices of other owners, `trusted.*` xattrs,
/// chown and overlay mounts need root.
fn root_ready(test: &str) -> bool {
    let reason = (!rustix::process::geteuid().is_root())
        .then(|| "it needs root (trusted.* xattrs, chown, overlay mounts)".to_string());
    peer_ready(test, reason)
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn mknod(path: &Path, kind: FileType, major: u32, minor: u32) {
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(CWD, path, kind, Mode::from_raw_mode(0o666), dev).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
}

/// An upper directory as overlayfs would leave it, with every kind of change.
fn hand_made_upper(upper: &Path) {
    let at = |rel: &str| upper.join(rel);
    for dir in ["app", "opq", "devs", "etc"] {
        std::fs::create_dir_all(at(dir)).unwrap();
    }
    std::fs::write(at("app/new.txt"), b"new\n").unwrap();
    std::os::unix::fs::chown(at("app/new.txt"), Some(1000), Some(1000)).unwrap();
    chmod(&at("app/new.txt"), 0o4755);
    set_xattr(&at("app/new.txt"), "user.test", b"v");
    set_xattr(&at("app/new.txt"), "trusted.overlay.origin", b"junk");
    set_mtime(&at("app/new.txt"), 1_700_000_001, 500_000_000);
    std::fs::hard_link(at("app/new.txt"), at("app/link2")).unwrap();
    mknod(&at("app/gone"), FileType::CharacterDevice, 0, 0);
    // The newer whiteout form; its directory says so with opaque=x, which is not opaque.
    std::fs::write(at("app/xgone"), b"").unwrap();
    set_xattr(&at("app/xgone"), "trusted.overlay.whiteout", b"");
    set_xattr(&at("app"), "trusted.overlay.opaque", b"x");
    set_xattr(&at("opq"), "trusted.overlay.opaque", b"y");
    std::fs::write(at("opq/inside"), b"in").unwrap();
    std::os::unix::fs::symlink("app/new.txt", at("sym")).unwrap();
    mknod(&at("fifo"), FileType::Fifo, 0, 0);
    mknod(&at("devs/null"), FileType::CharacterDevice, 1, 3);
    let _socket = std::os::unix::net::UnixListener::bind(at("sock")).unwrap();
    // A mount point the sandbox made: dropped with its directory.
    std::fs::write(at("etc/hosts"), b"").unwrap();
    for rel in [
        "app/gone",
        "app/xgone",
        "opq/inside",
        "sym",
        "fifo",
        "devs/null",
    ] {
        set_mtime(&at(rel), 1_700_000_002, 0);
    }
    for dir in ["app", "opq", "devs", "etc"] {
        set_mtime(&at(dir), 1_700_000_000, 0);
    }
}

/// One line per tar entry: name, type flag, permission bits, owner, link or device, PAX
/// records (mtime and xattrs) and content.
fn describe_tar(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut line = format!(
            "{name} {} {:o} {}:{}",
            header.entry_type().as_byte() as char,
            header.mode().unwrap() & 0o7777,
            header.uid().unwrap(),
            header.gid().unwrap()
        );
        if let Some(link) = entry.link_name_bytes() {
            line += &format!(" -> {}", String::from_utf8_lossy(&link));
        }
        if let (Ok(Some(major)), Ok(Some(minor))) = (header.device_major(), header.device_minor()) {
            if header.entry_type().is_character_special() {
                line += &format!(" dev {major}:{minor}");
            }
        }
        if let Some(pax) = entry.pax_extensions().unwrap() {
            for record in pax {
                let record = record.unwrap();
                let key = record.key().unwrap().to_string();
                if key == "mtime" || key.starts_with("SCHILY.xattr.") {
                    line += &format!(" {key}={}", String::from_utf8_lossy(record.value_bytes()));
                }
            }
        }
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        if !content.is_empty() {
            line += &format!(" {content:?}");
        }
        out.push(line);
    }
    out
}

fn layer_bytes(entries: Vec<LayerEntry>) -> Vec<u8> {
    let mut out = Vec::new();
    write_layer(entries, &mut out, None).unwrap();
    out
}

#[test]
fn hand_made_upper_becomes_a_layer() {
    if !root_ready("hand_made_upper_becomes_a_layer") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    hand_made_upper(&upper);
    let options = DiffOptions {
        ignore: vec!["etc/hosts".into()],
        ..DiffOptions::default()
    };
    let entries = diff_upper(&upper, &options).unwrap();
    let link = entries.iter().find(|e| e.path == "app/new.txt").unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Hardlink {
            target: "app/link2".into()
        }
    );
    assert_eq!(
        describe_tar(&layer_bytes(entries)),
        [
            "app/ 5 755 0:0",
            "app/.wh.gone 0 0 0:0",
            "app/.wh.xgone 0 0 0:0",
            "app/link2 0 4755 1000:1000 SCHILY.xattr.user.test=v mtime=1700000001.5 \"new\\n\"",
            "app/new.txt 1 4755 1000:1000 -> app/link2 SCHILY.xattr.user.test=v mtime=1700000001.5",
            "devs/ 5 755 0:0",
            "devs/null 3 644 0:0 dev 1:3",
            "fifo 6 644 0:0",
            "opq/ 5 755 0:0",
            "opq/.wh..wh..opq 0 755 0:0",
            "opq/inside 0 644 0:0 \"in\"",
            "sym 2 777 0:0 -> app/new.txt",
        ]
    );
}

#[test]
fn rootless_ids_are_shifted_back() {
    if !root_ready("rootless_ids_are_shifted_back") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, uid) in [("in-range", 101_000), ("base", 100_000), ("outside", 5)] {
        let path = tmp.path().join(name);
        std::fs::write(&path, b"").unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid + 1)).unwrap();
    }
    let options = DiffOptions {
        id_map: Some(IdMap {
            uids: vec![IdExtent {
                container: 0,
                host: 100_000,
                count: 65536,
            }],
            gids: vec![IdExtent {
                container: 0,
                host: 100_000,
                count: 65536,
            }],
        }),
        ..DiffOptions::default()
    };
    let owners: Vec<(String, u32, u32)> = diff_upper(tmp.path(), &options)
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.uid, e.gid))
        .collect();
    assert_eq!(
        owners,
        [
            ("base".to_string(), 0, 1),
            ("in-range".to_string(), 1000, 1001),
            ("outside".to_string(), 65534, 65534),
        ]
    );
}

fn entry(path: &str, kind: EntryKind, mode: u32) -> LayerEntry {
    LayerEntry {
        path: path.into(),
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

/// Writes a lower snapshot holding `dirs` and `files` (path, content).
fn lower_snapshot(dir: &Path, src: &Path, dirs: &[&str], files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(src).unwrap();
    let mut entries: Vec<LayerEntry> = dirs
        .iter()
        .map(|d| entry(d, EntryKind::Dir, 0o755))
        .collect();
    for (path, content) in files {
        let source = src.join(path.replace('/', "_"));
        std::fs::write(&source, content).unwrap();
        entries.push(entry(path, EntryKind::File { source }, 0o644));
    }
    write_layer(entries, std::io::sink(), Some(dir)).unwrap();
    dir.to_path_buf()
}

/// Every path of the merged view with its content for regular files.
fn describe_view(view: &RootfsView) -> Vec<String> {
    view.walk("/")
        .unwrap()
        .into_iter()
        .map(|found| {
            if found.metadata.kind != FileKind::File {
                return found.path;
            }
            let content = view.read_file(&found.path).unwrap().unwrap();
            format!("{} {:?}", found.path, String::from_utf8_lossy(&content))
        })
        .collect()
}

/// Unpacks the layer of `upper` into `top` and returns the view of `lower` + `top`.
fn apply(upper: &Path, lower: &Path, top: &Path, options: &DiffOptions) -> RootfsView {
    let entries = diff_upper(upper, options).unwrap();
    let bytes = layer_bytes(entries);
    unpack(&bytes[..], top).unwrap();
    RootfsView::new(vec![lower.to_path_buf(), top.to_path_buf()])
}

#[test]
fn upper_layer_round_trips_over_its_lower_snapshot() {
    if !root_ready("upper_layer_round_trips_over_its_lower_snapshot") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = lower_snapshot(
        &tmp.path().join("lower"),
        &tmp.path().join("src"),
        &["app", "opq"],
        &[
            ("app/old", "old"),
            ("app/gone", "g"),
            ("app/xgone", "xg"),
            ("opq/lowerfile", "l"),
            ("keep", "k"),
        ],
    );
    let upper = tmp.path().join("upper");
    hand_made_upper(&upper);
    let options = DiffOptions {
        ignore: vec!["etc/hosts".into()],
        lower: vec![lower.clone()],
        ..DiffOptions::default()
    };
    let view = apply(&upper, &lower, &tmp.path().join("top"), &options);
    assert_eq!(
        describe_view(&view),
        [
            "/",
            "/app",
            "/app/link2 \"new\\n\"",
            "/app/new.txt \"new\\n\"",
            "/app/old \"old\"",
            "/devs",
            "/devs/null",
            "/fifo",
            "/keep \"k\"",
            "/opq",
            "/opq/inside \"in\"",
            "/sym",
        ]
    );
}

/// Unmounts the overlay when dropped, so a failing assertion leaves nothing mounted.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The lower snapshot and the upper directory of a real overlay mount in `tmp` after a set
/// of changes of every kind; `None` (with the reason printed) where overlay cannot mount.
fn real_overlay_upper(test: &str, tmp: &Path) -> Option<(PathBuf, PathBuf)> {
    let lower = lower_snapshot(
        &tmp.join("lower"),
        &tmp.join("src"),
        &["base", "tree", "tree/sub", "hl"],
        &[
            ("base/keep", "keep"),
            ("base/change", "v1"),
            ("base/del", "del"),
            ("tree/a", "a"),
            ("tree/sub/b", "b"),
        ],
    );
    let [upper, work, merged] = ["upper", "work", "merged"].map(|d| {
        let path = tmp.join(d);
        std::fs::create_dir(&path).unwrap();
        path
    });
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&merged)
        .status()
        .unwrap();
    let reason = (!status.success()).then(|| format!("mount -t overlay failed: {status}"));
    if !peer_ready(test, reason) {
        return None;
    }
    let mount = Mounted(merged.clone());
    let at = |rel: &str| merged.join(rel);
    std::fs::write(at("new.txt"), b"new").unwrap();
    chmod(&at("new.txt"), 0o4755);
    std::fs::write(at("owned"), b"o").unwrap();
    std::os::unix::fs::chown(at("owned"), Some(1234), Some(5678)).unwrap();
    let mut change = std::fs::OpenOptions::new()
        .append(true)
        .open(at("base/change"))
        .unwrap();
    std::io::Write::write_all(&mut change, b"v2").unwrap();
    drop(change);
    std::fs::remove_file(at("base/del")).unwrap();
    std::fs::hard_link(at("base/keep"), at("base/keep2")).unwrap();
    std::fs::remove_dir_all(at("tree")).unwrap();
    std::fs::create_dir(at("tree")).unwrap();
    std::fs::write(at("tree/fresh"), b"fresh").unwrap();
    std::fs::write(at("hl/one"), b"one").unwrap();
    std::fs::hard_link(at("hl/one"), at("hl/two")).unwrap();
    mknod(&at("pipe"), FileType::Fifo, 0, 0);
    drop(mount);
    Some((lower, upper))
}

#[test]
fn real_overlay_mount_gives_its_changes() {
    let test = "real_overlay_mount_gives_its_changes";
    if !root_ready(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some((lower, upper)) = real_overlay_upper(test, tmp.path()) else {
        return;
    };

    let entries = diff_upper(&upper, &DiffOptions::default()).unwrap();
    let summary: Vec<String> = entries
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::Dir => "dir".to_string(),
                EntryKind::File { .. } => "file".to_string(),
                EntryKind::Hardlink { target } => format!("link {target}"),
                EntryKind::Whiteout => "whiteout".to_string(),
                EntryKind::Opaque => "opaque".to_string(),
                EntryKind::Fifo => "fifo".to_string(),
                other => format!("{other:?}"),
            };
            format!("{} {kind} {:o} {}:{}", e.path, e.mode, e.uid, e.gid)
        })
        .collect();
    assert_eq!(
        summary,
        [
            "base dir 755 0:0",
            "base/del whiteout 0 0:0",
            "base/change file 644 0:0",
            "base/keep file 644 0:0",
            "base/keep2 link base/keep 644 0:0",
            "hl dir 755 0:0",
            "hl/one file 644 0:0",
            "hl/two link hl/one 644 0:0",
            "new.txt file 4755 0:0",
            "owned file 644 1234:5678",
            "pipe fifo 644 0:0",
            "tree dir 755 0:0",
            "tree opaque 755 0:0",
            "tree/fresh file 644 0:0",
        ]
    );
    let view = apply(
        &upper,
        &lower,
        &tmp.path().join("top"),
        &DiffOptions::default(),
    );
    assert_eq!(
        describe_view(&view),
        [
            "/",
            "/base",
            "/base/change \"v1v2\"",
            "/base/keep \"keep\"",
            "/base/keep2 \"keep\"",
            "/hl",
            "/hl/one \"one\"",
            "/hl/two \"one\"",
            "/new.txt \"new\"",
            "/owned \"o\"",
            "/pipe",
            "/tree",
            "/tree/fresh \"fresh\"",
        ]
    );
}

/// One line per path under `root` with everything a snapshot holds: type, permission bits,
/// owner, mtime (not the root's, which records when its last child was made), size, link
/// target or device, every xattr, and which earlier path shares its inode. A whiteout is only
/// its kind: overlayfs shares one inode between all of them.
fn describe_tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut first_name: std::collections::HashMap<u64, String> = Default::default();
    let mut out = Vec::new();
    for dirent in walkdir::WalkDir::new(root).sort_by_file_name() {
        let dirent = dirent.unwrap();
        let rel = dirent
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let meta = dirent.path().symlink_metadata().unwrap();
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            out.push(format!("{rel:?} whiteout"));
            continue;
        }
        let mut line = format!(
            "{rel:?} {:?} {:o} {}:{} size {}",
            ft,
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            if ft.is_dir() { 0 } else { meta.len() }
        );
        if !rel.is_empty() {
            line += &format!(" mtime {}.{:09}", meta.mtime(), meta.mtime_nsec());
        }
        if ft.is_symlink() {
            line += &format!(" -> {:?}", std::fs::read_link(dirent.path()).unwrap());
        }
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(dirent.path(), &mut names).unwrap();
        let mut xattrs: Vec<String> = names[..n]
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| {
                let name = String::from_utf8_lossy(name).into_owned();
                let mut value = vec![0u8; 4096];
                let len = rustix::fs::lgetxattr(dirent.path(), name.as_str(), &mut value).unwrap();
                format!("{name}={:?}", String::from_utf8_lossy(&value[..len]))
            })
            .collect();
        xattrs.sort();
        line += &format!(" xattrs {xattrs:?}");
        if !ft.is_dir() && meta.nlink() > 1 {
            let first = first_name.entry(meta.ino()).or_insert_with(|| rel.clone());
            line += &format!(" inode of {first:?}");
        }
        out.push(line);
    }
    out
}

/// A RUN's upper directory becomes its layer's snapshot in place (`adopt_upper`) instead of
/// a second copy being written; it must then be exactly what unpacking the layer gives.
#[test]
fn an_adopted_upper_is_what_unpacking_its_layer_gives() {
    let test = "an_adopted_upper_is_what_unpacking_its_layer_gives";
    if !root_ready(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some((_lower, upper)) = real_overlay_upper(test, tmp.path()) else {
        return;
    };
    // What the sandbox leaves besides the command's changes: a mount point the layer drops,
    // and a socket a layer cannot hold.
    std::fs::write(upper.join("stub"), b"").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(upper.join("sock")).unwrap();
    let options = DiffOptions {
        ignore: vec!["stub".into()],
        ..DiffOptions::default()
    };
    let mut entries = diff_upper(&upper, &options).unwrap();
    // Whole seconds, as every layer a build writes; and a directory only the layer has, as
    // the runtime directories a RUN's layer gains.
    kiln::layer::clamp_mtimes(&mut entries, None);
    entries.push(entry("proc", EntryKind::Dir, 0o555));
    assert!(kiln::layer::adopt_upper(&upper, &entries).unwrap());
    let bytes = layer_bytes(entries);
    let unpacked = tempfile::tempdir().unwrap();
    unpack(&bytes[..], unpacked.path()).unwrap();
    let adopted = describe_tree(&upper);
    assert_eq!(adopted, describe_tree(unpacked.path()));
    // The comparison covered what matters: an opaque directory, a whiteout, hard links,
    // whole-second times.
    let joined = adopted.join("\n");
    for expected in [
        "\"tree\" FileType",
        "trusted.overlay.opaque=\\\"y\\\"",
        "\"base/del\" whiteout",
        "inode of \"hl/one\"",
        "\"proc\" FileType",
    ] {
        assert!(joined.contains(expected), "{expected} in:\n{joined}");
    }
    assert!(
        !joined.contains("\"stub\"") && !joined.contains("\"sock\""),
        "{joined}"
    );
}
