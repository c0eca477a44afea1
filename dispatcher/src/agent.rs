//! The agent's lifecycle: set up, claim loop (long-poll leases while there is capacity),
//! heartbeat loop, tear down on SIGINT/SIGTERM.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use backon::{BackoffBuilder, Retryable};
use concurrent_core::wire::{
    CompleteRequest, InspectAnswer, Lease, LeaseRef, LeaseStatus, Outcome,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::edge::{check_url, Edge, EdgeError};
use crate::executor::{AnyExecutor, Executor};
use crate::metrics::Metrics;

/// How long one lease request waits for work at the edge.
const LONG_POLL: Duration = Duration::from_secs(20);
/// Attempts' MLflow runs created at once: an agent with room for a thousand steps that leases
/// them in one answer must not open a thousand connections to MLflow (which then refuses them
/// all, and every create backs off).
const RUN_CREATES_AT_ONCE: usize = 16;

/// A step this agent runs.
struct Running {
    token: u64,
    cancel: CancellationToken,
    /// The attempt's MLflow run, once made; `reported` once a heartbeat delivered it.
    mlflow_run: Option<String>,
    reported: bool,
    /// Why the edge had the step stopped (its lease was cancelled or lost), once it did.
    stopped: Option<LeaseStatus>,
}

/// The edge's answer to a batch of new leases' confirmation, awaited by each of their steps:
/// what it says of each lease (nothing when the confirmation failed).
type Confirm = futures::future::Shared<
    futures::future::BoxFuture<'static, Arc<BTreeMap<String, LeaseStatus>>>,
>;

/// The agent's shared state: what runs, and how to reach the edge and the executor.
#[derive(Clone)]
struct Agent {
    edge: Edge,
    /// Reports finished steps, several in one call when they finish together.
    reporter: crate::report::Reporter,
    executor: Arc<AnyExecutor>,
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// Signalled when a step ends (capacity is free).
    freed: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// The lease TTL the edge announced; heartbeats go at a third of it.
    ttl: Arc<Mutex<Duration>>,
    shutdown: CancellationToken,
    capacity: u32,
    inspector: Arc<crate::inspect::Inspector>,
    /// Creates each leased attempt's MLflow run (the edge creates none ahead of the work).
    mlflow: Arc<crate::mlflow::Mlflow>,
    /// At most [`RUN_CREATES_AT_ONCE`] of those creates in flight.
    run_creates: Arc<tokio::sync::Semaphore>,
    /// Wakes the heartbeat loop early: a new MLflow run should reach the run view at once.
    report_now: Arc<Notify>,
    /// The artifact roots of the runs it made, handed to the steps that read them.
    roots: Arc<Mutex<crate::roots::KnownRoots>>,
}

/// Runs the agent until SIGINT/SIGTERM: set up, adopt what survives a restart, claim work,
/// tear down.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let agent = Agent::set_up(&cfg).await?;
    agent.adopt().await?;
    let heartbeats = tokio::spawn(agent.clone().heartbeat_loop());
    let inspections = tokio::spawn(agent.clone().inspect_loop());
    agent.claim_loop().await;
    agent.tear_down();
    heartbeats.abort();
    inspections.abort();
    Ok(())
}

