//! Leasing: ready items, oldest first, to an agent's long-poll, each with a new fencing token
//! and its step token; the runs are told who holds what.

use std::collections::BTreeMap;
use std::time::Duration;

use concurrent_core::lease::{self, confirm_window, Change, ItemState};
use concurrent_core::partition::ArtifactFile;
use concurrent_core::run::Event;
use concurrent_core::wire::{
    Lease, LeaseRequest, LeaseResponse, WorkItem, WorkItemHead, MAX_MESSAGE_BYTES,
};
use futures_channel::oneshot;
use serde_json::value::RawValue;

use super::items::{Row, SELECT_ROWS};
use super::QueueObject;
use crate::error::ApiError;
use crate::objects::run::api::RunClient;
use crate::platform::now_ms;

/// Longest long-poll.
const MAX_WAIT_MS: u32 = 30_000;
/// Agents remembered as gone, at most (the oldest are forgotten first).
const GONE_REMEMBERED: usize = 1_000;

/// A lease, its work item as the JSON the queue stored, and what the queue read of that item.
type Taken = (WorkItemHead, Lease<Box<RawValue>>);

impl QueueObject {
    /// Leases up to `max` ready items, oldest first, waiting up to `wait_ms` for one to arrive.
    /// An agent found gone since it asked is handed nothing.
    pub(super) async fn lease(
        &self,
        r: LeaseRequest,
    ) -> Result<LeaseResponse<Box<RawValue>>, ApiError> {
        let asked_at = now_ms();
        let mut leases = self.take_ready(&r)?;
        if leases.is_empty() && r.wait_ms > 0 {
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push(tx);
            let timeout =
                worker::Delay::from(Duration::from_millis(r.wait_ms.min(MAX_WAIT_MS) as u64));
            futures_util::future::select(rx, timeout).await;
            let gone = self.gone.borrow().get(&r.agent).copied();
            if lease::may_serve(gone, asked_at) {
                leases = self.take_ready(&r)?;
            }
        }
        if !leases.is_empty() {
            leases = self.tell_runs_leased(leases, &r.agent).await?;
            // The wait for the first heartbeat counts from the answer: a run slow to record the
            // leases (a 10,000-wide node being planned) must not expire them before the agent
            // has them.
            let expires_at = now_ms() + confirm_window(self.ttl());
            for (_, l) in &mut leases {
                l.expires_at = expires_at;
            }
            // One statement for the batch; a lease taken over meanwhile keeps its own expiry.
            let held: Vec<(&str, u64)> = leases
                .iter()
                .map(|(head, l)| (head.id.as_str(), l.token))
                .collect();
            self.sql.exec(
                "UPDATE items SET expires_at = ?1 FROM json_each(?2) AS j WHERE items.id = j.value ->> 0 AND items.token = j.value ->> 1",
                vec![(expires_at as i64).into(), serde_json::to_string(&held)?.into()],
            )?;
            crate::alarm::ring_by(&self.state.storage(), expires_at).await?;
        }
        Ok(LeaseResponse {
            leases: leases.into_iter().map(|(_, l)| l).collect(),
            lease_ttl_ms: self.ttl(),
        })
    }

    /// Remembers that `agent` is gone (a lease it was handed lapsed unconfirmed).
    pub(super) fn mark_gone(&self, agent: &str) {
        let mut gone = self.gone.borrow_mut();
        gone.insert(agent.to_string(), now_ms());
        if gone.len() > GONE_REMEMBERED {
            if let Some(oldest) = gone
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(a, _)| a.clone())
            {
                gone.remove(&oldest);
            }
        }
    }

    /// Ready items, oldest first, leased to `r.agent`. An item goes on as the JSON it was
    /// stored as, read only for its head, unless it shares its node's inputs (then they are
    /// merged into it).
    fn take_ready(&self, r: &LeaseRequest) -> Result<Vec<Taken>, ApiError> {
        let rows: Vec<Row> = self
            .sql
            .exec(
                &format!("{SELECT_ROWS} WHERE state = ? ORDER BY seq LIMIT ?"),
                vec![
                    ItemState::Ready.as_str().into(),
                    (r.max.clamp(1, 100) as i64).into(),
                ],
            )?
            .to_array()?;
        let mut taken = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        let mut shared: BTreeMap<String, (usize, BTreeMap<String, Vec<ArtifactFile>>)> =
            BTreeMap::new();
        for mut row in rows {
            let head: WorkItemHead = serde_json::from_str(&row.item)?;
            let mut size = row.item.len();
            let item = match &head.step.shared_inputs {
                None => RawValue::from_string(std::mem::take(&mut row.item))?,
                Some(key) => {
                    if !shared.contains_key(key) {
                        shared.insert(key.clone(), self.shared_inputs(key)?);
                    }
                    let (len, files) = &shared[key];
                    size += len;
                    let mut item: WorkItem = serde_json::from_str(&row.item)?;
                    item.merge_shared(files);
                    serde_json::value::to_raw_value(&item)?
                }
            };
            // One answer stays within a message's size; the rest waits for the next request.
            bytes += size;
            if !taken.is_empty() && bytes > MAX_MESSAGE_BYTES {
                break;
            }
            taken.push((row, head, item));
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_n("token", taken.len())?;
        let secret = crate::secrets::bootstrap_token(&self.env)?;
        let now = now_ms();
        let mut changes = Vec::with_capacity(taken.len());
        let mut leases = Vec::with_capacity(taken.len());
        for (token, (row, head, item)) in (first..).zip(taken) {
            let slot = lease::lease(&row.slot(), token, &r.agent, now, self.ttl());
            changes.push((row.id, Change::Update(slot.clone())));
            let step_token = crate::secrets::step_token(&secret, &head.cluster, &head.id, token);
            leases.push((
                head,
                Lease {
                    item,
                    token,
                    expires_at: slot.expires_at,
                    step_token,
                },
            ));
        }
        self.write(changes)?;
        Ok(leases)
    }

    /// Records the leases in their runs; an item whose attempt the run no longer wants (it was
    /// cancelled in between) is dropped here instead of being handed out.
    async fn tell_runs_leased(
        &self,
        leases: Vec<Taken>,
        agent: &str,
    ) -> Result<Vec<Taken>, ApiError> {
        let mut by_run: BTreeMap<String, Vec<Taken>> = BTreeMap::new();
        for l in leases {
            by_run.entry(l.0.run_id.clone()).or_default().push(l);
        }
        let mut kept = Vec::new();
        for (run_id, leases) in by_run {
            let events: Vec<Event> = leases
                .iter()
                .map(|(head, _)| Event::Leased {
                    key: head.key(),
                    agent: agent.into(),
                })
                .collect();
            match RunClient::of(&self.env, &run_id)?.events(&events).await {
                Ok(answers) => {
                    let mut dropped = Vec::new();
                    for (lease, answer) in leases.into_iter().zip(answers) {
                        match answer {
                            None => kept.push(lease),
                            Some(why) => {
                                worker::console_log!("queue: dropping {}: {why}", lease.0.id);
                                dropped.push(lease.0.id);
                            }
                        }
                    }
                    self.delete(&dropped)?;
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
}
