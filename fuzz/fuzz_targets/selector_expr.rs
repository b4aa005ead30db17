//! Any bytes as a command-line label selector. The body is
//! `policy_lang::fuzzing::selector_expr`, which `policy-lang/tests/fuzz_corpus.rs`
//! replays over the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| policy_lang::fuzzing::selector_expr(data));
