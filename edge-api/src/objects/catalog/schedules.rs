//! The catalog's schedules: each as a JSON row, with the tick pending a start.

use concurrent_core::schedule::Schedule;
use serde::Deserialize;

use super::api::{Pausing, TickOutcome};
use super::Catalog;
use crate::error::ApiError;

pub const SCHEMA: &[&str] =
    &["CREATE TABLE IF NOT EXISTS schedules(name TEXT PRIMARY KEY, json TEXT NOT NULL)"];

impl Catalog {
    /// Every schedule, by name.
    fn all_schedules(&self) -> Result<Vec<Schedule>, ApiError> {
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

    pub(super) async fn schedules(&self, _: ()) -> Result<Vec<Schedule>, ApiError> {
        self.all_schedules()
    }

    pub(super) async fn create_schedule(&self, s: Schedule) -> Result<Schedule, ApiError> {
        if self
            .all_schedules()?
            .iter()
            .any(|x| x.spec.name == s.spec.name)
        {
            return Err(ApiError::Conflict(format!(
                "a schedule named {:?} exists; delete it first",
                s.spec.name
            )));
        }
        self.put_schedule(&s)?;
        Ok(s)
    }

    pub(super) async fn delete_schedule(&self, name: String) -> Result<bool, ApiError> {
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

    pub(super) async fn set_paused(&self, p: Pausing) -> Result<Schedule, ApiError> {
        let Some(mut s) = self
            .all_schedules()?
            .into_iter()
            .find(|s| s.spec.name == p.name)
        else {
            return Err(ApiError::NotFound(format!(
                "no schedule named {:?}",
                p.name
            )));
        };
        if p.paused {
            s.pause();
        } else {
            s.resume(p.now)
                .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        }
        self.put_schedule(&s)?;
        Ok(s)
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
    pub(super) async fn due_schedules(&self, now: u64) -> Result<Vec<(Schedule, u64)>, ApiError> {
        let mut fire = Vec::new();
        for mut s in self.all_schedules()? {
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

    pub(super) async fn record_tick(&self, o: TickOutcome) -> Result<bool, ApiError> {
        if let Some(mut s) = self
            .all_schedules()?
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
