//! The fusion pass: load the graph into an e-graph, saturate it with rewrite rules, extract the
//! cheapest equivalent graph under the cost model ([`crate::cost`]).
//!
//! A deep graph is fused window by window ([`window`]): each window of a few layers gets its own
//! e-graph, so time and memory grow linearly with depth, and the result is the one fusing the whole
//! graph at once gives.

mod window;

use std::time::{Duration, Instant};

use braid_ir::Graph;
use egg::{Runner, SimpleScheduler};

use crate::analysis::BraidRewrite;
use crate::convert::graph_to_egraph;
use crate::cost::{graph_cost, Cost};
use crate::error::PassError;
use crate::extract::extract;
use crate::manager::Pass;

/// Bounds on equality saturation. The rules only add fused alternatives (no rule grows terms), so a
/// decode-step graph saturates in a few iterations; the limits guard against a rule bug.
#[derive(Clone, Debug)]
pub struct FusionLimits {
    /// Maximum rewrite iterations (per window).
    pub iter_limit: usize,
    /// Maximum e-nodes (per window).
    pub node_limit: usize,
    /// Maximum wall time of the saturation of all windows together; windows left when it is spent
    /// are extracted unsaturated (a warning says so).
    pub time_limit: Duration,
    /// Non-leaf nodes a window holds at least before it may end at a clean cut (see [`window`]);
    /// `usize::MAX` fuses the whole graph at once.
    pub window_nodes: usize,
}

/// Default [`FusionLimits::window_nodes`]: about one Qwen3 layer (22 non-leaf nodes). Smaller
/// windows fuse faster (the multi-pattern search scans its whole e-graph per match); at 512
/// Qwen3-0.6B layers one window per layer took 0.5 s, five layers per window 1.4 s, and one e-graph
/// for the whole step 93 s.
pub const DEFAULT_WINDOW_NODES: usize = 24;

impl Default for FusionLimits {
    fn default() -> Self {
        FusionLimits {
            iter_limit: 32,
            node_limit: 1_000_000,
            time_limit: Duration::from_secs(60),
            window_nodes: DEFAULT_WINDOW_NODES,
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
    /// Windows the graph was fused in (1: the whole graph at once).
    pub windows: usize,
}

/// Rewrites `graph` with `rules` and returns the cheapest equivalent graph found, fusing a deep
/// graph window by window (see the module docs).
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
    let deadline = Instant::now() + limits.time_limit;
    let plan = window::Plan::new(graph, limits.window_nodes);
    if plan.windows.len() <= 1 {
        let (g, report, _) = fuse_one(graph, rules, limits, deadline)?;
        warn_unsaturated(&report.stop_reason, 1, 1);
        return Ok((g, report));
    }
    let mut stitch = window::Stitch::new();
    let mut report = FusionReport {
        iterations: 0,
        egraph_nodes: 0,
        egraph_classes: 0,
        stop_reason: "Saturated".into(),
        cost_before: graph_cost(graph),
        cost_after: Cost::ZERO,
        moves: 0,
        windows: plan.windows.len(),
    };
    let mut unsaturated = 0;
    for w in 0..plan.windows.len() {
        let win = plan.subgraph(graph, w)?;
        let (fused, r, saturated) = fuse_one(&win.graph, rules, limits, deadline)?;
        stitch.add(&win, &fused)?;
        report.iterations = report.iterations.max(r.iterations);
        report.egraph_nodes = report.egraph_nodes.max(r.egraph_nodes);
        report.egraph_classes = report.egraph_classes.max(r.egraph_classes);
        report.moves += r.moves;
        if !saturated {
            if unsaturated == 0 {
                report.stop_reason = r.stop_reason;
            }
            unsaturated += 1;
        }
    }
    warn_unsaturated(&report.stop_reason, unsaturated, plan.windows.len());
    let fused = stitch.finish(graph)?;
    report.cost_after = graph_cost(&fused);
    Ok((fused, report))
}

fn warn_unsaturated(stop_reason: &str, unsaturated: usize, windows: usize) {
    if unsaturated > 0 && stop_reason != "Saturated" {
        tracing::warn!(
            stop_reason,
            unsaturated,
            windows,
            "e-graph did not saturate; extracting from what it holds"
        );
    }
}

/// Saturates and extracts one graph (a window, or a whole small graph) within `deadline`. Returns
/// the report (with [`FusionReport::windows`] 1) and whether it saturated.
fn fuse_one(
    graph: &Graph,
    rules: &[BraidRewrite],
    limits: &FusionLimits,
    deadline: Instant,
) -> Result<(Graph, FusionReport, bool), String> {
    let converted = graph_to_egraph(graph)?;
    let runner = Runner::default()
        .with_egraph(converted.egraph)
        .with_iter_limit(limits.iter_limit)
        .with_node_limit(limits.node_limit)
        .with_time_limit(deadline.saturating_duration_since(Instant::now()))
        .with_scheduler(SimpleScheduler)
        .run(rules);
    let stop_reason = runner
        .stop_reason
        .as_ref()
        .map_or_else(|| "none".to_string(), |r| format!("{r:?}"));
    let saturated = matches!(runner.stop_reason, Some(egg::StopReason::Saturated));
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
        windows: 1,
    };
    Ok((ex.graph, report, saturated))
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
            windows = report.windows,
            "fusion"
        );
        *graph = fused;
        Ok(())
    }
}
