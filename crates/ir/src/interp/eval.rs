//! Op dispatch: turns one node's input values into its output values by calling the primitives.
//! Input and output types were already checked against [`Op::infer`], so the shapes read here are
//! consistent with the data; errors are messages the caller prefixes with the node (`%7 = matmul: `).

use std::sync::Arc;

use super::attention::{attend, AttnShape};
use super::fused;
use super::kv::KvState;
use super::layout::{concat, split};
use super::math::{add, argmax, mul, rms_norm, rope, silu};
use super::matmul::matmul;
use super::value::Val;
use crate::op::Op;
use crate::rope::rope_inv_freq;
use crate::types::TensorType;

/// Evaluates a non-leaf `op` on `ins`, producing values of the types `outs` (from [`Op::infer`]).
/// `attention` writes `kv`; every other op only reads it (a `kv_cache` operand is read as a snapshot).
pub(super) fn eval(
    op: &Op,
    ins: Vec<Val>,
    outs: &[TensorType],
    kv: &mut KvState,
) -> Result<Vec<Val>, String> {
    let ins = if matches!(op, Op::Attention { .. }) {
        ins
    } else {
        ins.into_iter()
            .map(|v| v.materialize(kv))
            .collect::<Result<Vec<_>, _>>()?
    };
    let out_ty = outs
        .first()
        .cloned()
        .ok_or_else(|| format!("{} infers no output", op.name()))?;
    let one = |data: Vec<f32>| Ok(vec![Val::float(out_ty.clone(), data)]);
    let f = |i: usize, what: &str| ins[i].floats(what);
    match op {
        Op::Input { .. } | Op::Weight { .. } | Op::KvCache { .. } => {
            Err(format!("{} is a leaf, not an op to evaluate", op.name()))
        }
        Op::Embedding => {
            let (table, ids) = (f(0, "table")?, ins[1].ints("ids")?);
            one(embedding(table, ins[0].ty(), ids)?)
        }
        Op::RmsNorm { eps } => one(rms_norm(f(0, "x")?, f(1, "norm weight")?, *eps)),
        Op::MatMul => {
            let (rows, k, n) = matmul_dims(ins[0].ty(), ins[1].ty());
            one(matmul(f(0, "x")?, rows, k, f(1, "w")?, n))
        }
        Op::Add => one(add(f(0, "a")?, f(1, "b")?)),
        Op::Mul => one(mul(f(0, "a")?, f(1, "b")?)),
        Op::Silu => one(silu(f(0, "x")?)),
        Op::Rope { theta, scaling } => {
            let d = ins[0].ty().last_dim();
            let inv_freq = rope_inv_freq(*theta, scaling, d);
            let tokens = token_count(ins[0].ty());
            one(rope(f(0, "x")?, d, tokens, position(&ins[1])?, &inv_freq))
        }
        Op::Attention { scale } => one(attention(&ins, *scale, kv)?),
        Op::Reshape { .. } => Ok(vec![ins[0].retyped(out_ty)]),
        Op::Split { axis, sizes } => split_val(&ins[0], *axis, sizes, outs),
        Op::Concat { axis } => concat_val(&ins, *axis, out_ty),
        Op::Argmax => {
            let i = argmax(f(0, "x")?)?;
            let i = i32::try_from(i).map_err(|_| format!("index {i} does not fit in i32"))?;
            Ok(vec![Val::Int {
                ty: out_ty,
                ints: Arc::new(vec![i]),
            }])
        }
        Op::FusedRmsNormMatmul { eps } => {
            let (rows, _, n) = matmul_dims(ins[0].ty(), ins[2].ty());
            let (x, g, w) = (f(0, "x")?, f(1, "norm weight")?, f(2, "w")?);
            one(fused::rms_norm_matmul(x, rows, g, *eps, w, n))
        }
        Op::FusedGatedMlp => {
            let (rows, wd_ty) = (ins[0].ty().shape[0], ins[1].ty());
            let (h, i) = (wd_ty.shape[0], wd_ty.shape[1]);
            let (gu, wd, r) = (f(0, "gate_up")?, f(1, "w_down")?, f(2, "residual")?);
            one(fused::gated_mlp(gu, rows, wd, h, i, r))
        }
        Op::FusedMatmulAdd => {
            let (rows, k, n) = matmul_dims(ins[0].ty(), ins[1].ty());
            let (x, w, r) = (f(0, "x")?, f(1, "w")?, f(2, "residual")?);
            one(fused::matmul_add(x, rows, k, w, n, r))
        }
        Op::FusedQkNormRope {
            eps,
            theta,
            scaling,
        } => {
            let d = ins[0].ty().last_dim();
            let inv_freq = rope_inv_freq(*theta, scaling, d);
            let tokens = token_count(ins[0].ty());
            let (q, k) = (f(0, "q")?, f(1, "k")?);
            let (qn, kn) = (f(2, "q_norm")?, f(3, "k_norm")?);
            let pos = position(&ins[4])?;
            let (qr, kr) = fused::qk_norm_rope(q, k, d, qn, kn, *eps, tokens, pos, &inv_freq);
            let k_ty = outs
                .get(1)
                .cloned()
                .ok_or("fused_qk_norm_rope infers one output, expected two")?;
            Ok(vec![Val::float(out_ty, qr), Val::float(k_ty, kr)])
        }
        Op::FusedRmsNormMatmulAdd { eps } => {
            let (rows, _, n) = matmul_dims(ins[0].ty(), ins[2].ty());
            let (x, g, w) = (f(0, "x")?, f(1, "norm weight")?, f(2, "w")?);
            let r = f(3, "residual")?;
            one(fused::rms_norm_matmul_add(x, rows, g, *eps, w, n, r))
        }
    }
}

