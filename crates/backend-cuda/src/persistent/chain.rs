//! The GEMV-chain benchmark graph: a list of matmul shapes, distinct random bf16 weights, each
//! matmul reading (a view of the first `k` outputs of) the one before it. With a transformer's
//! matmuls of one decode step (e.g. Qwen3-0.6B's 113: 28 x [qkv, o_proj, gate/up, down] + the LM
//! head) it is that step's dependency chain without attention and norms: the first measurement of
//! the persistent mode against the per-op graph.

use std::collections::HashMap;

use braid_ir::{DType, Graph, HostWeight, IrError, Op, TensorType, Value};

/// A chain graph and its weights (by name).
pub struct GemvChain {
    /// Input `x: f32[1, k0]`; result: the last matmul's output `f32[1, n_last]`.
    pub graph: Graph,
    pub weights: HashMap<String, HostWeight>,
    /// Bytes of all weights.
    pub weight_bytes: usize,
}

/// SplitMix64: fast seeded bits for benchmark weights.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n x k` bf16 values uniform in `[-a, a)` with `a = sqrt(3 / k)` (unit variance in, unit
/// variance out, so 100+ chained GEMVs neither vanish nor overflow).
fn random_bf16(n: usize, k: usize, seed: u64) -> Vec<u8> {
    let a = (3.0 / k as f32).sqrt();
    let mut state = seed;
    let mut bytes = Vec::with_capacity(n * k * 2);
    for _ in 0..(n * k).div_ceil(4) {
        let r = splitmix(&mut state);
        for j in 0..4 {
            let u = ((r >> (16 * j)) & 0xffff) as f32 / 65536.0;
            bytes.extend_from_slice(&half::bf16::from_f32((2.0 * u - 1.0) * a).to_le_bytes());
        }
    }
    bytes.truncate(n * k * 2);
    bytes
}

/// The chain of `shapes` (`(n, k)` of each W, in order): `x0 [1, shapes[0].k]`, then `y_i =
/// x_i · W_iᵀ`, `x_{i+1} = y_i[:, :k_{i+1}]` (a view), result `y_last`. Needs `k_{i+1} <= n_i`.
///
/// Errors: [`IrError`] when a shape does not chain (`k_{i+1} > n_i`) or is empty.
pub fn gemv_chain(shapes: &[(usize, usize)], seed: u64) -> Result<GemvChain, IrError> {
    let mut g = Graph::new();
    let mut weights = HashMap::new();
    let k0 = shapes.first().map_or(1, |s| s.1);
    let mut x = g.add1(
        Op::Input {
            name: "x".into(),
            ty: TensorType::new(DType::F32, [1, k0]),
        },
        &[],
    )?;
    let mut weight_bytes = 0;
    for (i, &(n, k)) in shapes.iter().enumerate() {
        let width = g.value_type(x)?.shape[1];
        if k < width {
            let parts = g.add(
                Op::Split {
                    axis: 1,
                    sizes: vec![k, width - k],
                },
                &[x],
            )?;
            x = Value::of(parts);
        }
        let name = format!("chain.{i}.weight");
        weights.insert(
            name.clone(),
            HostWeight {
                dtype: DType::BF16,
                shape: vec![n, k],
                bytes: random_bf16(n, k, seed ^ (i as u64).wrapping_mul(0x1000_0001)),
            },
        );
        weight_bytes += n * k * 2;
        let w = g.add1(
            Op::Weight {
                name,
                ty: TensorType::new(DType::BF16, [n, k]),
            },
            &[],
        )?;
        x = g.add1(Op::MatMul, &[x, w])?;
    }
    g.set_results(vec![x]);
    braid_ir::verify(&g)?;
    Ok(GemvChain {
        graph: g,
        weights,
        weight_bytes,
    })
}
