//! The interpreter's runtime values: f32 data (activations and upcast weights, shared by `Arc` so a
//! cached weight or a `reshape` costs no copy), i32 data, or a reference to a KV cache.

use std::sync::Arc;

use super::kv::KvState;
use crate::tensor::Tensor;
use crate::types::TensorType;

/// One value of a running graph, with its IR type (a bf16 weight keeps `bf16[..]` here while its data
/// is the f32 upcast).
#[derive(Clone, Debug)]
pub(super) enum Val {
    Float {
        ty: TensorType,
        data: Arc<Vec<f32>>,
    },
    Int {
        ty: TensorType,
        ints: Arc<Vec<i32>>,
    },
    /// A `kv_cache` leaf: its contents live in [`KvState`] under `name`.
    Cache {
        name: String,
        ty: TensorType,
    },
}

impl Val {
    /// A float value of type `ty`.
    pub(super) fn float(ty: TensorType, data: Vec<f32>) -> Val {
        Val::Float {
            ty,
            data: Arc::new(data),
        }
    }

    /// The value's IR type.
    pub(super) fn ty(&self) -> &TensorType {
        match self {
            Val::Float { ty, .. } | Val::Int { ty, .. } | Val::Cache { ty, .. } => ty,
        }
    }

    /// The f32 data; errors for i32 values and KV caches (which only `attention` reads).
    pub(super) fn floats(&self, what: &str) -> Result<&[f32], String> {
        match self {
            Val::Float { data, .. } => Ok(data),
            _ => Err(format!("expects float data for {what}, got {}", self.ty())),
        }
    }

    /// The i32 data; errors for float values.
    pub(super) fn ints(&self, what: &str) -> Result<&[i32], String> {
        match self {
            Val::Int { ints, .. } => Ok(ints),
            _ => Err(format!("expects i32 data for {what}, got {}", self.ty())),
        }
    }

    /// Number of stored elements (for a cache, its declared size).
    pub(super) fn len(&self) -> usize {
        match self {
            Val::Float { data, .. } => data.len(),
            Val::Int { ints, .. } => ints.len(),
            Val::Cache { ty, .. } => ty.numel(),
        }
    }

    /// The same data under another type (`reshape`; the element counts were checked).
    pub(super) fn retyped(&self, ty: TensorType) -> Val {
        match self {
            Val::Float { data, .. } => Val::Float {
                ty,
                data: data.clone(),
            },
            Val::Int { ints, .. } => Val::Int {
                ty,
                ints: ints.clone(),
            },
            Val::Cache { name, .. } => Val::Cache {
                name: name.clone(),
                ty,
            },
        }
    }

    /// A KV cache as a plain float value: a snapshot of its current contents (zeros before its first
    /// write). Other values are returned unchanged.
    pub(super) fn materialize(self, kv: &mut KvState) -> Result<Val, String> {
        match self {
            Val::Cache { name, ty } => {
                let t = kv.entry(&name, &ty)?;
                Ok(Val::float(ty, t.data.clone()))
            }
            v => Ok(v),
        }
    }

    /// The value as an owned [`Tensor`] (a KV cache as a snapshot).
    pub(super) fn into_tensor(self, kv: &mut KvState) -> Result<Tensor, String> {
        Ok(match self {
            Val::Float { ty, data } => Tensor {
                ty,
                data: Arc::try_unwrap(data).unwrap_or_else(|a| a.as_ref().clone()),
                ints: Vec::new(),
            },
            Val::Int { ty, ints } => Tensor {
                ty,
                data: Vec::new(),
                ints: Arc::try_unwrap(ints).unwrap_or_else(|a| a.as_ref().clone()),
            },
            Val::Cache { name, ty } => kv.entry(&name, &ty)?.clone(),
        })
    }
}
