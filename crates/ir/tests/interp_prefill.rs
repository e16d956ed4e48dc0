//! Prefill shapes: `rope`, `fused_qk_norm_rope` and `attention` on `T` tokens `[T, heads, d]` equal
//! the one-token forms run `T` times at consecutive positions, including chunks that follow tokens
//! already in the cache, for every KV-cache dtype; the cache bound `position + T <= max_context`.

mod interp_common;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Op, RopeScaling, Tensor};
use interp_common::{assert_close, f32s, pos, random, Builder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const H: usize = 4;
const KV: usize = 2;
const D: usize = 16;
const CTX: usize = 12;
const SCALE: f32 = 0.25;
const CACHE_DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn llama3() -> RopeScaling {
    RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16,
    }
}

/// `q`, `k`, `v` for `tokens` tokens (`None`: one token, rank 2).
fn qkv_shapes(tokens: Option<usize>) -> [Vec<usize>; 3] {
    let lead: Vec<usize> = tokens.into_iter().collect();
    let with = |h: usize| [lead.clone(), vec![h, D]].concat();
    [with(H), with(KV), with(KV)]
}

/// `attention(rope(q), rope(k), v, caches, position)`, or the bare attention when `rope` is
/// `None`; results: the attention output and the two roped values.
fn layer(tokens: Option<usize>, cache: DType, rope: Option<RopeScaling>) -> Builder {
    let mut b = Builder::new();
    let [qs, ks, vs] = qkv_shapes(tokens);
    let q = b.input("q", DType::F32, &qs);
    let k = b.input("k", DType::F32, &ks);
    let v = b.input("v", DType::F32, &vs);
    let p = b.input("position", DType::I32, &[1]);
    let kc = b.cache("k_cache", cache, &[CTX, KV, D]);
    let vc = b.cache("v_cache", cache, &[CTX, KV, D]);
    let (qr, kr) = match rope {
        Some(scaling) => {
            let op = Op::Rope {
                theta: 1e4,
                scaling,
            };
            (b.op(op.clone(), &[q, p]), b.op(op, &[k, p]))
        }
        None => (q, k),
    };
    let a = b.op(Op::Attention { scale: SCALE }, &[qr, kr, v, kc, vc, p]);
    b.results(&[a, qr, kr]);
    b
}

/// Random `[T, ..]` q, k, v for `t` tokens.
struct Chunk {
    t: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Chunk {
    fn random(rng: &mut ChaCha8Rng, t: usize) -> Chunk {
        Chunk {
            t,
            q: random(rng, t * H * D),
            k: random(rng, t * KV * D),
            v: random(rng, t * KV * D),
        }
    }

    /// The inputs of the rank-3 graph at `position`.
    fn inputs(&self, position: usize) -> Vec<(&'static str, Tensor)> {
        let [qs, ks, vs] = qkv_shapes(Some(self.t));
        vec![
            ("q", f32s(&qs, &self.q)),
            ("k", f32s(&ks, &self.k)),
            ("v", f32s(&vs, &self.v)),
            ("position", pos(position as i32)),
        ]
    }

    /// The inputs of the rank-2 graph for token `i` of the chunk, at `position`.
    fn token_inputs(&self, i: usize, position: usize) -> Vec<(&'static str, Tensor)> {
        let [qs, ks, vs] = qkv_shapes(None);
        let (q, kv) = (H * D, KV * D);
        vec![
            ("q", f32s(&qs, &self.q[i * q..(i + 1) * q])),
            ("k", f32s(&ks, &self.k[i * kv..(i + 1) * kv])),
            ("v", f32s(&vs, &self.v[i * kv..(i + 1) * kv])),
            ("position", pos(position as i32)),
        ]
    }
}

/// Runs `chunks` (token counts) from position 0: once as rank-3 chunks, once token by token through
/// the rank-2 graph, and compares every result and both caches.
fn check_chunks(cache: DType, rope: Option<RopeScaling>, chunks: &[usize], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let one = layer(None, cache, rope.clone());
    let many: Vec<Builder> = chunks
        .iter()
        .map(|&t| layer(Some(t), cache, rope.clone()))
        .collect();
    // No weights: both interpreters read the (empty) weights of the one-token graph.
    let mut by_token = Interpreter::new(&one.weights);
    let mut by_chunk = Interpreter::new(&one.weights);
    let mut position = 0;
    for (c, &t) in chunks.iter().enumerate() {
        let chunk = Chunk::random(&mut rng, t);
        let got = by_chunk.run(&many[c].g, &chunk.inputs(position)).unwrap();
        assert_eq!(got[0].ty.shape, [t, H, D]);
        for i in 0..t {
            let want = by_token
                .run(&one.g, &chunk.token_inputs(i, position + i))
                .unwrap();
            for (r, w) in want.iter().enumerate() {
                let n = w.data.len();
                let g = &got[r].data[i * n..(i + 1) * n];
                assert_close(g, &w.data, 1e-6);
            }
        }
        position += t;
    }
    for name in ["k_cache", "v_cache"] {
        let (a, b) = (by_chunk.state().get(name), by_token.state().get(name));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.ty, b.ty);
        assert_eq!(a.data, b.data, "{name} {cache}");
    }
}

