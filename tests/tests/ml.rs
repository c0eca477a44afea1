//! What every training pipeline does, on the real stack: a grid sweep of a real scikit-learn
//! project whose best model by a validation metric reaches an inference node, a random sweep
//! drawn again the same, what each attempt used, and step caching (reused, missed when its
//! artifacts are gone, ignored on request).

use std::collections::BTreeMap;
use std::time::Duration;

use concurrent_tests::mlflow_run::{metric, param, tag};
use concurrent_tests::{example_template, json, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn mlflow_run(stack: &Stack, id: &str) -> Value {
    stack.mlflow_api("GET", &format!("runs/get?run_id={id}"), None)["run"].clone()
}

/// The MLflow runs of a node's instances (their last attempts), by instance.
fn node_runs(stack: &Stack, run: &Value, node: &str) -> Vec<Value> {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node)
        .unwrap_or_else(|| panic!("no node {node}"))["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let a = i["attempts"].as_array().unwrap().last().unwrap();
            mlflow_run(stack, a["mlflowRunId"].as_str().expect("an MLflow run"))
        })
        .collect()
}

fn sklearn() -> String {
    "tests/projects/sklearn".into()
}

#[test]
fn a_grid_sweep_picks_the_best_model_by_its_validation_loss_for_inference() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("sweep", &["--capacity", "3"]);
    let t = json!({
        "apiVersion": "concurrent/v1",
        "name": "sweep-and-infer",
        "nodes": [
            {"id": "tune", "kind": "project", "uri": sklearn(), "entryPoint": "tune", "envManager": "local",
             "sweep": {"grid": {"C": ["0.01", "0.1", "1"], "fit_intercept": ["true", "false"]}}},
            {"id": "data", "kind": "project", "uri": sklearn(), "entryPoint": "data", "envManager": "local"},
            {"id": "predict", "kind": "inference", "modelUri": "{{upstream.tune.best.model_uri}}", "envManager": "local"}
        ],
        "edges": [
            {"from": "tune", "to": "predict", "input": "best", "select": {"metric": "val_loss", "mode": "min"}},
            {"from": "data", "to": "predict", "input": "data"}
        ]
    });
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "sweep-and-infer", "cluster": "sweep"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let tunes = node_runs(stack, &run, "tune");
    assert_eq!(tunes.len(), 6, "2 × 3 points");
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in tunes.iter().enumerate() {
        assert_eq!(
            tag(r, "concurrent.sweep.point"),
            Some(i.to_string().as_str())
        );
        seen.insert((
            param(r, "C").unwrap().to_string(),
            param(r, "fit_intercept").unwrap().to_string(),
        ));
        // What the attempt used, on its own run.
        assert!(metric(r, "concurrent.wall_seconds").unwrap() > 0.0, "{r:#}");
        assert!(metric(r, "concurrent.cpu_seconds").unwrap() > 0.0, "{r:#}");
        assert!(
            metric(r, "concurrent.peak_memory_bytes").unwrap() > 1e6,
            "{r:#}"
        );
    }
    assert_eq!(seen.len(), 6, "every combination once: {seen:?}");
    // The best by val_loss, as MLflow has the metrics.
    let best = tunes
        .iter()
        .min_by(|a, b| {
            metric(a, "val_loss")
                .unwrap()
                .total_cmp(&metric(b, "val_loss").unwrap())
        })
        .unwrap();
    let best_id = best["info"]["run_id"].as_str().unwrap();
    let predict_node = &run["nodes"][2];
    let sel = &predict_node["selections"][0];
    assert_eq!(sel["metric"], "val_loss");
    assert_eq!(sel["candidates"].as_array().unwrap().len(), 6);
    let chosen = sel["chosen"][0].as_u64().unwrap() as usize;
    assert_eq!(tunes[chosen]["info"]["run_id"], best_id, "{sel:#}");
    // Inference ran on the best attempt's logged model.
    let predict = &node_runs(stack, &run, "predict")[0];
    let model_uri = param(predict, "model_uri").unwrap();
    assert!(
        model_uri.starts_with("models:/m-"),
        "the logged model: {model_uri}"
    );
    let models: Value = stack.mlflow_api(
        "GET",
        &format!("logged-models/{}", &model_uri["models:/".len()..]),
        None,
    );
    assert_eq!(
        models["model"]["info"]["source_run_id"], best_id,
        "{models:#}"
    );
    let got: Value =
        serde_json::from_str(&stack.artifact(predict, "outputs/predictions/data/part-0.csv.json"))
            .unwrap();
    assert_eq!(got["predictions"].as_array().unwrap().len(), 50);
    // The parent run records the choice, with every candidate's value.
    let parent = mlflow_run(stack, run["mlflow"]["runId"].as_str().unwrap());
    assert_eq!(
        tag(&parent, "concurrent.select.predict.best.chosen"),
        Some(best_id)
    );
    assert_eq!(
        tag(&parent, "concurrent.select.predict.best.metric"),
        Some("min val_loss")
    );
    let recorded: Value =
        serde_json::from_str(&stack.artifact(&parent, "selections/predict.best.json")).unwrap();
    assert_eq!(recorded["candidates"].as_array().unwrap().len(), 6);
    // And what the whole run used.
    assert!(
        metric(&parent, "concurrent.cpu_seconds").unwrap() > 0.0,
        "{parent:#}"
    );
    assert!(
        metric(&parent, "concurrent.node.tune.cpu_seconds").unwrap() > 0.0,
        "{parent:#}"
    );
}

