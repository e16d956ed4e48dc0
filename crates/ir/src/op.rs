//! The closed op set and its type rules.
//!
//! Every op here has reference semantics in [`crate::interp`]; the formulas follow Hugging Face
//! transformers' `modeling_qwen3.py` (cited per op). Activations are f32 in the reference graphs built
//! by the runtime, weights keep their checkpoint dtype (bf16/f16/f32) and are upcast on use.
//!
//! Token rows: a decode step has one token, a prefill step `T`. Row-wise ops (`matmul`,
//! `rms_norm`, `add`, the fused matmuls) take any leading dims; the per-head ops (`rope`,
//! `fused_qk_norm_rope`, `attention`) take `[heads, d]` for one token or `[T, heads, d]` for `T`
//! consecutive tokens starting at `position`.

use crate::rope::RopeScaling;
use crate::types::{DType, TensorType};

/// One operation of the IR. Leaves (`Input`, `Weight`, `KvCache`) carry their own type; every other op's
/// output types are inferred from its inputs by [`Op::infer`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A per-step input fed by the host, e.g. `token` (`i32[1]`) or `position` (`i32[1]`).
    Input { name: String, ty: TensorType },
    /// A named weight tensor (checkpoint name), e.g. `model.layers.0.self_attn.q_proj.weight`.
    Weight { name: String, ty: TensorType },
    /// Persistent KV-cache state `[max_context, kv_heads, head_dim]`, written by `attention`.
    KvCache { name: String, ty: TensorType },
    /// `(table [vocab, hidden], ids i32[n]) -> f32[n, hidden]`: row lookup.
    Embedding,
    /// `(x [.., d], weight [d]) -> f32 like x`: `w * x / sqrt(mean(x²) + eps)` over the last axis
    /// (HF `Qwen3RMSNorm`).
    RmsNorm { eps: f32 },
    /// `(x [.., k], w [n, k]) -> f32[.., n]`: `y = x · wᵀ`, W stored `[out, in]` as in HF `nn.Linear`.
    MatMul,
    /// `(a, b) -> f32 like a`, elementwise: `b` has `a`'s shape, or is `[n]` for `a [.., n]` and is
    /// added to every row (PyTorch broadcasting of `x + bias`, e.g. HF `nn.Linear`'s bias).
    Add,
    /// `(a, b) -> f32 like a`, elementwise: `b` has `a`'s shape, or is `[n]` for `a [.., n]` and
    /// multiplies every row (PyTorch broadcasting).
    Mul,
    /// `(x) -> f32 like x`: `x * sigmoid(x)`.
    Silu,
    /// `(x [heads, head_dim] | [T, heads, head_dim], position i32[1]) -> f32 like x`: rotary
    /// embedding, rotate-half layout (HF `apply_rotary_pos_emb`), frequencies
    /// [`crate::rope_inv_freq`]`(theta, scaling, head_dim)` (`1 / theta^(2i/head_dim)` for the
    /// default scaling). Rank 2 is one token at `position`; rank 3 is `T` tokens, token `t` at
    /// `position + t`.
    Rope { theta: f32, scaling: RopeScaling },
    /// `(q, k, v, k_cache [ctx, kv, d], v_cache [ctx, kv, d], position i32[1]) -> f32 like q`, with
    /// `q [h, d]`, `k`, `v [kv, d]` (one token) or `q [T, h, d]`, `k`, `v [T, kv, d]` (`T` tokens):
    /// stores the `T` k/v rows at cache rows `position .. position + T` (in the caches' dtype),
    /// then query token `t` attends causally over rows `0 ..= position + t` (bottom-right-aligned
    /// causal mask, so a chunk may follow tokens already in the cache): softmax attention of each
    /// query head over its KV head (GQA: query head `i` uses KV head `i / (h / kv)`, HF
    /// `repeat_kv`), scores scaled by `scale` (HF: `head_dim^-0.5`). Running `position + T` past
    /// `ctx` is an interpreter error.
    Attention { scale: f32 },
    /// `(x) -> x reshaped`: same element count, same dtype; no data movement.
    Reshape { shape: Vec<usize> },
    /// `(x) -> several outputs`: slices of `x` along `axis` with the given sizes.
    Split { axis: usize, sizes: Vec<usize> },
    /// `(x0, x1, ..) -> concatenation along axis`; all inputs share dtype and other dims.
    Concat { axis: usize },
    /// `(x [1, n]) -> i32[1]`: index of the largest element of the last axis (first on ties).
    Argmax,
    /// `(x [.., k], norm_weight [k], w [n, k]) -> f32[.., n]`: `matmul(rms_norm(x, norm_weight), w)`.
    FusedRmsNormMatmul { eps: f32 },
    /// `(gate_up [rows, 2i], w_down [h, i], residual [rows, h]) -> f32[rows, h]` (one row per token):
    /// the SwiGLU tail of an MLP, `residual + (silu(gate_up[:, :i]) * gate_up[:, i:]) · w_downᵀ`
    /// (HF `Qwen3MLP` + the residual add).
    FusedGatedMlp,
    /// `(x [.., k], w [n, k], r [.., n] | [n]) -> f32[.., n]`: `add(matmul(x, w), r)`, `x · wᵀ + r`
    /// (a residual, or a bias `[n]` added to every row).
    FusedMatmulAdd,
    /// `(q, k, q_norm [d], k_norm [d], position i32[1]) -> (f32 like q, f32 like k)` with `q [h, d]`,
    /// `k [kv, d]` or `q [T, h, d]`, `k [T, kv, d]`: `rope(rms_norm(q, q_norm))` and
    /// `rope(rms_norm(k, k_norm))` with one `eps`, `theta` and `scaling` (HF `Qwen3Attention`).
    FusedQkNormRope {
        eps: f32,
        theta: f32,
        scaling: RopeScaling,
    },
    /// `(x [.., k], norm_weight [k], w [n, k], r [.., n] | [n]) -> f32[.., n]`:
    /// `add(matmul(rms_norm(x, norm_weight), w), r)`, e.g. a packed q/k/v projection with its bias
    /// (HF `Qwen2Attention`'s `q_proj`/`k_proj`/`v_proj` with `bias=True`).
    FusedRmsNormMatmulAdd { eps: f32 },
}

