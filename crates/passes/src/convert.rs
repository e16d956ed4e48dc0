//! Graph → e-graph: one e-node per IR node, added in [`Graph::topo_order`] with a memo.

use std::collections::HashMap;

use braid_ir::{Graph, Value};
use egg::Id;
use petgraph::stable_graph::NodeIndex;

use crate::analysis::{BraidEGraph, TypeAnalysis};
use crate::language::{usize_attr, BraidLang};

/// A graph loaded into an e-graph.
pub struct Converted {
    /// The e-graph, clean (rebuilt), with no rules applied.
    pub egraph: BraidEGraph,
    /// The class of the synthetic `root` e-node whose children are the graph results, in order.
    pub root: Id,
    /// The e-nodes of the original graph (as added), used to prefer the original form on cost ties.
    pub originals: Vec<BraidLang>,
}

/// Loads `graph` into a fresh e-graph. Nodes no result reaches are dropped (they compute nothing
/// observable); structurally identical nodes share one class (egg's hash-consing).
///
/// Errors: when an inferred class type differs from a node's stored output types (the graph was not
/// verified), naming the node's printed value and op.
pub fn graph_to_egraph(graph: &Graph) -> Result<Converted, String> {
    let mut egraph = BraidEGraph::new(TypeAnalysis);
    let mut memo: HashMap<NodeIndex, Id> = HashMap::new();
    let mut originals = Vec::new();
    let names = graph.value_names();
    for n in graph.topo_order() {
        let node = graph
            .node(n)
            .ok_or_else(|| format!("topo order names missing node {}", n.index()))?;
        let inputs = graph
            .inputs(n)
            .into_iter()
            .map(|v| value_class(&mut egraph, &mut originals, &memo, graph, v))
            .collect::<Result<Vec<_>, _>>()?;
        let enode = BraidLang::from_op(&node.op, &inputs, |s| egraph.add(BraidLang::Attr(s)));
        let id = egraph.add(enode.clone());
        let data = &egraph[id].data;
        if data.types != node.outputs {
            let label = names
                .get(&Value::of(n))
                .cloned()
                .unwrap_or_else(|| format!("node {}", n.index()));
            return Err(format!(
                "{label} = {}: stored types {:?} but the e-graph infers {:?}{}",
                node.op.name(),
                node.outputs,
                data.types,
                data.error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        originals.push(enode);
        memo.insert(n, id);
    }
    let results = graph
        .results()
        .iter()
        .map(|v| value_class(&mut egraph, &mut originals, &memo, graph, *v))
        .collect::<Result<Vec<_>, _>>()?;
    let root_node = BraidLang::Root(results.into_boxed_slice());
    originals.push(root_node.clone());
    let root = egraph.add(root_node);
    egraph.rebuild();
    Ok(Converted {
        egraph,
        root,
        originals,
    })
}

/// The class of one value: the node's class, or a `get` projection of it for a tuple op (recorded
/// in `originals` too).
fn value_class(
    egraph: &mut BraidEGraph,
    originals: &mut Vec<BraidLang>,
    memo: &HashMap<NodeIndex, Id>,
    graph: &Graph,
    v: Value,
) -> Result<Id, String> {
    let id = *memo
        .get(&v.node)
        .ok_or_else(|| format!("value of node {} used before it is defined", v.node.index()))?;
    let tuple = graph.node(v.node).is_some_and(|n| {
        matches!(
            n.op.kind(),
            braid_ir::OpKind::Split | braid_ir::OpKind::FusedQkNormRope
        )
    });
    if tuple {
        let index = egraph.add(BraidLang::Attr(usize_attr(v.output as usize)));
        let get = BraidLang::Get([index, id]);
        originals.push(get.clone());
        Ok(egraph.add(get))
    } else if v.output == 0 {
        Ok(id)
    } else {
        Err(format!(
            "output {} of single-output node {} is used",
            v.output,
            v.node.index()
        ))
    }
}
