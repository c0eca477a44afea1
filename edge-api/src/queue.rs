//! The work queue Durable Object, one per cluster: ready items, leases with fencing tokens,
//! long-polling agents, lease expiry.
//!
//! # Guarantees
//! - An item is leased to one agent at a time; every lease gets a new, strictly increasing
//!   token, and heartbeats or completions with any other token are refused (409).
//! - An expired lease ends the attempt as failed ("lease expired"); the run decides on a retry.
//! - A completion is forwarded to the run before the item is deleted, so a crash in between
//!   leaves the item to expire, and the run refuses the duplicate as stale.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use concurrent_core::lease::{on_expiry, Expiry};
use concurrent_core::logtail::keep_end;
use concurrent_core::partition::ArtifactFile;
use concurrent_core::run::{Event, Rejected};
use concurrent_core::wire::{
    CompleteRequest, CompletionResult, HeartbeatRequest, HeartbeatResponse, Lease, LeaseRequest,
    LeaseResponse, LeaseStatus, Outcome, PinRequest, PinResponse, WorkItem, MAX_MESSAGE_BYTES,
    MAX_TAIL_BYTES,
};
use futures_channel::oneshot;
use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use crate::error::ApiError;
use crate::http::{now_ms, object_api, reply, ObjectStub};
use crate::run_object::RunClient;

pub const BINDING: &str = "QUEUES";

/// Withdraw request sent to a queue: ready items leave it, leased ones are flagged so their
/// agents stop them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Withdraw {
    pub item_ids: Vec<String>,
}
const DEFAULT_LEASE_TTL_MS: u64 = 30_000;
const MAX_WAIT_MS: u32 = 30_000;
/// Wait before an expiry pass with failed rows runs again.
const RETRY_EXPIRY_MS: i64 = 5_000;

#[durable_object]
pub struct QueueObject {
    state: State,
    env: Env,
    sql: SqlStorage,
    /// Long-polling lease requests waiting for work.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// `LEASE_TTL_MS`, read once (it is asked for several times per lease).
    lease_ttl_ms: u64,
    /// Project inspections for the designer (in memory: they live for one request).
    pub(crate) inspections: crate::inspect::Inspections,
}

object_api! {
    QueueClient for QueueObject {
        /// Adds work items (idempotent by item id) and the inputs they share.
        enqueue(concurrent_core::wire::EnqueueRequest) -> bool = "/enqueue";
        /// Leases up to `max` ready items, waiting up to `wait_ms` for one.
        lease(LeaseRequest) -> LeaseResponse = "/lease";
        /// Extends leases; answers which were cancelled or lost.
        heartbeat(HeartbeatRequest) -> HeartbeatResponse = "/heartbeat";
        /// Ends a lease with its outcome (409 when the lease is not current).
        complete(CompleteRequest) -> bool = "/complete";
        /// Ends several leases; one answer each.
        completions(concurrent_core::wire::CompletionsRequest) -> concurrent_core::wire::CompletionsResponse = "/completions";
        /// Drops ready items and flags leased ones of cancelled attempts.
        withdraw(Withdraw) -> bool = "/withdraw";
        /// Passes a step's git commit to its run (for a current lease).
        pin(PinRequest) -> PinResponse = "/pin";
        /// Has a live agent read a project; waits for its answer.
        inspect(crate::inspect::InspectCall) -> concurrent_core::project::ProjectInfo = "/inspect";
        /// An agent long-polls for inspections to answer.
        take_inspections(concurrent_core::wire::InspectionsRequest) -> concurrent_core::wire::InspectionsResponse = "/inspections";
        /// An agent's answer to an inspection (false: nobody waits for it any more).
        answer_inspection(concurrent_core::wire::InspectAnswer) -> bool = "/inspections/answer";
    }
}

impl QueueClient {
    /// The queue of `cluster`.
    pub fn of(env: &Env, cluster: &str) -> Result<QueueClient, ApiError> {
        Ok(QueueClient(ObjectStub::new(env, BINDING, cluster)?))
    }
}

