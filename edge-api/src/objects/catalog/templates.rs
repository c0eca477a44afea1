//! The catalog's templates: version counters with compare-and-set, and the template list. The
//! bodies live in KV under write-once keys.

use concurrent_core::wire::TemplateSummary;
use serde::Deserialize;

use super::api::{Commit, Expected, VersionQuery, VersionRow};
use super::Catalog;
use crate::error::ApiError;

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS templates(name TEXT PRIMARY KEY, latest INTEGER NOT NULL, description TEXT NOT NULL,
       updated_at INTEGER NOT NULL, updated_by TEXT, valid INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS versions(name TEXT NOT NULL, version INTEGER NOT NULL, kv_key TEXT NOT NULL,
       created_at INTEGER NOT NULL, author TEXT, problems TEXT NOT NULL, PRIMARY KEY(name, version))",
];

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

    pub(super) async fn commit(&self, c: Commit) -> Result<u32, ApiError> {
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

    pub(super) async fn list_templates(&self, _: ()) -> Result<Vec<TemplateSummary>, ApiError> {
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

    pub(super) async fn version(&self, q: VersionQuery) -> Result<VersionRow, ApiError> {
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

    pub(super) async fn versions(&self, name: String) -> Result<Vec<VersionRow>, ApiError> {
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

    pub(super) async fn delete_template(&self, name: String) -> Result<bool, ApiError> {
        self.latest(&name)?
            .ok_or_else(|| ApiError::NotFound(format!("template {name:?} does not exist")))?;
        self.sql.exec(
            "UPDATE templates SET deleted = 1 WHERE name = ?",
            vec![name.into()],
        )?;
        Ok(true)
    }
}
