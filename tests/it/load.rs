//! `kiln load`: OCI layouts and tarballs, docker save archives (classic and docker 25's OCI
//! form), compressed layers and archives, every kind of corruption rejected with the store
//! left as it was, and images built on after loading. Images are made here byte by byte
//! (layers with the tar crate, documents as JSON), so most tests need no peer; the docker and
//! skopeo tests use the real tools and skip (or fail under `KILN_REQUIRE_PEERS`) without them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::differential::peers::{self, docker_bin};
use crate::util::{kiln, peer_available, peer_ready, Run};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A layer tar holding `files` (regular files, mode 0644, mtime 0).
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *bytes)
            .expect("appends");
    }
    builder.into_inner().expect("finishes")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Packing {
    Plain,
    /// One gzip member.
    Gzip,
    /// Several independent gzip members, as a parallel compressor writes them.
    GzipMembers,
    Zstd,
}

impl Packing {
    fn pack(self, tar: &[u8]) -> Vec<u8> {
        let gzip = |bytes: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(bytes).expect("compresses");
            encoder.finish().expect("finishes")
        };
        match self {
            Packing::Plain => tar.to_vec(),
            Packing::Gzip => gzip(tar),
            Packing::GzipMembers => tar.chunks(700).flat_map(gzip).collect(),
            Packing::Zstd => zstd::encode_all(tar, 3).expect("compresses"),
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Packing::Plain => "application/vnd.oci.image.layer.v1.tar",
            Packing::Gzip | Packing::GzipMembers => "application/vnd.oci.image.layer.v1.tar+gzip",
            Packing::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// The files of an OCI layout (or any archive), by path.
#[derive(Debug, Clone, Default)]
struct Layout {
    files: BTreeMap<String, Vec<u8>>,
    index: Vec<Value>,
}

/// What [`Layout::image`] made.
struct Made {
    manifest: String,
    config: String,
    layers: Vec<String>,
    diff_ids: Vec<String>,
}

impl Layout {
    fn blob(&mut self, bytes: Vec<u8>) -> (String, usize) {
        let digest = sha256(&bytes);
        let size = bytes.len();
        let hex = digest.trim_start_matches("sha256:").to_string();
        self.files.insert(format!("blobs/sha256/{hex}"), bytes);
        (digest, size)
    }

    /// Adds an image of `layers` (each a tar and how to pack it) named `name` (containerd's
    /// annotation); `tweak` may change the config and then the manifest before each is
    /// hashed.
    fn image(
        &mut self,
        name: Option<&str>,
        layers: &[(Vec<u8>, Packing)],
        tweak: impl Fn(Doc, &mut Value),
    ) -> Made {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for (tar, packing) in layers {
            diff_ids.push(sha256(tar));
            let (digest, size) = self.blob(packing.pack(tar));
            layer_digests.push(digest.clone());
            descriptors
                .push(json!({"mediaType": packing.media_type(), "digest": digest, "size": size}));
        }
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "made by tests/it/load.rs"}],
        });
        let mut manifest =
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"});
        tweak(Doc::Config, &mut config);
        let (config_digest, config_size) = self.blob(serde_json::to_vec(&config).expect("json"));
        manifest["config"] = json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        });
        manifest["layers"] = Value::Array(descriptors);
        tweak(Doc::Manifest, &mut manifest);
        let (digest, size) = self.blob(serde_json::to_vec(&manifest).expect("json"));
        let mut entry = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size});
        if let Some(name) = name {
            let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
            entry["annotations"] = json!({
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            });
        }
        self.index.push(entry);
        Made {
            manifest: digest,
            config: config_digest,
            layers: layer_digests,
            diff_ids: config["rootfs"]["diff_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Writes `oci-layout` and `index.json` from the images added.
    fn finish_oci(&mut self) -> &mut Layout {
        self.files.insert(
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        );
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.index});
        self.files.insert(
            "index.json".into(),
            serde_json::to_vec(&index).expect("json"),
        );
        self
    }

    fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in &self.files {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path, bytes.as_slice())
                .expect("appends");
        }
        builder.into_inner().expect("finishes")
    }

    fn write_dir(&self, dir: &Path) {
        for (path, bytes) in &self.files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("writes");
        }
    }

    fn blob_path(digest: &str) -> String {
        format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
    }
}

