//! Variable scopes: which names a word may refer to at a given instruction, with which value,
//! and where each value came from. Global scope (before the first FROM) and stage scope work
//! the way BuildKit's dockerfile2llb works:
//!
//! - The global scope starts with the predefined platform args ([`PLATFORM_ARGS`]; a
//!   `--build-arg` of the same name overrides one), then each global `ARG` in order: its
//!   `--build-arg` value, else its default expanded against the global scope so far. An ARG
//!   with neither adds nothing. FROM lines expand against this scope and nothing else.
//! - A stage on `scratch` or an image starts with the image's `Env` (only `PATH` for scratch);
//!   a stage on an earlier stage starts with that stage's final scope, ARGs included.
//! - Each stage `ARG` in order takes its `--build-arg` value; else its default, expanded
//!   against the stage scope so far (so later names of one ARG instruction see earlier ones);
//!   else, without a default, the global value of the same name (this is how global ARGs and
//!   the platform args are redeclared). A value is added to the environment.
//! - ENV sets names after all its pairs were expanded against the scope before it.
//! - ARG and ENV write one environment, last write wins: ENV overrides an ARG declared before
//!   it, and an ARG overrides an ENV (or an image variable) set before it.
//! - Proxy variables ([`PROXY_ARGS`]) are never in the expansion environment unless declared;
//!   a `--build-arg` for one goes to RUN's environment only.
//!
//! Consumes build-arg values and expanded words; produces lookups for the word lexer. No I/O.

use serde::Serialize;

use std::collections::BTreeMap;

use super::options::BuildOptions;
use super::ArgValues;
use crate::words::Env;

/// The platform args BuildKit defines in the global scope; a stage sees one only after
/// `ARG NAME` redeclares it.
pub const PLATFORM_ARGS: [&str; 8] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// Build args that need no ARG: their `--build-arg` values reach RUN's environment (and are
/// left out of cache keys), matched case-insensitively as BuildKit does.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The default `PATH` BuildKit puts in a stage whose image sets none (not on Windows).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Returns true if and only if `name` is one of the proxy variables, in any case.
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS
        .iter()
        .any(|proxy| proxy.eq_ignore_ascii_case(name))
}

/// Where a variable's current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The base image's config (or the default `PATH`).
    Image,
    /// An ENV instruction.
    Env,
    /// An ARG instruction (in the global scope: a global ARG or a platform arg).
    Arg,
}

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    name: String,
    value: String,
    origin: Origin,
}

/// An ordered set of variables where setting a name replaces its value in place, like
/// BuildKit's `EnvList.AddOrReplace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    bindings: Vec<Binding>,
    /// Where each name is in `bindings`, so that long ENV lists stay linear.
    index: BTreeMap<String, usize>,
}

impl Vars {
    /// Sets `name` to `value`, keeping its place when it is already set.
    pub fn set(&mut self, name: &str, value: &str, origin: Origin) {
        if let Some(binding) = self
            .index
            .get(name)
            .and_then(|at| self.bindings.get_mut(*at))
        {
            binding.value = value.to_string();
            binding.origin = origin;
            return;
        }
        self.index.insert(name.to_string(), self.bindings.len());
        self.bindings.push(Binding {
            name: name.to_string(),
            value: value.to_string(),
            origin,
        });
    }

    /// Where the value of `name` came from, `None` when it is unset.
    pub fn origin(&self, name: &str) -> Option<Origin> {
        self.binding(name).map(|binding| binding.origin)
    }

    /// Every variable in the order first set, with its value.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.bindings
            .iter()
            .map(|binding| (binding.name.as_str(), binding.value.as_str()))
    }

    fn binding(&self, name: &str) -> Option<&Binding> {
        self.index.get(name).and_then(|at| self.bindings.get(*at))
    }
}

impl Env for Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.binding(name).map(|binding| binding.value.as_str())
    }
}

/// The global scope: predefined platform args, then the global ARGs with values.
pub fn platform_args(options: &BuildOptions) -> Vars {
    let build = &options.build_platform;
    let target = &options.target_platform;
    let variant = |platform: &super::Platform| platform.variant.clone().unwrap_or_default();
    let defaults = [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDARCH", build.arch.clone()),
        ("BUILDVARIANT", variant(build)),
        ("TARGETPLATFORM", target.to_string()),
        ("TARGETOS", target.os.clone()),
        ("TARGETARCH", target.arch.clone()),
        ("TARGETVARIANT", variant(target)),
    ];
    let mut vars = Vars::default();
    for (name, value) in defaults {
        let value = options.build_args.get(name).cloned().unwrap_or(value);
        vars.set(name, &value, Origin::Arg);
    }
    vars
}

