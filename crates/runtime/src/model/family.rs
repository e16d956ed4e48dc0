//! Decoder families: which Hugging Face architecture a `config.json` describes, and the few
//! things in which the supported families differ. Everything else (pre-norm residual layers,
//! RMSNorm, GQA attention scaled by `head_dim^-0.5`, rotate-half RoPE, SwiGLU MLP, final norm,
//! tied or untied LM head) is the same decoder, lowered once by [`crate::decoder`].
//!
//! | family | `architectures` | `model_type` | q/k RMSNorm | q/k/v bias | o_proj bias |
//! | --- | --- | --- | --- | --- | --- |
//! | [`Family::Qwen3`] | `Qwen3ForCausalLM` | `qwen3` | yes | `attention_bias` | `attention_bias` |
//! | [`Family::Qwen2`] | `Qwen2ForCausalLM` | `qwen2` | no | always | never |
//! | [`Family::Llama`] | `LlamaForCausalLM` | `llama` | no | `attention_bias` | `attention_bias` |
//!
//! Sources (transformers 5.24): `models/qwen3/modeling_qwen3.py` (`Qwen3Attention`: every
//! projection `bias=config.attention_bias`, `q_norm`/`k_norm` over `head_dim`),
//! `models/qwen2/modeling_qwen2.py` (`Qwen2Attention`: q/k/v `bias=True`, o_proj `bias=False`),
//! `models/llama/modeling_llama.py` (`LlamaAttention`: `bias=config.attention_bias`; `LlamaMLP`:
//! `bias=config.mlp_bias`, which braid refuses). Defaults come from each family's
//! `configuration_*.py`.
//!
//! Rope frequencies are not a family trait: any family may carry `rope_scaling` /
//! `rope_parameters` of type `default` or `llama3` ([`rope_scaling`]).

use std::path::Path;

use braid_ir::RopeScaling;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serializer;
use serde_json::{Map, Value};

use super::error::LoadError;

/// A decoder architecture braid lowers. Chosen from `config.json`'s `architectures` (when present)
/// and `model_type`, which must agree ([`Family::detect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `Qwen3ForCausalLM` (Qwen3): per-head q/k RMSNorm before rope.
    Qwen3,
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5): q/k/v projections with a bias.
    Qwen2,
    /// `LlamaForCausalLM` (Llama 2/3.x, SmolLM2, TinyLlama): the plain decoder.
    Llama,
}

impl Family {
    /// Every supported family, in the order error messages list them.
    pub const ALL: [Family; 3] = [Family::Qwen3, Family::Qwen2, Family::Llama];

