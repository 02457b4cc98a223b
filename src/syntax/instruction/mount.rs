//! `RUN --mount=<options>`: the option list, checked as far as it can be before expansion
//! (BuildKit's `parseMount`).
//!
//! Consumes one `--mount` flag value; produces a [`Mount`] that keeps every option as written,
//! with keys reduced to their canonical names. BuildKit expands each value except `from`
//! before interpreting it, so interpretation has two entry points: the syntax stage checks
//! every literal value and every rule that does not depend on an expanded one, and
//! [`crate::graph`] calls [`Mount::map_values`] to expand and then [`Mount::resolve`] for the
//! typed [`ResolvedMount`]. Both run the same code. Nothing here expands variables.

use serde::Serialize;

use super::values::{parse_go_bool, parse_size, parse_u32};
use crate::syntax::ast::Position;
use crate::syntax::error::{did_you_mean, ParseErrorKind};

/// The canonical name of a `--mount` option; aliases are folded into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKey {
    /// `type`.
    Type,
    /// `from`.
    From,
    /// `source`, `src`.
    Source,
    /// `target`, `dst`, `destination`.
    Target,
    /// `readonly`, `ro`.
    #[serde(rename = "readonly")]
    ReadOnly,
    /// `readwrite`, `rw`.
    #[serde(rename = "readwrite")]
    ReadWrite,
    /// `id`.
    Id,
    /// `sharing`.
    Sharing,
    /// `mode`.
    Mode,
    /// `uid`.
    Uid,
    /// `gid`.
    Gid,
    /// `size`.
    Size,
    /// `required`.
    Required,
    /// `env`.
    Env,
}

/// Every key BuildKit accepts, with the canonical name it stands for.
const KEYS: [(&str, MountKey); 19] = [
    ("type", MountKey::Type),
    ("from", MountKey::From),
    ("source", MountKey::Source),
    ("src", MountKey::Source),
    ("target", MountKey::Target),
    ("dst", MountKey::Target),
    ("destination", MountKey::Target),
    ("readonly", MountKey::ReadOnly),
    ("ro", MountKey::ReadOnly),
    ("readwrite", MountKey::ReadWrite),
    ("rw", MountKey::ReadWrite),
    ("id", MountKey::Id),
    ("sharing", MountKey::Sharing),
    ("mode", MountKey::Mode),
    ("uid", MountKey::Uid),
    ("gid", MountKey::Gid),
    ("size", MountKey::Size),
    ("required", MountKey::Required),
    ("env", MountKey::Env),
];

impl MountKey {
    /// The canonical spelling, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            MountKey::Type => "type",
            MountKey::From => "from",
            MountKey::Source => "source",
            MountKey::Target => "target",
            MountKey::ReadOnly => "readonly",
            MountKey::ReadWrite => "readwrite",
            MountKey::Id => "id",
            MountKey::Sharing => "sharing",
            MountKey::Mode => "mode",
            MountKey::Uid => "uid",
            MountKey::Gid => "gid",
            MountKey::Size => "size",
            MountKey::Required => "required",
            MountKey::Env => "env",
        }
    }
}

/// One `key[=value]` of a `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountOption {
    /// The option, aliases folded.
    pub key: MountKey,
    /// The value as written (unexpanded); `None` for the bare `ro`, `rw` and `required`.
    pub value: Option<String>,
}

/// One `RUN --mount=…`: its options in source order, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The options; later ones override earlier ones, as in BuildKit.
    pub options: Vec<MountOption>,
    /// Where the `--mount` flag is.
    pub position: Position,
}

/// `RUN --mount` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory from the context, a stage or an image (the default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// A memory file system.
    Tmpfs,
    /// A secret file.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

const MOUNT_TYPES: [(&str, MountType); 5] = [
    ("bind", MountType::Bind),
    ("cache", MountType::Cache),
    ("tmpfs", MountType::Tmpfs),
    ("secret", MountType::Secret),
    ("ssh", MountType::Ssh),
];

