//! The catalog Durable Object (one per deployment): template version counters and the index of
//! runs for listing. It is never on a run's hot path; template bodies live in KV.

use concurrent_core::access::Role;
use concurrent_core::run::RunStatus;
use concurrent_core::schedule::Schedule;
use concurrent_core::wire::{RunSummary, TemplateSummary, TokenInfo};
use concurrent_core::Problem;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State,
};

use crate::error::ApiError;
use crate::http::{erase, internal_json, reply};
use crate::schedules::TickOutcome;

pub const BINDING: &str = "CATALOG";
pub const NAME: &str = "catalog";

#[durable_object]
pub struct Catalog {
    sql: SqlStorage,
}

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

#[derive(Serialize, Deserialize)]
pub struct VersionQuery {
    pub name: String,
    pub version: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunQuery {
    pub template: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: Option<u32>,
    /// Paging cursor: only runs created before this time.
    pub before: Option<u64>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    version: f64,
    kv_key: String,
    created_at: f64,
    author: Option<String>,
    problems: String,
}

impl Row {
    fn into_version(self) -> Result<VersionRow, ApiError> {
        Ok(VersionRow {
            name: self.name,
            version: self.version as u32,
            kv_key: self.kv_key,
            created_at: self.created_at as u64,
            author: self.author,
            problems: serde_json::from_str(&self.problems)?,
        })
    }
}

impl DurableObject for Catalog {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in [
            "CREATE TABLE IF NOT EXISTS templates(name TEXT PRIMARY KEY, latest INTEGER NOT NULL, description TEXT NOT NULL,
               updated_at INTEGER NOT NULL, updated_by TEXT, valid INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS versions(name TEXT NOT NULL, version INTEGER NOT NULL, kv_key TEXT NOT NULL,
               created_at INTEGER NOT NULL, author TEXT, problems TEXT NOT NULL, PRIMARY KEY(name, version))",
            "CREATE TABLE IF NOT EXISTS runs(id TEXT PRIMARY KEY, template TEXT NOT NULL, status TEXT NOT NULL,
               created_at INTEGER NOT NULL, summary TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS runs_by_time ON runs(created_at DESC)",
            "CREATE TABLE IF NOT EXISTS schedules(name TEXT PRIMARY KEY, json TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tokens(hash TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
               cluster TEXT, created_at INTEGER NOT NULL)",
        ] {
            sql.exec(ddl, None).expect("catalog schema");
        }
        Catalog { sql }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let result = async {
            match req.path().as_str() {
                "/templates/commit" => erase(self.commit(internal_json(&mut req).await?)),
                "/templates/list" => erase(self.list_templates()),
                "/templates/version" => erase(self.version(internal_json(&mut req).await?)),
                "/templates/versions" => {
                    erase(self.versions(internal_json::<VersionQuery>(&mut req).await?.name))
                }
                "/templates/delete" => {
                    erase(self.delete(internal_json::<VersionQuery>(&mut req).await?.name))
                }
                "/runs/upsert" => erase(self.upsert_run(internal_json(&mut req).await?)),
                "/runs/list" => erase(self.list_runs(internal_json(&mut req).await?)),
                "/schedules/create" => erase(self.create_schedule(internal_json(&mut req).await?)),
                "/schedules/list" => erase(self.schedules()),
                "/schedules/delete" => erase(self.delete_schedule(internal_json(&mut req).await?)),
                "/schedules/due" => erase(self.due_schedules(internal_json(&mut req).await?)),
                "/schedules/record" => erase(self.record_tick(internal_json(&mut req).await?)),
                "/tokens/create" => erase(self.create_token(internal_json(&mut req).await?)),
                "/tokens/lookup" => erase(self.lookup_token(internal_json(&mut req).await?)),
                "/tokens/list" => erase(self.list_tokens()),
                "/tokens/delete" => erase(self.delete_token(internal_json(&mut req).await?)),
                other => Err(ApiError::NotFound(format!("catalog has no {other}"))),
            }
        }
        .await;
        reply(result)
    }
}