#[test]
fn attention_on_t_tokens_equals_t_decode_steps_for_every_cache_dtype() {
    for (i, cache) in CACHE_DTYPES.into_iter().enumerate() {
        // One chunk from an empty cache; a chunk after earlier tokens; chunks after single tokens.
        check_chunks(cache, None, &[5], 10 + i as u64);
        check_chunks(cache, None, &[3, 4], 20 + i as u64);
        check_chunks(cache, None, &[1, 1, 4, 1, 5], 30 + i as u64);
    }
}

#[test]
fn rope_then_attention_on_t_tokens_equals_t_decode_steps() {
    for (i, cache) in CACHE_DTYPES.into_iter().enumerate() {
        check_chunks(cache, Some(RopeScaling::Default), &[2, 6, 4], 40 + i as u64);
        check_chunks(cache, Some(llama3()), &[4, 1, 7], 50 + i as u64);
    }
}

#[test]
fn fused_qk_norm_rope_on_t_tokens_equals_t_single_tokens() {
    let mut rng = ChaCha8Rng::seed_from_u64(60);
    let norm = random(&mut rng, D);
    let build = |tokens: Option<usize>, scaling: RopeScaling| {
        let mut b = Builder::new();
        let [qs, ks, _] = qkv_shapes(tokens);
        let q = b.input("q", DType::F32, &qs);
        let k = b.input("k", DType::F32, &ks);
        let p = b.input("position", DType::I32, &[1]);
        let qn = b.weight("qn", DType::BF16, &[D], &norm);
        let kn = b.weight("kn", DType::BF16, &[D], &norm);
        let outs = b.op_n(
            Op::FusedQkNormRope {
                eps: 1e-6,
                theta: 1e6,
                scaling,
            },
            &[q, k, qn, kn, p],
            2,
        );
        b.results(&outs);
        b
    };
    for scaling in [RopeScaling::Default, llama3()] {
        let t = 5;
        let (many, one) = (build(Some(t), scaling.clone()), build(None, scaling));
        let chunk = Chunk::random(&mut rng, t);
        for start in [0usize, 3, 1000] {
            let inputs = chunk.inputs(start);
            let got = Interpreter::new(&many.weights)
                .run(
                    &many.g,
                    &inputs[..2]
                        .iter()
                        .chain(&inputs[3..])
                        .cloned()
                        .collect::<Vec<_>>(),
                )
                .unwrap();
            assert_eq!(got[0].ty.shape, [t, H, D]);
            assert_eq!(got[1].ty.shape, [t, KV, D]);
            let mut it = Interpreter::new(&one.weights);
            for i in 0..t {
                let ins = chunk.token_inputs(i, start + i);
                let ins: Vec<_> = ins[..2].iter().chain(&ins[3..]).cloned().collect();
                let want = it.run(&one.g, &ins).unwrap();
                for r in 0..2 {
                    let n = want[r].data.len();
                    assert_close(&got[r].data[i * n..(i + 1) * n], &want[r].data, 1e-6);
                }
            }
        }
    }
}

