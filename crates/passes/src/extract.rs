//! E-graph → graph: cost-based choice of one e-node per class, then a rebuild with `Graph::add`.
//!
//! Tree costs (egg's `Extractor`) count a shared input once per consumer, so they favour fusions that
//! recompute shared work and can never see the gain of a horizontal merge (one bigger matmul is
//! dearer than any one of the three it replaces). Instead the cost of a *choice* (one e-node per
//! class) is the DAG cost: the sum over the classes the root reaches, each counted once. The choice
//! starts from the original graph (new classes take their cheapest tree) and improves by local
//! search until no move lowers the DAG cost:
//! - single moves: switch one reachable class to another of its e-nodes;
//! - group moves: for a class X, switch every class with an e-node reading X to that e-node at
//!   once (q, k and v to the projections of one merged split; both rope outputs to one fused node).
//!
//! Only strict improvements are taken, so with no cheaper alternative the original graph comes back
//! unchanged. A move that would make the choice cyclic is rejected.

use std::collections::HashMap;

use braid_ir::{Graph, Value};
use egg::{Id, Language};

use crate::analysis::{decode, infer_node, BraidEGraph};
use crate::cost::{op_cost, Cost};
use crate::language::{BraidLang, Decoded};

/// Upper bound on local-search rounds; each round either improves the cost or ends the search.
const MAX_ROUNDS: usize = 64;

/// One e-node as the extractor sees it.
struct NodeInfo {
    /// Its own cost, `None` when it is not a valid choice (types do not infer or disagree with
    /// its class).
    cost: Option<Cost>,
    /// Dense indices of its tensor (non-attribute) children.
    children: Vec<usize>,
}

/// A choice of one e-node per class, and what it costs.
pub struct Extraction {
    /// The extracted graph, type-checked by `Graph::add`.
    pub graph: Graph,
    /// The DAG cost of the original graph's choice.
    pub cost_before: Cost,
    /// The DAG cost of the final choice.
    pub cost_after: Cost,
    /// Local-search moves taken.
    pub moves: usize,
}

/// The extractor's view of an e-graph: classes in a dense, deterministic (id) order.
struct Extractor<'a> {
    egraph: &'a BraidEGraph,
    ids: Vec<Id>,
    dense: HashMap<Id, usize>,
    nodes: Vec<Vec<NodeInfo>>,
    root: usize,
}

/// Extracts the cheapest graph found from `egraph` below `root`, preferring the `originals` (the
/// e-nodes of the graph it was converted from) on ties.
///
/// Errors: a reachable class has no valid e-node, or the rebuilt graph fails `Graph::add`'s type
/// check (the message names the op).
pub fn extract(
    egraph: &BraidEGraph,
    root: Id,
    originals: &[BraidLang],
) -> Result<Extraction, String> {
    let ex = Extractor::new(egraph, root)?;
    let mut choice = ex.initial_choice(originals);
    let cost_before = ex
        .evaluate(&choice)
        .ok_or("no valid starting choice: a class the root reaches has no well-typed e-node")?;
    let (cost_after, moves) = ex.improve(&mut choice, cost_before);
    let graph = ex.build(&choice)?;
    Ok(Extraction {
        graph,
        cost_before,
        cost_after,
        moves,
    })
}

impl<'a> Extractor<'a> {
    fn new(egraph: &'a BraidEGraph, root: Id) -> Result<Self, String> {
        let mut ids: Vec<Id> = egraph
            .classes()
            .filter(|c| c.data.attr.is_none())
            .map(|c| c.id)
            .collect();
        ids.sort();
        let dense: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let root = *dense
            .get(&egraph.find(root))
            .ok_or("the root class is missing from the e-graph")?;
        let nodes = ids
            .iter()
            .map(|&id| {
                let class = &egraph[id];
                class
                    .nodes
                    .iter()
                    .map(|node| NodeInfo {
                        cost: node_cost(egraph, node, &class.data.types),
                        children: node
                            .children()
                            .iter()
                            .filter_map(|c| dense.get(&egraph.find(*c)).copied())
                            .collect(),
                    })
                    .collect()
            })
            .collect();
        Ok(Extractor {
            egraph,
            ids,
            dense,
            nodes,
            root,
        })
    }

