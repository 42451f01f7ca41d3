//! A smoke run of every scenario with tiny numbers, so the load generator
//! does not rot. It asserts that work happened, never how fast.

use std::process::Command;

fn run(args: &[&str]) -> (String, serde_json::Value) {
    let json = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["--in-process", "--json"])
        .arg(json.path())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    (stdout, report)
}

#[test]
fn every_scenario_runs_and_reports() {
    let (table, r) = run(&[
        "--scenario",
        "direct",
        "--connections",
        "4",
        "--duration",
        "1",
        "--window",
        "4",
    ]);
    assert!(table.contains("acked sends/s"), "{table}");
    let acked = r["chat"]["acked"].as_u64().unwrap();
    assert!(
        acked > 0 && r["chat"]["delivered"].as_u64().unwrap() == acked,
        "{r}"
    );
    assert_eq!(r["chat"]["errors"], 0);

    let (_, r) = run(&[
        "--scenario",
        "group",
        "--members",
        "5",
        "--rate",
        "20",
        "--duration",
        "1",
    ]);
    assert!(r["group"]["messages"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["group"]["incomplete"], 0, "{r}");

    let (_, r) = run(&["--scenario", "storm", "--clients", "20", "--missed", "3"]);
    assert_eq!(r["storm"]["messages_synced"], 60, "{r}");

    let (_, r) = run(&["--scenario", "idle", "--connections", "50"]);
    assert_eq!(r["idle"]["connections"], 50, "{r}");
}
