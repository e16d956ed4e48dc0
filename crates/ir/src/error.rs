//! Errors of the IR crate.

use thiserror::Error;

/// An error building, verifying, parsing or interpreting a graph. Messages name the node (by its
/// printed number `%n` where known), the op and what was expected.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// An op's inputs do not fit it.
    #[error("{}{msg}", node.as_ref().map(|n| format!("{n}: ")).unwrap_or_default())]
    Type { node: Option<String>, msg: String },
    /// A value names a node or output that does not exist.
    #[error("value refers to output {output} of node {node}, which does not exist")]
    BadValue { node: usize, output: u32 },
    /// The graph is not well formed (cycle, missing result, duplicate leaf name...).
    #[error("malformed graph: {0}")]
    Malformed(String),
    /// IR text does not parse; `line` and `col` are 1-based.
    #[error("{line}:{col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },
    /// The interpreter could not run the graph (missing input or weight, bad data).
    #[error("interpreter: {0}")]
    Interp(String),
}
