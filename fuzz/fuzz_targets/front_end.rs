//! Any bytes as a manifest file: parse, decode, render every diagnostic, and read back
//! what the printer writes. The body is `policy_lang::fuzzing::front_end`, which
//! `policy-lang/tests/fuzz_corpus.rs` replays over the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| policy_lang::fuzzing::front_end(data));
