//! The image config and manifest documents, shaped the way BuildKit writes them.
//!
//! Consumes nothing and produces JSON bytes: [`ImageConfig`] is the config blob (the OCI image
//! config plus the Docker fields OCI leaves out: `Healthcheck`, `OnBuild`, `Shell`,
//! `ArgsEscaped`), [`Manifest`] the OCI manifest that points at it. Field order follows what
//! BuildKit's exporter emits (top-level keys sorted, `config` in Docker's struct order), so a
//! config kiln writes for a Dockerfile reads like BuildKit's for the same Dockerfile. Fields
//! kiln does not know survive a read and write (`extra`). Must never touch the file system.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;

/// OCI media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// OCI media type of an uncompressed layer, the form layers have in the store.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// `history[].comment` BuildKit writes for each Dockerfile instruction.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
/// The `PATH` a stage on `scratch` starts with (BuildKit's default for Linux).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// `MAINTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// What a container of the image runs with.
    #[serde(default)]
    pub config: RuntimeConfig,
    /// When the image was made, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// One entry per instruction, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Operating system (`linux`).
    pub os: String,
    /// The layers' uncompressed digests, bottom first.
    pub rootfs: RootFs,
    /// CPU variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields kiln does not interpret, kept as they were read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `config` of an image config: Docker's struct, in Docker's field order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`, as `port/proto` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// `NAME=value` entries in order of first definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// True when CMD or ENTRYPOINT came from shell form (Docker's Windows escaping hint,
    /// which BuildKit sets on every platform).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// `ONBUILD` triggers, as written after the keyword.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Fields kiln does not interpret, kept as they were read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The `{}` value of Docker's port and volume sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `HEALTHCHECK`, durations in nanoseconds; zero means "the runtime's default" and is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", exe, args…]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    /// `--timeout`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// `--start-period`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    /// `--start-interval`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    /// `--retries`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The uncompressed digest of each layer, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One `history` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction (`COPY f /app/ # buildkit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `MAINTAINER` in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// [`HISTORY_COMMENT`] for entries kiln writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the instruction made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A content descriptor (OCI `descriptor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the blob is.
    pub media_type: String,
    /// Its sha256.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor without annotations.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: BTreeMap::new(),
        }
    }

    /// The same descriptor as oci-spec's type, for the store's index.
    pub fn to_oci(&self) -> oci_spec::image::Descriptor {
        let mut descriptor = oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::from(self.media_type.as_str()),
            self.size,
            oci_spec::image::Digest::from(self.digest),
        );
        if !self.annotations.is_empty() {
            descriptor.set_annotations(Some(self.annotations.clone().into_iter().collect()));
        }
        descriptor
    }
}

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    pub media_type: String,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A manifest for `config` over `layers`.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.to_string(),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }
}

/// The bytes a document is stored as: compact JSON, fields in declaration order, maps sorted,
/// so equal documents have equal digests.
pub fn canonical_json<T: Serialize>(document: &T) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string.
    serde_json::to_vec(document).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_buildkit_output_and_writes_it_back_in_the_same_order() {
        let written = r#"{"architecture":"amd64","author":"me","config":{"User":"1000:1000","ExposedPorts":{"443/udp":{},"80/tcp":{}},"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","A=1"],"Entrypoint":["/bin/busybox"],"Cmd":["/bin/sh","-xc","echo hi"],"Volumes":{"/v":{}},"WorkingDir":"/app","Labels":{"x":"y"},"StopSignal":"SIGTERM","Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":5000000000},"ArgsEscaped":true,"OnBuild":["COPY f /f"],"Shell":["/bin/sh","-xc"]},"created":"2026-11-23T10:57:14.128789218Z","history":[{"created":"2026-11-23T10:53:33.170082503Z","created_by":"COPY busybox /bin/busybox # buildkit","comment":"buildkit.dockerfile.v0"},{"created_by":"ENV A=1","comment":"buildkit.dockerfile.v0","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:5c1f2a1bde57b045ff115e38506d17cf2bf2a77453f1077f1ed3ce1a0a291ac0"]}}"#;
        let config: ImageConfig = serde_json::from_str(written).expect("BuildKit's config");
        assert_eq!(config.config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.history.len(), 2);
        assert!(config.history[1].empty_layer);
        assert_eq!(String::from_utf8(canonical_json(&config)).unwrap(), written);
    }

    #[test]
    fn unknown_fields_survive() {
        let written = r#"{"architecture":"arm64","config":{"Memory":5},"os":"linux","rootfs":{"type":"layers","diff_ids":[]},"variant":"v8","os.version":"x"}"#;
        let config: ImageConfig = serde_json::from_str(written).expect("config");
        assert_eq!(config.variant.as_deref(), Some("v8"));
        assert_eq!(String::from_utf8(canonical_json(&config)).unwrap(), written);
    }
}
