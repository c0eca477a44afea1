//! The catalog's triggers, and the events waiting to start their runs: an event (a webhook, a
//! poll, a run that succeeded) is kept once per trigger and key until its run has started, so
//! a delivery retried or seen twice starts one run, and a start that failed is tried again.

use concurrent_core::trigger::{Event, Trigger};
use concurrent_core::wire::RunSummary;
use serde::Deserialize;

use super::api::{Pausing, TriggerOutcome, TriggerPoll};
use super::Catalog;
use crate::error::ApiError;

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS triggers(name TEXT PRIMARY KEY, json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS trigger_events(trigger TEXT NOT NULL, key TEXT NOT NULL, event TEXT NOT NULL,
       attempts INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(trigger, key))",
];

/// Starts of one event tried (at each cron, once a minute) before it is given up.
const MAX_START_ATTEMPTS: i64 = 10;

impl Catalog {
    fn all_triggers(&self) -> Result<Vec<Trigger>, ApiError> {
        #[derive(Deserialize)]
        struct J {
            json: String,
        }
        let rows: Vec<J> = self
            .sql
            .exec("SELECT json FROM triggers ORDER BY name", None)?
            .to_array()?;
        rows.into_iter()
            .map(|r| Ok(serde_json::from_str(&r.json)?))
            .collect()
    }

    fn trigger(&self, name: &str) -> Result<Trigger, ApiError> {
        self.all_triggers()?
            .into_iter()
            .find(|t| t.spec.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("no trigger named {name:?}")))
    }

    fn put_trigger(&self, t: &Trigger) -> Result<(), ApiError> {
        self.sql.exec(
            "INSERT OR REPLACE INTO triggers(name, json) VALUES (?, ?)",
            vec![t.spec.name.clone().into(), serde_json::to_string(t)?.into()],
        )?;
        Ok(())
    }

    pub(super) async fn triggers(&self, _: ()) -> Result<Vec<Trigger>, ApiError> {
        self.all_triggers()
    }

    pub(super) async fn create_trigger(&self, t: Trigger) -> Result<Trigger, ApiError> {
        if self.trigger(&t.spec.name).is_ok() {
            return Err(ApiError::Conflict(format!(
                "a trigger named {:?} exists; delete it first",
                t.spec.name
            )));
        }
        self.put_trigger(&t)?;
        Ok(t)
    }

    pub(super) async fn delete_trigger(&self, name: String) -> Result<bool, ApiError> {
        self.trigger(&name)?;
        self.sql.exec(
            "DELETE FROM triggers WHERE name = ?",
            vec![name.clone().into()],
        )?;
        self.sql.exec(
            "DELETE FROM trigger_events WHERE trigger = ?",
            vec![name.into()],
        )?;
        Ok(true)
    }

    pub(super) async fn pause_trigger(&self, p: Pausing) -> Result<Trigger, ApiError> {
        let mut t = self.trigger(&p.name)?;
        t.paused = p.paused;
        self.put_trigger(&t)?;
        Ok(t)
    }

    /// Keeps `event` for every trigger it fires (once per trigger and key); how many.
    pub(super) fn note_event(&self, event: &Event) -> Result<u32, ApiError> {
        let mut n = 0;
        let json = serde_json::to_string(event)?;
        for t in self.all_triggers()? {
            if t.paused || !event.fires(&t.spec.on) {
                continue;
            }
            n += self
                .sql
                .exec(
                    "INSERT OR IGNORE INTO trigger_events(trigger, key, event) VALUES (?, ?, ?)",
                    vec![
                        t.spec.name.clone().into(),
                        event.key().into(),
                        json.clone().into(),
                    ],
                )?
                .rows_written() as u32;
        }
        Ok(n)
    }

    pub(super) async fn record_event(&self, event: Event) -> Result<u32, ApiError> {
        self.note_event(&event)
    }

    /// A run that ended succeeded is an event for the triggers that watch its template.
    pub(super) fn run_ended(&self, r: &RunSummary) -> Result<(), ApiError> {
        if r.status == concurrent_core::run::RunStatus::Succeeded {
            self.note_event(&Event::RunSucceeded {
                run_id: r.id.clone(),
                template: r.template.clone(),
            })?;
        }
        Ok(())
    }

    /// The events whose runs have not started yet, with their triggers.
    pub(super) async fn pending_events(&self, _: ()) -> Result<Vec<(Trigger, Event)>, ApiError> {
        #[derive(Deserialize)]
        struct Row {
            trigger: String,
            event: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT trigger, event FROM trigger_events WHERE done = 0 AND attempts < ? ORDER BY rowid LIMIT 100",
                vec![MAX_START_ATTEMPTS.into()],
            )?
            .to_array()?;
        let triggers = self.all_triggers()?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let t = triggers
                    .iter()
                    .find(|t| t.spec.name == r.trigger && !t.paused)?;
                Some((t.clone(), serde_json::from_str(&r.event).ok()?))
            })
            .collect())
    }

    pub(super) async fn record_trigger(&self, o: TriggerOutcome) -> Result<bool, ApiError> {
        let Ok(mut t) = self.trigger(&o.name) else {
            return Ok(false);
        };
        let done = o.result.is_ok();
        self.sql.exec(
            "UPDATE trigger_events SET attempts = attempts + 1, done = ? WHERE trigger = ? AND key = ?",
            vec![(done as i64).into(), o.name.clone().into(), o.key.clone().into()],
        )?;
        t.last_event = Some(o.key);
        match o.result {
            Ok(run) => {
                if t.last_run_id.as_deref() != Some(run.as_str()) {
                    t.fired += 1;
                }
                t.last_run_id = Some(run);
                t.last_error = None;
            }
            Err(why) => t.last_error = Some(why),
        }
        self.put_trigger(&t)?;
        Ok(true)
    }

    /// What a poll of the registry saw for a trigger.
    pub(super) async fn record_poll(&self, p: TriggerPoll) -> Result<bool, ApiError> {
        let Ok(mut t) = self.trigger(&p.name) else {
            return Ok(false);
        };
        t.seen = p.seen;
        t.polled_at = Some(p.at);
        if let Some(why) = p.error {
            t.last_error = Some(why);
        }
        self.put_trigger(&t)?;
        Ok(true)
    }
}
