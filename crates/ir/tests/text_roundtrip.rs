//! Round-trip tests of the IR text form: `print(parse(print(g))) == print(g)` on hand-written graphs
//! that use every op kind, and on a few hundred random graphs; plus the exact printed format.

use std::collections::BTreeSet;

use braid_ir::{text, verify, DType, Graph, Op, OpKind, RopeScaling, TensorType, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn ty(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape)
}

fn input(g: &mut Graph, name: &str, t: TensorType) -> Value {
    g.add1(
        Op::Input {
            name: name.into(),
            ty: t,
        },
        &[],
    )
    .unwrap()
}

fn weight(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> Value {
    g.add1(
        Op::Weight {
            name: name.into(),
            ty: ty(dtype, shape),
        },
        &[],
    )
    .unwrap()
}

fn kv_cache(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> Value {
    g.add1(
        Op::KvCache {
            name: name.into(),
            ty: ty(dtype, shape),
        },
        &[],
    )
    .unwrap()
}

fn op(g: &mut Graph, op: Op, inputs: &[Value]) -> Value {
    g.add1(op, inputs).unwrap()
}

/// All outputs of a multi-output node.
fn outputs(g: &mut Graph, op: Op, inputs: &[Value]) -> Vec<Value> {
    let n = g.add(op, inputs).unwrap();
    let count = g.node(n).unwrap().outputs.len();
    (0..count)
        .map(|o| Value {
            node: n,
            output: o as u32,
        })
        .collect()
}

// A toy Qwen3: hidden 64, 4 query heads and 2 KV heads of head_dim 16, intermediate 128, vocab 100,
// max context 32.
const H: usize = 64;
const NH: usize = 4;
const NKV: usize = 2;
const D: usize = 16;
const I: usize = 128;
const VOCAB: usize = 100;
const CTX: usize = 32;
const EPS: f32 = 1e-6;
const THETA: f32 = 1e6;

/// One unfused Qwen3 decode step with one layer (the chain of the brief), tied lm_head.
fn unfused_layer() -> Graph {
    let mut g = Graph::new();
    let bf = DType::BF16;
    let token = input(&mut g, "token", ty(DType::I32, &[1]));
    let pos = input(&mut g, "position", ty(DType::I32, &[1]));
    let embed = weight(&mut g, "model.embed_tokens.weight", bf, &[VOCAB, H]);
    let p = "model.layers.0.";
    let w = |g: &mut Graph, n: &str, s: &[usize]| weight(g, &format!("{p}{n}"), bf, s);
    let ln1 = w(&mut g, "input_layernorm.weight", &[H]);
    let wq = w(&mut g, "self_attn.q_proj.weight", &[NH * D, H]);
    let wk = w(&mut g, "self_attn.k_proj.weight", &[NKV * D, H]);
    let wv = w(&mut g, "self_attn.v_proj.weight", &[NKV * D, H]);
    let qn_w = w(&mut g, "self_attn.q_norm.weight", &[D]);
    let kn_w = w(&mut g, "self_attn.k_norm.weight", &[D]);
    let wo = w(&mut g, "self_attn.o_proj.weight", &[H, NH * D]);
    let ln2 = w(&mut g, "post_attention_layernorm.weight", &[H]);
    let wg = w(&mut g, "mlp.gate_proj.weight", &[I, H]);
    let wu = w(&mut g, "mlp.up_proj.weight", &[I, H]);
    let wd = w(&mut g, "mlp.down_proj.weight", &[H, I]);
    let kc = kv_cache(&mut g, "model.layers.0.k_cache", DType::F32, &[CTX, NKV, D]);
    let vc = kv_cache(&mut g, "model.layers.0.v_cache", DType::F32, &[CTX, NKV, D]);
    let norm = weight(&mut g, "model.norm.weight", bf, &[H]);

    let x = op(&mut g, Op::Embedding, &[embed, token]);
    let h = op(&mut g, Op::RmsNorm { eps: EPS }, &[x, ln1]);
    let q = op(&mut g, Op::MatMul, &[h, wq]);
    let k = op(&mut g, Op::MatMul, &[h, wk]);
    let v = op(&mut g, Op::MatMul, &[h, wv]);
    let q2 = op(&mut g, Op::Reshape { shape: vec![NH, D] }, &[q]);
    let k2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![NKV, D],
        },
        &[k],
    );
    let v2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![NKV, D],
        },
        &[v],
    );
    let qn = op(&mut g, Op::RmsNorm { eps: EPS }, &[q2, qn_w]);
    let kn = op(&mut g, Op::RmsNorm { eps: EPS }, &[k2, kn_w]);
    let qr = op(
        &mut g,
        Op::Rope {
            theta: THETA,
            scaling: RopeScaling::Default,
        },
        &[qn, pos],
    );
    let kr = op(
        &mut g,
        Op::Rope {
            theta: THETA,
            scaling: RopeScaling::Default,
        },
        &[kn, pos],
    );
    let scale = (D as f32).powf(-0.5);
    let a = op(&mut g, Op::Attention { scale }, &[qr, kr, v2, kc, vc, pos]);
    let a2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![1, NH * D],
        },
        &[a],
    );
    let o = op(&mut g, Op::MatMul, &[a2, wo]);
    let x1 = op(&mut g, Op::Add, &[o, x]);
    let h2 = op(&mut g, Op::RmsNorm { eps: EPS }, &[x1, ln2]);
    let gate = op(&mut g, Op::MatMul, &[h2, wg]);
    let up = op(&mut g, Op::MatMul, &[h2, wu]);
    let act = op(&mut g, Op::Silu, &[gate]);
    let m = op(&mut g, Op::Mul, &[act, up]);
    let dn = op(&mut g, Op::MatMul, &[m, wd]);
    let x2 = op(&mut g, Op::Add, &[dn, x1]);
    let xf = op(&mut g, Op::RmsNorm { eps: EPS }, &[x2, norm]);
    let logits = op(&mut g, Op::MatMul, &[xf, embed]);
    let next = op(&mut g, Op::Argmax, &[logits]);
    g.set_results(vec![logits, next]);
    g
}

