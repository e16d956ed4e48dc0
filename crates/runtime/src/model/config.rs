//! `config.json` of a decoder checkpoint (Qwen3, Qwen2 or Llama: [`Family`]): the model's shape,
//! read and validated.
//!
//! Field names and defaults follow Hugging Face transformers' `Qwen3Config`, `Qwen2Config` and
//! `LlamaConfig` (`models/*/configuration_*.py`; the per-family differences live in
//! [`super::family`]). Both config generations are read: transformers 4.x puts `rope_theta` (and
//! `rope_scaling`) at the top level (as Qwen3-0.6B's published file), 5.x nests them in
//! `rope_parameters: {rope_theta, rope_type, ..}` and writes `dtype` instead of `torch_dtype`.

use std::path::Path;

use braid_ir::RopeScaling;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::LoadError;
use super::family::{self, Family};

/// The shape and constants of a decoder of one of the supported families ([`Family`]), as read
/// from `config.json`. (The name predates the other families.)
///
/// Invariants after [`Qwen3Config::validate`]: every size is non-zero,
/// `num_attention_heads % num_key_value_heads == 0`, `head_dim` is even (RoPE rotates pairs),
/// `rms_norm_eps` / `rope_theta` are finite and positive, `model_type` is the family's and the
/// rope scaling's parameters are valid ([`RopeScaling::validate`]). Ids past the vocabulary are
/// allowed (random test checkpoints keep Qwen3's ids with a small vocabulary) and reported by
/// [`Qwen3Config::warnings`].
///
/// Serializes to a transformers-4.x style `config.json` (what [`Qwen3Config::from_json_str`] reads
/// back), so tests can write fixtures from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Qwen3Config {
    /// The family's `model_type`: `"qwen3"`, `"qwen2"` or `"llama"`.
    pub model_type: String,
    /// Width of the residual stream `H` (Qwen3-0.6B: 1024).
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP (gate/up output, down input) (Qwen3-0.6B: 3072).
    pub intermediate_size: usize,
    /// Number of decoder layers (Qwen3-0.6B: 28).
    pub num_hidden_layers: usize,
    /// Query heads `nh` (Qwen3-0.6B: 16).
    pub num_attention_heads: usize,
    /// Key/value heads `nkv` for grouped-query attention (gqa); divides `nh`. When absent: `nh`
    /// for Llama, 32 for Qwen3 and Qwen2, as in transformers ([`Family::default_kv_heads`]).
    pub num_key_value_heads: usize,
    /// Per-head width `d` (Qwen3-0.6B: 128). When absent: 128 for Qwen3 (Qwen3Config's default),
    /// `hidden_size / num_attention_heads` for Qwen2 and Llama. Note `nh * d` need not equal
    /// `hidden_size` (Qwen3-0.6B has 16 * 128 = 2048).
    pub head_dim: usize,
    /// Rows of the embedding and of lm_head (Qwen3: 151936, more than the tokenizer's 151669 ids).
    pub vocab_size: usize,
    /// Epsilon of every rms_norm (added to the mean square before the inverse square root).
    pub rms_norm_eps: f64,
    /// RoPE base θ: frequency of pair `i` is `θ^(-2i/d)` (RoFormer, Su et al. 2021).
    pub rope_theta: f64,
    /// Longest context the model was trained for (tokens); an upper bound for the KV cache.
    /// When absent: 32768 for Qwen3 and Qwen2, 2048 for Llama, as in transformers.
    pub max_position_embeddings: usize,
    /// Whether lm_head reuses `model.embed_tokens.weight` (no `lm_head.weight` tensor). Defaults to
    /// false when absent, as transformers' `Qwen3Config`.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id (Qwen3 does not prepend it; informational).
    pub bos_token_id: Option<u32>,
    /// Ids that end generation (`eos_token_id`, an int or a list in the file); may be empty.
    #[serde(rename = "eos_token_id")]
    pub eos_token_ids: Vec<u32>,
    /// The checkpoint's declared dtype name (`torch_dtype` in 4.x, `dtype` in 5.x), e.g.
    /// `"bfloat16"`. Informational: tensors carry their own dtypes.
    #[serde(rename = "torch_dtype", skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// The decoder family, from `architectures` / `model_type` ([`Family::detect`]); serialized
    /// as `architectures: ["<class>"]`.
    #[serde(
        rename = "architectures",
        serialize_with = "family::serialize_architectures"
    )]
    pub family: Family,
    /// The config's `attention_bias` (default false): q/k/v/o projections with a bias in Qwen3 and
    /// Llama; Qwen2 ignores it (its q/k/v always have one, its o_proj never). See
    /// [`Qwen3Config::qkv_bias`], [`Qwen3Config::o_bias`].
    pub attention_bias: bool,
    /// How rope derives its frequencies from `rope_theta`: `rope_scaling` (4.x) /
    /// `rope_parameters` (5.x) of type `default` or `llama3` ([`family::rope_scaling`]).
    /// Serialized as a 4.x `rope_scaling` object, omitted when default.
    #[serde(
        serialize_with = "family::serialize_rope_scaling",
        skip_serializing_if = "RopeScaling::is_default"
    )]
    pub rope_scaling: RopeScaling,
}

