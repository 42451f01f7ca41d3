//! The metrics every mode records, through the `metrics` facade: conn-tier
//! exports them in the Prometheus text format (`--metrics-listen`), the
//! Lambda functions as CloudWatch Embedded Metric Format log lines. Without
//! a recorder installed they cost nothing. One function per metric, so
//! names and labels are written once (docs/operations.md lists them).

use std::time::Duration;

pub const CONNECTIONS_OPEN: &str = "chat_connections_open";
pub const CONNECTS: &str = "chat_connects_total";
pub const DISCONNECTS: &str = "chat_disconnects_total";
pub const FRAMES_IN: &str = "chat_frames_in_total";
pub const MESSAGES_STORED: &str = "chat_messages_stored_total";
pub const DELIVERIES: &str = "chat_deliveries_total";
pub const SEND_ACK_SECONDS: &str = "chat_send_ack_seconds";
pub const COMMIT_BATCH: &str = "chat_store_commit_batch_size";
pub const COMMIT_SECONDS: &str = "chat_store_commit_seconds";
pub const STORE_ERRORS: &str = "chat_store_errors_total";
pub const STORE_RETRIES: &str = "chat_store_retries_total";
pub const RATE_LIMITED: &str = "chat_rate_limited_total";
pub const REJECTED: &str = "chat_rejected_total";
pub const OUTBOUND_QUEUE_BYTES: &str = "chat_outbound_queue_bytes";
pub const CLUSTER_LIVE_NODES: &str = "chat_cluster_live_nodes";
pub const CLUSTER_POSTS: &str = "chat_cluster_posts_total";
pub const BROADCASTS: &str = "chat_broadcasts_total";
pub const DELIVERY_POST_SECONDS: &str = "chat_delivery_post_seconds";
pub const GAP_READS: &str = "chat_gap_reads_total";
pub const MEMBER_CACHE: &str = "chat_member_cache_total";
pub const RECEIPTS: &str = "chat_receipts_total";
pub const STORE_WRITABLE: &str = "chat_store_writable";
pub const STORE_FREE_BYTES: &str = "chat_store_free_bytes";

/// A connection opened (`+1`) or closed (`-1`).
pub fn connection_open(delta: f64) {
    metrics::gauge!(CONNECTIONS_OPEN).increment(delta);
}

/// An upgrade attempt's outcome: `accepted`, `unauthorized`,
/// `too_many_for_user`, `too_fast`, `authorizer_timeout`, `busy`,
/// `cross_origin`, `failed`.
pub fn connect(result: &'static str) {
    metrics::counter!(CONNECTS, "result" => result).increment(1);
}

/// Why a connection ended: `peer`, `idle`, `too_slow`, `too_big`,
/// `invalid_utf8`, `protocol`, `shutdown`, `closed_by_server`.
pub fn disconnect(reason: &'static str) {
    metrics::counter!(DISCONNECTS, "reason" => reason).increment(1);
}

/// A frame read from a client: its action, or `invalid`, `binary`, `ping`.
pub fn frame_in(action: &'static str) {
    metrics::counter!(FRAMES_IN, "action" => action).increment(1);
}

/// A new message durably stored (not a resend).
pub fn message_stored() {
    metrics::counter!(MESSAGES_STORED).increment(1);
}

/// A post to one connection: `ok`, `gone`, `failed`, `held` (waiting for
/// the connection's sync).
pub fn delivery(result: &'static str) {
    metrics::counter!(DELIVERIES, "result" => result).increment(1);
}

/// From a `send` read to its `ack` (or error) being ready.
pub fn send_ack(took: Duration) {
    metrics::histogram!(SEND_ACK_SECONDS).record(took.as_secs_f64());
}

/// Messages written by one group commit (embedded store).
pub fn commit_batch(messages: usize) {
    metrics::histogram!(COMMIT_BATCH).record(messages as f64);
}

/// One group commit of the embedded store, in its two phases: `apply`,
/// beginning the transaction and the batch's writes in it; `commit`,
/// writing the pages and the fsync (for a batch that failed, the abort).
/// Every message of the batch waits for both.
pub fn commit_phases(apply: Duration, commit: Duration) {
    metrics::histogram!(COMMIT_SECONDS, "phase" => "apply").record(apply.as_secs_f64());
    metrics::histogram!(COMMIT_SECONDS, "phase" => "commit").record(commit.as_secs_f64());
}

