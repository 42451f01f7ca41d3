//! Prometheus metrics on their own listener, and readiness: a scrape
//! before and after real traffic shows the counters move; the public port
//! does not serve them. (Its own test binary: the recorder is per process.)

use chat_tests::*;
use serde_json::json;
use std::time::Duration;

/// The value of one sample line (`name{labels} value`), summed over every
/// line whose name and labels start with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(port: u16) -> String {
    let (status, headers, body) = try_http_get(port, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    let ct = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(ct, Some("text/plain; version=0.0.4"));
    body
}

#[tokio::test]
async fn counters_move_with_traffic_on_the_metrics_listener_only() {
    let handle = conn_tier::metrics::install().expect("recorder");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = tokio::spawn(conn_tier::metrics::serve(
        listener,
        handle,
        Default::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    // From the first second, before any traffic: every counter with each
    // label value at 0, so that rate() sees 0 rather than no data.
    let fresh = scrape(port).await;
    for line in [
        "chat_deliveries_total{result=\"gone\"} 0",
        "chat_connects_total{result=\"too_fast\"} 0",
        "chat_frames_in_total{action=\"receipts\"} 0",
        "chat_gap_reads_total{found=\"too_much\"} 0",
        "chat_store_errors_total{op=\"commit\"} 0",
        "chat_messages_stored_total 0",
    ] {
        assert!(fresh.lines().any(|l| l == line), "{line} in:\n{fresh}");
    }
    let server = TestServer::start().await;
    let before = scrape(port).await;
    if store_kind() == "embedded" {
        // The embedded store's health.
        assert_eq!(sample(&before, "chat_store_writable"), 1.0, "{before}");
        assert!(sample(&before, "chat_store_free_bytes") > 0.0, "{before}");
    }

    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    for i in 0..3 {
        alice.send_text("user:bob", &format!("m{i}")).await;
    }
    for _ in 0..3 {
        bob.expect("message").await;
    }
    alice.send(json!({"action":"nope"})).await;
    alice.expect("error").await;
    let refused = handshake_status(&format!("{}?token=garbage", server.url()))
        .await
        .unwrap();
    assert_eq!(refused, 401);

    let after = scrape(port).await;
    let moved = |prefix: &str| sample(&after, prefix) - sample(&before, prefix);
    assert!(moved("chat_messages_stored_total") >= 3.0, "{after}");
    assert!(moved("chat_frames_in_total{action=\"send\"}") >= 3.0);
    assert!(moved("chat_frames_in_total{action=\"invalid\"}") >= 1.0);
    assert!(moved("chat_connects_total{result=\"accepted\"}") >= 2.0);
    assert!(moved("chat_connects_total{result=\"unauthorized\"}") >= 1.0);
    assert!(moved("chat_deliveries_total{result=\"ok\"}") >= 3.0);
    assert!(moved("chat_send_ack_seconds_count") >= 3.0);
    assert!(sample(&after, "chat_connections_open") >= 2.0);
    assert!(after.contains("# HELP chat_messages_stored_total"));
    if store_kind() == "embedded" {
        assert!(moved("chat_store_commit_batch_size_count") >= 1.0);
        assert!(moved("chat_store_commit_seconds_count{phase=\"apply\"}") >= 1.0);
        assert!(moved("chat_store_commit_seconds_count{phase=\"commit\"}") >= 1.0);
    }

    // Closing lowers the gauge and counts the reason.
    alice.close().await;
    let mut closed = false;
    for _ in 0..50 {
        let now = scrape(port).await;
        if sample(&now, "chat_disconnects_total{reason=\"peer\"}")
            > sample(&before, "chat_disconnects_total{reason=\"peer\"}")
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the disconnect was counted");

    // Never on the public port; readiness and liveness are.
    let public = server.addr.port();
    assert_eq!(try_http_get(public, "/metrics").await.unwrap().0, 404);
    let (status, _, body) = try_http_get(public, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ready"));
    assert_eq!(try_http_get(public, "/healthz").await.unwrap().0, 200);

    server.stop().await;
    let _ = stop.send(());
    metrics.await.unwrap().unwrap();
}
