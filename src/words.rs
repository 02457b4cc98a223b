//! Shell-word lexer: variable expansion, quote removal, escapes and word
//! splitting for Dockerfile instruction arguments, reproducing the behaviour
//! of BuildKit's `frontend/dockerfile/shell` lexer.
//!
//! It consumes one word of instruction text (a `&str`, e.g. the `A=$B` of
//! `ENV A=$B`) together with an [`Env`] that supplies variable values, and
//! produces either the expanded string ([`Lexer::process_word`]), the expanded
//! string split into words ([`Lexer::process_words`]), or the expanded string
//! plus the set of variable names it looked up ([`Lexer::process_word_with_matches`]).
//! Nothing here does I/O.
//!
//! The grammar and every expansion rule are written up in `grammar/words.md`;
//! each rule there carries the name of the function below that implements it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where variable values come from.
pub trait Env {
    /// The value of `name`, or `None` when it is unset. `Some("")` means set
    /// but empty, which several `${}` forms treat differently from unset.
    fn get(&self, name: &str) -> Option<&str>;
}

impl<T: Env + ?Sized> Env for &T {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// The last entry with the requested name wins, as with repeated `ENV` lines.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// An environment in which nothing is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// How deeply `$` expansions may nest (`${a:-${b:-...}}`) before processing
/// fails. BuildKit has no limit because Go stacks grow; here each level costs
/// about 4.5 KiB of native stack in a debug build (0.8 KiB optimised), and
/// 128 levels stay well inside the 2 MiB of a spawned thread while being far
/// beyond any real Dockerfile.
pub const MAX_NESTING: usize = 128;

/// How many bytes the `${name/pattern/replacement}` forms of one word may insert in total
/// before processing fails. Each level of `${a//x/${a//x/…}}` multiplies the length by the
/// number of matches, so a few hundred bytes of input can ask for gigabytes; BuildKit has no
/// limit and runs out of memory. 16 MiB is far beyond any real substitution.
pub const MAX_REPLACED_BYTES: usize = 16 << 20;

/// Lexer settings; the flags mirror the options of BuildKit's `Lex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character: `\` by default, `` ` `` after `# escape=``.
    pub escape: char,
    /// Keep the quote characters of `'...'` and `"..."` in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output (the escaped character is still
    /// taken literally).
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding
    /// them to the empty string.
    pub skip_unset_env: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub result: String,
    /// Names that were looked up and found (an empty value counts as found).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WordError {
    /// The full message, `failed to process "<word>": <reason>` like BuildKit's.
    pub message: String,
    /// Byte offset into the input word where the problem was found.
    pub offset: usize,
}

