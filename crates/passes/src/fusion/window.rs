//! Windows: a deep graph cut into consecutive pieces that are fused one at a time, so the e-graph,
//! the rule search and the extraction's local search each see a bounded piece and fusion time grows
//! linearly with depth.
//!
//! A window ends, once it holds at least [`FusionLimits::window_nodes`] non-leaf nodes, right after
//! a *clean cut*: a node whose single value is the only non-leaf value later nodes read from this
//! window or earlier ones, and which at least two nodes read. In a decoder that is the residual
//! stream between two blocks (read by the next block's norm and by its residual add). Leaves
//! (`input`, `weight`, `kv_cache`) do not count: each window gets its own copy of those it reads.
//! No rewrite rule matches across such a cut (the cut value is only ever bound to a pattern
//! variable), so every window is fused exactly as the whole graph would be, and the cost of the
//! extraction, a sum over the nodes chosen, splits into independent sums; `tests/scale.rs` checks
//! that windowed and whole-graph fusion print the same graph.
//!
//! A graph without clean cuts (hand-written IR) is cut where the fewest values cross once a window
//! reaches [`MAX_WINDOW_FACTOR`] times the target, or [`MIN_FORCED_CUT`] nodes if that is more;
//! the values crossing such a cut become inputs of the windows that read them. That keeps every
//! window bounded; fusions spanning such a cut are then not found.
//!
//! [`FusionLimits::window_nodes`]: super::FusionLimits::window_nodes

use std::collections::{HashMap, HashSet};

use braid_ir::{Graph, Op, Value};
use petgraph::stable_graph::NodeIndex;

/// A window without a clean cut is cut anyway at this many times the target size...
pub const MAX_WINDOW_FACTOR: usize = 4;
/// ...or at this many non-leaf nodes if that is more.
pub const MIN_FORCED_CUT: usize = 1024;

/// The reachable nodes in topological order, what each value's last reader is, and the windows.
pub(super) struct Plan {
    order: Vec<NodeIndex>,
    /// Position of each reachable node in `order`.
    pos: HashMap<NodeIndex, usize>,
    /// For each non-leaf value: the position of its last reader (`usize::MAX` for a graph result).
    last_use: HashMap<Value, usize>,
    /// Windows as `[start, end)` ranges of `order`.
    pub windows: Vec<(usize, usize)>,
    /// Prefix of the names given to window inputs (no leaf of the graph starts with it).
    import_prefix: String,
}

fn is_leaf(g: &Graph, n: NodeIndex) -> bool {
    g.node(n).is_some_and(|node| node.op.kind().is_leaf())
}

