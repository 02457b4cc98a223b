//! What a build is asked for, apart from the Dockerfile: build args, the target stage and the
//! platforms. Also the platform type and its parser.
//!
//! Consumes nothing but values; produces [`BuildOptions`] and [`Platform`]. The only thing read
//! from the machine is the compile-time host architecture ([`Platform::host`]); nothing here
//! touches the file system or the process environment.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::syntax::Instruction;

/// An OCI platform: operating system, architecture and optional variant, with the names the
/// image spec uses (`amd64`, `arm64`, `arm/v7`; Go's `GOOS`/`GOARCH` values).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Platform {
    /// `linux`, `windows`, `darwin`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, …
    pub arch: String,
    /// `v7` for `arm/v7`, `v8` for `arm64/v8`; `None` when the architecture has no variant.
    pub variant: Option<String>,
}

/// Operating systems a one-word platform specifier may name (Go's `syslist`, as containerd
/// checks it).
const KNOWN_OS: [&str; 17] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// Architectures a one-word platform specifier may name, after normalisation.
const KNOWN_ARCH: [&str; 24] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// A platform from its parts; an empty variant means none.
    pub fn new(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_string(),
            arch: arch.to_string(),
            variant: (!variant.is_empty()).then(|| variant.to_string()),
        }
    }

    /// The platform kiln was compiled for, with the OCI names: `x86_64` is `amd64`, `aarch64`
    /// is `arm64` with variant `v8` (what containerd's default spec reports on arm64), `x86` is
    /// `386`, `arm` is `arm/v7`, and so on.
    pub fn host() -> Platform {
        Platform::from_rust(std::env::consts::OS, std::env::consts::ARCH)
    }

    /// Maps Rust's `target_os`/`target_arch` names to OCI names.
    fn from_rust(os: &str, arch: &str) -> Platform {
        let os = match os {
            "macos" => "darwin",
            other => other,
        };
        let (arch, variant) = match arch {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "x86" => ("386", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
            "powerpc64" => ("ppc64", ""),
            "powerpc" => ("ppc", ""),
            "loongarch64" => ("loong64", ""),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", ""),
            "mips" if cfg!(target_endian = "little") => ("mipsle", ""),
            "sparc64" => ("sparc64", ""),
            "wasm32" => ("wasm", ""),
            other => (other, ""),
        };
        Platform::new(os, arch, variant)
    }

    /// Parses a platform specifier the way containerd's `platforms.Parse` does:
    /// `os/arch[/variant]`, or a single known OS (the architecture is taken from `local`) or a
    /// single known architecture (the OS is taken from `local`). Names are lower-cased and
    /// normalised (`x86_64`, `x86-64` → `amd64`; `aarch64` → `arm64`; `armhf` → `arm/v7`;
    /// `armel` → `arm/v6`; `i386` → `386`; `macos` → `darwin`), `arm/v7` and `arm64/v8` are
    /// written without the variant when given as two parts, and `arm64` given with an empty
    /// third part gets `v8`.
    ///
    /// # Errors
    /// An empty part, a part with characters other than letters, digits, `_`, `-` (and `.`
    /// after the first part), a wildcard, more than three parts, and a single word that is
    /// neither a known OS nor a known architecture. The error says what was expected.
    pub fn parse(specifier: &str, local: &Platform) -> Result<Platform, String> {
        if specifier.contains('*') {
            return Err("wildcards are not supported: expected os/arch[/variant]".into());
        }
        let parts: Vec<&str> = specifier.split('/').collect();
        if parts.len() > 3 {
            return Err("too many parts: expected os/arch[/variant]".into());
        }
        for (index, part) in parts.iter().enumerate() {
            let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            let valid =
                !part.is_empty() && part.chars().all(|c| allowed(c) || (index > 0 && c == '.'));
            if !valid {
                return Err(format!(
                    "invalid part '{part}': expected letters, digits, '_' or '-' in os/arch[/variant]"
                ));
            }
        }
        let os = normalize_os(parts[0]);
        match parts.as_slice() {
            [_] => {
                if KNOWN_OS.contains(&os.as_str()) {
                    let variant = match local.arch.as_str() {
                        "arm" => local.variant.clone().filter(|variant| variant != "v7"),
                        _ => None,
                    };
                    return Ok(Platform {
                        os,
                        arch: local.arch.clone(),
                        variant,
                    });
                }
                let (arch, variant) = normalize_arch(parts[0], "");
                if KNOWN_ARCH.contains(&arch.as_str()) {
                    let variant = if arch == "arm" && variant == "v7" {
                        String::new()
                    } else {
                        variant
                    };
                    return Ok(Platform::new(&local.os, &arch, &variant));
                }
                Err(format!(
                    "unknown operating system or architecture '{specifier}': expected os/arch[/variant] such as linux/amd64"
                ))
            }
            [_, arch] => {
                let (arch, mut variant) = normalize_arch(arch, "");
                if arch == "arm" && variant == "v7" {
                    variant.clear();
                }
                Ok(Platform::new(&os, &arch, &variant))
            }
            [_, arch, variant] => {
                let (arch, mut variant) = normalize_arch(arch, variant);
                if arch == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Platform::new(&os, &arch, &variant))
            }
            _ => Err("expected os/arch[/variant]".into()),
        }
    }
}

