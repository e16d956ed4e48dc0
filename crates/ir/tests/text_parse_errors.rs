//! Parse errors of the IR text form: each kind points at the offending token (1-based line:col) and
//! says what was expected.

use braid_ir::{text, IrError};

/// A valid prefix: two weights, an input and one node (lines 1-4).
const PRELUDE: &str = "\
weight @w : bf16[32, 64]
weight @ln : f32[64]
%0 = input \"x\" : f32[1, 64]
%1 = rms_norm(%0, @ln) {eps = 1e-6} : f32[1, 64]
";

/// Parses `src`, expects an error, returns `(line, col, msg)`.
fn err(src: &str) -> (usize, usize, String) {
    match text::parse(src) {
        Ok(g) => panic!("parsed, expected an error:\n{src}\n{}", text::print(&g)),
        Err(IrError::Parse { line, col, msg }) => (line, col, msg),
        Err(e) => panic!("expected IrError::Parse, got {e:?}"),
    }
}

/// The error of `PRELUDE` + `tail`, asserting its position and that the message holds every `parts`.
#[track_caller]
fn assert_err(tail: &str, line: usize, col: usize, parts: &[&str]) {
    let src = format!("{PRELUDE}{tail}");
    let (l, c, msg) = err(&src);
    assert_eq!((l, c), (line, col), "{l}:{c}: {msg}\n{src}");
    for p in parts {
        assert!(msg.contains(p), "{l}:{c}: {msg}\nmissing {p:?}");
    }
}

#[test]
fn display_is_line_col_message() {
    let e = text::parse("%0 = input \"x\" : f64[1]\nreturn %0\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "1:18: unknown dtype `f64`; expected one of bf16, f16, f32, i32"
    );
}

#[test]
fn unknown_op_lists_the_known_ones() {
    assert_err(
        "%2 = matmull(%1, @w) : f32[1, 32]\nreturn %2\n",
        5,
        6,
        &[
            "unknown op `matmull`; expected one of",
            "matmul",
            "fused_qk_norm_rope",
        ],
    );
    assert_err(
        "%2 = weight : f32[1]\nreturn %2\n",
        5,
        6,
        &[
            "unknown op `weight`",
            "header line `weight @name : dtype[shape]`",
        ],
    );
}

#[test]
fn undefined_and_used_before_definition() {
    assert_err(
        "%2 = add(%1, %7) : f32[1, 64]\nreturn %2\n",
        5,
        14,
        &["undefined value %7"],
    );
    // %3 is defined, but only on the next line.
    assert_err(
        "%2 = add(%1, %3) : f32[1, 64]\n%3 = silu(%1) : f32[1, 64]\nreturn %2\n",
        5,
        14,
        &["undefined value %3"],
    );
    // A node cannot use its own result.
    assert_err(
        "%2 = silu(%2) : f32[1, 64]\nreturn %2\n",
        5,
        11,
        &["undefined value %2"],
    );
    assert_err(
        "%2 = matmul(%1, @wq) : f32[1, 32]\nreturn %2\n",
        5,
        17,
        &[
            "undefined weight or kv_cache @wq",
            "weight @wq : dtype[shape]",
        ],
    );
    assert_err("return %9\n", 5, 8, &["undefined value %9"]);
}

#[test]
fn operand_types_are_checked_against_infer_at_the_blamed_operand() {
    let src = "\
weight @w : bf16[32, 16]
%0 = input \"x\" : f32[1, 64]
# the weight does not fit
%1 = silu(%0) : f32[1, 64]

%2 = matmul(%1, @w) : f32[1, 32]
return %2
";
    let (line, col, msg) = err(src);
    assert_eq!((line, col), (6, 17), "{msg}");
    assert_eq!(
        msg,
        "matmul expects w [n, 64] for x f32[1, 64], got bf16[32, 16]"
    );
    // Unequal shapes blame the second operand.
    assert_err(
        "%2 = matmul(%1, @w) : f32[1, 32]\n%3 = add(%1, %2) : f32[1, 64]\nreturn %3\n",
        6,
        14,
        &["add expects b of a's shape or [64] (one row), got f32[1, 64] and f32[1, 32]"],
    );
    assert_err(
        "%2 = reshape(%1) {shape = [4, 4]} : f32[4, 4]\nreturn %2\n",
        5,
        14,
        &["reshape to [4, 4] expects 16 elements, got f32[1, 64]"],
    );
    // A message that names no operand type points at the op.
    assert_err(
        "%2, %3 = split(%1) {axis = 1, sizes = [32, 16]} : f32[1, 32], f32[1, 16]\nreturn %2\n",
        5,
        10,
        &["split sizes [32, 16] must sum to dimension 1 of f32[1, 64] (64)"],
    );
}

