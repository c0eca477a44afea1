//! `/healthz` and Prometheus `/metrics` of the agent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

/// Counters the agent keeps; read by `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub leases_held: AtomicU64,
    pub steps_succeeded: AtomicU64,
    pub steps_failed: AtomicU64,
    pub steps_stopped: AtomicU64,
    pub lease_requests: AtomicU64,
    pub lease_errors: AtomicU64,
    /// Sum of the time from asking for work to holding it, for leases that returned work.
    pub lease_wait_ms_sum: AtomicU64,
    pub leases_granted: AtomicU64,
    pub heartbeat_errors: AtomicU64,
}

impl Metrics {
    fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP concurrent_leases_held Work items this agent holds.\n# TYPE concurrent_leases_held gauge\nconcurrent_leases_held {}\n\
             # HELP concurrent_steps_total Steps this agent finished, by outcome.\n# TYPE concurrent_steps_total counter\n\
             concurrent_steps_total{{outcome=\"succeeded\"}} {}\nconcurrent_steps_total{{outcome=\"failed\"}} {}\nconcurrent_steps_total{{outcome=\"stopped\"}} {}\n\
             # HELP concurrent_lease_requests_total Lease requests (long-polls) sent.\n# TYPE concurrent_lease_requests_total counter\nconcurrent_lease_requests_total {}\n\
             # HELP concurrent_lease_errors_total Lease requests that failed.\n# TYPE concurrent_lease_errors_total counter\nconcurrent_lease_errors_total {}\n\
             # HELP concurrent_lease_wait_seconds Time from asking for work to holding it.\n# TYPE concurrent_lease_wait_seconds summary\n\
             concurrent_lease_wait_seconds_sum {:.3}\nconcurrent_lease_wait_seconds_count {}\n\
             # HELP concurrent_heartbeat_errors_total Heartbeats that failed.\n# TYPE concurrent_heartbeat_errors_total counter\nconcurrent_heartbeat_errors_total {}\n",
            g(&self.leases_held),
            g(&self.steps_succeeded),
            g(&self.steps_failed),
            g(&self.steps_stopped),
            g(&self.lease_requests),
            g(&self.lease_errors),
            g(&self.lease_wait_ms_sum) as f64 / 1000.0,
            g(&self.leases_granted),
            g(&self.heartbeat_errors),
        )
    }
}

/// Serves `/healthz` and `/metrics` on `addr` until the process ends.
pub async fn serve(addr: &str, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {addr}: {e}"))?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics server stopped: {e}");
        }
    });
    Ok(())
}
