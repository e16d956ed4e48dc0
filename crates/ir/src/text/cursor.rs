//! A cursor over the tokens of one line, with the small grammar pieces (names, integers, integer
//! lists, types) that statements and attributes share.

use super::lexer::{Tok, Token};
use super::{bounded_numel, MAX_ELEMENTS};
use crate::error::IrError;
use crate::types::{DType, TensorType};

/// An [`IrError::Parse`] at a 1-based line and column.
pub(super) fn perr(line: usize, col: usize, msg: impl Into<String>) -> IrError {
    IrError::Parse {
        line,
        col,
        msg: msg.into(),
    }
}

/// The tokens of one line and a read position.
pub(super) struct Cursor {
    pub toks: Vec<Token>,
    pub pos: usize,
    pub line: usize,
    /// Column just past the line's last char, for "end of line" errors.
    pub end_col: usize,
}

impl Cursor {
    /// The next token, if any.
    pub fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    /// Column of the next token, or the end of the line.
    pub fn col(&self) -> usize {
        self.peek().map_or(self.end_col, |t| t.col)
    }

    /// A parse error on this line at `col`.
    pub fn err_at(&self, col: usize, msg: impl Into<String>) -> IrError {
        perr(self.line, col, msg)
    }

    /// An error at the next token: "expected {what}, got {token}".
    pub fn unexpected(&self, what: &str) -> IrError {
        let got = self
            .peek()
            .map_or("end of line".to_string(), |t| t.tok.describe());
        self.err_at(self.col(), format!("expected {what}, got {got}"))
    }

    /// Whether the next token is punctuation `c`.
    pub fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    /// Consumes punctuation `c` if it is next.
    pub fn eat(&mut self, c: char) -> bool {
        let hit = self.is_punct(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// Consumes punctuation `c`, or fails saying `` expected `c` {context} ``.
    pub fn expect(&mut self, c: char, context: &str) -> Result<usize, IrError> {
        let col = self.col();
        if self.eat(c) {
            Ok(col)
        } else {
            Err(self.unexpected(&format!("`{c}`{context}")))
        }
    }

    /// Fails unless the line has no tokens left.
    pub fn expect_end(&self) -> Result<(), IrError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(self.err_at(
                t.col,
                format!(
                    "unexpected {} after the end of the statement; expected end of line",
                    t.tok.describe()
                ),
            )),
        }
    }

    /// A `%name` to be defined; returns the name and its column.
    pub fn local(&mut self, what: &str) -> Result<(String, usize), IrError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Local(s),
                col,
            }) => {
                let r = (s.clone(), *col);
                self.pos += 1;
                Ok(r)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// An unsigned integer, e.g. a dimension or an `axis`.
    pub fn usize(&mut self, what: &str) -> Result<usize, IrError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Num(s),
                col,
            }) => {
                let col = *col;
                let n = s.parse::<usize>().ok().filter(|&n| n <= MAX_ELEMENTS);
                match n {
                    Some(n) => {
                        self.pos += 1;
                        Ok(n)
                    }
                    None => Err(self.err_at(
                        col,
                        format!("expected {what} (an integer in 0..=2^48), got `{s}`"),
                    )),
                }
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// `[` [int {`,` int}] `]`; returns the list and the column of `[`.
    pub fn usize_list(&mut self, what: &str) -> Result<(Vec<usize>, usize), IrError> {
        let open = self.expect('[', &format!(" to start {what}"))?;
        let mut xs = Vec::new();
        if !self.eat(']') {
            loop {
                xs.push(self.usize(&format!("an integer in {what}"))?);
                if self.eat(']') {
                    break;
                }
                self.expect(',', &format!(" or `]` in {what}"))?;
            }
        }
        Ok((xs, open))
    }

    /// `dtype[d0, d1, ..]`; returns the type and its column.
    pub fn ty(&mut self) -> Result<(TensorType, usize), IrError> {
        let Some(Token {
            tok: Tok::Ident(name),
            col,
        }) = self.peek().cloned()
        else {
            return Err(self.unexpected("a type like `f32[1, 64]`"));
        };
        let dtype = DType::from_name(&name).ok_or_else(|| {
            self.err_at(
                col,
                format!("unknown dtype `{name}`; expected one of bf16, f16, f32, i32"),
            )
        })?;
        self.pos += 1;
        let (shape, _) = self.usize_list("a shape")?;
        if bounded_numel(&shape).is_none() {
            return Err(self.err_at(
                col,
                format!("type {dtype}{shape:?} has more than 2^48 elements"),
            ));
        }
        Ok((TensorType::new(dtype, shape), col))
    }
}
