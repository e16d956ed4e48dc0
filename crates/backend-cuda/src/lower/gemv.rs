//! Matmul-family nodes (`matmul`, `fused_rms_norm_matmul`, `fused_matmul_add`, `fused_gated_mlp`)
//! as batch-1 GEMVs (`kernels/gemv.cu`).
//!
//! | variant | kernel | when (`Tuning::gemv_kernel` auto) |
//! | --- | --- | --- |
//! | direct4 | `gemv_direct4_{dtype}` | a wave of warps covers the rows about once; `wpr` warps share a row of narrow matrices |
//! | direct2 | `gemv_direct2_{dtype}` | rows outnumber one wave of warps ([`crate::tuning::Rows2`]) |
//! | direct2 + SwiGLU | `gemv_direct2_glu_{dtype}` | a gate/up projection feeding only a `fused_gated_mlp` (backend fusion) |
//! | staged | `gemv_{dtype}` (`gemv_argmax_{dtype}` with the argmax fold) | taller matrices (an LM head) |
//! | scalar | `gemv_scalar_{dtype}` | k not a multiple of the 16-byte vector, or W unaligned |
//!
//! The direct kernels read x straight from global memory and need x, W and the norm weight 16-byte
//! aligned; the staged kernel stages the prologue's x in shared memory once per block.

use braid_ir::{DType, Op, Value};

use super::{dtype_suffix, Cx, Operand, View};
use crate::error::CudaError;
use crate::facts::{KernelRef, Target};
use crate::params::{GemvParams, Params, Ptr, Scratch, GEMV_THREADS};
use crate::plan::PlannedLaunch;
use crate::tuning::{GemvKernel, Rows2, Tuning};

/// Which operand of a matmul-family op is the weight (streamed in its stored dtype), or `None`
/// for other ops.
pub(crate) fn weight_slot(op: &Op) -> Option<usize> {
    match op {
        Op::MatMul | Op::FusedMatmulAdd | Op::FusedGatedMlp => Some(1),
        Op::FusedRmsNormMatmul { .. } | Op::FusedRmsNormMatmulAdd { .. } => Some(2),
        _ => None,
    }
}

/// The operands of one GEMV, checked: f32 activations, a float weight.
pub(crate) struct GemvOperands {
    pub x: Operand,
    pub w: Operand,
    pub norm: Option<Operand>,
    pub resid: Option<Operand>,
    /// Prologue: 0 x as is, 1 rms_norm, 2 SwiGLU of `x [m, 2k]`.
    pub pro: i32,
    pub eps: f32,
    /// x rows.
    pub m: usize,
    /// Columns of W.
    pub k: usize,
    /// Rows of W.
    pub rows: usize,
    /// The weight dtype's kernel suffix.
    pub suffix: &'static str,
}

