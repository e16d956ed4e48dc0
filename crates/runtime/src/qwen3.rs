//! Qwen3 → IR lowering of one decode step.
//!
//! The step takes `token: i32[1]` and `position: i32[1]` and returns `[logits f32[1, vocab], next
//! token i32[1]]` (greedy argmax inside the graph). Every formula follows Hugging Face transformers'
//! `models/qwen3/modeling_qwen3.py` (`Qwen3DecoderLayer`, `Qwen3Attention`, `Qwen3MLP`,
//! `Qwen3RMSNorm`, `apply_rotary_pos_emb`): pre-norm residual layers, per-head q_norm/k_norm before
//! RoPE, GQA attention scaled by `head_dim^-0.5`, SwiGLU MLP, final norm, lm_head (tied to the
//! embedding when `tie_word_embeddings`). The graph is unfused; the passes fuse it.

use braid_ir::{DType, Graph, IrError, Op, TensorType, Value, WeightSource};

/// The shape of a Qwen3 model, as far as lowering needs it (from `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3Shape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub tie_word_embeddings: bool,
}

/// Choices that are not in the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LowerOptions {
    /// Rows of each KV cache (tokens): the longest prompt + generation the step can serve.
    pub max_context: usize,
    /// Element type of the KV caches: f32 for the CPU reference, bf16 on the GPU (as HF's bf16 cache).
    pub kv_dtype: DType,
}

/// An error lowering a model: a weight is missing or does not fit the graph.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("tensor `{name}` is missing from the checkpoint (Qwen3 needs it, expected shape {expected:?})")]
    MissingWeight { name: String, expected: Vec<usize> },
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    WeightShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("lowering Qwen3 produced an ill-typed graph: {0}")]
    Ir(#[from] IrError),
}

/// Name of the tensor holding the lm_head weight: `lm_head.weight`, or the embedding when tied.
pub fn lm_head_name(shape: &Qwen3Shape) -> &'static str {
    if shape.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    }
}

/// Where weight leaves get their dtype: the checkpoint (shapes checked), or a declared dtype when only
/// `config.json` is at hand (`braid graph` on a config directory).
#[derive(Clone, Copy)]
pub enum WeightTypes<'a> {
    Checkpoint(&'a dyn WeightSource),
    Declared(DType),
}

struct Lowering<'a> {
    g: Graph,
    weights: WeightTypes<'a>,
}

impl Lowering<'_> {
    /// A weight leaf typed by the checkpoint's dtype, after checking its shape.
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Value, LowerError> {
        if let Some(n) = self.g.find_leaf(name) {
            return Ok(Value::of(n));
        }
        let dtype = match self.weights {
            WeightTypes::Declared(dtype) => dtype,
            WeightTypes::Checkpoint(weights) => {
                let view = weights.get(name).ok_or_else(|| LowerError::MissingWeight {
                    name: name.into(),
                    expected: shape.to_vec(),
                })?;
                if view.shape != shape {
                    return Err(LowerError::WeightShape {
                        name: name.into(),
                        expected: shape.to_vec(),
                        found: view.shape.to_vec(),
                    });
                }
                view.dtype
            }
        };
        let ty = TensorType::new(dtype, shape);
        Ok(self.g.add1(
            Op::Weight {
                name: name.into(),
                ty,
            },
            &[],
        )?)
    }

    fn op(&mut self, op: Op, inputs: &[Value]) -> Result<Value, LowerError> {
        Ok(self.g.add1(op, inputs)?)
    }
}

