//! The stack benchmark (`benches/stack/run.sh`) is not run by the tests: it needs root,
//! takes minutes and measures rather than checks. Only its argument parsing is checked
//! here, with `--check-args`, which validates everything, prints the plan and exits before
//! it looks for tools or privileges.

use std::process::{Command, Output};

fn run_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/stack/run.sh"))
        .args(args)
        .output()
        .expect("running bash benches/stack/run.sh")
}

#[test]
fn check_args_prints_the_plan_of_a_quick_run() {
    let out = run_sh(&["--check-args", "--quick", "--tools", "iptables,policyc"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tools iptables,policyc; rule counts 0,100,1000;"), "{stdout}");
}

#[test]
fn rejects_unknown_arguments_and_bad_lists() {
    for args in [
        &["--check-args", "--bogus"][..],
        &["--check-args", "--sizes", "100,many"],
        &["--check-args", "--tools", "iptables,pf"],
        &["--check-args", "--sizes", "200000"],
        &["--check-args", "--seconds", "0"],
        &["--check-args", "--reps"],
    ] {
        let out = run_sh(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} must be a usage error");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("run.sh: "),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
