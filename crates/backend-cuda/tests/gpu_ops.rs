//! Every kernel against the reference interpreter (`braid_ir::interp`) on fresh random inputs at
//! Qwen3-0.6B's sizes (hidden 1024, heads 16/8, head_dim 128, intermediate 3072, vocab 151936).
//! Each graph runs eagerly and as a replayed CUDA graph; the two must agree bit for bit.
//!
//! Run on a GPU machine: `cargo test -p braid-backend-cuda --test gpu_ops -- --ignored`.

mod common;

use braid_backend_cuda::{CudaExecutor, ExecOptions, Tuning};
use braid_ir::interp::Interpreter;
use braid_ir::{DType, Graph, HostWeight, Op, RopeScaling, Tensor, TensorType, Value};
use common::*;

/// Relative L2 bound for f32 arithmetic on f32 or bf16-upcast operands (only the summation order
/// differs from the interpreter).
const TOL: f64 = 1e-4;
/// Attention sums up to `max_context` terms; the interpreter's sequential f32 sums drift by ~1e-4
/// over 20k rows.
const TOL_ATTENTION: f64 = 1e-3;

type Step = Vec<(String, Tensor)>;

/// Runs `steps` through the interpreter, an eager executor and a graph executor; compares every
/// result (relative L2 `<= tol` for floats, equality for ints, eager == graph bit for bit).
fn check(label: &str, g: &Graph, w: &Weights, steps: &[Step], tol: f64) {
    check_with(label, g, w, steps, tol, Tuning::default())
}

/// [`check`] with the executors lowered with `tuning`.
fn check_with(label: &str, g: &Graph, w: &Weights, steps: &[Step], tol: f64, tuning: Tuning) {
    let dev = device();
    let mut interp = Interpreter::new(w);
    let eager_opts = ExecOptions {
        use_graph: false,
        sync_each_launch: true,
        tuning,
        ..ExecOptions::default()
    };
    let graph_opts = ExecOptions {
        tuning,
        ..ExecOptions::default()
    };
    let mut eager =
        CudaExecutor::new(&dev, g, w, eager_opts).unwrap_or_else(|e| panic!("{label}: {e}"));
    let mut graph =
        CudaExecutor::new(&dev, g, w, graph_opts).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(graph.uses_graph());
    let mut worst = 0.0f64;
    for (s, step) in steps.iter().enumerate() {
        let ins: Vec<(&str, Tensor)> = step.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let want = interp
            .run(g, &ins)
            .unwrap_or_else(|e| panic!("{label} step {s}: interpreter: {e}"));
        let got = eager
            .run(&ins)
            .unwrap_or_else(|e| panic!("{label} step {s}: eager: {e}"));
        let replay = graph
            .run(&ins)
            .unwrap_or_else(|e| panic!("{label} step {s}: graph: {e}"));
        assert_eq!(got.len(), want.len());
        for (r, ((a, b), c)) in got.iter().zip(&want).zip(&replay).enumerate() {
            assert_eq!(a.ty, b.ty, "{label} step {s} result {r}: type");
            if b.ty.dtype == DType::I32 {
                assert_eq!(a.ints, b.ints, "{label} step {s} result {r}: ints");
            } else {
                let err = rel_l2(&a.data, &b.data);
                worst = worst.max(err);
                assert!(
                    err <= tol,
                    "{label} step {s} result {r}: relative L2 {err:.3e} > {tol:e}"
                );
            }
            let same = a
                .data
                .iter()
                .zip(&c.data)
                .all(|(x, y)| x.to_bits() == y.to_bits())
                && a.ints == c.ints;
            assert!(
                same,
                "{label} step {s} result {r}: graph replay differs from eager"
            );
        }
    }
    println!(
        "ok  {label}: {} step(s), worst relative L2 {worst:.2e}, {} launch(es)",
        steps.len(),
        eager.launches_per_step()
    );
}

fn f32_input(g: &mut Graph, name: &str, shape: &[usize]) -> Value {
    input(g, name, TensorType::new(DType::F32, shape.to_vec()))
}

fn rand_tensor(rng: &mut Rng, shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::f32(shape.to_vec(), rng.vec(n, scale))
}

