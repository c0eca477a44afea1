//! Many small runs at once (the figure Argo publishes: workflows a minute): `n` runs of a
//! one-node template started by 8 clients, with synthetic agents that lease up to 50 items a
//! call, make each attempt's MLflow run as a real agent does, and report them in one
//! `/completions` call. Each run is a parent MLflow run the edge makes and closes and a child
//! run the agent makes and the edge closes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack};

use crate::scale::{cpu_row, cpu_seconds, create_run};
use crate::{median, pct, Row};

const CLIENTS: usize = 8;
const AGENTS: usize = 8;
/// MLflow runs an agent makes at once from one batch of leases (its steps starting).
const STARTING: usize = 4;

/// `profile`: where to write the edge's CPU profile of the same window as the CPU figures.
pub fn many_runs(
    stack: &Stack,
    n: usize,
    label: &str,
    profile: Option<&std::path::Path>,
    rows: &mut Vec<Row>,
) {
    let name = "bench-many-runs";
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": name,
        "nodes": [{"id": "step", "kind": "project", "uri": "synthetic", "entryPoint": "main"}]}));
    let http = &reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let profiler = profile.map(|_| crate::profile::Profiler::of(stack));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let ids = Mutex::new(Vec::<String>::with_capacity(n));
    let post_ms = Mutex::new(Vec::<f64>::with_capacity(n));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let lease_path = format!("/api/v1/agents/{name}/lease");
    let completions_path = format!("/api/v1/agents/{name}/completions");
    let heartbeat_path = format!("/api/v1/agents/{name}/heartbeat");
    std::thread::scope(|s| {
        let (ids, post_ms, next, done) = (&ids, &post_ms, &next, &done);
        for _ in 0..CLIENTS {
            s.spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let id = stack.start_run(&json!({"template": name, "cluster": name}));
                    post_ms
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_secs_f64() * 1e3);
                    ids.lock().unwrap().push(id);
                }
            });
        }
        for a in 0..AGENTS {
            let (lease_path, completions_path, heartbeat_path) =
                (&lease_path, &completions_path, &heartbeat_path);
            s.spawn(move || {
                let agent = format!("synthetic-{a}");
                while done.load(Ordering::Relaxed) < n {
                    assert!(
                        started.elapsed() < Duration::from_secs(1800),
                        "many runs stalled at {} of {n}",
                        done.load(Ordering::Relaxed)
                    );
                    let (status, body) = stack.api(
                        "POST",
                        lease_path,
                        Some(&json!({"agent": agent, "max": 50, "waitMs": 1000})),
                    );
                    assert_eq!(status, 200, "{body}");
                    let leases = body["leases"].as_array().cloned().unwrap_or_default();
                    if leases.is_empty() {
                        continue;
                    }
                    // Confirmed at once, as an agent does before it starts a step.
                    let refs: Vec<serde_json::Value> = leases
                        .iter()
                        .map(|l| json!({"itemId": l["item"]["id"], "token": l["token"]}))
                        .collect();
                    stack.api(
                        "POST",
                        heartbeat_path,
                        Some(&json!({"agent": agent, "leases": refs})),
                    );
                    // Each step makes its MLflow run as it starts, a few at a time.
                    let made = Mutex::new(Vec::with_capacity(leases.len()));
                    std::thread::scope(|s| {
                        for chunk in leases.chunks(leases.len().div_ceil(STARTING)) {
                            let made = &made;
                            s.spawn(move || {
                                for l in chunk {
                                    let run_id = create_run(http, stack, &l["item"]);
                                    made.lock().unwrap().push(json!({"itemId": l["item"]["id"], "token": l["token"], "outcome": {"status": "succeeded", "outputs": []}, "mlflowRunId": run_id}));
                                }
                            });
                        }
                    });
                    let batch = made.into_inner().unwrap();
                    let (status, body) = stack.api(
                        "POST",
                        completions_path,
                        Some(&json!({"completions": batch})),
                    );
                    let settled = body["results"].as_array().into_iter().flatten().all(|r| {
                        r["refused"].is_null() && r["unavailable"].is_null()
                    });
                    assert!(status == 200 && settled, "completing failed: {status} {body}");
                    done.fetch_add(batch.len(), Ordering::Relaxed);
                }
            });
        }
    });
    // Waited for on the run list, a few calls, so that the CPU figures hold the runs' work and
    // not a thousand reads of their records (4.5 ms of the edge's CPU per run when it polled
    // each run's overview, the edge's profile showed).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ended = ended_runs(stack, name);
        if ended >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ended} of {n} runs ended in the run list"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu_after = cpu_seconds();
    if let (Some(p), Some(dir)) = (profiler, profile) {
        crate::profile::report(&p.stop(), &dir.join("many-runs.cpuprofile"), (n, "run"), 25);
    }
    // Every run's own record says when it was created and when it ended.
    let ids = ids.into_inner().unwrap();
    let (mut first, mut last) = (u64::MAX, 0u64);
    for id in &ids {
        loop {
            let (_, o) = stack.api("GET", &format!("/api/v1/runs/{id}/overview"), None);
            let run = &o["run"];
            if let Some(ended) = run["endedAt"].as_u64() {
                assert_eq!(run["status"], "succeeded", "{o}");
                first = first.min(run["createdAt"].as_u64().unwrap());
                last = last.max(ended);
                break;
            }
            assert!(Instant::now() < deadline, "run {id} never ended: {o}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let wall = (last - first) as f64 / 1e3;
    let mut post = post_ms.into_inner().unwrap();
    rows.push((
        format!("{n} one-step runs at once ({label}): first created to last ended"),
        format!("{:.0} runs/min", n as f64 / wall * 60.0),
        format!(
            "{wall:.1} s for {n} runs started by {CLIENTS} clients (POST /runs p50 {:.0} ms / p99 {:.0} ms); {AGENTS} synthetic agents leasing up to 50 a call, making each attempt's MLflow run, reporting each batch in one call; every run 2 MLflow runs (parent by the edge, child by the agent, both closed by the edge)",
            median(&mut post),
            pct(&mut post, 0.99)
        ),
    ));
    rows.push(cpu_row(
        format!("{n} one-step runs at once ({label}): CPU time"),
        (&cpu_before, &cpu_after),
        (n, "run"),
        started.elapsed(),
    ));
}

/// How many runs of `template` the run list shows ended, paging 500 at a time (newest first;
/// a page starts at the previous page's oldest creation time, so runs created in the same
/// millisecond are not skipped, and are counted once).
fn ended_runs(stack: &Stack, template: &str) -> usize {
    let mut ended = std::collections::HashSet::new();
    let mut before = u64::MAX / 2;
    loop {
        let (status, page) = stack.api(
            "GET",
            &format!("/api/v1/runs?template={template}&limit=500&before={before}"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        let runs = page.as_array().cloned().unwrap_or_default();
        for r in &runs {
            if r["endedAt"].is_u64() {
                ended.insert(r["id"].as_str().unwrap_or_default().to_string());
            }
        }
        let oldest = runs.iter().filter_map(|r| r["createdAt"].as_u64()).min();
        match oldest {
            Some(t) if runs.len() == 500 => before = t + 1,
            _ => return ended.len(),
        }
    }
}
