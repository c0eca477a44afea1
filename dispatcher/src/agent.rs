//! The agent's lifecycle: set up, claim loop (long-poll leases while there is capacity),
//! heartbeat loop, tear down on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use concurrent_core::wire::{Lease, LeaseRef, LeaseStatus};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::edge::{check_url, Edge, EdgeError};
use crate::executor::{AnyExecutor, Executor, KubeExecutor, LocalExecutor, PodSettings};
use crate::metrics::Metrics;
use crate::ExecutorKind;

/// How long one lease request waits for work at the edge.
const LONG_POLL: Duration = Duration::from_secs(20);

#[derive(clap::Args, Debug)]
pub struct AgentConfig {
    /// Base URL of the edge API, e.g. https://concurrent.example.com.
    #[arg(long, env = "CONCURRENT_EDGE_URL")]
    pub edge_url: String,
    /// The cluster this agent serves: it pulls work from this cluster's queue.
    #[arg(long, env = "CONCURRENT_CLUSTER", default_value = "local")]
    pub cluster: String,
    /// File holding the agent's API token (never passed on the command line).
    #[arg(long, env = "CONCURRENT_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Where steps run.
    #[arg(long, env = "CONCURRENT_EXECUTOR", value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Most steps running at once.
    #[arg(long, env = "CONCURRENT_CAPACITY", default_value_t = 2)]
    pub capacity: u32,
    /// MLflow tracking server as the steps reach it.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_uri: String,
    /// Directory for the steps' inputs, outputs and logs.
    #[arg(long, env = "CONCURRENT_WORK_DIR", default_value = ".state/agent")]
    pub work_dir: PathBuf,
    /// Base directory for relative project paths in templates; local projects and input paths
    /// must lie inside it or an --allow-path directory.
    #[arg(long, env = "CONCURRENT_PROJECT_ROOT", default_value = ".")]
    pub project_root: PathBuf,
    /// Another directory whose projects and input paths templates may use (repeatable).
    #[arg(long = "allow-path")]
    pub allow_path: Vec<PathBuf>,
    /// Local executor: a JSON file of the secrets nodes may use in `secretEnv`,
    /// `{"<secret>": {"<key>": "<value>"}}` (like Kubernetes Secrets). Read at each attempt, so
    /// changes apply without a restart; keep it readable by the agent only.
    #[arg(long, env = "CONCURRENT_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// The `mlflow` executable the steps use.
    #[arg(long, env = "CONCURRENT_MLFLOW_BIN", default_value = "mlflow")]
    pub mlflow_bin: String,
    /// This agent's name in leases (default: host name and process id).
    #[arg(long, env = "CONCURRENT_AGENT_NAME")]
    pub name: Option<String>,
    /// Keep each step's directory after it ends (for debugging).
    #[arg(long)]
    pub keep_work_dirs: bool,
    /// Serve /healthz and Prometheus /metrics on this address (e.g. 0.0.0.0:9090).
    #[arg(long, env = "CONCURRENT_LISTEN")]
    pub listen: Option<String>,

    /// Kubernetes: the namespace of the step pods.
    #[arg(long, env = "CONCURRENT_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Kubernetes: image for nodes that name none (it needs Python, MLflow and git).
    #[arg(
        long,
        env = "CONCURRENT_DEFAULT_IMAGE",
        default_value = "ghcr.io/mlflow/mlflow:v3.17.2"
    )]
    pub default_image: String,
    /// Kubernetes: the agent's own image; its /concurrent is copied into every step pod.
    #[arg(
        long,
        env = "CONCURRENT_AGENT_IMAGE",
        default_value = "concurrent-agent:latest"
    )]
    pub agent_image: String,
    /// Kubernetes: service account of the step pods.
    #[arg(long, env = "CONCURRENT_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Kubernetes: image pull secret for the step pods (repeatable).
    #[arg(long = "image-pull-secret")]
    pub image_pull_secrets: Vec<String>,
    /// Kubernetes: node selector `key=value` for the step pods (repeatable).
    #[arg(long = "node-selector", value_parser = parse_key_value)]
    pub node_selector: Vec<(String, String)>,
    /// Kubernetes: MLflow as the pods reach it (default: --mlflow-uri).
    #[arg(long, env = "CONCURRENT_STEP_MLFLOW_URI")]
    pub step_mlflow_uri: Option<String>,
    /// Kubernetes: the edge API as the pods reach it (default: --edge-url).
    #[arg(long, env = "CONCURRENT_STEP_EDGE_URL")]
    pub step_edge_url: Option<String>,
    /// Kubernetes: seconds a pod may stay unschedulable or unable to pull its image.
    #[arg(long, env = "CONCURRENT_PENDING_TIMEOUT", default_value_t = 600)]
    pub pending_timeout: u64,
    /// Kubernetes: a Secret with git credentials for private repositories (`.git-credentials`
    /// for https, or `ssh-privatekey` and `known_hosts` for ssh), mounted read-only into every
    /// step pod at /concurrent-git. Mount the same Secret into the agent at /concurrent-git and
    /// set CONCURRENT_GIT_CREDENTIALS=/concurrent-git so it can read private projects too.
    #[arg(long, env = "CONCURRENT_GIT_CREDENTIALS_SECRET")]
    pub git_credentials_secret: Option<String>,
    /// Kubernetes: seconds finished pods are kept before they are deleted.
    #[arg(long, env = "CONCURRENT_KEEP_FINISHED", default_value_t = 300)]
    pub keep_finished: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// A step this agent runs.
