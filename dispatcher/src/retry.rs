//! How the agent and the step runner try again, one named policy per kind of call: jittered
//! exponential backoff, bounded where giving up is the better answer.

use std::time::Duration;

use backon::ExponentialBuilder;

fn between(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
}

/// One call to the edge: 5 more tries from 200 ms (about 20 s in all), then the caller decides.
pub fn edge_call() -> ExponentialBuilder {
    between(Duration::from_millis(200), Duration::from_secs(10)).with_max_times(5)
}

/// Asking the edge for work or inspections while it cannot be reached: for ever, from 500 ms
/// to half a minute (reset by the next answer).
pub fn edge_poll() -> ExponentialBuilder {
    between(Duration::from_millis(500), Duration::from_secs(30)).without_max_times()
}

/// Reporting a step's outcome: for ever (the lease is heartbeated meanwhile), from 1 s to 30 s.
pub fn report() -> ExponentialBuilder {
    between(Duration::from_secs(1), Duration::from_secs(30)).without_max_times()
}

/// One MLflow call: 3 more tries from 250 ms, then its error.
pub fn mlflow_call() -> ExponentialBuilder {
    between(Duration::from_millis(250), Duration::from_secs(8)).with_max_times(3)
}

/// Creating an attempt's MLflow run while MLflow is away: for ever (the lease is heartbeated
/// meanwhile), from 1 s to 30 s.
pub fn mlflow_away() -> ExponentialBuilder {
    between(Duration::from_secs(1), Duration::from_secs(30)).without_max_times()
}

/// Moving a step's files while MLflow is away: from 1 s to 30 s, for at most
/// [`TRANSFER_PATIENCE`] in all; then the step fails with the reason.
pub fn transfer() -> ExponentialBuilder {
    between(Duration::from_secs(1), Duration::from_secs(30))
        .with_total_delay(Some(TRANSFER_PATIENCE))
        .without_max_times()
}

/// How long a step waits for MLflow to come back before its inputs or outputs fail.
pub const TRANSFER_PATIENCE: Duration = Duration::from_secs(300);