/// Largest accepted size of any config dimension (hidden, heads, vocabulary, context...): 2^24.
pub const MAX_SIZE: usize = 1 << 24;
/// Largest accepted `num_hidden_layers`.
pub const MAX_LAYERS: usize = 4096;
/// Largest accepted number of parameters over all tensors: 2^52, far above any real model, so that
/// byte counts of the whole model (and costs summed over its graph) fit in 64 bits.
pub const MAX_PARAMETERS: u64 = 1 << 52;

/// The role of a tensor in the model, which decides how random weights are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    /// `model.embed_tokens.weight` `[vocab, H]`.
    Embedding,
    /// A matmul weight `[out, in]` (HF layout: `y = x·Wᵀ`), lm_head included.
    Linear,
    /// An rms_norm gain vector `[n]`.
    Norm,
    /// A projection's bias vector `[n]` (`*_proj.bias`), added to every output row.
    Bias,
}

/// One tensor a checkpoint must hold: its safetensors name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The Hugging Face parameter name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Row-major shape, e.g. `[nh * d, H]`.
    pub shape: Vec<usize>,
    /// What the tensor is for.
    pub role: TensorRole,
}

/// Name of the token embedding table `[vocab, H]`.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";
/// Name of the untied lm_head weight `[vocab, H]`.
pub const LM_HEAD: &str = "lm_head.weight";

/// The tensors of one decoder layer `l`, named `model.layers.{l}.*` (transformers'
/// `modeling_qwen3.py` / `modeling_qwen2.py` / `modeling_llama.py`: `*DecoderLayer`,
/// `*Attention`, `*MLP`). Tensors a family lacks are `None` ([`Family`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerTensors {
    /// `input_layernorm.weight [H]`.
    pub input_layernorm: TensorSpec,
    /// `self_attn.q_proj.weight [nh*d, H]`.
    pub q_proj: TensorSpec,
    /// `self_attn.q_proj.bias [nh*d]` (Qwen2; Qwen3/Llama with `attention_bias`).
    pub q_bias: Option<TensorSpec>,
    /// `self_attn.k_proj.weight [nkv*d, H]`.
    pub k_proj: TensorSpec,
    /// `self_attn.k_proj.bias [nkv*d]`.
    pub k_bias: Option<TensorSpec>,
    /// `self_attn.v_proj.weight [nkv*d, H]`.
    pub v_proj: TensorSpec,
    /// `self_attn.v_proj.bias [nkv*d]`.
    pub v_bias: Option<TensorSpec>,
    /// `self_attn.o_proj.weight [H, nh*d]`.
    pub o_proj: TensorSpec,
    /// `self_attn.o_proj.bias [H]` (Qwen3/Llama with `attention_bias`).
    pub o_bias: Option<TensorSpec>,
    /// `self_attn.q_norm.weight [d]` (per-head rms_norm before rope; Qwen3 only).
    pub q_norm: Option<TensorSpec>,
    /// `self_attn.k_norm.weight [d]` (Qwen3 only).
    pub k_norm: Option<TensorSpec>,
    /// `post_attention_layernorm.weight [H]`.
    pub post_attention_layernorm: TensorSpec,
    /// `mlp.gate_proj.weight [I, H]`.
    pub gate_proj: TensorSpec,
    /// `mlp.up_proj.weight [I, H]`.
    pub up_proj: TensorSpec,
    /// `mlp.down_proj.weight [H, I]`.
    pub down_proj: TensorSpec,
}

