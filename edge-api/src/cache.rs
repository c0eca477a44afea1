//! The step cache's storage: one KV entry per cache key (core's `cache` makes keys and
//! entries). KV suits it: an entry is written once and read by later runs; a reader that
//! misses a very fresh entry just runs the step.

use concurrent_core::cache::{storage_key, CacheEntry};
use worker::Env;

use crate::error::ApiError;

/// The KV namespace of cache entries.
const BINDING: &str = "CACHE";

/// The entry under `key`, if any.
pub async fn read(env: &Env, key: &str) -> Result<Option<CacheEntry>, ApiError> {
    env.kv(BINDING)?
        .get(&storage_key(key))
        .json()
        .await
        .map_err(|e| ApiError::Internal(format!("reading the cache failed: {e}")))
}

/// Stores an entry (a newer success under the same key replaces it).
pub async fn write(env: &Env, entry: &CacheEntry) -> Result<(), ApiError> {
    env.kv(BINDING)?
        .put(&storage_key(&entry.key), serde_json::to_string(entry)?)
        .map_err(|e| ApiError::Internal(format!("writing the cache failed: {e}")))?
        .execute()
        .await
        .map_err(|e| ApiError::Internal(format!("writing the cache failed: {e}")))
}
