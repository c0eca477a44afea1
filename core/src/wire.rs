//! The wire types: the edge API's JSON bodies and the agent protocol, shared by every side.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::partition::ArtifactFile;
use crate::run::{MlflowRef, RunStatus};
use crate::template::{NodeKind, Resources, Template};
use crate::validate::Problem;

/// The JSON body of every error response: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `invalid_template`, `not_found`, `conflict`, …
    pub code: String,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// Validation problems, when the error is about a template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Problem>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>, details: Vec<Problem>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                details,
            },
        }
    }
}

// ---------------------------------------------------------------- templates

/// Answer to saving a template version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedTemplate {
    pub name: String,
    pub version: u32,
    /// Problems found; a template with problems is saved as a draft and cannot run.
    pub problems: Vec<Problem>,
}

/// A template in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSummary {
    pub name: String,
    pub description: String,
    pub latest_version: u32,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// Whether the latest version can run.
    pub valid: bool,
}

/// A version in a template's versions list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    pub version: u32,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Whether this version can run.
    pub valid: bool,
}

/// One saved version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateVersion {
    pub name: String,
    pub version: u32,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub problems: Vec<Problem>,
    pub template: Template,
}

// ---------------------------------------------------------------- runs

/// Request to start a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRun {
    pub template: String,
    /// A saved version; the latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Overrides of the template's parameter defaults.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Cluster for nodes that name none; `local` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The MLflow experiment of the run's parent and child runs (as `mlflow run
    /// --experiment-id`); the template's `concurrent/<template>` experiment when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Run every step, reusing no cached outputs (new successes are still cached).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_cache: bool,
}

/// A person's decision on a paused approval node (`POST /runs/<id>/decide`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecideRequest {
    pub node: String,
    pub approve: bool,
    /// Why, for the record (the parent run's tags).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Longest note a decision may carry.
pub const MAX_DECISION_NOTE: usize = 2_000;

/// Which of a node's instances `GET /runs/<id>/instances` answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstancesQuery {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::run::InstanceState>,
    #[serde(default)]
    pub offset: usize,
    /// At most [`crate::run::MAX_PAGE`]; 50 when absent.
    #[serde(default = "fifty")]
    pub limit: usize,
}

fn fifty() -> usize {
    50
}

/// A run in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub id: String,
    pub template: String,
    pub template_version: u32,
    pub status: RunStatus,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------- agent protocol

/// What one attempt of one instance must do; everything the step runner needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkItem {
    /// `names::work_item_id(run, node, instance, attempt)`.
    pub id: String,
    pub run_id: String,
    pub node_id: String,
    pub instance: u32,
    pub attempt: u32,
    pub cluster: String,
    pub step: StepSpec,
}

impl WorkItem {
    /// The attempt this item is.
    pub fn key(&self) -> crate::run::AttemptKey {
        crate::run::AttemptKey::new(self.node_id.clone(), self.instance, self.attempt)
    }

    /// Puts the inputs the item shares with its node's other instances (`step.shared_inputs`)
    /// into its own, as the queue does before handing it to an agent.
    pub fn merge_shared(&mut self, shared: &BTreeMap<String, Vec<ArtifactFile>>) {
        self.step.shared_inputs = None;
        for (input, files) in shared {
            self.step
                .inputs
                .entry(input.clone())
                .or_insert_with(|| files.clone());
        }
    }
}

/// What a run hands a cluster's queue: work items, and the inputs their nodes share, once
/// (10,000 instances fed the same 100 files are 10,000 small items and one list of files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueRequest {
    pub items: Vec<WorkItem>,
    /// `step.shared_inputs` key → input name → files.
    #[serde(default)]
    pub shared: BTreeMap<String, BTreeMap<String, Vec<ArtifactFile>>>,
}

/// What the queue reads of a stored work item to hand it out: who it is, and whether it
/// shares its node's inputs. The rest of it travels on as the JSON it was stored as.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkItemHead {
    pub id: String,
    pub run_id: String,
    pub node_id: String,
    pub instance: u32,
    pub attempt: u32,
    pub cluster: String,
    pub step: StepHead,
}

