//! Image references with docker's naming rules (distribution/reference, normalized form).
//!
//! Consumes text such as `app`, `user/app:v1`, `localhost:5000/x:t` or `app@sha256:…`;
//! produces a [`Reference`] normalized as docker does: the domain `docker.io` when the first
//! component is not a host, `library/` for single-component docker.io names, the tag `latest`
//! when neither tag nor digest is given. This module must never touch the file system.
//!
//! The grammar followed (distribution/reference):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := host [':' port-number]
//! host             := domain-component ['.' domain-component]* | '[' IPv6address ']'
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number      := /[0-9]+/
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]*/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := "sha256:" /[a-f0-9]{64}/   (the only algorithm kiln stores)
//! ```
//!
//! The first component is a domain if and only if it contains `.` or `:`, is `localhost`, or
//! has an upper-case letter; the name without its domain must be lower case and the whole
//! normalized name at most 255 characters.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry docker assumes for names without a domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag docker assumes for names with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// Why a text is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The text is empty.
    #[error("expected an image name, found nothing")]
    Empty,
    /// The name part (before `:tag` or `@digest`) is empty.
    #[error("expected an image name before {found:?}")]
    MissingName {
        /// The text given.
        found: String,
    },
    /// The text is 64 hex digits, which docker reserves for image ids.
    #[error(
        "invalid repository name {found:?}: 64-character hex strings are image ids, not names"
    )]
    HexRepository {
        /// The text given.
        found: String,
    },
    /// The repository path has upper-case letters.
    #[error("invalid repository name {found:?}: expected lower case")]
    Uppercase {
        /// The repository path.
        found: String,
    },
    /// The domain is not `host[:port]`.
    #[error(
        "invalid registry domain {found:?}: expected host names of letters, digits and '-' \
         separated by '.', or [IPv6], with an optional :port"
    )]
    InvalidDomain {
        /// The domain found.
        found: String,
    },
    /// A path component breaks the path-component rule.
    #[error(
        "invalid repository path component {found:?}: expected lower-case letters and digits \
         separated by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent {
        /// The component found.
        found: String,
    },
    /// The tag breaks `[\w][\w.-]{0,127}`.
    #[error(
        "invalid tag {found:?}: expected a letter, digit or '_', then up to 127 letters, \
         digits, '_', '.' or '-'"
    )]
    InvalidTag {
        /// The tag found.
        found: String,
    },
    /// The digest after `@` is not a sha256 digest.
    #[error("invalid digest {found:?}")]
    InvalidDigest {
        /// The digest text found.
        found: String,
        /// Why it is not a digest.
        #[source]
        source: DigestError,
    },
    /// The normalized name is longer than 255 characters.
    #[error("repository name must not be longer than {NAME_MAX} characters, found {length}")]
    TooLong {
        /// The normalized name's length.
        length: usize,
    },
}

/// A normalized image reference: `domain/path[:tag][@digest]`.
///
/// Invariant: `tag` or `digest` (or both) is present; a bare name gets the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes `text` with docker's rules.
    ///
    /// # Errors
    /// A [`ReferenceError`] saying which part is wrong and what was expected.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexRepository {
                found: text.to_string(),
            });
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let parsed = digest
                    .parse()
                    .map_err(|source| ReferenceError::InvalidDigest {
                        found: digest.to_string(),
                        source,
                    })?;
                (rest, Some(parsed))
            }
            None => (text, None),
        };
        let (name, tag) = split_tag(rest);
        if name.is_empty() {
            return Err(ReferenceError::MissingName {
                found: text.to_string(),
            });
        }
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let (domain, path) = split_domain(name);
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { found: path });
        }
        check_domain(&domain)?;
        for component in path.split('/') {
            check_path_component(component)?;
        }
        let length = domain.len() + 1 + path.len();
        if length > NAME_MAX {
            return Err(ReferenceError::TooLong { length });
        }
        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Returns the registry domain, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Returns the repository path, e.g. `library/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Returns the tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Returns the digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Returns the full repository name, e.g. `docker.io/library/app`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Returns docker's short repository name, e.g. `app`, `user/app` or `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }

    /// Returns docker's short form of the whole reference, e.g. `app:latest`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        self.push_suffix(&mut out);
        out
    }

    /// Returns the same name with `tag` and no digest.
    ///
    /// # Errors
    /// [`ReferenceError::InvalidTag`].
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        check_tag(tag)?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(text)
    }
}