/// What a stage's words may refer to: its environment and the ARGs it has declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The expansion environment: image variables, ENV and ARG values.
    pub vars: Vars,
    /// ARGs declared so far (a base stage's included), with the value each took (`None`
    /// when it has no value).
    args: ArgValues,
}

impl Scope {
    /// A scope that starts from a base image's environment; `PATH` is added when the image
    /// sets none and the OS is not Windows, as BuildKit does.
    pub fn from_image(env: &[(String, String)], os: &str) -> Scope {
        let mut vars = Vars::default();
        for (name, value) in env {
            vars.set(name, value, Origin::Image);
        }
        if os != "windows" && vars.get("PATH").is_none() {
            vars.set("PATH", DEFAULT_PATH, Origin::Image);
        }
        Scope {
            vars,
            args: ArgValues::new(),
        }
    }

    /// Records `ARG name` with the value it took, and adds the value to the environment.
    pub fn declare(&mut self, name: &str, value: Option<&str>) {
        self.args
            .insert(name.to_string(), value.map(str::to_string));
        if let Some(value) = value {
            self.vars.set(name, value, Origin::Arg);
        }
    }

    /// Returns true if and only if `name` was declared by an ARG in this scope.
    pub fn is_declared(&self, name: &str) -> bool {
        self.args.contains_key(name)
    }

    /// Every declared ARG with the value a RUN sees for it: the environment's value when the
    /// name is set (an ENV may have replaced it), else the declared value.
    pub fn all_args(&self) -> ArgValues {
        self.args
            .iter()
            .map(|(name, declared)| {
                let value = self.vars.get(name).map(str::to_string).or(declared.clone());
                (name.clone(), value)
            })
            .collect()
    }

    /// The declared ARGs among `names` whose value still comes from the ARG (not from a later
    /// ENV), with their values: what a step that referred to `names` depends on.
    pub fn args_among<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> ArgValues {
        names
            .into_iter()
            .filter(|name| self.is_declared(name))
            .filter(|name| matches!(self.vars.origin(name), None | Some(Origin::Arg)))
            .map(|name| (name.clone(), self.vars.get(name).map(str::to_string)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Platform;

    #[test]
    fn vars_replace_in_place_and_track_origin() {
        let mut vars = Vars::default();
        vars.set("A", "1", Origin::Image);
        vars.set("B", "2", Origin::Env);
        vars.set("A", "3", Origin::Arg);
        assert_eq!(vars.pairs().collect::<Vec<_>>(), [("A", "3"), ("B", "2")]);
        assert_eq!(vars.origin("A"), Some(Origin::Arg));
        assert_eq!(vars.origin("C"), None);
        assert_eq!(Env::get(&vars, "B"), Some("2"));
    }

    #[test]
    fn platform_args_take_build_arg_overrides() {
        let mut options = BuildOptions {
            build_platform: Platform::new("linux", "amd64", ""),
            target_platform: Platform::new("linux", "arm64", "v8"),
            ..BuildOptions::default()
        };
        options
            .build_args
            .insert("TARGETOS".into(), "freebsd".into());
        let vars = platform_args(&options);
        let expected = [
            ("BUILDPLATFORM", "linux/amd64"),
            ("BUILDOS", "linux"),
            ("BUILDARCH", "amd64"),
            ("BUILDVARIANT", ""),
            ("TARGETPLATFORM", "linux/arm64/v8"),
            ("TARGETOS", "freebsd"),
            ("TARGETARCH", "arm64"),
            ("TARGETVARIANT", "v8"),
        ];
        assert_eq!(vars.pairs().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn image_scope_gets_a_default_path() {
        let scratch = Scope::from_image(&[], "linux");
        assert_eq!(scratch.vars.get("PATH"), Some(DEFAULT_PATH));
        let image = Scope::from_image(&[("PATH".into(), "/bin".into())], "linux");
        assert_eq!(image.vars.get("PATH"), Some("/bin"));
        assert_eq!(Scope::from_image(&[], "windows").vars.get("PATH"), None);
    }

    #[test]
    fn args_shadowed_by_env_are_not_step_args() {
        let mut scope = Scope::default();
        scope.declare("A", Some("1"));
        scope.declare("B", None);
        scope.declare("C", Some("3"));
        scope.vars.set("C", "env", Origin::Env);
        let names: Vec<String> = ["A", "B", "C", "PATH"].map(String::from).to_vec();
        let used = scope.args_among(&names);
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            [
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), None)
            ]
        );
        let all = scope.all_args();
        assert_eq!(all.get("C"), Some(&Some("env".to_string())));
        assert_eq!(all.len(), 3);
        assert!(is_proxy_arg("Http_Proxy") && !is_proxy_arg("PROXY"));
    }
}
