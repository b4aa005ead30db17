//! What the integration tests of this crate share.

/// Codes that `policyc-compiler` emits, after the front end: from `compile`
/// (compiler/src/solve.rs) and from its lints (compiler/src/lint.rs). This crate cannot
/// call the compiler, so its tests check only that the front end reports nothing for
/// the inputs that trigger them; the compiler's tests check the codes themselves.
pub const COMPILER_CODES: &[&str] = &[
    "PL0022", "PL0031", "PL0033", "PL0200", "PL0201", "PL0202", "PL0203", "PL0204", "PL0205",
    "PL0300",
];
