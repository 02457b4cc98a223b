//! Physical lines to logical lines: the header directives, comments, the escape character,
//! line continuations and heredoc bodies (grammar/dockerfile.md, sections 1–4).
//!
//! Consumes the source text; produces [`RawInstruction`]s with spans, handing each logical line
//! to [`super::args::instruction_line`]. It never expands variables.

use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, satisfy};
use nom::combinator::{opt, recognize, rest};
use nom::sequence::{pair, preceded, tuple};
use nom::IResult;

use super::args::instruction_line;
use super::ast::{
    Directive, Dockerfile, Heredoc, LineMap, Position, RawInstruction, Span, Warning,
};
use super::error::{ParseError, ParseErrorKind, Result};
use crate::words::{Lexer, NoEnv};

/// The directives BuildKit acts on; any other `# key=value` line ends the header.
const KNOWN_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// Reads the whole file into raw instructions:
///
/// ```ebnf
/// dockerfile    = [ BOM ] header { comment_line | blank_line | logical_line } ;
/// physical_line = { ANY - LF } EOL ;
/// ```
///
/// The sub-rules of sections 3 and 4 that only this loop reads:
///
/// ```ebnf
/// blank_line        = { SPACE } EOL ;
/// logical_line      = first_line { continuation_line } { heredoc_body } ;
/// first_line        = { SPACE } line_continuation ;
/// continuation_line = comment_line | blank_line | line_continuation ;
/// heredoc_body      = { physical_line } ;    (* up to a line equal to the name *)
/// ```
///
/// # Errors
/// No instruction at all, a bad or repeated directive, an unterminated heredoc, and whatever
/// [`instruction_line`] and [`heredocs_from_line`] reject.
pub(crate) fn dockerfile(source: &str) -> Result<Dockerfile> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut lines = source.split_inclusive('\n');
    let mut header = Header::default();
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut line_no = 0usize;

    while let Some(physical) = lines.next() {
        let content = trim_newline(physical);
        if comment_line(content) {
            let comment = content.trim_start()[1..].trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        let stripped = content.trim_start();
        let indent = content.len() - stripped.len();
        line_no += 1;
        header.observe(stripped, line_no)?;
        let start_line = line_no;
        let text = if comment_line(stripped) { "" } else { stripped };
        let (text, mut ended) = line_continuation(text, header.escape);
        if ended && text.is_empty() {
            continue;
        }

        let mut logical = text.to_string();
        let mut line_map = LineMap::default();
        line_map.push(
            0,
            Position {
                line: line_no,
                column: indent + 1,
            },
        );
        let mut empty_continuation = false;
        while !ended {
            let Some(physical) = lines.next() else { break };
            let content = trim_newline(physical);
            line_no += 1;
            header.observe(content, line_no)?;
            if comment_line(content) {
                continue;
            }
            if content.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (text, now_ended) = line_continuation(content, header.escape);
            ended = now_ended;
            line_map.push(
                logical.len(),
                Position {
                    line: line_no,
                    column: 1,
                },
            );
            logical.push_str(text);
        }

        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {logical}"),
                detail: "Empty continuation lines will become errors in a future release".into(),
                position: Position {
                    line: line_no,
                    column: 1,
                },
            });
        }

        let mut instruction =
            instruction_line(&logical, line_map, header.escape).map_err(|mut error| {
                error.end_line = line_no.max(error.position.line);
                error
            })?;

        if may_take_heredocs(&instruction) && logical.contains("<<") {
            let start = instruction.locate(0);
            let docs = heredocs_from_line(&logical).map_err(|kind| ParseError::new(kind, start))?;
            for (index, mut doc) in docs.into_iter().enumerate() {
                let mut terminated = false;
                for physical in lines.by_ref() {
                    line_no += 1;
                    let mut candidate = trim_newline(physical);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(physical);
                }
                if !terminated {
                    // The index-th `<<` is this heredoc's marker unless a quoted `<<` came
                    // first; then the caret lands on that one, still on the right line.
                    let marker = logical
                        .match_indices("<<")
                        .nth(index)
                        .map_or(start, |(offset, _)| instruction.locate(offset));
                    let mut error =
                        ParseError::new(ParseErrorKind::UnterminatedHeredoc(doc.name), marker);
                    error.end_line = line_no;
                    return Err(error);
                }
                instruction.heredocs.push(doc);
            }
        }

        instruction.span = Span {
            start_line,
            end_line: line_no,
        };
        instruction.comments = std::mem::take(&mut comments);
        instructions.push(instruction);
    }

    let (Some(first), Some(last)) = (instructions.first(), instructions.last()) else {
        return Err(ParseError::new(
            ParseErrorKind::NoInstructions,
            Position {
                line: line_no.max(1),
                column: 1,
            },
        ));
    };
    let span = Span {
        start_line: first.span.start_line,
        end_line: last.span.end_line,
    };
    Ok(Dockerfile {
        instructions,
        directives: header.directives,
        escape: header.escape,
        warnings,
        span,
    })
}

