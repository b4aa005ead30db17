//! Replays the fuzz corpora of the front-end targets as ordinary tests, through the
//! same functions the fuzz targets call, so that every input the fuzzer once found
//! interesting (including past crashes) is checked by `cargo test` on stable Rust.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// Runs `body` on every file, naming the file that panics.
fn replay(target: &str, body: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        if std::panic::catch_unwind(|| body(&bytes)).is_err() {
            panic!("{target} panicked on {}", path.display());
        }
    }
}

#[test]
fn front_end_corpus_replays_cleanly() {
    replay("front_end", policy_lang::fuzzing::front_end);
}

#[test]
fn selector_expr_corpus_replays_cleanly() {
    replay("selector_expr", policy_lang::fuzzing::selector_expr);
}