impl LayerTensors {
    /// The layer's tensors in checkpoint order (those the family has).
    pub fn iter(&self) -> impl Iterator<Item = &TensorSpec> {
        [
            Some(&self.input_layernorm),
            Some(&self.q_proj),
            self.q_bias.as_ref(),
            Some(&self.k_proj),
            self.k_bias.as_ref(),
            Some(&self.v_proj),
            self.v_bias.as_ref(),
            Some(&self.o_proj),
            self.o_bias.as_ref(),
            self.q_norm.as_ref(),
            self.k_norm.as_ref(),
            Some(&self.post_attention_layernorm),
            Some(&self.gate_proj),
            Some(&self.up_proj),
            Some(&self.down_proj),
        ]
        .into_iter()
        .flatten()
    }
}

/// Every tensor of a decoder model, by role: what a checkpoint must hold and what the lowering
/// reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qwen3Tensors {
    /// `model.embed_tokens.weight [vocab, H]`.
    pub embed_tokens: TensorSpec,
    /// The decoder layers, in order.
    pub layers: Vec<LayerTensors>,
    /// `model.norm.weight [H]`, the final rms_norm.
    pub norm: TensorSpec,
    /// The lm_head `[vocab, H]`: `lm_head.weight`, or the embedding table itself when
    /// `tie_word_embeddings` (then it is no tensor of its own).
    pub lm_head: TensorSpec,
    /// Whether `lm_head` is the embedding table.
    pub tied: bool,
}

impl Qwen3Tensors {
    /// The schema of `c`'s shape (sizes are not validated here; see [`Qwen3Config::validate`]).
    pub fn of(c: &Qwen3Config) -> Qwen3Tensors {
        let (h, i, v, d) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.head_dim);
        let (q, kv) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let (qkv_bias, o_bias, qk_norm) = (c.qkv_bias(), c.o_bias(), c.family.has_qk_norm());
        let spec = |name: String, shape: Vec<usize>, role| TensorSpec { name, shape, role };
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let t = |suffix: &str, shape: Vec<usize>, role| {
                    spec(format!("model.layers.{l}.{suffix}"), shape, role)
                };
                let bias = |on: bool, suffix: &str, n: usize| {
                    on.then(|| t(suffix, vec![n], TensorRole::Bias))
                };
                let norm = |suffix: &str| qk_norm.then(|| t(suffix, vec![d], TensorRole::Norm));
                LayerTensors {
                    input_layernorm: t("input_layernorm.weight", vec![h], TensorRole::Norm),
                    q_proj: t("self_attn.q_proj.weight", vec![q, h], TensorRole::Linear),
                    q_bias: bias(qkv_bias, "self_attn.q_proj.bias", q),
                    k_proj: t("self_attn.k_proj.weight", vec![kv, h], TensorRole::Linear),
                    k_bias: bias(qkv_bias, "self_attn.k_proj.bias", kv),
                    v_proj: t("self_attn.v_proj.weight", vec![kv, h], TensorRole::Linear),
                    v_bias: bias(qkv_bias, "self_attn.v_proj.bias", kv),
                    o_proj: t("self_attn.o_proj.weight", vec![h, q], TensorRole::Linear),
                    o_bias: bias(o_bias, "self_attn.o_proj.bias", h),
                    q_norm: norm("self_attn.q_norm.weight"),
                    k_norm: norm("self_attn.k_norm.weight"),
                    post_attention_layernorm: t(
                        "post_attention_layernorm.weight",
                        vec![h],
                        TensorRole::Norm,
                    ),
                    gate_proj: t("mlp.gate_proj.weight", vec![i, h], TensorRole::Linear),
                    up_proj: t("mlp.up_proj.weight", vec![i, h], TensorRole::Linear),
                    down_proj: t("mlp.down_proj.weight", vec![h, i], TensorRole::Linear),
                }
            })
            .collect();
        let tied = c.tie_word_embeddings;
        let embed_tokens = spec(EMBED_TOKENS.into(), vec![v, h], TensorRole::Embedding);
        let lm_head = if tied {
            embed_tokens.clone()
        } else {
            spec(LM_HEAD.into(), vec![v, h], TensorRole::Linear)
        };
        Qwen3Tensors {
            embed_tokens,
            layers,
            norm: spec("model.norm.weight".into(), vec![h], TensorRole::Norm),
            lm_head,
            tied,
        }
    }

    /// Every tensor a checkpoint must hold, each once, in checkpoint order: the embedding, the
    /// layers, the final norm and, unless tied, the lm_head.
    pub fn checkpoint_order(&self) -> impl Iterator<Item = &TensorSpec> {
        std::iter::once(&self.embed_tokens)
            .chain(self.layers.iter().flat_map(LayerTensors::iter))
            .chain(std::iter::once(&self.norm))
            .chain((!self.tied).then_some(&self.lm_head))
    }
}

