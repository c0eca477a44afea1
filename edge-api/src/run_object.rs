//! The run Durable Object: hosts one run's state machine and carries out its effects.
//!
//! Every change is applied and written synchronously (SQLite writes in one turn are atomic), then
//! an alarm drives [`reconcile`]'s effects: MLflow calls, enqueueing work, withdrawing cancelled
//! work. A failed effect is retried by a later alarm, so an MLflow or queue outage delays a run
//! but never loses it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use concurrent_core::run::{apply, reconcile, Effect, Event, MlflowRef, RunState, RunStatus};
use concurrent_core::wire::{
    batches_by_size, PinResponse, RunSummary, WorkItem, MAX_MESSAGE_BYTES,
};
use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use crate::error::ApiError;
use crate::http::{call, erase, internal_json, now_ms, reply, stub};
use crate::mlflow::{Mlflow, MlflowError};
use crate::queue::Withdraw;

pub const BINDING: &str = "RUNS";
/// Wait before retrying effects that failed (MLflow or a queue unreachable).
const RETRY_MS: u64 = 3_000;
/// MLflow calls in flight at once from one run.
const MLFLOW_PARALLEL: usize = 8;
/// Longest time one alarm drives the run before handing over to the next alarm.
const ALARM_BUDGET_MS: u64 = 20_000;
/// MLflow calls per drive round, before queued work is handed to the cluster queues.
const MLFLOW_PER_ROUND: usize = 128;

#[durable_object]
pub struct RunObject {
    state: State,
    env: Env,
    sql: SqlStorage,
    cache: RefCell<Option<Cached>>,
    driving: Cell<bool>,
    again: Cell<bool>,
}

/// The run in memory, plus the JSON last written per row so only changed rows are written.
struct Cached {
    run: RunState,
    header: String,
    rows: HashMap<(String, u32), String>,
    /// Rows stored per node.
    counts: HashMap<String, usize>,
    /// What the catalog's run list last recorded: status, and whether the MLflow run was known.
    indexed: Option<(RunStatus, bool)>,
}

/// A cancelled attempt to take out of its queue, and the event that records it.
#[derive(Serialize)]
struct Withdrawal {
    item_id: String,
    event: Event,
}

/// The `concurrent.key` of a create effect.
fn create_key(effect: &Effect) -> Option<&str> {
    match effect {
        Effect::CreateParentRun { key, .. } | Effect::CreateChildRun { key, .. } => Some(key),
        _ => None,
    }
}

impl DurableObject for RunObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        sql.exec("CREATE TABLE IF NOT EXISTS header(id INTEGER PRIMARY KEY CHECK (id = 0), json TEXT NOT NULL)", None)
            .expect("run schema");
        sql.exec("CREATE TABLE IF NOT EXISTS instances(node TEXT NOT NULL, idx INTEGER NOT NULL, json TEXT NOT NULL, PRIMARY KEY(node, idx))", None)
            .expect("run schema");
        // MLflow runs whose create was sent and not yet recorded (see `create_sent_before`).
        sql.exec(
            "CREATE TABLE IF NOT EXISTS creating(key TEXT PRIMARY KEY)",
            None,
        )
        .expect("run schema");
        RunObject {
            state,
            env,
            sql,
            cache: RefCell::new(None),
            driving: Cell::new(false),
            again: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let result = async {
            match req.path().as_str() {
                "/start" => erase(self.start(internal_json(&mut req).await?).await),
                "/get" => erase(self.with_run(|run| run.clone())),
                "/events" => erase(self.handle_events(internal_json(&mut req).await?).await),
                "/pin" => erase(self.pin(internal_json(&mut req).await?).await),
                other => Err(ApiError::NotFound(format!("run object has no {other}"))),
            }
        }
        .await;
        reply(result)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        if let Err(e) = self.drive().await {
            worker::console_error!("run {}: driving effects failed: {e:?}", self.run_id());
            self.state.storage().set_alarm(RETRY_MS as i64).await?;
        }
        Response::ok("ok")
    }
}

impl RunObject {
    fn run_id(&self) -> String {
        self.cache
            .borrow()
            .as_ref()
            .map(|c| c.run.id.clone())
            .unwrap_or_default()
    }

