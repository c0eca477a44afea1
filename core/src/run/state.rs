//! The recorded state of a run: nodes, instances, attempts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::partition::ArtifactFile;
use crate::template::Template;
use crate::wire::StepFacts;

/// The lifecycle of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Accepted; waiting for its MLflow parent run.
    Pending,
    /// Nodes are executing.
    Running,
    /// Every node succeeded.
    Succeeded,
    /// A node failed after its retries, or a partition could not be planned.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The name in JSON and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The MLflow run status that mirrors this one.
    pub fn mlflow_status(self) -> &'static str {
        match self {
            RunStatus::Pending => "SCHEDULED",
            RunStatus::Running => "RUNNING",
            RunStatus::Succeeded => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "KILLED",
        }
    }
}

/// The lifecycle of one instance (one parallel copy of a node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Waiting for upstream nodes (again, after a repair) before its inputs are planned.
    Waiting,
    /// An attempt is being prepared (MLflow child run) or sits in the cluster's queue.
    Queued,
    /// An agent holds the attempt's lease.
    Running,
    /// The last attempt failed; another one starts at `retry_at`.
    Retrying,
    Succeeded,
    /// Failed after exhausting its retries.
    Failed,
    /// Cancelled by a user, or dropped because another node failed.
    Cancelled,
    /// Waits for a person's decision (an approval node).
    Paused,
    /// Not run: its condition was false, or its upstream nodes did not end as its trigger rule
    /// asks (the node's `skipped` says which).
    Skipped,
}

impl InstanceState {
    /// Every state, in the order a person reads a run (what waits, what runs, how it ended).
    pub const ALL: [InstanceState; 9] = [
        InstanceState::Waiting,
        InstanceState::Paused,
        InstanceState::Queued,
        InstanceState::Running,
        InstanceState::Retrying,
        InstanceState::Succeeded,
        InstanceState::Failed,
        InstanceState::Cancelled,
        InstanceState::Skipped,
    ];

    /// The name in JSON and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Waiting => "waiting",
            InstanceState::Queued => "queued",
            InstanceState::Running => "running",
            InstanceState::Retrying => "retrying",
            InstanceState::Succeeded => "succeeded",
            InstanceState::Failed => "failed",
            InstanceState::Cancelled => "cancelled",
            InstanceState::Paused => "paused",
            InstanceState::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            InstanceState::Succeeded
                | InstanceState::Failed
                | InstanceState::Cancelled
                | InstanceState::Skipped
        )
    }
}

/// The lifecycle of one attempt of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptState {
    /// Kept for runs recorded when the edge created child runs before queueing; such an
    /// attempt is queued now like any other.
    Creating,
    /// Waiting in the cluster's work queue.
    Queued,
    /// Leased by an agent.
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl AttemptState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AttemptState::Succeeded | AttemptState::Failed | AttemptState::Cancelled
        )
    }

    pub fn mlflow_status(self) -> &'static str {
        match self {
            AttemptState::Creating | AttemptState::Queued => "SCHEDULED",
            AttemptState::Running => "RUNNING",
            AttemptState::Succeeded => "FINISHED",
            AttemptState::Failed => "FAILED",
            AttemptState::Cancelled => "KILLED",
        }
    }
}

/// Where a run or attempt is recorded in MLflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MlflowRef {
    pub experiment_id: String,
    pub run_id: String,
}

/// One try at running an instance; each has its own MLflow child run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    pub state: AttemptState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
    /// The work item is in the cluster's queue (set once the queue acknowledged it).
    #[serde(default)]
    pub enqueued: bool,
    /// The queue acknowledged that a cancelled attempt was withdrawn.
    #[serde(default)]
    pub withdrawn: bool,
    /// The MLflow child run carries the attempt's final status.
    #[serde(default)]
    pub mlflow_closed: bool,
    /// An agent leased the attempt at some time, so it may have created an MLflow run.
    #[serde(default)]
    pub leased: bool,
    /// Its agent reported how it ended, so no process of its step is left to reopen its MLflow
    /// run. An attempt that lapsed or was cancelled may have a step still logging to MLflow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reported: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines of the step's log, as of its latest heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// What its step runner learned: metrics, usage, cache key and hit.
    #[serde(default, skip_serializing_if = "StepFacts::is_empty")]
    pub facts: StepFacts,
}