/// Lowers one decode step of a Qwen3 model whose weight dtypes come from `weights`.
///
/// Errors: [`LowerError::MissingWeight`] / [`LowerError::WeightShape`] name the tensor and the shape
/// expected from `shape`; [`LowerError::Ir`] would mean a bug in this function.
pub fn lower_decode_step(
    shape: &Qwen3Shape,
    weights: WeightTypes<'_>,
    opts: LowerOptions,
) -> Result<Graph, LowerError> {
    let s = shape;
    let (h, d, nh, nkv) = (s.hidden, s.head_dim, s.heads, s.kv_heads);
    let eps = s.rms_norm_eps;
    let mut l = Lowering {
        g: Graph::new(),
        weights,
    };
    let pos_ty = TensorType::new(DType::I32, [1]);
    let token = l.op(
        Op::Input {
            name: "token".into(),
            ty: pos_ty.clone(),
        },
        &[],
    )?;
    let position = l.op(
        Op::Input {
            name: "position".into(),
            ty: pos_ty,
        },
        &[],
    )?;
    let embed = l.weight("model.embed_tokens.weight", &[s.vocab, h])?;
    let mut x = l.op(Op::Embedding, &[embed, token])?;

    for layer in 0..s.layers {
        let p = format!("model.layers.{layer}.");
        let w = |suffix: &str| format!("{p}{suffix}");
        // Attention block (Qwen3DecoderLayer.forward: residual + self_attn(input_layernorm(x))).
        let ln1 = l.weight(&w("input_layernorm.weight"), &[h])?;
        let hn = l.op(Op::RmsNorm { eps }, &[x, ln1])?;
        let wq = l.weight(&w("self_attn.q_proj.weight"), &[nh * d, h])?;
        let wk = l.weight(&w("self_attn.k_proj.weight"), &[nkv * d, h])?;
        let wv = l.weight(&w("self_attn.v_proj.weight"), &[nkv * d, h])?;
        let q = l.op(Op::MatMul, &[hn, wq])?;
        let k = l.op(Op::MatMul, &[hn, wk])?;
        let v = l.op(Op::MatMul, &[hn, wv])?;
        let q = l.op(Op::Reshape { shape: vec![nh, d] }, &[q])?;
        let k = l.op(
            Op::Reshape {
                shape: vec![nkv, d],
            },
            &[k],
        )?;
        let v = l.op(
            Op::Reshape {
                shape: vec![nkv, d],
            },
            &[v],
        )?;
        // Qwen3Attention: q_norm/k_norm over head_dim, then RoPE.
        let qn_w = l.weight(&w("self_attn.q_norm.weight"), &[d])?;
        let kn_w = l.weight(&w("self_attn.k_norm.weight"), &[d])?;
        let q = l.op(Op::RmsNorm { eps }, &[q, qn_w])?;
        let k = l.op(Op::RmsNorm { eps }, &[k, kn_w])?;
        let q = l.op(
            Op::Rope {
                theta: s.rope_theta,
            },
            &[q, position],
        )?;
        let k = l.op(
            Op::Rope {
                theta: s.rope_theta,
            },
            &[k, position],
        )?;
        let cache_ty = TensorType::new(opts.kv_dtype, [opts.max_context, nkv, d]);
        let kc = l.op(
            Op::KvCache {
                name: w("self_attn.k_cache"),
                ty: cache_ty.clone(),
            },
            &[],
        )?;
        let vc = l.op(
            Op::KvCache {
                name: w("self_attn.v_cache"),
                ty: cache_ty,
            },
            &[],
        )?;
        let scale = (d as f32).powf(-0.5);
        let a = l.op(Op::Attention { scale }, &[q, k, v, kc, vc, position])?;
        let a = l.op(
            Op::Reshape {
                shape: vec![1, nh * d],
            },
            &[a],
        )?;
        let wo = l.weight(&w("self_attn.o_proj.weight"), &[h, nh * d])?;
        let o = l.op(Op::MatMul, &[a, wo])?;
        x = l.op(Op::Add, &[o, x])?;
        // MLP block: residual + down(silu(gate(n)) * up(n)), n = post_attention_layernorm(x).
        let ln2 = l.weight(&w("post_attention_layernorm.weight"), &[h])?;
        let hn = l.op(Op::RmsNorm { eps }, &[x, ln2])?;
        let wg = l.weight(&w("mlp.gate_proj.weight"), &[s.intermediate, h])?;
        let wu = l.weight(&w("mlp.up_proj.weight"), &[s.intermediate, h])?;
        let wd = l.weight(&w("mlp.down_proj.weight"), &[h, s.intermediate])?;
        let g = l.op(Op::MatMul, &[hn, wg])?;
        let u = l.op(Op::MatMul, &[hn, wu])?;
        let g = l.op(Op::Silu, &[g])?;
        let m = l.op(Op::Mul, &[g, u])?;
        let dn = l.op(Op::MatMul, &[m, wd])?;
        x = l.op(Op::Add, &[dn, x])?;
    }
    let norm = l.weight("model.norm.weight", &[h])?;
    let x = l.op(Op::RmsNorm { eps }, &[x, norm])?;
    let lm_head = l.weight(lm_head_name(s), &[s.vocab, h])?;
    let logits = l.op(Op::MatMul, &[x, lm_head])?;
    let next = l.op(Op::Argmax, &[logits])?;
    l.g.set_results(vec![logits, next]);
    braid_ir::verify(&l.g)?;
    Ok(l.g)
}
