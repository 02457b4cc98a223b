//! The lossless syntax tree: what a Dockerfile says, before any build semantics.
//!
//! A [`RawInstruction`] keeps the keyword as written, the `--flags`, the arguments split the way
//! BuildKit's parser splits them, the heredoc bodies and where everything came from. Typed
//! instructions ([`super::instruction`]) are built from it; [`RawInstruction::dump`] prints
//! BuildKit's S-expression form so that BuildKit's own parser fixtures check us byte for byte.

use serde::Serialize;

/// The first and last physical line (1-based) an instruction was read from; continuation,
/// comment and heredoc lines included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// First physical line, 1-based.
    pub start_line: usize,
    /// Last physical line used, 1-based.
    pub end_line: usize,
}

/// A place in the source file: 1-based line and 1-based byte column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 1-based physical line.
    pub line: usize,
    /// 1-based byte offset within that line; renderers turn it into a character column.
    pub column: usize,
}

/// One physical line's contribution to a logical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    logical_offset: usize,
    position: Position,
}

/// Maps byte offsets in a logical (continuation-joined) line back to physical positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineMap {
    segments: Vec<Segment>,
}

impl LineMap {
    pub(crate) fn push(&mut self, logical_offset: usize, position: Position) {
        self.segments.push(Segment {
            logical_offset,
            position,
        });
    }

    /// Returns the physical position of byte `offset` of the logical line.
    pub fn locate(&self, offset: usize) -> Position {
        let Some(segment) = self
            .segments
            .iter()
            .rev()
            .find(|segment| segment.logical_offset <= offset)
        else {
            return Position { line: 1, column: 1 };
        };
        Position {
            line: segment.position.line,
            column: segment.position.column + (offset - segment.logical_offset),
        }
    }

    /// The map for a suffix of this logical line that starts at `offset`.
    pub(crate) fn starting_at(&self, offset: usize) -> LineMap {
        let mut shifted = LineMap::default();
        shifted.push(0, self.locate(offset));
        for segment in &self.segments {
            if segment.logical_offset > offset {
                shifted.push(segment.logical_offset - offset, segment.position);
            }
        }
        shifted
    }
}

/// A heredoc body attached to RUN, COPY or ADD (grammar/dockerfile.md, `heredoc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The body as written, every line with its newline, before `<<-` tab stripping.
    pub content: String,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from the body and the delimiter line.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

impl Heredoc {
    /// The body as the build uses it: with `<<-`, leading tabs are removed from every line.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|line| line.trim_start_matches('\t'))
            .collect()
    }
}

/// One instruction exactly as the parser read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInstruction {
    /// The keyword as written (`From`, `copy`, …); compare with [`RawInstruction::keyword_lower`].
    pub keyword: String,
    /// `--flag[=value]` words before the arguments, quotes and escapes removed, `--` dropped.
    pub flags: Vec<String>,
    /// Byte offsets of each flag in [`RawInstruction::original`].
    pub flag_offsets: Vec<usize>,
    /// The arguments, split per instruction (see grammar/dockerfile.md, `argument_form`).
    /// ENV and LABEL give `key, value, separator` triples.
    pub args: Vec<String>,
    /// Byte offset of the argument text in [`RawInstruction::original`].
    pub args_offset: usize,
    /// The instruction inside `ONBUILD`.
    pub nested: Option<Box<RawInstruction>>,
    /// True when the arguments were a JSON array (exec form).
    pub json: bool,
    /// The logical line: continuation lines joined, escape characters at line ends removed.
    pub original: String,
    /// Heredoc bodies, in the order their `<<` markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The physical lines it spans.
    pub span: Span,
    /// Comment lines directly above the instruction, `#` and surrounding blanks removed.
    pub comments: Vec<String>,
    /// Where each byte of `original` came from.
    pub line_map: LineMap,
}

impl RawInstruction {
    /// The keyword in lower case, as instructions are matched.
    pub fn keyword_lower(&self) -> String {
        self.keyword.to_lowercase()
    }

    /// Returns the source position of byte `offset` of [`RawInstruction::original`].
    pub fn locate(&self, offset: usize) -> Position {
        self.line_map.locate(offset)
    }

    /// Returns the position of the first occurrence of `needle` at or after the arguments, or
    /// of the arguments themselves when it is not found.
    pub fn locate_text(&self, needle: &str) -> Position {
        let offset = self
            .original
            .get(self.args_offset..)
            .and_then(|args| args.find(needle))
            .map_or(self.args_offset, |found| self.args_offset + found);
        self.locate(offset)
    }

