//! `attention` as one launch of `attention_{cache dtype}_d{head_dim}_g{group}`
//! (`kernels/attention.cu`): split-KV decode attention with GQA over a grid fixed for the cache's
//! `max_context`, the splits merged inside a thread-block cluster (short contexts, sm_90+) or
//! through a counter in global memory; optionally with the q/k rms_norm and rope of a producer
//! folded into its prologue ([`super::fusions::QkPrologue`]).
//!
//! `attention` over `T` tokens (`q [T, h, d]`, a prefill chunk) is two launches instead
//! (`lower_prefill`): `kv_append_{cache dtype}` (`kernels/prefill.cu`) stores the chunk's `T`
//! k/v rows at `position ..`, then `attention_prefill_{cache dtype}_d{head_dim}_g{group}`
//! (`kernels/attention_prefill.cu`) runs the causal attention of the `T` queries over the cache: on
//! the tensor cores (`attention_prefill_mma_*`, bf16 / f16 caches, head_dim up to 128, sm_80+,
//! [`PrefillAtt::Mma`]) or in f32 ([`PrefillAtt::Simt`] and every other case).

use braid_ir::{DType, Op, Value};

use super::fusions::QkPrologue;
use super::{dtype_suffix, Cx, Operand, Rotary, View};
use crate::error::CudaError;
use crate::facts::KernelRef;
use crate::params::{
    attention_warps, prefill_attention_smem, AttentionParams, KvAppendParams, Params,
    PrefillAttentionParams, Ptr, Scratch, PREFILL_ATT_ROWS, PREFILL_ATT_THREADS,
};
use crate::plan::PlannedLaunch;
use crate::tuning::{PrefillAtt, Tuning};

pub use crate::params::ATTENTION_INSTANCES as INSTANCES;
/// Largest thread-block cluster of attention (the portable maximum on sm_90).
const CLUSTER_MAX: usize = 8;
/// Batches of rows one block of a clustered attention walks at most, at the longest context.
const CLUSTER_BATCHES: usize = 2;
/// Smallest KV chunk of a split that bounds the split count (a kernel's chunk is at least one batch
/// of rows, 32 or more).
const MIN_CHUNK: usize = 32;

/// Rows of the KV cache one attention block loads at once (every warp, `unroll` rows in flight per
/// lane group), for `gm` query heads per block, head dim `d` and a cache of `vec` elements per
/// 16-byte vector. A block's chunk is at least this long.
pub fn batch_rows(gm: usize, d: usize, vec: usize, unroll: usize) -> usize {
    let warps = attention_warps(gm, d) as usize;
    let lanes_per_row = (d / vec).min(32);
    warps * (32 / lanes_per_row) * unroll
}

/// KV splits (grid.y) with the global merge over `kvh` KV heads and `max_ctx` rows on `sms`
/// multiprocessors: about two blocks per multiprocessor at full length (or `tuning.att_splits`),
/// at most 64, and no more than the context has chunks of [`MIN_CHUNK`] rows.
pub fn splits(kvh: usize, max_ctx: usize, sms: u32, tuning: &Tuning) -> usize {
    let want = tuning
        .att_splits
        .unwrap_or_else(|| (2 * sms as usize).div_ceil(kvh.max(1)))
        .clamp(1, 64);
    want.min(max_ctx.div_ceil(MIN_CHUNK)).max(1)
}

/// KV splits of an attention whose splits merge inside one thread-block cluster per KV head, or
/// `None` for the global merge: before sm_90 (`cc_major` < 9), with `tuning.att_cluster` off, or
/// when `max_ctx` rows would give the at most [`CLUSTER_MAX`] blocks of a cluster more than
/// [`CLUSTER_BATCHES`] batches of `batch_rows` each (long contexts want more blocks than a cluster
/// holds).
pub fn cluster(max_ctx: usize, batch_rows: usize, cc_major: i32, tuning: &Tuning) -> Option<usize> {
    let batches = max_ctx.div_ceil(batch_rows.max(1));
    (tuning.att_cluster && cc_major >= 9 && batches <= CLUSTER_MAX * CLUSTER_BATCHES)
        .then(|| batches.clamp(1, CLUSTER_MAX))
}

