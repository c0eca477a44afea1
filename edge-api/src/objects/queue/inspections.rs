//! The designer's project inspections, held in memory by the queue of the cluster whose agents
//! read the project: an agent long-polls for them beside its leases and posts each answer,
//! which wakes the designer's waiting request. No agent polling in the last
//! [`CONNECTED_WITHIN_MS`] means none is connected, and the designer is told so at once.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use concurrent_core::project::ProjectInfo;
use concurrent_core::wire::{
    InspectAnswer, InspectRequest, Inspection, InspectionsRequest, InspectionsResponse,
    INSPECT_TIMEOUT_MS,
};
use futures_channel::oneshot;

use super::api::InspectCall;
use super::QueueObject;
use crate::error::ApiError;
use crate::platform::{now_ms, random_id};

/// An agent that polled this recently is connected (its polls last at most 30 s).
const CONNECTED_WITHIN_MS: u64 = 45_000;
/// Longest inspection poll.
const MAX_POLL_MS: u32 = 30_000;

struct Pending {
    request: InspectRequest,
    taken_by: Option<String>,
    reply: Option<oneshot::Sender<InspectAnswer>>,
}

/// The queue object's inspections: waiting requests, polling agents.
#[derive(Default)]
pub struct Inspections {
    pending: RefCell<BTreeMap<String, Pending>>,
    pollers: RefCell<Vec<oneshot::Sender<()>>>,
    last_poll: Cell<u64>,
}

impl QueueObject {
    pub(super) async fn inspect(&self, call: InspectCall) -> Result<ProjectInfo, ApiError> {
        let ins = &self.inspections;
        let cluster = &call.cluster;
        if now_ms().saturating_sub(ins.last_poll.get()) > CONNECTED_WITHIN_MS {
            return Err(ApiError::NoAgent(format!(
                "no agent of cluster {cluster:?} is connected, so nobody can read the project; start one (`concurrent agent --cluster {cluster} ...`) or pick a cluster whose agent runs"
            )));
        }
        let id = random_id();
        let (tx, rx) = oneshot::channel();
        ins.pending.borrow_mut().insert(
            id.clone(),
            Pending {
                request: call.request,
                taken_by: None,
                reply: Some(tx),
            },
        );
        for p in ins.pollers.borrow_mut().drain(..) {
            let _ = p.send(());
        }
        let timeout = worker::Delay::from(Duration::from_millis(INSPECT_TIMEOUT_MS));
        let answer = match futures_util::future::select(rx, timeout).await {
            futures_util::future::Either::Left((Ok(a), _)) => Some(a),
            _ => None,
        };
        let pending = ins.pending.borrow_mut().remove(&id);
        let Some(answer) = answer else {
            let secs = INSPECT_TIMEOUT_MS / 1000;
            return Err(ApiError::NoAgent(match pending.and_then(|p| p.taken_by) {
                Some(agent) => format!("agent {agent:?} of cluster {cluster:?} took the inspection but did not answer within {secs} s (a slow git server, or the agent stopped); retry, or see the agent's log"),
                None => format!("no agent of cluster {cluster:?} took the inspection within {secs} s; check that its agents run this version of Concurrent"),
            }));
        };
        match (answer.project, answer.error) {
            (Some(p), _) => Ok(p),
            (None, why) => Err(ApiError::Unprocessable(why.unwrap_or_else(|| {
                "the agent could not read the project and did not say why".into()
            }))),
        }
    }

    pub(super) async fn take_inspections(
        &self,
        r: InspectionsRequest,
    ) -> Result<InspectionsResponse, ApiError> {
        let ins = &self.inspections;
        ins.last_poll.set(now_ms());
        let mut taken = self.untaken(&r.agent);
        if taken.is_empty() && r.wait_ms > 0 {
            let (tx, rx) = oneshot::channel();
            ins.pollers.borrow_mut().push(tx);
            let wait =
                worker::Delay::from(Duration::from_millis(r.wait_ms.min(MAX_POLL_MS).into()));
            futures_util::future::select(rx, wait).await;
            ins.last_poll.set(now_ms());
            taken = self.untaken(&r.agent);
        }
        Ok(InspectionsResponse { inspections: taken })
    }

    fn untaken(&self, agent: &str) -> Vec<Inspection> {
        let mut pending = self.inspections.pending.borrow_mut();
        pending
            .iter_mut()
            .filter(|(_, p)| p.taken_by.is_none())
            .map(|(id, p)| {
                p.taken_by = Some(agent.to_string());
                Inspection {
                    id: id.clone(),
                    request: p.request.clone(),
                }
            })
            .collect()
    }

    pub(super) fn answer_inspection(&self, a: InspectAnswer) -> bool {
        let reply = self
            .inspections
            .pending
            .borrow_mut()
            .get_mut(&a.id)
            .and_then(|p| p.reply.take());
        match reply {
            Some(tx) => tx.send(a).is_ok(),
            None => false,
        }
    }
}
