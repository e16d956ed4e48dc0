//! `embedding(table, ids)` as `embedding_{dtype}` (`kernels/embedding.cu`): one block per id.

use braid_ir::{DType, Value};

use super::{dtype_suffix, Cx};
use crate::error::CudaError;
use crate::facts::KernelRef;
use crate::params::{EmbeddingParams, Params};
use crate::plan::PlannedLaunch;

pub(super) fn lower(cx: &mut Cx<'_>, n: Value) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let (table, ids) = (v.operand(n, 0)?, v.operand(n, 1)?);
    v.expect(n, "ids", &ids, DType::I32)?;
    let suffix = dtype_suffix(table.dtype)
        .ok_or_else(|| v.unsupported(n, "the table must be a float tensor"))?;
    let (vocab, hidden) = (table.ty.shape[0], table.ty.shape[1]);
    let nids = ids.ty.numel();
    if v.is_input(v.g.inputs(n.node)[1], "token") {
        cx.note_token_limit(vocab);
    }
    let params = EmbeddingParams {
        table: table.ptr,
        ids: ids.ptr,
        out: v.output(n, 0)?,
        hidden: hidden as i32,
        vocab: vocab as i32,
    };
    cx.launch(
        n,
        KernelRef::plain("embedding.cu", format!("embedding_{suffix}")),
        (nids as u32, 1, 1),
        256,
        0,
        Params::Embedding(params),
        nids * hidden * (table.dtype.size_bytes() + 4) + nids * 4,
    )
}
