//! MLflow goes away and comes back: the run waits (its bookkeeping is retried), nothing is lost,
//! and nothing is recorded twice. Its own binary, because it stops the stack's MLflow.

use std::time::Duration;

use concurrent_tests::{example_template, json, Stack};

#[test]
fn an_mlflow_outage_delays_a_run_without_losing_or_doubling_anything() {
    let stack = Stack::shared();
    let _agent = stack.agent("outage");
    stack.put_template(&example_template("outage-pipeline", 2));

    stack.stop_mlflow();
    let id = stack.start_run(&json!({"template": "outage-pipeline", "cluster": "outage"}));
    std::thread::sleep(Duration::from_secs(8));
    let (status, run) = stack.api("GET", &format!("/api/v1/runs/{id}"), None);
    assert_eq!(
        status, 200,
        "the run is readable while MLflow is down: {run}"
    );
    assert_eq!(
        run["status"], "pending",
        "it waits for its MLflow parent run: {run:#}"
    );
    let wait = run["mlflowWait"]["message"].as_str().unwrap_or_default();
    assert!(
        wait.starts_with("waiting for MLflow:"),
        "the run says why it waits: {run:#}"
    );
    assert!(
        run["mlflowWait"]["failures"].as_u64().unwrap() >= 2,
        "retried with backoff"
    );
    // The MLflow UI behind the edge fails with a reference, never with MLflow's address.
    let port = stack.mlflow_url.rsplit(':').next().unwrap().to_string();
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "{}/ajax-api/2.0/mlflow/experiments/search",
            stack.edge_url
        ))
        .bearer_auth(&stack.token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let text = resp.text().unwrap();
    assert!(text.contains("Reference"), "{text}");
    assert!(
        !text.contains(&port) && !text.contains("127.0.0.1"),
        "no internal address: {text}"
    );

    stack.start_mlflow();
    let run = stack.wait_run(&id, Duration::from_secs(240));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(run["mlflowWait"].is_null(), "the wait is over: {run:#}");

    let experiment = run["mlflow"]["experimentId"].as_str().unwrap();
    let parents = stack.mlflow_api(
        "POST",
        "runs/search",
        Some(&json!({"experiment_ids": [experiment], "filter": format!("tags.`concurrent.run_id` = '{id}'"), "max_results": 100})),
    );
    let all = parents["runs"].as_array().unwrap();
    let parent_count = all
        .iter()
        .filter(|r| {
            !r["data"]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["key"] == "mlflow.parentRunId")
        })
        .count();
    assert_eq!(parent_count, 1, "one parent run");
    assert_eq!(
        all.len(),
        4,
        "the parent and three child runs, none twice: {}",
        all.len()
    );
}
