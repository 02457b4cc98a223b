//! `.dockerignore` reading and Docker's path-pattern matching (moby/patternmatcher semantics),
//! plus the filter BuildKit's context walk applies (tonistiigi/fsutil include and exclude
//! patterns).
//!
//! Consumes the text of an ignore file, pattern lists, and context-relative paths written
//! with `/`. Produces pattern lists, a compiled [`PatternMatcher`], and include/exclude
//! decisions. It must never touch the file system: reading the ignore file and walking the
//! context are the caller's job.
//!
//! Pattern syntax, whole-path and anchored at the context root: `*` is any run of characters
//! except `/`, `?` one character except `/`, `[...]` and `[^...]` a character class, `\c` the
//! literal `c`, and `**` any number of path segments. A pattern also matches every path below
//! a path it matches, `!` marks an exception, and the last pattern that applies wins.
//!
//! Where Docker's translation of a pattern into a regular expression gives a result its
//! documented syntax does not (a `*` inside a class, `\d`-style regex escapes), this module
//! follows the documented syntax.

use std::cmp::Ordering;

/// Why a pattern list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern was `!` alone.
    #[error("illegal exclusion pattern \"!\": expected a path after `!`")]
    LoneExclamation,
    /// A pattern breaks the glob syntax; found when the matcher is built.
    #[error("bad pattern {pattern:?}: {problem}")]
    BadPattern {
        /// The pattern after trimming, cleaning and removing a leading `!`.
        pattern: String,
        /// What is wrong with it.
        problem: PatternProblem,
    },
    /// A class range runs backwards (`[z-a]`). Docker accepts such a pattern when the
    /// matcher is built and fails only when the pattern is used, so this is returned by
    /// matching, and only if that pattern is consulted.
    #[error("bad pattern {pattern:?}: character range {lo:?}-{hi:?} runs backwards, expected the lower bound first")]
    ReversedRange {
        /// The pattern after trimming, cleaning and removing a leading `!`.
        pattern: String,
        /// The range's first character.
        lo: char,
        /// The range's last character.
        hi: char,
    },
}

/// A glob syntax error inside one pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    /// `[` without the `]` that closes it.
    #[error("expected `]` to close the character class")]
    UnclosedClass,
    /// `\` as the last character.
    #[error("expected a character after `\\`")]
    TrailingEscape,
    /// `-` or `]` where a class needs a character (`[]a]`, `[-x]`, `[x-]`, `[a-b-c]`).
    #[error("expected a character in the class, found `{0}` (escape it with `\\`)")]
    MisplacedInClass(char),
}

/// Reads the text of a `.dockerignore` file into its pattern list, as Docker does: a UTF-8
/// byte order mark is dropped, a line starting with `#` is a comment, lines are trimmed and
/// empty ones dropped, `!` marks an exception (the text after it is trimmed again), the path
/// is cleaned and one leading `/` removed. A lone `!` is kept; building a matcher rejects it.
pub fn read_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        // Docker tests for a comment before trimming, so " # x" is a pattern.
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (invert, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = String::new();
        if invert {
            pattern.push('!');
        }
        if !rest.is_empty() {
            let cleaned = clean_path(rest);
            let relative = match cleaned.strip_prefix('/') {
                Some(stripped) if !stripped.is_empty() => stripped,
                _ => cleaned.as_str(),
            };
            pattern.push_str(relative);
        }
        patterns.push(pattern);
    }
    patterns
}

/// Cleans a slash-separated path lexically, as Go's `path.Clean` does: repeated `/` become
/// one, `.` segments go, `..` removes the segment before it (or is dropped at the root), a
/// trailing `/` goes, and an empty result is `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match segments.last() {
                Some(&last) if last != ".." => {
                    segments.pop();
                }
                _ if rooted => {}
                _ => segments.push(".."),
            },
            other => segments.push(other),
        }
    }
    let joined = segments.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The directory part of a slash-separated path, as Go's `filepath.Dir`: everything before