/// Splits `name[:tag]`: a `:` is a tag separator only after the last `/`, since
/// `host:port/x` has one in its domain.
fn split_tag(text: &str) -> (&str, Option<&str>) {
    let slash = text.rfind('/').map_or(0, |i| i + 1);
    match text.rfind(':') {
        Some(colon) if colon >= slash => (&text[..colon], Some(&text[colon + 1..])),
        _ => (text, None),
    }
}

/// Splits off the domain as docker's `splitDockerDomain` does, then normalizes it.
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest.to_string())
        }
        _ => (DEFAULT_DOMAIN, name.to_string()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_PREFIX}{path}")
    } else {
        path
    };
    (domain.to_string(), path)
}

fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let valid = match bytes.split_first() {
        Some((first, rest)) => {
            word(*first)
                && bytes.len() <= TAG_MAX
                && rest.iter().all(|b| word(*b) || *b == b'.' || *b == b'-')
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag {
            found: tag.to_string(),
        })
    }
}

fn check_domain(domain: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidDomain {
        found: domain.to_string(),
    };
    let (host, port) = if let Some(after) = domain.strip_prefix('[') {
        let (inside, rest) = after.split_once(']').ok_or_else(invalid)?;
        let ipv6 = !inside.is_empty()
            && inside.contains(':')
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return Err(invalid());
        }
        match rest {
            "" => ("", None),
            _ => ("", Some(rest.strip_prefix(':').ok_or_else(invalid)?)),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
    }
    if !domain.starts_with('[') && !host.split('.').all(domain_component) {
        return Err(invalid());
    }
    Ok(())
}

