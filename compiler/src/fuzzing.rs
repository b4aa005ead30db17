//! The body of the `artifact_decode` fuzz target in `fuzz/`, kept in the library so
//! that the fuzzer and the corpus replay in `tests/fuzz_corpus.rs` run the same code.

use sha2::{Digest, Sha256};

use crate::artifact::Artifact;

/// Length of the SHA-256 that ends every artifact.
const CHECKSUM_LEN: usize = 32;

/// Decodes `data` as an artifact, and again with its trailing checksum recomputed.
///
/// The second pass is what makes fuzzing the decoder worthwhile: a mutation almost
/// never keeps the SHA-256 right, so without it every input would stop at the checksum
/// test and the section decoders behind it would never run. Whatever decodes must
/// encode to bytes that decode to the same artifact in canonical order, and encoding
/// that again must give the same bytes.
pub fn artifact_decode(data: &[u8]) {
    check_round_trip(data);
    if data.len() >= CHECKSUM_LEN {
        check_round_trip(&resealed(data));
    }
}

/// `data` with its last 32 bytes replaced by the SHA-256 of the rest.
pub fn resealed(data: &[u8]) -> Vec<u8> {
    let content = data.len().saturating_sub(CHECKSUM_LEN);
    let mut out = data[..content].to_vec();
    out.extend_from_slice(&Sha256::digest(&out));
    out
}

fn check_round_trip(bytes: &[u8]) {
    let Ok(artifact) = Artifact::decode(bytes) else { return };
    let encoded = artifact.encode();
    let decoded = Artifact::decode(&encoded)
        .unwrap_or_else(|e| panic!("a re-encoded artifact does not decode: {e}"));
    let mut canonical = artifact;
    canonical.normalize();
    assert_eq!(decoded, canonical, "decode(encode(a)) is not a in canonical order");
    assert!(decoded.encode() == encoded, "encoding a decoded artifact changes its bytes");
}
