//! Project inspection for the designer: `POST /clusters/:cluster/inspect` hands the request to
//! a live agent of that cluster (which reads the project where its steps would, so private
//! repositories and the agent's project root work) and answers with what the agent found.
//!
//! The cluster's queue object holds the requests in memory: an agent long-polls
//! `POST /agents/:cluster/inspections` beside its leases and posts each answer to
//! `.../inspections/answer`, which wakes the designer's waiting request. No agent polling in the
//! last [`CONNECTED_WITHIN_MS`] means none is connected, and the designer is told so at once.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use concurrent_core::project::ProjectInfo;
use concurrent_core::refs;
use concurrent_core::wire::{
    InspectAnswer, InspectRequest, Inspection, InspectionsRequest, InspectionsResponse,
    INSPECT_TIMEOUT_MS,
};
use futures_channel::oneshot;
use serde::{Deserialize, Serialize};
use worker::{Request, Response};

use crate::agents::{cluster, queue};
use crate::error::{respond, ApiError};
use crate::http::{json_body, now_ms, random_id};
use crate::queue::{QueueClient, QueueObject};
use crate::router::Ctx;

/// An agent that polled this recently is connected (its polls last at most 30 s).
const CONNECTED_WITHIN_MS: u64 = 45_000;
/// Longest inspection poll.
const MAX_POLL_MS: u32 = 30_000;

/// An inspection as the Worker passes it to the queue object.
#[derive(Serialize, Deserialize)]
pub struct InspectCall {
    pub cluster: String,
    pub request: InspectRequest,
}

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
    pub(crate) async fn inspect(&self, call: InspectCall) -> Result<ProjectInfo, ApiError> {
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

    pub(crate) async fn take_inspections(
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

    pub(crate) async fn answer_inspection(&self, a: InspectAnswer) -> Result<bool, ApiError> {
        let reply = self
            .inspections
            .pending
            .borrow_mut()
            .get_mut(&a.id)
            .and_then(|p| p.reply.take());
        Ok(match reply {
            Some(tx) => tx.send(a).is_ok(),
            None => false,
        })
    }
}

/// `POST /clusters/:cluster/inspect` — what the project declares, read by a live agent.
pub async fn handle_inspect(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: InspectRequest = json_body(&mut req).await?;
        let problem = refs::project_uri_problem(&body.uri)
            .map(|why| format!("uri: {why}"))
            .or_else(|| {
                body.version
                    .as_deref()
                    .and_then(refs::git_ref_problem)
                    .map(|why| format!("version: {why}"))
            })
            .or_else(|| {
                body.sub_path
                    .as_deref()
                    .and_then(refs::local_path_problem)
                    .map(|why| format!("subPath: {why}"))
            });
        if let Some(why) = problem {
            return Err(ApiError::BadRequest(why));
        }
        let cluster = cluster(&ctx)?;
        QueueClient::of(&ctx.env, &cluster)?
            .inspect(&InspectCall {
                cluster,
                request: body,
            })
            .await
    }
    .await;
    respond(result, 200)
}

/// `POST /agents/:cluster/inspections` — an agent long-polls for inspections.
pub async fn handle_poll(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: InspectionsRequest = json_body(&mut req).await?;
        if ctx.data.lease.is_some() {
            return Err(ApiError::Forbidden(
                "a step token cannot take inspections".into(),
            ));
        }
        queue(&ctx)?.take_inspections(&body).await
    }
    .await;
    respond(result, 200)
}

/// `POST /agents/:cluster/inspections/answer` — what the agent found.
pub async fn handle_answer(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let mut body: InspectAnswer = json_body(&mut req).await?;
        if ctx.data.lease.is_some() {
            return Err(ApiError::Forbidden(
                "a step token cannot answer inspections".into(),
            ));
        }
        if let Some(e) = body.error.take() {
            body.error = Some(concurrent_core::logtail::keep_start(&e, 4096));
        }
        queue(&ctx)?.answer_inspection(&body).await
    }
    .await;
    respond(result, 200)
}
