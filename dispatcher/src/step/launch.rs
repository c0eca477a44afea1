//! Starting the user's code: a project's entry point directly (see `mlproject`), or `mlflow run`
//! where only it can (git URIs, Docker, remote `path` parameters, `--launcher mlflow`);
//! `mlflow models predict` for inference. Values travel as argv elements; an entry point's
//! command is the MLproject's own shell command with every value quoted, as MLflow runs it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use concurrent_core::logtail::Tail;
use concurrent_core::mask::OutputMasker;
use concurrent_core::template::NodeKind;
use concurrent_core::wire::{OutputFile, StepFacts, WorkItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::environment::{self, Choice};
use super::mlproject::{self, Plan};
use super::{cache, git, resolve, Launcher, StepArgs};
use crate::mlflow::Mlflow;

/// The batch inference helper (run with the model environment's Python).
const PREDICT_PY: &str = include_str!("python/predict.py");

/// How often the live tail file is rewritten while a step prints.
const TAIL_EVERY: Duration = Duration::from_secs(1);

/// The program to start, its arguments, its directory and extra environment.
struct Launch {
    program: String,
    argv: Vec<String>,
    dir: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl Launch {
    fn mlflow(args: &StepArgs, argv: Vec<String>, log: &Path) -> Launch {
        Launch {
            program: args.mlflow_bin.clone(),
            argv,
            dir: log.parent().unwrap_or(Path::new(".")).to_path_buf(),
            env: vec![],
        }
    }
}

/// Runs the node's code; `Some(outputs)` when a cached result was reused instead (nothing ran,
/// and the outputs are an earlier attempt's). The cache key and hit go into `facts`.
pub async fn run_node(
    args: &StepArgs,
    item: &WorkItem,
    mlflow: &Mlflow,
    inputs: &Path,
    outputs: &Path,
    log: &Path,
    facts: &mut StepFacts,
) -> anyhow::Result<Option<Vec<OutputFile>>> {
    let step = &item.step;
    let timeout = step.timeout_seconds.map(Duration::from_secs);
    match &step.kind {
        NodeKind::Project(p) => {
            let (dir, commit, mut tags) = project_dir(args, item, p, mlflow, log).await?;
            let run_id = &step.mlflow.run_id;
            let cwd = log.parent().unwrap_or(Path::new("."));
            let plan = match args.launcher {
                Launcher::Mlflow => Plan::Mlflow("--launcher mlflow".into()),
                Launcher::Fast => mlproject::plan(&dir, &p.entry_point, &p.parameters, cwd)
                    .map_err(anyhow::Error::msg)?,
            };
            let (dir, command, declared) = match plan {
                Plan::Direct { dir, command, env } => (dir, command, env),
                Plan::Mlflow(why) => {
                    set_tags(mlflow, run_id, &tags).await?;
                    tracing::info!(item = %item.id, "starting with `mlflow run`: {why}");
                    let launch = Launch::mlflow(args, mlflow_run_argv(item, p, &dir, true), log);
                    return run_logged(args, item, &launch, inputs, outputs, log, timeout)
                        .await
                        .map(|()| None);
                }
            };
            let choice = choose(args, &declared, step.env_manager, log).await?;
            if let Some(spec) = step.cache {
                let project = cache::project_identity(p, &dir, commit.as_deref())?;
                let key = cache::key_of(item, p, &project, &choice, &dir);
                facts.cache_key = Some(key.clone());
                tags.push(("concurrent.cache.key".into(), key.clone()));
                if spec.read {
                    if let Some(hit) =
                        cache::lookup(args, item, &key, spec.max_age_ms, mlflow, log).await?
                    {
                        tags.extend([
                            (
                                "concurrent.cache.hit".into(),
                                hit.from.mlflow_run_id.clone(),
                            ),
                            ("concurrent.cache.hit_run".into(), hit.from.run_id.clone()),
                        ]);
                        set_tags(mlflow, run_id, &tags).await?;
                        // The reused attempt's metrics are this one's too (MLflow's compare view
                        // and a downstream best-of selection read them here).
                        let (metrics, model) = mlflow.run_facts(&hit.from.mlflow_run_id).await?;
                        let metrics: Vec<(&str, f64)> = metrics
                            .iter()
                            .filter(|(k, _)| !k.starts_with("concurrent."))
                            .map(|(k, v)| (k.as_str(), *v))
                            .collect();
                        if !metrics.is_empty() {
                            mlflow.log_metrics(run_id, &metrics).await?;
                        }
                        facts.model_uri = model;
                        facts.cached_from = Some(hit.from);
                        return Ok(Some(hit.outputs));
                    }
                } else {
                    super::log_line(log, "==> cache: not read (the run was started ignoring the cache); the step runs and its result is cached").await;
                }
            }
            let mut env = vec![("MLFLOW_RUN_ID".to_string(), step.mlflow.run_id.clone())];
            let env_name = match &choice {
                Choice::Docker(d) if args.in_image => {
                    // The pod started in the image; the MLproject's variables apply here.
                    env.extend(
                        d.environment
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.clone()?))),
                    );
                    "docker"
                }
                Choice::Docker(d) => {
                    if !docker_reachable().await {
                        bail!(
                            "this project runs in Docker (docker_env image {:?}), and no Docker daemon is reachable from this agent; run the node on a Kubernetes cluster (its pod starts in that image), start Docker here, or remove docker_env from the MLproject",
                            d.image
                        );
                    }
                    set_tags(mlflow, run_id, &tags).await?;
                    let launch = Launch::mlflow(args, mlflow_run_argv(item, p, &dir, false), log);
                    return run_logged(args, item, &launch, inputs, outputs, log, timeout)
                        .await
                        .map(|()| None);
                }
                Choice::Local => "local",
                Choice::Virtual { manager, .. } => manager.as_str(),
                Choice::Conda(_) => "conda",
            };
            let prepared = environment::prepare(&choice, &dir, &tools(args), log).await?;
            env.extend(environment::env_vars(&prepared.activation));
            tags.extend([
                ("mlflow.project.backend".into(), "local".into()),
                ("mlflow.project.env".into(), env_name.into()),
            ]);
            let launch = Launch {
                program: "bash".into(),
                argv: vec!["-c".into(), command],
                dir,
                env,
            };
            // The run's tags go to MLflow while the process starts (a refusal stops it).
            tokio::try_join!(
                set_tags(mlflow, run_id, &tags),
                run_logged(args, item, &launch, inputs, outputs, log, timeout)
            )
            .map(|_| None)
        }
        NodeKind::Inference(i) => {
            // Every csv/json/parquet file of the partition, predicted by one process that loads
            // the model once (a Python start and a model load per file cost seconds each).
            let files: Vec<(String, String, String)> = step
                .inputs
                .iter()
                .flat_map(|(name, files)| files.iter().map(move |f| (name, f)))
                .filter(|(_, f)| {
                    matches!(
                        f.path
                            .rsplit('.')
                            .next()
                            .map(str::to_ascii_lowercase)
                            .as_deref(),
                        Some("csv" | "json" | "parquet")
                    )
                })
                .map(|(name, f)| {
                    let path = inputs.join(name).join(&f.path).display().to_string();
                    (name.clone(), f.path.clone(), path)
                })
                .collect();
            if files.is_empty() {
                bail!(
                    "inference needs .csv, .json or .parquet input files; this partition has none"
                );
            }
            let work = log.parent().unwrap_or(Path::new("."));
            let model_dir = work.join("model");
            // The model's files, with its environment's spec (python_env.yaml, conda.yaml).
            let download = Launch::mlflow(
                args,
                vec![
                    "artifacts".into(),
                    "download".into(),
                    "--artifact-uri".into(),
                    i.model_uri.clone(),
                    "--dst-path".into(),
                    model_dir.display().to_string(),
                ],
                log,
            );
            run_logged(args, item, &download, inputs, outputs, log, timeout)
                .await
                .with_context(|| format!("cannot download the model {}", i.model_uri))?;
            // `artifacts download` puts the model in a directory of its own name below.
            let model_dir = walkdir::WalkDir::new(&model_dir)
                .max_depth(3)
                .into_iter()
                .flatten()
                .find(|e| e.file_name() == "MLmodel")
                .and_then(|e| e.path().parent().map(Path::to_path_buf))
                .with_context(|| {
                    format!(
                        "{} has no MLmodel file; is it an MLflow model?",
                        i.model_uri
                    )
                })?;
            let declared = if model_dir.join("python_env.yaml").exists() {
                environment::Declared::Python(model_dir.join("python_env.yaml"))
            } else if model_dir.join("conda.yaml").exists() {
                environment::Declared::Conda(model_dir.join("conda.yaml"))
            } else {
                environment::Declared::None
            };
            let choice = choose(args, &declared, step.env_manager, log).await?;
            let prepared = environment::prepare(&choice, &model_dir, &tools(args), log).await?;
            let python = match &prepared.activation.bin {
                Some(bin) => bin.join("python").display().to_string(),
                None => super::agent_python(args),
            };
            let script = work.join("concurrent_predict.py");
            std::fs::write(&script, PREDICT_PY)?;
            let manifest = work.join("predict.json");
            std::fs::write(&manifest, serde_json::to_vec(&files)?)?;
            let mut env = environment::env_vars(&prepared.activation)
                .into_iter()
                .collect::<Vec<_>>();
            env.push(("MLFLOW_RUN_ID".into(), step.mlflow.run_id.clone()));
            let launch = Launch {
                program: python,
                argv: vec![
                    script.display().to_string(),
                    model_dir.display().to_string(),
                    manifest.display().to_string(),
                    outputs.display().to_string(),
                ],
                dir: work.to_path_buf(),
                env,
            };
            run_logged(args, item, &launch, inputs, outputs, log, timeout)
                .await
                .map(|()| None)
        }
        NodeKind::Input(_) => Ok(None),
        NodeKind::Approval(_) | NodeKind::Register(_) => {
            bail!(
                "a {} node is the edge's to carry out, not a step; this work item should not exist",
                step.kind.tag()
            )
        }
    }
}

