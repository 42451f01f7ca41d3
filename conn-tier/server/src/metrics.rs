//! Prometheus metrics (`GET /metrics`, the text format) on a listener of
//! their own (`--metrics-listen`), never the public port: the recorder
//! collects what `chat_core::metrics` records across the process.

use chat_core::metrics::{describe, COMMIT_BATCH, COMMIT_SECONDS, SEND_ACK_SECONDS};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;

/// Installs the Prometheus recorder (once per process) and returns its
/// handle; `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(SEND_ACK_SECONDS.into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), &sizes))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_SECONDS.into()), &seconds)
                })
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// Serves `/metrics` on `listener` until `shutdown`, under `limits`.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    limits: crate::listener::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening (GET /metrics)");
    let render = handle.clone();
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let h = render.clone();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()) }
        }),
    );
    // Histograms are folded in every few seconds, scraped or not.
    let upkeep = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    };
    tokio::select! {
        served = crate::listener::serve(listener, router, limits, shutdown) => served,
        _ = upkeep => Ok(()),
    }
}
