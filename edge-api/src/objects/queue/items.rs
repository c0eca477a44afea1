//! The queue's rows: each item's lease (core's `lease::Slot`, in `items`) and its work item
//! (in `bodies`), the inputs a node's items share, counters; items come in (`enqueue`) and are
//! withdrawn.

use std::collections::BTreeMap;

use concurrent_core::lease::{self, Change, ItemState, Slot};
use concurrent_core::partition::ArtifactFile;
use concurrent_core::wire::EnqueueRequest;
use serde::Deserialize;
use worker::SqlStorage;

use super::api::Withdraw;
use super::QueueObject;
use crate::error::ApiError;

/// Creates the tables if missing, and brings older ones up to date.
pub(super) fn create_schema(sql: &SqlStorage) {
    for ddl in [
        "CREATE TABLE IF NOT EXISTS items(id TEXT PRIMARY KEY, run_id TEXT NOT NULL,
           state TEXT NOT NULL, token INTEGER NOT NULL DEFAULT 0, agent TEXT, expires_at INTEGER NOT NULL DEFAULT 0,
           seq INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS items_ready ON items(state, seq)",
        "CREATE INDEX IF NOT EXISTS items_run ON items(run_id)",
        // The work items themselves, apart from their leases: a heartbeat of ten thousand
        // leases rewrites ten thousand small rows, not the work items with them (SQLite
        // rewrites a whole row to change one column: three times the time, measured).
        "CREATE TABLE IF NOT EXISTS bodies(id TEXT PRIMARY KEY, item TEXT NOT NULL)",
        // Inputs every instance of a node receives, once; merged into items as they are
        // leased, dropped when the run has no item left here.
        "CREATE TABLE IF NOT EXISTS shared(key TEXT PRIMARY KEY, run_id TEXT NOT NULL, json TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ] {
        sql.exec(ddl, None).expect("queue schema");
    }
    // Added after the first release; each fails harmlessly where the column exists.
    for column in [
        "confirmed INTEGER NOT NULL DEFAULT 0",
        "unconfirmed_by TEXT NOT NULL DEFAULT '[]'",
    ] {
        let _ = sql.exec(&format!("ALTER TABLE items ADD COLUMN {column}"), None);
    }
    // Confirmations were a table of their own before they were a column.
    if sql
        .exec(
            "UPDATE items SET confirmed = 1 WHERE id IN (SELECT id FROM confirmed)",
            None,
        )
        .is_ok()
    {
        let _ = sql.exec("DROP TABLE confirmed", None);
    }
    // Work items were a column of `items` before they had a table (the copy fails harmlessly
    // where that column is gone).
    if sql
        .exec(
            "INSERT OR IGNORE INTO bodies(id, item) SELECT id, item FROM items",
            None,
        )
        .is_ok()
    {
        sql.exec("ALTER TABLE items DROP COLUMN item", None)
            .expect("queue schema: moving work items to their own table");
    }
}

/// An item's row (`item` is empty where a query leaves the work item out).
#[derive(Deserialize)]
pub(super) struct Row {
    pub id: String,
    pub item: String,
    state: String,
    token: f64,
    agent: Option<String>,
    expires_at: f64,
    confirmed: f64,
    unconfirmed_by: String,
}

/// Selects rows with their work items; a query adds its `WHERE`.
pub(super) const SELECT_ROWS: &str =
    "SELECT id, bodies.item, state, token, agent, expires_at, confirmed, unconfirmed_by FROM items JOIN bodies USING (id)";

/// The columns of a row without its work item (heartbeats never need it).
pub(super) const SLOT_COLUMNS: &str =
    "id, '' AS item, state, token, agent, expires_at, confirmed, unconfirmed_by";

impl Row {
    pub fn slot(&self) -> Slot {
        Slot {
            state: ItemState::parse(&self.state),
            token: self.token as u64,
            agent: self.agent.clone(),
            expires_at: self.expires_at as u64,
            confirmed: self.confirmed != 0.0,
            unconfirmed_by: serde_json::from_str(&self.unconfirmed_by).unwrap_or_default(),
        }
    }
}