/// The environment tools and cache of this step.
fn tools(args: &StepArgs) -> environment::Tools<'_> {
    environment::Tools {
        uv: &args.uv_bin,
        conda: &args.conda_bin,
        cache: &args.env_cache,
        bounds: concurrent_core::env_cache::Bounds {
            max_age: (args.env_cache_bounds.env_cache_max_age_days).saturating_mul(86_400_000),
            max_bytes: (args.env_cache_bounds.env_cache_max_gib).saturating_mul(1 << 30),
        },
    }
}

/// [`environment::choose`] with this agent's manager for `conda_env` projects when it has no
/// conda; the step's log says when that manager is used.
async fn choose(
    args: &StepArgs,
    declared: &environment::Declared,
    wanted: Option<concurrent_core::template::EnvManager>,
    log: &Path,
) -> anyhow::Result<Choice> {
    let without_conda = args
        .conda_env_manager
        .map(super::CondaFallback::manager)
        .filter(|_| !environment::available(&args.conda_bin));
    let choice =
        environment::choose(declared, wanted, without_conda).map_err(anyhow::Error::msg)?;
    if let (environment::Declared::Conda(file), None, Some(m)) = (declared, wanted, without_conda) {
        let note = format!(
            "==> {} is a conda environment and this agent has no conda ({:?} is not found): building it with {} instead (the agent's --conda-env-manager), as `mlflow run --env-manager {}` would; set the node's envManager to choose otherwise",
            file.file_name().unwrap_or_default().to_string_lossy(),
            args.conda_bin,
            m.as_str(),
            m.as_str()
        );
        super::log_line(log, &note).await;
    }
    Ok(choice)
}