impl Lexer {
    /// A lexer with the given escape character and every flag off.
    pub const fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word` as a single word: whitespace is kept, nothing is split.
    pub fn process_word(&self, word: &str, env: &(impl Env + ?Sized)) -> Result<String, WordError> {
        Ok(self.process(word, env, false, false)?.result)
    }

    /// Expands `word` and splits the result into words on whitespace that
    /// is not quoted; empty words are dropped.
    pub fn process_words(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Vec<String>, WordError> {
        Ok(self.process(word, env, true, false)?.words)
    }

    /// Like [`Lexer::process_word`], also reporting which variable names were
    /// looked up, e.g. to warn about undefined build arguments.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Expansion, WordError> {
        let out = self.process(word, env, false, true)?;
        Ok(Expansion {
            result: out.result,
            matched: out.matched,
            unmatched: out.unmatched,
        })
    }

    fn process<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
        split: bool,
        capture: bool,
    ) -> Result<Output, WordError> {
        let mut shell = Shell {
            lexer: *self,
            env,
            src: word,
            pos: 0,
            raw_escapes: self.raw_escapes,
            depth: 0,
            replace_budget: MAX_REPLACED_BYTES,
            capture,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        shell.skip_byte_order_mark();
        let mut words = if split {
            Words::new()
        } else {
            Words::disabled()
        };
        match shell.process_stop_on(None, self.raw_escapes, &mut words) {
            Ok(result) => Ok(Output {
                result,
                words: words.finish(),
                matched: shell.matched,
                unmatched: shell.unmatched,
            }),
            Err(fail) => Err(WordError {
                message: format!("failed to process {}: {}", go_quote(word), fail.message),
                offset: fail.offset,
            }),
        }
    }
}

struct Output {
    result: String,
    words: Vec<String>,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// An error before it is wrapped with the input word.
struct Fail {
    message: String,
    offset: usize,
}

type Step<T> = Result<T, Fail>;

/// The word-splitting builder fed alongside the plain result string.
struct Words {
    enabled: bool,
    words: Vec<String>,
    word: String,
    in_word: bool,
}

impl Words {
    fn new() -> Words {
        Words {
            enabled: true,
            words: Vec::new(),
            word: String::new(),
            in_word: false,
        }
    }

    /// Nested parses (`${a:-word}`) only need the string, never the split.
    fn disabled() -> Words {
        Words {
            enabled: false,
            ..Words::new()
        }
    }

    /// Unquoted text: whitespace ends the current word.
    fn add_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    /// Escaped or quoted text: kept even if it is whitespace.
    fn add_raw_char(&mut self, c: char) {
        if self.enabled {
            self.word.push(c);
            self.in_word = true;
        }
    }

    fn add_string(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        if self.enabled {
            self.word.push_str(s);
            self.in_word = true;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

/// Scanner plus the state BuildKit keeps per processed word.
struct Shell<'a, E: ?Sized> {
    lexer: Lexer,
    env: &'a E,
    src: &'a str,
    /// Byte offset of the next unread char.
    pos: usize,
    /// Differs from `lexer.raw_escapes` inside `${..#..}`, `${..%..}` and
    /// `${../..}`, whose pattern text must keep its escapes for the pattern
    /// compiler.
    raw_escapes: bool,
    depth: usize,
    /// What the replacement forms may still insert, from [`MAX_REPLACED_BYTES`].
    replace_budget: usize,
    capture: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a, E: Env + ?Sized> Shell<'a, E> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Go's text/scanner drops a byte order mark at the very start of its
    /// input, so BuildKit never sees one there.
    fn skip_byte_order_mark(&mut self) {
        if self.src[self.pos..].starts_with('\u{FEFF}') {
            self.pos += '\u{FEFF}'.len_utf8();
        }
    }

    fn fail_at(&self, offset: usize, message: impl Into<String>) -> Fail {
        Fail {
            message: message.into(),
            offset,
        }
    }

    fn fail_at_eof(&self, message: impl Into<String>) -> Fail {
        self.fail_at(self.src.len(), message)
    }

    /// Rule `process_stop_on`: text up to `stop` (consumed) or, when `stop`
    /// is `None`, to the end of input.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        words: &mut Words,
    ) -> Step<String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on_loop(stop, words);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_loop(&mut self, stop: Option<char>, words: &mut Words) -> Step<String> {
        let quotes = !self.lexer.skip_process_quotes;
        let mut result = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok(result);
            }
            if c == '$' {
                let value = self.process_dollar()?;
                result.push_str(&value);
                // Unquoted expansions are subject to splitting.
                words.add_string(&value);
            } else if quotes && c == '\'' {
                let value = self.process_single_quote()?;
                result.push_str(&value);
                words.add_raw_string(&value);
            } else if quotes && c == '"' {
                let value = self.process_double_quote()?;
                result.push_str(&value);
                words.add_raw_string(&value);
            } else {
                self.next();
                if c == self.lexer.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // A trailing lone escape character is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                } else {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        match stop {
            Some(stop) => Err(self.fail_at_eof(format!(
                "unexpected end of statement while looking for matching {stop}"
            ))),
            None => Ok(result),
        }
    }

    /// Rule `process_single_quote`: everything up to the next `'` is literal.
    fn process_single_quote(&mut self) -> Step<String> {
        let raw = self.lexer.raw_quotes;
        let mut out = String::new();
        self.next();
        if raw {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(self.fail_at_eof(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
                Some('\'') => {
                    if raw {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// Rule `process_double_quote`: `$` expands; the escape character only
    /// escapes `"`, `$` and itself and is kept before anything else.
    fn process_double_quote(&mut self) -> Step<String> {
        let raw = self.lexer.raw_quotes;
        let escape = self.lexer.escape;
        let mut out = String::new();
        self.next();
        if raw {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(self.fail_at_eof(
                        "unexpected end of statement while looking for matching double-quote",
                    ))
                }
                Some('"') => {
                    self.next();
                    if raw {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    out.push_str(&value);
                }
                Some(mut c) => {
                    self.next();
                    if c == escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // The loop then reports the missing closing quote.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == escape => {
                                self.next();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// Rule `process_dollar`: `$name`, `${name}` and the `${name<op>word}` forms.
    fn process_dollar(&mut self) -> Step<String> {
        if self.depth >= MAX_NESTING {
            return Err(self.fail_at(
                self.pos,
                format!("expansions nested more than {MAX_NESTING} levels deep"),
            ));
        }
        self.depth += 1;
        let out = self.dollar_expansion();
        self.depth -= 1;
        out
    }

    fn dollar_expansion(&mut self) -> Step<String> {
        let start = self.pos;
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(value) => value.to_owned(),
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(self.fail_at_eof("syntax error: missing '}'")),
            Some('{' | '}' | ':') => {
                return Err(self.fail_at(self.pos, "syntax error: bad substitution"))
            }
            Some(_) => {}
        }
        let name = self.process_name();
        match self.next() {
            // BuildKit reports "unsupported modifier (\u{FFFD})" here (Go's
            // EOF rune printed as a char); the real problem is the brace.
            None => Err(self.fail_at_eof("syntax error: missing '}'")),
            Some('}') => Ok(match self.get_env(&name) {
                Some(value) => value.to_owned(),
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some('/') => self.process_replace(start, &name),
            Some(op @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                self.process_modifier(start, &name, op)
            }
            Some(other) => Err(self.fail_at(
                start,
                format!("unsupported modifier ({other}) in substitution"),
            )),
        }
    }

    /// Rule `process_modifier`: `${name[:]<op>word}` for op in `- + ? # %`.
    fn process_modifier(&mut self, start: usize, name: &str, first: char) -> Step<String> {
        let null_is_unset = first == ':';
        let mut modifier = String::from(first);
        let op = if null_is_unset {
            let op = self.next();
            modifier.push(op.unwrap_or('\u{FFFD}'));
            op
        } else {
            Some(first)
        };
        let pattern_op = matches!(op, Some('#' | '%'));
        if null_is_unset && pattern_op {
            return Err(self.fail_at(
                start,
                format!("unsupported modifier ({modifier}) in substitution"),
            ));
        }
        // An unknown op after `:` (`${a:x}`) still has its word parsed first,
        // so a missing `}` wins over the unsupported modifier, as in BuildKit.
        let word = self.process_nested('}', pattern_op, "syntax error: missing '}'")?;
        let value = self.get_env(name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset_or_null = match value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            Some('-') => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default().to_owned()
            }),
            Some('+') => Ok(if unset_or_null { String::new() } else { word }),
            Some('?') => {
                let default = match value {
                    None => "is not allowed to be unset",
                    Some("") if null_is_unset => "is not allowed to be empty",
                    Some(v) => return Ok(v.to_owned()),
                };
                let message = if word.is_empty() { default } else { &word };
                Err(self.fail_at(start, format!("{name}: {message}")))
            }
            Some(op @ ('#' | '%')) => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let trimmed = if op == '%' {
                    trim_suffix(pattern, value, greedy)
                } else {
                    trim_prefix(pattern, value, greedy)
                };
                trimmed.map_err(|message| self.fail_at(start, message))
            }
            _ => Err(self.fail_at(
                start,
                format!("unsupported modifier ({modifier}) in substitution"),
            )),
        }
    }

    /// Rule `process_replace`: `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    /// Fails with `substitution too large` at the `$` of the form whose replacements would
    /// take the word's total over [`MAX_REPLACED_BYTES`].
    fn process_replace(&mut self, start: usize, name: &str) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = self.process_nested('/', true, "syntax error: missing '/' in ${}")?;
        let replacement = self.process_nested('}', true, "syntax error: missing '}'")?;
        let value = self.get_env(name);
        if value.is_none() && self.lexer.skip_unset_env {
            // BuildKit writes a single `/` here even for the `//` form.
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let program = compile_pattern(&pattern).map_err(|e| {
            self.fail_at(
                start,
                format!("invalid pattern ({pattern}) in substitution: {e}"),
            )
        })?;
        let text: Vec<char> = value.chars().collect();
        let budget = &mut self.replace_budget;
        let replaced = if all {
            replace_all(&program, &text, &replacement, budget)
        } else {
            replace_first(&program, &text, &replacement, budget)
        };
        replaced.ok_or_else(|| {
            self.fail_at(
                start,
                format!("substitution too large: replacements may insert at most {MAX_REPLACED_BYTES} bytes per word"),
            )
        })
    }

    /// Rule `process_nested`: a nested word of a `${}` form; running out of
    /// input inside it is reported as the `${}` form's own missing delimiter.
    fn process_nested(&mut self, stop: char, raw_escapes: bool, eof_message: &str) -> Step<String> {
        let mut no_words = Words::disabled();
        match self.process_stop_on(Some(stop), raw_escapes, &mut no_words) {
            Err(_) if self.at_eof() => Err(self.fail_at_eof(eof_message)),
            other => other,
        }
    }

    /// Rule `process_name`: a run of digits (positional parameter), one
    /// special-parameter char, or a letter/digit/underscore run.
    fn process_name(&mut self) -> String {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_go_digit(c) => {
                while self.peek().is_some_and(is_go_digit) {
                    self.next();
                }
            }
            Some(c) if is_special_param(c) => {
                self.next();
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|c| is_go_letter(c) || is_go_digit(c) || c == '_')
                {
                    self.next();
                }
            }
        }
        self.src[start..self.pos].to_owned()
    }

    /// Rule `get_env`: every lookup is recorded for `process_word_with_matches`.
    fn get_env(&mut self, name: &str) -> Option<&'a str> {
        let env: &'a E = self.env;
        let value = env.get(name);
        if self.capture {
            let set = if value.is_some() {
                &mut self.matched
            } else {
                &mut self.unmatched
            };
            if !set.contains(name) {
                set.insert(name.to_owned());
            }
        }
        value
    }
}

/// `$@ $* $# $? $- $$ $! $0`: single-char names that are never set in a
/// Dockerfile but must still be consumed.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter` (general category L).
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_table(unicode_tables::LETTER, c)
    }
}

/// Go's `unicode.IsDigit` (general category Nd), not `char::is_numeric` (all of N).
fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        in_table(unicode_tables::DECIMAL_DIGIT, c)
    }
}

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// One element of a compiled shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// `*`: any run of chars.
    Star,
    /// `?`: any one char.
    Any,
    Lit(char),
}