/// Reads `header` one line at a time: the parser directives seen so far and whether the
/// header is still open.
///
/// ```ebnf
/// header  = [ SHEBANG ] { directive_line } ;
/// SHEBANG = "#!" { ANY - LF } EOL ;                (* line 1 only *)
/// ```
#[derive(Debug)]
struct Header {
    escape: char,
    directives: Vec<Directive>,
    closed: bool,
    /// What starts a directive line: `#` in Dockerfiles; `//` where a frontend's syntax
    /// directive is searched in files of other formats.
    comment: &'static str,
}

impl Default for Header {
    fn default() -> Header {
        Header::with_comment("#")
    }
}

impl Header {
    fn with_comment(comment: &'static str) -> Header {
        Header {
            escape: '\\',
            directives: Vec::new(),
            closed: false,
            comment,
        }
    }

    /// Feeds one line to the header: records a directive, or closes the header at the first
    /// line that is not one (a shebang on line 1 is passed over).
    fn observe(&mut self, line: &str, line_no: usize) -> Result<()> {
        if self.closed || (line_no == 1 && line.starts_with("#!")) {
            return Ok(());
        }
        let Ok((_, (name, value))) = directive_line(line, self.comment) else {
            self.closed = true;
            return Ok(());
        };
        let name = name.to_lowercase();
        if !KNOWN_DIRECTIVES.contains(&name.as_str()) {
            self.closed = true;
            return Ok(());
        }
        let position = Position {
            line: line_no,
            column: 1,
        };
        if self.directives.iter().any(|seen| seen.name == name) {
            return Err(ParseError::new(
                ParseErrorKind::RepeatedDirective(name),
                position,
            ));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError::new(
                        ParseErrorKind::InvalidEscape(other.to_string()),
                        position,
                    ))
                }
            };
        }
        self.directives.push(Directive {
            name,
            value: value.to_string(),
            line: line_no,
        });
        Ok(())
    }

    /// Reads the header of `text` to its end: the leading run of directive lines.
    fn read(mut self, text: &str) -> Result<Header> {
        for (index, line) in text.lines().enumerate() {
            self.observe(line.trim_start(), index + 1)?;
            if self.closed {
                break;
            }
        }
        Ok(self)
    }
}

/// Returns the parser directives at the top of a Dockerfile, read by [`Header`]:
///
/// ```ebnf
/// header = [ SHEBANG ] { directive_line } ;
/// ```
///
/// # Errors
/// A repeated directive or an invalid escape character.
pub fn header_directives(text: &str) -> Result<Vec<Directive>> {
    Ok(Header::default().read(text)?.directives)
}

/// A directive found by [`detect_syntax`] or [`find_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDirective {
    /// The whole value, e.g. `docker/dockerfile:1 // options`.
    pub value: String,
    /// 1-based line it was found on.
    pub line: usize,
}

impl FoundDirective {
    /// The value up to its first space: for `syntax`, the frontend image reference.
    pub fn reference(&self) -> &str {
        self.value.split(' ').next().unwrap_or_default()
    }
}

