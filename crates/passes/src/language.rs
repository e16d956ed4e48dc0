//! The egg language mirroring the IR op set, and the encoding of op attributes as leaf symbols.
//!
//! Design (tensat / glenside style): every IR op is an e-node whose *first* children are attribute
//! leaves ([`BraidLang::Attr`], an interned symbol) followed by its tensor inputs in slot order, e.g.
//! `(rms_norm eps x g)` or `(split axis sizes x)`. Attributes are children rather than part of the
//! discriminant so that `define_language!` can derive everything, and so that rules can bind them
//! with pattern variables (`?eps`) and require two ops to share one (`rope` theta and scaling in the
//! q/k rule). Floats are stored as their exact bit pattern (`f32:0x358637bd`), so a round trip is
//! lossless; a rope scaling is one symbol ([`rope_scaling_attr`]: `default`, or `llama3(..)` with
//! its parameters' bits), so two ropes share the class only when every parameter is equal.
//!
//! Leaves carry their name and full type: `(weight name ty)` with `ty` like `bf16[1000,64]`.
//! Multi-output ops (`split`, `fused_qk_norm_rope`) are one tuple e-node plus `(get index tuple)`
//! projections. The graph's ordered results hang under one synthetic `(root r0 r1 ..)` node.

use braid_ir::{DType, Op, RopeScaling, TensorType};
use egg::{define_language, Id, Symbol};

define_language! {
    /// One e-node. Children are e-class [`Id`]s; attribute children (listed first, see the module
    /// docs) are classes holding a single [`BraidLang::Attr`] symbol.
    ///
    /// | e-node | children |
    /// | --- | --- |
    /// | `input`, `weight`, `kv_cache` | name, type |
    /// | `rms_norm` | eps, x, g |
    /// | `rope` | theta, scaling, x, position |
    /// | `attention` | scale, q, k, v, k_cache, v_cache, position |
    /// | `reshape` | shape, x |
    /// | `split` | axis, sizes, x (a tuple) |
    /// | `concat` | axis, x0, x1, .. |
    /// | `fused_rms_norm_matmul` | eps, x, g, w |
    /// | `fused_rms_norm_matmul_add` | eps, x, g, w, r |
    /// | `fused_qk_norm_rope` | eps, theta, scaling, q, k, q_norm, k_norm, position (a tuple) |
    /// | `get` | index, tuple |
    /// | `root` | the graph results, in order |
    /// | others | their tensor inputs, in slot order |
    pub enum BraidLang {
        "input" = Input([Id; 2]),
        "weight" = Weight([Id; 2]),
        "kv_cache" = KvCache([Id; 2]),
        "embedding" = Embedding([Id; 2]),
        "rms_norm" = RmsNorm([Id; 3]),
        "matmul" = MatMul([Id; 2]),
        "add" = Add([Id; 2]),
        "mul" = Mul([Id; 2]),
        "silu" = Silu(Id),
        "rope" = Rope([Id; 4]),
        "attention" = Attention([Id; 7]),
        "reshape" = Reshape([Id; 2]),
        "split" = Split([Id; 3]),
        "concat" = Concat(Box<[Id]>),
        "argmax" = Argmax(Id),
        "fused_rms_norm_matmul" = FusedRmsNormMatmul([Id; 4]),
        "fused_gated_mlp" = FusedGatedMlp([Id; 3]),
        "fused_matmul_add" = FusedMatmulAdd([Id; 3]),
        "fused_qk_norm_rope" = FusedQkNormRope([Id; 8]),
        "fused_rms_norm_matmul_add" = FusedRmsNormMatmulAdd([Id; 5]),
        "get" = Get([Id; 2]),
        "root" = Root(Box<[Id]>),
        Attr(Symbol),
    }
}

/// An e-node split into its IR op and its tensor children (attribute children already decoded).
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// An IR op with its tensor inputs in slot order.
    Op(Op, Vec<Id>),
    /// Projection `index` of a tuple class.
    Get(usize, Id),
    /// The synthetic root: the graph results in order.
    Root(Vec<Id>),
    /// An attribute leaf.
    Attr(Symbol),
}

/// Encodes an `f32` attribute by its exact bits, e.g. `1e-6` as `f32:0x358637bd`.
pub fn f32_attr(v: f32) -> Symbol {
    Symbol::from(format!("f32:{:#010x}", v.to_bits()))
}