/// the last `/`, cleaned; `.` when there is no `/`.
fn parent_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(index) => clean_path(&path[..=index]),
        None => ".".to_owned(),
    }
}

/// One compiled pattern of a [`PatternMatcher`].
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    compiled: Result<Compiled, IgnoreError>,
}

impl Pattern {
    /// The pattern after trimming and cleaning, without its `!`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True for a `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether this one pattern matches `path` exactly (no parent matching).
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        match &self.compiled {
            Ok(compiled) => Ok(compiled.matches(&self.text, path)),
            Err(error) => Err(error.clone()),
        }
    }

    /// Whether the pattern matches `path` or one of its ancestors, where the ancestors are
    /// the prefixes of `parent` (already `parent_dir(path)`). Errors on ancestors are
    /// ignored, as Docker does, since the path itself was already matched without error.
    fn matches_self_or_ancestor(&self, path: &str, parent: &str) -> Result<bool, IgnoreError> {
        if self.matches(path)? {
            return Ok(true);
        }
        if parent == "." {
            return Ok(false);
        }
        let mut end = 0;
        for segment in parent.split('/') {
            end += segment.len();
            if self.matches(&parent[..end]).unwrap_or(false) {
                return Ok(true);
            }
            end += 1;
        }
        Ok(false)
    }
}

/// How a pattern is matched, chosen from its shape as Docker does: the shortcuts are not
/// always equivalent to the general form (`**file` matches `myfile` as a suffix).
#[derive(Debug, Clone)]
enum Compiled {
    /// No special characters: the path equals the pattern.
    Exact,
    /// Literal text then a final `**`: the path starts with the text.
    Prefix,
    /// A leading `**` then literal text: the path ends with the text.
    Suffix,
    /// Anything else, as a sequence of tokens, and the literal characters that end it,
    /// which every match ends with: most paths of a context fail that cheap test (`*.tmp`).
    Tokens(Vec<Token>, String),
}

impl Compiled {
    fn matches(&self, text: &str, path: &str) -> bool {
        match self {
            Compiled::Exact => path == text,
            Compiled::Prefix => {
                path.starts_with(text.get(..text.len().saturating_sub(2)).unwrap_or(""))
            }
            Compiled::Suffix => {
                let suffix = text.get(2..).unwrap_or("");
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Compiled::Tokens(tokens, ending) => {
                path.ends_with(ending.as_str()) && tokens_match(tokens, path)
            }
        }
    }
}

/// One element of a general pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This character.
    Literal(char),
    /// `?`: one character except `/`.
    One,
    /// `[...]`.
    Class(Class),
    /// `*`: any run of characters except `/`.
    Star,
    /// A final `**` after other syntax: any run of characters except a newline (Docker's
    /// regular expression uses `.`, which stops at newlines).
    AnyRun,
    /// `**` or `**/` before more pattern: nothing, or any run of characters without a
    /// newline that ends with `/`.
    Dirs,
}

/// A character class: inclusive ranges, possibly negated. A negated class also matches `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let inside = self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        inside != self.negated
    }
}

/// Reads one class character: `\` escapes the next one, and `-` or `]` may not appear
/// unescaped. A character must be followed by more pattern (at least the closing `]`).
fn class_char(chars: &[char], pos: &mut usize) -> Result<char, PatternProblem> {
    let mut c = *chars.get(*pos).ok_or(PatternProblem::UnclosedClass)?;
    if c == '-' || c == ']' {
        return Err(PatternProblem::MisplacedInClass(c));
    }
    if c == '\\' {
        *pos += 1;
        c = *chars.get(*pos).ok_or(PatternProblem::TrailingEscape)?;
    }
    *pos += 1;
    if *pos >= chars.len() {
        return Err(PatternProblem::UnclosedClass);
    }
    Ok(c)
}

