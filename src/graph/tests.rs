//! Table tests for lowering: ARG scope, expansion sites, step args, references, targets and
//! errors; and the golden renderings under `fixtures/graph/`.

use std::collections::BTreeMap;

use super::scope::DEFAULT_PATH;
use super::*;
use crate::syntax::instruction::{Copy, CopySource, KeyValue, MountType};
use crate::syntax::{parse, Command, Heredoc};

/// `--build-arg` pairs of a table row.
type BuildArgs = Vec<(&'static str, &'static str)>;

/// Step args as a list, for comparing.
type ArgList = Vec<(String, Option<String>)>;

fn options(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    BuildOptions {
        build_args: args
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        target: target.map(str::to_string),
        build_platform: Platform::new("linux", "amd64", ""),
        target_platform: Platform::new("linux", "amd64", ""),
        base_env: BTreeMap::new(),
        base_onbuild: BTreeMap::new(),
    }
}

fn graph_with(text: &str, options: &BuildOptions) -> Result<BuildGraph> {
    let parsed = parse(text.as_bytes()).unwrap_or_else(|error| panic!("{text:?}: {error}"));
    lower(&parsed, options)
}

fn graph(text: &str, args: &[(&str, &str)]) -> BuildGraph {
    graph_with(text, &options(args, None)).unwrap_or_else(|error| panic!("{text:?}: {error:?}"))
}

/// The command of the target's last step.
fn last_command(graph: &BuildGraph) -> &Command {
    let stage = graph.stages.last().expect("a stage");
    &stage.steps.last().expect("a step").instruction.command
}

/// What `WORKDIR <word>` becomes at the end of a stage after `stage` (on scratch), with
/// `global` before the FROM.
fn workdir(global: &str, stage: &str, word: &str, args: &[(&str, &str)]) -> String {
    let text = format!("{global}\nFROM scratch\n{stage}\nWORKDIR {word}\n");
    match last_command(&graph(&text, args)) {
        Command::Workdir(path) => path.clone(),
        other => panic!("not WORKDIR: {other:?}"),
    }
}

#[test]
fn arg_scope_follows_buildkit() {
    // (global ARGs, stage lines, word, build args, expansion)
    let table: Vec<(&str, &str, &str, BuildArgs, &str)> = vec![
        ("ARG V=1", "", "/$V", vec![], "/"),
        ("ARG V=1", "ARG V", "/$V", vec![], "/1"),
        ("ARG V=1", "ARG V", "/$V", vec![("V", "2")], "/2"),
        ("ARG V=1", "ARG V=3", "/$V", vec![], "/3"),
        ("ARG V=1", "ARG V=3", "/$V", vec![("V", "2")], "/2"),
        ("", "ARG V=3", "/$V", vec![("V", "2")], "/2"),
        ("", "ARG V", "/${V-unset}", vec![], "/unset"),
        ("ARG V", "ARG V", "/${V-unset}", vec![], "/unset"),
        ("ARG V", "ARG V", "/$V", vec![("V", "2")], "/2"),
        ("", "", "/${V-unset}", vec![("V", "2")], "/unset"),
        // Later names of one ARG see earlier ones, in a stage and globally.
        ("", "ARG A=1 B=${A}2", "/$B", vec![], "/12"),
        ("ARG A=1 B=${A}2", "ARG B", "/$B", vec![], "/12"),
        ("ARG A=1 B=${A}2", "ARG B", "/$B", vec![("A", "7")], "/72"),
        // A default a build arg overrides is never expanded.
        ("", "ARG V=${X:?boom}", "/$V", vec![("V", "ok")], "/ok"),
        ("ARG V=${X:?boom}", "ARG V", "/$V", vec![("V", "ok")], "/ok"),
        // Platform args: global automatically, in a stage only once declared.
        ("", "", "/${TARGETARCH-unset}", vec![], "/unset"),
        ("", "ARG TARGETARCH", "/$TARGETARCH", vec![], "/amd64"),
        (
            "",
            "ARG TARGETPLATFORM",
            "/$TARGETPLATFORM",
            vec![],
            "/linux/amd64",
        ),
        (
            "",
            "ARG BUILDOS BUILDARCH",
            "/$BUILDOS/$BUILDARCH",
            vec![],
            "/linux/amd64",
        ),
        (
            "",
            "ARG BUILDPLATFORM",
            "/$BUILDPLATFORM",
            vec![],
            "/linux/amd64",
        ),
        ("", "ARG TARGETOS", "/$TARGETOS", vec![], "/linux"),
        (
            "",
            "ARG TARGETVARIANT",
            "/${TARGETVARIANT-unset}",
            vec![],
            "/",
        ),
        (
            "",
            "ARG BUILDVARIANT",
            "/${BUILDVARIANT-unset}",
            vec![],
            "/",
        ),
        (
            "",
            "ARG TARGETARCH",
            "/$TARGETARCH",
            vec![("TARGETARCH", "riscv64")],
            "/riscv64",
        ),
        ("ARG P=$TARGETOS", "ARG P", "/$P", vec![], "/linux"),
        (
            "ARG TARGETOS",
            "ARG TARGETOS",
            "/$TARGETOS",
            vec![],
            "/linux",
        ),
        // Proxy args reach RUN only, unless declared.
        (
            "",
            "",
            "/${HTTP_PROXY-unset}",
            vec![("HTTP_PROXY", "http://p")],
            "/unset",
        ),
        (
            "",
            "ARG HTTP_PROXY",
            "/$HTTP_PROXY",
            vec![("HTTP_PROXY", "http://p")],
            "/http://p",
        ),
        // ARG and ENV share one environment; the later one wins.
        ("", "ARG V=1\nENV V=2", "/$V", vec![("V", "3")], "/2"),
        ("", "ENV V=2\nARG V=1", "/$V", vec![], "/1"),
        ("", "ENV V=2\nARG V", "/$V", vec![], "/2"),
        ("", "ENV E=x\nARG V=$E", "/$V", vec![], "/x"),
        // Within one ENV, later pairs see the environment from before the instruction.
        ("", "ENV A=1\nENV A=2 B=$A", "/$A$B", vec![], "/21"),
        ("", "ENV A=1 B=${A:-unset}", "/$B", vec![], "/unset"),
        // The default PATH of an image without one.
        ("", "", "$PATH", vec![], DEFAULT_PATH),
    ];
    for (global, stage, word, args, expected) in table {
        assert_eq!(
            workdir(global, stage, word, &args),
            expected,
            "global {global:?}, stage {stage:?}, word {word:?}, args {args:?}"
        );
    }
}