/// What [`WorkItemHead`] reads of the step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepHead {
    #[serde(default)]
    pub shared_inputs: Option<String>,
}

impl WorkItemHead {
    /// The attempt this item is.
    pub fn key(&self) -> crate::run::AttemptKey {
        crate::run::AttemptKey::new(self.node_id.clone(), self.instance, self.attempt)
    }
}

/// The step of a work item, with template parameters already substituted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    pub template: String,
    #[serde(flatten)]
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The node's environment variables, with parameters substituted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables whose values the executor takes from secrets (never carried here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, crate::template::SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_manager: Option<crate::template::EnvManager>,
    #[serde(
        default,
        skip_serializing_if = "crate::kubernetes::KubernetesSpec::is_empty"
    )]
    pub kubernetes: crate::kubernetes::KubernetesSpec,
    pub partition_index: u32,
    pub partition_count: u32,
    /// Input name → files to download into `$CONCURRENT_INPUT_DIR/<input>/<path>`.
    #[serde(default)]
    pub inputs: BTreeMap<String, Vec<ArtifactFile>>,
    /// Inside the edge only: the key of the inputs this step shares with its node's other
    /// instances, kept once by the queue and merged into `inputs` when the item is leased (an
    /// agent never sees it set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_inputs: Option<String>,
    /// The attempt's MLflow run: `run_id` is empty until the agent that leased the attempt
    /// created it from [`StepSpec::child_run`] (the edge creates no runs ahead of the work:
    /// a 10,000-wide node is queued at once, and each run is made where its step starts).
    pub mlflow: MlflowRef,
    /// How to create the attempt's MLflow run, while `mlflow.run_id` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_run: Option<ChildRun>,
    /// The attempt's run's artifact root as MLflow answered the agent's create, so the step
    /// does not ask MLflow again where its outputs go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uri: Option<String>,
    /// Artifact roots of input runs (run id → root) that the agent knows because it made
    /// those runs, so the step does not ask MLflow where its inputs are. Set by the agent for
    /// its step runner; the edge never sets it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_roots: BTreeMap<String, String>,
    /// The run's MLflow parent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// For git projects: the commit the run pinned its source to, once one was (the first
    /// attempt to start pins it; see [`PinRequest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Step caching, when the node caches: look for an earlier result (`read`), and record
    /// this one when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
}

/// How a step uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Reuse an earlier result (false when the run was started ignoring the cache).
    pub read: bool,
    /// Entries older than this are not reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

/// An attempt's MLflow run as the agent creates it: in the run's experiment, tagged
/// `concurrent.key = key` (the work item id) so that a create whose answer was lost, or one
/// made by an agent that died before reporting it, is found instead of made twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildRun {
    pub key: String,
    pub run_name: String,
    pub tags: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    /// The item was leased before (its agent died unconfirmed): look the run up first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_exists: bool,
}

/// A work item leased to one agent until `expires_at`. `I` is how the item travels: an agent
/// reads a [`WorkItem`]; the edge hands on the JSON the queue stored (`Box<RawValue>`), so a
/// lease costs it no decoding and encoding of every item twice (the queue's answer, then the
/// Worker's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease<I = WorkItem> {
    pub item: I,
    /// Fencing token: strictly increasing per cluster queue. Heartbeats and completions must
    /// carry it; an older token is refused with 409.
    pub token: u64,
    pub expires_at: u64,
    /// A credential bound to this one lease: it may heartbeat and complete this item only, so
    /// a step can report for itself without ever seeing the agent's token.
    pub step_token: String,
}

/// Ask for up to `max` items; waits up to `wait_ms` when none are ready (long-poll).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRequest {
    pub agent: String,
    pub max: u32,
    #[serde(default)]
    pub wait_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseResponse<I = WorkItem> {
    pub leases: Vec<Lease<I>>,
    /// How long a lease lives without a heartbeat.
    pub lease_ttl_ms: u64,
}

/// A lease as the agent refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRef {
    pub item_id: String,
    pub token: u64,
}

