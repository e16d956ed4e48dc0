//! Op attributes in the text form: `{eps = 1e-6}`, `{axis = 1, sizes = [32, 16, 16]}`.
//!
//! Which op takes which attribute: `rms_norm`, `fused_rms_norm_matmul`,
//! `fused_rms_norm_matmul_add`: `eps`; `rope`: `theta`; `attention`: `scale`; `reshape`: `shape`;
//! `split`: `axis`, `sizes`; `concat`: `axis`; `fused_qk_norm_rope`: `eps`, `theta`; every other op:
//! none.
//!
//! The rope-bearing ops (`rope`, `fused_qk_norm_rope`) also take the optional frequency scaling
//! ([`RopeScaling`]), written with HF's `rope_scaling` keys: `rope_type = default` (the same as
//! leaving it out, and never printed) or `rope_type = llama3` with all of `factor`,
//! `low_freq_factor`, `high_freq_factor` (floats) and `original_max_position_embeddings` (an
//! integer), e.g. `{theta = 5e5, rope_type = llama3, factor = 3.2e1, low_freq_factor = 1e0,
//! high_freq_factor = 4e0, original_max_position_embeddings = 8192}`.

use super::cursor::Cursor;
use super::lexer::{Tok, Token};
use super::{bounded_numel, MAX_ELEMENTS};
use crate::error::IrError;
use crate::op::{Op, OpKind};
use crate::rope::RopeScaling;

/// One attribute as written: its name, the name's column, and its value.
pub(super) struct Attr {
    name: String,
    col: usize,
    value: AttrValue,
}

/// An attribute value as written.
enum AttrValue {
    /// A number (or `inf`/`NaN`) as written, and its column.
    Num(String, usize),
    /// An integer list, and the column of its `[`.
    List(Vec<usize>, usize),
}

/// What an attribute's value must be.
#[derive(Clone, Copy, PartialEq)]
enum AttrKind {
    Float,
    Int,
    IntList,
    /// A bare name such as `llama3`.
    Name,
}

/// A checked attribute value.
enum Checked {
    Float(f32),
    Int(usize),
    IntList(Vec<usize>),
    Name(String),
}

/// The optional frequency-scaling attributes of the rope-bearing ops, in printing order.
const ROPE_SCALING: &[(&str, AttrKind)] = &[
    ("rope_type", AttrKind::Name),
    ("factor", AttrKind::Float),
    ("low_freq_factor", AttrKind::Float),
    ("high_freq_factor", AttrKind::Float),
    ("original_max_position_embeddings", AttrKind::Int),
];

/// The parameters `rope_type = llama3` needs (the scaling attributes after `rope_type`).
const LLAMA3_PARAMS: &[&str] = &[
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];

/// Parses `{` [attr {`,` attr}] `}` when the next token is `{`; else returns no attributes.
///
/// Errors: a missing name, `=` or value, or a list element that is not an integer.
pub(super) fn attr_list(cur: &mut Cursor) -> Result<Vec<Attr>, IrError> {
    let mut attrs = Vec::new();
    if !cur.eat('{') || cur.eat('}') {
        return Ok(attrs);
    }
    loop {
        let (name, col) = match cur.peek() {
            Some(Token {
                tok: Tok::Ident(s),
                col,
            }) => (s.clone(), *col),
            _ => return Err(cur.unexpected("an attribute name")),
        };
        cur.pos += 1;
        cur.expect('=', &format!(" after attribute `{name}`"))?;
        let value = match cur.peek().cloned() {
            Some(Token {
                tok: Tok::Num(s) | Tok::Ident(s),
                col,
            }) => {
                cur.pos += 1;
                AttrValue::Num(s, col)
            }
            Some(Token {
                tok: Tok::Punct('['),
                ..
            }) => {
                let (xs, open) = cur.usize_list(&format!("attribute `{name}`"))?;
                AttrValue::List(xs, open)
            }
            _ => return Err(cur.unexpected(&format!("a number or a list for attribute `{name}`"))),
        };
        attrs.push(Attr { name, col, value });
        if cur.eat('}') {
            return Ok(attrs);
        }
        cur.expect(',', " or `}` in the attribute list")?;
    }
}

