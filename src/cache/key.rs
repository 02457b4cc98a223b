//! Cache keys: what a step's result depends on, written as an ordered list of named fields
//! (a [`Preimage`]), encoded canonically and hashed with SHA-256 into a [`CacheKey`].
//!
//! Consumes the inputs of one step, already resolved by the solver (parent key, base
//! manifest, file digests from [`super::contenthash`], expanded words); produces the key and
//! the preimage it was hashed from, kept so a later miss can be explained field by field.
//! Pure: no file system, no clock, no process; the same inputs give the same digest on every
//! machine. Keys never depend on `derive(Hash)`, hash-map order or the local uid, gid and
//! mtimes.
//!
//! # Canonical encoding (format version 1)
//! One byte `1`, then for each field in order: the byte `0x01`, the name's length (u64,
//! big-endian) and UTF-8 bytes, then the value. A value is a tag byte and its payload:
//!
//! | tag | value | payload |
//! |---|---|---|
//! | `0x10` | string | u64 length, UTF-8 bytes |
//! | `0x11` | bytes | u64 length, bytes |
//! | `0x12` | u64 | 8 bytes big-endian |
//! | `0x13` | bool | one byte, 0 or 1 |
//! | `0x14` | digest | the 32 raw SHA-256 bytes |
//! | `0x15` | list | u64 count, then each value |
//! | `0x16` | map | u64 count, then per pair sorted by key bytes: u64 key length, key, value |
//! | `0x17` | none | nothing |
//!
//! The key is the SHA-256 of that encoding. Notes ([`Preimage::notes`]) are stored with the
//! preimage to explain misses but are not encoded, so they never change a key.
//!
//! # What each key holds
//! Only FROM, COPY, ADD, RUN and WORKDIR produce filesystem steps, and only their keys
//! chain, each through its `parent` field (the key of the step before it in the stage, the
//! FROM step's key for the first). ENV, LABEL, USER, SHELL, EXPOSE, CMD and the other
//! metadata instructions change only the image config: they never enter a filesystem step's
//! key, except what RUN reads (its env, user, workdir and shell). So changing `ENV A=1` to
//! `ENV A=2` before a COPY keeps the COPY cached, which is what BuildKit does.
//!
//! - **FROM** ([`from_key`]): `op` = `"from"`; `base` = `"scratch"`, or the base image's
//!   manifest digest; or, for an earlier stage, `parent` = that stage's last key; then
//!   `platform` (`os/arch[/variant]`); then, only in a build with SOURCE_DATE_EPOCH,
//!   `source-date-epoch` ([`from_key_at`]).
//! - **COPY / ADD** ([`copy_key`]): `op` = `"COPY"` or `"ADD"`; `parent`; `source` (a map:
//!   `kind` = `context`, `named-context`, `stage`, `image`, `url` or `scratch`, plus `name`,
//!   `manifest` or `url`); `sources` (as expanded); `files` (a map from each selected path
//!   to its content digest: type, mode bits, size, link target and bytes, see
//!   [`super::contenthash`]; never mtime, uid or gid); `dest`; `chown`, `chmod` (none when
//!   absent); `link`, `parents` (bools); `exclude` (list); `checksum`; `keep_git_dir`;
//!   `unpack` (none when absent). A COPY from a stage is keyed by the files it selects, not
//!   by the stage's key, so a stage that re-runs yet yields the same files keeps the COPY
//!   cached (BuildKit's content-based key). Notes: `args` (the build args the step's words
//!   referred to: BuildKit keys COPY by its expanded words, so an arg matters only through
//!   them) and `text`.
//! - **WORKDIR** ([`workdir_key`]): `op` = `"workdir"`, `parent`, `path` (absolute,
//!   expanded), `user` (the USER in effect, which owns a created directory; none for root).
//! - **RUN** ([`run_key`], run by the next issue): `op` = `"run"`, `parent`, `command` (exec
//!   form argv, or the shell form's one string), `shell` (the SHELL for shell form, none for
//!   exec form), `env` (`K=V` in the order the process gets them), `args` (every build arg
//!   in scope: BuildKit passes them as environment), `user`, `workdir`, `mounts` (each
//!   mount's canonical text), `network`, `security`. Note: `text`.
//! - **Metadata** instructions ([`metadata_key`]): `op` = `"meta"`, `parent`, `text` (the
//!   expanded instruction). They identify config-only steps; no filesystem key chains
//!   through them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::graph::ArgValues;

