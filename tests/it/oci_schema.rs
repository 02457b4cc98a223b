//! The OCI image spec, by the book: the JSON Schemas and test tables of
//! ../shared/conformance/oci-image-spec (see its README), run through a draft-04 validator
//! with format assertions on, plus the checks upstream's Go validator makes beyond the schema
//! (digest encodings, padded base64 `data`, `Env` entries). Every case must be accepted or
//! rejected as `cases.tsv` says and every spec example accepted; the counts are printed.
//!
//! Then what kiln writes goes through the same validator: the store's `oci-layout` and
//! `index.json`, the manifest and config of a built image, and every document of a
//! `kiln save` tarball; a config's `rootfs.diff_ids` must be the digests of the uncompressed
//! layers, and its `history` must have one entry per instruction, `empty_layer` exactly where
//! no layer was made.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use jsonschema::{Draft, Resource, Validator};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::util::{conformance_dir, finish, kiln};

fn spec_dir() -> PathBuf {
    conformance_dir().join("oci-image-spec")
}

/// Rows of a `#`-commented TSV file.
fn tsv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

/// The validators, one per media type of `schema/entrypoints.tsv`, every schema registered
/// under its file name and the URLs of `schema/aliases.tsv` so nothing is fetched.
struct Book {
    validators: BTreeMap<String, Validator>,
}

impl Book {
    fn load() -> Book {
        let schema_dir = spec_dir().join("schema");
        let read = |file: &str| -> Value {
            let path = schema_dir.join(file);
            let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in tsv(&schema_dir.join("aliases.tsv")) {
            if let [file, url, ..] = row.as_slice() {
                names
                    .entry(file.clone())
                    .or_default()
                    .push(url.trim().to_string());
            }
        }
        let mut validators = BTreeMap::new();
        for row in tsv(&schema_dir.join("entrypoints.tsv")) {
            let [media_type, root, ..] = row.as_slice() else {
                panic!("entrypoints.tsv: bad row {row:?}");
            };
            let mut options = jsonschema::options();
            options
                .with_draft(Draft::Draft4)
                .should_validate_formats(true);
            for (file, urls) in &names {
                for name in std::iter::once(file).chain(urls) {
                    let resource = Resource::from_contents(read(file))
                        .unwrap_or_else(|e| panic!("{file}: {e}"));
                    options.with_resource(name.clone(), resource);
                }
            }
            let validator = options
                .build(&read(root.trim()))
                .unwrap_or_else(|e| panic!("{root}: {e}"));
            validators.insert(media_type.clone(), validator);
        }
        Book { validators }
    }

    /// Returns why `text` is not a valid document of `media_type`, or `None` if it is.
    fn problem(&self, media_type: &str, text: &[u8]) -> Option<String> {
        let Some(validator) = self.validators.get(media_type) else {
            return Some(format!("no schema for {media_type}"));
        };
        let document: Value = match serde_json::from_slice(text) {
            Ok(document) => document,
            Err(error) => return Some(format!("not JSON: {error}")),
        };
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        if !errors.is_empty() {
            return Some(errors.join("; "));
        }
        go_checks(media_type, &document).err()
    }
}

/// What upstream's Go validator checks beyond the schema (the README's points 1 to 3).
fn go_checks(media_type: &str, document: &Value) -> Result<(), String> {
    let descriptors: Vec<&Value> = match media_type {
        "application/vnd.oci.descriptor.v1+json" => vec![document],
        "application/vnd.oci.image.manifest.v1+json" => std::iter::once(&document["config"])
            .chain(document["layers"].as_array().into_iter().flatten())
            .chain(document.get("subject"))
            .collect(),
        "application/vnd.oci.image.index.v1+json" => document["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(document.get("subject"))
            .collect(),
        _ => Vec::new(),
    };
    for descriptor in descriptors {
        if let Some(digest) = descriptor["digest"].as_str() {
            check_digest(digest)?;
        }
        if let Some(data) = descriptor.get("data") {
            let data = data.as_str().ok_or("data is not a string")?;
            if !is_padded_base64(data) {
                return Err(format!("data {data:?} is not padded standard base64"));
            }
        }
    }
    if media_type == "application/vnd.oci.image.config.v1+json" {
        for entry in document["config"]["Env"].as_array().into_iter().flatten() {
            let entry = entry.as_str().ok_or("an Env entry is not a string")?;
            if !entry
                .split_once('=')
                .is_some_and(|(name, _)| !name.is_empty())
            {
                return Err(format!("Env entry {entry:?} is not NAME=VALUE"));
            }
        }
    }
    Ok(())
}

/// Go's digest package: a registered algorithm needs its own encoding (lower-case hex of the
/// algorithm's length); others only the schema's pattern.
fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} has no algorithm"));
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Ok(()),
    };
    let hex = encoded.len() == length
        && encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match hex {
        true => Ok(()),
        false => Err(format!(
            "digest {digest:?}: expected {length} lower-case hex digits"
        )),
    }
}