/// A store call that failed (`op`: the operation).
pub fn store_error(op: &'static str) {
    metrics::counter!(STORE_ERRORS, "op" => op).increment(1);
}

/// A store write retried after losing a race (an id taken, a group
/// version moved).
pub fn store_retry(what: &'static str) {
    metrics::counter!(STORE_RETRIES, "what" => what).increment(1);
}

/// A frame answered `rate_limited` (or a quota reached).
pub fn rate_limited(what: &'static str) {
    metrics::counter!(RATE_LIMITED, "what" => what).increment(1);
}

/// A connection refused before HTTP: `total`, `per_ip`, `per_ip_rate`,
/// `header_timeout`.
pub fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED, "reason" => reason).increment(1);
}

/// Bytes added to (`+`) or taken from (`-`) the connections' outbound queues.
pub fn outbound_bytes(delta: f64) {
    metrics::gauge!(OUTBOUND_QUEUE_BYTES).increment(delta);
}

/// Live nodes in the cluster's last listing.
pub fn live_nodes(n: usize) {
    metrics::gauge!(CLUSTER_LIVE_NODES).set(n as f64);
}

/// A post to another node's connection: `ok`, `gone`, `failed`, `dead`.
pub fn cluster_post(result: &'static str) {
    metrics::counter!(CLUSTER_POSTS, "result" => result).increment(1);
}

/// A large audience's frame handed to the nodes instead of looked up per
/// user (docs/design.md, "Group look-ups"): `local` (this node's own
/// connections), `node_ok`, `node_failed` (a post to another node), or
/// `fallback` (the nodes could not be listed: looked up per user).
pub fn broadcast(result: &'static str) {
    metrics::counter!(BROADCASTS, "result" => result).increment(1);
}

/// One post to a connection in a cluster, timed: `path` is `local` (this
/// node's hub) or `remote` (another node's `@connections` API, answer
/// included). The store is not in it, so it isolates the delivery path.
pub fn delivery_post(path: &'static str, took: Duration) {
    metrics::histogram!(DELIVERY_POST_SECONDS, "path" => path).record(took.as_secs_f64());
}

/// A connection's sequencer read the store to fill a gap before a message
/// (conn-tier): `found` is `messages` when the read found others'
/// messages to send first, `own_only` when the gap held only this
/// connection's own sends, whose acks had not reached it yet, `failed`
/// when the read failed, `too_much` when it would have taken more than the
/// connection's outbound limit (the connection is closed with 1008).
pub fn gap_read(found: &'static str) {
    metrics::counter!(GAP_READS, "found" => found).increment(1);
}

/// A group's member list taken from the cache: `hit` (the version read
/// matched), `miss` (not cached, or the version moved: the list was read).
pub fn member_cache(result: &'static str) {
    metrics::counter!(MEMBER_CACHE, "result" => result).increment(1);
}

/// Receipts an `ack` queued, by `kind`: `direct` (the other party) or
/// `author` (one per author of the group messages it newly covers).
pub fn receipts(kind: &'static str, n: usize) {
    metrics::counter!(RECEIPTS, "kind" => kind).increment(n as u64);
}

/// Whether the store can write (1) or not (0): the embedded store, which
/// refuses writes while its disk is (nearly) full or after an I/O error.
pub fn store_writable(writable: bool) {
    metrics::gauge!(STORE_WRITABLE).set(if writable { 1.0 } else { 0.0 });
}

/// Free bytes on the embedded store's file system.
pub fn store_free_bytes(bytes: u64) {
    metrics::gauge!(STORE_FREE_BYTES).set(bytes as f64);
}

