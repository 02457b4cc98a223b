//! `kiln commit`: a container's upper directory as a new layer on its image, with the
//! container's command, environment, user and working directory as the new config (as
//! `docker commit` keeps them).

use super::run::{read_image, snapshots};
use super::{find, now_rfc3339, Result};
use crate::image::{canonical_json, Descriptor, History, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::layer::{self, DiffOptions};
use crate::sandbox::IdMapping;
use crate::solve;
use crate::store::{Reference, Store};

/// Files the sandbox mounts over; they never belong to a layer.
const MOUNTED_FILES: [&str; 3] = ["etc/hosts", "etc/resolv.conf", "etc/hostname"];

/// What to commit and how to name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOptions {
    /// The container's name or id prefix.
    pub container: String,
    /// The tag for the new image, if any.
    pub tag: Option<Reference>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the history entry's and config's author.
    pub author: Option<String>,
}

/// Makes an image of the container: its image's layers plus one layer of its changes
/// (volumes and the `/etc` files the sandbox mounts are left out), tags it when asked, and
/// returns the manifest descriptor.
///
/// # Errors
/// An unknown container, an image no longer in the store, errors reading the upper
/// directory or writing blobs.
pub fn commit(store: &Store, options: &CommitOptions) -> Result<Descriptor> {
    let container = find(store, &options.container)?;
    let image = read_image(store, &container.image_digest.to_string())?;
    let lower = snapshots(store, &image)?;
    let mut ignore: Vec<String> = MOUNTED_FILES.iter().map(|f| f.to_string()).collect();
    ignore.extend(
        container
            .mount_targets
            .iter()
            .map(|t| t.trim_matches('/').to_string()),
    );

    let entries = layer::diff_upper(
        &container.dir(store).join("upper"),
        &DiffOptions {
            ignore,
            lower,
            // Rootless, the container's files belong to host ids standing for its own.
            id_map: IdMapping::detect().id_map(),
        },
    )?;
    let layer = solve::commit_layer(store, entries, &|_| {})?;

    let now = now_rfc3339();
    let mut config = image.config.clone();
    let plan = &container.plan;
    config.rootfs.diff_ids.push(layer.diff_id);
    config.history.push(History {
        created: Some(now.clone()),
        created_by: Some(plan.argv().join(" ")),
        author: options.author.clone(),
        comment: options.message.clone(),
        empty_layer: false,
    });
    config.created = Some(now);
    if options.author.is_some() {
        config.author = options.author.clone();
    }
    let runtime = &mut config.config;
    runtime.entrypoint = (!plan.entrypoint.is_empty()).then(|| plan.entrypoint.clone());
    runtime.cmd = (!plan.cmd.is_empty()).then(|| plan.cmd.clone());
    runtime.env = Some(plan.config_env.clone());
    runtime.user = (!plan.user.is_empty()).then(|| plan.user.clone());
    runtime.working_dir = Some(plan.workdir.clone());

    let config_bytes = canonical_json(&config);
    let (config_digest, config_size) = store.put_blob(&config_bytes)?;
    let mut layers = image.manifest.layers.clone();
    layers.push(layer.blob);
    let manifest = crate::image::Manifest::new(
        Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config_size),
        layers,
    );
    let (digest, size) = store.put_blob(&canonical_json(&manifest))?;
    let descriptor = Descriptor::new(MANIFEST_MEDIA_TYPE, digest, size);
    if let Some(tag) = &options.tag {
        store.tag(tag, &descriptor.to_oci())?;
    }
    Ok(descriptor)
}
