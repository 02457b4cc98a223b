//! Checkers for single flag and argument values: durations, file modes, sizes, ports, signals,
//! checksums and names.
//!
//! Consumes one value as a string; produces the typed value or a [`ParseErrorKind`] that says
//! what was expected. The syntax stage runs them on values that need no expansion
//! ([`is_literal`]); [`crate::graph`] runs the same functions on the others once they are
//! expanded. Nothing here expands variables or knows where the value came from: callers attach
//! the position.

use std::time::Duration;

use crate::syntax::error::{did_you_mean, ParseErrorKind};

/// Returns true if and only if `word` reads the same before and after shell-word expansion:
/// it holds no `$`, no quote and no `escape` character. Other values are kept as written and
/// checked after expansion. Not in grammar/ as a production: the rule for when section 8
/// checks a value.
pub fn is_literal(word: &str, escape: char) -> bool {
    !word
        .chars()
        .any(|c| matches!(c, '$' | '\'' | '"') || c == escape)
}

/// An invalid-value error (not in grammar/: builds messages).
fn invalid(what: &str, found: &str, expected: &str) -> ParseErrorKind {
    ParseErrorKind::InvalidValue {
        what: what.to_string(),
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

/// What a HEALTHCHECK duration must look like, for messages.
pub const DURATION_EXPECTED: &str =
    "a duration such as 30s, 1m30s or 1h (units ns, us, ms, s, m, h)";

/// Parses a Go duration (`time.ParseDuration`): an optional sign, then one or more
/// `number unit` parts such as `1h30m` or `1.5s`; a bare `0` is allowed. Returns `None` for
/// text Go rejects, for negative durations, and for durations over Go's limit of about 292
/// years.
///
/// ```ebnf
/// duration = [ "+" | "-" ] ( "0" | { number unit }+ ) ;
/// number   = DIGIT+ [ "." DIGIT* ] | "." DIGIT+ ;
/// unit     = "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h" ;
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    const LIMIT: u128 = 1 << 63;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let whole_digits = &rest[..whole_end];
        rest = &rest[whole_end..];
        let mut fraction_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let end = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            fraction_digits = &after_dot[..end];
            rest = &after_dot[end..];
        }
        if whole_digits.is_empty() && fraction_digits.is_empty() {
            return None;
        }
        let unit_end = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_end..];

        let mut whole: u128 = 0;
        for digit in whole_digits.bytes() {
            whole = whole * 10 + u128::from(digit - b'0');
            if whole > LIMIT {
                return None;
            }
        }
        // Go keeps the fraction digits that fit an int64 (the rest cannot change an int64) and scales
        // them in floating point; doing the same keeps results identical, rounding included.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        for digit in fraction_digits.bytes() {
            if fraction > (i64::MAX as u64) / 10 {
                break;
            }
            let next = fraction * 10 + u64::from(digit - b'0');
            if next > i64::MAX as u64 {
                break;
            }
            fraction = next;
            scale *= 10.0;
        }
        if whole > LIMIT / unit {
            return None;
        }
        let mut value = whole * unit;
        if fraction > 0 {
            value += (fraction as f64 * (unit as f64 / scale)) as u128;
            if value > LIMIT {
                return None;
            }
        }
        total += value;
        if total > LIMIT {
            return None;
        }
    }
    if negative {
        return (total == 0).then_some(Duration::ZERO);
    }
    if total >= LIMIT {
        return None;
    }
    u64::try_from(total).ok().map(Duration::from_nanos)
}

