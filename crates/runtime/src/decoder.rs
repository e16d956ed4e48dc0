//! Decoder → IR lowering of one step (a decode step, or a prefill step over `T` tokens), for every supported family ([`Family`]: Qwen3,
//! Qwen2, Llama). One lowering serves them all; the families differ only in what the schema
//! ([`Qwen3Config::tensors`]) and the config say:
//!
//! - q/k RMSNorm over `head_dim` before rope (Qwen3: `q_norm`/`k_norm` are in the schema);
//! - projection biases: `add(matmul(h, w), bias)` with `bias [n]` broadcast over the rows, for
//!   q/k/v (Qwen2; Qwen3/Llama with `attention_bias`) and o_proj (Qwen3/Llama with
//!   `attention_bias`). The passes pack the q/k/v bias adds with the merged q/k/v matmul into one
//!   `fused_rms_norm_matmul_add`, so the bias costs no launch;
//! - rope frequencies: `rope_theta` and the config's [`braid_ir::RopeScaling`] (`default` or `llama3`);
//! - tied or untied lm_head, explicit or derived `head_dim`, `rms_norm_eps` (all in the config).
//!
//! The step returns `[logits f32[1, vocab], next token i32[1]]` (the greedy argmax of the last
//! token's logits, inside the graph). Every formula follows Hugging Face transformers'
//! `modeling_qwen3.py`, `modeling_qwen2.py` and `modeling_llama.py` (`*DecoderLayer`, `*Attention`,
//! `*MLP`, `*RMSNorm`, `apply_rotary_pos_emb`): pre-norm residual layers, GQA attention scaled by
//! `head_dim^-0.5`, SwiGLU MLP, final norm, lm_head (tied to the embedding when
//! `tie_word_embeddings`). The graph is unfused; the passes fuse it.
//!
//! The step takes `token: i32[T]` and `position: i32[1]` (the first token's position; token `t` is
//! at `position + t`). `T = 1` is the decode step; for `T > 1` (a prefill step) the activations are
//! `[T, hidden]`, q/k/v `[T, heads, head_dim]`, attention appends the `T` k/v rows to the caches and
//! masks causally, and the last row is taken (a `split` along axis 0, a view) before the final norm,
//! unless [`LowerOptions::all_logits`] asks for the logits of every token (`f32[T, vocab]`).
//!
//! Tensor names and shapes come from the model's schema, the same one checkpoint validation
//! reads.

use braid_ir::{DType, Graph, IrError, Op, TensorType, Value, WeightSource};

use crate::model::{Family, Qwen3Config, TensorSpec};

/// Choices that are not in the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LowerOptions {
    /// Rows of each KV cache (tokens): the longest prompt + generation the step can serve.
    pub max_context: usize,
    /// Element type of the KV caches: f32 for the CPU reference, bf16 on the GPU (as HF's bf16 cache).
    pub kv_dtype: DType,
    /// Tokens per step: 1 for the decode step, `T > 1` for a prefill step over `T` prompt tokens.
    pub tokens: usize,
    /// For `tokens > 1`: logits of every token (`f32[T, vocab]`, for `braid check`) instead of the
    /// last token's only. Ignored for one token.
    pub all_logits: bool,
}

impl LowerOptions {
    /// The decode step (one token) with `max_context` cache rows of `kv_dtype`.
    pub fn decode(max_context: usize, kv_dtype: DType) -> Self {
        LowerOptions {
            max_context,
            kv_dtype,
            tokens: 1,
            all_logits: false,
        }
    }

    /// These options for a step over `tokens` tokens, with every token's logits when
    /// `all_logits`.
    pub fn with_tokens(self, tokens: usize, all_logits: bool) -> Self {
        LowerOptions {
            tokens,
            all_logits,
            ..self
        }
    }
}

