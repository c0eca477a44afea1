//! Executors: where a leased step runs. The agent only calls the [`Executor`] hooks; [`build`]
//! is the one place that names the kinds.

mod kubernetes;
mod local;

pub use kubernetes::{mlflow_credentials_from_env, KubeExecutor, PodSettings};
pub use local::LocalExecutor;

use std::time::Duration;

use anyhow::Context;
use concurrent_core::wire::{Lease, LeaseRef, Outcome};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, ExecutorKind};
use crate::edge::Edge;

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

    /// Whether steps see this machine's files, so the designer's inspections may read local
    /// project paths (a pod sees only its image).
    fn reads_local_paths(&self) -> bool {
        false
    }

    /// Steps that outlived a previous agent (pods), to adopt when their leases are valid.
    fn adoptable(&self) -> impl std::future::Future<Output = anyhow::Result<Vec<Lease>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Ends a step whose lease is no longer valid (found at adoption).
    fn discard(&self, _lease: &Lease) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }

    /// The agent stops: what becomes of the running steps. By default they are stopped, and
    /// their leases expire for a retry.
    fn shut_down(&self, running: &[CancellationToken]) {
        tracing::info!("stopping: no new work is leased; running steps are stopped and their leases expire for a retry");
        for r in running {
            r.cancel();
        }
    }
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

    async fn adoptable(&self) -> anyhow::Result<Vec<Lease>> {
        match self {
            AnyExecutor::Local(e) => e.adoptable().await,
            AnyExecutor::Kubernetes(e) => e.adoptable().await,
        }
    }

    async fn discard(&self, lease: &Lease) {
        match self {
            AnyExecutor::Local(e) => e.discard(lease).await,
            AnyExecutor::Kubernetes(e) => e.discard(lease).await,
        }
    }

    fn reads_local_paths(&self) -> bool {
        match self {
            AnyExecutor::Local(e) => e.reads_local_paths(),
            AnyExecutor::Kubernetes(e) => e.reads_local_paths(),
        }
    }

    fn shut_down(&self, running: &[CancellationToken]) {
        match self {
            AnyExecutor::Local(e) => e.shut_down(running),
            AnyExecutor::Kubernetes(e) => e.shut_down(running),
        }
    }
}

/// The executor the configuration asks for.
pub async fn build(
    cfg: &AgentConfig,
    edge: &Edge,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> anyhow::Result<AnyExecutor> {
    let project_root = std::fs::canonicalize(&cfg.project_root).with_context(|| {
        format!(
            "--project-root {} does not exist",
            cfg.project_root.display()
        )
    })?;
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("cannot create --work-dir {}", cfg.work_dir.display()))?;
    let work_dir = std::fs::canonicalize(&cfg.work_dir)?;
    Ok(match cfg.executor {
        ExecutorKind::Local => AnyExecutor::Local(LocalExecutor {
            work_dir,
            mlflow_uri: cfg.mlflow_uri.clone(),
            mlflow_bin: cfg.mlflow_bin.clone(),
            project_root,
            allow_path: cfg.allow_path.clone(),
            secrets_file: cfg.secrets_file.clone(),
            edge_url: cfg.edge_url.clone(),
            keep_work_dirs: cfg.keep_work_dirs,
            step_flags: cfg
                .conda_env_manager
                .map(|m| ["--conda-env-manager".to_string(), m.as_str().into()])
                .into_iter()
                .flatten()
                .chain(cfg.env_cache_bounds.args())
                .collect(),
        }),
        ExecutorKind::Kubernetes => {
            let settings = PodSettings {
                mlflow_credentials: mlflow_credentials_from_env(),
                cluster: cfg.cluster.clone(),
                default_image: cfg.default_image.clone(),
                agent_image: cfg.agent_image.clone(),
                service_account: cfg.service_account.clone(),
                image_pull_secrets: cfg.image_pull_secrets.clone(),
                node_selector: cfg.node_selector.iter().cloned().collect(),
                mlflow_uri: cfg
                    .step_mlflow_uri
                    .clone()
                    .unwrap_or_else(|| cfg.mlflow_uri.clone()),
                edge_url: cfg
                    .step_edge_url
                    .clone()
                    .unwrap_or_else(|| cfg.edge_url.clone()),
                git_credentials_secret: cfg.git_credentials_secret.clone(),
                allowed_service_accounts: cfg.allowed_service_accounts.clone(),
                gpu_type_label: cfg.gpu_type_label.clone(),
                conda_env_manager: cfg.conda_env_manager,
                template: cfg
                    .pod_template
                    .as_deref()
                    .map(kubernetes::pod::read_template)
                    .transpose()?,
            };
            AnyExecutor::Kubernetes(
                KubeExecutor::connect(
                    &cfg.namespace,
                    settings,
                    Duration::from_secs(cfg.pending_timeout),
                    Duration::from_secs(cfg.keep_finished),
                    edge.clone(),
                    work_dir.join("git"),
                    metrics,
                    cfg.pod_create_qps,
                )
                .await?,
            )
        }
    })
}
