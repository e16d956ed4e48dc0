//! Errors of the pass pipeline.

use braid_ir::IrError;
use thiserror::Error;

/// A pass could not be set up or run. Messages name the pass and say what went wrong.
#[derive(Debug, Error)]
pub enum PassError {
    /// A pass spec names a pass that does not exist.
    #[error(
        "unknown pass `{name}`; valid passes: {valid} (or the whole spec `none` or `default`)"
    )]
    UnknownPass {
        /// The name as written in the spec.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A pass failed (conversion, extraction or rebuilding the graph).
    #[error("pass `{pass}`: {msg}")]
    Failed {
        /// The pass's name.
        pass: String,
        /// What went wrong.
        msg: String,
    },
    /// A pass produced a graph the verifier rejects (a bug in the pass).
    #[error("pass `{pass}` produced an invalid graph: {source}")]
    Verify {
        /// The pass's name.
        pass: String,
        /// The verifier's error, naming the node.
        #[source]
        source: IrError,
    },
}