/// The kind of an op, without attributes: its name in the text form and in `--stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Input,
    Weight,
    KvCache,
    Embedding,
    RmsNorm,
    MatMul,
    Add,
    Mul,
    Silu,
    Rope,
    Attention,
    Reshape,
    Split,
    Concat,
    Argmax,
    FusedRmsNormMatmul,
    FusedGatedMlp,
    FusedMatmulAdd,
    FusedQkNormRope,
    FusedRmsNormMatmulAdd,
}

impl OpKind {
    /// All kinds, in declaration order.
    pub const ALL: [OpKind; 20] = [
        OpKind::Input,
        OpKind::Weight,
        OpKind::KvCache,
        OpKind::Embedding,
        OpKind::RmsNorm,
        OpKind::MatMul,
        OpKind::Add,
        OpKind::Mul,
        OpKind::Silu,
        OpKind::Rope,
        OpKind::Attention,
        OpKind::Reshape,
        OpKind::Split,
        OpKind::Concat,
        OpKind::Argmax,
        OpKind::FusedRmsNormMatmul,
        OpKind::FusedGatedMlp,
        OpKind::FusedMatmulAdd,
        OpKind::FusedQkNormRope,
        OpKind::FusedRmsNormMatmulAdd,
    ];

    /// The op's name in the text form, e.g. `fused_rms_norm_matmul`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Input => "input",
            OpKind::Weight => "weight",
            OpKind::KvCache => "kv_cache",
            OpKind::Embedding => "embedding",
            OpKind::RmsNorm => "rms_norm",
            OpKind::MatMul => "matmul",
            OpKind::Add => "add",
            OpKind::Mul => "mul",
            OpKind::Silu => "silu",
            OpKind::Rope => "rope",
            OpKind::Attention => "attention",
            OpKind::Reshape => "reshape",
            OpKind::Split => "split",
            OpKind::Concat => "concat",
            OpKind::Argmax => "argmax",
            OpKind::FusedRmsNormMatmul => "fused_rms_norm_matmul",
            OpKind::FusedGatedMlp => "fused_gated_mlp",
            OpKind::FusedMatmulAdd => "fused_matmul_add",
            OpKind::FusedQkNormRope => "fused_qk_norm_rope",
            OpKind::FusedRmsNormMatmulAdd => "fused_rms_norm_matmul_add",
        }
    }

    /// Looks a kind up by its text name.
    pub fn from_name(s: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Number of inputs, or `None` for variadic ops (`concat`).
    pub fn arity(self) -> Option<usize> {
        Some(match self {
            OpKind::Input | OpKind::Weight | OpKind::KvCache => 0,
            OpKind::Silu | OpKind::Reshape | OpKind::Split | OpKind::Argmax => 1,
            OpKind::Embedding | OpKind::RmsNorm | OpKind::MatMul | OpKind::Add | OpKind::Mul => 2,
            OpKind::Rope => 2,
            OpKind::FusedRmsNormMatmul | OpKind::FusedGatedMlp | OpKind::FusedMatmulAdd => 3,
            OpKind::FusedRmsNormMatmulAdd => 4,
            OpKind::FusedQkNormRope => 5,
            OpKind::Attention => 6,
            OpKind::Concat => return None,
        })
    }

    /// Whether a node of this kind is a leaf (no inputs, type declared).
    pub fn is_leaf(self) -> bool {
        matches!(self, OpKind::Input | OpKind::Weight | OpKind::KvCache)
    }

    /// Whether the fusion passes produce this kind (the `fused_*` ops).
    pub fn is_fused(self) -> bool {
        matches!(
            self,
            OpKind::FusedRmsNormMatmul
                | OpKind::FusedGatedMlp
                | OpKind::FusedMatmulAdd
                | OpKind::FusedQkNormRope
                | OpKind::FusedRmsNormMatmulAdd
        )
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Op {
    /// The op's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Input { .. } => OpKind::Input,
            Op::Weight { .. } => OpKind::Weight,
            Op::KvCache { .. } => OpKind::KvCache,
            Op::Embedding => OpKind::Embedding,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::MatMul => OpKind::MatMul,
            Op::Add => OpKind::Add,
            Op::Mul => OpKind::Mul,
            Op::Silu => OpKind::Silu,
            Op::Rope { .. } => OpKind::Rope,
            Op::Attention { .. } => OpKind::Attention,
            Op::Reshape { .. } => OpKind::Reshape,
            Op::Split { .. } => OpKind::Split,
            Op::Concat { .. } => OpKind::Concat,
            Op::Argmax => OpKind::Argmax,
            Op::FusedRmsNormMatmul { .. } => OpKind::FusedRmsNormMatmul,
            Op::FusedGatedMlp => OpKind::FusedGatedMlp,
            Op::FusedMatmulAdd => OpKind::FusedMatmulAdd,
            Op::FusedQkNormRope { .. } => OpKind::FusedQkNormRope,
            Op::FusedRmsNormMatmulAdd { .. } => OpKind::FusedRmsNormMatmulAdd,
        }
    }

    /// The op's text name.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The name of a leaf (`input`, `weight`, `kv_cache`), `None` for other ops.
    pub fn leaf_name(&self) -> Option<&str> {
        match self {
            Op::Input { name, .. } | Op::Weight { name, .. } | Op::KvCache { name, .. } => {
                Some(name)
            }
            _ => None,
        }
    }

    /// Whether executing this op on a device costs a kernel launch. Leaves and `reshape` never do;
    /// `split` along an axis whose leading dimensions are all 1 is a view, and so costs none either.
    /// `concat` of weights is folded at load time, so a `concat` counts only when it remains at run time.
    pub fn launches_kernel(&self, input_types: &[&TensorType]) -> bool {
        match self {
            Op::Input { .. } | Op::Weight { .. } | Op::KvCache { .. } | Op::Reshape { .. } => false,
            Op::Split { axis, .. } => !split_is_view(*axis, input_types),
            _ => true,
        }
    }

    /// Infers the output types of this op from its input types.
    ///
    /// Errors: a sentence saying what was expected, e.g. `matmul expects w [n, 1024], got bf16[4096, 512]`.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let name = self.name();
        if let Some(n) = self.kind().arity() {
            if inputs.len() != n {
                return Err(format!("{name} expects {n} inputs, got {}", inputs.len()));
            }
        }
        let f32_like = |t: &TensorType| TensorType::new(DType::F32, t.shape.clone());
        match self {
            Op::Input { ty, .. } | Op::Weight { ty, .. } | Op::KvCache { ty, .. } => {
                Ok(vec![ty.clone()])
            }
            Op::Embedding => {
                let (table, ids) = (inputs[0], inputs[1]);
                expect_rank(name, "table", table, 2)?;
                expect_float(name, "table", table)?;
                expect_dtype(name, "ids", ids, DType::I32)?;
                expect_rank(name, "ids", ids, 1)?;
                Ok(vec![TensorType::new(
                    DType::F32,
                    [ids.shape[0], table.shape[1]],
                )])
            }
            Op::RmsNorm { .. } => {
                let (x, w) = (inputs[0], inputs[1]);
                expect_norm_weight(name, x, w)?;
                Ok(vec![f32_like(x)])
            }
            Op::MatMul => matmul_type(name, inputs[0], inputs[1]).map(|t| vec![t]),
            Op::Add | Op::Mul => {
                let (a, b) = (inputs[0], inputs[1]);
                expect_float(name, "a", a)?;
                expect_float(name, "b", b)?;
                if !broadcasts_to(b, &a.shape) {
                    return Err(format!(
                        "{name} expects b of a's shape or [{}] (one row), got {a} and {b}",
                        a.last_dim()
                    ));
                }
                Ok(vec![f32_like(a)])
            }
            Op::Silu => {
                expect_float(name, "x", inputs[0])?;
                Ok(vec![f32_like(inputs[0])])
            }
            Op::Rope { scaling, .. } => {
                let (x, pos) = (inputs[0], inputs[1]);
                expect_heads(name, "x", x)?;
                expect_float(name, "x", x)?;
                if x.last_dim() % 2 != 0 {
                    return Err(format!("{name} expects an even head_dim, got {x}"));
                }
                expect_position(name, pos)?;
                scaling.validate().map_err(|e| format!("{name} {e}"))?;
                Ok(vec![f32_like(x)])
            }
            Op::Attention { .. } => attention_type(name, inputs).map(|t| vec![t]),
            Op::Reshape { shape } => {
                let x = inputs[0];
                let n: usize = shape.iter().product();
                if n != x.numel() {
                    return Err(format!(
                        "{name} to {shape:?} expects {n} elements, got {x} ({} elements)",
                        x.numel()
                    ));
                }
                Ok(vec![TensorType::new(x.dtype, shape.clone())])
            }
            Op::Split { axis, sizes } => {
                let x = inputs[0];
                if *axis >= x.shape.len() {
                    return Err(format!(
                        "{name} along axis {axis} expects rank > {axis}, got {x}"
                    ));
                }
                let total: usize = sizes.iter().sum();
                if total != x.shape[*axis] || sizes.is_empty() {
                    return Err(format!(
                        "{name} sizes {sizes:?} must sum to dimension {axis} of {x} ({})",
                        x.shape[*axis]
                    ));
                }
                Ok(sizes
                    .iter()
                    .map(|&s| {
                        let mut shape = x.shape.clone();
                        shape[*axis] = s;
                        TensorType::new(x.dtype, shape)
                    })
                    .collect())
            }
            Op::Concat { axis } => {
                let first = inputs
                    .first()
                    .ok_or_else(|| format!("{name} expects at least 1 input"))?;
                if *axis >= first.shape.len() {
                    return Err(format!(
                        "{name} along axis {axis} expects rank > {axis}, got {first}"
                    ));
                }
                let mut shape = first.shape.clone();
                shape[*axis] = 0;
                for t in inputs {
                    let mut other = t.shape.clone();
                    if other.len() != first.shape.len() || t.dtype != first.dtype {
                        return Err(format!("{name} expects inputs like {first}, got {t}"));
                    }
                    shape[*axis] += other[*axis];
                    other[*axis] = first.shape[*axis];
                    if other != first.shape {
                        return Err(format!(
                            "{name} expects inputs equal to {first} outside axis {axis}, got {t}"
                        ));
                    }
                }
                Ok(vec![TensorType::new(first.dtype, shape)])
            }
            Op::Argmax => {
                let x = inputs[0];
                expect_float(name, "x", x)?;
                if x.rows() != 1 {
                    return Err(format!("{name} expects one row [1, n], got {x}"));
                }
                Ok(vec![TensorType::new(DType::I32, [1])])
            }
            Op::FusedRmsNormMatmul { .. } => {
                let (x, g, w) = (inputs[0], inputs[1], inputs[2]);
                expect_norm_weight(name, x, g)?;
                matmul_type(name, x, w).map(|t| vec![t])
            }
            Op::FusedGatedMlp => {
                let (gu, wd, r) = (inputs[0], inputs[1], inputs[2]);
                expect_rank(name, "gate_up", gu, 2)?;
                expect_rank(name, "w_down", wd, 2)?;
                let i = wd.shape[1];
                if gu.shape[1] != 2 * i {
                    return Err(format!(
                        "{name} expects gate_up [.., {}] (twice w_down's {i} columns), got {gu}",
                        2 * i
                    ));
                }
                let out = TensorType::new(DType::F32, [gu.shape[0], wd.shape[0]]);
                if r.shape != out.shape {
                    return Err(format!("{name} expects residual {out}, got {r}"));
                }
                Ok(vec![out])
            }
            Op::FusedMatmulAdd => {
                let out = matmul_type(name, inputs[0], inputs[1])?;
                expect_addend(name, &out, inputs[2])?;
                Ok(vec![out])
            }
            Op::FusedQkNormRope { scaling, .. } => {
                let (q, k, qn, kn, pos) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]);
                expect_heads(name, "q", q)?;
                expect_heads(name, "k", k)?;
                expect_same_tokens(name, q, &[("k", k)])?;
                if q.last_dim() != k.last_dim() || q.last_dim() % 2 != 0 {
                    return Err(format!(
                        "{name} expects q and k with one even head_dim, got {q} and {k}"
                    ));
                }
                expect_norm_weight(name, q, qn)?;
                expect_norm_weight(name, k, kn)?;
                expect_position(name, pos)?;
                scaling.validate().map_err(|e| format!("{name} {e}"))?;
                Ok(vec![f32_like(q), f32_like(k)])
            }
            Op::FusedRmsNormMatmulAdd { .. } => {
                let (x, g, w, r) = (inputs[0], inputs[1], inputs[2], inputs[3]);
                expect_norm_weight(name, x, g)?;
                let out = matmul_type(name, x, w)?;
                expect_addend(name, &out, r)?;
                Ok(vec![out])
            }
        }
    }
}

