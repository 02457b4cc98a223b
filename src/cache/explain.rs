//! Why a step missed the cache, in the user's words.
//!
//! Consumes the preimage a step had last time (if any) and the one it has now; produces the
//! field changes between them ([`Preimage::diff`]), the few reasons worth showing
//! ([`reasons`], whose [`MissReason`] Display is what plain progress and the metadata file
//! print after `cache miss: `), and the full preimage diff `kiln build --explain` prints
//! ([`render_diff`]). Pure: it never looks anything up; the solver supplies both preimages.

use std::collections::BTreeMap;
use std::fmt;

use super::key::{flatten, Preimage, Value};
use crate::digest::Digest;

/// How one leaf of a preimage changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only the new preimage has it.
    Added(Value),
    /// Only the old preimage has it.
    Removed(Value),
    /// Both have it, with different values.
    Changed {
        /// The old value.
        old: Value,
        /// The new value.
        new: Value,
    },
}

/// One difference between two preimages: a field, or one pair of a map field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field name.
    pub field: String,
    /// For a map field, the key of the pair that changed.
    pub key: Option<String>,
    /// True if it is a note, which does not enter the key.
    pub note: bool,
    /// What changed.
    pub change: Change,
}

impl Preimage {
    /// The differences from `old` to `self`, fields in the new preimage's order (then the
    /// ones only `old` has), map fields compared pair by pair, hashed fields before notes.
    pub fn diff(&self, old: &Preimage) -> Vec<FieldChange> {
        let mut changes = Vec::new();
        for note in [false, true] {
            let (new_pairs, old_pairs) = match note {
                false => (self.fields(), old.fields()),
                true => (self.notes(), old.notes()),
            };
            diff_pairs(new_pairs, old_pairs, note, &mut changes);
        }
        changes
    }
}

fn diff_pairs(
    new: &[(String, Value)],
    old: &[(String, Value)],
    note: bool,
    changes: &mut Vec<FieldChange>,
) {
    let old_by_name: BTreeMap<&str, &Value> = old.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let new_by_name: BTreeMap<&str, &Value> = new.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let change = |field: &str, key: Option<&str>, change| FieldChange {
        field: field.to_owned(),
        key: key.map(str::to_owned),
        note,
        change,
    };
    for (name, value) in new {
        match old_by_name.get(name.as_str()) {
            None => changes.push(change(name, None, Change::Added(value.clone()))),
            Some(&old_value) if old_value == value => {}
            Some(&old_value) => match (old_value, value) {
                (Value::Map(old_map), Value::Map(new_map)) => {
                    let old_keys: BTreeMap<&str, &Value> =
                        old_map.iter().map(|(k, v)| (k.as_str(), v)).collect();
                    let new_keys: BTreeMap<&str, &Value> =
                        new_map.iter().map(|(k, v)| (k.as_str(), v)).collect();
                    let mut keys: Vec<&str> =
                        old_keys.keys().chain(new_keys.keys()).copied().collect();
                    keys.sort_unstable();
                    keys.dedup();
                    for key in keys {
                        let kind = match (old_keys.get(key), new_keys.get(key)) {
                            (None, Some(&v)) => Change::Added(v.clone()),
                            (Some(&v), None) => Change::Removed(v.clone()),
                            (Some(&o), Some(&n)) if o != n => Change::Changed {
                                old: o.clone(),
                                new: n.clone(),
                            },
                            _ => continue,
                        };
                        changes.push(change(name, Some(key), kind));
                    }
                }
                _ => changes.push(change(
                    name,
                    None,
                    Change::Changed {
                        old: old_value.clone(),
                        new: value.clone(),
                    },
                )),
            },
        }
    }
    for (name, value) in old {
        if !new_by_name.contains_key(name.as_str()) {
            changes.push(change(name, None, Change::Removed(value.clone())));
        }
    }
}

