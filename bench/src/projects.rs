//! Real projects: building a `python_env` environment versus reusing it, and batch inference
//! with one model load versus `mlflow models predict` per file.

use std::time::Instant;

use concurrent_tests::{json, root, Stack};
use serde_json::Value;

use crate::{median, spread, Row};

/// Seconds from an attempt's start to its end, from the run's record.
fn seconds(run: &Value, node: usize) -> f64 {
    let a = &run["nodes"][node]["instances"][0]["attempts"][0];
    (a["endedAt"].as_f64().unwrap() - a["startedAt"].as_f64().unwrap()) / 1000.0
}

fn uv_env() -> Vec<(&'static str, String)> {
    vec![(
        "CONCURRENT_UV_BIN",
        root().join(".venv/bin/uv").display().to_string(),
    )]
}

/// A trivial entry point in its own uv environment: the first attempt on a fresh agent builds
/// it (PyPI packages from uv's own cache after the first repetition), later ones reuse it.
pub fn environments(stack: &Stack, reps: usize, rows: &mut Vec<Row>) {
    let node = json!({"id": "main", "kind": "project", "uri": "bench/projects/pyenv", "entryPoint": "main"});
    stack.put_template(
        &json!({"apiVersion": "concurrent/v1", "name": "bench-pyenv", "nodes": [node]}),
    );
    let env = uv_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut built, mut cached) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        // A fresh agent: an empty environment cache.
        let cluster = format!("bench-pyenv-{rep}");
        let _agent = stack.agent_with_env(&cluster, &[], &env);
        for (i, into) in [&mut built, &mut cached].into_iter().enumerate() {
            let id = stack.start_run(&json!({"template": "bench-pyenv", "cluster": cluster}));
            let run = stack.wait_run(&id, std::time::Duration::from_secs(600));
            assert_eq!(run["status"], "succeeded", "attempt {i}: {run:#}");
            into.push(seconds(&run, 0));
        }
    }
    let (b, c) = (median(&mut built.clone()), median(&mut cached.clone()));
    rows.push((
        "python_env project (uv): first attempt on an agent, environment built".into(),
        format!("{b:.2} s median"),
        format!("lease to report, spread {} over {reps} fresh agents (uv's package cache warm after the first)", spread(&built)),
    ));
    rows.push((
        "python_env project (uv): later attempts, environment reused".into(),
        format!("{c:.2} s median"),
        format!(
            "spread {}; {:.1}× faster than building it",
            spread(&cached),
            b / c
        ),
    ));
}

/// 100 csv files through one inference instance, versus `mlflow models predict` per file.
pub fn inference(stack: &Stack, files: usize, rows: &mut Vec<Row>) {
    let env = uv_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _agent = stack.agent_with_env("bench-inference", &["--capacity", "2"], &env);
    let t = json!({
        "apiVersion": "concurrent/v1", "name": "bench-inference",
        "nodes": [
            {"id": "train", "kind": "project", "uri": "tests/projects/sklearn", "entryPoint": "train", "parameters": {"register": "bench-iris"}},
            {"id": "data", "kind": "project", "uri": "bench/projects/batch", "entryPoint": "main", "parameters": {"files": files.to_string()}},
            {"id": "predict", "kind": "inference", "modelUri": "models:/bench-iris/1", "envManager": "local"}
        ],
        "edges": [{"from": "train", "to": "data", "input": "after"}, {"from": "data", "to": "predict", "input": "data"}]
    });
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "bench-inference", "cluster": "bench-inference"}));
    let run = stack.wait_run(&id, std::time::Duration::from_secs(900));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let ours = seconds(&run, 2);
    // Today's per-file start, measured on a sample of the same files.
    let data_run = run["nodes"][1]["instances"][0]["attempts"][0]["mlflowRunId"]
        .as_str()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sample = 5.min(files);
    let mut per_file = Vec::new();
    for i in 0..sample {
        let info = stack.mlflow_api("GET", &format!("runs/get?run_id={data_run}"), None);
        let csv = stack.artifact(&info["run"], &format!("outputs/batch-{i:03}.csv"));
        let input = dir.path().join(format!("in-{i}.csv"));
        std::fs::write(&input, csv).unwrap();
        let started = Instant::now();
        let ok = std::process::Command::new(root().join(".venv/bin/mlflow"))
            .args([
                "models",
                "predict",
                "-m",
                "models:/bench-iris/1",
                "-t",
                "csv",
                "--env-manager",
                "local",
                "-i",
            ])
            .arg(&input)
            .arg("-o")
            .arg(dir.path().join(format!("out-{i}.json")))
            .env("MLFLOW_TRACKING_URI", &stack.mlflow_url)
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mlflow models predict failed");
        per_file.push(started.elapsed().as_secs_f64());
    }
    let each = median(&mut per_file.clone());
    let theirs = each * files as f64;
    rows.push((
        format!("inference over {files} csv files, one instance: the model loaded once"),
        format!("{ours:.1} s"),
        format!("lease to report, incl. the model's download; {:.1}× faster than one `mlflow models predict` per file", theirs / ours),
    ));
    rows.push((
        format!("inference over {files} csv files: `mlflow models predict` per file (before)"),
        format!("{theirs:.0} s (estimated)"),
        format!(
            "{each:.2} s per file, median of {sample} measured (spread {}), × {files}",
            spread(&per_file)
        ),
    ));
}