    /// Loads the run into the cache when needed; `Ok(false)` when no run was ever started here.
    fn load(&self) -> Result<bool, ApiError> {
        if self.cache.borrow().is_some() {
            return Ok(true);
        }
        #[derive(Deserialize)]
        struct H {
            json: String,
        }
        #[derive(Deserialize)]
        struct I {
            node: String,
            idx: f64,
            json: String,
        }
        let headers: Vec<H> = self.sql.exec("SELECT json FROM header", None)?.to_array()?;
        let Some(h) = headers.into_iter().next() else {
            return Ok(false);
        };
        let mut run: RunState = serde_json::from_str(&h.json)?;
        let rows: Vec<I> = self
            .sql
            .exec(
                "SELECT node, idx, json FROM instances ORDER BY node, idx",
                None,
            )?
            .to_array()?;
        let mut cached_rows = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in rows {
            if let Some(node) = run.node_mut(&r.node) {
                node.instances.push(serde_json::from_str(&r.json)?);
            }
            *counts.entry(r.node.clone()).or_default() += 1;
            cached_rows.insert((r.node, r.idx as u32), r.json);
        }
        *self.cache.borrow_mut() = Some(Cached {
            run,
            header: h.json,
            rows: cached_rows,
            counts,
            indexed: None,
        });
        Ok(true)
    }

    fn with_run<T>(&self, f: impl FnOnce(&RunState) -> T) -> Result<T, ApiError> {
        if !self.load()? {
            return Err(ApiError::NotFound("no such run".into()));
        }
        Ok(f(&self.cache.borrow().as_ref().expect("loaded").run))
    }

    /// Writes the rows that changed. `touched` names the one instance an event is about; the
    /// header and every node whose instance count changed are always checked, and `None`
    /// checks every instance. Serializing 10,000 instances per event would make big runs
    /// quadratic, so events about one instance write one row.
    fn save(&self, touched: Option<(&str, u32)>) -> Result<(), ApiError> {
        let mut guard = self.cache.borrow_mut();
        let c = guard.as_mut().expect("save after load");
        let mut header = c.run.clone_header();
        for n in &mut header.nodes {
            n.instances.clear();
        }
        let header_json = serde_json::to_string(&header)?;
        let status_changed = header_json != c.header;
        if status_changed {
            self.sql.exec(
                "INSERT OR REPLACE INTO header(id, json) VALUES (0, ?)",
                vec![header_json.clone().into()],
            )?;
            c.header = header_json;
        }
        for node in &c.run.nodes {
            let stored = c.counts.get(&node.id).copied().unwrap_or(0);
            let whole_node = touched.is_none() || status_changed || stored != node.instances.len();
            for inst in &node.instances {
                if !whole_node && touched != Some((node.id.as_str(), inst.index)) {
                    continue;
                }
                let json = serde_json::to_string(inst)?;
                let key = (node.id.clone(), inst.index);
                if c.rows.get(&key) != Some(&json) {
                    self.sql.exec(
                        "INSERT OR REPLACE INTO instances(node, idx, json) VALUES (?, ?, ?)",
                        vec![
                            node.id.clone().into(),
                            (inst.index as i64).into(),
                            json.clone().into(),
                        ],
                    )?;
                    if c.rows.insert(key, json).is_none() {
                        *c.counts.entry(node.id.clone()).or_default() += 1;
                    }
                }
            }
        }
        Ok(())
    }

    async fn start(&self, run: RunState) -> Result<RunSummary, ApiError> {
        if self.load()? {
            let existing = self.with_run(|r| r.request.clone())?;
            if existing != run.request {
                return Err(ApiError::Unprocessable(format!(
                    "run {} was started by an earlier request with this Idempotency-Key, and that request differs from this one; use a new key for a new run",
                    run.id
                )));
            }
        } else {
            *self.cache.borrow_mut() = Some(Cached {
                run,
                header: String::new(),
                rows: HashMap::new(),
                counts: HashMap::new(),
                indexed: None,
            });
            self.save(None)?;
        }
        self.sync_index().await;
        self.schedule().await?;
        self.with_run(RunState::summary)
    }

