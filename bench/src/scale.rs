//! A 1 → N → 1 fan-out through the control plane, with synthetic agents that do what a real
//! agent does with each lease except running a step: create the attempt's MLflow run from the
//! item's `childRun` (in MLflow, for real), then complete it at once with that run's id. The
//! upstream's files reach the wide node split one per instance, or all broadcast to every
//! instance (N × 100 input references: the run object's worst case for memory).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack};
use serde_json::Value;

use crate::{median, pct, Row};

/// Synthetic agents. Each leases as much as its capacity holds (the cluster has room for the
/// whole node, as a Kubernetes cluster with an autoscaler would) and runs `per_agent` steps at a
/// time, each creating its MLflow run when it starts, as a real agent does.
const AGENTS: usize = 8;

/// Seconds spent per component, summed over all agents' calls.
#[derive(Default)]
struct Spent {
    lease: f64,
    heartbeat: f64,
    mlflow: f64,
    complete: f64,
}

/// One MLflow call, tried again after a pause on a failure, as the agent's client does.
pub fn mlflow(http: &reqwest::blocking::Client, stack: &Stack, path: &str, body: &Value) -> Value {
    let url = format!("{}/api/2.0/mlflow/{path}", stack.mlflow_url);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match http.post(&url).json(body).send() {
            Ok(r) if r.status().is_success() => return r.json().expect("MLflow JSON"),
            Ok(r) if r.status().is_client_error() => {
                let text = r.text().unwrap_or_default();
                // MLflow answers an exhausted connection pool with a 400 (see the agent's client).
                assert!(
                    crate::overloaded(&text) && attempt < 20,
                    "MLflow refused {path}: {text}"
                );
                std::thread::sleep(Duration::from_millis(250 * attempt));
            }
            other => {
                assert!(attempt < 10, "MLflow {path} kept failing: {other:?}");
                std::thread::sleep(Duration::from_millis(250 * attempt));
            }
        }
    }
}

/// The attempt's MLflow run, as the agent's `Mlflow::ensure_run` makes it (create + params).
pub fn create_run(http: &reqwest::blocking::Client, stack: &Stack, item: &Value) -> String {
    let child = &item["step"]["childRun"];
    let pairs = |v: &Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|kv| json!({"key": kv[0], "value": kv[1]}))
            .collect()
    };
    let mut tags = pairs(&child["tags"]);
    tags.push(json!({"key": "mlflow.runName", "value": child["runName"]}));
    let body = json!({"experiment_id": item["step"]["mlflow"]["experimentId"], "run_name": child["runName"], "tags": tags});
    let created = mlflow(http, stack, "runs/create", &body);
    let run_id = created["run"]["info"]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let params = pairs(&child["params"]);
    if !params.is_empty() {
        mlflow(
            http,
            stack,
            "runs/log-batch",
            &json!({"run_id": run_id, "params": params}),
        );
    }
    run_id
}