/// The canonical encoding's format version, its first byte; changing the encoding or any
/// key's fields means changing this, so old records stop matching instead of colliding.
pub const FORMAT_VERSION: u8 = 1;

const TAG_FIELD: u8 = 0x01;
const TAG_STR: u8 = 0x10;
const TAG_BYTES: u8 = 0x11;
const TAG_U64: u8 = 0x12;
const TAG_BOOL: u8 = 0x13;
const TAG_DIGEST: u8 = 0x14;
const TAG_LIST: u8 = 0x15;
const TAG_MAP: u8 = 0x16;
const TAG_NONE: u8 = 0x17;

/// One value of a preimage field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    /// Text.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A number.
    U64(u64),
    /// A flag.
    Bool(bool),
    /// A SHA-256 digest.
    Digest(Digest),
    /// An ordered list.
    List(Vec<Value>),
    /// Pairs by key; encoded sorted by key bytes whatever order they are stored in.
    Map(Vec<(String, Value)>),
    /// Absent.
    None,
}

impl Value {
    /// A string value.
    pub fn str(text: impl Into<String>) -> Value {
        Value::Str(text.into())
    }

    /// A string, or none.
    pub fn opt_str(text: Option<&str>) -> Value {
        text.map_or(Value::None, Value::str)
    }

    /// A list of strings.
    pub fn strs<S: AsRef<str>>(items: &[S]) -> Value {
        Value::List(items.iter().map(|item| Value::str(item.as_ref())).collect())
    }

    /// A map from its pairs, sorted by key.
    pub fn map(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
        let mut pairs: Vec<(String, Value)> = pairs.into_iter().collect();
        pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Value::Map(pairs)
    }

    /// Build args as a map from name to value (none: declared without a value).
    pub fn args(args: &ArgValues) -> Value {
        Value::map(
            args.iter()
                .map(|(name, value)| (name.clone(), Value::opt_str(value.as_deref()))),
        )
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(text) => {
                out.push(TAG_STR);
                put_bytes(out, text.as_bytes());
            }
            Value::Bytes(bytes) => {
                out.push(TAG_BYTES);
                put_bytes(out, bytes);
            }
            Value::U64(number) => {
                out.push(TAG_U64);
                out.extend_from_slice(&number.to_be_bytes());
            }
            Value::Bool(flag) => {
                out.push(TAG_BOOL);
                out.push(u8::from(*flag));
            }
            Value::Digest(digest) => {
                out.push(TAG_DIGEST);
                out.extend_from_slice(digest.as_bytes());
            }
            Value::List(items) => {
                out.push(TAG_LIST);
                put_len(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Value::Map(pairs) => {
                out.push(TAG_MAP);
                put_len(out, pairs.len());
                let mut sorted: Vec<&(String, Value)> = pairs.iter().collect();
                sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (key, value) in sorted {
                    put_bytes(out, key.as_bytes());
                    value.encode(out);
                }
            }
            Value::None => out.push(TAG_NONE),
        }
    }
}

/// Strings quoted, digests in full, lists in brackets, maps in braces, `none` for none.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(text) => write!(f, "{text:?}"),
            Value::Bytes(bytes) => {
                f.write_str("0x")?;
                bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
            Value::U64(number) => write!(f, "{number}"),
            Value::Bool(flag) => write!(f, "{flag}"),
            Value::Digest(digest) => write!(f, "{digest}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(pairs) => {
                f.write_str("{")?;
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key:?}: {value}")?;
                }
                f.write_str("}")
            }
            Value::None => f.write_str("none"),
        }
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// What a key is hashed from: named fields in a fixed order, plus notes that are kept
/// beside them to explain misses but never hashed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preimage {
    fields: Vec<(String, Value)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<(String, Value)>,
}

