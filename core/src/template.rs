//! The DAG template: what a user draws in the designer and saves as a version.
//!
//! The JSON form (camelCase, `apiVersion: concurrent/v1`) is the public contract of the API and
//! of exported templates; see `examples/pipeline/template.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::kubernetes::KubernetesSpec;
pub use crate::sweep::Sweep;

/// The only template schema version this build understands.
pub const API_VERSION: &str = "concurrent/v1";

/// A DAG of MLflow steps. Templates are saved as immutable versions; a run keeps a copy of the
/// exact version it started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Unique name; also the MLflow experiment name (`concurrent/<name>`) and a Kubernetes label.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Run-time parameters, referenced as `{{params.<name>}}` in node fields.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// Step caching for every node that says nothing of its own (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// Webhooks told when the run succeeds, fails, or waits for an approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
}

/// A webhook the run POSTs to (a JSON body with a Slack-compatible `text`). Its URL and signing
/// key may be edge secrets (named `NOTIFY_…`), so neither is in the template or the run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The URL, when it is no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The edge secret that holds the URL (a Slack webhook URL is a credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<String>,
    /// The edge secret the body is signed with: `X-Concurrent-Signature: v1,<base64 HMAC-SHA256
    /// of "<delivery id>.<timestamp>.<body>">`, as MLflow signs its webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    pub on: Vec<NotifyOn>,
}

/// What a notification is sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NotifyOn {
    Succeeded,
    Failed,
    /// An approval node waits for a person.
    Waiting,
}

/// Step caching: an attempt whose project, entry point, parameters, environment, image and
/// input contents match an earlier successful attempt's reuses its outputs and runs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cache {
    pub enabled: bool,
    /// Entries older than this are not reused (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
}

/// A template parameter. Without a default it must be given when a run starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// One step of the DAG, run as `instances` parallel copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Stable id: edges, run records, MLflow tags and pod names use it. A DNS label.
    pub id: String,
    /// Display name; the id is shown when empty.
    #[serde(default)]
    pub name: String,
    /// What the step runs.
    #[serde(flatten)]
    pub kind: NodeKind,
    /// Parallel copies; each gets its own partition of the inputs.
    #[serde(default = "one")]
    pub instances: u32,
    /// Target cluster (the agent's `--cluster`); the run's default cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Container image for the Kubernetes executor; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub retries: Retries,
    /// Wall-clock limit of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Environment variables of the step; values may use `{{params.<name>}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets: the template names where each one is
    /// kept, never the value (see [`SecretRef`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// How the step's Python environment is made, overriding what the MLproject (or the
    /// model) declares, like `mlflow run --env-manager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_manager: Option<EnvManager>,
    /// Node selector, tolerations, affinity, volumes and service account of the node's pods
    /// (the Kubernetes executor; the local executor ignores them).
    #[serde(default, skip_serializing_if = "KubernetesSpec::is_empty")]
    pub kubernetes: KubernetesSpec,
    /// Step caching of this node (the template's `cache` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// A condition (core's `expr`) over parameters, upstream states and metrics: when it is
    /// false the node is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How the node's upstream nodes must have ended for it to run.
    #[serde(default, skip_serializing_if = "TriggerRule::is_default")]
    pub trigger_rule: TriggerRule,
    /// Where the designer draws the node; absent in hand-written templates (auto-layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
}

fn one() -> u32 {
    1
}

impl Node {
    /// Partitions of the node's inputs: its `instances`.
    pub fn partitions(&self) -> u32 {
        self.instances.max(1)
    }

    /// The node's sweep, if it is a swept project.
    pub fn sweep(&self) -> Option<&Sweep> {
        match &self.kind {
            NodeKind::Project(p) => p.sweep.as_ref(),
            _ => None,
        }
    }

    /// Instances a run makes of the node: one per partition, times the sweep's points.
    pub fn instance_count(&self) -> u32 {
        let points = self
            .sweep()
            .map_or(1, |s| s.count().min(u32::MAX as usize) as u32);
        self.partitions().saturating_mul(points.max(1))
    }

    /// The name to show a person: the display name, or the id when there is none.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

/// How a node's upstream nodes must have ended for it to run; otherwise it is skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TriggerRule {
    /// Every upstream node succeeded (one skipped: this one is skipped too).
    #[default]
    AllSucceeded,
    /// Every upstream node is over, however it ended: a clean-up step.
    AllDone,
    /// Every upstream node is over and one of them failed: an alert step. It runs even after
    /// a failure has stopped the rest of the run.
    AnyFailed,
}

