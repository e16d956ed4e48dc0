//! Rotary frequencies: `rope_inv_freq` against an independent f64 re-implementation of HF's default
//! and Llama 3 formulas (`modeling_rope_utils.py`), its validation, and the interpreter's `rope`
//! and `fused_qk_norm_rope` with a Llama 3 scaling.

mod interp_common;

use std::f64::consts::PI;

use braid_ir::interp::Interpreter;
use braid_ir::{rope_inv_freq, DType, Op, RopeScaling};
use interp_common::{assert_close, f32s, pos, random, Builder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Llama-3.2-1B's `config.json`: `rope_theta = 500000`, head_dim 64, and its `rope_scaling`.
const THETA: f32 = 500_000.0;
const HEAD_DIM: usize = 64;
const LLAMA3: RopeScaling = RopeScaling::Llama3 {
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
};

/// Which band of the Llama 3 formula an entry falls in.
#[derive(Debug, PartialEq)]
enum Band {
    /// Short wavelengths, kept.
    High,
    /// Interpolated.
    Medium,
    /// Long wavelengths, divided by `factor`.
    Low,
}

/// The Llama 3 table in f64, straight from the description in HF's `_compute_llama3_parameters`.
fn llama3_f64(
    theta: f64,
    d: usize,
    factor: f64,
    low: f64,
    high: f64,
    old: f64,
) -> Vec<(f64, Band)> {
    (0..d / 2)
        .map(|i| {
            let inv = 1.0 / theta.powf((2 * i) as f64 / d as f64);
            let wavelen = 2.0 * PI / inv;
            if wavelen < old / high {
                (inv, Band::High)
            } else if wavelen > old / low {
                (inv / factor, Band::Low)
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                ((1.0 - smooth) * inv / factor + smooth * inv, Band::Medium)
            }
        })
        .collect()
}

#[track_caller]
fn assert_rel_close(got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs() / w.abs();
        assert!(
            err <= rel,
            "inv_freq[{i}] = {g:e}, want {w:e} (relative error {err:e})"
        );
    }
}

#[test]
fn llama_3_2_1b_frequencies_match_an_f64_reimplementation() {
    let got = rope_inv_freq(THETA, &LLAMA3, HEAD_DIM);
    let want = llama3_f64(THETA as f64, HEAD_DIM, 32.0, 1.0, 4.0, 8192.0);
    // All three bands occur: 15 kept, 3 interpolated, 14 divided by the factor.
    let count = |b: Band| want.iter().filter(|(_, x)| *x == b).count();
    assert_eq!(
        (count(Band::High), count(Band::Medium), count(Band::Low)),
        (15, 3, 14)
    );
    let values: Vec<f64> = want.iter().map(|(v, _)| *v).collect();
    // A few f32 roundings of each step: well within 1e-6 relative.
    assert_rel_close(&got, &values, 1e-6);
    // The ends: the first entry is theta^0 = 1, unchanged; the last is divided by 32.
    assert_eq!(got[0], 1.0);
    let last_default = rope_inv_freq(THETA, &RopeScaling::Default, HEAD_DIM)[31];
    assert_eq!(got[31], last_default / 32.0);
}

#[test]
fn other_llama3_parameters_match_too() {
    // Llama 3.1 8B: factor 8, original 8192, head_dim 128.
    for (theta, d, factor, low, high, old) in [
        (500_000.0f32, 128, 8.0f32, 1.0f32, 4.0f32, 8192),
        (10_000.0, 32, 4.0, 2.0, 8.0, 512),
        (1e6, 16, 1.0, 1.0, 2.0, 64),
    ] {
        let scaling = RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        };
        let got = rope_inv_freq(theta, &scaling, d);
        let want: Vec<f64> = llama3_f64(
            theta as f64,
            d,
            factor as f64,
            low as f64,
            high as f64,
            old as f64,
        )
        .into_iter()
        .map(|(v, _)| v)
        .collect();
        assert_rel_close(&got, &want, 1e-6);
    }
}

#[test]
fn default_frequencies_are_inverse_powers_of_theta() {
    for (theta, d) in [(1e6f32, 128), (1e4, 64), (500_000.0, 64), (100.0, 4)] {
        let got = rope_inv_freq(theta, &RopeScaling::Default, d);
        assert_eq!(got.len(), d / 2);
        let want: Vec<f64> = (0..d / 2)
            .map(|i| (theta as f64).powf(-((2 * i) as f64) / d as f64))
            .collect();
        assert_rel_close(&got, &want, 1e-6);
        // Bit for bit the f32 expression of HF's `1.0 / (base ** (arange(0, dim, 2).float() / dim))`.
        for (i, g) in got.iter().enumerate() {
            let hf = 1.0 / theta.powf((2 * i) as f32 / d as f32);
            assert_eq!(g.to_bits(), hf.to_bits(), "theta {theta}, d {d}, entry {i}");
        }
    }
}