/// The operands of matmul-family node `n`. `swiglu_input`: the node is a `fused_gated_mlp` whose
/// gate/up producer already applied the SwiGLU (its x is then plain).
pub(crate) fn operands(
    v: &View<'_>,
    n: Value,
    swiglu_input: bool,
) -> Result<GemvOperands, CudaError> {
    let op = &v.node(n)?.op;
    let o = |slot| v.operand(n, slot);
    let (x, w, norm, resid, pro, eps) = match op {
        Op::MatMul => (o(0)?, o(1)?, None, None, 0, 0.0),
        Op::FusedRmsNormMatmul { eps } => (o(0)?, o(2)?, Some(o(1)?), None, 1, *eps),
        Op::FusedRmsNormMatmulAdd { eps } => (o(0)?, o(2)?, Some(o(1)?), Some(o(3)?), 1, *eps),
        Op::FusedMatmulAdd => (o(0)?, o(1)?, None, Some(o(2)?), 0, 0.0),
        Op::FusedGatedMlp => {
            let pro = if swiglu_input { 0 } else { 2 };
            (o(0)?, o(1)?, None, Some(o(2)?), pro, 0.0)
        }
        other => {
            return Err(v.unsupported(n, format!("{} is not a GEMV", other.name())));
        }
    };
    v.expect(n, "x", &x, DType::F32)?;
    if let Some(g) = &norm {
        v.expect(n, "norm weight", g, DType::F32)?;
    }
    let m = x.ty.rows();
    if let Some(r) = &resid {
        v.expect(n, "residual", r, DType::F32)?;
        // A row-broadcast bias `[n]` has the layout of one output row.
        let cols = w.ty.shape[0];
        if r.ty.numel() != m * cols && r.ty.numel() != cols {
            return Err(v.unsupported(
                n,
                format!(
                    "the matmul adds a residual of {m} rows or one bias row; got {} for {m} rows",
                    r.ty
                ),
            ));
        }
    }
    let suffix = dtype_suffix(w.dtype)
        .ok_or_else(|| v.unsupported(n, format!("weight {} must be a float tensor", w.ty)))?;
    let (rows, k) = (w.ty.shape[0], w.ty.shape[1]);
    Ok(GemvOperands {
        m,
        x,
        w,
        norm,
        resid,
        pro,
        eps,
        k,
        rows,
        suffix,
    })
}

/// The GEMV kernel variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    Direct4,
    Direct2,
    Direct2Glu,
    Staged,
    Scalar,
}

/// Elements per 16-byte weight vector.
fn vec_of(dtype: DType) -> usize {
    if dtype == DType::F32 {
        4
    } else {
        8
    }
}

/// Which variant runs `g`: decided from shapes, alignment, the device's size and the tuning alone.
/// `glu`: the SwiGLU epilogue was decided for this node ([`super::fusions`]).
pub(crate) fn variant(
    g: &GemvOperands,
    target: &Target<'_>,
    tuning: &Tuning,
    glu: bool,
) -> Variant {
    if glu {
        return Variant::Direct2Glu;
    }
    let vec = vec_of(g.w.dtype);
    let vectorized = g.k.is_multiple_of(vec) && g.w.ptr.is_aligned(16);
    let aligned = |o: Option<&Operand>| o.is_none_or(|o| o.ptr.is_aligned(16));
    let direct_ok = vectorized && aligned(Some(&g.x)) && aligned(g.norm.as_ref());
    let sms = target.facts.sm_count as usize;
    let warps = (GEMV_THREADS / 32) as usize;
    // One wave: the warps of 4 resident blocks per multiprocessor.
    let wave = 4 * sms * warps;
    let variant = match tuning.gemv_kernel {
        GemvKernel::Staged => None,
        GemvKernel::Direct4 => Some(Variant::Direct4),
        GemvKernel::Direct2 => Some(Variant::Direct2),
        // The direct kernels while a wave of warps covers the rows about once; the staged kernel
        // for taller matrices (an LM head), where each warp walks many rows.
        GemvKernel::Auto if g.rows <= 2 * wave => Some(match tuning.gemv_rows2 {
            Rows2::Wide if g.rows > wave => Variant::Direct2,
            Rows2::Always if g.rows * 2 > wave => Variant::Direct2,
            _ => Variant::Direct4,
        }),
        GemvKernel::Auto => None,
    };
    match variant {
        Some(v) if direct_ok => v,
        _ if vectorized => Variant::Staged,
        _ => Variant::Scalar,
    }
}

/// Bytes one GEMV moves, for the profile's GB/s and `bytes_per_step`: the weight `[rows, k]`, the
/// input rows (`2k` wide for the SwiGLU prologue `pro == 2`), the output rows (read again for a
/// residual), and the norm weight.
fn gemv_bytes(g: &GemvOperands) -> usize {
    let x_len = if g.pro == 2 { 2 * g.k } else { g.k };
    g.rows * g.k * g.w.dtype.size_bytes()
        + g.m * x_len * 4
        + g.m * g.rows * 4 * (1 + g.resid.is_some() as usize)
        + if g.norm.is_some() { g.k * 4 } else { 0 }
}