impl TriggerRule {
    pub fn is_default(&self) -> bool {
        *self == TriggerRule::AllSucceeded
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSucceeded => "allSucceeded",
            TriggerRule::AllDone => "allDone",
            TriggerRule::AnyFailed => "anyFailed",
        }
    }
}

/// What a node runs. Serialized as a `kind` field next to the node's other fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NodeKind {
    /// An MLflow Project from a git URI or a local path, run with `mlflow run`.
    Project(ProjectSpec),
    /// An MLflow model applied to every input file (`mlflow models predict`).
    Inference(InferenceSpec),
    /// Existing data: the artifacts of an MLflow run, or a path; runs no user code.
    Input(InputSpec),
    /// A person approves or rejects before the run goes on.
    Approval(ApprovalSpec),
    /// A model of the upstream node becomes a new version of a registered model.
    Register(RegisterSpec),
}

impl NodeKind {
    /// The `kind` tag as written in JSON.
    pub fn tag(&self) -> &'static str {
        match self {
            NodeKind::Project(_) => "project",
            NodeKind::Inference(_) => "inference",
            NodeKind::Input(_) => "input",
            NodeKind::Approval(_) => "approval",
            NodeKind::Register(_) => "register",
        }
    }

    /// Whether an agent runs it (approvals and registrations are the edge's).
    pub fn runs_on_agent(&self) -> bool {
        matches!(
            self,
            NodeKind::Project(_) | NodeKind::Inference(_) | NodeKind::Input(_)
        )
    }
}

/// An MLflow Project and how to call one of its entry points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// Git URI (`https://…`, `git@…`) or a local path (relative paths resolve against the
    /// agent's project root).
    pub uri: String,
    /// Git ref (branch, tag, commit); only for git URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Directory of the MLproject file inside the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default = "main_entry")]
    pub entry_point: String,
    /// `-P key=value` arguments; values may reference template parameters.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Runs the entry point once per point of a grid or of random samples (see [`Sweep`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
}

fn main_entry() -> String {
    "main".into()
}

impl ProjectSpec {
    /// Whether the project comes from git (otherwise it is a local path).
    pub fn is_git(&self) -> bool {
        is_git_uri(&self.uri)
    }

    /// What a run pins to one commit: the repository and the ref asked for.
    pub fn source_key(&self) -> String {
        format!("{}#{}", self.uri, self.version.as_deref().unwrap_or("HEAD"))
    }
}

/// Whether `uri` names a git repository (a scheme other than `file`, or `user@host:path`).
pub fn is_git_uri(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((scheme, _)) => !scheme.eq_ignore_ascii_case("file"),
        None => uri
            .split_once(':')
            .is_some_and(|(userhost, _)| userhost.contains('@') && !userhost.contains('/')),
    }
}

/// Batch inference with a logged MLflow model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceSpec {
    /// `models:/name/3`, `runs:/<id>/model`, `models:/m-…`.
    pub model_uri: String,
}

/// Data that already exists: exactly one of `run_id` or `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// Use the artifacts of this MLflow run (below `artifact_path`, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_path: Option<String>,
    /// A file or directory readable by the agent (local executor) or the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A pause for a person's decision, showing what it decides about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// What the approver is asked (shown in the run view).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The model version a registered model's alias points at, shown beside the candidate
    /// (the best instance of the upstream node, or its first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<AliasRef>,
    /// The metrics shown side by side (every metric the candidate logged when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// What happens when nobody decided within the node's `timeoutSeconds`.
    #[serde(default)]
    pub on_timeout: Verdict,
}

/// A registered model's alias: `models:/<model>@<alias>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasRef {
    pub model: String,
    pub alias: String,
}

/// An approval's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    #[default]
    Reject,
}

/// Registers the model of an upstream attempt (the one a `select` edge chose, or `instance`)
/// as a new version of `model`, and optionally points `alias` at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterSpec {
    /// The registered model's name; may use `{{params.<name>}}`.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The upstream instance, when the edge in does not select one (0 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// The model's path in the attempt's run artifacts; the model the attempt logged (MLflow
    /// 3's `models:/m-…`) when absent, else `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_path: Option<String>,
}

/// Where a secret value is kept: a key of a Kubernetes Secret in the agent's namespace (the
/// Kubernetes executor, through `secretKeyRef`), or the same name and key in the agent's secrets
/// file (the local executor: `{"<secret>": {"<key>": "<value>"}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub secret: String,
    pub key: String,
}

/// How a step's Python environment is made (MLflow's `--env-manager`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvManager {
    /// The agent's (or the image's) own Python, as it is.
    Local,
    /// A virtual environment made with `uv` from the project's `python_env.yaml`.
    Uv,
    /// A virtual environment from `python_env.yaml`, made with `python -m venv` and pip.
    Virtualenv,
    /// A conda environment from the project's `conda.yaml`.
    Conda,
}