#[test]
fn rope_on_t_tokens_advances_the_position_per_token() {
    // d = 2, theta = 1: inv_freq = 1, so token t at position p + t rotates (x0, x1) by p + t radians.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[3, 1, 2]);
    let p = b.input("position", DType::I32, &[1]);
    let y = b.op(
        Op::Rope {
            theta: 1.0,
            scaling: RopeScaling::Default,
        },
        &[x, p],
    );
    b.results(&[y]);
    let out = Interpreter::new(&b.weights)
        .run(
            &b.g,
            &[
                ("x", f32s(&[3, 1, 2], &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0])),
                ("position", pos(2)),
            ],
        )
        .unwrap();
    let want: Vec<f32> = (2..5)
        .flat_map(|a| {
            let a = a as f32;
            [a.cos(), a.sin()]
        })
        .collect();
    assert_close(&out[0].data, &want, 1e-6);
}

#[test]
fn a_chunk_past_max_context_is_an_error_and_writes_nothing() {
    let b = layer(Some(4), DType::F32, None);
    let mut rng = ChaCha8Rng::seed_from_u64(70);
    let chunk = Chunk::random(&mut rng, 4);
    let mut it = Interpreter::new(&b.weights);
    // Rows 8..12 fit exactly.
    it.run(&b.g, &chunk.inputs(CTX - 4)).unwrap();
    it.reset_state();
    let err = it
        .run(&b.g, &chunk.inputs(CTX - 3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("= attention"), "{err}");
    assert!(
        err.contains(
            "4 tokens at position 9 (rows 9..13) run past kv_cache @k_cache with max_context 12"
        ) && err.contains("expected position + 4 <= 12"),
        "{err}"
    );
    for name in ["k_cache", "v_cache"] {
        assert!(it.state().get(name).unwrap().data.iter().all(|v| *v == 0.0));
    }
}

#[test]
fn per_head_ops_reject_other_ranks_and_mixed_token_counts() {
    let mut b = Builder::new();
    let x4 = b.input("x4", DType::F32, &[1, 2, 2, 4]);
    let x1 = b.input("x1", DType::F32, &[8]);
    let p = b.input("position", DType::I32, &[1]);
    let rope = Op::Rope {
        theta: 1e4,
        scaling: RopeScaling::Default,
    };
    for x in [x4, x1] {
        let err = b.g.add1(rope.clone(), &[x, p]).unwrap_err().to_string();
        assert!(
            err.contains("rope expects x [heads, head_dim] or [tokens, heads, head_dim]"),
            "{err}"
        );
    }
    let q = b.input("q", DType::F32, &[3, 4, 8]);
    let k2 = b.input("k2", DType::F32, &[2, 8]);
    let k3 = b.input("k3", DType::F32, &[2, 2, 8]);
    let v3 = b.input("v3", DType::F32, &[3, 2, 8]);
    let kc = b.cache("kc", DType::F32, &[8, 2, 8]);
    let vc = b.cache("vc", DType::F32, &[8, 2, 8]);
    let att = Op::Attention { scale: 1.0 };
    let err =
        b.g.add1(att.clone(), &[q, k3, v3, kc, vc, p])
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("attention expects q and k with one token count T = 3, got f32[3, 4, 8] and f32[2, 2, 8]"),
        "{err}"
    );
    let err =
        b.g.add1(att.clone(), &[q, v3, k2, kc, vc, p])
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("attention expects q and v of one rank"),
        "{err}"
    );
    // Same T everywhere: the output is [T, h, d].
    let a = b.g.add1(att, &[q, v3, v3, kc, vc, p]).unwrap();
    assert_eq!(b.g.value_type(a).unwrap().shape, [3, 4, 8]);
}
