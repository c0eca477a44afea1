//! What a run asks for: [`Effect`]s, derived by [`super::reconcile`], split by who carries them
//! out, and [`plan_round`] and [`next_round`], which batch one round of them for the run object.

use std::collections::BTreeMap;

use crate::wire::{ChildRun, WorkItem};

#[cfg(doc)]
use super::event::Event;
use super::event::{AttemptKey, MlflowCall};
use super::state::RunStatus;

/// Work the run asks for. The edge's run object carries out each effect and applies the event
/// named in its doc line; an effect that fails is derived again by the next reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Carried out against MLflow by the run object.
    Mlflow(MlflowEffect),
    /// Carried out by a cluster's queue object.
    Queue(QueueEffect),
    /// Reconcile again, with an [`Event::Tick`], at this time (a retry or a backoff is due).
    WakeAt(u64),
    /// A webhook delivery, by the run object.
    Notify(super::notify::Notify),
}

/// An MLflow call of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum MlflowEffect {
    /// Find or create the experiment, then create the parent run. → [`Event::ParentRunCreated`]
    CreateParentRun {
        /// The run's id, also tagged `concurrent.key`: a create whose answer was lost (an edge
        /// restart) is found by it instead of being made twice.
        key: String,
        experiment_name: String,
        /// The experiment to use instead of finding or creating `experiment_name`'s.
        experiment_id: Option<String>,
        run_name: String,
        tags: Vec<(String, String)>,
        params: Vec<(String, String)>,
    },
    /// An attempt ended before the run heard of its MLflow run (its agent died, perhaps
    /// before it could make one): find the run by its `concurrent.key`, or create it as
    /// `run` describes, with `note` as its description; then set its final status. So every
    /// attempt the run counts has exactly one MLflow run. → [`Event::AttemptRunClosed`]
    CloseUnreportedRun {
        attempt: AttemptKey,
        experiment_id: String,
        run: ChildRun,
        note: String,
        start_time: u64,
        status: &'static str,
        end_time: u64,
    },
    /// Set an attempt's MLflow run to its final status. → [`Event::AttemptRunClosed`]
    CloseAttemptRun {
        attempt: AttemptKey,
        run_id: String,
        status: &'static str,
        end_time: u64,
    },
    /// Set the parent run's status: final when the run ended (with `metrics`, what the run
    /// used), RUNNING again after a repair. → [`Event::ParentRunSynced`]
    SyncParentRun {
        run_id: String,
        status: RunStatus,
        end_time: Option<u64>,
        metrics: Vec<(String, f64)>,
        /// Once the run has ended, the MLflow runs of the attempts whose end no agent reported
        /// (lapsed, cancelled), with the status the run gave each. Such a step may have
        /// outlived its attempt and set its run's status after the run closed it: RUNNING
        /// (MLflow's client resumes the run a step logs to) or FINISHED (it ended between its
        /// lease's lapse and its kill). Each showing another status is given this one again.
        attempt_runs: BTreeMap<String, &'static str>,
    },
    /// Record on the parent run what a `select` edge chose: tags naming the metric and the
    /// chosen runs, and `json` (every candidate's value) as the artifact `path`.
    /// → [`Event::SelectionRecorded`]
    RecordSelection {
        run_id: String,
        node: String,
        input: String,
        tags: Vec<(String, String)>,
        path: String,
        json: String,
    },
    /// Register a model version of `name` from `source` (first finding one tagged
    /// `concurrent.key` = `key`, made before its answer was lost), then point `alias` at it.
    /// → [`Event::ModelRegistered`]
    RegisterModel {
        node: String,
        key: String,
        name: String,
        source: String,
        run_id: String,
        model_id: Option<String>,
        alias: Option<String>,
        tags: Vec<(String, String)>,
    },
    /// Tag the parent run with what became of a node: skipped and why, an approval's decision,
    /// a registered version. → [`Event::NodeNoted`]
    NoteNode {
        run_id: String,
        node: String,
        tags: Vec<(String, String)>,
    },
}

impl MlflowEffect {
    /// Which call this is, for [`Event::MlflowRefused`].
    pub fn call(&self) -> MlflowCall {
        match self {
            MlflowEffect::CreateParentRun { .. } => MlflowCall::ParentRun,
            MlflowEffect::CloseAttemptRun { attempt, .. }
            | MlflowEffect::CloseUnreportedRun { attempt, .. } => MlflowCall::CloseAttemptRun {
                key: attempt.clone(),
            },
            MlflowEffect::SyncParentRun { .. } => MlflowCall::SyncParentRun,
            MlflowEffect::RecordSelection { node, input, .. } => MlflowCall::RecordSelection {
                node: node.clone(),
                input: input.clone(),
            },
            MlflowEffect::RegisterModel { node, .. } => {
                MlflowCall::RegisterModel { node: node.clone() }
            }
            MlflowEffect::NoteNode { node, .. } => MlflowCall::NoteNode { node: node.clone() },
        }
    }

