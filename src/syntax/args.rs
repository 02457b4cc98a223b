//! One logical line to a [`RawInstruction`]: keyword, `--flags`, and the arguments split the
//! way each instruction wants them (grammar/dockerfile.md, sections 5–7).

use nom::bytes::complete::{take_till, take_while, take_while1};
use nom::sequence::tuple;
use nom::IResult;

use super::ast::{LineMap, RawInstruction, Span};
use super::error::{ParseError, ParseErrorKind, Result};

/// How an instruction's argument text is cut into arguments: the alternatives of
/// `argument_form`, which [`argument_form`] picks by keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgumentForm {
    /// RUN, CMD, ENTRYPOINT, SHELL: a JSON array, or else the whole text as one argument.
    JsonOrText,
    /// ADD, COPY, VOLUME: a JSON array, or else whitespace-separated words.
    JsonOrWords,
    /// FROM, EXPOSE: whitespace-separated words.
    Words,
    /// ENV, LABEL: `name value` or `name=value ...`, as key/value/separator triples.
    NameValue,
    /// ARG: shell-quoted words, each kept whole.
    QuotedWords,
    /// USER, WORKDIR, MAINTAINER, STOPSIGNAL: the whole text as one argument.
    Text,
    /// HEALTHCHECK: a type word, then the rest as for CMD.
    Healthcheck,
    /// ONBUILD: another instruction.
    Nested,
    /// Anything else: kept as an empty argument for the typed layer to reject.
    Unknown,
}

/// Picks the argument form for a keyword (the table under section 6); the `match` on the
/// result in [`nested_instruction_line`] reads it.
///
/// ```ebnf
/// argument_form = json_array | text | blank_separated_words | name_value
///               | quoted_words | instruction_line ;     (* chosen by keyword *)
/// text          = ANY+ ;          (* the rest of the logical line, trimmed *)
/// ```
fn argument_form(keyword_lower: &str) -> ArgumentForm {
    match keyword_lower {
        "run" | "cmd" | "entrypoint" | "shell" => ArgumentForm::JsonOrText,
        "add" | "copy" | "volume" => ArgumentForm::JsonOrWords,
        "from" | "expose" => ArgumentForm::Words,
        "env" | "label" => ArgumentForm::NameValue,
        "arg" => ArgumentForm::QuotedWords,
        "user" | "workdir" | "maintainer" | "stopsignal" => ArgumentForm::Text,
        "healthcheck" => ArgumentForm::Healthcheck,
        "onbuild" => ArgumentForm::Nested,
        _ => ArgumentForm::Unknown,
    }
}

/// Returns true if and only if `c` is in the character class `BLANK` (not a production):
/// space, tab, VT, FF, CR, which separate the keyword and blank-separated words.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// How many ONBUILD levels the raw layer reads. A trigger may never be ONBUILD itself (the
/// typed layer rejects the second level); the limit keeps `ONBUILD ONBUILD …` repeated a
/// million times from recursing once per word and copying the rest of the line at each level.
const MAX_ONBUILD_NESTING: usize = 8;

/// Reads one logical line into a raw instruction:
///
/// ```ebnf
/// instruction_line = keyword_and_blanks [ builder_flags ] [ argument_form ] ;
/// ```
///
/// # Errors
/// A JSON array that holds anything but strings, ENV or LABEL without a value or with a word
/// that lacks `=`, and ONBUILD triggers nested deeper than the raw layer reads.
pub(crate) fn instruction_line(
    line: &str,
    line_map: LineMap,
    escape: char,
) -> Result<RawInstruction> {
    nested_instruction_line(line, line_map, escape, 0)
}

