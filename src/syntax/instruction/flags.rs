//! `--flag[=value]` words of one instruction, checked against the flags it takes
//! (grammar/dockerfile.md, `flags`; BuildKit's `BFlags`).
//!
//! Consumes a [`RawInstruction`]'s flag words; produces [`Flags`], typed and located. It never
//! looks at the arguments and never expands values.

use crate::syntax::ast::{Position, RawInstruction};
use crate::syntax::error::{nearest, ParseError, ParseErrorKind, Result};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagKind {
    /// `--link`, `--link=true`, `--link=false` (any case); at most once.
    Bool,
    /// `--from=value`; at most once.
    Value,
    /// `--exclude=value`, as often as wanted.
    Repeated,
}

/// One flag an instruction takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FlagSpec {
    pub name: &'static str,
    pub kind: FlagKind,
}

const fn flag(name: &'static str, kind: FlagKind) -> FlagSpec {
    FlagSpec { name, kind }
}

pub(super) const FROM_FLAGS: &[FlagSpec] = &[flag("platform", FlagKind::Value)];
pub(super) const RUN_FLAGS: &[FlagSpec] = &[
    flag("mount", FlagKind::Repeated),
    flag("network", FlagKind::Value),
    flag("security", FlagKind::Value),
];
pub(super) const COPY_FLAGS: &[FlagSpec] = &[
    flag("from", FlagKind::Value),
    flag("chown", FlagKind::Value),
    flag("chmod", FlagKind::Value),
    flag("link", FlagKind::Bool),
    flag("parents", FlagKind::Bool),
    flag("exclude", FlagKind::Repeated),
];
pub(super) const ADD_FLAGS: &[FlagSpec] = &[
    flag("chown", FlagKind::Value),
    flag("chmod", FlagKind::Value),
    flag("link", FlagKind::Bool),
    flag("exclude", FlagKind::Repeated),
    flag("checksum", FlagKind::Value),
    flag("keep-git-dir", FlagKind::Bool),
    flag("unpack", FlagKind::Bool),
];
pub(super) const HEALTHCHECK_FLAGS: &[FlagSpec] = &[
    flag("interval", FlagKind::Value),
    flag("timeout", FlagKind::Value),
    flag("start-period", FlagKind::Value),
    flag("start-interval", FlagKind::Value),
    flag("retries", FlagKind::Value),
];

/// Every instruction that takes flags, for "only valid for" hints.
const FLAGGED: [(&str, &[FlagSpec]); 5] = [
    ("FROM", FROM_FLAGS),
    ("RUN", RUN_FLAGS),
    ("COPY", COPY_FLAGS),
    ("ADD", ADD_FLAGS),
    ("HEALTHCHECK", HEALTHCHECK_FLAGS),
];

/// A flag's value once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FlagValue {
    Bool(bool),
    Text(String),
}

/// One flag as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GivenFlag {
    pub name: &'static str,
    pub value: FlagValue,
    /// Where the flag's `--` is.
    pub position: Position,
    /// Byte offset of the flag in the instruction's logical line.
    offset: usize,
    /// True when the flag word stands in the source as read (no quotes or escapes removed),
    /// so offsets inside its value map back to the source.
    verbatim: bool,
}

impl GivenFlag {
    /// The position of byte `offset` of the flag's value, or of the flag when quotes or
    /// escapes make the value's bytes differ from the source.
    pub fn value_position(&self, raw: &RawInstruction, offset: usize) -> Position {
        if self.verbatim {
            raw.locate(self.offset + "--".len() + self.name.len() + "=".len() + offset)
        } else {
            self.position
        }
    }
}

/// The checked flags of one instruction, in source order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Flags {
    pub given: Vec<GivenFlag>,
}

impl Flags {
    /// The flag `name` if given (the last one for repeated flags).
    pub fn get(&self, name: &str) -> Option<&GivenFlag> {
        self.given.iter().rev().find(|flag| flag.name == name)
    }

    /// The value of string flag `name`; `None` when absent or given as `--name=`, which
    /// BuildKit treats as not given.
    pub fn text(&self, name: &str) -> Option<String> {
        match &self.get(name)?.value {
            FlagValue::Text(text) if !text.is_empty() => Some(text.clone()),
            _ => None,
        }
    }

