//! Lowering: typed instructions to stages and steps, with ARG/ENV scoping, variable expansion
//! where BuildKit applies it, stage references and target selection.
//!
//! Consumes a [`Parsed`] Dockerfile and [`BuildOptions`]; produces a [`BuildGraph`]. The order
//! of work is BuildKit's: global ARGs, then every FROM line (errors there fail the build even
//! for stages the target does not need), then every stage's `--from` references and a check
//! for loops among them, then the target and the stages it needs, then the needed stages'
//! instructions, in order. Words of stages the target does not need are never expanded, so
//! their expansion errors do not matter, as in BuildKit. Never does I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{GraphError, GraphErrorKind, Result};
use super::options::{BuildOptions, Platform};
use super::scope::{is_proxy_arg, platform_args, Origin, Scope, Vars, PLATFORM_ARGS};
use super::{
    describe, ArgValues, Base, BuildGraph, Dependency, DependencyKind, GraphWarning, Source, Stage,
    Step, StepMount,
};
use crate::syntax::error::nearest;
use crate::syntax::instruction::values::{
    validate_arg_name, validate_checksum, validate_chmod, validate_port, validate_signal,
};
use crate::syntax::instruction::{
    ArgDeclaration, Copy, CopySource, From, KeyValue, MountType, ResolvedMount, Run,
};
use crate::syntax::{Command, Instruction, Parsed, Position};
use crate::words::{Lexer, WordError};