#[test]
fn a_random_sweep_draws_the_same_points_when_run_again() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("random", &["--capacity", "3"]);
    let t = json!({
        "apiVersion": "concurrent/v1",
        "name": "random-sweep",
        "nodes": [{"id": "tune", "kind": "project", "uri": sklearn(), "entryPoint": "tune", "envManager": "local",
                   "sweep": {"random": {"samples": 3, "seed": 42, "parameters": {"C": {"logUniform": [0.001, 10.0]}}}}}]
    });
    stack.put_template(&t);
    let values = || -> Vec<String> {
        let id = stack.start_run(&json!({"template": "random-sweep", "cluster": "random"}));
        let run = stack.wait_run(&id, RUN_TIMEOUT);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        node_runs(stack, &run, "tune")
            .iter()
            .map(|r| param(r, "C").unwrap().to_string())
            .collect()
    };
    let first = values();
    assert_eq!(first.len(), 3);
    for c in &first {
        let c: f64 = c.parse().unwrap();
        assert!((0.001..=10.0).contains(&c), "{c}");
    }
    assert_eq!(first, values(), "the same seed, the same points");
}

/// The example pipeline with caching on for every node.
fn cached_pipeline(name: &str, report_title: &str) -> Value {
    let mut t = example_template(name, 3);
    t["cache"] = json!({"enabled": true});
    t["nodes"][2]["parameters"] = json!({"title": report_title});
    t
}