/// One parallel copy of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub index: u32,
    pub state: InstanceState,
    /// Input name → the files of this instance's partition (planned when the node became
    /// ready); broadcast inputs are the node's `shared_inputs`.
    #[serde(default)]
    pub inputs: BTreeMap<String, Vec<ArtifactFile>>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// What the successful attempt produced.
    #[serde(default)]
    pub outputs: Vec<ArtifactFile>,
    /// When the run must look at it again: a retry is due, or a paused approval times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    /// Attempts made before the latest repair; the retry budget counts only the ones after.
    #[serde(default)]
    pub repair_base: u32,
}

impl Instance {
    pub fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub fn current_mut(&mut self) -> Option<&mut Attempt> {
        self.attempts.last_mut()
    }
}

/// A node of the run: its instances (empty until the node is ready) and why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRun {
    pub id: String,
    pub instances: Vec<Instance>,
    /// Upstream files that a `by-key` regex matched to no key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Inputs every instance receives (from its `broadcast` edges), kept once for the node: a
    /// 10,000-wide node fed 100 files would otherwise hold a million file references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_inputs: BTreeMap<String, Vec<ArtifactFile>>,
    /// How often the node's inputs were planned (once, plus once per repair). Planning changes
    /// many instances at once; the count tells the run's storage to write them all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub plans: u32,
    /// What each of its `select` edges chose, with every candidate's metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selections: Vec<Selection>,
    /// Why the node did not run (its condition, or its trigger rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// An approval node's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// What a register node registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<Registered>,
    /// The parent MLflow run carries `skipped`, `decision` and `registered` as tags.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noted: bool,
}

/// Who decided an approval, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub approved: bool,
    /// The person, or `timeout` when nobody decided in time.
    pub by: String,
    pub at: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A model version a register node made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub model: String,
    pub version: String,
    /// The MLflow run the model came from.
    pub source_run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// What a `select` edge chose from its upstream node's instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// The upstream node, and the input of this node it feeds.
    pub from: String,
    pub input: String,
    pub metric: String,
    pub mode: crate::template::SelectMode,
    /// The chosen instances, best first.
    pub chosen: Vec<u32>,
    /// Every instance that succeeded, with its MLflow run and its value of the metric (none:
    /// it did not log it, so it was not chosen).
    pub candidates: Vec<Candidate>,
    /// The parent MLflow run records the choice.
    #[serde(default)]
    pub recorded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub instance: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

impl Selection {
    /// Candidates that did not log the metric.
    pub fn without_metric(&self) -> Vec<u32> {
        self.candidates
            .iter()
            .filter(|c| c.value.is_none())
            .map(|c| c.instance)
            .collect()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one walk over a node's instances finds: what the run asks of every node after each
/// batch of events, answered together (a 100,000-wide node was walked five times a batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Instances not ended yet.
    pub going: usize,
    /// Of those, instances waiting to be planned.
    pub waiting: usize,
    pub succeeded: usize,
    /// The first failed instance's position.
    pub first_failed: Option<usize>,
}

impl NodeRun {
    /// A node not yet planned.
    pub fn new(id: impl Into<String>) -> NodeRun {
        NodeRun {
            id: id.into(),
            instances: Vec::new(),
            unmatched_inputs: Vec::new(),
            error: None,
            shared_inputs: BTreeMap::new(),
            plans: 0,
            selections: Vec::new(),
            skipped: None,
            decision: None,
            registered: None,
            noted: false,
        }
    }

    /// How the node ended, once every instance has (`None` while it has not, or was never
    /// planned).
    pub fn ended(&self) -> Option<Ended> {
        self.ended_by(&self.tally())
    }

    /// [`NodeRun::ended`], from the node's tally.
    pub fn ended_by(&self, t: &Tally) -> Option<Ended> {
        if self.instances.is_empty() || t.going > 0 {
            return None;
        }
        Some(if self.skipped.is_some() {
            Ended::Skipped
        } else if t.first_failed.is_some() {
            Ended::Failed
        } else if t.succeeded == self.instances.len() {
            Ended::Succeeded
        } else {
            Ended::Cancelled
        })
    }