impl MountType {
    /// The type's name as written in `type=`.
    pub fn name(self) -> &'static str {
        MOUNT_TYPES
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("bind", |(name, _)| name)
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent builds share the directory (the default).
    Shared,
    /// Each concurrent build gets its own directory.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

const SHARING: [(&str, Sharing); 3] = [
    ("shared", Sharing::Shared),
    ("private", Sharing::Private),
    ("locked", Sharing::Locked),
];

/// A mount with every value expanded and interpreted, defaults applied as BuildKit's parser
/// applies them (type `bind`; read-only unless a cache or tmpfs mount).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedMount {
    /// `type=`.
    pub kind: MountType,
    /// `from=`: a stage, image or build context; `None` for the build context.
    pub from: Option<String>,
    /// `source=`, `None` when empty.
    pub source: Option<String>,
    /// `target=`, `None` when empty.
    pub target: Option<String>,
    /// False for `rw`, and by default for cache and tmpfs mounts.
    pub read_only: bool,
    /// `id=`, `None` when empty.
    pub id: Option<String>,
    /// `sharing=` (cache mounts only).
    pub sharing: Option<Sharing>,
    /// `mode=`, octal (cache, secret and ssh mounts).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret and ssh mounts).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret and ssh mounts).
    pub gid: Option<u32>,
    /// `size=` in bytes (tmpfs mounts).
    pub size: Option<u64>,
    /// `required` (secret and ssh mounts).
    pub required: bool,
    /// `env=`: the environment variable that receives a secret; an empty name means the
    /// default.
    pub env: Option<String>,
}

/// A mount problem with the index of the option it concerns, `None` for the mount as a whole.
pub(super) type MountFailure = (ParseErrorKind, Option<String>, Option<usize>);

impl Mount {
    /// The `from=` value, which is never expanded, so stage dependencies can be read before
    /// any expansion.
    pub fn from(&self) -> Option<&str> {
        self.value_of(MountKey::From)
    }

