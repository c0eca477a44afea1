//! `concurrent step`: runs one work item, the same way for local processes and pods.
//!
//! 1. downloads the partition's input files into `<work>/inputs/<input>/<path>`;
//! 2. runs the node (an MLflow Project, a model's batch inference, or an input's data);
//! 3. uploads `<work>/outputs/` to the attempt's MLflow run under `outputs/`, and the log
//!    under `logs/step.log`;
//! 4. writes the outcome (with the output manifest) to `--result`.
//!
//! A failing step still exits 0 once its outcome is written: the outcome is the result.

mod cache;
pub mod environment;
pub mod git;
mod launch;
pub mod mlproject;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use concurrent_core::mask::Masker;
use concurrent_core::partition::relative_path_problem;
use concurrent_core::template::{EnvManager, NodeKind};
use concurrent_core::wire::{Outcome, OutputFile, StepFacts, Usage, WorkItem, OUTPUTS_DIR};
use futures::{StreamExt, TryStreamExt};

use crate::mlflow::Mlflow;

/// Files transferred at once.
const PARALLEL_TRANSFERS: usize = 8;
/// How often a running step's log is uploaded to its MLflow run (when it grew), at least; a log
/// so big that its upload takes long is sent less often (at most a tenth of the time uploading).
const LOG_UPLOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub struct StepArgs {
    /// The work item, as JSON (written by the agent).
    #[arg(long)]
    pub spec: PathBuf,
    /// Where to write the outcome JSON.
    #[arg(long)]
    pub result: PathBuf,
    /// Directory for the step's inputs, outputs and log (created if missing).
    #[arg(long)]
    pub work_dir: PathBuf,
    /// MLflow tracking server as seen from where the step runs.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_uri: String,
    /// The `mlflow` executable (from the environment that has the project's dependencies).
    #[arg(long, env = "CONCURRENT_MLFLOW_BIN", default_value = "mlflow")]
    pub mlflow_bin: String,
    /// How a project's entry point starts: `fast` runs its command directly, exactly as
    /// `mlflow run --env-manager local` would (falling back to `mlflow run` where only it can,
    /// e.g. git URIs); `mlflow` always uses `mlflow run` (~3 s more per step).
    #[arg(long, env = "CONCURRENT_LAUNCHER", value_enum, default_value_t = Launcher::Fast)]
    pub launcher: Launcher,
    /// Base directory for relative project and input paths.
    #[arg(long, env = "CONCURRENT_PROJECT_ROOT", default_value = ".")]
    pub project_root: PathBuf,
    /// Another directory whose projects and input paths templates may use (repeatable).
    #[arg(long = "allow-path")]
    pub allow_path: Vec<PathBuf>,
    /// Where built Python environments are kept and reused (one per spec's content).
    #[arg(long, env = "CONCURRENT_ENV_CACHE", default_value = ".state/envs")]
    pub env_cache: PathBuf,
    /// The `uv` executable (for `python_env` projects).
    #[arg(long, env = "CONCURRENT_UV_BIN", default_value = "uv")]
    pub uv_bin: String,
    /// The `conda` executable (for `conda_env` projects).
    #[arg(long, env = "CONCURRENT_CONDA_BIN", default_value = "conda")]
    pub conda_bin: String,
    /// How `conda_env` projects are built where there is no conda (see `CondaFallback`);
    /// unset, they need conda. A node's `envManager` comes first.
    #[arg(long, env = "CONCURRENT_CONDA_ENV_MANAGER", value_enum)]
    pub conda_env_manager: Option<CondaFallback>,
    #[command(flatten)]
    pub env_cache_bounds: EnvCacheBounds,
    /// The step already runs in its project's `docker_env` image (set in pods).
    #[arg(long)]
    pub in_image: bool,
    /// Where bare clones of git projects are kept and fetched.
    #[arg(long, env = "CONCURRENT_GIT_CACHE", default_value = ".state/git")]
    pub git_cache: PathBuf,
    /// The edge API, for pinning git commits with the step token in `CONCURRENT_STEP_TOKEN`.
    #[arg(long)]
    pub edge_url: Option<String>,
    /// Report the outcome to this edge API itself, with the step token in
    /// `CONCURRENT_STEP_TOKEN` (in pods; the local executor reports for its steps).
    #[arg(long)]
    pub report_to: Option<String>,
    /// The cluster of the lease (with --report-to).
    #[arg(long, default_value = "local")]
    pub cluster: String,
}

