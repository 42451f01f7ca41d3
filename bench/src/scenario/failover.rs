//! Scenario `failover`: a cluster node's clients after kill -9, back
//! through the load balancer and synced.

use super::{lat, or_na, Ctx, Report};
use crate::cluster;
use crate::stats::{Field, Shown};
use std::time::Duration;

pub const SHOWN: Shown = &[
    ("connected to the victim", Field::Sent),
    ("back and synced", Field::Delivered),
];

pub async fn run(ctx: &Ctx, out: &mut Report) -> anyhow::Result<()> {
    let args = &ctx.args;
    let counters = &ctx.counters;
    let target = &ctx.target;
    let (Some(lb_url), Some(victim_pid)) = (args.peer_url.clone(), args.kill_pid) else {
        anyhow::bail!(
            "failover needs --url (the node), --kill-pid and --peer-url (the load balancer)"
        );
    };
    let cfg = cluster::FailoverCfg {
        victim: cluster::ws_addr(&ctx.url)?,
        victim_pid,
        lb_url,
        clients: args.clients,
        connect_rate: args.connect_rate,
        give_up: Duration::from_secs_f64(args.duration.max(60.0)),
    };
    let r = cluster::failover(target.clone(), cfg, counters.clone()).await?;
    let secs = |v: Option<f64>| or_na(v, 2) + " s";
    out.rows.push((
        "clients on the killed node".into(),
        format!("{} (connected in {:.1} s)", r.clients, r.connect_secs),
    ));
    out.rows.push((
        "socket ended after kill p50/p99/p999".into(),
        lat(&r.noticed),
    ));
    out.rows.push((
        "back through the load balancer and synced p50/p99/p999".into(),
        lat(&r.back),
    ));
    out.rows.push((
        "every client back and synced after".into(),
        secs(r.all_back_secs),
    ));
    out.rows
        .push(("clients not back".into(), r.not_back.to_string()));
    out.rows.push((
        "failed reconnect attempts".into(),
        r.failed_attempts.to_string(),
    ));
    out.rows.push((
        "node declared dead (left /nodes) after".into(),
        format!(
            "{} ({} live before)",
            secs(r.declared_dead_secs),
            r.nodes_before
                .map(|n| n.to_string())
                .unwrap_or_else(|| "n/a".into())
        ),
    ));
    out.report["failover"] = serde_json::to_value(&r)?;
    Ok(())
}
