//! The parser: IR text (see [`crate::text`] for the grammar) to a verified [`Graph`].

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;

use super::attrs::{attr_list, build_op};
use super::cursor::{perr, Cursor};
use super::lexer::{lex_line, Tok, Token};
use super::{bounded_numel, MAX_ELEMENTS};
use crate::error::IrError;
use crate::graph::{Graph, Value};
use crate::op::{Op, OpKind};
use crate::types::TensorType;

/// Parses IR text into a graph whose every node's declared types equal [`Op::infer`] on its operands,
/// so the result passes [`crate::verify()`]. Value names are labels only (`%7`, `%h`, `%q.0` all
/// work); `#` comments and blank lines are ignored; weights and KV caches share one `@name` namespace;
/// `return` may name `@` leaves too. Nodes no result reaches are kept (and left out when printed).
/// Never panics, whatever `text` holds; shapes are capped at 2^48 elements so type inference cannot
/// overflow.
///
/// Errors: [`IrError::Parse`] with the 1-based line and column of the offending token and what was
/// expected, for a syntax error, an unknown op/dtype/attribute, a missing or duplicate attribute, an
/// undefined or twice-defined value (`%x` or `@w`), a use before definition, a wrong operand count, a
/// declared type that differs from the inferred one, a missing `return` or a statement after it.
pub fn parse(text: &str) -> Result<Graph, IrError> {
    let mut p = Parser::default();
    let mut ret_line = None;
    let mut lines = text.split('\n').enumerate().peekable();
    let mut eof = (1, 1);
    while let Some((i, raw)) = lines.next() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if lines.peek().is_none() {
            eof = (line, raw.chars().count() + 1);
        }
        let toks = lex_line(raw).map_err(|(col, msg)| perr(line, col, msg))?;
        if toks.is_empty() {
            continue;
        }
        if let Some(r) = ret_line {
            return Err(perr(
                line,
                toks[0].col,
                format!(
                    "unexpected {} after `return` on line {r}; `return` must be the last statement",
                    toks[0].tok.describe()
                ),
            ));
        }
        let end_col = raw.chars().count() + 1;
        let mut cur = Cursor {
            toks,
            pos: 0,
            line,
            end_col,
        };
        if p.statement(&mut cur)? {
            ret_line = Some(line);
        }
    }
    if ret_line.is_none() {
        return Err(perr(
            eof.0,
            eof.1,
            "missing `return` at end of input; expected a last line `return %value[, %value..]`",
        ));
    }
    // The checks above make this hold; keep the promise even if a future op's rules drift.
    crate::verify(&p.g).map_err(|e| {
        perr(
            ret_line.unwrap_or(1),
            1,
            format!("graph does not verify: {e}"),
        )
    })?;
    Ok(p.g)
}

/// A defined value and where it was defined.
#[derive(Clone, Copy)]
struct Def {
    value: Value,
    line: usize,
}

/// Parser state across lines: the graph so far and the names in scope.
#[derive(Default)]
struct Parser {
    g: Graph,
    locals: HashMap<String, Def>,
    globals: HashMap<String, Def>,
    inputs: HashMap<String, usize>,
}

impl Parser {
    /// Parses one non-empty line; returns whether it was the `return` statement.
    fn statement(&mut self, cur: &mut Cursor) -> Result<bool, IrError> {
        let Some(first) = cur.peek().cloned() else {
            return Ok(false);
        };
        match &first.tok {
            Tok::Ident(kw) if kw == "weight" || kw == "kv_cache" => {
                cur.pos += 1;
                self.leaf(cur, kw == "kv_cache")?;
                Ok(false)
            }
            Tok::Ident(kw) if kw == "return" => {
                cur.pos += 1;
                let mut results = vec![self.operand(cur)?.0];
                while cur.eat(',') {
                    results.push(self.operand(cur)?.0);
                }
                cur.expect_end()?;
                self.g.set_results(results);
                Ok(true)
            }
            Tok::Local(_) => {
                self.node(cur)?;
                Ok(false)
            }
            _ => Err(cur.unexpected(
                "a statement: `weight @name : type`, `kv_cache @name : type`, `%name = ...` or `return`",
            )),
        }
    }

