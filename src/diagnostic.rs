//! Renders an error that points into a Dockerfile the way a person can act on it: the file,
//! line and column, the message, the offending source line with a caret under the problem,
//! the causes and a hint.
//!
//! Pure: it takes the source text it points into and returns a string; `main.rs` prints it.

use crate::syntax::Position;

/// Everything needed to show one located error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic<'a> {
    /// The file name as the user gave it (`Dockerfile`, `<stdin>`).
    pub file: &'a str,
    /// The whole source file; non-UTF-8 bytes are shown as U+FFFD.
    pub source: &'a [u8],
    /// 1-based line and 1-based byte column of the problem.
    pub position: Position,
    /// The error message, lower case, saying what was expected.
    pub message: String,
    /// Underlying causes, outermost first.
    pub causes: Vec<String>,
    /// A fix worth trying.
    pub hint: Option<String>,
}

impl Diagnostic<'_> {
    /// Renders the diagnostic, for example:
    ///
    /// ```text
    /// Dockerfile:3:1: error: unknown instruction 'COPPY'
    ///   3 | COPPY . /app
    ///     | ^^^^^
    /// hint: did you mean 'COPY'?
    /// ```
    ///
    /// The column printed counts characters, not bytes; the caret keeps the line's tabs so it
    /// stays aligned in a terminal, and underlines the word that starts at the column.
    pub fn render(&self) -> String {
        let line_text = source_line(self.source, self.position.line);
        let mut cut = self.position.column.saturating_sub(1).min(line_text.len());
        while !line_text.is_char_boundary(cut) {
            cut -= 1;
        }
        let prefix = &line_text[..cut];
        let column = prefix.chars().count() + 1;
        let mut out = format!(
            "{}:{}:{}: error: {}\n",
            self.file, self.position.line, column, self.message
        );
        if !line_text.is_empty() {
            let number = self.position.line.to_string();
            let gutter = " ".repeat(number.len());
            let word = line_text[cut..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .count()
                .max(1);
            let padding: String = prefix
                .chars()
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("  {number} | {line_text}\n"));
            out.push_str(&format!("  {gutter} | {padding}{}\n", "^".repeat(word)));
        }
        for cause in &self.causes {
            out.push_str(&format!("Caused by: {cause}\n"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("hint: {hint}\n"));
        }
        out
    }
}

/// Physical line `line` (1-based) of `source`, without its line end; empty past the end.
fn source_line(source: &[u8], line: usize) -> String {
    let bytes = source
        .split(|byte| *byte == b'\n')
        .nth(line.saturating_sub(1))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(bytes);
    text.strip_suffix('\r').unwrap_or(&text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, line: usize, column: usize, hint: Option<&str>) -> String {
        Diagnostic {
            file: "Dockerfile",
            source: source.as_bytes(),
            position: Position { line, column },
            message: "something is wrong".into(),
            causes: vec![],
            hint: hint.map(str::to_string),
        }
        .render()
    }

    #[test]
    fn caret_underlines_the_word_at_the_column() {
        let table = [
            (
                "FROM a\nCOPPY . /app\n",
                2,
                1,
                Some("did you mean 'COPY'?"),
                "Dockerfile:2:1: error: something is wrong\n  2 | COPPY . /app\n    | ^^^^^\nhint: did you mean 'COPY'?\n",
            ),
            (
                "RUN --mnt=x true",
                1,
                5,
                None,
                "Dockerfile:1:5: error: something is wrong\n  1 | RUN --mnt=x true\n    |     ^^^^^^^\n",
            ),
            (
                "\tRUN \u{e9}x y\r\n",
                1,
                8,
                None,
                "Dockerfile:1:7: error: something is wrong\n  1 | \tRUN \u{e9}x y\n    | \t     ^\n",
            ),
            (
                "FROM a",
                1,
                7,
                None,
                "Dockerfile:1:7: error: something is wrong\n  1 | FROM a\n    |       ^\n",
            ),
        ];
        for (source, line, column, hint, expected) in table {
            assert_eq!(render(source, line, column, hint), expected, "{source:?}");
        }
    }

    #[test]
    fn positions_outside_the_file_or_mid_character_do_not_panic() {
        assert_eq!(
            render("FROM a\n", 9, 40, None),
            "Dockerfile:9:1: error: something is wrong\n"
        );
        assert_eq!(
            render("\u{e9}\u{e9}", 1, 2, None),
            "Dockerfile:1:1: error: something is wrong\n  1 | \u{e9}\u{e9}\n    | ^^\n"
        );
    }

    #[test]
    fn causes_follow_the_source_line() {
        let mut diagnostic = Diagnostic {
            file: "<stdin>",
            source: b"FROM $X",
            position: Position { line: 1, column: 6 },
            message: "cannot expand FROM".into(),
            causes: vec!["X: variable is not set".into()],
            hint: None,
        };
        assert_eq!(
            diagnostic.render(),
            "<stdin>:1:6: error: cannot expand FROM\n  1 | FROM $X\n    |      ^^\nCaused by: X: variable is not set\n"
        );
        diagnostic.causes.clear();
        assert!(!diagnostic.render().contains("Caused by"));
    }
}