/// `mlflow run <dir> -e <entry> [-P k=v]... [--env-manager <m>] --run-id <id>` for a project
/// already checked out in `dir`.
fn mlflow_run_argv(
    item: &WorkItem,
    p: &concurrent_core::template::ProjectSpec,
    dir: &Path,
    with_env_manager: bool,
) -> Vec<String> {
    let step = &item.step;
    let mut argv = vec![
        "run".to_string(),
        dir.to_string_lossy().into_owned(),
        "-e".into(),
        p.entry_point.clone(),
    ];
    for (k, v) in &p.parameters {
        argv.extend(["-P".into(), format!("{k}={v}")]);
    }
    if with_env_manager {
        let m = step.env_manager.map_or("local", |m| m.as_str());
        argv.extend(["--env-manager".into(), m.into()]);
    }
    argv.extend([
        "--experiment-id".into(),
        step.mlflow.experiment_id.clone(),
        "--run-id".into(),
        step.mlflow.run_id.clone(),
    ]);
    argv
}

/// Whether a Docker daemon answers here.
async fn docker_reachable() -> bool {
    let probe = tokio::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(
        tokio::time::timeout(Duration::from_secs(10), probe).await,
        Ok(Ok(s)) if s.success()
    )
}

/// Tags of an MLflow run, owned.
type Tags = Vec<(String, String)>;