    /// The last value given for `key`.
    pub fn value_of(&self, key: MountKey) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|option| option.key == key)
            .and_then(|option| option.value.as_deref())
    }

    /// The same mount with `expand` applied to every value except `from`, which BuildKit
    /// never expands.
    ///
    /// # Errors
    /// The first error `expand` returns.
    pub fn map_values<E>(
        &self,
        mut expand: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Mount, E> {
        let mut options = Vec::with_capacity(self.options.len());
        for option in &self.options {
            let value = match (&option.value, option.key) {
                (Some(value), key) if key != MountKey::From => Some(expand(value)?),
                (value, _) => value.clone(),
            };
            options.push(MountOption {
                key: option.key,
                value,
            });
        }
        Ok(Mount {
            options,
            position: self.position,
        })
    }

    /// Interprets every option, treating every value as final.
    ///
    /// # Errors
    /// An invalid value, an option the mount's type does not take, or a rule broken between
    /// options (see [`ParseErrorKind`]).
    pub fn resolve(&self) -> Result<ResolvedMount, ParseErrorKind> {
        self.interpret(&|_| false)
            .map(|(resolved, _)| resolved)
            .map_err(|(kind, _, _)| kind)
    }

    /// BuildKit's `parseMount` over the options in order. Values for which `deferred` is true
    /// are skipped, as are the checks that need them; the flag returned is false when anything
    /// was skipped, and the mount is then incomplete. Not in grammar/ as a production: it
    /// applies the option table and the errors listed under `mount` in section 8.
    pub(super) fn interpret(
        &self,
        deferred: &dyn Fn(&str) -> bool,
    ) -> Result<(ResolvedMount, bool), MountFailure> {
        let mut mount = ResolvedMount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            required: false,
            env: None,
        };
        // The type in force: `None` once a deferred `type=` makes it unknown.
        let mut kind = Some(MountType::Bind);
        let mut complete = true;
        let mut read_only_given = false;
        // Keys present, values known or not: their presence alone breaks some rules.
        let mut present: Vec<(MountKey, usize)> = Vec::new();

        for (index, option) in self.options.iter().enumerate() {
            let fail = |kind: ParseErrorKind| Err((kind, None, Some(index)));
            let not_allowed = |for_kind: MountType| {
                Err((
                    ParseErrorKind::MountOptionNotAllowed {
                        key: option.key.name().to_string(),
                        mount_type: for_kind.name().to_string(),
                    },
                    None,
                    Some(index),
                ))
            };
            let takes = |allowed: &[MountType]| match kind {
                Some(current) if !allowed.contains(&current) => not_allowed(current),
                _ => Ok(()),
            };
            present.push((option.key, index));
            let Some(value) = option.value.as_deref() else {
                match option.key {
                    MountKey::ReadOnly | MountKey::ReadWrite => {
                        mount.read_only = option.key == MountKey::ReadOnly;
                        read_only_given = true;
                    }
                    MountKey::Required => {
                        takes(&[MountType::Secret, MountType::Ssh])?;
                        mount.required = true;
                    }
                    key => {
                        return fail(ParseErrorKind::InvalidValue {
                            what: "--mount option".into(),
                            found: key.name().into(),
                            expected: format!("{}=<value>", key.name()),
                        })
                    }
                }
                continue;
            };
            if option.key == MountKey::From {
                if value.find('$').is_some_and(|at| at + 1 != value.len()) {
                    return Err((
                        invalid(
                            "--mount from",
                            value,
                            "a stage, image or context name without variables",
                        ),
                        Some("define an alias stage with FROM and use its name".into()),
                        Some(index),
                    ));
                }
                mount.from = non_empty(value);
                continue;
            }
            if deferred(value) {
                complete = false;
                match option.key {
                    MountKey::Type => kind = None,
                    MountKey::ReadOnly | MountKey::ReadWrite => read_only_given = true,
                    MountKey::Required => takes(&[MountType::Secret, MountType::Ssh])?,
                    MountKey::Size => takes(&[MountType::Tmpfs])?,
                    _ => {}
                }
                continue;
            }
            let boolean = || {
                parse_go_bool(value).ok_or((
                    invalid(
                        &format!("--mount {} value", option.key.name()),
                        value,
                        "true or false",
                    ),
                    None,
                    Some(index),
                ))
            };
            let number = |radix: u32, expected: &str| {
                parse_u32(value, radix).ok_or((
                    invalid(
                        &format!("--mount {} value", option.key.name()),
                        value,
                        expected,
                    ),
                    None,
                    Some(index),
                ))
            };
            match option.key {
                MountKey::Type => {
                    let lower = value.to_lowercase();
                    let Some((_, found)) = MOUNT_TYPES.iter().find(|(name, _)| *name == lower)
                    else {
                        let names = MOUNT_TYPES.map(|(name, _)| name);
                        return Err((
                            invalid("--mount type", value, "bind, cache, tmpfs, secret or ssh"),
                            did_you_mean(value, &names),
                            Some(index),
                        ));
                    };
                    kind = Some(*found);
                    mount.kind = *found;
                }
                MountKey::Source => mount.source = non_empty(value),
                MountKey::Target => mount.target = non_empty(value),
                MountKey::ReadOnly => {
                    mount.read_only = boolean()?;
                    read_only_given = true;
                }
                MountKey::ReadWrite => {
                    mount.read_only = !boolean()?;
                    read_only_given = true;
                }
                MountKey::Required => {
                    takes(&[MountType::Secret, MountType::Ssh])?;
                    mount.required = boolean()?;
                }
                MountKey::Size => {
                    takes(&[MountType::Tmpfs])?;
                    mount.size = Some(parse_size(value).ok_or((
                        invalid(
                            "--mount size value",
                            value,
                            "a size in bytes such as 512, 64k, 64m or 1g",
                        ),
                        None,
                        Some(index),
                    ))?);
                }
                MountKey::Id => mount.id = non_empty(value),
                MountKey::Sharing => {
                    let lower = value.to_lowercase();
                    let Some((_, found)) = SHARING.iter().find(|(name, _)| *name == lower) else {
                        let names = SHARING.map(|(name, _)| name);
                        return Err((
                            invalid("--mount sharing", value, "shared, private or locked"),
                            did_you_mean(value, &names),
                            Some(index),
                        ));
                    };
                    mount.sharing = Some(*found);
                }
                MountKey::Mode => mount.mode = Some(number(8, "an octal mode such as 0400")?),
                MountKey::Uid => mount.uid = Some(number(10, "a numeric user id")?),
                MountKey::Gid => mount.gid = Some(number(10, "a numeric group id")?),
                MountKey::Env => mount.env = Some(value.to_string()),
                MountKey::From => {}
            }
        }

        let Some(kind) = kind else {
            return Ok((mount, false));
        };
        let first = |keys: &[MountKey]| {
            present
                .iter()
                .find(|(key, _)| keys.contains(key))
                .map(|(key, index)| (*key, *index))
        };
        let not_allowed = |(key, index): (MountKey, usize)| {
            Err((
                ParseErrorKind::MountOptionNotAllowed {
                    key: key.name().to_string(),
                    mount_type: kind.name().to_string(),
                },
                None,
                Some(index),
            ))
        };
        if !matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache) {
            if let Some(found) = first(&[MountKey::Mode, MountKey::Uid, MountKey::Gid]) {
                return not_allowed(found);
            }
        }
        if !read_only_given {
            mount.read_only = !matches!(kind, MountType::Cache | MountType::Tmpfs);
        }
        if kind == MountType::Secret {
            if let Some(found) = first(&[MountKey::From, MountKey::Sharing]) {
                return not_allowed(found);
            }
            // A key present with a deferred value may still name the secret.
            let named = |key: MountKey| {
                present.iter().any(|(present_key, index)| {
                    *present_key == key
                        && self.options[*index]
                            .value
                            .as_deref()
                            .is_some_and(|value| deferred(value) || !value.is_empty())
                })
            };
            if !named(MountKey::Source) && !named(MountKey::Target) && !named(MountKey::Id) {
                return Err((ParseErrorKind::SecretMountWithoutName, None, None));
            }
            if named(MountKey::Source) && named(MountKey::Id) {
                let index = first(&[MountKey::Source, MountKey::Id]).map(|(_, index)| index);
                let (first_key, second_key) = match first(&[MountKey::Source, MountKey::Id]) {
                    Some((MountKey::Id, _)) => ("id", "source"),
                    _ => ("source", "id"),
                };
                return Err((
                    ParseErrorKind::MountConflict {
                        first: first_key.into(),
                        second: second_key.into(),
                    },
                    None,
                    index,
                ));
            }
        }
        if kind != MountType::Cache {
            if let Some(found) = first(&[MountKey::Sharing]) {
                return not_allowed(found);
            }
        }
        Ok((mount, complete))
    }
}

