//! The lowering on the CPU (no GPU): plans for a recorded H200 (`Target::h200()`) of small graphs,
//! checked for the backend fusions, their knobs, the memory they need, and the GEMV variants.

mod common;

use braid_backend_cuda::lower::lower;
use braid_backend_cuda::params::{Params, Ptr, Region, Scratch};
use braid_backend_cuda::tuning::GemvKernel;
use braid_backend_cuda::{Plan, Target, Tuning};
use braid_ir::{DType, Graph, Op, RopeScaling, TensorType};
use common::*;

fn plan(g: &Graph, tuning: Tuning) -> Plan {
    lower(g, &Target::h200(), &tuning).unwrap_or_else(|e| panic!("{e}"))
}

fn kernels(p: &Plan) -> Vec<String> {
    p.launches.iter().map(|l| l.kernel.name.clone()).collect()
}

fn attention(qk: QkInput) -> Graph {
    let mut w = Weights::new();
    attention_graph(&mut w, &mut Rng::new(1), (16, 8, 128), DType::BF16, 512, qk)
}

#[test]
fn a_rope_pair_feeding_attention_runs_in_its_prologue() {
    let g = attention(QkInput::Ropes);
    let p = plan(&g, Tuning::default());
    assert_eq!(kernels(&p), ["attention_bf16_d128_g2"]);
    let l = &p.launches[0];
    assert!(l.detail.ends_with("+rope"), "{}", l.detail);
    assert_eq!(l.absorbed.len(), 2, "{:?}", l.absorbed);
    let Params::Attention(a) = l.params else {
        panic!("attention params")
    };
    // Rope without a norm: frequencies, no norm weights; q and k are the ropes' own inputs.
    assert!(!a.inv_freq.is_null() && a.qn.is_null() && a.kn.is_null());
    assert_eq!(a.q.symbolic().map(|s| s.0), Some(Region::Io));
    // The knob turns it off: two norm_rope launches, then attention.
    let off = plan(
        &g,
        Tuning {
            att_qk_fold: false,
            ..Tuning::default()
        },
    );
    assert_eq!(
        kernels(&off),
        ["norm_rope_f32", "norm_rope_f32", "attention_bf16_d128_g2"]
    );
    let Params::Attention(a) = off.launches[2].params else {
        panic!("attention params")
    };
    assert!(a.inv_freq.is_null());
}

#[test]
fn fused_qk_norm_rope_folds_only_when_attention_is_its_only_user() {
    let g = attention(QkInput::NormRope);
    let p = plan(&g, Tuning::default());
    assert_eq!(kernels(&p), ["attention_bf16_d128_g2"]);
    let Params::Attention(a) = p.launches[0].params else {
        panic!("attention params")
    };
    assert!(!a.qn.is_null() && !a.kn.is_null() && !a.inv_freq.is_null());
    // The normed q also leaves the step: the fold no longer applies.
    let mut g2 = g.clone();
    let att = g2.results()[0];
    let q = g2.inputs(att.node)[0];
    g2.set_results(vec![att, q]);
    let p2 = plan(&g2, Tuning::default());
    assert_eq!(kernels(&p2), ["norm_rope_f32", "attention_bf16_d128_g2"]);
}