/// Reads a class whose `[` is just before `pos`, leaving `pos` after its `]`.
fn class(chars: &[char], pos: &mut usize) -> Result<Class, PatternProblem> {
    let negated = chars.get(*pos) == Some(&'^');
    if negated {
        *pos += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(*pos) == Some(&']') && !ranges.is_empty() {
            *pos += 1;
            return Ok(Class { negated, ranges });
        }
        let lo = class_char(chars, pos)?;
        let mut hi = lo;
        if chars.get(*pos) == Some(&'-') {
            *pos += 1;
            hi = class_char(chars, pos)?;
        }
        ranges.push((lo, hi));
    }
}

/// The shape Docker detects while scanning a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Exact,
    Prefix,
    Suffix,
    General,
}

/// Compiles a cleaned pattern (without `!`). A syntax error is returned as `Err` in the outer
/// result; a reversed range is a valid pattern whose compiled form is an error.
fn compile(pattern: &str) -> Result<Result<Compiled, IgnoreError>, IgnoreError> {
    let bad = |problem| IgnoreError::BadPattern {
        pattern: pattern.to_owned(),
        problem,
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut shape = Shape::Exact;
    let mut pos = 0;
    let mut first = true;
    while let Some(&c) = chars.get(pos) {
        pos += 1;
        match c {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos >= chars.len() {
                    if shape == Shape::Exact {
                        shape = Shape::Prefix;
                    } else {
                        tokens.push(Token::AnyRun);
                        shape = Shape::General;
                    }
                } else {
                    tokens.push(Token::Dirs);
                    shape = Shape::General;
                }
                if first {
                    shape = Shape::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                shape = Shape::General;
            }
            '?' => {
                tokens.push(Token::One);
                shape = Shape::General;
            }
            '\\' => {
                let escaped = *chars.get(pos).ok_or(bad(PatternProblem::TrailingEscape))?;
                pos += 1;
                tokens.push(Token::Literal(escaped));
                shape = Shape::General;
            }
            '[' => {
                tokens.push(Token::Class(class(&chars, &mut pos).map_err(bad)?));
                shape = Shape::General;
            }
            ']' => {
                tokens.push(Token::Literal(']'));
                shape = Shape::General;
            }
            other => tokens.push(Token::Literal(other)),
        }
        first = false;
    }
    let reversed = tokens.iter().find_map(|token| match token {
        Token::Class(class) => class.ranges.iter().find(|(lo, hi)| lo > hi).copied(),
        _ => None,
    });
    if let Some((lo, hi)) = reversed {
        return Ok(Err(IgnoreError::ReversedRange {
            pattern: pattern.to_owned(),
            lo,
            hi,
        }));
    }
    Ok(Ok(match shape {
        Shape::Exact => Compiled::Exact,
        Shape::Prefix => Compiled::Prefix,
        Shape::Suffix => Compiled::Suffix,
        Shape::General => {
            let mut ending: Vec<char> = tokens
                .iter()
                .rev()
                .map_while(|token| match token {
                    Token::Literal(c) => Some(*c),
                    _ => None,
                })
                .collect();
            ending.reverse();
            Compiled::Tokens(tokens, ending.into_iter().collect())
        }
    }))
}

/// Runs `tokens` over `path` as a set of states (token index, and whether a `Dirs` token
/// has consumed something without yet reaching its `/`), so time is linear in the path for
/// any pattern and nothing recurses.
fn tokens_match(tokens: &[Token], path: &str) -> bool {
    let width = tokens.len() + 1;
    // states[i] = at token i, not inside a Dirs run; states[width + i] = inside the Dirs run
    // of token i.
    let mut current = vec![false; 2 * width];
    let mut next = vec![false; 2 * width];
    current[0] = true;
    close_over(tokens, &mut current);
    for c in path.chars() {
        next.iter_mut().for_each(|state| *state = false);
        for index in 0..tokens.len() {
            let outside = current[index];
            let inside = current[width + index];
            if !outside && !inside {
                continue;
            }
            match &tokens[index] {
                Token::Dirs => {
                    if c != '\n' {
                        next[width + index] = true;
                    }
                    if c == '/' {
                        next[index + 1] = true;
                    }
                }
                _ if !outside => {}
                Token::Literal(expected) => next[index + 1] |= c == *expected,
                Token::One => next[index + 1] |= c != '/',
                Token::Class(class) => next[index + 1] |= class.matches(c),
                Token::Star => next[index] |= c != '/',
                Token::AnyRun => next[index] |= c != '\n',
            }
        }
        close_over(tokens, &mut next);
        std::mem::swap(&mut current, &mut next);
    }
    current[tokens.len()]
}

/// Adds the states reachable without consuming a character: past a `*`, a final `**`, or an
/// empty `**/`.
fn close_over(tokens: &[Token], states: &mut [bool]) {
    for (index, token) in tokens.iter().enumerate() {
        if states[index] && matches!(token, Token::Star | Token::AnyRun | Token::Dirs) {
            states[index + 1] = true;
        }
    }
}

/// Per-pattern results for a directory, handed to its children so they need not test the
/// directory's ancestors again (Docker's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentMatches(Vec<bool>);

/// A compiled, ordered pattern list with Docker's semantics.
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
}