/// An invalid-value error (not in grammar/: builds messages).
fn invalid(what: &str, found: &str, expected: &str) -> ParseErrorKind {
    ParseErrorKind::InvalidValue {
        what: what.to_string(),
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

/// `Some(value)` unless it is empty, for options where empty means unset (not in grammar/).
fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// One CSV field of a `--mount` value, with its byte offset in the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub text: String,
    pub offset: usize,
}

/// Splits a `--mount` value into CSV fields as Go's CSV readers do: fields separated by `,`;
/// a field that starts with `"` is quoted, `""` inside it stands for one `"`, and the closing
/// quote must end the field. Returns the offset of the problem on failure.
///
/// ```ebnf
/// csv_fields = csv_field { "," csv_field } ;
/// csv_field  = '"' { ANY - '"' | '""' } '"' | { ANY - "," - '"' } ;
/// ```
pub(super) fn csv_fields(value: &str) -> Result<Vec<Field>, usize> {
    let mut fields = Vec::new();
    let mut start = 0;
    loop {
        let rest = &value[start..];
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut text = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((at, '"')) => {
                        if quoted[at + 1..].starts_with('"') {
                            text.push('"');
                            chars.next();
                        } else {
                            break at + 1;
                        }
                    }
                    Some((_, ch)) => text.push(ch),
                    None => return Err(start),
                }
            };
            fields.push(Field {
                text,
                offset: start,
            });
            let after = start + 1 + end;
            match value[after..].chars().next() {
                None => return Ok(fields),
                Some(',') => start = after + 1,
                Some(_) => return Err(after),
            }
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            let text = &rest[..end];
            if let Some(quote) = text.find('"') {
                return Err(start + quote);
            }
            fields.push(Field {
                text: text.to_string(),
                offset: start,
            });
            if end == rest.len() {
                return Ok(fields);
            }
            start += end + 1;
        }
    }
}

