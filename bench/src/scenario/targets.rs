//! `targets`: the targets of docs/benchmarks.md ("Against the
//! targets") from one run. Each part is this binary run again as its own
//! scenario (its own fresh server, its own pinning), one after the other on
//! the same build; their JSON reports are read back and one table says each
//! figure and whether it meets its target.
//!
//! The parts: `sweep` (p99 at 10,000 messages/s, CPU per message there
//! against its cheapest step, and the saturation rate), `direct` at half
//! the saturation the sweep found, `direct-vs-mosquitto` (per CPU-second
//! and raw; `--pin` goes to this part), `group` (`--members` at
//! `--group-rate`), `idle` (`--idle-connections`, warm), `storm`
//! (`--storm-clients` × `--missed`) and `disk` (a fill flat out for
//! `--duration`: disk per message). With several `--engine`s, all of them
//! on each engine in turn, one table.

use crate::args::Args;
use crate::scenario::{or_na, Report};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;

/// The offered rate of the first latency target.
const TEN_K: u64 = 10_000;

/// How a figure must compare with its target's limit.
#[derive(Clone, Copy)]
enum Cmp {
    Below,
    AtMost,
    AtLeast,
}

impl Cmp {
    fn met(self, v: f64, limit: f64) -> bool {
        match self {
            Cmp::Below => v < limit,
            Cmp::AtMost => v <= limit,
            Cmp::AtLeast => v >= limit,
        }
    }

    fn sign(self) -> &'static str {
        match self {
            Cmp::Below => "<",
            Cmp::AtMost => "≤",
            Cmp::AtLeast => "≥",
        }
    }
}

/// One target, as the issue that set it words it.
struct Target {
    name: &'static str,
    limit: f64,
    cmp: Cmp,
    unit: &'static str,
}

const P99_AT_10K: Target = Target {
    name: "p99 send→deliver at 10,000 msg/s",
    limit: 5.0,
    cmp: Cmp::Below,
    unit: "ms",
};
const P99_AT_HALF: Target = Target {
    name: "p99 send→deliver at half of saturation",
    limit: 10.0,
    cmp: Cmp::Below,
    unit: "ms",
};
const PER_CPU: Target = Target {
    name: "messages per server CPU-second, ours / Mosquitto's",
    limit: 1.0,
    cmp: Cmp::AtLeast,
    unit: "×",
};
const RAW: Target = Target {
    name: "durable messages/s, ours / Mosquitto's",
    limit: 1.5,
    cmp: Cmp::AtLeast,
    unit: "×",
};
const FAN_OUT: Target = Target {
    name: "group fan-out: p99 to the last member",
    limit: 10.0,
    cmp: Cmp::Below,
    unit: "ms",
};
const IDLE: Target = Target {
    name: "RSS per idle connection, warm (after a sync and a message)",
    limit: 5.0,
    cmp: Cmp::AtMost,
    unit: "KB",
};
const CPU_AT_10K: Target = Target {
    name: "server CPU per message at 10,000 msg/s, over flat out",
    limit: 2.0,
    cmp: Cmp::AtMost,
    unit: "×",
};
const DISK: Target = Target {
    name: "disk per stored message, over 2 × text + 100 B",
    limit: 1.0,
    cmp: Cmp::AtMost,
    unit: "×",
};
const STORM: Target = Target {
    name: "reconnect storm: every client synced",
    limit: 3.0,
    cmp: Cmp::Below,
    unit: "s",
};

/// Runs this binary as `args` with `--json` into `dir`; its report.
async fn part(
    run: &Args,
    engine: &str,
    dir: &Path,
    name: &str,
    args: Vec<String>,
) -> anyhow::Result<Value> {
    let name = format!("{engine}-{name}");
    let json = dir.join(format!("{name}.json"));
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(&args)
        .args(["--engine", engine])
        .arg("--json")
        .arg(&json);
    if let Some(bin) = &run.server_bin {
        cmd.arg("--server-bin").arg(bin);
    }
    if run.in_process {
        cmd.arg("--in-process");
    }
    eprintln!(
        "targets: {name}: chat-bench {} --engine {engine}",
        args.join(" ")
    );
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        anyhow::bail!(
            "the {name} part failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!();
    Ok(serde_json::from_str(&std::fs::read_to_string(&json)?)?)
}

fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

/// The value at `path` in `report`.
fn at<'v>(report: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(report, |v, k| v.get(k))
}