/// The token count of a per-head operand: `T` for `[T, heads, d]`, 1 for `[heads, d]`.
fn token_count(t: &TensorType) -> usize {
    if t.shape.len() == 3 {
        t.shape[0]
    } else {
        1
    }
}

/// `(rows, k, n)` of `x [.., k] · w [n, k]ᵀ`: `rows` is the product of x's leading dims.
fn matmul_dims(x: &TensorType, w: &TensorType) -> (usize, usize, usize) {
    let lead = x.shape.len().saturating_sub(1);
    (x.shape[..lead].iter().product(), w.shape[1], w.shape[0])
}

/// The step's position from an `i32[1]` operand; negative positions are errors.
fn position(v: &Val) -> Result<usize, String> {
    let p = v
        .ints("position")?
        .first()
        .copied()
        .ok_or("position is empty, expected i32[1]")?;
    usize::try_from(p).map_err(|_| format!("position {p} is negative"))
}

/// Rows `ids` of `table` (`[vocab, hidden]`) -> `[n, hidden]`; an id outside `0..vocab` is an error.
fn embedding(table: &[f32], table_ty: &TensorType, ids: &[i32]) -> Result<Vec<f32>, String> {
    let (vocab, hidden) = (table_ty.shape[0], table_ty.shape[1]);
    let mut out = Vec::with_capacity(ids.len() * hidden);
    for &id in ids {
        let row = usize::try_from(id)
            .ok()
            .filter(|&r| r < vocab)
            .ok_or_else(|| format!("token id {id} is out of range for a table of {vocab} rows"))?;
        out.extend_from_slice(&table[row * hidden..(row + 1) * hidden]);
    }
    Ok(out)
}