/// The kernel for a KV cache of `dtype`, head dim `d`, group instantiation `gm` and `unroll` rows
/// in flight: its name and the defines that compile only that variant of `kernels/attention.cu`.
/// `None` for a non-float cache dtype.
pub fn kernel(dtype: DType, d: usize, gm: usize, unroll: usize) -> Option<KernelRef> {
    let suffix = dtype_suffix(dtype)?;
    let ct = match dtype {
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        _ => "F32",
    };
    Some(KernelRef {
        file: "attention.cu",
        name: format!("attention_{suffix}_d{d}_g{gm}"),
        defines: vec![
            ("ATT_SUFFIX", suffix.to_string()),
            ("ATT_CT", ct.to_string()),
            ("ATT_D", d.to_string()),
            ("ATT_GM", gm.to_string()),
            ("ATT_UNROLL", unroll.to_string()),
        ],
    })
}

/// The prefill attention kernel for a KV cache of `dtype`, head dim `d` and group instantiation
/// `gm` (`kernels/attention_prefill.cu`, one variant per compile), or `None` for a non-float cache.
pub fn prefill_kernel(dtype: DType, d: usize, gm: usize) -> Option<KernelRef> {
    let suffix = dtype_suffix(dtype)?;
    let ct = match dtype {
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        _ => "F32",
    };
    Some(KernelRef {
        file: "attention_prefill.cu",
        name: format!("attention_prefill_{suffix}_d{d}_g{gm}"),
        defines: vec![
            ("PA_SUFFIX", suffix.to_string()),
            ("PA_CT", ct.to_string()),
            ("PA_D", d.to_string()),
            ("PA_GM", gm.to_string()),
        ],
    })
}

/// Cache rows per key tile of the tensor-core prefill attention (`BK` in
/// `kernels/attention_prefill.cu`'s `prefill_attention_mma`).
const PREFILL_MMA_KEYS: usize = 64;

/// KV splits of a tensor-core prefill attention of `blocks` query tiles x KV heads over `t`
/// tokens: `tuning.prefill_att_splits`, or the smallest power of two that gives two blocks per
/// multiprocessor, with at least two of the [`PREFILL_MMA_KEYS`]-row key tiles a chunk at
/// position 0 has (its last query tile's) per split, and at most [`CLUSTER_MAX`] (the splits
/// merge inside one cluster, sm_90+; 1 before). A split of a single tile cost more in its merge
/// than it saved: with one tile per split, 128 tokens of Qwen3-0.6B took 2.51 ms against 2.03
/// unsplit (H200, 2026-12-03, with the first, serial merge; not re-measured with the batched
/// one). With two tiles or more, 512 tokens took 3.36 ms against 3.90 unsplit. The plan does not
/// know the position, so a chunk that follows earlier tokens keeps the splits of position 0 and
/// gives each more tiles.
pub fn prefill_splits(
    blocks: usize,
    t: usize,
    sm_count: usize,
    cc_major: i32,
    tuning: &Tuning,
) -> usize {
    if cc_major < 9 {
        return 1;
    }
    if let Some(s) = tuning.prefill_att_splits {
        return s.clamp(1, CLUSTER_MAX);
    }
    let key_tiles = t.div_ceil(PREFILL_MMA_KEYS).max(1);
    let mut s = 1;
    while s < CLUSTER_MAX && 4 * s <= key_tiles && blocks * s < 2 * sm_count {
        s *= 2;
    }
    s
}

/// The tensor-core prefill attention kernel (`PA_MMA=1`) for a KV cache of `dtype`, head dim `d`
/// and group instantiation `gm`, or `None` where it does not apply: a cache that is not 16-bit, or a
/// head dim that is not a multiple of 16 up to 128.
pub fn prefill_kernel_mma(dtype: DType, d: usize, gm: usize) -> Option<KernelRef> {
    if !matches!(dtype, DType::BF16 | DType::F16) || !d.is_multiple_of(16) || d > 128 {
        return None;
    }
    let mut k = prefill_kernel(dtype, d, gm)?;
    k.name = k
        .name
        .replacen("attention_prefill_", "attention_prefill_mma_", 1);
    k.defines.push(("PA_MMA", "1".to_string()));
    Some(k)
}