    /// One walk over the instances.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for (k, inst) in self.instances.iter().enumerate() {
            match inst.state {
                InstanceState::Succeeded => t.succeeded += 1,
                InstanceState::Failed => {
                    t.first_failed.get_or_insert(k);
                }
                s if !s.is_terminal() => {
                    t.going += 1;
                    t.waiting += usize::from(s == InstanceState::Waiting);
                }
                _ => {}
            }
        }
        t
    }

    /// Forgets how it ended, for a repair that runs it again from its planning.
    pub fn reset(&mut self) {
        *self = NodeRun {
            plans: self.plans,
            ..NodeRun::new(self.id.clone())
        };
    }

    /// The key of this planning's shared inputs in the queue (`StepSpec::shared_inputs`); a
    /// repair plans again under a new key.
    pub fn shared_key(&self, run_id: &str) -> Option<String> {
        (!self.shared_inputs.is_empty()).then(|| format!("{run_id}/{}/{}", self.id, self.plans))
    }

    /// How many input files `inst` receives, and their bytes.
    pub fn input_size(&self, inst: &Instance) -> (usize, u64) {
        self.shared_inputs
            .values()
            .chain(inst.inputs.values())
            .fold((0, 0), |(n, b), files| {
                (
                    n + files.len(),
                    b + files.iter().map(|f| f.size).sum::<u64>(),
                )
            })
    }

    pub fn all(&self, state: InstanceState) -> bool {
        self.instances.iter().all(|i| i.state == state)
    }

    /// The one state the run view shows for the node: a failure first (the run will fail),
    /// then activity, and succeeded only when every instance has.
    pub fn shown_state(&self) -> InstanceState {
        shown_state(self.instances.len(), |s| {
            self.instances.iter().filter(|i| i.state == s).count()
        })
    }

    /// The attempt that succeeded for each instance, by index.
    pub fn successes(&self) -> impl Iterator<Item = (&Instance, &Attempt)> {
        self.instances.iter().filter_map(|i| {
            (i.state == InstanceState::Succeeded)
                .then(|| i.current())
                .flatten()
                .map(|a| (i, a))
        })
    }

    /// Every instance's outputs as the downstream node sees them: one instance's at their
    /// paths, several instances' under `<instance>/` (so fan-in never collides).
    pub fn outputs_as_inputs(&self) -> Vec<ArtifactFile> {
        let count = self.instances.len() as u32;
        self.instances
            .iter()
            .flat_map(|inst| {
                inst.outputs.iter().map(move |f| ArtifactFile {
                    path: crate::partition::input_path(count, inst.index, &f.path),
                    ..f.clone()
                })
            })
            .collect()
    }

    /// How many instances succeeded.
    pub fn succeeded(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.state == InstanceState::Succeeded)
            .count()
    }
}

/// How a node ended: what trigger rules and conditions (`upstream.<node>.state`) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::Failed => "failed",
            Ended::Skipped => "skipped",
            Ended::Cancelled => "cancelled",
        }
    }
}

/// The one state a node shows for its `total` instances, `count(state)` of them in each: the
/// most urgent one any instance is in, succeeded only when all are.
pub fn shown_state(total: usize, count: impl Fn(InstanceState) -> usize) -> InstanceState {
    use InstanceState::*;
    if total == 0 {
        return Waiting;
    }
    [Failed, Paused, Running, Retrying, Queued, Cancelled]
        .into_iter()
        .find(|s| count(*s) > 0)
        .unwrap_or(if count(Succeeded) == total {
            Succeeded
        } else if count(Skipped) == total {
            Skipped
        } else {
            Waiting
        })
}

