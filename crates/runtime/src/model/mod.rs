//! Model loading: `config.json` ([`Qwen3Config`], of a decoder [`Family`]), safetensors weights
//! ([`Checkpoint`]),
//! `tokenizer.json` ([`Tokenizer`]) and the chat template of `tokenizer_config.json`
//! ([`ChatTemplate`]). Everything is validated when loaded; every [`LoadError`] names the file (and
//! the field or tensor) and what was expected.
//!
//! Built-in assets make a model that needs no files: [`Qwen3Config::tiny`] with
//! [`Checkpoint::random`] random weights, and the real Qwen3 tokenizer and chat template embedded
//! from `models/qwen3-0.6b/` ([`Tokenizer::qwen3_builtin`], [`ChatTemplate::qwen3_builtin`]).

pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod family;
pub mod jinja;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use checkpoint::Checkpoint;
pub use config::{LayerTensors, Qwen3Config, Qwen3Tensors, TensorRole, TensorSpec};
pub use error::LoadError;
pub use family::Family;
pub use tokenizer::{StreamDecoder, Tokenizer};