    /// `weight @name : type` or `kv_cache @name : type` (the keyword already consumed).
    fn leaf(&mut self, cur: &mut Cursor, kv_cache: bool) -> Result<(), IrError> {
        let kw = if kv_cache { "kv_cache" } else { "weight" };
        let (name, col) = match cur.peek() {
            Some(Token {
                tok: Tok::Global(s),
                col,
            }) => (s.clone(), *col),
            _ => return Err(cur.unexpected(&format!("`@name` after `{kw}`"))),
        };
        cur.pos += 1;
        if let Some(d) = self.globals.get(&name) {
            return Err(cur.err_at(
                col,
                format!(
                    "{} is already declared on line {}",
                    super::format_global(&name),
                    d.line
                ),
            ));
        }
        cur.expect(':', &format!(" after {}", super::format_global(&name)))?;
        let (ty, ty_col) = cur.ty()?;
        cur.expect_end()?;
        if kv_cache && (ty.shape.len() != 3 || !ty.dtype.is_float()) {
            return Err(cur.err_at(
                ty_col,
                format!("kv_cache expects a float [max_context, kv_heads, head_dim], got {ty}"),
            ));
        }
        let op = if kv_cache {
            Op::KvCache {
                name: name.clone(),
                ty: ty.clone(),
            }
        } else {
            Op::Weight {
                name: name.clone(),
                ty: ty.clone(),
            }
        };
        let n = self.g.add_unchecked(op, &[], vec![ty]);
        self.globals.insert(
            name,
            Def {
                value: Value::of(n),
                line: cur.line,
            },
        );
        Ok(())
    }

    /// A `%name` or `@name` operand in scope; returns its value and column.
    fn operand(&mut self, cur: &mut Cursor) -> Result<(Value, usize), IrError> {
        let Some(t) = cur.peek().cloned() else {
            return Err(cur.unexpected("an operand `%name` or `@name`"));
        };
        let found = match &t.tok {
            Tok::Local(s) => self.locals.get(s).ok_or_else(|| {
                cur.err_at(
                    t.col,
                    format!("undefined value %{s}; a value must be defined on an earlier line"),
                )
            })?,
            Tok::Global(s) => self.globals.get(s).ok_or_else(|| {
                let g = super::format_global(s);
                cur.err_at(
                    t.col,
                    format!(
                        "undefined weight or kv_cache {g}; declare it first with `weight {g} : dtype[shape]`"
                    ),
                )
            })?,
            _ => return Err(cur.unexpected("an operand `%name` or `@name`")),
        };
        cur.pos += 1;
        Ok((found.value, t.col))
    }

    /// `%a[, %b..] = input "name" : type` or `%a[, %b..] = op(operands) {attrs} : types`.
    fn node(&mut self, cur: &mut Cursor) -> Result<(), IrError> {
        let mut defs = vec![cur.local("a value name `%name`")?];
        while cur.eat(',') {
            defs.push(cur.local("another value name `%name` after `,`")?);
        }
        for (i, (name, col)) in defs.iter().enumerate() {
            if let Some(d) = self.locals.get(name) {
                return Err(cur.err_at(
                    *col,
                    format!("value %{name} is already defined on line {}", d.line),
                ));
            }
            if defs[..i].iter().any(|(n, _)| n == name) {
                return Err(cur.err_at(*col, format!("value %{name} is defined twice here")));
            }
        }
        cur.expect('=', " after the defined values")?;
        let Some(Token {
            tok: Tok::Ident(op_name),
            col: op_col,
        }) = cur.peek().cloned()
        else {
            return Err(cur.unexpected("an op name such as `matmul` or `input`"));
        };
        cur.pos += 1;
        let kind = OpKind::from_name(&op_name)
            .filter(|k| !matches!(k, OpKind::Weight | OpKind::KvCache))
            .ok_or_else(|| {
                let known: Vec<&str> = OpKind::ALL
                    .iter()
                    .filter(|k| !matches!(k, OpKind::Weight | OpKind::KvCache))
                    .map(|k| k.name())
                    .collect();
                let hint = if matches!(op_name.as_str(), "weight" | "kv_cache") {
                    format!(
                        "; {op_name}s are declared by a header line `{op_name} @name : dtype[shape]`"
                    )
                } else {
                    String::new()
                };
                cur.err_at(
                    op_col,
                    format!(
                        "unknown op `{op_name}`; expected one of {}{hint}",
                        known.join(", ")
                    ),
                )
            })?;
        let n = if kind == OpKind::Input {
            self.input(cur, &defs)?
        } else {
            self.op_node(cur, kind, &defs, op_col)?
        };
        for (o, (name, _)) in defs.into_iter().enumerate() {
            let value = Value {
                node: n,
                output: o as u32,
            };
            let line = cur.line;
            self.locals.insert(name, Def { value, line });
        }
        Ok(())
    }