/// The q and k an attention kernel reads: its own operands, or the inputs of the prologue folded
/// into it, with the prologue's norm weights, epsilon and rotary frequencies and head dim.
struct QkOperands {
    q: Operand,
    k: Operand,
    qn: Option<Operand>,
    kn: Option<Operand>,
    eps: f32,
    freqs: Option<(Rotary, usize)>,
}

fn qk_operands(
    v: &View<'_>,
    n: Value,
    prologue: Option<&QkPrologue>,
) -> Result<QkOperands, CudaError> {
    Ok(match prologue {
        None => QkOperands {
            q: v.operand(n, 0)?,
            k: v.operand(n, 1)?,
            qn: None,
            kn: None,
            eps: 0.0,
            freqs: None,
        },
        Some(QkPrologue::NormRope { node, eps, rotary }) => {
            let (qn, kn) = (v.operand(*node, 2)?, v.operand(*node, 3)?);
            v.expect(n, "q_norm", &qn, DType::F32)?;
            v.expect(n, "k_norm", &kn, DType::F32)?;
            let d = qn.ty.numel();
            QkOperands {
                q: v.operand(*node, 0)?,
                k: v.operand(*node, 1)?,
                qn: Some(qn),
                kn: Some(kn),
                eps: *eps,
                freqs: Some((rotary.clone(), d)),
            }
        }
        Some(QkPrologue::Rope { q, k, rotary }) => {
            let (q, k) = (v.operand(*q, 0)?, v.operand(*k, 0)?);
            let d = q.ty.shape[1];
            QkOperands {
                q,
                k,
                qn: None,
                kn: None,
                eps: 0.0,
                freqs: Some((rotary.clone(), d)),
            }
        }
    })
}

