//! Shared helpers of the braid-passes tests: IR fixtures, random weights and inputs, interpreter runs.
#![allow(dead_code)]

use std::collections::HashMap;

use braid_ir::interp::Interpreter;
use braid_ir::text::{parse, print};
use braid_ir::{DType, Graph, HostWeight, Op, OpKind, Tensor};
use braid_passes::PassManager;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Reads `tests/fixtures/<name>.ir`.
pub fn fixture_text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.ir", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Parses IR text, panicking with the parser's line:col message.
pub fn parse_ir(text: &str) -> Graph {
    parse(text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

/// Parses fixture `name`.
pub fn fixture(name: &str) -> Graph {
    parse_ir(&fixture_text(name))
}

/// Runs the pass spec on a copy of `g` and returns it.
pub fn run_passes(g: &Graph, spec: &str) -> Graph {
    let mut out = g.clone();
    PassManager::from_spec(spec)
        .unwrap()
        .run(&mut out)
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    out
}

/// Random weights for every weight leaf of `g`, in the leaf's dtype: norm vectors (rank 1) in
/// [0.5, 1.5), matrices uniform in ±1/sqrt(columns) (nothing is all-zero).
pub fn random_weights(g: &Graph, seed: u64) -> HashMap<String, HostWeight> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut leaves: Vec<(String, DType, Vec<usize>)> = g
        .node_indices()
        .into_iter()
        .filter_map(|n| match &g.node(n)?.op {
            Op::Weight { name, ty } => Some((name.clone(), ty.dtype, ty.shape.clone())),
            _ => None,
        })
        .collect();
    leaves.sort();
    leaves
        .into_iter()
        .map(|(name, dtype, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if shape.len() == 1 {
                (0..n).map(|_| rng.random_range(0.5..1.5)).collect()
            } else {
                let bound = 1.0 / (*shape.last().unwrap() as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let w = HostWeight::from_f32(dtype, shape, &values);
            (name, w)
        })
        .collect()
}

/// Random inputs for one step: `position` = `position`, `token` (and other i32 inputs) uniform in
/// [0, 32), float inputs uniform in (-1, 1).
pub fn random_inputs(g: &Graph, position: usize, rng: &mut ChaCha8Rng) -> Vec<(String, Tensor)> {
    let mut leaves: Vec<(String, braid_ir::TensorType)> = g
        .node_indices()
        .into_iter()
        .filter_map(|n| match &g.node(n)?.op {
            Op::Input { name, ty } => Some((name.clone(), ty.clone())),
            _ => None,
        })
        .collect();
    leaves.sort_by(|a, b| a.0.cmp(&b.0));
    leaves
        .into_iter()
        .map(|(name, ty)| {
            let t = match ty.dtype {
                DType::I32 if name == "position" => Tensor::i32(ty.shape, vec![position as i32]),
                DType::I32 => {
                    let ints = (0..ty.numel()).map(|_| rng.random_range(0..32)).collect();
                    Tensor::i32(ty.shape, ints)
                }
                _ => {
                    let data = (0..ty.numel())
                        .map(|_| rng.random_range(-1.0..1.0))
                        .collect();
                    Tensor::f32(ty.shape, data)
                }
            };
            (name, t)
        })
        .collect()
}

/// Relative L2 error of `got` against `want`.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        num += (*g as f64 - *w as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Runs `before` and `after` through fresh interpreters for `steps` decode steps on the same random
/// weights and inputs, and asserts every result agrees: float results within relative L2 1e-5,
/// i32 results exactly. Returns the worst relative L2 seen.
pub fn assert_equivalent(before: &Graph, after: &Graph, seed: u64, steps: usize) -> f64 {
    let positions: Vec<usize> = (0..steps).collect();
    assert_equivalent_at(before, after, seed, &positions)
}

/// [`assert_equivalent`] with one step per entry of `positions` (a prefill chunk of `T` tokens
/// advances the position by `T`: `&[0, 4]` runs two chunks of 4).
pub fn assert_equivalent_at(before: &Graph, after: &Graph, seed: u64, positions: &[usize]) -> f64 {
    let weights = random_weights(before, seed);
    let mut ref_interp = Interpreter::new(&weights);
    let mut new_interp = Interpreter::new(&weights);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut worst = 0f64;
    for (step, &position) in positions.iter().enumerate() {
        let inputs = random_inputs(before, position, &mut rng);
        let refs: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let want = ref_interp
            .run(before, &refs)
            .unwrap_or_else(|e| panic!("before: {e}"));
        let got = new_interp
            .run(after, &refs)
            .unwrap_or_else(|e| panic!("after: {e}"));
        assert_eq!(want.len(), got.len(), "result count");
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w.ty, g.ty, "result {i} type at step {step}");
            if w.ty.dtype == DType::I32 {
                assert_eq!(w.ints, g.ints, "result {i} (i32) at step {step}");
            } else {
                assert!(w.data.iter().any(|v| *v != 0.0), "result {i} is all zero");
                let err = rel_l2(&g.data, &w.data);
                assert!(
                    err <= 1e-5,
                    "result {i} at step {step}: relative L2 {err:e}"
                );
                worst = worst.max(err);
            }
        }
    }
    worst
}

/// Nodes the results reach, counted by op kind.
pub fn op_counts(g: &Graph) -> HashMap<OpKind, usize> {
    let mut counts = HashMap::new();
    for n in g.topo_order() {
        *counts.entry(g.node(n).unwrap().op.kind()).or_insert(0) += 1;
    }
    counts
}

/// How many reachable nodes have kind `kind`.
pub fn count(g: &Graph, kind: OpKind) -> usize {
    op_counts(g).get(&kind).copied().unwrap_or(0)
}

/// Kernel-launching nodes: `Op::launches_kernel` true, minus weight-only `concat`s.
pub fn launching_nodes(g: &Graph) -> usize {
    g.topo_order()
        .into_iter()
        .filter(|&n| {
            let node = g.node(n).unwrap();
            let weight_only_concat = node.op.kind() == OpKind::Concat
                && g.inputs(n)
                    .iter()
                    .all(|v| g.node(v.node).unwrap().op.kind() == OpKind::Weight);
            node.op.launches_kernel(&g.input_types(n)) && !weight_only_concat
        })
        .count()
}

/// Kernel-launching nodes (as [`launching_nodes`] counts them), by op kind.
pub fn launching_kinds(g: &Graph) -> std::collections::BTreeMap<OpKind, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for n in g.topo_order() {
        let node = g.node(n).unwrap();
        let weight_only_concat = node.op.kind() == OpKind::Concat
            && g.inputs(n)
                .iter()
                .all(|v| g.node(v.node).unwrap().op.kind() == OpKind::Weight);
        if node.op.launches_kernel(&g.input_types(n)) && !weight_only_concat {
            *counts.entry(node.op.kind()).or_insert(0) += 1;
        }
    }
    counts
}