/// How each node's last attempts went: (reused from a cache, ran).
fn reuse(stack: &Stack, run: &Value) -> BTreeMap<String, (usize, usize)> {
    let mut out = BTreeMap::new();
    for node in ["prepare", "train", "report"] {
        for r in node_runs(stack, run, node) {
            let e: &mut (usize, usize) = out.entry(node.to_string()).or_default();
            if tag(&r, "concurrent.cache.hit").is_some() {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    out
}

#[test]
fn an_unchanged_step_is_reused_and_only_what_changed_runs_again() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("cache", &["--capacity", "2"]);
    let name = "cached-pipeline";
    stack.put_template(&cached_pipeline(name, "one"));
    let go = |body: Value| {
        let id = stack.start_run(&body);
        let run = stack.wait_run(&id, RUN_TIMEOUT);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        run
    };
    let first = go(json!({"template": name, "cluster": "cache"}));
    let all_ran = BTreeMap::from([
        ("prepare".to_string(), (0, 1)),
        ("report".to_string(), (0, 1)),
        ("train".to_string(), (0, 2)),
    ]);
    assert_eq!(reuse(stack, &first), all_ran, "nothing to reuse yet");
    // Unchanged: every step is reused, and none started its process.
    let second = go(json!({"template": name, "cluster": "cache"}));
    assert_eq!(
        reuse(stack, &second),
        BTreeMap::from([
            ("prepare".to_string(), (1, 0)),
            ("report".to_string(), (1, 0)),
            ("train".to_string(), (2, 0)),
        ])
    );
    let report = &node_runs(stack, &second, "report")[0];
    let log = stack.artifact(report, "logs/step.log");
    assert!(log.contains("cache hit"), "{log}");
    assert!(!log.contains("$ (in"), "no process started: {log}");
    let from = &second["nodes"][2]["instances"][0]["attempts"][0]["facts"]["cachedFrom"];
    assert_eq!(
        from["runId"], first["id"],
        "it names the run it reused: {from}"
    );
    assert_eq!(
        tag(report, "concurrent.cache.hit"),
        first["nodes"][2]["instances"][0]["attempts"][0]["mlflowRunId"].as_str()
    );
    // Only the last step changed: only it runs.
    stack.put_template(&cached_pipeline(name, "two"));
    let third = go(json!({"template": name, "cluster": "cache"}));
    assert_eq!(
        reuse(stack, &third),
        BTreeMap::from([
            ("prepare".to_string(), (1, 0)),
            ("report".to_string(), (0, 1)),
            ("train".to_string(), (2, 0)),
        ])
    );
    // Started ignoring the cache: everything runs.
    let fourth = go(json!({"template": name, "cluster": "cache", "ignoreCache": true}));
    assert_eq!(reuse(stack, &fourth), all_ran);
    // A cached result whose files are gone is not reused: prepare runs again.
    let prepare = &node_runs(stack, &fourth, "prepare")[0];
    let uri = prepare["info"]["artifact_uri"].as_str().unwrap();
    let rest = uri.strip_prefix("mlflow-artifacts:/").unwrap();
    let outputs = stack
        .dir
        .path()
        .join("artifacts")
        .join(rest)
        .join("outputs");
    std::fs::remove_dir_all(&outputs).unwrap_or_else(|e| panic!("{}: {e}", outputs.display()));
    let fifth = go(json!({"template": name, "cluster": "cache"}));
    let r = reuse(stack, &fifth);
    assert_eq!(r["prepare"], (0, 1), "{r:?}");
    let log = stack.artifact(&node_runs(stack, &fifth, "prepare")[0], "logs/step.log");
    assert!(
        log.contains("cannot be reused") && log.contains("is gone"),
        "{log}"
    );
}

/// `examples/sweep` as `make up` loads it: three smoothings, the most accurate merged alone,
/// and a second run served entirely by the cache.
#[test]
fn the_sweep_example_merges_the_most_accurate_model_and_a_rerun_is_all_cached() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("example", &["--capacity", "3"]);
    let text =
        std::fs::read_to_string(concurrent_tests::root().join("examples/sweep/template.json"))
            .unwrap();
    let template: Value = serde_json::from_str(&text).unwrap();
    stack.put_template(&template);
    let go = || {
        let id = stack.start_run(&json!({"template": "iris-sweep", "cluster": "example"}));
        let run = stack.wait_run(&id, RUN_TIMEOUT);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        run
    };
    let first = go();
    let trains = node_runs(stack, &first, "train");
    let smoothings: Vec<&str> = trains
        .iter()
        .map(|r| param(r, "smoothing").unwrap())
        .collect();
    assert_eq!(smoothings, ["0", "5", "20"]);
    let accuracy: Vec<f64> = trains
        .iter()
        .map(|r| metric(r, "accuracy").expect("accuracy logged"))
        .collect();
    let best = (0..3)
        .max_by(|&a, &b| accuracy[a].total_cmp(&accuracy[b]))
        .unwrap();
    assert!(
        accuracy.iter().filter(|&&a| a == accuracy[best]).count() == 1,
        "one best: {accuracy:?}"
    );
    let selection = &first["nodes"][2]["selections"][0];
    assert_eq!(selection["chosen"], json!([best]), "{selection:#}");
    let report = &node_runs(stack, &first, "report")[0];
    let merged: Value =
        serde_json::from_str(&stack.artifact(report, "outputs/merged_model.json")).unwrap();
    assert_eq!(
        merged["models"], 1,
        "only the best model reaches report: {merged}"
    );
    assert_eq!(reuse(stack, &first).values().map(|r| r.0).sum::<usize>(), 0);

    let second = go();
    assert_eq!(
        reuse(stack, &second),
        BTreeMap::from([
            ("prepare".to_string(), (1, 0)),
            ("report".to_string(), (1, 0)),
            ("train".to_string(), (3, 0)),
        ])
    );
    assert_eq!(
        second["nodes"][2]["selections"][0]["chosen"],
        json!([best]),
        "the cached metrics choose the same"
    );
}
