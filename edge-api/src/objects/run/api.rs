//! What callers may know of a run's object: its typed client.

use concurrent_core::run::{Event, Rejected, RunState};
use concurrent_core::wire::{PinResponse, RunSummary};
use worker::{Env, Response};

use crate::error::ApiError;
use crate::http::{object_api, ObjectStub};

pub const BINDING: &str = "RUNS";

object_api! {
    /// The typed client of a run's object: one method per request it serves.
    RunClient,
    /// What a run's object serves.
    RunApi {
        /// Starts the run (again: the same run, if the request is the same).
        start(RunState) -> RunSummary = "/start";
        /// The whole run. Callers use `get_response`, which passes it on unparsed.
        #[allow(dead_code)]
        get(()) -> crate::http::Body = "/get";
        /// The run without instances, each node's counts by state.
        overview(()) -> concurrent_core::run::RunOverview = "/overview";
        /// A page of a node's instances.
        instances(concurrent_core::wire::InstancesQuery) -> concurrent_core::run::InstancesPage = "/instances";
        /// Applies events in order; one answer per event: `None` when applied, the run's
        /// reason when it refused it (stale, or not fitting the run).
        events(Vec<Event>) -> Vec<Option<Rejected>> = "/events";
        /// A step's commit for a git source (source, commit); answers the run's pin.
        pin((String, String)) -> PinResponse = "/pin";
    }
}

impl RunClient {
    pub fn of(env: &Env, run_id: &str) -> Result<RunClient, ApiError> {
        Ok(RunClient(ObjectStub::new(env, BINDING, run_id)?))
    }

    /// The whole run's answer, passed on as the object wrote it.
    pub async fn get_response(&self) -> Result<Response, ApiError> {
        self.0.forward("/get", &()).await
    }
}
