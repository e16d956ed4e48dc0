//! Each fused op equals its unfused composition on random inputs, and a whole Qwen3 decoder layer
//! in the fused form the passes produce equals the unfused layer over several decode steps.

mod interp_common;

use braid_ir::interp::Interpreter;
use braid_ir::{DType, Op, RopeScaling, Tensor, Value};
use interp_common::{f32s, pos, random, rel_l2, Builder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const EPS: f32 = 1e-6;
const THETA: f32 = 1_000_000.0;

/// Runs `g` once per input set (one interpreter, so KV caches carry over) and returns all results.
fn run_steps(b: &Builder, steps: &[Vec<(&str, Tensor)>]) -> Vec<Vec<Tensor>> {
    let mut it = Interpreter::new(&b.weights);
    steps
        .iter()
        .map(|inputs| it.run(&b.g, inputs).expect("graph runs"))
        .collect()
}

fn assert_same(fused: &[Vec<Tensor>], unfused: &[Vec<Tensor>], tol: f64) {
    assert_eq!(fused.len(), unfused.len());
    for (s, (f, u)) in fused.iter().zip(unfused).enumerate() {
        assert_eq!(f.len(), u.len());
        for (r, (a, b)) in f.iter().zip(u).enumerate() {
            assert_eq!(a.ty, b.ty, "step {s} result {r}");
            assert_eq!(a.ints, b.ints, "step {s} result {r}");
            let err = rel_l2(&a.data, &b.data);
            assert!(err <= tol, "step {s} result {r}: relative L2 {err}");
        }
    }
}

#[test]
fn fused_rms_norm_matmul_equals_norm_then_matmul() {
    let (rows, k, n) = (2, 48, 20);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (gs, ws, xs) = (
        random(&mut rng, k),
        random(&mut rng, n * k),
        random(&mut rng, rows * k),
    );
    let build = |fused: bool| {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, &[rows, k]);
        let g = b.weight("g", DType::BF16, &[k], &gs);
        let w = b.weight("w", DType::BF16, &[n, k], &ws);
        let y = if fused {
            b.op(Op::FusedRmsNormMatmul { eps: EPS }, &[x, g, w])
        } else {
            let h = b.op(Op::RmsNorm { eps: EPS }, &[x, g]);
            b.op(Op::MatMul, &[h, w])
        };
        b.results(&[y]);
        b
    };
    let steps = [vec![("x", f32s(&[rows, k], &xs))]];
    assert_same(
        &run_steps(&build(true), &steps),
        &run_steps(&build(false), &steps),
        1e-6,
    );
}

#[test]
fn fused_gated_mlp_equals_split_silu_mul_matmul_add() {
    let (i, h) = (24, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (gus, wds, rs) = (
        random(&mut rng, 2 * i),
        random(&mut rng, h * i),
        random(&mut rng, h),
    );
    let build = |fused: bool| {
        let mut b = Builder::new();
        let gu = b.input("gu", DType::F32, &[1, 2 * i]);
        let r = b.input("r", DType::F32, &[1, h]);
        let wd = b.weight("wd", DType::BF16, &[h, i], &wds);
        let y = if fused {
            b.op(Op::FusedGatedMlp, &[gu, wd, r])
        } else {
            let parts = b.op_n(
                Op::Split {
                    axis: 1,
                    sizes: vec![i, i],
                },
                &[gu],
                2,
            );
            let act = b.op(Op::Silu, &[parts[0]]);
            let m = b.op(Op::Mul, &[act, parts[1]]);
            let d = b.op(Op::MatMul, &[m, wd]);
            b.op(Op::Add, &[d, r])
        };
        b.results(&[y]);
        b
    };
    let steps = [vec![
        ("gu", f32s(&[1, 2 * i], &gus)),
        ("r", f32s(&[1, h], &rs)),
    ]];
    assert_same(
        &run_steps(&build(true), &steps),
        &run_steps(&build(false), &steps),
        1e-6,
    );
}

#[test]
fn fused_matmul_add_equals_matmul_then_add() {
    let (k, n) = (40, 12);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (xs, ws, rs) = (
        random(&mut rng, k),
        random(&mut rng, n * k),
        random(&mut rng, n),
    );
    let build = |fused: bool| {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, &[1, k]);
        let r = b.input("r", DType::F32, &[1, n]);
        let w = b.weight("w", DType::F16, &[n, k], &ws);
        let y = if fused {
            b.op(Op::FusedMatmulAdd, &[x, w, r])
        } else {
            let m = b.op(Op::MatMul, &[x, w]);
            b.op(Op::Add, &[m, r])
        };
        b.results(&[y]);
        b
    };
    let steps = [vec![("x", f32s(&[1, k], &xs)), ("r", f32s(&[1, n], &rs))]];
    assert_same(
        &run_steps(&build(true), &steps),
        &run_steps(&build(false), &steps),
        1e-6,
    );
}

