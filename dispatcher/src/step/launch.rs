//! Starting the user's code: a project's entry point directly (see `mlproject`), or `mlflow run`
//! where only it can (git URIs, Docker, remote `path` parameters, `--launcher mlflow`);
//! `mlflow models predict` for inference. Values travel as argv elements; an entry point's
//! command is the MLproject's own shell command with every value quoted, as MLflow runs it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use concurrent_core::template::NodeKind;
use concurrent_core::wire::WorkItem;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::mlproject::{self, Plan};
use super::{resolve, Launcher, StepArgs};
use crate::mlflow::Mlflow;

/// Lines of the log quoted in a failure message.
const TAIL_LINES: usize = 20;

/// The program to start, its arguments, its directory and extra environment.
struct Launch {
    program: String,
    argv: Vec<String>,
    dir: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
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

pub async fn run_node(
    args: &StepArgs,
    item: &WorkItem,
    mlflow: &Mlflow,
    inputs: &Path,
    outputs: &Path,
    log: &Path,
) -> anyhow::Result<()> {
    let step = &item.step;
    let timeout = step.timeout_seconds.map(Duration::from_secs);
    match &step.kind {
        NodeKind::Project(p)
            if args.launcher == Launcher::Fast && !is_git(&p.uri) && p.version.is_none() =>
        {
            let mut dir = resolve(args, &p.uri)?;
            if let Some(sub) = &p.sub_path {
                dir = dir.join(sub);
            }
            let cwd = log.parent().unwrap_or(Path::new("."));
            match mlproject::plan(&dir, &p.entry_point, &p.parameters, cwd)
                .map_err(anyhow::Error::msg)?
            {
                Plan::Direct { dir, command } => {
                    mlflow
                        .set_tag(&step.mlflow.run_id, "mlflow.project.backend", "local")
                        .await?;
                    let launch = Launch {
                        program: "bash".into(),
                        argv: vec!["-c".into(), command],
                        dir,
                        env: vec![("MLFLOW_RUN_ID", step.mlflow.run_id.clone())],
                    };
                    run_logged(args, item, &launch, inputs, outputs, log, timeout).await
                }
                Plan::Mlflow(why) => {
                    tracing::info!(item = %item.id, "starting with `mlflow run`: {why}");
                    let launch = Launch::mlflow(args, mlflow_run_argv(args, item, p)?, log);
                    run_logged(args, item, &launch, inputs, outputs, log, timeout).await
                }
            }
        }
        NodeKind::Project(p) => {
            let launch = Launch::mlflow(args, mlflow_run_argv(args, item, p)?, log);
            run_logged(args, item, &launch, inputs, outputs, log, timeout).await
        }
        NodeKind::Inference(i) => {
            let mut any = false;
            for (name, files) in &step.inputs {
                for f in files {
                    let content_type = match f.path.rsplit('.').next() {
                        Some("csv") => "csv",
                        Some("json") => "json",
                        _ => continue,
                    };
                    any = true;
                    let out = outputs
                        .join("predictions")
                        .join(name)
                        .join(format!("{}.json", f.path));
                    std::fs::create_dir_all(out.parent().expect("joined path has a parent"))?;
                    let argv = vec![
                        "models".to_string(),
                        "predict".into(),
                        "-m".into(),
                        i.model_uri.clone(),
                        "-i".into(),
                        inputs
                            .join(name)
                            .join(&f.path)
                            .to_string_lossy()
                            .into_owned(),
                        "-o".into(),
                        out.to_string_lossy().into_owned(),
                        "-t".into(),
                        content_type.into(),
                        "--env-manager".into(),
                        "local".into(),
                    ];
                    run_logged(
                        args,
                        item,
                        &Launch::mlflow(args, argv, log),
                        inputs,
                        outputs,
                        log,
                        timeout,
                    )
                    .await?;
                }
            }
            if !any {
                bail!("inference needs .csv or .json input files; this partition has none");
            }
            Ok(())
        }
        NodeKind::Input(_) => Ok(()),
    }
}

/// `mlflow run <uri> -e <entry> [-P k=v]... --env-manager local --run-id <id>`.
fn mlflow_run_argv(
    args: &StepArgs,
    item: &WorkItem,
    p: &concurrent_core::template::ProjectSpec,
) -> anyhow::Result<Vec<String>> {
    let step = &item.step;
    let mut uri = if is_git(&p.uri) {
        p.uri.clone()
    } else {
        resolve(args, &p.uri)?.to_string_lossy().into_owned()
    };
    if let Some(sub) = &p.sub_path {
        if is_git(&p.uri) {
            uri = format!("{uri}#{sub}");
        } else {
            uri = Path::new(&uri).join(sub).to_string_lossy().into_owned();
        }
    }
    let mut argv = vec!["run".to_string(), uri, "-e".into(), p.entry_point.clone()];
    if let Some(v) = &p.version {
        argv.extend(["--version".into(), v.clone()]);
    }
    for (k, v) in &p.parameters {
        argv.extend(["-P".into(), format!("{k}={v}")]);
    }
    argv.extend([
        "--env-manager".into(),
        "local".into(),
        "--experiment-id".into(),
        step.mlflow.experiment_id.clone(),
        "--run-id".into(),
        step.mlflow.run_id.clone(),
    ]);
    Ok(argv)
}

fn is_git(uri: &str) -> bool {
    uri.starts_with("https://")
        || uri.starts_with("http://")
        || uri.starts_with("git@")
        || uri.starts_with("git+")
        || uri.starts_with("ssh://")
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
        .envs(launch.env.iter().map(|(k, v)| (*k, v)))
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
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let collect = async {
        while let Some(line) = rx.recv().await {
            file.write_all(line.as_bytes()).await?;
            file.write_all(b"\n").await?;
            if args.report_to.is_some() {
                // In a pod, the container's own output is what `kubectl logs` shows.
                println!("{line}");
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        file.flush().await?;
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
        let tail: Vec<String> = tail.into_iter().collect();
        let what = if launch.program == "bash" {
            "the entry point's command".to_string()
        } else {
            format!("`{} {}`", launch.program, launch.argv[0])
        };
        bail!(
            "{what} ended with {code}; last lines of the log:\n{}",
            tail.join("\n")
        );
    }
    Ok(())
}

/// Kills a process group when dropped.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}
