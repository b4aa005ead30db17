//! `policyc connectivity` on the demo: one snapshot per output format, under
//! snapshots/connectivity/, and the file output.

mod support;

use support::policyc;

fn connectivity(format: &str) -> String {
    let out = policyc(&["connectivity", "fixtures/demo", "--format", format]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn every_format_of_the_demo_matches_its_snapshot() {
    for format in ["txt", "json", "csv", "md", "dot"] {
        let text = connectivity(format);
        insta::with_settings!({
            snapshot_path => "../snapshots/connectivity",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("demo-{format}"), text);
        });
    }
}

#[test]
fn json_output_follows_the_documented_schema() {
    let value: serde_json::Value = serde_json::from_str(&connectivity("json")).expect("JSON");
    assert_eq!(value["schema"], "policyc.connectivity/v1");
    let connections = value["connections"].as_array().unwrap();
    let cart_to_postgres = connections
        .iter()
        .find(|c| c["from"] == "Pod shop/cart-5c8d7f9b4-fghij" && c["to"] == "Pod shop/postgres-0")
        .expect("cart reaches postgres");
    assert_eq!(cart_to_postgres["all"]["text"], "TCP 5432");
    assert_eq!(cart_to_postgres["all"]["protocols"][0]["ports"], serde_json::json!([[5432, 5432]]));
    assert_eq!(cart_to_postgres["some"]["protocols"], serde_json::json!([]));
    let groups = value["groups"].as_array().unwrap();
    let world = groups.iter().find(|g| g["kind"] == "world").unwrap();
    assert_eq!(world["excludes"], serde_json::json!(["203.0.113.0/24"]));
}

#[test]
fn output_file_holds_what_stdout_would() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("connectivity-{}.csv", std::process::id()));
    let out = policyc(&[
        "connectivity",
        "fixtures/demo",
        "--format",
        "csv",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), connectivity("csv"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn inputs_with_errors_fail_with_their_diagnostics() {
    let out = policyc(&["connectivity", "fixtures/invalid/PL0013-port-out-of-range.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[PL0013]"));
}
