//! How each instruction changes a stage's image config, exactly as BuildKit's Dockerfile
//! frontend does (checked against dockerd 20.10 with BuildKit).
//!
//! Consumes a stage's [`ImageConfig`] and one lowered [`Step`]; produces the changed config
//! and its `history` entry. Pure: no file system. Facts it follows:
//! - a stage on `scratch` starts with `Env = [PATH=<default>]` and `WorkingDir = "/"`;
//! - ENTRYPOINT clears a `Cmd` that was not set by this stage; shell-form CMD/ENTRYPOINT are
//!   wrapped in SHELL (default `/bin/sh -c`); any CMD and a shell-form ENTRYPOINT set
//!   `ArgsEscaped`, which nothing resets;
//! - EXPOSE lower-cases protocols and expands ranges (`8000-8001/TCP` → two tcp ports);
//! - ARG's history shows the declared default, never a `--build-arg` value; ONBUILD writes no
//!   history entry; every other config instruction writes one marked `empty_layer`;
//! - history text is Go's formatting of BuildKit's values (`EXPOSE map[80/tcp:{}]`,
//!   `VOLUME [/v]`, `CMD ["a" "b"]`, `HEALTHCHECK &{["CMD-SHELL" "true"] "5s" "0s" "0s" '\x00'}`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use thiserror::Error;

use crate::graph::{Platform, Step};
use crate::image::{
    Empty, HealthConfig, History, ImageConfig, RootFs, RuntimeConfig, DEFAULT_PATH, HISTORY_COMMENT,
};
use crate::syntax::instruction::values::format_duration;
use crate::syntax::instruction::{CommandLine, Healthcheck};
use crate::syntax::Command;

/// Why a config instruction cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// An EXPOSE word is not `port[-port][/proto]`.
    #[error("invalid port {port:?}: expected a port number or range, optionally followed by /tcp, /udp or /sctp")]
    BadPort {
        /// The word as expanded.
        port: String,
    },
}

/// The config a stage on `scratch` starts with, for `platform`.
pub fn scratch_config(platform: &Platform) -> ImageConfig {
    ImageConfig {
        architecture: platform.arch.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: RuntimeConfig {
            env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
            working_dir: Some("/".to_string()),
            ..RuntimeConfig::default()
        },
        rootfs: RootFs::default(),
        ..ImageConfig::default()
    }
}

/// What a stage's config instructions have done so far that later ones depend on.
#[derive(Debug, Clone, Default)]
pub struct StageConfigState {
    /// True once this stage (not its base) set CMD: ENTRYPOINT then keeps it.
    pub cmd_set: bool,
    /// Build args declared after any ENV of the same name: their value, not the ENV's, is
    /// what RUN sees (the later declaration wins, as BuildKit does).
    pub args_over_env: std::collections::BTreeSet<String>,
}

/// The default shell for shell-form commands.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// The shell a shell-form command of `config` runs with.
pub fn shell_of(config: &ImageConfig) -> Vec<String> {
    config.config.shell.clone().unwrap_or_else(default_shell)
}

/// `path` as WORKDIR makes it: relative paths join the current working directory, and the
/// result is cleaned (`/a/./b/..` → `/a`).
pub fn resolve_workdir(current: Option<&str>, path: &str) -> String {
    let joined = match path.starts_with('/') {
        true => path.to_string(),
        false => format!("{}/{}", current.unwrap_or("/"), path),
    };
    clean_absolute(&joined)
}