impl Preimage {
    /// An empty preimage.
    pub fn new() -> Preimage {
        Preimage::default()
    }

    /// Appends a hashed field.
    pub fn field(mut self, name: &str, value: Value) -> Preimage {
        self.fields.push((name.to_owned(), value));
        self
    }

    /// Appends a note: kept with the preimage, never hashed.
    pub fn note(mut self, name: &str, value: Value) -> Preimage {
        self.notes.push((name.to_owned(), value));
        self
    }

    /// The hashed fields, in order.
    pub fn fields(&self) -> &[(String, Value)] {
        &self.fields
    }

    /// The notes, in order.
    pub fn notes(&self) -> &[(String, Value)] {
        &self.notes
    }

    /// The first hashed field named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        lookup(&self.fields, name)
    }

    /// The first note named `name`.
    pub fn get_note(&self, name: &str) -> Option<&Value> {
        lookup(&self.notes, name)
    }

    /// The canonical encoding of the hashed fields (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        for (name, value) in &self.fields {
            out.push(TAG_FIELD);
            put_bytes(&mut out, name.as_bytes());
            value.encode(&mut out);
        }
        out
    }

    /// The SHA-256 of [`Preimage::encode`].
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// One line per field, `name: value`, maps expanded one pair per line as
    /// `name/key: value`; notes follow, marked `(note)`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in flatten(self) {
            out.push_str(&line.render());
            out.push('\n');
        }
        out
    }
}

fn lookup<'a>(pairs: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    pairs
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value)
}

/// One leaf of a preimage: a field, or one pair of a map field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leaf<'a> {
    /// `name` or `name/key`.
    pub path: String,
    pub value: &'a Value,
    pub note: bool,
}

impl Leaf<'_> {
    /// The path, marked ` (note)` for a note.
    pub(crate) fn label(&self) -> String {
        match self.note {
            true => format!("{} (note)", self.path),
            false => self.path.clone(),
        }
    }

    /// `label: value`.
    pub(crate) fn render(&self) -> String {
        format!("{}: {}", self.label(), self.value)
    }
}

/// The leaves of a preimage in order: fields, then notes; a map field gives one leaf per
/// pair (an empty map gives none).
pub(crate) fn flatten(preimage: &Preimage) -> Vec<Leaf<'_>> {
    let mut leaves = Vec::new();
    let groups = [(&preimage.fields, false), (&preimage.notes, true)];
    for (pairs, note) in groups {
        for (name, value) in pairs.iter() {
            match value {
                Value::Map(entries) => {
                    for (key, value) in entries {
                        leaves.push(Leaf {
                            path: format!("{name}/{key}"),
                            value,
                            note,
                        });
                    }
                }
                _ => leaves.push(Leaf {
                    path: name.clone(),
                    value,
                    note,
                }),
            }
        }
    }
    leaves
}

/// A step's cache key and the preimage it was hashed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// SHA-256 of the preimage's canonical encoding.
    pub digest: Digest,
    /// What was hashed.
    pub preimage: Preimage,
}

impl CacheKey {
    /// Hashes `preimage`.
    pub fn new(preimage: Preimage) -> CacheKey {
        CacheKey {
            digest: preimage.digest(),
            preimage,
        }
    }
}

/// What a stage starts from, for [`from_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseIdentity {
    /// `FROM scratch`.
    Scratch,
    /// An image, by its manifest digest (for the chosen platform).
    Image {
        /// The platform manifest's digest.
        manifest: Digest,
    },
    /// An earlier stage, by the key of its last step.
    Stage {
        /// The stage's last key.
        key: Digest,
    },
}

