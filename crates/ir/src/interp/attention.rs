//! Causal GQA attention of one query token over the rows of a KV cache (a prefill chunk of `T`
//! tokens calls it once per token, each with its own last row).

use super::math::softmax_in_place;
use super::matmul::dot;

/// The shapes of one attention call: `h` query heads, `kv` KV heads, `head_dim` `d`; the caches are
/// `[max_context, kv, d]`, read at rows `0..=position`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AttnShape {
    pub h: usize,
    pub kv: usize,
    pub d: usize,
    pub position: usize,
}

/// `q [h, d]` against cache rows `0..=position`: for query head `i` (KV head `g = i / (h / kv)`, HF
/// `repeat_kv`), `p = softmax(scale · q_i · k_cache[j, g])` over `j`, output `Σ_j p_j · v_cache[j, g]`
/// (HF `eager_attention_forward` with a causal mask). Returns `[h, d]`.
pub(super) fn attend(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttnShape,
    scale: f32,
) -> Vec<f32> {
    let AttnShape { h, kv, d, position } = s;
    let mut out = vec![0.0; h * d];
    if d == 0 || kv == 0 {
        return out;
    }
    let group = h / kv;
    let row = |j: usize, g: usize| -> std::ops::Range<usize> {
        let start = (j * kv + g) * d;
        start..start + d
    };
    let mut p = vec![0.0; position + 1];
    for (i, (qi, oi)) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let g = i / group;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = dot(qi, &k_cache[row(j, g)]) * scale;
        }
        softmax_in_place(&mut p);
        for (j, pj) in p.iter().enumerate() {
            for (o, v) in oi.iter_mut().zip(&v_cache[row(j, g)]) {
                *o += pj * v;
            }
        }
    }
    out
}
