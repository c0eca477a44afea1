//! Cron schedules: parsing (5-field, UTC), and the decision of when a schedule fires.
//!
//! # Guarantees
//! - After downtime a schedule fires at most once, for the latest missed tick (no storm of
//!   catch-up runs); the number of ticks it skipped is reported.
//! - A cron expression that never fires (e.g. `0 0 30 2 *`) is refused when it is saved.
//! - A tick whose run fails to start is kept and tried again at the next triggers (up to
//!   [`MAX_START_ATTEMPTS`] times), with the error shown on the schedule meanwhile; each tick
//!   maps to one run id, so a retried start never makes two runs.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

/// What happens when a tick comes while the previous run of the schedule is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the tick (the default).
    #[default]
    Skip,
    /// Start another run anyway.
    Allow,
}

/// A schedule as the API accepts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSchedule {
    pub name: String,
    pub template: String,
    /// Five fields (minute hour day-of-month month day-of-week), in UTC.
    pub cron: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default)]
    pub overlap: Overlap,
}

/// A stored schedule and its firing record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    #[serde(flatten)]
    pub spec: NewSchedule,
    pub created_at: u64,
    /// The next tick, in ms since the epoch.
    pub next_fire: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    /// Ticks that passed without a run (downtime, overlap: skip, or starts that kept failing).
    #[serde(default)]
    pub skipped: u64,
    /// A tick chosen to fire whose run has not started yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingTick>,
    /// Why the latest start failed; cleared when a run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A paused schedule fires nothing; resuming it starts from the next tick after then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A tick to start a run for, and how often starting it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTick {
    pub at: u64,
    #[serde(default)]
    pub attempts: u32,
}

/// Starts of one tick tried (one per trigger, every minute) before the tick is given up.
pub const MAX_START_ATTEMPTS: u32 = 10;

impl Schedule {
    /// A new schedule, created at `now`.
    ///
    /// # Errors
    /// The cron expression cannot schedule anything.
    pub fn new(spec: NewSchedule, now: u64) -> Result<Schedule, CronError> {
        let next_fire = next_tick(&spec.cron, now)?;
        Ok(Schedule {
            spec,
            created_at: now,
            next_fire,
            last_fired: None,
            last_run_id: None,
            skipped: 0,
            pending: None,
            last_error: None,
            paused: false,
        })
    }

    /// Stops firing; a tick waiting to start is dropped with it.
    pub fn pause(&mut self) {
        self.paused = true;
        if self.pending.take().is_some() {
            self.skipped += 1;
        }
    }

    /// Fires again from the first tick after `now`: what passed while paused is not caught up.
    ///
    /// # Errors
    /// The cron expression no longer fires (it did when saved; kept for safety).
    pub fn resume(&mut self, now: u64) -> Result<(), CronError> {
        if self.paused {
            self.next_fire = next_tick(&self.spec.cron, now)?;
            self.paused = false;
        }
        Ok(())
    }

    /// The tick to start a run for at this trigger, if any: a pending one first, else the one
    /// [`tick`] picks (which then becomes pending). Call [`Schedule::started`] or
    /// [`Schedule::start_failed`] with the outcome.
    pub fn due(&mut self, now: u64, previous_running: bool) -> Option<u64> {
        if self.paused {
            return None;
        }
        if let Some(p) = &self.pending {
            return Some(p.at);
        }
        match tick(self, now, previous_running) {
            Tick::Wait => None,
            Tick::Skip { missed, next } => {
                self.skipped += missed;
                self.next_fire = next;
                None
            }
            Tick::Fire { at, missed, next } => {
                self.skipped += missed;
                self.next_fire = next;
                self.last_fired = Some(at);
                self.pending = Some(PendingTick { at, attempts: 0 });
                Some(at)
            }
        }
    }

    /// The run of tick `at` started.
    pub fn started(&mut self, at: u64, run_id: String) {
        if self.pending.as_ref().is_some_and(|p| p.at == at) {
            self.pending = None;
        }
        self.last_run_id = Some(run_id);
        self.last_error = None;
    }

