//! Table tests for COPY/ADD planning against temp-dir source and destination trees; each
//! case mirrors a BuildKit result listed in the module doc.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::*;
use crate::layer::{EntryKind, LayerEntry};

const NOW: Timestamp = Timestamp {
    secs: 1_000_000,
    nanos: 0,
};

fn write(root: &Path, path: &str, content: &str, mode: u32) {
    let full = root.join(path);
    fs::create_dir_all(full.parent().unwrap()).unwrap();
    fs::write(&full, content).unwrap();
    fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
}

/// The source context of every case.
fn context(root: &Path) {
    write(root, "a.txt", "a", 0o644);
    write(root, "b.txt", "b", 0o640);
    write(root, "dir/x", "x", 0o644);
    write(root, "dir/.hidden", "h", 0o644);
    write(root, "dir/sub/y", "y", 0o644);
    write(root, "dir/skip.md", "m", 0o644);
    fs::set_permissions(root.join("dir/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir_all(root.join("dir/empty")).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    symlink("dir", root.join("dirlink")).unwrap();
    symlink("x", root.join("dir/lx")).unwrap();
    // Names the image has as a symlink (existsym) and as a directory (existing).
    fs::create_dir_all(root.join("tree/existsym")).unwrap();
    fs::create_dir_all(root.join("t2")).unwrap();
    symlink("x", root.join("t2/existing")).unwrap();
}

/// The destination image of every case.
fn image(root: &Path) {
    fs::create_dir_all(root.join("existing")).unwrap();
    fs::set_permissions(root.join("existing"), fs::Permissions::from_mode(0o700)).unwrap();
    write(root, "existing/old", "old", 0o644);
    write(root, "filedest", "f", 0o644);
    symlink("/existing", root.join("existsym")).unwrap();
}

fn options(destination: &str) -> CopyOptions {
    CopyOptions {
        destination: destination.to_owned(),
        workdir: "/".to_owned(),
        owner: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        add: false,
        unpack: None,
        now: NOW,
        scratch: std::env::temp_dir(),
    }
}

/// `path kind mode` lines, one per entry.
fn render(entries: &[LayerEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| {
            let kind = match &entry.kind {
                EntryKind::Dir => "dir".to_owned(),
                EntryKind::File { source } => {
                    format!("file={}", source.file_name().unwrap().to_string_lossy())
                }
                EntryKind::Symlink { target } => format!("link={target}"),
                EntryKind::Hardlink { target } => format!("hard={target}"),
                other => format!("{other:?}"),
            };
            let now = if entry.mtime == NOW { " now" } else { "" };
            format!(
                "{} {} {:o} {}:{}{}",
                entry.path, kind, entry.mode, entry.uid, entry.gid, now
            )
        })
        .collect()
}

fn run(sources: &[&str], options: CopyOptions) -> Result<Vec<String>, CopyError> {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    context(src.path());
    image(dst.path());
    let tree = HostDir::new(src.path(), false);
    let dest = HostDir::new(dst.path(), false);
    let prepared: Vec<Prepared> = sources
        .iter()
        .map(|pattern| Prepared::Tree {
            pattern: (*pattern).to_owned(),
        })
        .collect();
    let entries = if options.is_linked() {
        plan_copy(&prepared, &options, &tree, &Scratch)?
    } else {
        plan_copy(&prepared, &options, &tree, &dest)?
    };
    Ok(render(&entries))
}

#[test]
fn copy_table() {
    let chown = |mut o: CopyOptions| {
        o.owner = Some(Owner {
            uid: 1000,
            gid: 1001,
        });
        o
    };
    let chmod = |mut o: CopyOptions| {
        o.chmod = Some(Chmod::Octal(0o751));
        o
    };
    let workdir = |mut o: CopyOptions| {
        o.workdir = "/wd".to_owned();
        o
    };
    let exclude = |mut o: CopyOptions| {
        o.exclude = vec!["*.md".to_owned(), "sub".to_owned()];
        o
    };
    let link = |mut o: CopyOptions| {
        o.link = true;
        o
    };
    let parents = |mut o: CopyOptions| {
        o.parents = true;
        o
    };
    let cases: Vec<(&str, Vec<&str>, CopyOptions, Vec<&str>)> = vec![
        (
            "file into new dir",
            vec!["a.txt"],
            options("/x/y/"),
            vec![
                "x dir 755 0:0 now",
                "x/y dir 755 0:0 now",
                "x/y/a.txt file=a.txt 644 0:0",
            ],
        ),
        (
            "file as file",
            vec!["a.txt"],
            options("/f"),
            vec!["f file=a.txt 644 0:0"],
        ),
        (
            "file into existing dir",
            vec!["a.txt"],
            options("/existing"),
            vec![
                "existing dir 700 0:0 now",
                "existing/a.txt file=a.txt 644 0:0",
            ],
        ),
        (
            "through a symlink to a dir",
            vec!["a.txt"],
            options("/existsym"),
            vec![
                "existing dir 700 0:0 now",
                "existing/a.txt file=a.txt 644 0:0",
            ],
        ),
        (
            "dir contents, hidden, empty, symlinks kept",
            vec!["dir"],
            options("/d"),
            vec![
                "d dir 755 0:0 now",
                "d/.hidden file=.hidden 644 0:0",
                "d/empty dir 755 0:0",
                "d/lx link=x 777 0:0",
                "d/skip.md file=skip.md 644 0:0",
                "d/sub dir 750 0:0",
                "d/sub/y file=y 644 0:0",
                "d/x file=x 644 0:0",
            ],
        ),
        (
            "symlink source followed, named after the link",
            vec!["lin*"],
            options("/w/"),
            vec!["w dir 755 0:0 now", "w/link file=a.txt 644 0:0"],
        ),
        (
            "symlinked dir source copies contents",
            vec!["dirlink/sub"],
            options("/s"),
            vec!["s dir 755 0:0 now", "s/y file=y 644 0:0"],
        ),
        (
            "several sources without slash: last wins",
            vec!["a.txt", "b.txt"],
            options("/m"),
            vec!["m file=b.txt 640 0:0"],
        ),
        (
            "wildcards",
            vec!["[ab].txt"],
            options("/g/"),
            vec![
                "g dir 755 0:0 now",
                "g/a.txt file=a.txt 644 0:0",
                "g/b.txt file=b.txt 640 0:0",
            ],
        ),
        (
            "no wildcard match is no change",
            vec!["nope*"],
            options("/n/"),
            vec![],
        ),
        (
            "escaping sources stay in the context",
            vec!["../a.txt", "/b.txt"],
            options("/e/"),
            vec![
                "e dir 755 0:0 now",
                "e/a.txt file=a.txt 644 0:0",
                "e/b.txt file=b.txt 640 0:0",
            ],
        ),
        (
            "chown owns created parents",
            vec!["a.txt"],
            chown(options("/c/p/")),
            vec![
                "c dir 755 1000:1001 now",
                "c/p dir 755 1000:1001 now",
                "c/p/a.txt file=a.txt 644 1000:1001",
            ],
        ),
        (
            "chmod on files and nested dirs, not symlinks or the destination",
            vec!["dir/sub", "link"],
            chmod(options("/cm/")),
            vec![
                "cm dir 755 0:0 now",
                "cm/link file=a.txt 751 0:0",
                "cm/y file=y 751 0:0",
            ],
        ),
        (
            "relative destination against WORKDIR",
            vec!["a.txt"],
            workdir(options("rel/")),
            vec![
                "wd dir 755 0:0 now",
                "wd/rel dir 755 0:0 now",
                "wd/rel/a.txt file=a.txt 644 0:0",
            ],
        ),
        (
            "exclude below the source",
            vec!["dir"],
            exclude(options("/ex/")),
            vec![
                "ex dir 755 0:0 now",
                "ex/.hidden file=.hidden 644 0:0",
                "ex/empty dir 755 0:0",
                "ex/lx link=x 777 0:0",
                "ex/x file=x 644 0:0",
            ],
        ),
        (
            "link ignores the image",
            vec!["a.txt"],
            link(options("/existsym")),
            vec!["existsym file=a.txt 644 0:0"],
        ),
        (
            "parents keep the source path",
            vec!["dir/sub/y", "dir/./x"],
            parents(options("/p/")),
            vec![
                "p dir 755 0:0 now",
                "p/dir dir 755 0:0",
                "p/dir/sub dir 750 0:0",
                "p/dir/sub/y file=y 644 0:0",
                "p/x file=x 644 0:0",
            ],
        ),
    ];
    for (name, sources, options, expected) in cases {
        let got = run(&sources, options).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn copy_errors() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("nope", "/x", "source \"/nope\" not found"),
        ("a.txt", "/filedest/", "not a directory"),
        (
            "dir",
            "/filedest",
            "cannot copy to non-directory \"/filedest\"",
        ),
        ("a.txt", "/filedest/sub/", "not a directory"),
        ("tree/", "/", "cannot copy to non-directory \"/existsym\""),
        (
            "t2/",
            "/",
            "cannot replace directory \"/existing\" with a file",
        ),
    ];
    for (source, destination, expected) in cases {
        let error = run(&[source], options(destination))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{source} {destination}: {error}");
    }
}

#[test]
fn select_for_cache_key() {
    let src = tempfile::tempdir().unwrap();
    context(src.path());
    let tree = HostDir::new(src.path(), false);
    let prepared = vec![
        Prepared::Tree {
            pattern: "link".to_owned(),
        },
        Prepared::Tree {
            pattern: "dir/sub".to_owned(),
        },
    ];
    let selected = select_sources(&prepared, &options("/"), &tree).unwrap();
    let paths: Vec<&str> = selected.iter().map(|s| s.key_path.as_str()).collect();
    assert_eq!(paths, ["a.txt", "dir/sub/y"]);
    let missing = vec![Prepared::Tree {
        pattern: "missing".to_owned(),
    }];
    assert!(matches!(
        select_sources(&missing, &options("/"), &tree),
        Err(CopyError::SourceNotFound { .. })
    ));
}

#[test]
fn symbolic_and_octal_chmod() {
    let cases = [
        (Chmod::Octal(0o600), 0o4755, false, 0o4600),
        (Chmod::Symbolic("u+x".into()), 0o644, false, 0o744),
        (Chmod::Symbolic("go-w".into()), 0o666, false, 0o644),
        (Chmod::Symbolic("a=r".into()), 0o755, false, 0o444),
        (Chmod::Symbolic("+X".into()), 0o644, true, 0o755),
        (Chmod::Symbolic("+X".into()), 0o644, false, 0o644),
    ];
    for (chmod, mode, is_dir, expected) in cases {
        assert_eq!(
            apply_chmod(&chmod, mode, is_dir).unwrap(),
            expected,
            "{chmod:?}"
        );
    }
}

#[test]
fn hard_links_kept_within_one_copied_tree_only() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    write(src.path(), "h/a", "a", 0o644);
    fs::hard_link(src.path().join("h/a"), src.path().join("h/b")).unwrap();
    let tree = HostDir::new(src.path(), false);
    let dest = HostDir::new(dst.path(), false);
    let plan = |pattern: &str, destination: &str| {
        let sources = [Prepared::Tree {
            pattern: pattern.to_owned(),
        }];
        render(&plan_copy(&sources, &options(destination), &tree, &dest).unwrap())
    };
    assert_eq!(
        plan("h", "/o/"),
        [
            "o dir 755 0:0 now",
            "o/a file=a 644 0:0",
            "o/b hard=o/a 644 0:0"
        ]
    );
    // Each wildcard match is a copy of its own, as in BuildKit's docopy.
    assert_eq!(
        plan("h/*", "/w/"),
        [
            "w dir 755 0:0 now",
            "w/a file=a 644 0:0",
            "w/b file=b 644 0:0"
        ]
    );
}

#[test]
fn only_file_capabilities_survive_and_only_from_stages() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    write(src.path(), "cap", "c", 0o755);
    let file = src.path().join("cap");
    // VFS_CAP_REVISION_2 with the effective flag, CAP_NET_RAW permitted.
    let capability: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    let set = |name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(&file, name, value, rustix::fs::XattrFlags::empty())
    };
    if let Err(error) = set("security.capability", &capability) {
        // Not root, or no xattrs here: nothing to compare.
        assert!(matches!(
            error,
            rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP
        ));
        return;
    }
    set("user.kiln", b"v").unwrap();
    let sources = [Prepared::Tree {
        pattern: "cap".to_owned(),
    }];
    let dest = HostDir::new(dst.path(), false);
    let stage = HostDir::new(src.path(), true);
    let entries = plan_copy(&sources, &options("/x"), &stage, &dest).unwrap();
    assert_eq!(
        entries[0].xattrs,
        [("security.capability".to_owned(), capability)]
    );
    let context = HostDir::new(src.path(), false);
    let entries = plan_copy(&sources, &options("/x"), &context, &dest).unwrap();
    assert!(entries[0].xattrs.is_empty());
}
