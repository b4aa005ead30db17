//! The datapath ABI hash: a fingerprint of `c/policyc_maps.h` that artifacts carry, so a
//! node refuses an artifact compiled for other map layouts.
//!
//! The header is hashed as a stream of C tokens, with comments and white space dropped:
//! rewording a comment or reformatting keeps the hash, while any change to a struct, a
//! constant or a capacity changes it.

/// The header the hash is computed from.
pub const MAPS_HEADER: &str = include_str!("../c/policyc_maps.h");

/// FNV-1a (64 bit) over the header's tokens, each followed by a NUL separator.
pub fn abi_hash() -> u64 {
    hash_tokens(MAPS_HEADER)
}

fn hash_tokens(source: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for token in tokens(source) {
        for byte in token.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// Splits C source into identifier/number runs and single punctuation characters,
/// skipping comments and white space. Good enough for a header of structs and defines;
/// it is a fingerprint, not a parser.
fn tokens(source: &str) -> impl Iterator<Item = &str> {
    let bytes = source.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let rest = &bytes[at..];
            if rest.is_empty() {
                return None;
            }
            if rest.starts_with(b"/*") {
                at += rest.windows(2).position(|w| w == b"*/").map_or(rest.len(), |p| p + 2);
            } else if rest.starts_with(b"//") {
                at += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            } else if rest[0].is_ascii_whitespace() {
                at += 1;
            } else if !rest[0].is_ascii() {
                // A non-ASCII character outside a comment is one token, whole, so that
                // slicing never splits it.
                let len = source[at..].chars().next().map_or(1, char::len_utf8);
                let token = &source[at..at + len];
                at += len;
                return Some(token);
            } else {
                let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
                let len =
                    if word(&rest[0]) { rest.iter().take_while(|b| word(b)).count() } else { 1 };
                let token = &source[at..at + len];
                at += len;
                return Some(token);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_spacing_do_not_change_the_hash() {
        let a = "struct x {\n\t__u32 a; /* one */\n};\n#define N 4 // four";
        let b = "struct x { __u32 a; /* another comment */ };\n#define N 4";
        assert_eq!(hash_tokens(a), hash_tokens(b));
    }

    #[test]
    fn a_changed_field_or_constant_changes_the_hash() {
        let base = "struct x { __u32 a; }; #define N 4";
        assert_ne!(hash_tokens(base), hash_tokens("struct x { __u16 a; }; #define N 4"));
        assert_ne!(hash_tokens(base), hash_tokens("struct x { __u32 a; }; #define N 5"));
        assert_ne!(hash_tokens(base), hash_tokens("struct x { __u32 ab; }; #define N 4"));
    }

    #[test]
    fn non_ascii_text_outside_comments_does_not_panic() {
        assert_ne!(hash_tokens("#define N 4 /* é */ é"), hash_tokens("#define N 4"));
    }

    #[test]
    fn the_shipped_header_has_a_hash() {
        assert_ne!(abi_hash(), hash_tokens(""));
    }
}
