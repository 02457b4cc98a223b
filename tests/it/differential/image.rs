//! Reading a built image back from either tool: `docker save` output (the 20.10 layout:
//! manifest.json naming a config file and layer tars) or kiln's store (an OCI image layout),
//! flattened into a [`Tree`] with its config JSON; and the config comparison.
//!
//! Consumes files on disk; produces [`Image`] and difference lines. Never writes anywhere but
//! the temporary directory it is given.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::tree::Tree;

/// A built image: the config document and the flattened file system.
pub struct Image {
    /// The whole image config JSON (architecture, os, config, rootfs, history, ...).
    pub config: Value,
    /// All layers applied in order.
    pub tree: Tree,
}

/// The container config fields both tools must agree on.
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
];

/// Top-level config fields compared as well (MAINTAINER writes `author`).
pub const TOP_FIELDS: &[&str] = &["author", "os", "architecture"];

/// Reads the image in the tar that `docker save` wrote at `archive`, unpacking it into
/// `scratch`.
pub fn from_docker_save(archive: &Path, scratch: &Path) -> Result<Image, String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    tar::Archive::new(file)
        .unpack(scratch)
        .map_err(|e| format!("unpacking {}: {e}", archive.display()))?;
    let manifest: Value = read_json(&scratch.join("manifest.json"))?;
    let entry = manifest
        .get(0)
        .ok_or_else(|| "docker save manifest.json lists no image".to_owned())?;
    let config_path = entry["Config"]
        .as_str()
        .ok_or_else(|| "docker save manifest has no Config".to_owned())?;
    let config = read_json(&scratch.join(config_path))?;
    let mut tree = Tree::new();
    for layer in entry["Layers"].as_array().into_iter().flatten() {
        let rel = layer
            .as_str()
            .ok_or_else(|| "a Layers item is not a string".to_owned())?;
        let path = scratch.join(rel);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        tree.apply_layer(file).map_err(|e| format!("{rel}: {e}"))?;
    }
    Ok(Image { config, tree })
}

/// Reads the image tagged `name` (a full reference such as `docker.io/library/x:1`) in the
/// OCI image layout at `root`.
pub fn from_oci_layout(root: &Path, name: &str) -> Result<Image, String> {
    let index: Value = read_json(&root.join("index.json"))?;
    let descriptor = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(name))
        .ok_or_else(|| format!("{}/index.json has no manifest named {name}", root.display()))?;
    let manifest: Value = read_blob_json(root, &descriptor["digest"])?;
    let config = read_blob_json(root, &manifest["config"]["digest"])?;
    let mut tree = Tree::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let path = blob_path(root, &layer["digest"])?;
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let media = layer["mediaType"].as_str().unwrap_or_default();
        let reader: Box<dyn Read> = if media.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else if media.ends_with("zstd") {
            Box::new(zstd::Decoder::new(file).map_err(|e| format!("{}: {e}", path.display()))?)
        } else if media.ends_with(".tar") {
            Box::new(file)
        } else {
            return Err(format!(
                "layer media type {media:?} is not a tar, tar+gzip or tar+zstd"
            ));
        };
        tree.apply_layer(reader)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Image { config, tree })
}

fn blob_path(root: &Path, digest: &Value) -> Result<std::path::PathBuf, String> {
    let text = digest.as_str().unwrap_or_default();
    let hex = text
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("descriptor digest {digest} is not sha256:<64 hex>"))?;
    Ok(root.join("blobs/sha256").join(hex))
}

fn read_blob_json(root: &Path, digest: &Value) -> Result<Value, String> {
    read_json(&blob_path(root, digest)?)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Lines naming each config field whose value differs; a missing field and `null` are the
/// same (docker writes `"OnBuild": null` where nothing was set).
pub fn compare_config(left: &Value, right: &Value, names: (&str, &str)) -> Vec<String> {
    let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    let mut out = Vec::new();
    let mut check = |label: String, a: Option<Value>, b: Option<Value>| {
        if a != b {
            let show = |v: Option<Value>| v.map_or_else(|| "(unset)".to_owned(), |v| v.to_string());
            out.push(format!(
                "{label}: {}={} {}={}",
                names.0,
                show(a),
                names.1,
                show(b)
            ));
        }
    };
    for field in CONFIG_FIELDS {
        check(
            format!("config.{field}"),
            present(left.get("config").and_then(|c| c.get(field))),
            present(right.get("config").and_then(|c| c.get(field))),
        );
    }
    for field in TOP_FIELDS {
        check(
            field.to_string(),
            present(left.get(field)),
            present(right.get(field)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_comparison_treats_null_as_unset_and_reports_values() {
        let docker = json!({"os": "linux", "config": {"Env": ["A=1"], "OnBuild": null}});
        let kiln = json!({"os": "linux", "config": {"Env": ["A=2"], "User": "app"}});
        assert_eq!(
            compare_config(&docker, &kiln, ("docker", "kiln")),
            [
                r#"config.Env: docker=["A=1"] kiln=["A=2"]"#,
                r#"config.User: docker=(unset) kiln="app""#,
            ]
        );
        assert!(compare_config(&docker, &docker, ("docker", "kiln")).is_empty());
    }

    #[test]
    fn oci_layout_layers_are_read_in_each_compression() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("blobs/sha256")).expect("blobs dir");
        let put = |bytes: &[u8]| -> String {
            let hex = super::super::tree::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes));
            std::fs::write(root.join("blobs/sha256").join(&hex), bytes).expect("blob");
            format!("sha256:{hex}")
        };
        let layer = |name: &str| -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(2);
            b.append_data(&mut h, name, &b"hi"[..]).expect("entry");
            b.into_inner().expect("tar")
        };
        let plain = layer("plain");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &layer("gz")).expect("gzip");
        let gz = gz.finish().expect("gzip end");
        let zst = zstd::encode_all(layer("zst").as_slice(), 1).expect("zstd");
        let config = put(br#"{"os":"linux","config":{"Cmd":["x"]}}"#);
        let manifest = json!({
            "schemaVersion": 2,
            "config": {"digest": config},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(&plain)},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(&gz)},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": put(&zst)},
            ]
        });
        let manifest = put(manifest.to_string().as_bytes());
        let index = json!({"manifests": [{"digest": manifest, "annotations":
            {"org.opencontainers.image.ref.name": "docker.io/library/t:1"}}]});
        std::fs::write(root.join("index.json"), index.to_string()).expect("index");
        let image = from_oci_layout(root, "docker.io/library/t:1").expect("image reads");
        let names: Vec<&str> = image.tree.nodes.keys().map(String::as_str).collect();
        assert_eq!(names, ["", "gz", "plain", "zst"]);
        assert_eq!(image.config["config"]["Cmd"], json!(["x"]));
        assert!(from_oci_layout(root, "docker.io/library/other:1").is_err());
    }
}
