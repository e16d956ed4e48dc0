//! Resolving `--model`: the built-in tiny model or a Hugging Face checkpoint directory.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use braid_ir::{DType, Graph, WeightSource};

use crate::model::chat::{ChatMessage, ChatTemplate};
use crate::model::{Checkpoint, Qwen3Config, Tokenizer};
use crate::qwen3::{lower_decode_step, LowerOptions, WeightTypes};

/// Seed of the built-in tiny model's random weights.
pub const TINY_SEED: u64 = 0x0062_7261_6964; // "braid" in ASCII

/// A model ready to lower: its config, weights (absent when a directory holds only `config.json`),
/// tokenizer and chat template.
pub struct LoadedModel {
    /// `tiny`, or the checkpoint directory.
    pub source: String,
    pub config: Qwen3Config,
    weights: Option<Checkpoint>,
    tokenizer: Option<Tokenizer>,
    chat: Option<ChatTemplate>,
}

impl LoadedModel {
    /// Loads `tiny` (built in) or a checkpoint directory: `config.json` (required), `model.safetensors`
    /// or `model.safetensors.index.json` (validated against the config), `tokenizer.json` and
    /// `tokenizer_config.json` (optional; generation needs the tokenizer).
    ///
    /// Errors name the file, tensor or field and what was expected.
    pub fn load(spec: &str) -> Result<LoadedModel> {
        if spec == "tiny" {
            let config = Qwen3Config::tiny();
            let weights = Checkpoint::random(&config, TINY_SEED);
            return Ok(LoadedModel {
                source: spec.into(),
                config,
                weights: Some(weights),
                tokenizer: Some(Tokenizer::qwen3_builtin()?),
                chat: Some(ChatTemplate::qwen3_builtin()?),
            });
        }
        let dir = PathBuf::from(spec);
        if !dir.is_dir() {
            bail!("--model {spec}: not a directory (expected a Hugging Face Qwen3 checkpoint directory or `tiny`)");
        }
        let config = Qwen3Config::from_file(&dir.join("config.json"))?;
        let has_weights = dir.join("model.safetensors").exists()
            || dir.join("model.safetensors.index.json").exists();
        let weights = if has_weights {
            let ck = Checkpoint::open(&dir)?;
            ck.validate(&config)?;
            Some(ck)
        } else {
            None
        };
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(Tokenizer::from_file(&tok_path)?)
        } else {
            None
        };
        let tc_path = dir.join("tokenizer_config.json");
        let chat = if tc_path.exists() {
            Some(ChatTemplate::from_tokenizer_config(&tc_path)?)
        } else {
            None
        };
        Ok(LoadedModel {
            source: spec.into(),
            config,
            weights,
            tokenizer,
            chat,
        })
    }

    /// A model from a config and its weights, with no tokenizer or chat template (tests and tools
    /// that build checkpoints in memory, e.g. [`Checkpoint::random`]); `source` names it in
    /// messages.
    pub fn from_parts(source: &str, config: Qwen3Config, weights: Checkpoint) -> LoadedModel {
        LoadedModel {
            source: source.into(),
            config,
            weights: Some(weights),
            tokenizer: None,
            chat: None,
        }
    }

    /// The weights. Errors when the directory holds no safetensors files.
    pub fn weights(&self) -> Result<&dyn WeightSource> {
        match &self.weights {
            Some(w) => Ok(w),
            None => bail!(
                "{}: no model.safetensors or model.safetensors.index.json (`braid graph` works from \
                 config.json alone; running the model needs its weights)",
                self.source
            ),
        }
    }

    /// Bytes of all weights (0 when there are none).
    pub fn weight_bytes(&self) -> usize {
        self.weights.as_ref().map_or(0, Checkpoint::total_bytes)
    }

    /// The tokenizer. Errors when the directory has no `tokenizer.json`.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().with_context(|| {
            format!(
                "{}: no tokenizer.json, which text generation needs",
                self.source
            )
        })
    }

    /// The chat template. Errors when the directory has no `tokenizer_config.json` with a
    /// `chat_template`.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.chat.as_ref().with_context(|| {
            format!(
                "{}: no tokenizer_config.json with a chat_template, which chat needs",
                self.source
            )
        })
    }

    /// Lowers the decode step for `max_context` positions with a KV cache of `kv_dtype`. Without
    /// weights, weight leaves are declared bf16 (the dtype Qwen3 checkpoints ship in).
    pub fn lower(&self, max_context: usize, kv_dtype: DType) -> Result<Graph> {
        self.lower_with(LowerOptions::decode(max_context, kv_dtype))
    }

    /// Lowers a step with `opts` (a decode step, or a prefill step over `opts.tokens` tokens).
    pub fn lower_with(&self, opts: LowerOptions) -> Result<Graph> {
        let types = match &self.weights {
            Some(w) => WeightTypes::Checkpoint(w),
            None => WeightTypes::Declared(DType::BF16),
        };
        lower_decode_step(&self.config, types, opts)
            .with_context(|| format!("lowering {}", self.source))
    }

    /// The prompt's token ids; with `chat`, formatted as one user turn by the model's chat template.
    pub fn prompt_tokens(&self, prompt: &str, chat: bool, no_think: bool) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let text = if chat {
            let template = self.chat.as_ref().with_context(|| {
                format!(
                    "--chat: {} has no tokenizer_config.json with a chat_template",
                    self.source
                )
            })?;
            let messages = [ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            }];
            template.render(&messages, true, no_think.then_some(false))?
        } else {
            prompt.to_string()
        };
        Ok(tok.encode(&text, false)?)
    }

    /// Tokens that end generation: the config's `eos_token_id`s and the tokenizer's `<|im_end|>` and
    /// `<|endoftext|>` when present.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stops = self.config.eos_token_ids.clone();
        if let Some(tok) = &self.tokenizer {
            stops.extend(
                ["<|im_end|>", "<|endoftext|>"]
                    .iter()
                    .filter_map(|t| tok.token_id(t)),
            );
        }
        stops.sort();
        stops.dedup();
        stops
    }
}