/// Why a step did not come from the cache; Display gives the words after `cache miss: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissReason {
    /// `--no-cache` was given.
    NoCache,
    /// `--no-cache-filter` named the step's stage.
    NoCacheFilter {
        /// The stage as named on the command line.
        stage: String,
    },
    /// The step before it ran, so its parent key is new.
    ParentRan,
    /// A selected file's content, mode, type or link target changed.
    FileChanged {
        /// The path in the source.
        path: String,
        /// Its old digest.
        old: Digest,
        /// Its new digest.
        new: Digest,
    },
    /// A file is selected now that was not before.
    FileAdded {
        /// The path in the source.
        path: String,
    },
    /// A file selected before is gone.
    FileRemoved {
        /// The path in the source.
        path: String,
    },
    /// More file changes than are worth listing one by one.
    MoreFiles {
        /// How many are not listed.
        count: usize,
    },
    /// A build arg the step uses changed.
    ArgChanged {
        /// The arg's name.
        name: String,
        /// Its old value (`None`: unset, or not used before).
        old: Option<String>,
        /// Its new value (`None`: unset, or no longer used).
        new: Option<String>,
    },
    /// The instruction itself was edited.
    InstructionChanged {
        /// The old text.
        old: String,
        /// The new text.
        new: String,
    },
    /// Some other keyed input changed (the instruction text, when known, did not).
    FieldChanged {
        /// The field, `name` or `name/key`.
        field: String,
        /// The old value as shown by [`Value`]'s Display, or `none`.
        old: String,
        /// The new value likewise.
        new: String,
    },
    /// The base image resolved to another manifest.
    BaseChanged {
        /// The old base (`"scratch"` or a digest).
        old: String,
        /// The new base.
        new: String,
    },
    /// Nothing records a previous build of this step.
    NotBuiltBefore,
    /// The key is the same as last time but its result was pruned from the store.
    ResultGone,
}

/// A digest as `sha256:` and its first 4 bytes in hex, then `…`.
pub fn short_digest(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("sha256:{}…", hex.get(..8).unwrap_or(&hex))
}

fn quoted(value: &Option<String>) -> String {
    match value {
        Some(text) => format!("{text:?}"),
        None => "unset".to_owned(),
    }
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::NoCache => f.write_str("--no-cache"),
            MissReason::NoCacheFilter { stage } => write!(f, "--no-cache-filter {stage}"),
            MissReason::ParentRan => f.write_str("parent step re-ran"),
            MissReason::FileChanged { path, old, new } => write!(
                f,
                "{path} changed ({} → {})",
                short_digest(old),
                short_digest(new)
            ),
            MissReason::FileAdded { path } => write!(f, "{path} added"),
            MissReason::FileRemoved { path } => write!(f, "{path} removed"),
            MissReason::MoreFiles { count } => write!(f, "{count} more files changed"),
            MissReason::ArgChanged { name, old, new } => write!(
                f,
                "build arg {name} changed ({} → {})",
                quoted(old),
                quoted(new)
            ),
            MissReason::InstructionChanged { old, new } => {
                write!(f, "instruction changed ({old} → {new})")
            }
            MissReason::FieldChanged { field, old, new } => {
                write!(f, "{field} changed ({old} → {new})")
            }
            MissReason::BaseChanged { old, new } => {
                write!(f, "base image changed ({old} → {new})")
            }
            MissReason::NotBuiltBefore => f.write_str("no earlier build of this step"),
            MissReason::ResultGone => f.write_str("the cached result was pruned"),
        }
    }
}

/// How many file changes [`reasons`] lists before summing up the rest.
pub const MAX_FILE_REASONS: usize = 3;

/// The reasons worth showing for a miss, most specific first: base image, files, build
/// args, then the instruction or other fields, and last `parent step re-ran`. A changed
/// build arg explains the changed words it fed, so those are not listed as well.
pub fn reasons(old: Option<&Preimage>, new: &Preimage) -> Vec<MissReason> {
    let Some(old) = old else {
        return vec![MissReason::NotBuiltBefore];
    };
    let changes = new.diff(old);
    let mut base = Vec::new();
    let mut files = Vec::new();
    let mut args: Vec<MissReason> = Vec::new();
    let mut fields = Vec::new();
    let mut parent = false;
    let mut keyed = false;
    for change in &changes {
        keyed |= !change.note;
        match (change.field.as_str(), &change.key, change.note) {
            ("parent", None, false) => parent = true,
            ("base", None, false) => base.push(MissReason::BaseChanged {
                old: old_value(&change.change).map_or_else(|| "none".to_owned(), short_value),
                new: new_value(&change.change).map_or_else(|| "none".to_owned(), short_value),
            }),
            ("files", Some(path), false) => files.push(file_reason(path, &change.change)),
            ("args", Some(name), _) => {
                let text = |value: Option<&Value>| match value {
                    Some(Value::Str(text)) => Some(text.clone()),
                    _ => None,
                };
                let reason = MissReason::ArgChanged {
                    name: name.clone(),
                    old: text(old_value(&change.change)),
                    new: text(new_value(&change.change)),
                };
                if !args.contains(&reason) {
                    args.push(reason);
                }
            }
            (_, _, true) => {}
            _ => fields.push(change),
        }
    }
    if !keyed {
        return vec![MissReason::ResultGone];
    }
    let mut out = base;
    if files.len() > MAX_FILE_REASONS {
        let more = files.len() - MAX_FILE_REASONS;
        files.truncate(MAX_FILE_REASONS);
        files.push(MissReason::MoreFiles { count: more });
    }
    out.extend(files);
    let explained_by_args = !args.is_empty();
    out.extend(args);
    if !fields.is_empty() && !explained_by_args {
        match (old.get_note("text"), new.get_note("text")) {
            (Some(Value::Str(old_text)), Some(Value::Str(new_text))) if old_text != new_text => {
                out.push(MissReason::InstructionChanged {
                    old: old_text.clone(),
                    new: new_text.clone(),
                });
            }
            _ => out.extend(fields.iter().map(|change| MissReason::FieldChanged {
                field: match &change.key {
                    Some(key) => format!("{}/{key}", change.field),
                    None => change.field.clone(),
                },
                old: old_value(&change.change).map_or_else(|| "none".to_owned(), Value::to_string),
                new: new_value(&change.change).map_or_else(|| "none".to_owned(), Value::to_string),
            })),
        }
    }
    if parent {
        out.push(MissReason::ParentRan);
    }
    out
}