    /// Applies events in order; the answer has one entry per event: `None` when applied, the
    /// reason when rejected (stale or not fitting the run).
    async fn handle_events(&self, events: Vec<Event>) -> Result<Vec<Option<String>>, ApiError> {
        let mut answers = Vec::with_capacity(events.len());
        for event in events {
            answers.push(match self.apply_event(event) {
                Ok(()) => None,
                Err(ApiError::Conflict(reason)) => Some(reason),
                Err(e) => return Err(e),
            });
        }
        self.schedule().await?;
        Ok(answers)
    }

    /// Records a step's commit for a git source unless one is pinned; the commit to run.
    async fn pin(&self, (source, commit): (String, String)) -> Result<PinResponse, ApiError> {
        self.apply_event(Event::Pinned {
            source: source.clone(),
            commit: commit.clone(),
        })?;
        let pinned = self
            .with_run(|r| r.pins.get(&source).cloned())?
            .unwrap_or(commit.clone());
        Ok(PinResponse {
            first: pinned == commit,
            commit: pinned,
        })
    }

    fn apply_event(&self, event: Event) -> Result<(), ApiError> {
        if !self.load()? {
            return Err(ApiError::NotFound("no such run".into()));
        }
        let touched = match &event {
            Event::ChildRunCreated { node, instance, .. }
            | Event::Enqueued { node, instance, .. }
            | Event::Withdrawn { node, instance, .. }
            | Event::AttemptRunClosed { node, instance, .. }
            | Event::Leased { node, instance, .. }
            | Event::Requeued { node, instance, .. }
            | Event::LogTail { node, instance, .. }
            | Event::Finished { node, instance, .. } => Some((node.clone(), *instance)),
            _ => None,
        };
        {
            let mut guard = self.cache.borrow_mut();
            let run = &mut guard.as_mut().expect("loaded").run;
            apply(run, event, now_ms()).map_err(|r| ApiError::Conflict(r.0))?;
        }
        self.save(touched.as_ref().map(|(n, i)| (n.as_str(), *i)))
    }

    /// Sets the alarm for the earliest moment there is work: now, or when a retry is due.
    async fn schedule(&self) -> Result<(), ApiError> {
        let now = now_ms();
        let effects = self.with_run(|run| reconcile(run, now))?;
        let due = effects
            .iter()
            .map(|e| if let Effect::WakeAt(t) = e { *t } else { now })
            .min();
        if let Some(at) = due {
            self.state
                .storage()
                .set_alarm(at.saturating_sub(now) as i64)
                .await?;
        }
        Ok(())
    }