/// Lowers a parsed Dockerfile to the graph of the stages the target needs: the graph stage's
/// entry point.
///
/// Expansion follows BuildKit: FROM image and `--platform` against the global scope only;
/// in a stage, ADD/COPY sources, destination, `--chown`, `--chmod`, ADD `--checksum`, COPY
/// heredoc bodies whose delimiter was not quoted (quotes kept), ENV and LABEL keys and
/// values, ARG defaults, EXPOSE (split into words), STOPSIGNAL, USER, VOLUME, WORKDIR and RUN
/// `--mount` values other than `from`; never `COPY --from`, commands of RUN, CMD, ENTRYPOINT,
/// SHELL and HEALTHCHECK, RUN heredocs, MAINTAINER or ONBUILD. Scoping is described in
/// [`super::scope`].
///
/// # Errors
/// A `--build-arg` name no ARG could have; an expansion error (located at the word); a FROM
/// whose image is empty after expansion or that names a later stage; an invalid
/// `--platform`; duplicate stage names; a `COPY --from` index with no stage; a numeric
/// `RUN --mount` from; a loop among stage references; an unknown `--target`; a needed stage
/// that refers to a later one; and values that are invalid once expanded (`--chmod`, ports,
/// signals, mount options).
pub fn lower(parsed: &Parsed, options: &BuildOptions) -> Result<BuildGraph> {
    check_build_args(options)?;
    let lexer = Lexer::new(parsed.dockerfile.escape);
    let (global_instructions, stage_instructions) = split_stages(&parsed.instructions);

    let mut consumed: BTreeSet<String> = BTreeSet::new();
    let mut global = platform_args(options);
    for instruction in global_instructions {
        if let Command::Arg(declarations) = &instruction.command {
            lower_global_arg(
                instruction,
                declarations,
                &mut global,
                options,
                lexer,
                &mut consumed,
            )?;
        }
    }

    let names = StageNames::new(&stage_instructions)?;
    let mut headers = Vec::with_capacity(stage_instructions.len());
    for (index, stage) in stage_instructions.iter().enumerate() {
        headers.push(lower_from(index, stage, &names, &global, options, lexer)?);
    }
    let references = headers
        .iter()
        .map(|header| stage_references(header, &headers, &names))
        .collect::<Result<Vec<_>>>()?;
    check_cycles(&headers, &references)?;
    let target = select_target(options, &names)?;
    let needed = needed_stages(target, &headers, &references)?;

    let mut context = Context {
        options,
        lexer,
        global: &global,
        names: &names,
        consumed: &mut consumed,
    };
    let mut stages: Vec<Stage> = Vec::with_capacity(needed.len());
    // What a stage built on a lowered stage starts from: its platform and final scope.
    let mut ends: BTreeMap<usize, (Platform, Scope)> = BTreeMap::new();
    for index in needed {
        let header = &headers[index];
        let base = match header.base {
            Base::Stage(base) => ends.get(&base).cloned(),
            _ => None,
        };
        let triggers = inherited_triggers(header, &headers);
        let (stage, scope) =
            lower_stage(&mut context, header, &triggers, &references[index], base)?;
        ends.insert(index, (stage.platform.clone(), scope));
        stages.push(stage);
    }

    let unused: Vec<String> = options
        .build_args
        .keys()
        .filter(|name| {
            !consumed.contains(*name)
                && !PLATFORM_ARGS.contains(&name.as_str())
                && !is_proxy_arg(name)
                // The build itself reads it (created times and the mtime clamp).
                && name.as_str() != "SOURCE_DATE_EPOCH"
        })
        .cloned()
        .collect();
    let warnings = if unused.is_empty() {
        Vec::new()
    } else {
        vec![GraphWarning::UnusedBuildArgs { names: unused }]
    };
    Ok(BuildGraph {
        stages,
        target,
        global_args: global
            .pairs()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        proxy_env: options
            .build_args
            .iter()
            .filter(|(name, _)| is_proxy_arg(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        warnings,
    })
}

/// A `--build-arg` must be something an ARG could declare, or it could never be used.
fn check_build_args(options: &BuildOptions) -> Result<()> {
    for name in options.build_args.keys() {
        if validate_arg_name(name).is_err() {
            return Err(GraphError::new(
                GraphErrorKind::InvalidBuildArg { name: name.clone() },
                None,
            )
            .with_hint("write --build-arg NAME=VALUE with the name of an ARG"));
        }
    }
    Ok(())
}

/// A stage as written: its FROM and the instructions up to the next FROM.
struct RawStage<'a> {
    instruction: &'a Instruction,
    from: &'a From,
    body: &'a [Instruction],
}

/// The instructions before the first FROM (only ARGs, the syntax stage checks), and the
/// stages.
fn split_stages(instructions: &[Instruction]) -> (&[Instruction], Vec<RawStage<'_>>) {
    let mut global_end = instructions.len();
    let mut stages: Vec<RawStage<'_>> = Vec::new();
    let mut body_start = 0;
    for (at, instruction) in instructions.iter().enumerate() {
        let Command::From(from) = &instruction.command else {
            continue;
        };
        match stages.last_mut() {
            Some(previous) => previous.body = &instructions[body_start..at],
            None => global_end = at,
        }
        stages.push(RawStage {
            instruction,
            from,
            body: &[],
        });
        body_start = at + 1;
    }
    if let Some(last) = stages.last_mut() {
        last.body = &instructions[body_start.min(instructions.len())..];
    }
    (&instructions[..global_end], stages)
}

/// The names of all stages, by index and by name.
struct StageNames {
    names: Vec<Option<String>>,
    by_name: BTreeMap<String, usize>,
}

impl StageNames {
    /// Reads every stage's name, checking that no name is used twice.
    fn new(stages: &[RawStage<'_>]) -> Result<StageNames> {
        let mut names = StageNames {
            names: Vec::with_capacity(stages.len()),
            by_name: BTreeMap::new(),
        };
        for (index, stage) in stages.iter().enumerate() {
            if let Some(name) = &stage.from.alias {
                if let Some(&first) = names.by_name.get(name) {
                    return Err(GraphError::at(
                        GraphErrorKind::DuplicateStage {
                            name: name.clone(),
                            first_line: stages[first].instruction.position.line,
                        },
                        stage
                            .from
                            .alias_position
                            .unwrap_or(stage.instruction.position),
                    )
                    .with_hint("give each stage its own name"));
                }
                names.by_name.insert(name.clone(), index);
            }
            names.names.push(stage.from.alias.clone());
        }
        Ok(names)
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn get(&self, index: usize) -> Option<&str> {
        self.names.get(index).and_then(Option::as_deref)
    }

    /// The stage named exactly `name` (names are stored lower case).
    fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The stage named `name` in any case, as `--from` and `--target` look names up.
    fn find_any_case(&self, name: &str) -> Option<usize> {
        self.find(&name.to_lowercase())
    }

    fn describe(&self, index: usize) -> String {
        describe(index, self.get(index))
    }
}

/// `ARG` before the first FROM: each name takes its `--build-arg` value, else its default
/// expanded against the global scope so far; a name with neither stays unset.
fn lower_global_arg(
    instruction: &Instruction,
    declarations: &[ArgDeclaration],
    global: &mut Vars,
    options: &BuildOptions,
    lexer: Lexer,
    consumed: &mut BTreeSet<String>,
) -> Result<()> {
    let mut words = Words::new(lexer, instruction);
    for declaration in declarations {
        consumed.insert(declaration.name.clone());
        let value = match (
            options.build_args.get(&declaration.name),
            &declaration.default,
        ) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(default)) => Some(words.word(
                global,
                default,
                declaration.position,
                declaration.name.len(),
            )?),
            (None, None) => None,
        };
        if let Some(value) = value {
            global.set(&declaration.name, &value, Origin::Arg);
        }
    }
    Ok(())
}

/// A stage as far as its FROM line: everything known before any stage is lowered.
struct Header<'a> {
    index: usize,
    name: Option<String>,
    /// The FROM instruction, expanded.
    from: Instruction,
    /// The global args the FROM line referred to.
    from_args: ArgValues,
    base: Base,
    /// `--platform`, parsed.
    platform: Option<Platform>,
    /// The instructions after the FROM.
    body: &'a [Instruction],
}