/// Rule `compile_pattern`. BuildKit turns the pattern into a Go regular
/// expression, and that leaks through in three ways reproduced here: the
/// pattern escape is always `\` whatever the lexer's escape character, an
/// escape before anything but `* ? \ } /` is an error, and `*`/`?` (Go's `.`)
/// never match a newline.
fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, String> {
    let mut program = Vec::new();
    let mut chars = pattern.chars().peekable();
    // The pattern goes through its own Go text/scanner, which drops a leading BOM.
    chars.next_if_eq(&'\u{FEFF}');
    while let Some(c) = chars.next() {
        let tok = match c {
            '*' => {
                // A run of stars matches exactly what one star does, and
                // collapsing them keeps the matcher's closure one step deep.
                if program.last() != Some(&Tok::Star) {
                    program.push(Tok::Star);
                }
                continue;
            }
            '?' => Tok::Any,
            // `}` and `/` had to be escaped to get past the `${}` parser; the
            // escape is not part of the pattern.
            '\\' if matches!(chars.peek(), Some('}' | '/')) => continue,
            '\\' => match chars.next() {
                Some(e @ ('*' | '?' | '\\')) => Tok::Lit(e),
                other => {
                    return Err(format!(
                        "invalid escape '\\{}'",
                        other.unwrap_or('\u{FFFD}')
                    ))
                }
            },
            other => Tok::Lit(other),
        };
        program.push(tok);
    }
    Ok(program)
}

/// Rule `reverse_pattern`: reverses a pattern while keeping each `\x` pair in
/// order, so that a suffix search can run as a prefix search. A lone `\` at
/// the end stays a unit of its own (and so ends up escaping whatever follows
/// it once reversed, as in BuildKit).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}

/// Rule `trim_prefix`: `${name#pattern}` (shortest) / `${name##pattern}` (longest).
fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let program = compile_pattern(pattern)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    let text: Vec<char> = value.chars().collect();
    Ok(match find(&program, greedy, &text, 0, true) {
        Some((_, end)) => text[end..].iter().collect(),
        None => value.to_owned(),
    })
}

/// Rule `trim_suffix`: `${name%pattern}` / `${name%%pattern}`, run as a
/// prefix trim over the reversed value and pattern. Errors therefore quote the
/// reversed pattern, as BuildKit's do.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Rule `replace_first`: the leftmost match; among matches starting there,
/// the one Go's leftmost-first semantics with greedy `*` picks (the longest).
/// The replacement is inserted literally. `None` when that would take more than `budget`
/// bytes, which is reduced by what was inserted.
fn replace_first(
    program: &[Tok],
    text: &[char],
    replacement: &str,
    budget: &mut usize,
) -> Option<String> {
    Some(match find(program, true, text, 0, false) {
        Some((start, end)) => {
            *budget = budget.checked_sub(replacement.len())?;
            let mut out: String = text[..start].iter().collect();
            out.push_str(replacement);
            out.extend(&text[end..]);
            out
        }
        None => text.iter().collect(),
    })
}

/// Rule `replace_all`: every non-overlapping match, scanning as Go's
/// `Regexp.ReplaceAllString` does: an empty match right after a previous match
/// is skipped, and the replacement is a Go regexp template (see
/// `expand_template`). `None` when the replacements would take more than `budget` bytes,
/// which is reduced by what was inserted.
fn replace_all(
    program: &[Tok],
    text: &[char],
    replacement: &str,
    budget: &mut usize,
) -> Option<String> {
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((start, end)) = find(program, true, text, search, false) else {
            break;
        };
        out.extend(&text[last_end..start]);
        if end > last_end || start == 0 {
            let whole: String = text[start..end].iter().collect();
            let before = out.len();
            expand_template(&mut out, replacement, &whole);
            *budget = budget.checked_sub(out.len() - before)?;
        }
        last_end = end;
        search = if end > search { end } else { search + 1 };
    }
    out.extend(&text[last_end..]);
    Some(out)
}

