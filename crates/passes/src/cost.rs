//! The cost model: estimated device time of one node of a decode step.
//!
//! `time = launches × LAUNCH_OVERHEAD_US + bytes moved / READ_BANDWIDTH_BYTES_PER_US`.
//! At batch 1 every op of a transformer layer is memory-bound (a GEMV reads its whole weight once
//! per token), so bytes moved is the right work measure, and each kernel node replayed in a CUDA
//! graph adds a fixed overhead. Costs are kept as integer launch and byte counts, so sums are exact
//! and comparisons deterministic; [`Cost::time_us`] turns them into microseconds.

use std::ops::{Add, AddAssign};

use braid_ir::{Graph, Op, OpKind, TensorType};

/// Overhead of one kernel node replayed in a CUDA graph, in µs. Source: an empty kernel measured on
/// an NVIDIA H200, 0.87 µs per node when replayed in a CUDA graph (`/work/shared/GPU.md`, "launch
/// costs").
pub const LAUNCH_OVERHEAD_US: f64 = 0.87;

/// Device read bandwidth in bytes per µs (4.18 TB/s). Source: one read of Qwen3-0.6B's 1.192 GB of
/// weights in 285 µs on an NVIDIA H200 (`/work/shared/GPU.md`, "measured ceilings"). Writes are
/// charged at the same rate.
pub const READ_BANDWIDTH_BYTES_PER_US: f64 = 4.18e6;

/// The cost of a node or a whole graph: kernel launches and bytes read plus written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cost {
    /// Kernel launches.
    pub launches: u64,
    /// Bytes read from and written to device memory.
    pub bytes: u64,
}

impl Cost {
    /// No work: leaves, `reshape`, view `split`s, weight-only `concat`s.
    pub const ZERO: Cost = Cost {
        launches: 0,
        bytes: 0,
    };