/// The event recording the MLflow run an agent made for `item`: none when the item already has
/// it, an error when `mlflow_run` is not a run id.
fn reported_run(item: &WorkItem, mlflow_run: &str) -> Result<Option<Event>, String> {
    if item.step.mlflow.run_id == mlflow_run {
        return Ok(None);
    }
    if concurrent_core::refs::run_id_problem(mlflow_run).is_some() {
        return Err(format!(
            "{mlflow_run:?}, reported as the MLflow run of {}, is not an MLflow run id",
            item.id
        ));
    }
    Ok(Some(Event::ChildRunCreated {
        key: item.key(),
        run_id: mlflow_run.to_string(),
    }))
}

/// The run an item belongs to, for telling it what happened.
fn run_of(env: &Env, item: &WorkItem) -> Result<RunClient, ApiError> {
    RunClient::of(env, &item.run_id)
}

#[derive(Deserialize)]
struct Row {
    id: String,
    item: String,
    state: String,
    token: f64,
    agent: Option<String>,
    #[serde(default)]
    requeues: Option<f64>,
}

impl DurableObject for QueueObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in [
            "CREATE TABLE IF NOT EXISTS items(id TEXT PRIMARY KEY, run_id TEXT NOT NULL, item TEXT NOT NULL,
               state TEXT NOT NULL, token INTEGER NOT NULL DEFAULT 0, agent TEXT, expires_at INTEGER NOT NULL DEFAULT 0,
               seq INTEGER NOT NULL)",
            "CREATE INDEX IF NOT EXISTS items_ready ON items(state, seq)",
            "CREATE INDEX IF NOT EXISTS items_run ON items(run_id)",
            // Inputs every instance of a node receives, once; merged into items as they are
            // leased, dropped when the run has no item left here.
            "CREATE TABLE IF NOT EXISTS shared(key TEXT PRIMARY KEY, run_id TEXT NOT NULL, json TEXT NOT NULL)",
            // Set by the first heartbeat: the agent is alive and has the lease.
            "CREATE TABLE IF NOT EXISTS confirmed(id TEXT PRIMARY KEY)",
            "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        ] {
            sql.exec(ddl, None).expect("queue schema");
        }
        // Added after the first release; fails harmlessly where the column exists.
        let _ = sql.exec(
            "ALTER TABLE items ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0",
            None,
        );
        let lease_ttl_ms = env
            .var("LEASE_TTL_MS")
            .ok()
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(DEFAULT_LEASE_TTL_MS);
        QueueObject {
            state,
            env,
            sql,
            waiters: RefCell::new(Vec::new()),
            lease_ttl_ms,
            inspections: Default::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        reply(self.serve(&mut req).await)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        if let Err(e) = self.expire().await {
            worker::console_error!("queue: expiring leases failed: {}", e.detail());
            self.state.storage().set_alarm(5_000i64).await?;
        }
        Response::ok("ok")
    }
}

impl QueueObject {
    fn ttl(&self) -> u64 {
        self.lease_ttl_ms
    }

    fn secret(&self) -> Result<String, ApiError> {
        crate::auth::bootstrap_token(&self.env)
    }