fn pos_tensor(p: i32) -> Tensor {
    Tensor::i32([1], vec![p])
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn embedding_upcasts_rows_of_every_table_dtype() {
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let mut rng = Rng::new(1);
        let mut g = Graph::new();
        let mut w = Weights::new();
        let vocab = if dtype == DType::BF16 { 151_936 } else { 4096 };
        let table = weight(
            &mut g,
            &mut w,
            &mut rng,
            "embed",
            dtype,
            &[vocab, 1024],
            1.0,
        );
        let tok = input(&mut g, "token", TensorType::new(DType::I32, [1]));
        let e = op(&mut g, Op::Embedding, &[table, tok]);
        g.set_results(vec![e]);
        let steps: Vec<Step> = [0, vocab - 1, rng.below(vocab), rng.below(vocab)]
            .iter()
            .map(|&t| vec![("token".to_string(), Tensor::i32([1], vec![t as i32]))])
            .collect();
        check(
            &format!("embedding {dtype}[{vocab}, 1024]"),
            &g,
            &w,
            &steps,
            0.0,
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn rms_norm_over_rows_and_heads() {
    for (shape, dtype) in [
        (vec![1, 1024], DType::BF16),
        (vec![16, 128], DType::F32),
        (vec![8, 128], DType::BF16),
    ] {
        let mut rng = Rng::new(2);
        let mut g = Graph::new();
        let mut w = Weights::new();
        let d = *shape.last().expect("rank 2");
        let x = f32_input(&mut g, "x", &shape);
        let nw = norm_weight(&mut g, &mut w, &mut rng, "norm", dtype, d);
        let y = op(&mut g, Op::RmsNorm { eps: 1e-6 }, &[x, nw]);
        g.set_results(vec![y]);
        let steps: Vec<Step> = (0..3)
            .map(|_| vec![("x".into(), rand_tensor(&mut rng, &shape, 3.0))])
            .collect();
        check(
            &format!("rms_norm f32{shape:?} weight {dtype}"),
            &g,
            &w,
            &steps,
            TOL,
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn matmul_gemv_for_every_weight_dtype_and_shape() {
    let cases: &[(usize, usize, usize, DType)] = &[
        (1, 1024, 4096, DType::BF16),    // qkv
        (1, 2048, 1024, DType::BF16),    // o_proj
        (1, 1024, 6144, DType::BF16),    // gate_up
        (1, 3072, 1024, DType::BF16),    // down
        (1, 1024, 151_936, DType::BF16), // lm_head
        (1, 1024, 6152, DType::F16),     // two rows per warp, a ragged last group
        (1, 1024, 1024, DType::F16),
        (1, 1024, 1024, DType::F32),
        (3, 1024, 512, DType::BF16), // several rows of x
        (1, 1001, 300, DType::BF16), // k not a multiple of 8: scalar path
        (2, 1002, 77, DType::F32),   // scalar path, f32
    ];
    for &(m, k, n, dtype) in cases {
        let mut rng = Rng::new(3 + k as u64);
        let mut g = Graph::new();
        let mut w = Weights::new();
        let x = f32_input(&mut g, "x", &[m, k]);
        let wt = weight(
            &mut g,
            &mut w,
            &mut rng,
            "w",
            dtype,
            &[n, k],
            (3.0 / k as f32).sqrt(),
        );
        let y = op(&mut g, Op::MatMul, &[x, wt]);
        g.set_results(vec![y]);
        let steps: Vec<Step> = (0..2)
            .map(|_| vec![("x".into(), rand_tensor(&mut rng, &[m, k], 2.0))])
            .collect();
        // The GEMV path at every row count: from `gemm_min_rows` rows a bf16 matmul is a cuBLAS
        // GEMM instead (`prefill_gemms_match_the_interpreter` checks that at its own bound).
        let gemv_only = Tuning {
            gemm_min_rows: usize::MAX,
            ..Tuning::default()
        };
        let label = format!("matmul f32[{m}, {k}] x {dtype}[{n}, {k}]");
        check_with(&label, &g, &w, &steps, TOL, gemv_only);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn fused_gemv_prologues_and_epilogues() {
    let mut rng = Rng::new(4);
    // fused_rms_norm_matmul with a packed (folded) qkv weight.
    {
        let mut g = Graph::new();
        let mut w = Weights::new();
        let x = f32_input(&mut g, "x", &[1, 1024]);
        let ln = norm_weight(&mut g, &mut w, &mut rng, "ln", DType::BF16, 1024);
        let wq = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wq",
            DType::BF16,
            &[2048, 1024],
            0.05,
        );
        let wk = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wk",
            DType::BF16,
            &[1024, 1024],
            0.05,
        );
        let wv = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wv",
            DType::BF16,
            &[1024, 1024],
            0.05,
        );
        let qkv = op(&mut g, Op::Concat { axis: 0 }, &[wq, wk, wv]);
        let y = op(&mut g, Op::FusedRmsNormMatmul { eps: 1e-6 }, &[x, ln, qkv]);
        // A gate/up-sized one too (6144 rows: the two-rows-per-warp kernel).
        let gu = op(&mut g, Op::Concat { axis: 0 }, &[qkv, wq]);
        let y2 = op(&mut g, Op::FusedRmsNormMatmul { eps: 1e-6 }, &[x, ln, gu]);
        g.set_results(vec![y, y2]);
        let steps: Vec<Step> = (0..3)
            .map(|_| vec![("x".into(), rand_tensor(&mut rng, &[1, 1024], 4.0))])
            .collect();
        check(
            "fused_rms_norm_matmul f32[1, 1024] x concat(bf16 q, k, v)",
            &g,
            &w,
            &steps,
            TOL,
        );
    }
    // fused_matmul_add (o_proj + residual).
    {
        let mut g = Graph::new();
        let mut w = Weights::new();
        let x = f32_input(&mut g, "x", &[1, 2048]);
        let r = f32_input(&mut g, "r", &[1, 1024]);
        let wo = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wo",
            DType::BF16,
            &[1024, 2048],
            0.04,
        );
        let y = op(&mut g, Op::FusedMatmulAdd, &[x, wo, r]);
        g.set_results(vec![y]);
        let steps: Vec<Step> = (0..3)
            .map(|_| {
                vec![
                    ("x".into(), rand_tensor(&mut rng, &[1, 2048], 1.0)),
                    ("r".into(), rand_tensor(&mut rng, &[1, 1024], 1.0)),
                ]
            })
            .collect();
        check(
            "fused_matmul_add f32[1, 2048] x bf16[1024, 2048] + r",
            &g,
            &w,
            &steps,
            TOL,
        );
    }
    // fused_gated_mlp (SwiGLU + down + residual).
    {
        let mut g = Graph::new();
        let mut w = Weights::new();
        let gu = f32_input(&mut g, "gu", &[1, 6144]);
        let r = f32_input(&mut g, "r", &[1, 1024]);
        let wd = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wd",
            DType::BF16,
            &[1024, 3072],
            0.03,
        );
        let y = op(&mut g, Op::FusedGatedMlp, &[gu, wd, r]);
        g.set_results(vec![y]);
        let steps: Vec<Step> = (0..3)
            .map(|_| {
                vec![
                    ("gu".into(), rand_tensor(&mut rng, &[1, 6144], 3.0)),
                    ("r".into(), rand_tensor(&mut rng, &[1, 1024], 1.0)),
                ]
            })
            .collect();
        check(
            "fused_gated_mlp f32[1, 6144] x bf16[1024, 3072] + r",
            &g,
            &w,
            &steps,
            TOL,
        );
    }
    // The whole MLP: rms_norm + gate/up (the GEMV's glu epilogue writes silu(gate) * up), then down
    // + residual reading that product as plain x.
    {
        let mut g = Graph::new();
        let mut w = Weights::new();
        let x = f32_input(&mut g, "x", &[1, 1024]);
        let nw = norm_weight(&mut g, &mut w, &mut rng, "nw", DType::BF16, 1024);
        let wgu = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wgu",
            DType::BF16,
            &[6144, 1024],
            0.05,
        );
        let wd = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wd",
            DType::BF16,
            &[1024, 3072],
            0.03,
        );
        let gu = op(&mut g, Op::FusedRmsNormMatmul { eps: 1e-6 }, &[x, nw, wgu]);
        let y = op(&mut g, Op::FusedGatedMlp, &[gu, wd, x]);
        g.set_results(vec![y]);
        let exec = CudaExecutor::new(&device(), &g, &w, ExecOptions::default()).expect("executor");
        let details: Vec<&str> = exec.launches().iter().map(|l| l.detail.as_str()).collect();
        assert_eq!(
            details,
            ["6144x1024 +swiglu", "1024x3072"],
            "launches of the MLP"
        );
        let steps: Vec<Step> = (0..3)
            .map(|_| vec![("x".into(), rand_tensor(&mut rng, &[1, 1024], 2.0))])
            .collect();
        check(
            "fused_rms_norm_matmul (glu epilogue) -> fused_gated_mlp, bf16 Qwen3-0.6B MLP",
            &g,
            &w,
            &steps,
            TOL,
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn elementwise_split_and_concat() {
    let mut rng = Rng::new(5);
    let mut g = Graph::new();
    let w = Weights::new();
    let a = f32_input(&mut g, "a", &[1, 3072]);
    let b = f32_input(&mut g, "b", &[1, 3072]);
    let s = op(&mut g, Op::Silu, &[a]);
    let m = op(&mut g, Op::Mul, &[s, b]);
    let sum = op(&mut g, Op::Add, &[m, a]);
    // A split that is not a view (axis 1 of [2, 1536]) and a concat of activations.
    let r = op(
        &mut g,
        Op::Reshape {
            shape: vec![2, 1536],
        },
        &[sum],
    );
    let sp = g
        .add(
            Op::Split {
                axis: 1,
                sizes: vec![1000, 536],
            },
            &[r],
        )
        .expect("split");
    let (p0, p1) = (
        Value {
            node: sp,
            output: 0,
        },
        Value {
            node: sp,
            output: 1,
        },
    );
    let cat = op(&mut g, Op::Concat { axis: 1 }, &[p1, p0]);
    let cat0 = op(&mut g, Op::Concat { axis: 0 }, &[p0, p0]);
    g.set_results(vec![sum, cat, cat0, p1]);
    let steps: Vec<Step> = (0..3)
        .map(|_| {
            vec![
                ("a".into(), rand_tensor(&mut rng, &[1, 3072], 6.0)),
                ("b".into(), rand_tensor(&mut rng, &[1, 3072], 2.0)),
            ]
        })
        .collect();
    check("silu, mul, add, split (copy), concat", &g, &w, &steps, TOL);
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn add_broadcasts_a_bias_row_over_a_prefill_chunk() {
    // Qwen2's unfused q/k/v bias over a prefill chunk: add(x [T, n], bias [n]).
    let mut rng = Rng::new(11);
    let mut g = Graph::new();
    let mut w = Weights::new();
    let x = f32_input(&mut g, "x", &[7, 96]);
    let bias = weight(&mut g, &mut w, &mut rng, "bias", DType::BF16, &[96], 1.0);
    let y = op(&mut g, Op::Add, &[x, bias]);
    let z = op(&mut g, Op::Mul, &[y, bias]);
    g.set_results(vec![y, z]);
    let steps: Vec<Step> = (0..2)
        .map(|_| vec![("x".into(), rand_tensor(&mut rng, &[7, 96], 2.0))])
        .collect();
    check("add / mul of a bias row over 7 rows", &g, &w, &steps, TOL);
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn rope_and_fused_qk_norm_rope_read_the_position_from_the_device() {
    let mut rng = Rng::new(6);
    let positions = [0, 1, 7, 1000, 40_000];
    {
        let mut g = Graph::new();
        let w = Weights::new();
        let x = f32_input(&mut g, "x", &[16, 128]);
        let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
        let y = op(
            &mut g,
            Op::Rope {
                theta: 1_000_000.0,
                scaling: RopeScaling::Default,
            },
            &[x, p],
        );
        g.set_results(vec![y]);
        let steps: Vec<Step> = positions
            .iter()
            .map(|&p| {
                vec![
                    ("x".into(), rand_tensor(&mut rng, &[16, 128], 2.0)),
                    ("position".into(), pos_tensor(p)),
                ]
            })
            .collect();
        check("rope f32[16, 128]", &g, &w, &steps, 1e-3);
    }
    {
        let mut g = Graph::new();
        let mut w = Weights::new();
        let q = f32_input(&mut g, "q", &[16, 128]);
        let k = f32_input(&mut g, "k", &[8, 128]);
        let qn = norm_weight(&mut g, &mut w, &mut rng, "qn", DType::BF16, 128);
        let kn = norm_weight(&mut g, &mut w, &mut rng, "kn", DType::BF16, 128);
        let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
        let n = g
            .add(
                Op::FusedQkNormRope {
                    eps: 1e-6,
                    theta: 1_000_000.0,
                    scaling: RopeScaling::Default,
                },
                &[q, k, qn, kn, p],
            )
            .expect("qk");
        g.set_results(vec![
            Value { node: n, output: 0 },
            Value { node: n, output: 1 },
        ]);
        let steps: Vec<Step> = positions
            .iter()
            .map(|&p| {
                vec![
                    ("q".into(), rand_tensor(&mut rng, &[16, 128], 3.0)),
                    ("k".into(), rand_tensor(&mut rng, &[8, 128], 3.0)),
                    ("position".into(), pos_tensor(p)),
                ]
            })
            .collect();
        check(
            "fused_qk_norm_rope f32[16, 128], f32[8, 128]",
            &g,
            &w,
            &steps,
            1e-3,
        );
    }
}

/// Attention over `steps` positions, each step with fresh q/k/v, then jumps to far positions (rows
/// never written stay zero in both the device and the interpreter).
fn attention_case(h: usize, kv: usize, d: usize, cache: DType, max_ctx: usize, steps: usize) {
    let mut rng = Rng::new(7 + d as u64);
    let mut g = Graph::new();
    let w = Weights::new();
    let q = f32_input(&mut g, "q", &[h, d]);
    let k = f32_input(&mut g, "k", &[kv, d]);
    let v = f32_input(&mut g, "v", &[kv, d]);
    let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let cty = TensorType::new(cache, [max_ctx, kv, d]);
    let kc = g
        .add1(
            Op::KvCache {
                name: "k_cache".into(),
                ty: cty.clone(),
            },
            &[],
        )
        .expect("kc");
    let vc = g
        .add1(
            Op::KvCache {
                name: "v_cache".into(),
                ty: cty,
            },
            &[],
        )
        .expect("vc");
    let a = op(
        &mut g,
        Op::Attention {
            scale: (d as f32).powf(-0.5),
        },
        &[q, k, v, kc, vc, p],
    );
    g.set_results(vec![a]);
    let mut positions: Vec<usize> = (0..steps).collect();
    positions.extend([max_ctx / 2, max_ctx - 1]);
    let all: Vec<Step> = positions
        .iter()
        .map(|&p| {
            vec![
                ("q".into(), rand_tensor(&mut rng, &[h, d], 2.0)),
                ("k".into(), rand_tensor(&mut rng, &[kv, d], 2.0)),
                ("v".into(), rand_tensor(&mut rng, &[kv, d], 1.0)),
                ("position".into(), pos_tensor(p as i32)),
            ]
        })
        .collect();
    check(
        &format!("attention q[{h}, {d}] kv {kv} cache {cache}[{max_ctx}, {kv}, {d}]"),
        &g,
        &w,
        &all,
        TOL_ATTENTION,
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn attention_gqa_split_kv_for_every_cache_dtype() {
    attention_case(16, 8, 128, DType::BF16, 512, 300);
    attention_case(16, 8, 128, DType::F32, 4096, 80);
    attention_case(16, 8, 128, DType::F16, 256, 40);
    attention_case(16, 4, 64, DType::BF16, 1024, 70);
    attention_case(8, 8, 256, DType::F32, 128, 40);
    attention_case(32, 4, 128, DType::BF16, 40_960, 40);
}

/// q/k prologues folded into the attention kernel (one launch): Qwen3's `fused_qk_norm_rope`, and
/// Llama's / Qwen2's pair of `rope`s (rope without a norm); and the same graphs with the fold
/// turned off (their own launches).
#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn qk_prologues_folded_into_attention() {
    let (h, kv, d, max_ctx) = (16, 8, 128, 256);
    for (qk, cache) in [
        (QkInput::NormRope, DType::BF16),
        (QkInput::NormRope, DType::F32),
        (QkInput::Ropes, DType::BF16),
    ] {
        let mut rng = Rng::new(9);
        let mut w = Weights::new();
        let g = attention_graph(&mut w, &mut rng, (h, kv, d), cache, max_ctx, qk);
        let steps: Vec<Step> = (0..100)
            .chain([max_ctx - 1])
            .map(|p| {
                vec![
                    ("q".into(), rand_tensor(&mut rng, &[h, d], 3.0)),
                    ("k".into(), rand_tensor(&mut rng, &[kv, d], 3.0)),
                    ("v".into(), rand_tensor(&mut rng, &[kv, d], 1.0)),
                    ("position".into(), pos_tensor(p as i32)),
                ]
            })
            .collect();
        for fold in [true, false] {
            let opts = ExecOptions {
                tuning: Tuning {
                    att_qk_fold: fold,
                    ..Tuning::default()
                },
                ..ExecOptions::default()
            };
            let exec = CudaExecutor::new(&device(), &g, &w, opts).expect("executor");
            let want = if fold {
                1
            } else if qk == QkInput::Ropes {
                3
            } else {
                2
            };
            assert_eq!(exec.launches_per_step(), want, "{qk:?} fold {fold}");
            check_with(
                &format!("{qk:?} -> attention (fold {fold}), cache {cache}"),
                &g,
                &w,
                &steps,
                TOL_ATTENTION,
                opts.tuning,
            );
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn argmax_takes_the_first_of_equal_maxima() {
    for n in [151_936usize, 100] {
        let mut rng = Rng::new(8);
        let mut g = Graph::new();
        let w = Weights::new();
        let x = f32_input(&mut g, "x", &[1, n]);
        let i = op(&mut g, Op::Argmax, &[x]);
        g.set_results(vec![i]);
        let steps: Vec<Step> = (0..4)
            .map(|s| {
                let mut t = rand_tensor(&mut rng, &[1, n], 10.0);
                if s % 2 == 1 {
                    let (a, b) = (rng.below(n / 2), n / 2 + rng.below(n / 2));
                    t.data[a] = 50.0;
                    t.data[b] = 50.0;
                }
                vec![("x".into(), t)]
            })
            .collect();
        check(&format!("argmax f32[1, {n}]"), &g, &w, &steps, 0.0);
    }
}

/// An LM head (rms_norm + matmul over Qwen3's 151936 rows) followed by argmax: the GEMV picks the
/// argmax itself (gemv_argmax_*, one launch). Two rows of the weight are equal and scaled up, so on
/// the steps whose x favours them their logits tie at the maximum and the first row must win.
#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn argmax_folded_into_the_lm_head() {
    let (vocab, hidden) = (151_936usize, 1024usize);
    let mut rng = Rng::new(12);
    let mut g = Graph::new();
    let mut w = Weights::new();
    let x = f32_input(&mut g, "x", &[1, hidden]);
    let nw = norm_weight(&mut g, &mut w, &mut rng, "nw", DType::BF16, hidden);
    let mut values = rng.vec(vocab * hidden, 0.05);
    let (a, b) = (4_321usize, 120_000usize);
    let tie: Vec<f32> = (0..hidden).map(|_| 0.5 * rng.unit()).collect();
    values[a * hidden..(a + 1) * hidden].copy_from_slice(&tie);
    values[b * hidden..(b + 1) * hidden].copy_from_slice(&tie);
    w.insert(
        "lm_head".into(),
        HostWeight::from_f32(DType::BF16, vec![vocab, hidden], &values),
    );
    let lm = g
        .add1(
            Op::Weight {
                name: "lm_head".into(),
                ty: TensorType::new(DType::BF16, [vocab, hidden]),
            },
            &[],
        )
        .expect("weight leaf");
    let logits = op(&mut g, Op::FusedRmsNormMatmul { eps: 1e-6 }, &[x, nw, lm]);
    let token = op(&mut g, Op::Argmax, &[logits]);
    g.set_results(vec![logits, token]);
    let mut exec = CudaExecutor::new(&device(), &g, &w, ExecOptions::default()).expect("executor");
    let kernels: Vec<&str> = exec.launches().iter().map(|l| l.kernel.as_str()).collect();
    assert_eq!(
        kernels,
        ["gemv_argmax_bf16"],
        "one launch for the LM head and argmax"
    );
    let steps: Vec<Step> = (0..4)
        .map(|s| {
            // Odd steps: x along the tied row, so rows a and b give the largest logit.
            let t = if s % 2 == 1 {
                Tensor::f32([1, hidden], tie.iter().map(|v| v * 4.0).collect())
            } else {
                rand_tensor(&mut rng, &[1, hidden], 2.0)
            };
            vec![("x".into(), t)]
        })
        .collect();
    check("lm_head + argmax (one kernel)", &g, &w, &steps, TOL);
    let out = exec.run(&[("x", steps[1][0].1.clone())]).expect("step");
    assert_eq!(
        out[1].ints,
        vec![a as i32],
        "a tie at the maximum goes to the first row"
    );
}

// ---- prefill (T > 1 tokens) ----

/// The tensor-core prefill attention rounds q and the probabilities to f16 (2^-11 relative).
const TOL_ATTENTION_MMA: f64 = 5e-3;

/// A prefill GEMM rounds its activations to bf16 (cuBLAS's tensor cores take bf16 operands): a
/// relative error of ~2^-9 per element, ~3e-3 over a dot product, where the GEMV keeps f32.
const TOL_GEMM: f64 = 1e-2;

/// Every matmul-family op over `T` rows (bf16 weights: the cuBLAS GEMM path, prologue kernel +
/// `cublasGemmEx`) at Qwen3-0.6B's projection sizes, against the interpreter's f32 matmul.
#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn prefill_gemms_match_the_interpreter() {
    for &t in &[2usize, 17, 128] {
        let mut rng = Rng::new(100 + t as u64);
        let mut g = Graph::new();
        let mut w = Weights::new();
        let (h, i) = (1024, 3072);
        let x = f32_input(&mut g, "x", &[t, h]);
        let ln = norm_weight(&mut g, &mut w, &mut rng, "ln", DType::BF16, h);
        let s = |k: usize| (3.0 / k as f32).sqrt();
        let wqkv = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wqkv",
            DType::BF16,
            &[4096, h],
            s(h),
        );
        let wo = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wo",
            DType::BF16,
            &[h, 2048],
            s(2048),
        );
        let wgu = weight(
            &mut g,
            &mut w,
            &mut rng,
            "wgu",
            DType::BF16,
            &[2 * i, h],
            s(h),
        );
        let wd = weight(&mut g, &mut w, &mut rng, "wd", DType::BF16, &[h, i], s(i));
        let bias = weight(&mut g, &mut w, &mut rng, "bias", DType::BF16, &[4096], 0.5);
        // fused_rms_norm_matmul (rms_norm prologue), its biased form, a plain matmul, a
        // residual add, and the SwiGLU prologue of fused_gated_mlp.
        let qkv = op(&mut g, Op::FusedRmsNormMatmul { eps: 1e-6 }, &[x, ln, wqkv]);
        let qkv_b = op(
            &mut g,
            Op::FusedRmsNormMatmulAdd { eps: 1e-6 },
            &[x, ln, wqkv, bias],
        );
        let a = f32_input(&mut g, "a", &[t, 2048]);
        let o = op(&mut g, Op::FusedMatmulAdd, &[a, wo, x]);
        let plain = op(&mut g, Op::MatMul, &[a, wo]);
        let gu = op(&mut g, Op::FusedRmsNormMatmul { eps: 1e-6 }, &[o, ln, wgu]);
        let down = op(&mut g, Op::FusedGatedMlp, &[gu, wd, o]);
        g.set_results(vec![qkv, qkv_b, o, plain, gu, down]);
        let steps: Vec<Step> = (0..2)
            .map(|_| {
                vec![
                    ("x".into(), rand_tensor(&mut rng, &[t, h], 2.0)),
                    ("a".into(), rand_tensor(&mut rng, &[t, 2048], 1.0)),
                ]
            })
            .collect();
        check(
            &format!("prefill GEMMs over {t} rows"),
            &g,
            &w,
            &steps,
            TOL_GEMM,
        );
    }
}

/// Prefill attention (`kv_append` + `attention_prefill`) over chunks of `t` tokens that follow
/// each other in the cache (the second and later chunks attend over the earlier ones), for a
/// cache dtype and a GQA shape, with rope'd q/k through `fused_qk_norm_rope` on `[t, heads, d]`;
/// the tensor-core kernel also with each of `splits` KV splits (`BRAID_PREFILL_ATT_SPLITS`).
fn prefill_attention_case(
    (t, h, kv, d): (usize, usize, usize, usize),
    cache: DType,
    chunks: usize,
    splits: &[usize],
) {
    let mut rng = Rng::new(200 + (t * d + h) as u64);
    let mut g = Graph::new();
    let mut w = Weights::new();
    let max_ctx = t * chunks + 7;
    let q = f32_input(&mut g, "q", &[t, h, d]);
    let k = f32_input(&mut g, "k", &[t, kv, d]);
    let v = f32_input(&mut g, "v", &[t, kv, d]);
    let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let qn = norm_weight(&mut g, &mut w, &mut rng, "qn", DType::BF16, d);
    let kn = norm_weight(&mut g, &mut w, &mut rng, "kn", DType::BF16, d);
    let n = g
        .add(
            Op::FusedQkNormRope {
                eps: 1e-6,
                theta: 1_000_000.0,
                scaling: RopeScaling::Default,
            },
            &[q, k, qn, kn, p],
        )
        .expect("qk");
    let (qr, kr) = (Value { node: n, output: 0 }, Value { node: n, output: 1 });
    let cty = TensorType::new(cache, [max_ctx, kv, d]);
    let kc = op(
        &mut g,
        Op::KvCache {
            name: "k_cache".into(),
            ty: cty.clone(),
        },
        &[],
    );
    let vc = op(
        &mut g,
        Op::KvCache {
            name: "v_cache".into(),
            ty: cty,
        },
        &[],
    );
    let a = op(
        &mut g,
        Op::Attention {
            scale: (d as f32).powf(-0.5),
        },
        &[qr, kr, v, kc, vc, p],
    );
    g.set_results(vec![a, qr, kr]);
    let steps: Vec<Step> = (0..chunks)
        .map(|c| {
            vec![
                ("q".into(), rand_tensor(&mut rng, &[t, h, d], 2.0)),
                ("k".into(), rand_tensor(&mut rng, &[t, kv, d], 2.0)),
                ("v".into(), rand_tensor(&mut rng, &[t, kv, d], 1.0)),
                ("position".into(), pos_tensor((c * t) as i32)),
            ]
        })
        .collect();
    let label = format!("prefill attention {chunks} x {t} tokens, h{h} kv{kv} d{d}, cache {cache}");
    // The default picks the tensor-core kernel where it applies (16-bit caches, d <= 128), with
    // KV splits where the chunk has too few query tiles to fill the GPU.
    check(&label, &g, &w, &steps, TOL_ATTENTION_MMA);
    for &s in splits {
        let fixed = Tuning {
            prefill_att_splits: Some(s),
            ..Tuning::default()
        };
        check_with(
            &format!("{label}, {s} KV splits"),
            &g,
            &w,
            &steps,
            TOL_ATTENTION_MMA,
            fixed,
        );
    }
    let simt = Tuning {
        prefill_att: braid_backend_cuda::tuning::PrefillAtt::Simt,
        ..Tuning::default()
    };
    check_with(
        &format!("{label}, f32 kernel"),
        &g,
        &w,
        &steps,
        TOL_ATTENTION,
        simt,
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn prefill_attention_matches_the_interpreter() {
    // Qwen3-0.6B (g 2) in every cache dtype; a chunk that is not a multiple of a block's tokens.
    // The default splits: 1 at 64 and 100 tokens, 4 at 512; 2, 3 (tiles not a multiple of the
    // splits) and 8 (more splits than some query tiles have key tiles) fixed.
    prefill_attention_case((64, 16, 8, 128), DType::BF16, 3, &[3, 8]);
    prefill_attention_case((100, 16, 8, 128), DType::F16, 2, &[2]);
    prefill_attention_case((37, 16, 8, 128), DType::F32, 2, &[]);
    // GQA groups 1, 4 and 8; head dims 64, 256 and 16; two tokens; a long chunk.
    prefill_attention_case((50, 8, 8, 64), DType::BF16, 2, &[]);
    prefill_attention_case((33, 32, 8, 128), DType::BF16, 2, &[8]);
    prefill_attention_case((20, 16, 2, 256), DType::BF16, 2, &[]);
    prefill_attention_case((9, 4, 2, 16), DType::BF16, 3, &[2]);
    prefill_attention_case((2, 16, 8, 128), DType::BF16, 4, &[]);
    prefill_attention_case((512, 16, 8, 128), DType::BF16, 2, &[1, 3, 8]);
}

/// A prefill chunk's attention block as the passes leave it: the packed q/k/v rows `[T, n]` split
/// (read in place: no copies), q/k norm + rope, attention; with the in-place split off too.
#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn prefill_split_read_in_place() {
    let (t, h, kv, d) = (48, 16, 8, 128);
    let mut rng = Rng::new(300);
    let mut g = Graph::new();
    let mut w = Weights::new();
    let x = f32_input(&mut g, "x", &[t, (h + 2 * kv) * d]);
    let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let parts = g
        .add(
            Op::Split {
                axis: 1,
                sizes: vec![h * d, kv * d, kv * d],
            },
            &[x],
        )
        .expect("split");
    let part = |o: u32| Value {
        node: parts,
        output: o,
    };
    let q = op(
        &mut g,
        Op::Reshape {
            shape: vec![t, h, d],
        },
        &[part(0)],
    );
    let k = op(
        &mut g,
        Op::Reshape {
            shape: vec![t, kv, d],
        },
        &[part(1)],
    );
    let v = op(
        &mut g,
        Op::Reshape {
            shape: vec![t, kv, d],
        },
        &[part(2)],
    );
    let qn = norm_weight(&mut g, &mut w, &mut rng, "qn", DType::BF16, d);
    let kn = norm_weight(&mut g, &mut w, &mut rng, "kn", DType::BF16, d);
    let n = g
        .add(
            Op::FusedQkNormRope {
                eps: 1e-6,
                theta: 1_000_000.0,
                scaling: RopeScaling::Default,
            },
            &[q, k, qn, kn, p],
        )
        .expect("qk");
    let cty = TensorType::new(DType::BF16, [4 * t, kv, d]);
    let kc = op(
        &mut g,
        Op::KvCache {
            name: "k_cache".into(),
            ty: cty.clone(),
        },
        &[],
    );
    let vc = op(
        &mut g,
        Op::KvCache {
            name: "v_cache".into(),
            ty: cty,
        },
        &[],
    );
    let a = op(
        &mut g,
        Op::Attention { scale: 0.088 },
        &[
            Value { node: n, output: 0 },
            Value { node: n, output: 1 },
            v,
            kc,
            vc,
            p,
        ],
    );
    g.set_results(vec![a]);
    let steps: Vec<Step> = (0..3)
        .map(|c| {
            vec![
                (
                    "x".into(),
                    rand_tensor(&mut rng, &[t, (h + 2 * kv) * d], 2.0),
                ),
                ("position".into(), pos_tensor((c * t) as i32)),
            ]
        })
        .collect();
    check("split read in place", &g, &w, &steps, TOL_ATTENTION_MMA);
    let copies = Tuning {
        split_in_place: false,
        ..Tuning::default()
    };
    check_with("split copied", &g, &w, &steps, TOL_ATTENTION_MMA, copies);
}

/// `rope` and `fused_qk_norm_rope` on `[T, heads, d]`: token `t` rotated at `position + t`.
#[test]
#[ignore = "needs an NVIDIA GPU; run on the device machine"]
fn prefill_rope_rotates_each_token_at_its_position() {
    let mut rng = Rng::new(400);
    let mut g = Graph::new();
    let w = Weights::new();
    let x = f32_input(&mut g, "x", &[33, 8, 128]);
    let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let y = op(
        &mut g,
        Op::Rope {
            theta: 1_000_000.0,
            scaling: RopeScaling::Default,
        },
        &[x, p],
    );
    g.set_results(vec![y]);
    let steps: Vec<Step> = [0, 5, 30_000]
        .iter()
        .map(|&p| {
            vec![
                ("x".into(), rand_tensor(&mut rng, &[33, 8, 128], 2.0)),
                ("position".into(), pos_tensor(p)),
            ]
        })
        .collect();
    check("rope f32[33, 8, 128]", &g, &w, &steps, 1e-3);
}