#[test]
fn stages_inherit_their_base_stage_scope() {
    let text = "ARG G=g\nFROM scratch AS base\nARG V=1\nENV E=2\nFROM base\nWORKDIR /$V$E${G-}\n";
    let graph = graph(text, &[]);
    assert_eq!(last_command(&graph), &Command::Workdir("/12".into()));
    assert_eq!(graph.stages[1].base, Base::Stage(0));
    let run = graph_with(
        "FROM scratch AS base\nARG V=1\nFROM base\nRUN true\n",
        &options(&[], None),
    )
    .unwrap();
    let args = &run.stages[1].steps[0].args;
    assert_eq!(
        args.get("V"),
        Some(&Some("1".to_string())),
        "RUN sees inherited ARGs"
    );
}

#[test]
fn base_image_env_comes_from_the_options() {
    let mut options = options(&[], None);
    options
        .base_env
        .insert("alpine:3".into(), vec![("HOME".into(), "/root".into())]);
    let text = "FROM alpine:3\nWORKDIR $HOME/${PATH-nopath}\n";
    let graph = graph_with(text, &options).unwrap();
    assert_eq!(
        last_command(&graph),
        &Command::Workdir(format!("/root/{DEFAULT_PATH}"))
    );
}

#[test]
fn from_expands_against_global_scope_only() {
    #[rustfmt::skip]
    let table: Vec<(&str, BuildArgs, Base, &str)> = vec![
        ("ARG IMG=alpine\nFROM $IMG:3\n", vec![], Base::Image("alpine:3".into()), "linux/amd64"),
        ("ARG IMG=alpine\nFROM $IMG:3\n", vec![("IMG", "debian")], Base::Image("debian:3".into()), "linux/amd64"),
        ("FROM ${IMG:-busybox}\n", vec![], Base::Image("busybox".into()), "linux/amd64"),
        ("FROM \"scratch\"\n", vec![], Base::Scratch, "linux/amd64"),
        ("FROM --platform=$BUILDPLATFORM scratch\n", vec![], Base::Scratch, "linux/amd64"),
        ("FROM --platform=linux/arm64 scratch\n", vec![], Base::Scratch, "linux/arm64"),
        ("ARG P=linux/arm/v7\nFROM --platform=$P scratch\n", vec![], Base::Scratch, "linux/arm/v7"),
        ("FROM --platform=$TARGETPLATFORM scratch\n", vec![("TARGETPLATFORM", "linux/s390x")], Base::Scratch, "linux/s390x"),
        // The stage's own ARG is not in scope for the next FROM.
        ("FROM scratch AS a\nARG IMG=busybox\nFROM ${IMG:-alpine}\n", vec![], Base::Image("alpine".into()), "linux/amd64"),
        // FROM a stage: its platform, not --platform's.
        ("FROM --platform=linux/arm64 scratch AS a\nFROM --platform=linux/s390x a\n", vec![], Base::Stage(0), "linux/arm64"),
        ("ARG B=a\nFROM scratch AS a\nFROM $B\n", vec![], Base::Stage(0), "linux/amd64"),
        // Stage names match FROM case-sensitively (BuildKit stores them lower case and looks
        // the FROM word up as is); `FROM x AS x` is the image.
        ("FROM scratch AS a\nFROM A\n", vec![], Base::Image("A".into()), "linux/amd64"),
        ("FROM alpine AS alpine\n", vec![], Base::Image("alpine".into()), "linux/amd64"),
        // A stage named scratch shadows the empty image, as in BuildKit.
        ("FROM busybox AS scratch\nFROM scratch\n", vec![], Base::Stage(0), "linux/amd64"),
    ];
    for (text, args, base, platform) in table {
        let graph = graph(text, &args);
        let stage = graph.stages.last().unwrap();
        assert_eq!(stage.base, base, "{text:?}");
        assert_eq!(stage.platform.to_string(), platform, "{text:?}");
    }
    let graph = graph("ARG IMG=alpine V=3\nFROM $IMG:$V$UNSET\n", &[]);
    let stage = &graph.stages[0];
    let from_args: Vec<(&str, Option<&str>)> = stage
        .from_args
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref()))
        .collect();
    assert_eq!(
        from_args,
        [("IMG", Some("alpine")), ("UNSET", None), ("V", Some("3"))]
    );
    let Command::From(from) = &stage.from.command else {
        panic!("not FROM")
    };
    assert_eq!(from.image, "alpine:3");
}