/// Formats a duration as Go's `Duration.String` does (`1m30s`, `1h0m0s`, `1.5s`, `500ms`,
/// `10µs`, `0s`), the form BuildKit writes into image history (not in grammar/: the inverse
/// of [`parse_duration`], for output).
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    // `whole.fraction` of `value / 10^precision`, trailing zeros and a bare point dropped.
    let fixed = |value: u128, precision: u32| {
        let scale = 10u128.pow(precision);
        let fraction = format!("{:0width$}", value % scale, width = precision as usize);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            (value / scale).to_string()
        } else {
            format!("{}.{fraction}", value / scale)
        }
    };
    if nanos < 1_000_000_000 {
        let (precision, unit) = match nanos {
            0..=999 => (0, "ns"),
            1_000..=999_999 => (3, "\u{b5}s"),
            _ => (6, "ms"),
        };
        return format!("{}{unit}", fixed(nanos, precision));
    }
    let seconds = nanos / 1_000_000_000;
    let second_text = fixed(seconds % 60 * 1_000_000_000 + nanos % 1_000_000_000, 9);
    match (seconds / 3600, seconds / 60 % 60) {
        (0, 0) => format!("{second_text}s"),
        (0, minutes) => format!("{minutes}m{second_text}s"),
        (hours, minutes) => format!("{hours}h{minutes}m{second_text}s"),
    }
}

/// Serializes an optional duration as [`format_duration`] text, for JSON output.
pub(crate) fn serialize_duration<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format_duration(*duration)),
        None => serializer.serialize_none(),
    }
}

/// Parses an unsigned number the way Go's `strconv.ParseUint(text, radix, 32)` does: digits
/// only (no sign, no prefix, no `_`), at most `u32::MAX` (not in grammar/: the `--mount`
/// `mode`, `uid` and `gid` values of section 8 and octal `chmod`).
pub fn parse_u32(text: &str, radix: u32) -> Option<u32> {
    if text.is_empty() || !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(text, radix).ok()
}

