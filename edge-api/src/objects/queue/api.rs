//! What callers may know of a cluster's queue: its messages and its typed client.

use concurrent_core::project::ProjectInfo;
use concurrent_core::wire::{
    CompleteRequest, CompletionsRequest, CompletionsResponse, EnqueueRequest, HeartbeatRequest,
    HeartbeatResponse, InspectAnswer, InspectRequest, InspectionsRequest, InspectionsResponse,
    LeaseRequest, LeaseResponse, PinRequest, PinResponse,
};
use serde::{Deserialize, Serialize};
use worker::{Env, Response};

use crate::error::ApiError;
use crate::http::{object_api, ObjectStub};

pub const BINDING: &str = "QUEUES";

/// Withdraw request sent to a queue: ready items leave it, leased ones are flagged so their
/// agents stop them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Withdraw {
    pub item_ids: Vec<String>,
}

/// A designer's inspection as the Worker passes it to the queue of the cluster whose agents
/// read the project.
#[derive(Serialize, Deserialize)]
pub struct InspectCall {
    pub cluster: String,
    pub request: InspectRequest,
}

object_api! {
    /// The typed client of a cluster's queue: one method per request it serves.
    QueueClient,
    /// What a cluster's queue serves.
    QueueApi {
        /// Adds work items (idempotent by item id) and the inputs they share.
        enqueue(EnqueueRequest) -> bool = "/enqueue";
        /// Leases up to `max` ready items, waiting up to `wait_ms` for one; the items as the
        /// JSON the queue stored them. Callers use `lease_response`, which passes it on unparsed.
        #[allow(dead_code)]
        lease(LeaseRequest) -> LeaseResponse<Box<serde_json::value::RawValue>> = "/lease";
        /// Confirms and extends leases; answers which were cancelled or lost.
        heartbeat(HeartbeatRequest) -> HeartbeatResponse = "/heartbeat";
        /// Ends a lease with its outcome (409 when the lease is not current).
        complete(CompleteRequest) -> bool = "/complete";
        /// Ends several leases; one answer each.
        completions(CompletionsRequest) -> CompletionsResponse = "/completions";
        /// Drops ready items and flags leased ones of cancelled attempts.
        withdraw(Withdraw) -> bool = "/withdraw";
        /// Passes a step's git commit to its run (for a current lease).
        pin(PinRequest) -> PinResponse = "/pin";
        /// Has a live agent read a project; waits for its answer.
        inspect(InspectCall) -> ProjectInfo = "/inspect";
        /// An agent long-polls for inspections to answer.
        take_inspections(InspectionsRequest) -> InspectionsResponse = "/inspections";
        /// An agent's answer to an inspection (false: nobody waits for it any more).
        answer_inspection(InspectAnswer) -> bool = "/inspections/answer";
    }
}

impl QueueClient {
    /// The queue of `cluster`.
    pub fn of(env: &Env, cluster: &str) -> Result<QueueClient, ApiError> {
        Ok(QueueClient(ObjectStub::new(env, BINDING, cluster)?))
    }

    /// The lease's answer, passed on to the agent as the queue wrote it: a hundred work items
    /// are neither decoded nor encoded again on the way.
    pub async fn lease_response(&self, r: &LeaseRequest) -> Result<Response, ApiError> {
        self.0.forward("/lease", r).await
    }
}