    /// The transformers class name written in `architectures`, e.g. `LlamaForCausalLM`.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Qwen3 => "Qwen3ForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Llama => "LlamaForCausalLM",
        }
    }

    /// The config's `model_type`, e.g. `llama`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Qwen3 => "qwen3",
            Family::Qwen2 => "qwen2",
            Family::Llama => "llama",
        }
    }

    /// A short name for people: `Qwen3`, `Qwen2`, `Llama`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen3 => "Qwen3",
            Family::Qwen2 => "Qwen2",
            Family::Llama => "Llama",
        }
    }

    /// The family whose `architectures` entry is `arch`.
    pub fn from_architecture(arch: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.architecture() == arch)
    }

    /// The family whose `model_type` is `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.model_type() == model_type)
    }

    /// `Qwen3ForCausalLM (model_type "qwen3"), Qwen2ForCausalLM (...), LlamaForCausalLM (...)`.
    pub fn supported() -> String {
        Family::ALL
            .iter()
            .map(|f| format!("{} (model_type {:?})", f.architecture(), f.model_type()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether q and k get a per-head RMSNorm over `head_dim` before rope
    /// (`self_attn.{q,k}_norm.weight [head_dim]`): Qwen3 only.
    pub fn has_qk_norm(self) -> bool {
        self == Family::Qwen3
    }

    /// Whether q/k/v projections add a bias `[n]` (`self_attn.{q,k,v}_proj.bias`), given the
    /// config's `attention_bias`: always for Qwen2, `attention_bias` for the others.
    pub fn qkv_bias(self, attention_bias: bool) -> bool {
        self == Family::Qwen2 || attention_bias
    }

    /// Whether o_proj adds a bias `[hidden]` (`self_attn.o_proj.bias`): never for Qwen2,
    /// `attention_bias` for the others.
    pub fn o_bias(self, attention_bias: bool) -> bool {
        self != Family::Qwen2 && attention_bias
    }

    /// `head_dim` when the config has none: Qwen3Config's default is 128; Qwen2 and Llama take
    /// `hidden_size / num_attention_heads` (`None` when that does not divide).
    pub fn default_head_dim(self, hidden_size: usize, num_attention_heads: usize) -> Option<usize> {
        match self {
            Family::Qwen3 => Some(128),
            Family::Qwen2 | Family::Llama => (num_attention_heads > 0
                && hidden_size.is_multiple_of(num_attention_heads))
            .then(|| hidden_size / num_attention_heads),
        }
    }

    /// `num_key_value_heads` when the config has none: 32 in Qwen3Config and Qwen2Config,
    /// `num_attention_heads` in LlamaConfig.
    pub fn default_kv_heads(self, num_attention_heads: usize) -> usize {
        match self {
            Family::Qwen3 | Family::Qwen2 => 32,
            Family::Llama => num_attention_heads,
        }
    }

    /// `max_position_embeddings` when the config has none: 32768 (Qwen3, Qwen2), 2048 (Llama).
    pub fn default_max_position_embeddings(self) -> usize {
        match self {
            Family::Qwen3 | Family::Qwen2 => 32_768,
            Family::Llama => 2048,
        }
    }

    /// The family of a parsed `config.json` object: the supported class named in `architectures`
    /// (when the field is there), which must agree with `model_type`; else the family of
    /// `model_type`. `origin` names the file in errors.
    ///
    /// Errors: [`LoadError::Unsupported`] naming the `architectures` / `model_type` found and
    /// listing the supported ones ([`Family::supported`]); [`LoadError::InvalidField`] when
    /// `architectures` is not a list of strings, names two supported families, or disagrees with
    /// `model_type`.
    pub fn detect(
        map: &Map<String, Value>,
        model_type: &str,
        origin: &Path,
    ) -> Result<Family, LoadError> {
        let invalid = |field: &str, found: String, expected: String| LoadError::InvalidField {
            path: origin.into(),
            field: field.into(),
            found,
            expected,
        };
        let archs: Vec<&str> = match map.get("architectures") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(
                        "architectures",
                        Value::Array(items.clone()).to_string(),
                        "a list of class names such as [\"LlamaForCausalLM\"]".into(),
                    )
                })?,
            Some(other) => {
                return Err(invalid(
                    "architectures",
                    other.to_string(),
                    "a list of class names such as [\"LlamaForCausalLM\"]".into(),
                ))
            }
        };
        let mut named: Vec<Family> = archs
            .iter()
            .filter_map(|a| Family::from_architecture(a))
            .collect();
        named.dedup();
        let unsupported = |field: &str, found: String| LoadError::Unsupported {
            path: origin.into(),
            field: field.into(),
            found,
            why: format!(
                "{}, model_type {model_type:?}; braid lowers {}",
                if archs.is_empty() {
                    "no architectures".to_string()
                } else {
                    format!("architectures {archs:?}")
                },
                Family::supported()
            ),
        };
        match named.as_slice() {
            [] if !archs.is_empty() => Err(unsupported("architectures", format!("{archs:?}"))),
            [] => Family::from_model_type(model_type)
                .ok_or_else(|| unsupported("model_type", format!("{model_type:?}"))),
            [family] if family.model_type() == model_type => Ok(*family),
            [family] => Err(invalid(
                "model_type",
                format!("{model_type:?}"),
                format!(
                    "{:?}, the model_type of {} named in architectures",
                    family.model_type(),
                    family.architecture()
                ),
            )),
            _ => Err(invalid(
                "architectures",
                format!("{archs:?}"),
                "one model class (this names several supported ones)".into(),
            )),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The rope frequencies a config asks for, from `rope_scaling` (transformers 4.x) and
/// `rope_parameters` (5.x, which also holds `rope_theta`); when both are present they must agree.
/// Either may be absent or `null` ([`RopeScaling::Default`]). `max_position_embeddings` is the
/// default of llama3's `original_max_position_embeddings`, as in transformers'
/// `standardize_rope_params`.
///
/// Accepted: `rope_type` (or 4.x `type`) absent, `"default"` or `"llama3"`; llama3 reads `factor`,
/// `low_freq_factor`, `high_freq_factor` and `original_max_position_embeddings`
/// (`_compute_llama3_parameters` in transformers' `modeling_rope_utils.py`).
///
/// Errors: [`LoadError::Unsupported`] for another rope type or a `partial_rotary_factor` other
/// than 1; [`LoadError::MissingField`] for a llama3 parameter that is absent;
/// [`LoadError::InvalidField`] for a value of the wrong JSON type, parameters that
/// [`RopeScaling::validate`] rejects, or `rope_scaling` and `rope_parameters` that disagree.
pub fn rope_scaling(
    map: &Map<String, Value>,
    max_position_embeddings: usize,
    origin: &Path,
) -> Result<RopeScaling, LoadError> {
    if let Some(p) = map.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        check_partial_rotary(p, "partial_rotary_factor", origin)?;
    }
    let mut found: Vec<(&str, RopeScaling)> = Vec::new();
    for field in ["rope_scaling", "rope_parameters"] {
        let Some(params) = map.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        found.push((
            field,
            one_rope_scaling(field, params, max_position_embeddings, origin)?,
        ));
    }
    match found.as_slice() {
        [] => Ok(RopeScaling::Default),
        [(_, s)] => Ok(s.clone()),
        [(_, a), (_, b)] if a == b => Ok(a.clone()),
        [(_, a), (_, b), ..] => Err(LoadError::InvalidField {
            path: origin.into(),
            field: "rope_scaling".into(),
            found: format!("{a:?}"),
            expected: format!("the same rope scaling as rope_parameters ({b:?})"),
        }),
    }
}

/// One rope parameter object (`field` names it in errors).
fn one_rope_scaling(
    field: &str,
    params: &Value,
    max_position_embeddings: usize,
    origin: &Path,
) -> Result<RopeScaling, LoadError> {
    let invalid = |key: &str, found: &Value, expected: &str| LoadError::InvalidField {
        path: origin.into(),
        field: format!("{field}.{key}"),
        found: found.to_string(),
        expected: expected.into(),
    };
    let Value::Object(obj) = params else {
        return Err(LoadError::InvalidField {
            path: origin.into(),
            field: field.into(),
            found: params.to_string(),
            expected: "a JSON object".into(),
        });
    };
    if let Some(p) = obj.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        check_partial_rotary(p, &format!("{field}.partial_rotary_factor"), origin)?;
    }
    // transformers 4.x wrote `type`, later versions `rope_type`.
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let (key, rope_type) = match (get("rope_type"), get("type")) {
        (Some(Value::String(t)), _) => ("rope_type", t.as_str()),
        (None, Some(Value::String(t))) => ("type", t.as_str()),
        (None, None) => ("rope_type", "default"),
        (Some(v), _) => return Err(invalid("rope_type", v, "a string such as \"llama3\"")),
        (None, Some(v)) => return Err(invalid("type", v, "a string such as \"llama3\"")),
    };
    match rope_type {
        "default" => Ok(RopeScaling::Default),
        "llama3" => {
            let number = |k: &str| -> Result<f32, LoadError> {
                match obj.get(k) {
                    None | Some(Value::Null) => Err(LoadError::MissingField {
                        path: origin.into(),
                        field: format!("{field}.{k}"),
                        expected: "a number (llama3 rope scaling needs it)".into(),
                    }),
                    Some(v) => v
                        .as_f64()
                        .map(|x| x as f32)
                        .ok_or_else(|| invalid(k, v, "a number")),
                }
            };
            let old = match obj.get("original_max_position_embeddings") {
                None | Some(Value::Null) => max_position_embeddings,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(
                            "original_max_position_embeddings",
                            v,
                            "a non-negative integer",
                        )
                    })?,
            };
            let scaling = RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: old,
            };
            scaling.validate().map_err(|e| LoadError::InvalidField {
                path: origin.into(),
                field: field.into(),
                found: params.to_string(),
                expected: format!("valid llama3 parameters (rope {e})"),
            })?;
            Ok(scaling)
        }
        other => Err(LoadError::Unsupported {
            path: origin.into(),
            field: format!("{field}.{key}"),
            found: format!("{other:?}"),
            why: "this rope scaling is not implemented; expected \"default\" or \"llama3\"".into(),
        }),
    }
}

