//! Text renderings of a [`BuildGraph`] for `kiln parse --format dag|dot`.
//!
//! Consumes a graph; produces a `String`. Output depends only on the graph, so it is stable
//! enough for golden files. Never prints and never fails.

use std::fmt::Write as _;

use super::{Base, BuildGraph, Stage};

impl BuildGraph {
    /// The needed stages as an indented tree, in build order: one header line per stage
    /// (index, name, base, platform), one line per stage it depends on (with how), and its
    /// steps numbered `[i/n]`, expanded as progress output shows them. Example:
    ///
    /// ```text
    /// stage 0 "builder" FROM golang:1.22 (linux/amd64)
    ///   [1/2] WORKDIR /src
    ///   [2/2] COPY . .
    /// stage 1 FROM scratch (linux/amd64)
    ///   depends on stage 0 "builder" (COPY --from)
    ///   [1/1] COPY --from=builder /src/app /app
    /// ```
    pub fn render_tree(&self) -> String {
        let mut out = String::new();
        for stage in &self.stages {
            let _ = writeln!(
                out,
                "{} FROM {} ({})",
                self.label(stage.index),
                self.base_label(stage),
                stage.platform
            );
            for (dependency, kinds) in grouped_dependencies(stage) {
                let _ = writeln!(
                    out,
                    "  depends on {} ({})",
                    self.label(dependency),
                    kinds.join(", ")
                );
            }
            let total = stage.steps.len();
            for (number, step) in stage.steps.iter().enumerate() {
                let onbuild = if step.onbuild { "ONBUILD " } else { "" };
                let _ = writeln!(
                    out,
                    "  [{}/{total}] {onbuild}{}",
                    number + 1,
                    one_line(&step.text)
                );
            }
        }
        out
    }

    /// The same graph in Graphviz's dot language: one cluster per needed stage holding its
    /// FROM node and a chain of step nodes, and an edge from the last node of a stage to each
    /// node that needs it, labelled with how (`FROM`, `COPY --from`, `RUN --mount`).
    pub fn render_dot(&self) -> String {
        let mut out = String::from("digraph build {\n");
        out.push_str("  compound=true;\n  node [shape=box, fontname=\"monospace\"];\n");
        for stage in &self.stages {
            let index = stage.index;
            let _ = writeln!(out, "  subgraph cluster_{index} {{");
            let _ = writeln!(
                out,
                "    label={};",
                dot_string(&format!("{} ({})", self.label(index), stage.platform))
            );
            let _ = writeln!(
                out,
                "    s{index} [label={}, shape=ellipse];",
                dot_string(&format!("FROM {}", self.base_label(stage)))
            );
            let total = stage.steps.len();
            let mut previous = format!("s{index}");
            for (number, step) in stage.steps.iter().enumerate() {
                let node = format!("s{index}_{}", number + 1);
                let onbuild = if step.onbuild { "ONBUILD " } else { "" };
                let label = format!("[{}/{total}] {onbuild}{}", number + 1, step.text);
                let _ = writeln!(out, "    {node} [label={}];", dot_string(&label));
                let _ = writeln!(out, "    {previous} -> {node};");
                previous = node;
            }
            out.push_str("  }\n");
        }
        for stage in &self.stages {
            for dependency in &stage.dependencies {
                let to = match dependency.step {
                    Some(step) => format!("s{}_{}", stage.index, step + 1),
                    None => format!("s{}", stage.index),
                };
                let _ = writeln!(
                    out,
                    "  {} -> {to} [label={}, style=dashed];",
                    self.last_node(dependency.stage),
                    dot_string(dependency.kind.label())
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// `stage 2 "name"` or `stage 2`.
    fn label(&self, index: usize) -> String {
        match self.stage(index).and_then(|stage| stage.name.as_deref()) {
            Some(name) => format!("stage {index} \"{name}\""),
            None => format!("stage {index}"),
        }
    }

    fn base_label(&self, stage: &Stage) -> String {
        match &stage.base {
            Base::Scratch => "scratch".into(),
            Base::Image(image) => image.clone(),
            Base::Stage(base) => self.label(*base),
        }
    }

    /// The node a stage's result comes out of: its last step, or its FROM.
    fn last_node(&self, index: usize) -> String {
        match self.stage(index).map_or(0, |stage| stage.steps.len()) {
            0 => format!("s{index}"),
            steps => format!("s{index}_{steps}"),
        }
    }
}

/// The stages a stage depends on, in first-use order, each with how it is used (no repeats).
fn grouped_dependencies(stage: &Stage) -> Vec<(usize, Vec<&'static str>)> {
    let mut groups: Vec<(usize, Vec<&'static str>)> = Vec::new();
    for dependency in &stage.dependencies {
        let label = dependency.kind.label();
        match groups
            .iter_mut()
            .find(|(index, _)| *index == dependency.stage)
        {
            Some((_, kinds)) if kinds.contains(&label) => {}
            Some((_, kinds)) => kinds.push(label),
            None => groups.push((dependency.stage, vec![label])),
        }
    }
    groups
}

/// Keeps a step on one line of the tree: line breaks that expansion brought in are escaped.
fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

/// A dot double-quoted string: `"` and `\` escaped (a lone backslash would start a dot
/// escape such as `\N`), line breaks as `\n`.
fn dot_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