/// A launch that absorbed a node keeps that node's inputs alive: nothing it reads shares bytes with
/// anything it writes.
#[test]
fn absorbed_inputs_stay_live_until_the_absorbing_launch() {
    let mut w = Weights::new();
    let mut rng = Rng::new(2);
    // x -> matmul (qkv packed) -> split views -> ropes -> attention: q, k, v all live in the
    // matmul's output, and the attention output must not reuse those bytes.
    let (h, kv, d, hidden) = (4, 2, 64, 64);
    let mut g = Graph::new();
    let x = input(&mut g, "x", TensorType::new(DType::F32, [1, hidden]));
    let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let wqkv = weight(
        &mut g,
        &mut w,
        &mut rng,
        "wqkv",
        DType::BF16,
        &[(h + 2 * kv) * d, hidden],
        0.1,
    );
    let qkv = op(&mut g, Op::MatMul, &[x, wqkv]);
    let parts = g
        .add(
            Op::Split {
                axis: 1,
                sizes: vec![h * d, kv * d, kv * d],
            },
            &[qkv],
        )
        .expect("split");
    let part = |o: u32| braid_ir::Value {
        node: parts,
        output: o,
    };
    let q = op(&mut g, Op::Reshape { shape: vec![h, d] }, &[part(0)]);
    let k = op(&mut g, Op::Reshape { shape: vec![kv, d] }, &[part(1)]);
    let v = op(&mut g, Op::Reshape { shape: vec![kv, d] }, &[part(2)]);
    let q = op(
        &mut g,
        Op::Rope {
            theta: 1e4,
            scaling: RopeScaling::Default,
        },
        &[q, p],
    );
    let k = op(
        &mut g,
        Op::Rope {
            theta: 1e4,
            scaling: RopeScaling::Default,
        },
        &[k, p],
    );
    let cty = TensorType::new(DType::BF16, [64, kv, d]);
    let kc = op(
        &mut g,
        Op::KvCache {
            name: "kc".into(),
            ty: cty.clone(),
        },
        &[],
    );
    let vc = op(
        &mut g,
        Op::KvCache {
            name: "vc".into(),
            ty: cty,
        },
        &[],
    );
    let a = op(
        &mut g,
        Op::Attention { scale: 0.125 },
        &[q, k, v, kc, vc, p],
    );
    let a = op(
        &mut g,
        Op::Reshape {
            shape: vec![1, h * d],
        },
        &[a],
    );
    let wo = weight(
        &mut g,
        &mut w,
        &mut rng,
        "wo",
        DType::BF16,
        &[hidden, h * d],
        0.1,
    );
    let o = op(&mut g, Op::MatMul, &[a, wo]);
    g.set_results(vec![o]);
    let p = plan(&g, Tuning::default());
    let Params::Attention(at) = p.launches[1].params else {
        panic!("{:?}", kernels(&p))
    };
    let span = |ptr: Ptr, bytes: usize| {
        let (r, off) = ptr.symbolic().expect("symbolic");
        (r, off, off + bytes)
    };
    let read = span(at.q, (h + 2 * kv) * d * 4);
    let written = span(at.out, h * d * 4);
    assert_eq!(read.0, Region::Arena);
    assert!(
        read.2 <= written.1 || written.2 <= read.1,
        "{read:?} overlaps {written:?}"
    );
}

/// An LM-head-sized GEMV picks the staged kernel and folds the argmax; a small one picks a direct
/// kernel, and then argmax keeps its own launch.
#[test]
fn the_argmax_folds_into_staged_gemvs_only() {
    let build = |rows: usize| {
        let mut w = Weights::new();
        let mut rng = Rng::new(3);
        let mut g = Graph::new();
        let x = input(&mut g, "x", TensorType::new(DType::F32, [1, 256]));
        let lm = weight(
            &mut g,
            &mut w,
            &mut rng,
            "lm",
            DType::BF16,
            &[rows, 256],
            0.1,
        );
        let logits = op(&mut g, Op::MatMul, &[x, lm]);
        let t = op(&mut g, Op::Argmax, &[logits]);
        g.set_results(vec![logits, t]);
        g
    };
    let big = plan(&build(151_936), Tuning::default());
    assert_eq!(kernels(&big), ["gemv_argmax_bf16"]);
    let Params::Gemv(gp) = big.launches[0].params else {
        panic!()
    };
    assert!(!gp.am_out.is_null() && !gp.am_counter.is_null());
    let off = plan(
        &build(151_936),
        Tuning {
            argmax_fold: false,
            ..Tuning::default()
        },
    );
    assert_eq!(kernels(&off), ["gemv_bf16", "argmax_f32"]);
    let small = plan(&build(1024), Tuning::default());
    assert_eq!(kernels(&small), ["gemv_direct4_bf16", "argmax_f32"]);
}