/// Rule `expand_template`: Go's regexp template syntax as it applies to a
/// pattern without groups: `$$` is `$`, `$0`/`${0}` is the whole match, any
/// other well-formed `$name`/`${name}` is empty, and a malformed one keeps its `$`.
fn expand_template(out: &mut String, template: &str, whole: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_reference(rest) {
            Some((name, after)) => {
                if name == "0" {
                    out.push_str(whole);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// The `name` or `{name}` after a template `$`, and the text after it.
fn template_reference(s: &str) -> Option<(&str, &str)> {
    let (body, braced) = match s.strip_prefix('{') {
        Some(body) => (body, true),
        None => (s, false),
    };
    let len = body
        .char_indices()
        .find(|&(_, c)| !(is_go_letter(c) || is_go_digit(c) || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if len == 0 {
        return None;
    }
    let (name, mut after) = body.split_at(len);
    if braced {
        after = after.strip_prefix('}')?;
    }
    Some((name, after))
}

#[derive(Debug, Clone, Copy)]
struct Thread {
    pc: usize,
    start: usize,
}

/// Rule `find`: the match Go's regexp (leftmost-first, `*` lazy unless `greedy`)
/// would report for `program` in `text[from..]`, as char positions. A Pike VM:
/// threads are kept in priority order, so the first thread to reach the end of
/// the program wins and cuts off every thread behind it. O(len(text) *
/// len(program)) time, O(len(program)) space, no recursion.
fn find(
    program: &[Tok],
    greedy: bool,
    text: &[char],
    from: usize,
    anchored: bool,
) -> Option<(usize, usize)> {
    let mut seen = vec![usize::MAX; program.len() + 1];
    let mut current: Vec<Thread> = Vec::new();
    let mut next: Vec<Thread> = Vec::new();
    let mut found = None;
    let mut at = from;
    loop {
        if found.is_none() && (!anchored || at == from) {
            // Later starts rank below every thread already running.
            add_thread(program, greedy, &mut current, &mut seen, at, 0, at);
        }
        for &Thread { pc, start } in &current {
            let Some(tok) = program.get(pc) else {
                found = Some((start, at));
                break;
            };
            let Some(&c) = text.get(at) else { continue };
            let target = match *tok {
                Tok::Star if c != '\n' => pc,
                Tok::Any if c != '\n' => pc + 1,
                Tok::Lit(l) if l == c => pc + 1,
                _ => continue,
            };
            add_thread(program, greedy, &mut next, &mut seen, at + 1, target, start);
        }
        if at >= text.len() || (next.is_empty() && (found.is_some() || anchored)) {
            return found;
        }
        std::mem::swap(&mut current, &mut next);
        next.clear();
        at += 1;
    }
}

/// Adds the thread at `pc` and, for a star, the thread past it, in the order
/// that encodes lazy or greedy preference. `generation` (the text position
/// the list is for) dedups: a state already in the list is there with higher
/// priority, and its future is identical.
fn add_thread(
    program: &[Tok],
    greedy: bool,
    list: &mut Vec<Thread>,
    seen: &mut [usize],
    generation: usize,
    pc: usize,
    start: usize,
) {
    let mut push = |pc: usize| {
        if seen[pc] != generation {
            seen[pc] = generation;
            list.push(Thread { pc, start });
        }
    };
    if program.get(pc) == Some(&Tok::Star) {
        // Star runs are collapsed, so `pc + 1` is never another star.
        if greedy {
            push(pc);
            push(pc + 1);
        } else {
            push(pc + 1);
            push(pc);
        }
    } else {
        push(pc);
    }
}

/// Go's `%q` (`strconv.Quote`), used to quote the word in error messages.
/// Go decides printability from Unicode tables; this approximates it with the
/// control, whitespace, format and private-use ranges.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_go_printable(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let cp = c as u32;
    let format_or_private = matches!(
        cp,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xE000..=0xF8FF
            | 0xF0000..=0x10FFFF
            | 0xFDD0..=0xFDEF
    );
    let noncharacter = cp & 0xFFFE == 0xFFFE;
    !format_or_private && !noncharacter
}

/// Code point ranges matching Go's `unicode.IsLetter` and `unicode.IsDigit`
/// beyond ASCII, generated from the Unicode 14.0 character database (general
/// categories L* and Nd). Go 1.21+ uses Unicode 15.0; only code points added
/// in 15.0 can differ.
mod unicode_tables {
    /// Non-ASCII code points in general category L (Lu, Ll, Lt, Lm, Lo).
    #[rustfmt::skip]
    pub(super) const LETTER: &[(u32, u32)] = &[
        (0xAA, 0xAA), (0xB5, 0xB5), (0xBA, 0xBA), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x2C1),
        (0x2C6, 0x2D1), (0x2E0, 0x2E4), (0x2EC, 0x2EC), (0x2EE, 0x2EE), (0x370, 0x374),
        (0x376, 0x377), (0x37A, 0x37D), (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A),
        (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F),
        (0x531, 0x556), (0x559, 0x559), (0x560, 0x588), (0x5D0, 0x5EA), (0x5EF, 0x5F2),
        (0x620, 0x64A), (0x66E, 0x66F), (0x671, 0x6D3), (0x6D5, 0x6D5), (0x6E5, 0x6E6),
        (0x6EE, 0x6EF), (0x6FA, 0x6FC), (0x6FF, 0x6FF), (0x710, 0x710), (0x712, 0x72F),
        (0x74D, 0x7A5), (0x7B1, 0x7B1), (0x7CA, 0x7EA), (0x7F4, 0x7F5), (0x7FA, 0x7FA),
        (0x800, 0x815), (0x81A, 0x81A), (0x824, 0x824), (0x828, 0x828), (0x840, 0x858),
        (0x860, 0x86A), (0x870, 0x887), (0x889, 0x88E), (0x8A0, 0x8C9), (0x904, 0x939),
        (0x93D, 0x93D), (0x950, 0x950), (0x958, 0x961), (0x971, 0x980), (0x985, 0x98C),
        (0x98F, 0x990), (0x993, 0x9A8), (0x9AA, 0x9B0), (0x9B2, 0x9B2), (0x9B6, 0x9B9),
        (0x9BD, 0x9BD), (0x9CE, 0x9CE), (0x9DC, 0x9DD), (0x9DF, 0x9E1), (0x9F0, 0x9F1),
        (0x9FC, 0x9FC), (0xA05, 0xA0A), (0xA0F, 0xA10), (0xA13, 0xA28), (0xA2A, 0xA30),
        (0xA32, 0xA33), (0xA35, 0xA36), (0xA38, 0xA39), (0xA59, 0xA5C), (0xA5E, 0xA5E),
        (0xA72, 0xA74), (0xA85, 0xA8D), (0xA8F, 0xA91), (0xA93, 0xAA8), (0xAAA, 0xAB0),
        (0xAB2, 0xAB3), (0xAB5, 0xAB9), (0xABD, 0xABD), (0xAD0, 0xAD0), (0xAE0, 0xAE1),
        (0xAF9, 0xAF9), (0xB05, 0xB0C), (0xB0F, 0xB10), (0xB13, 0xB28), (0xB2A, 0xB30),
        (0xB32, 0xB33), (0xB35, 0xB39), (0xB3D, 0xB3D), (0xB5C, 0xB5D), (0xB5F, 0xB61),
        (0xB71, 0xB71), (0xB83, 0xB83), (0xB85, 0xB8A), (0xB8E, 0xB90), (0xB92, 0xB95),
        (0xB99, 0xB9A), (0xB9C, 0xB9C), (0xB9E, 0xB9F), (0xBA3, 0xBA4), (0xBA8, 0xBAA),
        (0xBAE, 0xBB9), (0xBD0, 0xBD0), (0xC05, 0xC0C), (0xC0E, 0xC10), (0xC12, 0xC28),
        (0xC2A, 0xC39), (0xC3D, 0xC3D), (0xC58, 0xC5A), (0xC5D, 0xC5D), (0xC60, 0xC61),
        (0xC80, 0xC80), (0xC85, 0xC8C), (0xC8E, 0xC90), (0xC92, 0xCA8), (0xCAA, 0xCB3),
        (0xCB5, 0xCB9), (0xCBD, 0xCBD), (0xCDD, 0xCDE), (0xCE0, 0xCE1), (0xCF1, 0xCF2),
        (0xD04, 0xD0C), (0xD0E, 0xD10), (0xD12, 0xD3A), (0xD3D, 0xD3D), (0xD4E, 0xD4E),
        (0xD54, 0xD56), (0xD5F, 0xD61), (0xD7A, 0xD7F), (0xD85, 0xD96), (0xD9A, 0xDB1),
        (0xDB3, 0xDBB), (0xDBD, 0xDBD), (0xDC0, 0xDC6), (0xE01, 0xE30), (0xE32, 0xE33),
        (0xE40, 0xE46), (0xE81, 0xE82), (0xE84, 0xE84), (0xE86, 0xE8A), (0xE8C, 0xEA3),
        (0xEA5, 0xEA5), (0xEA7, 0xEB0), (0xEB2, 0xEB3), (0xEBD, 0xEBD), (0xEC0, 0xEC4),
        (0xEC6, 0xEC6), (0xEDC, 0xEDF), (0xF00, 0xF00), (0xF40, 0xF47), (0xF49, 0xF6C),
        (0xF88, 0xF8C), (0x1000, 0x102A), (0x103F, 0x103F), (0x1050, 0x1055), (0x105A, 0x105D),
        (0x1061, 0x1061), (0x1065, 0x1066), (0x106E, 0x1070), (0x1075, 0x1081), (0x108E, 0x108E),
        (0x10A0, 0x10C5), (0x10C7, 0x10C7), (0x10CD, 0x10CD), (0x10D0, 0x10FA), (0x10FC, 0x1248),
        (0x124A, 0x124D), (0x1250, 0x1256), (0x1258, 0x1258), (0x125A, 0x125D), (0x1260, 0x1288),
        (0x128A, 0x128D), (0x1290, 0x12B0), (0x12B2, 0x12B5), (0x12B8, 0x12BE), (0x12C0, 0x12C0),
        (0x12C2, 0x12C5), (0x12C8, 0x12D6), (0x12D8, 0x1310), (0x1312, 0x1315), (0x1318, 0x135A),
        (0x1380, 0x138F), (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1401, 0x166C), (0x166F, 0x167F),
        (0x1681, 0x169A), (0x16A0, 0x16EA), (0x16F1, 0x16F8), (0x1700, 0x1711), (0x171F, 0x1731),
        (0x1740, 0x1751), (0x1760, 0x176C), (0x176E, 0x1770), (0x1780, 0x17B3), (0x17D7, 0x17D7),
        (0x17DC, 0x17DC), (0x1820, 0x1878), (0x1880, 0x1884), (0x1887, 0x18A8), (0x18AA, 0x18AA),
        (0x18B0, 0x18F5), (0x1900, 0x191E), (0x1950, 0x196D), (0x1970, 0x1974), (0x1980, 0x19AB),
        (0x19B0, 0x19C9), (0x1A00, 0x1A16), (0x1A20, 0x1A54), (0x1AA7, 0x1AA7), (0x1B05, 0x1B33),
        (0x1B45, 0x1B4C), (0x1B83, 0x1BA0), (0x1BAE, 0x1BAF), (0x1BBA, 0x1BE5), (0x1C00, 0x1C23),
        (0x1C4D, 0x1C4F), (0x1C5A, 0x1C7D), (0x1C80, 0x1C88), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF),
        (0x1CE9, 0x1CEC), (0x1CEE, 0x1CF3), (0x1CF5, 0x1CF6), (0x1CFA, 0x1CFA), (0x1D00, 0x1DBF),
        (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57),
        (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4),
        (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3),
        (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2071, 0x2071),
        (0x207F, 0x207F), (0x2090, 0x209C), (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113),
        (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128),
        (0x212A, 0x212D), (0x212F, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E),
        (0x2183, 0x2184), (0x2C00, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF3), (0x2D00, 0x2D25),
        (0x2D27, 0x2D27), (0x2D2D, 0x2D2D), (0x2D30, 0x2D67), (0x2D6F, 0x2D6F), (0x2D80, 0x2D96),
        (0x2DA0, 0x2DA6), (0x2DA8, 0x2DAE), (0x2DB0, 0x2DB6), (0x2DB8, 0x2DBE), (0x2DC0, 0x2DC6),
        (0x2DC8, 0x2DCE), (0x2DD0, 0x2DD6), (0x2DD8, 0x2DDE), (0x2E2F, 0x2E2F), (0x3005, 0x3006),
        (0x3031, 0x3035), (0x303B, 0x303C), (0x3041, 0x3096), (0x309D, 0x309F), (0x30A1, 0x30FA),
        (0x30FC, 0x30FF), (0x3105, 0x312F), (0x3131, 0x318E), (0x31A0, 0x31BF), (0x31F0, 0x31FF),
        (0x3400, 0x4DBF), (0x4E00, 0xA48C), (0xA4D0, 0xA4FD), (0xA500, 0xA60C), (0xA610, 0xA61F),
        (0xA62A, 0xA62B), (0xA640, 0xA66E), (0xA67F, 0xA69D), (0xA6A0, 0xA6E5), (0xA717, 0xA71F),
        (0xA722, 0xA788), (0xA78B, 0xA7CA), (0xA7D0, 0xA7D1), (0xA7D3, 0xA7D3), (0xA7D5, 0xA7D9),
        (0xA7F2, 0xA801), (0xA803, 0xA805), (0xA807, 0xA80A), (0xA80C, 0xA822), (0xA840, 0xA873),
        (0xA882, 0xA8B3), (0xA8F2, 0xA8F7), (0xA8FB, 0xA8FB), (0xA8FD, 0xA8FE), (0xA90A, 0xA925),
        (0xA930, 0xA946), (0xA960, 0xA97C), (0xA984, 0xA9B2), (0xA9CF, 0xA9CF), (0xA9E0, 0xA9E4),
        (0xA9E6, 0xA9EF), (0xA9FA, 0xA9FE), (0xAA00, 0xAA28), (0xAA40, 0xAA42), (0xAA44, 0xAA4B),
        (0xAA60, 0xAA76), (0xAA7A, 0xAA7A), (0xAA7E, 0xAAAF), (0xAAB1, 0xAAB1), (0xAAB5, 0xAAB6),
        (0xAAB9, 0xAABD), (0xAAC0, 0xAAC0), (0xAAC2, 0xAAC2), (0xAADB, 0xAADD), (0xAAE0, 0xAAEA),
        (0xAAF2, 0xAAF4), (0xAB01, 0xAB06), (0xAB09, 0xAB0E), (0xAB11, 0xAB16), (0xAB20, 0xAB26),
        (0xAB28, 0xAB2E), (0xAB30, 0xAB5A), (0xAB5C, 0xAB69), (0xAB70, 0xABE2), (0xAC00, 0xD7A3),
        (0xD7B0, 0xD7C6), (0xD7CB, 0xD7FB), (0xF900, 0xFA6D), (0xFA70, 0xFAD9), (0xFB00, 0xFB06),
        (0xFB13, 0xFB17), (0xFB1D, 0xFB1D), (0xFB1F, 0xFB28), (0xFB2A, 0xFB36), (0xFB38, 0xFB3C),
        (0xFB3E, 0xFB3E), (0xFB40, 0xFB41), (0xFB43, 0xFB44), (0xFB46, 0xFBB1), (0xFBD3, 0xFD3D),
        (0xFD50, 0xFD8F), (0xFD92, 0xFDC7), (0xFDF0, 0xFDFB), (0xFE70, 0xFE74), (0xFE76, 0xFEFC),
        (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0xFF66, 0xFFBE), (0xFFC2, 0xFFC7), (0xFFCA, 0xFFCF),
        (0xFFD2, 0xFFD7), (0xFFDA, 0xFFDC), (0x10000, 0x1000B), (0x1000D, 0x10026),
        (0x10028, 0x1003A), (0x1003C, 0x1003D), (0x1003F, 0x1004D), (0x10050, 0x1005D),
        (0x10080, 0x100FA), (0x10280, 0x1029C), (0x102A0, 0x102D0), (0x10300, 0x1031F),
        (0x1032D, 0x10340), (0x10342, 0x10349), (0x10350, 0x10375), (0x10380, 0x1039D),
        (0x103A0, 0x103C3), (0x103C8, 0x103CF), (0x10400, 0x1049D), (0x104B0, 0x104D3),
        (0x104D8, 0x104FB), (0x10500, 0x10527), (0x10530, 0x10563), (0x10570, 0x1057A),
        (0x1057C, 0x1058A), (0x1058C, 0x10592), (0x10594, 0x10595), (0x10597, 0x105A1),
        (0x105A3, 0x105B1), (0x105B3, 0x105B9), (0x105BB, 0x105BC), (0x10600, 0x10736),
        (0x10740, 0x10755), (0x10760, 0x10767), (0x10780, 0x10785), (0x10787, 0x107B0),
        (0x107B2, 0x107BA), (0x10800, 0x10805), (0x10808, 0x10808), (0x1080A, 0x10835),
        (0x10837, 0x10838), (0x1083C, 0x1083C), (0x1083F, 0x10855), (0x10860, 0x10876),
        (0x10880, 0x1089E), (0x108E0, 0x108F2), (0x108F4, 0x108F5), (0x10900, 0x10915),
        (0x10920, 0x10939), (0x10980, 0x109B7), (0x109BE, 0x109BF), (0x10A00, 0x10A00),
        (0x10A10, 0x10A13), (0x10A15, 0x10A17), (0x10A19, 0x10A35), (0x10A60, 0x10A7C),
        (0x10A80, 0x10A9C), (0x10AC0, 0x10AC7), (0x10AC9, 0x10AE4), (0x10B00, 0x10B35),
        (0x10B40, 0x10B55), (0x10B60, 0x10B72), (0x10B80, 0x10B91), (0x10C00, 0x10C48),
        (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x10D00, 0x10D23), (0x10E80, 0x10EA9),
        (0x10EB0, 0x10EB1), (0x10F00, 0x10F1C), (0x10F27, 0x10F27), (0x10F30, 0x10F45),
        (0x10F70, 0x10F81), (0x10FB0, 0x10FC4), (0x10FE0, 0x10FF6), (0x11003, 0x11037),
        (0x11071, 0x11072), (0x11075, 0x11075), (0x11083, 0x110AF), (0x110D0, 0x110E8),
        (0x11103, 0x11126), (0x11144, 0x11144), (0x11147, 0x11147), (0x11150, 0x11172),
        (0x11176, 0x11176), (0x11183, 0x111B2), (0x111C1, 0x111C4), (0x111DA, 0x111DA),
        (0x111DC, 0x111DC), (0x11200, 0x11211), (0x11213, 0x1122B), (0x11280, 0x11286),
        (0x11288, 0x11288), (0x1128A, 0x1128D), (0x1128F, 0x1129D), (0x1129F, 0x112A8),
        (0x112B0, 0x112DE), (0x11305, 0x1130C), (0x1130F, 0x11310), (0x11313, 0x11328),
        (0x1132A, 0x11330), (0x11332, 0x11333), (0x11335, 0x11339), (0x1133D, 0x1133D),
        (0x11350, 0x11350), (0x1135D, 0x11361), (0x11400, 0x11434), (0x11447, 0x1144A),
        (0x1145F, 0x11461), (0x11480, 0x114AF), (0x114C4, 0x114C5), (0x114C7, 0x114C7),
        (0x11580, 0x115AE), (0x115D8, 0x115DB), (0x11600, 0x1162F), (0x11644, 0x11644),
        (0x11680, 0x116AA), (0x116B8, 0x116B8), (0x11700, 0x1171A), (0x11740, 0x11746),
        (0x11800, 0x1182B), (0x118A0, 0x118DF), (0x118FF, 0x11906), (0x11909, 0x11909),
        (0x1190C, 0x11913), (0x11915, 0x11916), (0x11918, 0x1192F), (0x1193F, 0x1193F),
        (0x11941, 0x11941), (0x119A0, 0x119A7), (0x119AA, 0x119D0), (0x119E1, 0x119E1),
        (0x119E3, 0x119E3), (0x11A00, 0x11A00), (0x11A0B, 0x11A32), (0x11A3A, 0x11A3A),
        (0x11A50, 0x11A50), (0x11A5C, 0x11A89), (0x11A9D, 0x11A9D), (0x11AB0, 0x11AF8),
        (0x11C00, 0x11C08), (0x11C0A, 0x11C2E), (0x11C40, 0x11C40), (0x11C72, 0x11C8F),
        (0x11D00, 0x11D06), (0x11D08, 0x11D09), (0x11D0B, 0x11D30), (0x11D46, 0x11D46),
        (0x11D60, 0x11D65), (0x11D67, 0x11D68), (0x11D6A, 0x11D89), (0x11D98, 0x11D98),
        (0x11EE0, 0x11EF2), (0x11FB0, 0x11FB0), (0x12000, 0x12399), (0x12480, 0x12543),
        (0x12F90, 0x12FF0), (0x13000, 0x1342E), (0x14400, 0x14646), (0x16800, 0x16A38),
        (0x16A40, 0x16A5E), (0x16A70, 0x16ABE), (0x16AD0, 0x16AED), (0x16B00, 0x16B2F),
        (0x16B40, 0x16B43), (0x16B63, 0x16B77), (0x16B7D, 0x16B8F), (0x16E40, 0x16E7F),
        (0x16F00, 0x16F4A), (0x16F50, 0x16F50), (0x16F93, 0x16F9F), (0x16FE0, 0x16FE1),
        (0x16FE3, 0x16FE3), (0x17000, 0x187F7), (0x18800, 0x18CD5), (0x18D00, 0x18D08),
        (0x1AFF0, 0x1AFF3), (0x1AFF5, 0x1AFFB), (0x1AFFD, 0x1AFFE), (0x1B000, 0x1B122),
        (0x1B150, 0x1B152), (0x1B164, 0x1B167), (0x1B170, 0x1B2FB), (0x1BC00, 0x1BC6A),
        (0x1BC70, 0x1BC7C), (0x1BC80, 0x1BC88), (0x1BC90, 0x1BC99), (0x1D400, 0x1D454),
        (0x1D456, 0x1D49C), (0x1D49E, 0x1D49F), (0x1D4A2, 0x1D4A2), (0x1D4A5, 0x1D4A6),
        (0x1D4A9, 0x1D4AC), (0x1D4AE, 0x1D4B9), (0x1D4BB, 0x1D4BB), (0x1D4BD, 0x1D4C3),
        (0x1D4C5, 0x1D505), (0x1D507, 0x1D50A), (0x1D50D, 0x1D514), (0x1D516, 0x1D51C),
        (0x1D51E, 0x1D539), (0x1D53B, 0x1D53E), (0x1D540, 0x1D544), (0x1D546, 0x1D546),
        (0x1D54A, 0x1D550), (0x1D552, 0x1D6A5), (0x1D6A8, 0x1D6C0), (0x1D6C2, 0x1D6DA),
        (0x1D6DC, 0x1D6FA), (0x1D6FC, 0x1D714), (0x1D716, 0x1D734), (0x1D736, 0x1D74E),
        (0x1D750, 0x1D76E), (0x1D770, 0x1D788), (0x1D78A, 0x1D7A8), (0x1D7AA, 0x1D7C2),
        (0x1D7C4, 0x1D7CB), (0x1DF00, 0x1DF1E), (0x1E100, 0x1E12C), (0x1E137, 0x1E13D),
        (0x1E14E, 0x1E14E), (0x1E290, 0x1E2AD), (0x1E2C0, 0x1E2EB), (0x1E7E0, 0x1E7E6),
        (0x1E7E8, 0x1E7EB), (0x1E7ED, 0x1E7EE), (0x1E7F0, 0x1E7FE), (0x1E800, 0x1E8C4),
        (0x1E900, 0x1E943), (0x1E94B, 0x1E94B), (0x1EE00, 0x1EE03), (0x1EE05, 0x1EE1F),
        (0x1EE21, 0x1EE22), (0x1EE24, 0x1EE24), (0x1EE27, 0x1EE27), (0x1EE29, 0x1EE32),
        (0x1EE34, 0x1EE37), (0x1EE39, 0x1EE39), (0x1EE3B, 0x1EE3B), (0x1EE42, 0x1EE42),
        (0x1EE47, 0x1EE47), (0x1EE49, 0x1EE49), (0x1EE4B, 0x1EE4B), (0x1EE4D, 0x1EE4F),
        (0x1EE51, 0x1EE52), (0x1EE54, 0x1EE54), (0x1EE57, 0x1EE57), (0x1EE59, 0x1EE59),
        (0x1EE5B, 0x1EE5B), (0x1EE5D, 0x1EE5D), (0x1EE5F, 0x1EE5F), (0x1EE61, 0x1EE62),
        (0x1EE64, 0x1EE64), (0x1EE67, 0x1EE6A), (0x1EE6C, 0x1EE72), (0x1EE74, 0x1EE77),
        (0x1EE79, 0x1EE7C), (0x1EE7E, 0x1EE7E), (0x1EE80, 0x1EE89), (0x1EE8B, 0x1EE9B),
        (0x1EEA1, 0x1EEA3), (0x1EEA5, 0x1EEA9), (0x1EEAB, 0x1EEBB), (0x20000, 0x2A6DF),
        (0x2A700, 0x2B738), (0x2B740, 0x2B81D), (0x2B820, 0x2CEA1), (0x2CEB0, 0x2EBE0),
        (0x2F800, 0x2FA1D), (0x30000, 0x3134A),
    ];
    /// Non-ASCII code points in general category Nd.
    #[rustfmt::skip]
    pub(super) const DECIMAL_DIGIT: &[(u32, u32)] = &[
        (0x660, 0x669), (0x6F0, 0x6F9), (0x7C0, 0x7C9), (0x966, 0x96F), (0x9E6, 0x9EF),
        (0xA66, 0xA6F), (0xAE6, 0xAEF), (0xB66, 0xB6F), (0xBE6, 0xBEF), (0xC66, 0xC6F),
        (0xCE6, 0xCEF), (0xD66, 0xD6F), (0xDE6, 0xDEF), (0xE50, 0xE59), (0xED0, 0xED9),
        (0xF20, 0xF29), (0x1040, 0x1049), (0x1090, 0x1099), (0x17E0, 0x17E9), (0x1810, 0x1819),
        (0x1946, 0x194F), (0x19D0, 0x19D9), (0x1A80, 0x1A89), (0x1A90, 0x1A99), (0x1B50, 0x1B59),
        (0x1BB0, 0x1BB9), (0x1C40, 0x1C49), (0x1C50, 0x1C59), (0xA620, 0xA629), (0xA8D0, 0xA8D9),
        (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9), (0xAA50, 0xAA59), (0xABF0, 0xABF9),
        (0xFF10, 0xFF19), (0x104A0, 0x104A9), (0x10D30, 0x10D39), (0x11066, 0x1106F),
        (0x110F0, 0x110F9), (0x11136, 0x1113F), (0x111D0, 0x111D9), (0x112F0, 0x112F9),
        (0x11450, 0x11459), (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9),
        (0x11730, 0x11739), (0x118E0, 0x118E9), (0x11950, 0x11959), (0x11C50, 0x11C59),
        (0x11D50, 0x11D59), (0x11DA0, 0x11DA9), (0x16A60, 0x16A69), (0x16AC0, 0x16AC9),
        (0x16B50, 0x16B59), (0x1D7CE, 0x1D7FF), (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9),
        (0x1E950, 0x1E959), (0x1FBF0, 0x1FBF9),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(lexer: Lexer, input: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        lexer.process_word(input, &env(vars)).map_err(|e| e.message)
    }

    #[test]
    fn raw_quotes_keep_quote_characters() {
        let mut lexer = Lexer::new('\\');
        lexer.raw_quotes = true;
        let cases = [
            (r#"'a b'"#, r#"'a b'"#),
            (r#""a $X""#, r#""a x""#),
            (r#"a"'"b'"'"#, r#"a"'"b'"'"#),
            ("''", "''"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                word(lexer, input, &[("X", "x")]).unwrap(),
                expected,
                "{input}"
            );
        }
        assert_eq!(
            lexer.process_words(r#"'a b' c"#, &NoEnv).unwrap(),
            vec!["'a b'", "c"]
        );
    }

    #[test]
    fn raw_escapes_keep_escape_characters() {
        let mut lexer = Lexer::new('\\');
        lexer.raw_escapes = true;
        let cases = [
            (r"a\ b", r"a\ b"),
            (r"\$X", r"\$X"),
            (r#""\$X""#, r"\$X"),
            (r#""\t""#, r"\\t"),
            (r"a\", r"a\"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                word(lexer, input, &[("X", "x")]).unwrap(),
                expected,
                "{input}"
            );
        }
        // Escaped whitespace does not split even when the escape is kept.
        assert_eq!(
            lexer.process_words(r"a\ b c", &NoEnv).unwrap(),
            vec![r"a\ b", "c"]
        );
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        let cases = [
            (r"a`$X", "a$X"),
            (r"c:\path", r"c:\path"),
            (r#""a`"b""#, r#"a"b"#),
            (r#""a`tb""#, "a`tb"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                word(lexer, input, &[("X", "x")]).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn skip_unset_env_leaves_references() {
        let mut lexer = Lexer::new('\\');
        lexer.skip_unset_env = true;
        let vars = [("SET", "v")];
        let cases = [
            ("$UNSET", "$UNSET"),
            ("${UNSET}", "${UNSET}"),
            ("${UNSET:-d}", "${UNSET:-d}"),
            ("${UNSET+$SET}", "${UNSET+v}"),
            ("${UNSET#*}", "${UNSET#*}"),
            ("${UNSET/a/b}", "${UNSET/a/b}"),
            // BuildKit rebuilds the `//` form with a single slash.
            ("${UNSET//a/b}", "${UNSET/a/b}"),
            ("${UNSET:x}", "${UNSET:x}"),
            ("$SET ${SET:-d}", "v v"),
            ("${SET:x}", "error"),
        ];
        for (input, expected) in cases {
            let got = word(lexer, input, &vars).unwrap_or_else(|_| "error".to_owned());
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn skip_process_quotes_treats_quotes_as_text() {
        let mut lexer = Lexer::new('\\');
        lexer.skip_process_quotes = true;
        assert_eq!(
            word(lexer, r#"'$X' "a"#, &[("X", "x")]).unwrap(),
            r#"'x' "a"#
        );
        assert_eq!(
            lexer.process_words(r#""a b""#, &NoEnv).unwrap(),
            vec!["\"a", "b\""]
        );
    }

    #[test]
    fn dollar_edge_cases() {
        let lexer = Lexer::new('\\');
        let vars = [("A", "a"), ("_x1", "u"), ("한", "k")];
        let cases = [
            ("$", "$"),
            ("$$", ""),
            ("a$", "a$"),
            ("$.", "$."),
            ("$ x", "$ x"),
            ("$A$A", "aa"),
            ("$_x1-", "u-"),
            ("$한!", "k!"),
            ("$12A", "A"),
            ("$0A", "A"),
            ("${A}}", "a}"),
            ("\"$\"", "$"),
            ("${", "error"),
            ("${A", "error"),
            ("${}", "error"),
            ("${:-x}", "error"),
            ("${A:}", "error"),
            ("${A=x}", "error"),
            ("${A:#x}", "error"),
            // Superscript two is a number but not a decimal digit, so it ends the name.
            ("$A\u{b2}", "a\u{b2}"),
            // Arabic-Indic digits are decimal digits: a positional parameter.
            ("$\u{663}x", "x"),
        ];
        for (input, expected) in cases {
            let got = word(lexer, input, &vars).unwrap_or_else(|_| "error".to_owned());
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn error_messages() {
        let lexer = Lexer::new('\\');
        let cases = [
            (
                "${A=x}",
                r#"failed to process "${A=x}": unsupported modifier (=) in substitution"#,
            ),
            (
                "${A:x}",
                r#"failed to process "${A:x}": unsupported modifier (:x) in substitution"#,
            ),
            (
                "${A:#x}",
                r#"failed to process "${A:#x}": unsupported modifier (:#) in substitution"#,
            ),
            (
                "${A?}",
                r#"failed to process "${A?}": A: is not allowed to be unset"#,
            ),
            (
                "${E:?}",
                r#"failed to process "${E:?}": E: is not allowed to be empty"#,
            ),
            ("${A?oops}", r#"failed to process "${A?oops}": A: oops"#),
            (
                "${A:-x",
                r#"failed to process "${A:-x": syntax error: missing '}'"#,
            ),
            (
                "${A/x",
                r#"failed to process "${A/x": syntax error: missing '/' in ${}"#,
            ),
            (
                "${}",
                r#"failed to process "${}": syntax error: bad substitution"#,
            ),
            (
                "'a",
                r#"failed to process "'a": unexpected end of statement while looking for matching single-quote"#,
            ),
            (
                "\"a\n",
                r#"failed to process "\"a\n": unexpected end of statement while looking for matching double-quote"#,
            ),
            (
                r"${E#\a}",
                r#"failed to process "${E#\\a}": invalid pattern (\a) in substitution: invalid escape '\a'"#,
            ),
            (
                r"${E%ab\x}",
                r#"failed to process "${E%ab\\x}": invalid pattern (\xba) in substitution: invalid escape '\x'"#,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                word(lexer, input, &[("E", "")]).unwrap_err(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn error_offsets() {
        let lexer = Lexer::new('\\');
        let err = lexer.process_word("ab${X?}", &NoEnv).unwrap_err();
        assert_eq!(err.offset, 2);
        let err = lexer.process_word("ab'cd", &NoEnv).unwrap_err();
        assert_eq!(err.offset, 5);
        let err = lexer.process_word("é${}", &NoEnv).unwrap_err();
        assert_eq!(err.offset, 4);
    }

    #[test]
    fn trim_prefix_and_suffix_greedy_pairs() {
        let lexer = Lexer::new('\\');
        let vars = [
            ("P", "a/b/c.tar.gz"),
            ("N", "x\ny"),
            ("S", "ab*"),
            ("T", "*\\"),
        ];
        let cases = [
            ("${P#*/}", "b/c.tar.gz"),
            ("${P##*/}", "c.tar.gz"),
            ("${P%.*}", "a/b/c.tar"),
            ("${P%%.*}", "a/b/c"),
            ("${P#nomatch}", "a/b/c.tar.gz"),
            ("${P%%*}", ""),
            ("${P%*}", "a/b/c.tar.gz"),
            ("${P#??}", "b/c.tar.gz"),
            // `*` and `?` never match a newline (Go's `.`).
            ("${N##*}", "\ny"),
            ("${N#x?}", "x\ny"),
            // A pattern ending in a lone `\`, reversed for `%`, escapes what
            // precedes it instead of failing.
            ("${P%$T}", "a/b/c.tar.gz"),
            ("${S%$T}", "ab"),
            // Escapes in the written pattern keep wildcards literal.
            ("${S%\\*}", "ab"),
            ("${S%%b*}", "a"),
            ("${P#a[/]}", "a/b/c.tar.gz"),
            ("${P#$T}", "error"),
        ];
        for (input, expected) in cases {
            let got = word(lexer, input, &vars).unwrap_or_else(|_| "error".to_owned());
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn replacement_forms() {
        let lexer = Lexer::new('\\');
        let vars = [("V", "aXbXc"), ("D", "$0"), ("E", "")];
        let cases = [
            ("${V/X/-}", "a-bXc"),
            ("${V//X/-}", "a-b-c"),
            ("${V/X*/-}", "a-"),
            ("${V/?X/-}", "-bXc"),
            ("${V//*/-}", "-"),
            ("${E//*/-}", "-"),
            ("${V//$E/-}", "-a-X-b-X-c-"),
            // The replace-all replacement is a Go regexp template.
            ("${V//X/[$D]}", "a[X]b[X]c"),
            ("${V/X/[$D]}", "a[$0]bXc"),
            ("${V//X/\\$1}", "a\\b\\c"),
            ("${V//X/$}", "a$b$c"),
            ("${V//X/$.}", "a$.b$.c"),
        ];
        for (input, expected) in cases {
            let got = word(lexer, input, &vars).unwrap_or_else(|e| e);
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn matcher_priorities() {
        let p = compile_pattern("a*b").unwrap();
        let t: Vec<char> = "xxaabab".chars().collect();
        assert_eq!(find(&p, true, &t, 0, false), Some((2, 7)));
        assert_eq!(find(&p, false, &t, 0, false), Some((2, 5)));
        assert_eq!(find(&p, true, &t, 0, true), None);
        let p = compile_pattern("").unwrap();
        assert_eq!(find(&p, true, &t, 3, false), Some((3, 3)));
    }

    #[test]
    fn words_split_on_unquoted_whitespace_only() {
        let lexer = Lexer::new('\\');
        let vars = env(&[("S", " a  b ")]);
        let cases: [(&str, &[&str]); 6] = [
            ("x${S}y", &["x", "a", "b", "y"]),
            ("\"x${S}y\"", &["x a  b y"]),
            ("'' a \"\"", &["a"]),
            ("a\\ b", &["a b"]),
            ("\u{a0}a\u{3000}b", &["a", "b"]),
            ("", &[]),
        ];
        for (input, expected) in cases {
            assert_eq!(
                lexer.process_words(input, &vars).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn env_impls() {
        let pairs = env(&[("A", "1"), ("A", "2")]);
        assert_eq!(Env::get(&pairs, "A"), Some("2"));
        assert_eq!(Env::get(pairs.as_slice(), "B"), None);
        let map: HashMap<String, String> = pairs.iter().cloned().collect();
        assert_eq!(Lexer::default().process_word("$A", &map).unwrap(), "2");
        let tree: BTreeMap<String, String> = pairs.iter().cloned().collect();
        assert_eq!(Lexer::default().process_word("$A", &tree).unwrap(), "2");
        assert_eq!(Lexer::default().process_word("[$A]", &NoEnv).unwrap(), "[]");
    }

    #[test]
    fn matches_are_recorded() {
        let out = Lexer::default()
            .process_word_with_matches("$A ${B:-$C} ${A}", &env(&[("A", ""), ("C", "c")]))
            .unwrap();
        assert_eq!(out.result, " c ");
        assert_eq!(
            out.matched,
            BTreeSet::from(["A".to_owned(), "C".to_owned()])
        );
        assert_eq!(out.unmatched, BTreeSet::from(["B".to_owned()]));
    }

    #[test]
    fn leading_byte_order_mark_is_dropped() {
        assert_eq!(
            Lexer::default()
                .process_word("\u{feff}a\u{feff}", &NoEnv)
                .unwrap(),
            "a\u{feff}"
        );
    }

    #[test]
    fn deep_nesting_errors_instead_of_overflowing() {
        let lexer = Lexer::new('\\');
        for depth in [10, MAX_NESTING, MAX_NESTING + 1, 5000, 100_000] {
            let input = format!("{}x{}", "${a:-".repeat(depth), "}".repeat(depth));
            let got = lexer.process_word(&input, &NoEnv);
            if depth <= MAX_NESTING {
                assert_eq!(got.unwrap(), "x", "depth {depth}");
            } else {
                let err = got.unwrap_err();
                assert!(
                    err.message.contains("nested more than"),
                    "depth {depth}: {err}"
                );
            }
        }
        let quoted = format!("{}x{}", "\"${a:-".repeat(5000), "}\"".repeat(5000));
        assert!(lexer.process_word(&quoted, &NoEnv).is_err());
        let unterminated = "${a:-".repeat(100_000);
        assert!(lexer.process_word(&unterminated, &NoEnv).is_err());
    }

    /// Found by fuzzing (fuzz/README.md): an empty pattern matches between every character,
    /// so each nested `${P///…}` multiplied the length by 14 and 680 bytes asked for 46 MB.
    #[test]
    fn nested_replacements_are_bounded() {
        let lexer = Lexer::new('\\');
        let vars = env(&[("P", "/usr/bin:/bin")]);
        let nested = |depth: usize| format!("{}x{}", "${P///".repeat(depth), "}".repeat(depth));
        // Level k is 13 + 14 * (level k - 1) long: level 5 is 1 MB, level 7 over the budget.
        assert_eq!(
            lexer.process_word(&nested(5), &vars).unwrap().len(),
            1_075_647
        );
        let error = lexer.process_word(&nested(8), &vars).unwrap_err();
        assert!(error.message.contains("substitution too large"), "{error}");
        assert_eq!(error.offset, "${P///".len(), "the level-7 expression");
        // Discarded results count too, so repeating them cannot add up to unbounded work.
        let discarded = format!("${{UNSET:+{}}}", nested(5));
        assert!(lexer.process_word(&discarded.repeat(14), &vars).is_ok());
        assert!(lexer.process_word(&discarded.repeat(15), &vars).is_err());
        assert!(lexer.process_words(&nested(8), &vars).is_err());
        assert!(lexer.process_word_with_matches(&nested(8), &vars).is_err());
    }

    #[test]
    fn large_inputs_stay_linear() {
        let lexer = Lexer::new('\\');
        let value = "a".repeat(20_000);
        let vars = [("V", value.as_str())];
        let got = word(lexer, "${V//*a*a*a*b/x}", &vars).unwrap();
        assert_eq!(got, value);
        let got = word(lexer, "${V%%*a}", &vars).unwrap();
        assert_eq!(got, "");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{1}\u{7f}"), r#""\t\n\x01\x7f""#);
        assert_eq!(
            go_quote("한\u{a0}\u{200b}\u{10ffff}"),
            r#""한\u00a0\u200b\U0010ffff""#
        );
    }

    #[test]
    fn unicode_classes() {
        assert!(is_go_letter('é') && is_go_letter('한') && !is_go_letter('\u{301}'));
        assert!(is_go_digit('٣') && !is_go_digit('²') && !is_go_letter('²'));
        assert!(!is_go_letter('\u{93f}'), "Devanagari vowel sign is a mark");
    }
}