impl QueueObject {
    /// Takes the next `n` values of a counter in one statement; the first of them.
    pub(super) fn next_n(&self, counter: &str, n: usize) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct V {
            value: f64,
        }
        let v: V = self
            .sql
            .exec(
                "INSERT INTO counters(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2 RETURNING value",
                vec![counter.into(), (n as i64).into()],
            )?
            .one()?;
        Ok(v.value as u64 + 1 - n as u64)
    }

    pub(super) fn row(&self, id: &str) -> Result<Option<Row>, ApiError> {
        Ok(self.rows(&[id])?.into_iter().next())
    }

    /// The rows of these items that are here, in one statement.
    pub(super) fn rows(&self, ids: &[&str]) -> Result<Vec<Row>, ApiError> {
        Ok(self
            .sql
            .exec(
                &format!("{SELECT_ROWS} WHERE id IN (SELECT value FROM json_each(?))"),
                vec![serde_json::to_string(ids)?.into()],
            )?
            .to_array()?)
    }

    /// The lease columns of these items, without their work items.
    pub(super) fn slots(&self, ids: &[&str]) -> Result<BTreeMap<String, Slot>, ApiError> {
        let rows: Vec<Row> = self
            .sql
            .exec(
                &format!(
                    "SELECT {SLOT_COLUMNS} FROM items WHERE id IN (SELECT value FROM json_each(?))"
                ),
                vec![serde_json::to_string(ids)?.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().map(|r| (r.id.clone(), r.slot())).collect())
    }

    /// Writes what core decided for these items: updates in one statement, deletes in two.
    pub(super) fn write(&self, changes: Vec<(String, Change)>) -> Result<(), ApiError> {
        let mut updates = Vec::new();
        let mut deletes = Vec::new();
        for (id, change) in changes {
            match change {
                Change::Keep => {}
                Change::Delete => deletes.push(id),
                Change::Update(s) => updates.push(serde_json::json!({
                    "id": id,
                    "state": s.state.as_str(),
                    "token": s.token,
                    "agent": s.agent,
                    "expiresAt": s.expires_at,
                    "confirmed": u8::from(s.confirmed),
                    "unconfirmedBy": serde_json::to_string(&s.unconfirmed_by)?,
                })),
            }
        }
        if !updates.is_empty() {
            self.sql.exec(
                "UPDATE items SET state = j.value ->> 'state', token = j.value ->> 'token', agent = j.value ->> 'agent',
                   expires_at = j.value ->> 'expiresAt', confirmed = j.value ->> 'confirmed',
                   unconfirmed_by = j.value ->> 'unconfirmedBy'
                 FROM json_each(?) AS j WHERE items.id = j.value ->> 'id'",
                vec![serde_json::to_string(&updates)?.into()],
            )?;
        }
        if !deletes.is_empty() {
            self.delete(&deletes)?;
        }
        Ok(())
    }

    /// Writes what core decided for these items, as `write` does, where `old` holds each item's
    /// slot before: a change that only confirms a lease and moves its expiry (most of every
    /// heartbeat) goes with the others like it in one narrow statement, which leaves the
    /// other columns and their index alone.
    pub(super) fn write_from(
        &self,
        old: &BTreeMap<String, Slot>,
        changes: Vec<(String, Change)>,
    ) -> Result<(), ApiError> {
        let mut extended: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut rest = Vec::new();
        for (id, change) in changes {
            match (&change, old.get(&id)) {
                (Change::Update(new), Some(before))
                    if new.confirmed
                        && *new
                            == (Slot {
                                expires_at: new.expires_at,
                                confirmed: true,
                                ..before.clone()
                            }) =>
                {
                    extended.entry(new.expires_at).or_default().push(id);
                }
                _ => rest.push((id, change)),
            }
        }
        for (expires_at, ids) in extended {
            self.sql.exec(
                "UPDATE items SET expires_at = ?, confirmed = 1 WHERE id IN (SELECT value FROM json_each(?))",
                vec![(expires_at as i64).into(), serde_json::to_string(&ids)?.into()],
            )?;
        }
        self.write(rest)
    }

    /// Drops these items and their work items, two statements for any number.
    pub(super) fn delete(&self, ids: &[String]) -> Result<(), ApiError> {
        let ids = serde_json::to_string(ids)?;
        for table in ["items", "bodies"] {
            self.sql.exec(
                &format!("DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))"),
                vec![ids.as_str().into()],
            )?;
        }
        Ok(())
    }

    /// Replaces an item's work item (its JSON), as a redelivery must see it.
    pub(super) fn set_item(
        &self,
        id: &str,
        item: &concurrent_core::wire::WorkItem,
    ) -> Result<(), ApiError> {
        self.sql.exec(
            "UPDATE bodies SET item = ? WHERE id = ?",
            vec![serde_json::to_string(item)?.into(), id.into()],
        )?;
        Ok(())
    }

    /// The shared inputs `key` refers to, decoded. A missing row is the system's fault (the
    /// run sends them with the items), so it fails the lease rather than handing out a step
    /// without its inputs.
    pub(super) fn shared_inputs(
        &self,
        key: &str,
    ) -> Result<(usize, BTreeMap<String, Vec<ArtifactFile>>), ApiError> {
        #[derive(Deserialize)]
        struct Shared {
            json: String,
        }
        let rows: Vec<Shared> = self
            .sql
            .exec("SELECT json FROM shared WHERE key = ?", vec![key.into()])?
            .to_array()?;
        let json = rows.into_iter().next().map(|r| r.json).ok_or_else(|| {
            ApiError::Internal(format!(
                "the shared inputs {key:?} of a queued item are missing from the queue"
            ))
        })?;
        Ok((json.len(), serde_json::from_str(&json)?))
    }

    /// Drops the shared inputs of runs with no item left here (a few rows, each one index
    /// lookup).
    pub(super) fn forget_shared(&self) -> Result<(), ApiError> {
        self.sql.exec(
            "DELETE FROM shared WHERE NOT EXISTS (SELECT 1 FROM items WHERE items.run_id = shared.run_id)",
            None,
        )?;
        Ok(())
    }

    pub(super) fn enqueue(&self, r: EnqueueRequest) -> Result<bool, ApiError> {
        let run_id = r
            .items
            .first()
            .map(|i| i.run_id.as_str())
            .unwrap_or_default();
        for (key, inputs) in &r.shared {
            self.sql.exec(
                "INSERT OR IGNORE INTO shared(key, run_id, json) VALUES (?, ?, ?)",
                vec![
                    key.clone().into(),
                    run_id.into(),
                    serde_json::to_string(inputs)?.into(),
                ],
            )?;
        }
        if r.items.is_empty() {
            self.wake_waiters();
            return Ok(true);
        }
        let first = self.next_n("seq", r.items.len())?;
        // One statement per table for the batch (each `exec` is a trip across the runtime's
        // boundary, which a 10,000-wide node paid 10,000 times). Each table gets only its
        // columns: SQLite parses what it is given, and the work items are most of it. `->>`
        // gives a work item, an object, back as its JSON text.
        let mut leases = Vec::with_capacity(r.items.len());
        let mut bodies = Vec::with_capacity(r.items.len());
        for (seq, item) in (first..).zip(&r.items) {
            let id = serde_json::to_string(&item.id)?;
            leases.push(format!(
                "[{id},{},{seq}]",
                serde_json::to_string(&item.run_id)?
            ));
            bodies.push(format!("[{id},{}]", serde_json::to_string(item)?));
        }
        self.sql.exec(
            "INSERT OR IGNORE INTO items(id, run_id, state, seq)
             SELECT value ->> 0, value ->> 1, ?, value ->> 2 FROM json_each(?)",
            vec![
                ItemState::Ready.as_str().into(),
                format!("[{}]", leases.join(",")).into(),
            ],
        )?;
        self.sql.exec(
            "INSERT OR IGNORE INTO bodies(id, item) SELECT value ->> 0, value ->> 1 FROM json_each(?)",
            vec![format!("[{}]", bodies.join(",")).into()],
        )?;
        self.wake_waiters();
        Ok(true)
    }

    pub(super) fn withdraw(&self, w: Withdraw) -> Result<bool, ApiError> {
        let ids: Vec<&str> = w.item_ids.iter().map(String::as_str).collect();
        let changes = self
            .slots(&ids)?
            .into_iter()
            .map(|(id, slot)| (id, lease::withdraw(&slot)))
            .collect();
        self.write(changes)?;
        self.forget_shared()?;
        Ok(true)
    }
}
