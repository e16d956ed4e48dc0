//! Reference logits from transformers (`reference.safetensors`, written by
//! `scripts/make_checkpoint.py`) and the comparison `braid check` prints.

use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

/// Teacher-forced reference: input ids and transformers' logits at every position.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Input ids `[T]`.
    pub tokens: Vec<u32>,
    /// Vocabulary size `V`.
    pub vocab: usize,
    /// transformers' float32 forward (bf16 weights upcast), `[T, V]` row-major: the oracle.
    pub logits_f32: Vec<f32>,
    /// transformers' bf16 forward on the same tokens, `[T, V]`: sets the bar for bf16 backends.
    pub logits_bf16: Vec<f32>,
    /// transformers' greedy continuation of the first `prompt_len` tokens (may be empty).
    pub greedy: Vec<u32>,
    pub prompt_len: usize,
}

fn tensor_f32(st: &SafeTensors, file: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("{}: tensor `{name}` is missing", file.display()))?;
    if t.dtype() != Dtype::F32 {
        bail!(
            "{}: tensor `{name}` must be F32, found {:?}",
            file.display(),
            t.dtype()
        );
    }
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((t.shape().to_vec(), data))
}

fn tensor_ids(st: &SafeTensors, file: &Path, name: &str) -> Result<Vec<u32>> {
    let t = st
        .tensor(name)
        .with_context(|| format!("{}: tensor `{name}` is missing", file.display()))?;
    if t.dtype() != Dtype::I32 || t.shape().len() != 1 {
        bail!(
            "{}: tensor `{name}` must be I32 [n], found {:?} {:?}",
            file.display(),
            t.dtype(),
            t.shape()
        );
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
        .collect())
}

impl Reference {
    /// Reads a reference file. Errors name the file and the tensor that is missing or malformed.
    pub fn load(path: &Path) -> Result<Reference> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading reference {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
        let tokens = tensor_ids(&st, path, "tokens")?;
        let (shape, logits_f32) = tensor_f32(&st, path, "logits_f32")?;
        if shape.len() != 2 || shape[0] != tokens.len() {
            bail!(
                "{}: logits_f32 must be [{}, vocab], found {shape:?}",
                path.display(),
                tokens.len()
            );
        }
        let (shape16, logits_bf16) = tensor_f32(&st, path, "logits_bf16")?;
        if shape16 != shape {
            bail!(
                "{}: logits_bf16 must match logits_f32 {shape:?}, found {shape16:?}",
                path.display()
            );
        }
        let greedy = match st.tensor("greedy") {
            Ok(_) => tensor_ids(&st, path, "greedy")?,
            Err(_) => Vec::new(),
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{}: unreadable header", path.display()))?;
        let prompt_len = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("prompt_len"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(Reference {
            tokens,
            vocab: shape[1],
            logits_f32,
            logits_bf16,
            greedy,
            prompt_len,
        })
    }

    /// The oracle's logits at position `t`.
    pub fn oracle(&self, t: usize) -> &[f32] {
        &self.logits_f32[t * self.vocab..(t + 1) * self.vocab]
    }

    /// transformers-bf16's logits at position `t`.
    pub fn bf16(&self, t: usize) -> &[f32] {
        &self.logits_bf16[t * self.vocab..(t + 1) * self.vocab]
    }
}

/// Relative L2 error `‖a − b‖ / ‖b‖` (b is the reference).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Largest absolute difference.
pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

/// One position's comparison with the oracle.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionError {
    pub rel_l2: f64,
    pub max_abs: f64,
    pub top1_agrees: bool,
}

/// Compares `logits` (one position) with `oracle`.
pub fn compare(logits: &[f32], oracle: &[f32]) -> PositionError {
    PositionError {
        rel_l2: rel_l2(logits, oracle),
        max_abs: max_abs(logits, oracle),
        top1_agrees: crate::sampling::argmax(logits) == crate::sampling::argmax(oracle),
    }
}

/// Summary over positions: overall relative L2 (all positions flattened), the worst position's, and
/// top-1 agreement in percent.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub positions: usize,
    pub rel_l2: f64,
    pub worst_rel_l2: f64,
    pub max_abs: f64,
    pub top1_percent: f64,
}

/// Summarises per-position errors; `rel_l2` is computed over the concatenated logits.
pub fn summarize(per_pos: &[PositionError], all: &[f32], oracle: &[f32]) -> Summary {
    let n = per_pos.len().max(1) as f64;
    Summary {
        positions: per_pos.len(),
        rel_l2: rel_l2(all, oracle),
        worst_rel_l2: per_pos.iter().map(|p| p.rel_l2).fold(0.0, f64::max),
        max_abs: per_pos.iter().map(|p| p.max_abs).fold(0.0, f64::max),
        top1_percent: 100.0 * per_pos.iter().filter(|p| p.top1_agrees).count() as f64 / n,
    }
}