/// Lowers attention node `n` (`(q, k, v, k_cache, v_cache, position)`).
pub(super) fn lower(cx: &mut Cx<'_>, n: Value, scale: f32) -> Result<PlannedLaunch, CudaError> {
    let v = cx.view;
    let (vv, pos) = (v.operand(n, 2)?, v.operand(n, 5)?);
    let prologue = cx.fusions.qk.get(&n).cloned();
    let QkOperands {
        q,
        k,
        qn,
        kn,
        eps,
        freqs,
    } = qk_operands(&v, n, prologue.as_ref())?;
    for (what, x) in [("q", &q), ("k", &k), ("v", &vv)] {
        v.expect(n, what, x, DType::F32)?;
    }
    v.expect(n, "position", &pos, DType::I32)?;
    let cache = |slot: usize| -> Result<Operand, CudaError> {
        let c = v.g.inputs(n.node)[slot];
        let is_leaf =
            v.g.node(c.node)
                .is_some_and(|x| matches!(x.op, Op::KvCache { .. }));
        if !is_leaf {
            return Err(v.unsupported(
                n,
                format!(
                    "operand {slot} ({}) must be a kv_cache leaf",
                    v.mem.label(c)
                ),
            ));
        }
        v.operand(n, slot)
    };
    let (kc, vc) = (cache(3)?, cache(4)?);
    if kc.dtype != vc.dtype {
        return Err(v.unsupported(
            n,
            format!("k_cache {} and v_cache {} must share a dtype", kc.ty, vc.ty),
        ));
    }
    let (h, d) = (q.ty.shape[0], q.ty.shape[1]);
    let (ctx, kvh) = (kc.ty.shape[0], kc.ty.shape[1]);
    let (dims, groups) = INSTANCES;
    if !dims.contains(&d) {
        return Err(v.unsupported(
            n,
            format!("head_dim {d} is not supported by the attention kernel (supported: {dims:?})"),
        ));
    }
    let group = h / kvh;
    let gm = groups
        .iter()
        .copied()
        .find(|&x| x >= group)
        .ok_or_else(|| {
            v.unsupported(
                n,
                format!("{group} query heads per KV head; the attention kernel supports at most 8"),
            )
        })?;
    let unroll = cx.tuning.att_unroll;
    let kernel = kernel(kc.dtype, d, gm, unroll)
        .ok_or_else(|| v.unsupported(n, "the KV cache must be a float tensor"))?;
    let csize = kc.dtype.size_bytes();
    let batch = batch_rows(gm, d, 16 / csize, unroll);
    let facts = &cx.target.facts;
    let cluster = cluster(ctx, batch, facts.compute_capability.0, cx.tuning);
    let nsplit = cluster.unwrap_or_else(|| splits(kvh, ctx, facts.sm_count, cx.tuning));
    let out = v.output(n, 0)?;
    let absorbed: Vec<String> = match &prologue {
        None => Vec::new(),
        Some(QkPrologue::NormRope { node, .. }) => vec![v.describe(*node)],
        Some(QkPrologue::Rope { q, k, .. }) => vec![v.describe(*q), v.describe(*k)],
    };
    let inv_freq = match freqs {
        Some((r, fd)) => cx.rope_table(n, &r, fd)?,
        None => Ptr::NULL,
    };
    let params = AttentionParams {
        q: q.ptr,
        k_new: k.ptr,
        v_new: vv.ptr,
        kc: kc.ptr,
        vc: vc.ptr,
        pos: pos.ptr,
        out,
        part: cx.scratch(Scratch::AttPartials, h * nsplit * d * 4),
        part_ml: cx.scratch(Scratch::AttMaxSum, h * nsplit * 2 * 4),
        counters: cx.scratch(Scratch::AttCounters, kvh * 4),
        qn: qn.as_ref().map_or(Ptr::NULL, |o| o.ptr),
        kn: kn.as_ref().map_or(Ptr::NULL, |o| o.ptr),
        inv_freq,
        h: h as i32,
        kvh: kvh as i32,
        max_ctx: ctx as i32,
        scale,
        eps,
        min_chunk: cx.tuning.att_min_chunk as i32,
        cluster: cluster.is_some() as i32,
        ..AttentionParams::default()
    };
    let mut launch = cx.launch(
        n,
        kernel,
        (kvh as u32, nsplit as u32, 1),
        attention_warps(gm, d) * 32,
        0,
        Params::Attention(params),
        (2 * h * d + 2 * kvh * d) * 4 + 2 * kvh * d * csize,
    )?;
    launch.cluster = cluster.map(|s| (1, s as u32, 1));
    launch.bytes_per_kv_row = 2 * kvh * d * csize;
    launch.can_prefetch = true;
    launch.detail = format!(
        "h{h} kv{kvh} d{d}{}",
        match &prologue {
            None => "",
            Some(QkPrologue::NormRope { .. }) => " +qk_norm_rope",
            Some(QkPrologue::Rope { .. }) => " +rope",
        }
    );
    launch.absorbed = absorbed;
    Ok(launch)
}

