//! What the tests of the `policyc` binary share: running it from the repository root.

#![allow(dead_code, reason = "each test file uses a different part of this module")]

use std::process::{Command, Output};

/// Runs `policyc` with `args` from the repository root, so fixture paths are relative.
pub fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running policyc")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
