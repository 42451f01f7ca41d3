//! Scenario `disk`: what the store's engine (`--engine`) costs on disk and
//! at a restart, on one spawned server:
//!
//! 1. the fill: `direct` flat out for `--duration` seconds (pinned with
//!    `--pin`): acked/s and the server's and its store writer's CPU per
//!    message;
//! 2. the restart: the time until the server listens again after a
//!    `kill -9` right after the fill (the engine recovers what it had not
//!    written out), then after a clean stop;
//! 3. the data directory's size per stored message (allocated blocks, as
//!    `du` counts them) once it runs again;
//! 4. `--rounds` runs of 10 s at `--round-rate` on that store, each with
//!    its p99 and the directory's size after it: a background compaction
//!    (fjall) or a growing file (redb) shows in the rounds.

use super::{cpu_rss, lat, or_na, per_send, per_send_cell, Ctx, Report};
use crate::chat;
use crate::stats::Latency;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes allocated under `path` (files' blocks, as `du` counts them).
fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

pub async fn run(ctx: &mut Ctx, out: &mut Report) -> anyhow::Result<()> {
    // Held here (and dropped with the run): it is restarted. In-process (a
    // smoke run): no restart, and the CPU figures include the load
    // generator.
    let mut server = ctx.server.take();
    let dir = match (&server, &ctx.in_process) {
        (Some(s), _) => s.dir.path().to_path_buf(),
        (None, Some((_, dir))) => dir.path().to_path_buf(),
        (None, None) => anyhow::bail!("--scenario disk starts its own server: not with --url"),
    };
    let args = &ctx.args;
    let cfg = |users: &str, rate: u64, duration: Duration| chat::DirectCfg {
        connections: args.connections,
        duration,
        rate,
        window: args.window,
        text_bytes: args.text_bytes,
        users: users.to_string(),
        cpu_pid: None,
    };

    // 1. The fill.
    let pid = ctx.pid.unwrap_or(0);
    let before = crate::procstat::sample(pid);
    let t = Instant::now();
    let (fill, _) = chat::direct(
        ctx.target.clone(),
        &cfg("fill", 0, ctx.duration),
        ctx.counters.clone(),
    )
    .await?;
    let secs = t.elapsed().as_secs_f64().min(args.duration).max(0.001);
    let after = crate::procstat::sample(pid);
    let (_, acked, delivered, errors) = ctx.counters.get();
    let (server_us, writer_us) = per_send(&before, &after, acked);
    out.rows.push((
        "fill: acked sends/s, flat out".into(),
        format!(
            "{:.0} ({acked} in all, {errors} errors)",
            acked as f64 / secs
        ),
    ));
    out.rows.push((
        "fill: server / store writer CPU per acked send".into(),
        per_send_cell((server_us, writer_us)),
    ));
    out.rows.push((
        "fill: send→deliver p50/p99/p999".into(),
        lat(&Latency::of(&fill.deliver)),
    ));

    // 2 and 3. Killed right after the fill (what the engine had not yet
    // written out is recovered at the start), then stopped cleanly; the
    // size on disk once it runs again (nothing is written meanwhile).
    let (killed, clean) = match server.as_mut() {
        Some(s) => (Some(s.restart(true).await?), Some(s.restart(false).await?)),
        None => (None, None),
    };
    let bytes = du(&dir);
    let per_msg = bytes as f64 / acked.max(1) as f64;
    out.rows.push((
        "disk per stored message".into(),
        format!(
            "{per_msg:.0} B ({:.1} MB for {acked} messages of {} B of text)",
            bytes as f64 / 1e6,
            args.text_bytes
        ),
    ));
    out.rows.push((
        "restart until listening: after a clean stop / after kill -9".into(),
        format!(
            "{} / {} ms",
            or_na(clean.map(|d| d.as_secs_f64() * 1e3), 0),
            or_na(killed.map(|d| d.as_secs_f64() * 1e3), 0)
        ),
    ));

    // 4. Rounds at a steady rate on the filled store.
    let pid = server.as_ref().map_or(pid, |s| s.pid());
    let ctx = &*ctx;
    let mut rounds = Vec::new();
    for i in 0..args.rounds {
        ctx.counters.reset();
        let before = crate::procstat::sample(pid);
        let t = Instant::now();
        let (s, _) = chat::direct(
            ctx.target.clone(),
            &cfg(&format!("r{i}u"), args.round_rate, Duration::from_secs(10)),
            ctx.counters.clone(),
        )
        .await?;
        let secs = t.elapsed().as_secs_f64().min(10.0);
        let after = crate::procstat::sample(pid);
        let (_, acked, _, errors) = ctx.counters.get();
        let deliver = Latency::of(&s.deliver);
        let (server_us, _) = per_send(&before, &after, acked);
        let bytes = du(&dir);
        out.rows.push((
            format!(
                "round {} at {}/s: p50/p99/p999, CPU per send, disk",
                i + 1,
                args.round_rate
            ),
            format!(
                "{}; {} µs; {:.1} MB{}",
                lat(&deliver),
                or_na(server_us, 1),
                bytes as f64 / 1e6,
                if errors > 0 {
                    format!("; {errors} errors")
                } else {
                    String::new()
                }
            ),
        ));
        rounds.push(json!({
            "acked": acked, "errors": errors, "deliver": deliver,
            "server": cpu_rss(before, after, secs),
            "server_cpu_us_per_msg": server_us,
            "disk_bytes": bytes,
        }));
    }
    out.report["disk"] = json!({
        "engine": args.engine.first(),
        "fill": {
            "acked": acked, "delivered": delivered, "errors": errors, "secs": secs,
            "acked_per_sec": acked as f64 / secs,
            "server_cpu_us_per_msg": server_us,
            "writer_cpu_us_per_msg": writer_us,
            "deliver": Latency::of(&fill.deliver),
        },
        "disk_bytes": bytes, "disk_bytes_per_msg": per_msg,
        "restart_clean_ms": clean.map(|d| d.as_secs_f64() * 1e3),
        "restart_after_kill_ms": killed.map(|d| d.as_secs_f64() * 1e3),
        "round_rate": args.round_rate,
        "rounds": rounds,
    });
    Ok(())
}