    /// The value of boolean flag `name`, `None` when absent.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)?.value {
            FlagValue::Bool(value) => Some(value),
            FlagValue::Text(_) => None,
        }
    }

    /// Every value of repeated flag `name`, in order, with its flag.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a GivenFlag, &'a str)> + 'a {
        self.given
            .iter()
            .filter(move |flag| flag.name == name)
            .filter_map(|flag| match &flag.value {
                FlagValue::Text(text) => Some((flag, text.as_str())),
                FlagValue::Bool(_) => None,
            })
    }
}

/// Splits a flag word into its name and, when there is an `=`, its value (the sub-rule `flag`
/// of `flags`, see [`parse_flags`]):
///
/// ```ebnf
/// flag  = "--" flag_name [ "=" value ] ;
/// ```
pub(super) fn split_flag(word: &str) -> (&str, Option<&str>) {
    let body = word.strip_prefix("--").unwrap_or(word);
    match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    }
}

/// Checks the flag words of `raw` against `specs`, the flags its instruction takes:
///
/// ```ebnf
/// flags = { flag } ;       (* the flag words of builder_flags, checked *)
/// flag  = "--" flag_name [ "=" value ] ;
/// ```
///
/// # Errors
/// An unknown flag (with a "did you mean" hint), a repeated single flag, a value-taking flag
/// without `=value`, and a boolean flag whose value is not `true` or `false`.
pub(super) fn parse_flags(
    raw: &RawInstruction,
    keyword: &str,
    specs: &[FlagSpec],
) -> Result<Flags> {
    let mut flags = Flags::default();
    for (index, word) in raw.flags.iter().enumerate() {
        let offset = raw.flag_offsets.get(index).copied().unwrap_or(0);
        let position = raw.locate(offset);
        let fail = |kind: ParseErrorKind| {
            let mut error = ParseError::new(kind, position);
            error.end_line = raw.span.end_line.max(position.line);
            error
        };
        let (name, value) = split_flag(word);
        let Some(spec) = specs.iter().find(|spec| spec.name == name) else {
            let error = fail(ParseErrorKind::UnknownFlag {
                keyword: keyword.to_string(),
                flag: name.to_string(),
            });
            return Err(error.with_hint_if(unknown_flag_hint(keyword, name, specs)));
        };
        if spec.kind != FlagKind::Repeated && flags.get(spec.name).is_some() {
            return Err(fail(ParseErrorKind::DuplicateFlag {
                keyword: keyword.to_string(),
                flag: name.to_string(),
            }));
        }
        let missing = || {
            fail(ParseErrorKind::MissingFlagValue {
                keyword: keyword.to_string(),
                flag: name.to_string(),
            })
        };
        let value = match (spec.kind, value) {
            (FlagKind::Bool, None) => FlagValue::Bool(true),
            (FlagKind::Bool, Some("")) => return Err(missing()),
            (FlagKind::Bool, Some(text)) => match text.to_lowercase().as_str() {
                "true" => FlagValue::Bool(true),
                "false" => FlagValue::Bool(false),
                _ => {
                    return Err(fail(ParseErrorKind::InvalidValue {
                        what: format!("--{name} value"),
                        found: text.to_string(),
                        expected: "true or false".to_string(),
                    }))
                }
            },
            (_, None) => return Err(missing()),
            (_, Some(text)) => FlagValue::Text(text.to_string()),
        };
        flags.given.push(GivenFlag {
            name: spec.name,
            value,
            position,
            offset,
            verbatim: raw
                .original
                .get(offset..)
                .is_some_and(|text| text.starts_with(word.as_str())),
        });
    }
    Ok(flags)
}