/// Whether matmul-family node `n` is a `fused_gated_mlp` whose gate/up producer already applied
/// the SwiGLU (the GEMV epilogue of [`super::fusions`]).
fn swiglu_input(cx: &Cx<'_>, n: Value) -> Result<bool, CudaError> {
    Ok(match cx.view.node(n)?.op {
        Op::FusedGatedMlp => cx
            .fusions
            .glu
            .contains(&Value::of(cx.view.g.inputs(n.node)[0].node)),
        _ => false,
    })
}

/// Lowers matmul-family node `n`: a cuBLAS GEMM for many rows ([`super::gemm`]), else a GEMV.
pub(super) fn lower_any(
    cx: &mut Cx<'_>,
    n: Value,
    out: &mut Vec<PlannedLaunch>,
) -> Result<(), CudaError> {
    let g = operands(&cx.view, n, swiglu_input(cx, n)?)?;
    if super::gemm::uses_gemm(&g, cx.tuning) && !cx.fusions.glu.contains(&n) {
        return super::gemm::lower(cx, n, &g, out);
    }
    out.push(lower(cx, n)?);
    Ok(())
}

/// Lowers matmul-family node `n` to a GEMV.
pub(super) fn lower(cx: &mut Cx<'_>, n: Value) -> Result<PlannedLaunch, CudaError> {
    let glu = cx.fusions.glu.contains(&n);
    let g = operands(&cx.view, n, swiglu_input(cx, n)?)?;
    if let Some(r) = &g.resid {
        if g.m > 1 && r.ty.numel() != g.m * g.rows {
            return Err(cx.view.unsupported(
                n,
                format!(
                    "the GEMV adds a residual of {} rows only; a bias {} broadcast over {} rows \
                     needs the GEMM path (bf16 weights)",
                    g.m, r.ty, g.m
                ),
            ));
        }
    }
    let argmax = cx.fusions.argmax.get(&n).copied();
    let variant = variant(&g, cx.target, cx.tuning, glu);
    if argmax.is_some() && variant != Variant::Staged {
        return Err(cx.view.unsupported(
            n,
            format!("the argmax fold needs the staged GEMV, the lowering picked {variant:?}"),
        ));
    }
    if glu
        && !(g.w.ptr.is_aligned(16)
            && g.x.ptr.is_aligned(16)
            && g.norm.as_ref().is_some_and(|o| o.ptr.is_aligned(16)))
    {
        return Err(cx
            .view
            .unsupported(n, "the SwiGLU epilogue needs 16-byte aligned operands"));
    }
    let sfx = g.suffix;
    let (name, smem) = match variant {
        Variant::Direct4 => (format!("gemv_direct4_{sfx}"), direct_smem(&g)),
        Variant::Direct2 => (format!("gemv_direct2_{sfx}"), direct_smem(&g)),
        Variant::Direct2Glu => (format!("gemv_direct2_glu_{sfx}"), direct_smem(&g)),
        Variant::Staged if argmax.is_some() => (format!("gemv_argmax_{sfx}"), staged_smem(&g)),
        Variant::Staged => (format!("gemv_{sfx}"), staged_smem(&g)),
        Variant::Scalar => (format!("gemv_scalar_{sfx}"), staged_smem(&g)),
    };
    let max_smem = cx.target.facts.smem_per_block_optin;
    if smem > max_smem {
        return Err(cx.view.unsupported(
            n,
            format!(
                "k = {} needs {smem} bytes of shared memory for x; the device allows {max_smem}",
                g.k
            ),
        ));
    }
    let kernel = KernelRef::plain("gemv.cu", name);
    let (blocks, wpr) = launch_shape(cx, &g, variant, &kernel, smem)?;
    let mut params = GemvParams {
        w: g.w.ptr,
        x: g.x.ptr,
        norm_w: g.norm.as_ref().map_or(Ptr::NULL, |o| o.ptr),
        resid: g.resid.as_ref().map_or(Ptr::NULL, |o| o.ptr),
        y: cx.view.output(n, 0)?,
        n: g.rows as i32,
        k: g.k as i32,
        pro: g.pro,
        eps: g.eps,
        wpr: wpr as i32,
        ..GemvParams::default()
    };
    let mut bytes = gemv_bytes(&g);
    let mut absorbed = Vec::new();
    if let Some(am) = argmax {
        params.am_out = cx.view.output(am, 0)?;
        params.am_v = cx.scratch(Scratch::ArgmaxValues, blocks * 4);
        params.am_i = cx.scratch(Scratch::ArgmaxIndices, blocks * 4);
        params.am_counter = cx.scratch(Scratch::ArgmaxCounter, 4);
        bytes += 4;
        absorbed.push(cx.view.describe(am));
    }
    let mut detail = format!("{}x{}", g.rows, g.k);
    if glu {
        detail.push_str(" +swiglu");
    }
    if argmax.is_some() {
        detail.push_str(" +argmax");
    }
    let mut launch = cx.launch(
        n,
        kernel,
        (blocks as u32, g.m as u32, 1),
        GEMV_THREADS,
        smem,
        Params::Gemv(params),
        bytes,
    )?;
    if g.w.is_const {
        launch.weight_range = Some((g.w.ptr, g.rows * g.k * g.w.dtype.size_bytes()));
    }
    // The direct2 kernels take no L2 prefetch range.
    launch.can_prefetch = !matches!(variant, Variant::Direct2 | Variant::Direct2Glu);
    launch.detail = detail;
    launch.absorbed = absorbed;
    Ok(launch)
}