/// A store root in a temp dir, and the commands run against it.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        Store {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new store holding the image `name` of `layers`, loaded from an OCI archive.
    fn with_image(name: &str, layers: &[(Vec<u8>, Packing)]) -> (Store, Made) {
        let store = Store::new();
        let mut layout = Layout::default();
        let made = layout.image(Some(name), layers, |_, _| {});
        store.load_ok(&layout.finish_oci().tar());
        (store, made)
    }

    fn root(&self) -> String {
        self.dir.path().join("store").display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn kiln(&self, args: &[&str], stdin: &[u8]) -> Run {
        let root = self.root();
        let mut argv = args.to_vec();
        argv.extend(["--root", root.as_str()]);
        kiln(&argv, stdin)
    }

    fn load(&self, archive: &[u8]) -> Run {
        self.kiln(&["load"], archive)
    }

    fn load_ok(&self, archive: &[u8]) -> String {
        let run = self.load(archive);
        assert_eq!(run.code, Some(0), "kiln load failed:\n{}", run.stderr);
        run.stdout
    }

    fn inspect(&self, image: &str) -> Value {
        let run = self.kiln(&["inspect", image], b"");
        assert_eq!(run.code, Some(0), "inspect {image}: {}", run.stderr);
        let mut all: Value = serde_json::from_str(&run.stdout).expect("inspect prints JSON");
        all[0].take()
    }

    /// Writes the build context `ctx` holding `files` (the Dockerfile among them); returns
    /// its path.
    fn context(&self, files: &[(&str, &str)]) -> String {
        let context = self.path("ctx");
        std::fs::create_dir_all(&context).expect("mkdir");
        for (name, text) in files {
            std::fs::write(context.join(name), text).expect("writes");
        }
        context.display().to_string()
    }

    /// Runs `kiln build -q -t TAG EXTRA... CONTEXT`.
    fn build(&self, context: &str, tag: &str, extra: &[&str]) -> Run {
        let mut args = vec!["build", "-q", "-t", tag];
        args.extend_from_slice(extra);
        args.push(context);
        self.kiln(&args, b"")
    }

    /// Every path under the root with the sha256 of its contents (directories as `dir`).
    fn state(&self) -> BTreeMap<String, String> {
        walkdir::WalkDir::new(self.root())
            .into_iter()
            .filter_map(Result::ok)
            .map(|entry| {
                let path = entry.path();
                let relative = path
                    .strip_prefix(self.root())
                    .unwrap_or(path)
                    .display()
                    .to_string();
                let what = match std::fs::read(path) {
                    Ok(bytes) => sha256(&bytes),
                    Err(_) => "dir".to_string(),
                };
                (relative, what)
            })
            .collect()
    }
}

fn two_layers(first: Packing, second: Packing) -> Vec<(Vec<u8>, Packing)> {
    vec![
        (
            layer_tar(&[("etc/motd", b"loaded base\n"), ("bin/tool", &[7u8; 3000])]),
            first,
        ),
        (layer_tar(&[("app/data", b"second layer\n")]), second),
    ]
}

