//! The lexer: one line of IR text to tokens, each with its 1-based column (counted in chars).

use super::is_name_char;

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// `%name`: a value defined by a node line.
    Local(String),
    /// `@name` or `@"name"`: a weight or KV cache declared by a header line.
    Global(String),
    /// A keyword, op name, dtype or attribute name: `[A-Za-z_][A-Za-z0-9_]*`.
    Ident(String),
    /// A number as written (`64`, `1e-6`, `-inf`); the parser decides between integer and float.
    Num(String),
    /// A quoted string, escapes resolved.
    Str(String),
    /// One of `= ( ) { } [ ] , :`.
    Punct(char),
}

/// A token and the column of its first char.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub col: usize,
}

impl Tok {
    /// How the token reads in an error message, e.g. `` `%7` `` or `` `(` ``.
    pub fn describe(&self) -> String {
        match self {
            Tok::Local(s) => format!("`%{s}`"),
            Tok::Global(s) => format!("`{}`", super::format_global(s)),
            Tok::Ident(s) | Tok::Num(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string {}", super::format_string(s)),
            Tok::Punct(c) => format!("`{c}`"),
        }
    }
}

/// A lexing error: the column and the message.
pub(super) type LexError = (usize, String);

/// Splits one line (without its `\n`) into tokens; a `#` outside a string ends the line.
///
/// Errors: an unexpected character, an empty `%`/`@` name, an unterminated string or a bad escape,
/// each at the column of the offending char.
pub(super) fn lex_line(line: &str) -> Result<Vec<Token>, LexError> {
    let chars: Vec<char> = line.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c == '#' {
            break;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '=' | '(' | ')' | '{' | '}' | '[' | ']' | ',' | ':' => {
                i += 1;
                Tok::Punct(c)
            }
            '%' => {
                let name = take_while(&chars, &mut i, 1, is_name_char);
                if name.is_empty() {
                    return Err((col, "expected a value name after `%`, e.g. `%7`".into()));
                }
                Tok::Local(name)
            }
            '@' => {
                if chars.get(i + 1) == Some(&'"') {
                    i += 1;
                    Tok::Global(lex_string(&chars, &mut i)?)
                } else {
                    let name = take_while(&chars, &mut i, 1, is_name_char);
                    if name.is_empty() {
                        return Err((
                            col,
                            "expected a weight or kv_cache name after `@`, e.g. `@lm_head.weight`"
                                .into(),
                        ));
                    }
                    Tok::Global(name)
                }
            }
            '"' => Tok::Str(lex_string(&chars, &mut i)?),
            c if c.is_ascii_digit()
                || (matches!(c, '-' | '+' | '.')
                    && chars
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')) =>
            {
                Tok::Num(take_while(&chars, &mut i, 0, |d| {
                    d.is_ascii_alphanumeric() || matches!(d, '.' | '_' | '+' | '-')
                }))
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                Tok::Ident(take_while(&chars, &mut i, 0, |d| {
                    d.is_ascii_alphanumeric() || d == '_'
                }))
            }
            c => return Err((col, format!("unexpected character `{}`", c.escape_debug()))),
        };
        toks.push(Token { tok, col });
    }
    Ok(toks)
}

/// Takes chars from `chars[*i + skip..]` while `pred` holds; leaves `*i` after them.
fn take_while(chars: &[char], i: &mut usize, skip: usize, pred: impl Fn(char) -> bool) -> String {
    *i += skip;
    let start = *i;
    while *i < chars.len() && pred(chars[*i]) {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}

/// Lexes a string starting at the `"` at `chars[*i]`; leaves `*i` after the closing quote.
fn lex_string(chars: &[char], i: &mut usize) -> Result<String, LexError> {
    let open = *i + 1;
    *i += 1;
    let mut s = String::new();
    loop {
        let Some(&c) = chars.get(*i) else {
            return Err((
                open,
                "unterminated string; expected a closing `\"` on the same line".into(),
            ));
        };
        *i += 1;
        match c {
            '"' => return Ok(s),
            '\\' => {
                let esc_col = *i;
                let e = chars.get(*i).copied();
                *i += 1;
                match e {
                    Some('\\') => s.push('\\'),
                    Some('"') => s.push('"'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('u') => s.push(lex_unicode_escape(chars, i, esc_col)?),
                    _ => {
                        return Err((
                            esc_col,
                            "unknown escape; expected one of `\\\\`, `\\\"`, `\\n`, `\\t`, `\\r`, `\\u{hex}`"
                                .into(),
                        ))
                    }
                }
            }
            c => s.push(c),
        }
    }
}

/// Lexes the `{hex}` of a `\u{hex}` escape whose backslash is at column `esc_col`.
fn lex_unicode_escape(chars: &[char], i: &mut usize, esc_col: usize) -> Result<char, LexError> {
    let bad = || {
        (
            esc_col,
            "bad unicode escape; expected `\\u{hex}` naming a unicode scalar value".to_string(),
        )
    };
    if chars.get(*i) != Some(&'{') {
        return Err(bad());
    }
    *i += 1;
    let hex = take_while(chars, i, 0, |d| d.is_ascii_hexdigit());
    if chars.get(*i) != Some(&'}') || hex.is_empty() || hex.len() > 6 {
        return Err(bad());
    }
    *i += 1;
    u32::from_str_radix(&hex, 16)
        .ok()
        .and_then(char::from_u32)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex_line(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_a_node_line_with_columns() {
        let t = lex_line("%3 = rms_norm(%1, @w.0) {eps = 1e-6} : f32[1, 64] # c").unwrap();
        assert_eq!(
            t[0],
            Token {
                tok: Tok::Local("3".into()),
                col: 1
            }
        );
        assert_eq!(t[2].tok, Tok::Ident("rms_norm".into()));
        assert_eq!(
            t[6],
            Token {
                tok: Tok::Global("w.0".into()),
                col: 19
            }
        );
        assert_eq!(t[11].tok, Tok::Num("1e-6".into()));
        assert_eq!(t.last().unwrap().tok, Tok::Punct(']'));
    }

    #[test]
    fn lexes_strings_escapes_and_signed_numbers() {
        assert_eq!(
            toks(r#"@"a b\"\u{3b1}" "x\ty" -inf -1.5e-3"#),
            vec![
                Tok::Global("a b\"α".into()),
                Tok::Str("x\ty".into()),
                Tok::Num("-inf".into()),
                Tok::Num("-1.5e-3".into()),
            ]
        );
    }

    #[test]
    fn reports_bad_input_at_its_column() {
        assert_eq!(lex_line("%1 = $").unwrap_err().0, 6);
        assert_eq!(lex_line("x \"abc").unwrap_err().0, 3);
        assert_eq!(lex_line(r#""a\q""#).unwrap_err().0, 3);
        assert_eq!(lex_line(r#""\u{110000}""#).unwrap_err().0, 2);
        assert_eq!(lex_line("% x").unwrap_err().0, 1);
    }
}
