//! Running the two builders, docker (BuildKit inside dockerd) and kiln, and reading their
//! plain progress.
//!
//! Consumes prepared contexts; produces built images (tagged in docker, or in a kiln store
//! root) and the step lists of their progress output. Never removes docker images it did not
//! tag itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The docker client to use: the Debian package's, which talks BuildKit through
/// `DOCKER_BUILDKIT=1`; `KILN_DOCKER` overrides it.
pub fn docker_bin() -> String {
    std::env::var("KILN_DOCKER").unwrap_or_else(|_| "/usr/bin/docker".to_owned())
}

/// Returns why docker cannot be used, or `None` when the daemon answers.
pub fn docker_unreachable() -> Option<String> {
    match Command::new(docker_bin())
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`{} info` failed: {}",
            docker_bin(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("`{}` does not run: {e}", docker_bin())),
    }
}

/// What a finished build printed.
pub struct Built {
    /// Plain progress (stderr for both tools; BuildKit's also goes there).
    pub progress: String,
}

/// Builds `context` with docker's BuildKit, tagging `tag`.
pub fn docker_build(
    context: &Path,
    dockerfile: &Path,
    args: &[String],
    tag: &str,
) -> Result<Built, String> {
    let out = Command::new(docker_bin())
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--progress=plain", "-t", tag, "-f"])
        .arg(dockerfile)
        .args(args)
        .arg(context)
        .output()
        .map_err(|e| format!("docker build does not run: {e}"))?;
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!(
            "docker build -t {tag} failed:\n{}",
            tail(&progress)
        ));
    }
    Ok(Built { progress })
}

/// Writes the image `tag` as a `docker save` archive at `out`.
pub fn docker_save(tag: &str, out: &Path) -> Result<(), String> {
    let status = Command::new(docker_bin())
        .args(["save", "-o"])
        .arg(out)
        .arg(tag)
        .output()
        .map_err(|e| format!("docker save does not run: {e}"))?;
    if status.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker save {tag}: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        ))
    }
}

/// Builds `context` with the kiln binary under test into the store at `root`.
pub fn kiln_build(
    root: &Path,
    context: &Path,
    dockerfile: &Path,
    args: &[String],
    tag: &str,
) -> Result<Built, String> {
    let mut argv: Vec<String> = vec![
        "build".into(),
        "--progress=plain".into(),
        "--root".into(),
        root.display().to_string(),
        "-t".into(),
        tag.into(),
        "-f".into(),
        dockerfile.display().to_string(),
    ];
    argv.extend(args.iter().cloned());
    argv.push(context.display().to_string());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run = crate::util::kiln(&argv, b"");
    if run.code != Some(0) {
        return Err(format!(
            "kiln build -t {tag} exited with {:?}:\n{}",
            run.code,
            tail(&run.stderr)
        ));
    }
    Ok(Built {
        progress: run.stderr,
    })
}

/// The last 40 lines of `text`, enough to see why a build failed.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The steps of a plain progress log: `[label] TEXT` (BuildKit's `#N [stage k/n] TEXT`
/// lines, `[internal]` ones left out) mapped to whether a `#N CACHED` line followed.
pub fn steps(progress: &str) -> BTreeMap<String, bool> {
    let mut text_of: BTreeMap<&str, &str> = BTreeMap::new();
    let mut cached: Vec<&str> = Vec::new();
    for line in progress.lines() {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest.starts_with('[') && !rest.starts_with("[internal]") {
            text_of.entry(id).or_insert(rest.trim_end());
        } else if rest.trim_end() == "CACHED" {
            cached.push(id);
        }
    }
    text_of
        .iter()
        .map(|(id, text)| (text.to_string(), cached.contains(id)))
        .collect()
}