/// Everything recorded about one run. It keeps the exact template version it started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub id: String,
    pub template: Template,
    pub template_version: u32,
    /// Parameter values after defaults and overrides.
    pub parameters: BTreeMap<String, String>,
    /// Cluster for nodes that name none.
    pub cluster: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRef>,
    /// The status last written to the MLflow parent run (it is created RUNNING).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_status: Option<RunStatus>,
    /// Set while MLflow cannot be reached (or answers with a retryable error): the run waits,
    /// and shows why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_wait: Option<MlflowWait>,
    /// Repairs (retry failed, rerun from a node) applied to this run, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<RepairRecord>,
    /// Git sources (`ProjectSpec::source_key`) → the commit this run runs them at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pins: BTreeMap<String, String>,
    /// SHA-256 of the start request, so a reused `Idempotency-Key` with another request is
    /// told apart from a retry of the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The MLflow experiment the caller chose (`mlflow run --experiment-name`); the
    /// template's `concurrent/<template>` experiment when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Started ignoring cached results: every step runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_cache: bool,
    /// The webhook deliveries made or being tried (template `notifications`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Delivery>,
    /// In template order.
    pub nodes: Vec<NodeRun>,
}

/// MLflow failed with a retryable error (unreachable, 5xx, 429); MLflow calls resume at
/// `retry_at`, with capped exponential backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MlflowWait {
    /// "waiting for MLflow: <reason>", for a person.
    pub message: String,
    pub since: u64,
    /// Failures in a row.
    pub failures: u32,
    pub retry_at: u64,
}

/// Delay before MLflow calls are tried again after `failures` failures in a row: 1 s, doubling,
/// at most a minute.
pub fn mlflow_backoff_ms(failures: u32) -> u64 {
    (1000u64 << failures.saturating_sub(1).min(6)).min(60_000)
}

/// A repair of an ended run: which nodes run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Repair {
    /// Failed and cancelled instances run again (and what waits on them); successes are kept.
    RetryFailed,
    /// The node and everything downstream of it run again.
    RerunFrom { node: String },
}

/// When a repair happened and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairRecord {
    #[serde(flatten)]
    pub repair: Repair,
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl RunState {
    /// A copy without any instances or shared inputs (cheap for big runs): what the run object
    /// stores as the run's header row, and what the overview shows.
    pub fn clone_header(&self) -> RunState {
        RunState {
            id: self.id.clone(),
            template: self.template.clone(),
            template_version: self.template_version,
            parameters: self.parameters.clone(),
            cluster: self.cluster.clone(),
            status: self.status,
            started_by: self.started_by.clone(),
            created_at: self.created_at,
            ended_at: self.ended_at,
            error: self.error.clone(),
            mlflow: self.mlflow.clone(),
            mlflow_status: self.mlflow_status,
            mlflow_wait: self.mlflow_wait.clone(),
            repairs: self.repairs.clone(),
            request: self.request.clone(),
            experiment_id: self.experiment_id.clone(),
            ignore_cache: self.ignore_cache,
            notifications: self.notifications.clone(),
            pins: self.pins.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeRun {
                    id: n.id.clone(),
                    instances: Vec::new(),
                    unmatched_inputs: n.unmatched_inputs.clone(),
                    error: n.error.clone(),
                    shared_inputs: BTreeMap::new(),
                    plans: n.plans,
                    selections: n.selections.clone(),
                    skipped: n.skipped.clone(),
                    decision: n.decision.clone(),
                    registered: n.registered.clone(),
                    noted: n.noted,
                })
                .collect(),
        }
    }

    /// The shared inputs `items` refer to, by key (what an enqueue sends along with them).
    pub fn shared_for<'a>(
        &self,
        items: impl IntoIterator<Item = &'a crate::wire::WorkItem>,
    ) -> BTreeMap<String, BTreeMap<String, Vec<ArtifactFile>>> {
        let mut shared = BTreeMap::new();
        for item in items {
            let Some(key) = &item.step.shared_inputs else {
                continue;
            };
            if shared.contains_key(key) {
                continue;
            }
            if let Some(node) = self
                .node(&item.node_id)
                .filter(|n| n.shared_key(&self.id).as_ref() == Some(key))
            {
                shared.insert(key.clone(), node.shared_inputs.clone());
            }
        }
        shared
    }

    /// Whether the MLflow parent run shows the run's current status.
    pub fn mlflow_in_sync(&self) -> bool {
        let wanted = if self.status.is_terminal() {
            self.status
        } else {
            RunStatus::Running
        };
        self.mlflow.is_none() || self.mlflow_status == Some(wanted)
    }

    pub fn node(&self, id: &str) -> Option<&NodeRun> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_mut(&mut self, id: &str) -> Option<&mut NodeRun> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// The cluster a node runs on.
    pub fn cluster_of(&self, node_id: &str) -> &str {
        self.template
            .node(node_id)
            .and_then(|n| n.cluster.as_deref())
            .unwrap_or(&self.cluster)
    }
}