impl PatternMatcher {
    /// Builds a matcher: each pattern is trimmed, empty ones dropped, the rest cleaned; a
    /// leading `!` makes an exception. Fails on a lone `!` or a glob syntax error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, IgnoreError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        let mut has_exclusions = false;
        for raw in patterns {
            let trimmed = raw.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            let cleaned = clean_path(trimmed);
            let (exclusion, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(IgnoreError::LoneExclamation),
                Some(rest) => (true, rest.to_owned()),
                None => (false, cleaned.clone()),
            };
            has_exclusions |= exclusion;
            let pattern_compiled = compile(&text)?;
            compiled.push(Pattern {
                text,
                exclusion,
                compiled: pattern_compiled,
            });
        }
        Ok(PatternMatcher {
            patterns: compiled,
            has_exclusions,
        })
    }

    /// The patterns kept, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// True if some pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// Whether `path` is matched: the last applicable pattern wins, and a pattern applies if
    /// it matches the path or any ancestor of it (Docker's `MatchesOrParentMatches`). The
    /// path is used as given, not cleaned.
    pub fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let parent = parent_dir(path);
        let mut matched = false;
        for pattern in &self.patterns {
            // A normal pattern cannot change a match, nor an exception a non-match.
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches_self_or_ancestor(path, &parent)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`PatternMatcher::matches`] during a walk, given the results for the parent
    /// directory (`None` at the top, or when they are unknown), and returning the results
    /// to pass to the children if `path` is a directory (Docker's
    /// `MatchesUsingParentResults`, which BuildKit's context walk uses).
    pub fn matches_in_walk(
        &self,
        path: &str,
        parent: Option<&ParentMatches>,
    ) -> Result<(bool, ParentMatches), IgnoreError> {
        let parent_results = parent.map(|p| p.0.as_slice()).filter(|p| !p.is_empty());
        let parent_path = parent_dir(path);
        let mut matched = false;
        let mut results = vec![false; self.patterns.len()];
        for (index, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent_results
                .and_then(|p| p.get(index).copied())
                .unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = match parent_results {
                    Some(_) => pattern.matches(path)?,
                    None => pattern.matches_self_or_ancestor(path, &parent_path)?,
                };
            }
            results[index] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, ParentMatches(results)))
    }

    /// True if no exception could re-include something below directory `dir`, judged only
    /// from the exceptions' literal prefixes, as BuildKit does to skip a directory.
    fn could_match_below(&self, dir: &str, exclusions: bool) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|pattern| pattern.exclusion == exclusions)
            .any(|pattern| {
                format!("{}/", without_trailing_glob(&pattern.text)).starts_with(&dir_slash)
            })
    }

    /// True if every pattern with the given exception flag is a literal path, perhaps ending
    /// in `/*` or `/**`: only then may BuildKit skip a directory by prefix.
    fn only_prefixes(&self, exclusions: bool) -> bool {
        self.patterns
            .iter()
            .filter(|pattern| pattern.exclusion == exclusions)
            .all(|pattern| !without_trailing_glob(&pattern.text).contains(PATTERN_CHARS))
    }
}