/// Go's `base64.StdEncoding`: the standard alphabet, padded to a multiple of four.
fn is_padded_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    bytes.len() % 4 == 0
        && padding <= 2
        && bytes[..bytes.len() - padding]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// README's `docker-mediatypes-to-oci` preprocessing.
fn docker_to_oci(text: &str) -> String {
    [
        (
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json",
        ),
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.oci.image.config.v1+json",
        ),
    ]
    .iter()
    .fold(text.to_string(), |text, (from, to)| text.replace(from, to))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[test]
fn oci_image_spec_cases_are_accepted_or_rejected_as_upstream_says() {
    let book = Book::load();
    let mut failures = Vec::new();
    let rows = tsv(&spec_dir().join("cases.tsv"));
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &rows {
        let [file, media_type, expected, preprocess, sha, ..] = row.as_slice() else {
            failures.push(format!("cases.tsv: bad row {row:?}"));
            continue;
        };
        let bytes = std::fs::read(spec_dir().join(file)).unwrap_or_default();
        if !sha.is_empty() && sha256(&bytes) != *sha {
            failures.push(format!("{file}: sha256 {} is not {sha}", sha256(&bytes)));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let text = match preprocess.as_str() {
            "docker-mediatypes-to-oci" => docker_to_oci(&text),
            _ => text,
        };
        let problem = book.problem(media_type, text.as_bytes());
        let kind = file.split('/').nth(1).unwrap_or(file).to_string();
        *counts.entry((kind, expected.clone())).or_default() += 1;
        match (expected.as_str(), problem) {
            ("valid", Some(problem)) => failures.push(format!("{file}: rejected: {problem}")),
            ("invalid", None) => failures.push(format!("{file}: accepted")),
            ("valid" | "invalid", _) => {}
            (other, _) => failures.push(format!("{file}: unknown expectation {other:?}")),
        }
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|((kind, expected), n)| format!("{kind} {expected} {n}"))
        .collect();
    // Past libtest's capture, as util::finish prints its count.
    let _ = writeln!(
        std::io::stderr(),
        "oci-image-spec cases by kind: {}",
        summary.join(", ")
    );
    finish("oci-image-spec cases", rows.len(), &failures);
}

#[test]
fn oci_image_spec_examples_are_valid() {
    let book = Book::load();
    let dir = spec_dir().join("spec-examples");
    let rows = tsv(&dir.join("examples.tsv"));
    let mut failures = Vec::new();
    for row in &rows {
        let [file, media_type, ..] = row.as_slice() else {
            failures.push(format!("examples.tsv: bad row {row:?}"));
            continue;
        };
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        if let Some(problem) = book.problem(media_type, &bytes) {
            failures.push(format!("{file}: {problem}"));
        }
    }
    finish("oci-image-spec examples", rows.len(), &failures);
}

/// The validator's own table: documents it must reject only because of the Go checks.
#[test]
fn go_checks_beyond_the_schema() {
    let table: &[(&str, &str, bool)] = &[
        (
            "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270",
            "digest",
            true,
        ),
        (
            "sha256:5B0BCABD1ED22E9FB1310CF6C2DEC7CDEF19F0AD69EFA1F392E94A4333501270",
            "digest",
            false,
        ),
        ("sha256:abc", "digest", false),
        (
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
            "digest",
            true,
        ),
        ("aGVsbG8=", "base64", true),
        ("aGVsbG8", "base64", false),
        ("aGV-bG8=", "base64", false),
        ("", "base64", true),
    ];
    for (text, kind, valid) in table {
        let found = match *kind {
            "digest" => check_digest(text).is_ok(),
            _ => is_padded_base64(text),
        };
        assert_eq!(found, *valid, "{kind} {text}");
    }
}

/// A store in a temp dir with one image built from a context that needs no sandbox (and a
/// RUN step when the sandbox works).
struct Built {
    dir: tempfile::TempDir,
    /// (created_by prefix, empty_layer) for each instruction after FROM, in order.
    expected_history: Vec<(&'static str, bool)>,
}

impl Built {
    fn new() -> Built {
        let dir = tempfile::tempdir().expect("temp dir");
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).expect("mkdir");
        std::fs::write(ctx.join("a.txt"), "a\n").expect("writes");
        std::fs::write(ctx.join("b.txt"), "b\n").expect("writes");
        let sandbox = Path::new("/bin/busybox").is_file()
            && kiln::sandbox::probe_with(Path::new(env!("CARGO_BIN_EXE_kiln"))).is_ok();
        let mut dockerfile = String::from(
            "FROM scratch\nCOPY a.txt /a.txt\nENV GREETING=hello\nLABEL org.example.kind=test\nCOPY b.txt /etc/b.txt\nEXPOSE 8080\nCMD [\"/bin/sh\"]\n",
        );
        let mut expected_history = vec![
            ("COPY a.txt /a.txt", false),
            ("ENV GREETING=hello", true),
            ("LABEL org.example.kind=test", true),
            ("COPY b.txt /etc/b.txt", false),
            ("EXPOSE map[8080/tcp:{}]", true),
            ("CMD [\"/bin/sh\"]", true),
        ];
        if sandbox {
            std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("copies busybox");
            dockerfile.push_str(
                "COPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"mkdir\", \"/made\"]\n",
            );
            expected_history.push(("COPY busybox /bin/busybox", false));
            // BuildKit writes `RUN /bin/busybox mkdir /made # buildkit` here; kiln's text differs
            // (see the session report), so only the keyword is pinned.
            expected_history.push(("RUN ", false));
        }
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("writes");
        let built = Built {
            dir,
            expected_history,
        };
        let run = built.kiln(&["build", "-q", "-t", "book:1", &ctx.display().to_string()]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        built
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn kiln(&self, args: &[&str]) -> crate::util::Run {
        let root = self.root().display().to_string();
        let mut argv = args.to_vec();
        argv.extend(["--root", root.as_str()]);
        kiln(&argv, b"")
    }
}

/// Checks an OCI layout (a store, or an unpacked `kiln save`): `oci-layout`, `index.json`,
/// and for every image it lists, manifest and config by the schema, the config's diff_ids
/// against the uncompressed layers, and history against `expected_history`. Returns the
/// number of documents validated.
fn check_layout(
    book: &Book,
    root: &Path,
    expected_history: &[(&str, bool)],
    failures: &mut Vec<String>,
) -> usize {
    let label = root.display().to_string();
    let read = |name: &str| std::fs::read(root.join(name)).unwrap_or_default();
    let blob = |digest: &str| {
        read(&format!(
            "blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        ))
    };
    let mut validate = |media_type: &str, name: &str, bytes: &[u8]| {
        if let Some(problem) = book.problem(media_type, bytes) {
            failures.push(format!("{label}: {name}: {problem}"));
        }
    };
    validate(
        "application/vnd.oci.layout.header.v1+json",
        "oci-layout",
        &read("oci-layout"),
    );
    let index_bytes = read("index.json");
    validate(
        "application/vnd.oci.image.index.v1+json",
        "index.json",
        &index_bytes,
    );
    let mut checked = 2;
    let index: Value = serde_json::from_slice(&index_bytes).unwrap_or(Value::Null);
    let mut problems = Vec::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        let digest = entry["digest"].as_str().unwrap_or_default();
        let manifest_bytes = blob(digest);
        if sha256(&manifest_bytes) != digest || entry["size"] != manifest_bytes.len() {
            problems.push(format!(
                "manifest {digest}: digest or size does not match the index"
            ));
        }
        validate(
            "application/vnd.oci.image.manifest.v1+json",
            digest,
            &manifest_bytes,
        );
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap_or(Value::Null);
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let config_bytes = blob(config_digest);
        validate(
            "application/vnd.oci.image.config.v1+json",
            config_digest,
            &config_bytes,
        );
        checked += 2;
        let config: Value = serde_json::from_slice(&config_bytes).unwrap_or(Value::Null);
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let diff_ids = config["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if layers.len() != diff_ids.len() {
            problems.push(format!(
                "{digest}: {} layers, {} diff_ids",
                layers.len(),
                diff_ids.len()
            ));
        }
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            let layer_digest = layer["digest"].as_str().unwrap_or_default();
            let bytes = blob(layer_digest);
            if sha256(&bytes) != layer_digest || layer["size"] != bytes.len() {
                problems.push(format!(
                    "layer {layer_digest}: digest or size does not match"
                ));
            }
            let media_type = layer["mediaType"].as_str().unwrap_or_default();
            let mut uncompressed = Vec::new();
            let read = if media_type.ends_with("gzip") {
                flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_end(&mut uncompressed)
            } else if media_type.ends_with("zstd") {
                zstd::stream::read::Decoder::new(bytes.as_slice())
                    .and_then(|mut d| d.read_to_end(&mut uncompressed))
            } else {
                uncompressed = bytes.clone();
                Ok(0)
            };
            if let Err(error) = read {
                problems.push(format!("layer {layer_digest} ({media_type}): {error}"));
            }
            if diff_id.as_str() != Some(sha256(&uncompressed).as_str()) {
                problems.push(format!(
                    "layer {layer_digest}: diff_id {diff_id} is not the uncompressed digest {}",
                    sha256(&uncompressed)
                ));
            }
        }
        let history: Vec<(String, bool)> = config["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                (
                    h["created_by"].as_str().unwrap_or_default().to_string(),
                    h["empty_layer"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        let with_layer = history.iter().filter(|(_, empty)| !empty).count();
        if with_layer != layers.len() {
            problems.push(format!(
                "{digest}: {with_layer} history entries make a layer, the manifest has {} layers",
                layers.len()
            ));
        }
        let matches = history.len() == expected_history.len()
            && history
                .iter()
                .zip(expected_history)
                .all(|((by, empty), (prefix, expected))| {
                    by.starts_with(prefix) && empty == expected
                });
        if !matches {
            problems.push(format!(
                "{digest}: history {history:?}, expected one entry per instruction {expected_history:?}"
            ));
        }
    }
    failures.extend(problems.into_iter().map(|p| format!("{label}: {p}")));
    checked
}

#[test]
fn what_kiln_writes_validates_against_the_schemas() {
    let book = Book::load();
    let built = Built::new();
    let mut failures = Vec::new();
    let mut checked = check_layout(&book, &built.root(), &built.expected_history, &mut failures);
    for (format, compression) in [
        ("oci", "gzip"),
        ("oci", "zstd"),
        ("oci", "none"),
        ("docker", "gzip"),
    ] {
        let archive = built.dir.path().join(format!("{format}-{compression}.tar"));
        let run = built.kiln(&[
            "save",
            "book:1",
            "--format",
            format,
            "--compression",
            compression,
            "-o",
            &archive.display().to_string(),
        ]);
        if run.code != Some(0) {
            failures.push(format!(
                "kiln save --format {format} --compression {compression}: {}",
                run.stderr
            ));
            continue;
        }
        let unpacked = built.dir.path().join(format!("{format}-{compression}"));
        let file = std::fs::File::open(&archive).expect("opens");
        tar::Archive::new(file).unpack(&unpacked).expect("unpacks");
        if format == "docker" {
            // Docker media types are not OCI's; the README's preprocessing maps them.
            for entry in walkdir::WalkDir::new(&unpacked)
                .into_iter()
                .filter_map(Result::ok)
            {
                let path = entry.path();
                let Ok(text) = std::fs::read_to_string(path) else {
                    continue;
                };
                let mapped = docker_to_oci(&text);
                if mapped != text {
                    // The blob keeps its name so the layout stays navigable; only the schema
                    // sees the mapped text.
                    std::fs::write(path, mapped).expect("writes");
                }
            }
            let index: Value = serde_json::from_slice(
                &std::fs::read(unpacked.join("index.json")).unwrap_or_default(),
            )
            .unwrap_or(Value::Null);
            for entry in index["manifests"].as_array().into_iter().flatten() {
                let digest = entry["digest"].as_str().unwrap_or_default();
                let path = unpacked
                    .join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:"));
                let bytes = std::fs::read(&path).unwrap_or_default();
                if let Some(problem) =
                    book.problem("application/vnd.oci.image.manifest.v1+json", &bytes)
                {
                    failures.push(format!("docker save manifest {digest}: {problem}"));
                }
            }
            checked += 1;
            continue;
        }
        checked += check_layout(&book, &unpacked, &built.expected_history, &mut failures);
        // And the tarball loads back into an empty store with the same config.
        let target = tempfile::tempdir().expect("temp dir");
        let root = target.path().join("store").display().to_string();
        let archive = archive.display().to_string();
        let load = kiln(&["load", "-i", &archive, "--root", &root], b"");
        if load.code != Some(0) || load.stdout != "Loaded image: book:1\n" {
            failures.push(format!(
                "kiln load of kiln save --compression {compression}: {}{}",
                load.stdout, load.stderr
            ));
        }
    }
    finish(
        "kiln's own documents by the OCI schemas",
        checked,
        &failures,
    );
}
