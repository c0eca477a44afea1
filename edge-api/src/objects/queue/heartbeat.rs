//! Heartbeats: an agent confirms and extends its leases in one call (with the log tails of its
//! steps and the MLflow runs it made), and hears which were cancelled or lost.

use std::collections::BTreeMap;

use concurrent_core::lease;
use concurrent_core::logtail::keep_end;
use concurrent_core::run::Event;
use concurrent_core::wire::{
    HeartbeatRequest, HeartbeatResponse, LeaseStatus, WorkItem, MAX_TAIL_BYTES,
};

use super::QueueObject;
use crate::error::ApiError;
use crate::objects::run::api::RunClient;
use crate::platform::now_ms;

impl QueueObject {
    /// Core's `lease::heartbeat` for every lease, written in a few statements whatever their
    /// number: an agent holding a thousand leases heartbeats them all at once.
    pub(super) async fn heartbeat(
        &self,
        r: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ApiError> {
        let now = now_ms();
        let ids: Vec<&str> = r.leases.iter().map(|l| l.item_id.as_str()).collect();
        let slots = self.slots(&ids)?;
        let mut answers = BTreeMap::new();
        let mut changes = Vec::with_capacity(r.leases.len());
        for l in &r.leases {
            let (status, change) =
                lease::heartbeat(slots.get(&l.item_id), l.token, now, self.ttl());
            answers.insert(l.item_id.clone(), status);
            changes.push((l.item_id.clone(), change));
        }
        self.write_from(&slots, changes)?;
        self.forward_runs(&r.runs, &answers).await?;
        self.forward_tails(&r.tails, &answers).await;
        let expires_at = now + self.ttl();
        crate::alarm::ring_by(&self.state.storage(), expires_at).await?;
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
            self.set_item(item_id, &item)?;
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
}

/// The event recording the MLflow run an agent made for `item`: none when the item already has
/// it, an error when `mlflow_run` is not a run id.
pub(super) fn reported_run(item: &WorkItem, mlflow_run: &str) -> Result<Option<Event>, String> {
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