/// [`instruction_line`] for an instruction that is the trigger of `depth` ONBUILDs (not in
/// grammar/: the depth only bounds recursion).
fn nested_instruction_line(
    line: &str,
    line_map: LineMap,
    escape: char,
    depth: usize,
) -> Result<RawInstruction> {
    let trimmed_start = line.len() - line.trim_start().len();
    let body = line.trim();
    let (after_keyword, (keyword, _)) = keyword_and_blanks(body);
    let rest_offset = trimmed_start + (body.len() - after_keyword.len());
    let (flags, flag_offsets, args_start) = builder_flags(after_keyword);
    let args_text_untrimmed = &after_keyword[args_start..];
    let args_text = args_text_untrimmed.trim();
    let args_offset = rest_offset
        + args_start
        + (args_text_untrimmed.len() - args_text_untrimmed.trim_start().len());

    let mut instruction = RawInstruction {
        keyword: keyword.to_string(),
        flags,
        flag_offsets: flag_offsets
            .iter()
            .map(|offset| rest_offset + offset)
            .collect(),
        args: Vec::new(),
        args_offset,
        nested: None,
        json: false,
        original: line.to_string(),
        heredocs: Vec::new(),
        span: Span {
            start_line: line_map.locate(0).line,
            end_line: line_map.locate(line.len()).line,
        },
        comments: Vec::new(),
        line_map,
    };
    let fail = |kind: ParseErrorKind, instruction: &RawInstruction| {
        Err(ParseError::new(
            kind,
            instruction.locate(instruction.args_offset),
        ))
    };

    match argument_form(&instruction.keyword_lower()) {
        ArgumentForm::JsonOrText => match json_array(args_text) {
            JsonArray::Strings(items) => {
                instruction.args = items;
                instruction.json = true;
            }
            JsonArray::NotStrings(found) => {
                return fail(ParseErrorKind::NotStringArray(found), &instruction)
            }
            JsonArray::NotJson if args_text.is_empty() => {}
            JsonArray::NotJson => instruction.args = vec![args_text.to_string()],
        },
        ArgumentForm::JsonOrWords => match json_array(args_text) {
            JsonArray::Strings(items) => {
                instruction.args = items;
                instruction.json = true;
            }
            JsonArray::NotStrings(found) => {
                return fail(ParseErrorKind::NotStringArray(found), &instruction)
            }
            JsonArray::NotJson => instruction.args = blank_separated_words(args_text),
        },
        ArgumentForm::Words => instruction.args = blank_separated_words(args_text),
        ArgumentForm::Text => {
            if !args_text.is_empty() {
                instruction.args = vec![args_text.to_string()];
            }
        }
        ArgumentForm::QuotedWords => instruction.args = quoted_words(args_text, escape),
        ArgumentForm::NameValue => {
            let keyword = instruction.keyword.to_uppercase();
            instruction.args = match name_value(args_text, escape, &keyword) {
                Ok(args) => args,
                Err(kind) => {
                    let error_offset = match &kind {
                        ParseErrorKind::MissingEquals { word } => {
                            args_text.find(word.as_str()).map_or(0, |found| found)
                        }
                        _ => 0,
                    };
                    let position = instruction.locate(instruction.args_offset + error_offset);
                    return Err(ParseError::new(kind, position));
                }
            }
        }
        ArgumentForm::Healthcheck => {
            let (command_text, kind) =
                take_till::<_, _, nom::error::Error<&str>>(char::is_whitespace)(args_text)
                    .unwrap_or(("", args_text));
            if !kind.is_empty() {
                instruction.args.push(kind.to_string());
                let command_text = command_text.trim_start();
                match json_array(command_text) {
                    JsonArray::Strings(items) => {
                        instruction.args.extend(items);
                        instruction.json = true;
                    }
                    JsonArray::NotStrings(found) => {
                        return fail(ParseErrorKind::NotStringArray(found), &instruction)
                    }
                    JsonArray::NotJson if command_text.is_empty() => {}
                    JsonArray::NotJson => instruction.args.push(command_text.to_string()),
                }
            }
        }
        ArgumentForm::Nested => {
            if !args_text.is_empty() {
                if depth >= MAX_ONBUILD_NESTING {
                    let keyword_at = instruction.locate(trimmed_start);
                    return Err(ParseError::new(
                        ParseErrorKind::OnbuildTrigger {
                            keyword: instruction.keyword.to_uppercase(),
                        },
                        keyword_at,
                    ));
                }
                let nested_map = instruction.line_map.starting_at(args_offset);
                let nested = nested_instruction_line(args_text, nested_map, escape, depth + 1)?;
                instruction.nested = Some(Box::new(nested));
            }
        }
        ArgumentForm::Unknown => instruction.args = vec![String::new()],
    }
    Ok(instruction)
}

/// Splits off the keyword and the blanks after it; returns the rest and `(keyword, blanks)`.
///
/// ```ebnf
/// keyword_and_blanks = { ANY - BLANK }+ { BLANK } ;
/// ```
fn keyword_and_blanks(body: &str) -> (&str, (&str, &str)) {
    tuple((
        take_till::<_, _, nom::error::Error<&str>>(is_blank),
        take_while(is_blank),
    ))(body)
    .unwrap_or(("", (body, "")))
}

