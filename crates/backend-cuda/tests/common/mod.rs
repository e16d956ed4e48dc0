//! Shared helpers of the GPU tests: fast seeded random data, weight maps, relative L2, and a builder
//! of Qwen3-shaped decode-step graphs (unfused and in the fused form the passes produce).
#![allow(dead_code)]

use std::collections::HashMap;

use braid_backend_cuda::CudaDevice;
use braid_ir::{DType, Graph, HostWeight, Op, TensorType, Value};

/// The reason every GPU test is ignored by default.
pub const NEEDS_GPU: &str = "needs an NVIDIA GPU; run on the device machine";

/// A small, fast, seeded generator (SplitMix64): test data only.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `‖a − b‖ / ‖b‖` (b the reference). NaN anywhere gives infinity.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        if x.is_nan() || y.is_nan() {
            return f64::INFINITY;
        }
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// The first GPU, or a panic naming why there is none.
pub fn device() -> CudaDevice {
    match CudaDevice::open(0) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

/// Weights by name.
pub type Weights = HashMap<String, HostWeight>;

/// Adds a random weight `name` of `dtype[shape]`, uniform in `[-scale, scale)`, and declares it in
/// `g`; returns its value.
pub fn weight(
    g: &mut Graph,
    w: &mut Weights,
    rng: &mut Rng,
    name: &str,
    dtype: DType,
    shape: &[usize],
    scale: f32,
) -> Value {
    let n: usize = shape.iter().product();
    let values = rng.vec(n, scale);
    w.insert(
        name.to_string(),
        HostWeight::from_f32(dtype, shape.to_vec(), &values),
    );
    g.add1(
        Op::Weight {
            name: name.to_string(),
            ty: TensorType::new(dtype, shape.to_vec()),
        },
        &[],
    )
    .expect("weight leaf")
}

/// A norm weight near 1 (`1 ± 0.2`).
pub fn norm_weight(
    g: &mut Graph,
    w: &mut Weights,
    rng: &mut Rng,
    name: &str,
    dtype: DType,
    d: usize,
) -> Value {
    let values: Vec<f32> = (0..d).map(|_| 1.0 + 0.2 * rng.unit()).collect();
    w.insert(
        name.to_string(),
        HostWeight::from_f32(dtype, vec![d], &values),
    );
    g.add1(
        Op::Weight {
            name: name.to_string(),
            ty: TensorType::new(dtype, vec![d]),
        },
        &[],
    )
    .expect("weight leaf")
}

pub fn input(g: &mut Graph, name: &str, ty: TensorType) -> Value {
    g.add1(
        Op::Input {
            name: name.into(),
            ty,
        },
        &[],
    )
    .expect("input leaf")
}

pub fn op(g: &mut Graph, op: Op, ins: &[Value]) -> Value {
    match g.add1(op.clone(), ins) {
        Ok(v) => v,
        Err(e) => panic!("adding {op:?}: {e}"),
    }
}

/// Shape of a Qwen3-like decoder.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub inter: usize,
    pub vocab: usize,
    pub layers: usize,
    pub max_ctx: usize,
    pub weight_dtype: DType,
    pub kv_dtype: DType,
    pub eps: f32,
    pub theta: f32,
    /// Diagnostics only: when false, the fused graph skips attention (the q slice stands in for its
    /// output), to time the rest of the step.
    pub attention: bool,
}

impl Shape {
    /// Qwen3-0.6B's sizes (config.json of Qwen/Qwen3-0.6B), with `layers` layers.
    pub fn qwen3_0_6b(layers: usize, max_ctx: usize) -> Self {
        Shape {
            hidden: 1024,
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            inter: 3072,
            vocab: 151_936,
            layers,
            max_ctx,
            weight_dtype: DType::BF16,
            kv_dtype: DType::BF16,
            eps: 1e-6,
            theta: 1_000_000.0,
            attention: true,
        }
    }
}

