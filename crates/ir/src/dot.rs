//! Graphviz DOT export of a [`Graph`], for looking at a decode step (`dot -Tsvg step.dot`).
//!
//! One DOT node per node a result reaches, in canonical topological order ([`Graph::topo_order`]),
//! named `n0, n1, ..` by that order so the output is deterministic:
//! - ops: a rounded box labelled `%n op`, its attributes, then its output types; `fused_*` ops are
//!   filled orange so fusion is visible at a glance;
//! - inputs: a house shape labelled `%n input "name"` and the type;
//! - weights (grey) and KV caches (blue): small filled boxes labelled `@name` and the type.
//!
//! Each edge is labelled with the type of the value it carries (prefixed by the value's `%n` when its
//! source has several outputs). A `return` node collects the results, its edges labelled `result i`.

use std::fmt::Write;

use crate::graph::{Graph, Value};
use crate::op::Op;
use crate::text::{format_attrs, format_global, format_string};

/// Fill colour of `fused_*` ops.
const FUSED_FILL: &str = "#f6b26b";
/// Fill colour of weights.
const WEIGHT_FILL: &str = "#eeeeee";
/// Fill colour of KV caches.
const KV_CACHE_FILL: &str = "#cfe2f3";

/// Renders `g` as a Graphviz `digraph` (see the module docs for the drawing). Never fails; values
/// without a printed name (a malformed graph) show as `%?`.
pub fn to_dot(g: &Graph) -> String {
    let order = g.topo_order();
    let names = g.value_names();
    let id: std::collections::HashMap<_, _> =
        order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let name_of = |v: Value| -> String {
        match g.node(v.node).map(|n| &n.op) {
            Some(Op::Weight { name, .. } | Op::KvCache { name, .. }) => format_global(name),
            _ => names.get(&v).cloned().unwrap_or_else(|| "%?".into()),
        }
    };
    let mut out = String::from("digraph braid {\n");
    out.push_str("  rankdir=TB;\n");
    out.push_str("  node [fontname=\"monospace\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"monospace\", fontsize=8];\n");
    for (i, &n) in order.iter().enumerate() {
        let Some(node) = g.node(n) else { continue };
        let types: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        let types = types.join(", ");
        let (label, style) = match &node.op {
            Op::Weight { name, .. } | Op::KvCache { name, .. } => {
                let fill = if matches!(node.op, Op::Weight { .. }) {
                    WEIGHT_FILL
                } else {
                    KV_CACHE_FILL
                };
                (
                    format!("{}\n{types}", format_global(name)),
                    format!(
                        "shape=box, style=filled, fillcolor=\"{fill}\", fontsize=8, height=0.2, margin=\"0.05,0.02\""
                    ),
                )
            }
            Op::Input { name, .. } => (
                format!(
                    "{} input {}\n{types}",
                    name_of(Value::of(n)),
                    format_string(name)
                ),
                "shape=invhouse".to_string(),
            ),
            op => {
                let defs: Vec<String> = (0..node.outputs.len())
                    .map(|o| {
                        name_of(Value {
                            node: n,
                            output: o as u32,
                        })
                    })
                    .collect();
                let attrs = format_attrs(op);
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!("\n{{{attrs}}}")
                };
                let style = if op.kind().is_fused() {
                    format!("shape=box, style=\"rounded,filled\", fillcolor=\"{FUSED_FILL}\"")
                } else {
                    "shape=box, style=rounded".to_string()
                };
                (
                    format!("{} {}{attrs}\n{types}", defs.join(", "), op.name()),
                    style,
                )
            }
        };
        let _ = writeln!(out, "  n{i} [label=\"{}\", {style}];", escape(&label));
    }
    let edge_label = |v: Value| -> String {
        let ty = g
            .value_type(v)
            .map_or_else(|_| "?".to_string(), |t| t.to_string());
        let multi = g.node(v.node).is_some_and(|n| n.outputs.len() > 1);
        if multi {
            format!("{} {ty}", name_of(v))
        } else {
            ty
        }
    };
    for (i, &n) in order.iter().enumerate() {
        for v in g.inputs(n) {
            let Some(src) = id.get(&v.node) else { continue };
            let _ = writeln!(
                out,
                "  n{src} -> n{i} [label=\"{}\"];",
                escape(&edge_label(v))
            );
        }
    }
    out.push_str("  ret [label=\"return\", shape=plaintext];\n");
    for (r, v) in g.results().iter().enumerate() {
        let Some(src) = id.get(&v.node) else { continue };
        let _ = writeln!(
            out,
            "  n{src} -> ret [label=\"{}\"];",
            escape(&format!("result {r}: {}", edge_label(*v)))
        );
    }
    out.push_str("}\n");
    out
}

/// Escapes a label for a DOT double-quoted string: `"` and `\` are escaped, newlines become the
/// centred line break `\n`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_newlines() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