/// Parses a boolean the way Go's `strconv.ParseBool` does: `1 t T TRUE true True` and
/// `0 f F FALSE false False` (not in grammar/: the Go booleans of section 8 `mount`).
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses a size the way Docker's `units.RAMInBytes` does: a decimal number, an optional
/// space, and an optional binary unit `k m g t p` (any case), optionally followed by `i` and
/// `b`: `64m`, `1.5GiB`, `512`. Returns bytes, or `None` when it does not fit that form or an
/// `i64`.
///
/// ```ebnf
/// size = DIGIT+ { "." DIGIT+ } [ " " ] [ ( "k" | "m" | "g" | "t" | "p" ) ] [ "i" ] [ "b" ] ;
/// ```
pub fn parse_size(text: &str) -> Option<u64> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number = &text[..number_end];
    // `\d+(\.\d+)*`: starts and ends with a digit, no empty part between dots.
    if number.is_empty() || number.split('.').any(str::is_empty) {
        return None;
    }
    let mut suffix = text[number_end..]
        .strip_prefix(' ')
        .unwrap_or(&text[number_end..]);
    let mut multiplier: f64 = 1.0;
    if let Some(unit) = suffix.chars().next() {
        let power = match unit.to_ascii_lowercase() {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(power) = power {
            multiplier = 1024f64.powi(power);
            suffix = &suffix[1..];
        }
    }
    suffix = suffix.strip_prefix(['i', 'I']).unwrap_or(suffix);
    suffix = suffix.strip_prefix(['b', 'B']).unwrap_or(suffix);
    if !suffix.is_empty() {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// A checked `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode such as `644`, at most `07777`.
    Octal(u32),
    /// A symbolic mode such as `u+x,go-w`, applied to each file's current mode.
    Symbolic(String),
}

/// Checks a `--chmod` value: an octal mode up to `07777`, or a symbolic mode as chmod(1) takes
/// it, clauses separated by commas.
///
/// ```ebnf
/// chmod = OCTAL+ | chmod_clause { "," chmod_clause } ;
/// ```
///
/// # Errors
/// Anything else, as [`ParseErrorKind::InvalidValue`].
pub fn validate_chmod(text: &str) -> Result<Chmod, ParseErrorKind> {
    const EXPECTED: &str =
        "an octal mode between 0 and 07777 such as 644, or a symbolic mode such as u+x,go-w";
    if let Some(mode) = parse_u32(text, 8) {
        return if mode <= 0o7777 {
            Ok(Chmod::Octal(mode))
        } else {
            Err(invalid("--chmod value", text, EXPECTED))
        };
    }
    if !text.is_empty() && text.split(',').all(chmod_clause) {
        return Ok(Chmod::Symbolic(text.to_string()));
    }
    Err(invalid("--chmod value", text, EXPECTED))
}

/// Returns true if and only if `clause` is one symbolic clause of chmod(1): `[ugoa]*`, then
/// one or more of `+-=`, each followed by `rwxXst` letters or one of `ugo`.
///
/// ```ebnf
/// chmod_clause = { "u" | "g" | "o" | "a" } { ( "+" | "-" | "=" ) ( { "r" | "w" | "x" | "X" | "s" | "t" } | "u" | "g" | "o" ) }+ ;
/// ```
fn chmod_clause(clause: &str) -> bool {
    let actions = clause.trim_start_matches(['u', 'g', 'o', 'a']);
    if actions.is_empty() {
        return false;
    }
    let mut rest = actions;
    while let Some(op) = rest.chars().next() {
        if !matches!(op, '+' | '-' | '=') {
            return false;
        }
        rest = &rest[1..];
        let perms_end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
        let perms = &rest[..perms_end];
        let copies = matches!(perms, "u" | "g" | "o");
        if !copies
            && !perms
                .chars()
                .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
        {
            return false;
        }
        rest = &rest[perms_end..];
    }
    true
}

/// Checks one `EXPOSE` word: `[ip:][hostport:]port[-end][/tcp|udp|sctp]` with ports
/// 0–65535, as Docker's `nat.ParsePortSpec` reads it. Only the container part after the last
/// `:` is checked; the host part is ignored by a build anyway.
///
/// ```ebnf
/// port = [ [ ip ":" ] [ DIGIT+ ] ":" ] DIGIT+ [ "-" DIGIT+ ] [ "/" ( "tcp" | "udp" | "sctp" ) ] ;
/// ```
///
/// # Errors
/// A missing or non-numeric port, a reversed range, or an unknown protocol.
pub fn validate_port(word: &str) -> Result<(), ParseErrorKind> {
    const EXPECTED: &str =
        "a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp";
    let container = word.rsplit(':').next().unwrap_or(word);
    let mut parts = container.split('/');
    let ports = parts.next().unwrap_or_default();
    let protocol = parts
        .next()
        .filter(|proto| !proto.is_empty())
        .unwrap_or("tcp");
    if !matches!(protocol.to_lowercase().as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid("EXPOSE protocol", protocol, "tcp, udp or sctp"));
    }
    let port = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
    };
    let valid = match ports.split_once('-') {
        None => port(ports).is_some(),
        Some((start, end)) => {
            matches!((port(start), port(end)), (Some(start), Some(end)) if start <= end)
        }
    };
    if valid {
        Ok(())
    } else {
        Err(invalid("EXPOSE port", word, EXPECTED))
    }
}

