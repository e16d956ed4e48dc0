//! DOT export: one DOT node per reachable node with the expected label and style, typed edges, and a
//! `return` node for the results.

use std::collections::HashMap;

use braid_ir::{dot, text};

const SRC: &str = "\
weight @w : bf16[16, 8]
weight @n : f32[8]
weight @\"odd \\\"w\\\"\" : f32[4, 8]
kv_cache @k : f32[4, 1, 4]
%x = input \"x\" : f32[1, 8]
%dead = silu(%x) : f32[1, 8]
%h = fused_rms_norm_matmul(%x, @n, @w) {eps = 1e-6} : f32[1, 16]
%a, %b = split(%h) {axis = 1, sizes = [8, 8]} : f32[1, 8], f32[1, 8]
%s = add(%a, %b) : f32[1, 8]
%o = matmul(%s, @\"odd \\\"w\\\"\") : f32[1, 4]
%r = reshape(@k) {shape = [16]} : f32[16]
return %o, %r
";

/// DOT node id -> its attribute text (`label="..", shape=..`), from lines `  nX [..];`.
fn nodes(dot: &str) -> HashMap<String, String> {
    dot.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let l = l.trim();
            let (id, rest) = l.split_once(" [")?;
            let numbered = id.strip_prefix('n')?.chars().all(|c| c.is_ascii_digit());
            numbered.then(|| (id.to_string(), rest.trim_end_matches("];").to_string()))
        })
        .collect()
}

/// The id of the one node whose label starts with `label`.
fn id(nodes: &HashMap<String, String>, label: &str) -> String {
    let hits: Vec<&String> = nodes
        .iter()
        .filter(|(_, a)| a.starts_with(&format!("label=\"{label}")))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(hits.len(), 1, "label {label:?} in {nodes:#?}");
    hits[0].clone()
}

#[test]
fn dot_has_expected_nodes_styles_and_typed_edges() {
    let g = text::parse(SRC).unwrap();
    let dot = dot::to_dot(&g);
    assert!(dot.starts_with("digraph braid {\n"), "{dot}");
    assert!(dot.ends_with("}\n"), "{dot}");
    let ns = nodes(&dot);
    // Reachable: @w @n @odd @k, %x, fused, split, add, matmul, reshape; the dead silu is left out.
    assert_eq!(ns.len(), g.topo_order().len(), "{dot}");
    assert_eq!(ns.len(), 10, "{dot}");
    assert!(!dot.contains("silu"), "{dot}");

    let fused = id(&ns, "%1 fused_rms_norm_matmul\\n{eps = 1e-6}\\nf32[1, 16]");
    assert!(ns[&fused].contains("style=\"rounded,filled\", fillcolor=\"#f6b26b\""));
    let split = id(
        &ns,
        "%2, %3 split\\n{axis = 1, sizes = [8, 8]}\\nf32[1, 8], f32[1, 8]",
    );
    let add = id(&ns, "%4 add\\nf32[1, 8]");
    let matmul = id(&ns, "%5 matmul\\nf32[1, 4]");
    let reshape = id(&ns, "%6 reshape");
    for plain in [&split, &add, &matmul, &reshape] {
        assert!(ns[plain].contains("style=rounded") && !ns[plain].contains("fillcolor"));
    }
    let x = id(&ns, "%0 input \\\"x\\\"\\nf32[1, 8]");
    assert!(ns[&x].contains("shape=invhouse"));
    let w = id(&ns, "@w\\nbf16[16, 8]");
    let k = id(&ns, "@k\\nf32[4, 1, 4]");
    let odd = id(&ns, "@\\\"odd \\\\\\\"w\\\\\\\"\\\"\\nf32[4, 8]");
    for (leaf, fill) in [(&w, "#eeeeee"), (&odd, "#eeeeee"), (&k, "#cfe2f3")] {
        assert!(ns[leaf].contains("shape=box"), "{}", ns[leaf]);
        assert!(ns[leaf].contains(&format!("fillcolor=\"{fill}\"")));
        assert!(ns[leaf].contains("fontsize=8"));
    }

    let edge = |from: &str, to: &str, label: &str| {
        let line = format!("  {from} -> {to} [label=\"{label}\"];");
        assert!(dot.contains(&line), "missing {line}\n{dot}");
    };
    edge(&x, &fused, "f32[1, 8]");
    edge(&w, &fused, "bf16[16, 8]");
    edge(&fused, &split, "f32[1, 16]");
    edge(&split, &add, "%2 f32[1, 8]");
    edge(&split, &add, "%3 f32[1, 8]");
    edge(&add, &matmul, "f32[1, 8]");
    edge(&odd, &matmul, "f32[4, 8]");
    edge(&k, &reshape, "f32[4, 1, 4]");
    edge(&matmul, "ret", "result 0: f32[1, 4]");
    edge(&reshape, "ret", "result 1: f32[16]");
    assert_eq!(dot.matches(" -> ").count(), 11, "{dot}");
    // Deterministic: the same graph after a print/parse round trip draws the same.
    let again = text::parse(&text::print(&g)).unwrap();
    assert_eq!(dot::to_dot(&again), dot);
}