/// The attributes each op requires, in printing order (the rope-bearing ops also take the optional
/// [`ROPE_SCALING`] ones, see [`takes_rope_scaling`]).
fn attr_spec(kind: OpKind) -> &'static [(&'static str, AttrKind)] {
    match kind {
        OpKind::RmsNorm | OpKind::FusedRmsNormMatmul | OpKind::FusedRmsNormMatmulAdd => {
            &[("eps", AttrKind::Float)]
        }
        OpKind::Rope => &[("theta", AttrKind::Float)],
        OpKind::Attention => &[("scale", AttrKind::Float)],
        OpKind::Reshape => &[("shape", AttrKind::IntList)],
        OpKind::Split => &[("axis", AttrKind::Int), ("sizes", AttrKind::IntList)],
        OpKind::Concat => &[("axis", AttrKind::Int)],
        OpKind::FusedQkNormRope => &[("eps", AttrKind::Float), ("theta", AttrKind::Float)],
        _ => &[],
    }
}

/// Whether `kind` takes the optional [`ROPE_SCALING`] attributes.
fn takes_rope_scaling(kind: OpKind) -> bool {
    matches!(kind, OpKind::Rope | OpKind::FusedQkNormRope)
}

/// The checked attributes of one node, for building its op.
struct Values<'a> {
    cur: &'a Cursor,
    kind: OpKind,
    /// Name, value and the value's column.
    vals: Vec<(&'static str, Checked, usize)>,
    /// Column to blame for a missing attribute: where the attribute list ends.
    missing_col: usize,
}

impl Values<'_> {
    /// Removes attribute `name` if it was given: its value and the value's column.
    fn take_opt(&mut self, name: &str) -> Option<(Checked, usize)> {
        let i = self.vals.iter().position(|(n, ..)| *n == name)?;
        let (_, v, col) = self.vals.swap_remove(i);
        Some((v, col))
    }

    /// The column of attribute `name`'s value, if it is still there.
    fn col_of(&self, name: &str) -> Option<usize> {
        self.vals.iter().find(|(n, ..)| *n == name).map(|v| v.2)
    }

    fn take(&mut self, name: &str) -> Result<Checked, IrError> {
        match self.take_opt(name) {
            Some((v, _)) => Ok(v),
            None => Err(self.cur.err_at(
                self.missing_col,
                format!(
                    "{} needs attribute `{name}`; {}",
                    self.kind,
                    expected(self.kind)
                ),
            )),
        }
    }

    fn float(&mut self, name: &str) -> Result<f32, IrError> {
        match self.take(name)? {
            Checked::Float(x) => Ok(x),
            _ => Err(self.inconsistent(name)),
        }
    }

    fn int(&mut self, name: &str) -> Result<usize, IrError> {
        match self.take(name)? {
            Checked::Int(x) => Ok(x),
            _ => Err(self.inconsistent(name)),
        }
    }

    fn list(&mut self, name: &str) -> Result<Vec<usize>, IrError> {
        match self.take(name)? {
            Checked::IntList(x) => Ok(x),
            _ => Err(self.inconsistent(name)),
        }
    }

    /// The optional frequency scaling of a rope-bearing op (see the module docs).
    ///
    /// Errors: an unknown `rope_type` (at its value), a llama3 parameter without
    /// `rope_type = llama3` (at the parameter), a missing llama3 parameter (at the end of the
    /// attribute list), parameters [`RopeScaling::validate`] rejects (at the offending value).
    fn rope_scaling(&mut self) -> Result<RopeScaling, IrError> {
        let rope_type = match self.take_opt("rope_type") {
            None => None,
            Some((Checked::Name(s), col)) => Some((s, col)),
            Some(_) => return Err(self.inconsistent("rope_type")),
        };
        match rope_type {
            Some((s, _)) if s == "llama3" => return self.llama3(),
            None => {}
            Some((s, _)) if s == "default" => {}
            Some((s, col)) => {
                return Err(self.cur.err_at(
                    col,
                    format!("attribute `rope_type` expects `default` or `llama3`, got `{s}`"),
                ))
            }
        }
        let stray = LLAMA3_PARAMS
            .iter()
            .filter_map(|n| Some((self.col_of(n)?, *n)))
            .min();
        if let Some((col, name)) = stray {
            return Err(self.cur.err_at(
                col,
                format!(
                    "attribute `{name}` needs `rope_type = llama3`; the default scaling has no parameters"
                ),
            ));
        }
        Ok(RopeScaling::Default)
    }

    /// The parameters of `rope_type = llama3` (all required), checked by [`RopeScaling::validate`].
    fn llama3(&mut self) -> Result<RopeScaling, IrError> {
        let cols: Vec<(&str, Option<usize>)> =
            LLAMA3_PARAMS.iter().map(|n| (*n, self.col_of(n))).collect();
        if let Some((name, _)) = cols.iter().find(|(_, c)| c.is_none()) {
            return Err(self.cur.err_at(
                self.missing_col,
                format!(
                    "{} with `rope_type = llama3` needs attribute `{name}`; llama3 takes `{}`",
                    self.kind,
                    LLAMA3_PARAMS.join("`, `")
                ),
            ));
        }
        let scaling = RopeScaling::Llama3 {
            factor: self.float("factor")?,
            low_freq_factor: self.float("low_freq_factor")?,
            high_freq_factor: self.float("high_freq_factor")?,
            original_max_position_embeddings: self.int("original_max_position_embeddings")?,
        };
        scaling.validate().map_err(|e| {
            // Blame the value of the parameter the message names first.
            let col = cols
                .iter()
                .filter_map(|(n, c)| Some((e.find(&format!("`{n}`"))?, (*c)?)))
                .min()
                .map_or(self.missing_col, |(_, c)| c);
            self.cur.err_at(col, format!("{} {e}", self.kind))
        })?;
        Ok(scaling)
    }

    /// Unreachable while [`attr_spec`] and [`build_op`] agree; an error rather than a panic.
    fn inconsistent(&self, name: &str) -> IrError {
        self.cur.err_at(
            self.missing_col,
            format!(
                "internal: attribute `{name}` of {} has the wrong kind",
                self.kind
            ),
        )
    }
}

