//! Rotary frequencies: `rope_inv_freq` against an independent f64 re-implementation of HF's default
//! and Llama 3 formulas (`modeling_rope_utils.py`) and against tables transformers itself produced,
//! its validation, and the interpreter's `rope` and `fused_qk_norm_rope` with a Llama 3 scaling.

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

/// `inv_freq` tables as f32 bits from transformers 5.17.0 on torch 2.11.0 (CPU): the llama3 ones
/// from `ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(..), "cpu")`, the default ones from the
/// expression of `_compute_default_rope_parameters`. Names: rope type, theta, head_dim and the
/// llama3 `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`.
mod hf {
    pub const HF_LLAMA3_5E5_64_F32_L1_H4_8192: [u32; 32] = [
        0x3f800000, 0x3f29e1c6, 0x3ee177bc, 0x3e959ee3, 0x3e4693b0, 0x3e03c6a0, 0x3daee4ad,
        0x3d681e67, 0x3d1a08c8, 0x3ccc6f49, 0x3c87a9c3, 0x3c340d6d, 0x3beef74f, 0x3b9e9402,
        0x3b527720, 0x3aa9279b, 0x39e13620, 0x38cb98f7, 0x37a3418d, 0x3758ac81, 0x370fc8f8,
        0x36bed4f4, 0x367d45c3, 0x3628126b, 0x35df10c4, 0x359406cb, 0x35447610, 0x35025f34,
        0x34ad07a7, 0x3465a54d, 0x341864a7, 0x33ca41b0,
    ];
    pub const HF_LLAMA3_5E5_128_F8_L1_H4_8192: [u32; 64] = [
        0x3f800000, 0x3f508ac1, 0x3f29e1c6, 0x3f0a6384, 0x3ee177bc, 0x3eb7ab7d, 0x3e959ee3,
        0x3e73c461, 0x3e4693b0, 0x3e21c3a0, 0x3e03c6a0, 0x3dd6b19c, 0x3daee4ad, 0x3d8e7898,
        0x3d681e67, 0x3d3d1684, 0x3d1a08c8, 0x3cfaf53f, 0x3ccc6f49, 0x3ca68939, 0x3c87a9c3,
        0x3c5d06ec, 0x3c340d6d, 0x3c12ac7f, 0x3beef74f, 0x3bc2aa76, 0x3b9e9402, 0x3b812e35,
        0x3b527720, 0x3b0dfd06, 0x3ab3d11d, 0x3a60979e, 0x3a0995d2, 0x39a3f108, 0x393b2dd2,
        0x38c86886, 0x38a3418d, 0x3884fdbf, 0x3858ac81, 0x38308199, 0x380fc8f8, 0x37ea426f,
        0x37bed4f4, 0x379b7475, 0x377d45c3, 0x374e51f5, 0x3728126b, 0x3708ea0f, 0x36df10c4,
        0x36b5b687, 0x369406cb, 0x36712b80, 0x36447610, 0x36200a69, 0x36025f34, 0x35d46808,
        0x35ad07a7, 0x358cf400, 0x3565a54d, 0x353b12c7, 0x351864a7, 0x34f848c2, 0x34ca41b0,
        0x34a4c2ff,
    ];
    pub const HF_LLAMA3_1E4_32_F4_L2_H8_512: [u32; 16] = [
        0x3f800000, 0x3f0ff59a, 0x3ea1e89b, 0x3e361887, 0x3dcccccd, 0x3d03ef5b, 0x3c26e2d6,
        0x3b91ad39, 0x3b23d70a, 0x3ab8449c, 0x3a4f3e38, 0x39e91528, 0x3983126f, 0x39136a16,
        0x38a5cb60, 0x383a7753,
    ];
    pub const HF_DEFAULT_1E6_128: [u32; 64] = [
        0x3f800000, 0x3f4e4bad, 0x3f263de0, 0x3f05f6ef, 0x3ed7e89b, 0x3eadfcff, 0x3e8c3504,
        0x3e61f835, 0x3e361887, 0x3e12bd91, 0x3dec7fd6, 0x3dbe94c6, 0x3d99940d, 0x3d778513,
        0x3d47763f, 0x3d20bc1d, 0x3d0186e3, 0x3cd0c1a8, 0x3ca8398b, 0x3c879008, 0x3c5a7bf2,
        0x3c301052, 0x3c0de12d, 0x3be4aa46, 0x3bb8449c, 0x3b947dae, 0x3b6f520e, 0x3b40dac5,
        0x3b1b690d, 0x3afa78f0, 0x3ac9d75c, 0x3aa2a6f7, 0x3a83126f, 0x3a533f28, 0x3a2a3b44,
        0x3a092e02, 0x39dd1725, 0x39b229fb, 0x398f9272, 0x39676492, 0x393a7753, 0x39164324,
        0x38f22ce2, 0x38c327b5, 0x389d43a4, 0x387d75d4, 0x384c3fbe, 0x382497ab, 0x3804a2b2,
        0x37d5c441, 0x37ac431d, 0x378ad0ed, 0x375fba4f, 0x37344a0e, 0x371148e3, 0x36ea2732,
        0x36bcb0c1, 0x36980e02, 0x36751070, 0x36457bab, 0x361f23e4, 0x36003dec, 0x35ceaf79,
        0x35a68e4c,
    ];
    pub const HF_DEFAULT_5E5_64: [u32; 32] = [
        0x3f800000, 0x3f29e1c6, 0x3ee177bc, 0x3e959ee3, 0x3e4693b0, 0x3e03c6a0, 0x3daee4ad,
        0x3d681e67, 0x3d1a08c8, 0x3ccc6f49, 0x3c87a9c3, 0x3c340d6d, 0x3beef74f, 0x3b9e9402,
        0x3b527720, 0x3b0baa41, 0x3ab95d21, 0x3a7603ea, 0x3a23418d, 0x39d8ac81, 0x398fc8f8,
        0x393ed4f4, 0x38fd45c3, 0x38a8126b, 0x385f10c4, 0x381406cb, 0x37c47610, 0x37825f34,
        0x372d07a7, 0x36e5a54d, 0x369864a7, 0x364a41b0,
    ];
    pub const HF_DEFAULT_1E4_32: [u32; 16] = [
        0x3f800000, 0x3f0ff59a, 0x3ea1e89b, 0x3e361887, 0x3dcccccd, 0x3d6655c2, 0x3d0186e3,
        0x3c91ad39, 0x3c23d70a, 0x3bb8449c, 0x3b4f3e38, 0x3ae91528, 0x3a83126f, 0x3a136a16,
        0x39a5cb60, 0x393a7753,
    ];
}

