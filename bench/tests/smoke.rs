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
    let messages = r["group"]["messages"].as_u64().unwrap();
    assert!(messages > 0, "{r}");
    assert_eq!(r["group"]["incomplete"], 0, "{r}");
    // The sender's acks are counted now (they were 0 throughout), and every
    // message reached the 4 other members.
    assert_eq!(r["group"]["acked"].as_u64(), Some(messages), "{r}");
    assert_eq!(r["group"]["errors"], 0, "{r}");
    assert_eq!(r["group"]["deliveries"].as_u64(), Some(messages * 4), "{r}");

    let (_, r) = run(&["--scenario", "storm", "--clients", "20", "--missed", "3"]);
    assert_eq!(r["storm"]["messages_synced"], 60, "{r}");

    let (_, r) = run(&["--scenario", "idle", "--connections", "50"]);
    assert_eq!(r["idle"]["connections"], 50, "{r}");
}

/// A two-step sweep: a table row, a JSON step and a curve per rate.
#[test]
fn a_sweep_reports_every_step_and_draws_the_curve() {
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("curve.svg");
    let svg_arg = svg_path.to_str().unwrap();
    let (table, r) = run(&[
        "--scenario",
        "sweep",
        "--rates",
        "200,400",
        "--duration",
        "1",
        "--connections",
        "4",
        "--svg",
        svg_arg,
        "--pin",
    ]);

    // The steps' table: one row per rate, in order (rows whose first cell is a number).
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| {
            l.strip_prefix("| ")
                .and_then(|rest| rest.split(" |").next())
                .is_some_and(|cell| cell.trim().parse::<u64>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].starts_with("| 200 |"), "{table}");
    assert!(rows[1].starts_with("| 400 |"), "{table}");
    assert!(table.contains("msgs per server CPU-s"), "{table}");

    // The JSON steps: the offered rates, and work done at each.
    let steps = r["sweep"]["steps"].as_array().expect("sweep.steps");
    assert_eq!(steps.len(), 2, "{r}");
    for (step, offered) in steps.iter().zip([200u64, 400]) {
        assert_eq!(step["offered_per_sec"].as_u64(), Some(offered), "{step}");
        let acked = step["acked"].as_u64().unwrap();
        assert!(acked > 0, "{step}");
        assert_eq!(step["delivered"].as_u64(), Some(acked), "{step}");
        assert_eq!(step["sent"].as_u64(), Some(acked), "{step}");
        assert_eq!(step["errors"], 0, "{step}");
        assert!(step["acked_in_window"].as_u64().unwrap() > 0, "{step}");
        assert!(step["deliver"]["count"].as_u64().unwrap() > 0, "{step}");
        assert!(step["ack"]["count"].as_u64().unwrap() > 0, "{step}");
        assert!(step["acked_per_sec"].as_f64().unwrap() > 0.0, "{step}");
        // The server's pid is known (this process, --in-process), so its
        // CPU time over the window is read: a number (maybe 0, never null).
        assert!(step["server_cpu_secs"].is_number(), "{step}");
        // Null when under one clock tick of CPU, but always reported.
        assert!(step.get("msgs_per_server_cpu_sec").is_some(), "{step}");
    }
    assert_eq!(r["sweep"]["stopped"], "every rate of --rates run", "{r}");
    // --in-process: nothing to pin, and the report says so.
    assert!(r["pinning"].as_str().unwrap().starts_with("none"), "{r}");

    // The SVG: a document with drawn lines and the three percentiles' legend.
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG was written");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("<path") || svg.contains("<polyline"), "{svg}");
    for label in ["p50", "p99", "p999"] {
        assert!(svg.contains(label), "{label} missing from the SVG");
    }
}

