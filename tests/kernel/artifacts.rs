//! The two artifacts the update tests switch between, compiled from `fixtures/e2e`.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::must;

pub const WEB: &str = "prod/web";
pub const CLIENT: &str = "prod/client";
pub const INTRUDER: &str = "dev/intruder";
/// The pods of `fixtures/e2e/cluster.yaml`: endpoint, tag for names, address.
pub const PODS: [(&str, &str, [u8; 4]); 3] = [
    (WEB, "w", [198, 18, 0, 10]),
    (CLIENT, "c", [198, 18, 0, 11]),
    (INTRUDER, "i", [198, 18, 0, 12]),
];

/// client -> web UDP ports: allowed by both artifacts, by neither, and by `wide` only.
pub const BOTH: u16 = 5353;
pub const NEITHER: u16 = 6000;
pub const WIDE_ONLY: u16 = 7000;

/// Addresses the wide artifact allows into web, each its own CIDR identity with its own
/// policy entries: enough to make a switch write and delete thousands of entries.
pub const EXTRA_PEERS: u32 = 1500;

/// Compiles `fixtures/e2e` (narrow) and the same plus a policy that lets UDP 7000 from
/// the client into web and allows web's ingress from many extra addresses (wide), with
/// one lock file so both number identities alike.
pub fn compile_artifacts(work: &Path) -> (PathBuf, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/e2e");
    let wide_dir = work.join("wide");
    fs::create_dir_all(&wide_dir).expect("creating the wide input directory");
    for file in ["cluster.yaml", "policies.yaml"] {
        fs::copy(fixtures.join(file), wide_dir.join(file)).expect("copying the fixture");
    }
    let mut extra = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web-wide\n  \
         namespace: prod\nspec:\n  podSelector:\n    matchLabels:\n      app: web\n  \
         ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              \
         app: client\n      ports:\n        - protocol: UDP\n          port: 7000\n    - from:\n",
    );
    for i in 0..EXTRA_PEERS {
        let _ = writeln!(
            extra,
            "        - ipBlock:\n            cidr: 10.{}.{}.1/32",
            100 + i / 250,
            i % 250
        );
    }
    extra.push_str("      ports:\n        - protocol: TCP\n          port: 443\n        - protocol: UDP\n          port: 443\n");
    fs::write(wide_dir.join("wide.yaml"), extra).expect("writing the wide policy");

    let lock = work.join("identities.lock");
    let compile = |input: &Path, output: PathBuf| {
        must(
            Command::new(env!("CARGO_BIN_EXE_policyc"))
                .arg("compile")
                .arg(input)
                .arg("-o")
                .arg(&output)
                .arg("--lock")
                .arg(&lock),
        );
        output
    };
    (
        compile(&fixtures, work.join("narrow.artifact")),
        compile(&wide_dir, work.join("wide.artifact")),
    )
}
