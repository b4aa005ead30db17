//! The harness of the kernel differential test: the datapath object loaded into the
//! running kernel (`kernel`), frames built from flow descriptions (`packet`), the check of
//! one flow against the reference evaluator (`judge`), and its two sources of flows: the
//! conformance scenarios (`conformance`) and generated clusters (`generate`). The checks
//! of single behaviours (`conntrack`, `fragments`, `malformed`) run on a small cluster of
//! their own (`fixture`).

pub mod conformance;
pub mod conntrack;
pub mod fixture;
pub mod fragments;
pub mod generate;
pub mod host;
pub mod judge;
pub mod kernel;
pub mod malformed;
pub mod packet;
pub mod pins;

#[path = "../../../tests/kernel/privileges.rs"]
mod privileges;

/// Whether this machine can load the datapath (see `privileges`).
pub fn available() -> bool {
    privileges::available("kernel differential test", &[])
}
