//! Chaos under load: a 1 → 48 → 1 run on three agents while agents are killed at random
//! (SIGKILL, then restarted), MLflow is away for a while, and the edge is killed and started
//! again on its storage. The run must end as a calm one does, with nothing lost and nothing
//! twice. Seeded: `CONCURRENT_CHAOS_SEED=<n>` replays a failure (the seed is printed).
//! Its own binary, because it stops MLflow and kills the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concurrent_tests::faults::FaultyProxy;
use concurrent_tests::mlflow_run::tag;
use concurrent_tests::{example_template, json, start_edge, wait_ready, Service, Stack};
use serde_json::Value;

const AGENTS: usize = 3;
const WIDTH: usize = 48;
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// xorshift64*: enough randomness for a schedule of faults, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Milliseconds in `lo..hi`.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The edge of this test (restartable on its storage) behind a proxy that keeps its address.
struct Edge {
    dir: PathBuf,
    token: String,
    mlflow_url: String,
    service: Option<Service>,
    proxy: FaultyProxy,
}

impl Edge {
    fn start(dir: &Path, token: &str, mlflow_url: &str) -> Edge {
        let (service, url) = start_edge(dir, token, mlflow_url, None);
        wait_ready(&format!("{url}/healthz"), &service, Duration::from_secs(90));
        Edge {
            dir: dir.to_path_buf(),
            token: token.into(),
            mlflow_url: mlflow_url.into(),
            service: Some(service),
            proxy: FaultyProxy::start(&url),
        }
    }