    /// The `concurrent.key` of a create, whose answer the run object must not lose track of.
    pub fn create_key(&self) -> Option<&str> {
        match self {
            MlflowEffect::CreateParentRun { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A call to a cluster's queue.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueEffect {
    /// Put a work item into its cluster's queue (idempotent by item id). → [`Event::Enqueued`]
    Enqueue(Box<WorkItem>),
    /// Drop a queued item, or flag a leased one so its agent kills it. → [`Event::Withdrawn`]
    Withdraw {
        cluster: String,
        item_id: String,
        attempt: AttemptKey,
    },
}

/// One round of effects, batched as the run object carries them out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Round {
    /// MLflow calls, at most the round's share.
    pub mlflow: Vec<MlflowEffect>,
    /// Per cluster: the work items to enqueue.
    pub enqueue: BTreeMap<String, Vec<WorkItem>>,
    /// Per cluster: the items to withdraw, and the attempts they are.
    pub withdraw: BTreeMap<String, Vec<(String, AttemptKey)>>,
    /// The earliest wake-up asked for.
    pub wake: Option<u64>,
    /// Webhook deliveries.
    pub notify: Vec<super::notify::Notify>,
    /// The round hands over as many work items as a round may: more wait to be queued.
    pub queueing: bool,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.mlflow.is_empty()
            && self.enqueue.is_empty()
            && self.withdraw.is_empty()
            && self.notify.is_empty()
    }
}

/// Batches `effects` into a round with at most `max_mlflow` MLflow calls.
pub fn plan_round(effects: Vec<Effect>, max_mlflow: usize) -> Round {
    let mut round = Round::default();
    for effect in effects {
        match effect {
            Effect::WakeAt(t) => round.wake = Some(round.wake.map_or(t, |w| w.min(t))),
            Effect::Notify(n) => round.notify.push(n),
            Effect::Queue(QueueEffect::Enqueue(item)) => round
                .enqueue
                .entry(item.cluster.clone())
                .or_default()
                .push(*item),
            Effect::Queue(QueueEffect::Withdraw {
                cluster,
                item_id,
                attempt,
            }) => round
                .withdraw
                .entry(cluster)
                .or_default()
                .push((item_id, attempt)),
            Effect::Mlflow(m) if round.mlflow.len() < max_mlflow => round.mlflow.push(m),
            Effect::Mlflow(_) => {}
        }
    }
    round
}

/// How much one round of a run's drive may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundLimits {
    /// Work items built and enqueued: a wide node's items are built a batch at a time.
    pub items: usize,
    /// MLflow calls.
    pub mlflow: usize,
}

/// The next round for the run object to carry out: [`super::reconcile_at_most`] batched by
/// [`plan_round`] within `limits`.
///
/// A round that hands over as many items as it may (a wide node being queued) carries no MLflow
/// call. Agents wait on the queue, not on the closes and notes of attempts that ended, and a
/// round waits for its MLflow answers before it queues the next items: with a PostgreSQL MLflow
/// loaded by the agents' creates, a 10,000-wide node's items were all leased after 84–106 s,
/// in rounds paced by those answers, and after 15–18 s without them (`make bench`). The calls
/// go out in the rounds after the node is queued. (With that bench's zero-length steps, the
/// run's record then ends later, as the closes share MLflow with the creates sooner, while
/// MLflow shows the run's end no later: see docs/scale.md.)
pub fn next_round(run: &super::RunState, now: u64, limits: RoundLimits) -> Round {
    let mut round = plan_round(
        super::reconcile_at_most(run, now, limits.items),
        limits.mlflow,
    );
    round.queueing = round.enqueue.values().map(Vec::len).sum::<usize>() >= limits.items;
    if round.queueing {
        round.mlflow.clear();
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_batches_by_cluster_and_bounds_mlflow_calls() {
        let sync = |i| {
            Effect::Mlflow(MlflowEffect::SyncParentRun {
                run_id: format!("r{i}"),
                status: RunStatus::Running,
                end_time: None,
                metrics: vec![],
                attempt_runs: BTreeMap::new(),
            })
        };
        let withdraw = |c: &str, n: u32| {
            Effect::Queue(QueueEffect::Withdraw {
                cluster: c.into(),
                item_id: format!("i{n}"),
                attempt: AttemptKey::new("a", n, 1),
            })
        };
        let effects = vec![
            sync(1),
            Effect::WakeAt(50),
            withdraw("gpu", 1),
            sync(2),
            withdraw("cpu", 2),
            withdraw("gpu", 3),
            sync(3),
            Effect::WakeAt(20),
        ];
        let round = plan_round(effects, 2);
        assert_eq!(round.mlflow.len(), 2);
        assert_eq!(round.wake, Some(20));
        assert_eq!(round.withdraw["gpu"].len(), 2);
        assert_eq!(round.withdraw["cpu"].len(), 1);
        assert!(!round.is_empty());
        assert!(plan_round(vec![Effect::WakeAt(1)], 2).is_empty());
    }
}
