//! Triggers on the real stack: MLflow's own signed webhook, sent when a register node moves
//! `champion`, starts batch inference on `models:/<model>@champion` exactly once (a second
//! delivery of the same move starts nothing); another template's success starts a run (the
//! cron's part); bad triggers, readers and forged deliveries are refused.

use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const MODEL: &str = "trig-iris";

fn sklearn() -> String {
    concurrent_tests::root()
        .join("tests/projects/sklearn")
        .display()
        .to_string()
}

fn runs_of(stack: &Stack, template: &str) -> Vec<Value> {
    let (status, runs) = stack.api("GET", &format!("/api/v1/runs?template={template}"), None);
    assert_eq!(status, 200, "{runs}");
    runs.as_array().unwrap().clone()
}

/// The one run of `template`, once there is one.
fn only_run(stack: &Stack, template: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let runs = runs_of(stack, template);
        assert!(runs.len() <= 1, "two runs of {template}: {runs:#?}");
        if let Some(r) = runs.first() {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "no run of {template} started");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_moved_alias_starts_batch_inference_once_and_a_success_starts_the_next_template() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("trig", &["--capacity", "2"]);
    stack.put_template(&json!({
        "apiVersion": "concurrent/v1", "name": "ship",
        "nodes": [
            {"id": "train", "kind": "project", "uri": sklearn(), "entryPoint": "tune", "envManager": "local"},
            {"id": "register", "kind": "register", "model": MODEL, "alias": "champion"}
        ],
        "edges": [{"from": "train", "to": "register", "input": "model"}]
    }));
    stack.put_template(&json!({
        "apiVersion": "concurrent/v1", "name": "batch-score",
        "parameters": [{"name": "model"}, {"name": "version"}],
        "nodes": [
            {"id": "data", "kind": "project", "uri": sklearn(), "entryPoint": "data", "envManager": "local"},
            {"id": "predict", "kind": "inference", "modelUri": "{{params.model}}", "envManager": "local"}
        ],
        "edges": [{"from": "data", "to": "predict", "input": "data"}]
    }));
    stack.put_template(&json!({
        "apiVersion": "concurrent/v1", "name": "after-ship",
        "parameters": [{"name": "source"}],
        "nodes": [{"id": "note", "kind": "project", "uri": "bench/projects/noop", "entryPoint": "main"}]
    }));

    // Refused: a field the event does not carry, a reader, a forged delivery.
    let on_champion = json!({"event": "modelAliasSet", "model": MODEL, "alias": "champion"});
    let (status, body) = stack.api("POST", "/api/v1/triggers", Some(&json!({"name": "bad", "template": "batch-score", "on": on_champion, "parameters": {"model": "{{trigger.run_id}}"}})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("parameters.model: {{trigger.run_id}} is not a field of this event"),
        "{body}"
    );
    let (_, reader) = stack.api(
        "POST",
        "/api/v1/tokens",
        Some(&json!({"name": "trig-reader", "role": "reader"})),
    );
    let (status, body) = stack.api_as(
        reader["token"].as_str(),
        "POST",
        "/api/v1/triggers",
        Some(&json!({"name": "mine", "template": "batch-score", "on": on_champion})),
    );
    assert_eq!(status, 403, "only admins create triggers: {body}");
    let forged = reqwest::blocking::Client::new()
        .post(format!("{}/hooks/mlflow", stack.edge_url))
        .header("X-MLflow-Delivery-Id", "d1")
        .header("X-MLflow-Timestamp", (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).to_string())
        .header("X-MLflow-Signature", "v1,AAAA")
        .body(json!({"entity": "model_version_alias", "action": "created", "data": {"name": MODEL, "alias": "champion", "version": "9"}}).to_string())
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401, "{}", forged.text().unwrap());

    let (status, t) = stack.api(
        "POST",
        "/api/v1/triggers",
        Some(&json!({
        "name": "score-champion", "template": "batch-score", "on": on_champion, "cluster": "trig",
        "parameters": {"model": "{{trigger.model_uri}}", "version": "{{trigger.model_version}}"}})),
    );
    assert_eq!(status, 201, "{t}");
    assert!(
        t["delivery"]
            .as_str()
            .unwrap()
            .starts_with("MLflow webhook to "),
        "{t}"
    );
    let (status, t) = stack.api("POST", "/api/v1/triggers", Some(&json!({
        "name": "after-ship", "template": "after-ship", "on": {"event": "runSucceeded", "template": "ship"},
        "cluster": "trig", "parameters": {"source": "{{trigger.run_id}}"}})));
    assert_eq!(status, 201, "{t}");

    // The register node moves the alias; MLflow's webhook starts the scoring run.
    let ship = stack.start_run(&json!({"template": "ship", "cluster": "trig"}));
    let run = stack.wait_run(&ship, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let scoring = only_run(stack, "batch-score", Duration::from_secs(60));
    let scoring = stack.wait_run(scoring["id"].as_str().unwrap(), RUN_TIMEOUT);
    assert_eq!(scoring["status"], "succeeded", "{scoring:#}");
    assert_eq!(
        scoring["parameters"]["model"],
        format!("models:/{MODEL}@champion")
    );
    assert_eq!(scoring["parameters"]["version"], "1");
    assert!(
        scoring["startedBy"].as_str().unwrap().contains(&format!(
            "trigger score-champion (alias:{MODEL}@champion:1)"
        )),
        "{scoring:#}"
    );

    // The same move delivered again (the alias set to the same version) starts nothing.
    let set = stack.mlflow_api(
        "POST",
        "registered-models/alias",
        Some(&json!({"name": MODEL, "alias": "champion", "version": "1"})),
    );
    assert!(set.is_object(), "{set}");
    std::thread::sleep(Duration::from_secs(5));
    stack.cron();
    assert_eq!(runs_of(stack, "batch-score").len(), 1, "one run per event");

    // The cron starts the run that ship's success asked for, once however often it comes.
    stack.cron();
    let after = only_run(stack, "after-ship", Duration::from_secs(30));
    stack.cron();
    let after = stack.wait_run(after["id"].as_str().unwrap(), RUN_TIMEOUT);
    assert_eq!(after["status"], "succeeded", "{after:#}");
    assert_eq!(after["parameters"]["source"], ship.as_str());
    assert_eq!(runs_of(stack, "after-ship").len(), 1);

    let (_, triggers) = stack.api("GET", "/api/v1/triggers", None);
    let t = triggers
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "score-champion")
        .unwrap();
    assert_eq!(t["fired"], 1, "{t:#}");
    assert_eq!(t["lastRunId"], scoring["id"], "{t:#}");
    assert_eq!(t["lastEvent"], format!("alias:{MODEL}@champion:1"));

    // Paused, a new move starts nothing; the trigger can be deleted.
    let (status, t) = stack.api("POST", "/api/v1/triggers/score-champion/pause", None);
    assert_eq!((status, &t["paused"]), (200, &json!(true)), "{t}");
    let (status, _) = stack.api("DELETE", "/api/v1/triggers/after-ship", None);
    assert_eq!(status, 204);
    let (status, _) = stack.api("DELETE", "/api/v1/triggers/after-ship", None);
    assert_eq!(status, 404);
}
