//! Resolving `--model`: the built-in tiny model or a Hugging Face checkpoint directory.
//!
//! Only what every command needs is read up front: `config.json` and the safetensors headers
//! (validated against the config). The tokenizer and the chat template are read when first asked
//! for, so a broken `tokenizer_config.json` fails `--chat` but not `braid graph` or a plain
//! `generate`, and a broken `tokenizer.json` fails what needs text but not `braid graph`. Weight
//! values are checked (every element finite) the first time the weights are used to run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use braid_ir::{DType, Graph, WeightSource};

use crate::decoder::{lower_decode_step, LowerOptions, WeightTypes};
use crate::model::chat::{ChatMessage, ChatTemplate};
use crate::model::{Checkpoint, LoadError, Qwen3Config, Tokenizer};
use crate::ui;

/// Tokens that end a turn or a text in the supported families' tokenizers, stop tokens whenever
/// the tokenizer has them: Qwen's `<|im_end|>` / `<|endoftext|>` (also SmolLM2's), Llama 3's
/// `<|eot_id|>` (end of turn), `<|eom_id|>` (end of a tool-call message) and `<|end_of_text|>`.
pub const END_TOKENS: [&str; 5] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
];

/// Seed of the built-in tiny model's random weights.
pub const TINY_SEED: u64 = 0x0062_7261_6964; // "braid" in ASCII

/// Where the tokenizer or the chat template comes from.
#[derive(Clone, Debug)]
enum Asset {
    /// The Qwen3 file embedded in the binary.
    Builtin,
    /// A file of the checkpoint directory.
    File(PathBuf),
    /// The directory has no such file.
    Absent,
}

/// A model ready to lower: its config, weights (absent when a directory holds only `config.json`),
/// tokenizer and chat template (read on first use).
pub struct LoadedModel {
    /// `tiny`, or the checkpoint directory.
    pub source: String,
    pub config: Qwen3Config,
    weights: Option<Checkpoint>,
    /// Whether every weight was found finite (checked once, on first use to run).
    finite: OnceLock<Result<(), String>>,
    tokenizer_asset: Asset,
    tokenizer: OnceLock<Result<Tokenizer, String>>,
    chat_asset: Asset,
    chat: OnceLock<Result<ChatTemplate, String>>,
}

