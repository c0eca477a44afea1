//! What callers may know of the catalog: its messages and its typed client.

use concurrent_core::run::RunStatus;
use concurrent_core::schedule::Schedule;
use concurrent_core::trigger::{Event, Trigger};
use concurrent_core::wire::{RunSummary, TemplateSummary, TokenInfo};
use concurrent_core::Problem;
use serde::{Deserialize, Serialize};
use worker::Env;

use crate::error::ApiError;
use crate::http::{object_api, ObjectStub};

pub const BINDING: &str = "CATALOG";
pub const NAME: &str = "catalog";

/// Record a new template version stored in KV under `kv_key`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    pub name: String,
    pub expected: Expected,
    pub kv_key: String,
    pub description: String,
    pub author: Option<String>,
    pub created_at: u64,
    pub problems: Vec<Problem>,
}

/// What a save expects to replace (from `If-Match`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Expected {
    /// No `If-Match`: the template must not exist yet.
    New,
    /// `If-Match: *`: whatever the latest version is.
    Any,
    /// `If-Match: <v>`: the latest version must be `v`.
    Version(u32),
}

/// A stored version, without its body.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct VersionRow {
    pub name: String,
    pub version: u32,
    pub kv_key: String,
    pub created_at: u64,
    pub author: Option<String>,
    pub problems: Vec<Problem>,
}

/// A template version, by name and number (the latest when `None`).
#[derive(Serialize, Deserialize)]
pub struct VersionQuery {
    pub name: String,
    pub version: Option<u32>,
}

/// A page of the run index.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunQuery {
    pub template: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: Option<u32>,
    /// Paging cursor: only runs created before this time.
    pub before: Option<u64>,
}

/// Pause (or resume, at `now`) the schedule or trigger `name`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pausing {
    pub name: String,
    pub paused: bool,
    pub now: u64,
}

/// The outcome of starting a schedule's tick, recorded in the catalog.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickOutcome {
    pub name: String,
    pub at: u64,
    /// The run that started, or why none did.
    pub result: Result<String, String>,
}

/// The outcome of starting a trigger's event, recorded on the trigger.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerOutcome {
    pub name: String,
    /// The event's key.
    pub key: String,
    /// The run that started, or why none did.
    pub result: Result<String, String>,
}

/// What a poll of the registry saw for a trigger at `at`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerPoll {
    pub name: String,
    pub at: u64,
    pub seen: Option<String>,
    pub error: Option<String>,
}

/// A token to store: its hash, never the secret.
#[derive(Serialize, Deserialize)]
pub struct StoredToken {
    pub hash: String,
    pub info: TokenInfo,
}

object_api! {
    /// The typed client of the catalog: one method per request it serves.
    CatalogClient,
    /// What the catalog serves.
    CatalogApi {
        /// Commits a version stored in KV, with a compare-and-set on the expected version.
        commit(Commit) -> u32 = "/templates/commit";
        list_templates(()) -> Vec<TemplateSummary> = "/templates/list";
        /// A version (the latest when none is named).
        version(VersionQuery) -> VersionRow = "/templates/version";
        versions(String) -> Vec<VersionRow> = "/templates/versions";
        /// Soft delete: versions stay readable by number.
        delete_template(String) -> bool = "/templates/delete";
        upsert_run(RunSummary) -> bool = "/runs/upsert";
        list_runs(RunQuery) -> Vec<RunSummary> = "/runs/list";
        create_schedule(Schedule) -> Schedule = "/schedules/create";
        schedules(()) -> Vec<Schedule> = "/schedules/list";
        delete_schedule(String) -> bool = "/schedules/delete";
        set_paused(Pausing) -> Schedule = "/schedules/pause";
        /// The ticks to start a run for now (pending ones first).
        due_schedules(u64) -> Vec<(Schedule, u64)> = "/schedules/due";
        record_tick(TickOutcome) -> bool = "/schedules/record";
        create_trigger(Trigger) -> Trigger = "/triggers/create";
        triggers(()) -> Vec<Trigger> = "/triggers/list";
        delete_trigger(String) -> bool = "/triggers/delete";
        pause_trigger(Pausing) -> Trigger = "/triggers/pause";
        /// Keeps an event for the triggers it fires; how many.
        record_event(Event) -> u32 = "/triggers/event";
        /// The events whose runs have not started yet.
        pending_events(()) -> Vec<(Trigger, Event)> = "/triggers/pending";
        record_trigger(TriggerOutcome) -> bool = "/triggers/record";
        record_poll(TriggerPoll) -> bool = "/triggers/poll";
        create_token(StoredToken) -> TokenInfo = "/tokens/create";
        /// The token with this SHA-256, if any.
        lookup_token(String) -> Option<TokenInfo> = "/tokens/lookup";
        list_tokens(()) -> Vec<TokenInfo> = "/tokens/list";
        delete_token(String) -> bool = "/tokens/delete";
    }
}

impl CatalogClient {
    /// The deployment's one catalog.
    pub fn of(env: &Env) -> Result<CatalogClient, ApiError> {
        Ok(CatalogClient(ObjectStub::new(env, BINDING, NAME)?))
    }
}
