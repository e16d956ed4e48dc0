//! Attention and the KV cache: hand-computed outputs, GQA mapping, persistence, dtype rounding.

mod interp_common;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Op, Tensor};
use interp_common::{assert_close, f32s, pos, Builder};

/// `attention(q [h, d], k [kv, d], v [kv, d], @k_cache, @v_cache [ctx, kv, d], position){scale}`.
fn attention_graph(h: usize, kv: usize, d: usize, ctx: usize, cache: DType, scale: f32) -> Builder {
    let mut b = Builder::new();
    let q = b.input("q", DType::F32, &[h, d]);
    let k = b.input("k", DType::F32, &[kv, d]);
    let v = b.input("v", DType::F32, &[kv, d]);
    let kc = b.cache("k_cache", cache, &[ctx, kv, d]);
    let vc = b.cache("v_cache", cache, &[ctx, kv, d]);
    let p = b.input("position", DType::I32, &[1]);
    let a = b.op(Op::Attention { scale }, &[q, k, v, kc, vc, p]);
    b.results(&[a]);
    b
}

/// The inputs of one attention step.
fn step(
    h: usize,
    kv: usize,
    d: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: i32,
) -> Vec<(&'static str, Tensor)> {
    vec![
        ("q", f32s(&[h, d], q)),
        ("k", f32s(&[kv, d], k)),
        ("v", f32s(&[kv, d], v)),
        ("position", pos(p)),
    ]
}

#[test]
fn one_cached_row_returns_v() {
    // A single row gets softmax weight 1, whatever q and k are.
    let b = attention_graph(1, 1, 2, 4, DType::F32, 0.7);
    let mut it = Interpreter::new(&b.weights);
    let out = it
        .run(
            &b.g,
            &step(1, 1, 2, &[0.3, -2.0], &[1.5, 0.25], &[4.0, -7.5], 0),
        )
        .unwrap();
    assert_eq!(out[0].ty.shape, [1, 2]);
    assert_close(&out[0].data, &[4.0, -7.5], 1e-7);
}

#[test]
fn two_rows_are_weighted_by_softmax_and_rows_persist_across_runs() {
    // Step 0 caches k0 = [0, 0], v0 = [4, 0]. Step 1 caches k1 = [ln 3, 0], v1 = [0, 8] and asks
    // with q = [1, 0], scale 1: scores [0, ln 3], softmax [1/4, 3/4], output [1, 6].
    let b = attention_graph(1, 1, 2, 3, DType::F32, 1.0);
    let mut it = Interpreter::new(&b.weights);
    it.run(
        &b.g,
        &step(1, 1, 2, &[5.0, 5.0], &[0.0, 0.0], &[4.0, 0.0], 0),
    )
    .unwrap();
    let ln3 = 3.0f32.ln();
    let out = it
        .run(
            &b.g,
            &step(1, 1, 2, &[1.0, 0.0], &[ln3, 0.0], &[0.0, 8.0], 1),
        )
        .unwrap();
    assert_close(&out[0].data, &[1.0, 6.0], 1e-6);

    let kc = it.state().get("k_cache").expect("k_cache allocated");
    assert_eq!(kc.ty.shape, [3, 1, 2]);
    assert_eq!(kc.data, [0.0, 0.0, ln3, 0.0, 0.0, 0.0]);
    let vc = it.state().get("v_cache").expect("v_cache allocated");
    assert_eq!(vc.data, [4.0, 0.0, 0.0, 8.0, 0.0, 0.0]);
}

#[test]
fn scale_multiplies_the_scores() {
    // Scores q·k = [0, 2] scaled by 0.5 give [0, 1]: weights [1, e] / (1 + e).
    let b = attention_graph(1, 1, 1, 2, DType::F32, 0.5);
    let mut it = Interpreter::new(&b.weights);
    it.run(&b.g, &step(1, 1, 1, &[1.0], &[0.0], &[1.0], 0))
        .unwrap();
    let out = it
        .run(&b.g, &step(1, 1, 1, &[1.0], &[2.0], &[-1.0], 1))
        .unwrap();
    let e = std::f32::consts::E;
    assert_close(&out[0].data, &[(1.0 - e) / (1.0 + e)], 1e-6);
}