/// Blocks and warps per row of GEMV `g` with `variant`: every row in flight in one wave where the
/// resident warps allow; narrow matrices split their rows between up to `gemv_max_wpr` warps.
fn launch_shape(
    cx: &Cx<'_>,
    g: &GemvOperands,
    variant: Variant,
    kernel: &KernelRef,
    smem: u32,
) -> Result<(usize, usize), CudaError> {
    let sms = cx.target.facts.sm_count as usize;
    let mut per_sm = cx
        .target
        .occupancy
        .blocks_per_sm(kernel, GEMV_THREADS, smem)?
        .max(1);
    let warps = (GEMV_THREADS / 32) as usize;
    Ok(match variant {
        Variant::Direct2 | Variant::Direct2Glu => {
            // 16 rows per block (8 warps x 2 rows; gate/up pairs for the epilogue).
            (g.rows.div_ceil(16).min(per_sm * sms).max(1), 1)
        }
        _ => {
            if let Some(cap) = cx.tuning.gemv_blocks_per_sm {
                per_sm = per_sm.min(cap.max(1));
            }
            let resident_warps = per_sm * sms * warps;
            // Warps per row: split long rows of narrow matrices until one wave of warps is busy.
            let vectorized = variant != Variant::Scalar;
            let chunks = g.k / vec_of(g.w.dtype);
            let mut wpr = 1usize;
            while vectorized
                && wpr * 2 <= cx.tuning.gemv_max_wpr
                && g.rows * wpr * 2 <= resident_warps
                && chunks >= 64 * wpr
            {
                wpr *= 2;
            }
            let rows_per_block = warps / wpr;
            (
                g.rows.div_ceil(rows_per_block).min(per_sm * sms).max(1),
                wpr,
            )
        }
    })
}

/// Dynamic shared memory of the direct kernels: the norm weights `[k]` (f32) for `pro` 1.
fn direct_smem(g: &GemvOperands) -> u32 {
    if g.pro == 1 {
        (g.k * 4) as u32
    } else {
        0
    }
}

/// Dynamic shared memory of the staged and scalar kernels: 48 floats of reduction scratch and x
/// `[k]` (f32).
fn staged_smem(g: &GemvOperands) -> u32 {
    ((48 + g.k) * 4) as u32
}
