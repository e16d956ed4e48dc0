//! # braid-runtime
//!
//! Model loading ([`model`]), Qwen3 → IR lowering ([`qwen3`]), the decode engine ([`engine`]) with
//! sampling ([`sampling`]), backend selection ([`backend`]) and the `braid` runner's commands
//! ([`cli`], [`commands`]).

pub mod backend;
pub mod cli;
pub mod commands;
pub mod cuda;
pub mod engine;
pub mod load;
pub mod model;
pub mod qwen3;
pub mod reference;
pub mod sampling;
