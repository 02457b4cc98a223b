//! Shows a build's [`Event`]s to a person or a script.
//!
//! Consumes events from any thread; produces text on a writer (stderr in `kiln build`).
//! Three forms, chosen by `--progress`: `plain` prints BuildKit's line format (`#N name`,
//! `#N CACHED`, `#N DONE 0.1s`, output as `#N 0.123 line`, a blank line whenever the vertex
//! changes) so scripts written for BuildKit's plain output keep working; `json` prints one
//! event per line; `tty` draws an indicatif view with one line per vertex. It must never
//! decide anything about the build.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::solve::events::{Event, Reporter, VertexId};

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `tty` when stderr is a terminal, else `plain`.
    Auto,
    /// The interactive view.
    Tty,
    /// BuildKit's plain lines.
    Plain,
    /// One JSON event per line.
    Json,
}

/// A reporter that renders events in one [`Mode`].
pub struct Progress {
    inner: Mutex<Renderer>,
}

enum Renderer {
    Plain {
        out: Box<dyn Write + Send>,
        last: Option<VertexId>,
    },
    Json {
        out: Box<dyn Write + Send>,
    },
    Tty {
        bars: MultiProgress,
        /// Each running vertex's line and its name.
        lines: BTreeMap<VertexId, (ProgressBar, String)>,
    },
}

impl Progress {
    /// Renders to `out` in `mode`; `Auto` becomes `Tty` when `is_terminal`, else `Plain`.
    pub fn new(mode: Mode, out: Box<dyn Write + Send>, is_terminal: bool) -> Progress {
        let renderer = match (mode, is_terminal) {
            (Mode::Json, _) => Renderer::Json { out },
            (Mode::Tty, _) | (Mode::Auto, true) => Renderer::Tty {
                bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                lines: BTreeMap::new(),
            },
            (Mode::Plain, _) | (Mode::Auto, false) => Renderer::Plain { out, last: None },
        };
        Progress {
            inner: Mutex::new(renderer),
        }
    }
}

impl Reporter for Progress {
    fn report(&self, event: Event) {
        // A poisoned lock means another thread panicked mid-write; keep rendering anyway.
        let mut renderer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = renderer.render(&event);
    }
}

impl Renderer {
    fn render(&mut self, event: &Event) -> std::io::Result<()> {
        match self {
            Renderer::Plain { out, last } => {
                let (vertex, lines) = plain_lines(event);
                if let Some(vertex) = vertex {
                    if last.is_some_and(|last| last != vertex) {
                        writeln!(out)?;
                    }
                    *last = Some(vertex);
                }
                for line in lines {
                    writeln!(out, "{line}")?;
                }
                out.flush()
            }
            Renderer::Json { out } => {
                let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")?;
                out.flush()
            }
            Renderer::Tty { bars, lines } => {
                render_tty(bars, lines, event);
                Ok(())
            }
        }
    }
}

/// The vertex an event belongs to and the plain lines it prints.
fn plain_lines(event: &Event) -> (Option<VertexId>, Vec<String>) {
    match event {
        Event::Started { vertex, name } => (Some(*vertex), vec![format!("#{vertex} {name}")]),
        Event::Cached { vertex } => (Some(*vertex), vec![format!("#{vertex} CACHED")]),
        Event::Miss { vertex, reasons } => (
            Some(*vertex),
            reasons
                .iter()
                .map(|reason| format!("#{vertex} cache miss: {reason}"))
                .collect(),
        ),
        Event::Status {
            vertex,
            name,
            current,
            total,
            completed,
        } => match (completed, total) {
            (true, Some(_)) => (
                Some(*vertex),
                vec![format!("#{vertex} {name}: {} done", human_size(*current))],
            ),
            (true, None) => (Some(*vertex), vec![format!("#{vertex} {name} done")]),
            (false, _) => (Some(*vertex), Vec::new()),
        },
        Event::Log {
            vertex,
            elapsed,
            line,
        } => (
            Some(*vertex),
            vec![format!("#{vertex} {:.3} {line}", elapsed.as_secs_f64())],
        ),
        Event::Done { vertex, duration } => (
            Some(*vertex),
            vec![format!("#{vertex} DONE {}", seconds(*duration))],
        ),
        Event::Failed { vertex, error, .. } => {
            (Some(*vertex), vec![format!("#{vertex} ERROR: {error}")])
        }
        Event::Warning { message } => (None, vec![format!("WARNING: {message}")]),
    }
}

