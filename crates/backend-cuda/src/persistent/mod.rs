//! The persistent execution mode: the step as one persistent kernel (`kernels/persistent.cu`)
//! running a static schedule of tile instructions ([`schedule`]), itself captured as the step's CUDA
//! graph ([`PersistentExecutor`]).

pub mod chain;
mod exec;
pub mod schedule;

pub use chain::{gemv_chain, GemvChain};
pub use exec::{describe_timeout, PersistentExecutor, PersistentOptions};
pub use schedule::{schedule, Schedule, Stage};
