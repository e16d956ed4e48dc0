//! Matmul-family nodes over many rows (a prefill chunk of `T` tokens) as a cuBLAS GEMM: two
//! entries of the launch list per node.
//!
//! | launch | what |
//! | --- | --- |
//! | `gemm_prologue_f32` (`kernels/prefill.cu`) | `xb = bf16(prologue(x))` into [`Scratch::GemmOperand`]; with a residual, the output pre-filled with it |
//! | `cublas_gemm_bf16 MxNxK` | `y [m, n] = xb · Wᵀ (+ y)`: `cublasGemmEx`, bf16 operands, f32 output and accumulation ([`GemmParams`]) |
//!
//! When: at least [`Tuning::gemm_min_rows`] rows and a bf16 weight (cuBLAS's tensor-core path takes
//! bf16 operands; f16 and f32 weights keep the GEMVs). GEMMs of one input with one prologue in a
//! row (q, k and v projections left apart by the passes) share one prologue launch: a GEMM
//! without a residual whose prologue (same x value, norm weight, prologue kind, epsilon, shape)
//! equals the last one planned reads the operand that one left in the scratch slot (no other
//! launch writes it, and a value's bytes cannot change while it is live). The prologue (rms_norm, SwiGLU) is the
//! GEMVs' (`kernels/gemv.cu`); the epilogue (residual or a bias broadcast over rows) is cuBLAS's
//! beta = 1 on the pre-filled output. The bf16 rounding of the activations is the one numerical
//! difference from the GEMV path (transformers' bf16 forward rounds them too).

use braid_ir::DType;
use braid_ir::Value;

use super::gemv::GemvOperands;
use super::Cx;
use crate::error::CudaError;
use crate::facts::KernelRef;
use crate::params::{GemmParams, GemmPrologueParams, Params, Ptr, Scratch};
use crate::plan::PlannedLaunch;
use crate::tuning::Tuning;

/// The pseudo-kernel name of a cuBLAS GEMM in plans and profiles.
pub const GEMM_KERNEL: &str = "cublas_gemm_bf16";
/// The pseudo source file of a cuBLAS GEMM ([`KernelRef::file`]); nothing is compiled for it.
pub const GEMM_FILE: &str = "cublas";

/// Whether the matmul-family node with operands `g` runs as a cuBLAS GEMM.
pub(crate) fn uses_gemm(g: &GemvOperands, tuning: &Tuning) -> bool {
    g.m >= tuning.gemm_min_rows && g.w.dtype == DType::BF16
}

/// Lowers matmul-family node `n` (operands `g`) to its prologue launch and its GEMM.
pub(super) fn lower(
    cx: &mut Cx<'_>,
    n: Value,
    g: &GemvOperands,
    out: &mut Vec<PlannedLaunch>,
) -> Result<(), CudaError> {
    let (m, k, rows) = (g.m, g.k, g.rows);
    let too_big = |x: usize| i32::try_from(x).is_err();
    if too_big(m * k) || too_big(m * rows) || too_big(rows * k) {
        return Err(cx.view.unsupported(
            n,
            format!("a {m}x{rows}x{k} GEMM has more than 2^31 elements in one operand"),
        ));
    }
    let y = cx.view.output(n, 0)?;
    let xb = cx.scratch(Scratch::GemmOperand, m * k * 2);
    let resid_rows = match &g.resid {
        None => 0,
        Some(r) if r.ty.numel() == rows && m > 1 => 1,
        Some(_) => m,
    };
    let x_len = if g.pro == 2 { 2 * k } else { k };
    let norm_w = g.norm.as_ref().map_or(Ptr::NULL, |o| o.ptr);
    // x is operand 0 of every matmul-family op; keyed by value (an arena address is reused).
    let x_value = cx.view.g.inputs(n.node)[0];
    let key = (x_value, norm_w, g.pro, g.eps.to_bits(), m, k);
    let shape = format!("{m}x{rows}x{k}");
    if g.resid.is_some() || cx.gemm_operand != Some(key) {
        out.push(prologue_launch(cx, n, g, xb, y, resid_rows, x_len)?);
        cx.gemm_operand = Some(key);
    }
    let params = GemmParams {
        a: g.w.ptr,
        b: xb,
        c: y,
        m: m as i32,
        n: rows as i32,
        k: k as i32,
        beta: if g.resid.is_some() { 1.0 } else { 0.0 },
    };
    let bytes = rows * k * 2 + m * k * 2 + m * rows * 4 * (1 + g.resid.is_some() as usize);
    let mut gemm = cx.launch(
        n,
        KernelRef::plain(GEMM_FILE, GEMM_KERNEL),
        (0, 0, 0),
        0,
        0,
        Params::Gemm(params),
        bytes,
    )?;
    gemm.block = (0, 0, 0);
    gemm.detail = shape;
    if g.w.is_const {
        gemm.weight_range = Some((g.w.ptr, rows * k * 2));
    }
    out.push(gemm);
    Ok(())
}

/// The prologue launch of GEMM node `n`: `xb = bf16(prologue(x))`, and `y` pre-filled with the
/// residual (`resid_rows` rows of it) when there is one.
fn prologue_launch(
    cx: &mut Cx<'_>,
    n: Value,
    g: &GemvOperands,
    xb: Ptr,
    y: Ptr,
    resid_rows: usize,
    x_len: usize,
) -> Result<PlannedLaunch, CudaError> {
    let (m, k, rows) = (g.m, g.k, g.rows);
    let prologue = GemmPrologueParams {
        x: g.x.ptr,
        norm_w: g.norm.as_ref().map_or(Ptr::NULL, |o| o.ptr),
        resid: g.resid.as_ref().map_or(Ptr::NULL, |o| o.ptr),
        xb,
        c: y,
        m: m as i32,
        k: k as i32,
        n: rows as i32,
        pro: g.pro,
        eps: g.eps,
        resid_rows: resid_rows as i32,
    };
    let resid_bytes = if g.resid.is_some() {
        (resid_rows * rows + m * rows) * 4
    } else {
        0
    };
    let mut pro = cx.launch(
        n,
        KernelRef::plain("prefill.cu", "gemm_prologue_f32"),
        (m as u32, 1, 1),
        256,
        0,
        Params::GemmPrologue(prologue),
        m * x_len * 4 + m * k * 2 + resid_bytes + g.norm.as_ref().map_or(0, |_| k * 4),
    )?;
    pro.detail = format!("{m}x{k} -> bf16");
    Ok(pro)
}
