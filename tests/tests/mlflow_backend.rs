//! `mlflow run --backend concurrent`: the MLflow CLI submits a project to Concurrent.

use std::process::Command;

use concurrent_tests::{json, root, Stack};

/// `mlflow run examples/pipeline -e prepare --experiment-name <experiment> --backend concurrent`
/// with `tracking_uri`; its output and stdout+stderr.
fn mlflow_run(
    config: &std::path::Path,
    tracking_uri: &str,
    experiment: &str,
) -> (std::process::Output, String) {
    mlflow_run_with(config, tracking_uri, experiment, "no")
}

/// [`mlflow_run`] with the step's `fail` parameter.
fn mlflow_run_with(
    config: &std::path::Path,
    tracking_uri: &str,
    experiment: &str,
    fail: &str,
) -> (std::process::Output, String) {
    let out = Command::new(root().join(".venv/bin/mlflow"))
        .args(["run"])
        .arg(root().join("examples/pipeline"))
        .args([
            "-e",
            "prepare",
            "-P",
            "parts=3",
            "-P",
            &format!("fail={fail}"),
            "--experiment-name",
            experiment,
            "--backend",
            "concurrent",
            "--backend-config",
        ])
        .arg(config)
        .env("MLFLOW_TRACKING_URI", tracking_uri)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .expect("mlflow runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn mlflow_run_with_the_concurrent_backend_runs_the_project_through_an_agent() {
    let stack = Stack::shared();
    let _agent = stack.agent("cli");
    let config = stack.dir.path().join("backend.json");
    std::fs::write(
        &config,
        json!({"edge_url": stack.edge_url, "cluster": "cli", "token_file": stack.token_file})
            .to_string(),
    )
    .unwrap();
    let (out, text) = mlflow_run(&config, &stack.mlflow_url, "plugin-experiment");
    assert!(
        out.status.success(),
        "mlflow run --backend concurrent failed:\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("Concurrent run "))
        .unwrap_or_else(|| panic!("no run ids printed:\n{text}"));
    let dag_run = line
        .trim_start_matches("Concurrent run ")
        .split(',')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let run_id = line.split("step run ").nth(1).unwrap().trim().to_string();
    // Like MLflow's other remote backends, `mlflow run` returns once the run is submitted, and
    // says so, with where to watch the run.
    for said in [
        format!("watch it:  {}/#/dags/runs/{dag_run}", stack.edge_url),
        format!("follow it: concurrent runs get {dag_run} --follow"),
        "returns now, before the step has run".to_string(),
    ] {
        assert!(text.contains(&said), "{said:?} not in:\n{text}");
    }
    let dag = stack.wait_run(&dag_run, std::time::Duration::from_secs(180));
    assert_eq!(dag["status"], "succeeded", "{dag:#}");
    let run = stack.mlflow_api("GET", &format!("runs/get?run_id={run_id}"), None)["run"].clone();
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    // The experiment `mlflow run --experiment-name` chose holds the parent and the step's run.
    let experiment = stack.mlflow_api(
        "GET",
        "experiments/get-by-name?experiment_name=plugin-experiment",
        None,
    )["experiment"]["experiment_id"]
        .clone();
    assert_eq!(run["info"]["experiment_id"], experiment, "{run}");
    assert_eq!(dag["mlflow"]["experimentId"], experiment, "{dag:#}");
    assert!(stack
        .artifact(&run, "outputs/part-2.csv")
        .starts_with("sepal_length"));
    let params = run["data"]["params"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["key"] == "parts" && p["value"] == "3"),
        "{params:?}"
    );
}

#[test]
fn mlflow_run_against_another_tracking_server_says_which_one_the_edge_uses() {
    let stack = Stack::shared();
    let config = stack.dir.path().join("backend-elsewhere.json");
    std::fs::write(
        &config,
        json!({"edge_url": stack.edge_url, "cluster": "cli", "token_file": stack.token_file})
            .to_string(),
    )
    .unwrap();
    // A tracking store of the caller's own, which the edge does not write to.
    let store = tempfile::tempdir().unwrap();
    let uri = format!("sqlite:///{}/mlflow.db", store.path().display());
    let (out, text) = mlflow_run(&config, &uri, "elsewhere");
    assert!(!out.status.success(), "{text}");
    assert!(
        // Its experiment id is unknown to the edge's MLflow (refused at start), or names another
        // experiment there (the step's run is then not found at the caller's URI).
        (text.contains("does not exist in the MLflow server this edge writes to")
            || text.contains("so the run was cancelled"))
            && text.contains(&uri)
            && text.contains(
                "set MLFLOW_TRACKING_URI to the MLflow server the Concurrent edge writes to"
            ),
        "{text}"
    );
}

#[test]
fn mlflow_run_with_wait_follows_the_run_and_fails_when_the_step_fails() {
    let stack = Stack::shared();
    let _agent = stack.agent("cli-wait");
    let config = stack.dir.path().join("backend-wait.json");
    std::fs::write(
        &config,
        json!({"edge_url": stack.edge_url, "cluster": "cli-wait", "token_file": stack.token_file, "wait": true})
            .to_string(),
    )
    .unwrap();
    let (out, text) = mlflow_run_with(&config, &stack.mlflow_url, "plugin-wait", "yes");
    assert!(
        !out.status.success(),
        "a failed step must fail `mlflow run`:\n{text}"
    );
    assert!(text.contains("ended failed"), "{text}");
    assert!(!text.contains("returns now"), "{text}");
    // The run had ended when `mlflow run` returned.
    let line = text
        .lines()
        .find(|l| l.starts_with("Concurrent run "))
        .unwrap();
    let dag_run = line["Concurrent run ".len()..]
        .split(',')
        .next()
        .unwrap()
        .trim();
    let (status, run) = stack.api("GET", &format!("/api/v1/runs/{dag_run}"), None);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run:#}");
    let (out, text) = mlflow_run_with(&config, &stack.mlflow_url, "plugin-wait", "no");
    assert!(out.status.success(), "{text}");
    assert!(text.contains(": succeeded (1/1 steps done)"), "{text}");
}