fn domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn check_path_component(component: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidPathComponent {
        found: component.to_string(),
    };
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    // alpha-numeric [separator alpha-numeric]*
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(invalid());
        }
        if i == bytes.len() {
            return Ok(());
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[sep_start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return Err(invalid());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn valid_references() {
        let at = |name: &str| format!("{name}@sha256:{HEX}");
        // (input, full normalized form, familiar form)
        let table: Vec<(String, String, String)> = [
            ("app", "docker.io/library/app:latest", "app:latest"),
            ("app:v1", "docker.io/library/app:v1", "app:v1"),
            ("user/app", "docker.io/user/app:latest", "user/app:latest"),
            (
                "user/app:1.0-rc_1",
                "docker.io/user/app:1.0-rc_1",
                "user/app:1.0-rc_1",
            ),
            (
                "docker.io/app",
                "docker.io/library/app:latest",
                "app:latest",
            ),
            (
                "docker.io/library/app",
                "docker.io/library/app:latest",
                "app:latest",
            ),
            (
                "index.docker.io/user/app",
                "docker.io/user/app:latest",
                "user/app:latest",
            ),
            ("docker.io/a/b/c", "docker.io/a/b/c:latest", "a/b/c:latest"),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost/app:latest",
            ),
            (
                "localhost:5000/x:t",
                "localhost:5000/x:t",
                "localhost:5000/x:t",
            ),
            (
                "localhost:5000",
                "docker.io/library/localhost:5000",
                "localhost:5000",
            ),
            (
                "example.com/a/b:1.0",
                "example.com/a/b:1.0",
                "example.com/a/b:1.0",
            ),
            (
                "my-reg.example.com:443/team/app",
                "my-reg.example.com:443/team/app:latest",
                "my-reg.example.com:443/team/app:latest",
            ),
            (
                "[::1]:5000/app",
                "[::1]:5000/app:latest",
                "[::1]:5000/app:latest",
            ),
            (
                "[2001:db8::1]/app",
                "[2001:db8::1]/app:latest",
                "[2001:db8::1]/app:latest",
            ),
            ("Foo/app", "Foo/app:latest", "Foo/app:latest"),
            (
                "a__b/c-d---e.f_g",
                "docker.io/a__b/c-d---e.f_g:latest",
                "a__b/c-d---e.f_g:latest",
            ),
            ("app:_", "docker.io/library/app:_", "app:_"),
            ("app:V1.X", "docker.io/library/app:V1.X", "app:V1.X"),
        ]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .chain([
            (at("app"), at("docker.io/library/app"), at("app")),
            (at("app:v1"), at("docker.io/library/app:v1"), at("app:v1")),
            (
                at("localhost:5000/x"),
                at("localhost:5000/x"),
                at("localhost:5000/x"),
            ),
        ])
        .collect();
        for (input, full, familiar) in &table {
            let reference = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(reference.to_string(), *full, "{input}");
            assert_eq!(reference.familiar(), *familiar, "{input}");
            assert_eq!(
                Reference::parse(full).as_ref(),
                Ok(&reference),
                "{input} reparsed"
            );
        }
    }

    #[test]
    fn parts() {
        let reference =
            Reference::parse(&format!("localhost:5000/a/b:t@sha256:{HEX}")).expect("ok");
        assert_eq!(reference.domain(), "localhost:5000");
        assert_eq!(reference.path(), "a/b");
        assert_eq!(reference.tag(), Some("t"));
        assert_eq!(reference.digest().map(Digest::hex), Some(HEX.to_string()));
        assert_eq!(reference.name(), "localhost:5000/a/b");
        let digest_only = Reference::parse(&format!("app@sha256:{HEX}")).expect("ok");
        assert_eq!(digest_only.tag(), None);
        assert_eq!(digest_only.familiar_name(), "app");
        let retagged = digest_only.with_tag("v2").expect("valid tag");
        assert_eq!(retagged.to_string(), "docker.io/library/app:v2");
        assert!(digest_only.with_tag("-x").is_err());
    }

    #[test]
    fn invalid_references() {
        let long_tag = format!("app:{}", "a".repeat(129));
        let long_name = format!("example.com/{}", "a".repeat(250));
        let bad_hex = "app@sha256:abc".to_string();
        let table: Vec<(String, ReferenceError)> = vec![
            ("".into(), ReferenceError::Empty),
            (
                ":tag".into(),
                ReferenceError::MissingName {
                    found: ":tag".into(),
                },
            ),
            (
                format!("@sha256:{HEX}"),
                ReferenceError::MissingName {
                    found: format!("@sha256:{HEX}"),
                },
            ),
            (
                HEX.into(),
                ReferenceError::HexRepository { found: HEX.into() },
            ),
            (
                "App".into(),
                ReferenceError::Uppercase {
                    found: "library/App".into(),
                },
            ),
            (
                "user/App".into(),
                ReferenceError::Uppercase {
                    found: "user/App".into(),
                },
            ),
            (
                "app:".into(),
                ReferenceError::InvalidTag { found: "".into() },
            ),
            (
                "app:-x".into(),
                ReferenceError::InvalidTag { found: "-x".into() },
            ),
            (
                "app:a+b".into(),
                ReferenceError::InvalidTag {
                    found: "a+b".into(),
                },
            ),
            (
                long_tag.clone(),
                ReferenceError::InvalidTag {
                    found: long_tag[4..].into(),
                },
            ),
            (
                "a//b".into(),
                ReferenceError::InvalidPathComponent { found: "".into() },
            ),
            (
                "user/".into(),
                ReferenceError::InvalidPathComponent { found: "".into() },
            ),
            (
                "-app".into(),
                ReferenceError::InvalidPathComponent {
                    found: "-app".into(),
                },
            ),
            (
                "app-".into(),
                ReferenceError::InvalidPathComponent {
                    found: "app-".into(),
                },
            ),
            (
                "a...b".into(),
                ReferenceError::InvalidPathComponent {
                    found: "a...b".into(),
                },
            ),
            (
                "a___b".into(),
                ReferenceError::InvalidPathComponent {
                    found: "a___b".into(),
                },
            ),
            (
                "a b".into(),
                ReferenceError::InvalidPathComponent {
                    found: "a b".into(),
                },
            ),
            (
                "app:latest:x".into(),
                ReferenceError::InvalidPathComponent {
                    found: "app:latest".into(),
                },
            ),
            (
                "héllo".into(),
                ReferenceError::InvalidPathComponent {
                    found: "héllo".into(),
                },
            ),
            (
                "example.com:port/x".into(),
                ReferenceError::InvalidDomain {
                    found: "example.com:port".into(),
                },
            ),
            (
                "-bad.com/x".into(),
                ReferenceError::InvalidDomain {
                    found: "-bad.com".into(),
                },
            ),
            (
                "bad..com/x".into(),
                ReferenceError::InvalidDomain {
                    found: "bad..com".into(),
                },
            ),
            (
                "[zz::1]/x".into(),
                ReferenceError::InvalidDomain {
                    found: "[zz::1]".into(),
                },
            ),
            (
                "[::1/x".into(),
                ReferenceError::InvalidDomain {
                    found: "[::1".into(),
                },
            ),
            (long_name, ReferenceError::TooLong { length: 262 }),
            (
                bad_hex,
                ReferenceError::InvalidDigest {
                    found: "sha256:abc".into(),
                    source: DigestError::BadLength { found: 3 },
                },
            ),
            (
                "app@md5:00".into(),
                ReferenceError::InvalidDigest {
                    found: "md5:00".into(),
                    source: DigestError::UnsupportedAlgorithm {
                        algorithm: "md5".into(),
                    },
                },
            ),
        ];
        for (input, expected) in &table {
            assert_eq!(Reference::parse(input).as_ref(), Err(expected), "{input}");
        }
    }
}