#[test]
fn oci_archives_with_plain_gzip_and_zstd_layers_load_with_their_digests() {
    let store = Store::new();
    let packings = [
        (Packing::Plain, Packing::Plain),
        (Packing::Gzip, Packing::Zstd),
        (Packing::GzipMembers, Packing::Gzip),
    ];
    for (i, (first, second)) in packings.into_iter().enumerate() {
        let name = format!("example.com/loaded/oci:{i}");
        let mut layout = Layout::default();
        let made = layout.image(Some(&name), &two_layers(first, second), |_, _| {});
        let archive = layout.finish_oci().tar();
        let printed = store.load_ok(&archive);
        assert_eq!(
            printed,
            format!("Loaded image: {name}\n"),
            "{first:?}/{second:?}"
        );
        let inspected = store.inspect(&name);
        assert_eq!(
            inspected["Id"], made.manifest,
            "the manifest digest is kept"
        );
        assert_eq!(inspected["ConfigDigest"], made.config);
        let layers: Vec<&str> = inspected["Manifest"]["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .filter_map(|l| l["digest"].as_str())
            .collect();
        assert_eq!(layers, made.layers, "compressed blobs are kept as they are");
        // Loading the same archive again changes nothing and says the same.
        let before = store.state();
        assert_eq!(store.load_ok(&archive), printed);
        assert_eq!(store.state(), before, "a second load writes nothing");
    }
}

#[test]
fn directories_compressed_archives_and_files_load_alike() {
    let mut layout = Layout::default();
    let made = layout.image(
        Some("dir/app:1"),
        &two_layers(Packing::Plain, Packing::Gzip),
        |_, _| {},
    );
    layout.finish_oci();
    let archive = layout.tar();
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", Packing::Gzip.pack(&archive)),
        ("zstd", Packing::Zstd.pack(&archive)),
        ("xz", {
            let mut encoder = xz2::write::XzEncoder::new(Vec::new(), 1);
            encoder.write_all(&archive).expect("compresses");
            encoder.finish().expect("finishes")
        }),
    ];
    for (form, bytes) in &forms {
        let store = Store::new();
        assert_eq!(store.load_ok(bytes), "Loaded image: dir/app:1\n", "{form}");
        assert_eq!(store.inspect("dir/app:1")["Id"], made.manifest, "{form}");
    }
    let store = Store::new();
    let dir = store.path("layout");
    layout.write_dir(&dir);
    let file = store.path("image.tar");
    std::fs::write(&file, &archive).expect("writes");
    for input in [&dir, &file] {
        let input = input.display().to_string();
        let run = store.kiln(&["load", "-i", &input], b"");
        assert_eq!(run.code, Some(0), "{input}: {}", run.stderr);
        assert_eq!(run.stdout, "Loaded image: dir/app:1\n");
    }
    let quiet = store.kiln(&["load", "-q", "-i", &file.display().to_string()], b"");
    assert_eq!(quiet.stdout, format!("{}\n", made.manifest));
}

/// A `docker save` archive in docker's classic layout: `<v1 id>/layer.tar`, `<hex>.json`
/// configs, `manifest.json`; a layer two images share is a symlink to its first copy.
fn docker_classic() -> (Vec<u8>, Vec<String>) {
    let base = layer_tar(&[("bin/tool", b"tool")]);
    let top = layer_tar(&[("etc/app", b"app")]);
    let mut files: Vec<(String, Option<Vec<u8>>, Option<String>)> = Vec::new();
    let mut manifest = Vec::new();
    let mut configs = Vec::new();
    for (i, (tags, layers)) in [
        (
            json!(["docker-app:1", "docker-app:latest"]),
            vec![&base, &top],
        ),
        (Value::Null, vec![&base]),
    ]
    .into_iter()
    .enumerate()
    {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("json");
        let config_name = format!("{}.json", sha256(&config).trim_start_matches("sha256:"));
        configs.push(sha256(&config));
        files.push((config_name.clone(), Some(config), None));
        let mut names = Vec::new();
        for (j, layer) in layers.iter().enumerate() {
            let id = format!("{i}{j}{}", "0".repeat(62));
            if i == 1 {
                // The base layer again: docker links it to the first image's copy.
                files.push((
                    format!("{id}/layer.tar"),
                    None,
                    Some(format!("../{}{}{}/layer.tar", 0, j, "0".repeat(62))),
                ));
            } else {
                files.push((format!("{id}/layer.tar"), Some(layer.to_vec()), None));
            }
            files.push((format!("{id}/VERSION"), Some(b"1.0".to_vec()), None));
            names.push(format!("{id}/layer.tar"));
        }
        manifest.push(json!({"Config": config_name, "RepoTags": tags, "Layers": names}));
    }
    files.push((
        "manifest.json".into(),
        Some(serde_json::to_vec(&manifest).expect("json")),
        None,
    ));
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes, link) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        match (bytes, link) {
            (Some(bytes), _) => {
                header.set_size(bytes.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                builder
                    .append_data(&mut header, &path, bytes.as_slice())
                    .expect("appends");
            }
            (None, Some(link)) => {
                header.set_size(0);
                header.set_entry_type(tar::EntryType::Symlink);
                builder
                    .append_link(&mut header, &path, &link)
                    .expect("appends");
            }
            (None, None) => unreachable!("every entry is a file or a link"),
        }
    }
    (builder.into_inner().expect("finishes"), configs)
}

