//! The KV-cache state the interpreter carries across decode steps.

use std::collections::HashMap;

use half::{bf16, f16};

use crate::tensor::Tensor;
use crate::types::{DType, TensorType};

/// KV-cache contents keyed by `kv_cache` leaf name. Each cache is a [`Tensor`] of the declared type
/// `[max_context, kv_heads, head_dim]` (dtype bf16, f16 or f32) whose elements are stored as f32
/// already rounded to that dtype, so reading a row back gives what a device cache of that dtype holds.
/// A cache is allocated, zeroed, on its first use.
#[derive(Clone, Debug, Default)]
pub struct KvState {
    caches: HashMap<String, Tensor>,
}

impl KvState {
    /// An empty state (no cache allocated yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every cache; the next use allocates it again, zeroed.
    pub fn clear(&mut self) {
        self.caches.clear();
    }

    /// Zeroes every cache in place, keeping its memory (a new sequence).
    pub fn zero(&mut self) {
        for t in self.caches.values_mut() {
            t.data.fill(0.0);
        }
    }

    /// The cache called `name` (`[max_context, kv_heads, head_dim]`, declared dtype, f32 data), if it
    /// has been used.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.caches.get(name)
    }

    /// Number of allocated caches.
    pub fn len(&self) -> usize {
        self.caches.len()
    }

    /// Whether no cache has been allocated.
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    /// The cache `name` of type `ty`, allocated zeroed on first use. Errors when it exists with another
    /// type (two graphs disagreeing on one cache) or `ty` is not a float type.
    pub(super) fn entry(&mut self, name: &str, ty: &TensorType) -> Result<&mut Tensor, String> {
        if !ty.dtype.is_float() {
            return Err(format!(
                "kv_cache @{name} must be bf16, f16 or f32, got {ty}"
            ));
        }
        let t = self
            .caches
            .entry(name.to_string())
            .or_insert_with(|| Tensor {
                ty: ty.clone(),
                data: vec![0.0; ty.numel()],
                ints: Vec::new(),
            });
        if t.ty != *ty {
            return Err(format!(
                "kv_cache @{name} is declared {ty} but the interpreter state holds it as {}",
                t.ty
            ));
        }
        Ok(t)
    }

    /// Writes `values` (`[kv_heads, head_dim]`) into row `position` of cache `name`, rounding each to
    /// the cache dtype (round-to-nearest-even, as `half` converts). The caller checked `position`.
    pub(super) fn store_row(
        &mut self,
        name: &str,
        ty: &TensorType,
        position: usize,
        values: &[f32],
    ) -> Result<(), String> {
        let t = self.entry(name, ty)?;
        let row = values.len();
        let dst = t
            .data
            .get_mut(position * row..(position + 1) * row)
            .ok_or_else(|| format!("row {position} is outside kv_cache @{name} {ty}"))?;
        let dtype = ty.dtype;
        for (d, v) in dst.iter_mut().zip(values) {
            *d = round_to(dtype, *v);
        }
        Ok(())
    }
}

/// `v` rounded to `dtype` and back to f32 (f32 and i32 unchanged; the caller rejects i32).
fn round_to(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::BF16 => bf16::from_f32(v).to_f32(),
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::F32 | DType::I32 => v,
    }
}
