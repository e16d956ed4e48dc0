//! Row-wise and elementwise primitives of the reference interpreter: rms_norm, silu, add, mul, rope,
//! softmax, argmax. All f32; shapes are passed explicitly and were checked by [`crate::Op::infer`].

use super::matmul::dot;

/// `w * x / sqrt(mean(x²) + eps)` over each row of `x` (`[rows, d]`, `d = w.len()`), as HF
/// `Qwen3RMSNorm`: the normaliser is applied first, then the weight.
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    if d == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let mean_sq = dot(row, row) / d as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, g)| g * (v * inv)));
    }
    out
}

/// `x * sigmoid(x)`, elementwise, computed as `x / (1 + e^-x)` (PyTorch's `silu`).
pub(super) fn silu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v / (1.0 + (-v).exp())).collect()
}

/// `a + b`, elementwise: `b` has `a`'s length, or is one row added to every row of `a` (PyTorch
/// broadcasting of `[.., n] + [n]`).
pub(super) fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    zip_rows(a, b, |x, y| x + y)
}

/// `a * b`, elementwise, with `b` broadcast over rows as in [`add`].
pub(super) fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    zip_rows(a, b, |x, y| x * y)
}

/// `f(a[i], b[i])`, or `f(a[r, j], b[j])` for every row `r` when `b` is one row of `a`.
fn zip_rows(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    if b.is_empty() || a.len() == b.len() {
        return a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect();
    }
    a.chunks_exact(b.len())
        .flat_map(|row| row.iter().zip(b).map(|(x, y)| f(*x, *y)))
        .collect()
}

/// Rotary embedding of `x` (`tokens` tokens, each `[heads, d]`, `d` even), token `t` at
/// `position + t`, rotate-half layout (HF `apply_rotary_pos_emb`): for `i < d/2`,
/// `angle = (position + t) as f32 * inv_freq[i]` (f32, as HF computes it; `inv_freq` from
/// [`crate::rope_inv_freq`]), `out[i] = x[i]·cos − x[i+d/2]·sin`,
/// `out[i+d/2] = x[i+d/2]·cos + x[i]·sin`.
pub(super) fn rope(
    x: &[f32],
    d: usize,
    tokens: usize,
    position: usize,
    inv_freq: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let token_len = x.len() / tokens.max(1);
    if d == 0 || token_len == 0 {
        return out;
    }
    let half = d / 2;
    let tokens = x
        .chunks_exact(token_len)
        .zip(out.chunks_exact_mut(token_len));
    for (t, (xt, ot)) in tokens.enumerate() {
        let pos = (position + t) as f32;
        let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
            .iter()
            .map(|f| {
                let angle = pos * f;
                (angle.cos(), angle.sin())
            })
            .unzip();
        for (xh, oh) in xt.chunks_exact(d).zip(ot.chunks_exact_mut(d)) {
            let (x1, x2) = xh.split_at(half);
            let (o1, o2) = oh.split_at_mut(half);
            for i in 0..half {
                o1[i] = x1[i] * cos[i] - x2[i] * sin[i];
                o2[i] = x2[i] * cos[i] + x1[i] * sin[i];
            }
        }
    }
    out
}

/// Softmax in place: subtracts the maximum, exponentiates, divides by the sum (f32, as HF's
/// `softmax(..., dtype=float32)`).
pub(super) fn softmax_in_place(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in s.iter_mut() {
        *v /= sum;
    }
}

/// Index of the largest element, the first one on ties. Errors with the index of the first NaN:
/// a NaN logit means the step computed garbage, and picking a token from it would hide that.
pub(super) fn argmax(x: &[f32]) -> Result<usize, String> {
    if x.is_empty() {
        return Err("argmax of an empty tensor".into());
    }
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if v.is_nan() {
            return Err(format!("element {i} is NaN; argmax of NaN is undefined"));
        }
        if *v > x[best] {
            best = i;
        }
    }
    Ok(best)
}
