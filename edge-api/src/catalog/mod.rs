//! The catalog Durable Object (one per deployment): template versions, the run index, schedules
//! and tokens, one file each. It is never on a run's hot path; template bodies live in KV.

mod runs;
mod schedules;
mod templates;
mod tokens;

pub use runs::RunQuery;
pub use schedules::Pausing;
pub use templates::{Commit, Expected, VersionQuery, VersionRow};
pub use tokens::StoredToken;

use concurrent_core::schedule::Schedule;
use concurrent_core::wire::{RunSummary, TemplateSummary, TokenInfo};
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use crate::error::ApiError;
use crate::http::{object_api, reply, ObjectStub};
use crate::schedules::TickOutcome;

pub const BINDING: &str = "CATALOG";
pub const NAME: &str = "catalog";

#[durable_object]
pub struct Catalog {
    sql: SqlStorage,
}

object_api! {
    CatalogClient for Catalog {
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

impl DurableObject for Catalog {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in templates::SCHEMA
            .iter()
            .chain(runs::SCHEMA)
            .chain(schedules::SCHEMA)
            .chain(tokens::SCHEMA)
        {
            sql.exec(ddl, None).expect("catalog schema");
        }
        Catalog { sql }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        reply(self.serve(&mut req).await)
    }
}