/// Why a `--mount` value was rejected, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// A fix worth trying, e.g. "did you mean 'cache'?".
    pub hint: Option<String>,
    /// Byte offset in the value of the field at fault (0 for the mount as a whole).
    pub offset: usize,
}

/// Reads one `--mount` value into its options, then checks it ([`Mount::interpret`]),
/// skipping the values for which `deferred` is true (those that need expansion) and the
/// rules that depend on them. `position` is where the `--mount` flag is.
///
/// ```ebnf
/// mount        = csv_fields ;                         (* each field a mount_option *)
/// mount_option = key [ "=" value ] ;
/// ```
///
/// # Errors
/// Bad CSV quoting, an unknown key (with a hint), a key without `=value` other than `ro`,
/// `rw` and `required`, and whatever [`Mount::resolve`] rejects that is already decidable.
pub fn parse_mount(
    value: &str,
    position: Position,
    deferred: &dyn Fn(&str) -> bool,
) -> Result<Mount, MountError> {
    let fail = |kind: ParseErrorKind, hint: Option<String>, offset: usize| MountError {
        kind,
        hint,
        offset,
    };
    if value.is_empty() {
        return Err(fail(
            invalid(
                "--mount value",
                value,
                "options such as type=cache,target=/root/.cache",
            ),
            None,
            0,
        ));
    }
    let fields = csv_fields(value).map_err(|offset| {
        fail(
            invalid(
                "--mount value",
                value,
                "comma-separated key=value options; a field with a comma is quoted whole, as \"source=a,b\"",
            ),
            None,
            offset,
        )
    })?;
    let mut options = Vec::with_capacity(fields.len());
    for field in &fields {
        let (key, option_value) = match field.text.split_once('=') {
            Some((key, option_value)) => (key.to_lowercase(), Some(option_value.to_string())),
            None => (field.text.to_lowercase(), None),
        };
        let Some((_, canonical)) = KEYS.iter().find(|(name, _)| *name == key) else {
            if option_value.is_none() {
                return Err(fail(
                    invalid("--mount option", &field.text, "key=value"),
                    None,
                    field.offset,
                ));
            }
            let names = KEYS.map(|(name, _)| name);
            return Err(fail(
                ParseErrorKind::UnknownMountKey { key: key.clone() },
                did_you_mean(&key, &names),
                field.offset,
            ));
        };
        options.push(MountOption {
            key: *canonical,
            value: option_value,
        });
    }
    let mount = Mount { options, position };
    match mount.interpret(deferred) {
        Ok(_) => Ok(mount),
        Err((kind, hint, index)) => {
            let offset = index
                .and_then(|index| fields.get(index))
                .map_or(0, |field| field.offset);
            Err(fail(kind, hint, offset))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Position = Position { line: 1, column: 1 };

    fn literal(_: &str) -> bool {
        false
    }

    fn has_variable(value: &str) -> bool {
        value.contains('$')
    }

    #[test]
    fn csv_fields_follow_go_csv() {
        let texts = |value: &str| {
            csv_fields(value).map(|fields| {
                fields
                    .into_iter()
                    .map(|f| (f.text, f.offset))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            texts("a=1,b=2"),
            Ok(vec![("a=1".into(), 0), ("b=2".into(), 4)])
        );
        assert_eq!(
            texts("\"a=1,2\",b"),
            Ok(vec![("a=1,2".into(), 0), ("b".into(), 8)])
        );
        assert_eq!(
            texts("\"say \"\"hi\"\"\""),
            Ok(vec![("say \"hi\"".into(), 0)])
        );
        assert_eq!(texts("a,"), Ok(vec![("a".into(), 0), (String::new(), 2)]));
        assert_eq!(texts(""), Ok(vec![(String::new(), 0)]));
        assert_eq!(texts("a=\"x\""), Err(2));
        assert_eq!(texts("\"open"), Err(0));
        assert_eq!(texts("\"a\"b"), Err(3));
    }

    #[test]
    fn mounts_resolve_with_buildkit_defaults() {
        let resolve = |value: &str| parse_mount(value, AT, &literal).unwrap().resolve().unwrap();
        let bind = resolve("target=/mnt");
        assert_eq!(
            (bind.kind, bind.read_only, bind.target.as_deref()),
            (MountType::Bind, true, Some("/mnt"))
        );
        let cache = resolve("type=cache,dst=/c,sharing=LOCKED,mode=0700,uid=1000,gid=1000,id=x");
        assert_eq!(
            (
                cache.kind,
                cache.read_only,
                cache.sharing,
                cache.mode,
                cache.uid,
                cache.gid,
                cache.id.as_deref()
            ),
            (
                MountType::Cache,
                false,
                Some(Sharing::Locked),
                Some(0o700),
                Some(1000),
                Some(1000),
                Some("x")
            )
        );
        let tmpfs = resolve("type=tmpfs,destination=/t,size=64m");
        assert_eq!((tmpfs.read_only, tmpfs.size), (false, Some(64 << 20)));
        let secret = resolve("type=secret,id=token,required,env=TOKEN");
        assert_eq!(
            (secret.required, secret.env.as_deref(), secret.read_only),
            (true, Some("TOKEN"), true)
        );
        let ssh = resolve("type=ssh,required=false");
        assert_eq!((ssh.kind, ssh.required), (MountType::Ssh, false));
        let writable = resolve("type=bind,src=/s,target=/t,from=build,rw");
        assert_eq!(
            (
                writable.read_only,
                writable.source.as_deref(),
                writable.from.as_deref()
            ),
            (false, Some("/s"), Some("build"))
        );
        assert!(resolve("type=cache,target=/c,ro").read_only);
        assert!(!resolve("target=/c,readonly=false").read_only);
        assert!(resolve("target=/c,rw=0").read_only);
        assert_eq!(resolve("TYPE=Cache,Target=/c").kind, MountType::Cache);
    }

    #[test]
    fn mount_errors_point_at_the_field() {
        let table: [(&str, &str, Option<&str>, usize); 22] = [
            ("type=cahce,target=/c", "invalid --mount type 'cahce': expected bind, cache, tmpfs, secret or ssh", Some("did you mean 'cache'?"), 0),
            ("target=/c,taget=/d", "unknown --mount option 'taget'", Some("did you mean 'target'?"), 10),
            ("target=/c,bogus", "invalid --mount option 'bogus': expected key=value", None, 10),
            ("target", "invalid --mount option 'target': expected target=<value>", None, 0),
            ("type=cache,target=/c,sharing=everyone", "invalid --mount sharing 'everyone': expected shared, private or locked", None, 21),
            ("type=cache,target=/c,sharing=lockd", "invalid --mount sharing 'lockd': expected shared, private or locked", Some("did you mean 'locked'?"), 21),
            ("type=cache,target=/c,mode=0800", "invalid --mount mode value '0800': expected an octal mode such as 0400", None, 21),
            ("type=cache,target=/c,uid=root", "invalid --mount uid value 'root': expected a numeric user id", None, 21),
            ("type=cache,target=/c,gid=-1", "invalid --mount gid value '-1': expected a numeric group id", None, 21),
            ("type=tmpfs,target=/t,size=lots", "invalid --mount size value 'lots': expected a size in bytes such as 512, 64k, 64m or 1g", None, 21),
            ("target=/t,ro=maybe", "invalid --mount readonly value 'maybe': expected true or false", None, 10),
            ("target=/t,size=1m", "--mount option 'size' is not allowed for a bind mount", None, 10),
            ("required,type=secret,id=x", "--mount option 'required' is not allowed for a bind mount", None, 0),
            ("type=cache,target=/c,required=true", "--mount option 'required' is not allowed for a cache mount", None, 21),
            ("target=/t,mode=0700", "--mount option 'mode' is not allowed for a bind mount", None, 10),
            ("type=tmpfs,target=/t,uid=0", "--mount option 'uid' is not allowed for a tmpfs mount", None, 21),
            ("target=/t,sharing=locked", "--mount option 'sharing' is not allowed for a bind mount", None, 10),
            ("type=secret,id=x,from=build", "--mount option 'from' is not allowed for a secret mount", None, 17),
            ("type=secret,required", "a secret mount needs a name: expected 'id=', 'source=' or 'target='", None, 0),
            ("type=secret,source=a,id=b", "--mount options 'source' and 'id' can't both be set", None, 12),
            ("from=$STAGE,target=/t", "invalid --mount from '$STAGE': expected a stage, image or context name without variables", Some("define an alias stage with FROM and use its name"), 0),
            ("type=cache,target=/c,src=\"x", "invalid --mount value 'type=cache,target=/c,src=\"x': expected comma-separated key=value options; a field with a comma is quoted whole, as \"source=a,b\"", None, 25),
        ];
        for (value, message, hint, offset) in table {
            let MountError {
                kind,
                hint: found_hint,
                offset: found_offset,
            } = parse_mount(value, AT, &literal).unwrap_err();
            assert_eq!(kind.to_string(), message, "{value}");
            assert_eq!(found_hint.as_deref(), hint, "{value}");
            assert_eq!(found_offset, offset, "{value}");
        }
        let error = parse_mount("", AT, &literal).unwrap_err();
        assert_eq!(
            error.kind.to_string(),
            "invalid --mount value '': expected options such as type=cache,target=/root/.cache"
        );
    }

    #[test]
    fn deferred_values_wait_for_expansion() {
        // Checked later, once `$SIZE` and `$TYPE` are known.
        let deferred = parse_mount("type=tmpfs,target=/t,size=$SIZE", AT, &has_variable).unwrap();
        assert!(!deferred.interpret(&has_variable).unwrap().1);
        assert!(parse_mount("type=$TYPE,target=/t,size=1m,mode=7", AT, &has_variable).is_ok());
        assert!(parse_mount("type=secret,id=$ID", AT, &has_variable).is_ok());
        // What does not depend on the deferred value is still checked now.
        assert!(parse_mount("target=/t,size=$SIZE", AT, &has_variable).is_err());
        assert!(parse_mount("type=cache,target=$T,sharing=bogus", AT, &has_variable).is_err());
        assert!(parse_mount("target=$T,mode=$MODE", AT, &has_variable).is_err());
        // `from` is never expanded; a `$` at its very end is an ordinary character.
        assert_eq!(
            parse_mount("from=stage$,target=/t", AT, &has_variable)
                .unwrap()
                .from(),
            Some("stage$")
        );

        let expanded = deferred
            .map_values(|value| Ok::<_, ()>(value.replace("$SIZE", "2k")))
            .unwrap();
        assert_eq!(expanded.resolve().unwrap().size, Some(2048));
        let bad = deferred
            .map_values(|value| Ok::<_, ()>(value.replace("$SIZE", "huge")))
            .unwrap();
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn map_values_leaves_from_alone() {
        let mount = parse_mount("from=base,source=$src,target=/t,ro", AT, &has_variable).unwrap();
        let upper = mount
            .map_values(|value| Ok::<_, ()>(value.to_uppercase()))
            .unwrap();
        assert_eq!(upper.from(), Some("base"));
        assert_eq!(upper.value_of(MountKey::Source), Some("$SRC"));
        assert_eq!(upper.value_of(MountKey::Target), Some("/T"));
        assert_eq!(
            upper.options.last().map(|option| option.value.clone()),
            Some(None)
        );
    }
}
