//! The agent protocol under load: several synthetic agents at once leasing items in batches
//! (one long-poll returns up to 50) and reporting them in batches (`/completions`), against one
//! cluster's queue, each call timed: back to back (throughput), and paced to a given rate
//! (latency at that load). Control plane only: the agents complete each item at once,
//! naming an MLflow run made before the clock starts (the fan-out measures run creation).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack};
use serde_json::Value;

use crate::{median, pct, Row};

/// How hard the agents drive the queue.
#[derive(Clone, Copy)]
pub enum Pace {
    /// Back to back, 50 items a call: the queue's throughput (latency is then mostly the wait
    /// behind the other agents' calls).
    Saturate,
    /// Together this many cycles per second, each agent leasing 10 at a time on its own
    /// schedule: the latency a cluster sees at that load.
    Rate(f64),
}

pub fn agents(stack: &Stack, agents: usize, items: usize, pace: Pace, rows: &mut Vec<Row>) {
    let batch = match pace {
        Pace::Saturate => 50,
        Pace::Rate(_) => 10,
    };
    // Each agent's time between the starts of two cycles.
    let interval = match pace {
        Pace::Saturate => Duration::ZERO,
        Pace::Rate(rate) => Duration::from_secs_f64(agents as f64 * batch as f64 / rate),
    };
    let template = format!("bench-load-{batch}");
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": template,
        "nodes": [{"id": "w", "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": items}]}));
    let id = stack.start_run(&json!({"template": template, "cluster": template}));
    let (lease_path, completions_path) = (
        &format!("/api/v1/agents/{template}/lease"),
        &format!("/api/v1/agents/{template}/completions"),
    );
    stack.wait_until(&id, Duration::from_secs(600), "every item queued", |r| {
        r["mlflow"]["experimentId"].is_string()
            && r["nodes"][0]["instances"]
                .as_array()
                .is_some_and(|i| i.len() == items && i.iter().all(|x| x["state"] == "queued"))
    });
    let experiment = stack
        .api("GET", &format!("/api/v1/runs/{id}/overview"), None)
        .1["run"]["mlflow"]["experimentId"]
        .clone();
    // The attempts' MLflow runs, made before the clock starts.
    let http = &reqwest::blocking::Client::new();
    let pool: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let experiment = experiment.clone();
                s.spawn(move || {
                    let body = json!({"experiment_id": experiment});
                    (0..items.div_ceil(2))
                        .map(|_| {
                            crate::scale::mlflow(http, stack, "runs/create", &body)["run"]["info"]
                                ["run_id"]
                                .as_str()
                                .unwrap()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let next_run = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let (mut lease_ms, mut complete_ms, mut errors) = (vec![], vec![], 0usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..agents)
            .map(|a| {
                let (done, next_run, pool) = (&done, &next_run, &pool);
                s.spawn(move || {
                    let (mut lease, mut complete, mut errors) = (vec![], vec![], 0usize);
                    // Agents start spread over one interval, as independent agents would.
                    let mut next = Instant::now() + interval.mul_f64(a as f64 / agents as f64);
                    while done.load(Ordering::Relaxed) < items {
                        assert!(started.elapsed() < Duration::from_secs(1800), "load run stalled at {} of {items}", done.load(Ordering::Relaxed));
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        next += interval;
                        let t = Instant::now();
                        let (status, body) = stack.api("POST", lease_path, Some(&json!({"agent": format!("load-{a}"), "max": batch, "waitMs": 0})));
                        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                        if status != 200 {
                            errors += 1;
                            continue;
                        }
                        let leases = body["leases"].as_array().cloned().unwrap_or_default();
                        if leases.is_empty() {
                            // The last items are with other agents.
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        lease.push(elapsed);
                        let completions: Vec<Value> = leases
                            .iter()
                            .map(|l| {
                                let run = &pool[next_run.fetch_add(1, Ordering::Relaxed) % pool.len()];
                                json!({"itemId": l["item"]["id"], "token": l["token"], "mlflowRunId": run, "outcome": {"status": "succeeded", "outputs": []}})
                            })
                            .collect();
                        let t = Instant::now();
                        let (status, body) = stack.api("POST", completions_path, Some(&json!({"completions": completions})));
                        complete.push(t.elapsed().as_secs_f64() * 1000.0);
                        if status != 200 {
                            errors += 1;
                            continue;
                        }
                        let accepted = body["results"].as_array().unwrap().iter().filter(|r| r["refused"].is_null()).count();
                        errors += leases.len() - accepted;
                        done.fetch_add(accepted, Ordering::Relaxed);
                    }
                    (lease, complete, errors)
                })
            })
            .collect();
        for h in handles {
            let (l, c, e) = h.join().unwrap();
            lease_ms.extend(l);
            complete_ms.extend(c);
            errors += e;
        }
    });
    let busy = started.elapsed();
    let run = stack.wait_run(&id, Duration::from_secs(900));
    assert_eq!(run["status"], "succeeded", "the load run ends");
    let calls = lease_ms.len() + complete_ms.len();
    let what = match pace {
        Pace::Saturate => format!("agent protocol under load: {agents} agents, {items} lease+complete cycles, batches of {batch}"),
        Pace::Rate(rate) => format!("agent protocol at {rate:.0} cycles/s offered: {agents} agents, {items} cycles, batches of {batch}"),
    };
    rows.push((
        what,
        format!("{:.0} cycles/s", items as f64 / busy.as_secs_f64()),
        format!(
            "per call: lease p50 {:.0} ms / p99 {:.0} ms; completions p50 {:.0} ms / p99 {:.0} ms; {errors} errors in {calls} calls",
            median(&mut lease_ms.clone()),
            pct(&mut lease_ms, 0.99),
            median(&mut complete_ms.clone()),
            pct(&mut complete_ms, 0.99)
        ),
    ));
}
