//! What a container runs, decided before anything runs: `docker run`'s rules for combining the
//! image config with the command line (ENTRYPOINT/CMD, environment, user, working directory,
//! stop signal) and its `-v`, `--mount` and `--env-file` syntaxes.
//!
//! Consumes an image's [`RuntimeConfig`] and [`RunOptions`]; produces a [`Plan`]. Pure: it
//! touches no file system and starts no process (the env-file reader in `mod.rs` hands it
//! text), so every rule has a table test here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ContainerError;
use crate::image::RuntimeConfig;

/// Docker's `PATH` for an image that sets none (moby `oci.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `kiln run`'s options, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The image: a name, digest or id prefix.
    pub image: String,
    /// `CMD ARG...` after the image; replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// `--entrypoint`: `Some("")` clears the image's ENTRYPOINT (and its CMD, as in Docker).
    pub entrypoint: Option<String>,
    /// `--env-file` entries then `-e` entries, `KEY=VALUE` each, in that order (already
    /// completed from the caller's environment for a bare `KEY`).
    pub env: Vec<String>,
    /// `-v` and `--mount` volumes, in order.
    pub volumes: Vec<Volume>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// `-i`.
    pub interactive: bool,
    /// `-t`.
    pub tty: bool,
    /// `--network`.
    pub network: Network,
    /// `--hostname`; the container id's first 12 digits otherwise.
    pub hostname: Option<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--rm`.
    pub remove: bool,
    /// `--name`.
    pub name: Option<String>,
}

/// `--network`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// What an unset `--network` (or `default`) gives: the host's network, since kiln has no
    /// bridge, but the container's own hostname and `/etc/hosts`, as on docker's bridge.
    #[default]
    Default,
    /// `--network host`: the host's network, hostname, `/etc/hosts` and `/etc/resolv.conf`,
    /// as docker gives them.
    Host,
    /// A network namespace with only `lo`.
    None,
}

/// One `-v` or `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Volume {
    /// A host path bound into the container.
    Bind {
        /// The absolute host path.
        source: PathBuf,
        /// The absolute path inside the container.
        target: String,
        /// `:ro`, `readonly`.
        readonly: bool,
        /// True for `-v`, which creates a missing source directory; `--mount` refuses one.
        create: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// The absolute path inside the container.
        target: String,
        /// `tmpfs-size` in bytes.
        size: Option<u64>,
    },
}

impl Volume {
    /// The path inside the container.
    pub fn target(&self) -> &str {
        match self {
            Volume::Bind { target, .. } | Volume::Tmpfs { target, .. } => target,
        }
    }
}

/// What the container runs with, from the image config and the options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The ENTRYPOINT part of the command (the container's `Config.Entrypoint`).
    pub entrypoint: Vec<String>,
    /// The CMD part (`Config.Cmd`).
    pub cmd: Vec<String>,
    /// The container's `Config.Env`: `-e` entries, then the image's that they do not set.
    pub config_env: Vec<String>,
    /// The environment the process gets, but for `HOME` (filled in from passwd at start):
    /// `PATH`, `HOSTNAME`, `TERM` with `-t`, then `config_env` replacing or appending.
    pub env: Vec<String>,
    /// The user spec (`""` is root).
    pub user: String,
    /// The absolute working directory.
    pub workdir: String,
    /// The signal SIGTERM becomes (the image's STOPSIGNAL).
    pub stop_signal: i32,
}