/// Refuses a `partial_rotary_factor` other than 1 (rope over part of each head).
fn check_partial_rotary(v: &Value, field: &str, origin: &Path) -> Result<(), LoadError> {
    if v.as_f64() == Some(1.0) {
        return Ok(());
    }
    Err(LoadError::Unsupported {
        path: origin.into(),
        field: field.into(),
        found: v.to_string(),
        why: "rope over part of each head is not implemented; expected 1".into(),
    })
}

/// Refuses what the families' configs can ask for but the decoder lowering does not implement:
/// `mlp_bias` (Llama's MLP projections with a bias), and sliding-window layers in `layer_types`
/// (entries other than `full_attention` when `use_sliding_window` is on; transformers ignores
/// `sliding_attention` entries otherwise, since it then sets `sliding_window` to `None`).
///
/// Errors: [`LoadError::Unsupported`] naming the field; [`LoadError::InvalidField`] for a
/// `layer_types` that is not a list of strings.
pub fn check_unsupported(map: &Map<String, Value>, origin: &Path) -> Result<(), LoadError> {
    if map.get("mlp_bias") == Some(&Value::Bool(true)) {
        return Err(LoadError::Unsupported {
            path: origin.into(),
            field: "mlp_bias".into(),
            found: "true".into(),
            why: "MLP projections with a bias are not implemented".into(),
        });
    }
    let sliding = map.get("use_sliding_window") == Some(&Value::Bool(true));
    match map.get("layer_types") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some("full_attention") => {}
                    Some("sliding_attention") if !sliding => {}
                    Some(other) => {
                        return Err(LoadError::Unsupported {
                            path: origin.into(),
                            field: format!("layer_types[{i}]"),
                            found: format!("{other:?}"),
                            why: "only full-attention layers are implemented".into(),
                        })
                    }
                    None => {
                        return Err(LoadError::InvalidField {
                            path: origin.into(),
                            field: format!("layer_types[{i}]"),
                            found: item.to_string(),
                            expected: "a layer type string such as \"full_attention\"".into(),
                        })
                    }
                }
            }
        }
        Some(other) => {
            return Err(LoadError::InvalidField {
                path: origin.into(),
                field: "layer_types".into(),
                found: other.to_string(),
                expected: "a list of layer type strings".into(),
            })
        }
    }
    Ok(())
}

/// Serializes a family as `config.json`'s `architectures: ["LlamaForCausalLM"]`.
pub(crate) fn serialize_architectures<S: Serializer>(
    family: &Family,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(1))?;
    seq.serialize_element(family.architecture())?;
    seq.end()
}

/// Serializes rope scaling in transformers 4.x form, `rope_scaling: {"rope_type": "llama3",
/// "factor": .., ..}` (`null` for the default, which callers skip).
pub(crate) fn serialize_rope_scaling<S: Serializer>(
    scaling: &RopeScaling,
    s: S,
) -> Result<S::Ok, S::Error> {
    match scaling {
        RopeScaling::Default => s.serialize_none(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let mut m = s.serialize_map(Some(5))?;
            m.serialize_entry("rope_type", "llama3")?;
            m.serialize_entry("factor", factor)?;
            m.serialize_entry("low_freq_factor", low_freq_factor)?;
            m.serialize_entry("high_freq_factor", high_freq_factor)?;
            m.serialize_entry(
                "original_max_position_embeddings",
                original_max_position_embeddings,
            )?;
            m.end()
        }
    }
}