fn file_reason(path: &str, change: &Change) -> MissReason {
    match change {
        Change::Added(_) => MissReason::FileAdded {
            path: path.to_owned(),
        },
        Change::Removed(_) => MissReason::FileRemoved {
            path: path.to_owned(),
        },
        Change::Changed {
            old: Value::Digest(old),
            new: Value::Digest(new),
        } => MissReason::FileChanged {
            path: path.to_owned(),
            old: *old,
            new: *new,
        },
        Change::Changed { old, new } => MissReason::FieldChanged {
            field: format!("files/{path}"),
            old: old.to_string(),
            new: new.to_string(),
        },
    }
}

fn old_value(change: &Change) -> Option<&Value> {
    match change {
        Change::Added(_) => None,
        Change::Removed(old) | Change::Changed { old, .. } => Some(old),
    }
}

fn new_value(change: &Change) -> Option<&Value> {
    match change {
        Change::Removed(_) => None,
        Change::Added(new) | Change::Changed { new, .. } => Some(new),
    }
}

fn short_value(value: &Value) -> String {
    match value {
        Value::Digest(digest) => short_digest(digest),
        Value::Str(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The full preimage of a step for `kiln build --explain`, one leaf per line (see
/// [`Preimage::render`]), each marked: two spaces if unchanged, `~` with `old → new` if
/// changed, `+` if new, `-` if gone (listed last). Without an old preimage every line is
/// `+`.
pub fn render_diff(old: Option<&Preimage>, new: &Preimage) -> String {
    let old_leaves = old.map(flatten).unwrap_or_default();
    let new_leaves = flatten(new);
    let old_by_path: BTreeMap<(bool, &str), &Value> = old_leaves
        .iter()
        .map(|leaf| ((leaf.note, leaf.path.as_str()), leaf.value))
        .collect();
    let new_paths: BTreeMap<(bool, &str), ()> = new_leaves
        .iter()
        .map(|leaf| ((leaf.note, leaf.path.as_str()), ()))
        .collect();
    let mut out = String::new();
    for leaf in &new_leaves {
        let line = match old_by_path.get(&(leaf.note, leaf.path.as_str())) {
            Some(&value) if value == leaf.value => format!("  {}", leaf.render()),
            Some(&value) => format!("~ {}: {value} → {}", leaf.label(), leaf.value),
            None => format!("+ {}", leaf.render()),
        };
        out.push_str(&line);
        out.push('\n');
    }
    for leaf in &old_leaves {
        if !new_paths.contains_key(&(leaf.note, leaf.path.as_str())) {
            out.push_str(&format!("- {}\n", leaf.render()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::{copy_key, CopyKeyInputs, SourceIdentity};
    use crate::graph::ArgValues;

    fn copy(
        parent: &Digest,
        files: &[(&str, &[u8])],
        dest: &str,
        args: &[(&str, &str)],
        text: &str,
    ) -> Preimage {
        let files: Vec<(String, Digest)> = files
            .iter()
            .map(|(path, content)| ((*path).to_owned(), Digest::of(content)))
            .collect();
        let args: ArgValues = args
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Some((*value).to_owned())))
            .collect();
        copy_key(&CopyKeyInputs {
            parent,
            keyword: "COPY",
            source: SourceIdentity::Context,
            sources: &[".".to_owned()],
            files: &files,
            dest,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: &[],
            checksum: None,
            keep_git_dir: false,
            unpack: None,
            args: &args,
            text,
        })
        .preimage
    }

    #[test]
    fn reasons_read_as_the_issue_words() {
        let p1 = Digest::of(b"p1");
        let p2 = Digest::of(b"p2");
        let old = copy(
            &p1,
            &[("src/index.js", b"a"), ("b", b"b")],
            "/app",
            &[],
            "COPY . /app",
        );
        let cases: Vec<(Option<&Preimage>, Preimage, Vec<String>)> = vec![
            (
                None,
                old.clone(),
                vec!["no earlier build of this step".to_owned()],
            ),
            (
                Some(&old),
                old.clone(),
                vec!["the cached result was pruned".to_owned()],
            ),
            (
                Some(&old),
                copy(
                    &p1,
                    &[("src/index.js", b"c"), ("b", b"b")],
                    "/app",
                    &[],
                    "COPY . /app",
                ),
                vec![format!(
                    "src/index.js changed ({} → {})",
                    short_digest(&Digest::of(b"a")),
                    short_digest(&Digest::of(b"c"))
                )],
            ),
            (
                Some(&old),
                copy(
                    &p1,
                    &[("src/index.js", b"a"), ("c", b"c")],
                    "/app",
                    &[],
                    "COPY . /app",
                ),
                vec!["b removed".to_owned(), "c added".to_owned()],
            ),
            (
                Some(&old),
                copy(
                    &p2,
                    &[("src/index.js", b"a"), ("b", b"b")],
                    "/app",
                    &[],
                    "COPY . /app",
                ),
                vec!["parent step re-ran".to_owned()],
            ),
            (
                Some(&old),
                copy(
                    &p1,
                    &[("src/index.js", b"a"), ("b", b"b")],
                    "/srv",
                    &[],
                    "COPY . /srv",
                ),
                vec!["instruction changed (COPY . /app → COPY . /srv)".to_owned()],
            ),
        ];
        for (old, new, expected) in cases {
            let actual: Vec<String> = reasons(old, &new).iter().map(ToString::to_string).collect();
            assert_eq!(actual, expected);
        }
        let with_arg = |value| copy(&p1, &[], value, &[("VERSION", value)], "COPY . /$VERSION");
        let actual: Vec<String> = reasons(Some(&with_arg("1.0")), &with_arg("1.1"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(actual, [r#"build arg VERSION changed ("1.0" → "1.1")"#]);
    }

    #[test]
    fn fixed_reasons_display() {
        let cases = [
            (MissReason::NoCache, "--no-cache"),
            (
                MissReason::NoCacheFilter {
                    stage: "build".to_owned(),
                },
                "--no-cache-filter build",
            ),
            (MissReason::ParentRan, "parent step re-ran"),
            (MissReason::MoreFiles { count: 7 }, "7 more files changed"),
            (
                MissReason::ArgChanged {
                    name: "A".to_owned(),
                    old: None,
                    new: Some("x".to_owned()),
                },
                "build arg A changed (unset → \"x\")",
            ),
        ];
        for (reason, expected) in cases {
            assert_eq!(reason.to_string(), expected);
        }
    }

    #[test]
    fn many_file_changes_are_summed_up() {
        let p = Digest::of(b"p");
        let names = ["a", "b", "c", "d", "e"];
        let files = |content: &'static [u8]| -> Vec<(&str, &[u8])> {
            names.iter().map(|name| (*name, content)).collect()
        };
        let old = copy(&p, &files(b"1"), "/", &[], "COPY . /");
        let new = copy(&p, &files(b"2"), "/", &[], "COPY . /");
        let found = reasons(Some(&old), &new);
        assert_eq!(found.len(), MAX_FILE_REASONS + 1);
        assert_eq!(found.last(), Some(&MissReason::MoreFiles { count: 2 }));
    }

    #[test]
    fn renders_the_full_diff() {
        let p = Digest::of(b"p");
        let old = Preimage::new()
            .field("parent", Value::Digest(p))
            .field(
                "files",
                Value::map([
                    ("a".to_owned(), Value::U64(1)),
                    ("b".to_owned(), Value::U64(2)),
                ]),
            )
            .field("dest", Value::str("/x"))
            .note("text", Value::str("COPY . /x"));
        let new = Preimage::new()
            .field("parent", Value::Digest(p))
            .field(
                "files",
                Value::map([
                    ("a".to_owned(), Value::U64(3)),
                    ("c".to_owned(), Value::U64(4)),
                ]),
            )
            .field("dest", Value::str("/x"))
            .note("text", Value::str("COPY . /x"));
        let expected = format!(
            "  parent: {p}\n~ files/a: 1 → 3\n+ files/c: 4\n  dest: \"/x\"\n  text (note): \"COPY . /x\"\n- files/b: 2\n"
        );
        assert_eq!(render_diff(Some(&old), &new), expected);
        assert!(render_diff(None, &new)
            .lines()
            .all(|line| line.starts_with("+ ")));
    }
}