/// The same step in the fused form the passes produce, with the weight `concat`s still in the graph
/// and bf16 KV caches.
fn fused_layer() -> Graph {
    let mut g = Graph::new();
    let bf = DType::BF16;
    let token = input(&mut g, "token", ty(DType::I32, &[1]));
    let pos = input(&mut g, "position", ty(DType::I32, &[1]));
    let embed = weight(&mut g, "model.embed_tokens.weight", bf, &[VOCAB, H]);
    let p = "model.layers.0.";
    let w = |g: &mut Graph, n: &str, s: &[usize]| weight(g, &format!("{p}{n}"), bf, s);
    let ln1 = w(&mut g, "input_layernorm.weight", &[H]);
    let wq = w(&mut g, "self_attn.q_proj.weight", &[NH * D, H]);
    let wk = w(&mut g, "self_attn.k_proj.weight", &[NKV * D, H]);
    let wv = w(&mut g, "self_attn.v_proj.weight", &[NKV * D, H]);
    let qn_w = w(&mut g, "self_attn.q_norm.weight", &[D]);
    let kn_w = w(&mut g, "self_attn.k_norm.weight", &[D]);
    let wo = w(&mut g, "self_attn.o_proj.weight", &[H, NH * D]);
    let ln2 = w(&mut g, "post_attention_layernorm.weight", &[H]);
    let wg = w(&mut g, "mlp.gate_proj.weight", &[I, H]);
    let wu = w(&mut g, "mlp.up_proj.weight", &[I, H]);
    let wd = w(&mut g, "mlp.down_proj.weight", &[H, I]);
    let kc = kv_cache(&mut g, "model.layers.0.k_cache", bf, &[CTX, NKV, D]);
    let vc = kv_cache(&mut g, "model.layers.0.v_cache", bf, &[CTX, NKV, D]);
    let norm = weight(&mut g, "model.norm.weight", bf, &[H]);

    let x = op(&mut g, Op::Embedding, &[embed, token]);
    let wqkv = op(&mut g, Op::Concat { axis: 0 }, &[wq, wk, wv]);
    let qkv = op(&mut g, Op::FusedRmsNormMatmul { eps: EPS }, &[x, ln1, wqkv]);
    let parts = outputs(
        &mut g,
        Op::Split {
            axis: 1,
            sizes: vec![NH * D, NKV * D, NKV * D],
        },
        &[qkv],
    );
    let q2 = op(&mut g, Op::Reshape { shape: vec![NH, D] }, &[parts[0]]);
    let k2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![NKV, D],
        },
        &[parts[1]],
    );
    let v2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![NKV, D],
        },
        &[parts[2]],
    );
    let qk = outputs(
        &mut g,
        Op::FusedQkNormRope {
            eps: EPS,
            theta: THETA,
            scaling: RopeScaling::Default,
        },
        &[q2, k2, qn_w, kn_w, pos],
    );
    let scale = (D as f32).powf(-0.5);
    let a = op(
        &mut g,
        Op::Attention { scale },
        &[qk[0], qk[1], v2, kc, vc, pos],
    );
    let a2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![1, NH * D],
        },
        &[a],
    );
    let x1 = op(&mut g, Op::FusedMatmulAdd, &[a2, wo, x]);
    let wgu = op(&mut g, Op::Concat { axis: 0 }, &[wg, wu]);
    let gu = op(&mut g, Op::FusedRmsNormMatmul { eps: EPS }, &[x1, ln2, wgu]);
    let x2 = op(&mut g, Op::FusedGatedMlp, &[gu, wd, x1]);
    let logits = op(
        &mut g,
        Op::FusedRmsNormMatmul { eps: EPS },
        &[x2, norm, embed],
    );
    let next = op(&mut g, Op::Argmax, &[logits]);
    g.set_results(vec![logits, next]);
    g
}