impl Plan {
    /// Cuts `g` into windows of at least `target` non-leaf nodes (see the module docs).
    pub fn new(g: &Graph, target: usize) -> Plan {
        let order = g.topo_order();
        let pos: HashMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let n = order.len();
        let mut last_use: HashMap<Value, usize> = HashMap::new();
        let mut uses: HashMap<Value, usize> = HashMap::new();
        for (i, &node) in order.iter().enumerate() {
            for v in g.inputs(node) {
                if pos.contains_key(&v.node) && !is_leaf(g, v.node) {
                    let last = last_use.entry(v).or_insert(i);
                    *last = (*last).max(i);
                    *uses.entry(v).or_default() += 1;
                }
            }
        }
        for r in g.results() {
            if !is_leaf(g, r.node) {
                last_use.insert(*r, usize::MAX);
                *uses.entry(*r).or_default() += 1;
            }
        }
        // live[i]: non-leaf values defined at or before i and read after i.
        let mut delta = vec![0i64; n + 1];
        for (v, &last) in &last_use {
            let Some(&def) = pos.get(&v.node) else {
                continue;
            };
            if last > def {
                delta[def] += 1;
                delta[last.min(n)] -= 1;
            }
        }
        let mut live = Vec::with_capacity(n);
        let mut acc = 0i64;
        for d in &delta[..n] {
            acc += d;
            live.push(acc);
        }
        let clean = |i: usize| -> bool {
            let node = order[i];
            let single = g.node(node).is_some_and(|nd| nd.outputs.len() == 1);
            single
                && !is_leaf(g, node)
                && live[i] == 1
                && uses.get(&Value::of(node)).copied().unwrap_or(0) >= 2
        };
        let target = target.max(1);
        let max = target.saturating_mul(MAX_WINDOW_FACTOR).max(MIN_FORCED_CUT);
        let mut windows = Vec::new();
        let (mut start, mut count) = (0usize, 0usize);
        // The position with the fewest live values since the window reached `target`.
        let mut fallback: Option<usize> = None;
        let mut i = 0;
        while i < n {
            if !is_leaf(g, order[i]) {
                count += 1;
            }
            if count >= target && i + 1 < n {
                if clean(i) {
                    windows.push((start, i + 1));
                    (start, count, fallback) = (i + 1, 0, None);
                } else {
                    if !is_leaf(g, order[i]) && fallback.is_none_or(|f| live[i] < live[f]) {
                        fallback = Some(i);
                    }
                    if count >= max {
                        let cut = fallback.unwrap_or(i);
                        windows.push((start, cut + 1));
                        start = cut + 1;
                        count = (start..=i).filter(|&k| !is_leaf(g, order[k])).count();
                        fallback = None;
                    }
                }
            }
            i += 1;
        }
        if start < n || windows.is_empty() {
            windows.push((start, n));
        }
        let names: HashSet<&str> = order
            .iter()
            .filter_map(|&k| g.node(k).and_then(|nd| nd.op.leaf_name()))
            .collect();
        let mut import_prefix = String::from("braid.window.input.");
        while names.iter().any(|s| s.starts_with(&import_prefix)) {
            import_prefix.insert(0, '_');
        }
        Plan {
            order,
            pos,
            last_use,
            windows,
            import_prefix,
        }
    }

    /// Window `w` of `g` as a graph of its own: its nodes, copies of the leaves they read, an
    /// `input` for every value of an earlier window they read, and as results the values that
    /// later windows read or that are graph results (in definition order). Returns the graph and
    /// the original values of its results and of its inputs (by input name).
    pub fn subgraph(&self, g: &Graph, w: usize) -> Result<Window, String> {
        let (start, end) = self.windows[w];
        let mut sub = Graph::new();
        let mut map: HashMap<Value, Value> = HashMap::new();
        let mut leaves: HashMap<NodeIndex, Value> = HashMap::new();
        let mut imports: HashMap<String, Value> = HashMap::new();
        let mut results = Vec::new();
        for i in start..end {
            let n = self.order[i];
            let node = g
                .node(n)
                .ok_or_else(|| format!("topo order names missing node {}", n.index()))?;
            if node.op.kind().is_leaf() {
                continue;
            }
            let mut inputs = Vec::new();
            for v in g.inputs(n) {
                let mapped = if is_leaf(g, v.node) {
                    match leaves.get(&v.node) {
                        Some(&l) => l,
                        None => {
                            let leaf = g.node(v.node).ok_or("a leaf disappeared")?;
                            let l = Value::of(sub.add_unchecked(
                                leaf.op.clone(),
                                &[],
                                leaf.outputs.clone(),
                            ));
                            leaves.insert(v.node, l);
                            l
                        }
                    }
                } else if let Some(&m) = map.get(&v) {
                    m
                } else if self.pos.get(&v.node).is_some_and(|&p| p < start) {
                    let ty = g.value_type(v).map_err(|e| e.to_string())?.clone();
                    let name = format!("{}{}.{}", self.import_prefix, v.node.index(), v.output);
                    let l = Value::of(sub.add_unchecked(
                        Op::Input {
                            name: name.clone(),
                            ty: ty.clone(),
                        },
                        &[],
                        vec![ty],
                    ));
                    imports.insert(name, v);
                    map.insert(v, l);
                    l
                } else {
                    return Err(format!(
                        "node {} reads a value of node {} defined after it (is the graph cyclic?)",
                        n.index(),
                        v.node.index()
                    ));
                };
                inputs.push(mapped);
            }
            let m = sub.add_unchecked(node.op.clone(), &inputs, node.outputs.clone());
            for o in 0..node.outputs.len() as u32 {
                let v = Value { node: n, output: o };
                map.insert(v, Value { node: m, output: o });
                if self.last_use.get(&v).is_some_and(|&last| last >= end) {
                    results.push(v);
                }
            }
        }
        sub.set_results(results.iter().map(|v| map[v]).collect());
        Ok(Window {
            graph: sub,
            results,
            imports,
        })
    }
}