/// Extend every listed lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub agent: String,
    pub leases: Vec<LeaseRef>,
    /// Item id → the last lines of the step's log, shown live in the run view.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tails: BTreeMap<String, String>,
    /// Item id → the MLflow run the agent created for it, until a heartbeat delivered it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<String, String>,
}

/// Most bytes of one step's log tail in a heartbeat (and in the run's record).
pub const MAX_TAIL_BYTES: usize = 8 * 1024;
/// Most bytes of all log tails of one heartbeat; each tail gets an equal share of it, so a
/// heartbeat stays under the edge's body limit whatever the steps print, however many there are.
pub const MAX_HEARTBEAT_TAIL_BYTES: usize = 256 * 1024;
/// Most bytes of a failure message.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;
/// Most bytes of the output list of one completion (its files as JSON): the run's record of the
/// instance and the next node's work items carry it.
pub const MAX_OUTPUT_LIST_BYTES: usize = 768 * 1024;

/// Trims log tails to their share of a heartbeat, keeping the end of each.
pub fn fit_tails(tails: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let share = (MAX_HEARTBEAT_TAIL_BYTES / tails.len().max(1)).min(MAX_TAIL_BYTES);
    tails
        .into_iter()
        .map(|(id, t)| {
            let kept = crate::logtail::keep_end(&t, share).to_string();
            (id, kept)
        })
        .collect()
}

/// What became of a lease at a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseStatus {
    /// Extended; keep going.
    Active,
    /// The run was cancelled: kill the step and report nothing.
    Cancelled,
    /// The lease expired or was replaced: stop the step, its result would be refused.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    pub leases: BTreeMap<String, LeaseStatus>,
    pub expires_at: u64,
}

/// A file the step produced, relative to its output directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    pub path: String,
    pub size: u64,
    /// Set when the file lives in another run (an `input` node pointing at existing artifacts);
    /// otherwise it is `outputs/<path>` in the attempt's own run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_path: Option<String>,
    /// The file's SHA-256 (hex), taken as it was uploaded: a downstream step's cache key is
    /// made of its inputs' digests without downloading them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// How an attempt ended, as reported by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Succeeded {
        outputs: Vec<OutputFile>,
        #[serde(default, skip_serializing_if = "StepFacts::is_empty")]
        facts: StepFacts,
    },
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "StepFacts::is_empty")]
        facts: StepFacts,
    },
}

/// Most metrics an attempt's facts carry (the rest stay in MLflow).
pub const MAX_FACT_METRICS: usize = 100;

/// What the step runner learned of an attempt besides its outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepFacts {
    /// The latest value of each metric of the attempt's MLflow run (for best-of selection).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// What the attempt used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The step's cache key (when its node caches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// The attempt reused an earlier attempt's outputs (a cache hit): nothing ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<CachedFrom>,
    /// The model the attempt logged (`models:/m-…`), when it logged one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_uri: Option<String>,
}

impl StepFacts {
    pub fn is_empty(&self) -> bool {
        *self == StepFacts::default()
    }
}

/// What an attempt used, measured where it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub wall_seconds: f64,
    /// User and system CPU time of the step's processes.
    pub cpu_seconds: f64,
    /// The largest resident set of one of its processes.
    pub peak_memory_bytes: u64,
    /// GPUs the attempt held × its wall time.
    pub gpu_seconds: f64,
}

impl Usage {
    /// Two usages together: times add up, peak memory is the larger.
    pub fn combined(self, other: Usage) -> Usage {
        Usage {
            wall_seconds: self.wall_seconds + other.wall_seconds,
            cpu_seconds: self.cpu_seconds + other.cpu_seconds,
            peak_memory_bytes: self.peak_memory_bytes.max(other.peak_memory_bytes),
            gpu_seconds: self.gpu_seconds + other.gpu_seconds,
        }
    }

    /// The MLflow metrics that record it on a run: `concurrent.<what>`.
    pub fn metrics(&self) -> [(&'static str, f64); 4] {
        [
            ("concurrent.wall_seconds", self.wall_seconds),
            ("concurrent.cpu_seconds", self.cpu_seconds),
            (
                "concurrent.peak_memory_bytes",
                self.peak_memory_bytes as f64,
            ),
            ("concurrent.gpu_seconds", self.gpu_seconds),
        ]
    }
}

/// The attempt whose outputs a cache hit reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedFrom {
    pub mlflow_run_id: String,
    /// The DAG run it belonged to.
    pub run_id: String,
}