impl Qwen3Config {
    /// Reads and validates a `config.json`.
    ///
    /// Errors: [`LoadError::Io`] if the file cannot be read, otherwise those of
    /// [`Qwen3Config::from_json_str`].
    pub fn from_file(path: &Path) -> Result<Qwen3Config, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::io(path, "a Hugging Face config.json", e))?;
        Qwen3Config::from_json_str(&text, path)
    }

    /// Parses and validates config JSON text; `origin` names the file in error messages.
    ///
    /// Errors: [`LoadError::Json`] (syntax, with line/column), [`LoadError::MissingField`],
    /// [`LoadError::InvalidField`] (wrong JSON type, `model_type` not `"qwen3"`, zero sizes, heads
    /// that don't divide, odd `head_dim`, ...), [`LoadError::Unsupported`] (rope scaling, attention
    /// bias, sliding window, an activation other than silu).
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Qwen3Config, LoadError> {
        let value: Value = serde_json::from_str(text).map_err(|e| LoadError::json(origin, &e))?;
        let Value::Object(map) = value else {
            return Err(LoadError::InvalidField {
                path: origin.into(),
                field: "<root>".into(),
                found: json_kind(&value).into(),
                expected: "a JSON object".into(),
            });
        };
        let config = Fields { map: &map, origin }.parse()?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The built-in tiny Qwen3 for tests and CPU runs: 2 layers, hidden 64, 4 query heads / 2 KV
    /// heads of width 16, intermediate 128, the real vocabulary size 151936 (so every id of the real
    /// tokenizer, added tokens up to 151668 included, has an embedding row), rms_norm_eps 1e-6,
    /// rope_theta 1e6, an untied lm_head (with random weights a tied lm_head maps each hidden state
    /// back to the input token, so the tiny model would only repeat its prompt), eos `<|im_end|>`
    /// (151645).
    pub fn tiny() -> Qwen3Config {
        Qwen3Config {
            model_type: "qwen3".into(),
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            vocab_size: 151_936,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            max_position_embeddings: 40_960,
            tie_word_embeddings: false,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_645],
            torch_dtype: Some("bfloat16".into()),
            family: Family::Qwen3,
            attention_bias: false,
            rope_scaling: RopeScaling::Default,
        }
    }

    /// Checks the invariants listed on [`Qwen3Config`]; `origin` names the file in errors.
    ///
    /// Errors: [`LoadError::InvalidField`] naming the first offending field.
    pub fn validate(&self, origin: &Path) -> Result<(), LoadError> {
        let invalid = |field: &str, found: String, expected: &str| {
            Err(LoadError::InvalidField {
                path: origin.into(),
                field: field.into(),
                found,
                expected: expected.into(),
            })
        };
        if self.model_type != self.family.model_type() {
            return invalid(
                "model_type",
                format!("{:?}", self.model_type),
                &format!(
                    "{:?}, the model_type of {}",
                    self.family.model_type(),
                    self.family.architecture()
                ),
            );
        }
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, v) in sizes {
            if v == 0 {
                return invalid(field, "0".into(), "a positive integer");
            }
            // Bounds far above any real model keep every tensor size (a product of two sizes,
            // times 4 bytes) and the tensor list (11 per layer) from overflowing.
            let max = if field == "num_hidden_layers" {
                MAX_LAYERS
            } else {
                MAX_SIZE
            };
            if v > max {
                return invalid(field, v.to_string(), &format!("at most {max}"));
            }
        }
        // The q projection is nh * d wide; with every other width bounded above, each tensor is
        // then a product of two bounded sizes.
        let q_width = (self.num_attention_heads as u64) * (self.head_dim as u64);
        if q_width > MAX_SIZE as u64 {
            return invalid(
                "num_attention_heads",
                self.num_attention_heads.to_string(),
                &format!(
                    "num_attention_heads x head_dim ({} x {} = {q_width}, the q projection's width) at most {MAX_SIZE}",
                    self.num_attention_heads, self.head_dim
                ),
            );
        }
        let params = self
            .tensor_specs()
            .iter()
            .map(|t| {
                t.shape
                    .iter()
                    .fold(1u64, |a, &d| a.saturating_mul(d as u64))
            })
            .fold(0u64, u64::saturating_add);
        if params > MAX_PARAMETERS {
            return invalid(
                "num_hidden_layers",
                self.num_hidden_layers.to_string(),
                &format!(
                    "a model of at most 2^52 parameters; these sizes make {params} (more than any \
                     machine holds)"
                ),
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return invalid(
                "num_key_value_heads",
                self.num_key_value_heads.to_string(),
                &format!(
                    "a divisor of num_attention_heads = {} (each KV head serves a whole group of query heads)",
                    self.num_attention_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return invalid(
                "head_dim",
                self.head_dim.to_string(),
                "an even number (rope rotates pairs of dimensions)",
            );
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return invalid(
                "rms_norm_eps",
                self.rms_norm_eps.to_string(),
                "a finite positive number",
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return invalid(
                "rope_theta",
                self.rope_theta.to_string(),
                "a finite positive number",
            );
        }
        if let Err(e) = self.rope_scaling.validate() {
            return invalid(
                "rope_scaling",
                format!("{:?}", self.rope_scaling),
                &format!("valid parameters (rope {e})"),
            );
        }
        Ok(())
    }

    /// Whether the q/k/v projections add a bias `[n]` ([`Family::qkv_bias`]).
    pub fn qkv_bias(&self) -> bool {
        self.family.qkv_bias(self.attention_bias)
    }

    /// Whether o_proj adds a bias `[hidden]` ([`Family::o_bias`]).
    pub fn o_bias(&self) -> bool {
        self.family.o_bias(self.attention_bias)
    }

    /// What is accepted but probably not meant: an `eos_token_id` at or past `vocab_size` (the
    /// model can never produce that token). One message per problem, naming the field.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let past: Vec<String> = self
            .eos_token_ids
            .iter()
            .filter(|&&id| id as usize >= self.vocab_size)
            .map(u32::to_string)
            .collect();
        if !past.is_empty() {
            out.push(format!(
                "eos_token_id {} is not below vocab_size = {}: the model cannot produce it, so only \
                 the tokenizer's stop tokens and the token limit end generation",
                past.join(", "),
                self.vocab_size
            ));
        }
        out
    }

    /// The tensor schema of this shape: every tensor by its role ([`Qwen3Tensors`]). The one
    /// description of the model's tensor layout: checkpoint validation, random weights and the IR
    /// lowering all read it.
    pub fn tensors(&self) -> Qwen3Tensors {
        Qwen3Tensors::of(self)
    }

    /// Every tensor a checkpoint of this shape must hold, in checkpoint order
    /// ([`Qwen3Tensors::checkpoint_order`]).
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        self.tensors().checkpoint_order().cloned().collect()
    }

    /// Name of the lm_head weight: `lm_head.weight`, or `model.embed_tokens.weight` when tied.
    pub fn lm_head_name(&self) -> &'static str {
        if self.tie_word_embeddings {
            EMBED_TOKENS
        } else {
            LM_HEAD
        }
    }

    /// The config as `config.json` text (transformers 4.x form, `rope_theta` at the top level).
    pub fn to_json_string(&self) -> String {
        // Serializing plain numbers, strings and vectors into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The JSON object of a config file being read, with the file for error messages.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a Path,
}