impl Catalog {
    fn latest(&self, name: &str) -> Result<Option<(u32, bool)>, ApiError> {
        #[derive(Deserialize)]
        struct L {
            latest: f64,
            deleted: f64,
        }
        let rows: Vec<L> = self
            .sql
            .exec(
                "SELECT latest, deleted FROM templates WHERE name = ?",
                vec![name.into()],
            )?
            .to_array()?;
        Ok(rows.first().map(|r| (r.latest as u32, r.deleted != 0.0)))
    }

    fn commit(&self, c: Commit) -> Result<u32, ApiError> {
        let latest = self.latest(&c.name)?;
        let current = latest.filter(|(_, deleted)| !deleted).map(|(v, _)| v);
        match (c.expected, current) {
            (Expected::New, Some(v)) => {
                return Err(ApiError::Conflict(format!(
                    "template {:?} already exists at version {v}; send `If-Match: {v}` to save a new version",
                    c.name
                )))
            }
            (Expected::Version(expected), Some(v)) if expected != v => {
                return Err(ApiError::Conflict(format!(
                    "template {:?} is at version {v}, not {expected}: someone saved in between; reload, merge and save again",
                    c.name
                )))
            }
            (Expected::Version(expected), None) => {
                return Err(ApiError::Conflict(format!("template {:?} does not exist (expected version {expected})", c.name)))
            }
            _ => {}
        }
        let version = latest.map_or(1, |(v, _)| v + 1);
        let valid = c.problems.is_empty();
        let problems = serde_json::to_string(&c.problems)?;
        self.sql.exec(
            "INSERT INTO versions(name, version, kv_key, created_at, author, problems) VALUES (?, ?, ?, ?, ?, ?)",
            vec![c.name.clone().into(), (version as i64).into(), c.kv_key.into(), (c.created_at as i64).into(), c.author.clone().into(), problems.into()],
        )?;
        self.sql.exec(
            "INSERT INTO templates(name, latest, description, updated_at, updated_by, valid, deleted) VALUES (?, ?, ?, ?, ?, ?, 0)
             ON CONFLICT(name) DO UPDATE SET latest = excluded.latest, description = excluded.description,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by, valid = excluded.valid, deleted = 0",
            vec![c.name.into(), (version as i64).into(), c.description.into(), (c.created_at as i64).into(), c.author.into(), i64::from(valid).into()],
        )?;
        Ok(version)
    }

    fn list_templates(&self) -> Result<Vec<TemplateSummary>, ApiError> {
        #[derive(Deserialize)]
        struct T {
            name: String,
            latest: f64,
            description: String,
            updated_at: f64,
            updated_by: Option<String>,
            valid: f64,
        }
        let rows: Vec<T> = self
            .sql
            .exec("SELECT name, latest, description, updated_at, updated_by, valid FROM templates WHERE deleted = 0 ORDER BY name", None)?
            .to_array()?;
        Ok(rows
            .into_iter()
            .map(|t| TemplateSummary {
                name: t.name,
                description: t.description,
                latest_version: t.latest as u32,
                updated_at: t.updated_at as u64,
                updated_by: t.updated_by,
                valid: t.valid != 0.0,
            })
            .collect())
    }

