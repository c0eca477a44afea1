//! Executors: where a leased step runs. The agent only calls [`Executor::run`].

mod kubernetes;
mod local;

pub use kubernetes::{mlflow_credentials_from_env, KubeExecutor, PodSettings};
pub use local::LocalExecutor;

use concurrent_core::wire::{Lease, LeaseRef, Outcome};
use tokio_util::sync::CancellationToken;

/// Runs one leased step to its end.
pub trait Executor: Send + Sync + 'static {
    /// Runs the step; `None` when there is nothing for the agent to report (it was cancelled,
    /// or the step reported its outcome itself).
    fn run(
        &self,
        lease: &Lease,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = Option<Outcome>> + Send;

    /// The last lines of a running step's log, for the live view (`None` when not at hand).
    fn tail(&self, lease: &LeaseRef) -> impl std::future::Future<Output = Option<String>> + Send;
}

/// The executor chosen at start.
pub enum AnyExecutor {
    Local(LocalExecutor),
    Kubernetes(KubeExecutor),
}

impl Executor for AnyExecutor {
    async fn run(&self, lease: &Lease, cancel: CancellationToken) -> Option<Outcome> {
        match self {
            AnyExecutor::Local(e) => e.run(lease, cancel).await,
            AnyExecutor::Kubernetes(e) => e.run(lease, cancel).await,
        }
    }

    async fn tail(&self, lease: &LeaseRef) -> Option<String> {
        match self {
            AnyExecutor::Local(e) => e.tail(lease).await,
            AnyExecutor::Kubernetes(e) => e.tail(lease).await,
        }
    }
}