/// Characters that make a pattern more than a literal prefix for BuildKit's walk.
const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

fn without_trailing_glob(text: &str) -> &str {
    let text = text.strip_suffix("/**").unwrap_or(text);
    text.strip_suffix("/*").unwrap_or(text)
}

/// One entry of the build context: its path relative to the context root, written with `/`,
/// and whether it is a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// Relative path, `/`-separated, no leading `/`.
    pub path: String,
    /// True for a directory.
    pub is_dir: bool,
}

/// The include and exclude filter BuildKit applies to the context: exclude patterns come from
/// `.dockerignore`, include patterns from a COPY's source selection (empty for none).
#[derive(Debug, Clone)]
pub struct ContextFilter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
}

impl ContextFilter {
    /// Builds the filter; an empty `include` list means no include filter.
    pub fn new<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<Self, IgnoreError> {
        let include = match include.is_empty() {
            true => None,
            false => Some(PatternMatcher::new(include)?),
        };
        let exclude = match exclude.is_empty() {
            true => None,
            false => Some(PatternMatcher::new(exclude)?),
        };
        Ok(ContextFilter {
            only_prefix_includes: include.as_ref().map_or(true, |m| m.only_prefixes(false)),
            only_prefix_exclude_exceptions: exclude
                .as_ref()
                .map_or(true, |m| m.only_prefixes(true)),
            include,
            exclude,
        })
    }

    /// Whether the file at `path` may be opened through the filter: it is included (or there
    /// is no include filter) and not excluded, each judged with parent matching.
    pub fn allows(&self, path: &str) -> Result<bool, IgnoreError> {
        if let Some(include) = &self.include {
            if !include.matches(path)? {
                return Ok(false);
            }
        }
        match &self.exclude {
            Some(exclude) => Ok(!exclude.matches(path)?),
            None => Ok(true),
        }
    }

    /// Judges one entry of a walk, given its parent directory's [`Verdict::matches`] (`None`
    /// at the top, or when unknown): whether it is kept and, for a directory, whether the
    /// walk must enter it. A directory that fails the filter is still entered when an
    /// exception or include pattern might reach inside; such a directory belongs in the
    /// result only if something below it is kept ([`ContextFilter::select`] does that).
    pub fn judge(
        &self,
        path: &str,
        is_dir: bool,
        parent: Option<&DirMatches>,
    ) -> Result<Verdict, IgnoreError> {
        let mut verdict = Verdict {
            keep: true,
            descend: true,
            matches: DirMatches::default(),
        };
        if let Some(include) = &self.include {
            let (hit, results) = include.matches_in_walk(path, parent.map(|p| &p.include))?;
            verdict.matches.include = results;
            if !hit {
                verdict.keep = false;
                if is_dir && self.only_prefix_includes && !include.could_match_below(path, false) {
                    verdict.descend = false;
                    return Ok(verdict);
                }
            }
        }
        if let Some(exclude) = &self.exclude {
            let (hit, results) = exclude.matches_in_walk(path, parent.map(|p| &p.exclude))?;
            verdict.matches.exclude = results;
            if hit {
                verdict.keep = false;
                if is_dir
                    && self.only_prefix_exclude_exceptions
                    && !(exclude.has_exclusions() && exclude.could_match_below(path, true))
                {
                    verdict.descend = false;
                }
            }
        }
        Ok(verdict)
    }