#[test]
fn docker_classic_archives_load_every_image_with_its_tags() {
    let (archive, configs) = docker_classic();
    let store = Store::new();
    let printed = store.load_ok(&archive);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "Loaded image: docker-app:1",
            "Loaded image: docker-app:latest"
        ]
    );
    assert!(
        lines[2].starts_with("Loaded image ID: sha256:"),
        "{printed}"
    );
    let untagged = lines[2].trim_start_matches("Loaded image ID: ");
    assert_eq!(store.inspect("docker-app:1")["ConfigDigest"], configs[0]);
    assert_eq!(store.inspect(untagged)["ConfigDigest"], configs[1]);
    assert_eq!(
        store.inspect("docker-app:latest")["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn docker_25_archives_take_names_from_manifest_json_when_the_index_has_none() {
    let mut layout = Layout::default();
    let made = layout.image(None, &two_layers(Packing::Plain, Packing::Plain), |_, _| {});
    let manifest_json = json!([{
        "Config": Layout::blob_path(&made.config),
        "RepoTags": ["docker25:1"],
        "Layers": made.layers.iter().map(|l| Layout::blob_path(l)).collect::<Vec<_>>(),
    }]);
    layout.finish_oci();
    layout.files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest_json).expect("json"),
    );
    let store = Store::new();
    assert_eq!(store.load_ok(&layout.tar()), "Loaded image: docker25:1\n");
    assert_eq!(store.inspect("docker25:1")["Id"], made.manifest);
}

/// One way to spoil a valid archive, the words its error must hold.
struct Spoiled {
    case: &'static str,
    archive: Vec<u8>,
    expected: &'static str,
}

/// Which document a [`Layout::image`] tweak is handed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Doc {
    Config,
    Manifest,
}

type Edit<'a> = &'a dyn Fn(&mut Value);

