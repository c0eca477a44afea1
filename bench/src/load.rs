//! The agent protocol under load: several synthetic agents at once doing lease/complete cycles
//! against one cluster's queue, each call timed. (Control plane only: the agents complete each
//! item at once.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack};

use crate::{median, pct, Row};

pub fn agents(stack: &Stack, agents: usize, items: usize, rows: &mut Vec<Row>) {
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": "bench-load",
        "nodes": [{"id": "w", "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": items}]}));
    let id = stack.start_run(&json!({"template": "bench-load", "cluster": "bench-load"}));
    // Every item queued first (its MLflow run created), so the figure is the protocol's, not
    // MLflow's run-creation rate (that is the fan-out's figure).
    stack.wait_until(&id, Duration::from_secs(1800), "every item queued", |r| {
        r["nodes"][0]["instances"]
            .as_array()
            .is_some_and(|i| i.len() == items && i.iter().all(|x| x["state"] == "queued"))
    });
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let (mut lease_ms, mut complete_ms, mut errors, mut first) =
        (vec![], vec![], 0usize, None::<Duration>);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..agents)
            .map(|a| {
                let done = &done;
                s.spawn(move || {
                    let (mut lease, mut complete, mut errors, mut first) = (vec![], vec![], 0usize, None);
                    while done.load(Ordering::Relaxed) < items {
                        assert!(started.elapsed() < Duration::from_secs(1800), "load run stalled at {} of {items}", done.load(Ordering::Relaxed));
                        let t = Instant::now();
                        let (status, body) = stack.api("POST", "/api/v1/agents/bench-load/lease", Some(&json!({"agent": format!("load-{a}"), "max": 1, "waitMs": 0})));
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
                        first.get_or_insert(started.elapsed());
                        lease.push(elapsed);
                        for l in leases {
                            let t = Instant::now();
                            let body = json!({"itemId": l["item"]["id"], "token": l["token"], "outcome": {"status": "succeeded", "outputs": []}});
                            let (status, _) = stack.api("POST", "/api/v1/agents/bench-load/complete", Some(&body));
                            complete.push(t.elapsed().as_secs_f64() * 1000.0);
                            if status == 200 {
                                done.fetch_add(1, Ordering::Relaxed);
                            } else {
                                errors += 1;
                            }
                        }
                    }
                    (lease, complete, errors, first)
                })
            })
            .collect();
        for h in handles {
            let (l, c, e, f) = h.join().unwrap();
            lease_ms.extend(l);
            complete_ms.extend(c);
            errors += e;
            first = match (first, f) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    });
    let busy = started.elapsed() - first.unwrap_or_default();
    let run = stack.wait_run(&id, Duration::from_secs(900));
    assert_eq!(run["status"], "succeeded", "the load run ends");
    let calls = lease_ms.len() + complete_ms.len();
    rows.push((
        format!("agent protocol under load: {agents} agents, {items} lease/complete cycles"),
        format!("{:.0} cycles/s", items as f64 / busy.as_secs_f64()),
        format!(
            "lease p50 {:.0} ms / p99 {:.0} ms; complete p50 {:.0} ms / p99 {:.0} ms; {errors} errors of {calls} calls",
            median(&mut lease_ms.clone()),
            pct(&mut lease_ms, 0.99),
            median(&mut complete_ms.clone()),
            pct(&mut complete_ms, 0.99)
        ),
    ));
}