#[test]
fn validate_rejects_parameters_the_formula_cannot_use() {
    let with = |factor: f32, low: f32, high: f32, old: usize| RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: old,
    };
    assert!(RopeScaling::Default.validate().is_ok());
    assert!(LLAMA3.validate().is_ok());
    for (s, part) in [
        (
            with(0.0, 1.0, 4.0, 8192),
            "`factor` finite and > 0, got 0e0",
        ),
        (
            with(f32::NAN, 1.0, 4.0, 8192),
            "`factor` finite and > 0, got NaN",
        ),
        (
            with(8.0, 0.0, 4.0, 8192),
            "`low_freq_factor` finite and > 0",
        ),
        (
            with(8.0, 4.0, 4.0, 8192),
            "`high_freq_factor` finite and > low_freq_factor (4e0), got 4e0",
        ),
        (with(8.0, 1.0, f32::INFINITY, 8192), "`high_freq_factor`"),
        (
            with(8.0, 1.0, 4.0, 0),
            "`original_max_position_embeddings` > 0, got 0",
        ),
    ] {
        let e = s.validate().unwrap_err();
        assert!(e.contains(part), "{e}");
    }
    // The type rule of every rope-bearing op applies it.
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[2, 4]);
    let p = b.input("position", DType::I32, &[1]);
    let err =
        b.g.add1(
            Op::Rope {
                theta: 1e4,
                scaling: with(8.0, 1.0, 1.0, 8192),
            },
            &[x, p],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rope expects llama3 `high_freq_factor`"),
        "{err}"
    );
    assert_eq!(LLAMA3.rope_type(), "llama3");
    assert_eq!(RopeScaling::default(), RopeScaling::Default);
    assert!(RopeScaling::Default.is_default() && !LLAMA3.is_default());
}

/// `rope(x [heads, d])` by hand from a frequency table: rotate-half pairs `(i, i + d/2)`.
fn rope_by_hand(x: &[f32], d: usize, position: usize, inv_freq: &[f32]) -> Vec<f32> {
    let mut out = x.to_vec();
    for (xh, oh) in x.chunks(d).zip(out.chunks_mut(d)) {
        for i in 0..d / 2 {
            let angle = position as f32 * inv_freq[i];
            let (c, s) = (angle.cos(), angle.sin());
            oh[i] = xh[i] * c - xh[i + d / 2] * s;
            oh[i + d / 2] = xh[i + d / 2] * c + xh[i] * s;
        }
    }
    out
}

#[test]
fn interpreter_rope_uses_the_llama3_table() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let heads = 2;
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, &[heads, HEAD_DIM]);
    let p = b.input("position", DType::I32, &[1]);
    let y = b.op(
        Op::Rope {
            theta: THETA,
            scaling: LLAMA3,
        },
        &[x, p],
    );
    let d = b.op(
        Op::Rope {
            theta: THETA,
            scaling: RopeScaling::Default,
        },
        &[x, p],
    );
    b.results(&[y, d]);
    let table = rope_inv_freq(THETA, &LLAMA3, HEAD_DIM);
    let xs = random(&mut rng, heads * HEAD_DIM);
    let mut it = Interpreter::new(&b.weights);
    for position in [0usize, 1, 77, 8191, 100_000] {
        let out = it
            .run(
                &b.g,
                &[
                    ("x", f32s(&[heads, HEAD_DIM], &xs)),
                    ("position", pos(position as i32)),
                ],
            )
            .unwrap();
        assert_eq!(out[0].data, rope_by_hand(&xs, HEAD_DIM, position, &table));
        if position > 1000 {
            // Long wavelengths are scaled, so the two variants differ at large positions.
            assert_ne!(out[0].data, out[1].data);
        }
    }
}

#[test]
fn fused_qk_norm_rope_with_llama3_equals_norm_then_rope() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (h, kv, d, t) = (4, 2, 16, 3);
    let norm = random(&mut rng, d);
    let build = |fused: bool| {
        let mut b = Builder::new();
        let q = b.input("q", DType::F32, &[t, h, d]);
        let k = b.input("k", DType::F32, &[t, kv, d]);
        let p = b.input("position", DType::I32, &[1]);
        let n = b.weight("n", DType::F32, &[d], &norm);
        let outs = if fused {
            b.op_n(
                Op::FusedQkNormRope {
                    eps: 1e-6,
                    theta: THETA,
                    scaling: LLAMA3,
                },
                &[q, k, n, n, p],
                2,
            )
        } else {
            [q, k]
                .into_iter()
                .map(|x| {
                    let nx = b.op(Op::RmsNorm { eps: 1e-6 }, &[x, n]);
                    b.op(
                        Op::Rope {
                            theta: THETA,
                            scaling: LLAMA3,
                        },
                        &[nx, p],
                    )
                })
                .collect()
        };
        b.results(&outs);
        b
    };
    let (fused, unfused) = (build(true), build(false));
    let inputs = vec![
        ("q", f32s(&[t, h, d], &random(&mut rng, t * h * d))),
        ("k", f32s(&[t, kv, d], &random(&mut rng, t * kv * d))),
        ("position", pos(5000)),
    ];
    let a = Interpreter::new(&fused.weights)
        .run(&fused.g, &inputs)
        .unwrap();
    let b = Interpreter::new(&unfused.weights)
        .run(&unfused.g, &inputs)
        .unwrap();
    assert_close(&a[0].data, &b[0].data, 0.0);
    assert_close(&a[1].data, &b[1].data, 0.0);
}