fn spoiled_archives() -> Vec<Spoiled> {
    // A consistent image with these changes: to the config or the manifest before they are
    // hashed (so every digest still matches), then to the layout's files.
    let build = |doc: Option<(Doc, Edit)>, after: &dyn Fn(&mut Layout, &Made)| {
        let mut layout = Layout::default();
        let layers = two_layers(Packing::Gzip, Packing::Plain);
        let made = layout.image(Some("spoiled:1"), &layers, |which, value| {
            if let Some((wanted, edit)) = doc {
                if which == wanted {
                    edit(value);
                }
            }
        });
        layout.finish_oci();
        after(&mut layout, &made);
        layout.tar()
    };
    let config = |edit: Edit| build(Some((Doc::Config, edit)), &|_, _| {});
    let manifest = |edit: Edit| build(Some((Doc::Manifest, edit)), &|_, _| {});
    let files = |after: &dyn Fn(&mut Layout, &Made)| build(None, after);
    let index = |edit: &dyn Fn(&mut Value, &Made)| {
        files(&|layout, made| {
            let mut index: Value =
                serde_json::from_slice(&layout.files["index.json"]).expect("json");
            edit(&mut index, made);
            let bytes = serde_json::to_vec(&index).expect("json");
            layout.files.insert("index.json".into(), bytes);
        })
    };
    let flip = |digest: fn(&Made) -> &String, at: usize| {
        files(&move |layout, made| {
            let blob = layout.files.get_mut(&Layout::blob_path(digest(made)));
            if let Some(byte) = blob.and_then(|b| b.get_mut(at)) {
                *byte ^= 1;
            }
        })
    };
    let good = files(&|_, _| {});
    let gzip = Packing::Gzip.pack(&good);
    let other = sha256(b"another layer");
    let nondistributable = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    let (classic, _) = docker_classic();
    let table: Vec<(&'static str, Vec<u8>, &'static str)> = vec![
        (
            "truncated in a blob",
            good[..good.len() / 2].to_vec(),
            "is truncated or corrupt",
        ),
        (
            "truncated in a header",
            good[..700].to_vec(),
            "is truncated or corrupt",
        ),
        (
            "gzip archive truncated",
            gzip[..gzip.len() - 20].to_vec(),
            "is truncated or corrupt",
        ),
        (
            "docker classic truncated",
            classic[..classic.len() - 1500].to_vec(),
            "is truncated or corrupt",
        ),
        (
            "empty input",
            Vec::new(),
            "holds neither an OCI image layout",
        ),
        (
            "entry outside the archive",
            entry_outside(),
            "leaves the archive",
        ),
        (
            "layer bytes changed",
            flip(|m| &m.layers[1], 600),
            "is corrupt: expected digest",
        ),
        (
            "config bytes changed",
            flip(|m| &m.config, 2),
            "is corrupt: expected digest",
        ),
        (
            "layer missing",
            files(&|layout, made| {
                layout.files.remove(&Layout::blob_path(&made.layers[0]));
            }),
            "is missing from",
        ),
        (
            "diff_id of another layer",
            config(&|c| c["rootfs"]["diff_ids"][1] = json!(other)),
            "does not match the image config: expected diff_id",
        ),
        (
            "one diff_id too many",
            config(&|c| {
                if let Some(ids) = c["rootfs"]["diff_ids"].as_array_mut() {
                    ids.push(json!(other));
                }
            }),
            "lists 3 diff_ids for 2 layers",
        ),
        (
            "config not an image config",
            config(&|c| *c = json!({"not": "a config"})),
            "is not a valid image config",
        ),
        (
            "layer size wrong",
            manifest(&|m| m["layers"][0]["size"] = json!(5)),
            "has the wrong size: expected 5 bytes",
        ),
        (
            "layer media type kiln cannot unpack",
            manifest(&|m| m["layers"][0]["mediaType"] = json!(nondistributable)),
            "has media type \"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip\"",
        ),
        (
            // The plain layer declared as gzip: its digest and size still match.
            "gzip layer that does not decompress",
            manifest(&|m| {
                m["layers"][1]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip")
            }),
            "cannot decompress layer",
        ),
        (
            "manifest size in the index wrong",
            index(&|i, _| i["manifests"][0]["size"] = json!(1)),
            "has the wrong size: expected 1 bytes",
        ),
        (
            "upper-case digest in the index",
            index(&|i, made| {
                let upper = made.manifest.to_uppercase().replace("SHA256", "sha256");
                i["manifests"][0]["digest"] = json!(upper);
            }),
            "unsupported digest",
        ),
    ];
    table
        .into_iter()
        .map(|(case, archive, expected)| Spoiled {
            case,
            archive,
            expected,
        })
        .collect()
}

/// A tar whose one entry is named `blobs/../../evil`.
fn entry_outside() -> Vec<u8> {
    let mut outside = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    // `append_data` refuses `..`; write the name into the header directly.
    let name = b"blobs/../../evil";
    header.as_gnu_mut().expect("gnu header").name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    outside.append(&header, &b"x"[..]).expect("appends");
    outside.into_inner().expect("finishes")
}