impl EnvManager {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvManager::Local => "local",
            EnvManager::Uv => "uv",
            EnvManager::Virtualenv => "virtualenv",
            EnvManager::Conda => "conda",
        }
    }
}

/// Kubernetes-style resource requests for one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU quantity: `500m`, `2`, `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory quantity: `512Mi`, `4Gi`, `1G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Whole GPUs (`nvidia.com/gpu`).
    #[serde(default)]
    pub gpu: u32,
    /// GPU model (`NVIDIA-A100-SXM4-80GB`, `nvidia-tesla-t4`): a node selector on the label
    /// the agent names with `--gpu-type-label` (GPU feature discovery's
    /// `nvidia.com/gpu.product` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
}

/// How often a failed attempt is tried again, and how long to wait in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Extra attempts after the first one fails.
    #[serde(default)]
    pub limit: u32,
    /// Wait before the first retry; doubles with each further retry.
    #[serde(default = "default_backoff")]
    pub backoff_seconds: u32,
    /// Upper bound of the wait.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u32,
}

fn default_backoff() -> u32 {
    10
}
fn default_max_backoff() -> u32 {
    600
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            limit: 0,
            backoff_seconds: default_backoff(),
            max_backoff_seconds: default_max_backoff(),
        }
    }
}

impl Retries {
    /// Delay before attempt `next_attempt` (2 = the first retry), in milliseconds.
    pub fn delay_ms(&self, next_attempt: u32) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(30);
        let secs = (self.backoff_seconds as u64).saturating_mul(1u64 << exp);
        secs.min(self.max_backoff_seconds as u64) * 1000
    }
}

/// A canvas position in designer units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub x: f64,
    pub y: f64,
}

/// Data flow from one node's outputs into a named input of another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The input's name: its files appear under `$CONCURRENT_INPUT_DIR/<input>/`.
    #[serde(default = "default_input")]
    pub input: String,
    #[serde(default)]
    pub partition: Partition,
    /// Only the best upstream attempts' outputs pass, by an MLflow metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Select>,
}

/// Best-of selection on an edge: the `top` upstream instances by `metric` (lowest with `min`,
/// highest with `max`) pass their outputs; an instance without the metric is never chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Select {
    pub metric: String,
    pub mode: SelectMode,
    #[serde(default = "one")]
    pub top: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectMode {
    Min,
    Max,
}

fn default_input() -> String {
    "data".into()
}

/// How the upstream files are split across the downstream node's instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    pub mode: PartitionMode,
    /// For `by-key`: a regular expression over the file path; its first capture group is the
    /// key, and files with the same key go to the same instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_regex: Option<String>,
}

/// The partitioning modes. Unknown names are kept (not rejected while parsing) so that
/// validation can report them together with every other problem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PartitionMode {
    /// Every instance gets every file.
    #[default]
    Broadcast,
    /// Files are spread across instances, balanced by bytes.
    ByFile,
    /// Each directory's files stay together.
    ByDirectory,
    /// Files with the same regex key stay together.
    ByKey,
    /// A name this version does not know; always a validation problem.
    Unknown(String),
}

impl PartitionMode {
    pub const KNOWN: [&'static str; 4] = ["broadcast", "by-file", "by-directory", "by-key"];

    pub fn as_str(&self) -> &str {
        match self {
            PartitionMode::Broadcast => "broadcast",
            PartitionMode::ByFile => "by-file",
            PartitionMode::ByDirectory => "by-directory",
            PartitionMode::ByKey => "by-key",
            PartitionMode::Unknown(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "broadcast" => PartitionMode::Broadcast,
            "by-file" => PartitionMode::ByFile,
            "by-directory" => PartitionMode::ByDirectory,
            "by-key" => PartitionMode::ByKey,
            other => PartitionMode::Unknown(other.to_string()),
        }
    }
}

impl Serialize for PartitionMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PartitionMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PartitionMode::parse(&String::deserialize(d)?))
    }
}

impl Template {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Edges that feed `node_id`, in template order.
    pub fn incoming<'a>(&'a self, node_id: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.to == node_id)
    }

    /// Parses a template from JSON, naming the field that failed.
    ///
    /// # Errors
    /// A [`ParseError`] with the JSON path and serde's reason when the document does not have the
    /// template's shape (wrong types, missing `kind`, …). Semantic checks are [`crate::validate`]'s.
    pub fn from_json(text: &str) -> Result<Template, ParseError> {
        serde_json::from_str(text).map_err(|e| ParseError {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// A template document that could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template is not valid JSON of the concurrent/v1 shape at line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}