#[test]
fn declared_types_must_equal_inferred_ones() {
    assert_err(
        "%2 = matmul(%1, @w) : f32[1, 33]\nreturn %2\n",
        5,
        23,
        &["declared type f32[1, 33], but matmul of these operands gives f32[1, 32]"],
    );
    assert_err(
        "%2, %3 = split(%1) {axis = 1, sizes = [32, 32]} : f32[1, 32], bf16[1, 32]\nreturn %2\n",
        5,
        63,
        &["declared type bf16[1, 32], but split of these operands gives f32[1, 32]"],
    );
    // Names and types disagree in number, or with the op's outputs.
    assert_err(
        "%2, %3 = split(%1) {axis = 1, sizes = [32, 32]} : f32[1, 32]\nreturn %2\n",
        5,
        51,
        &["2 values are defined but 1 types are declared"],
    );
    assert_err(
        "%2 = split(%1) {axis = 1, sizes = [32, 32]} : f32[1, 32]\nreturn %2\n",
        5,
        1,
        &["split gives 2 values, but 1 are defined"],
    );
}

#[test]
fn duplicate_definitions() {
    assert_err(
        "%1 = silu(%0) : f32[1, 64]\nreturn %1\n",
        5,
        1,
        &["value %1 is already defined on line 4"],
    );
    assert_err(
        "%2, %2 = split(%1) {axis = 1, sizes = [32, 32]} : f32[1, 32], f32[1, 32]\nreturn %2\n",
        5,
        5,
        &["value %2 is defined twice here"],
    );
    assert_err(
        "kv_cache @w : f32[8, 2, 16]\nreturn %1\n",
        5,
        10,
        &["@w is already declared on line 1"],
    );
    assert_err(
        "%2 = input \"x\" : f32[1]\nreturn %2\n",
        5,
        12,
        &["input \"x\" is already declared on line 3"],
    );
}

#[test]
fn missing_return_and_statements_after_it() {
    let (line, col, msg) = err(PRELUDE);
    assert_eq!((line, col), (5, 1), "{msg}");
    assert!(msg.contains("missing `return`"), "{msg}");
    // Without a final newline the end of input is the end of the last line.
    let (line, col, _) = err("weight @w : f32[2]");
    assert_eq!((line, col), (1, 19));
    let (line, col, msg) = err("");
    assert_eq!((line, col), (1, 1));
    assert!(msg.contains("missing `return`"), "{msg}");
    assert_err(
        "return %1\n# fine\n\n%2 = silu(%1) : f32[1, 64]\n",
        8,
        1,
        &[
            "unexpected `%2` after `return` on line 5",
            "must be the last",
        ],
    );
    assert_err(
        "return\n",
        5,
        7,
        &["expected an operand `%name` or `@name`, got end of line"],
    );
}