#[test]
fn gqa_maps_query_heads_to_kv_heads_by_division() {
    // h = 4, kv = 2: query heads 0, 1 read KV head 0; heads 2, 3 read KV head 1.
    let b = attention_graph(4, 2, 2, 2, DType::F32, 1.0);
    let mut it = Interpreter::new(&b.weights);
    let q = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
    let out = it
        .run(
            &b.g,
            &step(
                4,
                2,
                2,
                &q,
                &[1.0, 1.0, -1.0, 2.0],
                &[1.0, 2.0, 3.0, 4.0],
                0,
            ),
        )
        .unwrap();
    assert_eq!(out[0].data, [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);

    // Second step: each head's softmax runs over the two rows of its own KV head.
    let k1 = [0.0, 0.0, 1.0, 0.0];
    let v1 = [-1.0, 0.0, 0.0, -2.0];
    let out = it.run(&b.g, &step(4, 2, 2, &q, &k1, &v1, 1)).unwrap();
    let k0 = [[1.0f32, 1.0], [-1.0, 2.0]];
    let v0 = [[1.0f32, 2.0], [3.0, 4.0]];
    let mut want = Vec::new();
    for i in 0..4 {
        let g = i / 2;
        let qi = [q[2 * i], q[2 * i + 1]];
        let s0 = qi[0] * k0[g][0] + qi[1] * k0[g][1];
        let s1 = qi[0] * k1[2 * g] + qi[1] * k1[2 * g + 1];
        let (e0, e1) = ((s0 - s0.max(s1)).exp(), (s1 - s0.max(s1)).exp());
        let (p0, p1) = (e0 / (e0 + e1), e1 / (e0 + e1));
        want.push(p0 * v0[g][0] + p1 * v1[2 * g]);
        want.push(p0 * v0[g][1] + p1 * v1[2 * g + 1]);
    }
    assert_close(&out[0].data, &want, 1e-6);
}

#[test]
fn bf16_and_f16_caches_round_stored_values() {
    // 1 + 2^-8 lies halfway between the bf16 neighbours 1 and 1 + 2^-7: round-to-even gives 1.
    // 1 + 2^-11 is the same case for f16. An f32 cache keeps the value.
    for (dtype, x) in [
        (DType::BF16, 1.0 + 2f32.powi(-8)),
        (DType::F16, 1.0 + 2f32.powi(-11)),
        (DType::F32, 1.0 + 2f32.powi(-8)),
    ] {
        let want = if dtype == DType::F32 { x } else { 1.0 };
        let b = attention_graph(1, 1, 2, 2, dtype, 1.0);
        let mut it = Interpreter::new(&b.weights);
        let out = it
            .run(&b.g, &step(1, 1, 2, &[1.0, 1.0], &[x, 3.0], &[x, -0.5], 0))
            .unwrap();
        assert_eq!(out[0].data, [want, -0.5], "{dtype}");
        let kc = it.state().get("k_cache").unwrap();
        assert_eq!(kc.ty.dtype, dtype);
        assert_eq!(kc.data[..2], [want, 3.0], "{dtype}");
    }
}

#[test]
fn reset_state_zeroes_the_caches() {
    let b = attention_graph(1, 1, 1, 2, DType::F32, 1.0);
    let mut it = Interpreter::new(&b.weights);
    it.run(&b.g, &step(1, 1, 1, &[1.0], &[2.0], &[3.0], 0))
        .unwrap();
    assert_eq!(it.state().get("v_cache").unwrap().data, [3.0, 0.0]);
    it.reset_state();
    assert_eq!(it.state().get("v_cache").unwrap().data, [0.0, 0.0]);
    assert_eq!(it.state().get("k_cache").unwrap().data, [0.0, 0.0]);
    // Position 1 after a reset attends over a zero row 0: scores [0, 1·1], values [0, 5].
    let out = it
        .run(&b.g, &step(1, 1, 1, &[1.0], &[1.0], &[5.0], 1))
        .unwrap();
    let e = std::f32::consts::E;
    assert_close(&out[0].data, &[5.0 * e / (1.0 + e)], 1e-6);
}

#[test]
fn position_out_of_range_is_an_error_and_writes_nothing() {
    let b = attention_graph(1, 1, 2, 2, DType::F32, 1.0);
    let mut it = Interpreter::new(&b.weights);
    let err = it
        .run(
            &b.g,
            &step(1, 1, 2, &[1.0, 1.0], &[1.0, 1.0], &[1.0, 1.0], 2),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("= attention"), "{err}");
    assert!(
        err.contains("position 2") && err.contains("max_context 2"),
        "{err}"
    );
    let err = it
        .run(
            &b.g,
            &step(1, 1, 2, &[1.0, 1.0], &[1.0, 1.0], &[1.0, 1.0], -1),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("position -1"), "{err}");
    assert!(it
        .state()
        .get("k_cache")
        .is_none_or(|t| t.data.iter().all(|v| *v == 0.0)));
}

#[test]
fn two_layers_keep_separate_caches() {
    // Two attention nodes over different caches: each layer's rows stay its own.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[1, 1]);
    let p = b.input("position", DType::I32, &[1]);
    let mut outs = Vec::new();
    for l in 0..2 {
        let kc = b.cache(&format!("l{l}.k"), DType::F32, &[2, 1, 1]);
        let vc = b.cache(&format!("l{l}.v"), DType::F32, &[2, 1, 1]);
        let src = if l == 0 { x } else { outs[0] };
        let a = b.op(Op::Attention { scale: 1.0 }, &[src, src, src, kc, vc, p]);
        outs.push(b.op(Op::Add, &[a, a]));
    }
    b.results(&outs);
    let mut it = Interpreter::new(&b.weights);
    let out = it
        .run(&b.g, &[("x", f32s(&[1, 1], &[1.5])), ("position", pos(0))])
        .unwrap();
    assert_eq!(out[0].data, [3.0]);
    assert_eq!(out[1].data, [6.0]);
    assert_eq!(it.state().get("l0.v").unwrap().data, [1.5, 0.0]);
    assert_eq!(it.state().get("l1.v").unwrap().data, [3.0, 0.0]);
    assert_eq!(it.state().len(), 4);
}