impl Fields<'_> {
    fn parse(&self) -> Result<Qwen3Config, LoadError> {
        let model_type = self
            .string("model_type")?
            .ok_or_else(|| self.missing("model_type", "\"qwen3\", \"qwen2\" or \"llama\""))?;
        let family = Family::detect(self.map, &model_type, self.origin)?;
        self.check_unsupported()?;
        family::check_unsupported(self.map, self.origin)?;
        let hidden_size = self.required_usize("hidden_size")?;
        let num_attention_heads = self.required_usize("num_attention_heads")?;
        let head_dim = match self.usize("head_dim")? {
            Some(d) => d,
            // transformers: Qwen3Config's default 128; Qwen2/Llama take
            // `hidden_size // num_attention_heads` when absent.
            None => family
                .default_head_dim(hidden_size, num_attention_heads)
                .ok_or_else(|| LoadError::InvalidField {
                    path: self.origin.into(),
                    field: "num_attention_heads".into(),
                    found: num_attention_heads.to_string(),
                    expected: format!(
                        "a divisor of hidden_size = {hidden_size} (head_dim is absent, so it is \
                         hidden_size / num_attention_heads)"
                    ),
                })?,
        };
        let max_position_embeddings = self
            .usize("max_position_embeddings")?
            .unwrap_or(family.default_max_position_embeddings());
        Ok(Qwen3Config {
            model_type,
            hidden_size,
            intermediate_size: self.required_usize("intermediate_size")?,
            num_hidden_layers: self.required_usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: self
                .usize("num_key_value_heads")?
                .unwrap_or(family.default_kv_heads(num_attention_heads)),
            head_dim,
            vocab_size: self.required_usize("vocab_size")?,
            rms_norm_eps: self.f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: self.rope_theta()?,
            max_position_embeddings,
            tie_word_embeddings: self.bool("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: self.token_id("bos_token_id")?,
            eos_token_ids: self.eos_token_ids()?,
            torch_dtype: match self.string("torch_dtype")? {
                Some(d) => Some(d),
                None => self.string("dtype")?,
            },
            family,
            attention_bias: self.bool("attention_bias")?.unwrap_or(false),
            rope_scaling: family::rope_scaling(self.map, max_position_embeddings, self.origin)?,
        })
    }

    /// Rejects configs asking for features the decoder lowering does not implement (more in
    /// [`family::check_unsupported`] and [`family::rope_scaling`]).
    fn check_unsupported(&self) -> Result<(), LoadError> {
        if let Some(act) = self.string("hidden_act")? {
            if act != "silu" {
                return Err(self.unsupported(
                    "hidden_act",
                    &act,
                    "only silu (SwiGLU) is implemented",
                ));
            }
        }
        if self.bool("use_sliding_window")? == Some(true) {
            return Err(self.unsupported(
                "use_sliding_window",
                "true",
                "sliding-window attention is not implemented",
            ));
        }
        if let Some(scaling) = self.map.get("rope_scaling").filter(|v| !v.is_null()) {
            self.check_rope_type("rope_scaling", scaling)?;
        }
        Ok(())
    }

    /// `rope_theta` from `rope_parameters.rope_theta` (5.x) or the top level (4.x); both present
    /// and different is an error.
    fn rope_theta(&self) -> Result<f64, LoadError> {
        let top = self.f64("rope_theta")?;
        let nested = match self.map.get("rope_parameters").filter(|v| !v.is_null()) {
            None => None,
            Some(params) => {
                self.check_rope_type("rope_parameters", params)?;
                match params.get("rope_theta") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_f64().ok_or_else(|| {
                        self.invalid("rope_parameters.rope_theta", v, "a number")
                    })?),
                }
            }
        };
        match (top, nested) {
            (Some(a), Some(b)) if a != b => Err(LoadError::InvalidField {
                path: self.origin.into(),
                field: "rope_parameters.rope_theta".into(),
                found: b.to_string(),
                expected: format!("the same value as the top-level rope_theta = {a}"),
            }),
            (_, Some(theta)) | (Some(theta), None) => Ok(theta),
            (None, None) => Err(self.missing(
                "rope_theta",
                "a number at the top level (transformers 4.x) or in rope_parameters.rope_theta (5.x)",
            )),
        }
    }

    /// Accepts a rope parameter object only when its type is absent, `"default"` (plain RoPE) or
    /// `"llama3"` (whose parameters [`family::rope_scaling`] reads).
    fn check_rope_type(&self, field: &str, params: &Value) -> Result<(), LoadError> {
        let Value::Object(obj) = params else {
            return Err(self.invalid(field, params, "a JSON object"));
        };
        // transformers 4.x wrote `type`, later versions `rope_type`.
        for key in ["rope_type", "type"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if t == "default" || t == "llama3" => {}
                Some(other) => {
                    return Err(self.unsupported(
                        &format!("{field}.{key}"),
                        &other.to_string(),
                        "this rope scaling is not implemented; expected \"default\", \"llama3\" or no rope_type",
                    ))
                }
            }
        }
        Ok(())
    }

    fn eos_token_ids(&self) -> Result<Vec<u32>, LoadError> {
        match self.map.get("eos_token_id") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| self.as_token_id("eos_token_id", v))
                .collect(),
            Some(v) => Ok(vec![self.as_token_id("eos_token_id", v)?]),
        }
    }

    fn token_id(&self, field: &str) -> Result<Option<u32>, LoadError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.as_token_id(field, v).map(Some),
        }
    }

    fn as_token_id(&self, field: &str, v: &Value) -> Result<u32, LoadError> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                self.invalid(
                    field,
                    v,
                    "a token id (integer in 0..2^32) or a list of them",
                )
            })
    }

    fn required_usize(&self, field: &str) -> Result<usize, LoadError> {
        self.usize(field)?
            .ok_or_else(|| self.missing(field, "a positive integer"))
    }

    fn usize(&self, field: &str) -> Result<Option<usize>, LoadError> {
        self.get(field, "a non-negative integer", |v| {
            v.as_u64().and_then(|n| usize::try_from(n).ok())
        })
    }

    fn f64(&self, field: &str) -> Result<Option<f64>, LoadError> {
        self.get(field, "a number", Value::as_f64)
    }

    fn bool(&self, field: &str) -> Result<Option<bool>, LoadError> {
        self.get(field, "true or false", Value::as_bool)
    }

    fn string(&self, field: &str) -> Result<Option<String>, LoadError> {
        self.get(field, "a string", |v| v.as_str().map(str::to_string))
    }

    /// The field converted by `conv`; absent or `null` is `None`, a value `conv` rejects is an
    /// [`LoadError::InvalidField`] saying `expected`.
    fn get<T>(
        &self,
        field: &str,
        expected: &str,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, LoadError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => conv(v)
                .map(Some)
                .ok_or_else(|| self.invalid(field, v, expected)),
        }
    }

    fn missing(&self, field: &str, expected: &str) -> LoadError {
        LoadError::MissingField {
            path: self.origin.into(),
            field: field.into(),
            expected: expected.into(),
        }
    }

    fn invalid(&self, field: &str, found: &Value, expected: &str) -> LoadError {
        LoadError::InvalidField {
            path: self.origin.into(),
            field: field.into(),
            found: found.to_string(),
            expected: expected.into(),
        }
    }

    fn unsupported(&self, field: &str, found: &str, why: &str) -> LoadError {
        LoadError::Unsupported {
            path: self.origin.into(),
            field: field.into(),
            found: found.into(),
            why: why.into(),
        }
    }
}

/// A short name of a JSON value's kind, for messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