/// `attention`: stores the `T` k, v rows at rows `position .. position + T` of the caches (rounded
/// to their dtype), then query token `t` attends over rows `0 ..= position + t`.
fn attention(ins: &[Val], scale: f32, kv: &mut KvState) -> Result<Vec<f32>, String> {
    let (q, k, v) = (
        ins[0].floats("q")?,
        ins[1].floats("k")?,
        ins[2].floats("v")?,
    );
    let (k_name, k_ty) = cache_leaf(&ins[3], "k_cache")?;
    let (v_name, v_ty) = cache_leaf(&ins[4], "v_cache")?;
    if k_name == v_name {
        return Err(format!(
            "k_cache and v_cache are the same kv_cache @{k_name}; they must be distinct"
        ));
    }
    let position = position(&ins[5])?;
    let max_context = k_ty.shape[0];
    let tokens = token_count(ins[0].ty());
    if tokens == 1 && position >= max_context {
        return Err(format!(
            "position {position} is out of range for kv_cache @{k_name} with max_context {max_context}"
        ));
    }
    if position
        .checked_add(tokens)
        .is_none_or(|end| end > max_context)
    {
        return Err(format!(
            "{tokens} tokens at position {position} (rows {position}..{}) run past kv_cache \
             @{k_name} with max_context {max_context}; expected position + {tokens} <= {max_context}",
            position.saturating_add(tokens)
        ));
    }
    // Allocate and type-check both caches before writing either, so an error leaves no half-step.
    kv.entry(k_name, k_ty)?;
    kv.entry(v_name, v_ty)?;
    let q_ty = ins[0].ty();
    let lead = q_ty.shape.len() - 2;
    let (h, d) = (q_ty.shape[lead], q_ty.shape[lead + 1]);
    let kv_heads = ins[1].ty().shape[lead];
    let row = kv_heads * d;
    for t in 0..tokens {
        let rows = t * row..(t + 1) * row;
        kv.store_row(k_name, k_ty, position + t, &k[rows.clone()])?;
        kv.store_row(v_name, v_ty, position + t, &v[rows])?;
    }
    let missing = |n: &str| format!("kv_cache @{n} vanished after its store");
    let k_cache = kv.get(k_name).ok_or_else(|| missing(k_name))?;
    let v_cache = kv.get(v_name).ok_or_else(|| missing(v_name))?;
    let mut out = Vec::with_capacity(q.len());
    for t in 0..tokens {
        let shape = AttnShape {
            h,
            kv: kv_heads,
            d,
            position: position + t,
        };
        let q_t = &q[t * h * d..(t + 1) * h * d];
        out.extend(attend(q_t, &k_cache.data, &v_cache.data, shape, scale));
    }
    Ok(out)
}

/// The name and type of a `kv_cache` operand; other values are errors (attention writes its caches,
/// so they must be persistent state, not computed tensors).
fn cache_leaf<'a>(v: &'a Val, what: &str) -> Result<(&'a str, &'a TensorType), String> {
    match v {
        Val::Cache { name, ty } => Ok((name, ty)),
        _ => Err(format!(
            "expects {what} to be a kv_cache leaf, got a computed {}",
            v.ty()
        )),
    }
}

/// `split` of a float or i32 value into values of the types `outs`.
fn split_val(
    x: &Val,
    axis: usize,
    sizes: &[usize],
    outs: &[TensorType],
) -> Result<Vec<Val>, String> {
    let shape = &x.ty().shape;
    let pieces: Vec<Val> = match x {
        Val::Int { ints, .. } => split(ints, shape, axis, sizes)
            .into_iter()
            .zip(outs)
            .map(|(p, ty)| Val::Int {
                ty: ty.clone(),
                ints: Arc::new(p),
            })
            .collect(),
        Val::Float { data, .. } => split(data, shape, axis, sizes)
            .into_iter()
            .zip(outs)
            .map(|(p, ty)| Val::float(ty.clone(), p))
            .collect(),
        Val::Cache { .. } => return Err(format!("cannot split kv_cache {}", x.ty())),
    };
    Ok(pieces)
}

/// `concat` of float or i32 values (one dtype, checked by `infer`) into a value of type `out`.
fn concat_val(ins: &[Val], axis: usize, out: TensorType) -> Result<Vec<Val>, String> {
    let shapes: Vec<&[usize]> = ins.iter().map(|v| v.ty().shape.as_slice()).collect();
    if out.dtype == crate::types::DType::I32 {
        let parts = ins
            .iter()
            .map(|v| v.ints("concat operand"))
            .collect::<Result<Vec<_>, _>>()?;
        let ints = concat(&parts, &shapes, axis);
        return Ok(vec![Val::Int {
            ty: out,
            ints: Arc::new(ints),
        }]);
    }
    let parts = ins
        .iter()
        .map(|v| v.floats("concat operand"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![Val::float(out, concat(&parts, &shapes, axis))])
}