#[test]
fn gemv_kernel_choice_follows_the_tuning() {
    let mut w = Weights::new();
    let mut rng = Rng::new(4);
    let mut g = Graph::new();
    let x = input(&mut g, "x", TensorType::new(DType::F32, [1, 1024]));
    let a = weight(
        &mut g,
        &mut w,
        &mut rng,
        "a",
        DType::BF16,
        &[1024, 1024],
        0.1,
    );
    let b = weight(
        &mut g,
        &mut w,
        &mut rng,
        "b",
        DType::BF16,
        &[6144, 1024],
        0.1,
    );
    let c = weight(
        &mut g,
        &mut w,
        &mut rng,
        "c",
        DType::F16,
        &[1024, 1004],
        0.1,
    );
    let ya = op(&mut g, Op::MatMul, &[x, a]);
    let yb = op(&mut g, Op::MatMul, &[ya, b]);
    let xs = g
        .add(
            Op::Split {
                axis: 1,
                sizes: vec![1004, 5140],
            },
            &[yb],
        )
        .expect("split");
    let yc = op(&mut g, Op::MatMul, &[braid_ir::Value::of(xs), c]);
    g.set_results(vec![yc]);
    let auto = plan(&g, Tuning::default());
    // 1024 rows: one row per warp; 6144 rows (beyond a wave of warps): two rows per warp; k = 1004
    // (not a multiple of the 8-element vector): the scalar kernel.
    assert_eq!(
        kernels(&auto),
        ["gemv_direct4_bf16", "gemv_direct2_bf16", "gemv_scalar_f16"]
    );
    let staged = Tuning {
        gemv_kernel: GemvKernel::Staged,
        ..Tuning::default()
    };
    assert_eq!(
        kernels(&plan(&g, staged)),
        ["gemv_bf16", "gemv_bf16", "gemv_scalar_f16"]
    );
    let direct4 = Tuning {
        gemv_kernel: GemvKernel::Direct4,
        ..Tuning::default()
    };
    assert_eq!(
        kernels(&plan(&g, direct4)),
        ["gemv_direct4_bf16", "gemv_direct4_bf16", "gemv_scalar_f16"]
    );
    // Warps per row: 1024 rows of 1024 on 132 SMs x 4 blocks x 8 warps: 4 warps share each row.
    let Params::Gemv(p0) = auto.launches[0].params else {
        panic!()
    };
    assert_eq!(p0.wpr, 4);
    let capped = Tuning {
        gemv_max_wpr: 2,
        ..Tuning::default()
    };
    let Params::Gemv(p1) = plan(&g, capped).launches[0].params else {
        panic!()
    };
    assert_eq!(p1.wpr, 2);
}

#[test]
fn l2_prefetch_points_a_launch_at_a_later_launchs_weights() {
    let mut w = Weights::new();
    let mut rng = Rng::new(5);
    let mut g = Graph::new();
    let mut x = input(&mut g, "x", TensorType::new(DType::F32, [1, 512]));
    let mut weights = Vec::new();
    for i in 0..3 {
        let wi = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("w{i}"),
            DType::BF16,
            &[512, 512],
            0.1,
        );
        weights.push(wi);
        x = op(&mut g, Op::MatMul, &[x, wi]);
    }
    g.set_results(vec![x]);
    let none = plan(&g, Tuning::default());
    for l in &none.launches {
        let Params::Gemv(p) = l.params else { panic!() };
        assert!(p.pf.is_null() && p.pf_bytes == 0);
    }
    let one = plan(
        &g,
        Tuning {
            l2_prefetch: 1,
            ..Tuning::default()
        },
    );
    let pf: Vec<(Ptr, u64)> = one
        .launches
        .iter()
        .map(|l| match l.params {
            Params::Gemv(p) => (p.pf, p.pf_bytes),
            _ => panic!(),
        })
        .collect();
    let w_of = |i: usize| match one.launches[i].params {
        Params::Gemv(p) => p.w,
        _ => panic!(),
    };
    assert_eq!(pf[0], (w_of(1), 512 * 512 * 2));
    assert_eq!(pf[1], (w_of(2), 512 * 512 * 2));
    assert!(pf[2].0.is_null());
}

#[test]
fn unsupported_shapes_name_the_node_and_what_is_supported() {
    let mut w = Weights::new();
    let g = attention_graph(
        &mut w,
        &mut Rng::new(6),
        (4, 2, 48),
        DType::BF16,
        64,
        QkInput::Plain,
    );
    let e = lower(&g, &Target::h200(), &Tuning::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("attention") && e.contains("head_dim 48") && e.contains("128"),
        "{e}"
    );
}

/// `x [rows, k]` through a bf16 matmul `[n, k]`, optionally plus a residual or a bias.
fn matmul_graph(rows: usize, n: usize, k: usize, wdtype: DType, addend: Option<bool>) -> Graph {
    let mut w = Weights::new();
    let mut rng = Rng::new(7);
    let mut g = Graph::new();
    let x = input(&mut g, "x", TensorType::new(DType::F32, [rows, k]));
    let wt = weight(&mut g, &mut w, &mut rng, "w", wdtype, &[n, k], 0.1);
    let y = match addend {
        None => op(&mut g, Op::MatMul, &[x, wt]),
        Some(full) => {
            let shape = if full { vec![rows, n] } else { vec![n] };
            let r = input(&mut g, "r", TensorType::new(DType::F32, shape));
            op(&mut g, Op::FusedMatmulAdd, &[x, wt, r])
        }
    };
    g.set_results(vec![y]);
    g
}

