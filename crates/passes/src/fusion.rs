//! The fusion pass: load the graph into an e-graph, saturate it with rewrite rules, extract the
//! cheapest equivalent graph under the cost model ([`crate::cost`]).

use std::time::Duration;

use braid_ir::Graph;
use egg::{Runner, SimpleScheduler};

use crate::analysis::BraidRewrite;
use crate::convert::graph_to_egraph;
use crate::cost::Cost;
use crate::error::PassError;
use crate::extract::extract;
use crate::manager::Pass;

/// Bounds on equality saturation. The rules only add fused alternatives (no rule grows terms), so a
/// decode-step graph saturates in a few iterations; the limits guard against a rule bug.
#[derive(Clone, Debug)]
pub struct FusionLimits {
    /// Maximum rewrite iterations.
    pub iter_limit: usize,
    /// Maximum e-nodes.
    pub node_limit: usize,
    /// Maximum wall time.
    pub time_limit: Duration,
}

impl Default for FusionLimits {
    fn default() -> Self {
        FusionLimits {
            iter_limit: 32,
            node_limit: 1_000_000,
            time_limit: Duration::from_secs(60),
        }
    }
}

/// What one fusion run did.
#[derive(Clone, Debug)]
pub struct FusionReport {
    /// Rewrite iterations run.
    pub iterations: usize,
    /// E-nodes in the saturated e-graph.
    pub egraph_nodes: usize,
    /// E-classes in the saturated e-graph.
    pub egraph_classes: usize,
    /// Why saturation stopped (`Saturated` unless a limit was hit).
    pub stop_reason: String,
    /// Estimated cost of the input graph.
    pub cost_before: Cost,
    /// Estimated cost of the extracted graph.
    pub cost_after: Cost,
    /// Extraction moves taken away from the input graph.
    pub moves: usize,
}

/// Rewrites `graph` with `rules` and returns the cheapest equivalent graph found.
///
/// Nodes no result reaches are dropped; structurally identical nodes are merged.
///
/// Errors: the graph's stored types disagree with inference (it was not verified), or the extracted
/// graph fails to type-check (a rule bug); the message names the op.
pub fn fuse(
    graph: &Graph,
    rules: &[BraidRewrite],
    limits: &FusionLimits,
) -> Result<(Graph, FusionReport), String> {
    let converted = graph_to_egraph(graph)?;
    let runner = Runner::default()
        .with_egraph(converted.egraph)
        .with_iter_limit(limits.iter_limit)
        .with_node_limit(limits.node_limit)
        .with_time_limit(limits.time_limit)
        .with_scheduler(SimpleScheduler)
        .run(rules);
    let stop_reason = runner
        .stop_reason
        .as_ref()
        .map_or_else(|| "none".to_string(), |r| format!("{r:?}"));
    if !matches!(runner.stop_reason, Some(egg::StopReason::Saturated)) {
        tracing::warn!(
            stop_reason,
            "e-graph did not saturate; extracting from what it holds"
        );
    }
    let egraph = &runner.egraph;
    let ex = extract(egraph, converted.root, &converted.originals)?;
    let report = FusionReport {
        iterations: runner.iterations.len(),
        egraph_nodes: egraph.total_number_of_nodes(),
        egraph_classes: egraph.number_of_classes(),
        stop_reason,
        cost_before: ex.cost_before,
        cost_after: ex.cost_after,
        moves: ex.moves,
    };
    Ok((ex.graph, report))
}

/// A named fusion pass: [`fuse`] with one set of rules.
#[derive(Clone, Debug)]
pub struct FusePass {
    name: &'static str,
    rules: fn() -> Vec<BraidRewrite>,
    limits: FusionLimits,
}

impl FusePass {
    /// A pass called `name` that saturates with the rules `rules()` returns.
    pub fn new(name: &'static str, rules: fn() -> Vec<BraidRewrite>) -> Self {
        FusePass {
            name,
            rules,
            limits: FusionLimits::default(),
        }
    }
}

impl Pass for FusePass {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&self, graph: &mut Graph) -> Result<(), PassError> {
        let rules = (self.rules)();
        let (fused, report) =
            fuse(graph, &rules, &self.limits).map_err(|msg| PassError::Failed {
                pass: self.name.to_string(),
                msg,
            })?;
        tracing::debug!(
            iterations = report.iterations,
            egraph_nodes = report.egraph_nodes,
            egraph_classes = report.egraph_classes,
            stop_reason = %report.stop_reason,
            launches_before = report.cost_before.launches,
            launches_after = report.cost_after.launches,
            est_us_before = report.cost_before.time_us(),
            est_us_after = report.cost_after.time_us(),
            moves = report.moves,
            "fusion"
        );
        *graph = fused;
        Ok(())
    }
}