/// Whether a split along `axis` of the given input is a contiguous view (all leading dims are 1).
pub fn split_is_view(axis: usize, input_types: &[&TensorType]) -> bool {
    input_types
        .first()
        .is_some_and(|t| t.shape[..axis.min(t.shape.len())].iter().all(|&d| d == 1))
}

/// Whether `b` has `shape`, or is `[n]` with `shape` `[.., n]` (one row, broadcast over the rows).
fn broadcasts_to(b: &TensorType, shape: &[usize]) -> bool {
    b.shape == shape || (b.shape.len() == 1 && shape.last() == Some(&b.shape[0]))
}

/// The addend `r` of a fused matmul + add with output `out`: `out`'s shape or one row `[n]`.
fn expect_addend(op: &str, out: &TensorType, r: &TensorType) -> Result<(), String> {
    expect_float(op, "residual", r)?;
    if !broadcasts_to(r, &out.shape) {
        return Err(format!(
            "{op} expects residual {out} or bias [{}], got {r}",
            out.last_dim()
        ));
    }
    Ok(())
}

/// A per-head operand: `[heads, d]` (one token) or `[T, heads, d]` (`T` tokens).
fn expect_heads(op: &str, what: &str, t: &TensorType) -> Result<(), String> {
    if !matches!(t.shape.len(), 2 | 3) {
        return Err(format!(
            "{op} expects {what} [heads, head_dim] or [tokens, heads, head_dim], got {t}"
        ));
    }
    Ok(())
}

