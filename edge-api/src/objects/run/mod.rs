//! The run Durable Object: hosts one run's state machine and carries out its effects.
//!
//! Every change is applied and written synchronously (SQLite writes in one turn are atomic), then
//! the run drives reconcile's effects (`drive`) at once, and an alarm set first does if that is
//! cut short: MLflow calls, enqueueing work, withdrawing cancelled work. A failed effect is
//! retried by a later alarm, so an MLflow or queue outage delays a run but never loses it.
//! `store` keeps the run's rows; `api` is what callers may know.

pub mod api;
mod drive;
mod store;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use concurrent_core::concurrency_limit::ConcurrencyLimit;
use concurrent_core::run::{apply_all, Event, Rejected, RunState};
use concurrent_core::wire::{PinResponse, RunSummary};
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use self::api::RunApi;
use self::store::Cached;
use crate::error::ApiError;
use crate::http::reply;
use crate::platform::now_ms;

/// When the alarm comes again if it finds the run being driven already.
const ALARM_WHILE_DRIVING_MS: i64 = 1_000;
/// How long after a change whose work a drive beside the request carries out the alarm rings
/// anyway, for a drive cut short (an eviction, the process killed). An alarm set for "now"
/// rang while that drive was under way, was put off by [`ALARM_WHILE_DRIVING_MS`] and rang
/// again to find nothing to do: two storage writes and two alarm invocations per change.
const DRIVE_BACKSTOP_MS: u64 = 2_000;

#[durable_object]
pub struct RunObject {
    run: Rc<Run>,
}

