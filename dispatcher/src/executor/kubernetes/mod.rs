//! The Kubernetes executor: one Pod (and one owned Secret) per attempt, watched with one shared
//! watcher; cancel deletes the pod; a restarted agent re-adopts its pods instead of starting
//! them again (pod names are deterministic per attempt, so a second create is `AlreadyExists`).

mod diagnose;
pub mod pod;

pub use pod::{mlflow_credentials_from_env, PodSettings};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use concurrent_core::logtail::{Tail, TAIL_LINES};
use concurrent_core::template::NodeKind;
use concurrent_core::wire::{Lease, LeaseRef, Outcome, PinRequest, WorkItem};

use crate::step::git;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::diagnose::PodState;
use super::Executor;

/// What the agent keeps of a watched pod: its status, read. Not the object itself, which
/// takes kilobytes per pod (an agent beside thousands of pods holds one of these for each).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    version: Option<String>,
    state: PodState,
}

impl Seen {
    fn of(pod: &Pod) -> Seen {
        Seen {
            version: pod.metadata.resource_version.clone(),
            state: diagnose::state(pod),
        }
    }
}

type Watchers = Arc<Mutex<HashMap<String, watch::Sender<Option<Seen>>>>>;

pub struct KubeExecutor {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    settings: PodSettings,
    /// How long a pod may stay unschedulable or unable to pull its image before the attempt
    /// fails (autoscalers need time to add nodes).
    pending_timeout: Duration,
    /// How long finished pods are kept for inspection.
    keep_finished: Duration,
    watchers: Watchers,
    /// Work item id → pod name of the steps running now, for live log tails.
    running: Arc<Mutex<HashMap<String, String>>>,
    /// The edge, for pinning git commits before pods start.
    edge: crate::edge::Edge,
    /// Bare clones of git projects, to read their MLproject before a pod is made.
    git_cache: std::path::PathBuf,
    /// For the pod start latency.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Pod creations are spread at `--pod-create-qps`.
    pace: crate::pace::Pace,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl KubeExecutor {
    /// Connects with the in-cluster service account, or `KUBECONFIG` outside a cluster.
    pub async fn connect(
        namespace: &str,
        settings: PodSettings,
        pending_timeout: Duration,
        keep_finished: Duration,
        edge: crate::edge::Edge,
        git_cache: std::path::PathBuf,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        pod_create_qps: f64,
    ) -> anyhow::Result<KubeExecutor> {
        let client = Client::try_default()
            .await
            .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        pods.list(&ListParams::default().limit(1))
            .await
            .with_context(|| {
                format!("cannot list pods in namespace {namespace:?}; check the agent's Role")
            })?;
        let watchers: Watchers = Arc::default();
        let selector = format!(
            "{}=concurrent,{}={}",
            pod::MANAGED_BY,
            pod::CLUSTER,
            settings.cluster
        );
        let (stream_pods, stream_watchers) = (pods.clone(), watchers.clone());
        tokio::spawn(async move {
            let events = watcher(stream_pods, watcher::Config::default().labels(&selector))
                .default_backoff();
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                let (name, pod) = match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        (p.metadata.name.clone().unwrap_or_default(), Some(p))
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        (p.metadata.name.clone().unwrap_or_default(), None)
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!("watching pods failed (retrying with backoff): {e}");
                        continue;
                    }
                };
                if let Some(tx) = stream_watchers.lock().expect("poisoned").get(&name) {
                    let _ = tx.send(pod.as_ref().map(Seen::of));
                }
            }
        });
        Ok(KubeExecutor {
            pods,
            secrets: Api::namespaced(client, namespace),
            settings,
            pending_timeout,
            keep_finished,
            watchers,
            running: Arc::default(),
            edge,
            git_cache,
            metrics,
            pace: crate::pace::Pace::per_second(pod_create_qps),
        })
    }

    /// What a pod needs to know of its project before it exists: for a git project, the run's
    /// commit (pinned here when no attempt has yet) and, when the node names no image, the
    /// `docker_env` image of its MLproject. Local projects live in the step's image, where only
    /// the pod can read them.
    async fn inspect(&self, lease: &Lease) -> anyhow::Result<Lease> {
        let mut lease = lease.clone();
        let step = &mut lease.item.step;
        let NodeKind::Project(p) = &step.kind else {
            return Ok(lease);
        };
        if !p.is_git() {
            return Ok(lease);
        }
        let log = self.git_cache.with_extension("log");
        let (bare, mut commit) = git::resolve(
            &p.uri,
            p.version.as_deref(),
            step.commit.as_deref(),
            &self.git_cache,
            &log,
        )
        .await?;
        if step.commit.is_none() {
            let answer = self
                .edge
                .pin(&PinRequest {
                    item_id: lease.item.id.clone(),
                    token: lease.token,
                    source: p.source_key(),
                    commit: commit.clone(),
                })
                .await
                .context("cannot pin the project's commit with the edge")?;
            if answer.commit != commit {
                commit = answer.commit;
                git::resolve(
                    &p.uri,
                    p.version.as_deref(),
                    Some(&commit),
                    &self.git_cache,
                    &log,
                )
                .await?;
            }
        }
        if step.image.is_none() {
            if let Some(text) =
                git::read_mlproject(&bare, &commit, p.sub_path.as_deref(), &log).await?
            {
                let spec: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("the project's MLproject is not valid YAML: {e}")
                })?;
                if let Some(docker) = spec.get("docker_env") {
                    if let Some(volumes) = docker
                        .get("volumes")
                        .and_then(|v| v.as_sequence())
                        .filter(|v| !v.is_empty())
                    {
                        let names: Vec<String> = volumes
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect();
                        anyhow::bail!(
                            "the MLproject's docker_env volumes {names:?} cannot be mapped into a pod (a pod has no host directories to bind); remove them from docker_env, and give the data as a node input or through a volume of the pod template"
                        );
                    }
                    step.image = docker
                        .get("image")
                        .and_then(|i| i.as_str())
                        .map(str::to_string);
                }
            }
        }
        step.commit = Some(commit);
        Ok(lease)
    }

    /// The leases behind this cluster's pods, rebuilt from their Secrets, for re-adoption.
    async fn leases_of_pods(&self) -> anyhow::Result<Vec<Lease>> {
        let selector = format!(
            "{}=concurrent,{}={}",
            pod::MANAGED_BY,
            pod::CLUSTER,
            self.settings.cluster
        );
        let mut leases = Vec::new();
        for p in self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            let name = p.metadata.name.clone().unwrap_or_default();
            let token = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(pod::LEASE_TOKEN))
                .and_then(|t| t.parse().ok());
            let secret = self.secrets.get_opt(&pod::secret_name(&name)).await?;
            let data = secret.and_then(|s| s.data).unwrap_or_default();
            let (Some(token), Some(spec), Some(step_token)) =
                (token, data.get("spec.json"), data.get("token"))
            else {
                tracing::warn!(pod = %name, "pod has no lease annotations or secret; deleting it");
                let _ = self.pods.delete(&name, &DeleteParams::default()).await;
                continue;
            };
            let item: WorkItem = serde_json::from_slice(&spec.0)?;
            leases.push(Lease {
                item,
                token,
                expires_at: 0,
                step_token: String::from_utf8_lossy(&step_token.0).into_owned(),
            });
        }
        Ok(leases)
    }

    /// Creates the attempt's pod and secret; whether this call created the pod (not an adopted
    /// one that already ran).
    async fn launch(&self, lease: &Lease) -> anyhow::Result<bool> {
        let name = pod::name_of(lease);
        // A pod that exists (an adopted attempt) keeps what it was made with.
        let lease = &match self.pods.get(&name).await {
            Ok(_) => lease.clone(),
            Err(_) => self.inspect(lease).await?,
        };
        let spec = pod::pod(lease, &self.settings)?;
        let (created, new) = match self.pods.create(&PostParams::default(), &spec).await {
            Ok(p) => (p, true),
            Err(e) if is_conflict(&e) => {
                tracing::info!(pod = %name, "pod exists; adopting it");
                (self.pods.get(&name).await?, false)
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create pod {name}")),
        };
        match self
            .secrets
            .create(
                &PostParams::default(),
                &pod::secret(lease, &created, &self.settings),
            )
            .await
        {
            Ok(_) => Ok(new),
            Err(e) if is_conflict(&e) => Ok(new),
            Err(e) => Err(e).with_context(|| format!("cannot create the secret of pod {name}")),
        }
    }

    /// The tail of a pod's log: the last lines, read with a byte limit, cut to size.
    async fn log_tail(&self, name: &str) -> String {
        let params = LogParams {
            container: Some("step".into()),
            tail_lines: Some(TAIL_LINES as i64),
            limit_bytes: Some(64 * 1024),
            ..Default::default()
        };
        let text = self.pods.logs(name, &params).await.unwrap_or_default();
        Tail::of(text.as_bytes())
    }

    fn clean_up_later(&self, name: String) {
        let (pods, after) = (self.pods.clone(), self.keep_finished);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = pods.delete(&name, &DeleteParams::default()).await;
        });
    }

    async fn observe(
        &self,
        name: &str,
        mut rx: watch::Receiver<Option<Seen>>,
        cancel: CancellationToken,
        launched: Option<Instant>,
    ) -> Option<Outcome> {
        let mut stuck_since: Option<Instant> = None;
        let mut started = launched.is_none();
        let mut seen = false;
        loop {
            let state = rx.borrow_and_update().as_ref().map(|s| s.state.clone());
            let present = state.is_some();
            if !started && matches!(state, Some(PodState::Running | PodState::Succeeded)) {
                started = true;
                if let Some(at) = launched {
                    self.metrics.pod_start.observe(at.elapsed());
                }
            }
            match state {
                None if seen => {
                    return Some(Outcome::Failed {
                        error: format!("pod {name} was deleted before it finished"),
                        facts: Default::default(),
                    })
                }
                None => {}
                Some(PodState::Succeeded) => {
                    // The step runner reported its outcome itself, with its step token.
                    self.clean_up_later(name.to_string());
                    return None;
                }
                Some(PodState::Failed(why)) => {
                    let tail = Box::pin(self.log_tail(name)).await;
                    self.clean_up_later(name.to_string());
                    return Some(Outcome::Failed {
                        error: format!("{why}; pod {name}, last lines of its log:\n{tail}"),
                        facts: Default::default(),
                    });
                }
                Some(PodState::Pending(Some(why))) => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.pending_timeout {
                        let _ = Box::pin(self.pods.delete(name, &DeleteParams::default())).await;
                        return Some(Outcome::Failed {
                            error: format!(
                                "{why}; gave up after {} s",
                                self.pending_timeout.as_secs()
                            ),
                            facts: Default::default(),
                        });
                    }
                }
                Some(_) => stuck_since = None,
            }
            seen |= present;
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Some(Outcome::Failed { error: "the pod watch ended".into(), facts: Default::default(), }) },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cancel.cancelled() => {
                    let _ = Box::pin(self.pods.delete(name, &DeleteParams::default())).await;
                    tracing::info!(pod = %name, "step killed (cancelled or lease lost): pod deleted");
                    return None;
                }
            }
        }
    }
}

