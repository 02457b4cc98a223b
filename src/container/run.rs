//! `kiln run`: an image's snapshots as the lower layers of a fresh overlay, the plan from
//! `spec.rs`, and the sandbox in attached mode.

use std::path::PathBuf;

use super::spec::{self, RunOptions, Volume};
use super::{
    io_error, list, new_id, now_rfc3339, process_start_ticks, remove_files, save, valid_name,
    Container, ContainerError, Result, State, RECORD_KIND,
};
use crate::digest::Digest;
use crate::image::{ImageConfig, Manifest};
use crate::layer::{self, RootfsView};
use crate::sandbox::{self, Attach, EtcFiles, IdSpec, MountSpec, NetworkMode, RootfsSpec, RunSpec};
use crate::solve::{self, LayerBlob};
use crate::store::Store;

/// How a `kiln run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The container as last recorded (already removed with `--rm`).
    pub container: Container,
    /// `docker run`'s exit code: the command's, 128 + signal when a signal killed it.
    pub code: i32,
}

/// An image read from the store: manifest digest, manifest and config.
pub(crate) struct Image {
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// Reads the image `text` names.
pub(crate) fn read_image(store: &Store, text: &str) -> Result<Image> {
    let resolved = store.resolve(text)?;
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| ContainerError::Image {
        image: text.to_string(),
        source,
    };
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&resolved.digest)?)
        .map_err(|e| wrap(Box::new(e)))?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
        .map_err(|e| wrap(Box::new(e)))?;
    Ok(Image {
        digest: resolved.digest,
        manifest,
        config,
    })
}

/// The snapshot directories of the image's layers, lowest first, unpacking any missing.
pub(crate) fn snapshots(store: &Store, image: &Image) -> Result<Vec<PathBuf>> {
    image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .map(|(blob, diff_id)| {
            let layer = LayerBlob {
                blob: blob.clone(),
                diff_id: *diff_id,
            };
            solve::snapshot(store, &layer).map_err(ContainerError::from)
        })
        .collect()
}

/// The numeric identity and home directory of `user` in the image's files. As in a Docker
/// container (moby's `getUser` adds the primary group), the primary group leads the
/// supplementary groups, followed by the groups that list the user.
pub(crate) fn resolve_user(lower: &[PathBuf], user: &str) -> Result<(IdSpec, String)> {
    let view = RootfsView::new(lower.to_vec());
    let exec_user = layer::lookup_user(&view, user)?;
    let mut additional_gids = vec![exec_user.gid];
    for gid in exec_user.additional_gids {
        if !additional_gids.contains(&gid) {
            additional_gids.push(gid);
        }
    }
    Ok((
        IdSpec {
            uid: exec_user.uid,
            gid: exec_user.gid,
            additional_gids,
        },
        exec_user.home,
    ))
}