/// The Linux signal names `STOPSIGNAL` accepts, without `SIG` (moby's signal map).
const SIGNALS: [&str; 34] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// Checks a `STOPSIGNAL` value: a positive number, or a signal name with or without `SIG`, in
/// any case (`SIGTERM`, `term`, `RTMIN+3`).
///
/// ```ebnf
/// signal = DIGIT+ | [ "SIG" ] signal_name ;                     (* any case *)
/// ```
///
/// # Errors
/// Anything else, with a hint when a known name is close.
pub fn validate_signal(text: &str) -> Result<(), (ParseErrorKind, Option<String>)> {
    if text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u32>().is_ok_and(|n| n > 0) {
        return Ok(());
    }
    let upper = text.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: &str, sign: char| {
        name.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest.strip_prefix(sign).is_some_and(|n| {
                    n.bytes().all(|b| b.is_ascii_digit())
                        && n.parse::<u8>().is_ok_and(|n| (1..=15).contains(&n))
                })
        })
    };
    if SIGNALS.contains(&name) || realtime("RTMIN", '+') || realtime("RTMAX", '-') {
        return Ok(());
    }
    let names: Vec<String> = SIGNALS.iter().map(|name| format!("SIG{name}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = did_you_mean(&format!("SIG{name}"), &names);
    Err((
        invalid(
            "signal",
            text,
            "a signal name such as SIGTERM, or a positive signal number",
        ),
        hint,
    ))
}

/// Checks an `ADD --checksum` value: a digest `sha256:`, `sha384:` or `sha512:` with the
/// right number of hex digits (HTTP sources), or a commit hash of 7 to 64 hex digits (git
/// sources).
///
/// ```ebnf
/// checksum = ( "sha256:" HEX*64 | "sha384:" HEX*96 | "sha512:" HEX*128 ) | HEX*7..64 ;
/// ```
///
/// # Errors
/// Anything else, as [`ParseErrorKind::InvalidValue`].
pub fn validate_checksum(text: &str) -> Result<(), ParseErrorKind> {
    let is_hex = |digits: &str| {
        digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = match text.split_once(':') {
        Some((algorithm, digits)) => {
            let length = match algorithm {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => 0,
            };
            digits.len() == length && is_hex(digits)
        }
        None => (7..=64).contains(&text.len()) && is_hex(text),
    };
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "--checksum value",
            text,
            "a digest such as sha256:<64 hex digits>, or a git commit hash",
        ))
    }
}

/// Checks a build stage name after `AS` and returns it lower-cased, as BuildKit does: the
/// lower-cased name must match `^[a-z][a-z0-9-_.]*$`.
///
/// ```ebnf
/// stage_name = LOWER { LOWER | DIGIT | "-" | "_" | "." } ;          (* after lower-casing *)
/// ```
///
/// # Errors
/// A name that starts with something other than a letter or holds other symbols.
pub fn validate_stage_name(name: &str) -> Result<String, ParseErrorKind> {
    let lower = name.to_lowercase();
    let mut chars = lower.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(lower)
    } else {
        Err(invalid(
            "build stage name",
            name,
            "a name that starts with a letter and holds only letters, digits, '-', '_' and '.'",
        ))
    }
}