struct Running {
    token: u64,
    cancel: CancellationToken,
}

type Table = Arc<Mutex<HashMap<String, Running>>>;

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    check_url(&cfg.edge_url)?;
    if let Some(why) = concurrent_core::names::label_value_problem(&cfg.cluster) {
        bail!("--cluster {:?} {why}", cfg.cluster);
    }
    if !(1..=1000).contains(&cfg.capacity) {
        bail!("--capacity {} must be between 1 and 1000", cfg.capacity);
    }
    let token = crate::read_secret(&cfg.token_file)?;
    let name = cfg.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "agent".into());
        format!("{host}-{}", std::process::id())
    });
    let project_root = std::fs::canonicalize(&cfg.project_root).with_context(|| {
        format!(
            "--project-root {} does not exist",
            cfg.project_root.display()
        )
    })?;
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("cannot create --work-dir {}", cfg.work_dir.display()))?;
    let work_dir = std::fs::canonicalize(&cfg.work_dir)?;
    let edge = Edge::new(&cfg.edge_url, &cfg.cluster, token, name.clone())?;
    let executor = Arc::new(match cfg.executor {
        ExecutorKind::Local => AnyExecutor::Local(LocalExecutor {
            work_dir,
            mlflow_uri: cfg.mlflow_uri.clone(),
            mlflow_bin: cfg.mlflow_bin.clone(),
            project_root,
            allow_path: cfg.allow_path.clone(),
            secrets_file: cfg.secrets_file.clone(),
            edge_url: cfg.edge_url.clone(),
            keep_work_dirs: cfg.keep_work_dirs,
        }),
        ExecutorKind::Kubernetes => {
            let settings = PodSettings {
                mlflow_credentials: crate::executor::mlflow_credentials_from_env(),
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
            };
            let pending = Duration::from_secs(cfg.pending_timeout);
            AnyExecutor::Kubernetes(
                KubeExecutor::connect(
                    &cfg.namespace,
                    settings,
                    pending,
                    Duration::from_secs(cfg.keep_finished),
                    edge.clone(),
                    work_dir.join("git"),
                )
                .await?,
            )
        }
    });
    tracing::info!(agent = %name, cluster = %cfg.cluster, edge = %cfg.edge_url, capacity = cfg.capacity, executor = ?cfg.executor, "agent started");

    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &cfg.listen {
        crate::metrics::serve(addr, metrics.clone()).await?;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let running: Table = Arc::default();
    let freed = Arc::new(Notify::new());
    // Until the edge tells the lease TTL (with the first lease), heartbeat as if it were short.
    let ttl = Arc::new(Mutex::new(Duration::from_secs(3)));
    adopt(&edge, &executor, &running, &freed, &metrics).await?;
    let heartbeats = tokio::spawn(heartbeat_loop(
        edge.clone(),
        executor.clone(),
        running.clone(),
        ttl.clone(),
        shutdown.clone(),
        metrics.clone(),
    ));

    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let free = cfg
            .capacity
            .saturating_sub(running.lock().expect("poisoned").len() as u32);
        if free == 0 {
            tokio::select! {
                _ = freed.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        metrics.lease_requests.fetch_add(1, Ordering::Relaxed);
        let asked = std::time::Instant::now();
        let answer = tokio::select! {
            a = edge.lease(free, LONG_POLL) => a,
            _ = shutdown.cancelled() => break,
        };
        match answer {
            Ok(resp) => {
                failures = 0;
                *ttl.lock().expect("poisoned") = Duration::from_millis(resp.lease_ttl_ms.max(1000));
                if !resp.leases.is_empty() {
                    metrics.leases_granted.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .lease_wait_ms_sum
                        .fetch_add(asked.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                for lease in resp.leases {
                    start_step(lease, &edge, &executor, &running, &freed, &metrics);
                }
            }
            Err(e) => {
                metrics.lease_errors.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                let wait =
                    Duration::from_millis((500u64 << failures.min(6)) + fastrand::u64(0..500));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "leasing work failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
    if matches!(executor.as_ref(), AnyExecutor::Kubernetes(_)) {
        // Pods keep running; a restarted agent (or another one) re-adopts them.
        tracing::info!("stopping: no new work is leased; running pods are left to be re-adopted");
    } else {
        tracing::info!("stopping: no new work is leased; running steps are stopped and their leases expire for a retry");
        for r in running.lock().expect("poisoned").values() {
            r.cancel.cancel();
        }
    }
    heartbeats.abort();
    Ok(())
}

/// After a restart: pods of this cluster whose leases are still valid are watched again instead
/// of being started again; the others are deleted.
async fn adopt(
    edge: &Edge,
    executor: &Arc<AnyExecutor>,
    running: &Table,
    freed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let AnyExecutor::Kubernetes(kube) = executor.as_ref() else {
        return Ok(());
    };
    let leases = kube.adoptable().await?;
    if leases.is_empty() {
        return Ok(());
    }
    let refs = leases
        .iter()
        .map(|l| LeaseRef {
            item_id: l.item.id.clone(),
            token: l.token,
        })
        .collect();
    let answer = edge
        .heartbeat(refs, Default::default())
        .await
        .context("cannot check the leases of running pods")?;
    for lease in leases {
        match answer.leases.get(&lease.item.id) {
            Some(LeaseStatus::Active) => {
                tracing::info!(item = %lease.item.id, "re-adopting the pod of a valid lease");
                start_step(lease, edge, executor, running, freed, metrics);
            }
            status => {
                tracing::info!(item = %lease.item.id, ?status, "deleting the pod of a lease that is no longer valid");
                kube.discard(&lease).await;
            }
        }
    }
    Ok(())
}

fn start_step(
    lease: Lease,
    edge: &Edge,
    executor: &Arc<AnyExecutor>,
    running: &Table,
    freed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
) {
    let id = lease.item.id.clone();
    let cancel = CancellationToken::new();
    running.lock().expect("poisoned").insert(
        id.clone(),
        Running {
            token: lease.token,
            cancel: cancel.clone(),
        },
    );
    metrics.leases_held.fetch_add(1, Ordering::Relaxed);
    tracing::info!(item = %id, token = lease.token, "step leased");
    let (edge, executor, running, freed, metrics) = (
        edge.clone(),
        executor.clone(),
        running.clone(),
        freed.clone(),
        metrics.clone(),
    );
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let outcome = executor.run(&lease, cancel.clone()).await;
        let counter = match &outcome {
            Some(concurrent_core::wire::Outcome::Succeeded { .. }) => &metrics.steps_succeeded,
            Some(_) => &metrics.steps_failed,
            None => &metrics.steps_stopped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics.leases_held.fetch_sub(1, Ordering::Relaxed);
        if let Some(outcome) = outcome {
            let ok = matches!(outcome, concurrent_core::wire::Outcome::Succeeded { .. });
            // The lease stays in the table while reporting, so heartbeats keep it alive.
            match edge
                .complete_until_settled(&id, lease.token, outcome.bounded(), &cancel)
                .await
            {
                Ok(()) => {
                    tracing::info!(item = %id, succeeded = ok, seconds = started.elapsed().as_secs_f64(), "step reported")
                }
                Err(EdgeError::Refused(why)) => {
                    tracing::warn!(item = %id, "the edge refused the result: {why}")
                }
                Err(e) => {
                    tracing::error!(item = %id, "the result cannot be reported: {e}")
                }
            }
        }
        running.lock().expect("poisoned").remove(&id);
        freed.notify_one();
    });
}

async fn heartbeat_loop(
    edge: Edge,
    executor: Arc<AnyExecutor>,
    running: Table,
    ttl: Arc<Mutex<Duration>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    loop {
        let period = *ttl.lock().expect("poisoned") / 3;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.cancelled() => return,
        }
        let leases: Vec<LeaseRef> = running
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(id, r)| LeaseRef {
                item_id: id.clone(),
                token: r.token,
            })
            .collect();
        if leases.is_empty() {
            continue;
        }
        // Pods' tails are API calls: a few at a time, so a thousand steps do not stampede it.
        let tails: Vec<Option<(String, String)>> = futures::stream::iter(leases.clone())
            .map(|lease| {
                let executor = executor.clone();
                async move { executor.tail(&lease).await.map(|t| (lease.item_id, t)) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let tails = concurrent_core::wire::fit_tails(tails.into_iter().flatten().collect());
        match edge.heartbeat(leases, tails).await {
            Ok(resp) => {
                let table = running.lock().expect("poisoned");
                for (id, status) in resp.leases {
                    if status != LeaseStatus::Active {
                        if let Some(r) = table.get(&id) {
                            tracing::warn!(item = %id, ?status, "stopping the step");
                            r.cancel.cancel();
                        }
                    }
                }
            }
            Err(e) => {
                metrics.heartbeat_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(agent = edge.agent(), "heartbeat failed: {e}");
            }
        }
    }
}

async fn watch_signals(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
}