/// `from = "FROM" flags image ("AS" name)?`: expands the image and `--platform` against the
/// global scope and decides the base: an earlier stage of that name, `scratch`, or an image.
///
/// # Errors
/// An expansion error, an image or platform that expands to nothing, an invalid platform, and
/// an image word that names a later stage.
fn lower_from<'a>(
    index: usize,
    stage: &RawStage<'a>,
    names: &StageNames,
    global: &Vars,
    options: &BuildOptions,
    lexer: Lexer,
) -> Result<Header<'a>> {
    let (instruction, from) = (stage.instruction, stage.from);
    let mut words = Words::new(lexer, instruction);
    let image = words.word(global, &from.image, instruction.args_position, 0)?;
    if image.is_empty() {
        let error = GraphError::at(
            GraphErrorKind::EmptyBase {
                expression: from.image.clone(),
            },
            instruction.args_position,
        );
        return Err(error.with_hint_opt(unset_hint(&words.unmatched)));
    }
    let mut platform = None;
    let mut expanded_platform = None;
    if let Some(expression) = &from.platform {
        let at = instruction
            .flag_position("platform")
            .unwrap_or(instruction.position);
        let before = words.unmatched.clone();
        let value = words.word(global, expression, at, 0)?;
        if value.is_empty() {
            let fresh: BTreeSet<String> = words.unmatched.difference(&before).cloned().collect();
            return Err(GraphError::at(
                GraphErrorKind::EmptyPlatform {
                    expression: expression.clone(),
                },
                at,
            )
            .with_hint_opt(unset_hint(&fresh)));
        }
        let parsed = Platform::parse(&value, &options.build_platform).map_err(|reason| {
            GraphError::at(
                GraphErrorKind::InvalidPlatform {
                    value: value.clone(),
                    reason,
                },
                at,
            )
        })?;
        platform = Some(parsed);
        expanded_platform = Some(value);
    }

    let base = match names.find(&image) {
        Some(stage) if stage < index => Base::Stage(stage),
        Some(stage) if stage > index => {
            return Err(GraphError::at(
                GraphErrorKind::StageDefinedLater {
                    user: names.describe(index),
                    stage: names.describe(stage),
                    via: "FROM",
                },
                instruction.args_position,
            )
            .with_hint(format!(
                "move stage '{image}' above this FROM; for an image of that name, add a tag such as {image}:latest"
            )));
        }
        // `FROM alpine AS alpine` is the image, as in BuildKit: a stage is registered only
        // after its own FROM is read.
        _ if image == "scratch" => Base::Scratch,
        _ => Base::Image(image.clone()),
    };

    let mut expanded = instruction.clone();
    expanded.command = Command::From(From {
        image,
        platform: expanded_platform,
        ..from.clone()
    });
    let from_args = words
        .matched
        .iter()
        .chain(&words.unmatched)
        .map(|name| {
            (
                name.clone(),
                crate::words::Env::get(global, name).map(str::to_string),
            )
        })
        .collect();
    Ok(Header {
        index,
        name: names.get(index).map(str::to_string),
        from: expanded,
        from_args,
        base,
        platform,
        body: stage.body,
    })
}

/// "'X' is not set …" for the first variable that expanded to nothing.
fn unset_hint(unmatched: &BTreeSet<String>) -> Option<String> {
    unmatched.iter().next().map(|name| {
        format!(
            "'{name}' is not set: declare it with ARG before the first FROM, or pass --build-arg {name}=<value>"
        )
    })
}

/// A reference from one stage to another, found before any expansion (`--from` and mount
/// `from` are never expanded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reference {
    stage: usize,
    kind: DependencyKind,
    step: usize,
    position: Position,
}

/// The ONBUILD triggers a stage inherits: those written in its base stage, which run before
/// its own instructions (BuildKit does not carry them further down).
fn inherited_triggers<'a>(header: &Header<'_>, headers: &'a [Header<'a>]) -> Vec<&'a Instruction> {
    let Base::Stage(base) = header.base else {
        return Vec::new();
    };
    headers[base]
        .body
        .iter()
        .filter_map(|instruction| match &instruction.command {
            Command::Onbuild(trigger) => Some(trigger.as_ref()),
            _ => None,
        })
        .collect()
}