    fn version(&self, q: VersionQuery) -> Result<VersionRow, ApiError> {
        let (latest, deleted) = self
            .latest(&q.name)?
            .ok_or_else(|| ApiError::NotFound(format!("template {:?} does not exist", q.name)))?;
        if deleted && q.version.is_none() {
            return Err(ApiError::NotFound(format!(
                "template {:?} was deleted; its versions can still be read by number",
                q.name
            )));
        }
        let v = q.version.unwrap_or(latest);
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT * FROM versions WHERE name = ? AND version = ?",
                vec![q.name.clone().into(), (v as i64).into()],
            )?
            .to_array()?;
        rows.into_iter()
            .next()
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "template {:?} has no version {v} (latest is {latest})",
                    q.name
                ))
            })?
            .into_version()
    }

    fn versions(&self, name: String) -> Result<Vec<VersionRow>, ApiError> {
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT * FROM versions WHERE name = ? ORDER BY version DESC",
                vec![name.clone().into()],
            )?
            .to_array()?;
        if rows.is_empty() {
            return Err(ApiError::NotFound(format!(
                "template {name:?} does not exist"
            )));
        }
        rows.into_iter().map(Row::into_version).collect()
    }

    fn delete(&self, name: String) -> Result<bool, ApiError> {
        self.latest(&name)?
            .ok_or_else(|| ApiError::NotFound(format!("template {name:?} does not exist")))?;
        self.sql.exec(
            "UPDATE templates SET deleted = 1 WHERE name = ?",
            vec![name.into()],
        )?;
        Ok(true)
    }

    fn upsert_run(&self, r: RunSummary) -> Result<bool, ApiError> {
        let status = serde_json::to_value(r.status)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.sql.exec(
            "INSERT INTO runs(id, template, status, created_at, summary) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, summary = excluded.summary",
            vec![
                r.id.clone().into(),
                r.template.clone().into(),
                status.into(),
                (r.created_at as i64).into(),
                serde_json::to_string(&r)?.into(),
            ],
        )?;
        Ok(true)
    }

    fn list_runs(&self, q: RunQuery) -> Result<Vec<RunSummary>, ApiError> {
        let mut sql = String::from("SELECT summary FROM runs WHERE created_at < ?");
        let mut args: Vec<SqlStorageValue> =
            vec![(q.before.unwrap_or(i64::MAX as u64) as i64).into()];
        if let Some(t) = q.template {
            sql.push_str(" AND template = ?");
            args.push(t.into());
        }
        if let Some(s) = q.status {
            sql.push_str(" AND status = ?");
            args.push(serde_json::to_value(s)?.as_str().unwrap_or_default().into());
        }
        sql.push_str(" ORDER BY created_at DESC LIMIT ?");
        args.push((q.limit.unwrap_or(50).clamp(1, 500) as i64).into());
        #[derive(Deserialize)]
        struct S {
            summary: String,
        }
        let rows: Vec<S> = self.sql.exec(&sql, args)?.to_array()?;
        rows.into_iter()
            .map(|r| Ok(serde_json::from_str(&r.summary)?))
            .collect()
    }

    fn create_token(&self, t: StoredToken) -> Result<TokenInfo, ApiError> {
        let exists: Vec<serde_json::Value> = self
            .sql
            .exec(
                "SELECT name FROM tokens WHERE name = ?",
                vec![t.info.name.clone().into()],
            )?
            .to_array()?;
        if !exists.is_empty() {
            return Err(ApiError::Conflict(format!(
                "a token named {:?} exists; revoke it first or pick another name",
                t.info.name
            )));
        }
        let role = serde_json::to_value(t.info.role)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.sql.exec(
            "INSERT INTO tokens(hash, name, role, cluster, created_at) VALUES (?, ?, ?, ?, ?)",
            vec![
                t.hash.into(),
                t.info.name.clone().into(),
                role.into(),
                t.info.cluster.clone().into(),
                (t.info.created_at as i64).into(),
            ],
        )?;
        Ok(t.info)
    }

    fn token_rows(
        &self,
        sql: &str,
        args: Vec<SqlStorageValue>,
    ) -> Result<Vec<TokenInfo>, ApiError> {
        #[derive(Deserialize)]
        struct T {
            name: String,
            role: String,
            cluster: Option<String>,
            created_at: f64,
        }
        let rows: Vec<T> = self.sql.exec(sql, args)?.to_array()?;
        Ok(rows
            .into_iter()
            .filter_map(|t| {
                Some(TokenInfo {
                    name: t.name,
                    role: Role::parse(&t.role)?,
                    cluster: t.cluster,
                    created_at: t.created_at as u64,
                    token: None,
                })
            })
            .collect())
    }

    fn lookup_token(&self, hash: String) -> Result<Option<TokenInfo>, ApiError> {
        Ok(self
            .token_rows(
                "SELECT name, role, cluster, created_at FROM tokens WHERE hash = ?",
                vec![hash.into()],
            )?
            .into_iter()
            .next())
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        self.token_rows(
            "SELECT name, role, cluster, created_at FROM tokens ORDER BY name",
            vec![],
        )
    }

    fn delete_token(&self, name: String) -> Result<bool, ApiError> {
        let n = self
            .sql
            .exec(
                "DELETE FROM tokens WHERE name = ?",
                vec![name.clone().into()],
            )?
            .rows_written();
        if n == 0 {
            return Err(ApiError::NotFound(format!("no token named {name:?}")));
        }
        Ok(true)
    }

    fn schedules(&self) -> Result<Vec<Schedule>, ApiError> {
        #[derive(Deserialize)]
        struct J {
            json: String,
        }
        let rows: Vec<J> = self
            .sql
            .exec("SELECT json FROM schedules ORDER BY name", None)?
            .to_array()?;
        rows.into_iter()
            .map(|r| Ok(serde_json::from_str(&r.json)?))
            .collect()
    }

    fn put_schedule(&self, s: &Schedule) -> Result<(), ApiError> {
        self.sql.exec(
            "INSERT OR REPLACE INTO schedules(name, json) VALUES (?, ?)",
            vec![s.spec.name.clone().into(), serde_json::to_string(s)?.into()],
        )?;
        Ok(())
    }

    fn create_schedule(&self, s: Schedule) -> Result<Schedule, ApiError> {
        if self.schedules()?.iter().any(|x| x.spec.name == s.spec.name) {
            return Err(ApiError::Conflict(format!(
                "a schedule named {:?} exists; delete it first",
                s.spec.name
            )));
        }
        self.put_schedule(&s)?;
        Ok(s)
    }

    fn delete_schedule(&self, name: String) -> Result<bool, ApiError> {
        if self
            .sql
            .exec(
                "DELETE FROM schedules WHERE name = ?",
                vec![name.clone().into()],
            )?
            .rows_written()
            == 0
        {
            return Err(ApiError::NotFound(format!("no schedule named {name:?}")));
        }
        Ok(true)
    }

    fn run_is_going(&self, run_id: &str) -> Result<bool, ApiError> {
        #[derive(Deserialize)]
        struct S {
            status: String,
        }
        let rows: Vec<S> = self
            .sql
            .exec("SELECT status FROM runs WHERE id = ?", vec![run_id.into()])?
            .to_array()?;
        Ok(rows
            .first()
            .is_some_and(|r| r.status == "pending" || r.status == "running"))
    }

    /// The ticks to start a run for now: pending ones, and new ones (which become pending).
    fn due_schedules(&self, now: u64) -> Result<Vec<(Schedule, u64)>, ApiError> {
        let mut fire = Vec::new();
        for mut s in self.schedules()? {
            let going = match &s.last_run_id {
                Some(id) => self.run_is_going(id)?,
                None => false,
            };
            let before = s.clone();
            if let Some(at) = s.due(now, going) {
                fire.push((s.clone(), at));
            }
            if s != before {
                self.put_schedule(&s)?;
            }
        }
        Ok(fire)
    }

    fn record_tick(&self, o: TickOutcome) -> Result<bool, ApiError> {
        if let Some(mut s) = self
            .schedules()?
            .into_iter()
            .find(|s| s.spec.name == o.name)
        {
            match o.result {
                Ok(run_id) => s.started(o.at, run_id),
                Err(why) => s.start_failed(o.at, &why),
            }
            self.put_schedule(&s)?;
        }
        Ok(true)
    }
}

/// A token to store: its hash, never the secret.
#[derive(Serialize, Deserialize)]
pub struct StoredToken {
    pub hash: String,
    pub info: TokenInfo,
}
