//! `kiln save` and `kiln build -o`: archive layout, compression, reproducibility with
//! SOURCE_DATE_EPOCH, the flattened root filesystem, and the real tools reading what kiln
//! writes (skopeo, umoci, docker load + run).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::util::{peer_available, peer_ready, Run};

/// A context and a store, both temporary.
struct Project {
    context: tempfile::TempDir,
    store: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Project {
    fn new(dockerfile: &str) -> Project {
        let project = Project {
            context: tempfile::tempdir().expect("temp context"),
            store: tempfile::tempdir().expect("temp store"),
            out: tempfile::tempdir().expect("temp output"),
        };
        project.write("Dockerfile", dockerfile.as_bytes());
        project
    }

    fn write(&self, relative: &str, bytes: &[u8]) {
        let path = self.context.path().join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("context dirs");
        fs::write(path, bytes).expect("context file");
    }

    fn out(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    /// `kiln ARGS --root STORE` with `env` (SOURCE_DATE_EPOCH is never inherited).
    fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(args)
            .args(["--root", self.store.path().to_str().expect("utf-8")])
            .env_remove("SOURCE_DATE_EPOCH");
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("kiln runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_env(args, &[])
    }

    fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let run = self.kiln_env(args, env);
        assert_eq!(run.code, Some(0), "kiln {args:?} failed:\n{}", run.stderr);
        run.stdout.trim().to_string()
    }

    /// Builds the context quietly with `extra` flags; returns the image digest.
    fn build(&self, extra: &[&str], env: &[(&str, &str)]) -> String {
        let context = self.context.path().to_str().expect("utf-8");
        let mut args = vec!["build", "-q"];
        args.extend_from_slice(extra);
        args.push(context);
        self.ok_env(&args, env)
    }

    fn save(&self, image: &str, name: &str, extra: &[&str]) -> PathBuf {
        let path = self.out(name);
        let mut args = vec!["save", image, "-o", path.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        self.ok(&args);
        path
    }
}

/// One entry of a tar: its header fields and bytes.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    owner_names: bool,
    bytes: Vec<u8>,
}

/// The entries of a tar, in archive order.
fn read_tar(bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let header = entry.header().clone();
        let name = entry.path().expect("a path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry bytes");
        let owner_names = header
            .username()
            .ok()
            .flatten()
            .is_some_and(|n| !n.is_empty())
            || header
                .groupname()
                .ok()
                .flatten()
                .is_some_and(|n| !n.is_empty());
        out.push((
            name,
            Entry {
                kind: header.entry_type(),
                mode: header.mode().expect("mode"),
                uid: header.uid().expect("uid"),
                gid: header.gid().expect("gid"),
                mtime: header.mtime().expect("mtime"),
                owner_names,
                bytes: data,
            },
        ));
    }
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("json")
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn blob<'a>(files: &'a BTreeMap<String, &Entry>, digest: &Value) -> &'a [u8] {
    let digest = digest.as_str().expect("digest text");
    let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    &files
        .get(&name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .bytes
}

fn decompress(media_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("gunzip");
    } else if media_type.ends_with("zstd") {
        out = zstd::decode_all(bytes).expect("unzstd");
    } else {
        out = bytes.to_vec();
    }
    out
}

