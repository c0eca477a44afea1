//! The catalog's run index: one summary row per run, for the runs list (newest first, filtered,
//! paged); the runs themselves live in their own objects.

use concurrent_core::wire::RunSummary;
use serde::Deserialize;
use worker::SqlStorageValue;

use super::api::RunQuery;
use super::Catalog;
use crate::error::ApiError;

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS runs(id TEXT PRIMARY KEY, template TEXT NOT NULL, status TEXT NOT NULL,
       created_at INTEGER NOT NULL, summary TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS runs_by_time ON runs(created_at DESC)",
];

impl Catalog {
    pub(super) async fn upsert_run(&self, r: RunSummary) -> Result<bool, ApiError> {
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
        self.run_ended(&r)?;
        Ok(true)
    }

    pub(super) async fn list_runs(&self, q: RunQuery) -> Result<Vec<RunSummary>, ApiError> {
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
}
