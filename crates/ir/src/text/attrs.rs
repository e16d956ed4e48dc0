//! Op attributes in the text form: `{eps = 1e-6}`, `{axis = 1, sizes = [32, 16, 16]}`.
//!
//! Which op takes which attribute: `rms_norm`, `fused_rms_norm_matmul`: `eps`; `rope`: `theta`;
//! `attention`: `scale`; `reshape`: `shape`; `split`: `axis`, `sizes`; `concat`: `axis`;
//! `fused_qk_norm_rope`: `eps`, `theta`; every other op: none.

use super::cursor::Cursor;
use super::lexer::{Tok, Token};
use super::{bounded_numel, MAX_ELEMENTS};
use crate::error::IrError;
use crate::op::{Op, OpKind};

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
}

/// A checked attribute value.
enum Checked {
    Float(f32),
    Int(usize),
    IntList(Vec<usize>),
}

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

/// The attributes each op takes, in printing order.
fn attr_spec(kind: OpKind) -> &'static [(&'static str, AttrKind)] {
    match kind {
        OpKind::RmsNorm | OpKind::FusedRmsNormMatmul => &[("eps", AttrKind::Float)],
        OpKind::Rope => &[("theta", AttrKind::Float)],
        OpKind::Attention => &[("scale", AttrKind::Float)],
        OpKind::Reshape => &[("shape", AttrKind::IntList)],
        OpKind::Split => &[("axis", AttrKind::Int), ("sizes", AttrKind::IntList)],
        OpKind::Concat => &[("axis", AttrKind::Int)],
        OpKind::FusedQkNormRope => &[("eps", AttrKind::Float), ("theta", AttrKind::Float)],
        _ => &[],
    }
}

/// The checked attributes of one node, for building its op.
struct Values<'a> {
    cur: &'a Cursor,
    kind: OpKind,
    vals: Vec<(&'static str, Checked)>,
    /// Column to blame for a missing attribute: where the attribute list ends.
    missing_col: usize,
}

impl Values<'_> {
    fn take(&mut self, name: &str) -> Result<Checked, IrError> {
        match self.vals.iter().position(|(n, _)| *n == name) {
            Some(i) => Ok(self.vals.swap_remove(i).1),
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
    if spec.is_empty() {
        format!("{kind} takes no attributes")
    } else {
        let names: Vec<String> = spec.iter().map(|(n, _)| format!("`{n}`")).collect();
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
    let mut vals: Vec<(&'static str, Checked)> = Vec::new();
    for a in attrs {
        let Some(&(name, want)) = spec.iter().find(|(n, _)| *n == a.name) else {
            return Err(cur.err_at(
                a.col,
                format!("unknown attribute `{}`; {}", a.name, expected(kind)),
            ));
        };
        if vals.iter().any(|(n, _)| *n == name) {
            return Err(cur.err_at(a.col, format!("attribute `{name}` is given twice")));
        }
        vals.push((name, check(cur, name, want, &a.value)?));
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
        (_, AttrValue::List(_, col)) => {
            let what = if kind == AttrKind::Float {
                "a float"
            } else {
                "an integer"
            };
            Err(cur.err_at(
                *col,
                format!("attribute `{name}` expects {what}, got a list"),
            ))
        }
    }
}