fn normalize_os(os: &str) -> String {
    match os.to_lowercase().as_str() {
        "macos" => "darwin".into(),
        other => other.into(),
    }
}

/// containerd's `normalizeArch`: canonical architecture and variant names.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

/// `os/arch[/variant]`, as containerd's `platforms.Format` writes it.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Everything about a build that is not in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg NAME=VALUE`: values for ARGs, overrides for the predefined platform args,
    /// and the proxy variables.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build, by name (case-insensitive); the last stage when `None`.
    pub target: Option<String>,
    /// The platform the build runs on (`BUILDPLATFORM` and friends).
    pub build_platform: Platform,
    /// The platform the image is for (`TARGETPLATFORM` and friends), and of every stage that
    /// has no `FROM --platform`.
    pub target_platform: Platform,
    /// The `Env` of base images' configs, by image reference as written in FROM (after
    /// expansion), for a caller that has resolved them. A stage on an image missing here
    /// starts with only the default `PATH`, as a stage on `scratch` does.
    pub base_env: BTreeMap<String, Vec<(String, String)>>,
    /// The `OnBuild` triggers of base images' configs, parsed, by image reference as written
    /// in FROM: a stage on such an image runs them before its own instructions.
    pub base_onbuild: BTreeMap<String, Vec<Instruction>>,
}

impl Default for BuildOptions {
    /// No build args, the last stage, and the host as both build and target platform.
    fn default() -> BuildOptions {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            build_platform: Platform::host(),
            target_platform: Platform::host(),
            base_env: BTreeMap::new(),
            base_onbuild: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_oci() {
        let table = [
            ("linux", "x86_64", "linux/amd64"),
            ("linux", "aarch64", "linux/arm64/v8"),
            ("linux", "x86", "linux/386"),
            ("linux", "arm", "linux/arm/v7"),
            ("linux", "s390x", "linux/s390x"),
            ("linux", "riscv64", "linux/riscv64"),
            ("linux", "loongarch64", "linux/loong64"),
            ("macos", "aarch64", "darwin/arm64/v8"),
            ("windows", "x86_64", "windows/amd64"),
        ];
        for (os, arch, expected) in table {
            assert_eq!(
                Platform::from_rust(os, arch).to_string(),
                expected,
                "{os} {arch}"
            );
        }
        assert!(!Platform::host().os.is_empty());
    }

    #[test]
    fn parse_follows_containerd() {
        let amd64 = Platform::new("linux", "amd64", "");
        let arm = Platform::new("linux", "arm", "v6");
        let table: [(&str, &Platform, &str); 18] = [
            ("linux/amd64", &amd64, "linux/amd64"),
            ("Linux/X86_64", &amd64, "linux/amd64"),
            ("linux/x86-64", &amd64, "linux/amd64"),
            ("linux/amd64/v1", &amd64, "linux/amd64"),
            ("linux/amd64/v3", &amd64, "linux/amd64/v3"),
            ("linux/aarch64", &amd64, "linux/arm64"),
            ("linux/arm64/v8", &amd64, "linux/arm64/v8"),
            ("linux/arm64/8", &amd64, "linux/arm64/v8"),
            ("linux/arm64/v9.0", &amd64, "linux/arm64/v9"),
            ("linux/arm", &amd64, "linux/arm"),
            ("linux/arm/7", &amd64, "linux/arm/v7"),
            ("linux/armel", &amd64, "linux/arm/v6"),
            ("linux/armhf", &amd64, "linux/arm"),
            ("linux/i386", &amd64, "linux/386"),
            ("macos/arm64", &amd64, "darwin/arm64"),
            ("windows", &amd64, "windows/amd64"),
            ("linux", &arm, "linux/arm/v6"),
            ("arm64", &amd64, "linux/arm64"),
        ];
        for (specifier, local, expected) in table {
            assert_eq!(
                Platform::parse(specifier, local).map(|p| p.to_string()),
                Ok(expected.to_string()),
                "{specifier}"
            );
        }
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/*",
            "linux amd64",
            "lin.ux/amd64",
            "toaster",
        ] {
            assert!(Platform::parse(bad, &amd64).is_err(), "{bad:?}");
        }
        assert_eq!(
            Platform::parse("toaster", &amd64),
            Err("unknown operating system or architecture 'toaster': expected os/arch[/variant] such as linux/amd64".into())
        );
    }

    #[test]
    fn default_options_use_the_host() {
        let options = BuildOptions::default();
        assert_eq!(options.build_platform, Platform::host());
        assert_eq!(options.target_platform, Platform::host());
        assert!(options.build_args.is_empty() && options.target.is_none());
    }
}