impl Executor for KubeExecutor {
    async fn adoptable(&self) -> anyhow::Result<Vec<Lease>> {
        self.leases_of_pods().await
    }

    /// Deletes a pod that is not (or no longer) wanted.
    async fn discard(&self, lease: &Lease) {
        let _ = self
            .pods
            .delete(&pod::name_of(lease), &DeleteParams::default())
            .await;
    }

    fn shut_down(&self, _running: &[CancellationToken]) {
        // Pods keep running; a restarted agent (or another one) re-adopts them.
        tracing::info!("stopping: no new work is leased; running pods are left to be re-adopted");
    }

    async fn tail(&self, lease: &LeaseRef) -> Option<String> {
        let name = self
            .running
            .lock()
            .expect("poisoned")
            .get(&lease.item_id)
            .cloned()?;
        // A pod still waiting for its node or image has no log yet: no tail, not an error.
        Some(self.log_tail(&name).await).filter(|t| !t.is_empty())
    }

    async fn run(&self, lease: &Lease, cancel: CancellationToken) -> Option<Outcome> {
        let name = pod::name_of(lease);
        let (tx, rx) = watch::channel(None);
        self.watchers
            .lock()
            .expect("poisoned")
            .insert(name.clone(), tx);
        self.running
            .lock()
            .expect("poisoned")
            .insert(lease.item.id.clone(), name.clone());
        let launched = Instant::now();
        // Each start waits for its turn at the pace before anything of its pod is made: a
        // thousand leases at once used to build a thousand pod specs (and the calls' state)
        // that then waited together, a peak of the heap the process kept (37 KiB per pod).
        self.pace.wait().await;
        // The calls of a pod's start are boxed: a step's task lives as long as its pod, and
        // would otherwise keep room for their (large) state all that time.
        let result = match Box::pin(self.launch(lease)).await {
            Ok(new) => {
                if let Ok(p) = Box::pin(self.pods.get(&name)).await {
                    if let Some(tx) = self.watchers.lock().expect("poisoned").get(&name) {
                        tx.send_if_modified(|cur| {
                            let newer = cur
                                .as_ref()
                                .is_none_or(|c| c.version < p.metadata.resource_version);
                            if newer {
                                *cur = Some(Seen::of(&p));
                            }
                            newer
                        });
                    }
                }
                // An adopted pod started long ago: its start is not measured again.
                self.observe(&name, rx, cancel, new.then_some(launched))
                    .await
            }
            Err(e) => Some(Outcome::Failed {
                error: format!("{e:#}"),
                facts: Default::default(),
            }),
        };
        self.watchers.lock().expect("poisoned").remove(&name);
        self.running
            .lock()
            .expect("poisoned")
            .remove(&lease.item.id);
        result
    }
}
