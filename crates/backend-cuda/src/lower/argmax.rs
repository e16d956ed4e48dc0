//! `argmax(x [1, n])` as `argmax_f32` (`kernels/argmax.cu`), unless it runs inside the LM head's
//! GEMV ([`super::fusions`]): every block reduces a strided share, the last block to finish merges
//! the partials in a fixed order (ties go to the smaller index).

use braid_ir::{DType, Value};

use super::Cx;
use crate::error::CudaError;
use crate::facts::KernelRef;
use crate::params::{ArgmaxParams, Params, Scratch};
use crate::plan::PlannedLaunch;

pub(super) fn lower(cx: &mut Cx<'_>, n: Value) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let x = v.operand(n, 0)?;
    v.expect(n, "x", &x, DType::F32)?;
    let len = x.ty.numel();
    let blocks = len
        .div_ceil(1024)
        .clamp(1, 2 * cx.target.facts.sm_count as usize);
    let params = ArgmaxParams {
        x: x.ptr,
        part_v: cx.scratch(Scratch::ArgmaxValues, blocks * 4),
        part_i: cx.scratch(Scratch::ArgmaxIndices, blocks * 4),
        counter: cx.scratch(Scratch::ArgmaxCounter, 4),
        out: v.output(n, 0)?,
        n: len as i32,
        pad_: 0,
    };
    cx.launch(
        n,
        KernelRef::plain("argmax.cu", "argmax_f32"),
        (blocks as u32, 1, 1),
        256,
        0,
        Params::Argmax(params),
        len * 4 + 4,
    )
}
