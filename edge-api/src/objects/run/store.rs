//! The run's storage: the header row, one row per instance and one per node's shared inputs in
//! the object's SQLite, and the run in memory with a hash of the JSON last written per row, so
//! an event writes only what changed.

use std::collections::{BTreeSet, HashMap};

use concurrent_core::run::{next_wake_with, Dues, Instance, InstanceDue, RunState, RunStatus};
use serde::Deserialize;

use super::Run;
use crate::error::ApiError;

/// The run in memory, plus a hash of the JSON last written per row so only changed rows are
/// written (a hash, not the JSON: a 10,000-instance run would otherwise be held twice), and
/// what each row asks of the run, summed in `dues` as rows are written.
pub(super) struct Cached {
    pub run: RunState,
    pub header: String,
    pub rows: HashMap<(String, u32), (u64, InstanceDue)>,
    /// The sum of the rows' dues: what `next_wake` needs, without a walk over every instance.
    pub dues: Dues,
    /// Rows stored per node.
    pub counts: HashMap<String, usize>,
    /// Per node, the hash of its shared inputs as last written.
    pub shared: HashMap<String, u64>,
    /// What the catalog's run list last recorded: status, and whether the MLflow run was known.
    pub indexed: Option<(RunStatus, bool)>,
}

impl Cached {
    pub fn new(run: RunState) -> Cached {
        Cached {
            run,
            header: String::new(),
            rows: HashMap::new(),
            dues: Dues::default(),
            counts: HashMap::new(),
            shared: HashMap::new(),
            indexed: None,
        }
    }
}

pub(super) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS header(id INTEGER PRIMARY KEY CHECK (id = 0), json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS instances(node TEXT NOT NULL, idx INTEGER NOT NULL, json TEXT NOT NULL, PRIMARY KEY(node, idx))",
    // A node's broadcast inputs, once (not in the header: that is written on most events).
    "CREATE TABLE IF NOT EXISTS shared(node TEXT PRIMARY KEY, json TEXT NOT NULL)",
    // MLflow runs whose create was sent and not yet recorded (see `create_sent_before`).
    "CREATE TABLE IF NOT EXISTS creating(key TEXT PRIMARY KEY)",
];