/// Llama 3.2's rope scaling (its `config.json`).
const LLAMA3: RopeScaling = RopeScaling::Llama3 {
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
};

/// Tokens of the prefill graph.
const T: usize = 3;

/// A fused prefill step of `T` tokens in a Qwen2 / Llama 3 mix: q/k/v biases packed into one
/// `fused_rms_norm_matmul_add`, no q/k norm, Llama 3 rope scaling, rank-3 heads, a row-broadcast
/// `add` and `mul`, the last row taken by a `split` along axis 0 for the LM head.
fn prefill_biased_layer() -> Graph {
    let mut g = Graph::new();
    let bf = DType::BF16;
    let token = input(&mut g, "token", ty(DType::I32, &[T]));
    let pos = input(&mut g, "position", ty(DType::I32, &[1]));
    let embed = weight(&mut g, "model.embed_tokens.weight", bf, &[VOCAB, H]);
    let p = "model.layers.0.";
    let w = |g: &mut Graph, n: &str, s: &[usize]| weight(g, &format!("{p}{n}"), bf, s);
    let ln1 = w(&mut g, "input_layernorm.weight", &[H]);
    let wq = w(&mut g, "self_attn.q_proj.weight", &[NH * D, H]);
    let wk = w(&mut g, "self_attn.k_proj.weight", &[NKV * D, H]);
    let wv = w(&mut g, "self_attn.v_proj.weight", &[NKV * D, H]);
    let bq = w(&mut g, "self_attn.q_proj.bias", &[NH * D]);
    let bk = w(&mut g, "self_attn.k_proj.bias", &[NKV * D]);
    let bv = w(&mut g, "self_attn.v_proj.bias", &[NKV * D]);
    let wo = w(&mut g, "self_attn.o_proj.weight", &[H, NH * D]);
    let scale_w = w(&mut g, "extra.scale", &[H]);
    let shift_w = w(&mut g, "extra.shift", &[H]);
    let kc = kv_cache(&mut g, "model.layers.0.k_cache", bf, &[CTX, NKV, D]);
    let vc = kv_cache(&mut g, "model.layers.0.v_cache", bf, &[CTX, NKV, D]);
    let norm = weight(&mut g, "model.norm.weight", bf, &[H]);

    let x = op(&mut g, Op::Embedding, &[embed, token]);
    let wqkv = op(&mut g, Op::Concat { axis: 0 }, &[wq, wk, wv]);
    let bqkv = op(&mut g, Op::Concat { axis: 0 }, &[bq, bk, bv]);
    let qkv = op(
        &mut g,
        Op::FusedRmsNormMatmulAdd { eps: EPS },
        &[x, ln1, wqkv, bqkv],
    );
    let parts = outputs(
        &mut g,
        Op::Split {
            axis: 1,
            sizes: vec![NH * D, NKV * D, NKV * D],
        },
        &[qkv],
    );
    let heads = |g: &mut Graph, v: Value, n: usize| {
        op(
            g,
            Op::Reshape {
                shape: vec![T, n, D],
            },
            &[v],
        )
    };
    let q3 = heads(&mut g, parts[0], NH);
    let k3 = heads(&mut g, parts[1], NKV);
    let v3 = heads(&mut g, parts[2], NKV);
    let rope = Op::Rope {
        theta: 5e5,
        scaling: LLAMA3,
    };
    let qr = op(&mut g, rope.clone(), &[q3, pos]);
    let kr = op(&mut g, rope, &[k3, pos]);
    let scale = (D as f32).powf(-0.5);
    let a = op(&mut g, Op::Attention { scale }, &[qr, kr, v3, kc, vc, pos]);
    let a2 = op(
        &mut g,
        Op::Reshape {
            shape: vec![T, NH * D],
        },
        &[a],
    );
    let x1 = op(&mut g, Op::FusedMatmulAdd, &[a2, wo, x]);
    let scaled = op(&mut g, Op::Mul, &[x1, scale_w]);
    let shifted = op(&mut g, Op::Add, &[scaled, shift_w]);
    let rows = outputs(
        &mut g,
        Op::Split {
            axis: 0,
            sizes: vec![T - 1, 1],
        },
        &[shifted],
    );
    let logits = op(
        &mut g,
        Op::FusedRmsNormMatmul { eps: EPS },
        &[rows[1], norm, embed],
    );
    let next = op(&mut g, Op::Argmax, &[logits]);
    g.set_results(vec![logits, next]);
    g
}