/// How a `conda_env` project is built on a machine without conda.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondaFallback {
    /// A uv environment from the `conda.yaml` (MLflow's own conversion: its `python`, `pip`
    /// and `pip:` packages), as `mlflow run --env-manager uv` builds it.
    Uv,
    /// The same with `python -m venv` and pip.
    Virtualenv,
    /// The agent's own Python, as it is.
    Local,
}

impl CondaFallback {
    pub fn manager(self) -> EnvManager {
        match self {
            CondaFallback::Uv => EnvManager::Uv,
            CondaFallback::Virtualenv => EnvManager::Virtualenv,
            CondaFallback::Local => EnvManager::Local,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.manager().as_str()
    }
}

/// When an agent's cache of built environments lets one go (it never lets go of one a running
/// step uses).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct EnvCacheBounds {
    /// Days an environment no step started with is kept.
    #[arg(long, env = "CONCURRENT_ENV_CACHE_MAX_AGE_DAYS", default_value_t = 14)]
    pub env_cache_max_age_days: u64,
    /// GiB all built environments may take together; beyond it the least recently used go.
    #[arg(long, env = "CONCURRENT_ENV_CACHE_MAX_GIB", default_value_t = 20)]
    pub env_cache_max_gib: u64,
}

impl EnvCacheBounds {
    /// The flags that pass these bounds on to a step.
    pub fn args(&self) -> [String; 4] {
        [
            "--env-cache-max-age-days".into(),
            self.env_cache_max_age_days.to_string(),
            "--env-cache-max-gib".into(),
            self.env_cache_max_gib.to_string(),
        ]
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    Fast,
    Mlflow,
}

/// Exit code when the outcome could not be reported (the agent then reports a failure).
const UNREPORTED: u8 = 75;

/// Names of the environment variables that hold secrets (set by the executor, names only).
pub const SECRET_ENV: &str = "CONCURRENT_SECRET_ENV";

/// The secret values in this process's environment: the node's secret variables and MLflow's
/// own credentials. They are masked wherever the step's output goes.
pub fn secret_values() -> Vec<String> {
    let names = std::env::var(SECRET_ENV).unwrap_or_default();
    names
        .split(',')
        .filter(|n| !n.is_empty())
        .chain(["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"])
        .filter_map(|n| std::env::var(n).ok())
        .collect()
}

pub async fn run(args: StepArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("cannot read the step spec {}", args.spec.display()))?;
    let item: WorkItem = serde_json::from_str(&text).context("the step spec is not a work item")?;
    let mlflow = std::sync::Arc::new(Mlflow::new(
        &args.mlflow_uri,
        std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
    )?);
    if let Some(uri) = &item.step.artifact_uri {
        mlflow.knows_artifact_uri(&item.step.mlflow.run_id, uri);
    }
    for (run_id, uri) in &item.step.input_roots {
        mlflow.knows_artifact_uri(run_id, uri);
    }
    let log = args.work_dir.join("step.log");
    // The log reaches MLflow while the step runs, not only at its end, so it outlives a lost pod.
    let uploader = {
        let (mlflow, log, run_id) = (mlflow.clone(), log.clone(), item.step.mlflow.run_id.clone());
        tokio::spawn(async move {
            let (mut sent, mut pause) = (0u64, LOG_UPLOAD_EVERY);
            loop {
                tokio::time::sleep(pause).await;
                let size = std::fs::metadata(&log).map_or(0, |m| m.len());
                // Other stores are written once, at the end (each write starts MLflow's client).
                if size != sent && mlflow.proxied(&run_id).await.unwrap_or(false) {
                    let began = std::time::Instant::now();
                    if mlflow.upload(&run_id, "logs/step.log", &log).await.is_ok() {
                        sent = size;
                    }
                    pause = LOG_UPLOAD_EVERY.max(began.elapsed() * 10);
                }
            }
        })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let began = std::time::Instant::now();
    let mut timeline = crate::timeline::Timeline::new(began);
    let mut facts = StepFacts::default();
    let result = tokio::select! {
        result = execute(&args, &item, &mlflow, &log, &mut facts, &mut timeline) => result,
        // Cancelled: dropping `execute` stops the user's processes; there is nothing to report.
        _ = term.recv() => {
            tracing::info!(item = %item.id, "stopped by SIGTERM");
            return Ok(());
        }
    };
    uploader.abort();
    // What the step used and logged, and its log, are sent at once: they do not depend on
    // each other, and the next step waits for them.
    let send_log = async {
        if log.exists() {
            if let Err(e) = upload_log(&args, &mlflow, &item.step.mlflow.run_id, &log).await {
                tracing::warn!(item = %item.id, "the step log could not be uploaded: {e:#}");
            }
        }
    };
    tokio::join!(learn(&item, &mlflow, began, &mut facts), send_log);
    timeline.mark("learn_and_log");
    let outcome = match result {
        Ok(outputs) => Outcome::Succeeded { outputs, facts },
        Err(e) => Outcome::Failed {
            error: Masker::new(secret_values()).mask(&format!("{e:#}")),
            facts,
        },
    }
    .bounded();
    tracing::info!(item = %item.id, phases_ms = %timeline, "step ran");
    let tmp = args.result.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&outcome)?)?;
    std::fs::rename(&tmp, &args.result)?;
    if let Some(edge_url) = &args.report_to {
        report(edge_url, &args.cluster, &item, outcome).await?;
    }
    Ok(())
}

