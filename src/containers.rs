//! `kiln run`, `ps`, `rm`, `commit` and `bundle`: command-line options into
//! [`kiln::container`] calls, and docker's tables and exit codes out.
//!
//! Exit codes of `kiln run`, as `docker run`: the command's own; 128 + N when signal N killed
//! it; 125 when kiln itself failed (bad options, unknown image); 126 when the command could
//! not be executed; 127 when it was not found.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::cli::{BundleArgs, CommitArgs, PsArgs, RmArgs, RunArgs};
use crate::{open_store, report, Failure};
use kiln::container::{self, spec, CommitOptions, ContainerError, RunOptions, State};
use kiln::store::Reference;

/// `docker run`'s code for a failure of its own.
const RUN_FAILED: u8 = 125;

pub(crate) fn run(args: &RunArgs) -> ExitCode {
    match run_container(args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(RUN_FAILED)),
        Err((failure, code)) => {
            report(&failure);
            ExitCode::from(code)
        }
    }
}

fn run_container(args: &RunArgs) -> Result<i32, (Failure, u8)> {
    let failed = |failure: Failure| (failure, RUN_FAILED);
    let options = run_options(args).map_err(failed)?;
    let store = open_store(&args.store.root).map_err(|e| failed(e.into()))?;
    match container::run(&store, &options) {
        Ok(outcome) => Ok(outcome.code),
        Err(ContainerError::Sandbox(error)) => {
            let code = container::start_failure_code(&error);
            let code = u8::try_from(code).unwrap_or(RUN_FAILED);
            Err((Failure::Other(anyhow::Error::new(error)), code))
        }
        Err(ContainerError::NoCommand) => Err(failed(Failure::Hinted {
            message: ContainerError::NoCommand.to_string(),
            hint: Some("give a command after the image, or --entrypoint".into()),
        })),
        Err(error) => Err(failed(Failure::Other(anyhow::Error::new(error)))),
    }
}

fn run_options(args: &RunArgs) -> Result<RunOptions, Failure> {
    let lookup = |key: &str| std::env::var(key).ok();
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the env file '{}'", file.display()))?;
        env.extend(spec::parse_env_file(&text, &lookup).map_err(anyhow::Error::new)?);
    }
    for entry in &args.env {
        env.extend(spec::env_entry(entry, &lookup).map_err(anyhow::Error::new)?);
    }
    let mut volumes = Vec::new();
    for text in &args.volumes {
        volumes.push(spec::parse_volume(text).map_err(anyhow::Error::new)?);
    }
    for text in &args.mounts {
        volumes.push(spec::parse_mount(text).map_err(anyhow::Error::new)?);
    }
    let network = match args.network.as_str() {
        "host" | "default" => spec::Network::Host,
        "none" => spec::Network::None,
        other => {
            return Err(Failure::Hinted {
                message: format!("network '{other}' is not supported"),
                hint: Some("use --network host (the default) or --network none".into()),
            })
        }
    };
    Ok(RunOptions {
        image: args.image.clone(),
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env,
        volumes,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        interactive: args.interactive,
        tty: args.tty,
        network,
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        remove: args.rm,
        name: args.name.clone(),
    })
}

pub(crate) fn ps(args: &PsArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let containers = container::list(&store).map_err(anyhow::Error::new)?;
    let now = SystemTime::now();
    let mut rows = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "NAMES".into(),
    ]];
    let mut ids = Vec::new();
    // Newest first, as docker lists them.
    for c in containers.iter().rev() {
        let running = c.owner_alive();
        if !args.all && !running {
            continue;
        }
        let id = match args.no_trunc {
            true => c.id.clone(),
            false => c.id.chars().take(12).collect(),
        };
        ids.push(id.clone());
        let command = quoted_command(&c.plan.argv().join(" "), args.no_trunc);
        let created = ago(now, &c.created);
        let status = match &c.state {
            State::Running { .. } => format!("Up {}", since(now, &c.created)),
            State::Exited { code, finished } => {
                format!("Exited ({code}) {}", ago(now, finished))
            }
        };
        rows.push([
            id,
            c.image.clone(),
            command,
            created,
            status,
            c.name.clone(),
        ]);
    }
    let mut out = String::new();
    if args.quiet {
        for id in ids {
            out.push_str(&id);
            out.push('\n');
        }
    } else {
        out = table(&rows);
    }
    print(&out)
}

