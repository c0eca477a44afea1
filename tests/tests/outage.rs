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

    stack.start_mlflow();
    let run = stack.wait_run(&id, Duration::from_secs(240));
    assert_eq!(run["status"], "succeeded", "{run:#}");

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
