//! `mlflow run --backend concurrent`: the MLflow CLI submits a project to Concurrent.

use std::process::Command;

use concurrent_tests::{json, root, Stack};

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
    let out = Command::new(root().join(".venv/bin/mlflow"))
        .args(["run"])
        .arg(root().join("examples/pipeline"))
        .args([
            "-e",
            "prepare",
            "-P",
            "parts=3",
            "--backend",
            "concurrent",
            "--backend-config",
        ])
        .arg(&config)
        .env("MLFLOW_TRACKING_URI", &stack.mlflow_url)
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .output()
        .expect("mlflow runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    // Like MLflow's other remote backends, `mlflow run` returns once the run is submitted.
    let dag = stack.wait_run(&dag_run, std::time::Duration::from_secs(180));
    assert_eq!(dag["status"], "succeeded", "{dag:#}");
    let run = stack.mlflow_api("GET", &format!("runs/get?run_id={run_id}"), None)["run"].clone();
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
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