/// The key of a stage's FROM.
pub fn from_key(base: &BaseIdentity, platform: &str) -> CacheKey {
    from_key_at(base, platform, None)
}

/// The key of a stage's FROM in a build with SOURCE_DATE_EPOCH `epoch`: the field
/// `source-date-epoch` (seconds, as a string) follows `platform` when it is set, and every
/// key of the stage chains through this one, so layers made with clamped times are never
/// reused by a build without them (or with another epoch). Without it the key is
/// [`from_key`]'s, so existing keys stay as they were.
pub fn from_key_at(base: &BaseIdentity, platform: &str, epoch: Option<i64>) -> CacheKey {
    let preimage = Preimage::new().field("op", Value::str("from"));
    let preimage = match base {
        BaseIdentity::Scratch => preimage.field("base", Value::str("scratch")),
        BaseIdentity::Image { manifest } => preimage.field("base", Value::Digest(*manifest)),
        BaseIdentity::Stage { key } => preimage.field("parent", Value::Digest(*key)),
    };
    let preimage = preimage.field("platform", Value::str(platform));
    CacheKey::new(match epoch {
        Some(epoch) => preimage.field("source-date-epoch", Value::str(epoch.to_string())),
        None => preimage,
    })
}

/// Where a COPY or ADD reads from, for [`copy_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceIdentity {
    /// The main build context.
    Context,
    /// A named context given as a local directory (`--build-context NAME=DIR`).
    NamedContext {
        /// Its name.
        name: String,
    },
    /// An earlier stage; its selected files stand for it.
    Stage,
    /// An image, by manifest digest.
    Image {
        /// The platform manifest's digest.
        manifest: Digest,
    },
    /// ADD of a URL; the downloaded content is the one entry of `files`.
    Url {
        /// The URL as expanded.
        url: String,
    },
    /// `--from=scratch`.
    Scratch,
}

impl SourceIdentity {
    fn value(&self) -> Value {
        let kind = |kind: &str| (String::from("kind"), Value::str(kind));
        Value::map(match self {
            SourceIdentity::Context => vec![kind("context")],
            SourceIdentity::NamedContext { name } => {
                vec![kind("named-context"), ("name".to_owned(), Value::str(name))]
            }
            SourceIdentity::Stage => vec![kind("stage")],
            SourceIdentity::Image { manifest } => {
                vec![
                    kind("image"),
                    ("manifest".to_owned(), Value::Digest(*manifest)),
                ]
            }
            SourceIdentity::Url { url } => vec![kind("url"), ("url".to_owned(), Value::str(url))],
            SourceIdentity::Scratch => vec![kind("scratch")],
        })
    }
}

/// Everything a COPY or ADD key depends on.
#[derive(Debug, Clone)]
pub struct CopyKeyInputs<'a> {
    /// The previous step's key.
    pub parent: &'a Digest,
    /// `COPY` or `ADD`.
    pub keyword: &'a str,
    /// Where the sources are read from.
    pub source: SourceIdentity,
    /// The sources as expanded (heredoc bodies included as their text).
    pub sources: &'a [String],
    /// Every selected path with its content digest.
    pub files: &'a [(String, Digest)],
    /// The destination as expanded.
    pub dest: &'a str,
    /// `--chown`, expanded.
    pub chown: Option<&'a str>,
    /// `--chmod`, expanded.
    pub chmod: Option<&'a str>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: &'a [String],
    /// ADD `--checksum`.
    pub checksum: Option<&'a str>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack`, when given.
    pub unpack: Option<bool>,
    /// The build args the step's words referred to (a note).
    pub args: &'a ArgValues,
    /// The step as progress shows it (a note).
    pub text: &'a str,
}

