//! `rms_norm`, `rope` and `fused_qk_norm_rope` (`kernels/norm.cu`): one warp per row, 8 rows per
//! 256-thread block. (A `fused_qk_norm_rope` or a pair of `rope`s feeding only an attention costs no
//! launch: the attention kernel does their work, [`super::fusions`].)

use braid_ir::{DType, Value};

use super::{Cx, Operand, Rotary};
use crate::error::CudaError;
use crate::facts::KernelRef;
use crate::params::{NormRopeParams, Params, Ptr, RmsNormParams};
use crate::plan::PlannedLaunch;

/// `rms_norm(x [rows, d], w [d])` with `rms_norm_f32`.
pub(super) fn rms_norm(cx: &mut Cx<'_>, n: Value, eps: f32) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let (x, w) = (v.operand(n, 0)?, v.operand(n, 1)?);
    v.expect(n, "x", &x, DType::F32)?;
    v.expect(n, "weight", &w, DType::F32)?;
    let (rows, d) = (x.ty.rows(), x.ty.last_dim());
    let params = RmsNormParams {
        x: x.ptr,
        w: w.ptr,
        out: v.output(n, 0)?,
        rows: rows as i32,
        d: d as i32,
        eps,
        pad_: 0,
    };
    cx.launch(
        n,
        KernelRef::plain("norm.cu", "rms_norm_f32"),
        (rows.div_ceil(8) as u32, 1, 1),
        256,
        0,
        Params::RmsNorm(params),
        (2 * rows * d + d) * 4,
    )
}

/// `rope(x [rows, d], position)` with `norm_rope_f32` (no norm).
pub(super) fn rope(cx: &mut Cx<'_>, n: Value, r: &Rotary) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let (x, pos) = (v.operand(n, 0)?, v.operand(n, 1)?);
    v.expect(n, "x", &x, DType::F32)?;
    v.expect(n, "position", &pos, DType::I32)?;
    let out = v.output(n, 0)?;
    norm_rope(cx, n, (&x, None, out), None, &pos, 0.0, r)
}

/// `fused_qk_norm_rope(q, k, q_norm, k_norm, position)` with one `norm_rope_f32` over both.
pub(super) fn qk_norm_rope(
    cx: &mut Cx<'_>,
    n: Value,
    eps: f32,
    r: &Rotary,
) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let ops: Vec<Operand> = (0..5).map(|s| v.operand(n, s)).collect::<Result<_, _>>()?;
    for (what, o) in ["q", "k", "q_norm", "k_norm"].iter().zip(&ops) {
        v.expect(n, what, o, DType::F32)?;
    }
    v.expect(n, "position", &ops[4], DType::I32)?;
    let (q_out, k_out) = (v.output(n, 0)?, v.output(n, 1)?);
    norm_rope(
        cx,
        n,
        (&ops[0], Some(&ops[2]), q_out),
        Some((&ops[1], &ops[3], k_out)),
        &ops[4],
        eps,
        r,
    )
}

/// One `norm_rope_f32` launch over `(x, norm weight, out)` and an optional second such tensor.
fn norm_rope(
    cx: &mut Cx<'_>,
    n: Value,
    first: (&Operand, Option<&Operand>, Ptr),
    second: Option<(&Operand, &Operand, Ptr)>,
    pos: &Operand,
    eps: f32,
    r: &Rotary,
) -> Result<PlannedLaunch, CudaError> {
    let (x1, w1, out1) = first;
    let d = x1.ty.last_dim();
    if !d.is_multiple_of(2) {
        return Err(cx
            .view
            .unsupported(n, format!("rope needs an even head_dim, got {d}")));
    }
    let rows1 = x1.ty.rows();
    let (x2, w2, out2, rows2) = match second {
        Some((x, w, o)) => (x.ptr, w.ptr, o, x.ty.rows()),
        None => (Ptr::NULL, Ptr::NULL, Ptr::NULL, 0),
    };
    let rows = rows1 + rows2;
    let params = NormRopeParams {
        x1: x1.ptr,
        w1: w1.map_or(Ptr::NULL, |w| w.ptr),
        out1,
        x2,
        w2,
        out2,
        pos: pos.ptr,
        inv_freq: cx.rope_table(n, r, d)?,
        rows1: rows1 as i32,
        rows2: rows2 as i32,
        d: d as i32,
        eps,
        do_norm: w1.is_some() as i32,
        do_rope: 1,
    };
    cx.launch(
        n,
        KernelRef::plain("norm.cu", "norm_rope_f32"),
        (rows.div_ceil(8) as u32, 1, 1),
        256,
        0,
        Params::NormRope(params),
        rows * d * 8 + 4,
    )
}