impl LoadedModel {
    /// Loads `tiny` (built in) or a checkpoint directory: `config.json` (required), `model.safetensors`
    /// or `model.safetensors.index.json` (validated against the config), `tokenizer.json` and
    /// `tokenizer_config.json` (optional, read on first use; generation needs the tokenizer).
    /// Tensors the model does not use and stop ids past the vocabulary are reported as warnings
    /// on stderr.
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
                finite: OnceLock::new(),
                tokenizer_asset: Asset::Builtin,
                tokenizer: OnceLock::new(),
                chat_asset: Asset::Builtin,
                chat: OnceLock::new(),
            });
        }
        if spec.trim().is_empty() {
            bail!(
                "--model is empty (expected a Hugging Face checkpoint directory of a Qwen3, Qwen2 or Llama model, or `tiny`)"
            );
        }
        let dir = PathBuf::from(spec);
        if !dir.is_dir() {
            let what = if dir.exists() {
                "not a directory"
            } else {
                "no such directory"
            };
            bail!("--model {spec}: {what} (expected a Hugging Face checkpoint directory of a Qwen3, Qwen2 or Llama model, or `tiny`)");
        }
        let config_path = dir.join("config.json");
        let config = Qwen3Config::from_file(&config_path)?;
        for w in config.warnings() {
            ui::warn(&format!("{}: {w}", config_path.display()));
        }
        let has_weights = dir.join("model.safetensors").exists()
            || dir.join("model.safetensors.index.json").exists();
        let weights = if has_weights {
            let task = ui::Task::spinner(&format!("opening the checkpoint in {spec}"));
            let ck = Checkpoint::open(&dir)?;
            ck.validate(&config)?;
            drop(task);
            let extra = ck.unexpected_tensors(&config);
            if !extra.is_empty() {
                let shown: Vec<String> = extra.iter().take(5).map(|t| format!("`{t}`")).collect();
                let more = if extra.len() > 5 {
                    format!(" and {} more", extra.len() - 5)
                } else {
                    String::new()
                };
                ui::warn(&format!(
                    "{}: {} tensor(s) a {} model of this config does not use, ignored: {}{more}",
                    ck.origin().display(),
                    extra.len(),
                    config.family,
                    shown.join(", ")
                ));
            }
            Some(ck)
        } else {
            None
        };
        let asset = |name: &str| {
            let p = dir.join(name);
            if p.exists() {
                Asset::File(p)
            } else {
                Asset::Absent
            }
        };
        Ok(LoadedModel {
            source: spec.into(),
            config,
            weights,
            finite: OnceLock::new(),
            tokenizer_asset: asset("tokenizer.json"),
            tokenizer: OnceLock::new(),
            chat_asset: asset("tokenizer_config.json"),
            chat: OnceLock::new(),
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
            finite: OnceLock::new(),
            tokenizer_asset: Asset::Absent,
            tokenizer: OnceLock::new(),
            chat_asset: Asset::Absent,
            chat: OnceLock::new(),
        }
    }

    /// Whether the model has weights (a directory may hold only `config.json`).
    pub fn has_weights(&self) -> bool {
        self.weights.is_some()
    }

    /// The weights, after checking once that every value is finite (a NaN or infinity would only
    /// surface as NaN logits). Errors when the directory holds no safetensors files or a weight is
    /// not finite (naming the tensor and element).
    pub fn weights(&self) -> Result<&dyn WeightSource> {
        let Some(w) = &self.weights else {
            bail!(
                "{}: no model.safetensors or model.safetensors.index.json (`braid graph` works from \
                 config.json alone; running the model needs its weights)",
                self.source
            )
        };
        let finite = self.finite.get_or_init(|| {
            let names: Vec<String> = self
                .config
                .tensor_specs()
                .into_iter()
                .map(|s| s.name)
                .collect();
            let task = ui::Task::bytes(
                &format!("checking the weights of {}", self.source),
                w.total_bytes() as u64,
            );
            w.check_finite(names.iter().map(String::as_str), &mut |n| task.inc(n))
                .map_err(|e| e.to_string())
        });
        finite.as_ref().map_err(|e| anyhow!("{e}"))?;
        Ok(w)
    }

    /// Bytes of all weights (0 when there are none).
    pub fn weight_bytes(&self) -> usize {
        self.weights.as_ref().map_or(0, Checkpoint::total_bytes)
    }

    /// One line for people: the model, its size, its weights' dtype, e.g.
    /// `tiny (Qwen3, 2 layers, hidden 64, 20.0M parameters, 40.1 MB bf16)`.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let (params, bytes, dtype) = match &self.weights {
            Some(w) => (w.parameters(), w.total_bytes() as u64, w.dtype_summary()),
            None => {
                let params: u64 = c
                    .tensor_specs()
                    .iter()
                    .map(|s| {
                        s.shape
                            .iter()
                            .fold(1u64, |a, &d| a.saturating_mul(d as u64))
                    })
                    .fold(0u64, u64::saturating_add);
                (
                    params,
                    params.saturating_mul(2),
                    "bf16, declared; no weights".to_string(),
                )
            }
        };
        format!(
            "{} ({}, {} layers, hidden {}, {:.1}M parameters, {} {dtype})",
            self.source,
            c.family,
            c.num_hidden_layers,
            c.hidden_size,
            params as f64 / 1e6,
            ui::human_bytes(bytes)
        )
    }

    /// The tokenizer (read on first use). Errors when the directory has no `tokenizer.json` or it
    /// does not load.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        let t = self.tokenizer.get_or_init(|| {
            match &self.tokenizer_asset {
                Asset::Builtin => Tokenizer::qwen3_builtin(),
                Asset::File(p) => Tokenizer::from_file(p),
                Asset::Absent => {
                    return Err(format!(
                        "{}: no tokenizer.json, which text generation needs",
                        self.source
                    ))
                }
            }
            .map_err(|e: LoadError| e.to_string())
        });
        t.as_ref().map_err(|e| anyhow!("{e}"))
    }

    /// The chat template (read on first use). Errors when there is no `tokenizer_config.json` or
    /// its template does not load.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        let t = self.chat.get_or_init(|| {
            match &self.chat_asset {
                Asset::Builtin => ChatTemplate::qwen3_builtin(),
                Asset::File(p) => ChatTemplate::from_tokenizer_config(p),
                Asset::Absent => {
                    return Err(format!(
                        "--chat: {} has no tokenizer_config.json with a chat_template",
                        self.source
                    ))
                }
            }
            .map_err(|e: LoadError| e.to_string())
        });
        t.as_ref().map_err(|e| anyhow!("{e}"))
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
    ///
    /// As transformers: plain text is encoded with the tokenizer's special tokens (its
    /// post-processor, e.g. Llama 3's `<|begin_of_text|>`; Qwen's adds none), chat-rendered text
    /// without them (`apply_chat_template` tokenizes with `add_special_tokens=False`: the
    /// template writes its own BOS, so there is never a second one).
    pub fn prompt_tokens(&self, prompt: &str, chat: bool, no_think: bool) -> Result<Vec<u32>> {
        if chat {
            self.chat_tokens(&[ChatMessage::user(prompt)], no_think)
        } else {
            self.text_tokens(prompt)
        }
    }

    /// The token ids of `messages` formatted by the chat template, with the assistant header
    /// appended; `no_think` asks Qwen3's template to skip the thinking block. The rendered text is
    /// encoded without the tokenizer's special tokens, as `apply_chat_template` does: the
    /// template writes its own BOS.
    ///
    /// Errors: no or a broken chat template, the tokenizer's errors, or an id past the model's
    /// vocabulary.
    pub fn chat_tokens(&self, messages: &[ChatMessage], no_think: bool) -> Result<Vec<u32>> {
        let template = self.chat_template()?;
        let text = template.render(messages, true, no_think.then_some(false))?;
        self.encode_checked(&text, false)
    }

    /// The token ids of plain `text` (no template), with the tokenizer's special tokens as
    /// transformers' `tokenizer(text)` adds them (Llama 3's post-processor prepends
    /// `<|begin_of_text|>`; Qwen's adds nothing).
    ///
    /// Errors: the tokenizer's, or an id at or past the config's `vocab_size` (the tokenizer and
    /// `config.json` disagree), naming the id and its token.
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_checked(text, true)
    }

    /// `text` encoded, every id checked against the config's `vocab_size`.
    fn encode_checked(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let ids = tok.encode(text, add_special_tokens)?;
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            bail!(
                "{}: the tokenizer gives id {bad} ({:?}), but the model's vocab_size is {} \
                 (tokenizer.json and config.json disagree)",
                tok.origin().display(),
                tok.token(bad).unwrap_or_default(),
                self.config.vocab_size
            );
        }
        Ok(ids)
    }

    /// Tokens that end generation: the config's `eos_token_id`s and the tokenizer's end tokens
    /// ([`END_TOKENS`]) when present (a tokenizer that does not load adds none).
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stops = self.config.eos_token_ids.clone();
        if let Ok(tok) = self.tokenizer() {
            stops.extend(END_TOKENS.iter().filter_map(|t| tok.token_id(t)));
        }
        stops.sort();
        stops.dedup();
        stops
    }

    /// The checkpoint's directory (`None` for `tiny`).
    pub fn dir(&self) -> Option<&Path> {
        (self.source != "tiny").then(|| Path::new(&self.source))
    }
}