/// Builds a Qwen3-shaped decode step (tied embeddings) with random weights: the unfused primitive
/// form, or the fused form the passes produce (6 kernel-launching nodes per layer). Both graphs
/// declare the same weight names, so one weight map serves both.
pub fn qwen3_graph(s: &Shape, fused: bool, seed: u64) -> (Graph, Weights) {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let mut w = Weights::new();
    let (h, nh, nkv, d, i) = (s.hidden, s.heads, s.kv_heads, s.head_dim, s.inter);
    let wd = s.weight_dtype;
    let token = input(&mut g, "token", TensorType::new(DType::I32, [1]));
    let pos = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let embed = weight(
        &mut g,
        &mut w,
        &mut rng,
        "model.embed_tokens.weight",
        wd,
        &[s.vocab, h],
        1.0,
    );
    let mut x = op(&mut g, Op::Embedding, &[embed, token]);
    let lin = |k: usize| (3.0 / k as f32).sqrt();
    for l in 0..s.layers {
        let p = format!("model.layers.{l}.");
        let ln1 = norm_weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}input_layernorm.weight"),
            wd,
            h,
        );
        let wq = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}self_attn.q_proj.weight"),
            wd,
            &[nh * d, h],
            lin(h),
        );
        let wk = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}self_attn.k_proj.weight"),
            wd,
            &[nkv * d, h],
            lin(h),
        );
        let wv = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}self_attn.v_proj.weight"),
            wd,
            &[nkv * d, h],
            lin(h),
        );
        let qn = norm_weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}self_attn.q_norm.weight"),
            wd,
            d,
        );
        let kn = norm_weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}self_attn.k_norm.weight"),
            wd,
            d,
        );
        let wo = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}self_attn.o_proj.weight"),
            wd,
            &[h, nh * d],
            lin(nh * d),
        );
        let ln2 = norm_weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}post_attention_layernorm.weight"),
            wd,
            h,
        );
        let wg = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}mlp.gate_proj.weight"),
            wd,
            &[i, h],
            lin(h),
        );
        let wu = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}mlp.up_proj.weight"),
            wd,
            &[i, h],
            lin(h),
        );
        let wdn = weight(
            &mut g,
            &mut w,
            &mut rng,
            &format!("{p}mlp.down_proj.weight"),
            wd,
            &[h, i],
            lin(i),
        );
        let cache_ty = TensorType::new(s.kv_dtype, [s.max_ctx, nkv, d]);
        let kc = g
            .add1(
                Op::KvCache {
                    name: format!("{p}k_cache"),
                    ty: cache_ty.clone(),
                },
                &[],
            )
            .expect("kv leaf");
        let vc = g
            .add1(
                Op::KvCache {
                    name: format!("{p}v_cache"),
                    ty: cache_ty,
                },
                &[],
            )
            .expect("kv leaf");
        let scale = (d as f32).powf(-0.5);
        if fused {
            let qkv_w = op(&mut g, Op::Concat { axis: 0 }, &[wq, wk, wv]);
            let qkv = op(
                &mut g,
                Op::FusedRmsNormMatmul { eps: s.eps },
                &[x, ln1, qkv_w],
            );
            let split = g
                .add(
                    Op::Split {
                        axis: 1,
                        sizes: vec![nh * d, nkv * d, nkv * d],
                    },
                    &[qkv],
                )
                .expect("split");
            let part = |o: u32| Value {
                node: split,
                output: o,
            };
            let q2 = op(&mut g, Op::Reshape { shape: vec![nh, d] }, &[part(0)]);
            let k2 = op(
                &mut g,
                Op::Reshape {
                    shape: vec![nkv, d],
                },
                &[part(1)],
            );
            let v2 = op(
                &mut g,
                Op::Reshape {
                    shape: vec![nkv, d],
                },
                &[part(2)],
            );
            let qk = g
                .add(
                    Op::FusedQkNormRope {
                        eps: s.eps,
                        theta: s.theta,
                    },
                    &[q2, k2, qn, kn, pos],
                )
                .expect("qk norm rope");
            let (qr, kr) = (
                Value {
                    node: qk,
                    output: 0,
                },
                Value {
                    node: qk,
                    output: 1,
                },
            );
            let a2 = if s.attention {
                let a = op(&mut g, Op::Attention { scale }, &[qr, kr, v2, kc, vc, pos]);
                op(
                    &mut g,
                    Op::Reshape {
                        shape: vec![1, nh * d],
                    },
                    &[a],
                )
            } else {
                let _ = (qr, kr, v2, kc, vc);
                part(0)
            };
            let x1 = op(&mut g, Op::FusedMatmulAdd, &[a2, wo, x]);
            let gu_w = op(&mut g, Op::Concat { axis: 0 }, &[wg, wu]);
            let gu = op(
                &mut g,
                Op::FusedRmsNormMatmul { eps: s.eps },
                &[x1, ln2, gu_w],
            );
            x = op(&mut g, Op::FusedGatedMlp, &[gu, wdn, x1]);
        } else {
            let hn = op(&mut g, Op::RmsNorm { eps: s.eps }, &[x, ln1]);
            let q = op(&mut g, Op::MatMul, &[hn, wq]);
            let k = op(&mut g, Op::MatMul, &[hn, wk]);
            let v = op(&mut g, Op::MatMul, &[hn, wv]);
            let q2 = op(&mut g, Op::Reshape { shape: vec![nh, d] }, &[q]);
            let k2 = op(
                &mut g,
                Op::Reshape {
                    shape: vec![nkv, d],
                },
                &[k],
            );
            let v2 = op(
                &mut g,
                Op::Reshape {
                    shape: vec![nkv, d],
                },
                &[v],
            );
            let qn2 = op(&mut g, Op::RmsNorm { eps: s.eps }, &[q2, qn]);
            let kn2 = op(&mut g, Op::RmsNorm { eps: s.eps }, &[k2, kn]);
            let qr = op(&mut g, Op::Rope { theta: s.theta }, &[qn2, pos]);
            let kr = op(&mut g, Op::Rope { theta: s.theta }, &[kn2, pos]);
            let a = op(&mut g, Op::Attention { scale }, &[qr, kr, v2, kc, vc, pos]);
            let a2 = op(
                &mut g,
                Op::Reshape {
                    shape: vec![1, nh * d],
                },
                &[a],
            );
            let o = op(&mut g, Op::MatMul, &[a2, wo]);
            let x1 = op(&mut g, Op::Add, &[o, x]);
            let h2 = op(&mut g, Op::RmsNorm { eps: s.eps }, &[x1, ln2]);
            let gt = op(&mut g, Op::MatMul, &[h2, wg]);
            let up = op(&mut g, Op::MatMul, &[h2, wu]);
            let sg = op(&mut g, Op::Silu, &[gt]);
            let m = op(&mut g, Op::Mul, &[sg, up]);
            let dn = op(&mut g, Op::MatMul, &[m, wdn]);
            x = op(&mut g, Op::Add, &[dn, x1]);
        }
    }
    let norm = norm_weight(&mut g, &mut w, &mut rng, "model.norm.weight", wd, h);
    let logits = if fused {
        op(
            &mut g,
            Op::FusedRmsNormMatmul { eps: s.eps },
            &[x, norm, embed],
        )
    } else {
        let xn = op(&mut g, Op::RmsNorm { eps: s.eps }, &[x, norm]);
        op(&mut g, Op::MatMul, &[xn, embed])
    };
    let next = op(&mut g, Op::Argmax, &[logits]);
    g.set_results(vec![logits, next]);
    braid_ir::verify(&g).expect("test graph verifies");
    (g, w)
}
