//! Scenario `group`: fan-out latency in a group.

use super::{cpu_rss, lat, Ctx, Report};
use crate::chat;
use crate::stats::{Field, Shown};
use serde_json::json;
use std::time::Instant;

pub const SHOWN: Shown = &[
    ("messages sent", Field::Sent),
    ("acked", Field::Acked),
    ("deliveries to members", Field::Delivered),
    ("errors", Field::Errors),
];

pub async fn run(ctx: &Ctx, out: &mut Report) -> anyhow::Result<()> {
    let args = &ctx.args;
    let counters = &ctx.counters;
    let target = &ctx.target;
    let rate = if args.rate == 0 { 20 } else { args.rate };
    let before = ctx.sample();
    let t = Instant::now();
    let g = chat::group(
        target.clone(),
        args.members,
        rate,
        ctx.duration,
        args.text_bytes,
        counters.clone(),
    )
    .await?;
    let secs = t.elapsed().as_secs_f64();
    let after = ctx.sample();
    out.report["group"] = json!({
        "members": args.members, "rate": rate, "messages": g.messages, "incomplete": g.incomplete,
        "acked": g.acked, "errors": g.errors, "deliveries": g.deliveries,
        "per_delivery": g.per_delivery, "to_all_members": g.to_all_members,
        "server": cpu_rss(before, after, secs),
    });
    out.rows.push((
        "messages sent".into(),
        format!("{} at {rate}/s to {} members", g.messages, args.members),
    ));
    out.rows.push((
        "acked / errors / deliveries".into(),
        format!("{} / {} / {}", g.acked, g.errors, g.deliveries),
    ));
    out.rows.push((
        "send→deliver, each member p50/p99/p999".into(),
        lat(&g.per_delivery),
    ));
    out.rows.push((
        "send→last member p50/p99/p999".into(),
        lat(&g.to_all_members),
    ));
    out.rows.push((
        "messages not seen by every member".into(),
        g.incomplete.to_string(),
    ));
    Ok(())
}
