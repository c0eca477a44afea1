//! A 1 → N → 1 fan-out through the control plane, with synthetic agents that do what a real
//! agent does with each lease except running a step: create the attempt's MLflow run from the
//! item's `childRun` (in MLflow, for real), then complete it at once with that run's id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack};
use serde_json::Value;

use crate::{median, pct, Row};

/// Synthetic agents, and MLflow runs each creates at once (a real agent runs up to its
/// `--capacity` steps at a time, each creating its run when it starts).
const AGENTS: usize = 8;
const PER_AGENT: usize = 4;

/// Seconds spent per component, summed over all agents' calls.
#[derive(Default)]
struct Spent {
    lease: f64,
    mlflow: f64,
    complete: f64,
}

/// The attempt's MLflow run, as the agent's `Mlflow::ensure_run` makes it (create + params).
fn create_run(stack: &Stack, item: &Value) -> String {
    let child = &item["step"]["childRun"];
    let mut tags: Vec<Value> = child["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| json!({"key": kv[0], "value": kv[1]}))
        .collect();
    tags.push(json!({"key": "mlflow.runName", "value": child["runName"]}));
    let created = stack.mlflow_api(
        "POST",
        "runs/create",
        Some(&json!({"experiment_id": item["step"]["mlflow"]["experimentId"], "run_name": child["runName"], "tags": tags})),
    );
    let run_id = created["run"]["info"]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let params: Vec<Value> = child["params"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| json!({"key": kv[0], "value": kv[1]}))
        .collect();
    if !params.is_empty() {
        stack.mlflow_api(
            "POST",
            "runs/log-batch",
            Some(&json!({"run_id": run_id, "params": params})),
        );
    }
    run_id
}

pub fn fan_out(stack: &Stack, n: usize, label: &str, rows: &mut Vec<Row>) {
    let node = |id: &str, instances: usize| json!({"id": id, "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": instances});
    let name = format!(
        "bench-fan-{}",
        label.split(',').next().unwrap_or("x").to_lowercase()
    );
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": name, "nodes": [node("a", 1), node("b", n), node("c", 1)],
        "edges": [{"from": "a", "to": "b", "partition": {"mode": "by-file"}}, {"from": "b", "to": "c"}]}));
    let id = stack.start_run(&json!({"template": name, "cluster": name}));
    let start = Instant::now();
    let leased_b = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let first_b = Mutex::new(None::<Duration>);
    let all_b = Mutex::new(None::<Duration>);
    let spent = Mutex::new(Spent::default());
    let lease_path = format!("/api/v1/agents/{name}/lease");
    let complete_path = format!("/api/v1/agents/{name}/complete");
    std::thread::scope(|s| {
        for a in 0..AGENTS {
            let (leased_b, finished, first_b, all_b, spent) =
                (&leased_b, &finished, &first_b, &all_b, &spent);
            let (lease_path, complete_path) = (&lease_path, &complete_path);
            s.spawn(move || {
                while finished.load(Ordering::Relaxed) < n + 2 {
                    assert!(start.elapsed() < Duration::from_secs(3600), "fan-out stalled at {} of {}", finished.load(Ordering::Relaxed), n + 2);
                    let t = Instant::now();
                    let (status, body) = stack.api("POST", lease_path, Some(&json!({"agent": format!("synthetic-{a}"), "max": 100, "waitMs": 1000})));
                    spent.lock().unwrap().lease += t.elapsed().as_secs_f64();
                    assert_eq!(status, 200, "{body}");
                    let leases = body["leases"].as_array().cloned().unwrap_or_default();
                    let b = leases.iter().filter(|l| l["item"]["nodeId"] == "b").count();
                    if b > 0 {
                        first_b.lock().unwrap().get_or_insert(start.elapsed());
                        if leased_b.fetch_add(b, Ordering::Relaxed) + b == n {
                            *all_b.lock().unwrap() = Some(start.elapsed());
                        }
                    }
                    // Each lease as its own step would: its MLflow run, then its completion.
                    let chunks: Vec<&[Value]> = leases.chunks(leases.len().div_ceil(PER_AGENT).max(1)).collect();
                    std::thread::scope(|s| {
                        for chunk in chunks {
                            s.spawn(move || {
                                for l in chunk {
                                    let t = Instant::now();
                                    let run_id = create_run(stack, &l["item"]);
                                    let made = t.elapsed().as_secs_f64();
                                    let outputs = if l["item"]["nodeId"] == "a" {
                                        (0..n).map(|i| json!({"path": format!("part-{i}"), "size": 1})).collect::<Vec<_>>()
                                    } else {
                                        vec![]
                                    };
                                    let done = json!({"itemId": l["item"]["id"], "token": l["token"], "mlflowRunId": run_id, "outcome": {"status": "succeeded", "outputs": outputs}});
                                    let t = Instant::now();
                                    let (status, body) = stack.api("POST", complete_path, Some(&done));
                                    assert_eq!(status, 200, "{body}");
                                    let mut sp = spent.lock().unwrap();
                                    sp.mlflow += made;
                                    sp.complete += t.elapsed().as_secs_f64();
                                    drop(sp);
                                    finished.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                        }
                    });
                }
            });
        }
    });
    let run = stack.wait_run(&id, Duration::from_secs(900));
    let end = start.elapsed();
    assert_eq!(run["status"], "succeeded");
    let all = all_b.lock().unwrap().unwrap_or(end).as_secs_f64();
    let first = first_b.lock().unwrap().unwrap_or_default().as_secs_f64();
    let sp = spent.lock().unwrap();
    rows.push((
        format!("fan-out 1 → {n} → 1 ({label}): all {n} leased"),
        format!("{all:.1} s"),
        format!(
            "first after {first:.2} s; {:.0} items/s; no MLflow call before a lease",
            n as f64 / all
        ),
    ));
    rows.push((
        format!("fan-out 1 → {n} → 1 ({label}): run start to run end"),
        format!("{:.1} s", end.as_secs_f64()),
        format!(
            "{} MLflow runs made by {AGENTS} synthetic agents, {PER_AGENT} at a time each; time in calls, summed over agents: MLflow run creation {:.0} s, completions {:.0} s, leases {:.0} s",
            n + 5,
            sp.mlflow,
            sp.complete,
            sp.lease
        ),
    ));
    drop(sp);
    let size: u64 = crate::walk(&stack.dir.path().join("wrangler/v3/do"))
        .into_iter()
        .filter(|(p, _)| p.contains("RunObject"))
        .map(|(_, s)| s)
        .sum();
    rows.push((
        format!("run objects' storage after the fan-out ({label}, all runs)"),
        format!("{:.1} MiB", size as f64 / 1048576.0),
        "SQLite files of the RunObject namespace".into(),
    ));
    // Read latency of the big run, 8 concurrent readers.
    let mut lat = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .map(|_| {
                            let t = Instant::now();
                            let (status, _) = stack.api("GET", &format!("/api/v1/runs/{id}"), None);
                            (status, t.elapsed().as_secs_f64() * 1000.0)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            lat.extend(h.join().unwrap());
        }
    });
    let errors = lat.iter().filter(|(s, _)| *s != 200).count();
    let mut ms: Vec<f64> = lat.iter().map(|(_, m)| *m).collect();
    rows.push((
        format!("GET a {n}-instance run ({label}), 8 concurrent readers"),
        format!("p50 {:.0} ms", median(&mut ms.clone())),
        format!(
            "p99 {:.0} ms, {errors} errors of {}",
            pct(&mut ms, 0.99),
            lat.len()
        ),
    ));
}