/// An absolute path with `.`, `..` and repeated slashes resolved lexically.
pub fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Applies a config-only instruction (everything but FROM, RUN, COPY, ADD and WORKDIR's
/// directory) to `config` and returns the history entry it writes, if any.
///
/// # Errors
/// [`ConfigError`] for an EXPOSE word that is not a port.
pub fn apply(
    config: &mut ImageConfig,
    state: &mut StageConfigState,
    step: &Step,
) -> Result<Option<History>, ConfigError> {
    let runtime = &mut config.config;
    let created_by = match &step.instruction.command {
        Command::Env(pairs) => {
            let env = runtime.env.get_or_insert_with(Vec::new);
            for pair in pairs {
                set_env(env, &pair.key, &pair.value);
                state.args_over_env.remove(&pair.key);
            }
            format!("ENV {}", key_values(pairs))
        }
        Command::Label(pairs) => {
            let labels = runtime.labels.get_or_insert_with(BTreeMap::new);
            for pair in pairs {
                labels.insert(pair.key.clone(), pair.value.clone());
            }
            format!("LABEL {}", key_values(pairs))
        }
        Command::Expose(ports) => {
            let exposed = runtime.exposed_ports.get_or_insert_with(BTreeMap::new);
            let mut added = BTreeMap::new();
            for port in ports {
                for key in expand_port(port)? {
                    added.insert(key.clone(), Empty {});
                    exposed.insert(key, Empty {});
                }
            }
            format!("EXPOSE map[{}]", go_set(added.keys()))
        }
        Command::Volume(paths) => {
            let volumes = runtime.volumes.get_or_insert_with(BTreeMap::new);
            for path in paths {
                volumes.insert(path.clone(), Empty {});
            }
            format!("VOLUME [{}]", paths.join(" "))
        }
        Command::User(user) => {
            runtime.user = Some(user.clone());
            format!("USER {user}")
        }
        Command::Stopsignal(signal) => {
            runtime.stop_signal = Some(signal.clone());
            format!("STOPSIGNAL {signal}")
        }
        Command::Shell(shell) => {
            runtime.shell = Some(shell.clone());
            format!("SHELL [{}]", shell.join(" "))
        }
        Command::Cmd(line) => {
            let shell = runtime.shell.clone().unwrap_or_else(default_shell);
            let cmd = with_shell(line, &shell, &mut runtime.args_escaped);
            // BuildKit (dockerd 20.10) marks every CMD, exec form included.
            runtime.args_escaped = true;
            let text = format!("CMD {}", go_quoted_list(&cmd));
            runtime.cmd = Some(cmd);
            state.cmd_set = true;
            text
        }
        Command::Entrypoint(line) => {
            let shell = runtime.shell.clone().unwrap_or_else(default_shell);
            let entrypoint = with_shell(line, &shell, &mut runtime.args_escaped);
            let text = format!("ENTRYPOINT {}", go_quoted_list(&entrypoint));
            runtime.entrypoint = Some(entrypoint);
            if !state.cmd_set {
                runtime.cmd = None;
            }
            text
        }
        Command::Healthcheck(check) => {
            let health = health_config(check);
            let text = format!("HEALTHCHECK {}", go_health(&health));
            runtime.healthcheck = Some(health);
            text
        }
        Command::Onbuild(trigger) => {
            let text = trigger_text(&trigger.source);
            runtime.on_build.get_or_insert_with(Vec::new).push(text);
            return Ok(None);
        }
        Command::Maintainer(name) => {
            config.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        Command::Arg(declarations) => {
            state
                .args_over_env
                .extend(declarations.iter().map(|arg| arg.name.clone()));
            let words: Vec<String> = declarations
                .iter()
                .map(|arg| match &arg.default {
                    Some(default) => format!("{}={default}", arg.name),
                    None => arg.name.clone(),
                })
                .collect();
            format!("ARG {}", words.join(" "))
        }
        Command::From(_)
        | Command::Run(_)
        | Command::Copy(_)
        | Command::Add(_)
        | Command::Workdir(_) => return Ok(None),
    };
    Ok(Some(empty_layer_history(created_by)))
}

/// A history entry for an instruction that made no layer.
pub fn empty_layer_history(created_by: String) -> History {
    History {
        created_by: Some(created_by),
        comment: Some(HISTORY_COMMENT.to_string()),
        empty_layer: true,
        ..History::default()
    }
}

/// A history entry for an instruction that made a layer.
pub fn layer_history(created_by: String) -> History {
    History {
        created_by: Some(created_by),
        comment: Some(HISTORY_COMMENT.to_string()),
        ..History::default()
    }
}

/// Replaces `NAME=…` in place, or appends it.
pub fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    match env.iter_mut().find(|existing| {
        existing
            .split_once('=')
            .map_or(existing.as_str(), |(n, _)| n)
            == name
    }) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// `k=v k2=v2`, values unquoted, as BuildKit's history shows them.
fn key_values(pairs: &[crate::syntax::instruction::KeyValue]) -> String {
    pairs
        .iter()
        .map(|pair| format!("{}={}", pair.key, pair.value))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The trigger as the image records it: the source line after `ONBUILD`.
fn trigger_text(source: &str) -> String {
    source.trim().to_string()
}

fn with_shell(line: &CommandLine, shell: &[String], args_escaped: &mut bool) -> Vec<String> {
    match line {
        CommandLine::Exec(words) => words.clone(),
        CommandLine::Shell(text) => {
            *args_escaped = true;
            let mut words = shell.to_vec();
            words.push(text.clone());
            words
        }
    }
}

fn health_config(check: &Healthcheck) -> HealthConfig {
    match check {
        Healthcheck::None => HealthConfig {
            test: vec!["NONE".to_string()],
            ..HealthConfig::default()
        },
        Healthcheck::Cmd {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            let test = match command {
                CommandLine::Exec(words) => {
                    let mut test = vec!["CMD".to_string()];
                    test.extend(words.iter().cloned());
                    test
                }
                CommandLine::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
            };
            let nanos = |duration: &Option<Duration>| {
                duration.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            };
            HealthConfig {
                test,
                interval: nanos(interval),
                timeout: nanos(timeout),
                start_period: nanos(start_period),
                start_interval: nanos(start_interval),
                retries: u64::from(retries.unwrap_or(0)),
            }
        }
    }
}

/// `port[-end][/proto]` → `port/proto` keys, protocols lower-cased, ranges expanded.
fn expand_port(word: &str) -> Result<Vec<String>, ConfigError> {
    let bad = || ConfigError::BadPort {
        port: word.to_string(),
    };
    let (ports, protocol) = match word.split_once('/') {
        Some((ports, protocol)) => (ports, protocol.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    let number = |text: &str| text.parse::<u16>().map_err(|_| bad());
    let (first, last) = match ports.split_once('-') {
        Some((first, last)) => (number(first)?, number(last)?),
        None => {
            let port = number(ports)?;
            (port, port)
        }
    };
    if first > last || !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    Ok((first..=last)
        .map(|port| format!("{port}/{protocol}"))
        .collect())
}

/// Go's `%v` of a `map[string]struct{}`: `80/tcp:{} 443/udp:{}`, keys sorted as strings.
fn go_set<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(|key| format!("{key}:{{}}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
pub fn go_quoted_list(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|word| go_quote(word)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of BuildKit's `*HealthConfig{Test, Interval, Timeout, StartPeriod, Retries}`.
fn go_health(health: &HealthConfig) -> String {
    let duration = |nanos: u64| go_quote(&format_duration(Duration::from_nanos(nanos)));
    let retries = match char::from_u32(u32::try_from(health.retries).unwrap_or(u32::MAX)) {
        Some(c) if c.is_ascii_graphic() || c == ' ' => format!("'{c}'"),
        Some(c) if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        _ => format!("{}", health.retries),
    };
    format!(
        "&{{{} {} {} {} {}}}",
        go_quoted_list(&health.test),
        duration(health.interval),
        duration(health.timeout),
        duration(health.start_period),
        retries
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_expand_like_buildkit() {
        let table: [(&str, &[&str]); 4] = [
            ("80", &["80/tcp"]),
            ("443/UDP", &["443/udp"]),
            ("8000-8002/tcp", &["8000/tcp", "8001/tcp", "8002/tcp"]),
            ("9/sctp", &["9/sctp"]),
        ];
        for (word, expected) in table {
            assert_eq!(expand_port(word).unwrap(), expected, "{word}");
        }
        for bad in ["x", "80/xyz", "9-8", "70000", ""] {
            assert!(expand_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workdir_joins_and_cleans() {
        let table = [
            (None, "/app", "/app"),
            (Some("/app"), "sub", "/app/sub"),
            (Some("/app"), "../x/./y/", "/x/y"),
            (Some("/"), "..", "/"),
            (Some("/a"), "/b//c", "/b/c"),
        ];
        for (current, path, expected) in table {
            assert_eq!(
                resolve_workdir(current, path),
                expected,
                "{current:?} {path}"
            );
        }
    }

    #[test]
    fn go_formatting_matches_buildkit_history() {
        assert_eq!(
            go_quoted_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"\n".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\"\n"]"#
        );
        let health = HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 5_000_000_000,
            ..HealthConfig::default()
        };
        assert_eq!(
            go_health(&health),
            r#"&{["CMD-SHELL" "true"] "5s" "0s" "0s" '\x00'}"#
        );
        let retries = HealthConfig {
            test: vec!["NONE".into()],
            retries: 51,
            ..HealthConfig::default()
        };
        assert_eq!(go_health(&retries), r#"&{["NONE"] "0s" "0s" "0s" '3'}"#);
    }

    #[test]
    fn env_replaces_in_place() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        set_env(&mut env, "PATH", "/usr/bin");
        set_env(&mut env, "B", "x=y");
        assert_eq!(env, ["PATH=/usr/bin", "A=1", "B=x=y"]);
    }
}
