//! `rms_norm`, `rope` and `fused_qk_norm_rope` (`kernels/norm.cu`): one warp per row, 8 rows per
//! 256-thread block; `[T, heads, d]` (a prefill chunk) rotates token `t`'s rows at `position + t`. (A `fused_qk_norm_rope` or a pair of `rope`s feeding only an attention costs no
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
    let x = in_place(cx, x, v.g.inputs(n.node)[0])?;
    norm_rope(cx, n, (&x, None, out), None, &pos, 0.0, r)
}

/// Operand `o` (the value `x`) with its row stride: read in place from a split's input
/// ([`super::fusions`]) when the split was absorbed, else contiguous (`None`).
fn in_place(cx: &Cx<'_>, o: Operand, x: Value) -> Result<Strided, CudaError> {
    Ok(match cx.fusions.in_place(&cx.view, x)? {
        Some((ptr, ld, split)) => Strided {
            op: Operand { ptr, ..o },
            ld: Some(ld),
            split: Some(split),
        },
        None => Strided {
            op: o,
            ld: None,
            split: None,
        },
    })
}

/// An operand and, when it is a slice of a wider tensor, the elements between its tokens and the
/// split read in place.
struct Strided {
    op: Operand,
    ld: Option<usize>,
    split: Option<Value>,
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
    let ins = v.g.inputs(n.node);
    let q = in_place(cx, ops[0].clone(), ins[0])?;
    let k = in_place(cx, ops[1].clone(), ins[1])?;
    norm_rope(
        cx,
        n,
        (&q, Some(&ops[2]), q_out),
        Some((&k, &ops[3], k_out)),
        &ops[4],
        eps,
        r,
    )
}

/// One `norm_rope_f32` launch over `(x, norm weight, out)` and an optional second such tensor.
fn norm_rope(
    cx: &mut Cx<'_>,
    n: Value,
    first: (&Strided, Option<&Operand>, Ptr),
    second: Option<(&Strided, &Operand, Ptr)>,
    pos: &Operand,
    eps: f32,
    r: &Rotary,
) -> Result<PlannedLaunch, CudaError> {
    let (s1, w1, out1) = first;
    let x1 = &s1.op;
    let d = x1.ty.last_dim();
    if !d.is_multiple_of(2) {
        return Err(cx
            .view
            .unsupported(n, format!("rope needs an even head_dim, got {d}")));
    }
    let rows1 = x1.ty.rows();
    // Rows (heads) per token: `[heads, d]` is one token, `[T, heads, d]` T tokens.
    let heads = |x: &Operand| {
        if x.ty.shape.len() == 3 {
            x.ty.shape[1]
        } else {
            x.ty.rows()
        }
    };
    let heads1 = heads(x1);
    let ld1 = s1.ld.unwrap_or(heads1 * d);
    let (x2, w2, out2, rows2, heads2, ld2) = match second {
        Some((s, w, o)) => {
            let h = heads(&s.op);
            (s.op.ptr, w.ptr, o, s.op.ty.rows(), h, s.ld.unwrap_or(h * d))
        }
        None => (Ptr::NULL, Ptr::NULL, Ptr::NULL, 0, 1, d),
    };
    let rows = rows1 + rows2;
    let mut absorbed: Vec<String> = Vec::new();
    for s in std::iter::once(s1).chain(second.map(|x| x.0)) {
        if let Some(split) = s.split {
            let d = cx.view.describe(split);
            if !absorbed.contains(&d) {
                absorbed.push(d);
            }
        }
    }
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
        heads1: heads1.max(1) as i32,
        heads2: heads2.max(1) as i32,
        ld1: ld1 as i32,
        ld2: ld2 as i32,
    };
    let mut launch = cx.launch(
        n,
        KernelRef::plain("norm.cu", "norm_rope_f32"),
        (rows.div_ceil(8) as u32, 1, 1),
        256,
        0,
        Params::NormRope(params),
        rows * d * 8 + 4,
    )?;
    launch.absorbed = absorbed;
    Ok(launch)
}
