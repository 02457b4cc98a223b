//! Containers: `kiln run` of an image in kiln's sandbox, and the containers it leaves.
//!
//! Consumes images in the [`Store`] and [`RunOptions`]; produces a running process (through
//! [`crate::sandbox::run_attached`]), its exit status, and per container a directory
//! `kiln/containers/<id>/` holding `container.json` (the [`Container`] record), the overlay's
//! `upper` and `work` directories and the empty `rootfs` it is mounted on. The root filesystem
//! is an overlay on the image's snapshots: nothing of the image is copied. Kept containers
//! (without `--rm`) also hold a store record of kind [`RECORD_KIND`] naming their image, so
//! gc keeps its layers. [`commit`] turns an upper directory into a layer and an image,
//! [`bundle`] writes an OCI runtime bundle for runc.
//!
//! Never prints, and never mounts anything in the caller's mount namespace: every mount lives
//! in the sandbox's own namespaces and goes with them, whatever ends kiln (kill -9 included).
//! What a killed kiln can leave is a container directory still marked running; the next
//! `run`, `ps` or `rm` finds its process gone ([`Container::owner_alive`]) and removes it (a
//! `--rm` container) or marks it exited with 137.

mod bundle;
mod commit;
mod run;
pub mod spec;

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::store::{Store, StoreError};

pub use bundle::bundle;
pub use commit::{commit, CommitOptions};
pub use run::{run, start_failure_code, RunOutcome};
pub use spec::{Network, Plan, RunOptions, Volume};

/// The store record kind that holds a kept container's image for gc.
pub const RECORD_KIND: &str = "container";