#[test]
fn bad_types() {
    assert_err(
        "%2 = silu(%1) : f64[1, 64]\nreturn %2\n",
        5,
        17,
        &["unknown dtype `f64`; expected one of bf16, f16, f32, i32"],
    );
    assert_err(
        "%2 = silu(%1) : f32[1; 64]\nreturn %2\n",
        5,
        22,
        &["unexpected character `;`"],
    );
    assert_err(
        "%2 = silu(%1) : f32[1, x]\nreturn %2\n",
        5,
        24,
        &["expected an integer in a shape, got `x`"],
    );
    assert_err(
        "%2 = silu(%1) : f32[1, -4]\nreturn %2\n",
        5,
        24,
        &["an integer in 0..=2^48", "got `-4`"],
    );
    assert_err(
        "%2 = silu(%1) : f32\nreturn %2\n",
        5,
        20,
        &["expected `[` to start a shape, got end of line"],
    );
    assert_err(
        "weight @big : f32[99999999999999999999]\nreturn %1\n",
        5,
        19,
        &["integer in 0..=2^48"],
    );
    assert_err(
        "weight @big : f32[16777216, 16777216, 16777216]\nreturn %1\n",
        5,
        15,
        &["more than 2^48 elements"],
    );
    assert_err(
        "kv_cache @k : f32[8, 16]\nreturn %1\n",
        5,
        15,
        &["kv_cache expects a float [max_context, kv_heads, head_dim], got f32[8, 16]"],
    );
    assert_err(
        "kv_cache @k : i32[8, 2, 16]\nreturn %1\n",
        5,
        15,
        &["kv_cache expects a float"],
    );
}

#[test]
fn trailing_garbage_and_syntax() {
    assert_err(
        "%2 = silu(%1) : f32[1, 64] xyz\nreturn %2\n",
        5,
        28,
        &["unexpected `xyz` after the end of the statement"],
    );
    assert_err("return %1 %1\n", 5, 11, &["unexpected `%1`"]);
    assert_err(
        "%2 silu(%1) : f32[1, 64]\nreturn %2\n",
        5,
        4,
        &["expected `=` after the defined values, got `silu`"],
    );
    assert_err(
        "%2 = silu(%1 : f32[1, 64]\nreturn %2\n",
        5,
        14,
        &["expected `)` or `,` in the operand list, got `:`"],
    );
    assert_err(
        "%2 = silu %1 : f32[1, 64]\nreturn %2\n",
        5,
        11,
        &["expected `(` after `silu`, got `%1`"],
    );
    assert_err(
        "%2 = silu(%1)\nreturn %2\n",
        5,
        14,
        &["expected `:` and the result types, got end of line"],
    );
    assert_err(
        "frobnicate %1\nreturn %1\n",
        5,
        1,
        &["expected a statement", "got `frobnicate`"],
    );
    assert_err(
        "%2 = input x : f32[1]\nreturn %2\n",
        5,
        12,
        &["the input's name as a string"],
    );
    assert_err(
        "%2, %3 = input \"y\" : f32[1]\nreturn %2\n",
        5,
        5,
        &["input defines one value, got 2"],
    );
    assert_err(
        "%2 = input \"y : f32[1]\nreturn %2\n",
        5,
        12,
        &["unterminated string"],
    );
    assert_err(
        "% = silu(%1) : f32[1, 64]\n",
        5,
        1,
        &["value name after `%`"],
    );
    assert_err(
        "weight @w2 f32[1]\nreturn %1\n",
        5,
        12,
        &["expected `:` after @w2, got `f32`"],
    );
}

#[test]
fn operand_count() {
    assert_err(
        "%2 = matmul(%1) : f32[1, 32]\nreturn %2\n",
        5,
        15,
        &["matmul expects 2 operands, got 1"],
    );
    assert_err(
        "%2 = silu(%1, %1, %0) : f32[1, 64]\nreturn %2\n",
        5,
        15,
        &["silu expects 1 operand, got 3"],
    );
    assert_err(
        "%2 = concat() {axis = 0} : f32[1, 64]\nreturn %2\n",
        5,
        13,
        &["concat expects at least 1 operand"],
    );
}