/// The key of a COPY or ADD.
pub fn copy_key(inputs: &CopyKeyInputs<'_>) -> CacheKey {
    let files = Value::map(
        inputs
            .files
            .iter()
            .map(|(path, digest)| (path.clone(), Value::Digest(*digest))),
    );
    let preimage = Preimage::new()
        .field("op", Value::str(inputs.keyword))
        .field("parent", Value::Digest(*inputs.parent))
        .field("source", inputs.source.value())
        .field("sources", Value::strs(inputs.sources))
        .field("files", files)
        .field("dest", Value::str(inputs.dest))
        .field("chown", Value::opt_str(inputs.chown))
        .field("chmod", Value::opt_str(inputs.chmod))
        .field("link", Value::Bool(inputs.link))
        .field("parents", Value::Bool(inputs.parents))
        .field("exclude", Value::strs(inputs.exclude))
        .field("checksum", Value::opt_str(inputs.checksum))
        .field("keep_git_dir", Value::Bool(inputs.keep_git_dir))
        .field("unpack", inputs.unpack.map_or(Value::None, Value::Bool))
        .note("args", Value::args(inputs.args))
        .note("text", Value::str(inputs.text));
    CacheKey::new(preimage)
}

/// The key of a WORKDIR: the directory and the user that would own it if created.
pub fn workdir_key(parent: &Digest, path: &str, user: Option<&str>) -> CacheKey {
    CacheKey::new(
        Preimage::new()
            .field("op", Value::str("workdir"))
            .field("parent", Value::Digest(*parent))
            .field("path", Value::str(path))
            .field("user", Value::opt_str(user)),
    )
}

/// Everything a RUN key depends on.
#[derive(Debug, Clone)]
pub struct RunKeyInputs<'a> {
    /// The previous step's key.
    pub parent: &'a Digest,
    /// Exec form: the argv; shell form: the one command string.
    pub command: &'a [String],
    /// The SHELL for shell form; `None` for exec form.
    pub shell: Option<&'a [String]>,
    /// The environment, `K=V`, in the order the process gets it.
    pub env: &'a [String],
    /// Every build arg in scope.
    pub args: &'a ArgValues,
    /// The USER in effect.
    pub user: &'a str,
    /// The working directory.
    pub workdir: &'a str,
    /// Each mount's canonical text.
    pub mounts: &'a [String],
    /// `--network`.
    pub network: &'a str,
    /// `--security`.
    pub security: &'a str,
    /// The step as progress shows it (a note).
    pub text: &'a str,
}

/// The key of a RUN.
pub fn run_key(inputs: &RunKeyInputs<'_>) -> CacheKey {
    CacheKey::new(
        Preimage::new()
            .field("op", Value::str("run"))
            .field("parent", Value::Digest(*inputs.parent))
            .field("command", Value::strs(inputs.command))
            .field("shell", inputs.shell.map_or(Value::None, Value::strs))
            .field("env", Value::strs(inputs.env))
            .field("args", Value::args(inputs.args))
            .field("user", Value::str(inputs.user))
            .field("workdir", Value::str(inputs.workdir))
            .field("mounts", Value::strs(inputs.mounts))
            .field("network", Value::str(inputs.network))
            .field("security", Value::str(inputs.security))
            .note("text", Value::str(inputs.text)),
    )
}