fn ulps(a: f32, b: u32) -> u32 {
    a.to_bits().abs_diff(b)
}

#[test]
fn tables_match_transformers() {
    let l3 = |factor, low, high, old| RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings: old,
    };
    // Llama 3: bit for bit (every step is the f32 operation torch runs).
    for (got, want) in [
        (
            rope_inv_freq(5e5, &l3(32.0, 1.0, 4.0, 8192), 64),
            &hf::HF_LLAMA3_5E5_64_F32_L1_H4_8192[..],
        ),
        (
            rope_inv_freq(5e5, &l3(8.0, 1.0, 4.0, 8192), 128),
            &hf::HF_LLAMA3_5E5_128_F8_L1_H4_8192[..],
        ),
        (
            rope_inv_freq(1e4, &l3(4.0, 2.0, 8.0, 512), 32),
            &hf::HF_LLAMA3_1E4_32_F4_L2_H8_512[..],
        ),
    ] {
        let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want);
    }
    // Default: within 1 ulp. torch's vectorised powf is not always correctly rounded: for theta 1e6,
    // d 128, entry 37 it returns the f32 next to the correctly rounded 1e6^0.578125 that the
    // platform powf (and so braid, unchanged since it was checked against HF) gives.
    for (got, want) in [
        (
            rope_inv_freq(1e6, &RopeScaling::Default, 128),
            &hf::HF_DEFAULT_1E6_128[..],
        ),
        (
            rope_inv_freq(5e5, &RopeScaling::Default, 64),
            &hf::HF_DEFAULT_5E5_64[..],
        ),
        (
            rope_inv_freq(1e4, &RopeScaling::Default, 32),
            &hf::HF_DEFAULT_1E4_32[..],
        ),
    ] {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                ulps(*g, *w) <= 1,
                "entry {i}: {g:e} vs HF {:e}",
                f32::from_bits(*w)
            );
        }
    }
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