/// Checks what every archive kiln writes must be; returns the manifest of the first image
/// and the archive's files by name.
fn check_archive(bytes: &[u8], repo_tag: &str) -> Value {
    let entries = read_tar(bytes);
    let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "entries in byte order");
    for (name, entry) in &entries {
        let dir = entry.kind == tar::EntryType::Directory;
        assert_eq!(
            (entry.uid, entry.gid, entry.mtime, entry.owner_names),
            (0, 0, 0, false),
            "{name}: fixed owner and time"
        );
        assert_eq!(entry.mode, if dir { 0o755 } else { 0o644 }, "{name}");
        if let Some(hex) = name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(sha256(&entry.bytes), format!("sha256:{hex}"), "{name}");
        }
    }
    let files: BTreeMap<String, &Entry> = entries.iter().map(|(n, e)| (n.clone(), e)).collect();
    assert_eq!(
        files["oci-layout"].bytes,
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = json(&files["index.json"].bytes);
    assert_eq!(index["schemaVersion"], 2);
    let entry = &index["manifests"][0];
    let manifest = json(blob(&files, &entry["digest"]));
    assert_eq!(entry["mediaType"], manifest["mediaType"]);
    let (name, tag) = repo_tag.rsplit_once(':').expect("name:tag");
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        tag
    );
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        format!("docker.io/library/{name}:{tag}")
    );
    let config = json(blob(&files, &manifest["config"]["digest"]));
    let layers = manifest["layers"].as_array().expect("layers");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let media_type = layer["mediaType"].as_str().expect("media type");
        let plain = decompress(media_type, blob(&files, &layer["digest"]));
        assert_eq!(Value::from(sha256(&plain)), *diff_id, "{media_type}");
    }
    let docker = json(&files["manifest.json"].bytes);
    assert_eq!(docker[0]["RepoTags"], serde_json::json!([repo_tag]));
    assert_eq!(
        docker[0]["Config"],
        format!(
            "blobs/sha256/{}",
            manifest["config"]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        )
    );
    assert_eq!(
        docker[0]["Layers"].as_array().map(Vec::len),
        Some(layers.len())
    );
    manifest
}

const SIMPLE: &str = "FROM scratch\nCOPY a.txt /a.txt\nCOPY dir /dir\nCMD [\"/a.txt\"]\n";

fn simple_project() -> Project {
    let project = Project::new(SIMPLE);
    project.write("a.txt", b"alpha\n");
    project.write("dir/b.txt", &vec![b'b'; 3 << 20]);
    project.write("dir/sub/c.txt", b"gamma\n");
    project
}

