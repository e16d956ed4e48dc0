//! The `braid` subcommands, one module each.

pub mod bench;
pub mod chat;
pub mod check;
pub mod generate;
pub mod graph;
pub mod plan;
pub mod serve;