impl Plan {
    /// ENTRYPOINT followed by CMD: the argv of the process.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// Combines the image config with the options as `docker run` does (moby `daemon.merge` and
/// `container.CreateDaemonEnvironment`):
/// - `--entrypoint X` replaces ENTRYPOINT with the single word X and drops the image's CMD
///   (only the given arguments follow); `--entrypoint ''` clears both, so arguments are
///   required; otherwise arguments replace CMD and ENTRYPOINT stays;
/// - the environment starts with the default `PATH`, `HOSTNAME` and (with `-t`) `TERM=xterm`;
///   the container env (`-e` entries, then image entries whose keys they lack) replaces
///   entries of the same key in place or is appended;
/// - `-u` and `-w` win over USER and WORKDIR; the working directory must be absolute.
///
/// # Errors
/// [`ContainerError::NoCommand`] when nothing is left to run,
/// [`ContainerError::RelativeWorkdir`], [`ContainerError::BadStopSignal`].
pub fn plan(
    config: &RuntimeConfig,
    options: &RunOptions,
    hostname: &str,
) -> Result<Plan, ContainerError> {
    let (entrypoint, cmd) = match &options.entrypoint {
        Some(word) if word.is_empty() => (Vec::new(), options.command.clone()),
        Some(word) => (vec![word.clone()], options.command.clone()),
        None => {
            let cmd = match options.command.is_empty() {
                true => config.cmd.clone().unwrap_or_default(),
                false => options.command.clone(),
            };
            (config.entrypoint.clone().unwrap_or_default(), cmd)
        }
    };
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    let image_env = config.env.clone().unwrap_or_default();
    let mut config_env = options.env.clone();
    for entry in &image_env {
        if !config_env
            .iter()
            .any(|given| env_key(given) == env_key(entry))
        {
            config_env.push(entry.clone());
        }
    }
    let mut env = vec![DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")];
    if options.tty {
        env.push("TERM=xterm".to_string());
    }
    for entry in &config_env {
        replace_or_append(&mut env, entry);
    }
    let user = options
        .user
        .clone()
        .or_else(|| config.user.clone())
        .unwrap_or_default();
    let workdir = match &options.workdir {
        Some(dir) if !dir.starts_with('/') => {
            return Err(ContainerError::RelativeWorkdir { dir: dir.clone() })
        }
        Some(dir) => dir.clone(),
        None => config
            .working_dir
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_string()),
    };
    let stop_signal = match &config.stop_signal {
        Some(name) => signal_number(name)
            .ok_or_else(|| ContainerError::BadStopSignal { name: name.clone() })?,
        None => libc::SIGTERM,
    };
    Ok(Plan {
        entrypoint,
        cmd,
        config_env,
        env,
        user,
        workdir,
        stop_signal,
    })
}

/// The key of a `KEY=VALUE` entry (all of it when there is no `=`).
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

fn replace_or_append(env: &mut Vec<String>, entry: &str) {
    match env.iter_mut().find(|have| env_key(have) == env_key(entry)) {
        Some(slot) => *slot = entry.to_string(),
        None => env.push(entry.to_string()),
    }
}

/// Signal names and numbers (signal(7), x86 and arm numbering) as STOPSIGNAL takes them.
const SIGNALS: [(&str, i32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// A STOPSIGNAL value as moby's `signal.ParseSignal` reads it: a number, or a name with or
/// without `SIG` in any case, or `RTMIN+n`.
pub fn signal_number(text: &str) -> Option<i32> {
    if let Ok(number) = text.parse::<i32>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name.strip_prefix("RTMIN+") {
        let offset = offset.parse::<i32>().ok()?;
        let number = libc::SIGRTMIN() + offset;
        return (number <= libc::SIGRTMAX()).then_some(number);
    }
    SIGNALS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, number)| *number)
}

/// Reads a `-v SOURCE:TARGET[:OPTIONS]` value. Only host paths (absolute) are supported as
/// sources; named and anonymous volumes need a volume store kiln does not have.
///
/// # Errors
/// [`ContainerError::BadVolume`] saying what was expected.
pub fn parse_volume(text: &str) -> Result<Volume, ContainerError> {
    let bad = |expected: &'static str| ContainerError::BadVolume {
        text: text.to_string(),
        expected,
    };
    let mut parts = text.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad(
            "HOST:CONTAINER[:ro] (anonymous volumes are not supported)",
        ));
    };
    let options = parts.next().unwrap_or("");
    if parts.next().is_some() {
        return Err(bad("at most three ':'-separated fields"));
    }
    if !source.starts_with('/') {
        return Err(bad(
            "an absolute host path as source (named volumes are not supported)",
        ));
    }
    if !target.starts_with('/') {
        return Err(bad("an absolute path inside the container as target"));
    }
    let mut readonly = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => readonly = true,
            "rw" => readonly = false,
            // SELinux relabelling and propagation modes do not change what is mounted here.
            "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "rshared" | "shared" => {}
            _ => return Err(bad("options among ro, rw, z, Z and a propagation mode")),
        }
    }
    Ok(Volume::Bind {
        source: PathBuf::from(source),
        target: target.to_string(),
        readonly,
        create: true,
    })
}