/// An error lowering a model: a weight is missing or does not fit the graph.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("tensor `{name}` is missing from the checkpoint ({family} needs it, expected shape {expected:?})")]
    MissingWeight {
        name: String,
        expected: Vec<usize>,
        family: Family,
    },
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    WeightShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("a step needs at least one token (LowerOptions::tokens is 0)")]
    NoTokens,
    #[error("lowering the decoder produced an ill-typed graph: {0}")]
    Ir(#[from] IrError),
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
    family: Family,
}

impl Lowering<'_> {
    /// A weight leaf typed by the checkpoint's dtype, after checking its shape against the schema.
    fn weight(&mut self, spec: &TensorSpec) -> Result<Value, LowerError> {
        let (name, shape) = (spec.name.as_str(), spec.shape.as_slice());
        if let Some(n) = self.g.find_leaf(name) {
            return Ok(Value::of(n));
        }
        let dtype = match self.weights {
            WeightTypes::Declared(dtype) => dtype,
            WeightTypes::Checkpoint(weights) => {
                let view = weights.get(name).ok_or_else(|| LowerError::MissingWeight {
                    name: name.into(),
                    expected: shape.to_vec(),
                    family: self.family,
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

    /// `x · wᵀ`, plus `bias [n]` on every row when the layer has one (HF `nn.Linear`).
    fn linear(
        &mut self,
        x: Value,
        w: &TensorSpec,
        bias: Option<&TensorSpec>,
    ) -> Result<Value, LowerError> {
        let w = self.weight(w)?;
        let y = self.op(Op::MatMul, &[x, w])?;
        match bias {
            None => Ok(y),
            Some(b) => {
                let b = self.weight(b)?;
                self.op(Op::Add, &[y, b])
            }
        }
    }

    /// `rope` of `x [heads, d]` at `position`, with the model's frequencies.
    fn rope(&mut self, x: Value, position: Value, c: &Qwen3Config) -> Result<Value, LowerError> {
        self.op(
            Op::Rope {
                theta: c.rope_theta as f32,
                scaling: c.rope_scaling.clone(),
            },
            &[x, position],
        )
    }

    fn reshape(&mut self, x: Value, shape: &[usize]) -> Result<Value, LowerError> {
        self.op(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }
}

/// Lowers one step of the decoder `c` (any [`Family`]) whose weight dtypes come from `weights`: the
/// decode step for `opts.tokens == 1`, a prefill step over `opts.tokens` tokens otherwise (see the
/// module docs).
///
/// Errors: [`LowerError::NoTokens`] for `opts.tokens == 0`; [`LowerError::MissingWeight`] /
/// [`LowerError::WeightShape`] name the tensor and the shape the schema expects;
/// [`LowerError::Ir`] would mean a bug in this function.
pub fn lower_decode_step(
    c: &Qwen3Config,
    weights: WeightTypes<'_>,
    opts: LowerOptions,
) -> Result<Graph, LowerError> {
    let schema = c.tensors();
    let (d, nh, nkv) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
    let eps = c.rms_norm_eps as f32;
    let t_len = opts.tokens;
    if t_len == 0 {
        return Err(LowerError::NoTokens);
    }
    // Per-head shapes: `[heads, d]` for one token, `[T, heads, d]` for T.
    let heads = |n: usize| {
        if t_len == 1 {
            vec![n, d]
        } else {
            vec![t_len, n, d]
        }
    };
    let mut l = Lowering {
        g: Graph::new(),
        weights,
        family: c.family,
    };
    let pos_ty = TensorType::new(DType::I32, [1]);
    let token = l.op(
        Op::Input {
            name: "token".into(),
            ty: TensorType::new(DType::I32, [t_len]),
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
    let embed = l.weight(&schema.embed_tokens)?;
    let mut x = l.op(Op::Embedding, &[embed, token])?;

    for (layer, t) in schema.layers.iter().enumerate() {
        // Attention block (*DecoderLayer.forward: residual + self_attn(input_layernorm(x))).
        let ln1 = l.weight(&t.input_layernorm)?;
        let hn = l.op(Op::RmsNorm { eps }, &[x, ln1])?;
        let q = l.linear(hn, &t.q_proj, t.q_bias.as_ref())?;
        let k = l.linear(hn, &t.k_proj, t.k_bias.as_ref())?;
        let v = l.linear(hn, &t.v_proj, t.v_bias.as_ref())?;
        let mut q = l.reshape(q, &heads(nh))?;
        let mut k = l.reshape(k, &heads(nkv))?;
        let v = l.reshape(v, &heads(nkv))?;
        // Qwen3Attention: q_norm/k_norm over head_dim before RoPE (absent in Qwen2 and Llama).
        if let (Some(qn), Some(kn)) = (&t.q_norm, &t.k_norm) {
            let qn_w = l.weight(qn)?;
            let kn_w = l.weight(kn)?;
            q = l.op(Op::RmsNorm { eps }, &[q, qn_w])?;
            k = l.op(Op::RmsNorm { eps }, &[k, kn_w])?;
        }
        let q = l.rope(q, position, c)?;
        let k = l.rope(k, position, c)?;
        let cache_ty = TensorType::new(opts.kv_dtype, [opts.max_context, nkv, d]);
        let cache = |name: &str| Op::KvCache {
            name: format!("model.layers.{layer}.self_attn.{name}"),
            ty: cache_ty.clone(),
        };
        let kc = l.op(cache("k_cache"), &[])?;
        let vc = l.op(cache("v_cache"), &[])?;
        let scale = (d as f32).powf(-0.5);
        let a = l.op(Op::Attention { scale }, &[q, k, v, kc, vc, position])?;
        let a = l.reshape(a, &[t_len, nh * d])?;
        let o = l.linear(a, &t.o_proj, t.o_bias.as_ref())?;
        x = l.op(Op::Add, &[o, x])?;
        // MLP block: residual + down(silu(gate(n)) * up(n)), n = post_attention_layernorm(x).
        let ln2 = l.weight(&t.post_attention_layernorm)?;
        let hn = l.op(Op::RmsNorm { eps }, &[x, ln2])?;
        let wg = l.weight(&t.gate_proj)?;
        let wu = l.weight(&t.up_proj)?;
        let wd = l.weight(&t.down_proj)?;
        let g = l.op(Op::MatMul, &[hn, wg])?;
        let u = l.op(Op::MatMul, &[hn, wu])?;
        let g = l.op(Op::Silu, &[g])?;
        let m = l.op(Op::Mul, &[g, u])?;
        let dn = l.op(Op::MatMul, &[m, wd])?;
        x = l.op(Op::Add, &[dn, x])?;
    }
    // The last token's row `[1, hidden]` of `[T, hidden]`: a split along axis 0 (a view).
    let last_row = |l: &mut Lowering<'_>, x: Value| -> Result<Value, LowerError> {
        let parts = l.g.add(
            Op::Split {
                axis: 0,
                sizes: vec![t_len - 1, 1],
            },
            &[x],
        )?;
        Ok(Value {
            node: parts,
            output: 1,
        })
    };
    let all_logits = opts.all_logits && t_len > 1;
    let x = if t_len > 1 && !all_logits {
        last_row(&mut l, x)?
    } else {
        x
    };
    let norm = l.weight(&schema.norm)?;
    let x = l.op(Op::RmsNorm { eps }, &[x, norm])?;
    let lm_head = l.weight(&schema.lm_head)?;
    let logits = l.op(Op::MatMul, &[x, lm_head])?;
    let last = if all_logits {
        last_row(&mut l, logits)?
    } else {
        logits
    };
    let next = l.op(Op::Argmax, &[last])?;
    l.g.set_results(vec![logits, next]);
    braid_ir::verify(&l.g)?;
    Ok(l.g)
}