/// Sets `tags` on a run in one call.
async fn set_tags(mlflow: &Mlflow, run_id: &str, tags: &Tags) -> anyhow::Result<()> {
    let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    mlflow.set_tags(run_id, &pairs).await
}

/// The project's directory for this attempt: a git project checked out at the run's pinned
/// commit (pinning it first if no attempt has), or a local path; and the source's tags, for
/// the attempt's MLflow run (the attempt that pinned the commit records it on the parent run).
async fn project_dir(
    args: &StepArgs,
    item: &WorkItem,
    p: &concurrent_core::template::ProjectSpec,
    mlflow: &Mlflow,
    log: &Path,
) -> anyhow::Result<(std::path::PathBuf, Option<String>, Tags)> {
    let step = &item.step;
    let work = log.parent().unwrap_or(Path::new("."));
    let (root, commit, first) = if p.is_git() {
        let into = work.join("project");
        let mut co = git::checkout(
            &p.uri,
            p.version.as_deref(),
            step.commit.as_deref(),
            &args.git_cache,
            &into,
            log,
        )
        .await?;
        let mut first = false;
        if step.commit.is_none() {
            if let Some(answer) = super::pin(args, item, &p.source_key(), &co.commit).await? {
                first = answer.first;
                if answer.commit != co.commit {
                    // Another instance pinned the source first: run that commit.
                    let _ = std::fs::remove_dir_all(&into);
                    co = git::checkout(
                        &p.uri,
                        p.version.as_deref(),
                        Some(&answer.commit),
                        &args.git_cache,
                        &into,
                        log,
                    )
                    .await?;
                }
            }
        }
        (co.dir, Some(co.commit), first)
    } else {
        (resolve(args, &p.uri)?, None, false)
    };
    let mut tags = vec![
        ("mlflow.source.name".to_string(), git::display_url(&p.uri)),
        ("mlflow.source.type".to_string(), "PROJECT".to_string()),
        (
            "mlflow.project.entryPoint".to_string(),
            p.entry_point.clone(),
        ),
    ];
    if let Some(c) = &commit {
        let url = git::display_url(&p.uri);
        tags.extend([
            ("mlflow.source.git.commit".to_string(), c.clone()),
            ("mlflow.source.git.repoURL".to_string(), url.clone()),
            ("mlflow.gitRepoURL".to_string(), url),
        ]);
    }
    if let (true, Some(parent)) = (first, &step.parent_run_id) {
        // The parent run's source, without the entry point (its nodes have their own).
        let source: Tags = tags
            .iter()
            .filter(|(k, _)| k != "mlflow.project.entryPoint")
            .cloned()
            .collect();
        set_tags(mlflow, parent, &source).await?;
    }
    let dir = match &p.sub_path {
        Some(sub) => root.join(sub),
        None => root,
    };
    Ok((dir, commit, tags))
}