/// For every matmul-like node (`matmul` and the fused ops holding a matmul), the names of the
/// weights it reads (a weight-only `concat` flattened into its weights). Each weight appearing once
/// overall means no matmul was duplicated.
pub fn matmul_weight_reads(g: &Graph) -> Vec<String> {
    let mut names = Vec::new();
    for n in g.topo_order() {
        let node = g.node(n).unwrap();
        let slot = match node.op.kind() {
            OpKind::MatMul | OpKind::FusedMatmulAdd | OpKind::FusedGatedMlp => 1,
            OpKind::FusedRmsNormMatmul | OpKind::FusedRmsNormMatmulAdd => 2,
            _ => continue,
        };
        let w = g.inputs(n)[slot].node;
        flatten_weights(g, w, &mut names);
    }
    names.sort();
    names
}

fn flatten_weights(g: &Graph, n: petgraph::stable_graph::NodeIndex, out: &mut Vec<String>) {
    match &g.node(n).unwrap().op {
        Op::Weight { name, .. } => out.push(name.clone()),
        Op::Concat { .. } => {
            for v in g.inputs(n) {
                flatten_weights(g, v.node, out);
            }
        }
        other => out.push(format!("<non-weight {}>", other.name())),
    }
}

/// The printed text of `g`.
pub fn text(g: &Graph) -> String {
    print(g)
}

/// Model dimensions of a generated Qwen3 graph.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_context: usize,
}

/// The dimensions of `tests/fixtures/qwen3_1layer.ir`: hidden 64, 4 query heads, 2 KV heads,
/// head_dim 16, intermediate 128, vocab 256, max_context 8.
pub const TINY: Dims = Dims {
    hidden: 64,
    heads: 4,
    kv_heads: 2,
    head_dim: 16,
    intermediate: 128,
    vocab: 256,
    max_context: 8,
};

/// Qwen3-0.6B's dimensions (its `config.json`), with a 4096-token cache.
pub const QWEN3_0_6B: Dims = Dims {
    hidden: 1024,
    heads: 16,
    kv_heads: 8,
    head_dim: 128,
    intermediate: 3072,
    vocab: 151_936,
    max_context: 4096,
};

/// The unfused Qwen3 decode step with `layers` layers and [`TINY`] dimensions, in IR text.
pub fn qwen3_ir(layers: usize) -> String {
    qwen3_ir_dims(layers, TINY)
}

/// The unfused Qwen3 decode step (as in the brief: tied embeddings, eps 1e-6, rope theta 1e6,
/// scale head_dim^-0.5) with `layers` layers and dimensions `d`, in IR text.
pub fn qwen3_ir_dims(layers: usize, d: Dims) -> String {
    decoder_ir(layers, d, QWEN3)
}