impl Outcome {
    /// A failure with its message cut to [`MAX_ERROR_BYTES`].
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome::Failed {
            error: crate::logtail::keep_start(&error.into(), MAX_ERROR_BYTES),
            facts: StepFacts::default(),
        }
    }

    /// The outcome as it may be sent: a failure message cut to size, at most
    /// [`MAX_FACT_METRICS`] metrics, and an output list too large for the run's records turned
    /// into a failure that says what to do.
    pub fn bounded(self) -> Outcome {
        match self {
            Outcome::Failed { error, facts } => Outcome::Failed {
                error: crate::logtail::keep_start(&error, MAX_ERROR_BYTES),
                facts: facts.bounded(),
            },
            Outcome::Succeeded { outputs, facts } => {
                let bytes: usize = outputs.iter().map(|o| o.path.len() * 2 + 96).sum();
                if bytes > MAX_OUTPUT_LIST_BYTES {
                    Outcome::Failed {
                        error: format!(
                            "the step wrote {} output files ({} KiB of file list; at most {} KiB fit in the run's records); write fewer, larger files (e.g. archives or Parquet files)",
                            outputs.len(),
                            bytes / 1024,
                            MAX_OUTPUT_LIST_BYTES / 1024
                        ),
                        facts: facts.bounded(),
                    }
                } else {
                    Outcome::Succeeded {
                        outputs,
                        facts: facts.bounded(),
                    }
                }
            }
        }
    }

    /// What the step runner learned of the attempt.
    pub fn facts(&self) -> &StepFacts {
        match self {
            Outcome::Succeeded { facts, .. } | Outcome::Failed { facts, .. } => facts,
        }
    }

    /// A success with these outputs and nothing else learned.
    pub fn succeeded(outputs: Vec<OutputFile>) -> Outcome {
        Outcome::Succeeded {
            outputs,
            facts: StepFacts::default(),
        }
    }
}

impl StepFacts {
    /// At most [`MAX_FACT_METRICS`] metrics, keys of at most 250 bytes (MLflow's own limit).
    fn bounded(mut self) -> StepFacts {
        self.metrics = std::mem::take(&mut self.metrics)
            .into_iter()
            .filter(|(k, v)| k.len() <= 250 && v.is_finite())
            .take(MAX_FACT_METRICS)
            .collect();
        self
    }
}

/// Report the end of a leased attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteRequest {
    pub item_id: String,
    pub token: u64,
    pub outcome: Outcome,
    /// The attempt's MLflow run (the run may not have heard of it yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
    /// The agent made no MLflow run for the attempt and no earlier agent may have (MLflow
    /// refused the create of a first lease): the run has nothing to look up or close.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_mlflow_run: bool,
}

/// Most completions in one [`CompletionsRequest`].
pub const MAX_COMPLETIONS: usize = 100;

/// Report the end of several leased attempts at once (one round trip for a burst of finished
/// steps; the queue tells each run once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompletionsRequest {
    pub completions: Vec<CompleteRequest>,
}