/// MLflow's own ceiling for what a run asks of it per attempt (create the run, then close it),
/// with no Concurrent in the way: `attempts` of them from 32 threads against the same server.
pub fn mlflow_ceiling(stack: &Stack, attempts: usize, label: &str, rows: &mut Vec<Row>) {
    let http = &reqwest::blocking::Client::new();
    let experiment = mlflow(
        http,
        stack,
        "experiments/create",
        &json!({"name": format!("bench-ceiling-{}", std::process::id())}),
    )["experiment_id"]
        .clone();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < attempts {
                    let created = mlflow(
                        http,
                        stack,
                        "runs/create",
                        &json!({"experiment_id": experiment, "tags": [{"key": "concurrent.key", "value": "ceiling"}]}),
                    );
                    let run_id = created["run"]["info"]["run_id"].clone();
                    mlflow(
                        http,
                        stack,
                        "runs/update",
                        &json!({"run_id": run_id, "status": "FINISHED", "end_time": 1}),
                    );
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    rows.push((
        format!("MLflow alone ({label}): create + close a run, 32 clients"),
        format!("{:.0} runs/s", attempts as f64 / secs),
        format!(
            "{attempts} runs in {secs:.1} s, no Concurrent in the way: the ceiling for attempts of any fan-out here ({:.0} s for 10,000)",
            10_000.0 * secs / attempts as f64
        ),
    ));
}

/// How the upstream's files reach the wide node.
#[derive(Clone, Copy, PartialEq)]
pub enum Spread {
    /// 5,000 files split one per instance (half the instances get none).
    ByFile,
    /// 100 files every instance sees: N × 100 input references.
    Broadcast,
}

pub fn fan_out(
    stack: &Stack,
    n: usize,
    label: &str,
    spread: Spread,
    per_agent: usize,
    mlflow_runs: bool,
    rows: &mut Vec<Row>,
) {
    let id = run_fan_out(stack, n, label, spread, per_agent, mlflow_runs, rows);
    read_back(stack, &id, n, label, rows);
}

/// The fan-out itself, from its start to the run's end; the run's id.
pub fn run_fan_out(
    stack: &Stack,
    n: usize,
    label: &str,
    spread: Spread,
    per_agent: usize,
    mlflow_runs: bool,
    rows: &mut Vec<Row>,
) -> String {
    let node = |id: &str, instances: usize| json!({"id": id, "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": instances});
    let name = format!(
        "bench-fan-{}{}-{}",
        label
            .split(',')
            .next()
            .unwrap_or("x")
            .to_lowercase()
            .replace(' ', "-"),
        if mlflow_runs { "" } else { "-alone" },
        if spread == Spread::Broadcast {
            "broadcast"
        } else {
            "by-file"
        }
    );
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": name, "nodes": [node("a", 1), node("b", n), node("c", 1)],
        "edges": [{"from": "a", "to": "b", "partition": {"mode": if spread == Spread::Broadcast { "broadcast" } else { "by-file" }}}, {"from": "b", "to": "c"}]}));
    let cpu_before = cpu_seconds();
    let id = stack.start_run(&json!({"template": name, "cluster": name}));
    let start = Instant::now();
    let ended = std::sync::atomic::AtomicBool::new(false);
    let peak_rss = AtomicUsize::new(0);
    let edge_pid = stack.edge.pid();
    let leased_b = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let first_b = Mutex::new(None::<Duration>);
    let all_b = Mutex::new(None::<Duration>);
    let spent = Mutex::new(Spent::default());
    let http = &reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let heartbeat_path = &format!("/api/v1/agents/{name}/heartbeat");
    let lease_path = format!("/api/v1/agents/{name}/lease");
    let completions_path = format!("/api/v1/agents/{name}/completions");
    let capacity = n.div_ceil(AGENTS) + 16;
    std::thread::scope(|s| {
        let (ended, peak_rss, id) = (&ended, &peak_rss, &id);
        // The edge's memory (workerd holds the run objects), sampled while the run goes on.
        s.spawn(move || {
            while !ended.load(Ordering::Relaxed) {
                peak_rss.fetch_max(workerd_rss_kib(edge_pid) as usize, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        s.spawn(move || loop {
            std::thread::sleep(Duration::from_secs(2));
            let (_, o) = stack.api("GET", &format!("/api/v1/runs/{id}/overview"), None);
            let status = o["run"]["status"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "cancelled"].contains(&status) {
                ended.store(true, Ordering::Relaxed);
                return;
            }
        });
        for a in 0..AGENTS {
            let (leased_b, finished, first_b, all_b, spent) =
                (&leased_b, &finished, &first_b, &all_b, &spent);
            let (lease_path, completions_path) = (&lease_path, &completions_path);
            let agent = format!("synthetic-{a}");
            // What the agent holds (item id → lease token) and what waits for a worker.
            let held = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
            let ttl_ms = AtomicUsize::new(3000);
            let todo = Mutex::new(std::collections::VecDeque::<Value>::new());
            let reports = Mutex::new(Vec::<Value>::new());
            s.spawn(move || {
                let (held, todo, agent, ttl_ms, reports) = (&held, &todo, &agent, &ttl_ms, &reports);
                std::thread::scope(|s| {
                    // Leasing: as much as the agent's capacity has room for, 100 a call.
                    s.spawn(move || {
                        while !ended.load(Ordering::Relaxed) {
                            assert!(start.elapsed() < Duration::from_secs(3600), "fan-out stalled at {} of {}", finished.load(Ordering::Relaxed), n + 2);
                            let free = capacity - held.lock().unwrap().len();
                            if free == 0 {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            let t = Instant::now();
                            let (status, body) = stack.api("POST", lease_path, Some(&json!({"agent": agent, "max": free.min(100), "waitMs": 1000})));
                            spent.lock().unwrap().lease += t.elapsed().as_secs_f64();
                            assert_eq!(status, 200, "{body}");
                            ttl_ms.store(body["leaseTtlMs"].as_u64().unwrap_or(3000) as usize, Ordering::Relaxed);
                            let leases = body["leases"].as_array().cloned().unwrap_or_default();
                            let b = leases.iter().filter(|l| l["item"]["nodeId"] == "b").count();
                            if b > 0 {
                                first_b.lock().unwrap().get_or_insert(start.elapsed());
                                if leased_b.fetch_add(b, Ordering::Relaxed) + b == n {
                                    *all_b.lock().unwrap() = Some(start.elapsed());
                                }
                            }
                            let mut h = held.lock().unwrap();
                            for l in &leases {
                                h.insert(l["item"]["id"].as_str().unwrap().to_string(), l["token"].as_u64().unwrap());
                            }
                            drop(h);
                            // Confirmed at once, as an agent does before it starts a step.
                            if !leases.is_empty() {
                                let refs: Vec<Value> = leases.iter().map(|l| json!({"itemId": l["item"]["id"], "token": l["token"]})).collect();
                                let t = Instant::now();
                                stack.api("POST", heartbeat_path, Some(&json!({"agent": agent, "leases": refs})));
                                spent.lock().unwrap().heartbeat += t.elapsed().as_secs_f64();
                            }
                            todo.lock().unwrap().extend(leases);
                        }
                    });
                    // Heartbeats: every lease held, each third of the lease TTL from the last one's
                    // start (as the agent).
                    s.spawn(move || {
                        let mut last = Instant::now();
                        while !ended.load(Ordering::Relaxed) {
                            let period = Duration::from_millis(ttl_ms.load(Ordering::Relaxed) as u64 / 3);
                            // Short naps, so the thread (and the bench) stops soon after the run ends.
                            let left = period.saturating_sub(last.elapsed());
                            if !left.is_zero() {
                                std::thread::sleep(left.min(Duration::from_millis(100)));
                                continue;
                            }
                            last = Instant::now();
                            let refs: Vec<Value> = held.lock().unwrap().iter().map(|(id, token)| json!({"itemId": id, "token": token})).collect();
                            if !refs.is_empty() {
                                let t = Instant::now();
                                stack.api("POST", heartbeat_path, Some(&json!({"agent": agent, "leases": refs})));
                                spent.lock().unwrap().heartbeat += t.elapsed().as_secs_f64();
                            }
                        }
                    });
                    // Steps: each makes its MLflow run, then completes, as a step would.
                    for _ in 0..per_agent {
                        s.spawn(move || {
                            while !ended.load(Ordering::Relaxed) {
                                let Some(l) = todo.lock().unwrap().pop_front() else {
                                    std::thread::sleep(Duration::from_millis(10));
                                    continue;
                                };
                                let t = Instant::now();
                                let run_id = mlflow_runs.then(|| create_run(http, stack, &l["item"]));
                                let made = t.elapsed().as_secs_f64();
                                let outputs = if l["item"]["nodeId"] == "a" {
                                    let files = if spread == Spread::Broadcast { 100 } else { 5000 };
                                    (0..files).map(|i| json!({"path": format!("shard-{i:04}.parquet"), "size": 1 << 20})).collect::<Vec<_>>()
                                } else {
                                    vec![]
                                };
                                let mut done = json!({"itemId": l["item"]["id"], "token": l["token"], "outcome": {"status": "succeeded", "outputs": outputs}});
                                match run_id {
                                    Some(run_id) => done["mlflowRunId"] = json!(run_id),
                                    None => done["noMlflowRun"] = json!(true),
                                }
                                spent.lock().unwrap().mlflow += made;
                                reports.lock().unwrap().push(done);
                            }
                        });
                    }
                    // Reporting, as the agent's reporter: what finished while the last call was
                    // in flight goes in the next one, up to 100 a call.
                    s.spawn(move || {
                        while !ended.load(Ordering::Relaxed) {
                            let batch: Vec<Value> = {
                                let mut r = reports.lock().unwrap();
                                let k = r.len().min(100);
                                r.drain(..k).collect()
                            };
                            if batch.is_empty() {
                                std::thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                            let t = Instant::now();
                            let (status, body) = stack.api("POST", completions_path, Some(&json!({"completions": batch})));
                            spent.lock().unwrap().complete += t.elapsed().as_secs_f64();
                            let refused: Vec<&Value> = body["results"].as_array().into_iter().flatten().filter(|r| !r["refused"].is_null() || !r["unavailable"].is_null()).collect();
                            if status != 200 || !refused.is_empty() {
                                let (_, o) = stack.api("GET", &format!("/api/v1/runs/{id}/overview"), None);
                                panic!("completing failed: {status} {refused:?} {body}; the run: {} {}", o["run"]["status"], o["run"]["error"]);
                            }
                            let mut h = held.lock().unwrap();
                            for done in &batch {
                                h.remove(done["itemId"].as_str().unwrap());
                            }
                            drop(h);
                            finished.fetch_add(batch.len(), Ordering::Relaxed);
                        }
                    });
                });
            });
        }
    });
    let run = stack.wait_run(&id, Duration::from_secs(900));
    let end = start.elapsed();
    // The run's own record of its start and end: the bench sees the end only at its next poll.
    let took = Duration::from_millis(
        run["endedAt"].as_u64().expect("an ended run's endedAt")
            - run["createdAt"].as_u64().expect("the run's createdAt"),
    );
    let cpu_after = cpu_seconds();
    assert_eq!(run["status"], "succeeded", "{}", run["error"]);
    let all = all_b.lock().unwrap().unwrap_or(end).as_secs_f64();
    let first = first_b.lock().unwrap().unwrap_or_default().as_secs_f64();
    let sp = spent.lock().unwrap();
    rows.push((
        format!("fan-out 1 → {n} → 1 ({label}): all {n} leased"),
        format!("{all:.1} s"),
        format!(
            "first after {first:.2} s; {:.0} items/s; agents with room for the whole node; no MLflow call before a lease",
            n as f64 / all
        ),
    ));
    rows.push((
        format!("fan-out 1 → {n} → 1 ({label}): run start to run end"),
        format!("{:.1} s", took.as_secs_f64()),
        format!(
            "{} by {AGENTS} synthetic agents (capacity {capacity} each), {per_agent} at a time each, completions reported in batches of what finished meanwhile; time in calls, summed over agents: MLflow run creation {:.0} s, completions {:.0} s, leases {:.0} s, heartbeats {:.0} s",
            if mlflow_runs { format!("{} MLflow runs made", n + 5) } else { "no MLflow run made by the agents, which say so in each completion (as an agent does when MLflow refused a first lease's create), so the edge has none to look up or close".into() },
            sp.mlflow,
            sp.complete,
            sp.lease,
            sp.heartbeat
        ),
    ));
    drop(sp);
    if mlflow_runs {
        // The run's record ends when its last step has; MLflow shows the end once the edge
        // has closed every attempt's run and then the parent's, at MLflow's pace. A change that
        // moves MLflow's work earlier can end the record later and MLflow sooner: both count.
        rows.push((
            format!("fan-out 1 → {n} → 1 ({label}): run start until MLflow shows its end"),
            format!("{:.1} s", end.as_secs_f64()),
            format!(
                "every attempt's MLflow run closed and the parent's status set, {:.1} s after the run's record ended (seen by the bench's polls, every 300 ms)",
                end.saturating_sub(took).as_secs_f64()
            ),
        ));
    }
    rows.push(cpu_row(
        format!("fan-out 1 → {n} → 1 ({label}): CPU time, start to end"),
        (&cpu_before, &cpu_after),
        (n, "instance"),
        end,
    ));
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
    rows.push((
        format!("edge memory during the fan-out ({label})"),
        format!(
            "{:.0} MiB peak",
            peak_rss.load(Ordering::Relaxed) as f64 / 1024.0
        ),
        format!(
            "workerd's RSS (every object of the local edge; wasm memory never shrinks, so this is the high-water mark); {n} instances, {}",
            if spread == Spread::Broadcast { "100 input files each" } else { "5,000 files split one per instance" }
        ),
    ));
    id
}

/// The big run read back by 8 concurrent readers, each way of reading it, and the edge's wasm
/// memory through the fan-out and the reads.
pub fn read_back(stack: &Stack, id: &str, n: usize, label: &str, rows: &mut Vec<Row>) {
    let after_run = wasm_mark_mib(stack);
    for (what, path) in [
        ("GET the whole run", format!("/api/v1/runs/{id}")),
        ("GET its overview", format!("/api/v1/runs/{id}/overview")),
        (
            "GET a page of 50 instances",
            format!("/api/v1/runs/{id}/instances?node=b&state=succeeded&offset=5000&limit=50"),
        ),
    ] {
        let mut lat = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..25)
                            .map(|_| {
                                let t = Instant::now();
                                let (status, _) = stack.api("GET", &path, None);
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
            format!("{what} of a {n}-instance run ({label}), 8 concurrent readers"),
            format!("p50 {:.0} ms", median(&mut ms.clone())),
            format!(
                "p99 {:.0} ms, {errors} errors of {}",
                pct(&mut ms, 0.99),
                lat.len()
            ),
        ));
    }
    rows.push((
        format!("edge wasm memory, fan-out and reads ({label})"),
        format!("{} MiB", wasm_mark_mib(stack)),
        format!("{after_run} MiB by the run's end, before the reads: the isolate's wasm linear memory as the edge logs it (4 MiB steps; every object of the local edge shares one isolate, so this bounds the run object's); Cloudflare resets an isolate above 128 MB"),
    ));
}

/// The highest wasm memory the edge has logged so far, in MiB (it logs each new 4 MiB step).
fn wasm_mark_mib(stack: &Stack) -> u64 {
    stack
        .edge
        .log_text()
        .lines()
        .filter_map(|l| {
            l.split("wasm memory high-water mark: ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("the edge logs its wasm memory high-water mark")
}

/// RSS of the workerd processes below `pid` (wrangler runs workerd as its child).
fn workerd_rss_kib(pid: u32) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "workerd")
        })
        .filter(|p| {
            let mut at = *p;
            for _ in 0..8 {
                match parent_of(at) {
                    Some(pp) if pp == pid => return true,
                    Some(pp) if pp > 1 => at = pp,
                    _ => return false,
                }
            }
            false
        })
        .map(crate::rss_kib)
        .sum()
}

/// CPU seconds per component between two readings of [`cpu_seconds`], per `unit` (n of them),
/// beside what the machine's cores had over `elapsed`.
pub fn cpu_row(
    title: String,
    (before, after): (&Cpu, &Cpu),
    (n, unit): (usize, &str),
    elapsed: Duration,
) -> Row {
    let cpu: Vec<(&str, f64)> = after
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let total: f64 = cpu.iter().map(|(_, v)| v).sum();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    (
        title,
        format!("{total:.0} CPU-s"),
        format!(
            "{} (of {:.0} CPU-s the machine's cores had)",
            cpu.iter()
                .map(|(k, v)| format!("{k} {v:.0} s ({:.1} ms per {unit})", v * 1000.0 / n as f64))
                .collect::<Vec<_>>()
                .join(", "),
            elapsed.as_secs_f64() * cores
        ),
    )
}

pub type Cpu = std::collections::BTreeMap<&'static str, f64>;

/// CPU seconds (user + system) so far of the processes that take part in a run, by part: the
/// edge (workerd), MLflow's server workers, PostgreSQL, and this benchmark (the synthetic agents).
pub fn cpu_seconds() -> Cpu {
    let me = std::process::id();
    let mut by = std::collections::BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return by;
    };
    for pid in procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let comm = stat.split(['(', ')']).nth(1).unwrap_or_default();
        let part = match () {
            _ if pid == me => "synthetic agents (this bench)",
            _ if comm == "workerd" => "edge (workerd)",
            _ if comm == "postgres" => "PostgreSQL",
            // MLflow's server and its workers (Python processes it spawns).
            _ if comm.starts_with("python") || cmdline.contains("mlflow") => "MLflow",
            _ => continue,
        };
        // utime, stime, and those of its children that ended (PostgreSQL's backends come and
        // go): fields 14 to 17, 12 to 15 after the command's closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let ticks: f64 = [11, 12, 13, 14]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        *by.entry(part).or_insert(0.0) += ticks / 100.0;
    }
    by
}