    /// Estimated time in µs: `launches × 0.87 µs + bytes / 4.18 TB/s` (see the constants).
    pub fn time_us(&self) -> f64 {
        self.launches as f64 * LAUNCH_OVERHEAD_US + self.bytes as f64 / READ_BANDWIDTH_BYTES_PER_US
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            launches: self.launches + o.launches,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

/// The cost of one node running `op` on inputs of types `inputs`, producing `outputs`.
/// `weight_only` says the node is a `concat` of weights, folded at load time (cost 0).
///
/// Bytes are all inputs read plus all outputs written, except: `embedding` reads one table row per
/// id; `attention` is charged its whole KV caches (an upper bound: it reads rows `0..=position`).
/// The fused matmuls are one launch reading everything their parts read from outside, so
/// `fused_rms_norm_matmul_add(x, g, w, r)` costs `x + g + w + r + out` against the separate nodes'
/// two launches and the round trip of the matmul's result; a bias `r [n]` (row broadcast) is
/// charged once, not once per row.
pub fn op_cost(op: &Op, inputs: &[&TensorType], outputs: &[TensorType], weight_only: bool) -> Cost {
    if weight_only || !op.launches_kernel(inputs) {
        return Cost::ZERO;
    }
    let written: usize = outputs.iter().map(|t| t.size_bytes()).sum();
    let read: usize = match op.kind() {
        OpKind::Embedding => {
            let (table, ids) = (inputs[0], inputs[1]);
            ids.size_bytes() + ids.numel() * table.last_dim() * table.dtype.size_bytes()
        }
        _ => inputs.iter().map(|t| t.size_bytes()).sum(),
    };
    Cost {
        launches: 1,
        bytes: (read + written) as u64,
    }
}

/// Whether node `n` of `g` is a weight or a `concat` of weight-only values (folded at load time).
pub fn is_weight_only(g: &Graph, n: petgraph::stable_graph::NodeIndex) -> bool {
    match g.node(n).map(|node| &node.op) {
        Some(Op::Weight { .. }) => true,
        Some(Op::Concat { .. }) => g.inputs(n).iter().all(|v| is_weight_only(g, v.node)),
        _ => false,
    }
}

/// The cost of one node of `g`.
pub fn node_cost(g: &Graph, n: petgraph::stable_graph::NodeIndex) -> Cost {
    match g.node(n) {
        Some(node) => op_cost(
            &node.op,
            &g.input_types(n),
            &node.outputs,
            is_weight_only(g, n),
        ),
        None => Cost::ZERO,
    }
}

/// The estimated cost of one run of `g`: the sum over the nodes its results reach.
pub fn graph_cost(g: &Graph) -> Cost {
    g.topo_order()
        .into_iter()
        .fold(Cost::ZERO, |acc, n| acc + node_cost(g, n))
}

/// Kernel launches of one run of `g`: reachable nodes whose op launches a kernel
/// ([`Op::launches_kernel`]), not counting weight-only `concat`s (folded at load time).
pub fn kernel_launches(g: &Graph) -> usize {
    g.topo_order()
        .into_iter()
        .filter(|&n| node_cost(g, n).launches > 0)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_ir::DType;

    #[test]
    fn reading_qwen3_weights_once_costs_the_measured_285_us() {
        // GPU.md: 1.192 GB read in 285 µs on an H200.
        let read = Cost {
            launches: 0,
            bytes: 1_192_000_000,
        };
        assert!((read.time_us() - 285.0).abs() < 1.0, "{}", read.time_us());
        let launch = Cost {
            launches: 1,
            bytes: 0,
        };
        assert_eq!(launch.time_us(), LAUNCH_OVERHEAD_US);
    }

    #[test]
    fn gemv_cost_counts_weight_input_and_output_bytes() {
        let x = TensorType::new(DType::F32, [1, 1024]);
        let w = TensorType::new(DType::BF16, [4096, 1024]);
        let y = TensorType::new(DType::F32, [1, 4096]);
        let c = op_cost(&Op::MatMul, &[&x, &w], &[y], false);
        assert_eq!(c.launches, 1);
        assert_eq!(c.bytes, (1024 * 4 + 4096 * 1024 * 2 + 4096 * 4) as u64);
    }

    #[test]
    fn views_and_folded_weights_are_free() {
        let x = TensorType::new(DType::F32, [1, 128]);
        let reshape = Op::Reshape { shape: vec![8, 16] };
        let out = TensorType::new(DType::F32, [8, 16]);
        assert_eq!(op_cost(&reshape, &[&x], &[out], false), Cost::ZERO);
        let split = Op::Split {
            axis: 1,
            sizes: vec![64, 64],
        };
        let half = TensorType::new(DType::F32, [1, 64]);
        let c = op_cost(&split, &[&x], &[half.clone(), half], false);
        assert_eq!(c, Cost::ZERO);
        let w = TensorType::new(DType::BF16, [64, 32]);
        let cat = TensorType::new(DType::BF16, [128, 32]);
        let concat = Op::Concat { axis: 0 };
        assert_eq!(
            op_cost(&concat, &[&w, &w], std::slice::from_ref(&cat), true),
            Cost::ZERO
        );
        assert_eq!(op_cost(&concat, &[&w, &w], &[cat], false).launches, 1);
    }

    #[test]
    fn fused_norm_matmul_add_is_one_launch_and_saves_the_round_trip() {
        let x = TensorType::new(DType::F32, [4, 1024]);
        let g = TensorType::new(DType::BF16, [1024]);
        let w = TensorType::new(DType::BF16, [2048, 1024]);
        let bias = TensorType::new(DType::BF16, [2048]);
        let y = TensorType::new(DType::F32, [4, 2048]);
        let fused = op_cost(
            &Op::FusedRmsNormMatmulAdd { eps: 1e-6 },
            &[&x, &g, &w, &bias],
            std::slice::from_ref(&y),
            false,
        );
        assert_eq!(fused.launches, 1);
        let bytes = 4 * 1024 * 4 + 1024 * 2 + 2048 * 1024 * 2 + 2048 * 2 + 4 * 2048 * 4;
        assert_eq!(fused.bytes, bytes as u64);
        let parts = op_cost(
            &Op::FusedRmsNormMatmul { eps: 1e-6 },
            &[&x, &g, &w],
            std::slice::from_ref(&y),
            false,
        ) + op_cost(&Op::Add, &[&y, &bias], std::slice::from_ref(&y), false);
        assert_eq!(parts.launches, 2);
        assert_eq!(parts.bytes - fused.bytes, 2 * y.size_bytes() as u64);
    }

    #[test]
    fn embedding_reads_one_row_not_the_table() {
        let table = TensorType::new(DType::BF16, [151_936, 1024]);
        let ids = TensorType::new(DType::I32, [1]);
        let out = TensorType::new(DType::F32, [1, 1024]);
        let c = op_cost(&Op::Embedding, &[&table, &ids], &[out], false);
        assert_eq!(c.bytes, (4 + 1024 * 2 + 1024 * 4) as u64);
    }
}