/// The command `line` becomes at the end of a stage that declares a few ARGs.
fn expanded(line: &str) -> Command {
    let prelude = "FROM scratch AS base\nFROM scratch\nARG X=val U=1000 M=755 K=key S=src P=\"80 53/udp\" G=SIGKILL T=cache\n";
    last_command(&graph(&format!("{prelude}{line}\n"), &[])).clone()
}

/// The command `line` is typed as, unexpanded.
fn written(line: &str) -> Command {
    let parsed = parse(format!("FROM scratch\n{line}\n").as_bytes()).unwrap();
    parsed.instructions.last().unwrap().command.clone()
}

fn copy(sources: &[&str], destination: &str) -> Copy {
    Copy {
        sources: sources
            .iter()
            .map(|path| CopySource::Path {
                path: path.to_string(),
            })
            .collect(),
        destination: destination.into(),
        from: None,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        checksum: None,
        keep_git_dir: false,
        unpack: None,
        json: false,
    }
}

#[test]
fn copy_and_add_expand_paths_and_flags_but_not_from() {
    let table: Vec<(&str, Command)> = vec![
        (
            "COPY --from=base --chown=$U:$U --chmod=$M --exclude=$X --link $S /d/$X",
            Command::Copy(Copy {
                from: Some("base".into()),
                chown: Some("1000:1000".into()),
                chmod: Some("755".into()),
                exclude: vec!["$X".into()],
                link: true,
                ..copy(&["src"], "/d/val")
            }),
        ),
        (
            "COPY --chown=$NOPE --chmod=${NOPE} a b",
            Command::Copy(copy(&["a"], "b")),
        ),
        (
            "COPY [\"$S\", \"/d $X\"]",
            Command::Copy(Copy {
                json: true,
                ..copy(&["src"], "/d val")
            }),
        ),
        (
            "ADD --chown=$U --checksum=${K:+sha256:0000000000000000000000000000000000000000000000000000000000000000} https://example.com/$X.tgz /opt/",
            Command::Add(Copy {
                chown: Some("1000".into()),
                checksum: Some(format!("sha256:{}", "0".repeat(64))),
                ..copy(&["https://example.com/val.tgz"], "/opt/")
            }),
        ),
    ];
    for (line, command) in table {
        assert_eq!(expanded(line), command, "{line}");
    }
}

#[test]
fn copy_heredocs_expand_unless_the_delimiter_is_quoted() {
    let heredoc = |line: &str| -> Heredoc {
        match expanded(line) {
            Command::Copy(Copy { sources, .. }) => match &sources[0] {
                CopySource::Heredoc(doc) => doc.clone(),
                other => panic!("not a heredoc: {other:?}"),
            },
            other => panic!("not COPY: {other:?}"),
        }
    };
    // Quotes and escapes other than `\$` stay as written; `<<-` tabs go before expansion.
    let doc = heredoc("COPY <<EOF /x\n$X 'q' \"${U}\" \\$K\nEOF");
    assert_eq!(doc.content, "val 'q' \"1000\" $K\n");
    let doc = heredoc("COPY <<-EOF /x\n\t\t$X\n\tEOF");
    assert_eq!((doc.content.as_str(), doc.chomp), ("val\n", false));
    let doc = heredoc("COPY <<\"EOF\" /x\n$X\nEOF");
    assert_eq!((doc.content.as_str(), doc.expand), ("$X\n", false));
}