impl Agent {
    /// Checks the configuration, makes the executor, serves metrics, watches signals.
    async fn set_up(cfg: &AgentConfig) -> anyhow::Result<Agent> {
        check_url(&cfg.edge_url)?;
        if let Some(why) = concurrent_core::names::label_value_problem(&cfg.cluster) {
            bail!("--cluster {:?} {why}", cfg.cluster);
        }
        if !(cfg.pod_create_qps > 0.0 && cfg.pod_create_qps <= 10_000.0) {
            bail!(
                "--pod-create-qps {} must be above 0 and at most 10000",
                cfg.pod_create_qps
            );
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
        let edge = Edge::new(&cfg.edge_url, &cfg.cluster, token, name.clone())?;
        let metrics = Arc::new(Metrics::default());
        let executor = Arc::new(crate::executor::build(cfg, &edge, metrics.clone()).await?);
        let local_paths = executor.reads_local_paths();
        tracing::info!(agent = %name, cluster = %cfg.cluster, edge = %cfg.edge_url, capacity = cfg.capacity, executor = ?cfg.executor, "agent started");
        if let Some(addr) = &cfg.listen {
            crate::metrics::serve(addr, metrics.clone()).await?;
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        Ok(Agent {
            reporter: crate::report::Reporter::start(edge.clone()),
            edge,
            executor,
            running: Arc::default(),
            freed: Arc::new(Notify::new()),
            metrics,
            // Until the edge tells the lease TTL (with the first lease), heartbeat as if short.
            ttl: Arc::new(Mutex::new(Duration::from_secs(3))),
            shutdown,
            capacity: cfg.capacity,
            report_now: Arc::new(Notify::new()),
            roots: Arc::default(),
            run_creates: Arc::new(tokio::sync::Semaphore::new(RUN_CREATES_AT_ONCE)),
            mlflow: Arc::new(crate::mlflow::Mlflow::new(
                &cfg.mlflow_uri,
                std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
            )?),
            inspector: Arc::new(crate::inspect::Inspector {
                project_root: cfg.project_root.clone(),
                allow_path: cfg.allow_path.clone(),
                git_cache: cfg.work_dir.join("git"),
                local_paths,
            }),
        })
    }

    /// After a restart: steps whose leases are still valid (pods of this cluster) are watched
    /// again instead of being started again; the executor discards the others.
    async fn adopt(&self) -> anyhow::Result<()> {
        let leases = self.executor.adoptable().await?;
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
        let answer = self
            .edge
            .heartbeat(refs, Default::default(), Default::default())
            .await
            .context("cannot check the leases of running steps")?;
        for lease in leases {
            match answer.leases.get(&lease.item.id) {
                Some(LeaseStatus::Active) => {
                    tracing::info!(item = %lease.item.id, "re-adopting the step of a valid lease");
                    self.start_step(lease, None);
                }
                status => {
                    tracing::info!(item = %lease.item.id, ?status, "discarding the step of a lease that is no longer valid");
                    self.executor.discard(&lease).await;
                }
            }
        }
        Ok(())
    }

    /// Long-polls for work while there is capacity, until shut down.
    async fn claim_loop(&self) {
        // Backoff while the edge cannot be reached: jittered, doubling to half a minute, reset
        // by the next answer.
        let policy = || crate::retry::edge_poll().build();
        let mut backoff = policy();
        while !self.shutdown.is_cancelled() {
            let free = self
                .capacity
                .saturating_sub(self.running.lock().expect("poisoned").len() as u32);
            if free == 0 {
                self.metrics.health.waiting_for_capacity(true);
                tokio::select! {
                    _ = self.freed.notified() => {}
                    _ = self.shutdown.cancelled() => break,
                }
                self.metrics.health.waiting_for_capacity(false);
                continue;
            }
            self.metrics.lease_requests.fetch_add(1, Ordering::Relaxed);
            let asked = std::time::Instant::now();
            let answer = tokio::select! {
                a = self.edge.lease(free, LONG_POLL) => a,
                _ = self.shutdown.cancelled() => break,
            };
            match answer {
                Ok(resp) => {
                    backoff = policy();
                    self.metrics.health.claimed(Ok(()));
                    *self.ttl.lock().expect("poisoned") =
                        Duration::from_millis(resp.lease_ttl_ms.max(1000));
                    if !resp.leases.is_empty() {
                        self.metrics.lease_latency.observe(asked.elapsed());
                    }
                    if !resp.leases.is_empty() {
                        let arrived = std::time::Instant::now();
                        let confirm = self.confirm(&resp.leases);
                        for lease in resp.leases {
                            self.start_step(lease, Some((arrived, confirm.clone())));
                        }
                    }
                }
                Err(e) => {
                    self.metrics.lease_errors.fetch_add(1, Ordering::Relaxed);
                    self.metrics.health.claimed(Err(e.to_string()));
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "leasing work failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Confirms new leases the moment they arrive (their first heartbeat): the edge hands a
    /// lease nobody confirms back to the queue within seconds (core's `lease::confirm_window`),
    /// so an agent that dies with work in hand holds it up only that long. The answer is shared
    /// by the leases' steps, which make their MLflow runs meanwhile and start only once their
    /// lease is confirmed; a lease the edge no longer holds for this agent is dropped unstarted.
    fn confirm(&self, leases: &[Lease]) -> Confirm {
        let refs: Vec<LeaseRef> = leases
            .iter()
            .map(|l| LeaseRef {
                item_id: l.item.id.clone(),
                token: l.token,
            })
            .collect();
        let (edge, count) = (self.edge.clone(), leases.len());
        let answer = async move {
            match edge
                .heartbeat(refs, Default::default(), Default::default())
                .await
            {
                Ok(answer) => Arc::new(answer.leases),
                Err(e) => {
                    // They lapse at the edge and go back to the queue, uncounted.
                    tracing::warn!(error = %e, leases = count, "new leases could not be confirmed; leaving them to the queue");
                    Arc::default()
                }
            }
        };
        // Spawned: it goes out at once, whichever step polls it first.
        let task = tokio::spawn(answer);
        async move { task.await.unwrap_or_default() }
            .boxed()
            .shared()
    }

    /// Answers the designer's project inspections, whatever the steps keep the agent busy
    /// with, until shut down.
    async fn inspect_loop(self) {
        let mut backoff = crate::retry::edge_poll().build();
        while !self.shutdown.is_cancelled() {
            match self.edge.inspections(LONG_POLL).await {
                Ok(list) => {
                    backoff = crate::retry::edge_poll().build();
                    for i in list {
                        let (edge, inspector) = (self.edge.clone(), self.inspector.clone());
                        tokio::spawn(async move {
                            let result = inspector.inspect(&i.request).await;
                            tracing::info!(uri = %concurrent_core::refs::display_url(&i.request.uri), ok = result.is_ok(), "inspected a project for the designer");
                            let (project, error) = match result {
                                Ok(p) => (Some(p), None),
                                Err(e) => (None, Some(e)),
                            };
                            let answer = InspectAnswer {
                                id: i.id,
                                project,
                                error,
                            };
                            if let Err(e) = edge.answer_inspection(&answer).await {
                                tracing::warn!("an inspection's answer could not be sent: {e}");
                            }
                        });
                    }
                }
                Err(e) => {
                    // An edge without inspections (older) answers 404: ask rarely.
                    let wait = if matches!(e, EdgeError::Permanent(_)) {
                        Duration::from_secs(300)
                    } else {
                        backoff.next().unwrap_or(Duration::from_secs(30))
                    };
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "waiting for inspections failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    /// No new work is leased; the executor decides what becomes of the running steps.
    fn tear_down(&self) {
        let running: Vec<CancellationToken> = self
            .running
            .lock()
            .expect("poisoned")
            .values()
            .map(|r| r.cancel.clone())
            .collect();
        self.executor.shut_down(&running);
    }

    /// Runs a leased step and reports its outcome, keeping the lease in the table (so its
    /// heartbeats go on) until the edge has the outcome. `leased`, for a new lease (not an
    /// adopted step): when it came (the start of the timeline the report logs) and its
    /// confirmation, which the step waits for after making its MLflow run.
    fn start_step(&self, lease: Lease, leased: Option<(std::time::Instant, Confirm)>) {
        let id = lease.item.id.clone();
        let cancel = CancellationToken::new();
        let known = Some(lease.item.step.mlflow.run_id.clone()).filter(|r| !r.is_empty());
        self.running.lock().expect("poisoned").insert(
            id.clone(),
            Running {
                token: lease.token,
                cancel: cancel.clone(),
                mlflow_run: known,
                reported: false,
                stopped: None,
            },
        );
        self.metrics.leases_held.fetch_add(1, Ordering::Relaxed);
        tracing::info!(item = %id, token = lease.token, "step leased");
        let agent = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (arrived, confirm) = leased.unzip();
            let mut timeline = crate::timeline::Timeline::new(arrived.unwrap_or(started));
            // The attempt's MLflow run is made while the lease's confirmation is on its way: a
            // lease that lapses unconfirmed goes back to the queue marked so that the next
            // holder looks for the run by its key before making one.
            let confirmed = async {
                let status = match confirm {
                    Some(c) => c.await.get(&id).cloned(),
                    None => Some(LeaseStatus::Active),
                };
                if status != Some(LeaseStatus::Active) {
                    cancel.cancel();
                }
                (status, std::time::Instant::now())
            };
            // Boxed: this task lives as long as its step, and would otherwise keep room for the
            // create's (large) state all that time.
            let (made, (status, confirmed_at)) =
                tokio::join!(Box::pin(agent.make_run(lease, &cancel)), confirmed);
            timeline.mark_at("confirm", confirmed_at);
            if status != Some(LeaseStatus::Active) {
                tracing::warn!(item = %id, ?status, "a new lease was not confirmed; its step is not started");
                agent.drop_unconfirmed(&id, made.ok(), status).await;
                return;
            }
            let (lease, outcome, no_run) = match made {
                Ok(mut lease) => {
                    timeline.mark("mlflow_run");
                    let step = &lease.item.step;
                    let inputs = step.inputs.values().flatten().map(|f| f.run_id.as_str());
                    let roots = agent.roots.lock().expect("poisoned").of(inputs);
                    lease.item.step.input_roots = roots;
                    let outcome = agent.executor.run(&lease, cancel.clone()).await;
                    timeline.mark("step");
                    (lease, outcome, false)
                }
                // MLflow refused the create, and no run can exist: no earlier agent's (a
                // first lease) and none of a create of ours whose answer was lost.
                Err((lease, outcome)) => {
                    let none = lease
                        .item
                        .step
                        .child_run
                        .as_ref()
                        .is_some_and(|c| !c.maybe_exists);
                    (lease, outcome, none)
                }
            };
            let mlflow_run = Some(lease.item.step.mlflow.run_id.clone()).filter(|r| !r.is_empty());
            let lease_run = mlflow_run.clone();
            let m = &agent.metrics;
            let counter = match &outcome {
                Some(Outcome::Succeeded { .. }) => &m.steps_succeeded,
                Some(_) => &m.steps_failed,
                None => &m.steps_stopped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            m.leases_held.fetch_sub(1, Ordering::Relaxed);
            m.step_duration.observe(started.elapsed());
            if let Some(outcome) = outcome {
                let ok = matches!(outcome, Outcome::Succeeded { .. });
                let request = CompleteRequest {
                    item_id: id.clone(),
                    token: lease.token,
                    no_mlflow_run: no_run && mlflow_run.is_none(),
                    outcome: outcome.bounded(),
                    mlflow_run_id: mlflow_run,
                };
                match crate::edge::complete_until_settled(&id, &cancel, || {
                    agent.reporter.complete(request.clone())
                })
                .await
                {
                    Ok(()) => {
                        timeline.mark("report");
                        tracing::info!(item = %id, succeeded = ok, seconds = started.elapsed().as_secs_f64(), leased_at_ms = timeline.epoch_ms, phases_ms = %timeline, "step reported")
                    }
                    Err(EdgeError::Refused(why)) => {
                        tracing::warn!(item = %id, "the edge refused the result: {why}")
                    }
                    Err(e) => tracing::error!(item = %id, "the result cannot be reported: {e}"),
                }
            }
            let stopped = agent
                .running
                .lock()
                .expect("poisoned")
                .remove(&id)
                .and_then(|r| r.stopped);
            agent.freed.notify_one();
            if let (Some(status), Some(run)) = (stopped, &lease_run) {
                agent.end_stopped_run(&id, run, status).await;
            }
        });
    }

    /// Forgets a step whose lease was not confirmed. The run made for it stays for the lease's
    /// next holder to adopt, unless the run was cancelled: then nobody will, and it ends as
    /// the edge ends the attempt's.
    async fn drop_unconfirmed(&self, id: &str, made: Option<Lease>, status: Option<LeaseStatus>) {
        self.running.lock().expect("poisoned").remove(id);
        self.metrics.leases_held.fetch_sub(1, Ordering::Relaxed);
        self.freed.notify_one();
        let run = made
            .map(|l| l.item.step.mlflow.run_id)
            .filter(|r| !r.is_empty());
        if let (Some(LeaseStatus::Cancelled), Some(run)) = (status, run) {
            self.end_stopped_run(id, &run, LeaseStatus::Cancelled).await;
        }
    }

    /// A step the edge had stopped may have set its MLflow run's status after the edge closed
    /// it: RUNNING (MLflow's client resumes a run a step logs to), or FINISHED (it ended
    /// between its lease's lapse and the kill). Once the step is gone, its run gets the status
    /// the edge gave the attempt. Tried while MLflow is away, for a while.
    async fn end_stopped_run(&self, id: &str, run: &str, why: LeaseStatus) {
        let status = match why {
            LeaseStatus::Cancelled => "KILLED",
            _ => "FAILED",
        };
        let ended = (|| self.mlflow.end_as(run, status))
            .retry(crate::retry::transfer())
            .when(crate::mlflow::Unavailable::caused)
            .await;
        match ended {
            Ok(Some(was)) => {
                tracing::info!(item = %id, run, status, was, "the stopped step had set its MLflow run's status after the edge closed it; set it back")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(item = %id, run, "the stopped step's MLflow run could not be checked: {e:#}")
            }
        }
    }

    /// Creates the attempt's MLflow run (or finds the one an agent that died made) before the
    /// step starts, trying again while MLflow is away and the lease lives. `Err` carries the
    /// outcome instead of a step: a failure when MLflow refuses, nothing when stopped.
    async fn make_run(
        &self,
        mut lease: Lease,
        cancel: &CancellationToken,
    ) -> Result<Lease, (Lease, Option<Outcome>)> {
        if lease.item.step.child_run.is_none() || !lease.item.step.mlflow.run_id.is_empty() {
            return Ok(lease);
        }
        let mut backoff = crate::retry::mlflow_away().build();
        loop {
            let experiment = lease.item.step.mlflow.experiment_id.clone();
            let Some(child) = lease.item.step.child_run.clone() else {
                return Ok(lease);
            };
            let made = tokio::select! {
                made = async {
                    let _slot = self.run_creates.acquire().await.expect("never closed");
                    self.mlflow.ensure_run(&experiment, &child).await
                } => made,
                _ = cancel.cancelled() => return Err((lease, None)),
            };
            match made {
                Ok((run_id, artifact_uri)) => {
                    if let Some(r) = self
                        .running
                        .lock()
                        .expect("poisoned")
                        .get_mut(&lease.item.id)
                    {
                        r.mlflow_run = Some(run_id.clone());
                    }
                    if let Some(uri) = &artifact_uri {
                        self.roots.lock().expect("poisoned").remember(&run_id, uri);
                    }
                    lease.item.step.mlflow.run_id = run_id;
                    lease.item.step.artifact_uri = artifact_uri;
                    lease.item.step.child_run = None;
                    self.report_now.notify_one();
                    return Ok(lease);
                }
                Err(e) if e.downcast_ref::<crate::mlflow::Refused>().is_some() => {
                    let why = format!("MLflow refused to create this attempt's run: {e:#}; fix what MLflow names (the experiment, a tag or parameter value), then retry the run");
                    return Err((lease, Some(Outcome::failed(why))));
                }
                Err(e) => {
                    // The create may have reached MLflow: from now on it is looked up first.
                    if let Some(c) = lease.item.step.child_run.as_mut() {
                        c.maybe_exists = true;
                    }
                    let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(item = %lease.item.id, retry_in_s = wait.as_secs(), "creating the attempt's MLflow run failed; trying again: {e:#}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err((lease, None)),
                    }
                }
            }
        }
    }

    /// Extends every held lease at a third of its TTL, with the steps' log tails; stops the
    /// steps whose leases were cancelled or lost.
    async fn heartbeat_loop(self) {
        // Periods count from one heartbeat's start to the next's, so a slow answer (a loaded
        // edge) does not push the next one later: a lease survives answers up to a TTL late.
        let mut last = tokio::time::Instant::now();
        loop {
            let period = *self.ttl.lock().expect("poisoned") / 3;
            tokio::select! {
                _ = tokio::time::sleep_until(last + period) => {}
                // New runs are reported at once (a burst of them in one heartbeat).
                _ = self.report_now.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
                _ = self.shutdown.cancelled() => return,
            }
            last = tokio::time::Instant::now();
            let leases: Vec<LeaseRef> = self
                .running
                .lock()
                .expect("poisoned")
                .iter()
                .map(|(id, r)| LeaseRef {
                    item_id: id.clone(),
                    token: r.token,
                })
                .collect();
            if leases.is_empty() {
                self.metrics.health.heartbeat_done();
                continue;
            }
            // Pods' tails are API calls: a few at a time, so a thousand steps do not stampede.
            let tails: Vec<Option<(String, String)>> = futures::stream::iter(leases.clone())
                .map(|lease| {
                    let executor = self.executor.clone();
                    async move { executor.tail(&lease).await.map(|t| (lease.item_id, t)) }
                })
                .buffer_unordered(8)
                .collect()
                .await;
            let tails = concurrent_core::wire::fit_tails(tails.into_iter().flatten().collect());
            let runs: BTreeMap<String, String> = self
                .running
                .lock()
                .expect("poisoned")
                .iter()
                .filter(|(_, r)| !r.reported)
                .filter_map(|(id, r)| Some((id.clone(), r.mlflow_run.clone()?)))
                .collect();
            match self.edge.heartbeat(leases, tails, runs.clone()).await {
                Ok(resp) => {
                    let mut table = self.running.lock().expect("poisoned");
                    for id in runs.keys() {
                        if let Some(r) = table.get_mut(id) {
                            r.reported = true;
                        }
                    }
                    for (id, status) in resp.leases {
                        if status != LeaseStatus::Active {
                            if let Some(r) = table.get_mut(&id) {
                                tracing::warn!(item = %id, ?status, "stopping the step");
                                r.stopped = Some(status);
                                r.cancel.cancel();
                            }
                        }
                    }
                }
                Err(e) => {
                    self.metrics
                        .heartbeat_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(agent = self.edge.agent(), "heartbeat failed: {e}");
                }
            }
            self.metrics.health.heartbeat_done();
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