/// Asserts that `g` prints, parses to a verified graph, and prints the same text again.
fn assert_round_trip(g: &Graph) -> String {
    let printed = text::print(g);
    let parsed = text::parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    verify(&parsed).unwrap();
    assert_eq!(text::print(&parsed), printed);
    assert_eq!(parsed.topo_order().len(), g.topo_order().len());
    printed
}

fn kinds(g: &Graph) -> BTreeSet<OpKind> {
    g.topo_order()
        .into_iter()
        .map(|n| g.node(n).unwrap().op.kind())
        .collect()
}

#[test]
fn hand_written_graphs_cover_every_op_kind_and_round_trip() {
    let (unfused, fused, prefill) = (unfused_layer(), fused_layer(), prefill_biased_layer());
    verify(&unfused).unwrap();
    verify(&fused).unwrap();
    verify(&prefill).unwrap();
    let covered: BTreeSet<OpKind> = [&unfused, &fused, &prefill]
        .into_iter()
        .flat_map(kinds)
        .collect();
    let all: BTreeSet<OpKind> = OpKind::ALL.into_iter().collect();
    assert_eq!(covered, all, "missing: {:?}", all.difference(&covered));
    let text = assert_round_trip(&unfused);
    assert!(text.contains("kv_cache @model.layers.0.k_cache : f32[32, 2, 16]\n"));
    assert!(text.contains(" = attention(%"));
    assert!(text.contains("{scale = 2.5e-1} : f32[4, 16]\n"));
    assert!(text.ends_with("return %26, %27\n"), "{text}");
    let text = assert_round_trip(&fused);
    assert!(text.contains(
        " = split(%3) {axis = 1, sizes = [64, 32, 32]} : f32[1, 64], f32[1, 32], f32[1, 32]\n"
    ));
    assert!(text.contains(
        "%10, %11 = fused_qk_norm_rope(%7, %8, @model.layers.0.self_attn.q_norm.weight, \
         @model.layers.0.self_attn.k_norm.weight, %9) {eps = 1e-6, theta = 1e6} : f32[4, 16], f32[2, 16]\n"
    ));
    let text = assert_round_trip(&prefill);
    for line in [
        "%0 = input \"token\" : i32[3]\n",
        "%1 = embedding(@model.embed_tokens.weight, %0) : f32[3, 64]\n",
        "%4 = fused_rms_norm_matmul_add(%1, @model.layers.0.input_layernorm.weight, %2, %3) \
         {eps = 1e-6} : f32[3, 128]\n",
        "%10 = rope(%8, %9) {theta = 5e5, rope_type = llama3, factor = 3.2e1, low_freq_factor = 1e0, \
         high_freq_factor = 4e0, original_max_position_embeddings = 8192} : f32[3, 4, 16]\n",
        "%14 = attention(%10, %12, %13, @model.layers.0.k_cache, @model.layers.0.v_cache, %9) \
         {scale = 2.5e-1} : f32[3, 4, 16]\n",
        "%17 = mul(%16, @model.layers.0.extra.scale) : f32[3, 64]\n",
        "%18 = add(%17, @model.layers.0.extra.shift) : f32[3, 64]\n",
        "%19, %20 = split(%18) {axis = 0, sizes = [2, 1]} : f32[2, 64], f32[1, 64]\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn rope_scaling_attributes_round_trip_and_default_prints_as_before() {
    let src = "\
%x = input \"x\" : f32[2, 4]
%p = input \"position\" : i32[1]
%a = rope(%x, %p) {theta = 1e4, rope_type = default} : f32[2, 4]
%b = rope(%x, %p) {original_max_position_embeddings = 4096, high_freq_factor = 4, factor = 8, rope_type = llama3, low_freq_factor = 1, theta = 5e5} : f32[2, 4]
%c = rope(%b, %p) {theta = 5e5, rope_type = llama3, factor = 8, low_freq_factor = 1, high_freq_factor = 4, original_max_position_embeddings = 4096} : f32[2, 4]
return %a, %c
";
    let g = text::parse(src).unwrap();
    let printed = text::print(&g);
    let llama3 =
        "rope_type = llama3, factor = 8e0, low_freq_factor = 1e0, high_freq_factor = 4e0, \
                  original_max_position_embeddings = 4096";
    assert_eq!(
        printed,
        format!(
            "%0 = input \"x\" : f32[2, 4]\n\
             %1 = input \"position\" : i32[1]\n\
             %2 = rope(%0, %1) {{theta = 1e4}} : f32[2, 4]\n\
             %3 = rope(%0, %1) {{theta = 5e5, {llama3}}} : f32[2, 4]\n\
             %4 = rope(%3, %1) {{theta = 5e5, {llama3}}} : f32[2, 4]\n\
             return %2, %4\n"
        )
    );
    assert_round_trip(&g);
    let Op::Rope { scaling, .. } = &g.node(g.results()[1].node).unwrap().op else {
        panic!("not a rope");
    };
    assert_eq!(
        *scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 4096,
        }
    );
    // fused_qk_norm_rope carries the same attributes.
    let src = "\
weight @n : f32[4]
%q = input \"q\" : f32[3, 2, 4]
%k = input \"k\" : f32[3, 1, 4]
%p = input \"position\" : i32[1]
%qr, %kr = fused_qk_norm_rope(%q, %k, @n, @n, %p) {eps = 1e-6, theta = 5e5, rope_type = llama3, factor = 32, low_freq_factor = 1, high_freq_factor = 4, original_max_position_embeddings = 8192} : f32[3, 2, 4], f32[3, 1, 4]
return %qr, %kr
";
    let printed = assert_round_trip(&text::parse(src).unwrap());
    assert!(printed.contains(
        "{eps = 1e-6, theta = 5e5, rope_type = llama3, factor = 3.2e1, low_freq_factor = 1e0, \
         high_freq_factor = 4e0, original_max_position_embeddings = 8192} : f32[3, 2, 4], f32[3, 1, 4]\n"
    ), "{printed}");
}