/// Finds the `# syntax=` directive the way a builder picks its frontend: a `#` directive, else
/// a `//` one, else the `syntax` key of a file that is one JSON object.
pub fn detect_syntax(text: &str) -> Option<FoundDirective> {
    find_directive_as("syntax", text, &["#", "//"]).or_else(|| {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        Some(FoundDirective {
            value: object.get("syntax")?.as_str()?.to_string(),
            line: 1,
        })
    })
}

/// Finds the `# key=value` directive `key` at the top of `text`.
pub fn find_directive(key: &str, text: &str) -> Option<FoundDirective> {
    find_directive_as(key, text, &["#"])
}

fn find_directive_as(key: &str, text: &str, comments: &[&'static str]) -> Option<FoundDirective> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    comments.iter().find_map(|comment| {
        let header = Header::with_comment(comment).read(text).ok()?;
        let directive = header.directives.into_iter().find(|d| d.name == key)?;
        Some(FoundDirective {
            value: directive.value,
            line: directive.line,
        })
    })
}

/// Reads one directive line into its name and value:
///
/// ```ebnf
/// directive_line = "#" { SPACE } name { SPACE } "=" { SPACE } value { SPACE } EOL ;
/// name           = LETTER { LETTER | DIGIT } ;            (* ASCII *)
/// value          = ANY+ ;                                 (* trailing SPACE excluded *)
/// ```
///
/// `comment` stands for the `#` (`//` when a frontend's syntax directive is searched in a file
/// of another format).
fn directive_line<'a>(line: &'a str, comment: &str) -> IResult<&'a str, (&'a str, &'a str)> {
    let blanks =
        |input| take_while(|c: char| matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0c'))(input);
    let (input, (_, _, name, _, _, _)) = tuple((
        tag(comment),
        blanks,
        recognize(pair(
            satisfy(|c: char| c.is_ascii_alphabetic()),
            take_while(|c: char| c.is_ascii_alphanumeric()),
        )),
        blanks,
        tag("="),
        blanks,
    ))(line)?;
    let (input, value) = rest(input)?;
    let value = value.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']);
    if value.is_empty() {
        return Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::NonEmpty,
        )));
    }
    Ok((input, (name, value)))
}

/// Reads one line of an instruction:
///
/// ```ebnf
/// line_continuation = text ( ESC { " " | TAB } EOL   (* continues *)
///                          | EOL ) ;                  (* ends the instruction *)
/// ```
///
/// The line continues only when the character before `ESC` is not itself `ESC` (so `foo\\`
/// ends the instruction). Returns the text without the escape and trailing blanks, and whether
/// the instruction ends on this line.
fn line_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(before) if !before.ends_with(escape) => (before, false),
        _ => (line, true),
    }
}

