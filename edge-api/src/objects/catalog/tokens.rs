//! The catalog's API tokens: stored as SHA-256 hashes with their name, role and cluster.

use concurrent_core::access::Role;
use concurrent_core::wire::TokenInfo;
use serde::Deserialize;
use worker::SqlStorageValue;

use super::api::StoredToken;
use super::Catalog;
use crate::error::ApiError;

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS tokens(hash TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
       cluster TEXT, created_at INTEGER NOT NULL)"];

impl Catalog {
    pub(super) async fn create_token(&self, t: StoredToken) -> Result<TokenInfo, ApiError> {
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

    pub(super) async fn lookup_token(&self, hash: String) -> Result<Option<TokenInfo>, ApiError> {
        Ok(self
            .token_rows(
                "SELECT name, role, cluster, created_at FROM tokens WHERE hash = ?",
                vec![hash.into()],
            )?
            .into_iter()
            .next())
    }

    pub(super) async fn list_tokens(&self, _: ()) -> Result<Vec<TokenInfo>, ApiError> {
        self.token_rows(
            "SELECT name, role, cluster, created_at FROM tokens ORDER BY name",
            vec![],
        )
    }

    pub(super) async fn delete_token(&self, name: String) -> Result<bool, ApiError> {
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
}