/// The figure at `path` in `report`, a number.
fn num(report: &Value, path: &[&str]) -> Option<f64> {
    at(report, path)?.as_f64()
}

/// A row and a JSON entry for target `t` measured as `value` (`None`: not
/// measured in this run; `detail` says why). `spoiled`: what makes the
/// figure no pass whatever its value (messages lost, errors).
fn judge(
    out: &mut Report,
    engine: &str,
    t: &Target,
    value: Option<f64>,
    spoiled: Option<String>,
    detail: String,
) -> Value {
    let met = value.map(|v| t.cmp.met(v, t.limit) && spoiled.is_none());
    let detail = match spoiled {
        Some(why) => format!("{why}; {detail}"),
        None => detail,
    };
    let limit = match t.unit {
        "×" => format!("{} {}×", t.cmp.sign(), t.limit),
        unit => format!("{} {} {unit}", t.cmp.sign(), t.limit),
    };
    let figure = match value {
        Some(v) if t.unit == "×" => format!("{v:.2}×"),
        Some(v) => format!("{v:.2} {}", t.unit),
        None => "n/a".into(),
    };
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    };
    out.rows.push((
        format!("{engine}: {} ({limit})", t.name),
        format!("{figure}: {verdict} ({detail})"),
    ));
    json!({"engine": engine, "target": t.name, "limit": t.limit, "comparison": t.cmp.sign(), "unit": t.unit,
           "measured": value, "met": met, "detail": detail})
}

/// A 1:1 load part's flags: `scenario` over `c` connections for `d`
/// seconds each, with the run's text size and window.
fn load_args(scenario: &str, c: &str, d: &str, args: &Args) -> Vec<String> {
    vec![
        s("--scenario"),
        s(scenario),
        s("--connections"),
        s(c),
        s("--duration"),
        s(d),
        s("--text-bytes"),
        s(args.text_bytes),
        s("--window"),
        s(args.window),
    ]
}

/// What spoils a load figure at `path` in `report`: errors, or acked
/// messages not all delivered.
fn lossy(report: &Value, path: &[&str]) -> Option<String> {
    let r = at(report, path)?;
    let (acked, delivered, errors) = (
        r["acked"].as_u64().unwrap_or(0),
        r["delivered"].as_u64().unwrap_or(0),
        r["errors"].as_u64().unwrap_or(0),
    );
    (errors > 0 || delivered < acked)
        .then(|| format!("{errors} errors, {delivered} of {acked} acked messages delivered"))
}

pub async fn run(args: &Args, out: &mut Report) -> anyhow::Result<()> {
    // Each part starts its own server and load; these would not reach it.
    for (set, flag) in [
        (args.url.is_some(), "--url"),
        (args.nagle, "--nagle"),
        (args.warm, "--warm"),
        (args.rate > 0, "--rate"),
    ] {
        if set {
            anyhow::bail!("--scenario targets does not take {flag}: each part sets its own");
        }
    }
    let dir = tempfile::tempdir()?;
    let mut judged = Vec::new();
    let mut parts = serde_json::Map::new();
    // Each engine's parts one after the other, on the same build.
    for engine in &args.engine {
        let p = run_engine(args, engine, dir.path(), out, &mut judged).await?;
        parts.insert(engine.clone(), p);
    }
    let met = judged.iter().filter(|j| j["met"] == true).count();
    out.rows
        .push(("targets met".into(), format!("{met} of {}", judged.len())));
    out.report["targets"] = Value::Array(judged);
    out.report["parts"] = Value::Object(parts);
    if args.in_process {
        out.rows.push((
            "note".into(),
            "--in-process: CPU and RSS figures include the load generator".into(),
        ));
    }
    Ok(())
}