#[test]
fn fused_matmul_add_broadcasts_a_bias_row() {
    let (rows, k, n) = (3, 40, 12);
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let (xs, ws, bs) = (
        random(&mut rng, rows * k),
        random(&mut rng, n * k),
        random(&mut rng, n),
    );
    let build = |fused: bool| {
        let mut b = Builder::new();
        let x = b.input("x", DType::F32, &[rows, k]);
        let w = b.weight("w", DType::BF16, &[n, k], &ws);
        let bias = b.weight("bias", DType::BF16, &[n], &bs);
        let y = if fused {
            b.op(Op::FusedMatmulAdd, &[x, w, bias])
        } else {
            let m = b.op(Op::MatMul, &[x, w]);
            b.op(Op::Add, &[m, bias])
        };
        b.results(&[y]);
        b
    };
    let steps = [vec![("x", f32s(&[rows, k], &xs))]];
    assert_same(
        &run_steps(&build(true), &steps),
        &run_steps(&build(false), &steps),
        0.0,
    );
}

#[test]
fn fused_rms_norm_matmul_add_equals_norm_matmul_add() {
    let (rows, k, n) = (4, 48, 20);
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let (gs, ws, bs, rs, xs) = (
        random(&mut rng, k),
        random(&mut rng, n * k),
        random(&mut rng, n),
        random(&mut rng, rows * n),
        random(&mut rng, rows * k),
    );
    // r: a bias row [n] (broadcast) or a residual [rows, n].
    for broadcast in [true, false] {
        let build = |fused: bool| {
            let mut b = Builder::new();
            let x = b.input("x", DType::F32, &[rows, k]);
            let g = b.weight("g", DType::BF16, &[k], &gs);
            let w = b.weight("w", DType::BF16, &[n, k], &ws);
            let r = if broadcast {
                b.weight("bias", DType::BF16, &[n], &bs)
            } else {
                b.input("r", DType::F32, &[rows, n])
            };
            let y = if fused {
                b.op(Op::FusedRmsNormMatmulAdd { eps: EPS }, &[x, g, w, r])
            } else {
                let h = b.op(Op::RmsNorm { eps: EPS }, &[x, g]);
                let m = b.op(Op::MatMul, &[h, w]);
                b.op(Op::Add, &[m, r])
            };
            b.results(&[y]);
            b
        };
        let mut inputs = vec![("x", f32s(&[rows, k], &xs))];
        if !broadcast {
            inputs.push(("r", f32s(&[rows, n], &rs)));
        }
        let steps = [inputs];
        assert_same(
            &run_steps(&build(true), &steps),
            &run_steps(&build(false), &steps),
            0.0,
        );
    }
    // The type rule names the op and what r may be.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[rows, k]);
    let g = b.weight("g", DType::BF16, &[k], &gs);
    let w = b.weight("w", DType::BF16, &[n, k], &ws);
    let r = b.input("r", DType::F32, &[rows, n + 1]);
    let err =
        b.g.add1(Op::FusedRmsNormMatmulAdd { eps: EPS }, &[x, g, w, r])
            .unwrap_err()
            .to_string();
    assert!(
        err.contains(
            "fused_rms_norm_matmul_add expects residual f32[4, 20] or bias [20], got f32[4, 21]"
        ),
        "{err}"
    );
}

