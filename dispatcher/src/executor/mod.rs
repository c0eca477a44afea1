//! Executors: where a leased step runs. The agent only calls [`Executor::run`].

mod local;

pub use local::LocalExecutor;

use concurrent_core::wire::{Lease, Outcome};
use tokio_util::sync::CancellationToken;

/// Runs one leased step to its end.
pub trait Executor: Send + Sync + 'static {
    /// Runs the step; `None` when `cancel` fired first (the step was killed, nothing to report).
    fn run(&self, lease: &Lease, cancel: CancellationToken) -> impl std::future::Future<Output = Option<Outcome>> + Send;
}