/// One window as a graph of its own (see [`Plan::subgraph`]).
pub(super) struct Window {
    pub graph: Graph,
    /// The original value of each result of `graph`, in order.
    pub results: Vec<Value>,
    /// The original value each window input stands for, by input name.
    pub imports: HashMap<String, Value>,
}

/// Assembles fused windows into one graph: window inputs become the values earlier windows
/// produced, leaves are shared by name and type, and structurally identical nodes are merged (as the
/// e-graph of the whole graph would merge them).
pub(super) struct Stitch {
    out: Graph,
    /// Original value -> value in `out`, for every window result.
    produced: HashMap<Value, Value>,
    leaves: HashMap<String, NodeIndex>,
    nodes: HashMap<(String, Vec<Value>), NodeIndex>,
}

impl Stitch {
    pub fn new() -> Stitch {
        Stitch {
            out: Graph::new(),
            produced: HashMap::new(),
            leaves: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    fn leaf(&mut self, op: &Op, outputs: &[braid_ir::TensorType]) -> NodeIndex {
        let key = format!("{op:?}");
        *self
            .leaves
            .entry(key)
            .or_insert_with(|| self.out.add_unchecked(op.clone(), &[], outputs.to_vec()))
    }

    /// Adds the fused graph of window `w` (whose results stand for `w.results`).
    pub fn add(&mut self, w: &Window, fused: &Graph) -> Result<(), String> {
        let mut map: HashMap<Value, Value> = HashMap::new();
        for n in fused.topo_order() {
            let node = fused
                .node(n)
                .ok_or_else(|| format!("fused window lost node {}", n.index()))?;
            let m = match &node.op {
                Op::Input { name, .. } if w.imports.contains_key(name) => {
                    let orig = w.imports[name];
                    let v = *self.produced.get(&orig).ok_or_else(|| {
                        format!("window input {name} read before its window was fused")
                    })?;
                    map.insert(Value::of(n), v);
                    continue;
                }
                op if op.kind().is_leaf() => self.leaf(op, &node.outputs),
                op => {
                    let inputs = fused
                        .inputs(n)
                        .iter()
                        .map(|v| {
                            map.get(v).copied().ok_or_else(|| {
                                format!("fused window reads node {} early", v.node.index())
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let key = (format!("{op:?}"), inputs.clone());
                    match self.nodes.get(&key) {
                        Some(&m) => m,
                        None => {
                            let m =
                                self.out
                                    .add_unchecked(op.clone(), &inputs, node.outputs.clone());
                            self.nodes.insert(key, m);
                            m
                        }
                    }
                }
            };
            for o in 0..node.outputs.len() as u32 {
                map.insert(Value { node: n, output: o }, Value { node: m, output: o });
            }
        }
        for (r, orig) in fused.results().iter().zip(&w.results) {
            let v = *map
                .get(r)
                .ok_or("a fused window result is not in the window")?;
            self.produced.insert(*orig, v);
        }
        Ok(())
    }

    /// The assembled graph with the results of `original`; nodes no result reaches are dropped.
    pub fn finish(mut self, original: &Graph) -> Result<Graph, String> {
        let mut results = Vec::new();
        for r in original.results() {
            let v = match original.node(r.node) {
                Some(node) if node.op.kind().is_leaf() => {
                    Value::of(self.leaf(&node.op, &node.outputs))
                }
                _ => *self
                    .produced
                    .get(r)
                    .ok_or_else(|| format!("result of node {} was not produced", r.node.index()))?,
            };
            results.push(v);
        }
        self.out.set_results(results);
        self.out.remove_dead();
        Ok(self.out)
    }
}
