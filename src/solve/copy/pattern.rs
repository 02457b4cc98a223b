//! Go's `filepath.Match` (the wildcard syntax of COPY and ADD sources) and the `--parents`
//! include matching of fsutil's `prefix.Match`, on `/`-separated paths.
//!
//! Consumes pattern and path strings; produces match decisions. Touches nothing else.

/// Why a pattern cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

/// Returns true if and only if `name` contains a wildcard character (`*`, `?` or `[`) that
/// is not escaped with `\`.
pub fn contains_wildcards(name: &str) -> bool {
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Matches `name` against `pattern` as Go's `filepath.Match` does: `*` is any run of
/// characters except `/`, `?` one character except `/`, `[...]` / `[^...]` a class of
/// characters or `lo-hi` ranges, `\c` the literal `c`. The whole name must match.
///
/// # Errors
/// [`BadPattern`] for a malformed class or a trailing `\`, when the match reaches it (Go
/// reports it the same lazy way).
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0usize, 0usize);
    // Where to resume after the last `*`: pattern index after it, name index it consumed to.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p + 1, n));
                    p += 1;
                    continue;
                }
                _ if n < name.len() => {
                    if let Some(next) = match_one(&pattern, p, name[n])? {
                        p = next;
                        n += 1;
                        continue;
                    }
                }
                _ => {}
            }
        } else if n == name.len() {
            return Ok(true);
        }
        // Mismatch: let the last `*` swallow one more character (never a `/`).
        match star {
            Some((sp, sn)) if sn < name.len() && name[sn] != '/' => {
                star = Some((sp, sn + 1));
                p = sp;
                n = sn + 1;
            }
            _ => {
                // Go still validates the rest of the pattern before reporting no match.
                check_rest(&pattern, p)?;
                return Ok(false);
            }
        }
    }
}

/// Matches one pattern item at `p` (a literal, an escape, `?` or a class) against `c`;
/// returns the index after the item when it matches.
fn match_one(pattern: &[char], p: usize, c: char) -> Result<Option<usize>, BadPattern> {
    match pattern[p] {
        '?' => Ok((c != '/').then_some(p + 1)),
        '\\' => match pattern.get(p + 1) {
            Some(&lit) => Ok((lit == c).then_some(p + 2)),
            None => Err(BadPattern),
        },
        '[' => {
            let (matched, end) = match_class(pattern, p + 1, c)?;
            Ok(matched.then_some(end))
        }
        lit => Ok((lit == c).then_some(p + 1)),
    }
}

/// Reads a class starting after `[`; returns whether `c` is in it and the index after `]`.
fn match_class(pattern: &[char], mut i: usize, c: char) -> Result<(bool, usize), BadPattern> {
    let negated = pattern.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        match pattern.get(i) {
            None => return Err(BadPattern),
            Some(']') if !first => return Ok((matched != negated, i + 1)),
            _ => {}
        }
        first = false;
        let (lo, next) = class_char(pattern, i)?;
        i = next;
        let mut hi = lo;
        if pattern.get(i) == Some(&'-') {
            let (h, next) = class_char(pattern, i + 1)?;
            hi = h;
            i = next;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

/// One character of a class, possibly escaped; `-` and `]` unescaped are errors here.
fn class_char(pattern: &[char], i: usize) -> Result<(char, usize), BadPattern> {
    match pattern.get(i) {
        None | Some('-') | Some(']') => Err(BadPattern),
        Some('\\') => pattern.get(i + 1).map(|&c| (c, i + 2)).ok_or(BadPattern),
        Some(&c) => Ok((c, i + 1)),
    }
}

/// Validates the pattern from `p` on, as Go does after a failed match.
fn check_rest(pattern: &[char], mut p: usize) -> Result<(), BadPattern> {
    while p < pattern.len() {
        match pattern[p] {
            '\\' => {
                if p + 1 >= pattern.len() {
                    return Err(BadPattern);
                }
                p += 2;
            }
            '[' => {
                let (_, end) = match_class(pattern, p + 1, '\0')?;
                p = end;
            }
            _ => p += 1,
        }
    }
    Ok(())
}

/// How a path relates to a `--parents` include pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// The path matches the whole pattern: it and everything below it are copied.
    Full,
    /// The path matches a leading part of the pattern: something below it may match.
    Partial,
    /// Nothing at or below the path can match.
    No,
}

/// Matches `path` against the include `pattern` component by component, `**` standing for
/// any number of components (fsutil `prefix.Match`). Malformed components never match.
pub fn include_match(pattern: &str, path: &str) -> Include {
    let pattern: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    match_components(&pattern, &path)
}

fn match_components(pattern: &[&str], path: &[&str]) -> Include {
    match (pattern.first(), path.first()) {
        (None, _) => Include::Full,
        (Some(&"**"), _) => {
            // `**` may take zero or more components; the best outcome wins.
            let mut best = match_components(&pattern[1..], path);
            for skip in 1..=path.len() {
                if best == Include::Full {
                    break;
                }
                let next = match_components(&pattern[1..], &path[skip..]);
                if next == Include::Full || best == Include::No {
                    best = next;
                }
            }
            if best == Include::No {
                Include::Partial
            } else {
                best
            }
        }
        (Some(_), None) => Include::Partial,
        (Some(first), Some(name)) => {
            if go_match(first, name).unwrap_or(false) {
                match_components(&pattern[1..], &path[1..])
            } else {
                Include::No
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadPattern)),
            ("[-]", "-", Err(BadPattern)),
            ("[x-]", "x", Err(BadPattern)),
            ("[a-b-c]", "a", Err(BadPattern)),
            ("[", "a", Err(BadPattern)),
            ("[^", "a", Err(BadPattern)),
            ("a[", "a", Err(BadPattern)),
            ("a[", "ab", Err(BadPattern)),
            ("*x", "xxx", Ok(true)),
            ("", "", Ok(true)),
            ("", "a", Ok(false)),
            ("*.txt", ".hidden.txt", Ok(true)),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                go_match(pattern, name),
                *expected,
                "{pattern:?} vs {name:?}"
            );
        }
    }

    #[test]
    fn wildcards_and_includes() {
        assert!(contains_wildcards("a/*.txt"));
        assert!(contains_wildcards("[ab]"));
        assert!(!contains_wildcards("a\\*b"));
        assert!(!contains_wildcards("plain/path"));
        let cases = [
            ("a/b/c.txt", "a", Include::Partial),
            ("a/b/c.txt", "a/b/c.txt", Include::Full),
            ("a/b/c.txt", "a/x", Include::No),
            ("a/*/c.txt", "a/q/c.txt", Include::Full),
            ("**/c.txt", "x/y/c.txt", Include::Full),
            ("**/c.txt", "x/y", Include::Partial),
            ("a", "a/deep/file", Include::Full),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                include_match(pattern, path),
                expected,
                "{pattern} vs {path}"
            );
        }
    }
}