#[test]
fn prints_the_exact_stable_format() {
    let mut g = Graph::new();
    let token = input(&mut g, "token", ty(DType::I32, &[1]));
    let embed = weight(&mut g, "embed", DType::BF16, &[10, 8]);
    let ln = weight(&mut g, "ln", DType::F32, &[8]);
    let x = op(&mut g, Op::Embedding, &[embed, token]);
    let h = op(&mut g, Op::RmsNorm { eps: 1e-6 }, &[x, ln]);
    let parts = outputs(
        &mut g,
        Op::Split {
            axis: 1,
            sizes: vec![4, 2, 2],
        },
        &[h],
    );
    let c = op(&mut g, Op::Concat { axis: 1 }, &[parts[2], parts[0]]);
    let r = op(&mut g, Op::Reshape { shape: vec![2, 3] }, &[c]);
    g.set_results(vec![r, parts[1]]);
    let expected = "\
weight @embed : bf16[10, 8]
weight @ln : f32[8]
%0 = input \"token\" : i32[1]
%1 = embedding(@embed, %0) : f32[1, 8]
%2 = rms_norm(%1, @ln) {eps = 1e-6} : f32[1, 8]
%3, %4, %5 = split(%2) {axis = 1, sizes = [4, 2, 2]} : f32[1, 4], f32[1, 2], f32[1, 2]
%6 = concat(%5, %3) {axis = 1} : f32[1, 6]
%7 = reshape(%6) {shape = [2, 3]} : f32[2, 3]
return %7, %4
";
    assert_eq!(text::print(&g), expected);
    assert_round_trip(&g);
}

