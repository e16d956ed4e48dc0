//! The e-class analysis: the tensor type(s) of every class, computed with [`braid_ir::Op::infer`].
//!
//! Appliers and the cost model read these types to know shapes (split sizes from weight shapes,
//! bytes moved per node). A class is either an attribute (its symbol), a tensor (one type), a tuple
//! (one type per output) or the root (no type).

use braid_ir::TensorType;
use egg::{Analysis, DidMerge, EGraph, Symbol};

use crate::language::{BraidLang, Decoded};

/// The e-graph of the fusion passes.
pub type BraidEGraph = EGraph<BraidLang, TypeAnalysis>;

/// A rewrite rule over [`BraidLang`] with the [`TypeAnalysis`].
pub type BraidRewrite = egg::Rewrite<BraidLang, TypeAnalysis>;

/// The analysis: derives [`ClassData`] for every class.
#[derive(Clone, Debug, Default)]
pub struct TypeAnalysis;

/// What the analysis knows about one e-class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassData {
    /// Output types: one for a tensor class, one per output for a tuple, none for an attribute or
    /// the root.
    pub types: Vec<TensorType>,
    /// The symbol of an attribute class.
    pub attr: Option<Symbol>,
    /// Whether the class is a weight or a `concat` of weight-only classes: a constant the backend
    /// folds at load time (packed weights), so it costs nothing per step.
    pub weight_only: bool,
    /// Why type inference failed for the class's first e-node, if it did (a rule bug or a malformed
    /// input graph); extraction never chooses an e-node of such a class.
    pub error: Option<String>,
}

impl ClassData {
    /// The single type of a tensor class, `None` for tuples, attributes and the root.
    pub fn tensor_type(&self) -> Option<&TensorType> {
        match self.types.as_slice() {
            [t] if self.attr.is_none() => Some(t),
            _ => None,
        }
    }
}

/// Decodes an e-node against the current e-graph (attribute children read from class data).
pub fn decode(egraph: &BraidEGraph, node: &BraidLang) -> Result<Decoded, String> {
    node.decode(|id| egraph[id].data.attr)
}

/// Infers the output types of an e-node from its children's class data.
///
/// Errors: the IR's type error (naming the op and what it expected), or a malformed attribute.
pub fn infer_node(egraph: &BraidEGraph, node: &BraidLang) -> Result<Vec<TensorType>, String> {
    match decode(egraph, node)? {
        Decoded::Attr(_) | Decoded::Root(_) => Ok(Vec::new()),
        Decoded::Get(index, tuple) => {
            let types = &egraph[tuple].data.types;
            types.get(index).cloned().map(|t| vec![t]).ok_or_else(|| {
                format!(
                    "get {index} of a tuple with {} outputs (class {tuple})",
                    types.len()
                )
            })
        }
        Decoded::Op(op, inputs) => {
            let types = inputs
                .iter()
                .map(|&id| {
                    egraph[id].data.tensor_type().ok_or_else(|| {
                        format!("{} input class {id} is not a single tensor", op.name())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            op.infer(&types)
        }
    }
}

impl Analysis<BraidLang> for TypeAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut BraidEGraph, enode: &BraidLang) -> ClassData {
        if let BraidLang::Attr(s) = enode {
            return ClassData {
                attr: Some(*s),
                ..ClassData::default()
            };
        }
        let weight_only = match enode {
            BraidLang::Weight(_) => true,
            BraidLang::Concat(ch) => ch[1..].iter().all(|&c| egraph[c].data.weight_only),
            _ => false,
        };
        match infer_node(egraph, enode) {
            Ok(types) => ClassData {
                types,
                weight_only,
                ..ClassData::default()
            },
            Err(e) => ClassData {
                error: Some(e),
                ..ClassData::default()
            },
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let before = a.clone();
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types.clone();
            a.error = None;
        } else if !a.types.is_empty() && !b.types.is_empty() && a.types != b.types {
            // Two e-nodes of one class disagree on the type: a rule is wrong. Keep the first and
            // record it; extraction re-infers every chosen node with `Graph::add`, which rejects it.
            a.error = Some(format!(
                "class merged with conflicting types {:?} and {:?}",
                a.types, b.types
            ));
        }
        if a.attr.is_none() {
            a.attr = b.attr;
        }
        a.weight_only |= b.weight_only;
        DidMerge(*a != before, *a != b)
    }
}