    /// The rest of `%x = input "name" : type`.
    fn input(&mut self, cur: &mut Cursor, defs: &[(String, usize)]) -> Result<NodeIndex, IrError> {
        if defs.len() != 1 {
            return Err(cur.err_at(
                defs[1].1,
                format!("input defines one value, got {}", defs.len()),
            ));
        }
        let (name, col) = match cur.peek() {
            Some(Token {
                tok: Tok::Str(s),
                col,
            }) => (s.clone(), *col),
            _ => return Err(cur.unexpected("the input's name as a string, e.g. `\"token\"`")),
        };
        cur.pos += 1;
        if let Some(line) = self.inputs.get(&name) {
            return Err(cur.err_at(
                col,
                format!(
                    "input {} is already declared on line {line}",
                    super::format_string(&name)
                ),
            ));
        }
        cur.expect(':', " and a type after the input's name")?;
        let (ty, _) = cur.ty()?;
        cur.expect_end()?;
        self.inputs.insert(name.clone(), cur.line);
        let n = self.g.add_unchecked(
            Op::Input {
                name,
                ty: ty.clone(),
            },
            &[],
            vec![ty],
        );
        Ok(n)
    }

    /// The rest of `%a[, %b..] = op(operands) {attrs} : types`, `op` already read at `op_col`.
    fn op_node(
        &mut self,
        cur: &mut Cursor,
        kind: OpKind,
        defs: &[(String, usize)],
        op_col: usize,
    ) -> Result<NodeIndex, IrError> {
        let name = kind.name();
        cur.expect('(', &format!(" after `{name}`"))?;
        let mut operands: Vec<(Value, usize)> = Vec::new();
        if !cur.is_punct(')') {
            operands.push(self.operand(cur)?);
            while cur.eat(',') {
                operands.push(self.operand(cur)?);
            }
        }
        let close_col = cur.expect(')', " or `,` in the operand list")?;
        let attrs = attr_list(cur)?;
        let attrs_end = cur.col();
        cur.expect(':', " and the result types")?;
        let mut types = vec![cur.ty()?];
        while cur.eat(',') {
            types.push(cur.ty()?);
        }
        cur.expect_end()?;

        match kind.arity() {
            Some(n) if operands.len() != n => {
                let col = operands.get(n).map_or(close_col, |o| o.1);
                let s = if n == 1 { "" } else { "s" };
                return Err(cur.err_at(
                    col,
                    format!("{name} expects {n} operand{s}, got {}", operands.len()),
                ));
            }
            None if operands.is_empty() => {
                return Err(cur.err_at(close_col, format!("{name} expects at least 1 operand")))
            }
            _ => {}
        }
        let op = build_op(cur, kind, &attrs, op_col, attrs_end)?;
        if types.len() != defs.len() {
            return Err(cur.err_at(
                types[0].1,
                format!(
                    "{} values are defined but {} types are declared",
                    defs.len(),
                    types.len()
                ),
            ));
        }
        let in_types: Vec<&TensorType> = operands
            .iter()
            .map(|(v, _)| self.g.value_type(*v))
            .collect::<Result<_, _>>()?;
        if let Op::Concat { axis } = &op {
            // Guard the axis sum against overflow before `infer` adds it up.
            let total = in_types.iter().try_fold(0usize, |acc, t| {
                acc.checked_add(t.shape.get(*axis).copied().unwrap_or(0))
            });
            if total.is_none_or(|t| t > MAX_ELEMENTS) {
                return Err(cur.err_at(op_col, "concat result has more than 2^48 elements"));
            }
        }
        let inferred = op.infer(&in_types).map_err(|msg| {
            let col = blame(&msg, &in_types).map_or(op_col, |i| operands[i].1);
            cur.err_at(col, msg)
        })?;
        if inferred.iter().any(|t| bounded_numel(&t.shape).is_none()) {
            return Err(cur.err_at(op_col, format!("{name} result has more than 2^48 elements")));
        }
        if inferred.len() != defs.len() {
            return Err(cur.err_at(
                defs[0].1,
                format!(
                    "{name} gives {} values, but {} are defined",
                    inferred.len(),
                    defs.len()
                ),
            ));
        }
        for (want, (declared, col)) in inferred.iter().zip(&types) {
            if want != declared {
                return Err(cur.err_at(
                    *col,
                    format!("declared type {declared}, but {name} of these operands gives {want}"),
                ));
            }
        }
        let inputs: Vec<Value> = operands.iter().map(|(v, _)| *v).collect();
        Ok(self.g.add_unchecked(op, &inputs, inferred))
    }
}

/// Which operand an [`Op::infer`] message blames: the last operand whose type is printed right after
/// the message's last `got ` (or after ` and ` following it), so the error points at that operand.
fn blame(msg: &str, types: &[&TensorType]) -> Option<usize> {
    let tail = msg.rsplit_once("got ")?.1;
    tail.rsplit(" and ").find_map(|piece| {
        types
            .iter()
            .rposition(|t| piece.starts_with(&t.to_string()))
    })
}
