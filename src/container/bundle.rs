//! `kiln bundle`: an OCI runtime bundle (runtime-spec `bundle.md`) of an image, so that runc
//! or another OCI runtime runs what `kiln run` would: `config.json` built with oci-spec's
//! runtime types from the same plan as `kiln run`, and `rootfs/` the image's layers flattened.

use std::path::Path;

use oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxIdMapping, LinuxIdMappingBuilder, Process, Root, Spec,
    User,
};

use super::run::{read_image, resolve_user, snapshots};
use super::spec::{self, RunOptions};
use super::{io_error, ContainerError, Result};
use crate::layer::IdExtent;
use crate::sandbox::{self, DEFAULT_CAPABILITIES};
use crate::store::Store;

/// The bundle's hostname (a bundle has no container id to take one from).
const HOSTNAME: &str = "kiln";

/// runc's default spec as root of the host; otherwise its rootless spec, mapping the caller to
/// root and, rootless with subordinate ranges (kiln in its own user namespace), the same
/// ranges as kiln's namespace, which runc maps through newuidmap as kiln does.
fn runtime_spec(mapping: &sandbox::IdMapping) -> Spec {
    let own = |extents: &[IdExtent]| extents.first().map_or(0, |extent| extent.host);
    let oci = |extents: &[IdExtent]| -> Vec<LinuxIdMapping> {
        extents
            .iter()
            .filter_map(|extent| {
                LinuxIdMappingBuilder::default()
                    .container_id(extent.container)
                    .host_id(extent.host)
                    .size(extent.count)
                    .build()
                    .ok()
            })
            .collect()
    };
    match mapping {
        sandbox::IdMapping::Host => Spec::default(),
        sandbox::IdMapping::Nested { uids, gids } => {
            let mut spec = Spec::rootless(own(uids), own(gids));
            if let Some(linux) = spec.linux_mut() {
                linux.set_uid_mappings(Some(oci(uids)));
                linux.set_gid_mappings(Some(oci(gids)));
            }
            spec
        }
        _ => Spec::rootless(
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        ),
    }
}

/// Writes the bundle of `options.image` into `dir` (created if missing; must be empty):
/// `rootfs/` and `config.json` with the process `kiln run` would start (argv, env with
/// `HOME`, user, working directory) and Docker's default capabilities. Run as root it is
/// runc's default spec otherwise (new namespaces, network included); run by another user it
/// is runc's rootless spec (`runc spec --rootless`), mapping that user to root.
///
/// # Errors
/// [`ContainerError::BundleNotEmpty`], image and user errors as for `kiln run`, I/O errors.
pub fn bundle(store: &Store, options: &RunOptions, dir: &Path) -> Result<()> {
    let image = read_image(store, &options.image)?;
    let plan = spec::plan(&image.config.config, options, HOSTNAME)?;
    let lower = snapshots(store, &image)?;
    let (ids, home) = resolve_user(&lower, &plan.user)?;
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    let mut entries = std::fs::read_dir(dir).map_err(io_error("list", dir))?;
    if entries.next().is_some() {
        return Err(ContainerError::BundleNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(io_error("create", &rootfs))?;
    sandbox::flatten(&lower, &rootfs).map_err(io_error("fill", &rootfs))?;

    let mut env = plan.env.clone();
    if !env.iter().any(|entry| entry.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    let mut user = User::default();
    user.set_uid(ids.uid);
    user.set_gid(ids.gid);
    if !ids.additional_gids.is_empty() {
        user.set_additional_gids(Some(ids.additional_gids.clone()));
    }
    let caps: Capabilities = serde_json::from_value(serde_json::json!(DEFAULT_CAPABILITIES))
        .map_err(|e| ContainerError::RuntimeSpec(e.into()))?;
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let mut process = Process::default();
    process.set_terminal(Some(options.tty));
    process.set_args(Some(plan.argv()));
    process.set_env(Some(env));
    process.set_cwd(plan.workdir.clone().into());
    process.set_user(user);
    process.set_capabilities(Some(capabilities));
    // The caller's limits, as `kiln run` leaves them.
    process.set_rlimits(None);
    let mut root = Root::default();
    root.set_path("rootfs".into());
    root.set_readonly(Some(options.read_only));
    let mut runtime = runtime_spec(&sandbox::IdMapping::detect());
    runtime.set_hostname(Some(HOSTNAME.to_string()));
    runtime.set_process(Some(process));
    runtime.set_root(Some(root));
    let path = dir.join("config.json");
    runtime.save(&path).map_err(ContainerError::RuntimeSpec)
}