/// Reads a `--mount type=bind|tmpfs,...` value (docker's keys: `source`/`src`,
/// `target`/`destination`/`dst`, `readonly`/`ro` with an optional `=true|false`,
/// `tmpfs-size`, `tmpfs-mode`, `bind-propagation`).
///
/// # Errors
/// [`ContainerError::BadVolume`] saying what was expected.
pub fn parse_mount(text: &str) -> Result<Volume, ContainerError> {
    let bad = |expected: &'static str| ContainerError::BadVolume {
        text: text.to_string(),
        expected,
    };
    let mut kind = "volume";
    let mut source = None;
    let mut target = None;
    let mut readonly = false;
    let mut size = None;
    for field in text.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (field, None),
        };
        match (key, value) {
            ("type", Some(value)) => kind = value,
            ("source" | "src", Some(value)) => source = Some(value),
            ("target" | "destination" | "dst", Some(value)) => target = Some(value),
            ("readonly" | "ro", None | Some("true" | "1")) => readonly = true,
            ("readonly" | "ro", Some("false" | "0")) => readonly = false,
            ("tmpfs-size", Some(value)) => {
                size = Some(parse_size(value).ok_or_else(|| bad("tmpfs-size=BYTES[k|m|g]"))?)
            }
            ("tmpfs-mode" | "bind-propagation" | "consistency", Some(_)) => {}
            _ => return Err(bad("type=bind|tmpfs,source=PATH,target=PATH[,readonly]")),
        }
    }
    let target = target
        .filter(|t| t.starts_with('/'))
        .ok_or_else(|| bad("an absolute target=PATH"))?;
    match (kind, source) {
        ("bind", Some(source)) if source.starts_with('/') => Ok(Volume::Bind {
            source: PathBuf::from(source),
            target: target.to_string(),
            readonly,
            create: false,
        }),
        ("bind", _) => Err(bad("an absolute source=PATH for a bind mount")),
        ("tmpfs", None) => Ok(Volume::Tmpfs {
            target: target.to_string(),
            size,
        }),
        ("tmpfs", Some(_)) => Err(bad("no source for a tmpfs mount")),
        _ => Err(bad("type=bind or type=tmpfs (volumes are not supported)")),
    }
}

/// `1024`, `64k`, `16m`, `1g` (docker's RAM-in-bytes units, powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches('b');
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((at, 'k')) => (&trimmed[..at], 1u64 << 10),
        Some((at, 'm')) => (&trimmed[..at], 1 << 20),
        Some((at, 'g')) => (&trimmed[..at], 1 << 30),
        _ => (trimmed, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// The entries of an `--env-file` (docker's rules): one per line, leading white space
/// dropped, blank lines and `#` comments skipped, `KEY=VALUE` kept as written, a bare `KEY`
/// taken from `lookup` (left out when it has no value).
///
/// # Errors
/// [`ContainerError::BadEnv`] for an empty key or one with white space.
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ContainerError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(entry) = env_entry(line, lookup)? {
            out.push(entry);
        }
    }
    Ok(out)
}