/// Returns true if and only if `line` is a comment:
///
/// ```ebnf
/// comment_line = { SPACE } "#" { ANY - LF } EOL ;
/// ```
fn comment_line(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes the line end (character class `EOL = { CR } ( LF | EOF )`, not a production): `\n`
/// or `\r\n`; stray trailing carriage returns go too, as in BuildKit.
fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// RUN, COPY and ADD in shell form take heredocs, also under ONBUILD (not in grammar/ as a
/// production: the "Where" paragraph of section 4).
fn may_take_heredocs(instruction: &RawInstruction) -> bool {
    let target = instruction.nested.as_deref().unwrap_or(instruction);
    matches!(target.keyword_lower().as_str(), "run" | "copy" | "add") && !target.json
}

/// Finds the heredoc markers in a logical line:
///
/// ```ebnf
/// heredocs_from_line = { shell_word } ;       (* the heredoc markers among the words *)
/// ```
///
/// The line is cut into shell words with quotes and escapes kept, so a quoted `'<<EOF'` is
/// not a marker; a bare `<<` or `<<-` takes the following word as its delimiter.
pub fn heredocs_from_line(line: &str) -> std::result::Result<Vec<Heredoc>, ParseErrorKind> {
    let lexer = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = lexer.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    let mut index = 0;
    while index < words.len() {
        let mut word = words[index].clone();
        let bare_marker = heredoc_operator(&word).is_ok_and(|(rest, _)| rest.is_empty());
        if bare_marker && index + 1 < words.len() {
            index += 1;
            word.push(' ');
            word.push_str(&words[index]);
        }
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
        index += 1;
    }
    Ok(docs)
}

/// Reads the operator of a heredoc marker; returns the file descriptor and whether it chomps.
///
/// ```ebnf
/// heredoc_operator = { DIGIT } "<<" [ "-" ] ;
/// ```
fn heredoc_operator(word: &str) -> IResult<&str, (u32, bool)> {
    let (input, (fd, _, dash)) = tuple((
        take_while(|c: char| c.is_ascii_digit()),
        tag("<<"),
        opt(char('-')),
    ))(word)?;
    Ok((input, (fd.parse().unwrap_or(0), dash.is_some())))
}

/// Reads one heredoc marker:
///
/// ```ebnf
/// heredoc   = heredoc_operator { SPACE } delimiter ;
/// delimiter = { ANY - "<" }+ ;       (* exactly one shell word *)
/// ```
///
/// Returns `None` when `word` is not a heredoc marker at all.
///
/// # Errors
/// A delimiter with an unbalanced quote.
pub fn parse_heredoc(word: &str) -> std::result::Result<Option<Heredoc>, ParseErrorKind> {
    let parsed: IResult<&str, ((u32, bool), &str)> = pair(
        heredoc_operator,
        preceded(
            take_while(char::is_whitespace),
            take_while1(|c: char| c != '<'),
        ),
    )(word);
    let Ok(("", ((fd, chomp), delimiter))) = parsed else {
        return Ok(None);
    };
    let mut lexer = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let unquoted = lexer
        .process_words(delimiter, &NoEnv)
        .map_err(|error| ParseErrorKind::HeredocDelimiter(error.to_string()))?;
    let [name] = unquoted.as_slice() else {
        return Ok(None);
    };
    lexer.raw_quotes = true;
    let raw = lexer
        .process_words(delimiter, &NoEnv)
        .map_err(|error| ParseErrorKind::HeredocDelimiter(error.to_string()))?;
    let quote_count = |text: &str| text.chars().filter(|c| matches!(c, '\'' | '"')).count();
    // Quotes that survive only in the raw reading were quoting: such a body is not expanded.
    let expand = raw.len() == 1 && quote_count(name) == quote_count(&raw[0]);
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_continuation_needs_an_unescaped_escape_at_the_end() {
        let table = [
            ("echo hi \\", '\\', ("echo hi ", false)),
            ("echo hi \\  \t", '\\', ("echo hi ", false)),
            ("\\", '\\', ("", false)),
            ("echo hi\\\\", '\\', ("echo hi\\\\", true)),
            ("echo `", '`', ("echo ", false)),
            ("echo \\", '`', ("echo \\", true)),
        ];
        for (line, escape, expected) in table {
            assert_eq!(line_continuation(line, escape), expected, "{line:?}");
        }
    }

    #[test]
    fn directive_line_reads_name_and_value() {
        assert_eq!(
            directive_line("# escape = `  ", "#").unwrap().1,
            ("escape", "`")
        );
        assert_eq!(
            directive_line("#syntax=a b", "#").unwrap().1,
            ("syntax", "a b")
        );
        assert!(directive_line("# just a comment", "#").is_err());
        assert!(directive_line("# key=", "#").is_err());
        assert!(directive_line("#1key=v", "#").is_err());
    }

    #[test]
    fn heredoc_operator_reads_fd_and_chomp() {
        assert_eq!(heredoc_operator("3<<-EOF").unwrap(), ("EOF", (3, true)));
        assert_eq!(heredoc_operator("<<EOF").unwrap(), ("EOF", (0, false)));
        assert!(heredoc_operator("<EOF").is_err());
    }
}