/// Reads the `--flag` words after the keyword:
///
/// ```ebnf
/// builder_flags = { flag_word { SPACE } } [ "--" ( SPACE | EOL ) ] ;
/// ```
///
/// Only words starting with `--` before the first other word are flags; a bare `--` ends them.
/// Returns the flag words (quotes and escapes removed), their byte offsets, and where the
/// arguments start.
fn builder_flags(text: &str) -> (Vec<String>, Vec<usize>, usize) {
    let mut flags = Vec::new();
    let mut offsets = Vec::new();
    let mut position = 0;
    loop {
        let word_start = position + (text[position..].len() - text[position..].trim_start().len());
        let remaining = &text[word_start..];
        if !remaining.starts_with("--") {
            return (flags, offsets, word_start);
        }
        let (word, consumed) = flag_word(remaining);
        position = word_start + consumed;
        if word == "--" {
            return (flags, offsets, position);
        }
        flags.push(word);
        offsets.push(word_start);
        if position >= text.len() {
            return (flags, offsets, text.len());
        }
    }
}

/// Reads one flag word up to unquoted white space; returns it with quotes and escapes removed,
/// and how many bytes it used.
///
/// ```ebnf
/// flag_word = "--" { flag_char | quoted | "\" ANY } ;
/// quoted    = "'" { ANY - "'" | "\" ANY } "'"
///           | '"' { ANY - '"' | "\" ANY } '"' ;
/// flag_char = ANY - SPACE - "'" - '"' - "\" ;
/// ```
fn flag_word(text: &str) -> (String, usize) {
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((index, ch)) = chars.next() {
        match quote {
            None if ch.is_whitespace() => return (word, index),
            None if ch == '\'' || ch == '"' => quote = Some(ch),
            Some(open) if ch == open => quote = None,
            _ if ch == '\\' => match chars.next() {
                Some((_, escaped)) => word.push(escaped),
                None => quote = None,
            },
            _ => word.push(ch),
        }
    }
    (word, text.len())
}

