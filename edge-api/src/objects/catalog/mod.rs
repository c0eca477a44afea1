//! The catalog Durable Object (one per deployment): template versions, the run index, schedules,
//! triggers and tokens, one file each. It is never on a run's hot path; template bodies live in KV.
//! What callers may know of it is in `api`.

pub mod api;
mod runs;
mod schedules;
mod templates;
mod tokens;
mod triggers;

use concurrent_core::schedule::Schedule;
use concurrent_core::trigger::{Event, Trigger};
use concurrent_core::wire::{RunSummary, TemplateSummary, TokenInfo};
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use self::api::{
    CatalogApi, Commit, Pausing, RunQuery, StoredToken, TickOutcome, TriggerOutcome, TriggerPoll,
    VersionQuery, VersionRow,
};
use crate::error::ApiError;
use crate::http::reply;

#[durable_object]
pub struct Catalog {
    sql: SqlStorage,
}

impl DurableObject for Catalog {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in templates::SCHEMA
            .iter()
            .chain(runs::SCHEMA)
            .chain(schedules::SCHEMA)
            .chain(tokens::SCHEMA)
            .chain(triggers::SCHEMA)
        {
            sql.exec(ddl, None).expect("catalog schema");
        }
        Catalog { sql }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        reply(self.serve(&mut req).await)
    }
}

/// Each request is served by the file of its concern (`templates`, `runs`, `schedules`,
/// `tokens`), in a method of the request's name.
impl CatalogApi for Catalog {
    async fn commit(&self, body: Commit) -> Result<u32, ApiError> {
        Catalog::commit(self, body).await
    }
    async fn list_templates(&self, body: ()) -> Result<Vec<TemplateSummary>, ApiError> {
        Catalog::list_templates(self, body).await
    }
    async fn version(&self, body: VersionQuery) -> Result<VersionRow, ApiError> {
        Catalog::version(self, body).await
    }
    async fn versions(&self, body: String) -> Result<Vec<VersionRow>, ApiError> {
        Catalog::versions(self, body).await
    }
    async fn delete_template(&self, body: String) -> Result<bool, ApiError> {
        Catalog::delete_template(self, body).await
    }
    async fn upsert_run(&self, body: RunSummary) -> Result<bool, ApiError> {
        Catalog::upsert_run(self, body).await
    }
    async fn list_runs(&self, body: RunQuery) -> Result<Vec<RunSummary>, ApiError> {
        Catalog::list_runs(self, body).await
    }
    async fn create_schedule(&self, body: Schedule) -> Result<Schedule, ApiError> {
        Catalog::create_schedule(self, body).await
    }
    async fn schedules(&self, body: ()) -> Result<Vec<Schedule>, ApiError> {
        Catalog::schedules(self, body).await
    }
    async fn delete_schedule(&self, body: String) -> Result<bool, ApiError> {
        Catalog::delete_schedule(self, body).await
    }
    async fn set_paused(&self, body: Pausing) -> Result<Schedule, ApiError> {
        Catalog::set_paused(self, body).await
    }
    async fn due_schedules(&self, body: u64) -> Result<Vec<(Schedule, u64)>, ApiError> {
        Catalog::due_schedules(self, body).await
    }
    async fn record_tick(&self, body: TickOutcome) -> Result<bool, ApiError> {
        Catalog::record_tick(self, body).await
    }
    async fn create_trigger(&self, body: Trigger) -> Result<Trigger, ApiError> {
        Catalog::create_trigger(self, body).await
    }
    async fn triggers(&self, body: ()) -> Result<Vec<Trigger>, ApiError> {
        Catalog::triggers(self, body).await
    }
    async fn delete_trigger(&self, body: String) -> Result<bool, ApiError> {
        Catalog::delete_trigger(self, body).await
    }
    async fn pause_trigger(&self, body: Pausing) -> Result<Trigger, ApiError> {
        Catalog::pause_trigger(self, body).await
    }
    async fn record_event(&self, body: Event) -> Result<u32, ApiError> {
        Catalog::record_event(self, body).await
    }
    async fn pending_events(&self, body: ()) -> Result<Vec<(Trigger, Event)>, ApiError> {
        Catalog::pending_events(self, body).await
    }
    async fn record_trigger(&self, body: TriggerOutcome) -> Result<bool, ApiError> {
        Catalog::record_trigger(self, body).await
    }
    async fn record_poll(&self, body: TriggerPoll) -> Result<bool, ApiError> {
        Catalog::record_poll(self, body).await
    }
    async fn create_token(&self, body: StoredToken) -> Result<TokenInfo, ApiError> {
        Catalog::create_token(self, body).await
    }
    async fn lookup_token(&self, body: String) -> Result<Option<TokenInfo>, ApiError> {
        Catalog::lookup_token(self, body).await
    }
    async fn list_tokens(&self, body: ()) -> Result<Vec<TokenInfo>, ApiError> {
        Catalog::list_tokens(self, body).await
    }
    async fn delete_token(&self, body: String) -> Result<bool, ApiError> {
        Catalog::delete_token(self, body).await
    }
}
