//! Named passes and the [`PassManager`] that runs them in order, verifying the graph after each.

use std::time::Instant;

use braid_ir::Graph;

use crate::dce::Dce;
use crate::error::PassError;
use crate::fusion::FusePass;
use crate::rules;

/// A graph-to-graph pass. It must keep what the graph computes.
pub trait Pass {
    /// The pass's name in specs and `--print-after`, e.g. `fuse`.
    fn name(&self) -> &'static str;

    /// Rewrites `graph` in place.
    ///
    /// Errors: [`PassError::Failed`] naming the pass and what went wrong.
    fn run(&self, graph: &mut Graph) -> Result<(), PassError>;
}

/// Every pass name, in the order `--help` lists them:
/// - `fuse`: all rewrite rules at once (horizontal merges, norm+matmul, gated MLP, residual add,
///   q/k norm+rope), then cost-based extraction;
/// - `fuse-horizontal`: q/k/v and gate/up matmul merges, and the packing of their bias adds;
/// - `fuse-norm-matmul`: `rms_norm` into the following matmul (or `fused_matmul_add`) only;
/// - `fuse-mlp`: the gated MLP tail only (needs the gate/up merge already done);
/// - `fuse-residual`: matmul (or `fused_rms_norm_matmul`) + residual or bias add only;
/// - `fuse-qk-norm-rope`: q/k norm + rope only;
/// - `dce`: dead-code elimination.
pub fn pass_names() -> &'static [&'static str] {
    &[
        "fuse",
        "fuse-horizontal",
        "fuse-norm-matmul",
        "fuse-mlp",
        "fuse-residual",
        "fuse-qk-norm-rope",
        "dce",
    ]
}

/// The passes `default` stands for.
const DEFAULT_PASSES: &[&str] = &["fuse", "dce"];

/// Builds the pass called `name`, `None` if there is none.
pub fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "fuse" => Box::new(FusePass::new("fuse", rules::all_rules)),
        "fuse-horizontal" => Box::new(FusePass::new("fuse-horizontal", rules::horizontal::rules)),
        "fuse-norm-matmul" => Box::new(FusePass::new("fuse-norm-matmul", rules::norm::rules)),
        "fuse-mlp" => Box::new(FusePass::new("fuse-mlp", rules::mlp::rules)),
        "fuse-residual" => Box::new(FusePass::new("fuse-residual", rules::residual::rules)),
        "fuse-qk-norm-rope" => Box::new(FusePass::new("fuse-qk-norm-rope", rules::qk::rules)),
        "dce" => Box::new(Dce),
        _ => return None,
    })
}

/// An ordered list of passes.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
}

impl std::fmt::Debug for PassManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassManager")
            .field("passes", &self.names())
            .finish()
    }
}

impl PassManager {
    /// A manager with no passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a pass spec: `none` (no passes), `default` (`fuse,dce`), or a comma-separated list of
    /// names from [`pass_names`], run in the order given (`fuse-horizontal,fuse-norm-matmul,dce`).
    /// Surrounding whitespace is ignored.
    ///
    /// Errors: [`PassError::UnknownPass`] for an unknown or empty name, listing the valid names.
    pub fn from_spec(spec: &str) -> Result<PassManager, PassError> {
        let names: Vec<&str> = match spec.trim() {
            "none" => Vec::new(),
            "default" => DEFAULT_PASSES.to_vec(),
            list => list.split(',').map(str::trim).collect(),
        };
        let mut pm = PassManager::new();
        for name in names {
            let pass = pass_by_name(name).ok_or_else(|| PassError::UnknownPass {
                name: name.to_string(),
                valid: pass_names().join(", "),
            })?;
            pm.passes.push(pass);
        }
        Ok(pm)
    }

    /// Appends a pass.
    pub fn push(&mut self, pass: Box<dyn Pass>) {
        self.passes.push(pass);
    }

    /// The names of the passes, in run order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass in order; see [`PassManager::run_with_hook`].
    pub fn run(&self, graph: &mut Graph) -> Result<(), PassError> {
        self.run_with_hook(graph, |_, _| {})
    }

    /// Runs every pass in order inside a `tracing` span `pass{name}`, logs its elapsed time and node
    /// counts, verifies the graph ([`braid_ir::verify()`]) and then calls `hook(pass_name, &graph)`
    /// (for `--print-after PASS`).
    ///
    /// Each pass runs on a copy, so after an error `graph` holds the last verified output.
    ///
    /// Errors: the first pass failure, or [`PassError::Verify`] naming the pass whose output the
    /// verifier rejects.
    pub fn run_with_hook(
        &self,
        graph: &mut Graph,
        mut hook: impl FnMut(&str, &Graph),
    ) -> Result<(), PassError> {
        for pass in &self.passes {
            let name = pass.name();
            let span = tracing::info_span!("pass", name);
            let _guard = span.enter();
            let nodes_before = graph.node_count();
            let start = Instant::now();
            let mut next = graph.clone();
            pass.run(&mut next)?;
            braid_ir::verify(&next).map_err(|source| PassError::Verify {
                pass: name.to_string(),
                source,
            })?;
            *graph = next;
            tracing::info!(
                elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
                nodes_before,
                nodes_after = graph.node_count(),
                "pass done"
            );
            hook(name, graph);
        }
        Ok(())
    }
}