/// Why a container command failed (the command's own exit status is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Neither the image nor the command line gives a command.
    #[error("no command specified: the image has no ENTRYPOINT or CMD and none was given")]
    NoCommand,
    /// `-w` is not absolute.
    #[error("the working directory '{dir}' is invalid, it needs to be an absolute path")]
    RelativeWorkdir {
        /// The directory given.
        dir: String,
    },
    /// The image's STOPSIGNAL is not a signal.
    #[error("invalid STOPSIGNAL {name:?} in the image, expected a signal name or number")]
    BadStopSignal {
        /// The value.
        name: String,
    },
    /// A `-v` or `--mount` value kiln does not read.
    #[error("invalid volume specification '{text}': expected {expected}")]
    BadVolume {
        /// The value.
        text: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A `-e` or `--env-file` entry without a usable key.
    #[error(
        "invalid environment variable '{text}': expected KEY=VALUE with a key without white space"
    )]
    BadEnv {
        /// The entry.
        text: String,
    },
    /// A `--mount type=bind` source that does not exist.
    #[error("bind source path does not exist: {}", path.display())]
    MissingBindSource {
        /// The path.
        path: PathBuf,
    },
    /// `--name` is taken.
    #[error("the container name \"{name}\" is already in use by container {id}")]
    NameInUse {
        /// The name.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// A `--name` docker would refuse.
    #[error("invalid container name \"{name}\": expected [a-zA-Z0-9][a-zA-Z0-9_.-]*")]
    BadName {
        /// The name.
        name: String,
    },
    /// No container has this name or id prefix.
    #[error("no such container: {text}")]
    NotFound {
        /// The name or id given.
        text: String,
    },
    /// An id prefix names more than one container.
    #[error("container id prefix {text} is ambiguous")]
    Ambiguous {
        /// The prefix.
        text: String,
    },
    /// `kiln rm` of a running container without `-f`.
    #[error("cannot remove container {name}: it is running (stop it, or use -f)")]
    Running {
        /// The container's name.
        name: String,
    },
    /// The image or its documents could not be read.
    #[error("cannot read image {image}")]
    Image {
        /// The image as given.
        image: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store failed.
    #[error("store operation failed")]
    Store(#[from] StoreError),
    /// The image's user lookup or the layer differ failed.
    #[error("cannot read the container's files")]
    Layer(#[from] crate::layer::LayerError),
    /// A snapshot could not be made or a layer committed.
    #[error("cannot prepare the image's layers")]
    Layers(#[source] Box<crate::solve::StepError>),
    /// The sandbox could not run the command.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// A container file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `container.json` does not parse.
    #[error("cannot parse the container record {}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The bundle's config.json could not be built.
    #[error("cannot build the OCI runtime config")]
    RuntimeSpec(#[source] oci_spec::OciSpecError),
    /// The bundle directory is not empty.
    #[error("the bundle directory {} is not empty", path.display())]
    BundleNotEmpty {
        /// The directory.
        path: PathBuf,
    },
}

impl From<crate::solve::StepError> for ContainerError {
    fn from(error: crate::solve::StepError) -> ContainerError {
        ContainerError::Layers(Box::new(error))
    }
}

/// The container module's result type.
pub type Result<T> = std::result::Result<T, ContainerError>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io {
        action,
        path,
        source,
    }
}

/// Where a container stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Its kiln process runs it.
    Running {
        /// The pid of the `kiln run` process.
        pid: u32,
        /// That process's start time in clock ticks since boot (proc(5) `stat` field 22),
        /// so a reused pid is not taken for it.
        start_ticks: u64,
    },
    /// It ended.
    Exited {
        /// `docker run`'s exit code (128 + signal when killed; 125 to 127 when it could not
        /// start).
        code: i32,
        /// When, RFC 3339.
        finished: String,
    },
}

/// A container as `container.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// `--name`, or `kiln_` and the first 12 digits of the id.
    pub name: String,
    /// The image as given on the command line.
    pub image: String,
    /// The image's manifest digest.
    pub image_digest: Digest,
    /// The run's plan (command, env, user, workdir).
    pub plan: Plan,
    /// The hostname.
    pub hostname: String,
    /// Paths inside the container that mounts covered (volumes), left out of a commit.
    pub mount_targets: Vec<String>,
    /// `--rm`.
    pub remove: bool,
    /// When it was created, RFC 3339.
    pub created: String,
    /// Running or exited.
    pub state: State,
}

impl Container {
    /// True if and only if the state is running and its kiln process is still alive (the
    /// same process: pid and start time match).
    pub fn owner_alive(&self) -> bool {
        match self.state {
            State::Running { pid, start_ticks } => process_start_ticks(pid) == Some(start_ticks),
            State::Exited { .. } => false,
        }
    }

    /// The directory of this container in `store`.
    pub fn dir(&self, store: &Store) -> PathBuf {
        containers_dir(store).join(&self.id)
    }

    fn record_id(&self) -> Option<Digest> {
        Digest::from_hex(&self.id).ok()
    }
}

/// `kiln/containers` of the store.
fn containers_dir(store: &Store) -> PathBuf {
    store.root().join("kiln/containers")
}

/// proc(5) `stat` field 22 (starttime) of `pid`, if it exists.
pub(crate) fn process_start_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may hold spaces and parentheses; fields after the last
    // ')' are plain.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Writes `container.json` (replace by rename; not fsynced: a container record that a crash
/// loses is one whose upper directory is in the same state).
fn save(store: &Store, container: &Container) -> Result<()> {
    let dir = container.dir(store);
    let path = dir.join("container.json");
    let temp = dir.join("container.json.tmp");
    let bytes = serde_json::to_vec_pretty(container).map_err(|source| ContainerError::Corrupt {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&temp, bytes).map_err(io_error("write", &temp))?;
    std::fs::rename(&temp, &path).map_err(io_error("rename", &path))
}

fn load(path: &Path) -> Result<Container> {
    let bytes = std::fs::read(path).map_err(io_error("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ContainerError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Every container of the store, oldest first, after settling those whose kiln process died
/// (see the module doc).
///
/// # Errors
/// I/O errors and unreadable records.
pub fn list(store: &Store) -> Result<Vec<Container>> {
    let dir = containers_dir(store);
    let Some(entries) = crate::store::read_dir_if_present(&dir).map_err(io_error("list", &dir))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("list", &dir))?;
        let path = entry.path().join("container.json");
        if !path.exists() {
            // A directory whose record was never written (killed while starting) or whose
            // removal was interrupted.
            let _ = crate::store::remove_tree(&entry.path());
            continue;
        }
        let mut container = load(&path)?;
        if matches!(container.state, State::Running { .. }) && !container.owner_alive() {
            if container.remove {
                remove_files(store, &container)?;
                continue;
            }
            container.state = State::Exited {
                code: 128 + libc::SIGKILL,
                finished: now_rfc3339(),
            };
            save(store, &container)?;
        }
        out.push(container);
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// The container named `text`, or whose id starts with it.
///
/// # Errors
/// [`ContainerError::NotFound`], [`ContainerError::Ambiguous`], errors of [`list`].
pub fn find(store: &Store, text: &str) -> Result<Container> {
    let all = list(store)?;
    if let Some(found) = all.iter().find(|c| c.name == text || c.id == text) {
        return Ok(found.clone());
    }
    let mut matches = all
        .into_iter()
        .filter(|c| !text.is_empty() && c.id.starts_with(text));
    match (matches.next(), matches.next()) {
        (Some(found), None) => Ok(found),
        (Some(_), Some(_)) => Err(ContainerError::Ambiguous {
            text: text.to_string(),
        }),
        _ => Err(ContainerError::NotFound {
            text: text.to_string(),
        }),
    }
}

/// Removes the container `text` names; a running one only with `force`, after killing its
/// kiln process (the sandbox dies with it). Returns the container removed.
///
/// # Errors
/// [`ContainerError::Running`], errors of [`find`], I/O errors.
pub fn remove(store: &Store, text: &str, force: bool) -> Result<Container> {
    let container = find(store, text)?;
    if let State::Running { pid, .. } = container.state {
        if container.owner_alive() {
            if !force {
                return Err(ContainerError::Running {
                    name: container.name.clone(),
                });
            }
            // SAFETY: kill with a pid whose start time matched just now.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            wait_gone(pid);
        }
    }
    remove_files(store, &container)?;
    Ok(container)
}

/// Waits (up to two seconds) for `pid` to disappear, so its files are no longer in use.
fn wait_gone(pid: u32) {
    for _ in 0..200 {
        if process_start_ticks(pid).is_none() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Removes the record, then the directory.
fn remove_files(store: &Store, container: &Container) -> Result<()> {
    if let Some(id) = container.record_id() {
        store.remove_record(RECORD_KIND, &id)?;
    }
    let dir = container.dir(store);
    // The record goes first, so an interrupted removal leaves a directory without one,
    // which `list` clears.
    let _ = std::fs::remove_file(dir.join("container.json"));
    crate::store::remove_tree(&dir).map_err(io_error("remove", &dir))
}

/// A new container id: 32 random bytes in hex (getrandom(2)).
fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom into the unfilled tail of a live buffer.
        let got = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if got < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_error(
                "read random bytes for",
                Path::new("a container id"),
            )(error));
        }
        filled += got as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// True if and only if `name` is a name docker accepts (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_docker_accepts() {
        let table = [
            ("web", true),
            ("a.b_c-1", true),
            ("9", true),
            ("", false),
            ("-x", false),
            ("a/b", false),
            ("é", false),
        ];
        for (name, want) in table {
            assert_eq!(valid_name(name), want, "{name}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_bogus_start_time_is_not() {
        let pid = std::process::id();
        let ticks = process_start_ticks(pid).unwrap();
        let base = Container {
            id: "0".repeat(64),
            name: "n".into(),
            image: "i".into(),
            image_digest: Digest::of(b""),
            plan: Plan {
                entrypoint: Vec::new(),
                cmd: vec!["sh".into()],
                config_env: Vec::new(),
                env: Vec::new(),
                user: String::new(),
                workdir: "/".into(),
                stop_signal: 15,
            },
            hostname: "h".into(),
            mount_targets: Vec::new(),
            remove: false,
            created: now_rfc3339(),
            state: State::Running {
                pid,
                start_ticks: ticks,
            },
        };
        let stale = Container {
            state: State::Running {
                pid,
                start_ticks: ticks + 1,
            },
            ..base.clone()
        };
        assert!(base.owner_alive());
        assert!(!stale.owner_alive());
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
