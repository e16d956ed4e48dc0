//! Robustness of the IR text parser: any string parses to `Ok` or `Err`, never a panic; a mutated
//! valid text that still parses gives a verified graph that round-trips through the printer.

use braid_ir::{text, verify, IrError};
use proptest::prelude::*;
use proptest::sample::Index;

/// A valid text using every op kind, with short names so that mutations hit structure.
const SEED: &str = "\
# every op kind once
weight @e : bf16[10, 8]
weight @n : f32[8]
weight @qn : f16[4]
weight @w : bf16[16, 8]
weight @wo : f32[8, 8]
weight @wgu : bf16[8, 8]
weight @wd : bf16[8, 4]
kv_cache @k : f32[6, 1, 4]
kv_cache @\"v cache\" : bf16[6, 1, 4]
%t = input \"token\" : i32[1]
%p = input \"pos\" : i32[1]
%x = embedding(@e, %t) : f32[1, 8]
%h = rms_norm(%x, @n) {eps = 1e-6} : f32[1, 8]
%qkv = matmul(%h, @w) : f32[1, 16]
%q, %kk, %vv = split(%qkv) {axis = 1, sizes = [8, 4, 4]} : f32[1, 8], f32[1, 4], f32[1, 4]
%q2 = reshape(%q) {shape = [2, 4]} : f32[2, 4]
%k2 = reshape(%kk) {shape = [1, 4]} : f32[1, 4]
%v2 = reshape(%vv) {shape = [1, 4]} : f32[1, 4]
%qr, %kr = fused_qk_norm_rope(%q2, %k2, @qn, @qn, %p) {eps = 1e-6, theta = 1e6} : f32[2, 4], f32[1, 4]
%q3 = rope(%q2, %p) {theta = 1e4} : f32[2, 4]
%a = attention(%qr, %kr, %v2, @k, @\"v cache\", %p) {scale = 5e-1} : f32[2, 4]
%a2 = reshape(%a) {shape = [1, 8]} : f32[1, 8]
%o = fused_matmul_add(%a2, @wo, %x) : f32[1, 8]
%gu = fused_rms_norm_matmul(%o, @n, @wgu) {eps = 1e-5} : f32[1, 8]
%m = fused_gated_mlp(%gu, @wd, %o) : f32[1, 8]
%s = silu(%m) : f32[1, 8]
%y = mul(%s, %o) : f32[1, 8]
%z = add(%y, %a2) : f32[1, 8]
%c = concat(%z, %x) {axis = 0} : f32[2, 8]
%l = matmul(%z, @e) : f32[1, 10]
%next = argmax(%l) : i32[1]
return %l, %next, %c, %q3
";

/// Parses `s`; when it parses, the graph must verify and print to a fixed point.
fn check(s: &str) {
    match text::parse(s) {
        Ok(g) => {
            verify(&g).expect("a parsed graph verifies");
            let printed = text::print(&g);
            let again = text::parse(&printed).expect("printed text parses");
            assert_eq!(text::print(&again), printed);
        }
        Err(IrError::Parse { line, col, msg }) => {
            assert!(line >= 1 && col >= 1, "{line}:{col}: {msg}");
            assert!(line <= s.split('\n').count(), "{line}:{col}: {msg}");
            assert!(!msg.is_empty());
        }
        Err(e) => panic!("not a parse error: {e:?}"),
    }
}

#[test]
fn seed_text_is_valid() {
    let g = text::parse(SEED).unwrap();
    verify(&g).unwrap();
    check(SEED);
}

/// Chars a mutation inserts: the grammar's punctuation, name chars, quotes, escapes, whitespace and
/// multi-byte chars (columns count chars, not bytes).
const ALPHABET: &[char] = &[
    '%', '@', '=', '(', ')', '{', '}', '[', ']', ',', ':', '#', '"', '\\', ' ', '\n', '\t', '\r',
    '0', '1', '9', 'a', 'e', 'f', 'x', '_', '.', '-', '+', 'α', '\u{2028}', '$',
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    Insert(Index, char),
    Replace(Index, char),
    /// Duplicate or drop a whole line.
    DupLine(Index),
    DropLine(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ch = prop::sample::select(ALPHABET);
    prop_oneof![
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), ch.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        (any::<Index>(), ch).prop_map(|(i, c)| Mutation::Replace(i, c)),
        any::<Index>().prop_map(Mutation::DupLine),
        any::<Index>().prop_map(Mutation::DropLine),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in muts {
        match m {
            Mutation::Delete(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Mutation::Insert(i, c) => {
                let at = i.index(chars.len() + 1);
                chars.insert(at, *c);
            }
            Mutation::Replace(i, c) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = *c;
            }
            Mutation::DupLine(i) | Mutation::DropLine(i) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let at = i.index(lines.len());
                if matches!(m, Mutation::DupLine(_)) {
                    lines.insert(at, lines[at]);
                } else {
                    lines.remove(at);
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check(&s);
    }

    #[test]
    fn token_soup_never_panics(s in "[%@a-z0-9_.,:=(){}\\[\\]\" \n#\\\\-]{0,300}") {
        check(&s);
    }

    #[test]
    fn mutated_valid_text_never_panics(muts in prop::collection::vec(mutation(), 1..6)) {
        check(&apply(SEED, &muts));
    }
}

#[test]
fn every_single_char_deletion_of_the_seed_is_handled() {
    let chars: Vec<char> = SEED.chars().collect();
    for i in 0..chars.len() {
        let mut c = chars.clone();
        c.remove(i);
        check(&c.into_iter().collect::<String>());
    }
}