/// "rms_norm takes `eps`" or "matmul takes no attributes".
fn expected(kind: OpKind) -> String {
    let spec = attr_spec(kind);
    let names: Vec<String> = spec.iter().map(|(n, _)| format!("`{n}`")).collect();
    if spec.is_empty() {
        format!("{kind} takes no attributes")
    } else if takes_rope_scaling(kind) {
        format!(
            "{kind} takes {}, and optionally `rope_type` (`default` or `llama3`; llama3 also takes `{}`)",
            names.join(", "),
            LLAMA3_PARAMS.join("`, `")
        )
    } else {
        format!("{kind} takes {}", names.join(", "))
    }
}

/// Builds the op of `kind` from its written attributes. `op_col` is the op name's column,
/// `missing_col` the column blamed for a missing attribute.
///
/// Errors: an unknown or repeated attribute name (at the name), a value of the wrong kind or out of
/// range (at the value), a missing attribute (at `missing_col`).
pub(super) fn build_op(
    cur: &Cursor,
    kind: OpKind,
    attrs: &[Attr],
    op_col: usize,
    missing_col: usize,
) -> Result<Op, IrError> {
    let spec = attr_spec(kind);
    let optional: &[(&str, AttrKind)] = if takes_rope_scaling(kind) {
        ROPE_SCALING
    } else {
        &[]
    };
    let mut vals: Vec<(&'static str, Checked, usize)> = Vec::new();
    for a in attrs {
        let Some(&(name, want)) = spec.iter().chain(optional).find(|(n, _)| *n == a.name) else {
            return Err(cur.err_at(
                a.col,
                format!("unknown attribute `{}`; {}", a.name, expected(kind)),
            ));
        };
        if vals.iter().any(|(n, ..)| *n == name) {
            return Err(cur.err_at(a.col, format!("attribute `{name}` is given twice")));
        }
        let col = match &a.value {
            AttrValue::Num(_, c) | AttrValue::List(_, c) => *c,
        };
        vals.push((name, check(cur, name, want, &a.value)?, col));
    }
    let mut v = Values {
        cur,
        kind,
        vals,
        missing_col,
    };
    Ok(match kind {
        OpKind::Embedding => Op::Embedding,
        OpKind::RmsNorm => Op::RmsNorm {
            eps: v.float("eps")?,
        },
        OpKind::MatMul => Op::MatMul,
        OpKind::Add => Op::Add,
        OpKind::Mul => Op::Mul,
        OpKind::Silu => Op::Silu,
        OpKind::Rope => Op::Rope {
            theta: v.float("theta")?,
            scaling: v.rope_scaling()?,
        },
        OpKind::Attention => Op::Attention {
            scale: v.float("scale")?,
        },
        OpKind::Reshape => Op::Reshape {
            shape: v.list("shape")?,
        },
        OpKind::Split => Op::Split {
            axis: v.int("axis")?,
            sizes: v.list("sizes")?,
        },
        OpKind::Concat => Op::Concat {
            axis: v.int("axis")?,
        },
        OpKind::Argmax => Op::Argmax,
        OpKind::FusedRmsNormMatmul => Op::FusedRmsNormMatmul {
            eps: v.float("eps")?,
        },
        OpKind::FusedGatedMlp => Op::FusedGatedMlp,
        OpKind::FusedMatmulAdd => Op::FusedMatmulAdd,
        OpKind::FusedQkNormRope => Op::FusedQkNormRope {
            eps: v.float("eps")?,
            theta: v.float("theta")?,
            scaling: v.rope_scaling()?,
        },
        OpKind::FusedRmsNormMatmulAdd => Op::FusedRmsNormMatmulAdd {
            eps: v.float("eps")?,
        },
        OpKind::Input | OpKind::Weight | OpKind::KvCache => {
            return Err(cur.err_at(op_col, format!("`{kind}` is not an op with operands")))
        }
    })
}

/// Checks one attribute value against the kind its op needs.
fn check(cur: &Cursor, name: &str, kind: AttrKind, v: &AttrValue) -> Result<Checked, IrError> {
    match (kind, v) {
        (AttrKind::Float, AttrValue::Num(s, col)) => {
            s.parse::<f32>().map(Checked::Float).map_err(|_| {
                cur.err_at(
                    *col,
                    format!("attribute `{name}` expects a float like `1e-6`, got `{s}`"),
                )
            })
        }
        (AttrKind::Int, AttrValue::Num(s, col)) => s
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= MAX_ELEMENTS)
            .map(Checked::Int)
            .ok_or_else(|| {
                cur.err_at(
                    *col,
                    format!("attribute `{name}` expects an integer in 0..=2^48, got `{s}`"),
                )
            }),
        (AttrKind::IntList, AttrValue::List(xs, col)) => {
            // Bound both the sum (split) and the product (reshape) so `Op::infer` cannot overflow.
            let sum = xs.iter().try_fold(0usize, |a, &x| a.checked_add(x));
            if sum.is_none_or(|s| s > MAX_ELEMENTS) || bounded_numel(xs).is_none() {
                return Err(cur.err_at(
                    *col,
                    format!("attribute `{name}` sums or multiplies to more than 2^48"),
                ));
            }
            Ok(Checked::IntList(xs.clone()))
        }
        (AttrKind::IntList, AttrValue::Num(s, col)) => Err(cur.err_at(
            *col,
            format!("attribute `{name}` expects a list like `[1, 64]`, got `{s}`"),
        )),
        (AttrKind::Name, AttrValue::Num(s, col)) => {
            let is_name = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if is_name {
                Ok(Checked::Name(s.clone()))
            } else {
                Err(cur.err_at(
                    *col,
                    format!("attribute `{name}` expects a name like `llama3`, got `{s}`"),
                ))
            }
        }
        (_, AttrValue::List(_, col)) => {
            let what = match kind {
                AttrKind::Float => "a float",
                AttrKind::Name => "a name",
                _ => "an integer",
            };
            Err(cur.err_at(
                *col,
                format!("attribute `{name}` expects {what}, got a list"),
            ))
        }
    }
}
