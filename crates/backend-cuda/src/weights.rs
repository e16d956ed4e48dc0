//! Load-time constants: weights read from a [`WeightSource`], weight-only `reshape` / `split` /
//! `concat` folded on the host (byte copies, e.g. packing `concat(Wq, Wk, Wv)` along axis 0), and the
//! upload of each constant once, in the form its consumers need (stored dtype, or upcast to f32).
//!
//! Host copies are kept only while another constant still needs them, so packing does not hold the
//! whole model twice.

use std::collections::HashMap;
use std::rc::Rc;

use braid_ir::{Graph, Op, TensorType, TensorView, Value, WeightSource};
use cudarc::driver::result;

use crate::device::{CudaDevice, DevPtr};
use crate::error::{CudaError, DriverContext};
use crate::plan::{Form, MemoryPlan};

/// A constant's bytes on the host: borrowed from the weight source, or built by folding.
#[derive(Clone)]
enum HostBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Rc<Vec<u8>>),
}

impl HostBytes<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            HostBytes::Borrowed(b) => b,
            HostBytes::Owned(v) => v,
        }
    }
}

/// Folds every constant of `plan` on the host and copies those the device needs into the weights
/// buffer at `base`. Returns the number of bytes uploaded.
///
/// Errors: [`CudaError::Weight`] when a weight is missing or differs from its declaration (dtype,
/// shape, byte length); [`CudaError::Driver`] when a copy fails.
pub(crate) fn upload_constants(
    dev: &CudaDevice,
    g: &Graph,
    plan: &MemoryPlan,
    source: &dyn WeightSource,
    base: DevPtr,
) -> Result<usize, CudaError> {
    dev.bind()?;
    // How many constant consumers still need each constant's host bytes.
    let mut pending: HashMap<Value, usize> = HashMap::new();
    for &n in &plan.order {
        if !plan.consts.contains(&n) {
            continue;
        }
        for v in g.inputs(n.node) {
            *pending.entry(v).or_default() += 1;
        }
    }
    let mut host: HashMap<Value, HostBytes<'_>> = HashMap::new();
    let mut uploaded = 0;
    for &n in &plan.order {
        if !plan.consts.contains(&n) {
            continue;
        }
        let node = g
            .node(n.node)
            .ok_or_else(|| CudaError::Graph(format!("node {} is missing", n.node.index())))?;
        let ins = g.inputs(n.node);
        let in_bytes: Vec<HostBytes<'_>> = ins
            .iter()
            .map(|v| {
                host.get(v).cloned().ok_or_else(|| {
                    CudaError::Graph(format!(
                        "constant {} is folded out of order",
                        plan.label(*v)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let in_types: Vec<&TensorType> = ins
            .iter()
            .map(|v| {
                g.value_type(*v)
                    .map_err(|e| CudaError::Graph(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let outs: Vec<HostBytes<'_>> = match &node.op {
            Op::Weight { name, ty } => vec![HostBytes::Borrowed(weight_bytes(source, name, ty)?)],
            Op::Reshape { .. } => vec![in_bytes[0].clone()],
            Op::Split { axis, sizes } => {
                split_bytes(in_bytes[0].as_slice(), in_types[0], *axis, sizes)
                    .into_iter()
                    .map(|b| HostBytes::Owned(Rc::new(b)))
                    .collect()
            }
            Op::Concat { axis } => {
                let parts: Vec<&[u8]> = in_bytes.iter().map(|b| b.as_slice()).collect();
                vec![HostBytes::Owned(Rc::new(concat_bytes(
                    &parts, &in_types, *axis,
                )))]
            }
            other => {
                return Err(CudaError::Graph(format!(
                    "{} = {} is not a foldable constant",
                    plan.label(n),
                    other.name()
                )))
            }
        };
        drop(in_bytes);
        for (o, bytes) in outs.into_iter().enumerate() {
            let v = Value {
                node: n.node,
                output: o as u32,
            };
            let ty = g
                .value_type(v)
                .map_err(|e| CudaError::Graph(e.to_string()))?;
            for form in [Form::Raw, Form::F32] {
                if let Some(&offset) = plan.const_places.get(&(v, form)) {
                    uploaded += upload(
                        dev,
                        plan,
                        v,
                        ty,
                        form,
                        bytes.as_slice(),
                        base + offset as u64,
                    )?;
                }
            }
            if pending.get(&v).copied().unwrap_or(0) > 0 {
                host.insert(v, bytes);
            }
        }
        for v in ins {
            if let Some(c) = pending.get_mut(&v) {
                *c -= 1;
                if *c == 0 {
                    host.remove(&v);
                }
            }
        }
    }
    Ok(uploaded)
}

fn weight_bytes<'a>(
    source: &'a dyn WeightSource,
    name: &str,
    ty: &TensorType,
) -> Result<&'a [u8], CudaError> {
    let err = |msg: String| CudaError::Weight {
        name: name.to_string(),
        msg,
    };
    let view: TensorView<'a> = source.get(name).ok_or_else(|| {
        err(format!(
            "missing from the weights (the graph declares {ty})"
        ))
    })?;
    if view.dtype != ty.dtype || view.shape != ty.shape.as_slice() {
        return Err(err(format!(
            "is {} in the weights, but the graph declares {ty}",
            view.ty()
        )));
    }
    if view.bytes.len() != ty.size_bytes() {
        return Err(err(format!(
            "holds {} bytes, expected {} for {ty}",
            view.bytes.len(),
            ty.size_bytes()
        )));
    }
    Ok(view.bytes)
}

fn upload(
    dev: &CudaDevice,
    plan: &MemoryPlan,
    v: Value,
    ty: &TensorType,
    form: Form,
    bytes: &[u8],
    dst: DevPtr,
) -> Result<usize, CudaError> {
    let converted;
    let data: &[u8] = match form {
        Form::Raw => bytes,
        Form::F32 => {
            let view = TensorView {
                dtype: ty.dtype,
                shape: &ty.shape,
                bytes,
            };
            let f = view.to_f32().ok_or_else(|| CudaError::Weight {
                name: plan.label(v),
                msg: format!("cannot be upcast to f32 from {ty}"),
            })?;
            converted = f.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            &converted
        }
    };
    dev.bind()?;
    // SAFETY: `dst` points into the weights buffer, which the plan sized to hold this constant in
    // this form at this offset; the copy is synchronous, so `data` outlives it.
    unsafe { result::memcpy_htod_sync(dst, data) }
        .ctx(|| format!("uploading constant {} ({ty}, {form:?})", plan.label(v)))?;
    Ok(data.len())
}

/// `(outer, inner bytes)` of a tensor seen around `axis`: `outer` = product of the dims before it,
/// `inner` = bytes of one step along it.
fn around_axis(ty: &TensorType, axis: usize) -> (usize, usize) {
    let outer: usize = ty.shape[..axis].iter().product();
    let inner: usize = ty.shape[axis + 1..].iter().product::<usize>() * ty.dtype.size_bytes();
    (outer, inner)
}

/// The bytes of each slice of a split of `bytes` (type `ty`) along `axis`.
pub(crate) fn split_bytes(
    bytes: &[u8],
    ty: &TensorType,
    axis: usize,
    sizes: &[usize],
) -> Vec<Vec<u8>> {
    let (outer, inner) = around_axis(ty, axis);
    let row = ty.shape[axis] * inner;
    let mut at = 0;
    sizes
        .iter()
        .map(|&s| {
            let mut out = Vec::with_capacity(outer * s * inner);
            for o in 0..outer {
                let start = o * row + at * inner;
                out.extend_from_slice(&bytes[start..start + s * inner]);
            }
            at += s;
            out
        })
        .collect()
}

/// The bytes of the concatenation of `parts` (types `types`, equal outside `axis`) along `axis`.
pub(crate) fn concat_bytes(parts: &[&[u8]], types: &[&TensorType], axis: usize) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total);
    let Some(first) = types.first() else {
        return out;
    };
    let (outer, _) = around_axis(first, axis);
    for o in 0..outer {
        for (p, ty) in parts.iter().zip(types) {
            let (_, inner) = around_axis(ty, axis);
            let row = ty.shape[axis] * inner;
            out.extend_from_slice(&p[o * row..(o + 1) * row]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_ir::DType;

    #[test]
    fn concat_then_split_along_a_middle_axis_round_trips() {
        let a_ty = TensorType::new(DType::BF16, [2, 3, 2]);
        let b_ty = TensorType::new(DType::BF16, [2, 1, 2]);
        let a: Vec<u8> = (0..a_ty.size_bytes() as u8).collect();
        let b: Vec<u8> = (100..100 + b_ty.size_bytes() as u8).collect();
        let cat = concat_bytes(&[&a, &b], &[&a_ty, &b_ty], 1);
        let cat_ty = TensorType::new(DType::BF16, [2, 4, 2]);
        let parts = split_bytes(&cat, &cat_ty, 1, &[3, 1]);
        assert_eq!(parts[0], a);
        assert_eq!(parts[1], b);
        // Axis 0 is a plain byte concatenation.
        let c_ty = TensorType::new(DType::BF16, [1, 3, 2]);
        let c: Vec<u8> = (200..200 + c_ty.size_bytes() as u8).collect();
        let cat = concat_bytes(&[&a, &c], &[&a_ty, &c_ty], 0);
        assert_eq!(cat, [a.clone(), c.clone()].concat());
    }

    #[test]
    fn concat_along_the_last_axis_interleaves_rows() {
        let ty = TensorType::new(DType::F32, [2, 1]);
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [3.0f32, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let cat = concat_bytes(&[&a, &b], &[&ty, &ty], 1);
        let vals: Vec<f32> = cat
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(vals, [1.0, 3.0, 2.0, 4.0]);
    }
}
