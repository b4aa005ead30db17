//! Replays the fuzz corpus of the `artifact_decode` target as an ordinary test, through
//! the function the fuzz target calls, so that every input the fuzzer once found
//! interesting (including past crashes) is checked by `cargo test` on stable Rust.

use std::path::PathBuf;

#[test]
fn artifact_decode_corpus_replays_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/artifact_decode");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());

    for path in files {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| compiler::fuzzing::artifact_decode(&bytes)).is_err() {
            panic!("artifact_decode panicked on {}", path.display());
        }
    }
}

/// The corpus must hold a real artifact that decodes, or the target only ever sees
/// the error paths.
#[test]
fn artifact_decode_corpus_holds_a_valid_artifact() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/artifact_decode/demo.artifact");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if let Err(e) = compiler::artifact::Artifact::decode(&bytes) {
        panic!(
            "{} no longer decodes ({e}); after a format or datapath change, regenerate it with \
             `cargo run --bin policyc -- compile fixtures/demo -o {}`",
            path.display(),
            "fuzz/corpus/artifact_decode/demo.artifact"
        );
    }
}