    /// The original e-nodes where a class has one, else the class's cheapest tree.
    fn initial_choice(&self, originals: &[BraidLang]) -> Vec<usize> {
        let mut choice: Vec<Option<usize>> = vec![None; self.ids.len()];
        for node in originals {
            let canon = node.clone().map_children(|c| self.egraph.find(c));
            let Some(&c) = self
                .egraph
                .lookup(canon.clone())
                .and_then(|id| self.dense.get(&id))
            else {
                continue;
            };
            if choice[c].is_none() {
                choice[c] = self.egraph[self.ids[c]]
                    .nodes
                    .iter()
                    .position(|m| *m == canon);
            }
        }
        let tree = self.tree_choice();
        choice
            .into_iter()
            .zip(tree)
            .map(|(c, t)| c.or(t).unwrap_or(0))
            .collect()
    }

    /// Bottom-up cheapest tree per class (egg's extractor fixpoint, with strict improvement, which
    /// keeps the choice acyclic).
    fn tree_choice(&self) -> Vec<Option<usize>> {
        let n = self.ids.len();
        let mut best: Vec<Option<(f64, usize)>> = vec![None; n];
        for _ in 0..=n {
            let mut changed = false;
            for c in 0..n {
                for (i, info) in self.nodes[c].iter().enumerate() {
                    let Some(own) = info.cost else { continue };
                    let total = info
                        .children
                        .iter()
                        .try_fold(own.time_us(), |acc, &k| best[k].map(|(t, _)| acc + t));
                    if let Some(total) = total {
                        if best[c].is_none_or(|(t, _)| total < t) {
                            best[c] = Some((total, i));
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        best.into_iter().map(|b| b.map(|(_, i)| i)).collect()
    }

    /// The DAG cost of `choice` and the classes it reaches (post-order), or `None` when the choice
    /// picks an invalid e-node or is cyclic.
    fn walk(&self, choice: &[usize]) -> Option<(Cost, Vec<usize>)> {
        // 0 = unseen, 1 = on the stack, 2 = done.
        let mut state = vec![0u8; self.ids.len()];
        let mut order = Vec::new();
        let mut total = Cost::ZERO;
        let mut stack = vec![(self.root, 0usize)];
        state[self.root] = 1;
        while let Some((c, next)) = stack.pop() {
            let info = &self.nodes[c][choice[c]];
            if let Some(&k) = info.children.get(next) {
                stack.push((c, next + 1));
                match state[k] {
                    0 => {
                        state[k] = 1;
                        stack.push((k, 0));
                    }
                    1 => return None,
                    _ => {}
                }
            } else {
                total += info.cost?;
                state[c] = 2;
                order.push(c);
            }
        }
        Some((total, order))
    }

    fn evaluate(&self, choice: &[usize]) -> Option<Cost> {
        self.walk(choice).map(|(c, _)| c)
    }

    /// For every class X, the classes with an e-node reading X, and that e-node (the first valid).
    fn groups(&self) -> Vec<Vec<(usize, usize)>> {
        let mut readers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.ids.len()];
        for (c, nodes) in self.nodes.iter().enumerate() {
            for (i, info) in nodes.iter().enumerate() {
                if info.cost.is_none() {
                    continue;
                }
                for &k in &info.children {
                    if !readers[k].iter().any(|&(p, _)| p == c) {
                        readers[k].push((c, i));
                    }
                }
            }
        }
        readers
    }

    /// Local search from `choice` (see the module docs). Returns the final cost and moves taken.
    fn improve(&self, choice: &mut [usize], start: Cost) -> (Cost, usize) {
        let better = |a: Cost, b: Cost| a.time_us() < b.time_us();
        let groups = self.groups();
        let mut best = start;
        let mut moves = 0;
        for _ in 0..MAX_ROUNDS {
            let mut improved = false;
            let reached = self.walk(choice).map(|(_, r)| r).unwrap_or_default();
            for c in reached {
                let current = choice[c];
                let mut pick = current;
                for i in 0..self.nodes[c].len() {
                    if i == current || self.nodes[c][i].cost.is_none() {
                        continue;
                    }
                    choice[c] = i;
                    if let Some(cost) = self.evaluate(choice) {
                        if better(cost, best) {
                            best = cost;
                            pick = i;
                        }
                    }
                }
                choice[c] = pick;
                if pick != current {
                    improved = true;
                    moves += 1;
                }
            }
            for group in &groups {
                let distinct = group.iter().filter(|&&(c, i)| choice[c] != i).count();
                if group.len() < 2 || distinct == 0 {
                    continue;
                }
                let saved: Vec<(usize, usize)> =
                    group.iter().map(|&(c, _)| (c, choice[c])).collect();
                for &(c, i) in group {
                    choice[c] = i;
                }
                match self.evaluate(choice) {
                    Some(cost) if better(cost, best) => {
                        best = cost;
                        improved = true;
                        moves += 1;
                    }
                    _ => {
                        for &(c, i) in &saved {
                            choice[c] = i;
                        }
                    }
                }
            }
            if !improved {
                break;
            }
        }
        (best, moves)
    }

    /// Rebuilds the chosen e-nodes as a graph: one IR node per chosen class (memoized), `get`
    /// projections resolved to the tuple node's outputs, results from the root.
    fn build(&self, choice: &[usize]) -> Result<Graph, String> {
        let mut g = Graph::new();
        let mut built: Vec<Option<Vec<Value>>> = vec![None; self.ids.len()];
        let mut stack = vec![(self.root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if built[c].is_some() {
                continue;
            }
            let info = &self.nodes[c][choice[c]];
            if !expanded {
                stack.push((c, true));
                stack.extend(
                    info.children
                        .iter()
                        .rev()
                        .filter(|&&k| built[k].is_none())
                        .map(|&k| (k, false)),
                );
                continue;
            }
            let node = &self.egraph[self.ids[c]].nodes[choice[c]];
            let single = |id: Id| -> Result<Value, String> {
                let k = self.dense[&self.egraph.find(id)];
                match built[k].as_deref() {
                    Some([v]) => Ok(*v),
                    Some(vs) => Err(format!(
                        "class {id} has {} outputs where one tensor is expected",
                        vs.len()
                    )),
                    None => Err(format!("class {id} used before it is built")),
                }
            };
            let values = match decode(self.egraph, node)? {
                Decoded::Op(op, inputs) => {
                    let inputs = inputs
                        .into_iter()
                        .map(single)
                        .collect::<Result<Vec<_>, _>>()?;
                    let name = op.name();
                    let n = g
                        .add(op, &inputs)
                        .map_err(|e| format!("rebuilding {name}: {e}"))?;
                    let outputs = g.node(n).map_or(0, |node| node.outputs.len());
                    (0..outputs as u32)
                        .map(|output| Value { node: n, output })
                        .collect()
                }
                Decoded::Get(index, tuple) => {
                    let k = self.dense[&self.egraph.find(tuple)];
                    let v = built[k]
                        .as_ref()
                        .and_then(|vs| vs.get(index))
                        .ok_or_else(|| {
                            format!("get {index} of class {tuple}, which has no such output")
                        })?;
                    vec![*v]
                }
                Decoded::Root(results) => {
                    let results = results
                        .into_iter()
                        .map(single)
                        .collect::<Result<Vec<_>, _>>()?;
                    g.set_results(results);
                    Vec::new()
                }
                Decoded::Attr(s) => return Err(format!("attribute `{s}` chosen as a tensor")),
            };
            built[c] = Some(values);
        }
        Ok(g)
    }
}

/// The own cost of one e-node, `None` when it is not a valid choice for a class of type `types`.
fn node_cost(
    egraph: &BraidEGraph,
    node: &BraidLang,
    types: &[braid_ir::TensorType],
) -> Option<Cost> {
    if infer_node(egraph, node).ok()? != types {
        return None;
    }
    match decode(egraph, node).ok()? {
        Decoded::Op(op, inputs) => {
            let input_types: Vec<&braid_ir::TensorType> = inputs
                .iter()
                .map(|&id| egraph[id].data.tensor_type())
                .collect::<Option<_>>()?;
            let weight_only = matches!(node, BraidLang::Concat(_))
                && inputs.iter().all(|&id| egraph[id].data.weight_only);
            Some(op_cost(&op, &input_types, types, weight_only))
        }
        Decoded::Get(..) | Decoded::Root(_) => Some(Cost::ZERO),
        Decoded::Attr(_) => None,
    }
}
