//! The foundation's end-to-end slice: a two-node template through the real edge API (workerd),
//! a real agent (local executor, `mlflow run`), and a real MLflow server, checked in MLflow.

use std::collections::BTreeSet;
use std::time::Duration;

use concurrent_tests::mlflow_run::{param, tag};
use concurrent_tests::{example_template, json, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn children(stack: &Stack, experiment_id: &str, parent: &str) -> Vec<Value> {
    let found = stack.mlflow_api(
        "POST",
        "runs/search",
        Some(&json!({"experiment_ids": [experiment_id], "filter": format!("tags.mlflow.parentRunId = '{parent}'"), "max_results": 100})),
    );
    found["runs"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_two_node_dag_runs_end_to_end_and_mlflow_records_every_step() {
    let stack = Stack::shared();
    let _agent = stack.agent("slice");
    let template = example_template("slice-pipeline", 2);

    // 1. Saved after validation; stored and readable.
    assert_eq!(stack.put_template(&template), 1);
    let (status, stored) = stack.api("GET", "/api/v1/templates/slice-pipeline", None);
    assert_eq!(status, 200);
    let parse = |v: &Value| serde_json::from_value::<concurrent_core::Template>(v.clone()).unwrap();
    assert_eq!(
        parse(&stored["template"]),
        parse(&template),
        "stored as sent (defaults filled in)"
    );

    // 2. A run creates the MLflow experiment and parent run, then the steps run.
    let id = stack.start_run(
        &json!({"template": "slice-pipeline", "cluster": "slice", "parameters": {"parts": "5"}}),
    );
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");

    // 3. The partitions were planned from prepare's manifest: 5 files over 2 instances, by bytes.
    let train = &run["nodes"][1];
    assert_eq!(train["id"], "train");
    let slices: Vec<BTreeSet<String>> = train["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["inputs"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(slices.len(), 2);
    let all: BTreeSet<String> = slices.iter().flatten().cloned().collect();
    assert_eq!(
        all,
        (0..5).map(|i| format!("part-{i}.csv")).collect(),
        "every part file goes to exactly one instance"
    );
    assert_eq!(slices[0].len() + slices[1].len(), 5);
    assert!(
        slices[0].len().abs_diff(slices[1].len()) <= 1,
        "balanced: {slices:?}"
    );

    // 4. In MLflow: the parent run and three child runs, with statuses, tags, params, artifacts.
    let mlflow = &run["mlflow"];
    let (experiment_id, parent_id) = (
        mlflow["experimentId"].as_str().unwrap(),
        mlflow["runId"].as_str().unwrap(),
    );
    let experiment = stack.mlflow_api(
        "GET",
        &format!("experiments/get?experiment_id={experiment_id}"),
        None,
    );
    assert_eq!(
        experiment["experiment"]["name"],
        "concurrent/slice-pipeline"
    );
    let parent =
        stack.mlflow_api("GET", &format!("runs/get?run_id={parent_id}"), None)["run"].clone();
    assert_eq!(parent["info"]["status"], "FINISHED");
    assert_eq!(tag(&parent, "concurrent.run_id"), Some(id.as_str()));
    assert_eq!(tag(&parent, "concurrent.template_version"), Some("1"));
    assert_eq!(param(&parent, "parts"), Some("5"));

    let kids = children(stack, experiment_id, parent_id);
    assert_eq!(kids.len(), 3, "prepare + 2 train instances");
    let mut seen_by_instance = Vec::new();
    for kid in &kids {
        assert_eq!(kid["info"]["status"], "FINISHED", "{kid:#}");
        let node = tag(kid, "concurrent.node").unwrap();
        let instance: usize = tag(kid, "concurrent.instance").unwrap().parse().unwrap();
        assert_eq!(tag(kid, "concurrent.attempt"), Some("1"));
        assert!(tag(kid, "concurrent.partition").is_some());
        assert!(
            stack
                .artifact(kid, "logs/step.log")
                .contains(&format!("{node}.py")),
            "the step log, with the command it ran, is an artifact"
        );
        // Started as `mlflow run --env-manager local` would be (the fast launcher's parity).
        assert_eq!(tag(kid, "mlflow.project.backend"), Some("local"));
        if node == "prepare" {
            assert_eq!(
                param(kid, "parts"),
                Some("5"),
                "the resolved project parameters are logged"
            );
            assert!(stack
                .artifact(kid, "outputs/part-4.csv")
                .starts_with("sepal_length"));
        } else {
            assert_eq!(node, "train");
            // The step itself wrote the names of the files it read: exactly its own partition.
            let seen: BTreeSet<String> = stack
                .artifact(kid, "outputs/seen_files.txt")
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(
                seen, slices[instance],
                "train[{instance}] saw exactly its own partition"
            );
            // The metric the user's code logged lands in the pre-created child run.
            let metrics = kid["data"]["metrics"].as_array().unwrap();
            assert!(
                metrics
                    .iter()
                    .any(|m| m["key"] == "files" && m["value"].as_f64() == Some(seen.len() as f64)),
                "{metrics:?}"
            );
            seen_by_instance.push(instance);
        }
    }
    seen_by_instance.sort();
    assert_eq!(seen_by_instance, vec![0, 1]);

    // 5. The run list shows it.
    let (status, list) = stack.api("GET", "/api/v1/runs?template=slice-pipeline", None);
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], json!(id));
    assert_eq!(list[0]["status"], "succeeded");
}

#[test]
fn a_failing_step_fails_the_run_with_its_error_and_nothing_hangs() {
    let stack = Stack::shared();
    let _agent = stack.agent("failing");
    stack.put_template(&example_template("failing-pipeline", 2));
    let id = stack.start_run(&json!({"template": "failing-pipeline", "cluster": "failing", "parameters": {"fail": "yes"}}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("node \"train\""), "{error}");
    assert!(
        error.contains("failing on purpose"),
        "the step's own message reaches the API: {error}"
    );
    // Fail-fast: the first instance to fail ends the run; the other one is failed or cancelled.
    let attempts: Vec<&Value> = run["nodes"][1]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["attempts"][0])
        .collect();
    let failed: Vec<&&Value> = attempts.iter().filter(|a| a["state"] == "failed").collect();
    assert!(!failed.is_empty(), "{attempts:?}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("exit code"),
        "{attempts:?}"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a["state"] == "failed" || a["state"] == "cancelled"),
        "{attempts:?}"
    );
    let parent = stack.mlflow_api(
        "GET",
        &format!(
            "runs/get?run_id={}",
            run["mlflow"]["runId"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(parent["run"]["info"]["status"], "FAILED");
}

#[test]
fn invalid_templates_are_refused_with_every_problem() {
    let stack = Stack::shared();
    let mut t = example_template("broken", 2);
    t["nodes"][1]["instances"] = json!(0);
    t["edges"][0]["partition"]["mode"] = json!("by-magic");
    t["edges"][0]["to"] = json!("ghost");
    let (status, body) = stack.api("PUT", "/api/v1/templates/broken", Some(&t));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_template");
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/nodes/1/instances",
            "/edges/0/to",
            "/edges/0/partition/mode"
        ],
        "{body:#}"
    );
    // Nothing was stored.
    assert_eq!(stack.api("GET", "/api/v1/templates/broken", None).0, 404);
    // A draft may be saved, but not run.
    let (status, saved) = stack.api("PUT", "/api/v1/templates/broken?draft=true", Some(&t));
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["problems"].as_array().unwrap().len(), 3);
    let (status, refused) = stack.api("POST", "/api/v1/runs", Some(&json!({"template": "broken"})));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["details"].as_array().unwrap().len(), 3);
    // Malformed JSON names the place.
    let (status, body) = stack.api_with(
        "PUT",
        "/api/v1/templates/x",
        None,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn concurrent_saves_conflict_instead_of_losing_an_update() {
    let stack = Stack::shared();
    let t = example_template("versioned", 1);
    let (status, _) = stack.api("PUT", "/api/v1/templates/versioned", Some(&t));
    assert_eq!(status, 201);
    let (status, body) = stack.api("PUT", "/api/v1/templates/versioned", Some(&t));
    assert_eq!(
        status, 409,
        "a second create without If-Match conflicts: {body}"
    );
    let (status, _) = stack.api_with(
        "PUT",
        "/api/v1/templates/versioned",
        Some(&t),
        &[("If-Match", "1")],
    );
    assert_eq!(status, 201);
    let (status, body) = stack.api_with(
        "PUT",
        "/api/v1/templates/versioned",
        Some(&t),
        &[("If-Match", "1")],
    );
    assert_eq!(status, 409, "a stale If-Match conflicts: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 2"),
        "{body}"
    );
    let (status, _) = stack.api_with(
        "PUT",
        "/api/v1/templates/versioned",
        Some(&t),
        &[("If-Match", "*")],
    );
    assert_eq!(status, 201, "If-Match: * saves over any version");
    let (_, versions) = stack.api("GET", "/api/v1/templates/versioned/versions", None);
    assert_eq!(versions.as_array().unwrap().len(), 3);
}

#[test]
fn every_endpoint_needs_credentials() {
    let stack = Stack::shared();
    let client = reqwest::blocking::Client::new();
    for (method, path) in [
        ("GET", "/api/v1/templates"),
        ("POST", "/api/v1/runs"),
        ("POST", "/api/v1/agents/local/lease"),
        ("GET", "/"),
    ] {
        let resp = client
            .request(method.parse().unwrap(), format!("{}{path}", stack.edge_url))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
        let resp = client
            .request(method.parse().unwrap(), format!("{}{path}", stack.edge_url))
            .bearer_auth("wrong")
            .send()
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            401,
            "{method} {path} with a wrong token"
        );
    }
}