impl std::ops::Deref for RunObject {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

/// The object's state, shared with the drives it starts itself (see [`Run::drive_now`]).
pub struct Run {
    me: Weak<Run>,
    state: State,
    env: Env,
    sql: SqlStorage,
    cache: RefCell<Option<Cached>>,
    driving: Cell<bool>,
    again: Cell<bool>,
    /// MLflow calls in flight at once from this run, adapted to how MLflow answers.
    mlflow_limit: RefCell<ConcurrencyLimit>,
}

impl DurableObject for RunObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        // One call for all of it: a run object is made for every run, and each call into the
        // runtime's SQL costs more than the statement.
        sql.exec(&store::SCHEMA.join(";\n"), None)
            .expect("run schema");
        RunObject {
            run: Rc::new_cyclic(|me| Run {
                me: me.clone(),
                state,
                env,
                sql,
                cache: RefCell::new(None),
                driving: Cell::new(false),
                again: Cell::new(false),
                mlflow_limit: RefCell::new(drive::mlflow_limit()),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        reply(self.serve(&mut req).await)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        if self.driving.get() {
            // A drive started beside a request is under way. This alarm is spent once it
            // returns, and that drive may yet be cut short (an eviction, the process killed):
            // the alarm comes again, and finds the drive done or carries on where it stopped.
            self.again.set(true);
            self.state
                .storage()
                .set_alarm(ALARM_WHILE_DRIVING_MS)
                .await?;
            return Response::ok("ok");
        }
        self.drive_or_retry().await?;
        crate::http::note_memory();
        Response::ok("ok")
    }
}

impl RunApi for Run {
    async fn start(&self, run: RunState) -> Result<RunSummary, ApiError> {
        if self.load()? {
            let existing = self.with_run(|r| r.request.clone())?;
            if existing != run.request {
                return Err(ApiError::Unprocessable(format!(
                    "run {} was started by an earlier request with this Idempotency-Key, and that request differs from this one; use a new key for a new run",
                    run.id
                )));
            }
        } else {
            *self.cache.borrow_mut() = Some(Cached::new(run));
            self.save(None)?;
        }
        self.sync_index().await;
        let wake = self.schedule().await?;
        self.drive_now(wake);
        self.with_run(RunState::summary)
    }

    async fn get(&self, _: ()) -> Result<crate::http::Body, ApiError> {
        // Written from the run in place, in pieces: a copy of a big run would double it.
        self.with_run(crate::http::Body::json)?
    }

    async fn overview(&self, _: ()) -> Result<concurrent_core::run::RunOverview, ApiError> {
        self.with_run(concurrent_core::run::overview)
    }

    async fn instances(
        &self,
        q: concurrent_core::wire::InstancesQuery,
    ) -> Result<concurrent_core::run::InstancesPage, ApiError> {
        let filter = concurrent_core::run::InstanceFilter {
            state: q.state,
            offset: q.offset,
            limit: q.limit,
        };
        self.with_run(|run| concurrent_core::run::instances_page(run, &q.node, filter))?
            .ok_or_else(|| ApiError::NotFound(format!("the run has no node {:?}", q.node)))
    }

    async fn events(&self, events: Vec<Event>) -> Result<Vec<Option<Rejected>>, ApiError> {
        let answers = self.apply_events(events)?;
        let wake = self.schedule().await?;
        self.drive_now(wake);
        Ok(answers)
    }

    async fn pin(&self, (source, commit): (String, String)) -> Result<PinResponse, ApiError> {
        self.apply_event(Event::Pinned {
            source: source.clone(),
            commit: commit.clone(),
        })?
        .ok();
        let pinned = self
            .with_run(|r| r.pins.get(&source).cloned())?
            .unwrap_or(commit.clone());
        Ok(PinResponse {
            first: pinned == commit,
            commit: pinned,
        })
    }
}

impl Run {
    fn run_id(&self) -> String {
        self.cache
            .borrow()
            .as_ref()
            .map(|c| c.run.id.clone())
            .unwrap_or_default()
    }

    /// Applies one event and writes what changed. The outer error is the system's (storage,
    /// no such run); the inner one is the run's refusal of the event, which is data.
    fn apply_event(&self, event: Event) -> Result<Result<(), Rejected>, ApiError> {
        let answer = self.apply_events(vec![event])?.pop().flatten();
        Ok(answer.map_or(Ok(()), Err))
    }

    /// Applies events in order, then writes what they changed at once (the instances they are
    /// about, or every row when one of them is about no single instance); each event's
    /// refusal, in order.
    fn apply_events(&self, events: Vec<Event>) -> Result<Vec<Option<Rejected>>, ApiError> {
        if !self.load()? {
            return Err(ApiError::NotFound("no such run".into()));
        }
        let keys: Vec<Option<(String, u32)>> = events
            .iter()
            .map(|e| e.key().map(|k| (k.node.clone(), k.instance)))
            .collect();
        let answers: Vec<Option<Rejected>> = {
            let mut guard = self.cache.borrow_mut();
            let run = &mut guard.as_mut().expect("loaded").run;
            apply_all(run, events, now_ms())
                .into_iter()
                .map(Result::err)
                .collect()
        };
        // The instances applied events were about; `None` when one was about no single
        // instance (then every row is checked).
        let mut touched = Some(std::collections::BTreeSet::new());
        for (key, answer) in keys.into_iter().zip(&answers) {
            match (answer, key) {
                (Some(_), _) => {}
                (None, Some(k)) => {
                    if let Some(t) = touched.as_mut() {
                        t.insert(k);
                    }
                }
                (None, None) => touched = None,
            }
        }
        if touched.as_ref().is_none_or(|t| !t.is_empty()) {
            self.save(touched.as_ref())?;
        }
        Ok(answers)
    }

    /// Drives the run at once, beside the request that changed it, when it has work due now
    /// (`wake`, as [`Run::schedule`] found it): an alarm rings later (about 10 ms in local
    /// workerd), and a chain's next step would wait for it. The alarm stays set, as a backstop
    /// ([`Run::schedule`]), so a drive cut short is finished by it.
    fn drive_now(&self, wake: Option<u64>) {
        if let (true, Some(run)) = (wake.is_some_and(|at| at <= now_ms()), self.me.upgrade()) {
            worker::wasm_bindgen_futures::spawn_local(async move {
                run.drive_or_retry().await.ok();
            });
        }
    }

    /// Drives the run; when that fails, says why and has the alarm try again in a while.
    async fn drive_or_retry(&self) -> worker::Result<()> {
        if let Err(e) = self.drive().await {
            worker::console_error!(
                "run {}: driving effects failed: {}",
                self.run_id(),
                e.detail()
            );
            self.state.storage().set_alarm(3_000i64).await?;
        }
        Ok(())
    }

    /// Makes sure the alarm rings by the earliest moment there is work: when a retry is due, or,
    /// for work due now (which [`Run::drive_now`] starts at once), [`DRIVE_BACKSTOP_MS`] later.
    /// An alarm already set that soon stays (reading it is cheap, setting it is a write).
    /// Returns that moment, if any.
    async fn schedule(&self) -> Result<Option<u64>, ApiError> {
        let now = now_ms();
        let wake = self.next_wake(now)?;
        if let Some(at) = wake {
            let ring = if at <= now {
                now + DRIVE_BACKSTOP_MS
            } else {
                at
            };
            crate::alarm::ring_by(&self.state.storage(), ring).await?;
        }
        Ok(wake)
    }
}
