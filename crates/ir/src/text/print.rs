//! The printer: [`Graph`] to the stable text form described in [`crate::text`].

use std::collections::HashMap;
use std::fmt::Write;

use crate::graph::{Graph, Value};
use crate::op::Op;
use crate::rope::RopeScaling;
use crate::types::TensorType;

/// Prints `g` in the IR text form: header lines `weight @name : dtype[shape]` and
/// `kv_cache @name : dtype[shape]` in canonical topological order ([`Graph::topo_order`]), then one
/// line per other reachable node, `%a[, %b..] = op(operands) {attrs} : type[, type..]` (inputs print
/// as `%n = input "name" : i32[1]`), then `return %x, %y`.
///
/// Values are numbered by [`Graph::value_names`]; nodes no result reaches are left out, so the output
/// depends only on the graph's structure. Never fails: a malformed graph (e.g. a value naming a missing
/// node) prints `%?` where a name is missing, and [`crate::text::parse`] then rejects the text.
pub fn print(g: &Graph) -> String {
    let order = g.topo_order();
    let names = g.value_names();
    let mut out = String::new();
    for &n in &order {
        let Some(node) = g.node(n) else { continue };
        if let Op::Weight { name, ty } | Op::KvCache { name, ty } = &node.op {
            let _ = writeln!(out, "{} {} : {ty}", node.op.name(), format_global(name));
        }
    }
    for &n in &order {
        let Some(node) = g.node(n) else { continue };
        let defs: Vec<String> = (0..node.outputs.len())
            .map(|o| {
                let v = Value {
                    node: n,
                    output: o as u32,
                };
                operand(g, &names, v)
            })
            .collect();
        let types = join(node.outputs.iter().map(TensorType::to_string));
        match &node.op {
            Op::Weight { .. } | Op::KvCache { .. } => continue,
            Op::Input { name, .. } => {
                let _ = writeln!(
                    out,
                    "{} = input {} : {types}",
                    defs.join(", "),
                    format_string(name)
                );
            }
            op => {
                let args = join(g.inputs(n).into_iter().map(|v| operand(g, &names, v)));
                let attrs = format_attrs(op);
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" {{{attrs}}}")
                };
                let _ = writeln!(
                    out,
                    "{} = {}({args}){attrs} : {types}",
                    defs.join(", "),
                    op.name()
                );
            }
        }
    }
    let results = join(g.results().iter().map(|v| operand(g, &names, *v)));
    let _ = writeln!(out, "return {results}");
    out
}

/// The printed name of `v`: `@name` (quoted when needed) for weights and KV caches, else its `%n`.
fn operand(g: &Graph, names: &HashMap<Value, String>, v: Value) -> String {
    match g.node(v.node).map(|n| &n.op) {
        Some(Op::Weight { name, .. } | Op::KvCache { name, .. }) => format_global(name),
        _ => names.get(&v).cloned().unwrap_or_else(|| "%?".to_string()),
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// The attributes of `op` as printed between braces, e.g. `axis = 1, sizes = [32, 16, 16]`; empty for
/// ops without attributes. Floats use `{:e}` (shortest text that parses back to the same `f32`). A
/// rope's default scaling prints nothing, so default-rope text reads as before scalings existed.
pub(crate) fn format_attrs(op: &Op) -> String {
    let list = |xs: &[usize]| format!("[{}]", join(xs.iter().map(usize::to_string)));
    match op {
        Op::RmsNorm { eps }
        | Op::FusedRmsNormMatmul { eps }
        | Op::FusedRmsNormMatmulAdd { eps } => {
            format!("eps = {eps:e}")
        }
        Op::Rope { theta, scaling } => format!("theta = {theta:e}{}", format_scaling(scaling)),
        Op::Attention { scale } => format!("scale = {scale:e}"),
        Op::Reshape { shape } => format!("shape = {}", list(shape)),
        Op::Split { axis, sizes } => format!("axis = {axis}, sizes = {}", list(sizes)),
        Op::Concat { axis } => format!("axis = {axis}"),
        Op::FusedQkNormRope {
            eps,
            theta,
            scaling,
        } => format!(
            "eps = {eps:e}, theta = {theta:e}{}",
            format_scaling(scaling)
        ),
        Op::Input { .. }
        | Op::Weight { .. }
        | Op::KvCache { .. }
        | Op::Embedding
        | Op::MatMul
        | Op::Add
        | Op::Mul
        | Op::Silu
        | Op::Argmax
        | Op::FusedGatedMlp
        | Op::FusedMatmulAdd => String::new(),
    }
}

/// The scaling attributes after `theta`: empty for the default, else `, rope_type = llama3,
/// factor = 3.2e1, low_freq_factor = 1e0, high_freq_factor = 4e0,
/// original_max_position_embeddings = 8192`.
fn format_scaling(scaling: &RopeScaling) -> String {
    match scaling {
        RopeScaling::Default => String::new(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => format!(
            ", rope_type = llama3, factor = {factor:e}, low_freq_factor = {low_freq_factor:e}, \
             high_freq_factor = {high_freq_factor:e}, \
             original_max_position_embeddings = {original_max_position_embeddings}"
        ),
    }
}

/// `@name` for a weight or KV cache, quoted (`@"a b"`) when the name is empty or has characters a
/// bare name cannot hold.
pub(crate) fn format_global(name: &str) -> String {
    if !name.is_empty() && name.chars().all(super::is_name_char) {
        format!("@{name}")
    } else {
        format!("@{}", format_string(name))
    }
}

/// A double-quoted string literal: `\\`, `\"`, `\n`, `\t`, `\r` and `\u{hex}` for other control
/// characters, everything else verbatim.
pub(crate) fn format_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