/// What varies between the decoder families the tests build: how many tokens a step takes, the
/// q/k/v biases (HF Qwen2), the per-head q/k RMSNorm (HF Qwen3) and the rope frequencies.
#[derive(Clone, Copy, Debug)]
pub struct Arch {
    /// Tokens per step: 1 is a decode step; `T > 1` a prefill chunk (ids `i32[T]`, heads
    /// `[T, heads, head_dim]`, the LM head on the last row only).
    pub tokens: usize,
    /// `add(matmul(h, w), bias)` for q, k and v (`self_attn.{q,k,v}_proj.bias`, bf16 `[n]`).
    pub qkv_bias: bool,
    /// `rms_norm` of q and k over head_dim before rope (`self_attn.{q,k}_norm.weight`).
    pub qk_norm: bool,
    /// The rope attributes: `theta = 1e6` (Qwen), or Llama 3.2's `theta = 5e5` with its scaling.
    pub llama3_rope: bool,
}

/// Qwen3: q/k norm, no biases, default rope with theta 1e6; one token.
pub const QWEN3: Arch = Arch {
    tokens: 1,
    qkv_bias: false,
    qk_norm: true,
    llama3_rope: false,
};

/// Qwen2: q/k/v biases, no q/k norm, default rope with theta 1e6; one token.
pub const QWEN2: Arch = Arch {
    tokens: 1,
    qkv_bias: true,
    qk_norm: false,
    llama3_rope: false,
};

/// Llama 3: no biases, no q/k norm, Llama 3 rope scaling; one token.
pub const LLAMA3: Arch = Arch {
    tokens: 1,
    qkv_bias: false,
    qk_norm: false,
    llama3_rope: true,
};

impl Arch {
    /// The same family on a prefill chunk of `tokens` tokens.
    pub fn prefill(self, tokens: usize) -> Arch {
        Arch { tokens, ..self }
    }
}