#[test]
fn saved_archives_are_oci_layouts_and_docker_archives() {
    let project = simple_project();
    let digest = project.build(&["-t", "ex:1"], &[]);

    let gzip = fs::read(project.save("ex:1", "gzip.tar", &[])).expect("archive");
    let manifest = check_archive(&gzip, "ex:1");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    // The same store saves the same bytes again (the compressed layers are reused).
    let again = fs::read(project.save("ex:1", "again.tar", &[])).expect("archive");
    assert!(gzip == again, "a second save differs");

    // Uncompressed OCI: the manifest is the store's own, so the image keeps its id.
    let none = fs::read(project.save("ex:1", "none.tar", &["--compression", "none"])).unwrap();
    let manifest = check_archive(&none, "ex:1");
    let files = read_tar(&none);
    let index = json(
        &files
            .iter()
            .find(|(n, _)| n == "index.json")
            .unwrap()
            .1
            .bytes,
    );
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );

    let zstd = fs::read(project.save("ex:1", "zstd.tar", &["--compression", "zstd"])).unwrap();
    let manifest = check_archive(&zstd, "ex:1");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    let docker = fs::read(project.save("ex:1", "docker.tar", &["--format", "docker"])).unwrap();
    let manifest = check_archive(&docker, "ex:1");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    // Standard output gets the same bytes as a file.
    let stdout = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["save", "ex:1", "-o", "-", "--root"])
        .arg(project.store.path())
        .output()
        .expect("kiln runs");
    assert!(stdout.status.success());
    assert!(stdout.stdout == gzip, "stdout differs from the file");

    // An OCI layout directory: the same blobs, no docker files.
    let dir = project.out("layout");
    project.ok(&[
        "save",
        "ex:1",
        "--format",
        "oci-dir",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(dir.join("oci-layout").is_file() && dir.join("index.json").is_file());
    assert!(!dir.join("manifest.json").exists());
    let index = json(&fs::read(dir.join("index.json")).unwrap());
    let hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    assert!(dir.join("blobs/sha256").join(hex).is_file());
}

#[test]
fn save_refuses_what_it_cannot_write_and_leaves_no_file() {
    let project = simple_project();
    project.build(&["-t", "ex:1"], &[]);
    let out = project.out("bad.tar");
    let out = out.to_str().unwrap();
    let table: &[(&[&str], &str)] = &[
        (
            &[
                "save",
                "ex:1",
                "-o",
                out,
                "--format",
                "docker",
                "--compression",
                "zstd",
            ],
            "zstd layers need OCI media types",
        ),
        (
            &["save", "ex:1", "-o", out, "--compression-level", "12"],
            "invalid gzip compression level 12: expected 0 to 9",
        ),
        (&["save", "nothing:here", "-o", out], "no such image"),
    ];
    for (args, expected) in table {
        let run = project.kiln_env(args, &[]);
        assert_eq!(run.code, Some(1), "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert!(!Path::new(out).exists(), "{args:?} left a file");
    }
    let context = project.context.path().to_str().unwrap();
    let run = project.kiln_env(&["build", "-q", "-o", "type=image,dest=x", context], &[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("expected type oci, docker, local or tar"),
        "{}",
        run.stderr
    );
}

/// Writes `files` in the given order with mtime `mtime` (seconds).
fn write_tree(project: &Project, files: &[(&str, &str)], mtime: u64) {
    for (path, text) in files {
        project.write(path, text.as_bytes());
        let file = fs::File::options()
            .write(true)
            .open(project.context.path().join(path))
            .expect("opens");
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        file.set_modified(time).expect("sets mtime");
    }
}

const EPOCH: &str = "1700000000";

#[test]
fn source_date_epoch_builds_are_byte_identical() {
    let dockerfile = "FROM scratch\nCOPY . /src\nWORKDIR /work/deep\nCOPY a.txt ./\nCMD [\"x\"]\n";
    let files = [
        ("a.txt", "a\n"),
        ("z/y.txt", "y\n"),
        ("m/n/o.txt", "o\n"),
        ("b.txt", "b\n"),
    ];
    let first = Project::new(dockerfile);
    write_tree(&first, &files, 1_800_000_000);
    let second = Project::new(dockerfile);
    let mut reversed = files;
    reversed.reverse();
    // Another checkout: other order on disk, other (older and newer) times.
    write_tree(&second, &reversed, 1_900_000_000);
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let a = first.out("a.tar");
    let b = second.out("b.tar");
    let digest_a = first.build(
        &["-t", "r:1", "-o", &format!("type=oci,dest={}", a.display())],
        &[("SOURCE_DATE_EPOCH", EPOCH)],
    );
    let digest_b = second.build(
        &[
            "-t",
            "r:1",
            "--build-arg",
            &format!("SOURCE_DATE_EPOCH={EPOCH}"),
            "-o",
            &format!("type=oci,dest={}", b.display()),
        ],
        &[],
    );
    assert_eq!(digest_a, digest_b);
    let bytes = fs::read(&a).unwrap();
    assert!(bytes == fs::read(&b).unwrap(), "the two archives differ");

    let manifest = check_archive(&bytes, "r:1");
    let entries = read_tar(&bytes);
    let files: BTreeMap<String, &Entry> = entries.iter().map(|(n, e)| (n.clone(), e)).collect();
    let config = json(blob(&files, &manifest["config"]["digest"]));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    for entry in config["history"].as_array().unwrap() {
        assert_eq!(entry["created"], "2023-11-14T22:13:20Z");
    }
    let epoch: u64 = EPOCH.parse().unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let media_type = layer["mediaType"].as_str().unwrap();
        let plain = decompress(media_type, blob(&files, &layer["digest"]));
        for (name, entry) in read_tar(&plain) {
            assert!(entry.mtime <= epoch, "{name} has mtime {}", entry.mtime);
        }
    }

    // Without SOURCE_DATE_EPOCH: another image, and a rebuild in the same store reuses it.
    let plain = first.build(&[], &[]);
    assert_ne!(plain, digest_a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(first.build(&[], &[]), plain);
}

#[test]
fn source_date_epoch_leaves_base_layers_alone() {
    let base = Project::new("FROM scratch\nCOPY new.txt /\n");
    write_tree(&base, &[("new.txt", "from the future\n")], 1_900_000_000);
    let base_digest = base.build(&["-t", "base:1"], &[]);
    let base_manifest = json(
        &fs::read(
            base.store
                .path()
                .join("blobs/sha256")
                .join(base_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    );
    // The next build uses the same store.
    base.write("Dockerfile", b"FROM base:1\nCOPY more.txt /\n");
    write_tree(&base, &[("more.txt", "more\n")], 1_900_000_000);
    let digest = base.build(&[], &[("SOURCE_DATE_EPOCH", EPOCH)]);
    let manifest = json(
        &fs::read(
            base.store
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    );
    assert_eq!(manifest["layers"][0], base_manifest["layers"][0]);
    let top = manifest["layers"][1]["digest"].as_str().unwrap();
    let layer = fs::read(
        base.store
            .path()
            .join("blobs/sha256")
            .join(top.trim_start_matches("sha256:")),
    )
    .unwrap();
    let entries = read_tar(&layer);
    let more = entries
        .iter()
        .find(|(name, _)| name == "more.txt")
        .expect("more.txt");
    assert_eq!(more.1.mtime, EPOCH.parse::<u64>().unwrap());
}

/// True when kiln's sandbox can run RUN here; otherwise prints why the caller skips.
fn sandbox_ready(test: &str) -> bool {
    let init = Path::new(env!("CARGO_BIN_EXE_kiln"));
    let problem = match kiln::sandbox::probe_with(init) {
        Err(error) => Some(format!("kiln's sandbox cannot run here: {error}")),
        Ok(_) if !Path::new("/bin/busybox").is_file() => {
            Some("/bin/busybox (busybox-static) is missing".into())
        }
        Ok(_) => None,
    };
    peer_ready(test, problem)
}

/// Each path of the tree at `root` with its type, mode, owner, link target and content
/// digest, one line each, sorted.
fn describe_tree(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walks");
        let meta = entry.path().symlink_metadata().expect("lstat");
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let what = if meta.is_symlink() {
            format!("-> {}", fs::read_link(entry.path()).unwrap().display())
        } else if meta.is_file() {
            sha256(&fs::read(entry.path()).unwrap())
        } else {
            String::new()
        };
        lines.push(format!(
            "{rel} {:o} {}:{} {what}",
            meta.mode(),
            meta.uid(),
            meta.gid()
        ));
    }
    lines.sort();
    lines
}

#[test]
fn local_and_tar_outputs_hold_the_flattened_tree_as_umoci_unpacks_it() {
    if !sandbox_ready("local_and_tar_outputs_hold_the_flattened_tree_as_umoci_unpacks_it") {
        return;
    }
    let project = Project::new(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN mkdir -p /app/gone && echo x > /app/gone/f && echo keep > /app/keep && ln /app/keep /app/link\n\
         RUN rm -r /app/gone /bin/yes && chmod 0750 /app\n",
    );
    fs::copy("/bin/busybox", project.context.path().join("busybox")).expect("busybox");
    let local = project.out("local");
    let tar_path = project.out("root.tar");
    project.build(
        &[
            "-t",
            "flat:1",
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
        &[],
    );
    project.build(
        &["-o", &format!("type=tar,dest={}", tar_path.display())],
        &[],
    );
    let tree = describe_tree(&local);
    let text = tree.join("\n");
    assert!(
        !local.join("app/gone").exists(),
        "whiteout not applied:\n{text}"
    );
    assert!(
        !local.join("bin/yes").exists(),
        "whiteout not applied:\n{text}"
    );
    // Rootless, the files of type=local are the caller's, as BuildKit's rootless exporter
    // writes them.
    let owner = match rustix::process::geteuid().as_raw() {
        0 => "0:0".to_string(),
        uid => format!("{uid}:{}", rustix::process::getegid().as_raw()),
    };
    assert!(text.contains(&format!("app 40750 {owner}")), "{text}");
    assert!(local.join("bin/sh").is_symlink());
    let entries = read_tar(&fs::read(&tar_path).unwrap());
    let names: Vec<&str> = entries
        .iter()
        .map(|(n, _)| n.trim_end_matches('/'))
        .collect();
    assert!(names.contains(&"app/keep") && names.contains(&"bin/busybox"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("app/gone") || *n == "bin/yes"));
    let link = entries
        .iter()
        .find(|(n, _)| n == "app/link")
        .expect("app/link");
    assert_eq!(link.1.kind, tar::EntryType::Link, "a hard link stays one");

    if !peer_available(
        "umoci",
        "local_and_tar_outputs_hold_the_flattened_tree_as_umoci_unpacks_it",
    ) {
        return;
    }
    let layout = project.out("layout");
    project.ok(&[
        "save",
        "flat:1",
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
    ]);
    let unpacked = project.out("umoci");
    let image = format!("{}:1", layout.display());
    let mut args = vec!["raw", "unpack"];
    if !rustix::process::geteuid().is_root() {
        args.push("--rootless");
    }
    args.push("--image");
    let args: Vec<&std::ffi::OsStr> = args.into_iter().map(std::ffi::OsStr::new).collect();
    peer(
        "umoci",
        &[&args[..], &[image.as_ref(), unpacked.as_os_str()]].concat(),
    );
    assert_eq!(
        describe_tree(&unpacked),
        tree,
        "umoci's tree differs from type=local"
    );
}

#[test]
fn skopeo_inspects_and_copies_the_archive() {
    if !peer_available("skopeo", "skopeo_inspects_and_copies_the_archive") {
        return;
    }
    let project = simple_project();
    let digest = project.build(&["-t", "ex:1"], &[]);
    for (name, compression) in [
        ("gzip.tar", "gzip"),
        ("zstd.tar", "zstd"),
        ("none.tar", "none"),
    ] {
        let archive = project.save("ex:1", name, &["--compression", compression]);
        let source = format!("oci-archive:{}", archive.display());
        let raw = peer(
            "skopeo",
            &["inspect".as_ref(), "--raw".as_ref(), source.as_ref()],
        );
        let manifest = json(&raw);
        assert_eq!(
            manifest["layers"].as_array().map(Vec::len),
            Some(2),
            "{compression}"
        );
        if compression == "none" {
            assert_eq!(sha256(&raw), digest);
        }
        let copy = project.out(&format!("copy-{compression}"));
        let tagged = format!("{source}:1");
        let target = format!("dir:{}", copy.display());
        peer(
            "skopeo",
            &[
                "copy".as_ref(),
                "-q".as_ref(),
                tagged.as_ref(),
                target.as_ref(),
            ],
        );
        assert!(copy.join("manifest.json").is_file());
    }
}

/// Runs a peer tool; returns its standard output, failing the test (with its stderr) when it
/// fails.
fn peer(tool: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let output = Command::new(tool)
        .args(args)
        .output()
        .expect("the peer runs");
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn docker_unreachable() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => Some(format!("docker does not run: {error}")),
    }
}

#[test]
fn docker_loads_and_runs_the_archive() {
    let test = "docker_loads_and_runs_the_archive";
    if !peer_available("docker", test) || !peer_ready(test, docker_unreachable()) {
        return;
    }
    if !Path::new("/bin/busybox").is_file() {
        peer_ready(
            test,
            Some("/bin/busybox (busybox-static) is missing".into()),
        );
        return;
    }
    let project = Project::new(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY msg /msg\nENV WHO=kiln\n\
         ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\"]\nCMD [\"cat /msg; echo from $WHO\"]\n",
    );
    fs::copy("/bin/busybox", project.context.path().join("busybox")).expect("busybox");
    project.write("msg", b"hello from an archive\n");
    project.build(&["-t", "kiln-export-docker:1"], &[]);
    for (tag, extra) in [
        ("gzip", &[][..]),
        ("none", &["--compression", "none"][..]),
        ("docker", &["--format", "docker"][..]),
    ] {
        let name = format!("kiln-export-docker:{tag}");
        project.ok(&["tag", "kiln-export-docker:1", &name]);
        let archive = project.save(&name, &format!("{tag}.tar"), extra);
        let loaded = peer(
            "docker",
            &["load".as_ref(), "-i".as_ref(), archive.as_os_str()],
        );
        let loaded = String::from_utf8_lossy(&loaded);
        assert!(
            loaded.contains(&format!("Loaded image: {name}")),
            "{tag}: {loaded}"
        );
        let run = Command::new("docker")
            .args(["run", "--rm", &name])
            .output()
            .expect("docker runs");
        let _ = Command::new("docker").args(["rmi", "-f", &name]).output();
        assert!(
            run.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "hello from an archive\nfrom kiln\n",
            "{tag}"
        );
    }
}

#[test]
fn an_image_saved_by_id_is_untagged_and_prune_drops_compressed_layers() {
    let project = simple_project();
    let digest = project.build(&["-t", "ex:1"], &[]);
    let short = &digest["sha256:".len().."sha256:".len() + 12];
    let archive = fs::read(project.save(short, "by-id.tar", &[])).unwrap();
    let entries = read_tar(&archive);
    let file = |name: &str| json(&entries.iter().find(|(n, _)| n == name).unwrap().1.bytes);
    let index = file("index.json");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert!(
        index["manifests"][0].get("annotations").is_none(),
        "{index}"
    );
    assert_eq!(file("manifest.json")[0]["RepoTags"], serde_json::json!([]));
    assert_eq!(file("repositories"), serde_json::json!({}));

    let records = project.store.path().join("kiln/records/compressed-layer");
    assert_eq!(fs::read_dir(&records).unwrap().count(), 2, "one per layer");
    project.ok(&["cache", "prune"]);
    assert_eq!(fs::read_dir(&records).map_or(0, Iterator::count), 0);
    // The image is untouched and saves the same bytes again.
    let again = fs::read(project.save("ex:1", "again.tar", &[])).unwrap();
    assert_eq!(read_tar(&again).len(), entries.len());
}

#[test]
fn several_images_share_one_archive_and_build_can_write_to_stdout() {
    let project = simple_project();
    // The directory `COPY dir /dir` makes gets the build time as mtime (as BuildKit's does),
    // unless SOURCE_DATE_EPOCH clamps it: so the two builds make the same layer even when
    // they fall in different seconds.
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let first = project.build(&["-t", "ex:1"], &epoch);
    project.write("a.txt", b"changed\n");
    let second = project.build(&["-t", "ex:2"], &epoch);
    let path = project.out("both.tar");
    project.ok(&["save", "ex:1", "ex:2", "-o", path.to_str().unwrap()]);
    let entries = read_tar(&fs::read(&path).unwrap());
    let file = |name: &str| json(&entries.iter().find(|(n, _)| n == name).unwrap().1.bytes);
    let index = file("index.json");
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["1", "2"]);
    let docker = file("manifest.json");
    assert_eq!(docker[0]["RepoTags"], serde_json::json!(["ex:1"]));
    assert_eq!(docker[1]["RepoTags"], serde_json::json!(["ex:2"]));
    // The unchanged `COPY dir /dir` layer is stored once.
    let blobs = entries
        .iter()
        .filter(|(n, _)| n.starts_with("blobs/sha256/") && n.len() > 13);
    assert_eq!(
        blobs.count(),
        2 + 2 + 3,
        "two manifests, two configs, three layers"
    );
    assert_ne!(first, second);

    // `-o -`: the root filesystem as a tar on stdout, and no digest line mixed into it.
    let context = project.context.path().to_str().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "-q", "-o", "-", "--root"])
        .arg(project.store.path())
        .arg(context)
        .output()
        .expect("kiln runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rootfs = read_tar(&run.stdout);
    let a = rootfs.iter().find(|(n, _)| n == "a.txt").expect("a.txt");
    assert_eq!(a.1.bytes, b"changed\n");
    assert!(rootfs.iter().any(|(n, _)| n == "dir/sub/c.txt"));
}