#[test]
fn print_ignores_node_indices_and_dead_nodes() {
    // Same structure, leaves and ops added in different orders, plus a dead node in the second.
    let build = |reverse: bool| {
        let mut g = Graph::new();
        let (w, x) = if reverse {
            let w = weight(&mut g, "w", DType::F16, &[3, 4]);
            let dead = input(&mut g, "unused", ty(DType::F32, &[1, 4]));
            op(&mut g, Op::Silu, &[dead]);
            (w, input(&mut g, "x", ty(DType::F32, &[1, 4])))
        } else {
            let x = input(&mut g, "x", ty(DType::F32, &[1, 4]));
            (weight(&mut g, "w", DType::F16, &[3, 4]), x)
        };
        let y = op(&mut g, Op::MatMul, &[x, w]);
        let z = op(&mut g, Op::Silu, &[y]);
        g.set_results(vec![z]);
        g
    };
    let (a, b) = (text::print(&build(false)), text::print(&build(true)));
    assert_eq!(a, b);
    assert!(!b.contains("unused"), "{b}");
    assert_eq!(
        a,
        "weight @w : f16[3, 4]\n%0 = input \"x\" : f32[1, 4]\n%1 = matmul(%0, @w) : f32[1, 3]\n\
         %2 = silu(%1) : f32[1, 3]\nreturn %2\n"
    );
}

#[test]
fn parse_takes_any_names_comments_and_renumbers_on_print() {
    let src = "\
# a tiny MLP tail
%x = input \"x\" : f32[1, 4]   # activations
weight @w_up : bf16[8, 4]

weight @\"odd name \\\"q\\\"\" : f32[4, 8]
%up.0 = matmul(%x, @w_up) : f32[1, 8]
%act = silu(%up.0) : f32[1, 8]
%down = matmul(%act, @\"odd name \\\"q\\\"\") : f32[1, 4]
%out = add(%down, %x) : f32[1, 4]
return %out, %act   # two results
";
    let g = text::parse(src).unwrap();
    verify(&g).unwrap();
    let printed = text::print(&g);
    assert_eq!(
        printed,
        "weight @w_up : bf16[8, 4]\nweight @\"odd name \\\"q\\\"\" : f32[4, 8]\n\
         %0 = input \"x\" : f32[1, 4]\n%1 = matmul(%0, @w_up) : f32[1, 8]\n%2 = silu(%1) : f32[1, 8]\n\
         %3 = matmul(%2, @\"odd name \\\"q\\\"\") : f32[1, 4]\n%4 = add(%3, %0) : f32[1, 4]\n\
         return %4, %2\n"
    );
    assert_eq!(text::print(&text::parse(&printed).unwrap()), printed);
    // The quoted name comes back verbatim.
    assert!(g.find_leaf("odd name \"q\"").is_some());
}

#[test]
fn parse_accepts_crlf_tabs_and_results_that_are_weights() {
    let src = "weight @w : f32[2]\r\n%0 =\tinput \"p\\u{3b1}\\n\" : i32[1]\r\nreturn @w, %0\r\n";
    let g = text::parse(src).unwrap();
    assert_eq!(g.results().len(), 2);
    let printed = text::print(&g);
    assert_eq!(
        printed,
        "weight @w : f32[2]\n%0 = input \"pα\\n\" : i32[1]\nreturn @w, %0\n"
    );
    assert_round_trip(&g);
}

#[test]
fn float_attributes_print_shortest_and_parse_back_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut specials = vec![
        1e-6f32,
        1e-5,
        1e6,
        1e4,
        0.125,
        f32::MIN_POSITIVE,
        f32::MAX,
        -0.0,
    ];
    specials.extend((0..200).map(|_| f32::from_bits(rng.random::<u32>() & 0x7f7f_ffff)));
    for eps in specials {
        let mut g = Graph::new();
        let x = input(&mut g, "x", ty(DType::F32, &[1, 2]));
        let w = weight(&mut g, "w", DType::F32, &[2]);
        let y = op(&mut g, Op::RmsNorm { eps }, &[x, w]);
        g.set_results(vec![y]);
        let printed = assert_round_trip(&g);
        assert!(printed.contains(&format!("{{eps = {eps:e}}}")), "{printed}");
        let parsed = text::parse(&printed).unwrap();
        let Op::RmsNorm { eps: back } = parsed.node(parsed.results()[0].node).unwrap().op else {
            panic!("not rms_norm");
        };
        assert_eq!(back.to_bits(), eps.to_bits(), "{eps:e}");
    }
    assert_eq!(format!("{:e}", 1e-6f32), "1e-6");
    assert_eq!(format!("{:e}", 1e6f32), "1e6");
}

