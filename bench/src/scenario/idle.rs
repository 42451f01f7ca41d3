//! Scenario `idle`: idle connections, and the server's RSS per connection.

use super::{Ctx, Report};
use crate::stats::{Field, Shown};
use crate::{cluster, crowd};
use serde_json::json;
use std::time::{Duration, Instant};

pub const SHOWN: Shown = &[("connections open", Field::Acked)];

pub async fn run(ctx: &Ctx, out: &mut Report) -> anyhow::Result<()> {
    let args = &ctx.args;
    let counters = &ctx.counters;
    let target = &ctx.target;
    let addr: std::net::SocketAddr = match (&ctx.server, &ctx.in_process) {
        (Some(s), _) => s.addr.parse()?,
        (None, Some((a, _))) => *a,
        _ => cluster::ws_addr(&ctx.url)?,
    };
    // One connection first, so the baseline includes warmed-up allocators.
    let warm = target.connect("idle-warmup").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ctx.sample();
    let t = Instant::now();
    let mut conns = crowd::idle(
        target.clone(),
        args.connections,
        args.connect_rate,
        addr,
        counters.clone(),
    )
    .await?;
    let open_secs = t.elapsed().as_secs_f64();
    if args.warm {
        crowd::warm(target, &mut conns).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ctx.sample();
    let per_conn_kb =
        (after.rss_kb.saturating_sub(before.rss_kb)) as f64 / conns.len().max(1) as f64;
    out.report["idle"] = json!({
        "connections": conns.len(), "open_secs": open_secs, "nofile_limit": ctx.nofile,
        "rss_before_kb": before.rss_kb, "rss_after_kb": after.rss_kb, "rss_per_connection_kb": per_conn_kb,
    });
    out.rows.push((
        "idle connections open".into(),
        format!("{} in {open_secs:.1} s", conns.len()),
    ));
    out.rows.push((
        "server RSS before → after".into(),
        format!(
            "{:.1} → {:.1} MB",
            before.rss_kb as f64 / 1024.0,
            after.rss_kb as f64 / 1024.0
        ),
    ));
    out.rows.push((
        "RSS per idle connection".into(),
        if ctx.pid.is_some() {
            format!("{per_conn_kb:.1} KB")
        } else {
            "n/a (--url without --server-pid)".into()
        },
    ));
    if args.hold > 0.0 {
        eprintln!(
            "idle: {} connections open; holding {} s",
            conns.len(),
            args.hold
        );
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    drop(conns);
    drop(warm);
    Ok(())
}
