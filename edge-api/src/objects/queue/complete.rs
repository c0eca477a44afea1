//! Completions: outcomes of current leases go to their runs (each run hears of its own in one
//! call), then the items leave the queue; and a step's git commit, pinned in its run.

use std::collections::BTreeMap;

use concurrent_core::cache;
use concurrent_core::lease;
use concurrent_core::run::Event;
use concurrent_core::wire::{CompleteRequest, CompletionResult, PinRequest, PinResponse, WorkItem};

use super::heartbeat::reported_run;
use super::QueueObject;
use crate::error::ApiError;
use crate::objects::run::api::RunClient;
use crate::platform::now_ms;

/// What one run hears of a batch of completions: for each result, the index of its `Finished`
/// event; and the events.
type RunReport = (Vec<(usize, usize)>, Vec<Event>);

impl QueueObject {
    pub(super) async fn complete(&self, r: CompleteRequest) -> Result<bool, ApiError> {
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

    /// Takes completions by core's `lease::complete`: each run hears of its own in one call
    /// (the attempt's MLflow run first, then the end), then the items leave the queue. The
    /// items of a run that cannot be reached stay leased, answered as unavailable: to be
    /// completed again or to expire.
    pub(super) async fn complete_all(
        &self,
        requests: Vec<CompleteRequest>,
    ) -> Result<Vec<CompletionResult>, ApiError> {
        let mut results: Vec<CompletionResult> = Vec::new();
        // Run id → (result index, index of its Finished event) and the events.
        let mut by_run: BTreeMap<String, RunReport> = BTreeMap::new();
        let ids: Vec<&str> = requests.iter().map(|r| r.item_id.as_str()).collect();
        let mut rows: BTreeMap<String, _> = self
            .rows(&ids)?
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        let mut discarded = Vec::new();
        // Results to cache once their runs took them: (result index, entry).
        let mut to_cache = Vec::new();
        for r in requests {
            results.push(CompletionResult {
                item_id: r.item_id.clone(),
                refused: None,
                unavailable: None,
            });
            let at = results.len() - 1;
            let row = rows.remove(&r.item_id);
            if let Err((why, change)) =
                lease::complete(row.as_ref().map(|r| r.slot()).as_ref(), &r.item_id, r.token)
            {
                discarded.push((r.item_id.clone(), change));
                results[at].refused = Some(why);
                continue;
            }
            let item: WorkItem =
                serde_json::from_str(&row.expect("a taken completion has its row").item)?;
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
            let mlflow_run = r
                .mlflow_run_id
                .as_deref()
                .unwrap_or(&item.step.mlflow.run_id);
            if let Some(entry) =
                cache::entry_of(&r.outcome, Some(mlflow_run), &item.run_id, now_ms())
            {
                to_cache.push((at, entry));
            }
            let (slots, events) = by_run.entry(item.run_id.clone()).or_default();
            events.extend(created);
            events.extend(none);
            slots.push((at, events.len()));
            events.push(Event::Finished {
                key: item.key(),
                outcome: r.outcome.bounded(),
            });
        }
        self.write(discarded)?;
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
        for (at, entry) in to_cache {
            let r = &results[at];
            if r.refused.is_some() || r.unavailable.is_some() {
                continue;
            }
            // Best effort: a result left uncached is run again next time.
            if let Err(e) = crate::cache::write(&self.env, &entry).await {
                worker::console_error!("queue: caching {} failed: {}", entry.key, e.detail());
            }
        }
        Ok(results)
    }

    /// Passes a step's commit to its run, for a lease that is current.
    pub(super) async fn pin(&self, r: PinRequest) -> Result<PinResponse, ApiError> {
        match self.row(&r.item_id)? {
            Some(row) if row.slot().is_active(r.token) => {
                let item: WorkItem = serde_json::from_str(&row.item)?;
                RunClient::of(&self.env, &item.run_id)?
                    .pin(&(r.source, r.commit))
                    .await
            }
            _ => Err(ApiError::Conflict(format!(
                "lease {} of work item {} is not current",
                r.token, r.item_id
            ))),
        }
    }
}