/// Lines naming each step whose presence or cache status differs between two step maps.
pub fn compare_steps(
    left: &BTreeMap<String, bool>,
    right: &BTreeMap<String, bool>,
    names: (&str, &str),
) -> Vec<String> {
    let word = |cached: bool| if cached { "CACHED" } else { "ran" };
    // A step two stages share is one vertex, shown under either stage's label (BuildKit's
    // choice changes from run to run), so steps found on one side only are paired up by
    // their text after the label.
    let text = |step: &str| {
        step.split_once("] ")
            .map_or(step, |(_, text)| text)
            .to_string()
    };
    // Whether BuildKit shows a local base image's FROM as CACHED or DONE varies from run to
    // run; nothing is built there, so only its presence is compared.
    let is_from = |step: &str| text(step).starts_with("FROM ");
    let mut unpaired_right: Vec<(&String, &bool)> = right
        .iter()
        .filter(|(step, _)| !left.contains_key(*step))
        .collect();
    let mut paired_left = Vec::new();
    for (step, a) in left.iter().filter(|(step, _)| !right.contains_key(*step)) {
        if let Some(at) = unpaired_right
            .iter()
            .position(|(other, b)| text(other) == text(step) && (*b == a || is_from(step)))
        {
            unpaired_right.remove(at);
            paired_left.push(step.clone());
        }
    }
    let mut out = Vec::new();
    for (step, a) in left.iter().filter(|(step, _)| !paired_left.contains(step)) {
        match right.get(step) {
            None => out.push(format!("{step}: only in {}'s progress", names.0)),
            Some(_) if is_from(step) => {}
            Some(b) if a != b => out.push(format!(
                "{step}: {}={} {}={}",
                names.0,
                word(*a),
                names.1,
                word(*b)
            )),
            Some(_) => {}
        }
    }
    for (step, _) in unpaired_right {
        out.push(format!("{step}: only in {}'s progress", names.1));
    }
    out
}

/// Lines naming each expected `(text, cached)` step that `steps` lacks or shows otherwise;
/// `text` is matched against the step after its `[stage k/n] ` label.
pub fn expected_steps(
    steps: &BTreeMap<String, bool>,
    expected: &[(String, bool)],
    who: &str,
) -> Vec<String> {
    let word = |cached: bool| if cached { "CACHED" } else { "ran" };
    expected
        .iter()
        .filter_map(|(text, cached)| {
            let found = steps
                .iter()
                .find(|(step, _)| step.split_once("] ").is_some_and(|(_, t)| t == text));
            match found {
                None => Some(format!("rebuild: {who}'s progress lacks the step {text:?}")),
                Some((step, was)) if was != cached => Some(format!(
                    "rebuild: {who}: {step}: {} where {} was expected",
                    word(*was),
                    word(*cached)
                )),
                Some(_) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_steps_are_matched_by_text_after_the_label() {
        let steps: BTreeMap<String, bool> = [
            ("[stage-1 3/6] RUN echo before".to_owned(), true),
            ("[stage-1 4/6] RUN echo unused".to_owned(), false),
        ]
        .into_iter()
        .collect();
        let want = |t: &str, c: bool| (t.to_owned(), c);
        assert!(expected_steps(
            &steps,
            &[
                want("RUN echo before", true),
                want("RUN echo unused", false)
            ],
            "docker"
        )
        .is_empty());
        assert_eq!(
            expected_steps(
                &steps,
                &[want("RUN echo unused", true), want("RUN echo", true)],
                "docker"
            ),
            [
                "rebuild: docker: [stage-1 4/6] RUN echo unused: ran where CACHED was expected",
                "rebuild: docker's progress lacks the step \"RUN echo\"",
            ]
        );
    }

    #[test]
    fn plain_progress_steps_and_cache_marks_are_read() {
        let log = "#1 [internal] load build definition from Dockerfile\n#1 DONE 0.0s\n\n\
                   #4 [one 1/2] FROM docker.io/library/base:1\n#4 DONE 0.0s\n\n\
                   #6 [one 2/2] COPY a.txt /x\n#6 sha256:3498\n#6 CACHED\n\n\
                   #7 [stage-1 1/1] COPY --from=one /x /y\n#7 DONE 0.1s\n";
        let got = steps(log);
        let want: BTreeMap<String, bool> = [
            ("[one 1/2] FROM docker.io/library/base:1", false),
            ("[one 2/2] COPY a.txt /x", true),
            ("[stage-1 1/1] COPY --from=one /x /y", false),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want);
        let mut other = want.clone();
        other.insert("[one 2/2] COPY a.txt /x".to_owned(), false);
        other.remove("[one 1/2] FROM docker.io/library/base:1");
        assert_eq!(
            compare_steps(&want, &other, ("docker", "kiln")),
            [
                "[one 1/2] FROM docker.io/library/base:1: only in docker's progress",
                "[one 2/2] COPY a.txt /x: docker=CACHED kiln=ran",
            ]
        );
    }
}