    /// Prints the instruction in BuildKit's `Node.Dump()` S-expression form, e.g.
    /// `copy ["--from=a"] "x" "/y"` (the caller adds the surrounding parentheses).
    pub fn dump(&self) -> String {
        let mut out = self.keyword_lower();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|flag| go_quote(flag)).collect();
            out.push_str(" [");
            out.push_str(&flags.join(" "));
            out.push(']');
        }
        if let Some(nested) = &self.nested {
            out.push_str(" (");
            out.push_str(&nested.dump());
            out.push(')');
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim().to_string()
    }
}

/// A parser directive from the top of the file (`# escape=`, `# syntax=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// The directive's name in lower case.
    pub name: String,
    /// The value as written, surrounding blanks removed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// Something worth telling the user that does not stop the parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// One-line summary.
    pub message: String,
    /// Longer explanation.
    pub detail: String,
    /// Where it applies.
    pub position: Position,
}

/// A parsed Dockerfile: its instructions in source order, plus what the header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Top-level instructions in source order.
    pub instructions: Vec<RawInstruction>,
    /// Parser directives found at the top.
    pub directives: Vec<Directive>,
    /// The escape character in force (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// Non-fatal findings, such as empty continuation lines.
    pub warnings: Vec<Warning>,
    /// First and last line holding an instruction.
    pub span: Span,
}

impl Dockerfile {
    /// Prints every instruction in BuildKit's parser-test `result` format, one per line, with
    /// a final newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for instruction in &self.instructions {
            out.push('(');
            out.push_str(&instruction.dump());
            out.push_str(")\n");
        }
        out
    }
}

/// Quotes `text` as Go's `strconv.Quote` does, which BuildKit's dumps use.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            ch if (ch as u32) < 0x20 || ch == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", ch as u32));
            }
            ch if is_go_printable(ch) => out.push(ch),
            ch if (ch as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", ch as u32)),
            ch => out.push_str(&format!("\\U{:08x}", ch as u32)),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `unicode.IsPrint` without Unicode tables: everything but controls,
/// separators other than the ASCII space, the common format characters, private use and
/// non-characters. Unassigned code points count as printable here.
fn is_go_printable(ch: char) -> bool {
    let code = ch as u32;
    if ch == ' ' {
        return true;
    }
    if ch.is_control() || ch.is_whitespace() {
        return false;
    }
    let format_or_private = matches!(code,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff);
    let noncharacter = (code & 0xfffe) == 0xfffe || (0xfdd0..=0xfdef).contains(&code);
    !format_or_private && !noncharacter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv_quote() {
        let table = [
            ("plain", "\"plain\""),
            ("a\"b\\c", "\"a\\\"b\\\\c\""),
            ("\u{0}\u{7}\u{1b}\u{7f}", "\"\\x00\\a\\x1b\\x7f\""),
            ("\t\n\r\u{b}\u{c}\u{8}", "\"\\t\\n\\r\\v\\f\\b\""),
            ("♥한", "\"♥한\""),
            ("\u{a0}\u{200b}\u{feff}", "\"\\u00a0\\u200b\\ufeff\""),
            ("\u{f0000}", "\"\\U000f0000\""),
        ];
        for (input, expected) in table {
            assert_eq!(go_quote(input), expected, "quoting {input:?}");
        }
    }

    #[test]
    fn line_map_locates_offsets_across_segments() {
        let mut map = LineMap::default();
        map.push(0, Position { line: 3, column: 1 });
        map.push(10, Position { line: 4, column: 3 });
        assert_eq!(map.locate(4), Position { line: 3, column: 5 });
        assert_eq!(map.locate(12), Position { line: 4, column: 5 });
        let tail = map.starting_at(5);
        assert_eq!(tail.locate(0), Position { line: 3, column: 6 });
        assert_eq!(tail.locate(6), Position { line: 4, column: 4 });
    }

    #[test]
    fn heredoc_body_strips_tabs_only_when_chomped() {
        let mut doc = Heredoc {
            name: "EOF".into(),
            content: "\t\tone\n\ttwo\n".into(),
            expand: true,
            chomp: false,
            fd: 0,
        };
        assert_eq!(doc.body(), "\t\tone\n\ttwo\n");
        doc.chomp = true;
        assert_eq!(doc.body(), "one\ntwo\n");
    }
}