#[test]
fn config_instructions_expand_their_words() {
    let pair = |key: &str, value: &str| (key.to_string(), value.to_string());
    let pairs = |command: Command| -> Vec<(String, String)> {
        match command {
            Command::Env(pairs) | Command::Label(pairs) => pairs
                .into_iter()
                .map(|KeyValue { key, value, .. }| (key, value))
                .collect(),
            other => panic!("not ENV or LABEL: {other:?}"),
        }
    };
    assert_eq!(
        pairs(expanded("ENV $K=$X other=\"$K z\"")),
        [pair("key", "val"), pair("other", "key z")]
    );
    assert_eq!(pairs(expanded("ENV $K $X y")), [pair("key", "val y")]);
    assert_eq!(
        pairs(expanded("LABEL \"$K\"=\"$X z\" 'raw'='$X'")),
        [pair("key", "val z"), pair("raw", "$X")]
    );
    let table: Vec<(&str, Command)> = vec![
        (
            "EXPOSE $P 8080",
            Command::Expose(vec!["80".into(), "53/udp".into(), "8080".into()]),
        ),
        ("STOPSIGNAL $G", Command::Stopsignal("SIGKILL".into())),
        ("USER $U:$U", Command::User("1000:1000".into())),
        ("WORKDIR /w/${X}", Command::Workdir("/w/val".into())),
        (
            "VOLUME $S /v/$X",
            Command::Volume(vec!["src".into(), "/v/val".into()]),
        ),
        ("VOLUME [\"/a/$X\"]", Command::Volume(vec!["/a/val".into()])),
    ];
    for (line, command) in table {
        assert_eq!(expanded(line), command, "{line}");
    }
}

#[test]
fn commands_maintainer_and_onbuild_are_never_expanded() {
    for line in [
        "RUN echo $X",
        "RUN [\"echo\", \"$X\"]",
        "RUN <<EOF\necho $X\nEOF",
        "CMD echo $X",
        "CMD [\"$X\"]",
        "ENTRYPOINT echo $X",
        "SHELL [\"/bin/$X\", \"-c\"]",
        "HEALTHCHECK CMD echo $X",
        "MAINTAINER $X",
        "ONBUILD WORKDIR /$X",
        "ONBUILD COPY --chown=$U a b",
    ] {
        let (expanded, written) = match (expanded(line), written(line)) {
            // The trigger's position differs between the two files.
            (Command::Onbuild(expanded), Command::Onbuild(written)) => {
                (expanded.command, written.command)
            }
            pair => pair,
        };
        assert_eq!(expanded, written, "{line}");
    }
}

#[test]
fn run_mounts_expand_every_value_but_from() {
    let text = "FROM scratch AS base\nFROM scratch\nARG T=cache X=val K=key\nRUN --mount=type=$T,target=/c/$X,id=$K,from=base --mount=target=/ctx --mount=type=tmpfs,target=/t --mount=type=secret,id=$K --mount=type=cache,target=/e echo $X\n";
    let graph = graph(text, &[]);
    let step = graph.stages[1].steps.last().unwrap();
    let Command::Run(run) = &step.instruction.command else {
        panic!("not RUN")
    };
    assert_eq!(
        run.command,
        crate::syntax::instruction::CommandLine::Shell("echo $X".into())
    );
    let first = &step.mounts[0].mount;
    assert_eq!(
        (
            first.kind,
            first.target.as_deref(),
            first.id.as_deref(),
            first.from.as_deref()
        ),
        (MountType::Cache, Some("/c/val"), Some("key"), Some("base"))
    );
    let sources: Vec<Option<Source>> = step
        .mounts
        .iter()
        .map(|mount| mount.source.clone())
        .collect();
    assert_eq!(
        sources,
        [
            Some(Source::Stage(0)),
            Some(Source::Context),
            None,
            None,
            Some(Source::Scratch)
        ]
    );
    assert_eq!(step.mounts[3].mount.id.as_deref(), Some("key"));
    assert_eq!(
        graph.stages[1].dependencies,
        [Dependency {
            stage: 0,
            kind: DependencyKind::MountFrom,
            step: Some(1),
            position: Position { line: 4, column: 5 },
        }]
    );
}