/// Splits text on runs of `BLANK`; quotes are not special.
///
/// ```ebnf
/// blank_separated_words = { BLANK } [ word { BLANK+ word } ] { BLANK } ;
/// word                  = { ANY - BLANK }+ ;
/// ```
fn blank_separated_words(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(is_blank)
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits text into words at white space, where quotes and escape-protected characters do
/// not split. Quotes and escape characters are kept in the words.
///
/// ```ebnf
/// quoted_words = { SPACE } [ quoted_word { SPACE+ quoted_word } ] { SPACE } ;
/// quoted_word  = { ESC ANY | "'" { ANY - "'" } "'" | '"' { ESC ANY | ANY - '"' } '"' | ANY - SPACE }+ ;
/// ```
pub fn quoted_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None if ch.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                }
                if ch == escape {
                    // An escape at the very end is dropped; otherwise it stays with what it protects.
                    let Some(next) = chars.next() else { continue };
                    word.push(ch);
                    word.push(next);
                    continue;
                }
                word.push(ch);
            }
            Some(open) => {
                if ch == open {
                    quote = None;
                }
                if ch == escape && open != '\'' {
                    let Some(next) = chars.next() else {
                        quote = None;
                        continue;
                    };
                    word.push(ch);
                    word.push(next);
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Reads the arguments of ENV and LABEL as key/value/separator triples: `name value` gives
/// `[name, value, ""]`, `a=1 b=2` gives `[a, 1, =, b, 2, =]`.
///
/// ```ebnf
/// name_value  = legacy_pair | pair { SPACE+ pair } ;
/// legacy_pair = name BLANK+ rest_of_line ;
/// pair        = quoted_word ;       (* containing "=" *)
/// ```
///
/// # Errors
/// A legacy pair without a value, and a pair without `=`.
fn name_value(
    text: &str,
    escape: char,
    keyword: &str,
) -> std::result::Result<Vec<String>, ParseErrorKind> {
    let words = quoted_words(text, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let legacy: IResult<&str, (&str, &str)> =
            tuple((take_till(is_blank), take_while1(is_blank)))(text);
        return match legacy {
            Ok((value, (name, _))) => Ok(vec![name.to_string(), value.to_string(), String::new()]),
            Err(_) => Err(ParseErrorKind::MissingValue {
                keyword: keyword.to_string(),
            }),
        };
    }
    let mut triples = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals { word });
        };
        triples.extend([name.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(triples)
}

/// What the JSON reading of an argument text gave.
#[derive(Debug, PartialEq, Eq)]
enum JsonArray {
    /// A JSON array of strings (exec form).
    Strings(Vec<String>),
    /// A JSON array holding something else: an error, not a fallback to shell form.
    NotStrings(String),
    /// Not a JSON array: the caller falls back to shell form.
    NotJson,
}

/// Reads the exec form, with a JSON decoder that, like BuildKit's, stops after the first
/// value and ignores what follows it.
///
/// ```ebnf
/// json_array = "[" { SPACE } [ JSON_STRING { { SPACE } "," { SPACE } JSON_STRING } ] { SPACE } "]" ;
/// ```
fn json_array(text: &str) -> JsonArray {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Vec<serde_json::Value>>();
    let Some(Ok(values)) = stream.next() else {
        return JsonArray::NotJson;
    };
    let mut strings = Vec::with_capacity(values.len());
    for value in values {
        match value {
            serde_json::Value::String(item) => strings.push(item),
            other => return JsonArray::NotStrings(other.to_string()),
        }
    }
    JsonArray::Strings(strings)
}

/// Splits ENV/ARG-style text into words as BuildKit's `parseWords` does, with `\` as the
/// escape character (not in grammar/: the public wrapper of [`quoted_words`], exposed for the
/// conformance tests of that splitter).
pub fn parse_words(text: &str) -> Vec<String> {
    quoted_words(text, '\\')
}

/// Reads a JSON-form argument list; `Ok(None)` when the text is not a JSON array (not in
/// grammar/: the public wrapper of `json_array`).
///
/// # Errors
/// A JSON array that holds anything but strings.
pub fn parse_json_array(text: &str) -> std::result::Result<Option<Vec<String>>, ParseErrorKind> {
    match json_array(text) {
        JsonArray::Strings(items) => Ok(Some(items)),
        JsonArray::NotStrings(found) => Err(ParseErrorKind::NotStringArray(found)),
        JsonArray::NotJson => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_flags_stop_at_the_first_plain_word() {
        let (flags, offsets, start) = builder_flags("--a=1 --b=\"x y\" rest --c");
        assert_eq!(flags, ["--a=1", "--b=x y"]);
        assert_eq!(offsets, [0, 6]);
        assert_eq!(&"--a=1 --b=\"x y\" rest --c"[start..], "rest --c");
        let (flags, _, start) = builder_flags("--a -- --b");
        assert_eq!(flags, ["--a"]);
        assert_eq!(&"--a -- --b"[start..], " --b");
    }

    #[test]
    fn json_array_ignores_trailing_text_and_rejects_non_strings() {
        assert_eq!(
            json_array(r#"["a", "b"] tail"#),
            JsonArray::Strings(vec!["a".into(), "b".into()])
        );
        assert_eq!(json_array("['a']"), JsonArray::NotJson);
        assert_eq!(json_array("[1]"), JsonArray::NotStrings("1".into()));
        assert_eq!(json_array("echo"), JsonArray::NotJson);
    }

    #[test]
    fn onbuild_nesting_is_bounded() {
        let line = |depth: usize| format!("{}RUN x", "ONBUILD ".repeat(depth));
        let shallow = instruction_line(&line(2), LineMap::default(), '\\').unwrap();
        assert_eq!(shallow.dump(), "onbuild (onbuild (run \"x\"))");
        let mut map = LineMap::default();
        map.push(0, super::super::ast::Position { line: 3, column: 1 });
        // Deep enough to overflow the stack if every level recursed.
        let error = instruction_line(&line(200_000), map, '\\').unwrap_err();
        assert_eq!(
            error.kind,
            ParseErrorKind::OnbuildTrigger {
                keyword: "ONBUILD".into()
            }
        );
        let column = 1 + "ONBUILD ".len() * MAX_ONBUILD_NESTING;
        assert_eq!(
            error.position,
            super::super::ast::Position { line: 3, column }
        );
    }

    #[test]
    fn name_value_reads_both_forms() {
        assert_eq!(name_value("a b c", '\\', "ENV").unwrap(), ["a", "b c", ""]);
        assert_eq!(
            name_value("a=1 b=\"x y\"", '\\', "ENV").unwrap(),
            ["a", "1", "=", "b", "\"x y\"", "="]
        );
        assert!(name_value("a=1 b", '\\', "ENV").is_err());
        assert!(name_value("a", '\\', "ENV").is_err());
    }
}
