//! From a trained model to a registered one, on the real stack: a condition on the best
//! validation metric, an approval (granted through the API, refused to a reader, rejected
//! through the CLI), a register node that moves the `champion` alias to the best model with
//! lineage tags, and an alert node that runs only after a failure.

use std::process::Command;
use std::time::Duration;

use concurrent_tests::mlflow_run::tag;
use concurrent_tests::{concurrent_bin, json, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const MODEL: &str = "gated-iris";

fn template() -> Value {
    json!({
        "apiVersion": "concurrent/v1", "name": "ship-iris",
        "parameters": [{"name": "threshold", "default": "0.5"}],
        "nodes": [
            {"id": "train", "kind": "project", "uri": "tests/projects/sklearn", "entryPoint": "tune",
             "sweep": {"grid": {"C": ["0.01", "1"]}}},
            {"id": "gate", "kind": "approval", "message": "Ship the best model?",
             "compare": {"model": MODEL, "alias": "champion"}, "metrics": ["val_accuracy", "val_loss"],
             "when": "upstream.train.best.metrics.val_accuracy >= params.threshold"},
            {"id": "register", "kind": "register", "model": MODEL, "alias": "champion"},
            {"id": "alert", "kind": "project", "uri": "bench/projects/noop", "entryPoint": "main",
             "triggerRule": "anyFailed"}
        ],
        "edges": [
            {"from": "train", "to": "gate", "input": "model", "select": {"metric": "val_accuracy", "mode": "max"}},
            {"from": "gate", "to": "register", "input": "approved"},
            {"from": "train", "to": "register", "input": "model", "select": {"metric": "val_accuracy", "mode": "max"}},
            {"from": "gate", "to": "alert", "input": "gate"}
        ]
    })
}

fn node<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap()
}

fn paused(stack: &Stack, id: &str) -> Value {
    stack.wait_until(id, RUN_TIMEOUT, "the approval pauses the run", |r| {
        node(r, "gate")["instances"][0]["state"] == "paused"
    })
}

/// The parent MLflow run's tags, once it carries `key` (tags of a node's fate are written
/// right after the run's status).
fn parent_tag(stack: &Stack, run: &Value, key: &str) -> String {
    let parent = run["mlflow"]["runId"].as_str().unwrap();
    for _ in 0..100 {
        let r = stack.mlflow_api("GET", &format!("runs/get?run_id={parent}"), None)["run"].clone();
        if let Some(v) = tag(&r, key) {
            return v.to_string();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the parent run has no tag {key}");
}

fn champion(stack: &Stack) -> Value {
    stack.mlflow_api(
        "GET",
        &format!("registered-models/alias?name={MODEL}&alias=champion"),
        None,
    )["model_version"]
        .clone()
}

#[test]
fn a_gated_model_is_registered_when_approved_skipped_below_the_bar_and_kept_out_when_rejected() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("gates", &["--capacity", "2"]);
    stack.put_template(&template());
    let start = |threshold: &str| {
        stack.start_run(&json!({"template": "ship-iris", "cluster": "gates", "parameters": {"threshold": threshold}}))
    };

    // Approved: the best of the two points becomes version 1, @champion.
    let id = start("0.5");
    let run = paused(stack, &id);
    assert_eq!(run["status"], "running");
    let (status, reader) = stack.api(
        "POST",
        "/api/v1/tokens",
        Some(&json!({"name": "gates-reader", "role": "reader"})),
    );
    assert_eq!(status, 201, "{reader}");
    let decide = json!({"node": "gate", "approve": true, "note": "better than nothing"});
    let (status, body) = stack.api_as(
        reader["token"].as_str(),
        "POST",
        &format!("/api/v1/runs/{id}/decide"),
        Some(&decide),
    );
    assert_eq!(status, 403, "a reader cannot decide: {body}");
    let (status, body) = stack.api("POST", &format!("/api/v1/runs/{id}/decide"), Some(&decide));
    assert_eq!(status, 200, "{body}");
    let (status, again) = stack.api(
        "POST",
        &format!("/api/v1/runs/{id}/decide"),
        Some(&json!({"node": "gate", "approve": false})),
    );
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already approved by admin"),
        "{again}"
    );
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let best = node(&run, "gate")["selections"][0]["chosen"][0]
        .as_u64()
        .unwrap() as usize;
    let best_run = node(&run, "train")["instances"][best]["attempts"][0]["mlflowRunId"]
        .as_str()
        .unwrap();
    let v = champion(stack);
    assert_eq!(v["version"], "1", "{v:#}");
    assert_eq!(v["run_id"], best_run, "the best instance's model: {v:#}");
    assert!(
        v["source"]
            .as_str()
            .is_some_and(|m| m.starts_with("models:/m-")),
        "the logged model: {v:#}"
    );
    let tags: Vec<(&str, &str)> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), t["value"].as_str().unwrap()))
        .collect();
    assert!(
        tags.contains(&("concurrent.run_id", id.as_str())),
        "{tags:?}"
    );
    assert!(tags.contains(&("concurrent.node", "train")), "{tags:?}");
    assert!(
        tags.contains(&("concurrent.instance", best.to_string().as_str())),
        "{tags:?}"
    );
    assert_eq!(
        node(&run, "register")["registered"],
        json!({"model": MODEL, "version": "1", "sourceRun": best_run, "alias": "champion"})
    );
    assert!(
        parent_tag(stack, &run, "concurrent.approval.gate").starts_with("approved by admin at ")
    );
    assert_eq!(
        parent_tag(stack, &run, "concurrent.approval.gate.note"),
        "better than nothing"
    );
    assert_eq!(
        parent_tag(stack, &run, "concurrent.registered.register"),
        format!("{MODEL} version 1 (@champion)")
    );
    assert!(node(&run, "alert")["skipped"]
        .as_str()
        .unwrap()
        .contains("no upstream node failed"));

    // Below the bar: nothing to approve, nothing registered, the run still succeeds.
    let id = start("2");
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let why = node(&run, "gate")["skipped"].as_str().unwrap();
    assert!(
        why.contains("its condition is false") && why.contains("params.threshold = \"2\""),
        "{why}"
    );
    assert_eq!(node(&run, "gate")["instances"][0]["state"], "skipped");
    assert!(node(&run, "register")["skipped"]
        .as_str()
        .unwrap()
        .contains("\"gate\" was skipped"));
    assert!(parent_tag(stack, &run, "concurrent.skipped.gate").contains("its condition is false"));
    assert_eq!(champion(stack)["version"], "1");

    // Rejected from the terminal: the run fails, the alert runs, the champion stays.
    let id = start("0.5");
    paused(stack, &id);
    let out = Command::new(concurrent_bin())
        .args([
            "runs",
            "reject",
            &id,
            "gate",
            "--note",
            "worse than the champion",
        ])
        .env("CONCURRENT_EDGE_URL", &stack.edge_url)
        .env("CONCURRENT_TOKEN", &stack.token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("decide: run"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("rejected by admin: worse than the champion"),
        "{run:#}"
    );
    assert_eq!(
        node(&run, "alert")["instances"][0]["state"],
        "succeeded",
        "the alert ran after the failure"
    );
    assert!(node(&run, "register")["skipped"]
        .as_str()
        .unwrap()
        .contains("\"gate\" failed"));
    assert!(parent_tag(stack, &run, "concurrent.approval.gate").starts_with("rejected by admin"));
    assert_eq!(champion(stack)["version"], "1");
}
