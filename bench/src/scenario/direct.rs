//! Scenarios `direct` and `direct-vs-mosquitto`: durable 1:1 throughput and
//! latency between pairs, optionally after the same load against Mosquitto.

use super::{cpu_rss, lat, or_na, per_cpu_sec, per_send, per_send_cell, Ctx, Report};
use crate::args::Scenario;
use crate::stats::{Field, Latency, Shown};
use crate::{chat, mqtt, procstat};
use serde_json::json;
use std::time::Instant;

pub const SHOWN: Shown = &[
    ("sent", Field::Sent),
    ("acked", Field::Acked),
    ("delivered", Field::Delivered),
    ("errors", Field::Errors),
];

pub async fn run(ctx: &Ctx, out: &mut Report) -> anyhow::Result<()> {
    let args = &ctx.args;
    let counters = &ctx.counters;
    let target = &ctx.target;
    let cfg = chat::DirectCfg {
        connections: args.connections,
        duration: ctx.duration,
        rate: args.rate,
        window: args.window,
        text_bytes: args.text_bytes,
        // A running server (--url) keeps earlier runs' users and
        // client_msg_ids: a fresh prefix per run meets none of them.
        users: match &args.url {
            Some(_) => format!(
                "u{}x",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default()
            ),
            None => "u".to_string(),
        },
        cpu_pid: None,
    };
    // (acked/s, delivered msgs per CPU-second) of Mosquitto.
    let mut theirs: Option<(f64, Option<f64>)> = None;
    if args.scenario == Scenario::DirectVsMosquitto {
        // Mosquitto is this process's child (not a daemon), so its
        // pid is the one to read in /proc; taskset execs it in place.
        let mq = procstat::spawn_mosquitto(ctx.pinning.server_cpu).await?;
        let port: u16 = mq.addr.rsplit(':').next().unwrap_or("0").parse()?;
        let before = procstat::sample(mq.pid());
        let t = Instant::now();
        // The shared counters, so the progress line shows this phase too.
        let s = mqtt::direct(
            "127.0.0.1",
            port,
            args.connections,
            ctx.duration,
            args.window,
            args.text_bytes,
            counters.clone(),
        )
        .await?;
        let after = procstat::sample(mq.pid());
        let secs = t
            .elapsed()
            .as_secs_f64()
            .min(args.duration + 0.5)
            .max(0.001);
        let (sent, acked, delivered, errors) = counters.get();
        counters.reset();
        let rate = acked as f64 / secs;
        let cpu = after.cpu_secs - before.cpu_secs;
        let per_cpu = per_cpu_sec(delivered, cpu);
        theirs = Some((rate, per_cpu));
        out.report["mosquitto"] = json!({
            "sent": sent, "acked": acked, "delivered": delivered, "errors": errors,
            "acked_per_sec": rate, "delivered_per_sec": delivered as f64 / secs,
            "ack": Latency::of(&s.ack), "deliver": Latency::of(&s.deliver),
            "server": cpu_rss(before, after, secs),
            "msgs_per_server_cpu_sec": per_cpu,
        });
        out.rows
            .push(("Mosquitto: PUBACKed msgs/s".into(), format!("{rate:.0}")));
        out.rows.push((
            "Mosquitto: publish→PUBACK p50/p99/p999".into(),
            lat(&Latency::of(&s.ack)),
        ));
        out.rows.push((
            "Mosquitto: publish→deliver p50/p99/p999".into(),
            lat(&Latency::of(&s.deliver)),
        ));
        out.rows.push((
            "Mosquitto: server CPU".into(),
            format!("{:.0}%", cpu / secs * 100.0),
        ));
        out.rows.push((
            "Mosquitto: delivered msgs per server CPU-second".into(),
            or_na(per_cpu, 0),
        ));
        drop(mq);
        eprintln!("mosquitto done; now the chat server");
    }
    let before = ctx.sample();
    let t = Instant::now();
    let (s, _) = chat::direct(target.clone(), &cfg, counters.clone()).await?;
    let secs = t.elapsed().as_secs_f64().min(args.duration).max(0.001);
    let (sent, acked, delivered, errors) = counters.get();
    let after = ctx.sample();
    let rate = acked as f64 / secs;
    let cpu = after.cpu_secs - before.cpu_secs;
    let per_cpu = per_cpu_sec(delivered, cpu);
    let (server_us, writer_us) = per_send(&before, &after, acked);
    out.report["chat"] = json!({
        "sent": sent, "acked": acked, "delivered": delivered, "errors": errors,
        "acked_per_sec": rate, "delivered_per_sec": delivered as f64 / secs,
        "acked_in_window_per_sec": s.acked_in_window as f64 / args.duration.max(0.001),
        "ack": Latency::of(&s.ack), "deliver": Latency::of(&s.deliver),
        "server": cpu_rss(before, after, secs),
        "msgs_per_server_cpu_sec": per_cpu,
        "server_cpu_us_per_msg": server_us,
        "writer_cpu_us_per_msg": writer_us,
    });
    out.rows
        .push(("acked sends/s (durable)".into(), format!("{rate:.0}")));
    out.rows.push((
        "delivered messages/s".into(),
        format!("{:.0}", delivered as f64 / secs),
    ));
    out.rows
        .push(("send→ack p50/p99/p999".into(), lat(&Latency::of(&s.ack))));
    out.rows.push((
        "send→deliver p50/p99/p999".into(),
        lat(&Latency::of(&s.deliver)),
    ));
    out.rows.push((
        "server CPU".into(),
        format!("{:.0}%", (after.cpu_secs - before.cpu_secs) / secs * 100.0),
    ));
    out.rows.push((
        "server / store writer CPU per acked send".into(),
        per_send_cell((server_us, writer_us)),
    ));
    out.rows.push((
        "server RSS".into(),
        format!("{:.1} MB", after.rss_kb as f64 / 1024.0),
    ));
    out.rows.push((
        format!(
            "delivered msgs per server CPU-second{}",
            if ctx.in_process.is_some() {
                " (CPU includes the load generator: --in-process)"
            } else {
                ""
            }
        ),
        or_na(per_cpu, 0),
    ));
    if let Some((theirs, theirs_per_cpu)) = theirs {
        let ratio = rate / theirs.max(1.0);
        out.report["ratio_ours_to_mosquitto"] = json!(ratio);
        out.rows.push((
            "ratio ours/Mosquitto (acked/s)".into(),
            format!("{ratio:.2}"),
        ));
        let per_cpu_ratio = match (per_cpu, theirs_per_cpu) {
            (Some(o), Some(t)) if t > 0.0 => Some(o / t),
            _ => None,
        };
        out.report["ratio_per_cpu_ours_to_mosquitto"] = json!(per_cpu_ratio);
        out.rows.push((
            "ratio ours/Mosquitto (msgs per server CPU-second)".into(),
            or_na(per_cpu_ratio, 2),
        ));
    }
    Ok(())
}
