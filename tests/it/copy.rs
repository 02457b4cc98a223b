//! ADD end to end at the library level: archives by magic bytes and downloads from a server
//! on 127.0.0.1 (Last-Modified, --checksum).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use kiln::layer::{EntryKind, Timestamp};
use kiln::solve::add::{archive_compression, fetch_url, Compression};
use kiln::solve::copy::{plan_copy, CopyError, CopyOptions, HostDir, Prepared};

fn tar_bytes() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_mode(0o4755);
    header.set_uid(7);
    header.set_gid(8);
    header.set_mtime(1_000);
    header.set_cksum();
    builder
        .append_data(&mut header, "in/f", &b"t\n"[..])
        .unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn add_extracts_archives_by_content_and_keeps_owners() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes()).unwrap();
    std::fs::write(src.path().join("archive.txt"), gz.finish().unwrap()).unwrap();
    std::fs::write(src.path().join("plain.tar"), tar_bytes()).unwrap();
    std::fs::write(src.path().join("notar"), b"just text").unwrap();
    let cases = [
        ("archive.txt", Some(Compression::Gzip)),
        ("plain.tar", Some(Compression::None)),
        ("notar", None),
    ];
    for (name, expected) in cases {
        assert_eq!(
            archive_compression(&src.path().join(name)).unwrap(),
            expected,
            "{name}"
        );
    }
    let options = CopyOptions {
        destination: "/t9".into(),
        workdir: "/".into(),
        owner: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        add: true,
        unpack: None,
        now: Timestamp { secs: 5, nanos: 0 },
        scratch: scratch.path().to_path_buf(),
    };
    let sources = [Prepared::Tree {
        pattern: "archive.txt".into(),
    }];
    let tree = HostDir::new(src.path(), false);
    let entries = plan_copy(&sources, &options, &tree, &HostDir::new(dst.path(), false)).unwrap();
    let shown: Vec<(String, u32, u32, u32)> = entries
        .iter()
        .map(|e| (e.path.clone(), e.mode, e.uid, e.gid))
        .collect();
    assert_eq!(
        shown,
        [
            ("t9".to_string(), 0o755, 0, 0),
            ("t9/in".to_string(), 0o755, 0, 0),
            ("t9/in/f".to_string(), 0o4755, 7, 8),
        ]
    );
    let EntryKind::File { source } = &entries[2].kind else {
        panic!("not a file")
    };
    assert_eq!(std::fs::read(source).unwrap(), b"t\n");
}

/// Serves `body` once per connection with a fixed Last-Modified.
fn serve(body: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 2048];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Mon, 23 Nov 2026 10:59:04 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("http://{address}/dir/served.txt")
}

#[test]
fn add_downloads_with_mode_mtime_and_checksum() {
    let url = serve(b"hello");
    let scratch = tempfile::tempdir().unwrap();
    let file = fetch_url(&url, None, scratch.path()).unwrap();
    assert_eq!(file.name, "served.txt");
    assert_eq!(file.stat.mode, 0o600);
    assert_eq!(
        file.stat.mtime,
        Timestamp {
            secs: 1_795_431_544,
            nanos: 0
        }
    );
    assert_eq!(std::fs::read(&file.file).unwrap(), b"hello");
    let good = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert!(fetch_url(&url, Some(good), scratch.path()).is_ok());
    let bad = format!("sha256:{}", "0".repeat(64));
    match fetch_url(&url, Some(&bad), scratch.path()) {
        Err(CopyError::ChecksumMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, bad);
            assert_eq!(actual, good);
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
}

fn add_options(destination: &str, scratch: &std::path::Path) -> CopyOptions {
    CopyOptions {
        destination: destination.into(),
        workdir: "/".into(),
        owner: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        add: true,
        unpack: None,
        now: Timestamp { secs: 5, nanos: 0 },
        scratch: scratch.to_path_buf(),
    }
}

#[test]
fn add_archive_merges_replaces_and_skips_its_root() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dst.path().join("t/olddir/inner")).unwrap();
    // Relative: an absolute target would resolve from the extraction root, as in a chroot.
    std::os::unix::fs::symlink("real", dst.path().join("t/viasym")).unwrap();
    std::fs::create_dir_all(dst.path().join("t/real")).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(77);
        header.set_cksum();
        builder.append_data(&mut header, path, data).unwrap();
    };
    add("./", tar::EntryType::Directory, 0o700, b"");
    add("olddir", tar::EntryType::Regular, 0o644, b"now a file");
    add(
        "viasym/f",
        tar::EntryType::Regular,
        0o644,
        b"through the link",
    );
    add("new/deep/g", tar::EntryType::Regular, 0o600, b"g");
    std::fs::write(src.path().join("a.tar"), builder.into_inner().unwrap()).unwrap();
    let entries = plan_copy(
        &[Prepared::Tree {
            pattern: "a.tar".into(),
        }],
        &add_options("/t/", scratch.path()),
        &HostDir::new(src.path(), false),
        &HostDir::new(dst.path(), false),
    )
    .unwrap();
    let shown: Vec<(String, u32, i64)> = entries
        .iter()
        .map(|e| (e.path.clone(), e.mode, e.mtime.secs))
        .collect();
    let t_mode = shown.first().map(|e| e.1).unwrap();
    assert_eq!(
        shown,
        [
            ("t".to_string(), t_mode, 5),
            ("t/new".to_string(), 0o755, 5),
            ("t/new/deep".to_string(), 0o755, 5),
            ("t/new/deep/g".to_string(), 0o600, 77),
            ("t/olddir".to_string(), 0o644, 77),
            ("t/real".to_string(), 0o755, 5),
            ("t/real/f".to_string(), 0o644, 77),
        ]
    );
    assert!(
        t_mode != 0o700,
        "the archive's root entry must not change the destination"
    );
}