/// Checks an `ARG` name. BuildKit never expands ARG names, so quotes or `$` in one are always
/// a mistake; a name must start with a letter or `_` and hold only letters, digits, `_`, `-`
/// and `.` (the last two are accepted for names only passed to RUN's environment).
///
/// ```ebnf
/// arg_name = ( LETTER | "_" ) { LETTER | DIGIT | "_" | "-" | "." } ;
/// ```
///
/// # Errors
/// A blank name or one with other characters.
pub fn validate_arg_name(name: &str) -> Result<(), ParseErrorKind> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "ARG name",
            name,
            "a name that starts with a letter or '_' and holds only letters, digits, '_', '-' and '.'",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_follows_go() {
        let ms = Duration::from_millis;
        let table = [
            ("30s", Some(Duration::from_secs(30))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1.5s", Some(ms(1500))),
            ("1.s", Some(Duration::from_secs(1))),
            (".5s", Some(ms(500))),
            ("+5ms", Some(ms(5))),
            ("10us", Some(Duration::from_micros(10))),
            ("10\u{b5}s", Some(Duration::from_micros(10))),
            ("10\u{3bc}s", Some(Duration::from_micros(10))),
            ("7ns", Some(Duration::from_nanos(7))),
            ("1h2m3s4ms", Some(Duration::from_millis(3_723_004))),
            ("0", Some(Duration::ZERO)),
            ("-0", Some(Duration::ZERO)),
            ("-0s", Some(Duration::ZERO)),
            (
                "0.3333333333333333333h",
                Some(Duration::from_nanos(1_200_000_000_000)),
            ),
            (
                "2562047h47m16.854775807s",
                Some(Duration::from_nanos(i64::MAX as u64)),
            ),
            ("2562047h47m16.854775808s", None),
            ("9223372036854775808ns", None),
            ("99999999999999999999s", None),
            ("5", None),
            ("", None),
            ("-", None),
            ("s", None),
            (".s", None),
            ("1x", None),
            ("1S", None),
            ("-5s", None),
            ("1s ", None),
            ("1 s", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_duration(text), expected, "duration {text:?}");
        }
    }

    #[test]
    fn format_duration_follows_go() {
        let table = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_micros(10), "10\u{b5}s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_nanos(1_234_567), "1.234567ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_004), "1h2m3.004s"),
            (
                Duration::from_nanos(i64::MAX as u64),
                "2562047h47m16.854775807s",
            ),
        ];
        for (duration, text) in table {
            assert_eq!(format_duration(duration), text, "{duration:?}");
            assert_eq!(parse_duration(text), Some(duration), "{text}");
        }
    }

    #[test]
    fn parse_u32_takes_plain_digits_only() {
        let table = [
            ("0400", 8, Some(0o400)),
            ("777", 8, Some(0o777)),
            ("8", 8, None),
            ("+1", 8, None),
            ("0o7", 8, None),
            ("", 10, None),
            ("1000", 10, Some(1000)),
            ("4294967295", 10, Some(u32::MAX)),
            ("4294967296", 10, None),
            ("1_0", 10, None),
            ("-1", 10, None),
        ];
        for (text, radix, expected) in table {
            assert_eq!(parse_u32(text, radix), expected, "{text:?} base {radix}");
        }
    }

    #[test]
    fn parse_go_bool_accepts_go_spellings() {
        for text in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(text), Some(true), "{text}");
        }
        for text in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(text), Some(false), "{text}");
        }
        for text in ["yes", "tRUE", "", "on"] {
            assert_eq!(parse_go_bool(text), None, "{text}");
        }
    }

    #[test]
    fn parse_size_follows_ram_in_bytes() {
        let table = [
            ("512", Some(512)),
            ("64m", Some(64 << 20)),
            ("64M", Some(64 << 20)),
            ("1k", Some(1024)),
            ("1kb", Some(1024)),
            ("1KiB", Some(1024)),
            ("2 g", Some(2 << 30)),
            ("1.5k", Some(1536)),
            ("1t", Some(1 << 40)),
            ("1p", Some(1 << 50)),
            ("10b", Some(10)),
            ("1.2.3", None),
            ("1..2", None),
            (".5k", None),
            ("", None),
            ("k", None),
            ("10x", None),
            ("1  k", None),
            ("-1", None),
            ("8192p", None),
        ];
        for (text, expected) in table {
            assert_eq!(parse_size(text), expected, "size {text:?}");
        }
    }

    #[test]
    fn validate_chmod_takes_octal_and_symbolic_modes() {
        let table = [
            ("644", Some(Chmod::Octal(0o644))),
            ("0755", Some(Chmod::Octal(0o755))),
            ("7777", Some(Chmod::Octal(0o7777))),
            ("0", Some(Chmod::Octal(0))),
            ("u+x", Some(Chmod::Symbolic("u+x".into()))),
            ("go-w,a+rX", Some(Chmod::Symbolic("go-w,a+rX".into()))),
            ("u=g", Some(Chmod::Symbolic("u=g".into()))),
            ("+t", Some(Chmod::Symbolic("+t".into()))),
            ("u+r-w=x", Some(Chmod::Symbolic("u+r-w=x".into()))),
            ("10000", None),
            ("64a", None),
            ("648", None),
            ("", None),
            ("u", None),
            ("u+z", None),
            ("u+x,", None),
            ("u=gw", None),
        ];
        for (text, expected) in table {
            assert_eq!(validate_chmod(text).ok(), expected, "chmod {text:?}");
        }
        assert_eq!(
            validate_chmod("64a").unwrap_err().to_string(),
            "invalid --chmod value '64a': expected an octal mode between 0 and 07777 such as 644, or a symbolic mode such as u+x,go-w"
        );
    }

    #[test]
    fn validate_port_reads_docker_port_specs() {
        for good in [
            "80",
            "443/tcp",
            "53/udp",
            "132/SCTP",
            "8000-8010",
            "0",
            "65535",
            "80/",
            "127.0.0.1:8080:80",
            "[::1]:80:80/udp",
        ] {
            assert_eq!(validate_port(good), Ok(()), "{good}");
        }
        let table = [
            ("http", "invalid EXPOSE port 'http': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp"),
            ("65536", "invalid EXPOSE port '65536': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp"),
            ("90-80", "invalid EXPOSE port '90-80': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp"),
            ("+80", "invalid EXPOSE port '+80': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp"),
            ("/tcp", "invalid EXPOSE port '/tcp': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp"),
            ("80/icmp", "invalid EXPOSE protocol 'icmp': expected tcp, udp or sctp"),
        ];
        for (word, message) in table {
            assert_eq!(
                validate_port(word).unwrap_err().to_string(),
                message,
                "{word}"
            );
        }
    }

    #[test]
    fn validate_signal_takes_names_and_numbers() {
        for good in [
            "SIGTERM",
            "term",
            "SigKill",
            "9",
            "SIGRTMIN",
            "RTMIN+3",
            "SIGRTMAX-14",
            "USR1",
        ] {
            assert!(validate_signal(good).is_ok(), "{good}");
        }
        let table = [
            ("SIGTREM", Some("did you mean 'SIGTERM'?")),
            ("0", None),
            ("-9", None),
            ("RTMIN+16", None),
            ("RTMAX+1", None),
            ("SIGTERM now", None),
            ("", None),
        ];
        for (text, hint) in table {
            let (kind, found_hint) = validate_signal(text).unwrap_err();
            assert_eq!(found_hint.as_deref(), hint, "{text}");
            assert_eq!(
                kind.to_string(),
                format!("invalid signal '{text}': expected a signal name such as SIGTERM, or a positive signal number")
            );
        }
    }

    #[test]
    fn validate_checksum_takes_digests_and_commits() {
        let sha256 = format!("sha256:{}", "a".repeat(64));
        let sha512 = format!("sha512:{}", "0".repeat(128));
        for good in [
            sha256.as_str(),
            sha512.as_str(),
            "deadbeef",
            &"f".repeat(40),
        ] {
            assert_eq!(validate_checksum(good), Ok(()), "{good}");
        }
        for bad in [
            "sha256:abc",
            "md5:0123",
            &format!("sha256:{}", "A".repeat(64)),
            "abc",
            "xyz1234",
        ] {
            assert!(validate_checksum(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stage_and_arg_names() {
        let stages = [
            ("builder", Some("builder")),
            ("Builder", Some("builder")),
            ("a-b_c.1", Some("a-b_c.1")),
            ("1st", None),
            ("_x", None),
            ("a/b", None),
            ("$NAME", None),
            ("", None),
        ];
        for (name, expected) in stages {
            assert_eq!(
                validate_stage_name(name).ok().as_deref(),
                expected,
                "{name}"
            );
        }
        for good in ["VERSION", "_private", "http_proxy", "node-version", "a.b"] {
            assert_eq!(validate_arg_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1X", "\"THREE", "$X", "A B", "-x"] {
            assert!(validate_arg_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn is_literal_spots_words_that_expansion_changes() {
        let table = [
            ("644", '\\', true),
            ("$MODE", '\\', false),
            ("'644'", '\\', false),
            ("\"644\"", '\\', false),
            ("a\\b", '\\', false),
            ("a\\b", '`', true),
            ("a`b", '`', false),
        ];
        for (word, escape, expected) in table {
            assert_eq!(
                is_literal(word, escape),
                expected,
                "{word:?} with {escape:?}"
            );
        }
    }
}