/// Reports the outcome with the lease's own step token (core's `StepToken`), until the edge
/// accepts or refuses it: the agent heartbeats the pod's lease meanwhile.
async fn report(
    edge_url: &str,
    cluster: &str,
    item: &WorkItem,
    outcome: Outcome,
) -> anyhow::Result<()> {
    let token = std::env::var("CONCURRENT_STEP_TOKEN")
        .context("--report-to needs the step token in CONCURRENT_STEP_TOKEN")?;
    let (claims, _, _) = concurrent_core::step_token::StepToken::parse(&token)
        .context("CONCURRENT_STEP_TOKEN is not a step token")?;
    let edge = crate::edge::Edge::new(edge_url, cluster, token, format!("step {}", item.id))?;
    let never = tokio_util::sync::CancellationToken::new();
    let mlflow_run_id = Some(item.step.mlflow.run_id.clone()).filter(|r| !r.is_empty());
    match crate::edge::complete_until_settled(&item.id, &never, || {
        edge.complete(
            &item.id,
            claims.fencing,
            outcome.clone(),
            mlflow_run_id.clone(),
        )
    })
    .await
    {
        Ok(()) => Ok(()),
        Err(crate::edge::EdgeError::Refused(why)) => {
            tracing::warn!(item = %item.id, "the edge refused the outcome: {why}");
            Ok(())
        }
        Err(e) => {
            tracing::error!(item = %item.id, "the outcome could not be reported: {e}");
            std::process::exit(UNREPORTED.into());
        }
    }
}

/// The edge as this step reaches it with its lease's step token, and the lease's fencing
/// token; `None` when the step has no edge to ask (run by hand).
fn step_edge(args: &StepArgs, item: &WorkItem) -> anyhow::Result<Option<(crate::edge::Edge, u64)>> {
    let (Some(edge_url), Ok(token)) = (
        args.edge_url.as_ref().or(args.report_to.as_ref()),
        std::env::var("CONCURRENT_STEP_TOKEN"),
    ) else {
        return Ok(None);
    };
    let (claims, _, _) = concurrent_core::step_token::StepToken::parse(&token)
        .context("CONCURRENT_STEP_TOKEN is not a step token")?;
    let edge = crate::edge::Edge::new(
        edge_url,
        &claims.cluster,
        token.clone(),
        format!("step {}", item.id),
    )?;
    Ok(Some((edge, claims.fencing)))
}

/// Tells the run which commit this attempt resolved its git source to; the run's answer is the
/// commit to run. `None` when the step has no edge to ask (run by hand).
async fn pin(
    args: &StepArgs,
    item: &WorkItem,
    source: &str,
    commit: &str,
) -> anyhow::Result<Option<concurrent_core::wire::PinResponse>> {
    let Some((edge, fencing)) = step_edge(args, item)? else {
        return Ok(None);
    };
    let answer = edge
        .pin(&concurrent_core::wire::PinRequest {
            item_id: item.id.clone(),
            token: fencing,
            source: source.into(),
            commit: commit.into(),
        })
        .await
        .context("cannot pin the project's commit with the edge")?;
    Ok(Some(answer))
}