#[test]
fn attributes() {
    assert_err(
        "%2 = rms_norm(%1, @ln) {epsilon = 1e-6} : f32[1, 64]\nreturn %2\n",
        5,
        25,
        &["unknown attribute `epsilon`; rms_norm takes `eps`"],
    );
    assert_err(
        "%2 = rms_norm(%1, @ln) : f32[1, 64]\nreturn %2\n",
        5,
        24,
        &["rms_norm needs attribute `eps`"],
    );
    assert_err(
        "%2, %3 = split(%1) {sizes = [32, 32]} : f32[1, 32], f32[1, 32]\nreturn %2\n",
        5,
        39,
        &["split needs attribute `axis`; split takes `axis`, `sizes`"],
    );
    assert_err(
        "%2 = rms_norm(%1, @ln) {eps = 1e-6, eps = 1e-5} : f32[1, 64]\nreturn %2\n",
        5,
        37,
        &["attribute `eps` is given twice"],
    );
    assert_err(
        "%2 = rms_norm(%1, @ln) {eps = [1]} : f32[1, 64]\nreturn %2\n",
        5,
        31,
        &["attribute `eps` expects a float, got a list"],
    );
    assert_err(
        "%2 = rms_norm(%1, @ln) {eps = 1e-6x} : f32[1, 64]\nreturn %2\n",
        5,
        31,
        &["attribute `eps` expects a float like `1e-6`, got `1e-6x`"],
    );
    assert_err(
        "%2 = concat(%1) {axis = 0.5} : f32[1, 64]\nreturn %2\n",
        5,
        25,
        &["attribute `axis` expects an integer in 0..=2^48, got `0.5`"],
    );
    assert_err(
        "%2 = reshape(%1) {shape = 64} : f32[64]\nreturn %2\n",
        5,
        27,
        &["attribute `shape` expects a list like `[1, 64]`, got `64`"],
    );
    assert_err(
        "%2 = reshape(%1) {shape = [65536, 65536, 65536, 65536]} : f32[64]\nreturn %2\n",
        5,
        27,
        &["attribute `shape` sums or multiplies to more than 2^48"],
    );
    assert_err(
        "%2 = silu(%1) {eps = 1e-6} : f32[1, 64]\nreturn %2\n",
        5,
        16,
        &["unknown attribute `eps`; silu takes no attributes"],
    );
    assert_err(
        "%2 = rms_norm(%1, @ln) {eps 1e-6} : f32[1, 64]\nreturn %2\n",
        5,
        29,
        &["expected `=` after attribute `eps`, got `1e-6`"],
    );
}

#[test]
fn lexical_errors_point_at_the_char() {
    assert_err(
        "%2 = silu(%1) : f32[1, 64] $\nreturn %2\n",
        5,
        28,
        &["unexpected character `$`"],
    );
    assert_err(
        "weight @\"a\\qb\" : f32[1]\nreturn %1\n",
        5,
        11,
        &["unknown escape"],
    );
    assert_err("weight @ : f32[1]\nreturn %1\n", 5, 8, &["name after `@`"]);
}

#[test]
fn concat_overflow_is_an_error_not_a_panic() {
    // 2^48 elements per operand; 2^16 operands would overflow the axis sum.
    let mut src = String::from("weight @w : f32[281474976710656]\n%0 = concat(@w");
    for _ in 0..70_000 {
        src.push_str(", @w");
    }
    src.push_str(") {axis = 0} : f32[1]\nreturn %0\n");
    let (line, col, msg) = err(&src);
    assert_eq!((line, col), (2, 6));
    assert!(msg.contains("more than 2^48"), "{msg}");
}

/// Lines 5 and 6: a position and `%h [4, 16]` for the rope lines (line 7).
const ROPE_PRELUDE: &str = "\
%p = input \"position\" : i32[1]
%h = reshape(%1) {shape = [4, 16]} : f32[4, 16]
";