/// Lowers attention node `n` over `T` tokens (`q [T, h, d]`, `k`, `v [T, kvh, d]`): the KV append
/// of the chunk's rows, then the causal prefill attention.
pub(super) fn lower_prefill(
    cx: &mut Cx<'_>,
    n: Value,
    scale: f32,
    out: &mut Vec<PlannedLaunch>,
) -> Result<(), CudaError> {
    let v = cx.view;
    let (q, k, vv, pos) = (
        v.operand(n, 0)?,
        v.operand(n, 1)?,
        v.operand(n, 2)?,
        v.operand(n, 5)?,
    );
    for (what, x) in [("q", &q), ("k", &k), ("v", &vv)] {
        v.expect(n, what, x, DType::F32)?;
    }
    v.expect(n, "position", &pos, DType::I32)?;
    let cache = |slot: usize| -> Result<Operand, CudaError> {
        let c = v.g.inputs(n.node)[slot];
        let is_leaf =
            v.g.node(c.node)
                .is_some_and(|x| matches!(x.op, Op::KvCache { .. }));
        if !is_leaf {
            return Err(v.unsupported(
                n,
                format!(
                    "operand {slot} ({}) must be a kv_cache leaf",
                    v.mem.label(c)
                ),
            ));
        }
        v.operand(n, slot)
    };
    let (kc, vc) = (cache(3)?, cache(4)?);
    if kc.dtype != vc.dtype {
        return Err(v.unsupported(
            n,
            format!("k_cache {} and v_cache {} must share a dtype", kc.ty, vc.ty),
        ));
    }
    let (t, h, d) = (q.ty.shape[0], q.ty.shape[1], q.ty.shape[2]);
    let (ctx, kvh) = (kc.ty.shape[0], kc.ty.shape[1]);
    let (dims, groups) = INSTANCES;
    if !dims.contains(&d) {
        return Err(v.unsupported(
            n,
            format!(
                "head_dim {d} is not supported by the prefill attention kernel (supported: {dims:?})"
            ),
        ));
    }
    let group = h / kvh;
    let gm = groups
        .iter()
        .copied()
        .find(|&x| x >= group)
        .ok_or_else(|| {
            v.unsupported(
                n,
                format!("{group} query heads per KV head; the attention kernel supports at most 8"),
            )
        })?;
    let suffix = dtype_suffix(kc.dtype)
        .ok_or_else(|| v.unsupported(n, "the KV cache must be a float tensor"))?;
    let csize = kc.dtype.size_bytes();
    let row = kvh * d;
    // k and v as they lie: contiguous, or slices of a split read in place (fusions).
    let ins = v.g.inputs(n.node);
    let mut absorbed: Vec<String> = Vec::new();
    let mut strided = |x: Value, o: &Operand| -> Result<(Ptr, usize), CudaError> {
        Ok(match cx.fusions.in_place(&v, x)? {
            Some((p, ld, split)) => {
                let d = v.describe(split);
                if !absorbed.contains(&d) {
                    absorbed.push(d);
                }
                (p, ld)
            }
            None => (o.ptr, row),
        })
    };
    let (k_ptr, k_ld) = strided(ins[1], &k)?;
    let (v_ptr, v_ld) = strided(ins[2], &vv)?;
    let append = KvAppendParams {
        k: k_ptr,
        v: v_ptr,
        kc: kc.ptr,
        vc: vc.ptr,
        pos: pos.ptr,
        t: t as i32,
        row: row as i32,
        k_ld: k_ld as i32,
        v_ld: v_ld as i32,
        max_ctx: ctx as i32,
        pad_: 0,
    };
    let blocks = (t * row)
        .div_ceil(256)
        .clamp(1, 8 * cx.target.facts.sm_count as usize);
    let mut kv = cx.launch(
        n,
        KernelRef::plain("prefill.cu", format!("kv_append_{suffix}")),
        (blocks as u32, 1, 1),
        256,
        0,
        Params::KvAppend(append),
        2 * t * row * (4 + csize),
    )?;
    kv.detail = format!("{t}x{row}");
    kv.absorbed = absorbed;
    out.push(kv);

    let mma = (cx.tuning.prefill_att == PrefillAtt::Mma
        && cx.target.facts.compute_capability.0 >= 8)
        .then(|| prefill_kernel_mma(kc.dtype, d, gm))
        .flatten();
    let is_mma = mma.is_some();
    let (kernel, smem) = match mma {
        // Static shared memory only (k and v tiles, 36 KB at head_dim 128).
        Some(k) => (k, 0),
        None => (
            prefill_kernel(kc.dtype, d, gm)
                .ok_or_else(|| v.unsupported(n, "the KV cache must be a float tensor"))?,
            prefill_attention_smem(d),
        ),
    };
    let max_smem = cx.target.facts.smem_per_block_optin;
    if smem > max_smem {
        return Err(v.unsupported(
            n,
            format!(
                "head_dim {d} needs {smem} bytes of shared memory in the prefill attention kernel; \
                 the device allows {max_smem}"
            ),
        ));
    }
    let bq = PREFILL_ATT_ROWS as usize / gm;
    let tiles = t.div_ceil(bq);
    let splits = if is_mma {
        prefill_splits(
            tiles * kvh,
            t,
            cx.target.facts.sm_count as usize,
            cx.target.facts.compute_capability.0,
            cx.tuning,
        )
    } else {
        1
    };
    let params = PrefillAttentionParams {
        q: q.ptr,
        kc: kc.ptr,
        vc: vc.ptr,
        pos: pos.ptr,
        out: v.output(n, 0)?,
        t: t as i32,
        h: h as i32,
        kvh: kvh as i32,
        max_ctx: ctx as i32,
        q_ld: (h * d) as i32,
        scale,
    };
    let mut launch = cx.launch(
        n,
        kernel,
        (tiles as u32, kvh as u32, splits as u32),
        PREFILL_ATT_THREADS,
        smem,
        Params::PrefillAttention(params),
        2 * t * h * d * 4,
    )?;
    launch.cluster = (splits > 1).then_some((1, 1, splits as u32));
    // Every block of a KV head reads the cache rows up to its last token's: at most all rows
    // up to the chunk's end, `tiles` times per KV head.
    launch.bytes_per_kv_row = tiles * 2 * row * csize;
    launch.detail = format!("t{t} h{h} kv{kvh} d{d}");
    if splits > 1 {
        launch.detail += &format!(" x{splits} splits");
    }
    out.push(launch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_two_blocks_per_sm_and_respect_short_contexts() {
        let t = Tuning::default();
        assert_eq!(splits(8, 4096, 132, &t), 33);
        assert_eq!(splits(8, 64, 132, &t), 2);
        assert_eq!(splits(1, 1 << 20, 132, &t), 64);
        let eight = Tuning {
            att_splits: Some(8),
            ..t
        };
        assert_eq!(splits(8, 4096, 132, &eight), 8);
    }

    #[test]
    fn prefill_splits_fill_the_gpu_within_the_key_tiles() {
        let t = Tuning::default();
        // Qwen3-0.6B (8 KV heads, 32 tokens per query tile) on 132 SMs: 512 tokens are 128
        // blocks, 4 splits of 2 key tiles make 512; 128 tokens have two key tiles: no split.
        assert_eq!(prefill_splits(16 * 8, 512, 132, 9, &t), 4);
        assert_eq!(prefill_splits(8 * 8, 256, 132, 9, &t), 2);
        assert_eq!(prefill_splits(4 * 8, 128, 132, 9, &t), 1);
        assert_eq!(prefill_splits(2 * 8, 64, 132, 9, &t), 1);
        // Enough blocks already (a 4,096-token chunk), before sm_90, or a fixed knob.
        assert_eq!(prefill_splits(128 * 8, 4096, 132, 9, &t), 1);
        assert_eq!(prefill_splits(16 * 8, 512, 132, 8, &t), 1);
        let fixed = Tuning {
            prefill_att_splits: Some(8),
            ..Tuning::default()
        };
        assert_eq!(prefill_splits(128 * 8, 4096, 132, 9, &fixed), 8);
    }

    #[test]
    fn the_cluster_merge_covers_short_contexts_only() {
        let t = Tuning::default();
        assert_eq!(attention_warps(2, 128), 8);
        assert_eq!(attention_warps(8, 128), 4);
        // Qwen3-0.6B's attention with a bf16 cache: 64-row batches; a cluster up to 1,024 rows.
        assert_eq!(batch_rows(2, 128, 8, 4), 64);
        assert_eq!(cluster(1024, 64, 9, &t), Some(8));
        assert_eq!(cluster(1025, 64, 9, &t), None);
        assert_eq!(batch_rows(8, 128, 4, 4), 16);
        assert_eq!(cluster(1024, 128, 9, &t), Some(8));
        assert_eq!(cluster(2048, 128, 9, &t), Some(8));
        assert_eq!(cluster(2049, 128, 9, &t), None);
        assert_eq!(cluster(200, 128, 9, &t), Some(2));
        assert_eq!(cluster(1024, 128, 8, &t), None);
        let off = Tuning {
            att_cluster: false,
            ..t
        };
        assert_eq!(cluster(200, 128, 9, &off), None);
    }
}
