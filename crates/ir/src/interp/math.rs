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

/// `a + b`, elementwise (equal lengths).
pub(super) fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `a * b`, elementwise (equal lengths).
pub(super) fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// Rotary embedding of `x` (`[heads, d]`, `d` even) at `position`, rotate-half layout (HF
/// `apply_rotary_pos_emb` with the default rope type): for `i < d/2`,
/// `inv_freq_i = 1 / theta^(2i/d)`, `angle = position * inv_freq_i` (both f32, as HF computes them),
/// `out[i] = x[i]·cos − x[i+d/2]·sin`, `out[i+d/2] = x[i+d/2]·cos + x[i]·sin`.
pub(super) fn rope(x: &[f32], d: usize, position: usize, theta: f32) -> Vec<f32> {
    if d == 0 {
        return Vec::new();
    }
    let half = d / 2;
    let pos = position as f32;
    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..half)
        .map(|i| {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / d as f32);
            let angle = pos * inv_freq;
            (angle.cos(), angle.sin())
        })
        .unzip();
    let mut out = vec![0.0; x.len()];
    for (xh, oh) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let (x1, x2) = xh.split_at(half);
        let (o1, o2) = oh.split_at_mut(half);
        for i in 0..half {
            o1[i] = x1[i] * cos[i] - x2[i] * sin[i];
            o2[i] = x2[i] * cos[i] + x1[i] * sin[i];
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
