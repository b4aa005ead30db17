//! Any bytes as a map-image artifact, as given and with the checksum recomputed. The
//! body is `compiler::fuzzing::artifact_decode`, which `compiler/tests/fuzz_corpus.rs`
//! replays over the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| compiler::fuzzing::artifact_decode(data));
