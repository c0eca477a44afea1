//! Step caching: what rerunning a DAG costs after only its last step changed, against the same
//! rerun with the cache ignored (every environment already warm, so only the cache differs).

use std::collections::BTreeMap;
use std::time::Duration;

use concurrent_tests::{json, Stack};
use serde_json::Value;

use crate::{median, spread, Row};

/// Seconds from a run's creation to its end, from its record.
fn wall(run: &Value) -> f64 {
    (run["endedAt"].as_f64().unwrap() - run["createdAt"].as_f64().unwrap()) / 1000.0
}

/// Seconds of every attempt of each node, summed (what the node occupied the agent for).
fn node_seconds(run: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for node in run["nodes"].as_array().unwrap() {
        let total: f64 = node["instances"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["attempts"].as_array().unwrap())
            .map(|a| (a["endedAt"].as_f64().unwrap() - a["startedAt"].as_f64().unwrap()) / 1000.0)
            .sum();
        out.insert(node["id"].as_str().unwrap().to_string(), total);
    }
    out
}

/// A real scikit-learn pipeline: the data, a 4-point sweep of a logistic regression, the best
/// one by validation loss into a last step. `rep` makes each repetition's first run cold.
fn template(rep: usize, title: &str) -> Value {
    let env = json!({"BENCH_REP": rep.to_string()});
    json!({
        "apiVersion": "concurrent/v1", "name": "bench-cache", "cache": {"enabled": true},
        "nodes": [
            {"id": "data", "kind": "project", "uri": "tests/projects/sklearn", "entryPoint": "data", "env": env},
            {"id": "tune", "kind": "project", "uri": "tests/projects/sklearn", "entryPoint": "tune", "env": env,
             "sweep": {"grid": {"C": ["0.1", "1", "10", "100"]}}},
            {"id": "last", "kind": "project", "uri": "bench/projects/noop", "entryPoint": "main", "env": env,
             "parameters": {"title": title}}
        ],
        "edges": [
            {"from": "data", "to": "tune", "input": "data"},
            {"from": "tune", "to": "last", "input": "model", "select": {"metric": "val_loss", "mode": "min"}}
        ]
    })
}

pub fn rerun_after_the_last_step_changed(stack: &Stack, reps: usize, rows: &mut Vec<Row>) {
    let _agent = stack.agent_with("bench-cache", &["--capacity", "2"]);
    let go = |body: Value| {
        let id = stack.start_run(&body);
        let run = stack.wait_run(&id, Duration::from_secs(900));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        run
    };
    let (mut cached, mut uncached) = (Vec::new(), Vec::new());
    let mut per_node: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for rep in 0..reps {
        stack.put_template(&template(rep, "first"));
        go(json!({"template": "bench-cache", "cluster": "bench-cache"}));
        stack.put_template(&template(rep, "second"));
        let with = go(json!({"template": "bench-cache", "cluster": "bench-cache"}));
        let without =
            go(json!({"template": "bench-cache", "cluster": "bench-cache", "ignoreCache": true}));
        let reused: usize = with["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["instances"].as_array().unwrap())
            .filter(|i| !i["attempts"][0]["facts"]["cachedFrom"].is_null())
            .count();
        assert_eq!(reused, 5, "data and the four tune points reused: {with:#}");
        eprintln!(
            "caching rep {}: {:.1} s with the cache, {:.1} s without",
            rep + 1,
            wall(&with),
            wall(&without)
        );
        cached.push(wall(&with));
        uncached.push(wall(&without));
        for (node, s) in node_seconds(&with) {
            per_node.entry(node).or_default().0.push(s);
        }
        for (node, s) in node_seconds(&without) {
            per_node.entry(node).or_default().1.push(s);
        }
    }
    let (c, u) = (median(&mut cached.clone()), median(&mut uncached.clone()));
    let breakdown: Vec<String> = per_node
        .iter_mut()
        .map(|(node, (w, wo))| format!("{node} {:.2} s vs {:.2} s", median(w), median(wo)))
        .collect();
    rows.push((
        "rerun after changing only the last step (scikit-learn data → 4-point sweep → best → last step), step cache on vs ignored".into(),
        format!("{c:.2} s vs {u:.2} s median: **{:.2} s saved** ({:.1}× faster)", u - c, u / c),
        format!(
            "wall time run start to end, spreads {} / {}; attempt seconds per node (cached vs not): {}; environments warm in both",
            spread(&cached),
            spread(&uncached),
            breakdown.join(", ")
        ),
    ));
}
