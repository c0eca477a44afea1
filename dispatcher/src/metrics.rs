//! `/healthz` (liveness), `/readyz` (readiness) and Prometheus `/metrics` of the agent.
//!
//! Liveness means the agent's loops still turn: the claim loop and the heartbeat loop each note
//! every cycle, and `/healthz` fails (so Kubernetes restarts the pod) when either has not
//! completed one within [`LIVENESS_BOUND`], except that a claim loop waiting for capacity is
//! idle, not stuck. Readiness means the edge answers: `/readyz` fails while the latest call of
//! the claim loop could not reach it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// A loop that has not completed a cycle for this long is stuck. A claim cycle is at most a
/// long-poll (25 s), its HTTP slack (15 s) and a backoff (30 s).
pub const LIVENESS_BOUND: Duration = Duration::from_secs(120);

/// A Prometheus histogram with fixed buckets (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then `+Inf`; not cumulative (summed when rendered).
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {total}\n"));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.push_str(&format!("{name}_sum {sum:.6}\n{name}_count {total}\n"));
        out
    }
}

const CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const STEP_BUCKETS: &[f64] = &[
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];
const POD_START_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0];

/// What liveness and readiness are decided from.
pub struct Health {
    born: Instant,
    /// Milliseconds since `born` at the end of the latest cycle of each loop.
    claim_ms: AtomicU64,
    heartbeat_ms: AtomicU64,
    waiting_for_capacity: AtomicBool,
    /// Why the edge could not be reached by the latest claim call; `None` when it answered.
    edge_error: Mutex<Option<String>>,
    /// Until the first answer, the agent is not ready.
    edge_answered: AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            born: Instant::now(),
            claim_ms: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(0),
            waiting_for_capacity: AtomicBool::new(false),
            edge_error: Mutex::new(None),
            edge_answered: AtomicBool::new(false),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// The claim loop finished a cycle; `edge` is how the edge answered (an error: why not).
    pub fn claimed(&self, edge: Result<(), String>) {
        self.claim_ms.store(self.now_ms(), Ordering::Relaxed);
        if edge.is_ok() {
            self.edge_answered.store(true, Ordering::Relaxed);
        }
        *self.edge_error.lock().expect("poisoned") = edge.err();
    }

