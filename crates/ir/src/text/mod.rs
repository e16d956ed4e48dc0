//! The IR text form: a stable, readable printing of a [`Graph`] ([`print()`]) and its parser
//! ([`parse()`]), with `parse(print(g))` printing the same text again.
//!
//! ```text
//! # Qwen3 layer 0, first nodes
//! weight @model.embed_tokens.weight : bf16[1000, 64]
//! weight @model.layers.0.input_layernorm.weight : bf16[64]
//! %0 = input "token" : i32[1]
//! %1 = embedding(@model.embed_tokens.weight, %0) : f32[1, 64]
//! %2 = rms_norm(%1, @model.layers.0.input_layernorm.weight) {eps = 1e-6} : f32[1, 64]
//! %3, %4 = split(%2) {axis = 1, sizes = [32, 32]} : f32[1, 32], f32[1, 32]
//! return %3, %4
//! ```
//!
//! Weights and KV caches are `@name` operands declared by header lines; every other value is `%name`,
//! defined by one node line. The printer numbers values `%0, %1, ..` in canonical topological order
//! ([`Graph::value_names`]) and prints only nodes a result reaches, so the text does not depend on node
//! indices; the parser takes any names (`%h`, `%q_proj`) as plain labels.
//!
//! Grammar (one statement per line; `#` starts a comment; blank lines are ignored):
//!
//! ```text
//! file      = { line } ;                       (* exactly one `return`, the last statement *)
//! line      = [ stmt ] [ "#" comment ] "\n" ;
//! stmt      = leaf | node | return ;
//! leaf      = ( "weight" | "kv_cache" ) global ":" type ;
//! node      = local { "," local } "=" ( "input" string | op ) ":" type { "," type } ;
//! op        = opname "(" [ operand { "," operand } ] ")" [ "{" [ attr { "," attr } ] "}" ] ;
//! attr      = ident "=" ( number | ident | "[" [ int { "," int } ] "]" ) ;  (* ident: `llama3` *)
//! return    = "return" operand { "," operand } ;
//! operand   = local | global ;
//! local     = "%" name ;
//! global    = "@" ( name | string ) ;
//! type      = dtype "[" [ int { "," int } ] "]" ;        (* dtype: bf16 | f16 | f32 | i32 *)
//! name      = { "A".."Z" | "a".."z" | "0".."9" | "_" | "." | "-" | "/" } ;  (* non-empty *)
//! string    = '"' { char | "\\" | '\"' | "\n" | "\t" | "\r" | "\u{" hex "}" } '"' ;
//! ```
//!
//! Attributes (floats print with Rust's `{:e}`, the shortest text that round-trips, e.g. `1e-6`):
//! `rms_norm`, `fused_rms_norm_matmul`, `fused_rms_norm_matmul_add`: `eps`; `rope`: `theta`;
//! `attention`: `scale`; `reshape`: `shape`; `split`: `axis`, `sizes`; `concat`: `axis`;
//! `fused_qk_norm_rope`: `eps`, `theta`. The rope-bearing ops also take an optional frequency
//! scaling ([`crate::RopeScaling`]) in HF's `rope_scaling` keys, printed only when it is not the
//! default: `{theta = 5e5, rope_type = llama3, factor = 3.2e1, low_freq_factor = 1e0,
//! high_freq_factor = 4e0, original_max_position_embeddings = 8192}`.
//!
//! The parser checks every node's declared types against [`crate::Op::infer`] on its operands, so a
//! graph it returns passes [`crate::verify()`]. Every failure is an [`crate::IrError::Parse`] at the
//! 1-based line and column of the offending token, saying what was expected.
//!
//! ```
//! use braid_ir::text;
//!
//! let src = "weight @w : bf16[3, 4]\n%x = input \"x\" : f32[1, 4]\n%y = matmul(%x, @w) : f32[1, 3]\nreturn %y\n";
//! let g = text::parse(src)?;
//! assert_eq!(text::print(&g), src.replace("%x", "%0").replace("%y", "%1"));
//!
//! let err = text::parse("%x = input \"x\" : f32[1, 4]\n%y = silu(%z) : f32[1, 4]\nreturn %y\n");
//! assert_eq!(err.unwrap_err().to_string(), "2:11: undefined value %z; a value must be defined on an earlier line");
//! # Ok::<(), braid_ir::IrError>(())
//! ```

mod attrs;
mod cursor;
mod lexer;
mod parse;
mod print;

pub use parse::parse;
pub use print::print;

pub(crate) use print::{format_attrs, format_global, format_string};

#[cfg(doc)]
use crate::Graph;

/// Whether `c` may appear in a bare `%name` or `@name` (anything else needs a quoted `@"name"`).
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

/// Largest element count (and dimension, list sum or product) the parser accepts, so that shape
/// arithmetic in [`crate::Op::infer`] can never overflow on hostile input.
pub(crate) const MAX_ELEMENTS: usize = 1 << 48;

/// The element count of `shape`, or `None` when it exceeds [`MAX_ELEMENTS`].
pub(crate) fn bounded_numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS && shape.iter().all(|&d| d <= MAX_ELEMENTS))
}