/// `"sh -c 'echo…"` as docker shows a command: quoted, cut at 20 characters.
fn quoted_command(command: &str, no_trunc: bool) -> String {
    let mut text: String = command.chars().take(20).collect();
    if !no_trunc && command.chars().count() > 20 {
        text = command.chars().take(19).collect();
        text.push('…');
    } else if no_trunc {
        text = command.to_string();
    }
    format!("\"{text}\"")
}

/// Columns padded to their widest cell plus three spaces, as docker's tables.
fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + 3 - cell.chars().count();
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn elapsed(now: SystemTime, rfc3339: &str) -> Option<Duration> {
    let then = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(now.duration_since(then).unwrap_or_default())
}

/// docker's `HumanDuration`: "Less than a second", "5 seconds", "About a minute", …
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ => format!("{} days", hours / 24),
    }
}

fn ago(now: SystemTime, rfc3339: &str) -> String {
    elapsed(now, rfc3339).map_or_else(String::new, |d| format!("{} ago", human(d)))
}

fn since(now: SystemTime, rfc3339: &str) -> String {
    elapsed(now, rfc3339).map_or_else(String::new, human)
}

fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    Ok(())
}

pub(crate) fn rm(args: &RmArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let mut out = String::new();
    let mut first_error = None;
    for text in &args.containers {
        match container::remove(&store, text, args.force) {
            Ok(_) => {
                out.push_str(text);
                out.push('\n');
            }
            Err(error) => {
                // Like docker, go on with the others and fail at the end.
                report(&Failure::Other(anyhow::Error::new(error)));
                first_error.get_or_insert(());
            }
        }
    }
    print(&out)?;
    match first_error {
        Some(()) => Err(Failure::Hinted {
            message: "some containers could not be removed".into(),
            hint: None,
        }),
        None => Ok(()),
    }
}

pub(crate) fn commit(args: &CommitArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let tag = match &args.image {
        Some(text) => Some(Reference::parse(text).map_err(|error| Failure::Hinted {
            message: format!("invalid image name '{text}': {error}"),
            hint: Some("use NAME[:TAG]".into()),
        })?),
        None => None,
    };
    let options = CommitOptions {
        container: args.container.clone(),
        tag,
        message: args.message.clone(),
        author: args.author.clone(),
    };
    let descriptor = container::commit(&store, &options).map_err(anyhow::Error::new)?;
    print(&format!("{}\n", descriptor.digest))
}

pub(crate) fn bundle(args: &BundleArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let options = RunOptions {
        image: args.image.clone(),
        command: args.command.clone(),
        ..RunOptions::default()
    };
    container::bundle(&store, &options, &args.dir).map_err(anyhow::Error::new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_says_them() {
        let table = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (300, "5 minutes"),
            (3600, "About an hour"),
            (7200, "2 hours"),
            (3 * 86400, "3 days"),
        ];
        for (seconds, want) in table {
            assert_eq!(human(Duration::from_secs(seconds)), want);
        }
    }

    #[test]
    fn commands_are_quoted_and_cut() {
        let table = [
            ("sh", false, "\"sh\""),
            (
                "sh -c 'echo hello world'",
                false,
                "\"sh -c 'echo hello w…\"",
            ),
            (
                "sh -c 'echo hello world'",
                true,
                "\"sh -c 'echo hello world'\"",
            ),
        ];
        for (command, no_trunc, want) in table {
            assert_eq!(quoted_command(command, no_trunc), want);
        }
    }
}