/// What the step runner learns of an attempt once its processes ended: what they used (its
/// children's CPU time and peak memory, its wall time; logged on the attempt's MLflow run as
/// `concurrent.*` metrics), the run's latest metrics, the model it logged. Best effort: the
/// outcome goes out whatever MLflow answers.
async fn learn(item: &WorkItem, mlflow: &Mlflow, began: std::time::Instant, facts: &mut StepFacts) {
    let wall = began.elapsed().as_secs_f64();
    // SAFETY: getrusage(2) fills the struct we own.
    let children = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        wall_seconds: wall,
        cpu_seconds: seconds(children.ru_utime) + seconds(children.ru_stime),
        // Linux reports kilobytes.
        peak_memory_bytes: children.ru_maxrss.max(0) as u64 * 1024,
        gpu_seconds: f64::from(item.step.resources.gpu) * wall,
    };
    facts.usage = Some(usage);
    let run_id = &item.step.mlflow.run_id;
    if run_id.is_empty() {
        return;
    }
    let metrics: Vec<(&str, f64)> = usage.metrics().to_vec();
    // At once: the facts read leave out the usage metrics this logs.
    let (logged, read) = tokio::join!(
        mlflow.log_metrics(run_id, &metrics),
        mlflow.run_facts(run_id)
    );
    if let Err(e) = logged {
        tracing::warn!(item = %item.id, "the attempt's usage could not be logged: {e:#}");
    }
    match read {
        Ok((metrics, model_uri)) => {
            facts.metrics = metrics
                .into_iter()
                .filter(|(k, _)| !k.starts_with("concurrent."))
                .collect();
            // A cache hit's model is the reused attempt's (its own run logged none).
            facts.model_uri = model_uri.or(facts.model_uri.take());
        }
        Err(e) => tracing::warn!(item = %item.id, "the attempt's metrics could not be read: {e:#}"),
    }
}

async fn execute(
    args: &StepArgs,
    item: &WorkItem,
    mlflow: &Mlflow,
    log: &Path,
    facts: &mut StepFacts,
    timeline: &mut crate::timeline::Timeline,
) -> anyhow::Result<Vec<OutputFile>> {
    let work = &args.work_dir;
    let (inputs, outputs) = (work.join("inputs"), work.join("outputs"));
    for d in [&inputs, &outputs] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    download_inputs(args, item, mlflow, &inputs, log).await?;
    timeline.mark("inputs");
    let run_id = &item.step.mlflow.run_id;
    match &item.step.kind {
        NodeKind::Input(spec) => {
            if let Some(source) = &spec.run_id {
                // Existing artifacts are referenced where they are, not copied.
                let prefix = spec.artifact_path.clone().unwrap_or_default();
                let files = mlflow.list_recursive(source, &prefix).await?;
                if files.is_empty() {
                    bail!("run {source} has no artifacts under {prefix:?}");
                }
                let strip = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{}/", prefix.trim_end_matches('/'))
                };
                return Ok(files
                    .into_iter()
                    .map(|(path, size)| OutputFile {
                        path: path.strip_prefix(&strip).unwrap_or(&path).to_string(),
                        size,
                        run_id: Some(source.clone()),
                        artifact_path: Some(path),
                        sha256: None,
                    })
                    .collect());
            }
            let path = spec.path.as_deref().unwrap_or_default();
            copy_into(&resolve(args, path)?, &outputs)?;
        }
        NodeKind::Approval(_) | NodeKind::Register(_) => bail!(
            "a {} node is the edge's to carry out, not a step; this work item should not exist",
            item.step.kind.tag()
        ),
        NodeKind::Project(_) | NodeKind::Inference(_) => {
            if let Some(reused) =
                launch::run_node(args, item, mlflow, &inputs, &outputs, log, facts).await?
            {
                return Ok(reused);
            }
        }
    }
    timeline.mark("node");
    let uploaded = upload_outputs(args, mlflow, run_id, &outputs, log).await;
    timeline.mark("outputs");
    uploaded
}

