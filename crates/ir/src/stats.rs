//! Graph statistics: op counts and kernel launches per step.

use std::collections::{BTreeMap, HashMap};

use petgraph::stable_graph::NodeIndex;

use crate::graph::Graph;
use crate::op::{Op, OpKind};

/// Per-kind node counts of the nodes reachable from the results, and the launches they cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Nodes per op kind, sorted by the kind's text name.
    pub ops: BTreeMap<&'static str, usize>,
    /// Reachable nodes.
    pub nodes: usize,
    /// Nodes that cost a kernel launch on a device ([`Op::launches_kernel`], weight-only subgraphs
    /// excluded since they are folded at load time).
    pub launches: usize,
}

impl GraphStats {
    /// The `--stats` text: `<op> <count>` per kind, sorted by name, then `nodes <n>` and
    /// `launches <n>`, one per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (op, n) in &self.ops {
            s.push_str(&format!("{op} {n}\n"));
        }
        s.push_str(&format!(
            "nodes {}\nlaunches {}\n",
            self.nodes, self.launches
        ));
        s
    }
}

/// Whether every path into `n` starts at a `weight` (so `n` can be computed once at load time).
/// Leaves other than weights (inputs, KV caches) are not weight-only.
pub fn weight_only_nodes(g: &Graph) -> HashMap<NodeIndex, bool> {
    let mut memo = HashMap::new();
    for n in g.topo_order() {
        let node = g.node(n).expect("topo_order yields live nodes");
        let w = match &node.op {
            Op::Weight { .. } => true,
            op if op.kind().is_leaf() => false,
            _ => g
                .inputs(n)
                .iter()
                .all(|v| memo.get(&v.node).copied().unwrap_or(false)),
        };
        memo.insert(n, w);
    }
    memo
}

/// Counts the reachable nodes of `g` by kind, and the kernel launches of one execution.
pub fn stats(g: &Graph) -> GraphStats {
    let weight_only = weight_only_nodes(g);
    let mut st = GraphStats::default();
    for n in g.topo_order() {
        let node = g.node(n).expect("topo_order yields live nodes");
        *st.ops.entry(node.op.name()).or_default() += 1;
        st.nodes += 1;
        let folded = weight_only.get(&n).copied().unwrap_or(false);
        if !folded && node.op.launches_kernel(&g.input_types(n)) {
            st.launches += 1;
        }
    }
    st
}

/// Kernel-launching nodes of `g` by kind (a subset of [`stats`]), e.g. for per-layer counts.
pub fn launching_kinds(g: &Graph) -> BTreeMap<OpKind, usize> {
    let weight_only = weight_only_nodes(g);
    let mut m = BTreeMap::new();
    for n in g.topo_order() {
        let node = g.node(n).expect("topo_order yields live nodes");
        if !weight_only.get(&n).copied().unwrap_or(false)
            && node.op.launches_kernel(&g.input_types(n))
        {
            *m.entry(node.op.kind()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, TensorType, Value};

    #[test]
    fn counts_ops_and_excludes_weight_only_concat_and_views() {
        let mut g = Graph::new();
        let ty = |s: &[usize]| TensorType::new(DType::BF16, s);
        let x = g
            .add1(
                Op::Input {
                    name: "x".into(),
                    ty: TensorType::new(DType::F32, [1, 4]),
                },
                &[],
            )
            .unwrap();
        let a = g
            .add1(
                Op::Weight {
                    name: "a".into(),
                    ty: ty(&[2, 4]),
                },
                &[],
            )
            .unwrap();
        let b = g
            .add1(
                Op::Weight {
                    name: "b".into(),
                    ty: ty(&[3, 4]),
                },
                &[],
            )
            .unwrap();
        let w = g.add1(Op::Concat { axis: 0 }, &[a, b]).unwrap();
        let y = g.add1(Op::MatMul, &[x, w]).unwrap();
        let parts = g
            .add(
                Op::Split {
                    axis: 1,
                    sizes: vec![2, 3],
                },
                &[y],
            )
            .unwrap();
        let s = g
            .add1(
                Op::Silu,
                &[Value {
                    node: parts,
                    output: 1,
                }],
            )
            .unwrap();
        g.set_results(vec![s]);
        let st = stats(&g);
        assert_eq!(st.nodes, 7);
        assert_eq!(st.ops["weight"], 2);
        assert_eq!(st.ops["concat"], 1);
        // matmul and silu launch; the weight-only concat is folded and the split is a view.
        assert_eq!(st.launches, 2);
        assert!(st.to_text().ends_with("nodes 7\nlaunches 2\n"));
    }
}
