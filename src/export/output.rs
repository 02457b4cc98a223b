//! `kiln build -o`: the output spec, in BuildKit's `type=…,dest=…` form.
//!
//! Consumes the text of one `-o`/`--output` value; produces an [`OutputSpec`]. Pure: never
//! touches the file system.
//!
//! ```text
//! output := "-"                       a tar of the root filesystem on standard output
//!         | DIR                       (no '=') the root filesystem into DIR
//!         | field ("," field)*
//! field  := "type=" ("oci" | "docker" | "local" | "tar") | "dest=" PATH | "name=" NAME
//!         | "compression=" ("gzip" | "zstd" | "uncompressed" | "none")
//!         | "compression-level=" INTEGER
//! ```

use std::fmt;
use std::path::PathBuf;

use super::compress::Algorithm;
use super::{ExportError, Result};

/// What `-o` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An image archive with OCI media types (and docker's `manifest.json`).
    Oci,
    /// An image archive with docker media types.
    Docker,
    /// The root filesystem into a directory.
    Local,
    /// The root filesystem as one tar.
    Tar,
}

/// A parsed `-o` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// What to write.
    pub kind: OutputKind,
    /// Where; `-` is standard output.
    pub dest: PathBuf,
    /// `compression=`, when given.
    pub compression: Option<Algorithm>,
    /// `compression-level=`, when given.
    pub level: Option<i32>,
    /// `name=` values: names the image gets in the archive, besides `-t`.
    pub names: Vec<String>,
}

/// Why an `-o` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputProblem {
    /// A field without `=`.
    NotKeyValue(String),
    /// `type=` names no exporter kiln has.
    UnknownType(String),
    /// A key kiln does not know.
    UnknownKey(String),
    /// A value that does not fit its key.
    BadValue {
        /// The key.
        key: String,
        /// The value found.
        found: String,
    },
    /// No `type=`.
    MissingType,
    /// No `dest=`.
    MissingDest,
    /// `dest=-` with `type=local`.
    LocalToStdout,
}

impl fmt::Display for OutputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputProblem::NotKeyValue(field) => {
                write!(f, "expected KEY=VALUE, found {field:?}")
            }
            OutputProblem::UnknownType(found) => {
                write!(f, "expected type oci, docker, local or tar, found {found:?}")
            }
            OutputProblem::UnknownKey(key) => write!(
                f,
                "expected a key among type, dest, name, compression, compression-level, found {key:?}"
            ),
            OutputProblem::BadValue { key, found } => {
                write!(f, "invalid value {found:?} for {key}")
            }
            OutputProblem::MissingType => f.write_str("expected type=oci|docker|local|tar"),
            OutputProblem::MissingDest => f.write_str("expected dest=PATH (or dest=- for standard output)"),
            OutputProblem::LocalToStdout => {
                f.write_str("type=local writes a directory: expected dest=DIR, not dest=-")
            }
        }
    }
}

