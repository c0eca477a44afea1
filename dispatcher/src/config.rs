//! The agent's configuration, as its flags and environment give it (read by the agent and by
//! the executor it builds).

use std::path::PathBuf;

use clap::ValueEnum;

/// Where steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorKind {
    /// A child process per step on this machine (the default for one machine).
    Local,
    /// A pod per step, in --namespace (in-cluster config, or KUBECONFIG).
    Kubernetes,
}

#[derive(clap::Args, Debug)]
pub struct AgentConfig {
    /// Base URL of the edge API, e.g. https://concurrent.example.com.
    #[arg(long, env = "CONCURRENT_EDGE_URL")]
    pub edge_url: String,
    /// The cluster this agent serves: it pulls work from this cluster's queue.
    #[arg(long, env = "CONCURRENT_CLUSTER", default_value = "local")]
    pub cluster: String,
    /// File holding the agent's API token (never passed on the command line).
    #[arg(long, env = "CONCURRENT_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Where steps run.
    #[arg(long, env = "CONCURRENT_EXECUTOR", value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Most steps running at once.
    #[arg(long, env = "CONCURRENT_CAPACITY", default_value_t = 2)]
    pub capacity: u32,
    /// MLflow tracking server as the steps reach it.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_uri: String,
    /// Directory for the steps' inputs, outputs and logs.
    #[arg(long, env = "CONCURRENT_WORK_DIR", default_value = ".state/agent")]
    pub work_dir: PathBuf,
    /// Base directory for relative project paths in templates; local projects and input paths
    /// must lie inside it or an --allow-path directory.
    #[arg(long, env = "CONCURRENT_PROJECT_ROOT", default_value = ".")]
    pub project_root: PathBuf,
    /// Another directory whose projects and input paths templates may use (repeatable).
    #[arg(long = "allow-path")]
    pub allow_path: Vec<PathBuf>,
    /// Local executor: a JSON file of the secrets nodes may use in `secretEnv`,
    /// `{"<secret>": {"<key>": "<value>"}}` (like Kubernetes Secrets). Read at each attempt, so
    /// changes apply without a restart; keep it readable by the agent only.
    #[arg(long, env = "CONCURRENT_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// How steps build `conda_env` projects when this machine has no conda: `uv` (MLflow's
    /// conversion of the `conda.yaml` to a Python environment, as `mlflow run --env-manager uv`),
    /// `virtualenv`, or `local`. Unset, such projects need conda. A node's `envManager` comes
    /// first; the step's log says when this is used.
    #[arg(long, env = "CONCURRENT_CONDA_ENV_MANAGER", value_enum)]
    pub conda_env_manager: Option<crate::step::CondaFallback>,
    #[command(flatten)]
    pub env_cache_bounds: crate::step::EnvCacheBounds,
    /// The `mlflow` executable the steps use.
    #[arg(long, env = "CONCURRENT_MLFLOW_BIN", default_value = "mlflow")]
    pub mlflow_bin: String,
    /// This agent's name in leases (default: host name and process id).
    #[arg(long, env = "CONCURRENT_AGENT_NAME")]
    pub name: Option<String>,
    /// Keep each step's directory after it ends (for debugging).
    #[arg(long)]
    pub keep_work_dirs: bool,
    /// Serve /healthz and Prometheus /metrics on this address (e.g. 0.0.0.0:9090).
    #[arg(long, env = "CONCURRENT_LISTEN")]
    pub listen: Option<String>,

    /// Kubernetes: the namespace of the step pods.
    #[arg(long, env = "CONCURRENT_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Kubernetes: image for nodes that name none (it needs Python, MLflow and git).
    #[arg(
        long,
        env = "CONCURRENT_DEFAULT_IMAGE",
        default_value = "ghcr.io/mlflow/mlflow:v3.17.2"
    )]
    pub default_image: String,
    /// Kubernetes: the agent's own image; its /concurrent is copied into every step pod.
    #[arg(
        long,
        env = "CONCURRENT_AGENT_IMAGE",
        default_value = "concurrent-agent:latest"
    )]
    pub agent_image: String,
    /// Kubernetes: service account of the step pods.
    #[arg(long, env = "CONCURRENT_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Kubernetes: a service account nodes may ask for with `kubernetes.serviceAccountName`
    /// (repeatable); nodes asking for any other fail. The default step account is always allowed.
    #[arg(long = "allow-service-account")]
    pub allowed_service_accounts: Vec<String>,
    /// Kubernetes: the node label that names a node's GPU model, matched by a node's
    /// `resources.gpuType` (GKE: cloud.google.com/gke-accelerator; EKS:
    /// node.kubernetes.io/instance-type is the usual stand-in).
    #[arg(
        long,
        env = "CONCURRENT_GPU_TYPE_LABEL",
        default_value = "nvidia.com/gpu.product"
    )]
    pub gpu_type_label: String,
    /// Kubernetes: image pull secret for the step pods (repeatable).
    #[arg(long = "image-pull-secret")]
    pub image_pull_secrets: Vec<String>,
    /// Kubernetes: node selector `key=value` for the step pods (repeatable).
    #[arg(long = "node-selector", value_parser = crate::parse_key_value)]
    pub node_selector: Vec<(String, String)>,
    /// Kubernetes: MLflow as the pods reach it (default: --mlflow-uri).
    #[arg(long, env = "CONCURRENT_STEP_MLFLOW_URI")]
    pub step_mlflow_uri: Option<String>,
    /// Kubernetes: the edge API as the pods reach it (default: --edge-url).
    #[arg(long, env = "CONCURRENT_STEP_EDGE_URL")]
    pub step_edge_url: Option<String>,
    /// Kubernetes: seconds a pod may stay unschedulable or unable to pull its image.
    #[arg(long, env = "CONCURRENT_PENDING_TIMEOUT", default_value_t = 600)]
    pub pending_timeout: u64,
    /// Kubernetes: a Secret with git credentials for private repositories (`.git-credentials`
    /// for https, or `ssh-privatekey` and `known_hosts` for ssh), mounted read-only into every
    /// step pod at /concurrent-git. Mount the same Secret into the agent at /concurrent-git and
    /// set CONCURRENT_GIT_CREDENTIALS=/concurrent-git so it can read private projects too.
    #[arg(long, env = "CONCURRENT_GIT_CREDENTIALS_SECRET")]
    pub git_credentials_secret: Option<String>,
    /// Kubernetes: a pod template file (YAML, a `PodTemplateSpec`) every step pod starts from:
    /// tolerations, affinity, volumes (PVCs, `/dev/shm`), sidecars, security contexts. The
    /// step's image, command, resources and env are merged in.
    #[arg(long, env = "CONCURRENT_POD_TEMPLATE")]
    pub pod_template: Option<PathBuf>,
    /// Kubernetes: most pods created per second, spread evenly (a 10,000-wide node must not
    /// flood the API server; client-go's default is 5 requests a second).
    #[arg(long, env = "CONCURRENT_POD_CREATE_QPS", default_value_t = 20.0)]
    pub pod_create_qps: f64,
    /// Kubernetes: seconds finished pods are kept before they are deleted.
    #[arg(long, env = "CONCURRENT_KEEP_FINISHED", default_value_t = 300)]
    pub keep_finished: u64,
}