fn render_tty(
    bars: &MultiProgress,
    lines: &mut BTreeMap<VertexId, (ProgressBar, String)>,
    event: &Event,
) {
    let style = ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed:>4}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    match event {
        Event::Started { vertex, name } => {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(style);
            bar.set_prefix(format!("#{vertex}"));
            bar.set_message(name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            lines.insert(*vertex, (bar, name.clone()));
        }
        Event::Cached { vertex } => finish(lines, *vertex, "CACHED".to_string()),
        Event::Done { vertex, duration } => {
            finish(lines, *vertex, format!("DONE {}", seconds(*duration)))
        }
        Event::Failed { vertex, error, .. } => finish(lines, *vertex, format!("ERROR: {error}")),
        Event::Miss { vertex, reasons } => {
            if let (Some((bar, _)), Some(reason)) = (lines.get(vertex), reasons.first()) {
                let _ = bars.println(format!("#{vertex} cache miss: {reason}"));
                bar.tick();
            }
        }
        Event::Status {
            vertex,
            name,
            current,
            total,
            ..
        } => {
            if let Some((bar, vertex_name)) = lines.get(vertex) {
                let counter = match (total, *current) {
                    (Some(total), current) => {
                        format!(": {} / {}", human_size(current), human_size(*total))
                    }
                    (None, 0) => String::new(),
                    (None, current) => format!(": {}", human_size(current)),
                };
                bar.set_message(format!("{vertex_name}  {name}{counter}"));
            }
        }
        Event::Log { vertex, line, .. } => {
            let _ = bars.println(format!("#{vertex} {line}"));
        }
        Event::Warning { message } => {
            let _ = bars.println(format!("WARNING: {message}"));
        }
    }
}

fn finish(lines: &mut BTreeMap<VertexId, (ProgressBar, String)>, vertex: VertexId, status: String) {
    if let Some((bar, name)) = lines.remove(&vertex) {
        bar.set_style(
            ProgressStyle::with_template("{prefix} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.finish_with_message(format!("{name}  {status}"));
    }
}

/// BuildKit's `0.1s`.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Sizes as BuildKit prints them (Docker's `HumanSize`: decimal units, up to four
/// significant digits, `116B`, `1.98MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    // Go's %.4g: four significant digits, trailing zeros dropped.
    let int_digits = match value < 1.0 {
        true => 1,
        false => value.log10().floor() as usize + 1,
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let mut short = format!("{value:.decimals$}");
    if short.contains('.') {
        while short.ends_with('0') {
            short.pop();
        }
        if short.ends_with('.') {
            short.pop();
        }
    }
    format!("{short}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_buildkit() {
        let table = [
            (0, "0B"),
            (2, "2B"),
            (116, "116B"),
            (1000, "1kB"),
            (1_980_000, "1.98MB"),
            (1_984_567, "1.985MB"),
            (837_000_000, "837MB"),
            (12_345_678_901, "12.35GB"),
        ];
        for (bytes, expected) in table {
            assert_eq!(human_size(bytes), expected, "{bytes}");
        }
    }

    #[test]
    fn plain_lines_follow_buildkit() {
        let table = [
            (
                Event::Started {
                    vertex: 4,
                    name: "[1/3] COPY busybox /bin/busybox".into(),
                },
                vec!["#4 [1/3] COPY busybox /bin/busybox"],
            ),
            (Event::Cached { vertex: 4 }, vec!["#4 CACHED"]),
            (
                Event::Done {
                    vertex: 5,
                    duration: Duration::from_millis(149),
                },
                vec!["#5 DONE 0.1s"],
            ),
            (
                Event::Log {
                    vertex: 6,
                    elapsed: Duration::from_millis(123),
                    line: "hello".into(),
                },
                vec!["#6 0.123 hello"],
            ),
            (
                Event::Miss {
                    vertex: 7,
                    reasons: vec!["parent step re-ran".into()],
                },
                vec!["#7 cache miss: parent step re-ran"],
            ),
        ];
        for (event, expected) in table {
            assert_eq!(plain_lines(&event).1, expected, "{event:?}");
        }
    }

    #[test]
    fn plain_separates_vertices_with_a_blank_line() {
        let buffer = std::sync::Arc::new(Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let progress = Progress::new(Mode::Plain, Box::new(Shared(buffer.clone())), false);
        for event in [
            Event::Started {
                vertex: 1,
                name: "a".into(),
            },
            Event::Done {
                vertex: 1,
                duration: Duration::ZERO,
            },
            Event::Started {
                vertex: 2,
                name: "b".into(),
            },
            Event::Cached { vertex: 2 },
        ] {
            progress.report(event);
        }
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "#1 a\n#1 DONE 0.0s\n\n#2 b\n#2 CACHED\n");
    }
}