/// The parts on one engine: their reports, and each target judged into
/// `judged`.
async fn run_engine(
    args: &Args,
    engine: &str,
    dir: &Path,
    out: &mut Report,
    judged: &mut Vec<Value>,
) -> anyhow::Result<Value> {
    let (c, d) = (s(args.connections), s(args.duration));

    // The latency curve: p99 at 10,000/s, and where it saturates.
    let mut sweep = load_args("sweep", &c, &d, args);
    sweep.extend([
        s("--svg"),
        dir.join(format!("{engine}-curve.svg"))
            .display()
            .to_string(),
    ]);
    if !args.rates.is_empty() {
        let rates: Vec<String> = args.rates.iter().map(u64::to_string).collect();
        sweep.extend([s("--rates"), rates.join(",")]);
    }
    if args.max_rate > 0 {
        sweep.extend([s("--max-rate"), s(args.max_rate)]);
    }
    let sweep = part(args, engine, dir, "sweep", sweep).await?;
    let steps = sweep["sweep"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let step_10k = steps
        .iter()
        .find(|st| st["offered_per_sec"].as_u64() == Some(TEN_K));
    let at_10k = step_10k.and_then(|st| num(st, &["deliver", "p99_ms"]));
    judged.push(judge(
        out,
        engine,
        &P99_AT_10K,
        at_10k,
        step_10k.and_then(|st| lossy(st, &[])),
        if at_10k.is_some() {
            "the sweep's 10,000/s step, unpinned".into()
        } else {
            "the sweep had no 10,000/s step".into()
        },
    ));
    // CPU per message at 10,000/s against the sweep's cheapest step (its
    // most messages per CPU-second: flat out), both unpinned.
    let per_cpu = |st: &Value| st["msgs_per_server_cpu_sec"].as_f64();
    let cheapest = steps.iter().filter_map(per_cpu).fold(0.0, f64::max);
    let ratio = step_10k
        .and_then(per_cpu)
        .filter(|v| *v > 0.0)
        .map(|v| cheapest / v);
    judged.push(judge(
        out,
        engine,
        &CPU_AT_10K,
        ratio,
        None,
        format!(
            "{} µs at 10,000/s, {} µs at the sweep's cheapest step",
            or_na(step_10k.and_then(per_cpu).map(|v| 1e6 / v), 1),
            or_na((cheapest > 0.0).then(|| 1e6 / cheapest), 1)
        ),
    ));
    // Saturated: the best rate achieved, once some step fell short of its
    // offer (else the sweep never found it).
    let saturated = steps.iter().any(|st| st["saturated"] == true);
    let saturation = steps
        .iter()
        .filter_map(|st| st["acked_per_sec"].as_f64())
        .fold(0.0, f64::max);
    out.report["saturation_acked_per_sec"] = json!(saturated.then_some(saturation));

    // Half of that, as its own run.
    let half = (saturation / 2.0).round() as u64;
    let half_run = if saturated {
        let mut a = load_args("direct", &c, &d, args);
        a.extend([s("--rate"), s(half.max(1))]);
        Some(part(args, engine, dir, "half", a).await?)
    } else {
        None
    };
    judged.push(match &half_run {
        Some(r) => judge(
            out,
            engine,
            &P99_AT_HALF,
            num(r, &["chat", "deliver", "p99_ms"]),
            lossy(r, &["chat"]),
            format!("{half}/s, half of the sweep's best {saturation:.0} acked/s, unpinned"),
        ),
        None => judge(
            out,
            engine,
            &P99_AT_HALF,
            None,
            None,
            "the sweep never saturated: no step fell below 0.9 × its offer".into(),
        ),
    });

    // Against Mosquitto, in the same part.
    let versus = if crate::procstat::have_mosquitto() {
        let mut a = load_args("direct-vs-mosquitto", &c, &d, args);
        if args.pin {
            a.push(s("--pin"));
        }
        Some(part(args, engine, dir, "mosquitto", a).await?)
    } else {
        None
    };
    // "ours vs theirs" of `key`, and the part's pinning.
    let versus_detail = |key: &str, what: &str| match &versus {
        Some(v) => format!(
            "{} vs {} {what}; pinning: {}",
            v["chat"][key].as_f64().unwrap_or(0.0) as u64,
            v["mosquitto"][key].as_f64().unwrap_or(0.0) as u64,
            v["pinning"].as_str().unwrap_or("unknown")
        ),
        None => "mosquitto is not installed (apt-get install mosquitto)".into(),
    };
    let versus_ratio = |key: &str| versus.as_ref().and_then(|v| num(v, &[key]));
    let spoiled = versus.as_ref().and_then(|v| lossy(v, &["chat"]));
    judged.push(judge(
        out,
        engine,
        &PER_CPU,
        versus_ratio("ratio_per_cpu_ours_to_mosquitto"),
        spoiled.clone(),
        versus_detail("msgs_per_server_cpu_sec", "delivered per CPU-second"),
    ));
    judged.push(judge(
        out,
        engine,
        &RAW,
        versus_ratio("ratio_ours_to_mosquitto"),
        spoiled,
        versus_detail("acked_per_sec", "acked/s"),
    ));

    // Fan-out to a group.
    let group = part(
        args,
        engine,
        dir,
        "group",
        vec![
            s("--scenario"),
            s("group"),
            s("--members"),
            s(args.members),
            s("--rate"),
            s(args.group_rate),
            s("--duration"),
            d.clone(),
            s("--text-bytes"),
            s(args.text_bytes),
        ],
    )
    .await?;
    let g = &group["group"];
    let (incomplete, errors) = (
        g["incomplete"].as_u64().unwrap_or(0),
        g["errors"].as_u64().unwrap_or(0),
    );
    judged.push(judge(
        out,
        engine,
        &FAN_OUT,
        num(g, &["to_all_members", "p99_ms"]),
        (incomplete > 0 || errors > 0)
            .then(|| format!("{incomplete} messages not seen by every member, {errors} errors")),
        format!("{} members, {} messages/s", args.members, args.group_rate),
    ));

    // Idle connections.
    let idle = part(
        args,
        engine,
        dir,
        "idle",
        vec![
            s("--scenario"),
            s("idle"),
            s("--connections"),
            s(args.idle_connections),
            s("--warm"),
        ],
    )
    .await?;
    judged.push(judge(
        out,
        engine,
        &IDLE,
        num(&idle, &["idle", "rss_per_connection_kb"]),
        None,
        format!(
            "{} warm connections",
            idle["idle"]["connections"].as_u64().unwrap_or(0)
        ),
    ));

    // The reconnect storm.
    let storm = part(
        args,
        engine,
        dir,
        "storm",
        vec![
            s("--scenario"),
            s("storm"),
            s("--clients"),
            s(args.storm_clients),
            s("--missed"),
            s(args.missed),
        ],
    )
    .await?;
    judged.push(judge(
        out,
        engine,
        &STORM,
        num(&storm, &["storm", "wall_secs"]),
        None,
        format!(
            "{} clients × {} missed, one node",
            args.storm_clients, args.missed
        ),
    ));

    // Disk: a fill flat out for --duration.
    let disk = part(
        args,
        engine,
        dir,
        "disk",
        vec![
            s("--scenario"),
            s("disk"),
            s("--connections"),
            c.clone(),
            s("--duration"),
            d.clone(),
            s("--text-bytes"),
            s(args.text_bytes),
            s("--rounds"),
            s(0),
        ],
    )
    .await?;
    let budget = 2.0 * args.text_bytes as f64 + 100.0;
    let per_msg = num(&disk, &["disk", "disk_bytes_per_msg"]);
    judged.push(judge(
        out,
        engine,
        &DISK,
        per_msg.map(|b| b / budget),
        None,
        format!(
            "{} B per message, {budget:.0} B allowed; {} messages",
            or_na(per_msg, 0),
            num(&disk, &["disk", "fill", "acked"]).unwrap_or(0.0)
        ),
    ));

    Ok(json!({
        "sweep": sweep, "half": half_run, "mosquitto": versus, "group": group, "idle": idle,
        "storm": storm, "disk": disk,
    }))
}