    /// Starting the run of tick `at` failed; after [`MAX_START_ATTEMPTS`] the tick is dropped.
    pub fn start_failed(&mut self, at: u64, error: &str) {
        let Some(p) = self.pending.as_mut().filter(|p| p.at == at) else {
            return;
        };
        p.attempts += 1;
        if p.attempts >= MAX_START_ATTEMPTS {
            self.pending = None;
            self.skipped += 1;
            self.last_error = Some(format!(
                "the tick at {} was dropped after {MAX_START_ATTEMPTS} failed starts: {error}",
                crate::time::rfc3339(at)
            ));
        } else {
            self.last_error = Some(format!(
                "starting the run failed ({} of {MAX_START_ATTEMPTS} tries; tried again at the next minute): {error}",
                p.attempts
            ));
        }
    }
}

fn at(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .unwrap_or_default()
}

/// Why a cron expression cannot schedule anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron {0:?} must have 5 fields: minute hour day-of-month month day-of-week (UTC)")]
    Fields(String),
    #[error("cron {expr:?} is not valid: {reason}")]
    Invalid { expr: String, reason: String },
    /// E.g. `0 0 30 2 *` (February 30th).
    #[error("cron {0:?} never fires")]
    Never(String),
    #[error("cron {0:?} does not fire in the next five years")]
    TooFar(String),
}

fn parse(expr: &str) -> Result<Cron, CronError> {
    if expr.split_whitespace().count() != 5 {
        return Err(CronError::Fields(expr.into()));
    }
    expr.parse::<Cron>().map_err(|e| CronError::Invalid {
        expr: expr.into(),
        reason: e.to_string(),
    })
}

/// The first tick strictly after `after_ms`.
///
/// # Errors
/// The expression is malformed, or it never fires in the next five years.
pub fn next_tick(expr: &str, after_ms: u64) -> Result<u64, CronError> {
    let cron = parse(expr)?;
    let next = cron
        .find_next_occurrence(&at(after_ms), false)
        .map_err(|_| CronError::Never(expr.into()))?;
    let next_ms = next.timestamp_millis() as u64;
    if next_ms > after_ms + 5 * 366 * 86_400_000 {
        return Err(CronError::TooFar(expr.into()));
    }
    Ok(next_ms)
}

/// A cron expression in words, and its next ticks, for people choosing one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronPreview {
    /// E.g. "At 02:00 on Monday, UTC".
    pub description: String,
    /// The next ticks after the given time, in ms since the epoch.
    pub next: Vec<u64>,
}

/// What `expr` means and its next `n` ticks after `after_ms`.
///
/// # Errors
/// The same as [`next_tick`]: a malformed expression, or one that never fires.
pub fn preview(expr: &str, after_ms: u64, n: usize) -> Result<CronPreview, CronError> {
    let cron = parse(expr)?;
    let mut next = Vec::with_capacity(n);
    let mut after = after_ms;
    for _ in 0..n {
        after = next_tick(expr, after)?;
        next.push(after);
    }
    Ok(CronPreview {
        description: format!("{}, UTC", cron.describe().trim_end_matches('.')),
        next,
    })
}

/// What a schedule does at a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Not due yet.
    Wait,
    /// Start a run for the tick at `at`; `missed` earlier ticks are dropped.
    Fire { at: u64, missed: u64, next: u64 },
    /// Due, but the previous run is still going and overlap is `skip`.
    Skip { missed: u64, next: u64 },
}

