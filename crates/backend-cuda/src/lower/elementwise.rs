//! `add`, `mul`, `silu`, and `split` (when not a view) / `concat` as strided copies
//! (`kernels/elementwise.cu`). Grid-stride loops, 256 threads per block, at most 8 blocks per
//! multiprocessor.

use braid_ir::{DType, Op, Value};

use super::Cx;
use crate::error::CudaError;
use crate::facts::KernelRef;
use crate::params::{Copy2dParams, EwParams, Params, Ptr};
use crate::plan::PlannedLaunch;

/// Blocks of a grid-stride loop over `len` elements.
fn blocks(cx: &Cx<'_>, len: usize) -> u32 {
    len.div_ceil(256)
        .clamp(1, 8 * cx.target.facts.sm_count as usize) as u32
}

/// `add`, `mul` (two f32 operands of one shape, or `b` one row `[n]` broadcast over `a [T, n]`) or
/// `silu` (one).
pub(super) fn lower(cx: &mut Cx<'_>, n: Value, op: &Op) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let a = v.operand(n, 0)?;
    v.expect(n, "a", &a, DType::F32)?;
    let len = a.ty.numel();
    let (kernel, b, nb, bytes) = match op {
        Op::Add | Op::Mul => {
            let b = v.operand(n, 1)?;
            v.expect(n, "b", &b, DType::F32)?;
            // The IR's rule: b has a's shape, or is one row `[n]` repeated over a's rows (a
            // projection bias over a prefill chunk); the kernel reads `b[i % nb]`.
            let row = a.ty.shape.last().copied().unwrap_or(1);
            if b.ty.numel() != len && b.ty.shape != [row] {
                return Err(v.unsupported(
                    n,
                    format!(
                        "elementwise operands must have one shape, or b one row of a, got {} and {}",
                        a.ty, b.ty
                    ),
                ));
            }
            let k = if matches!(op, Op::Add) {
                "ew_add_f32"
            } else {
                "ew_mul_f32"
            };
            (k, b.ptr, b.ty.numel(), len * 8 + b.ty.numel() * 4)
        }
        _ => ("ew_silu_f32", Ptr::NULL, 1, len * 8),
    };
    let params = EwParams {
        a: a.ptr,
        b,
        out: v.output(n, 0)?,
        n: len as i32,
        nb: nb as i32,
    };
    let grid = (blocks(cx, len), 1, 1);
    cx.launch(
        n,
        KernelRef::plain("elementwise.cu", kernel),
        grid,
        256,
        0,
        Params::Ew(params),
        bytes,
    )
}

/// A `split` along `axis` that is not a view: one strided copy per output.
pub(super) fn split(
    cx: &mut Cx<'_>,
    n: Value,
    axis: usize,
    sizes: &[usize],
    out: &mut Vec<PlannedLaunch>,
) -> Result<(), CudaError> {
    let v = cx.view;
    let x = v.operand(n, 0)?;
    if x.dtype.size_bytes() != 4 {
        return Err(v.unsupported(n, format!("split of {} needs 4-byte elements", x.ty)));
    }
    let outer: usize = x.ty.shape[..axis].iter().product();
    let inner: usize = x.ty.shape[axis + 1..].iter().product();
    let src_stride = x.ty.shape[axis] * inner;
    let mut at = 0;
    for (o, s) in sizes.iter().enumerate() {
        let cols = s * inner;
        let dst = v.output(n, o)?;
        out.push(copy2d(
            cx,
            n,
            (dst, cols),
            (x.ptr.offset_by(at * inner * 4), src_stride),
            outer,
            cols,
        )?);
        at += s;
    }
    Ok(())
}

/// A `concat` along `axis` (of 4-byte elements): one strided copy per input.
pub(super) fn concat(
    cx: &mut Cx<'_>,
    n: Value,
    axis: usize,
    out: &mut Vec<PlannedLaunch>,
) -> Result<(), CudaError> {
    let v = cx.view;
    let out_ty = v.node(n)?.outputs[0].clone();
    let outer: usize = out_ty.shape[..axis].iter().product();
    let inner: usize = out_ty.shape[axis + 1..].iter().product();
    let dst_stride = out_ty.shape[axis] * inner;
    let dst = v.output(n, 0)?;
    let mut at = 0;
    for slot in 0..v.g.inputs(n.node).len() {
        let x = v.operand(n, slot)?;
        if x.dtype.size_bytes() != 4 || x.dtype != out_ty.dtype {
            return Err(v.unsupported(
                n,
                format!(
                    "concat input {} must be {} with 4-byte elements",
                    x.ty, out_ty.dtype
                ),
            ));
        }
        let cols = x.ty.shape[axis] * inner;
        out.push(copy2d(
            cx,
            n,
            (dst.offset_by(at * 4), dst_stride),
            (x.ptr, cols),
            outer,
            cols,
        )?);
        at += cols;
    }
    Ok(())
}

/// `dst[r * dst_stride + c] = src[r * src_stride + c]` over `rows` x `cols` 4-byte words.
fn copy2d(
    cx: &mut Cx<'_>,
    n: Value,
    (dst, dst_stride): (Ptr, usize),
    (src, src_stride): (Ptr, usize),
    rows: usize,
    cols: usize,
) -> Result<PlannedLaunch, CudaError> {
    let total = rows * cols;
    let params = Copy2dParams {
        dst,
        src,
        dst_stride: dst_stride as i32,
        src_stride: src_stride as i32,
        rows: rows as i32,
        cols: cols as i32,
    };
    let grid = (blocks(cx, total), 1, 1);
    cx.launch(
        n,
        KernelRef::plain("elementwise.cu", "copy2d_u32"),
        grid,
        256,
        0,
        Params::Copy2d(params),
        total * 8,
    )
}