    /// SIGKILL, then a new edge process on the same storage.
    fn restart(&mut self) {
        if let Some(s) = self.service.take() {
            s.signal(libc::SIGKILL);
        }
        let (service, url) = start_edge(&self.dir, &self.token, &self.mlflow_url, None);
        wait_ready(&format!("{url}/healthz"), &service, Duration::from_secs(90));
        self.proxy.retarget(&url);
        self.service = Some(service);
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = reqwest::blocking::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", self.proxy.url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        match rb.send() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({"error": e.to_string()})),
        }
    }

    /// The run, once it ended.
    fn wait_run(&self, id: &str) -> Value {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let (status, run) = self.call("GET", &format!("/api/v1/runs/{id}"), None);
            let done = ["succeeded", "failed", "cancelled"]
                .contains(&run["status"].as_str().unwrap_or(""));
            if status == 200 && done {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} did not end: {run:#}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// One of the cluster's agents, with its own work directory (where its steps run) and log.
struct Agent {
    work: PathBuf,
    service: Option<Service>,
    logs: Vec<PathBuf>,
}

/// The processes whose command line names `dir` (a killed agent's steps, if any survived it).
fn processes_under(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-af", &dir.display().to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" step "))
        .map(str::to_string)
        .collect()
}

fn attempts(run: &Value) -> Vec<(String, u64, Value)> {
    let mut out = Vec::new();
    for n in run["nodes"].as_array().unwrap() {
        for i in n["instances"].as_array().unwrap() {
            for a in i["attempts"].as_array().unwrap() {
                out.push((
                    n["id"].as_str().unwrap().to_string(),
                    i["index"].as_u64().unwrap_or(0),
                    a.clone(),
                ));
            }
        }
    }
    out
}

/// Everything that must hold of an ended run, against MLflow and the agents' logs; the run and
/// its merged model.
fn check(stack: &Stack, edge: &Edge, id: &str, logs: &[PathBuf]) -> (Value, Value) {
    let run = edge.wait_run(id);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // Every MLflow run closed: the run's own bookkeeping may still be catching up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let (_, run) = edge.call("GET", &format!("/api/v1/runs/{id}"), None);
        let closed = attempts(&run)
            .iter()
            .all(|(_, _, a)| a["mlflowClosed"] == true || a["leased"] != true);
        if closed && run["mlflowStatus"] == "succeeded" {
            break run;
        }
        assert!(Instant::now() < deadline, "MLflow runs left open: {run:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let experiment = run["mlflow"]["experimentId"].as_str().unwrap();
    let found = stack.mlflow_api(
        "POST",
        "runs/search",
        Some(&json!({"experiment_ids": [experiment], "filter": format!("tags.`concurrent.run_id` = '{id}'"), "max_results": 1000})),
    );
    let mlflow_runs: Vec<Value> = found["runs"].as_array().cloned().unwrap_or_default();
    let children: Vec<&Value> = mlflow_runs
        .iter()
        .filter(|r| tag(r, "mlflow.parentRunId").is_some())
        .collect();
    assert_eq!(mlflow_runs.len() - children.len(), 1, "one parent run");
    // One MLflow run per key, none left RUNNING.
    let mut by_key: BTreeMap<&str, &Value> = BTreeMap::new();
    for r in &children {
        let key = tag(r, "concurrent.key").expect("every child run has its key");
        assert!(by_key.insert(key, r).is_none(), "two MLflow runs for {key}");
        assert_ne!(r["info"]["status"], "RUNNING", "left running: {r:#}");
    }
    // The run API and MLflow agree on every attempt an agent held; MLflow has no other runs.
    let mut held = 0;
    let mut finished: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for (node, instance, a) in attempts(&run) {
        if a["leased"] != true {
            continue;
        }
        held += 1;
        let run_id = a["mlflowRunId"]
            .as_str()
            .unwrap_or_else(|| panic!("attempt without an MLflow run: {a:#}"));
        let m = children
            .iter()
            .find(|r| r["info"]["run_id"] == run_id)
            .unwrap_or_else(|| panic!("{run_id} is not in MLflow ({node}[{instance}])"));
        assert_eq!(tag(m, "concurrent.node"), Some(node.as_str()));
        assert_eq!(
            tag(m, "concurrent.instance"),
            Some(instance.to_string().as_str())
        );
        assert_eq!(
            tag(m, "concurrent.attempt"),
            Some(a["number"].to_string().as_str())
        );
        let expected = match a["state"].as_str().unwrap() {
            "succeeded" => "FINISHED",
            "failed" => "FAILED",
            _ => "KILLED",
        };
        assert_eq!(m["info"]["status"], expected, "{a:#}\n{m:#}");
        if expected == "FINISHED" {
            *finished.entry((node, instance)).or_default() += 1;
        }
    }
    assert_eq!(
        children.len(),
        held,
        "MLflow holds a run for each attempt, no more"
    );
    assert_eq!(finished.len(), WIDTH + 2, "every instance finished");
    assert!(
        finished.values().all(|n| *n == 1),
        "one FINISHED attempt per instance"
    );
    // The outputs are right: the report merged every partition's model.
    let report = &run["nodes"][2]["instances"][0]["attempts"];
    let last = report.as_array().unwrap().last().unwrap();
    let merged: Value = serde_json::from_str(&stack.artifact(
        &stack.mlflow_api(
            "GET",
            &format!("runs/get?run_id={}", last["mlflowRunId"].as_str().unwrap()),
            None,
        )["run"],
        "outputs/merged_model.json",
    ))
    .unwrap();
    assert_eq!(merged["models"], WIDTH);
    // No attempt's step started twice, on any agent (killed ones' logs included).
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("step leased")) {
            if let Some(item) = line
                .split("item=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                *started.entry(item.to_string()).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = started.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "attempts started twice: {twice:?}");
    (run, merged)
}

#[test]
fn a_wide_run_ends_right_while_agents_die_mlflow_goes_away_and_the_edge_restarts() {
    let seed: u64 = std::env::var("CONCURRENT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos seed: {seed} (CONCURRENT_CHAOS_SEED={seed} replays this schedule)");
    let mut rng = Rng(seed);
    let stack = Stack::shared();
    let state = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(state.path(), &stack.token, &stack.mlflow_url);
    let cluster = "chaos";
    let (status, token) = edge.call(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "chaos-agents", "role": "agent", "cluster": cluster})),
    );
    assert_eq!(status, 201, "{token}");
    let token_file = state.path().join("agent.token");
    std::fs::write(&token_file, token["token"].as_str().unwrap()).unwrap();
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| Agent {
            work: state.path().join(format!("agent-{i}")),
            service: None,
            logs: vec![],
        })
        .collect();
    let edge_url = edge.proxy.url.clone();
    let spawn = |agent: &mut Agent| {
        let service = stack.start_agent(
            &edge_url,
            cluster,
            &token_file,
            &agent.work,
            &["--capacity", "4"],
            &[],
        );
        agent.logs.push(service.log.clone());
        agent.service = Some(service);
    };
    for a in agents.iter_mut() {
        spawn(a);
    }
    let mut t = example_template("chaos", 3);
    t["nodes"][1]["instances"] = json!(WIDTH);
    t["nodes"][1]["parameters"]["sleep"] = json!("1");
    for n in 0..3 {
        t["nodes"][n]["retries"] = json!({"limit": 6, "backoffSeconds": 1});
    }
    let (status, body) = edge.call("PUT", "/api/v1/templates/chaos", Some(t));
    assert!(status == 201 || status == 200, "{body}");
    let start = |edge: &Edge| {
        let (status, run) = edge.call(
            "POST",
            "/api/v1/runs",
            Some(json!({"template": "chaos", "cluster": cluster, "parameters": {"parts": WIDTH.to_string()}})),
        );
        assert_eq!(status, 201, "{run}");
        run["id"].as_str().unwrap().to_string()
    };

    // A calm run first: the yardstick, and the same checks.
    let began = Instant::now();
    let calm = start(&edge);
    let logs: Vec<PathBuf> = agents.iter().flat_map(|a| a.logs.clone()).collect();
    let (_, calm_model) = check(stack, &edge, &calm, &logs);
    let calm_time = began.elapsed();

    // The same run under faults.
    let began = Instant::now();
    let id = start(&edge);
    let (mut kills, mut mlflow_down, mut edge_restarted) = (0, None::<Instant>, false);
    let mut killed_pids = BTreeSet::new();
    let mut mlflow_away = Duration::ZERO;
    let mut next_kill = began + rng.ms(2_000, 5_000);
    loop {
        let (_, run) = edge.call("GET", &format!("/api/v1/runs/{id}"), None);
        if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or("")) {
            break;
        }
        assert!(
            began.elapsed() < RUN_TIMEOUT,
            "the run did not end: {run:#}"
        );
        let at = began.elapsed();
        if Instant::now() >= next_kill && kills < 8 {
            let victim = (rng.next() % AGENTS as u64) as usize;
            let a = &mut agents[victim];
            if let Some(s) = a.service.take() {
                s.signal(libc::SIGKILL);
                killed_pids.insert(s.pid().to_string());
                drop(s);
            }
            kills += 1;
            // Its steps die with it (they would otherwise run on beside their next attempt).
            std::thread::sleep(Duration::from_secs(2));
            let left = processes_under(&a.work);
            assert!(
                left.is_empty(),
                "steps outlived their killed agent: {left:?}"
            );
            std::thread::sleep(rng.ms(0, 1_500));
            spawn(a);
            next_kill = Instant::now() + rng.ms(2_000, 6_000);
        }
        if mlflow_down.is_none() && mlflow_away.is_zero() && at > Duration::from_secs(6) {
            stack.stop_mlflow();
            mlflow_down = Some(Instant::now());
        }
        if let Some(since) = mlflow_down {
            if since.elapsed() > Duration::from_secs(15) {
                stack.start_mlflow();
                mlflow_away = since.elapsed();
                mlflow_down = None;
            }
        }
        if !edge_restarted && !mlflow_away.is_zero() && at > Duration::from_secs(30) {
            edge.restart();
            edge_restarted = true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    if mlflow_down.is_some() {
        stack.start_mlflow();
    }
    let logs: Vec<PathBuf> = agents.iter().flat_map(|a| a.logs.clone()).collect();
    let (run, model) = check(stack, &edge, &id, &logs);
    let chaos_time = began.elapsed();
    assert_eq!(
        model, calm_model,
        "the same model as the calm run's: every partition, once"
    );
    // Where the time went.
    let all = attempts(&run);
    let failed: Vec<&Value> = all
        .iter()
        .map(|(_, _, a)| a)
        .filter(|a| a["state"] == "failed")
        .collect();
    let lost_ms: u64 = failed
        .iter()
        .map(|a| {
            a["endedAt"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(a["startedAt"].as_u64().unwrap_or(0))
        })
        .sum();
    let reasons: BTreeSet<String> = failed
        .iter()
        .map(|a| a["error"].as_str().unwrap_or("").chars().take(60).collect())
        .collect();
    eprintln!(
        "chaos (seed {seed}): calm run {:.1} s, under faults {:.1} s ({:.1}x): {kills} agents killed, MLflow away {:.0} s, edge restarted: {edge_restarted}; {} attempts for {} instances, {} failed (their time {:.1} s), reasons: {reasons:?}",
        calm_time.as_secs_f64(),
        chaos_time.as_secs_f64(),
        chaos_time.as_secs_f64() / calm_time.as_secs_f64(),
        mlflow_away.as_secs_f64(),
        all.len(),
        WIDTH + 2,
        failed.len(),
        lost_ms as f64 / 1000.0,
    );
    assert!(
        kills > 0 && edge_restarted && !mlflow_away.is_zero(),
        "every fault happened"
    );
    // Only the killed agents lost leases: neither the edge's restart nor MLflow's absence made
    // a live agent's step lapse (an agent is named `<host>-<pid>`).
    for a in &failed {
        let error = a["error"].as_str().unwrap_or("");
        let pid = a["agent"]
            .as_str()
            .unwrap_or("")
            .rsplit('-')
            .next()
            .unwrap();
        assert!(
            !error.starts_with("lease expired") || killed_pids.contains(pid),
            "a live agent's lease lapsed: {a:#}"
        );
    }
}