/// Decides what `s` does at `now`, given whether its previous run is still going.
pub fn tick(s: &Schedule, now: u64, previous_running: bool) -> Tick {
    if s.next_fire > now {
        return Tick::Wait;
    }
    // Walk the ticks that passed; bounded so a years-old schedule costs little.
    let mut latest = s.next_fire;
    let mut passed = 1u64;
    while passed < 10_000 {
        match next_tick(&s.spec.cron, latest) {
            Ok(t) if t <= now => {
                latest = t;
                passed += 1;
            }
            _ => break,
        }
    }
    let next = next_tick(&s.spec.cron, now).unwrap_or(u64::MAX);
    if previous_running && s.spec.overlap == Overlap::Skip {
        Tick::Skip {
            missed: passed,
            next,
        }
    } else {
        Tick::Fire {
            at: latest,
            missed: passed - 1,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn schedule(cron: &str, next_fire: u64, overlap: Overlap) -> Schedule {
        Schedule {
            spec: NewSchedule {
                name: "s".into(),
                template: "t".into(),
                cron: cron.into(),
                parameters: BTreeMap::new(),
                cluster: None,
                overlap,
            },
            created_at: 0,
            next_fire,
            last_fired: None,
            last_run_id: None,
            skipped: 0,
            pending: None,
            last_error: None,
            paused: false,
        }
    }

    #[test]
    fn a_paused_schedule_fires_nothing_and_resumes_from_the_next_tick() {
        let mut s = schedule("*/5 * * * *", 5 * MIN, Overlap::Allow);
        assert_eq!(s.due(5 * MIN, false), Some(5 * MIN));
        s.pause();
        assert_eq!(
            (s.pending.clone(), s.skipped),
            (None, 1),
            "the waiting tick is dropped"
        );
        assert_eq!(s.due(60 * MIN, false), None, "nothing while paused");
        s.resume(62 * MIN).unwrap();
        assert_eq!(s.next_fire, 65 * MIN, "no catch-up of the paused hour");
        assert_eq!(s.due(65 * MIN, false), Some(65 * MIN));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("paused").is_none(), "false is left out: {json}");
        s.pause();
        assert_eq!(serde_json::to_value(&s).unwrap()["paused"], true);
    }

    #[test]
    fn a_preview_describes_the_cron_and_lists_its_next_ticks() {
        let p = preview("0 2 * * 1", 0, 5).unwrap();
        // 1970-01-01 was a Thursday: the first Monday 02:00 is Jan 5th.
        let day = 86_400_000;
        assert_eq!(
            p.next,
            (0..5)
                .map(|w| 4 * day + 2 * 60 * MIN + w * 7 * day)
                .collect::<Vec<_>>()
        );
        assert!(
            p.description.contains("02:00") && p.description.contains("Monday"),
            "{}",
            p.description
        );
        assert!(preview("0 0 30 2 *", 0, 5).is_err());
        assert!(matches!(preview("* * *", 0, 5), Err(CronError::Fields(_))));
    }

    #[test]
    fn a_tick_whose_start_fails_is_tried_again_then_given_up() {
        let mut s = schedule("* * * * *", MIN, Overlap::Skip);
        assert_eq!(s.due(MIN, false), Some(MIN));
        s.start_failed(MIN, "template \"t\" does not exist");
        assert!(s.last_error.as_deref().unwrap().contains("1 of 10"));
        // The next trigger retries the same tick, not a new one.
        assert_eq!(s.due(2 * MIN, false), Some(MIN));
        s.started(MIN, "r1".into());
        assert_eq!((s.pending.clone(), s.last_error.clone()), (None, None));
        assert_eq!(s.due(2 * MIN, false), Some(2 * MIN));
        for _ in 0..MAX_START_ATTEMPTS {
            s.start_failed(2 * MIN, "no");
        }
        assert_eq!(s.pending, None);
        assert!(s.last_error.as_deref().unwrap().contains("dropped"));
    }

    #[test]
    fn next_ticks_follow_the_expression_in_utc() {
        assert_eq!(next_tick("*/15 * * * *", 0).unwrap(), 15 * MIN);
        assert_eq!(next_tick("0 2 * * *", 0).unwrap(), 2 * 60 * MIN);
    }

    #[test]
    fn bad_and_never_firing_expressions_are_refused() {
        assert!(next_tick("* * *", 0)
            .unwrap_err()
            .to_string()
            .contains("5 fields"));
        assert!(next_tick("61 * * * *", 0).is_err());
        assert!(
            next_tick("0 0 30 2 *", 0).is_err(),
            "February 30th never comes"
        );
    }

    #[test]
    fn after_downtime_a_schedule_fires_once_for_the_latest_tick() {
        let s = schedule("*/5 * * * *", 5 * MIN, Overlap::Skip);
        assert_eq!(tick(&s, 4 * MIN, false), Tick::Wait);
        assert_eq!(
            tick(&s, 5 * MIN, false),
            Tick::Fire {
                at: 5 * MIN,
                missed: 0,
                next: 10 * MIN
            }
        );
        assert_eq!(
            tick(&s, 62 * MIN, false),
            Tick::Fire {
                at: 60 * MIN,
                missed: 11,
                next: 65 * MIN
            }
        );
    }

    #[test]
    fn overlap_skip_waits_for_the_previous_run() {
        let s = schedule("* * * * *", MIN, Overlap::Skip);
        assert_eq!(
            tick(&s, MIN, true),
            Tick::Skip {
                missed: 1,
                next: 2 * MIN
            }
        );
        let s = schedule("* * * * *", MIN, Overlap::Allow);
        assert!(matches!(tick(&s, MIN, true), Tick::Fire { .. }));
    }
}