#[test]
fn fused_qk_norm_rope_equals_norm_then_rope_per_operand() {
    let (nh, nkv, d) = (4, 2, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (qs, ks, qns, kns) = (
        random(&mut rng, nh * d),
        random(&mut rng, nkv * d),
        random(&mut rng, d),
        random(&mut rng, d),
    );
    let build = |fused: bool| {
        let mut b = Builder::new();
        let q = b.input("q", DType::F32, &[nh, d]);
        let k = b.input("k", DType::F32, &[nkv, d]);
        let p = b.input("position", DType::I32, &[1]);
        let qn = b.weight("qn", DType::BF16, &[d], &qns);
        let kn = b.weight("kn", DType::BF16, &[d], &kns);
        let outs = if fused {
            b.op_n(
                Op::FusedQkNormRope {
                    eps: EPS,
                    theta: THETA,
                    scaling: RopeScaling::Default,
                },
                &[q, k, qn, kn, p],
                2,
            )
        } else {
            let mut outs = Vec::new();
            for (x, w) in [(q, qn), (k, kn)] {
                let nx = b.op(Op::RmsNorm { eps: EPS }, &[x, w]);
                outs.push(b.op(
                    Op::Rope {
                        theta: THETA,
                        scaling: RopeScaling::Default,
                    },
                    &[nx, p],
                ));
            }
            outs
        };
        b.results(&outs);
        b
    };
    let steps: Vec<_> = [0, 5, 1000]
        .iter()
        .map(|&p| {
            vec![
                ("q", f32s(&[nh, d], &qs)),
                ("k", f32s(&[nkv, d], &ks)),
                ("position", pos(p)),
            ]
        })
        .collect();
    assert_same(
        &run_steps(&build(true), &steps),
        &run_steps(&build(false), &steps),
        1e-6,
    );
}

/// Sizes of the toy Qwen3 layer.
const H: usize = 32;
const NH: usize = 4;
const NKV: usize = 2;
const D: usize = 8;
const I: usize = 48;
const CTX: usize = 8;
const VOCAB: usize = 50;

/// One decoder layer (plus embedding, final norm, tied lm_head and argmax), unfused or in the fused
/// form the passes produce, with the same random bf16 weights and a bf16 KV cache.
fn qwen3_layer(fused: bool) -> Builder {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut b = Builder::new();
    let mut w = |b: &mut Builder, name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        let vals = random(&mut rng, n);
        b.weight(name, DType::BF16, shape, &vals)
    };
    let embed = w(&mut b, "embed", &[VOCAB, H]);
    let ln1 = w(&mut b, "ln1", &[H]);
    let wq = w(&mut b, "wq", &[NH * D, H]);
    let wk = w(&mut b, "wk", &[NKV * D, H]);
    let wv = w(&mut b, "wv", &[NKV * D, H]);
    let qn = w(&mut b, "qn", &[D]);
    let kn = w(&mut b, "kn", &[D]);
    let wo = w(&mut b, "wo", &[H, NH * D]);
    let ln2 = w(&mut b, "ln2", &[H]);
    let wg = w(&mut b, "wg", &[I, H]);
    let wu = w(&mut b, "wu", &[I, H]);
    let wd = w(&mut b, "wd", &[H, I]);
    let norm = w(&mut b, "norm", &[H]);
    let kc = b.cache("k_cache", DType::BF16, &[CTX, NKV, D]);
    let vc = b.cache("v_cache", DType::BF16, &[CTX, NKV, D]);
    let tok = b.input("token", DType::I32, &[1]);
    let p = b.input("position", DType::I32, &[1]);
    let eps = Op::RmsNorm { eps: EPS };
    let reshape = |shape: &[usize]| Op::Reshape {
        shape: shape.to_vec(),
    };
    let attn = Op::Attention {
        scale: (D as f32).powf(-0.5),
    };

    let x = b.op(Op::Embedding, &[embed, tok]);
    let x2: Value = if fused {
        let wqkv = b.op(Op::Concat { axis: 0 }, &[wq, wk, wv]);
        let qkv = b.op(Op::FusedRmsNormMatmul { eps: EPS }, &[x, ln1, wqkv]);
        let parts = b.op_n(
            Op::Split {
                axis: 1,
                sizes: vec![NH * D, NKV * D, NKV * D],
            },
            &[qkv],
            3,
        );
        let q2 = b.op(reshape(&[NH, D]), &[parts[0]]);
        let k2 = b.op(reshape(&[NKV, D]), &[parts[1]]);
        let v2 = b.op(reshape(&[NKV, D]), &[parts[2]]);
        let qk = b.op_n(
            Op::FusedQkNormRope {
                eps: EPS,
                theta: THETA,
                scaling: RopeScaling::Default,
            },
            &[q2, k2, qn, kn, p],
            2,
        );
        let a = b.op(attn, &[qk[0], qk[1], v2, kc, vc, p]);
        let a2 = b.op(reshape(&[1, NH * D]), &[a]);
        let x1 = b.op(Op::FusedMatmulAdd, &[a2, wo, x]);
        let wgu = b.op(Op::Concat { axis: 0 }, &[wg, wu]);
        let gu = b.op(Op::FusedRmsNormMatmul { eps: EPS }, &[x1, ln2, wgu]);
        b.op(Op::FusedGatedMlp, &[gu, wd, x1])
    } else {
        let h = b.op(eps.clone(), &[x, ln1]);
        let q = b.op(Op::MatMul, &[h, wq]);
        let k = b.op(Op::MatMul, &[h, wk]);
        let v = b.op(Op::MatMul, &[h, wv]);
        let q2 = b.op(reshape(&[NH, D]), &[q]);
        let k2 = b.op(reshape(&[NKV, D]), &[k]);
        let v2 = b.op(reshape(&[NKV, D]), &[v]);
        let qn2 = b.op(eps.clone(), &[q2, qn]);
        let kn2 = b.op(eps.clone(), &[k2, kn]);
        let qr = b.op(
            Op::Rope {
                theta: THETA,
                scaling: RopeScaling::Default,
            },
            &[qn2, p],
        );
        let kr = b.op(
            Op::Rope {
                theta: THETA,
                scaling: RopeScaling::Default,
            },
            &[kn2, p],
        );
        let a = b.op(attn, &[qr, kr, v2, kc, vc, p]);
        let a2 = b.op(reshape(&[1, NH * D]), &[a]);
        let o = b.op(Op::MatMul, &[a2, wo]);
        let x1 = b.op(Op::Add, &[o, x]);
        let h2 = b.op(eps.clone(), &[x1, ln2]);
        let g = b.op(Op::MatMul, &[h2, wg]);
        let u = b.op(Op::MatMul, &[h2, wu]);
        let sg = b.op(Op::Silu, &[g]);
        let m = b.op(Op::Mul, &[sg, u]);
        let dn = b.op(Op::MatMul, &[m, wd]);
        b.op(Op::Add, &[dn, x1])
    };
    let hn = b.op(eps, &[x2, norm]);
    let logits = b.op(Op::MatMul, &[hn, embed]);
    let next = b.op(Op::Argmax, &[logits]);
    b.results(&[logits, next]);
    b
}

#[test]
fn fused_qwen3_layer_equals_unfused_over_decode_steps() {
    let steps: Vec<_> = [(7, 0), (42, 1), (3, 2), (19, 3)]
        .iter()
        .map(|&(t, p)| vec![("token", Tensor::i32([1], vec![t])), ("position", pos(p))])
        .collect();
    let fused = run_steps(&qwen3_layer(true), &steps);
    let unfused = run_steps(&qwen3_layer(false), &steps);
    assert_same(&fused, &unfused, 1e-6);
    // The steps differ from one another, so the KV cache is really read.
    assert!(rel_l2(&fused[3][0].data, &fused[0][0].data) > 1e-3);
}