#[test]
fn many_rows_of_bf16_weights_run_as_a_cublas_gemm() {
    let p = plan(
        &matmul_graph(64, 512, 256, DType::BF16, None),
        Tuning::default(),
    );
    assert_eq!(kernels(&p), ["gemm_prologue_f32", "cublas_gemm_bf16"]);
    let gemm = p.launches[1].gemm().expect("a GEMM");
    assert_eq!((gemm.m, gemm.n, gemm.k, gemm.beta), (64, 512, 256, 0.0));
    let Params::GemmPrologue(pro) = p.launches[0].params else {
        panic!("prologue params")
    };
    // The prologue writes the bf16 operand the GEMM reads; no residual.
    assert_eq!(pro.xb, gemm.b);
    assert_eq!(
        pro.xb.symbolic().map(|s| s.0),
        Some(Region::Scratch(Scratch::GemmOperand))
    );
    assert!(pro.resid.is_null() && pro.pro == 0);
    assert_eq!(p.gemm_count(), 1);
    assert_eq!(p.matmul_flops(), 2.0 * 64.0 * 512.0 * 256.0);
    let text = p.text(false);
    assert!(text.contains("cublas_gemm_bf16 64x512x256"), "{text}");
    // One row, f16 weights, or rows below the knob: GEMVs.
    let one = plan(
        &matmul_graph(1, 512, 256, DType::BF16, None),
        Tuning::default(),
    );
    assert_eq!(kernels(&one), ["gemv_direct4_bf16"]);
    let f16 = plan(
        &matmul_graph(64, 512, 256, DType::F16, None),
        Tuning::default(),
    );
    assert_eq!(kernels(&f16), ["gemv_direct4_f16"]);
    let knob = Tuning {
        gemm_min_rows: 65,
        ..Tuning::default()
    };
    assert_eq!(
        kernels(&plan(&matmul_graph(64, 512, 256, DType::BF16, None), knob)),
        ["gemv_direct4_bf16"]
    );
}

#[test]
fn a_gemm_adds_its_residual_or_bias_through_beta() {
    for full in [true, false] {
        let p = plan(
            &matmul_graph(16, 128, 64, DType::BF16, Some(full)),
            Tuning::default(),
        );
        let Params::GemmPrologue(pro) = p.launches[0].params else {
            panic!("prologue params")
        };
        let gemm = p.launches[1].gemm().expect("a GEMM");
        assert_eq!(gemm.beta, 1.0);
        assert_eq!(pro.c, gemm.c, "the prologue pre-fills the GEMM output");
        assert_eq!(pro.resid.symbolic().map(|s| s.0), Some(Region::Io));
        assert_eq!(pro.resid_rows, if full { 16 } else { 1 });
    }
    // The GEMV adds residuals of its own rows only: a bias over 16 rows needs the GEMM.
    let gemv = Tuning {
        gemm_min_rows: 1000,
        ..Tuning::default()
    };
    let e = lower(
        &matmul_graph(16, 128, 64, DType::BF16, Some(false)),
        &Target::h200(),
        &gemv,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("GEMM path"), "{e}");
}

