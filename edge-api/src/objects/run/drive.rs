//! Driving a run (at once after a change, or from its alarm): each round reconciles the state
//! into effects (core's `next_round` batches them), carries out the queue calls per cluster and
//! then the MLflow calls in waves as wide as an adaptive limit allows, and applies what they
//! return, until nothing is left or everything left failed.

use std::cell::Cell;

use concurrent_core::concurrency_limit::ConcurrencyLimit;
use concurrent_core::run::{next_round, Event, MlflowEffect, MlflowRef, Round, RoundLimits};
use concurrent_core::wire::{batches_by_size, EnqueueRequest, MAX_MESSAGE_BYTES};

use super::Run;
use crate::error::ApiError;
use crate::mlflow::{Mlflow, MlflowError};
use crate::objects::catalog::api::CatalogClient;
use crate::objects::queue::api::{QueueClient, Withdraw};
use crate::platform::now_ms;

/// Wait before retrying effects that failed (a queue unreachable).
const RETRY_MS: u64 = 3_000;
/// MLflow calls in flight at once from one run: where the adaptive limit starts, and its
/// bounds (a run never takes all of a shared MLflow, nor drops below two calls).
const MLFLOW_PARALLEL: (usize, usize, usize) = (8, 2, 64);
/// Longest time one alarm drives the run before handing over to the next alarm.
const ALARM_BUDGET_MS: u64 = 20_000;
/// What one drive round carries: a 10,000-wide node is handed over 500 items at a time, so its
/// items (each with its inputs) are never all in memory at once.
const ROUND: RoundLimits = RoundLimits {
    items: 500,
    mlflow: 128,
};

pub(super) fn mlflow_limit() -> ConcurrencyLimit {
    let (initial, min, max) = MLFLOW_PARALLEL;
    ConcurrencyLimit::new(initial, min, max)
}

/// What a round achieved.
#[derive(Default)]
struct Outcome {
    progressed: bool,
    /// A queue call failed: retry after [`RETRY_MS`].
    failed: bool,
}