/// "did you mean '--chown'?" for a near miss, else which instructions take the flag, else a
/// note that the instruction takes no flags at all (not in grammar/: a hint for messages).
fn unknown_flag_hint(keyword: &str, name: &str, specs: &[FlagSpec]) -> Option<String> {
    let names: Vec<&str> = specs.iter().map(|spec| spec.name).collect();
    if let Some(close) = nearest(name, &names) {
        return Some(format!("did you mean '--{close}'?"));
    }
    let owners: Vec<&str> = FLAGGED
        .iter()
        .filter(|(owner, owner_specs)| {
            *owner != keyword && owner_specs.iter().any(|spec| spec.name == name)
        })
        .map(|(owner, _)| *owner)
        .collect();
    if !owners.is_empty() {
        return Some(format!(
            "'--{name}' is only valid for {}",
            owners.join(" and ")
        ));
    }
    if specs.is_empty() {
        return Some(format!("{keyword} takes no flags"));
    }
    let list: Vec<String> = names.iter().map(|name| format!("--{name}")).collect();
    Some(format!("{keyword} takes {}", list.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse_raw;

    fn raw(line: &str) -> RawInstruction {
        let text = format!("FROM scratch\n{line}\n");
        parse_raw(text.as_bytes())
            .expect("raw parse")
            .instructions
            .remove(1)
    }

    #[test]
    fn flags_are_typed_and_located() {
        let copy =
            raw("COPY --from=build --link --exclude=a --exclude=b --chmod= --parents=FALSE x y");
        let flags = parse_flags(&copy, "COPY", COPY_FLAGS).unwrap();
        assert_eq!(flags.text("from").as_deref(), Some("build"));
        assert_eq!(flags.bool("link"), Some(true));
        assert_eq!(flags.bool("parents"), Some(false));
        assert_eq!(
            flags.text("chmod"),
            None,
            "an empty value counts as not given"
        );
        assert_eq!(flags.text("chown"), None);
        let excludes: Vec<&str> = flags.all("exclude").map(|(_, value)| value).collect();
        assert_eq!(excludes, ["a", "b"]);
        assert_eq!(
            flags.get("link").unwrap().position,
            Position {
                line: 2,
                column: 19
            }
        );
        let from = flags.get("from").unwrap();
        assert_eq!(
            from.value_position(&copy, 2),
            Position {
                line: 2,
                column: 15
            }
        );
    }

    #[test]
    fn quoted_flags_locate_values_at_the_flag() {
        let run = raw("RUN --mount=\"type=cache,target=/x\" true");
        let flags = parse_flags(&run, "RUN", RUN_FLAGS).unwrap();
        let (mount, value) = flags.all("mount").next().unwrap();
        assert_eq!(value, "type=cache,target=/x");
        assert_eq!(
            mount.value_position(&run, 5),
            Position { line: 2, column: 5 }
        );
    }

    #[test]
    fn flag_errors_say_what_was_expected() {
        let table = [
            (
                "COPY --chwon=1 a b",
                "COPY",
                COPY_FLAGS,
                "unknown flag '--chwon' for COPY",
                Some("did you mean '--chown'?"),
            ),
            (
                "COPY --checksum=sha256:x a b",
                "COPY",
                COPY_FLAGS,
                "unknown flag '--checksum' for COPY",
                Some("'--checksum' is only valid for ADD"),
            ),
            (
                "ADD --from=x a b",
                "ADD",
                ADD_FLAGS,
                "unknown flag '--from' for ADD",
                Some("'--from' is only valid for COPY"),
            ),
            (
                "WORKDIR --x /a",
                "WORKDIR",
                &[],
                "unknown flag '--x' for WORKDIR",
                Some("WORKDIR takes no flags"),
            ),
            (
                "FROM --bogus x",
                "FROM",
                FROM_FLAGS,
                "unknown flag '--bogus' for FROM",
                Some("FROM takes --platform"),
            ),
            (
                "COPY --from=a --from=b a b",
                "COPY",
                COPY_FLAGS,
                "duplicate flag '--from' for COPY: expected it at most once",
                None,
            ),
            (
                "COPY --link --link=false a b",
                "COPY",
                COPY_FLAGS,
                "duplicate flag '--link' for COPY: expected it at most once",
                None,
            ),
            (
                "COPY --from a b",
                "COPY",
                COPY_FLAGS,
                "flag '--from' for COPY needs a value: expected '--from=<value>'",
                None,
            ),
            (
                "COPY --link= a b",
                "COPY",
                COPY_FLAGS,
                "flag '--link' for COPY needs a value: expected '--link=<value>'",
                None,
            ),
            (
                "COPY --link=yes a b",
                "COPY",
                COPY_FLAGS,
                "invalid --link value 'yes': expected true or false",
                None,
            ),
            (
                "RUN --mount type=bind true",
                "RUN",
                RUN_FLAGS,
                "flag '--mount' for RUN needs a value: expected '--mount=<value>'",
                None,
            ),
        ];
        for (line, keyword, specs, message, hint) in table {
            let error = parse_flags(&raw(line), keyword, specs).unwrap_err();
            assert_eq!(error.to_string(), message, "{line}");
            assert_eq!(error.hint.as_deref(), hint, "{line}");
            assert_eq!(error.position.line, 2, "{line}");
        }
    }
}