#[test]
fn add_url_lands_in_the_destination_dir() {
    let url = serve(b"hello");
    let scratch = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let file = fetch_url(&url, None, scratch.path()).unwrap();
    // dockerd 20.10 ignores --chmod for downloads.
    let mut options = add_options("/u1/", scratch.path());
    options.chmod = Some(kiln::syntax::instruction::values::Chmod::Octal(0o755));
    let entries = plan_copy(
        &[Prepared::File {
            file,
            download: true,
        }],
        &options,
        &HostDir::new(scratch.path(), false),
        &HostDir::new(dst.path(), false),
    )
    .unwrap();
    let shown: Vec<(String, u32)> = entries.iter().map(|e| (e.path.clone(), e.mode)).collect();
    assert_eq!(
        shown,
        [
            ("u1".to_string(), 0o755),
            ("u1/served.txt".to_string(), 0o600)
        ]
    );
}

#[test]
fn heredoc_sources_become_0644_files_named_after_the_delimiter() {
    use kiln::solve::add::prepare_sources;
    use kiln::syntax::instruction::CopySource;
    use kiln::syntax::Heredoc;
    let scratch = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let now = Timestamp { secs: 5, nanos: 0 };
    let doc = Heredoc {
        name: "EOF".into(),
        content: "\thello\n".into(),
        expand: true,
        chomp: true,
        fd: 0,
    };
    let sources = prepare_sources(
        &[CopySource::Heredoc(doc)],
        false,
        None,
        now,
        scratch.path(),
    )
    .unwrap();
    let mut options = add_options("/etc/", scratch.path());
    options.add = false;
    let entries = plan_copy(
        &sources,
        &options,
        &HostDir::new(scratch.path(), false),
        &HostDir::new(dst.path(), false),
    )
    .unwrap();
    let file = entries.last().unwrap();
    assert_eq!(
        (file.path.as_str(), file.mode, file.mtime),
        ("etc/EOF", 0o644, now)
    );
    let EntryKind::File { source } = &file.kind else {
        panic!("not a file")
    };
    assert_eq!(std::fs::read(source).unwrap(), b"hello\n");
    // COPY refuses URLs and --checksum; git sources are not supported yet.
    let url = CopySource::Path {
        path: "https://example.com/a".into(),
    };
    assert!(matches!(
        prepare_sources(std::slice::from_ref(&url), false, None, now, scratch.path()),
        Err(CopyError::UrlInCopy { .. })
    ));
    assert!(matches!(
        prepare_sources(&[url], false, Some("sha256:00"), now, scratch.path()),
        Err(CopyError::ChecksumMisuse { .. })
    ));
    let git = CopySource::Path {
        path: "https://github.com/o/r.git".into(),
    };
    assert!(matches!(
        prepare_sources(&[git], true, None, now, scratch.path()),
        Err(CopyError::GitUnsupported { .. })
    ));
}

#[test]
fn add_refuses_archive_paths_outside_the_destination() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_old();
    // tar's builder refuses `..`, so the name is written into the header directly.
    header.as_old_mut().name[..7].copy_from_slice(b"../evil");
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"x"[..]).unwrap();
    std::fs::write(src.path().join("evil.tar"), builder.into_inner().unwrap()).unwrap();
    let error = plan_copy(
        &[Prepared::Tree {
            pattern: "evil.tar".into(),
        }],
        &add_options("/t/", scratch.path()),
        &HostDir::new(src.path(), false),
        &HostDir::new(dst.path(), false),
    )
    .unwrap_err();
    assert!(
        matches!(&error, CopyError::Archive { reason, .. } if reason.contains("outside")),
        "{error}"
    );
}