/// Builds random valid graphs from chains of add/mul/silu/matmul/rms_norm/split/concat/reshape/
/// argmax (plus embedding and rope fed by argmax results) over random shapes and weight dtypes.
struct RandomGraph {
    g: Graph,
    rng: ChaCha8Rng,
    floats: Vec<Value>,
    ints: Vec<Value>,
    weights: usize,
}

impl RandomGraph {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut g = Graph::new();
        let rows = rng.random_range(1..=3);
        let cols = [2, 4, 6, 8, 12][rng.random_range(0..5)];
        let x = input(&mut g, "x", ty(DType::F32, &[rows, cols]));
        let pos = input(&mut g, "position", ty(DType::I32, &[1]));
        RandomGraph {
            g,
            rng,
            floats: vec![x],
            ints: vec![pos],
            weights: 0,
        }
    }

    fn shape(&self, v: Value) -> Vec<usize> {
        self.g.value_type(v).unwrap().shape.clone()
    }

    fn weight(&mut self, shape: &[usize]) -> Value {
        let dtype = [DType::BF16, DType::F16, DType::F32][self.rng.random_range(0..3)];
        self.weights += 1;
        let name = format!("layers.{}.w", self.weights);
        weight(&mut self.g, &name, dtype, shape)
    }

    /// A float value from the pool, the newest one half of the time so chains grow deep.
    fn pick(&mut self) -> Value {
        if self.rng.random_bool(0.5) {
            return *self.floats.last().unwrap();
        }
        self.floats[self.rng.random_range(0..self.floats.len())]
    }

    fn push(&mut self, op: Op, inputs: &[Value]) -> Value {
        let v = self.g.add1(op, inputs).unwrap();
        self.floats.push(v);
        v
    }

    /// One random op on random operands from the pool.
    fn step(&mut self) {
        let a = self.pick();
        let shape = self.shape(a);
        let last = shape.last().copied().unwrap_or(1);
        match self.rng.random_range(0..11) {
            0 | 1 => {
                let same: Vec<Value> = self
                    .floats
                    .iter()
                    .copied()
                    .filter(|v| self.shape(*v) == shape)
                    .collect();
                let b = if self.rng.random_bool(0.3) {
                    self.weight(&shape)
                } else {
                    same[self.rng.random_range(0..same.len())]
                };
                let op = if self.rng.random_bool(0.5) {
                    Op::Add
                } else {
                    Op::Mul
                };
                self.push(op, &[a, b]);
            }
            2 => {
                self.push(Op::Silu, &[a]);
            }
            3 if !shape.is_empty() => {
                let n = self.rng.random_range(1..=12);
                let w = self.weight(&[n, last]);
                self.push(Op::MatMul, &[a, w]);
            }
            4 if !shape.is_empty() => {
                let w = self.weight(&[last]);
                let eps =
                    [1e-6, 1e-5, self.rng.random_range(1e-8..1e-2)][self.rng.random_range(0..3)];
                self.push(Op::RmsNorm { eps }, &[a, w]);
            }
            5 if !shape.is_empty() => {
                let axis = self.rng.random_range(0..shape.len());
                let dim = shape[axis];
                let mut sizes = Vec::new();
                let mut left = dim;
                while left > 0 {
                    let s = self.rng.random_range(1..=left);
                    sizes.push(s);
                    left -= s;
                }
                if sizes.is_empty() {
                    sizes.push(0);
                }
                let n = self.g.add(Op::Split { axis, sizes }, &[a]).unwrap();
                for o in 0..self.g.node(n).unwrap().outputs.len() {
                    self.floats.push(Value {
                        node: n,
                        output: o as u32,
                    });
                }
            }
            6 if !shape.is_empty() => {
                let axis = self.rng.random_range(0..shape.len());
                let fits = |t: &[usize]| {
                    t.len() == shape.len() && (0..t.len()).all(|i| i == axis || t[i] == shape[i])
                };
                let matching: Vec<Value> = self
                    .floats
                    .iter()
                    .copied()
                    .filter(|v| fits(&self.shape(*v)))
                    .collect();
                let mut ins = vec![a];
                for _ in 0..self.rng.random_range(1..=3) {
                    ins.push(matching[self.rng.random_range(0..matching.len())]);
                }
                self.push(Op::Concat { axis }, &ins);
            }
            7 => {
                let numel: usize = shape.iter().product();
                let mut dims = Vec::new();
                let mut left = numel;
                for d in 2..=left.max(2) {
                    while left > 1 && left / d * d == left {
                        dims.push(d);
                        left /= d;
                    }
                }
                // Group the prime factors into 1..=3 dimensions, maybe with a leading 1.
                let rank = self.rng.random_range(1..=3);
                let mut out = vec![1usize; rank];
                for f in dims {
                    let i = self.rng.random_range(0..rank);
                    out[i] *= f;
                }
                if numel == 0 {
                    out[0] = 0;
                }
                self.push(Op::Reshape { shape: out }, &[a]);
            }
            8 if self.g.value_type(a).unwrap().rows() == 1 => {
                let id = self.g.add1(Op::Argmax, &[a]).unwrap();
                self.ints.push(id);
            }
            9 => {
                let ids = self.ints[self.rng.random_range(0..self.ints.len())];
                let vocab = self.rng.random_range(1..=20);
                let hidden = [2, 4, 8][self.rng.random_range(0..3)];
                let table = self.weight(&[vocab, hidden]);
                self.push(Op::Embedding, &[table, ids]);
            }
            10 if matches!(shape.len(), 2 | 3) && last % 2 == 0 => {
                let pos = self.ints[self.rng.random_range(0..self.ints.len())];
                let theta = [1e4, 1e6][self.rng.random_range(0..2)];
                let scaling = if self.rng.random_bool(0.5) {
                    RopeScaling::Default
                } else {
                    RopeScaling::Llama3 {
                        factor: self.rng.random_range(1.0..64.0),
                        low_freq_factor: 1.0,
                        high_freq_factor: self.rng.random_range(1.5..8.0),
                        original_max_position_embeddings: self.rng.random_range(1..100_000),
                    }
                };
                self.push(Op::Rope { theta, scaling }, &[a, pos]);
            }
            _ => {
                self.push(Op::Silu, &[a]);
            }
        }
    }

    fn finish(mut self) -> Graph {
        let mut results = vec![*self.floats.last().unwrap()];
        for _ in 0..self.rng.random_range(0..3) {
            let pool = if self.rng.random_bool(0.3) {
                &self.ints
            } else {
                &self.floats
            };
            results.push(pool[self.rng.random_range(0..pool.len())]);
        }
        self.g.set_results(results);
        self.g
    }
}

#[test]
fn random_graphs_round_trip() {
    let mut seen = BTreeSet::new();
    for seed in 0..400 {
        let mut r = RandomGraph::new(seed);
        let steps = r.rng.random_range(1..=20);
        for _ in 0..steps {
            r.step();
        }
        let g = r.finish();
        verify(&g).unwrap();
        seen.extend(kinds(&g));
        assert_round_trip(&g);
    }
    for k in [
        OpKind::Add,
        OpKind::Mul,
        OpKind::Silu,
        OpKind::MatMul,
        OpKind::RmsNorm,
        OpKind::Split,
        OpKind::Concat,
        OpKind::Reshape,
        OpKind::Argmax,
        OpKind::Embedding,
        OpKind::Rope,
    ] {
        assert!(seen.contains(&k), "random graphs never used {k}");
    }
}