impl Run {
    /// Carries out effects until none are left or all remaining ones failed.
    pub(super) async fn drive(&self) -> Result<(), ApiError> {
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
        let mlflow = Mlflow::from_env(&self.env)?;
        let started = now_ms();
        loop {
            // Keep each alarm short; a big run continues in the next one.
            if now_ms() - started > ALARM_BUDGET_MS {
                self.sync_index().await;
                self.state.storage().set_alarm(0i64).await?;
                return Ok(());
            }
            self.again.set(false);
            let now = now_ms();
            // Ticks only matter when a retry is due; a full save of a big run is not free.
            if self.retry_due(now)? {
                self.apply_event(Event::Tick)?.ok();
            }
            let round = self.with_run(|run| next_round(run, now, ROUND))?;
            let (wake, queueing) = (round.wake, round.queueing);
            let outcome = self.carry_out(&mlflow, round).await?;
            if outcome.progressed || self.again.get() {
                if queueing {
                    // A wide node is being queued: let other requests in between its rounds.
                    // The answers of objects in this isolate resume the drive as microtasks,
                    // so without a timer's turn no agent's lease got in until all 100,000 of
                    // a node's items were queued (7 s).
                    worker::Delay::from(std::time::Duration::ZERO).await;
                }
                continue;
            }
            // Once a drive, not once a round: the run list shows the status and the MLflow
            // run, and a short run's first rounds (its MLflow run made, its work enqueued)
            // would each cost a call to the one catalog object.
            self.sync_index().await;
            let retry = outcome.failed.then(|| now_ms() + RETRY_MS);
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

    /// Carries out one round and applies its results.
    async fn carry_out(&self, mlflow: &Mlflow, round: Round) -> Result<Outcome, ApiError> {
        let mut outcome = Outcome::default();
        // The queues first: the next steps' work waits on nothing MLflow answers in the same
        // round (reconcile emits work only once what it needs is recorded), and a step
        // transition should not wait for the previous attempt's run to be closed.
        for (cluster, items) in round.enqueue {
            let queue = QueueClient::of(&self.env, &cluster)?;
            for batch in batches_by_size(items, MAX_MESSAGE_BYTES) {
                let request = EnqueueRequest {
                    shared: self.with_run(|run| run.shared_for(&batch))?,
                    items: batch,
                };
                if let Err(e) = queue.enqueue(&request).await {
                    worker::console_error!(
                        "run {}: enqueue on cluster {cluster:?} failed: {}",
                        self.run_id(),
                        e.detail()
                    );
                    outcome.failed = true;
                    break;
                }
                self.apply_events(
                    request
                        .items
                        .iter()
                        .map(|item| Event::Enqueued { key: item.key() })
                        .collect(),
                )?;
                outcome.progressed = true;
            }
        }
        for (cluster, list) in round.withdraw {
            let queue = QueueClient::of(&self.env, &cluster)?;
            for batch in batches_by_size(list, MAX_MESSAGE_BYTES) {
                let item_ids = batch.iter().map(|(id, _)| id.clone()).collect();
                if let Err(e) = queue.withdraw(&Withdraw { item_ids }).await {
                    worker::console_error!(
                        "run {}: withdraw on cluster {cluster:?} failed: {}",
                        self.run_id(),
                        e.detail()
                    );
                    outcome.failed = true;
                    break;
                }
                self.apply_events(
                    batch
                        .into_iter()
                        .map(|(_, key)| Event::Withdrawn { key })
                        .collect(),
                )?;
                outcome.progressed = true;
            }
        }
        let mut unavailable: Option<String> = None;
        let mut pending = round.mlflow.as_slice();
        while !pending.is_empty() {
            let wave = self.mlflow_limit.borrow().current().min(pending.len());
            let (chunk, rest) = pending.split_at(wave);
            pending = rest;
            let results = futures_util::future::join_all(chunk.iter().map(|e| async {
                let sent = now_ms();
                let result = self.call_mlflow(mlflow, e).await;
                (now_ms().saturating_sub(sent) as f64, result)
            }))
            .await;
            let mut events = Vec::new();
            let mut settled = Vec::new();
            let (mut answered_ms, mut overloaded) = (Vec::new(), false);
            for (effect, (ms, result)) in chunk.iter().zip(results) {
                let event = match result {
                    Ok(event) => {
                        answered_ms.push(ms);
                        event
                    }
                    Err(MlflowError::Transient(why)) => {
                        worker::console_warn!("run {}: {why}", self.run_id());
                        unavailable.get_or_insert(why);
                        overloaded = true;
                        continue;
                    }
                    Err(refused) => {
                        answered_ms.push(ms);
                        worker::console_warn!(
                            "run {}: MLflow refused: {}",
                            self.run_id(),
                            refused.reason()
                        );
                        Event::MlflowRefused {
                            call: effect.call(),
                            message: refused.reason(),
                        }
                    }
                };
                events.push(event);
                settled.extend(effect.create_key());
                outcome.progressed = true;
            }
            self.mlflow_limit
                .borrow_mut()
                .on_wave(&answered_ms, overloaded);
            for why in self.apply_events(events)?.into_iter().flatten() {
                worker::console_warn!("run {}: {why}", self.run_id());
            }
            // Only once the created runs are recorded may their intents go.
            for key in settled {
                self.create_settled(key)?;
            }
        }
        if let Some(reason) = unavailable {
            self.apply_event(Event::MlflowUnavailable { reason })?.ok();
        }
        for n in round.notify {
            let error = crate::webhook::deliver(&self.env, &n, &self.run_id())
                .await
                .err();
            if let Some(why) = &error {
                worker::console_warn!(
                    "run {}: notification {} ({}): {why}",
                    self.run_id(),
                    n.to,
                    n.event
                );
            }
            self.apply_event(Event::Notified {
                to: n.to,
                what: n.event,
                error,
            })?
            .ok();
            outcome.progressed = true;
        }
        Ok(outcome)
    }

    /// Carries out one MLflow call and returns the event that records it.
    async fn call_mlflow(
        &self,
        mlflow: &Mlflow,
        effect: &MlflowEffect,
    ) -> Result<Event, MlflowError> {
        let now = now_ms();
        let sent_before = |key: &str| {
            self.create_sent_before(key)
                .map_err(|e| MlflowError::Transient(e.detail()))
        };
        match effect {
            MlflowEffect::CreateParentRun {
                key,
                experiment_name,
                experiment_id,
                run_name,
                tags,
                params,
            } => {
                let (mut experiment_id, remembered) = match experiment_id {
                    Some(id) => (id.clone(), false),
                    None => mlflow.experiment_id_remembered(experiment_name).await?,
                };
                let maybe = sent_before(key)?;
                let create = |experiment_id: String| async move {
                    mlflow
                        .create_run(key, maybe, &experiment_id, run_name, now, tags, params)
                        .await
                };
                let run_id = match create(experiment_id.clone()).await {
                    // The remembered experiment may have been deleted since: ask once more.
                    Err(MlflowError::Refused { .. }) if remembered => {
                        mlflow.forget_experiment(experiment_name);
                        experiment_id = mlflow.experiment_id(experiment_name).await?;
                        create(experiment_id.clone()).await?
                    }
                    other => other?,
                };
                Ok(Event::ParentRunCreated(MlflowRef {
                    experiment_id,
                    run_id,
                }))
            }
            MlflowEffect::CloseUnreportedRun {
                attempt,
                experiment_id,
                run,
                note,
                start_time,
                status,
                end_time,
            } => {
                // Looked up first (`maybe_exists`): its agent may have made it, or an earlier
                // create of ours whose answer was lost.
                let mut tags = run.tags.clone();
                tags.push(("mlflow.note.content".into(), note.clone()));
                let run_id = mlflow
                    .create_run(
                        &run.key,
                        run.maybe_exists,
                        experiment_id,
                        &run.run_name,
                        *start_time,
                        &tags,
                        &run.params,
                    )
                    .await?;
                mlflow.update_run(&run_id, status, Some(*end_time)).await?;
                Ok(Event::AttemptRunClosed {
                    key: attempt.clone(),
                    run_id: Some(run_id),
                })
            }
            MlflowEffect::CloseAttemptRun {
                attempt,
                run_id,
                status,
                end_time,
            } => {
                mlflow.update_run(run_id, status, Some(*end_time)).await?;
                Ok(Event::AttemptRunClosed {
                    key: attempt.clone(),
                    run_id: None,
                })
            }
            MlflowEffect::SyncParentRun {
                run_id,
                status,
                end_time,
                metrics,
                attempt_runs,
            } => {
                for (id, status) in attempt_runs {
                    if mlflow.run_status(id).await? != *status {
                        mlflow.update_run(id, status, Some(now_ms())).await?;
                    }
                }
                if !metrics.is_empty() {
                    mlflow.log_batch(run_id, &[], metrics, now_ms()).await?;
                }
                mlflow
                    .update_run(run_id, status.mlflow_status(), *end_time)
                    .await?;
                Ok(Event::ParentRunSynced { status: *status })
            }
            MlflowEffect::RecordSelection {
                run_id,
                node,
                input,
                tags,
                path,
                json,
            } => {
                mlflow.log_batch(run_id, tags, &[], now_ms()).await?;
                mlflow.put_artifact(run_id, path, json).await?;
                Ok(Event::SelectionRecorded {
                    node: node.clone(),
                    input: input.clone(),
                })
            }
            MlflowEffect::RegisterModel {
                node,
                key,
                name,
                source,
                run_id,
                model_id,
                alias,
                tags,
            } => {
                let version = mlflow
                    .register_model(
                        name,
                        key,
                        source,
                        run_id,
                        model_id.as_deref(),
                        tags,
                        alias.as_deref(),
                    )
                    .await?;
                Ok(Event::ModelRegistered {
                    node: node.clone(),
                    version,
                })
            }
            MlflowEffect::NoteNode { run_id, node, tags } => {
                mlflow.log_batch(run_id, tags, &[], now_ms()).await?;
                Ok(Event::NodeNoted { node: node.clone() })
            }
        }
    }

    /// Keeps the catalog's run list in step with the run's status (best effort; retried on the
    /// next change or alarm).
    pub(super) async fn sync_index(&self) {
        let Ok((seen, summary)) = self.with_run(|r| ((r.status, r.mlflow.is_some()), r.summary()))
        else {
            return;
        };
        if self.cache.borrow().as_ref().and_then(|c| c.indexed) == Some(seen) {
            return;
        }
        let result = async { CatalogClient::of(&self.env)?.upsert_run(&summary).await }.await;
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