/// Decodes an attribute written by [`f32_attr`]. Errors name the symbol.
pub fn parse_f32_attr(s: Symbol) -> Result<f32, String> {
    s.as_str()
        .strip_prefix("f32:0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .map(f32::from_bits)
        .ok_or_else(|| format!("expected an f32 attribute like `f32:0x358637bd`, got `{s}`"))
}

/// Encodes a non-negative integer attribute (axis, projection index), e.g. `1`.
pub fn usize_attr(v: usize) -> Symbol {
    Symbol::from(v.to_string())
}

/// Decodes an attribute written by [`usize_attr`].
pub fn parse_usize_attr(s: Symbol) -> Result<usize, String> {
    s.as_str()
        .parse()
        .map_err(|_| format!("expected an integer attribute, got `{s}`"))
}

/// Encodes a list of sizes (a shape, split sizes), e.g. `[1,64]`; `[]` for a scalar shape.
pub fn dims_attr(dims: &[usize]) -> Symbol {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    Symbol::from(format!("[{}]", inner.join(",")))
}

/// Decodes an attribute written by [`dims_attr`].
pub fn parse_dims_attr(s: Symbol) -> Result<Vec<usize>, String> {
    parse_dims(s.as_str()).ok_or_else(|| format!("expected a size list like `[1,64]`, got `{s}`"))
}

fn parse_dims(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|d| d.parse().ok()).collect()
}

/// Encodes a rope scaling: `default`, or `llama3(f32:0x42000000,f32:0x3f800000,f32:0x40800000,8192)`
/// (factor, low_freq_factor, high_freq_factor as exact bits, original_max_position_embeddings).
pub fn rope_scaling_attr(s: &RopeScaling) -> Symbol {
    match s {
        RopeScaling::Default => Symbol::from("default"),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => Symbol::from(format!(
            "llama3({},{},{},{original_max_position_embeddings})",
            f32_attr(*factor),
            f32_attr(*low_freq_factor),
            f32_attr(*high_freq_factor)
        )),
    }
}

/// Decodes an attribute written by [`rope_scaling_attr`]. Errors name the symbol.
pub fn parse_rope_scaling_attr(s: Symbol) -> Result<RopeScaling, String> {
    let text = s.as_str();
    if text == "default" {
        return Ok(RopeScaling::Default);
    }
    let parsed = (|| {
        let inner = text.strip_prefix("llama3(")?.strip_suffix(')')?;
        let parts: Vec<&str> = inner.split(',').collect();
        let [f, lo, hi, old] = parts.as_slice() else {
            return None;
        };
        let float = |p: &str| parse_f32_attr(Symbol::from(p)).ok();
        Some(RopeScaling::Llama3 {
            factor: float(f)?,
            low_freq_factor: float(lo)?,
            high_freq_factor: float(hi)?,
            original_max_position_embeddings: old.parse().ok()?,
        })
    })();
    parsed.ok_or_else(|| {
        format!("expected a rope scaling attribute like `default` or `llama3(f32:..,f32:..,f32:..,8192)`, got `{s}`")
    })
}

/// Encodes a tensor type, e.g. `bf16[1000,64]`.
pub fn type_attr(t: &TensorType) -> Symbol {
    Symbol::from(format!("{}{}", t.dtype.name(), dims_attr(&t.shape)))
}

/// Decodes an attribute written by [`type_attr`].
pub fn parse_type_attr(s: Symbol) -> Result<TensorType, String> {
    let text = s.as_str();
    text.find('[')
        .and_then(|i| {
            let dtype = DType::from_name(&text[..i])?;
            Some(TensorType::new(dtype, parse_dims(&text[i..])?))
        })
        .ok_or_else(|| format!("expected a tensor type attribute like `bf16[1000,64]`, got `{s}`"))
}

/// Reads the attribute symbol an attribute child holds, given a lookup from class to its symbol.
fn attr_of(attr: &impl Fn(Id) -> Option<Symbol>, id: Id, what: &str) -> Result<Symbol, String> {
    attr(id)
        .ok_or_else(|| format!("expected the {what} attribute as child {id}, got a tensor class"))
}