#[test]
fn rope_scaling_attributes() {
    let rope = |attrs: &str| {
        format!("{ROPE_PRELUDE}%r = rope(%h, %p) {{{attrs}}} : f32[4, 16]\nreturn %r\n")
    };
    let llama3 = "factor = 8, low_freq_factor = 1, high_freq_factor = 4, original_max_position_embeddings = 8192";
    // `%r = rope(%h, %p) {` is 19 chars: the first attribute name is at column 20.
    assert_err(
        &rope("theta = 5e5, rope_type = yarn"),
        7,
        45,
        &["attribute `rope_type` expects `default` or `llama3`, got `yarn`"],
    );
    assert_err(
        &rope("theta = 5e5, rope_type = 3"),
        7,
        45,
        &["attribute `rope_type` expects a name like `llama3`, got `3`"],
    );
    assert_err(
        &rope("theta = 5e5, factor = 8"),
        7,
        42,
        &["attribute `factor` needs `rope_type = llama3`; the default scaling has no parameters"],
    );
    assert_err(
        &rope("theta = 5e5, rope_type = default, low_freq_factor = 1"),
        7,
        72,
        &["attribute `low_freq_factor` needs `rope_type = llama3`"],
    );
    assert_err(
        &rope("theta = 5e5, rope_type = llama3, factor = 8, low_freq_factor = 1, original_max_position_embeddings = 8192"),
        7,
        127,
        &[
            "rope with `rope_type = llama3` needs attribute `high_freq_factor`",
            "llama3 takes `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`",
        ],
    );
    // Parameters the formula cannot use point at the offending value.
    assert_err(
        &rope(&format!(
            "theta = 5e5, rope_type = llama3, {}",
            llama3.replace("high_freq_factor = 4", "high_freq_factor = 1")
        )),
        7,
        105,
        &["rope expects llama3 `high_freq_factor` finite and > low_freq_factor (1e0), got 1e0"],
    );
    assert_err(
        &rope(&format!(
            "theta = 5e5, rope_type = llama3, {}",
            llama3.replace("factor = 8", "factor = -8")
        )),
        7,
        62,
        &["rope expects llama3 `factor` finite and > 0, got -8e0"],
    );
    assert_err(
        &rope(&format!(
            "theta = 5e5, rope_type = llama3, {}",
            llama3.replace("8192", "0")
        )),
        7,
        143,
        &["rope expects llama3 `original_max_position_embeddings` > 0, got 0"],
    );
    assert_err(
        &rope(&format!("theta = 5e5, rope_type = llama3, {}", llama3.replace("8192", "8.5e3"))),
        7,
        143,
        &["attribute `original_max_position_embeddings` expects an integer in 0..=2^48, got `8.5e3`"],
    );
    assert_err(
        &rope("theta = 5e5, scaling = llama3"),
        7,
        33,
        &["unknown attribute `scaling`; rope takes `theta`, and optionally `rope_type` (`default` or `llama3`; llama3 also takes `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`)"],
    );
    // Ops without a rope do not take the scaling attributes.
    assert_err(
        "%2 = rms_norm(%1, @ln) {eps = 1e-6, rope_type = llama3} : f32[1, 64]\nreturn %2\n",
        5,
        37,
        &["unknown attribute `rope_type`; rms_norm takes `eps`"],
    );
}

#[test]
fn token_counts_must_agree() {
    let src = format!(
        "{ROPE_PRELUDE}\
         kv_cache @kc : f32[8, 2, 16]\n\
         kv_cache @vc : f32[8, 2, 16]\n\
         %q = input \"q\" : f32[4, 4, 16]\n\
         %k = input \"k\" : f32[3, 2, 16]\n\
         %v = input \"v\" : f32[4, 2, 16]\n\
         %a = attention(%q, %k, %v, @kc, @vc, %p) {{scale = 2.5e-1}} : f32[4, 4, 16]\n\
         return %a\n"
    );
    assert_err(
        &src,
        12,
        20,
        &["attention expects q and k with one token count T = 4, got f32[4, 4, 16] and f32[3, 2, 16]"],
    );
    let src = format!(
        "{ROPE_PRELUDE}\
         %q = input \"q\" : f32[4, 4, 16]\n\
         %k = input \"k\" : f32[2, 16]\n\
         %qr, %kr = fused_qk_norm_rope(%q, %k, @ln, @ln, %p) {{eps = 1e-6, theta = 1e6}} : f32[4, 4, 16], f32[2, 16]\n\
         return %qr\n"
    );
    assert_err(
        &src,
        9,
        35,
        &["fused_qk_norm_rope expects q and k of one rank"],
    );
}