#[test]
fn step_args_follow_buildkit_cache_rules() {
    let prelude = "FROM scratch\nARG A=1 B=2\nENV E=3\nARG C\n";
    let args = |lines: &str| -> Vec<(String, Option<String>)> {
        let graph = graph(&format!("{prelude}{lines}\n"), &[]);
        graph.stages[0]
            .steps
            .last()
            .unwrap()
            .args
            .clone()
            .into_iter()
            .collect()
    };
    let some = |name: &str, value: &str| (name.to_string(), Some(value.to_string()));
    let table: Vec<(&str, ArgList)> = vec![
        (
            "RUN true",
            vec![some("A", "1"), some("B", "2"), ("C".into(), None)],
        ),
        ("WORKDIR /$A$E", vec![some("A", "1")]),
        ("COPY $C x", vec![("C".into(), None)]),
        ("ENV B=$B", vec![some("B", "2")]),
        ("ENV A=x\nWORKDIR /$A", vec![]),
        (
            "ENV A=x\nRUN true",
            vec![some("A", "x"), some("B", "2"), ("C".into(), None)],
        ),
        ("ARG D=$A", vec![some("D", "1")]),
        ("CMD echo $A", vec![]),
        ("LABEL l=$UNDECLARED", vec![]),
    ];
    for (lines, expected) in table {
        assert_eq!(args(lines), expected, "{lines}");
    }
}

#[test]
fn references_resolve_to_stages_images_and_scratch() {
    let text = "FROM scratch AS Builder\nFROM scratch\nCOPY --from=BUILDER a b\nCOPY --from=0 c d\nCOPY --from=alpine:3 e f\nCOPY --from=scratch g h\nADD i j\nCOPY k l\n";
    let graph = graph(text, &[]);
    let stage = &graph.stages[1];
    let sources: Vec<Option<Source>> = stage.steps.iter().map(|step| step.source.clone()).collect();
    assert_eq!(
        sources,
        [
            Some(Source::Stage(0)),
            Some(Source::Stage(0)),
            Some(Source::Image("alpine:3".into())),
            Some(Source::Scratch),
            Some(Source::Context),
            Some(Source::Context),
        ]
    );
    let dependencies: Vec<(usize, DependencyKind, Option<usize>)> = stage
        .dependencies
        .iter()
        .map(|dependency| (dependency.stage, dependency.kind, dependency.step))
        .collect();
    assert_eq!(
        dependencies,
        [
            (0, DependencyKind::CopyFrom, Some(0)),
            (0, DependencyKind::CopyFrom, Some(1))
        ]
    );
    assert_eq!(graph.order(), [0, 1]);
    assert_eq!(graph.stages[0].name.as_deref(), Some("builder"));
}

#[test]
fn target_selects_the_stages_it_needs_and_nothing_else() {
    let text = "FROM scratch AS a\nFROM a AS b\nFROM scratch AS c\nCOPY --from=later x y\nFROM scratch AS d\nCOPY --from=b x y\nFROM scratch AS later\n";
    let table: Vec<(Option<&str>, Vec<usize>, usize)> = vec![
        (None, vec![4], 4),
        (Some("b"), vec![0, 1], 1),
        (Some("B"), vec![0, 1], 1),
        (Some("d"), vec![0, 1, 3], 3),
        (Some("a"), vec![0], 0),
    ];
    for (target, order, index) in table {
        let graph = graph_with(text, &options(&[], target)).unwrap();
        assert_eq!(graph.order(), order, "{target:?}");
        assert_eq!(graph.target, index, "{target:?}");
        assert_eq!(graph.stages.last().map(|stage| stage.index), Some(index));
    }
}

#[test]
fn onbuild_triggers_run_first_in_child_stages_only() {
    let text = "FROM busybox AS tools\nFROM scratch AS base\nONBUILD COPY --from=tools a b\nONBUILD ARG V=1\nFROM base AS child\nWORKDIR /$V\nFROM child\nRUN true\n";
    let graph = graph(text, &[]);
    let base = graph.stage(1).unwrap();
    assert!(base
        .steps
        .iter()
        .all(|step| !step.onbuild && matches!(step.instruction.command, Command::Onbuild(_))));
    let child = graph.stage(2).unwrap();
    let flags: Vec<(bool, &str)> = child
        .steps
        .iter()
        .map(|step| (step.onbuild, step.instruction.keyword()))
        .collect();
    assert_eq!(flags, [(true, "COPY"), (true, "ARG"), (false, "WORKDIR")]);
    assert_eq!(
        child.steps[2].instruction.command,
        Command::Workdir("/1".into())
    );
    assert_eq!(child.steps[0].source, Some(Source::Stage(0)));
    let dependencies: Vec<(usize, DependencyKind, Option<usize>)> = child
        .dependencies
        .iter()
        .map(|dependency| (dependency.stage, dependency.kind, dependency.step))
        .collect();
    assert_eq!(
        dependencies,
        [
            (1, DependencyKind::From, None),
            (0, DependencyKind::CopyFrom, Some(0))
        ]
    );
    let grandchild = graph.stage(3).unwrap();
    assert_eq!(grandchild.steps.len(), 1, "triggers do not carry further");
    assert_eq!(graph.order(), [0, 1, 2, 3]);
}