/// Every counter with each of its known label values, and the gauges, at
/// zero (or their value), so that a fresh or idle node exports them from
/// its first second: a dashboard or an alert on `rate(...)` sees 0, not
/// "no data" (Prometheus's instrumentation guidance). Called by
/// [`describe`], when a recorder is installed.
pub fn zeros() {
    use metrics::{counter, gauge};
    let labelled: [(&'static str, &'static str, &[&'static str]); 11] = [
        (
            CONNECTS,
            "result",
            &[
                "accepted",
                "unauthorized",
                "too_many_for_user",
                "too_fast",
                "authorizer_timeout",
                "busy",
                "cross_origin",
                "failed",
            ],
        ),
        (
            DISCONNECTS,
            "reason",
            &[
                "peer",
                "idle",
                "too_slow",
                "too_big",
                "invalid_utf8",
                "protocol",
                "shutdown",
                "closed_by_server",
                "peer_gone",
                "error",
            ],
        ),
        (DELIVERIES, "result", &["ok", "gone", "failed", "held"]),
        (STORE_ERRORS, "op", &["commit"]),
        (STORE_RETRIES, "what", &["message_id", "group_version"]),
        (RATE_LIMITED, "what", &["frames", "groups_per_day"]),
        (REJECTED, "reason", &["total", "per_ip", "per_ip_rate"]),
        (CLUSTER_POSTS, "result", &["ok", "gone", "failed", "dead"]),
        (
            GAP_READS,
            "found",
            &["messages", "own_only", "failed", "too_much"],
        ),
        (MEMBER_CACHE, "result", &["hit", "miss"]),
        (RECEIPTS, "kind", &["direct", "author"]),
    ];
    for (name, label, values) in labelled {
        for v in values {
            counter!(name, label => *v).absolute(0);
        }
    }
    for a in crate::protocol::ACTIONS {
        counter!(FRAMES_IN, "action" => a.name).absolute(0);
    }
    for a in ["invalid", "binary", "ping"] {
        counter!(FRAMES_IN, "action" => a).absolute(0);
    }
    counter!(MESSAGES_STORED).absolute(0);
    gauge!(CONNECTIONS_OPEN).increment(0.0);
    gauge!(OUTBOUND_QUEUE_BYTES).increment(0.0);
}

/// Help texts for the exporters (once, when a recorder is installed), and
/// every counter at zero ([`zeros`]).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS_OPEN, "WebSocket connections open on this node");
    describe_counter!(CONNECTS, "Upgrade attempts, by result");
    describe_counter!(DISCONNECTS, "Connections ended, by reason");
    describe_counter!(FRAMES_IN, "Frames read from clients, by action");
    describe_counter!(MESSAGES_STORED, "New messages durably stored");
    describe_counter!(DELIVERIES, "Posts to connections, by result");
    describe_counter!(
        GAP_READS,
        "Store reads a connection made to fill a gap before a message, by what they found"
    );
    describe_histogram!(
        SEND_ACK_SECONDS,
        Unit::Seconds,
        "From a send read to its ack ready"
    );
    describe_histogram!(COMMIT_BATCH, Unit::Count, "Messages per group commit");
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Time of one group commit, by phase: apply (the writes) and commit (pages and fsync)"
    );
    describe_counter!(STORE_ERRORS, "Store calls that failed, by operation");
    describe_counter!(STORE_RETRIES, "Store writes retried after a lost race");
    describe_counter!(
        RATE_LIMITED,
        "Frames answered rate_limited, and quotas reached"
    );
    describe_counter!(REJECTED, "Connections refused before HTTP, by reason");
    describe_gauge!(
        OUTBOUND_QUEUE_BYTES,
        Unit::Bytes,
        "Bytes waiting in the connections' outbound queues"
    );
    describe_gauge!(
        CLUSTER_LIVE_NODES,
        "Live nodes in the cluster's last listing"
    );
    describe_counter!(
        CLUSTER_POSTS,
        "Posts to other nodes' connections, by result"
    );
    describe_counter!(
        MEMBER_CACHE,
        "Group member lists served by the per-process cache, by result"
    );
    describe_counter!(RECEIPTS, "Receipts queued by acks, by kind");
    describe_gauge!(
        STORE_WRITABLE,
        "1 while the embedded store can write, 0 while it refuses writes (disk full or nearly, an I/O error it is recovering from)"
    );
    describe_gauge!(
        STORE_FREE_BYTES,
        Unit::Bytes,
        "Free bytes on the embedded store's file system"
    );
    describe_histogram!(
        DELIVERY_POST_SECONDS,
        Unit::Seconds,
        "One post to a connection in a cluster, by path (local or remote)"
    );
    zeros();
}
