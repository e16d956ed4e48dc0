//! The op graph: nodes on a petgraph `StableDiGraph`, values as `(node, output)` pairs.
//!
//! Design: a node owns its op and its output types; an edge `a -> b` with `Edge { output, input }`
//! says "output slot `output` of `a` feeds input slot `input` of `b`". Multi-output ops (`split`,
//! `fused_qk_norm_rope`) are native: each output is a [`Value`]. The graph's results are an ordered
//! list of values (for a decode step: logits, then the next token). Node indices are stable under
//! removal, so passes can edit in place; the printer renumbers in a canonical order.

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::error::IrError;
use crate::op::Op;
use crate::types::TensorType;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub output: u32,
}

impl Value {
    /// The single (first) output of `node`.
    pub fn of(node: NodeIndex) -> Value {
        Value { node, output: 0 }
    }
}

/// A node: an op and the types of its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub outputs: Vec<TensorType>,
}

/// An edge from output slot `output` of its source to input slot `input` of its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub output: u32,
    pub input: u32,
}

/// A decode-step graph: nodes, edges and the ordered result values.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Edge>,
    results: Vec<Value>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node with the given inputs, inferring its output types.
    ///
    /// Errors: [`IrError::Type`] when the inputs do not fit the op (the message names the op and what
    /// was expected), [`IrError::BadValue`] when an input names a missing node or output.
    pub fn add(&mut self, op: Op, inputs: &[Value]) -> Result<NodeIndex, IrError> {
        let types = inputs
            .iter()
            .map(|v| self.value_type(*v))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = op
            .infer(&types)
            .map_err(|msg| IrError::Type { node: None, msg })?;
        Ok(self.add_unchecked(op, inputs, outputs))
    }

    /// Adds a node with declared output types and no checks (the parser and the verifier's tests use
    /// it; everything else should use [`Graph::add`]). Inputs must name existing nodes.
    pub fn add_unchecked(
        &mut self,
        op: Op,
        inputs: &[Value],
        outputs: Vec<TensorType>,
    ) -> NodeIndex {
        let n = self.g.add_node(Node { op, outputs });
        for (slot, v) in inputs.iter().enumerate() {
            self.g.add_edge(
                v.node,
                n,
                Edge {
                    output: v.output,
                    input: slot as u32,
                },
            );
        }
        n
    }

    /// Adds a single-output node and returns its value. See [`Graph::add`].
    pub fn add1(&mut self, op: Op, inputs: &[Value]) -> Result<Value, IrError> {
        self.add(op, inputs).map(Value::of)
    }

    /// The node at `n`, if it exists.
    pub fn node(&self, n: NodeIndex) -> Option<&Node> {
        self.g.node_weight(n)
    }

    /// The node at `n`, mutably.
    pub fn node_mut(&mut self, n: NodeIndex) -> Option<&mut Node> {
        self.g.node_weight_mut(n)
    }

    /// The type of a value. Errors when the node or output does not exist.
    pub fn value_type(&self, v: Value) -> Result<&TensorType, IrError> {
        self.g
            .node_weight(v.node)
            .and_then(|n| n.outputs.get(v.output as usize))
            .ok_or(IrError::BadValue {
                node: v.node.index(),
                output: v.output,
            })
    }

    /// The inputs of `n`, ordered by input slot.
    pub fn inputs(&self, n: NodeIndex) -> Vec<Value> {
        let mut ins: Vec<(u32, Value)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                (
                    e.weight().input,
                    Value {
                        node: e.source(),
                        output: e.weight().output,
                    },
                )
            })
            .collect();
        ins.sort_by_key(|(slot, _)| *slot);
        ins.into_iter().map(|(_, v)| v).collect()
    }

    /// The input types of `n`, ordered by input slot.
    pub fn input_types(&self, n: NodeIndex) -> Vec<&TensorType> {
        self.inputs(n)
            .into_iter()
            .filter_map(|v| self.value_type(v).ok())
            .collect()
    }

    /// The uses of `v`: `(user node, input slot)`, ordered by user index then slot. A graph result is
    /// not a use; see [`Graph::results`].
    pub fn uses(&self, v: Value) -> Vec<(NodeIndex, u32)> {
        let mut uses: Vec<(NodeIndex, u32)> = self
            .g
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().output == v.output)
            .map(|e| (e.target(), e.weight().input))
            .collect();
        uses.sort();
        uses
    }

    /// Number of uses of `v`, counting its appearances among the graph results.
    pub fn use_count(&self, v: Value) -> usize {
        self.uses(v).len() + self.results.iter().filter(|r| **r == v).count()
    }

    /// The graph results, in order.
    pub fn results(&self) -> &[Value] {
        &self.results
    }

    /// Sets the graph results.
    pub fn set_results(&mut self, results: Vec<Value>) {
        self.results = results;
    }

    /// All node indices, in index order.
    pub fn node_indices(&self) -> Vec<NodeIndex> {
        self.g.node_indices().collect()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Points every use of `old` (and every result equal to it) at `new`.
    pub fn replace_all_uses(&mut self, old: Value, new: Value) {
        let edges: Vec<_> = self
            .g
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().output == old.output)
            .map(|e| (e.id(), e.target(), e.weight().input))
            .collect();
        for (id, target, input) in edges {
            self.g.remove_edge(id);
            self.g.add_edge(
                new.node,
                target,
                Edge {
                    output: new.output,
                    input,
                },
            );
        }
        for r in &mut self.results {
            if *r == old {
                *r = new;
            }
        }
    }

    /// Removes a node and its edges.
    pub fn remove(&mut self, n: NodeIndex) -> Option<Node> {
        self.g.remove_node(n)
    }

    /// Removes every node from which no result is reachable (dead code). Returns how many were removed.
    pub fn remove_dead(&mut self) -> usize {
        let live: std::collections::HashSet<NodeIndex> = self.topo_order().into_iter().collect();
        let dead: Vec<NodeIndex> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for n in &dead {
            self.g.remove_node(*n);
        }
        dead.len()
    }

    /// The nodes reachable from the results, in canonical topological order: a post-order walk from the
    /// results (in order), visiting each node's inputs by slot. The order depends only on the graph's
    /// structure, never on node indices, so two equal graphs built differently print the same.
    /// Nodes no result reaches are left out; [`Graph::is_acyclic`] tells whether the walk is sound.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        let mut order = Vec::with_capacity(self.g.node_count());
        let mut seen = std::collections::HashSet::new();
        for r in &self.results {
            // Iterative post-order DFS: (node, next input slot to visit).
            let mut stack = vec![(r.node, 0usize)];
            if !seen.insert(r.node) {
                continue;
            }
            while let Some((n, i)) = stack.pop() {
                let ins = self.inputs(n);
                if i < ins.len() {
                    stack.push((n, i + 1));
                    let m = ins[i].node;
                    if seen.insert(m) {
                        stack.push((m, 0));
                    }
                } else {
                    order.push(n);
                }
            }
        }
        order
    }

    /// Whether the graph has no cycle.
    pub fn is_acyclic(&self) -> bool {
        !petgraph::algo::is_cyclic_directed(&self.g)
    }

    /// The underlying petgraph graph (read-only), for algorithms and DOT export.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.g
    }

    /// Finds the leaf (`input`, `weight` or `kv_cache`) with the given name.
    pub fn find_leaf(&self, name: &str) -> Option<NodeIndex> {
        self.g
            .node_indices()
            .find(|&n| self.g[n].op.leaf_name() == Some(name))
    }
}

impl Graph {
    /// The printed name of every reachable value: `@name` for weights and KV caches, `%n` for the rest,
    /// numbered in [`Graph::topo_order`] (a multi-output node takes consecutive numbers). The printer,
    /// the verifier and the interpreter's errors all use these names.
    pub fn value_names(&self) -> std::collections::HashMap<Value, String> {
        let mut names = std::collections::HashMap::new();
        let mut next = 0usize;
        for n in self.topo_order() {
            let node = &self.g[n];
            match &node.op {
                Op::Weight { name, .. } | Op::KvCache { name, .. } => {
                    names.insert(Value::of(n), format!("@{name}"));
                }
                _ => {
                    for o in 0..node.outputs.len() {
                        names.insert(
                            Value {
                                node: n,
                                output: o as u32,
                            },
                            format!("%{next}"),
                        );
                        next += 1;
                    }
                }
            }
        }
        names
    }
}