/// Every `COPY --from` and `RUN --mount=from=` of a stage (inherited triggers included) that
/// names a stage, with the step it belongs to.
fn stage_references(
    header: &Header<'_>,
    headers: &[Header<'_>],
    names: &StageNames,
) -> Result<Vec<Reference>> {
    let steps = inherited_triggers(header, headers)
        .into_iter()
        .chain(header.body.iter());
    let mut references = Vec::new();
    for (step, instruction) in steps.enumerate() {
        match &instruction.command {
            Command::Copy(copy) => {
                if let Some(from) = &copy.from {
                    let at = instruction
                        .flag_position("from")
                        .unwrap_or(instruction.position);
                    if let Source::Stage(stage) = copy_source(from, names, at)? {
                        references.push(Reference {
                            stage,
                            kind: DependencyKind::CopyFrom,
                            step,
                            position: at,
                        });
                    }
                }
            }
            Command::Run(run) => {
                for mount in &run.mounts {
                    if let Some(from) = mount.from() {
                        if let Source::Stage(stage) =
                            mount_source_name(from, names, mount.position)?
                        {
                            references.push(Reference {
                                stage,
                                kind: DependencyKind::MountFrom,
                                step,
                                position: mount.position,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(references)
}

/// Go's `strconv.Atoi` on a 64-bit platform: an optional sign and decimal digits.
fn go_atoi(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `COPY --from=<value>`: an index (any number, as BuildKit tries `Atoi` first), a stage
/// name (case-insensitive), `scratch`, or else an image or named context.
fn copy_source(from: &str, names: &StageNames, at: Position) -> Result<Source> {
    if let Some(index) = go_atoi(from) {
        return match usize::try_from(index)
            .ok()
            .filter(|index| *index < names.len())
        {
            Some(index) => Ok(Source::Stage(index)),
            None => Err(GraphError::at(
                GraphErrorKind::InvalidStageIndex {
                    index: from.to_string(),
                    count: names.len(),
                    last: names.len().saturating_sub(1),
                },
                at,
            )
            .with_hint("stages are numbered from 0 in the order of their FROM lines")),
        };
    }
    Ok(named_source(from, names))
}

/// A stage by name, `scratch`, or an image.
fn named_source(from: &str, names: &StageNames) -> Source {
    match names.find_any_case(from) {
        Some(stage) => Source::Stage(stage),
        None if from == "scratch" => Source::Scratch,
        None => Source::Image(from.to_string()),
    }
}

/// `RUN --mount=from=<value>`: BuildKit looks mount sources up by name only, so a number
/// would silently become an image; kiln rejects it.
fn mount_source_name(from: &str, names: &StageNames, at: Position) -> Result<Source> {
    if let Some(index) = go_atoi(from) {
        let hint = usize::try_from(index)
            .ok()
            .and_then(|index| names.get(index))
            .map_or_else(
                || "name the stage with FROM <image> AS <name> and use from=<name>".to_string(),
                |name| format!("use the stage's name: from={name}"),
            );
        return Err(GraphError::at(
            GraphErrorKind::MountFromIndex {
                from: from.to_string(),
            },
            at,
        )
        .with_hint(hint));
    }
    Ok(named_source(from, names))
}

/// Rejects loops among stage references, for all stages, as BuildKit's
/// `validateCircularDependency` does. Depth-first search without recursion.
fn check_cycles(headers: &[Header<'_>], references: &[Vec<Reference>]) -> Result<()> {
    let edges: Vec<Vec<(usize, Position)>> = headers
        .iter()
        .zip(references)
        .map(|(header, references)| {
            let base = match header.base {
                Base::Stage(stage) => Some((stage, header.from.args_position)),
                _ => None,
            };
            base.into_iter()
                .chain(
                    references
                        .iter()
                        .map(|reference| (reference.stage, reference.position)),
                )
                .collect()
        })
        .collect();
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; headers.len()];
    for start in 0..headers.len() {
        if marks[start] != Mark::New {
            continue;
        }
        marks[start] = Mark::Open;
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let Some(&(to, position)) = edges[node].get(next) else {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match marks[to] {
                Mark::New => {
                    marks[to] = Mark::Open;
                    stack.push((to, 0));
                }
                Mark::Open => {
                    let begin = stack.iter().position(|(open, _)| *open == to).unwrap_or(0);
                    let path: Vec<String> = stack[begin..]
                        .iter()
                        .map(|(stage, _)| *stage)
                        .chain([to])
                        .map(|stage| describe(stage, headers[stage].name.as_deref()))
                        .collect();
                    return Err(GraphError::at(
                        GraphErrorKind::Cycle {
                            path: path.join(" -> "),
                        },
                        position,
                    )
                    .with_hint("a stage can only use stages defined before it; move what both need into an earlier stage"));
                }
                Mark::Done => {}
            }
        }
    }
    Ok(())
}

/// The stage `--target` names (case-insensitive), else the last.
fn select_target(options: &BuildOptions, names: &StageNames) -> Result<usize> {
    let Some(target) = &options.target else {
        return Ok(names.len().saturating_sub(1));
    };
    if let Some(index) = names.find_any_case(target) {
        return Ok(index);
    }
    let named: Vec<&str> = names.names.iter().filter_map(Option::as_deref).collect();
    let hint = match nearest(target, &named) {
        Some(close) => format!("did you mean '{close}'?"),
        None if named.is_empty() => {
            "no stage has a name: name one with FROM <image> AS <name>".into()
        }
        None => format!("the named stages are: {}", named.join(", ")),
    };
    Err(GraphError::new(
        GraphErrorKind::UnknownTarget {
            name: target.clone(),
        },
        None,
    )
    .with_hint(hint))
}

/// The target and every stage it needs, ascending. A needed stage referring to a later one is
/// an error: BuildKit builds stages in file order and fails such a COPY.
fn needed_stages(
    target: usize,
    headers: &[Header<'_>],
    references: &[Vec<Reference>],
) -> Result<Vec<usize>> {
    let mut needed = BTreeSet::new();
    let mut pending = vec![target];
    while let Some(stage) = pending.pop() {
        if !needed.insert(stage) {
            continue;
        }
        if let Base::Stage(base) = headers[stage].base {
            pending.push(base);
        }
        for reference in &references[stage] {
            if reference.stage > stage {
                return Err(GraphError::at(
                    GraphErrorKind::StageDefinedLater {
                        user: describe(stage, headers[stage].name.as_deref()),
                        stage: describe(reference.stage, headers[reference.stage].name.as_deref()),
                        via: reference.kind.label(),
                    },
                    reference.position,
                )
                .with_hint(format!(
                    "move {} above {}",
                    describe(reference.stage, headers[reference.stage].name.as_deref()),
                    describe(stage, headers[stage].name.as_deref())
                )));
            }
            pending.push(reference.stage);
        }
    }
    Ok(needed.into_iter().collect())
}

/// What lowering a stage's steps needs besides the stage.
struct Context<'a> {
    options: &'a BuildOptions,
    lexer: Lexer,
    global: &'a Vars,
    names: &'a StageNames,
    /// Every ARG name declared so far, for the unused build-arg warning.
    consumed: &'a mut BTreeSet<String>,
}

/// Lowers one needed stage: its starting scope and platform (from its base), the ONBUILD
/// triggers it inherits, then its instructions. Returns the stage and its final scope, which
/// stages built on it start from.
///
/// # Errors
/// Whatever lowering one of its steps reports.
fn lower_stage(
    context: &mut Context<'_>,
    header: &Header<'_>,
    triggers: &[&Instruction],
    references: &[Reference],
    base: Option<(Platform, Scope)>,
) -> Result<(Stage, Scope)> {
    let (platform, mut scope) = match (&header.base, base) {
        (Base::Stage(_), Some(start)) => start,
        (base, _) => {
            let platform = header
                .platform
                .clone()
                .unwrap_or_else(|| context.options.target_platform.clone());
            let env = match base {
                Base::Image(image) => context.options.base_env.get(image).map(Vec::as_slice),
                _ => None,
            };
            let scope = Scope::from_image(env.unwrap_or_default(), &platform.os);
            (platform, scope)
        }
    };
    // A base stage's triggers, or a base image's (a stage has one kind of base, never both).
    let image_triggers = match &header.base {
        Base::Image(image) => context.options.base_onbuild.get(image).cloned(),
        _ => None,
    }
    .unwrap_or_default();
    let mut steps = Vec::with_capacity(triggers.len() + header.body.len());
    for trigger in triggers.iter().copied().chain(&image_triggers) {
        steps.push(lower_step(context, &mut scope, trigger, true)?);
    }
    for instruction in header.body {
        steps.push(lower_step(context, &mut scope, instruction, false)?);
    }
    let mut dependencies = Vec::new();
    if let Base::Stage(base) = header.base {
        dependencies.push(Dependency {
            stage: base,
            kind: DependencyKind::From,
            step: None,
            position: header.from.args_position,
        });
    }
    dependencies.extend(references.iter().map(|reference| Dependency {
        stage: reference.stage,
        kind: reference.kind,
        step: Some(reference.step),
        position: reference.position,
    }));
    let stage = Stage {
        index: header.index,
        name: header.name.clone(),
        base: header.base.clone(),
        platform,
        from: header.from.clone(),
        from_args: header.from_args.clone(),
        dependencies,
        steps,
    };
    Ok((stage, scope))
}

/// Lowers one instruction of a stage against the scope, then applies its effect on the scope
/// (ARG and ENV).
fn lower_step(
    context: &mut Context<'_>,
    scope: &mut Scope,
    instruction: &Instruction,
    onbuild: bool,
) -> Result<Step> {
    let text = display_text(instruction, &scope.vars, context.lexer.escape);
    let mut words = Words::new(context.lexer, instruction);
    let mut expanded = instruction.clone();
    let mut source = None;
    let mut mounts = Vec::new();
    let mut env_effect = Vec::new();
    let mut args = None;
    expanded.command = match &instruction.command {
        Command::Arg(declarations) => {
            let (declarations, declared) = lower_arg(context, scope, &mut words, declarations)?;
            args = Some(declared);
            Command::Arg(declarations)
        }
        Command::Env(pairs) => {
            let pairs = lower_env(scope, &mut words, pairs)?;
            env_effect = pairs
                .iter()
                .map(|pair| (pair.key.clone(), pair.value.clone()))
                .collect();
            Command::Env(pairs)
        }
        Command::Label(pairs) => Command::Label(lower_label(scope, &mut words, pairs)?),
        Command::Copy(copy) => {
            let at = instruction
                .flag_position("from")
                .unwrap_or(instruction.position);
            source = Some(match &copy.from {
                Some(from) => copy_source(from, context.names, at)?,
                None => Source::Context,
            });
            Command::Copy(lower_copy(scope, &mut words, copy)?)
        }
        Command::Add(add) => {
            source = Some(Source::Context);
            Command::Add(lower_add(scope, &mut words, add)?)
        }
        Command::Run(run) => {
            let (run, resolved) = lower_run(scope, &mut words, run, context.names)?;
            mounts = resolved;
            args = Some(scope.all_args());
            Command::Run(run)
        }
        Command::Expose(ports) => Command::Expose(lower_expose(scope, &mut words, ports)?),
        Command::Stopsignal(signal) => {
            Command::Stopsignal(lower_stopsignal(scope, &mut words, signal)?)
        }
        Command::User(user) => Command::User(lower_user(scope, &mut words, user)?),
        Command::Volume(paths) => Command::Volume(lower_volume(scope, &mut words, paths)?),
        Command::Workdir(path) => Command::Workdir(lower_workdir(scope, &mut words, path)?),
        // Not expanded by the builder: commands run through the shell, which expands them
        // itself; ONBUILD triggers expand in the stage that runs them.
        other @ (Command::From(_)
        | Command::Cmd(_)
        | Command::Entrypoint(_)
        | Command::Shell(_)
        | Command::Maintainer(_)
        | Command::Healthcheck(_)
        | Command::Onbuild(_)) => other.clone(),
    };
    let args =
        args.unwrap_or_else(|| scope.args_among(words.matched.iter().chain(&words.unmatched)));
    for (key, value) in env_effect {
        scope.vars.set(&key, &value, Origin::Env);
    }
    Ok(Step {
        instruction: expanded,
        text,
        args,
        source,
        mounts,
        onbuild,
    })
}

/// How progress output names a step, as BuildKit's `processCmdEnv` makes it: the source line
/// with variables replaced (RUN keeps quotes and unset variables; COPY, ADD and WORKDIR go
/// through the plain lexer), keyword upper-cased. Instructions the builder does not expand
/// are shown as written. Never fails: a word that cannot be expanded is shown as written.
fn display_text(instruction: &Instruction, vars: &Vars, escape: char) -> String {
    let keeping = Lexer {
        raw_quotes: true,
        skip_unset_env: true,
        ..Lexer::new(escape)
    };
    let lexer = match &instruction.command {
        Command::Copy(_) | Command::Add(_) | Command::Workdir(_) => Some(Lexer::new(escape)),
        Command::Run(_)
        | Command::Env(_)
        | Command::Label(_)
        | Command::Arg(_)
        | Command::User(_)
        | Command::Volume(_)
        | Command::Expose(_)
        | Command::Stopsignal(_) => Some(keeping),
        _ => None,
    };
    let text = lexer
        .and_then(|lexer| lexer.process_word(&instruction.source, vars).ok())
        .unwrap_or_else(|| instruction.source.clone());
    match text.split_once(' ') {
        Some((keyword, rest)) => format!("{} {rest}", keyword.to_uppercase()),
        None => text.to_uppercase(),
    }
}

/// `arg = "ARG" arg_declaration+` in a stage: each name takes its `--build-arg` value, else
/// its default expanded against the scope so far (later names see earlier ones, as in
/// current BuildKit), else the global value of the same name. A default that a build arg
/// overrides is never expanded, so it is kept as written.
///
/// # Errors
/// An expansion error in a default that is used.
fn lower_arg(
    context: &mut Context<'_>,
    scope: &mut Scope,
    words: &mut Words<'_>,
    declarations: &[ArgDeclaration],
) -> Result<(Vec<ArgDeclaration>, ArgValues)> {
    let mut expanded = Vec::with_capacity(declarations.len());
    let mut declared = BTreeMap::new();
    for declaration in declarations {
        context.consumed.insert(declaration.name.clone());
        let mut default = declaration.default.clone();
        let value = match (
            context.options.build_args.get(&declaration.name),
            &declaration.default,
        ) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(written)) => {
                let value = words.word(
                    &scope.vars,
                    written,
                    declaration.position,
                    declaration.name.len(),
                )?;
                default = Some(value.clone());
                Some(value)
            }
            (None, None) => {
                crate::words::Env::get(context.global, &declaration.name).map(str::to_string)
            }
        };
        scope.declare(&declaration.name, value.as_deref());
        declared.insert(declaration.name.clone(), value);
        expanded.push(ArgDeclaration {
            default,
            ..declaration.clone()
        });
    }
    Ok((expanded, declared))
}

/// `env = "ENV" name_value`: every key and value expanded against the scope before the
/// instruction; the caller then sets them.
///
/// # Errors
/// An expansion error, and a key that expands to nothing.
fn lower_env(scope: &Scope, words: &mut Words<'_>, pairs: &[KeyValue]) -> Result<Vec<KeyValue>> {
    key_values(scope, words, pairs, "ENV")
}

/// `label = "LABEL" name_value`: every key and value expanded.
///
/// # Errors
/// An expansion error, and a key that expands to nothing.
fn lower_label(scope: &Scope, words: &mut Words<'_>, pairs: &[KeyValue]) -> Result<Vec<KeyValue>> {
    key_values(scope, words, pairs, "LABEL")
}

fn key_values(
    scope: &Scope,
    words: &mut Words<'_>,
    pairs: &[KeyValue],
    keyword: &'static str,
) -> Result<Vec<KeyValue>> {
    let mut expanded = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let key = words.word(&scope.vars, &pair.key, pair.position, 0)?;
        if key.is_empty() {
            return Err(GraphError::at(
                GraphErrorKind::EmptyName {
                    keyword,
                    expression: pair.key.clone(),
                },
                pair.position,
            ));
        }
        let value = words.word(&scope.vars, &pair.value, pair.position, pair.key.len())?;
        expanded.push(KeyValue {
            key,
            value,
            position: pair.position,
        });
    }
    Ok(expanded)
}

/// `copy = "COPY" flags (exec_form | words)`: sources, destination, `--chown` and `--chmod`
/// expanded (an empty result means the flag was not given), heredoc bodies expanded when
/// their delimiter was not quoted; `--from` kept as written.
///
/// # Errors
/// An expansion error, and a `--chmod` that is no mode once expanded.
fn lower_copy(scope: &Scope, words: &mut Words<'_>, copy: &Copy) -> Result<Copy> {
    copy_or_add(scope, words, copy)
}

/// `add = "ADD" flags (exec_form | words)`: as [`lower_copy`], and `--checksum` expanded.
///
/// # Errors
/// As [`lower_copy`], and a `--checksum` that is no digest once expanded.
fn lower_add(scope: &Scope, words: &mut Words<'_>, add: &Copy) -> Result<Copy> {
    copy_or_add(scope, words, add)
}

fn copy_or_add(scope: &Scope, words: &mut Words<'_>, copy: &Copy) -> Result<Copy> {
    let vars = &scope.vars;
    let at = words.instruction.args_position;
    let mut sources = Vec::with_capacity(copy.sources.len());
    for source in &copy.sources {
        sources.push(match source {
            CopySource::Path { path } => CopySource::Path {
                path: words.word(vars, path, at, 0)?,
            },
            CopySource::Heredoc(doc) if doc.expand => {
                // BuildKit expands the body after `<<-` stripping, with the default escape and
                // quotes kept as they are.
                let lexer = Lexer {
                    skip_process_quotes: true,
                    ..Lexer::new('\\')
                };
                let content = words.word_with(lexer, vars, &doc.body(), at, 0)?;
                CopySource::Heredoc(crate::syntax::Heredoc {
                    content,
                    chomp: false,
                    ..doc.clone()
                })
            }
            CopySource::Heredoc(doc) => CopySource::Heredoc(doc.clone()),
        });
    }
    let destination = words.word(vars, &copy.destination, at, 0)?;
    let chown = words.flag(vars, "chown", copy.chown.as_deref())?;
    let chmod = words.flag(vars, "chmod", copy.chmod.as_deref())?;
    if let Some(chmod) = &chmod {
        validate_chmod(chmod).map_err(|kind| words.flag_error(kind, "chmod"))?;
    }
    let checksum = words.flag(vars, "checksum", copy.checksum.as_deref())?;
    if let Some(checksum) = &checksum {
        validate_checksum(checksum).map_err(|kind| words.flag_error(kind, "checksum"))?;
    }
    Ok(Copy {
        sources,
        destination,
        chown,
        chmod,
        checksum,
        ..copy.clone()
    })
}

/// `run = "RUN" flags (exec_form | shell_form)`: the command and heredocs kept as written
/// (the shell expands them); every `--mount` value but `from` expanded, then the mount
/// interpreted, with the stage, image or context it reads from.
///
/// # Errors
/// An expansion error, a mount that is invalid once expanded, and a numeric mount `from`.
fn lower_run(
    scope: &Scope,
    words: &mut Words<'_>,
    run: &Run,
    names: &StageNames,
) -> Result<(Run, Vec<StepMount>)> {
    let mut expanded = Vec::with_capacity(run.mounts.len());
    let mut resolved = Vec::with_capacity(run.mounts.len());
    for mount in &run.mounts {
        let mount = mount.map_values(|value| words.word(&scope.vars, value, mount.position, 0))?;
        let interpreted = mount.resolve().map_err(|kind| {
            GraphError::at(GraphErrorKind::Value(Box::new(kind)), mount.position)
        })?;
        let source = mount_source(&interpreted, names, mount.position)?;
        resolved.push(StepMount {
            mount: interpreted,
            source,
        });
        expanded.push(mount);
    }
    Ok((
        Run {
            mounts: expanded,
            ..run.clone()
        },
        resolved,
    ))
}

/// Where a mount reads from: tmpfs, secret and ssh mounts read nothing; a cache mount without
/// `from` starts empty; a bind mount without `from` reads the build context.
fn mount_source(mount: &ResolvedMount, names: &StageNames, at: Position) -> Result<Option<Source>> {
    Ok(match (mount.kind, &mount.from) {
        (MountType::Tmpfs | MountType::Secret | MountType::Ssh, _) => None,
        (_, Some(from)) => Some(mount_source_name(from, names, at)?),
        (MountType::Cache, None) => Some(Source::Scratch),
        (MountType::Bind, None) => Some(Source::Context),
    })
}

/// `expose = "EXPOSE" words`: each word expanded and split into words, each then checked.
///
/// # Errors
/// An expansion error, and a port that is invalid once expanded.
fn lower_expose(scope: &Scope, words: &mut Words<'_>, ports: &[String]) -> Result<Vec<String>> {
    let at = words.instruction.args_position;
    let mut expanded = Vec::with_capacity(ports.len());
    for port in ports {
        // Expanded once for the names it uses and its errors, then split as BuildKit does.
        words.word(&scope.vars, port, at, 0)?;
        let split = words
            .lexer
            .process_words(port, &scope.vars)
            .map_err(|error| words.expansion_error(error, at, port, 0))?;
        for word in split {
            validate_port(&word).map_err(|kind| {
                GraphError::at(
                    GraphErrorKind::Value(Box::new(kind)),
                    words.locate(at, port, 0),
                )
            })?;
            expanded.push(word);
        }
    }
    Ok(expanded)
}

/// `stopsignal = "STOPSIGNAL" text`: expanded, then checked.
///
/// # Errors
/// An expansion error, and a value that is no signal once expanded.
fn lower_stopsignal(scope: &Scope, words: &mut Words<'_>, signal: &str) -> Result<String> {
    let at = words.instruction.args_position;
    let value = words.word(&scope.vars, signal, at, 0)?;
    validate_signal(&value).map_err(|(kind, hint)| {
        GraphError::at(GraphErrorKind::Value(Box::new(kind)), at).with_hint_opt(hint)
    })?;
    Ok(value)
}

/// `user = "USER" text`: expanded.
///
/// # Errors
/// An expansion error.
fn lower_user(scope: &Scope, words: &mut Words<'_>, user: &str) -> Result<String> {
    let at = words.instruction.args_position;
    words.word(&scope.vars, user, at, 0)
}

/// `workdir = "WORKDIR" text`: expanded.
///
/// # Errors
/// An expansion error.
fn lower_workdir(scope: &Scope, words: &mut Words<'_>, path: &str) -> Result<String> {
    let at = words.instruction.args_position;
    words.word(&scope.vars, path, at, 0)
}

/// `volume = "VOLUME" (exec_form | words)`: each path expanded.
///
/// # Errors
/// An expansion error, and a path that expands to nothing.
fn lower_volume(scope: &Scope, words: &mut Words<'_>, paths: &[String]) -> Result<Vec<String>> {
    let at = words.instruction.args_position;
    let mut expanded = Vec::with_capacity(paths.len());
    for path in paths {
        let value = words.word(&scope.vars, path, at, 0)?;
        if value.is_empty() {
            return Err(GraphError::at(
                GraphErrorKind::EmptyVolume {
                    expression: path.clone(),
                },
                words.locate(at, path, 0),
            ));
        }
        expanded.push(value);
    }
    Ok(expanded)
}

/// Expands the words of one instruction, remembering every variable name they referred to
/// and locating errors at the word.
struct Words<'a> {
    lexer: Lexer,
    instruction: &'a Instruction,
    /// Names looked up and set.
    matched: BTreeSet<String>,
    /// Names looked up and unset.
    unmatched: BTreeSet<String>,
}

impl<'a> Words<'a> {
    fn new(lexer: Lexer, instruction: &'a Instruction) -> Words<'a> {
        Words {
            lexer,
            instruction,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    /// Expands `word`, which is written at or after `anchor` (after `skip` more bytes).
    fn word(&mut self, vars: &Vars, word: &str, anchor: Position, skip: usize) -> Result<String> {
        self.word_with(self.lexer, vars, word, anchor, skip)
    }

    fn word_with(
        &mut self,
        lexer: Lexer,
        vars: &Vars,
        word: &str,
        anchor: Position,
        skip: usize,
    ) -> Result<String> {
        match lexer.process_word_with_matches(word, vars) {
            Ok(expansion) => {
                self.matched.extend(expansion.matched);
                self.unmatched.extend(expansion.unmatched);
                Ok(expansion.result)
            }
            Err(error) => Err(self.expansion_error(error, anchor, word, skip)),
        }
    }

    /// Expands the value of flag `--name`; an empty result counts as not given.
    fn flag(&mut self, vars: &Vars, name: &str, value: Option<&str>) -> Result<Option<String>> {
        let Some(value) = value else {
            return Ok(None);
        };
        let at = self
            .instruction
            .flag_position(name)
            .unwrap_or(self.instruction.position);
        let expanded = self.word(vars, value, at, name.len() + 2)?;
        Ok((!expanded.is_empty()).then_some(expanded))
    }

    fn flag_error(&self, kind: crate::syntax::ParseErrorKind, name: &str) -> GraphError {
        let at = self
            .instruction
            .flag_position(name)
            .unwrap_or(self.instruction.position);
        GraphError::at(GraphErrorKind::Value(Box::new(kind)), at)
    }

    fn expansion_error(
        &self,
        error: WordError,
        anchor: Position,
        word: &str,
        skip: usize,
    ) -> GraphError {
        let position = self.locate_offset(anchor, word, skip, error.offset);
        GraphError::at(
            GraphErrorKind::Expansion {
                message: error.message,
            },
            position,
        )
    }

    fn locate(&self, anchor: Position, word: &str, skip: usize) -> Position {
        self.locate_offset(anchor, word, skip, 0)
    }

    /// Where byte `offset` of `word` is, when the instruction is one physical line and the
    /// word stands in it as written at or after `anchor` (plus `skip` bytes); else `anchor`,
    /// which the syntax stage located exactly.
    fn locate_offset(&self, anchor: Position, word: &str, skip: usize, offset: usize) -> Position {
        let instruction = self.instruction;
        let one_line = instruction.span.start_line == instruction.span.end_line;
        if !one_line
            || anchor.line != instruction.position.line
            || anchor.column < instruction.position.column
        {
            return anchor;
        }
        let start = anchor.column - instruction.position.column + skip;
        let found = instruction
            .source
            .get(start..)
            .and_then(|rest| rest.find(word));
        match found {
            Some(at) => Position {
                line: anchor.line,
                column: instruction.position.column + start + at + offset,
            },
            None => anchor,
        }
    }
}
