//! Host tensors: owned activations for the interpreter and borrowed weight views.

use std::collections::HashMap;

use half::{bf16, f16};

use crate::types::{DType, TensorType};

/// An owned host tensor. Float tensors of any dtype are held as f32 (`data`); i32 tensors in `ints`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub ty: TensorType,
    /// Elements of a float tensor, row-major, upcast to f32; empty for i32 tensors.
    pub data: Vec<f32>,
    /// Elements of an i32 tensor; empty for float tensors.
    pub ints: Vec<i32>,
}

impl Tensor {
    /// A float tensor of the given shape (dtype f32). Panics if `data.len()` is not the shape's size.
    pub fn f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Tensor {
        let ty = TensorType::new(DType::F32, shape);
        assert_eq!(ty.numel(), data.len(), "data length does not match {ty}");
        Tensor {
            ty,
            data,
            ints: Vec::new(),
        }
    }

    /// An i32 tensor of the given shape. Panics if `ints.len()` is not the shape's size.
    pub fn i32(shape: impl Into<Vec<usize>>, ints: Vec<i32>) -> Tensor {
        let ty = TensorType::new(DType::I32, shape);
        assert_eq!(ty.numel(), ints.len(), "data length does not match {ty}");
        Tensor {
            ty,
            data: Vec::new(),
            ints,
        }
    }
}

/// A borrowed weight: its dtype, shape and raw little-endian bytes (as stored in safetensors).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    /// The view's type.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype, self.shape)
    }

    /// The elements upcast to f32 (bf16/f16/f32), or `None` for an i32 view or a byte length that
    /// does not match the shape.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let n: usize = self.shape.iter().product();
        if self.bytes.len() != n * self.dtype.size_bytes() {
            return None;
        }
        let words = |w: usize| self.bytes.chunks_exact(w);
        Some(match self.dtype {
            DType::BF16 => words(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F16 => words(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F32 => words(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::I32 => return None,
        })
    }
}

/// Where weights come from, by name: the runtime's safetensors files, or an in-memory map in tests.
pub trait WeightSource {
    /// The weight called `name`, if present.
    fn get(&self, name: &str) -> Option<TensorView<'_>>;
}

/// An owned weight stored as raw bytes; the in-memory [`WeightSource`] is a `HashMap` of these.
#[derive(Clone, Debug, PartialEq)]
pub struct HostWeight {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl HostWeight {
    /// Encodes f32 values as `dtype` (bf16/f16/f32, round-to-nearest-even). Panics for i32 or when
    /// `values.len()` does not match the shape.
    pub fn from_f32(dtype: DType, shape: impl Into<Vec<usize>>, values: &[f32]) -> HostWeight {
        let shape = shape.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "values do not match shape"
        );
        let bytes = match dtype {
            DType::BF16 => values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect(),
            DType::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::I32 => panic!("HostWeight::from_f32 needs a float dtype"),
        };
        HostWeight {
            dtype,
            shape,
            bytes,
        }
    }

    /// A view of this weight.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            bytes: &self.bytes,
        }
    }
}

impl WeightSource for HashMap<String, HostWeight> {
    fn get(&self, name: &str) -> Option<TensorView<'_>> {
        HashMap::get(self, name).map(HostWeight::view)
    }
}