#[test]
fn unused_build_args_are_reported() {
    let text = "ARG G\nFROM scratch AS unused\nARG ONLY_UNUSED\nFROM scratch\nARG V\n";
    let args = [
        ("FOO", "1"),
        ("V", "2"),
        ("G", "g"),
        ("TARGETARCH", "arm64"),
        ("http_proxy", "http://p"),
        ("ONLY_UNUSED", "x"),
    ];
    let graph = graph(text, &args);
    assert_eq!(
        graph.warnings,
        [GraphWarning::UnusedBuildArgs {
            names: vec!["FOO".into(), "ONLY_UNUSED".into()]
        }]
    );
    assert_eq!(
        graph.warnings[0].to_string(),
        "one or more build-args [FOO ONLY_UNUSED] were not consumed"
    );
    assert_eq!(
        graph.proxy_env.into_iter().collect::<Vec<_>>(),
        [("http_proxy".to_string(), "http://p".to_string())]
    );
    assert!(graph.global_args.contains(&("G".into(), "g".into())));
    assert!(graph
        .global_args
        .contains(&("TARGETARCH".into(), "arm64".into())));
    let quiet = lower(
        &parse(b"FROM scratch\n").unwrap(),
        &options(&[("V", "1")], None),
    );
    assert_eq!(quiet.map(|graph| graph.warnings.len()), Ok(1));
    assert!(graph_with("FROM scratch\n", &options(&[], None))
        .unwrap()
        .warnings
        .is_empty());
}

