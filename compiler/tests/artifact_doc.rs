//! docs/artifact-format.md describes the format this build writes: its stated version is
//! `FORMAT_VERSION`, and its worked example is the encoding of the empty artifact, byte
//! for byte, except the ABI hash and the checksum that follows from it (the page says
//! those change with the map layouts).

use std::path::Path;

use compiler::artifact::{Artifact, FORMAT_VERSION};

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/artifact-format.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The bytes of the `hexdump -C` style block after the worked example's heading.
fn worked_example(doc: &str) -> Vec<u8> {
    let section = doc.split("## Worked example").nth(1).expect("a worked example section");
    let block = section.split("```text").nth(1).and_then(|b| b.split("```").next());
    let mut bytes = Vec::new();
    for line in block.expect("a fenced hex dump").lines().filter(|l| !l.trim().is_empty()) {
        // `00000010  9f 11 ... 00  |....|`: the offset, 16 bytes, then the text column.
        let hex = line.split('|').next().unwrap_or_default();
        let mut fields = hex.split_whitespace();
        let offset = usize::from_str_radix(fields.next().unwrap_or_default(), 16);
        assert_eq!(offset, Ok(bytes.len()), "offset of line `{line}`");
        bytes.extend(fields.map(|b| u8::from_str_radix(b, 16).expect("a hex byte")));
    }
    bytes
}

#[test]
fn the_worked_example_is_the_encoded_empty_artifact() {
    let mut documented = worked_example(&doc());
    let mut encoded = Artifact::default().encode();
    assert_eq!(documented.len(), encoded.len(), "the example's length");

    // ABI hash (bytes 12..20) and checksum (the last 32) follow the header's text.
    let checksum = encoded.len() - 32;
    for bytes in [&mut documented, &mut encoded] {
        bytes[12..20].fill(0);
        bytes[checksum..].fill(0);
    }
    assert_eq!(documented, encoded);
}

#[test]
fn the_page_states_this_builds_format_version() {
    let doc = doc();
    let stated = format!("This page describes format version {FORMAT_VERSION} byte by byte");
    assert!(doc.contains(&stated), "docs/artifact-format.md must say `{stated}`");
    assert!(doc.contains(&format!("format version: u16, {FORMAT_VERSION}")));
}
