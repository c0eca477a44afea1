//! The work queue Durable Object, one per cluster: ready items, leases with fencing tokens,
//! long-polling agents, lease expiry, and the designer's project inspections.
//!
//! What a lease, a heartbeat, a completion, a withdrawal and an expiry do to an item is decided
//! by core's `lease` (its guarantees are this queue's); the files here read rows, ask core and
//! write the answer: `items` (rows, enqueue, withdraw), `lease`, `heartbeat`, `complete`,
//! `expire`, `inspections`. `api` is what callers may know.
//!
//! A completion is forwarded to the run before the item is deleted, so a crash in between
//! leaves the item to expire, and the run refuses the duplicate as stale.

pub mod api;
mod complete;
mod expire;
mod heartbeat;
mod inspections;
mod items;
mod lease;

use std::cell::RefCell;
use std::collections::BTreeMap;

use concurrent_core::project::ProjectInfo;
use concurrent_core::wire::{
    CompleteRequest, CompletionsRequest, CompletionsResponse, EnqueueRequest, HeartbeatRequest,
    HeartbeatResponse, InspectAnswer, InspectionsRequest, InspectionsResponse, LeaseRequest,
    LeaseResponse, PinRequest, PinResponse,
};
use futures_channel::oneshot;
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use self::api::{InspectCall, QueueApi, Withdraw};
use crate::error::ApiError;
use crate::http::reply;

const DEFAULT_LEASE_TTL_MS: u64 = 30_000;

#[durable_object]
pub struct QueueObject {
    state: State,
    env: Env,
    sql: SqlStorage,
    /// Long-polling lease requests waiting for work.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Agents found gone (a lease handed to them lapsed unconfirmed), and when: their pending
    /// long-polls take no more work (core's `lease::may_serve`). In memory: it matters for
    /// the seconds a long-poll lasts.
    gone: RefCell<BTreeMap<String, u64>>,
    /// `LEASE_TTL_MS`, read once (it is asked for several times per lease).
    lease_ttl_ms: u64,
    /// When this object started: no agent could be heard before (core's `lease::lapses_at`).
    heard_since: u64,
    /// Project inspections for the designer (in memory: they live for one request).
    inspections: inspections::Inspections,
}

impl DurableObject for QueueObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        items::create_schema(&sql);
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
            gone: RefCell::new(BTreeMap::new()),
            lease_ttl_ms,
            heard_since: crate::platform::now_ms(),
            inspections: Default::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        reply(self.serve(&mut req).await)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        if let Err(e) = self.expire().await {
            worker::console_error!("queue: expiring leases failed: {}", e.detail());
            self.state
                .storage()
                .set_alarm(expire::RETRY_EXPIRY_MS)
                .await?;
        }
        Response::ok("ok")
    }
}

/// Each request is served by the file of its concern, in a method of the request's name.
impl QueueApi for QueueObject {
    async fn enqueue(&self, r: EnqueueRequest) -> Result<bool, ApiError> {
        QueueObject::enqueue(self, r)
    }

    async fn lease(
        &self,
        r: LeaseRequest,
    ) -> Result<LeaseResponse<Box<serde_json::value::RawValue>>, ApiError> {
        QueueObject::lease(self, r).await
    }

    async fn heartbeat(&self, r: HeartbeatRequest) -> Result<HeartbeatResponse, ApiError> {
        QueueObject::heartbeat(self, r).await
    }

    async fn complete(&self, r: CompleteRequest) -> Result<bool, ApiError> {
        QueueObject::complete(self, r).await
    }

    async fn completions(&self, r: CompletionsRequest) -> Result<CompletionsResponse, ApiError> {
        Ok(CompletionsResponse {
            results: self.complete_all(r.completions).await?,
        })
    }

    async fn withdraw(&self, w: Withdraw) -> Result<bool, ApiError> {
        QueueObject::withdraw(self, w)
    }

    async fn pin(&self, r: PinRequest) -> Result<PinResponse, ApiError> {
        QueueObject::pin(self, r).await
    }

    async fn inspect(&self, call: InspectCall) -> Result<ProjectInfo, ApiError> {
        QueueObject::inspect(self, call).await
    }

    async fn take_inspections(
        &self,
        r: InspectionsRequest,
    ) -> Result<InspectionsResponse, ApiError> {
        QueueObject::take_inspections(self, r).await
    }

    async fn answer_inspection(&self, a: InspectAnswer) -> Result<bool, ApiError> {
        Ok(QueueObject::answer_inspection(self, a))
    }
}

impl QueueObject {
    fn ttl(&self) -> u64 {
        self.lease_ttl_ms
    }

    /// Wakes the long-polls waiting for work.
    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }
}
