//! # braid-passes
//!
//! Fusion passes for the braid IR. A decode-step [`braid_ir::Graph`] is loaded into an egg e-graph
//! ([`language`], [`convert`]), saturated with rewrite rules ([`rules`]: horizontal q/k/v and
//! gate/up merges and their bias packing, RMSNorm + matmul (+ add), the gated MLP tail, matmul +
//! residual or bias add, q/k norm + rope), and the cheapest equivalent graph under an
//! estimated-time cost model ([`cost`]: launch overhead + bytes moved / bandwidth) is extracted
//! back ([`extract`]). Plain graph passes ([`dce`]) run after. A Qwen3 decode layer comes out as 6
//! kernel-launching nodes: `fused_rms_norm_matmul` (qkv), `fused_qk_norm_rope`, `attention`,
//! `fused_matmul_add` (o_proj + residual), `fused_rms_norm_matmul` (gate/up) and
//! `fused_gated_mlp`. A Qwen2 layer packs its q/k/v biases into `fused_rms_norm_matmul_add` and,
//! without q/k norm, keeps two `rope`s (7 nodes), as does a Llama layer (plain
//! `fused_rms_norm_matmul`). A prefill chunk (`T` tokens) fuses into the same nodes; its packed
//! q/k/v `split` is then a strided copy, not a view, so it counts one launch more per layer.
//!
//! ## Public API
//!
//! ```text
//! PassManager::from_spec(spec: &str) -> Result<PassManager, PassError>   // "none" | "default" | "a,b,c"
//! PassManager::run(&self, &mut Graph) -> Result<(), PassError>
//! PassManager::run_with_hook(&self, &mut Graph, FnMut(pass_name: &str, &Graph)) -> Result<(), PassError>
//! PassManager::names(&self) -> Vec<&'static str>
//! pass_by_name(&str) -> Option<Box<dyn Pass>>
//! pass_names() -> &'static [&'static str]    // fuse, fuse-horizontal, fuse-norm-matmul, fuse-mlp,
//!                                            // fuse-residual, fuse-qk-norm-rope, dce
//! trait Pass { fn name(&self) -> &'static str; fn run(&self, &mut Graph) -> Result<(), PassError>; }
//! fusion::fuse(&Graph, &[BraidRewrite], &FusionLimits) -> Result<(Graph, FusionReport), String>
//! cost::{graph_cost(&Graph) -> Cost, kernel_launches(&Graph) -> usize, Cost::time_us()}
//! ```
//!
//! `default` is `fuse,dce`. Each pass runs in a `tracing` span `pass{name}` (elapsed time and node
//! counts logged at info level) on a copy of the graph, which is verified ([`braid_ir::verify()`])
//! before it replaces the input; after an error the graph holds the last verified output. The fusion
//! passes drop nodes no result reaches and merge structurally identical nodes.
//!
//! Architecture invariant: a pass never changes what a graph computes. Every rule theme has a test
//! that runs the graph before and after through the reference interpreter on random inputs.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod dce;
pub mod error;
pub mod extract;
pub mod fusion;
pub mod language;
pub mod manager;
pub mod rules;

pub use analysis::{BraidEGraph, BraidRewrite, ClassData, TypeAnalysis};
pub use cost::{graph_cost, kernel_launches, Cost};
pub use error::PassError;
pub use fusion::{fuse, FusePass, FusionLimits, FusionReport};
pub use language::BraidLang;
pub use manager::{pass_by_name, pass_names, Pass, PassManager};
