//! What happens to a run: [`Event`]s, each applied by [`super::apply`], and the key of the
//! attempt most of them are about.

use serde::{Deserialize, Serialize};

use crate::names::{pod_name, work_item_id};
use crate::wire::Outcome;

use super::state::{MlflowRef, Repair, RunStatus};

/// One attempt of one instance of one node: the key of its work item, its lease, its pod and
/// its MLflow run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptKey {
    pub node: String,
    pub instance: u32,
    /// 1 for the first try.
    pub attempt: u32,
}

impl AttemptKey {
    pub fn new(node: impl Into<String>, instance: u32, attempt: u32) -> AttemptKey {
        AttemptKey {
            node: node.into(),
            instance,
            attempt,
        }
    }

    /// The id of the attempt's work item (and lease) in run `run_id`.
    pub fn work_item_id(&self, run_id: &str) -> String {
        work_item_id(run_id, &self.node, self.instance, self.attempt)
    }

    /// The attempt's pod name in run `run_id`.
    pub fn pod_name(&self, run_id: &str) -> String {
        pod_name(run_id, &self.node, self.instance, self.attempt)
    }
}

impl std::fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attempt {} of {}[{}]",
            self.attempt, self.node, self.instance
        )
    }
}

/// Something that happened to a run. Serializable because the cluster queues send them to the
/// run objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// The MLflow experiment and parent run exist.
    ParentRunCreated(MlflowRef),
    /// The MLflow child run of an attempt exists (its agent created it and reported it with a
    /// heartbeat or the completion).
    ChildRunCreated {
        #[serde(flatten)]
        key: AttemptKey,
        run_id: String,
    },
    /// The attempt has no MLflow run and never will (its agent says MLflow refused the
    /// create): nothing to look up or close when it ends.
    NoAttemptRun {
        #[serde(flatten)]
        key: AttemptKey,
    },
    /// The cluster queue holds the attempt's work item.
    Enqueued {
        #[serde(flatten)]
        key: AttemptKey,
    },
    /// The cluster queue dropped (or flagged for killing) a cancelled attempt's work item.
    Withdrawn {
        #[serde(flatten)]
        key: AttemptKey,
    },
    /// An attempt's MLflow run shows its final status; `run_id` names it when the run found
    /// or made it (the attempt's agent never reported it).
    AttemptRunClosed {
        #[serde(flatten)]
        key: AttemptKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
    },
    /// The MLflow parent run shows this status.
    ParentRunSynced { status: RunStatus },
    /// The parent run records what the `select` edge into `node`'s `input` chose.
    SelectionRecorded { node: String, input: String },
    /// An agent leased the attempt.
    Leased {
        #[serde(flatten)]
        key: AttemptKey,
        agent: String,
    },
    /// The lease ended before its agent confirmed it with a heartbeat (the agent died while its
    /// long-poll was answered): nothing ran, so the attempt waits in the queue again, uncounted.
    Requeued {
        #[serde(flatten)]
        key: AttemptKey,
    },
    /// The agent sent the last lines of a running attempt's log.
    LogTail {
        #[serde(flatten)]
        key: AttemptKey,
        tail: String,
    },
    /// Its agent reported how the attempt ended: the step's processes are gone.
    Finished {
        #[serde(flatten)]
        key: AttemptKey,
        outcome: Outcome,
    },
    /// The attempt's lease lapsed (its agent stopped heartbeating, or never confirmed within
    /// its time): it failed with `error`, and its step may outlive it for a while.
    Lapsed {
        #[serde(flatten)]
        key: AttemptKey,
        error: String,
    },
    /// A user cancelled the run.
    Cancel { reason: String },
    /// A user repairs an ended run.
    Repair { repair: Repair, by: Option<String> },
    /// Time passed (an alarm fired): retries that are due start.
    Tick,
    /// MLflow failed with a retryable error (unreachable, 5xx, 429): MLflow calls pause for a
    /// capped exponential backoff, and the run shows "waiting for MLflow: <reason>".
    MlflowUnavailable { reason: String },
    /// MLflow refused a call for good (a deleted experiment, a value it does not accept): what
    /// the call was for fails with MLflow's message, instead of being retried for ever.
    MlflowRefused { call: MlflowCall, message: String },
    /// A step resolved a git source to a commit: the first one becomes the run's pin.
    Pinned { source: String, commit: String },
    /// A person decided a paused approval node.
    Decided {
        node: String,
        approve: bool,
        by: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
    /// A register node's model version exists (and its alias points at it).
    ModelRegistered { node: String, version: String },
    /// The parent run carries what became of a node (skipped, decided, registered).
    NodeNoted { node: String },
    /// A webhook delivery was answered: a 2xx (`error` none), or not.
    Notified {
        to: u32,
        what: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Event {
    /// The attempt the event is about, if it is about one.
    pub fn key(&self) -> Option<&AttemptKey> {
        match self {
            Event::ChildRunCreated { key, .. }
            | Event::NoAttemptRun { key }
            | Event::Enqueued { key }
            | Event::Withdrawn { key }
            | Event::AttemptRunClosed { key, .. }
            | Event::Leased { key, .. }
            | Event::Requeued { key }
            | Event::LogTail { key, .. }
            | Event::Finished { key, .. }
            | Event::Lapsed { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether the event is MLflow's answer to one of the run's calls.
    pub fn is_mlflow_answer(&self) -> bool {
        matches!(
            self,
            Event::ParentRunCreated(_)
                | Event::ChildRunCreated { .. }
                | Event::AttemptRunClosed { .. }
                | Event::ParentRunSynced { .. }
                | Event::SelectionRecorded { .. }
                | Event::ModelRegistered { .. }
                | Event::NodeNoted { .. }
                | Event::MlflowRefused { .. }
        )
    }
}

/// Which MLflow call of the run an [`Event::MlflowRefused`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "camelCase")]
pub enum MlflowCall {
    ParentRun,
    CloseAttemptRun {
        #[serde(flatten)]
        key: AttemptKey,
    },
    SyncParentRun,
    RecordSelection {
        node: String,
        input: String,
    },
    RegisterModel {
        node: String,
    },
    NoteNode {
        node: String,
    },
}

/// An event that does not apply to the run as it is (a stale completion, a second cancel): a
/// decision of the run, not an error of the system (the run object answers it as data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{0}")]
#[serde(transparent)]
pub struct Rejected(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_flat_wire_shape() {
        let e = Event::Enqueued {
            key: AttemptKey::new("train", 3, 2),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "enqueued", "node": "train", "instance": 3, "attempt": 2})
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        let r = Event::MlflowRefused {
            call: MlflowCall::CloseAttemptRun {
                key: AttemptKey::new("a", 0, 1),
            },
            message: "no".into(),
        };
        let back: Event = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_attempt_key_names_its_item_and_pod() {
        let k = AttemptKey::new("train", 1, 2);
        assert_eq!(
            k.work_item_id("0123456789abcdef"),
            "0123456789abcdef.train.1.2"
        );
        assert_eq!(k.pod_name("0123456789abcdef"), "c-0123456789-train-1-2");
        assert_eq!(k.to_string(), "attempt 2 of train[1]");
    }
}
