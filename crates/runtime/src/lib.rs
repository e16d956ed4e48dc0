//! # braid-runtime
//!
//! Model loading ([`model`], [`load`]), Qwen3 → IR lowering ([`qwen3`]), the path from a model to a
//! backend ([`pipeline`]: lower, fuse, open the CPU reference ([`cpu`]) or the GPU ([`cuda`])), the
//! decode engine ([`engine`]) with sampling ([`sampling`]), and the `braid` runner's commands
//! ([`cli`], [`commands`]), which sit on top: no library module imports a command.

pub mod cli;
pub mod commands;
pub mod cpu;
pub mod cuda;
pub mod engine;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod qwen3;
pub mod reference;
pub mod sampling;
pub mod serve;
pub mod ui;
