//! `kiln run`, `ps`, `rm`, `commit` and `bundle`: command-line options into
//! [`kiln::container`] calls, and docker's tables and exit codes out.
//!
//! Exit codes of `kiln run`, as `docker run`: the command's own; 128 + N when signal N killed
//! it; 125 when kiln itself failed (bad options, unknown image); 126 when the command could
//! not be executed; 127 when it was not found.

use anyhow::Context;
use std::process::ExitCode;

use crate::cli::{BundleArgs, CommitArgs, PsArgs, RmArgs, RunArgs};
use crate::{commands, open_store, report, Failure};
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
        "default" => spec::Network::Default,
        "host" => spec::Network::Host,
        "none" => spec::Network::None,
        other => {
            return Err(Failure::Hinted {
                message: format!("network '{other}' is not supported"),
                hint: Some("use --network host or --network none (the default is the host's network under the container's own hostname)".into()),
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
    let mut rows = vec![vec![
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
        let status = match &c.state {
            State::Running { .. } => format!("Up {}", since(&c.created)),
            State::Exited { code, finished } => format!("Exited ({code}) {}", ago(finished)),
        };
        let row = [
            id,
            c.image.clone(),
            command,
            ago(&c.created),
            status,
            c.name.clone(),
        ];
        rows.push(row.to_vec());
    }
    let mut out = String::new();
    if args.quiet {
        for id in ids {
            out.push_str(&id);
            out.push('\n');
        }
    } else {
        out = commands::table(&rows);
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

/// "5 minutes ago" for an RFC 3339 time (empty when it does not parse).
fn ago(rfc3339: &str) -> String {
    humantime::parse_rfc3339(rfc3339).map_or_else(|_| String::new(), commands::ago)
}

/// "5 minutes", for `Up …`.
fn since(rfc3339: &str) -> String {
    ago(rfc3339).trim_end_matches(" ago").to_string()
}

fn print(text: &str) -> Result<(), Failure> {
    commands::print(text).map_err(Failure::from)
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