/// One `-e` value: `KEY=VALUE` as is, a bare `KEY` from `lookup` (`None` when unset).
///
/// # Errors
/// [`ContainerError::BadEnv`] for an empty key or one with white space.
pub fn env_entry(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ContainerError> {
    let key = env_key(text);
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(ContainerError::BadEnv {
            text: text.to_string(),
        });
    }
    if text.contains('=') {
        return Ok(Some(text.to_string()));
    }
    Ok(lookup(key).map(|value| format!("{key}={value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RuntimeConfig {
        RuntimeConfig {
            entrypoint: entrypoint.map(strings),
            cmd: cmd.map(strings),
            env: Some(strings(&["PATH=/bin", "FOO=bar"])),
            ..RuntimeConfig::default()
        }
    }

    #[test]
    fn entrypoint_and_cmd_combine_as_in_docker() {
        type Case<'a> = (
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Option<&'a str>,
            &'a [&'a str],
            Option<&'a [&'a str]>,
        );
        let table: [Case; 9] = [
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                None,
                &[],
                Some(&["/ep", "c1"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                None,
                &["a"],
                Some(&["/ep", "a"]),
            ),
            (None, Some(&["sh"]), None, &[], Some(&["sh"])),
            (
                None,
                Some(&["sh"]),
                None,
                &["ls", "-l"],
                Some(&["ls", "-l"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                Some("/x"),
                &[],
                Some(&["/x"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                Some("/x"),
                &["a"],
                Some(&["/x", "a"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["c1"]),
                Some(""),
                &["a"],
                Some(&["a"]),
            ),
            (Some(&["/ep"]), Some(&["c1"]), Some(""), &[], None),
            (None, None, None, &[], None),
        ];
        for (entrypoint, cmd, flag, args, want) in table {
            let options = RunOptions {
                entrypoint: flag.map(str::to_string),
                command: strings(args),
                ..RunOptions::default()
            };
            let got = plan(&config(entrypoint, cmd), &options, "h").map(|plan| plan.argv());
            match want {
                Some(want) => assert_eq!(got.ok(), Some(strings(want)), "{flag:?} {args:?}"),
                None => assert!(
                    matches!(got, Err(ContainerError::NoCommand)),
                    "{flag:?} {args:?}"
                ),
            }
        }
    }

    #[test]
    fn environment_follows_docker_order() {
        let table: [(&[&str], bool, &[&str]); 3] = [
            (&[], false, &["PATH=/bin", "HOSTNAME=h", "FOO=bar"]),
            (
                &["A=1", "FOO=x"],
                false,
                &["PATH=/bin", "HOSTNAME=h", "A=1", "FOO=x"],
            ),
            (
                &["PATH=/p"],
                true,
                &["PATH=/p", "HOSTNAME=h", "TERM=xterm", "FOO=bar"],
            ),
        ];
        for (given, tty, want) in table {
            let options = RunOptions {
                env: strings(given),
                tty,
                command: strings(&["sh"]),
                ..RunOptions::default()
            };
            let plan = plan(&config(None, None), &options, "h").unwrap();
            assert_eq!(plan.env, strings(want), "{given:?}");
        }
        let bare = RuntimeConfig {
            cmd: Some(strings(&["sh"])),
            ..RuntimeConfig::default()
        };
        let plan = plan(&bare, &RunOptions::default(), "h").unwrap();
        assert_eq!(plan.env, strings(&[DEFAULT_PATH, "HOSTNAME=h"]));
    }

    #[test]
    fn user_workdir_and_stop_signal() {
        let image = RuntimeConfig {
            cmd: Some(strings(&["sh"])),
            user: Some("app".into()),
            working_dir: Some("/srv".into()),
            stop_signal: Some("SIGQUIT".into()),
            ..RuntimeConfig::default()
        };
        let plain = plan(&image, &RunOptions::default(), "h").unwrap();
        assert_eq!(
            (
                plain.user.as_str(),
                plain.workdir.as_str(),
                plain.stop_signal
            ),
            ("app", "/srv", 3)
        );
        let options = RunOptions {
            user: Some("0:0".into()),
            workdir: Some("/tmp".into()),
            ..RunOptions::default()
        };
        let given = plan(&image, &options, "h").unwrap();
        assert_eq!(
            (given.user.as_str(), given.workdir.as_str()),
            ("0:0", "/tmp")
        );
        let relative = RunOptions {
            workdir: Some("tmp".into()),
            ..RunOptions::default()
        };
        assert!(matches!(
            plan(&image, &relative, "h"),
            Err(ContainerError::RelativeWorkdir { .. })
        ));
    }

    #[test]
    fn signal_names_and_numbers() {
        let table = [
            ("SIGTERM", Some(15)),
            ("term", Some(15)),
            ("9", Some(9)),
            ("SIGWINCH", Some(28)),
            ("RTMIN+3", Some(libc::SIGRTMIN() + 3)),
            ("0", None),
            ("SIGNOPE", None),
        ];
        for (text, want) in table {
            assert_eq!(signal_number(text), want, "{text}");
        }
    }

    #[test]
    fn volume_syntaxes() {
        let bind = |source: &str, target: &str, readonly, create| Volume::Bind {
            source: PathBuf::from(source),
            target: target.into(),
            readonly,
            create,
        };
        let table = [
            ("/h:/c", Some(bind("/h", "/c", false, true))),
            ("/h:/c:ro", Some(bind("/h", "/c", true, true))),
            ("/h:/c:rw,z", Some(bind("/h", "/c", false, true))),
            ("name:/c", None),
            ("/c", None),
            ("/h:c", None),
            ("/h:/c:rx", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_volume(text).ok(), want, "{text}");
        }
        let mounts = [
            (
                "type=bind,source=/h,target=/c,readonly",
                Some(bind("/h", "/c", true, false)),
            ),
            (
                "type=bind,src=/h,dst=/c,ro=false",
                Some(bind("/h", "/c", false, false)),
            ),
            (
                "type=tmpfs,target=/t,tmpfs-size=64m",
                Some(Volume::Tmpfs {
                    target: "/t".into(),
                    size: Some(64 << 20),
                }),
            ),
            ("type=volume,source=v,target=/c", None),
            ("type=bind,target=/c", None),
            ("type=tmpfs,target=t", None),
            ("type=bind,source=/h,target=/c,bogus", None),
        ];
        for (text, want) in mounts {
            assert_eq!(parse_mount(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn env_files_and_entries() {
        let lookup = |key: &str| (key == "HOSTVAR").then(|| "from host".to_string());
        let text = "# comment\n\n  A=1\nB= spaced \nHOSTVAR\nUNSET\nC=x=y\n";
        assert_eq!(
            parse_env_file(text, &lookup).unwrap(),
            strings(&["A=1", "B= spaced ", "HOSTVAR=from host", "C=x=y"])
        );
        let table = [
            ("K=V", Ok(Some("K=V"))),
            ("HOSTVAR", Ok(Some("HOSTVAR=from host"))),
            ("UNSET", Ok(None)),
            ("=V", Err(())),
            ("A B=1", Err(())),
        ];
        for (text, want) in table {
            let got = env_entry(text, &lookup).map_err(drop);
            assert_eq!(got, want.map(|v| v.map(str::to_string)), "{text}");
        }
    }
}