impl RunState {
    /// The run as listed.
    pub fn summary(&self) -> crate::wire::RunSummary {
        crate::wire::RunSummary {
            id: self.id.clone(),
            template: self.template.name.clone(),
            template_version: self.template_version,
            status: self.status,
            created_at: self.created_at,
            ended_at: self.ended_at,
            started_by: self.started_by.clone(),
            mlflow: self.mlflow.clone(),
            error: self.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(states: &[InstanceState]) -> NodeRun {
        let instances = states
            .iter()
            .enumerate()
            .map(|(i, s)| Instance {
                index: i as u32,
                state: *s,
                inputs: BTreeMap::new(),
                attempts: vec![],
                outputs: vec![],
                retry_at: None,
                repair_base: 0,
            })
            .collect();
        NodeRun {
            instances,
            ..NodeRun::new("n")
        }
    }

    proptest::proptest! {
        /// A node's tally answers what walks over its instances answered one by one.
        #[test]
        fn a_tally_answers_as_the_walks_did(
            picks in proptest::collection::vec(0..InstanceState::ALL.len(), 0..40),
            skipped in proptest::bool::ANY,
        ) {
            let states: Vec<InstanceState> = picks.iter().map(|&k| InstanceState::ALL[k]).collect();
            let mut n = node(&states);
            if skipped {
                n.skipped = Some("its condition was false".into());
            }
            let t = n.tally();
            let is = |s: InstanceState| states.iter().filter(|x| **x == s).count();
            proptest::prop_assert_eq!(t.going, states.iter().filter(|s| !s.is_terminal()).count());
            proptest::prop_assert_eq!(t.waiting, is(InstanceState::Waiting));
            proptest::prop_assert_eq!(t.succeeded, is(InstanceState::Succeeded));
            proptest::prop_assert_eq!(t.first_failed, states.iter().position(|s| *s == InstanceState::Failed));
            let walked = if states.is_empty() || states.iter().any(|s| !s.is_terminal()) {
                None
            } else if skipped {
                Some(Ended::Skipped)
            } else if states.contains(&InstanceState::Failed) {
                Some(Ended::Failed)
            } else if states.iter().all(|s| *s == InstanceState::Succeeded) {
                Some(Ended::Succeeded)
            } else {
                Some(Ended::Cancelled)
            };
            proptest::prop_assert_eq!(n.ended(), walked);
        }
    }

    #[test]
    fn state_names_are_their_json_names() {
        for s in RunStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in InstanceState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn a_node_shows_failure_first_then_activity_and_success_only_when_all_succeeded() {
        use InstanceState::*;
        assert_eq!(node(&[Succeeded, Failed, Running]).shown_state(), Failed);
        assert_eq!(node(&[Succeeded, Running]).shown_state(), Running);
        assert_eq!(node(&[Succeeded, Retrying]).shown_state(), Retrying);
        assert_eq!(node(&[Succeeded, Waiting]).shown_state(), Waiting);
        assert_eq!(node(&[Succeeded, Succeeded]).shown_state(), Succeeded);
        assert_eq!(node(&[]).shown_state(), Waiting);
        assert_eq!(node(&[Succeeded, Succeeded, Queued]).succeeded(), 2);
    }
}

/// Tries of one notification's delivery before it is given up.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 8;

/// One notification owed to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Which of the template's notifications.
    pub to: u32,
    /// What it tells: `succeeded`, `failed` (with the repair it ended after, `#1`…), or
    /// `waiting:<node>`.
    pub event: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
}

impl Delivery {
    /// Still to be tried: not delivered, not given up.
    pub fn open(&self) -> bool {
        self.delivered_at.is_none() && self.attempts < MAX_DELIVERY_ATTEMPTS
    }
}