    /// Carries out effects until none are left or all remaining ones failed.
    async fn drive(&self) -> Result<(), ApiError> {
        if !self.load()? {
            return Ok(());
        }
        if self.driving.replace(true) {
            self.again.set(true);
            return Ok(());
        }
        // Reset even if this future is dropped half-way (an interrupted alarm), or the run
        // would never be driven again.
        struct Driving<'a>(&'a Cell<bool>);
        impl Drop for Driving<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _driving = Driving(&self.driving);
        self.drive_rounds().await
    }

    async fn drive_rounds(&self) -> Result<(), ApiError> {
        let mlflow = Mlflow::from_env(&self.env)?;
        let started = now_ms();
        loop {
            // Keep each alarm short; a big run continues in the next one.
            if now_ms() - started > ALARM_BUDGET_MS {
                self.state.storage().set_alarm(0i64).await?;
                return Ok(());
            }
            self.again.set(false);
            let now = now_ms();
            // Ticks only matter when a retry is due; a full save of a big run is not free.
            let retry_due = self.with_run(|run| {
                run.nodes
                    .iter()
                    .flat_map(|n| &n.instances)
                    .any(|i| i.retry_at.is_some_and(|t| t <= now))
            })?;
            if retry_due {
                self.apply_event(Event::Tick)?;
            }
            let effects = self.with_run(|run| reconcile(run, now))?;
            let mut progressed = false;
            let mut failed = false;
            let mut wake: Option<u64> = None;
            let mut enqueues: BTreeMap<String, Vec<WorkItem>> = BTreeMap::new();
            let mut withdraws: BTreeMap<String, Vec<Withdrawal>> = BTreeMap::new();
            let mut mlflow_effects = Vec::new();
            for effect in effects {
                match effect {
                    Effect::WakeAt(t) => wake = Some(wake.map_or(t, |w| w.min(t))),
                    Effect::Enqueue(item) => enqueues
                        .entry(item.cluster.clone())
                        .or_default()
                        .push(*item),
                    Effect::Withdraw {
                        cluster,
                        item_id,
                        node,
                        instance,
                        attempt,
                    } => withdraws.entry(cluster).or_default().push(Withdrawal {
                        item_id,
                        event: Event::Withdrawn {
                            node,
                            instance,
                            attempt,
                        },
                    }),
                    other => mlflow_effects.push(other),
                }
            }
            // MLflow calls go out a few at a time: a 10,000-instance node needs 10,000 child runs.
            // A round does a bounded share, so the first instances are queued (and run) while
            // the rest are still being prepared.
            mlflow_effects.truncate(MLFLOW_PER_ROUND);
            let mut unavailable: Option<String> = None;
            for chunk in mlflow_effects.chunks(MLFLOW_PARALLEL) {
                let results = futures_util::future::join_all(
                    chunk.iter().map(|e| self.execute_mlflow(&mlflow, e)),
                )
                .await;
                for (effect, result) in chunk.iter().zip(results) {
                    let event = match result {
                        Ok(event) => event,
                        Err(MlflowError::Transient(why)) => {
                            worker::console_warn!("run {}: {why}", self.run_id());
                            unavailable.get_or_insert(why);
                            continue;
                        }
                        Err(refused) => {
                            worker::console_warn!(
                                "run {}: MLflow refused: {}",
                                self.run_id(),
                                refused.reason()
                            );
                            Event::MlflowRefused {
                                call: effect.mlflow_call().expect("an MLflow effect"),
                                message: refused.reason(),
                            }
                        }
                    };
                    if let Err(e) = self.apply_event(event) {
                        worker::console_warn!("run {}: {}", self.run_id(), e.detail());
                    }
                    // The create is recorded (or refused for good): no lookup is needed again.
                    if let Some(key) = create_key(effect) {
                        self.sql
                            .exec("DELETE FROM creating WHERE key = ?", vec![key.into()])?;
                    }
                    progressed = true;
                }
            }
            if let Some(reason) = unavailable {
                self.apply_event(Event::MlflowUnavailable { reason })?;
            }
            for (cluster, items) in enqueues {
                let queue = stub(&self.env, crate::queue::BINDING, &cluster)?;
                // Broadcast inputs are copied into every item: split the batch by size.
                for batch in batches_by_size(items, MAX_MESSAGE_BYTES) {
                    match call::<_, bool>(&queue, "/enqueue", &batch).await {
                        Ok(_) => {
                            for item in batch {
                                self.apply_event(Event::Enqueued {
                                    node: item.node_id,
                                    instance: item.instance,
                                    attempt: item.attempt,
                                })?;
                            }
                            progressed = true;
                        }
                        Err(e) => {
                            worker::console_error!(
                                "run {}: enqueue on cluster {cluster:?} failed: {}",
                                self.run_id(),
                                e.detail()
                            );
                            failed = true;
                            break;
                        }
                    }
                }
            }
            for (cluster, list) in withdraws {
                let queue = stub(&self.env, crate::queue::BINDING, &cluster)?;
                for batch in batches_by_size(list, MAX_MESSAGE_BYTES) {
                    let item_ids = batch.iter().map(|w| w.item_id.clone()).collect();
                    match call::<_, bool>(&queue, "/withdraw", &Withdraw { item_ids }).await {
                        Ok(_) => {
                            for w in batch {
                                self.apply_event(w.event)?;
                            }
                            progressed = true;
                        }
                        Err(e) => {
                            worker::console_error!(
                                "run {}: withdraw on cluster {cluster:?} failed: {}",
                                self.run_id(),
                                e.detail()
                            );
                            failed = true;
                            break;
                        }
                    }
                }
            }
            self.sync_index().await;
            if progressed || self.again.get() {
                continue;
            }
            let retry = failed.then(|| now_ms() + RETRY_MS);
            let backoff = self.with_run(|r| r.mlflow_wait.as_ref().map(|w| w.retry_at))?;
            if let Some(at) = [retry, wake, backoff].into_iter().flatten().min() {
                self.state
                    .storage()
                    .set_alarm(at.saturating_sub(now_ms()) as i64)
                    .await?;
            }
            return Ok(());
        }
    }

    /// Whether a create of `key` may already have reached MLflow (it was sent before, and its
    /// answer never recorded: the object restarted in between). Records the intent otherwise;
    /// the write is durable before the request leaves (Durable Objects hold outgoing messages
    /// until storage writes are confirmed).
    fn create_sent_before(&self, key: &str) -> Result<bool, ApiError> {
        let n = self
            .sql
            .exec(
                "INSERT OR IGNORE INTO creating(key) VALUES (?)",
                vec![key.into()],
            )?
            .rows_written();
        Ok(n == 0)
    }

    /// Carries out one MLflow effect and returns the event that records it.
    async fn execute_mlflow(&self, mlflow: &Mlflow, effect: &Effect) -> Result<Event, MlflowError> {
        let now = now_ms();
        let sent_before = |key: &str| {
            self.create_sent_before(key)
                .map_err(|e| MlflowError::Transient(e.detail()))
        };
        match effect {
            Effect::CreateParentRun {
                key,
                experiment_name,
                run_name,
                tags,
                params,
            } => {
                let experiment_id = mlflow.experiment_id(experiment_name).await?;
                let maybe = sent_before(key)?;
                let run_id = mlflow
                    .create_run(key, maybe, &experiment_id, run_name, now, tags, params)
                    .await?;
                Ok(Event::ParentRunCreated(MlflowRef {
                    experiment_id,
                    run_id,
                }))
            }
            Effect::CreateChildRun {
                node,
                instance,
                attempt,
                key,
                experiment_id,
                run_name,
                tags,
                params,
            } => {
                let maybe = sent_before(key)?;
                let run_id = mlflow
                    .create_run(key, maybe, experiment_id, run_name, now, tags, params)
                    .await?;
                Ok(Event::ChildRunCreated {
                    node: node.clone(),
                    instance: *instance,
                    attempt: *attempt,
                    run_id,
                })
            }
            Effect::CloseAttemptRun {
                node,
                instance,
                attempt,
                run_id,
                status,
                end_time,
            } => {
                mlflow.update_run(run_id, status, Some(*end_time)).await?;
                Ok(Event::AttemptRunClosed {
                    node: node.clone(),
                    instance: *instance,
                    attempt: *attempt,
                })
            }
            Effect::SyncParentRun {
                run_id,
                status,
                end_time,
            } => {
                mlflow
                    .update_run(run_id, status.mlflow_status(), *end_time)
                    .await?;
                Ok(Event::ParentRunSynced { status: *status })
            }
            Effect::Enqueue(_) | Effect::Withdraw { .. } | Effect::WakeAt(_) => {
                unreachable!("drive_rounds passes MLflow effects only")
            }
        }
    }

    /// Keeps the catalog's run list in step with the run's status (best effort; retried on the
    /// next change or alarm).
    async fn sync_index(&self) {
        let Ok((seen, summary)) = self.with_run(|r| ((r.status, r.mlflow.is_some()), r.summary()))
        else {
            return;
        };
        if self.cache.borrow().as_ref().and_then(|c| c.indexed) == Some(seen) {
            return;
        }
        let result = match stub(&self.env, crate::catalog::BINDING, crate::catalog::NAME) {
            Ok(s) => call::<_, bool>(&s, "/runs/upsert", &summary).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                if let Some(c) = self.cache.borrow_mut().as_mut() {
                    c.indexed = Some(seen);
                }
            }
            Err(e) => worker::console_error!(
                "run {}: updating the run list failed: {}",
                summary.id,
                e.detail()
            ),
        }
    }
}