    /// The claim loop waits (or stops waiting) for a step to end.
    pub fn waiting_for_capacity(&self, waiting: bool) {
        self.waiting_for_capacity.store(waiting, Ordering::Relaxed);
        if !waiting {
            self.claim_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    pub fn heartbeat_done(&self) {
        self.heartbeat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn liveness(&self) -> Result<(), String> {
        liveness(
            self.now_ms(),
            self.claim_ms.load(Ordering::Relaxed),
            self.heartbeat_ms.load(Ordering::Relaxed),
            self.waiting_for_capacity.load(Ordering::Relaxed),
        )
    }

    pub fn readiness(&self) -> Result<(), String> {
        if let Some(why) = self.edge_error.lock().expect("poisoned").clone() {
            return Err(format!("the edge cannot be reached: {why}"));
        }
        if !self.edge_answered.load(Ordering::Relaxed) {
            return Err("the edge has not answered yet".into());
        }
        Ok(())
    }
}

/// Whether the loops still turn, from when each last completed a cycle (ms on one clock).
pub fn liveness(
    now: u64,
    claim: u64,
    heartbeat: u64,
    waiting_for_capacity: bool,
) -> Result<(), String> {
    let bound = LIVENESS_BOUND.as_millis() as u64;
    let stale = |at: u64| now.saturating_sub(at) > bound;
    if stale(claim) && !waiting_for_capacity {
        return Err(format!(
            "the claim loop has not completed a cycle for {} s (bound {} s); restart the agent",
            now.saturating_sub(claim) / 1000,
            bound / 1000
        ));
    }
    if stale(heartbeat) {
        return Err(format!(
            "the heartbeat loop has not completed a cycle for {} s (bound {} s); its leases will expire",
            now.saturating_sub(heartbeat) / 1000,
            bound / 1000
        ));
    }
    Ok(())
}

/// Counters and histograms the agent keeps, and its health; read by the HTTP endpoints.
pub struct Metrics {
    pub leases_held: AtomicU64,
    pub steps_succeeded: AtomicU64,
    pub steps_failed: AtomicU64,
    pub steps_stopped: AtomicU64,
    pub lease_requests: AtomicU64,
    pub lease_errors: AtomicU64,
    pub heartbeat_errors: AtomicU64,
    /// From asking for work to holding it, for lease calls that returned work.
    pub lease_latency: Histogram,
    /// From lease to outcome, per step.
    pub step_duration: Histogram,
    /// Kubernetes: from creating a step's pod to seeing it run.
    pub pod_start: Histogram,
    pub health: Health,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            leases_held: AtomicU64::new(0),
            steps_succeeded: AtomicU64::new(0),
            steps_failed: AtomicU64::new(0),
            steps_stopped: AtomicU64::new(0),
            lease_requests: AtomicU64::new(0),
            lease_errors: AtomicU64::new(0),
            heartbeat_errors: AtomicU64::new(0),
            lease_latency: Histogram::new(CALL_BUCKETS),
            step_duration: Histogram::new(STEP_BUCKETS),
            pod_start: Histogram::new(POD_START_BUCKETS),
            health: Health::default(),
        }
    }
}

impl Metrics {
    fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = format!(
            "# HELP concurrent_build_info The agent's version.\n# TYPE concurrent_build_info gauge\nconcurrent_build_info{{version=\"{}\"}} 1\n\
             # HELP concurrent_leases_held Work items this agent holds.\n# TYPE concurrent_leases_held gauge\nconcurrent_leases_held {}\n\
             # HELP concurrent_steps_total Steps this agent finished, by outcome.\n# TYPE concurrent_steps_total counter\n\
             concurrent_steps_total{{outcome=\"succeeded\"}} {}\nconcurrent_steps_total{{outcome=\"failed\"}} {}\nconcurrent_steps_total{{outcome=\"stopped\"}} {}\n\
             # HELP concurrent_lease_requests_total Lease requests (long-polls) sent.\n# TYPE concurrent_lease_requests_total counter\nconcurrent_lease_requests_total {}\n\
             # HELP concurrent_lease_errors_total Lease requests that failed.\n# TYPE concurrent_lease_errors_total counter\nconcurrent_lease_errors_total {}\n\
             # HELP concurrent_heartbeat_errors_total Heartbeats that failed.\n# TYPE concurrent_heartbeat_errors_total counter\nconcurrent_heartbeat_errors_total {}\n",
            env!("CARGO_PKG_VERSION"),
            g(&self.leases_held),
            g(&self.steps_succeeded),
            g(&self.steps_failed),
            g(&self.steps_stopped),
            g(&self.lease_requests),
            g(&self.lease_errors),
            g(&self.heartbeat_errors),
        );
        out.push_str(&self.lease_latency.render(
            "concurrent_lease_latency_seconds",
            "From asking for work to holding it (lease calls that returned work).",
        ));
        out.push_str(&self.step_duration.render(
            "concurrent_step_duration_seconds",
            "From lease to outcome, per step.",
        ));
        out.push_str(&self.pod_start.render(
            "concurrent_pod_start_seconds",
            "Kubernetes executor: from creating a step's pod to seeing it run.",
        ));
        out
    }
}

fn answer(check: Result<(), String>) -> (StatusCode, String) {
    match check {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until the process ends.
pub async fn serve(addr: &str, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {addr}: {e}"))?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    let (live, ready) = (metrics.clone(), metrics.clone());
    let app = Router::new()
        .route(
            "/healthz",
            get(move || async move { answer(live.health.liveness()) }),
        )
        .route(
            "/readyz",
            get(move || async move { answer(ready.health.readiness()) }),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_without_a_cycle_for_longer_than_the_bound_fails_liveness() {
        let b = LIVENESS_BOUND.as_millis() as u64;
        assert_eq!(liveness(b, 0, 0, false), Ok(()));
        let why = liveness(b + 1000, 0, b, false).unwrap_err();
        assert!(why.contains("claim loop") && why.contains("121 s"), "{why}");
        assert_eq!(
            liveness(b + 1000, 0, b, true),
            Ok(()),
            "waiting for capacity is idle, not stuck"
        );
        assert!(liveness(b + 1000, b, 0, true)
            .unwrap_err()
            .contains("heartbeat loop"));
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let text = h.render("x_seconds", "x");
        for line in [
            "x_seconds_bucket{le=\"0.1\"} 1",
            "x_seconds_bucket{le=\"1\"} 2",
            "x_seconds_bucket{le=\"+Inf\"} 3",
            "x_seconds_count 3",
            "x_seconds_sum 5.550000",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn readiness_waits_for_the_edge_and_follows_its_errors() {
        let h = Health::default();
        assert!(h.readiness().unwrap_err().contains("not answered yet"));
        h.claimed(Ok(()));
        assert_eq!(h.readiness(), Ok(()));
        h.claimed(Err("connection refused".into()));
        assert!(h.readiness().unwrap_err().contains("connection refused"));
    }
}