/// A local path as written in a template (absolute, or relative to the project root), once it
/// is known to lie inside the project root or an `--allow-path` directory: a template must not
/// reach files of the agent's machine that were not offered to it.
///
/// # Errors
/// The path does not exist, or it (or a symbolic link in it) leads outside every allowed root.
pub fn resolve(args: &StepArgs, path: &str) -> anyhow::Result<PathBuf> {
    within_roots(&args.project_root, &args.allow_path, path)
}

/// [`resolve`] for any project root and `--allow-path` list (the agent's, for inspections).
///
/// # Errors
/// See [`resolve`].
pub fn within_roots(
    project_root: &Path,
    allow_path: &[PathBuf],
    path: &str,
) -> anyhow::Result<PathBuf> {
    let p = Path::new(path.strip_prefix("file://").unwrap_or(path));
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        project_root.join(p)
    };
    let real = std::fs::canonicalize(&joined).with_context(|| {
        format!(
            "local path {path:?} does not exist on this agent (looked at {}; relative paths start at --project-root)",
            joined.display()
        )
    })?;
    let roots: Vec<PathBuf> = std::iter::once(&project_root.to_path_buf())
        .chain(allow_path)
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    if roots.iter().any(|r| real.starts_with(r)) {
        return Ok(real);
    }
    bail!(
        "local path {path:?} ({}) is outside the directories this agent offers ({}); move the project there, start the agent with --allow-path <dir>, or use a git URI",
        real.display(),
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The Python of the agent's MLflow (next to its `mlflow`), for MLflow's own client.
pub fn agent_python(args: &StepArgs) -> String {
    Path::new(&args.mlflow_bin)
        .parent()
        .map(|d| d.join("python"))
        .filter(|p| p.exists())
        .map_or("python3".to_string(), |p| p.display().to_string())
}

/// The artifact helper (MLflow's client, for stores other than the proxy).
const ARTIFACTS_PY: &str = include_str!("python/artifacts.py");

/// Runs the artifact helper with `helper_args`.
async fn store_helper(args: &StepArgs, helper_args: &[String]) -> anyhow::Result<()> {
    let script = args.work_dir.join("concurrent_artifacts.py");
    std::fs::write(&script, ARTIFACTS_PY)?;
    let out = tokio::process::Command::new(agent_python(args))
        .arg(&script)
        .args(helper_args)
        .env("MLFLOW_TRACKING_URI", &args.mlflow_uri)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot start MLflow's Python client for the artifact store")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().rev().take(5).collect();
        bail!(
            "MLflow's client could not {} artifacts: {}",
            helper_args[0],
            last.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

async fn upload_log(
    args: &StepArgs,
    mlflow: &Mlflow,
    run_id: &str,
    log: &Path,
) -> anyhow::Result<()> {
    if mlflow.proxied(run_id).await? {
        return mlflow.upload(run_id, "logs/step.log", log).await;
    }
    store_helper(
        args,
        &[
            "upload".into(),
            run_id.into(),
            log.display().to_string(),
            "logs".into(),
        ],
    )
    .await
}

/// Runs an MLflow transfer (`what`) until MLflow answers: while it is away (unreachable, or
/// failing as an overloaded server does) the step waits, saying so in its log, for at most
/// [`crate::retry::TRANSFER_PATIENCE`], its lease heartbeated by the agent meanwhile; a refusal
/// fails at once.
async fn patiently<T, F, Fut>(what: &str, log: &Path, call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    use backon::Retryable;
    let first_failure = std::sync::Mutex::new(None::<std::time::Instant>);
    call.retry(crate::retry::transfer())
        .when(crate::mlflow::Unavailable::caused)
        .notify(|e, wait| {
            first_failure
                .lock()
                .expect("poisoned")
                .get_or_insert_with(std::time::Instant::now);
            let line = format!(
                "==> MLflow is away while {what} ({e:#}); trying again in {:.0} s (the step waits up to {} s)\n",
                wait.as_secs_f64(),
                crate::retry::TRANSFER_PATIENCE.as_secs()
            );
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        })
        .await
        .map_err(|e| {
            match *first_failure.lock().expect("poisoned") {
                Some(since) if crate::mlflow::Unavailable::caused(&e) => e.context(format!(
                    "{what}: MLflow stayed away for {:.0} s (the step waits up to {} s); the attempt fails, and a retry starts when MLflow is back",
                    since.elapsed().as_secs_f64(),
                    crate::retry::TRANSFER_PATIENCE.as_secs()
                )),
                _ => e,
            }
        })
}

async fn download_inputs(
    args: &StepArgs,
    item: &WorkItem,
    mlflow: &Mlflow,
    inputs: &Path,
    log: &Path,
) -> anyhow::Result<()> {
    let (mut direct, mut other) = (Vec::new(), Vec::new());
    for (name, files) in &item.step.inputs {
        for f in files {
            if let Some(why) = relative_path_problem(&f.path) {
                bail!("input {name}: path {why}");
            }
            let dest = inputs.join(name).join(&f.path);
            let proxied = patiently("reading where inputs are stored", log, || {
                mlflow.proxied(&f.run_id)
            })
            .await?;
            if proxied {
                direct.push((dest, f));
            } else {
                other.push((
                    f.run_id.clone(),
                    f.artifact_path.clone(),
                    dest.display().to_string(),
                ));
            }
        }
        std::fs::create_dir_all(inputs.join(name))?;
    }
    futures::stream::iter(direct)
        .map(|(dest, f)| async move {
            let what = format!("downloading input {}", f.path);
            patiently(&what, log, || {
                mlflow.download(&f.run_id, &f.artifact_path, &dest)
            })
            .await
        })
        .buffer_unordered(PARALLEL_TRANSFERS)
        .try_collect::<Vec<_>>()
        .await?;
    if !other.is_empty() {
        // One client process for every file that lives in another store.
        let manifest = args.work_dir.join("downloads.json");
        std::fs::write(&manifest, serde_json::to_vec(&other)?)?;
        store_helper(args, &["download".into(), manifest.display().to_string()]).await?;
    }
    Ok(())
}

async fn upload_outputs(
    args: &StepArgs,
    mlflow: &Mlflow,
    run_id: &str,
    outputs: &Path,
    log: &Path,
) -> anyhow::Result<Vec<OutputFile>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(outputs).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(outputs)?
            .to_string_lossy()
            .replace('\\', "/");
        files.push((entry.path().to_path_buf(), rel, entry.metadata()?.len()));
    }
    if !files.is_empty() {
        let proxied = patiently("reading where outputs are stored", log, || {
            mlflow.proxied(run_id)
        })
        .await?;
        if proxied {
            futures::stream::iter(files.iter())
                .map(|(path, rel, _)| async move {
                    let (what, to) = (
                        format!("uploading output {rel}"),
                        format!("{OUTPUTS_DIR}/{rel}"),
                    );
                    patiently(&what, log, || mlflow.upload(run_id, &to, path)).await
                })
                .buffer_unordered(PARALLEL_TRANSFERS)
                .try_collect::<Vec<_>>()
                .await?;
        } else {
            let dir = outputs.display().to_string();
            store_helper(
                args,
                &["upload".into(), run_id.into(), dir, OUTPUTS_DIR.into()],
            )
            .await?;
        }
    }
    // Digests, so a downstream step's cache key is made without downloading anything.
    let mut out = Vec::with_capacity(files.len());
    for (file, path, size) in files {
        let sha256 = tokio::task::spawn_blocking(move || file_sha256(&file)).await??;
        out.push(OutputFile {
            path,
            size,
            run_id: None,
            artifact_path: None,
            sha256: Some(sha256),
        });
    }
    Ok(out)
}

/// The SHA-256 of a file's content, as hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Copies a file or a directory tree into `dest`.
fn copy_into(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(src)
        .with_context(|| format!("input path {} cannot be read", src.display()))?;
    if meta.is_file() {
        let name = src.file_name().context("input path has no file name")?;
        std::fs::copy(src, dest.join(name))?;
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry?;
        let rel = entry.path().strip_prefix(src)?;
        let target = dest.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Appends a line of our own to the step's log.
pub(crate) async fn log_line(log: &Path, line: &str) {
    if let Ok(mut f) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
    {
        // tokio hands a write to a blocking thread; without the flush, the line can land after
        // what the next (std) writer appends, or after a reader looked.
        use tokio::io::AsyncWriteExt;
        let _ = f.write_all(format!("{line}\n").as_bytes()).await;
        let _ = f.flush().await;
    }
}