impl BraidLang {
    /// Builds the e-node of `op` given its tensor inputs, adding attribute leaves through `add_attr`
    /// (which returns the class of an attribute symbol).
    pub fn from_op(op: &Op, inputs: &[Id], mut add_attr: impl FnMut(Symbol) -> Id) -> BraidLang {
        let i = |k: usize| inputs[k];
        match op {
            Op::Input { name, ty } => {
                BraidLang::Input([add_attr(Symbol::from(name)), add_attr(type_attr(ty))])
            }
            Op::Weight { name, ty } => {
                BraidLang::Weight([add_attr(Symbol::from(name)), add_attr(type_attr(ty))])
            }
            Op::KvCache { name, ty } => {
                BraidLang::KvCache([add_attr(Symbol::from(name)), add_attr(type_attr(ty))])
            }
            Op::Embedding => BraidLang::Embedding([i(0), i(1)]),
            Op::RmsNorm { eps } => BraidLang::RmsNorm([add_attr(f32_attr(*eps)), i(0), i(1)]),
            Op::MatMul => BraidLang::MatMul([i(0), i(1)]),
            Op::Add => BraidLang::Add([i(0), i(1)]),
            Op::Mul => BraidLang::Mul([i(0), i(1)]),
            Op::Silu => BraidLang::Silu(i(0)),
            Op::Rope { theta, scaling } => {
                let t = add_attr(f32_attr(*theta));
                BraidLang::Rope([t, add_attr(rope_scaling_attr(scaling)), i(0), i(1)])
            }
            Op::Attention { scale } => {
                let s = add_attr(f32_attr(*scale));
                BraidLang::Attention([s, i(0), i(1), i(2), i(3), i(4), i(5)])
            }
            Op::Reshape { shape } => BraidLang::Reshape([add_attr(dims_attr(shape)), i(0)]),
            Op::Split { axis, sizes } => BraidLang::Split([
                add_attr(usize_attr(*axis)),
                add_attr(dims_attr(sizes)),
                i(0),
            ]),
            Op::Concat { axis } => {
                let mut ch = vec![add_attr(usize_attr(*axis))];
                ch.extend_from_slice(inputs);
                BraidLang::Concat(ch.into_boxed_slice())
            }
            Op::Argmax => BraidLang::Argmax(i(0)),
            Op::FusedRmsNormMatmul { eps } => {
                BraidLang::FusedRmsNormMatmul([add_attr(f32_attr(*eps)), i(0), i(1), i(2)])
            }
            Op::FusedGatedMlp => BraidLang::FusedGatedMlp([i(0), i(1), i(2)]),
            Op::FusedMatmulAdd => BraidLang::FusedMatmulAdd([i(0), i(1), i(2)]),
            Op::FusedQkNormRope {
                eps,
                theta,
                scaling,
            } => {
                let (e, t) = (add_attr(f32_attr(*eps)), add_attr(f32_attr(*theta)));
                let s = add_attr(rope_scaling_attr(scaling));
                BraidLang::FusedQkNormRope([e, t, s, i(0), i(1), i(2), i(3), i(4)])
            }
            Op::FusedRmsNormMatmulAdd { eps } => {
                BraidLang::FusedRmsNormMatmulAdd([add_attr(f32_attr(*eps)), i(0), i(1), i(2), i(3)])
            }
        }
    }

    /// Whether this e-node's class is a tuple (several outputs, read through `get`).
    pub fn is_tuple(&self) -> bool {
        matches!(self, BraidLang::Split(_) | BraidLang::FusedQkNormRope(_))
    }