/// Runs the launch with the step's environment, appending its output to `log`.
async fn run_logged(
    args: &StepArgs,
    item: &WorkItem,
    launch: &Launch,
    inputs: &Path,
    outputs: &Path,
    log: &Path,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let step = &item.step;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.argv)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.dir)
        .env("MLFLOW_TRACKING_URI", &args.mlflow_uri)
        .env("MLFLOW_EXPERIMENT_ID", &step.mlflow.experiment_id)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env("PYTHONUNBUFFERED", "1")
        .env("CONCURRENT_INPUT_DIR", inputs)
        .env("CONCURRENT_OUTPUT_DIR", outputs)
        .env(
            "CONCURRENT_PARTITION_INDEX",
            step.partition_index.to_string(),
        )
        .env(
            "CONCURRENT_PARTITION_COUNT",
            step.partition_count.to_string(),
        )
        .env("CONCURRENT_RUN_ID", &item.run_id)
        .env("CONCURRENT_NODE_ID", &item.node_id)
        .env("CONCURRENT_ATTEMPT", item.attempt.to_string())
        .envs(&step.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start {:?}; is it installed (for MLflow, --mlflow-bin)?",
            launch.program
        )
    })?;
    // `mlflow run` starts the entry point as its own child: stop the whole group on every way
    // out (timeout, cancel, error), so no step process outlives its attempt.
    let _group = child.id().map(ProcessGroup);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await?;
    file.write_all(
        format!(
            "$ (in {}) {} {}\n",
            launch.dir.display(),
            launch.program,
            launch.argv.join(" ")
        )
        .as_bytes(),
    )
    .await?;
    // Raw bytes, not lines: a step may print megabyte lines, progress bars ending in `\r` and
    // bytes that are not UTF-8. The log keeps them as they are; the tail (core's `Tail`) is
    // what a person sees live, small whatever was printed.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<u8>)>(64);
    for (stream, pipe) in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((stream, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let mut tail = Tail::new(2);
    let tail_file = tail_path(log);
    let secrets = super::secret_values();
    let mut masker = OutputMasker::new(&secrets, 2);
    let collect = async {
        let mut stdout = tokio::io::stdout();
        let mut every = tokio::time::interval(TAIL_EVERY);
        let mut changed = false;
        loop {
            tokio::select! {
                received = rx.recv() => {
                    let Some((stream, raw)) = received else { break };
                    let released = masker.push(stream, &raw);
                    file.write_all(&released.log).await?;
                    if args.report_to.is_some() {
                        // In a pod, the container's own output is what `kubectl logs` shows.
                        stdout.write_all(&released.log).await?;
                    }
                    tail.push(stream, &released.stream);
                    changed = true;
                }
                _ = every.tick(), if changed => {
                    write_tail(&tail_file, &tail.text()).await;
                    changed = false;
                }
            }
        }
        let (rests, last) = masker.finish();
        for (stream, rest) in rests.iter().enumerate() {
            tail.push(stream, rest);
        }
        file.write_all(&last).await?;
        if args.report_to.is_some() {
            stdout.write_all(&last).await?;
        }
        file.flush().await?;
        write_tail(&tail_file, &tail.text()).await;
        anyhow::Ok(())
    };
    let waited = async {
        let (collected, status) = tokio::join!(collect, child.wait());
        collected?;
        anyhow::Ok(status?)
    };
    let status = match timeout {
        Some(t) => match tokio::time::timeout(t, waited).await {
            Ok(s) => s?,
            Err(_) => bail!(
                "the step timed out after {} s (timeoutSeconds) and was killed",
                t.as_secs()
            ),
        },
        None => waited.await?,
    };
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("exit code {c}"));
        let what = if launch.program == "bash" {
            "the entry point's command".to_string()
        } else {
            format!("`{} {}`", launch.program, launch.argv[0])
        };
        bail!(
            "{what} ended with {code}; last lines of the log:\n{}",
            tail.text()
        );
    }
    Ok(())
}

/// The live tail of the step whose log is `log` (read by the agent for its heartbeats).
pub fn tail_path(log: &Path) -> std::path::PathBuf {
    log.with_file_name("tail.txt")
}

/// Replaces the tail file at once (write, then rename), so a reader never sees half of it.
async fn write_tail(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if tokio::fs::write(&tmp, text).await.is_ok() {
        let _ = tokio::fs::rename(&tmp, path).await;
    }
}

/// Kills a process group when dropped.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}