/// The key of a metadata (config-only) instruction, by its expanded text.
pub fn metadata_key(parent: &Digest, text: &str) -> CacheKey {
    CacheKey::new(
        Preimage::new()
            .field("op", Value::str("meta"))
            .field("parent", Value::Digest(*parent))
            .field("text", Value::str(text)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn source_date_epoch_enters_the_from_key_only_when_set() {
        let bases = [
            BaseIdentity::Scratch,
            BaseIdentity::Image {
                manifest: Digest::from_array([1; 32]),
            },
        ];
        for base in &bases {
            let plain = from_key(base, "linux/amd64");
            assert_eq!(from_key_at(base, "linux/amd64", None), plain);
            let at_0 = from_key_at(base, "linux/amd64", Some(0));
            let at_1 = from_key_at(base, "linux/amd64", Some(1));
            assert_ne!(at_0.digest, plain.digest);
            assert_ne!(at_0.digest, at_1.digest);
            assert_eq!(
                at_1.preimage.get("source-date-epoch"),
                Some(&Value::str("1"))
            );
        }
    }

    #[test]
    fn encodes_each_value_canonically() {
        let digest = Digest::from_array([0xab; 32]);
        let cases: &[(Value, &str)] = &[
            (Value::str("ab"), "1000000000000000026162"),
            (Value::Bytes(vec![1, 2]), "1100000000000000020102"),
            (Value::U64(258), "120000000000000102"),
            (Value::Bool(true), "1301"),
            (Value::None, "17"),
            (
                Value::List(vec![Value::Bool(false), Value::None]),
                "150000000000000002130017",
            ),
            (
                Value::Map(vec![
                    ("b".to_owned(), Value::None),
                    ("a".to_owned(), Value::None),
                ]),
                "1600000000000000020000000000000001611700000000000000016217",
            ),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            value.encode(&mut out);
            assert_eq!(hex(&out), *expected, "{value}");
        }
        let mut out = Vec::new();
        Value::Digest(digest).encode(&mut out);
        assert_eq!(out.len(), 33);
        assert_eq!(out[0], TAG_DIGEST);
    }

    #[test]
    fn field_order_and_names_change_the_digest_but_notes_do_not() {
        let base = Preimage::new()
            .field("a", Value::U64(1))
            .field("b", Value::U64(2));
        let swapped = Preimage::new()
            .field("b", Value::U64(2))
            .field("a", Value::U64(1));
        let renamed = Preimage::new()
            .field("a", Value::U64(1))
            .field("c", Value::U64(2));
        let noted = base.clone().note("text", Value::str("COPY a b"));
        assert_ne!(base.digest(), swapped.digest());
        assert_ne!(base.digest(), renamed.digest());
        assert_eq!(base.digest(), noted.digest());
        // Lengths keep ("ab", "c") apart from ("a", "bc").
        let split = |a: &str, b: &str| {
            Preimage::new()
                .field("x", Value::List(vec![Value::str(a), Value::str(b)]))
                .digest()
        };
        assert_ne!(split("ab", "c"), split("a", "bc"));
    }

    #[test]
    fn only_filesystem_inputs_key_a_copy() {
        let parent = Digest::of(b"parent");
        let files = vec![("a.txt".to_owned(), Digest::of(b"a"))];
        let args = ArgValues::new();
        let mut other_args = ArgValues::new();
        other_args.insert("V".to_owned(), Some("2".to_owned()));
        let inputs = CopyKeyInputs {
            parent: &parent,
            keyword: "COPY",
            source: SourceIdentity::Context,
            sources: &["a.txt".to_owned()],
            files: &files,
            dest: "/app/",
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: &[],
            checksum: None,
            keep_git_dir: false,
            unpack: None,
            args: &args,
            text: "COPY a.txt /app/",
        };
        let key = copy_key(&inputs).digest;
        let same = CopyKeyInputs {
            args: &other_args,
            text: "COPY a.txt /app/ ",
            ..inputs.clone()
        };
        assert_eq!(copy_key(&same).digest, key);
        let changed = [
            CopyKeyInputs {
                dest: "/app",
                ..inputs.clone()
            },
            CopyKeyInputs {
                chmod: Some("644"),
                ..inputs.clone()
            },
            CopyKeyInputs {
                link: true,
                ..inputs.clone()
            },
            CopyKeyInputs {
                keyword: "ADD",
                ..inputs.clone()
            },
            CopyKeyInputs {
                source: SourceIdentity::Stage,
                ..inputs.clone()
            },
        ];
        for other in changed {
            assert_ne!(copy_key(&other).digest, key, "{other:?}");
        }
    }
}