/// Runs a container of `options.image` as `docker run` would, attached to this process's
/// standard streams (see [`sandbox::run_attached`]). The container is kept unless
/// `options.remove`, also when the command could not start.
///
/// # Errors
/// Errors before the command starts ([`ContainerError::NoCommand`], unknown image or user,
/// a taken name, bad volumes), and [`ContainerError::Sandbox`] when the sandbox could not
/// run it (`executable file not found` among them).
pub fn run(store: &Store, options: &RunOptions) -> Result<RunOutcome> {
    let existing = list(store)?;
    if let Some(name) = &options.name {
        if !valid_name(name) {
            return Err(ContainerError::BadName { name: name.clone() });
        }
        if let Some(holder) = existing.iter().find(|c| &c.name == name) {
            return Err(ContainerError::NameInUse {
                name: name.clone(),
                id: holder.id.clone(),
            });
        }
    }
    let image = read_image(store, &options.image)?;
    let id = new_id()?;
    let short = &id[..12];
    let host_network = options.network == spec::Network::Host;
    let hostname = match (&options.hostname, host_network) {
        (Some(name), _) => name.clone(),
        (None, true) => EtcFiles::host_name(),
        (None, false) => short.to_string(),
    };
    let plan = spec::plan(&image.config.config, options, &hostname)?;
    let lower = snapshots(store, &image)?;
    let (mut user, home) = resolve_user(&lower, &plan.user)?;
    // With a single mapped id setgroups(2) is denied: no supplementary groups at all.
    if matches!(
        sandbox::IdMapping::detect(),
        sandbox::IdMapping::Single { .. }
    ) {
        user.additional_gids.clear();
    }
    let mut env = plan.env.clone();
    if !env.iter().any(|entry| entry.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    let mounts = options
        .volumes
        .iter()
        .map(mount_spec)
        .collect::<Result<Vec<MountSpec>>>()?;

    let container = Container {
        name: options
            .name
            .clone()
            .unwrap_or_else(|| format!("kiln_{short}")),
        id,
        image: options.image.clone(),
        image_digest: image.digest,
        plan,
        hostname: hostname.clone(),
        mount_targets: options
            .volumes
            .iter()
            .map(|v| v.target().to_string())
            .collect(),
        remove: options.remove,
        created: now_rfc3339(),
        state: State::Running {
            pid: std::process::id(),
            start_ticks: process_start_ticks(std::process::id()).unwrap_or(0),
        },
    };
    let dir = container.dir(store);
    let [upper, work, target] = ["upper", "work", "rootfs"].map(|name| dir.join(name));
    for path in [&upper, &work, &target] {
        std::fs::create_dir_all(path).map_err(io_error("create", path))?;
    }
    save(store, &container)?;
    if !options.remove {
        if let Some(record) = container.record_id() {
            store.put_record(RECORD_KIND, &record, &[image.digest], &container.name)?;
        }
    }

    let spec = RunSpec {
        argv: container.plan.argv(),
        env,
        cwd: container.plan.workdir.clone(),
        user,
        hostname: hostname.clone(),
        rootfs: RootfsSpec {
            lower,
            upper,
            work,
            target,
            volatile: options.remove,
        },
        mounts,
        network: match options.network {
            spec::Network::Default | spec::Network::Host => NetworkMode::Host,
            spec::Network::None => NetworkMode::None,
        },
        etc: match host_network {
            true => EtcFiles::of_host(&hostname),
            false => EtcFiles::default_for(&hostname),
        },
        capabilities: sandbox::default_capabilities(),
    };
    let attach = Attach {
        tty: options.tty,
        stdin: options.interactive,
        read_only: options.read_only,
        stop_signal: container.plan.stop_signal,
    };
    let result = sandbox::run_attached(&spec, &attach);
    let code = match &result {
        Ok(status) => status
            .code
            .unwrap_or_else(|| 128 + status.signal.unwrap_or(0)),
        Err(error) => start_failure_code(error),
    };
    let mut container = container;
    container.state = State::Exited {
        code,
        finished: now_rfc3339(),
    };
    if options.remove {
        remove_files(store, &container)?;
    } else {
        save(store, &container)?;
    }
    result?;
    Ok(RunOutcome { container, code })
}

/// `docker run`'s codes for a command that did not start: 127 not found, 126 not executable
/// (exec failed), 125 for anything else (the runtime's own failure).
pub fn start_failure_code(error: &sandbox::SandboxError) -> i32 {
    match error {
        sandbox::SandboxError::NotFound { .. } => 127,
        sandbox::SandboxError::Setup {
            step: sandbox::Step::Exec,
            ..
        } => 126,
        _ => 125,
    }
}

/// The sandbox mount of a volume; `-v` creates a missing host directory as docker does.
fn mount_spec(volume: &Volume) -> Result<MountSpec> {
    match volume {
        Volume::Bind {
            source,
            target,
            readonly,
            create,
        } => {
            if !source.exists() {
                if !create {
                    return Err(ContainerError::MissingBindSource {
                        path: source.clone(),
                    });
                }
                std::fs::create_dir_all(source).map_err(io_error("create", source))?;
            }
            Ok(MountSpec::Bind {
                source: source.clone(),
                target: target.clone(),
                readonly: *readonly,
            })
        }
        Volume::Tmpfs { target, size } => Ok(MountSpec::Tmpfs {
            target: target.clone(),
            size: *size,
        }),
    }
}