    /// The entries BuildKit's filtered walk produces, in its order: depth first, each
    /// directory's entries by byte order, a directory before its contents. An entry is
    /// produced if it passes the include filter and is not excluded; a directory that fails
    /// the filter is still produced, just before its first produced descendant, when the
    /// walk had to enter it because an exception or include pattern might reach inside.
    /// Entries whose parent directory is missing from `entries` are judged without parent
    /// results.
    pub fn select<'a>(
        &self,
        entries: &'a [ContextEntry],
    ) -> Result<Vec<&'a ContextEntry>, IgnoreError> {
        let mut ordered: Vec<&ContextEntry> = entries.iter().collect();
        ordered.sort_by(|a, b| walk_order(&a.path, &b.path));
        let mut produced = Vec::new();
        // Directories on the way to the current entry; `pending` ones are produced only
        // once something inside them is.
        let mut open: Vec<OpenDir<'a>> = Vec::new();
        let mut skipped: Option<String> = None;
        for entry in ordered {
            if let Some(prefix) = &skipped {
                if entry.path.starts_with(prefix.as_str()) {
                    continue;
                }
                skipped = None;
            }
            while let Some(last) = open.last() {
                if entry.path.starts_with(&last.path_slash) {
                    break;
                }
                open.pop();
            }
            let parent = open.last();
            let verdict = self.judge(&entry.path, entry.is_dir, parent.map(|p| &p.matches))?;
            if !verdict.descend {
                skipped = Some(format!("{}/", entry.path));
                continue;
            }
            let skip = !verdict.keep;
            if !skip {
                for dir in open.iter_mut().filter(|dir| dir.pending) {
                    dir.pending = false;
                    produced.push(dir.entry);
                }
                produced.push(entry);
            }
            if entry.is_dir {
                open.push(OpenDir {
                    entry,
                    path_slash: format!("{}/", entry.path),
                    matches: verdict.matches,
                    pending: skip,
                });
            }
        }
        Ok(produced)
    }
}

/// A directory the walk is inside.
struct OpenDir<'a> {
    entry: &'a ContextEntry,
    path_slash: String,
    matches: DirMatches,
    pending: bool,
}

/// A directory's per-pattern results for both filters, handed to its children during a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirMatches {
    include: ParentMatches,
    exclude: ParentMatches,
}

/// What [`ContextFilter::judge`] decides for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True if and only if the entry passes the include filter and is not excluded.
    pub keep: bool,
    /// False if and only if the entry is a directory nothing below which can be kept, so a
    /// walk must not enter it.
    pub descend: bool,
    /// The results to pass when judging the directory's children.
    pub matches: DirMatches,
}

