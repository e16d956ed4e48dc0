//! The fused ops, each written as the composition of the same primitives the unfused ops use, so a
//! fused node means exactly what the subgraph it replaced means.

use super::layout::split;
use super::math::{add, mul, rms_norm, rope, silu};
use super::matmul::matmul;

/// `fused_rms_norm_matmul`: `matmul(rms_norm(x [rows, k], g [k]), w [n, k]) -> [rows, n]`.
pub(super) fn rms_norm_matmul(
    x: &[f32],
    rows: usize,
    g: &[f32],
    eps: f32,
    w: &[f32],
    n: usize,
) -> Vec<f32> {
    matmul(&rms_norm(x, g, eps), rows, g.len(), w, n)
}

/// `fused_gated_mlp`: `r + (silu(gu[:, :i]) * gu[:, i:]) · w_downᵀ` with `gu [rows, 2i]`,
/// `w_down [h, i]`, `r [rows, h]` (HF `Qwen3MLP.forward` plus the residual add).
pub(super) fn gated_mlp(
    gu: &[f32],
    rows: usize,
    w_down: &[f32],
    h: usize,
    i: usize,
    r: &[f32],
) -> Vec<f32> {
    let halves = split(gu, &[rows, 2 * i], 1, &[i, i]);
    let act = mul(&silu(&halves[0]), &halves[1]);
    add(&matmul(&act, rows, i, w_down, h), r)
}

/// `fused_matmul_add`: `add(matmul(x [rows, k], w [n, k]), r)`, `r` `[rows, n]` or one row `[n]`.
pub(super) fn matmul_add(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    r: &[f32],
) -> Vec<f32> {
    add(&matmul(x, rows, k, w, n), r)
}

/// `fused_rms_norm_matmul_add`: `add(matmul(rms_norm(x [rows, k], g [k]), w [n, k]), r)`, `r`
/// `[rows, n]` or one row `[n]`.
pub(super) fn rms_norm_matmul_add(
    x: &[f32],
    rows: usize,
    g: &[f32],
    eps: f32,
    w: &[f32],
    n: usize,
    r: &[f32],
) -> Vec<f32> {
    add(&rms_norm_matmul(x, rows, g, eps, w, n), r)
}

/// `fused_qk_norm_rope`: `(rope(rms_norm(q, qn)), rope(rms_norm(k, kn)))` for `tokens` tokens
/// (`q [tokens, h, d]`, `k [tokens, kv, d]`) from `position`, with the frequencies `inv_freq`.
#[allow(clippy::too_many_arguments)]
pub(super) fn qk_norm_rope(
    q: &[f32],
    k: &[f32],
    d: usize,
    q_norm: &[f32],
    k_norm: &[f32],
    eps: f32,
    tokens: usize,
    position: usize,
    inv_freq: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    (
        rope(&rms_norm(q, q_norm, eps), d, tokens, position, inv_freq),
        rope(&rms_norm(k, k_norm, eps), d, tokens, position, inv_freq),
    )
}
