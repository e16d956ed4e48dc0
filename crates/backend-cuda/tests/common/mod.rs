//! Shared helpers of the GPU tests: fast seeded random data, weight maps, relative L2, graph
//! builders. (Whole Qwen3 decode steps are tested in `crates/runtime/tests/gpu_decode.rs`, through
//! the real lowering.)
#![allow(dead_code)]

use std::collections::HashMap;

use braid_backend_cuda::CudaDevice;
use braid_ir::{DType, Graph, HostWeight, Op, RopeScaling, TensorType, Value};

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

/// What feeds an attention's q and k in [`attention_graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkInput {
    /// The inputs `q` and `k` as they are.
    Plain,
    /// `fused_qk_norm_rope(q, k, qn, kn, position)` (Qwen3).
    NormRope,
    /// `rope(q, position)` and `rope(k, position)` (Llama, Qwen2).
    Ropes,
}

/// A decode attention over f32 inputs `q [h, d]`, `k`, `v [kv, d]` and a `position`, with KV caches
/// `cache[max_ctx, kv, d]`, q/k fed as `qk` says; the result is the attention output. Norm weights
/// (`qn`, `kn`) are random bf16 in `w`.
pub fn attention_graph(
    w: &mut Weights,
    rng: &mut Rng,
    (h, kv, d): (usize, usize, usize),
    cache: DType,
    max_ctx: usize,
    qk: QkInput,
) -> Graph {
    let mut g = Graph::new();
    let f32_in = |g: &mut Graph, name: &str, shape: [usize; 2]| {
        input(g, name, TensorType::new(DType::F32, shape.to_vec()))
    };
    let q = f32_in(&mut g, "q", [h, d]);
    let k = f32_in(&mut g, "k", [kv, d]);
    let v = f32_in(&mut g, "v", [kv, d]);
    let p = input(&mut g, "position", TensorType::new(DType::I32, [1]));
    let theta = 1_000_000.0;
    let (qr, kr) = match qk {
        QkInput::Plain => (q, k),
        QkInput::NormRope => {
            let qn = norm_weight(&mut g, w, rng, "qn", DType::BF16, d);
            let kn = norm_weight(&mut g, w, rng, "kn", DType::BF16, d);
            let n = g
                .add(
                    Op::FusedQkNormRope {
                        eps: 1e-6,
                        theta,
                        scaling: RopeScaling::Default,
                    },
                    &[q, k, qn, kn, p],
                )
                .expect("fused_qk_norm_rope");
            (Value { node: n, output: 0 }, Value { node: n, output: 1 })
        }
        QkInput::Ropes => (
            op(
                &mut g,
                Op::Rope {
                    theta,
                    scaling: RopeScaling::Default,
                },
                &[q, p],
            ),
            op(
                &mut g,
                Op::Rope {
                    theta,
                    scaling: RopeScaling::Default,
                },
                &[k, p],
            ),
        ),
    };
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
    g.set_results(vec![a]);
    g
}