fn digest(json: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

impl Run {
    /// Loads the run into the cache when needed; `Ok(false)` when no run was ever started here.
    pub(super) fn load(&self) -> Result<bool, ApiError> {
        if self.cache.borrow().is_some() {
            return Ok(true);
        }
        #[derive(Deserialize)]
        struct H {
            json: String,
        }
        #[derive(Deserialize)]
        struct I {
            node: String,
            idx: f64,
            json: String,
        }
        let headers: Vec<H> = self.sql.exec("SELECT json FROM header", None)?.to_array()?;
        let Some(h) = headers.into_iter().next() else {
            return Ok(false);
        };
        let mut run: RunState = serde_json::from_str(&h.json)?;
        let rows: Vec<I> = self
            .sql
            .exec(
                "SELECT node, idx, json FROM instances ORDER BY node, idx",
                None,
            )?
            .to_array()?;
        #[derive(Deserialize)]
        struct S {
            node: String,
            json: String,
        }
        let shared: Vec<S> = self
            .sql
            .exec("SELECT node, json FROM shared", None)?
            .to_array()?;
        let mut shared_hashes = HashMap::new();
        for s in shared {
            if let Some(node) = run.node_mut(&s.node) {
                node.shared_inputs = serde_json::from_str(&s.json)?;
            }
            shared_hashes.insert(s.node, digest(&s.json));
        }
        let mut cached_rows = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut dues = Dues::default();
        for r in rows {
            let mut due = InstanceDue::default();
            if let Some(node) = run.node_mut(&r.node) {
                let mut inst: Instance = serde_json::from_str(&r.json)?;
                // serde grows a list from empty, so one attempt takes room for four (832 bytes
                // on wasm32, not 208): a reloaded 100,000-instance run would be 60 MB larger.
                inst.attempts.shrink_to_fit();
                inst.outputs.shrink_to_fit();
                inst.inputs.values_mut().for_each(Vec::shrink_to_fit);
                due = InstanceDue::of(&inst);
                dues.add(due);
                node.instances.push(inst);
            }
            *counts.entry(r.node.clone()).or_default() += 1;
            cached_rows.insert((r.node, r.idx as u32), (digest(&r.json), due));
        }
        *self.cache.borrow_mut() = Some(Cached {
            run,
            header: h.json,
            rows: cached_rows,
            dues,
            counts,
            shared: shared_hashes,
            indexed: None,
        });
        Ok(true)
    }

    /// When the run next has work (core's `next_wake`), from the dues kept per row.
    pub(super) fn next_wake(&self, now: u64) -> Result<Option<u64>, ApiError> {
        self.with_cached(|c| next_wake_with(&c.run, &c.dues, now))
    }

    /// Whether a retry or an approval's timeout is due by `now`.
    pub(super) fn retry_due(&self, now: u64) -> Result<bool, ApiError> {
        self.with_cached(|c| c.dues.first_retry_at().is_some_and(|t| t <= now))
    }

    pub(super) fn with_run<T>(&self, f: impl FnOnce(&RunState) -> T) -> Result<T, ApiError> {
        self.with_cached(|c| f(&c.run))
    }

    fn with_cached<T>(&self, f: impl FnOnce(&Cached) -> T) -> Result<T, ApiError> {
        if !self.load()? {
            return Err(ApiError::NotFound("no such run".into()));
        }
        Ok(f(self.cache.borrow().as_ref().expect("loaded")))
    }

    /// Writes the rows that changed. `touched` names the instances (node, index) events were
    /// about; the header and every node whose instance count changed are always checked, and
    /// `None` checks every instance. Serializing 10,000 instances per event would make big runs
    /// quadratic, so events about one instance write one row. An event that changes other
    /// instances too (planning a node, ending the run) changes the header, and then every row
    /// is checked. The changed instances go to storage in one statement.
    pub(super) fn save(&self, touched: Option<&BTreeSet<(String, u32)>>) -> Result<(), ApiError> {
        let mut guard = self.cache.borrow_mut();
        let c = guard.as_mut().expect("save after load");
        let mut changed: Vec<String> = Vec::new();
        let header_json = serde_json::to_string(&c.run.clone_header())?;
        let header_changed = header_json != c.header;
        if header_changed {
            self.sql.exec(
                "INSERT OR REPLACE INTO header(id, json) VALUES (0, ?)",
                vec![header_json.clone().into()],
            )?;
            c.header = header_json;
        }
        for node in &c.run.nodes {
            if touched.is_none() || header_changed {
                let json = serde_json::to_string(&node.shared_inputs)?;
                let hash = digest(&json);
                if c.shared.get(&node.id) != Some(&hash) {
                    self.sql.exec(
                        "INSERT OR REPLACE INTO shared(node, json) VALUES (?, ?)",
                        vec![node.id.clone().into(), json.into()],
                    )?;
                    c.shared.insert(node.id.clone(), hash);
                }
            }
            let stored = c.counts.get(&node.id).copied().unwrap_or(0);
            let whole_node = touched.is_none() || header_changed || stored != node.instances.len();
            let rows: Vec<&Instance> = match touched {
                _ if whole_node => node.instances.iter().collect(),
                Some(keys) => keys
                    .range((node.id.clone(), 0)..=(node.id.clone(), u32::MAX))
                    .filter_map(|(_, i)| node.instances.get(*i as usize))
                    .collect(),
                None => Vec::new(),
            };
            for inst in rows {
                let json = serde_json::to_string(inst)?;
                let key = (node.id.clone(), inst.index);
                let hash = digest(&json);
                if c.rows.get(&key).map(|r| r.0) != Some(hash) {
                    changed.push(format!(
                        "[{},{},{json}]",
                        serde_json::to_string(&node.id)?,
                        inst.index
                    ));
                    let due = InstanceDue::of(inst);
                    c.dues.add(due);
                    match c.rows.insert(key, (hash, due)) {
                        Some((_, old)) => c.dues.remove(old),
                        None => *c.counts.entry(node.id.clone()).or_default() += 1,
                    }
                    // Written 500 at a time: a whole node's rows are never all held at once.
                    if changed.len() == 500 {
                        self.write_instances(&mut changed)?;
                    }
                }
            }
        }
        self.write_instances(&mut changed)
    }

    /// Writes `[node, index, instance]` rows in one statement and empties the list.
    fn write_instances(&self, rows: &mut Vec<String>) -> Result<(), ApiError> {
        if rows.is_empty() {
            return Ok(());
        }
        // `->>` gives an element that is an object back as its JSON text. An upsert, not a
        // replace: a replace deletes the row and inserts it again, in the table and its key's
        // index (a third more of SQLite's time for a row rewritten, measured).
        self.sql.exec(
            "INSERT INTO instances(node, idx, json) SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
             ON CONFLICT(node, idx) DO UPDATE SET json = excluded.json",
            vec![format!("[{}]", rows.join(",")).into()],
        )?;
        rows.clear();
        Ok(())
    }

    /// Whether a create of `key` may already have reached MLflow (it was sent before, and its
    /// answer never recorded: the object restarted in between). Records the intent otherwise;
    /// the write is durable before the request leaves (Durable Objects hold outgoing messages
    /// until storage writes are confirmed).
    pub(super) fn create_sent_before(&self, key: &str) -> Result<bool, ApiError> {
        let n = self
            .sql
            .exec(
                "INSERT OR IGNORE INTO creating(key) VALUES (?)",
                vec![key.into()],
            )?
            .rows_written();
        Ok(n == 0)
    }

    /// The create of `key` is recorded (or refused for good): no lookup is needed again.
    pub(super) fn create_settled(&self, key: &str) -> Result<(), ApiError> {
        self.sql
            .exec("DELETE FROM creating WHERE key = ?", vec![key.into()])?;
        Ok(())
    }
}