#[test]
fn corrupt_and_truncated_archives_are_rejected_and_leave_the_store_unchanged() {
    let store = Store::new();
    // A store that already holds an image and a tag, so "unchanged" covers both.
    let mut layout = Layout::default();
    layout.image(
        Some("spoiled:1"),
        &[(layer_tar(&[("kept", b"kept")]), Packing::Plain)],
        |_, _| {},
    );
    store.load_ok(&layout.finish_oci().tar());
    let before = store.state();
    let mut failures = Vec::new();
    let cases = spoiled_archives();
    for case in &cases {
        let run = store.load(&case.archive);
        if run.code != Some(1) || !run.stderr.contains(case.expected) || !run.stdout.is_empty() {
            failures.push(format!(
                "{}: exit {:?}, expected an error with {:?}:\n{}{}",
                case.case, run.code, case.expected, run.stdout, run.stderr
            ));
        }
        if store.state() != before {
            failures.push(format!("{}: the store changed", case.case));
        }
    }
    crate::util::finish("load rejects spoiled archives", cases.len(), &failures);
}

#[test]
fn an_image_loaded_with_compressed_layers_is_built_on() {
    for (first, second) in [
        (Packing::Gzip, Packing::Zstd),
        (Packing::GzipMembers, Packing::Plain),
    ] {
        let (store, made) = Store::with_image("loaded-base:1", &two_layers(first, second));
        let context = store.context(&[
            ("Dockerfile", "FROM loaded-base:1\nCOPY added /app/added\n"),
            ("added", "added\n"),
        ]);
        let run = store.build(&context, "built:1", &[]);
        assert_eq!(run.code, Some(0), "{first:?}/{second:?}: {}", run.stderr);
        let built = store.inspect("built:1");
        let diff_ids: Vec<String> = built["Config"]["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        assert_eq!(diff_ids.len(), 3, "{first:?}/{second:?}");
        assert_eq!(diff_ids[..2], made.diff_ids, "{first:?}/{second:?}");
    }
}

/// Builds a busybox image with docker (a RUN that makes a layer, an ENV that does not) and
/// tags it `tag`.
fn docker_busybox_image(scratch: &Path, tag: &str) -> Result<(), String> {
    let ctx = scratch.join("docker-ctx");
    std::fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", ctx.join("busybox")).map_err(|e| e.to_string())?;
    let dockerfile = ctx.join("Dockerfile");
    std::fs::write(
        &dockerfile,
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN echo from-docker > /made-by\nENV MADE_BY=docker\n",
    )
    .map_err(|e| e.to_string())?;
    peers::docker_build(&ctx, &dockerfile, &[], tag).map(drop)
}

/// True when docker answers (the differential suite's probe) and busybox is there to build
/// the base from; otherwise prints why the caller skips.
fn docker_ready(test: &str) -> bool {
    peer_available("docker", test)
        && peer_ready(test, peers::docker_unreachable())
        && peer_ready(
            test,
            (!Path::new("/bin/busybox").is_file())
                .then(|| "/bin/busybox (busybox-static) is missing".to_string()),
        )
}

#[test]
fn docker_save_loads_and_kiln_builds_on_it() {
    let test = "docker_save_loads_and_kiln_builds_on_it";
    if !docker_ready(test) {
        return;
    }
    let store = Store::new();
    let tag = "kiln-load-peer:1";
    docker_busybox_image(store.dir.path(), tag).expect("docker builds the base");
    let saved = store.path("saved.tar");
    peers::docker_save(tag, &saved).expect("docker saves the image");
    // Through standard input, as `docker save IMAGE | kiln load` pipes it.
    let saved = std::fs::read(&saved).expect("reads the archive");
    assert_eq!(store.load_ok(&saved), format!("Loaded image: {tag}\n"));
    let docker_id = std::process::Command::new(docker_bin())
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .expect("docker inspect runs");
    let inspected = store.inspect(tag);
    assert_eq!(
        inspected["ConfigDigest"].as_str(),
        Some(String::from_utf8_lossy(&docker_id.stdout).trim()),
        "docker's image id is the config digest"
    );
    assert_eq!(inspected["Config"]["config"]["Env"][1], "MADE_BY=docker");

    // Build on it: with RUN when kiln's sandbox works here, else with COPY only.
    let sandbox = kiln::sandbox::probe_with(Path::new(env!("CARGO_BIN_EXE_kiln"))).is_ok();
    let dockerfile = match sandbox {
        true => format!("FROM {tag}\nCOPY note /note\nRUN cat /made-by /note > /both && echo \"$MADE_BY\" >> /both\n"),
        false => format!("FROM {tag}\nCOPY note /note\n"),
    };
    let context = store.context(&[("Dockerfile", &dockerfile), ("note", "from kiln\n")]);
    let run = store.build(&context, "on-docker:1", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let built = store.inspect("on-docker:1");
    let base_ids = &inspected["Config"]["rootfs"]["diff_ids"];
    let built_ids = &built["Config"]["rootfs"]["diff_ids"];
    let base_len = base_ids.as_array().map_or(0, Vec::len);
    assert_eq!(base_len, 3, "busybox, --install, made-by");
    assert_eq!(
        built_ids.as_array().map(|ids| ids[..base_len].to_vec()),
        base_ids.as_array().cloned(),
        "the loaded layers are the base of the build"
    );
    if !sandbox {
        let _ = writeln!(
            std::io::stderr(),
            "{test}: sandbox unavailable, built with COPY only"
        );
        return;
    }
    // What RUN saw: read the top layer.
    let top = built["Manifest"]["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .expect("a top layer")
        .trim_start_matches("sha256:")
        .to_string();
    let blob =
        std::fs::read(Path::new(&store.root()).join("blobs/sha256").join(top)).expect("blob");
    let mut archive = tar::Archive::new(blob.as_slice());
    let mut both = String::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.path().expect("a path").ends_with("both") {
            std::io::Read::read_to_string(&mut entry, &mut both).expect("reads");
        }
    }
    assert_eq!(both, "from-docker\nfrom kiln\ndocker\n");
}

#[test]
fn skopeo_oci_archives_load() {
    let test = "skopeo_oci_archives_load";
    if !peer_available("skopeo", test) {
        return;
    }
    let (source, made) =
        Store::with_image("skopeo-src:1", &two_layers(Packing::Plain, Packing::Plain));
    for (compression, name) in [
        ("gzip", "skopeo/gzip:1"),
        ("zstd", "example.com/skopeo/zstd:2"),
    ] {
        let archive = source.path(&format!("{compression}.tar"));
        let out = std::process::Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--dest-compress",
                "--dest-compress-format",
                compression,
            ])
            .arg(format!(
                "oci:{}:docker.io/library/skopeo-src:1",
                source.root()
            ))
            .arg(format!("oci-archive:{}:{name}", archive.display()))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = Store::new();
        let bytes = std::fs::read(&archive).expect("reads");
        assert_eq!(target.load_ok(&bytes), format!("Loaded image: {name}\n"));
        let loaded = target.inspect(name);
        assert_eq!(loaded["Config"]["rootfs"]["diff_ids"], json!(made.diff_ids));
        let media = loaded["Manifest"]["layers"][0]["mediaType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(media.ends_with(compression), "{compression}: {media}");
    }
}

#[test]
fn build_contexts_name_oci_layouts_and_docker_archives() {
    let store = Store::new();
    let mut layout = Layout::default();
    let made = layout.image(
        Some("ctx-base:7"),
        &two_layers(Packing::Zstd, Packing::Plain),
        |_, _| {},
    );
    layout.finish_oci();
    let dir = store.path("layout");
    layout.write_dir(&dir);
    let mut single = Layout::default();
    let single_made = single.image(None, &two_layers(Packing::Gzip, Packing::Gzip), |_, _| {});
    let archive = store.path("single.tar");
    std::fs::write(&archive, single.finish_oci().tar()).expect("writes");
    let classic = store.path("classic.tar");
    std::fs::write(&classic, docker_classic().0).expect("writes");
    let context = store.context(&[("Dockerfile", "FROM base\nCOPY f /f\n"), ("f", "f\n")]);
    // The --build-context value, and the base's bottom diff_id or the error's words.
    let cases: [(String, Result<&str, &str>); 5] = [
        (
            format!("base=oci-layout://{}:7", dir.display()),
            Ok(&made.diff_ids[0]),
        ),
        (
            format!("base=oci-layout://{}@{}", dir.display(), made.manifest),
            Ok(&made.diff_ids[0]),
        ),
        (
            format!("base=docker-archive:{}", archive.display()),
            Ok(&single_made.diff_ids[0]),
        ),
        (
            format!("base=oci-layout://{}:8", dir.display()),
            Err("no image \"8\""),
        ),
        (
            format!("base=docker-archive:{}", classic.display()),
            Err("holds 2 images"),
        ),
    ];
    for (i, (source, expected)) in cases.iter().enumerate() {
        let tag = format!("from-context:{i}");
        let run = store.build(&context, &tag, &["--build-context", source]);
        match expected {
            Ok(bottom) => {
                assert_eq!(run.code, Some(0), "{source}: {}", run.stderr);
                let diff_ids = &store.inspect(&tag)["Config"]["rootfs"]["diff_ids"];
                assert_eq!(diff_ids.as_array().map_or(0, Vec::len), 3, "{source}");
                assert_eq!(diff_ids[0], *bottom, "{source}");
            }
            Err(words) => {
                assert_eq!(run.code, Some(1), "{source}");
                assert!(run.stderr.contains(words), "{source}: {}", run.stderr);
            }
        }
    }
}

#[test]
fn kiln_save_output_loads_back_in_every_format() {
    let (source, made) =
        Store::with_image("round/trip:1", &two_layers(Packing::Plain, Packing::Plain));
    let forms: &[&[&str]] = &[
        &["--format", "oci"],
        &["--format", "oci", "--compression", "zstd"],
        &["--format", "docker"],
        &["--format", "oci-dir"],
    ];
    for form in forms {
        let out = source.path(&form.join("-"));
        let out_text = out.display().to_string();
        let mut args = vec!["save", "round/trip:1", "-o", &out_text];
        args.extend_from_slice(form);
        let saved = source.kiln(&args, b"");
        assert_eq!(saved.code, Some(0), "{form:?}: {}", saved.stderr);
        let target = Store::new();
        let run = target.kiln(&["load", "-i", &out_text], b"");
        assert_eq!(run.code, Some(0), "{form:?}: {}", run.stderr);
        assert_eq!(run.stdout, "Loaded image: round/trip:1\n", "{form:?}");
        let loaded = target.inspect("round/trip:1");
        assert_eq!(loaded["ConfigDigest"], made.config, "{form:?}");
    }
}

#[test]
fn rmi_frees_a_loaded_image_and_gc_keeps_an_unnamed_one() {
    let (store, made) = Store::with_image(
        "freed:1",
        &[(layer_tar(&[("freed", b"freed")]), Packing::Gzip)],
    );
    let mut unnamed = Layout::default();
    let kept = unnamed.image(
        None,
        &[(layer_tar(&[("kept", b"kept")]), Packing::Zstd)],
        |_, _| {},
    );
    let printed = store.load_ok(&unnamed.finish_oci().tar());
    assert_eq!(printed, format!("Loaded image ID: {}\n", kept.manifest));
    let has = |digest: &str| {
        Path::new(&store.root())
            .join(Layout::blob_path(digest))
            .is_file()
    };
    let run = store.kiln(&["rmi", "freed:1"], b"");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for digest in [&made.manifest, &made.config, &made.layers[0]] {
        assert!(!has(digest), "{digest} is freed with its tag");
    }
    for digest in [&kept.manifest, &kept.config, &kept.layers[0]] {
        assert!(has(digest), "{digest} of the unnamed image stays");
    }
    assert_eq!(store.inspect(&kept.manifest)["ConfigDigest"], kept.config);
}