/// The unfused step of a decoder of family `arch` with `layers` layers and dimensions `d`, in IR
/// text. With [`QWEN3`] this is exactly the text [`qwen3_ir_dims`] has always produced.
pub fn decoder_ir(layers: usize, d: Dims, arch: Arch) -> String {
    let Dims {
        hidden: h,
        heads: nh,
        kv_heads: nkv,
        head_dim: hd,
        intermediate: i,
        vocab,
        max_context: ctx,
    } = d;
    let Arch {
        tokens: t,
        qkv_bias,
        qk_norm,
        llama3_rope,
    } = arch;
    let (nq, nk) = (nh * hd, nkv * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let rope_attrs = if llama3_rope {
        "theta = 5e5, rope_type = llama3, factor = 3.2e1, low_freq_factor = 1e0, \
         high_freq_factor = 4e0, original_max_position_embeddings = 8192"
    } else {
        "theta = 1e6"
    };
    // Per-head shapes: [heads, hd] for one token, [T, heads, hd] for a chunk.
    let heads = |n: usize| {
        if t == 1 {
            format!("{n}, {hd}")
        } else {
            format!("{t}, {n}, {hd}")
        }
    };
    let mut s = format!("weight @model.embed_tokens.weight : bf16[{vocab}, {h}]\n");
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        s += &format!(
            "weight @{p}input_layernorm.weight : bf16[{h}]
weight @{p}self_attn.q_proj.weight : bf16[{nq}, {h}]
weight @{p}self_attn.k_proj.weight : bf16[{nk}, {h}]
weight @{p}self_attn.v_proj.weight : bf16[{nk}, {h}]
"
        );
        if qkv_bias {
            s += &format!(
                "weight @{p}self_attn.q_proj.bias : bf16[{nq}]
weight @{p}self_attn.k_proj.bias : bf16[{nk}]
weight @{p}self_attn.v_proj.bias : bf16[{nk}]
"
            );
        }
        if qk_norm {
            s += &format!(
                "weight @{p}self_attn.q_norm.weight : bf16[{hd}]
weight @{p}self_attn.k_norm.weight : bf16[{hd}]
"
            );
        }
        s += &format!(
            "kv_cache @{p}k_cache : f32[{ctx}, {nkv}, {hd}]
kv_cache @{p}v_cache : f32[{ctx}, {nkv}, {hd}]
weight @{p}self_attn.o_proj.weight : bf16[{h}, {nq}]
weight @{p}post_attention_layernorm.weight : bf16[{h}]
weight @{p}mlp.gate_proj.weight : bf16[{i}, {h}]
weight @{p}mlp.up_proj.weight : bf16[{i}, {h}]
weight @{p}mlp.down_proj.weight : bf16[{h}, {i}]
"
        );
    }
    s += &format!("weight @model.norm.weight : bf16[{h}]\n");
    s += &format!("%token = input \"token\" : i32[{t}]\n%position = input \"position\" : i32[1]\n");
    s += &format!("%x0 = embedding(@model.embed_tokens.weight, %token) : f32[{t}, {h}]\n");
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        let (x, x1, x2) = (
            format!("%x{l}"),
            format!("%l{l}_x1"),
            format!("%x{}", l + 1),
        );
        let v = |n: &str| format!("%l{l}_{n}");
        let (hh, q2, k2, v2) = (v("h"), v("q2"), v("k2"), v("v2"));
        s += &format!(
            "{hh} = rms_norm({x}, @{p}input_layernorm.weight) {{eps = 1e-6}} : f32[{t}, {h}]\n"
        );
        // The projections (and their biases), then the per-head views.
        let mut proj: Vec<String> = Vec::new();
        for (name, n) in [("q", nq), ("k", nk), ("v", nk)] {
            let m = v(name);
            s += &format!("{m} = matmul({hh}, @{p}self_attn.{name}_proj.weight) : f32[{t}, {n}]\n");
            proj.push(if qkv_bias { v(&format!("{name}b")) } else { m });
        }
        if qkv_bias {
            for ((name, n), out) in [("q", nq), ("k", nk), ("v", nk)].into_iter().zip(&proj) {
                s += &format!(
                    "{out} = add({}, @{p}self_attn.{name}_proj.bias) : f32[{t}, {n}]\n",
                    v(name)
                );
            }
        }
        s += &format!(
            "{q2} = reshape({}) {{shape = [{hq}]}} : f32[{hq}]
{k2} = reshape({}) {{shape = [{hk}]}} : f32[{hk}]
{v2} = reshape({}) {{shape = [{hk}]}} : f32[{hk}]
",
            proj[0],
            proj[1],
            proj[2],
            hq = heads(nh),
            hk = heads(nkv),
        );
        let (mut qin, mut kin) = (q2, k2);
        if qk_norm {
            let (qn, kn) = (v("qn"), v("kn"));
            s += &format!(
                "{qn} = rms_norm({qin}, @{p}self_attn.q_norm.weight) {{eps = 1e-6}} : f32[{}]
{kn} = rms_norm({kin}, @{p}self_attn.k_norm.weight) {{eps = 1e-6}} : f32[{}]
",
                heads(nh),
                heads(nkv)
            );
            (qin, kin) = (qn, kn);
        }
        s += &format!(
            "{qr} = rope({qin}, %position) {{{rope_attrs}}} : f32[{hq}]
{kr} = rope({kin}, %position) {{{rope_attrs}}} : f32[{hk}]
{a} = attention({qr}, {kr}, {v2}, @{p}k_cache, @{p}v_cache, %position) {{scale = {scale:e}}} : f32[{hq}]
{a2} = reshape({a}) {{shape = [{t}, {nq}]}} : f32[{t}, {nq}]
{o} = matmul({a2}, @{p}self_attn.o_proj.weight) : f32[{t}, {h}]
{x1} = add({o}, {x}) : f32[{t}, {h}]
{h2} = rms_norm({x1}, @{p}post_attention_layernorm.weight) {{eps = 1e-6}} : f32[{t}, {h}]
{g} = matmul({h2}, @{p}mlp.gate_proj.weight) : f32[{t}, {i}]
{u} = matmul({h2}, @{p}mlp.up_proj.weight) : f32[{t}, {i}]
{sg} = silu({g}) : f32[{t}, {i}]
{m} = mul({sg}, {u}) : f32[{t}, {i}]
{dn} = matmul({m}, @{p}mlp.down_proj.weight) : f32[{t}, {h}]
{x2} = add({dn}, {x1}) : f32[{t}, {h}]
",
            hq = heads(nh),
            hk = heads(nkv),
            qr = v("qr"),
            kr = v("kr"),
            a = v("a"),
            a2 = v("a2"),
            o = v("o"),
            h2 = v("h2"),
            g = v("g"),
            u = v("u"),
            sg = v("sg"),
            m = v("m"),
            dn = v("dn"),
        );
    }
    // The LM head reads the last token's row only.
    let last = if t == 1 {
        format!("%x{layers}")
    } else {
        s += &format!(
            "%rest, %last = split(%x{layers}) {{axis = 0, sizes = [{}, 1]}} : f32[{}, {h}], f32[1, {h}]\n",
            t - 1,
            t - 1
        );
        "%last".to_string()
    };
    s += &format!(
        "%hf = rms_norm({last}, @model.norm.weight) {{eps = 1e-6}} : f32[1, {h}]
%logits = matmul(%hf, @model.embed_tokens.weight) : f32[1, {vocab}]
%next = argmax(%logits) : i32[1]
return %logits, %next
"
    );
    s
}