/// A prefill chunk's attention block: `x [t, (h + 2 kv) d]` split into q, k, v, reshaped to
/// `[t, heads, d]`, q/k through `fused_qk_norm_rope`, then attention over a `max_ctx` bf16 cache.
fn prefill_attention(t: usize) -> Graph {
    let (h, kv, d) = (16, 8, 128);
    let mut w = Weights::new();
    let mut rng = Rng::new(8);
    let mut g = Graph::new();
    let x = input(
        &mut g,
        "x",
        TensorType::new(DType::F32, [t, (h + 2 * kv) * d]),
    );
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
    let part = |o: u32| braid_ir::Value {
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
    let nr = g
        .add(
            Op::FusedQkNormRope {
                eps: 1e-6,
                theta: 1e6,
                scaling: RopeScaling::Default,
            },
            &[q, k, qn, kn, p],
        )
        .expect("fused_qk_norm_rope");
    let (qr, kr) = (
        braid_ir::Value {
            node: nr,
            output: 0,
        },
        braid_ir::Value {
            node: nr,
            output: 1,
        },
    );
    let cty = TensorType::new(DType::BF16, [1024, kv, d]);
    let kc = op(
        &mut g,
        Op::KvCache {
            name: "kc".into(),
            ty: cty.clone(),
        },
        &[],
    );
    let vc = op(
        &mut g,
        Op::KvCache {
            name: "vc".into(),
            ty: cty,
        },
        &[],
    );
    let a = op(
        &mut g,
        Op::Attention { scale: 0.088 },
        &[qr, kr, v, kc, vc, p],
    );
    g.set_results(vec![a]);
    g
}

#[test]
fn prefill_attention_appends_the_chunk_then_attends_causally() {
    let p = plan(&prefill_attention(100), Tuning::default());
    // The split is read in place: no copies; q/k norm + rope is a launch of its own (the decode
    // kernel's prologue fold is for one token).
    assert_eq!(
        kernels(&p),
        [
            "norm_rope_f32",
            "kv_append_bf16",
            "attention_prefill_mma_bf16_d128_g2"
        ]
    );
    let Params::NormRope(nr) = p.launches[0].params else {
        panic!("norm_rope params")
    };
    let row: i32 = (16 + 2 * 8) * 128;
    assert_eq!((nr.rows1, nr.heads1, nr.ld1), (100 * 16, 16, row));
    assert_eq!((nr.rows2, nr.heads2, nr.ld2), (100 * 8, 8, row));
    let Params::KvAppend(kv) = p.launches[1].params else {
        panic!("kv_append params")
    };
    assert_eq!(
        (kv.t, kv.row, kv.k_ld, kv.v_ld),
        (100, 8 * 128, 8 * 128, row)
    );
    // v is read from the split's input, after q and k.
    let (x_region, x_off) = nr.x1.symbolic().expect("symbolic");
    assert_eq!(kv.v.symbolic(), Some((x_region, x_off + 24 * 128 * 4)));
    let l = &p.launches[2];
    let Params::PrefillAttention(pa) = l.params else {
        panic!("prefill attention params")
    };
    // 64 query rows per block: 32 tokens of a KV head's 2 query heads; 4 tiles for 100 tokens.
    assert_eq!(l.grid, (4, 8, 1));
    assert_eq!(l.block.0, 128);
    // The tensor-core kernel keeps its tiles in static shared memory.
    assert_eq!(l.smem, 0);
    let simt = plan(
        &prefill_attention(100),
        Tuning {
            prefill_att: braid_backend_cuda::tuning::PrefillAtt::Simt,
            ..Tuning::default()
        },
    );
    let ls = &simt.launches[2];
    assert_eq!(ls.kernel.name, "attention_prefill_bf16_d128_g2");
    assert_eq!(ls.grid, (4, 8, 1));
    assert_eq!(
        ls.smem,
        braid_backend_cuda::params::prefill_attention_smem(128)
    );
    assert_eq!(
        (pa.t, pa.h, pa.kvh, pa.max_ctx, pa.q_ld),
        (100, 16, 8, 1024, 16 * 128)
    );
    assert_eq!(pa.q, nr.out1);
    assert!(p
        .fusions
        .iter()
        .any(|f| f.knob == "BRAID_SPLIT_IN_PLACE=0" && f.count == 1));
    // Without the in-place split: one copy per slice.
    let off = plan(
        &prefill_attention(100),
        Tuning {
            split_in_place: false,
            ..Tuning::default()
        },
    );
    assert_eq!(
        kernels(&off),
        [
            "copy2d_u32",
            "copy2d_u32",
            "copy2d_u32",
            "norm_rope_f32",
            "kv_append_bf16",
            "attention_prefill_mma_bf16_d128_g2"
        ]
    );
}

#[test]
fn decode_plans_list_only_the_decode_fusions() {
    let p = plan(&attention(QkInput::NormRope), Tuning::default());
    assert_eq!(p.fusions.len(), 3);
    assert!(p.fusions.iter().all(|f| f.knob != "BRAID_SPLIT_IN_PLACE=0"));
}

#[test]
fn gemms_of_one_input_share_a_prologue_and_others_get_their_own() {
    let mut w = Weights::new();
    let mut rng = Rng::new(9);
    let mut g = Graph::new();
    let x = input(&mut g, "x", TensorType::new(DType::F32, [32, 64]));
    let wa = weight(&mut g, &mut w, &mut rng, "wa", DType::BF16, &[64, 64], 0.1);
    let wb = weight(&mut g, &mut w, &mut rng, "wb", DType::BF16, &[64, 64], 0.1);
    let a = op(&mut g, Op::MatMul, &[x, wa]);
    let b = op(&mut g, Op::MatMul, &[x, wb]);
    // Same shape, another value (perhaps at a reused arena address): a prologue of its own.
    let s = op(&mut g, Op::Silu, &[b]);
    let c = op(&mut g, Op::MatMul, &[s, wa]);
    g.set_results(vec![a, c]);
    let p = plan(&g, Tuning::default());
    assert_eq!(
        kernels(&p),
        [
            "gemm_prologue_f32",
            "cublas_gemm_bf16",
            "cublas_gemm_bf16",
            "ew_silu_f32",
            "gemm_prologue_f32",
            "cublas_gemm_bf16"
        ]
    );
}