#[test]
fn errors_name_the_problem_and_point_at_it() {
    let at = |line: usize, column: usize| Some(Position { line, column });
    // (Dockerfile, build args, target, message, hint, position)
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, Vec<(&str, &str)>, Option<&str>, &str, Option<&str>, Option<Position>)> = vec![
        ("FROM scratch AS builder\nFROM scratch AS runtime\n", vec![], Some("buidler"),
         "target stage 'buidler' could not be found: expected the name of a stage", Some("did you mean 'builder'?"), None),
        ("FROM scratch AS builder\nFROM scratch AS runtime\n", vec![], Some("x"),
         "target stage 'x' could not be found: expected the name of a stage", Some("the named stages are: builder, runtime"), None),
        ("FROM scratch\n", vec![], Some("x"),
         "target stage 'x' could not be found: expected the name of a stage", Some("no stage has a name: name one with FROM <image> AS <name>"), None),
        ("FROM scratch AS a\nFROM scratch AS A\n", vec![], None,
         "duplicate stage name 'a': expected each stage name once, it is first used on line 1", Some("give each stage its own name"), at(2, 17)),
        ("FROM b\nFROM scratch AS b\n", vec![], None,
         "stage 0 uses stage 'b' in FROM, which is defined after it: expected a stage defined earlier",
         Some("move stage 'b' above this FROM; for an image of that name, add a tag such as b:latest"), at(1, 6)),
        ("FROM scratch AS a\nCOPY --from=b x y\nFROM scratch AS b\n", vec![], Some("a"),
         "stage 'a' uses stage 'b' in COPY --from, which is defined after it: expected a stage defined earlier",
         Some("move stage 'b' above stage 'a'"), at(2, 6)),
        ("FROM scratch AS a\nRUN --mount=from=b,target=/b true\nFROM scratch AS b\n", vec![], Some("a"),
         "stage 'a' uses stage 'b' in RUN --mount, which is defined after it: expected a stage defined earlier",
         Some("move stage 'b' above stage 'a'"), at(2, 5)),
        ("FROM scratch AS a\nCOPY --from=a x y\n", vec![], None,
         "circular dependency between stages: stage 'a' -> stage 'a'",
         Some("a stage can only use stages defined before it; move what both need into an earlier stage"), at(2, 6)),
        ("FROM scratch\nCOPY --from=0 x y\n", vec![], None,
         "circular dependency between stages: stage 0 -> stage 0",
         Some("a stage can only use stages defined before it; move what both need into an earlier stage"), at(2, 6)),
        ("FROM scratch AS a\nCOPY --from=b x y\nFROM scratch AS b\nCOPY --from=a x y\nFROM scratch AS c\n", vec![], Some("c"),
         "circular dependency between stages: stage 'a' -> stage 'b' -> stage 'a'",
         Some("a stage can only use stages defined before it; move what both need into an earlier stage"), at(4, 6)),
        ("FROM scratch\nCOPY --from=5 x y\n", vec![], None,
         "invalid stage index 5: expected the index of one of the 1 stages (0 to 0)",
         Some("stages are numbered from 0 in the order of their FROM lines"), at(2, 6)),
        ("FROM scratch\nCOPY --from=-1 x y\nFROM scratch\n", vec![], None,
         "invalid stage index -1: expected the index of one of the 2 stages (0 to 1)",
         Some("stages are numbered from 0 in the order of their FROM lines"), at(2, 6)),
        ("FROM scratch AS a\nFROM scratch\nRUN --mount=from=0,target=/x true\n", vec![], None,
         "invalid --mount from '0': expected a stage name, an image or a context, not a stage index",
         Some("use the stage's name: from=a"), at(3, 5)),
        ("FROM scratch\nWORKDIR /a/${X:?is required}\n", vec![], None,
         "failed to process \"/a/${X:?is required}\": X: is required", None, at(2, 12)),
        ("FROM scratch\nARG A=${B:?no}\n", vec![], None,
         "failed to process \"${B:?no}\": B: no", None, at(2, 7)),
        ("ARG A=x B=${A:+${C:?no}}\nFROM scratch\n", vec![], None,
         "failed to process \"${A:+${C:?no}}\": C: no", None, at(1, 16)),
        ("FROM scratch\nENV A=1 B=\"${A\n", vec![], None,
         "failed to process \"\\\"${A\": syntax error: missing '}'", None, at(2, 15)),
        ("ARG IMG\nFROM $IMG\n", vec![], None,
         "base name '$IMG' is empty after expansion: expected an image reference",
         Some("'IMG' is not set: declare it with ARG before the first FROM, or pass --build-arg IMG=<value>"), at(2, 6)),
        ("FROM --platform=$P scratch\n", vec![], None,
         "--platform value '$P' is empty after expansion: expected os/arch[/variant]",
         Some("'P' is not set: declare it with ARG before the first FROM, or pass --build-arg P=<value>"), at(1, 6)),
        ("FROM --platform=linux/amd64/v1/x scratch\n", vec![], None,
         "invalid --platform value 'linux/amd64/v1/x': too many parts: expected os/arch[/variant]", None, at(1, 6)),
        ("FROM scratch\n", vec![("1X", "y")], None,
         "invalid --build-arg name '1X': expected a name that starts with a letter or '_' and holds only letters, digits, '_', '-' and '.'",
         Some("write --build-arg NAME=VALUE with the name of an ARG"), None),
        ("FROM scratch\nENV $NOPE=1\n", vec![], None,
         "ENV name '$NOPE' is empty after expansion: expected a name", None, at(2, 5)),
        ("FROM scratch\nARG M=999\nCOPY --chmod=$M a b\n", vec![], None,
         "invalid --chmod value '999': expected an octal mode between 0 and 07777 such as 644, or a symbolic mode such as u+x,go-w", None, at(3, 6)),
        ("FROM scratch\nARG C=abc\nADD --checksum=$C https://x/y /z\n", vec![], None,
         "invalid --checksum value 'abc': expected a digest such as sha256:<64 hex digits>, or a git commit hash", None, at(3, 5)),
        ("FROM scratch\nARG P=http\nEXPOSE 80 $P\n", vec![], None,
         "invalid EXPOSE port 'http': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp", None, at(3, 11)),
        ("FROM scratch\nARG S=SIGTREM\nSTOPSIGNAL $S\n", vec![], None,
         "invalid signal 'SIGTREM': expected a signal name such as SIGTERM, or a positive signal number", Some("did you mean 'SIGTERM'?"), at(3, 12)),
        ("FROM scratch\nARG T=cahce\nRUN --mount=type=$T,target=/c true\n", vec![], None,
         "invalid --mount type 'cahce': expected bind, cache, tmpfs, secret or ssh", None, at(3, 5)),
        ("FROM scratch\nVOLUME /a $NOPE\n", vec![], None,
         "VOLUME path '$NOPE' is empty after expansion: expected a path", None, at(2, 11)),
    ];
    for (text, args, target, message, hint, position) in table {
        let error = graph_with(text, &options(&args, target)).expect_err(text);
        assert_eq!(error.to_string(), message, "{text:?}");
        assert_eq!(error.hint.as_deref(), hint, "{text:?}");
        assert_eq!(error.position, position, "{text:?}");
    }
}