/// Depth-first walk order: compare segment by segment, by bytes, so a directory comes right
/// before its contents.
fn walk_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ignore_file() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a\n\n  b  \n", &["a", "b"]),
            ("# c\n #x\n", &["#x"]),
            ("\u{feff}/a\n", &["a"]),
            ("! /x/../y/\n!\n", &["!y", "!"]),
            ("a//b/./c\r\n/\n", &["a/b/c", "/"]),
            ("../a\n", &["../a"]),
        ];
        for (text, expected) in cases {
            assert_eq!(read_ignore_file(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn cleans_paths() {
        let cases = [
            ("", "."),
            ("a/b/", "a/b"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("./a//b", "a/b"),
            ("/", "/"),
        ];
        for (path, expected) in cases {
            assert_eq!(clean_path(path), expected, "{path:?}");
        }
    }

    #[test]
    fn matches_patterns() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.go"], "a.go", true),
            (&["*.go"], "dir/a.go", false),
            (&["dir"], "dir/sub/file", true),
            (&["**/x"], "a/b/x", true),
            (&["**x"], "abx", true),
            (&["**/x*"], "abx", false),
            (&["a/**"], "a", false),
            (&["a/**"], "a/b", true),
            (&["a**b"], "a/c/b", true),
            (&["a**b"], "acb", false),
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep", "keep/x"], "keep/x", true),
            (&["[^a]"], "/", true),
            (&["a/**/*.txt"], "a/b\nc/d.txt", false),
            (&["a\\?"], "a?", true),
            (&["a\\?"], "ab", false),
        ];
        for (patterns, path, expected) in cases {
            let matcher = PatternMatcher::new(patterns).expect("valid patterns");
            assert_eq!(
                matcher.matches(path),
                Ok(*expected),
                "{patterns:?} {path:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_patterns() {
        let cases: &[(&str, PatternProblem)] = &[
            ("[", PatternProblem::UnclosedClass),
            ("a\\", PatternProblem::TrailingEscape),
            ("[]a]", PatternProblem::MisplacedInClass(']')),
            ("[a-b-c]", PatternProblem::MisplacedInClass('-')),
            ("[x-]", PatternProblem::MisplacedInClass(']')),
        ];
        for (pattern, problem) in cases {
            let error = PatternMatcher::new(&[*pattern]).expect_err(pattern);
            assert_eq!(
                error,
                IgnoreError::BadPattern {
                    pattern: (*pattern).to_owned(),
                    problem: *problem
                }
            );
        }
        assert_eq!(PatternMatcher::new(&["! a"]).err(), None);
        for lone in ["!", " ! ", "!/."] {
            assert_eq!(
                PatternMatcher::new(&[lone]).err(),
                Some(IgnoreError::LoneExclamation),
                "{lone:?}"
            );
        }
    }

    #[test]
    fn reversed_range_fails_only_when_consulted() {
        let matcher = PatternMatcher::new(&["a", "[z-a]"]).expect("accepted when built");
        assert_eq!(matcher.matches("a"), Ok(true));
        assert!(matches!(
            matcher.matches("b"),
            Err(IgnoreError::ReversedRange {
                lo: 'z',
                hi: 'a',
                ..
            })
        ));
    }

    #[test]
    fn walk_uses_parent_results() {
        // The walk remembers that the second `a` was not consulted for `a`, so `a/b` stays
        // re-included; the stand-alone check consults it against the ancestor.
        let matcher = PatternMatcher::new(&["a", "!a/b", "a"]).expect("valid");
        let (dir_hit, dir_results) = matcher.matches_in_walk("a", None).expect("no error");
        assert!(dir_hit);
        let (hit, _) = matcher
            .matches_in_walk("a/b", Some(&dir_results))
            .expect("no error");
        assert!(!hit);
        assert_eq!(matcher.matches("a/b"), Ok(true));
    }

    #[test]
    fn selects_context_entries() {
        let entry = |path: &str, is_dir| ContextEntry {
            path: path.to_owned(),
            is_dir,
        };
        let entries = [
            entry("foo2", false),
            entry("foo/bar2", false),
            entry("foo", true),
            entry("bar", false),
            entry("foo/bar3", false),
        ];
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["bar", "foo", "foo/bar2", "foo/bar3", "foo2"]),
            (&[], &["foo*", "!foo/bar2"], &["bar", "foo", "foo/bar2"]),
            (&[], &["foo"], &["bar", "foo2"]),
            (&["foo/bar3"], &[], &["foo", "foo/bar3"]),
            (&["f*"], &["foo/bar3"], &["foo", "foo/bar2", "foo2"]),
        ];
        for (include, exclude, expected) in cases {
            let filter = ContextFilter::new(include, exclude).expect("valid");
            let selected: Vec<&str> = filter
                .select(&entries)
                .expect("no error")
                .iter()
                .map(|e| e.path.as_str())
                .collect();
            assert_eq!(selected, *expected, "{include:?} {exclude:?}");
        }
    }
}
