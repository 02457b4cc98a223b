//! `kiln bundle`: an OCI runtime bundle (runtime-spec `bundle.md`) of an image, so that runc
//! or another OCI runtime runs what `kiln run` would: `config.json` built with oci-spec's
//! runtime types from the same plan as `kiln run`, and `rootfs/` the image's layers flattened.

use std::path::Path;

use oci_spec::runtime::{Capabilities, LinuxCapabilities, Process, Root, Spec, User};

use super::run::{read_image, resolve_user, snapshots};
use super::spec::{self, RunOptions};
use super::{io_error, ContainerError, Result};
use crate::sandbox::{self, DEFAULT_CAPABILITIES};
use crate::store::Store;

/// The bundle's hostname (a bundle has no container id to take one from).
const HOSTNAME: &str = "kiln";

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
    let euid = rustix::process::geteuid().as_raw();
    let mut runtime = match euid {
        0 => Spec::default(),
        _ => Spec::rootless(euid, rustix::process::getegid().as_raw()),
    };
    runtime.set_hostname(Some(HOSTNAME.to_string()));
    runtime.set_process(Some(process));
    runtime.set_root(Some(root));
    let path = dir.join("config.json");
    runtime.save(&path).map_err(ContainerError::RuntimeSpec)
}