#[test]
fn stages_the_target_does_not_need_are_not_expanded() {
    let text = "FROM scratch AS a\nWORKDIR ${X:?nope}\nCOPY --from=b x y\nFROM scratch AS b\n";
    let graph = graph(text, &[]);
    assert_eq!(graph.order(), [1]);
    // Their FROM lines are, as in BuildKit.
    let error = graph_with("FROM ${X:?nope}\nFROM scratch\n", &options(&[], None)).unwrap_err();
    assert_eq!(error.position, Some(Position { line: 1, column: 6 }));
}

#[test]
fn errors_on_continuation_lines_point_at_the_word() {
    let text = "FROM scratch\nCOPY a \\\n  ${X:?gone} /dst\n";
    let error = graph_with(text, &options(&[], None)).unwrap_err();
    assert_eq!(error.position.map(|at| at.line), Some(2));
    let text = "FROM scratch\nENV A=1 \\\n  B=${X:?gone}\n";
    let error = graph_with(text, &options(&[], None)).unwrap_err();
    assert_eq!(error.position, Some(Position { line: 3, column: 3 }));
}

/// Reads a fixture's `options` file: one setting per line, `build-arg NAME=VALUE`,
/// `target NAME`, `build-platform P` or `target-platform P`. Both platforms default to
/// linux/amd64 so the output does not depend on the machine.
fn fixture_options(text: &str) -> BuildOptions {
    let mut options = options(&[], None);
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let (setting, value) = line.split_once(' ').unwrap_or((line, ""));
        let local = Platform::new("linux", "amd64", "");
        match setting {
            "build-arg" => {
                let (name, value) = value.split_once('=').unwrap_or((value, ""));
                options.build_args.insert(name.into(), value.into());
            }
            "target" => options.target = Some(value.into()),
            "build-platform" => options.build_platform = Platform::parse(value, &local).unwrap(),
            "target-platform" => options.target_platform = Platform::parse(value, &local).unwrap(),
            other => panic!("unknown fixture option {other:?}"),
        }
    }
    options
}

/// Checks that Graphviz accepts `dot`, when Graphviz is installed.
fn dot_accepts(dot: &str) -> Option<std::result::Result<(), String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tcanon")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(dot.as_bytes()));
    let output = child.wait_with_output().ok()?;
    Some(match (written, output.status.success()) {
        (Some(Ok(())), true) => Ok(()),
        _ => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    })
}

/// Every `fixtures/graph/<case>/` renders to its `expected-dag` and `expected-dot`
/// (`BLESS=1` rewrites them), and Graphviz, when installed, accepts the dot.
#[test]
fn golden_renderings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/graph");
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("fixtures/graph")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "fixtures/graph has {} cases", cases.len());
    let mut checked_dot = 0;
    for case in &cases {
        let read = |name: &str| std::fs::read_to_string(case.join(name)).unwrap_or_default();
        let options = fixture_options(&read("options"));
        let parsed = parse(read("Dockerfile").as_bytes()).expect("fixture parses");
        let graph = lower(&parsed, &options).unwrap_or_else(|error| panic!("{case:?}: {error}"));
        for (name, actual) in [
            ("expected-dag", graph.render_tree()),
            ("expected-dot", graph.render_dot()),
        ] {
            if bless {
                std::fs::write(case.join(name), &actual).expect("write fixture");
            } else {
                assert_eq!(actual, read(name), "{case:?} {name}");
            }
        }
        match dot_accepts(&graph.render_dot()) {
            Some(result) => {
                assert_eq!(result, Ok(()), "{case:?}: dot rejects the output");
                checked_dot += 1;
            }
            None => eprintln!("graph fixtures: dot not installed, Graphviz check skipped"),
        }
    }
    eprintln!(
        "graph fixtures: {}/{} renderings, {checked_dot} checked by dot",
        cases.len(),
        cases.len()
    );
}

#[test]
fn dot_strings_escape_quotes_backslashes_and_newlines() {
    let text = "FROM scratch\nARG X\nLABEL a=\"q\\\"uote\" b=back\\\\slash\nWORKDIR /$X\n";
    let graph = graph(text, &[("X", "a\nb")]);
    let dot = graph.render_dot();
    assert!(
        dot.contains(r#"[label="[2/3] LABEL a=\"q\"uote\" b=back\\slash"];"#),
        "{dot}"
    );
    assert!(dot.contains(r#"[label="[3/3] WORKDIR /a\nb"];"#), "{dot}");
    assert!(graph.render_tree().contains("  [3/3] WORKDIR /a\\nb\n"));
    if let Some(result) = dot_accepts(&dot) {
        assert_eq!(result, Ok(()));
    }
}