/// `q` and `others` (each already `[heads, d]` or `[T, heads, d]`) have one rank and, for rank 3,
/// one token count `T`.
fn expect_same_tokens(
    op: &str,
    q: &TensorType,
    others: &[(&str, &TensorType)],
) -> Result<(), String> {
    for (what, t) in others {
        if t.shape.len() != q.shape.len() {
            return Err(format!(
                "{op} expects q and {what} of one rank (one token [heads, d] or T tokens \
                 [T, heads, d]), got {q} and {t}"
            ));
        }
        if q.shape.len() == 3 && t.shape[0] != q.shape[0] {
            return Err(format!(
                "{op} expects q and {what} with one token count T = {}, got {q} and {t}",
                q.shape[0]
            ));
        }
    }
    Ok(())
}

fn expect_rank(op: &str, what: &str, t: &TensorType, rank: usize) -> Result<(), String> {
    if t.shape.len() != rank {
        return Err(format!("{op} expects {what} of rank {rank}, got {t}"));
    }
    Ok(())
}

fn expect_float(op: &str, what: &str, t: &TensorType) -> Result<(), String> {
    if !t.dtype.is_float() {
        return Err(format!("{op} expects a float {what}, got {t}"));
    }
    Ok(())
}

fn expect_dtype(op: &str, what: &str, t: &TensorType, dtype: DType) -> Result<(), String> {
    if t.dtype != dtype {
        return Err(format!("{op} expects {what} of dtype {dtype}, got {t}"));
    }
    Ok(())
}