impl OutputSpec {
    /// Parses one `-o` value.
    ///
    /// # Errors
    /// [`ExportError::InvalidOutput`] saying what was expected.
    pub fn parse(text: &str) -> Result<OutputSpec> {
        let fail = |problem| ExportError::InvalidOutput {
            given: text.to_string(),
            problem,
        };
        if text == "-" {
            return Ok(OutputSpec::new(OutputKind::Tar, PathBuf::from("-")));
        }
        if !text.contains('=') {
            return Ok(OutputSpec::new(OutputKind::Local, PathBuf::from(text)));
        }
        let mut kind = None;
        let mut spec = OutputSpec::new(OutputKind::Oci, PathBuf::new());
        let mut dest = None;
        for field in text.split(',') {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| fail(OutputProblem::NotKeyValue(field.to_string())))?;
            let bad = || {
                fail(OutputProblem::BadValue {
                    key: key.to_string(),
                    found: value.to_string(),
                })
            };
            match key.trim() {
                "type" => {
                    kind = Some(match value {
                        "oci" => OutputKind::Oci,
                        "docker" => OutputKind::Docker,
                        "local" => OutputKind::Local,
                        "tar" => OutputKind::Tar,
                        other => return Err(fail(OutputProblem::UnknownType(other.to_string()))),
                    })
                }
                "dest" if !value.is_empty() => dest = Some(PathBuf::from(value)),
                "name" if !value.is_empty() => spec.names.push(value.to_string()),
                "compression" => {
                    spec.compression = Some(match value {
                        "gzip" => Algorithm::Gzip,
                        "zstd" => Algorithm::Zstd,
                        "uncompressed" | "none" => Algorithm::None,
                        _ => return Err(bad()),
                    })
                }
                "compression-level" => spec.level = Some(value.parse().map_err(|_| bad())?),
                "dest" | "name" => return Err(bad()),
                other => return Err(fail(OutputProblem::UnknownKey(other.to_string()))),
            }
        }
        spec.kind = kind.ok_or_else(|| fail(OutputProblem::MissingType))?;
        spec.dest = dest.ok_or_else(|| fail(OutputProblem::MissingDest))?;
        if spec.kind == OutputKind::Local && spec.dest.as_os_str() == "-" {
            return Err(fail(OutputProblem::LocalToStdout));
        }
        Ok(spec)
    }

    fn new(kind: OutputKind, dest: PathBuf) -> OutputSpec {
        OutputSpec {
            kind,
            dest,
            compression: None,
            level: None,
            names: Vec::new(),
        }
    }

    /// True if and only if the output goes to standard output.
    pub fn to_stdout(&self) -> bool {
        self.dest.as_os_str() == "-"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        /// Text, kind, dest, compression, level, names.
        type Row<'a> = (
            &'a str,
            OutputKind,
            &'a str,
            Option<Algorithm>,
            Option<i32>,
            &'a [&'a str],
        );
        let table: &[Row] = &[
            ("-", OutputKind::Tar, "-", None, None, &[]),
            ("out", OutputKind::Local, "out", None, None, &[]),
            (
                "type=oci,dest=a.tar",
                OutputKind::Oci,
                "a.tar",
                None,
                None,
                &[],
            ),
            (
                "type=docker,dest=-",
                OutputKind::Docker,
                "-",
                None,
                None,
                &[],
            ),
            (
                "type=tar,dest=r.tar",
                OutputKind::Tar,
                "r.tar",
                None,
                None,
                &[],
            ),
            ("type=local,dest=d", OutputKind::Local, "d", None, None, &[]),
            (
                "type=oci,dest=a,compression=zstd,compression-level=9,name=x:1,name=y",
                OutputKind::Oci,
                "a",
                Some(Algorithm::Zstd),
                Some(9),
                &["x:1", "y"],
            ),
            (
                "dest=a,type=oci,compression=uncompressed",
                OutputKind::Oci,
                "a",
                Some(Algorithm::None),
                None,
                &[],
            ),
        ];
        for (text, kind, dest, compression, level, names) in table {
            let spec = OutputSpec::parse(text).expect(text);
            assert_eq!(spec.kind, *kind, "{text}");
            assert_eq!(spec.dest, PathBuf::from(dest), "{text}");
            assert_eq!(spec.compression, *compression, "{text}");
            assert_eq!(spec.level, *level, "{text}");
            assert_eq!(spec.names, *names, "{text}");
        }
    }

    #[test]
    fn rejects_specs_saying_what_was_expected() {
        let table: &[(&str, &str)] = &[
            ("type=oci", "expected dest=PATH"),
            ("dest=x", "expected type=oci|docker|local|tar"),
            (
                "type=image,dest=x",
                "expected type oci, docker, local or tar, found \"image\"",
            ),
            ("type=oci,dest=x,push=true", "found \"push\""),
            (
                "type=oci,dest=x,compression=lz4",
                "invalid value \"lz4\" for compression",
            ),
            (
                "type=oci,dest=x,compression-level=hi",
                "invalid value \"hi\" for compression-level",
            ),
            ("type=oci,dest=x,junk", "expected KEY=VALUE, found \"junk\""),
            ("type=local,dest=-", "not dest=-"),
            ("type=oci,dest=", "invalid value \"\" for dest"),
        ];
        for (text, expected) in table {
            let message = match OutputSpec::parse(text) {
                Err(ExportError::InvalidOutput { problem, .. }) => problem.to_string(),
                other => panic!("{text}: expected an invalid output, got {other:?}"),
            };
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