    /// Decodes this e-node into an IR op and its tensor children. `attr` returns the symbol held by
    /// an attribute class (`None` for a tensor class).
    ///
    /// Errors: a sentence naming the op and the malformed attribute.
    pub fn decode(&self, attr: impl Fn(Id) -> Option<Symbol>) -> Result<Decoded, String> {
        use BraidLang as L;
        let a = |id: Id, what: &str| attr_of(&attr, id, what);
        let op = |op: Op, ins: &[Id]| Ok(Decoded::Op(op, ins.to_vec()));
        let leaf = |name: Id, ty: Id| -> Result<(String, TensorType), String> {
            Ok((
                a(name, "leaf name")?.as_str().to_string(),
                parse_type_attr(a(ty, "leaf type")?)?,
            ))
        };
        match self {
            L::Input([n, t]) => leaf(*n, *t).and_then(|(name, ty)| op(Op::Input { name, ty }, &[])),
            L::Weight([n, t]) => {
                leaf(*n, *t).and_then(|(name, ty)| op(Op::Weight { name, ty }, &[]))
            }
            L::KvCache([n, t]) => {
                leaf(*n, *t).and_then(|(name, ty)| op(Op::KvCache { name, ty }, &[]))
            }
            L::Embedding(ch) => op(Op::Embedding, ch),
            L::RmsNorm([e, rest @ ..]) => op(
                Op::RmsNorm {
                    eps: parse_f32_attr(a(*e, "rms_norm eps")?)?,
                },
                rest,
            ),
            L::MatMul(ch) => op(Op::MatMul, ch),
            L::Add(ch) => op(Op::Add, ch),
            L::Mul(ch) => op(Op::Mul, ch),
            L::Silu(x) => op(Op::Silu, &[*x]),
            L::Rope([t, s, rest @ ..]) => op(
                Op::Rope {
                    theta: parse_f32_attr(a(*t, "rope theta")?)?,
                    scaling: parse_rope_scaling_attr(a(*s, "rope scaling")?)?,
                },
                rest,
            ),
            L::Attention([s, rest @ ..]) => op(
                Op::Attention {
                    scale: parse_f32_attr(a(*s, "attention scale")?)?,
                },
                rest,
            ),
            L::Reshape([s, x]) => op(
                Op::Reshape {
                    shape: parse_dims_attr(a(*s, "reshape shape")?)?,
                },
                &[*x],
            ),
            L::Split([ax, sz, x]) => op(
                Op::Split {
                    axis: parse_usize_attr(a(*ax, "split axis")?)?,
                    sizes: parse_dims_attr(a(*sz, "split sizes")?)?,
                },
                &[*x],
            ),
            L::Concat(ch) => match ch.split_first() {
                Some((ax, rest)) => op(
                    Op::Concat {
                        axis: parse_usize_attr(a(*ax, "concat axis")?)?,
                    },
                    rest,
                ),
                None => Err("concat without an axis attribute".into()),
            },
            L::Argmax(x) => op(Op::Argmax, &[*x]),
            L::FusedRmsNormMatmul([e, rest @ ..]) => op(
                Op::FusedRmsNormMatmul {
                    eps: parse_f32_attr(a(*e, "fused_rms_norm_matmul eps")?)?,
                },
                rest,
            ),
            L::FusedGatedMlp(ch) => op(Op::FusedGatedMlp, ch),
            L::FusedMatmulAdd(ch) => op(Op::FusedMatmulAdd, ch),
            L::FusedQkNormRope([e, t, s, rest @ ..]) => op(
                Op::FusedQkNormRope {
                    eps: parse_f32_attr(a(*e, "fused_qk_norm_rope eps")?)?,
                    theta: parse_f32_attr(a(*t, "fused_qk_norm_rope theta")?)?,
                    scaling: parse_rope_scaling_attr(a(*s, "fused_qk_norm_rope scaling")?)?,
                },
                rest,
            ),
            L::FusedRmsNormMatmulAdd([e, rest @ ..]) => op(
                Op::FusedRmsNormMatmulAdd {
                    eps: parse_f32_attr(a(*e, "fused_rms_norm_matmul_add eps")?)?,
                },
                rest,
            ),
            L::Get([i, t]) => Ok(Decoded::Get(parse_usize_attr(a(*i, "get index")?)?, *t)),
            L::Root(ch) => Ok(Decoded::Root(ch.to_vec())),
            L::Attr(s) => Ok(Decoded::Attr(*s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_exactly() {
        for v in [1e-6f32, 1_000_000.0, 0.088_388_35, -0.0, f32::MIN_POSITIVE] {
            let back = parse_f32_attr(f32_attr(v)).unwrap();
            assert_eq!(back.to_bits(), v.to_bits());
        }
        assert_eq!(f32_attr(1e-6).as_str(), "f32:0x358637bd");
        let t = TensorType::new(DType::BF16, [1000, 64]);
        assert_eq!(type_attr(&t).as_str(), "bf16[1000,64]");
        assert_eq!(parse_type_attr(type_attr(&t)).unwrap(), t);
        let scalar = TensorType::new(DType::I32, Vec::<usize>::new());
        assert_eq!(parse_type_attr(type_attr(&scalar)).unwrap(), scalar);
        assert_eq!(
            parse_dims_attr(dims_attr(&[32, 16, 16])).unwrap(),
            [32, 16, 16]
        );
        assert!(parse_type_attr(Symbol::from("q8[3]")).is_err());
        assert!(parse_f32_attr(Symbol::from("1e-6")).is_err());
    }

    #[test]
    fn rope_scalings_round_trip_exactly() {
        let llama3 = RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        assert_eq!(rope_scaling_attr(&RopeScaling::Default).as_str(), "default");
        assert_eq!(
            rope_scaling_attr(&llama3).as_str(),
            "llama3(f32:0x42000000,f32:0x3f800000,f32:0x40800000,8192)"
        );
        for s in [RopeScaling::Default, llama3] {
            assert_eq!(parse_rope_scaling_attr(rope_scaling_attr(&s)).unwrap(), s);
        }
        for bad in [
            "llama3",
            "llama3(f32:0x42000000,8192)",
            "yarn(1)",
            "llama3(1,2,3,4)",
        ] {
            let e = parse_rope_scaling_attr(Symbol::from(bad)).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