/// `targets` runs every part on each engine and judges all nine targets
/// for each, each measured (the Mosquitto ones only where Mosquitto is
/// installed), each figure the one its part reported.
#[test]
fn the_targets_run_measures_and_judges_all_nine_on_each_engine() {
    let (table, r) = run(&[
        "--scenario",
        "targets",
        "--engine",
        "redb,fjall",
        // The last rate is out of reach: the sweep saturates, so half of
        // saturation is measured too.
        "--rates",
        "200,10000,1000000",
        "--duration",
        "1",
        "--connections",
        "4",
        "--members",
        "5",
        "--group-rate",
        "20",
        "--idle-connections",
        "50",
        "--storm-clients",
        "20",
        "--missed",
        "2",
    ]);
    let mosquitto = Command::new("sh")
        .args(["-c", "command -v mosquitto"])
        .output()
        .unwrap()
        .status
        .success();
    let targets = r["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 18, "{r}");
    for t in targets {
        let against_mosquitto = t["target"].as_str().unwrap().contains("Mosquitto");
        if against_mosquitto && !mosquitto {
            assert!(t["measured"].is_null() && t["met"].is_null(), "{t}");
            continue;
        }
        let v = t["measured"].as_f64().unwrap_or_else(|| panic!("{t}"));
        assert!(v >= 0.0, "{t}");
        // The verdict follows from the figure and the limit.
        let limit = t["limit"].as_f64().unwrap();
        let met = match t["comparison"].as_str().unwrap() {
            "<" => v < limit,
            "≤" => v <= limit,
            _ => v >= limit,
        };
        assert_eq!(t["met"].as_bool(), Some(met), "{t}");
    }
    for (e, engine) in ["redb", "fjall"].into_iter().enumerate() {
        let parts = &r["parts"][engine];
        let mine = &targets[e * 9..(e + 1) * 9];
        assert!(mine.iter().all(|t| t["engine"] == engine), "{r}");
        let measured = |name: &str| {
            mine.iter()
                .find(|t| t["target"].as_str().unwrap().starts_with(name))
                .unwrap_or_else(|| panic!("no target {name}: {r}"))["measured"]
                .clone()
        };
        let steps = parts["sweep"]["sweep"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{r}");
        assert_eq!(steps[1]["offered_per_sec"], 10000, "{r}");
        assert_eq!(
            measured("p99 send→deliver at 10,000"),
            steps[1]["deliver"]["p99_ms"],
            "{r}"
        );
        assert_eq!(
            measured("p99 send→deliver at half"),
            parts["half"]["chat"]["deliver"]["p99_ms"],
            "{r}"
        );
        assert_eq!(
            measured("group fan-out"),
            parts["group"]["group"]["to_all_members"]["p99_ms"],
            "{r}"
        );
        assert_eq!(
            measured("RSS per idle connection"),
            parts["idle"]["idle"]["rss_per_connection_kb"],
            "{r}"
        );
        assert_eq!(
            measured("reconnect storm"),
            parts["storm"]["storm"]["wall_secs"],
            "{r}"
        );
        let per_msg = parts["disk"]["disk"]["disk_bytes_per_msg"]
            .as_f64()
            .unwrap();
        // (JSON's floats read back within a rounding.)
        let ratio = measured("disk per stored message").as_f64().unwrap();
        assert!((ratio - per_msg / 300.0).abs() < 1e-9, "{r}");
        // The CPU ratio: the sweep's cheapest step over its 10,000/s step.
        let per_cpu = |st: &serde_json::Value| st["msgs_per_server_cpu_sec"].as_f64().unwrap();
        let cheapest = steps.iter().map(per_cpu).fold(0.0, f64::max);
        let ratio = measured("server CPU per message at 10,000")
            .as_f64()
            .unwrap();
        assert!((ratio - cheapest / per_cpu(&steps[1])).abs() < 1e-9, "{r}");
        if mosquitto {
            assert_eq!(
                measured("messages per server CPU-second"),
                parts["mosquitto"]["ratio_per_cpu_ours_to_mosquitto"],
                "{r}"
            );
            assert_eq!(
                measured("durable messages/s"),
                parts["mosquitto"]["ratio_ours_to_mosquitto"],
                "{r}"
            );
        }
        assert_eq!(parts["idle"]["idle"]["connections"], 50, "{r}");
        assert_eq!(parts["disk"]["disk"]["engine"], engine, "{r}");
    }
    assert!(table.contains("targets met"), "{table}");
    assert!(
        table.contains("fjall: p99 send→deliver at 10,000 msg/s"),
        "{table}"
    );
}
