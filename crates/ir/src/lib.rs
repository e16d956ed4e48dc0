//! # braid-ir
//!
//! The op-graph IR of braid: element and tensor types ([`DType`], [`TensorType`]), the closed op set
//! ([`Op`]) with its rotary frequencies ([`RopeScaling`], [`rope_inv_freq`]), the [`Graph`] (petgraph
//! `StableDiGraph`, multi-output [`Value`]s), a verifier ([`verify()`]), a stable text form
//! ([`text`]), DOT export ([`dot`]) and the reference interpreter ([`interp`]), which gives every
//! op, fused or not, its meaning.
//!
//! Architecture invariant: this crate knows nothing of egg, CUDA, files or models.

pub mod dot;
pub mod error;
pub mod graph;
pub mod interp;
pub mod op;
pub mod rope;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;

pub use error::IrError;
pub use graph::{Edge, Graph, Node, Value};
pub use op::{Op, OpKind};
pub use rope::{rope_inv_freq, RopeScaling};
pub use tensor::{HostWeight, Tensor, TensorView, WeightSource};
pub use types::{DType, TensorType};
pub use verify::verify;