fn expect_position(op: &str, pos: &TensorType) -> Result<(), String> {
    if pos.dtype != DType::I32 || pos.shape != [1] {
        return Err(format!("{op} expects position i32[1], got {pos}"));
    }
    Ok(())
}

fn expect_norm_weight(op: &str, x: &TensorType, w: &TensorType) -> Result<(), String> {
    expect_float(op, "x", x)?;
    expect_float(op, "norm weight", w)?;
    if x.shape.is_empty() || w.shape != [x.last_dim()] {
        return Err(format!(
            "{op} expects norm weight [{}] for x {x}, got {w}",
            x.last_dim()
        ));
    }
    Ok(())
}

fn matmul_type(op: &str, x: &TensorType, w: &TensorType) -> Result<TensorType, String> {
    expect_float(op, "x", x)?;
    expect_float(op, "w", w)?;
    if x.shape.is_empty() {
        return Err(format!("{op} expects x of rank >= 1, got {x}"));
    }
    let k = x.last_dim();
    if w.shape.len() != 2 || w.shape[1] != k {
        return Err(format!("{op} expects w [n, {k}] for x {x}, got {w}"));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank checked above") = w.shape[0];
    Ok(TensorType::new(DType::F32, shape))
}

fn attention_type(op: &str, i: &[&TensorType]) -> Result<TensorType, String> {
    let (q, k, v, kc, vc, pos) = (i[0], i[1], i[2], i[3], i[4], i[5]);
    expect_heads(op, "q", q)?;
    expect_heads(op, "k", k)?;
    expect_heads(op, "v", v)?;
    expect_same_tokens(op, q, &[("k", k), ("v", v)])?;
    expect_rank(op, "k_cache", kc, 3)?;
    // Per token: q [h, d], k and v [kv, d]; the token count (rank 3) was checked above.
    let lead = q.shape.len() - 2;
    let (h, d) = (q.shape[lead], q.shape[lead + 1]);
    let kv = k.shape[lead];
    if k.shape[lead..] != [kv, d] || v.shape[lead..] != [kv, d] {
        let tokens = if lead == 1 {
            format!("{}, ", q.shape[0])
        } else {
            String::new()
        };
        return Err(format!(
            "{op} expects k and v [{tokens}kv_heads, {d}], got {k} and {v}"
        ));
    }
    if kv == 0 || h % kv != 0 {
        return Err(format!(
            "{op} expects query heads ({h}) to be a multiple of KV heads ({kv})"
        ));
    }
    if kc.shape[1..] != [kv, d] || vc.shape != kc.shape {
        return Err(format!(
            "{op} expects k_cache and v_cache [max_context, {kv}, {d}], got {kc} and {vc}"
        ));
    }
    expect_float(op, "k_cache", kc)?;
    expect_position(op, pos)?;
    Ok(TensorType::new(DType::F32, q.shape.clone()))
}
