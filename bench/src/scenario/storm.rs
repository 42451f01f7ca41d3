//! Scenario `storm`: a reconnect storm, every client syncing its missed
//! messages at once.

use super::{lat, Ctx, Report};
use crate::crowd;
use crate::stats::{Field, Shown};
use serde_json::json;

pub const SHOWN: Shown = &[
    ("messages stored", Field::Sent),
    ("messages synced", Field::Delivered),
];

pub async fn run(ctx: &Ctx, out: &mut Report) -> anyhow::Result<()> {
    let args = &ctx.args;
    let counters = &ctx.counters;
    let target = &ctx.target;
    let r = crowd::storm(target.clone(), args.clients, args.missed, counters.clone()).await?;
    out.report["storm"] = json!({
        "clients": r.clients, "missed_each": args.missed, "wall_secs": r.wall.as_secs_f64(),
        "messages_synced": r.messages_synced, "reconnect_and_sync": r.reconnect_sync,
    });
    out.rows.push((
        "clients reconnecting at once".into(),
        format!("{} × {} missed", r.clients, args.missed),
    ));
    out.rows.push((
        "all synced after".into(),
        format!("{:.2} s", r.wall.as_secs_f64()),
    ));
    out.rows
        .push(("messages synced".into(), r.messages_synced.to_string()));
    out.rows.push((
        "connect+sync per client p50/p99/p999".into(),
        lat(&r.reconnect_sync),
    ));
    Ok(())
}