/// One answer per completion, in order: accepted, or why not (what a single `/complete`
/// answers with 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionsResponse {
    pub results: Vec<CompletionResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionResult {
    pub item_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The item's run could not be told (its object was unreachable): nothing was taken;
    /// report it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// The artifact directory, inside each attempt's MLflow run, that holds the step's outputs.
pub const OUTPUTS_DIR: &str = "outputs";

/// A step reports the commit it resolved for its git source; the run keeps the first one it
/// hears of, so every instance, retry and rerun runs that commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinRequest {
    pub item_id: String,
    pub token: u64,
    /// `ProjectSpec::source_key`: the repository and the ref.
    pub source: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinResponse {
    /// The commit to run (the one pinned first).
    pub commit: String,
    /// Whether this request's commit became the pin.
    pub first: bool,
}

// ---------------------------------------------------------------- tokens

/// Request to create an API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    /// Unique name: letters, digits, '-' and '_'.
    pub name: String,
    pub role: crate::access::Role,
    /// Required for (and only for) agent tokens: the one cluster they serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// The caller, as `GET /me` tells them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub name: String,
    pub role: crate::access::Role,
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub name: String,
    pub role: crate::access::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub created_at: u64,
    /// The secret, present only in the answer to its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

// ---------------------------------------------------------------- message sizes

/// The most bytes one message between the edge's objects, or one lease answer, should carry;
/// bigger batches are split (the Worker accepts request bodies of 1 MiB from outside).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// Splits `items` into batches whose JSON array stays within `max_bytes`, keeping their order.
/// An item larger than `max_bytes` travels alone.
pub fn batches_by_size<T: Serialize>(items: Vec<T>, max_bytes: usize) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let (mut current, mut size) = (Vec::new(), 2usize);
    for item in items {
        let n = serde_json::to_string(&item).map_or(0, |s| s.len()) + 1;
        if !current.is_empty() && size + n > max_bytes {
            batches.push(std::mem::take(&mut current));
            size = 2;
        }
        size += n;
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The designer asks a cluster's agent what a project declares (`POST /clusters/:cluster/inspect`):
/// the agent reads it where steps would (git with the cluster's credentials, or its project root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InspectRequest {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// How long the edge waits for an agent to answer an inspection.
pub const INSPECT_TIMEOUT_MS: u64 = 20_000;

/// An inspection handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub id: String,
    pub request: InspectRequest,
}

/// An agent long-polls for inspections (`POST /agents/:cluster/inspections`), apart from its
/// leases, so a busy agent still answers the designer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InspectionsRequest {
    pub agent: String,
    #[serde(default)]
    pub wait_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectionsResponse {
    pub inspections: Vec<Inspection>,
}

/// What the agent found (`POST /agents/:cluster/inspections/answer`): the project, or why it
/// could not be read (no such repository or ref, no access, outside the agent's roots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InspectAnswer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<crate::project::ProjectInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tails_share_a_heartbeat_and_keep_their_ends() {
        let tails: BTreeMap<String, String> = (0..100)
            .map(|i| (format!("i{i}"), "x".repeat(10_000) + "END"))
            .collect();
        let fitted = fit_tails(tails);
        let total: usize = fitted.values().map(String::len).sum();
        assert!(total <= MAX_HEARTBEAT_TAIL_BYTES, "{total}");
        assert!(fitted
            .values()
            .all(|t| t.ends_with("END") && t.len() <= MAX_TAIL_BYTES));
    }

    #[test]
    fn outcomes_are_bounded_before_they_are_sent() {
        let huge = Outcome::Failed {
            error: "e".repeat(1 << 20),
            facts: Default::default(),
        }
        .bounded();
        assert!(
            matches!(&huge, Outcome::Failed { error, .. } if error.len() < MAX_ERROR_BYTES + 64)
        );
        let many = Outcome::Succeeded {
            outputs: (0..100_000)
                .map(|i| OutputFile {
                    path: format!("part-{i}.csv"),
                    size: 1,
                    run_id: None,
                    artifact_path: None,
                    sha256: None,
                })
                .collect(),
            facts: Default::default(),
        }
        .bounded();
        assert!(
            matches!(&many, Outcome::Failed { error, .. } if error.contains("100000 output files"))
        );
    }

    proptest! {
        #[test]
        fn batches_keep_every_item_in_order_and_stay_under_the_limit(
            items in proptest::collection::vec(".{0,300}", 0..60),
            max in 50usize..2000,
        ) {
            let batches = batches_by_size(items.clone(), max);
            let flat: Vec<String> = batches.iter().flatten().cloned().collect();
            prop_assert_eq!(flat, items);
            for b in &batches {
                prop_assert!(!b.is_empty());
                let len = serde_json::to_string(b).unwrap().len();
                prop_assert!(len <= max || b.len() == 1, "{} bytes in {} items", len, b.len());
            }
        }
    }
}
