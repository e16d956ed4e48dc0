//! # braid-runtime
//!
//! Model loading ([`model`], [`load`]), decoder → IR lowering for Qwen3, Qwen2 and Llama
//! ([`decoder`]), the path from a model to a
//! backend ([`pipeline`]: lower, fuse, open the CPU reference ([`cpu`]) or the GPU ([`cuda`])), the
//! decode engine ([`engine`]) with sampling ([`sampling`]), and the `braid` runner's commands
//! ([`cli`], [`commands`]), which sit on top: no library module imports a command.

pub mod cli;
pub mod commands;
pub mod cpu;
pub mod cuda;
pub mod decoder;
pub mod engine;
pub mod load;
pub mod model;
pub mod pipeline;
pub mod reference;
pub mod sampling;
pub mod serve;
pub mod ui;