    /// Takes the next `n` values of a counter in one statement; the first of them.
    fn next_n(&self, counter: &str, n: usize) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct V {
            value: f64,
        }
        let v: V = self
            .sql
            .exec(
                "INSERT INTO counters(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2 RETURNING value",
                vec![counter.into(), (n as i64).into()],
            )?
            .one()?;
        Ok(v.value as u64 + 1 - n as u64)
    }

    fn row(&self, id: &str) -> Result<Option<Row>, ApiError> {
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT * FROM items WHERE id = ?", vec![id.into()])?
            .to_array()?;
        Ok(rows.into_iter().next())
    }

    /// The rows of these items that are here, in one statement.
    fn rows(&self, ids: &[&str]) -> Result<Vec<Row>, ApiError> {
        Ok(self
            .sql
            .exec(
                "SELECT * FROM items WHERE id IN (SELECT value FROM json_each(?))",
                vec![serde_json::to_string(ids)?.into()],
            )?
            .to_array()?)
    }

    /// Drops these items (and their confirmations), two statements for any number.
    fn delete(&self, ids: &[String]) -> Result<(), ApiError> {
        let ids = serde_json::to_string(ids)?;
        for table in ["items", "confirmed"] {
            self.sql.exec(
                &format!("DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))"),
                vec![ids.clone().into()],
            )?;
        }
        Ok(())
    }

    /// The JSON of shared inputs an item refers to. A missing row is the system's fault (the
    /// run sends them with the items), so it fails the lease rather than handing out a step
    /// without its inputs.
    fn shared_json(&self, key: &str) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Shared {
            json: String,
        }
        let rows: Vec<Shared> = self
            .sql
            .exec("SELECT json FROM shared WHERE key = ?", vec![key.into()])?
            .to_array()?;
        rows.into_iter().next().map(|r| r.json).ok_or_else(|| {
            ApiError::Internal(format!(
                "the shared inputs {key:?} of a queued item are missing from the queue"
            ))
        })
    }

    /// Drops the shared inputs of runs with no item left here (a few rows, each one index
    /// lookup).
    fn forget_shared(&self) -> Result<(), ApiError> {
        self.sql.exec(
            "DELETE FROM shared WHERE NOT EXISTS (SELECT 1 FROM items WHERE items.run_id = shared.run_id)",
            None,
        )?;
        Ok(())
    }

    async fn enqueue(&self, r: concurrent_core::wire::EnqueueRequest) -> Result<bool, ApiError> {
        let run_id = r
            .items
            .first()
            .map(|i| i.run_id.as_str())
            .unwrap_or_default();
        for (key, inputs) in &r.shared {
            self.sql.exec(
                "INSERT OR IGNORE INTO shared(key, run_id, json) VALUES (?, ?, ?)",
                vec![
                    key.clone().into(),
                    run_id.into(),
                    serde_json::to_string(inputs)?.into(),
                ],
            )?;
        }
        let first = match r.items.len() {
            0 => 0,
            n => self.next_n("seq", n)?,
        };
        for (seq, item) in (first..).zip(r.items) {
            self.sql.exec(
                "INSERT OR IGNORE INTO items(id, run_id, item, state, seq) VALUES (?, ?, ?, 'ready', ?)",
                vec![item.id.clone().into(), item.run_id.clone().into(), serde_json::to_string(&item)?.into(), (seq as i64).into()],
            )?;
        }
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
        Ok(true)
    }

    /// Leases up to `max` ready items, oldest first, waiting up to `wait_ms` for one to arrive.
    async fn lease(&self, r: LeaseRequest) -> Result<LeaseResponse, ApiError> {
        let mut leases = self.take_ready(&r)?;
        if leases.is_empty() && r.wait_ms > 0 {
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push(tx);
            let timeout =
                worker::Delay::from(Duration::from_millis(r.wait_ms.min(MAX_WAIT_MS) as u64));
            futures_util::future::select(rx, timeout).await;
            leases = self.take_ready(&r)?;
        }
        if !leases.is_empty() {
            leases = self.tell_runs_leased(leases, &r.agent).await?;
            // The TTL counts from the answer: a run slow to record the leases (a 10,000-wide
            // node being planned) must not expire them before the agent has them.
            let expires_at = now_ms() + self.ttl();
            for l in &mut leases {
                l.expires_at = expires_at;
            }
            // One statement for the batch; a lease taken over meanwhile keeps its own expiry.
            let held: Vec<(&str, u64)> = leases
                .iter()
                .map(|l| (l.item.id.as_str(), l.token))
                .collect();
            self.sql.exec(
                "UPDATE items SET expires_at = ?1 FROM json_each(?2) AS j WHERE items.id = j.value ->> 0 AND items.token = j.value ->> 1",
                vec![(expires_at as i64).into(), serde_json::to_string(&held)?.into()],
            )?;
            self.arm_by(expires_at).await?;
        }
        Ok(LeaseResponse {
            leases,
            lease_ttl_ms: self.ttl(),
        })
    }

    fn take_ready(&self, r: &LeaseRequest) -> Result<Vec<Lease>, ApiError> {
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT * FROM items WHERE state = 'ready' ORDER BY seq LIMIT ?",
                vec![(r.max.clamp(1, 100) as i64).into()],
            )?
            .to_array()?;
        let expires_at = now_ms() + self.ttl();
        let mut taken = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        let mut shared: BTreeMap<String, (usize, BTreeMap<String, Vec<ArtifactFile>>)> =
            BTreeMap::new();
        for row in rows {
            let mut item: WorkItem = serde_json::from_str(&row.item)?;
            let mut size = row.item.len();
            if let Some(key) = item.step.shared_inputs.clone() {
                if !shared.contains_key(&key) {
                    let json = self.shared_json(&key)?;
                    shared.insert(key.clone(), (json.len(), serde_json::from_str(&json)?));
                }
                let (len, files) = &shared[&key];
                size += len;
                item.merge_shared(files);
            }
            // One answer stays within a message's size; the rest waits for the next request.
            bytes += size;
            if !taken.is_empty() && bytes > MAX_MESSAGE_BYTES {
                break;
            }
            taken.push((row.id, item));
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_n("token", taken.len())?;
        let secret = self.secret()?;
        let mut leases = Vec::with_capacity(taken.len());
        let tokens: Vec<(&str, u64)> = (first..)
            .zip(&taken)
            .map(|(token, (id, _))| (id.as_str(), token))
            .collect();
        self.sql.exec(
            "UPDATE items SET state = 'leased', token = j.value ->> 1, agent = ?1, expires_at = ?2 FROM json_each(?3) AS j WHERE items.id = j.value ->> 0",
            vec![r.agent.clone().into(), (expires_at as i64).into(), serde_json::to_string(&tokens)?.into()],
        )?;
        for (token, (_, item)) in (first..).zip(taken) {
            let step_token = crate::auth::step_token(&secret, &item.cluster, &item.id, token);
            leases.push(Lease {
                item,
                token,
                expires_at,
                step_token,
            });
        }
        Ok(leases)
    }

    /// Records the leases in their runs; an item whose attempt the run no longer wants (it was
    /// cancelled in between) is dropped here instead of being handed out.
    async fn tell_runs_leased(
        &self,
        leases: Vec<Lease>,
        agent: &str,
    ) -> Result<Vec<Lease>, ApiError> {
        let mut by_run: BTreeMap<String, Vec<Lease>> = BTreeMap::new();
        for l in leases {
            by_run.entry(l.item.run_id.clone()).or_default().push(l);
        }
        let mut kept = Vec::new();
        for (run_id, leases) in by_run {
            let events: Vec<Event> = leases
                .iter()
                .map(|l| Event::Leased {
                    key: l.item.key(),
                    agent: agent.into(),
                })
                .collect();
            match RunClient::of(&self.env, &run_id)?.events(&events).await {
                Ok(answers) => {
                    for (lease, answer) in leases.into_iter().zip(answers) {
                        match answer {
                            None => kept.push(lease),
                            Some(why) => {
                                worker::console_log!("queue: dropping {}: {why}", lease.item.id);
                                self.sql.exec(
                                    "DELETE FROM items WHERE id = ?",
                                    vec![lease.item.id.into()],
                                )?;
                            }
                        }
                    }
                }
                // The run will learn of the lease from the completion; hand the work out anyway.
                Err(e) => {
                    worker::console_error!(
                        "queue: telling run {run_id} of leases failed: {}",
                        e.detail()
                    );
                    kept.extend(leases);
                }
            }
        }
        Ok(kept)
    }

    async fn heartbeat(&self, r: HeartbeatRequest) -> Result<HeartbeatResponse, ApiError> {
        let expires_at = now_ms() + self.ttl();
        // One statement per step for all leases, not three per lease: an agent holding a
        // thousand leases heartbeats them all at once.
        let ids: Vec<&str> = r.leases.iter().map(|l| l.item_id.as_str()).collect();
        #[derive(Deserialize)]
        struct Held {
            id: String,
            state: String,
            token: f64,
        }
        let held: BTreeMap<String, (String, u64)> = self
            .sql
            .exec(
                "SELECT id, state, token FROM items WHERE id IN (SELECT value FROM json_each(?))",
                vec![serde_json::to_string(&ids)?.into()],
            )?
            .to_array::<Held>()?
            .into_iter()
            .map(|h| (h.id, (h.state, h.token as u64)))
            .collect();
        let mut answers = BTreeMap::new();
        let (mut active, mut cancelled) = (Vec::new(), Vec::new());
        for l in &r.leases {
            let status = match held.get(&l.item_id) {
                Some((state, token)) if *token == l.token && state == "leased" => {
                    active.push(l.item_id.as_str());
                    LeaseStatus::Active
                }
                Some((state, token)) if *token == l.token && state == "cancelled" => {
                    cancelled.push(l.item_id.as_str());
                    LeaseStatus::Cancelled
                }
                _ => LeaseStatus::Lost,
            };
            answers.insert(l.item_id.clone(), status);
        }
        if !active.is_empty() {
            let active = serde_json::to_string(&active)?;
            self.sql.exec(
                "UPDATE items SET expires_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                vec![(expires_at as i64).into(), active.clone().into()],
            )?;
            self.sql.exec(
                "INSERT OR IGNORE INTO confirmed(id) SELECT value FROM json_each(?)",
                vec![active.into()],
            )?;
        }
        if !cancelled.is_empty() {
            self.sql.exec(
                "DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))",
                vec![serde_json::to_string(&cancelled)?.into()],
            )?;
        }
        self.forward_runs(&r.runs, &answers).await?;
        self.forward_tails(&r.tails, &answers).await;
        self.arm_by(expires_at).await?;
        Ok(HeartbeatResponse {
            leases: answers,
            expires_at,
        })
    }

    /// Tells the runs of active leases which MLflow runs their agents made, one call per run.
    /// A failure fails the heartbeat, so the agent sends them again with the next one.
    async fn forward_runs(
        &self,
        runs: &BTreeMap<String, String>,
        status: &BTreeMap<String, LeaseStatus>,
    ) -> Result<(), ApiError> {
        let mut by_run: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for (item_id, mlflow_run) in runs {
            if status.get(item_id) != Some(&LeaseStatus::Active) {
                continue;
            }
            let Some(row) = self.row(item_id)? else {
                continue;
            };
            let mut item: WorkItem = serde_json::from_str(&row.item)?;
            let Some(event) = reported_run(&item, mlflow_run).map_err(ApiError::BadRequest)? else {
                continue;
            };
            by_run.entry(item.run_id.clone()).or_default().push(event);
            // A redelivered item carries its run, so a next agent does not make another.
            item.step.mlflow.run_id = mlflow_run.clone();
            item.step.child_run = None;
            self.sql.exec(
                "UPDATE items SET item = ? WHERE id = ?",
                vec![serde_json::to_string(&item)?.into(), item_id.clone().into()],
            )?;
        }
        for (run_id, events) in by_run {
            let answers = RunClient::of(&self.env, &run_id)?.events(&events).await?;
            for why in answers.into_iter().flatten() {
                worker::console_warn!("queue: run {run_id} refused an MLflow run: {why}");
            }
        }
        Ok(())
    }

    /// Sends the log tails of active leases to their runs, one call per run (best effort: a
    /// lost tail is replaced by the next heartbeat's).
    async fn forward_tails(
        &self,
        tails: &BTreeMap<String, String>,
        status: &BTreeMap<String, LeaseStatus>,
    ) {
        let mut by_run: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for (item_id, tail) in tails {
            if status.get(item_id) != Some(&LeaseStatus::Active) {
                continue;
            }
            let Ok(Some(row)) = self.row(item_id) else {
                continue;
            };
            let Ok(item) = serde_json::from_str::<WorkItem>(&row.item) else {
                continue;
            };
            let tail = keep_end(tail, MAX_TAIL_BYTES).to_string();
            by_run
                .entry(item.run_id.clone())
                .or_default()
                .push(Event::LogTail {
                    key: item.key(),
                    tail,
                });
        }
        for (run_id, events) in by_run {
            let sent = async { RunClient::of(&self.env, &run_id)?.events(&events).await }.await;
            if let Err(e) = sent {
                worker::console_error!(
                    "queue: forwarding log tails to run {run_id} failed: {}",
                    e.detail()
                );
            }
        }
    }

    async fn complete(&self, r: CompleteRequest) -> Result<bool, ApiError> {
        let answer = self.complete_all(vec![r]).await?;
        match answer.into_iter().next() {
            Some(CompletionResult {
                refused: Some(why), ..
            }) => Err(ApiError::Conflict(why)),
            Some(CompletionResult {
                unavailable: Some(why),
                ..
            }) => Err(ApiError::Upstream(why)),
            _ => Ok(true),
        }
    }

    async fn completions(
        &self,
        r: concurrent_core::wire::CompletionsRequest,
    ) -> Result<concurrent_core::wire::CompletionsResponse, ApiError> {
        Ok(concurrent_core::wire::CompletionsResponse {
            results: self.complete_all(r.completions).await?,
        })
    }

    /// Why a completion cannot be taken (the lease is not current), or its item.
    fn check_completion(
        &self,
        r: &CompleteRequest,
        row: Option<Row>,
    ) -> Result<Result<WorkItem, String>, ApiError> {
        let Some(row) = row else {
            return Ok(Err(format!(
                "work item {} is not leased (it completed, expired or was cancelled)",
                r.item_id
            )));
        };
        if row.token as u64 != r.token {
            return Ok(Err(format!(
                "lease token {} of work item {} is stale; the current lease has token {}",
                r.token, r.item_id, row.token
            )));
        }
        if row.state == "cancelled" {
            self.sql.exec(
                "DELETE FROM items WHERE id = ?",
                vec![r.item_id.clone().into()],
            )?;
            return Ok(Err(format!(
                "work item {} was cancelled; its result is discarded",
                r.item_id
            )));
        }
        if row.state != "leased" {
            return Ok(Err(format!("work item {} is not leased", r.item_id)));
        }
        Ok(Ok(serde_json::from_str(&row.item)?))
    }

    /// Takes completions: each run hears of its own in one call (the attempt's MLflow run
    /// first, then the end), then the items leave the queue. The items of a run that cannot be
    /// reached stay leased, answered as unavailable: to be completed again or to expire.
    async fn complete_all(
        &self,
        requests: Vec<CompleteRequest>,
    ) -> Result<Vec<CompletionResult>, ApiError> {
        let mut results: Vec<CompletionResult> = Vec::new();
        // Run id → (result index, index of its Finished event) and the events.
        let mut by_run: BTreeMap<String, (Vec<(usize, usize)>, Vec<Event>)> = BTreeMap::new();
        let ids: Vec<&str> = requests.iter().map(|r| r.item_id.as_str()).collect();
        let mut rows: BTreeMap<String, Row> = self
            .rows(&ids)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        for r in requests {
            results.push(CompletionResult {
                item_id: r.item_id.clone(),
                refused: None,
                unavailable: None,
            });
            let at = results.len() - 1;
            let row = rows.remove(&r.item_id);
            let item = match self.check_completion(&r, row)? {
                Ok(item) => item,
                Err(why) => {
                    results[at].refused = Some(why);
                    continue;
                }
            };
            let created = match r.mlflow_run_id.as_deref().map(|m| reported_run(&item, m)) {
                Some(Err(why)) => {
                    results[at].refused = Some(why);
                    continue;
                }
                Some(Ok(event)) => event,
                None => None,
            };
            let none = match (r.no_mlflow_run, &r.mlflow_run_id) {
                (true, Some(id)) => {
                    results[at].refused = Some(format!(
                        "the completion of {} names MLflow run {id} and says it made none",
                        r.item_id
                    ));
                    continue;
                }
                (true, None) => Some(Event::NoAttemptRun { key: item.key() }),
                (false, _) => None,
            };
            let (slots, events) = by_run.entry(item.run_id.clone()).or_default();
            events.extend(created);
            events.extend(none);
            slots.push((at, events.len()));
            events.push(Event::Finished {
                key: item.key(),
                outcome: r.outcome.bounded(),
            });
        }
        for (run_id, (slots, events)) in by_run {
            let answers = match RunClient::of(&self.env, &run_id)?.events(&events).await {
                Ok(answers) => answers,
                Err(e) => {
                    worker::console_error!(
                        "queue: telling run {run_id} of {} completions failed: {}",
                        slots.len(),
                        e.detail()
                    );
                    for (at, _) in slots {
                        results[at].unavailable = Some(format!(
                            "run {run_id} could not be told of the result; report it again"
                        ));
                    }
                    continue;
                }
            };
            let mut done = Vec::with_capacity(slots.len());
            for (at, event) in slots {
                if let Some(why) = answers.get(event).cloned().flatten() {
                    results[at].refused = Some(format!("the run refused the result: {why}"));
                }
                done.push(results[at].item_id.clone());
            }
            self.delete(&done)?;
        }
        self.forget_shared()?;
        Ok(results)
    }

    async fn tell_run(&self, item: &WorkItem, event: Event) -> Result<Option<Rejected>, ApiError> {
        let answers = run_of(&self.env, item)?.events(&vec![event]).await?;
        Ok(answers.into_iter().next().flatten())
    }

    /// Passes a step's commit to its run, for a lease that is current.
    async fn pin(&self, r: PinRequest) -> Result<PinResponse, ApiError> {
        match self.row(&r.item_id)? {
            Some(row) if row.token as u64 == r.token && row.state == "leased" => {
                let item: WorkItem = serde_json::from_str(&row.item)?;
                run_of(&self.env, &item)?.pin(&(r.source, r.commit)).await
            }
            _ => Err(ApiError::Conflict(format!(
                "lease {} of work item {} is not current",
                r.token, r.item_id
            ))),
        }
    }

    async fn withdraw(&self, w: Withdraw) -> Result<bool, ApiError> {
        for id in w.item_ids {
            self.sql.exec(
                "DELETE FROM items WHERE id = ? AND state = 'ready'",
                vec![id.clone().into()],
            )?;
            self.sql.exec(
                "UPDATE items SET state = 'cancelled' WHERE id = ? AND state = 'leased'",
                vec![id.into()],
            )?;
        }
        self.forget_shared()?;
        Ok(true)
    }

    /// Ends expired leases, each by core's [`on_expiry`]. One row that fails (its run cannot
    /// be told, its item does not decode) is logged and left for the next pass; the others
    /// go on.
    async fn expire(&self) -> Result<(), ApiError> {
        let now = now_ms();
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT * FROM items WHERE state IN ('leased', 'cancelled') AND expires_at <= ?",
                vec![(now as i64).into()],
            )?
            .to_array()?;
        let mut failed = 0;
        for row in rows {
            let id = row.id.clone();
            if let Err(e) = self.expire_one(row).await {
                failed += 1;
                worker::console_error!("queue: expiring the lease of {id} failed: {}", e.detail());
            }
        }
        self.forget_shared()?;
        if self
            .sql
            .exec("SELECT id FROM items WHERE state = 'ready' LIMIT 1", None)?
            .to_array::<serde_json::Value>()?
            .len()
            == 1
        {
            for w in self.waiters.borrow_mut().drain(..) {
                let _ = w.send(());
            }
        }
        if failed > 0 {
            self.state.storage().set_alarm(RETRY_EXPIRY_MS).await?;
            return Ok(());
        }
        self.arm().await
    }

    async fn expire_one(&self, row: Row) -> Result<(), ApiError> {
        let confirmed = !self
            .sql
            .exec(
                "SELECT id FROM confirmed WHERE id = ?",
                vec![row.id.clone().into()],
            )?
            .to_array::<serde_json::Value>()?
            .is_empty();
        let requeues = row.requeues.unwrap_or(0.0) as u32;
        let agent = row.agent.clone().unwrap_or_default();
        let decision = on_expiry(
            row.state == "cancelled",
            confirmed,
            requeues,
            &agent,
            self.ttl(),
        );
        if decision != Expiry::Drop {
            let item: WorkItem = match serde_json::from_str(&row.item) {
                Ok(item) => item,
                Err(e) => {
                    // Written by another version, perhaps: keep it for a person, out of the way.
                    self.sql.exec(
                        "UPDATE items SET state = 'broken' WHERE id = ?",
                        vec![row.id.clone().into()],
                    )?;
                    return Err(ApiError::Internal(format!(
                        "work item {} does not decode ({e}); it is set aside as 'broken'",
                        row.id
                    )));
                }
            };
            let event = match &decision {
                Expiry::Requeue => Event::Requeued { key: item.key() },
                Expiry::Fail(error) => Event::Finished {
                    key: item.key(),
                    outcome: Outcome::Failed {
                        error: error.clone(),
                    },
                },
                Expiry::Drop => unreachable!("handled above"),
            };
            self.tell_run(&item, event).await?;
            if decision == Expiry::Requeue {
                // Its agent may have made the MLflow run before dying: the next one looks first.
                let mut item = item;
                if let Some(c) = item.step.child_run.as_mut() {
                    c.maybe_exists = true;
                }
                self.sql.exec(
                    "UPDATE items SET state = 'ready', token = 0, agent = NULL, expires_at = 0, requeues = requeues + 1, item = ? WHERE id = ?",
                    vec![serde_json::to_string(&item)?.into(), row.id.into()],
                )?;
                return Ok(());
            }
        }
        self.delete(&[row.id])
    }

    /// Sets the alarm to the next lease expiry.
    /// Makes sure the alarm rings by `expires_at` (a lease or heartbeat just set it): cheap,
    /// as an alarm already set sooner stays, and a later one is brought forward. The alarm's
    /// pass finds the true next expiry with [`Self::arm`].
    async fn arm_by(&self, expires_at: u64) -> Result<(), ApiError> {
        let storage = self.state.storage();
        match storage.get_alarm().await? {
            Some(at) if at <= expires_at as i64 => {}
            _ => {
                storage
                    .set_alarm(expires_at.saturating_sub(now_ms()) as i64 + 1)
                    .await?
            }
        }
        Ok(())
    }

    async fn arm(&self) -> Result<(), ApiError> {
        #[derive(Deserialize)]
        struct Next {
            next: Option<f64>,
        }
        let n: Next = self
            .sql
            .exec(
                "SELECT MIN(expires_at) AS next FROM items WHERE state IN ('leased', 'cancelled')",
                None,
            )?
            .one()?;
        if let Some(at) = n.next {
            self.state
                .storage()
                .set_alarm((at as u64).saturating_sub(now_ms()) as i64 + 1)
                .await?;
        }
        Ok(())
    }
}
