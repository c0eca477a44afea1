//! `make bench`: measures Concurrent on the real stack (MLflow, the edge API in workerd, the
//! agent) and prints a table; writes bench/RESULTS.md.
//!
//! Every figure comes from a real run: step times from the run's own records (`GET
//! /api/v1/runs/<id>`), memory from /proc, latency from timed HTTP requests on loopback.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Parser;
use concurrent_tests::kube::{KubeConfig, KubeServer};
use concurrent_tests::{concurrent_bin, json, root, Stack};
use serde_json::Value;

mod caching;
mod designer;
mod load;
mod many_runs;
mod peers;
mod postgres;
mod profile;
mod projects;
mod scale;
mod timeline;

/// One line of the results table: measurement, result, detail.
pub type Row = (String, String, String);

#[derive(Parser)]
#[command(about = "Benchmarks of Concurrent; prints a table and writes bench/RESULTS.md")]
struct Args {
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Steps in the chain.
    #[arg(long, default_value_t = 40)]
    chain: usize,
    /// Instances of the fan-out (control plane only, synthetic agent).
    #[arg(long, default_value_t = 10_000)]
    fan_out: usize,
    /// One-step runs started at once for the runs-a-minute figure.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// Pods the agent tracks for the memory figure.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Run only these measurements (launcher, chain, environments, inference, caching, fan-out — or
    /// one part of it: fan-out-postgres, fan-out-control —, many-runs, load, designer,
    /// memory); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave out Prefect and Airflow (they are installed into their own virtualenvs on first
    /// use, a few minutes).
    #[arg(long)]
    skip_peers: bool,
    /// Keep the services' files and print where they are.
    #[arg(long)]
    keep: bool,
    /// Sample the edge's CPU during the chain's, the control plane's fan-out's and many-runs'
    /// measurements: writes `<dir>/<measurement>.cpuprofile` (DevTools opens it) and prints
    /// where the time went.
    #[arg(long, value_name = "DIR")]
    profile_edge: Option<std::path::PathBuf>,
}

/// Runs `measure`, with the edge's CPU sampled throughout when `--profile-edge` asks for it.
fn profiled<T>(
    stack: &Stack,
    args: &Args,
    name: &str,
    per: (usize, &str),
    measure: impl FnOnce() -> T,
) -> T {
    let Some(dir) = &args.profile_edge else {
        return measure();
    };
    let profiler = profile::Profiler::of(stack);
    let out = measure();
    profile::report(
        &profiler.stop(),
        &dir.join(format!("{name}.cpuprofile")),
        per,
        25,
    );
    out
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }
}

pub fn spread(v: &[f64]) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    format!("{lo:.2}–{hi:.2}")
}

/// Whether an MLflow 4xx is its store being overloaded (it answers an exhausted SQLAlchemy
/// connection pool or a locked SQLite file with 400 BAD_REQUEST): worth trying again.
pub fn overloaded(body: &str) -> bool {
    body.contains("QueuePool limit") || body.contains("database is locked")
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Where a process's resident memory is, by mapping (from /proc/PID/smaps): its own binary's
/// code and data, each shared library, the heap and anonymous maps (thread arenas, stacks).
/// Sorted largest first, in KiB.
pub fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: range, perms, offset, dev, inode, [path].
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            let name = match path {
                "" => "anonymous (arenas, stacks)".to_string(),
                p if p.starts_with('[') => p.to_string(),
                p => {
                    let file = p.rsplit('/').next().unwrap_or(p);
                    let kind = if perms.contains('x') {
                        "code"
                    } else if perms.contains('w') {
                        "data"
                    } else {
                        "read-only"
                    };
                    format!("{file} {kind}")
                }
            };
            current = name;
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            *by.entry(current.clone()).or_default() += kib;
        }
    }
    let mut out: Vec<(String, u64)> = by.into_iter().filter(|(_, k)| *k > 0).collect();
    out.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    out
}

fn attempt(run: &Value, node: usize) -> &Value {
    &run["nodes"][node]["instances"][0]["attempts"][0]
}

/// Chain of `n` trivial MLflow Project steps through the whole stack.
fn chain(
    stack: &Stack,
    n: usize,
    reps: usize,
    rows: &mut Vec<(String, String, String)>,
) -> peers::Chain {
    let project = root().join("bench/projects/noop").display().to_string();
    let nodes: Vec<Value> = (0..n).map(|i| json!({"id": format!("s{i}"), "kind": "project", "uri": project, "entryPoint": "main"})).collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"from": format!("s{}", i - 1), "to": format!("s{i}")}))
        .collect();
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": "bench-chain", "nodes": nodes, "edges": edges}));
    // JSON logs: the agent's and its step runners' phase timings are read from them.
    let agent = stack.agent_with_env("bench-chain", &[], &[("CONCURRENT_LOG_FORMAT", "json")]);
    let (mut walls, mut transitions, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    let mut leases = Vec::new();
    for rep in 0..reps {
        let id = stack.start_run(&json!({"template": "bench-chain", "cluster": "bench-chain"}));
        let run = stack.wait_run(&id, Duration::from_secs(60 * 30));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let wall =
            (run["endedAt"].as_u64().unwrap() - run["createdAt"].as_u64().unwrap()) as f64 / 1000.0;
        walls.push(wall);
        for k in 0..n {
            let a = attempt(&run, k);
            leases.push((
                a["startedAt"].as_f64().unwrap(),
                concurrent_core::names::work_item_id(&id, &format!("s{k}"), 0, 1),
            ));
            steps.push(
                (a["endedAt"].as_u64().unwrap() - a["startedAt"].as_u64().unwrap()) as f64 / 1000.0,
            );
            if k + 1 < n {
                let next = attempt(&run, k + 1);
                transitions.push(
                    next["startedAt"].as_u64().unwrap() as f64
                        - a["endedAt"].as_u64().unwrap() as f64,
                );
            }
        }
        eprintln!("chain rep {}: {wall:.1} s", rep + 1);
    }
    let figures = peers::Chain {
        walls: walls.clone(),
        transitions_ms: transitions.clone(),
    };
    let w = walls.clone();
    rows.push((
        format!("chain of {n} trivial steps: wall time"),
        format!("{:.1} s", median(&mut walls)),
        format!("spread {} s over {reps} runs", spread(&w)),
    ));
    rows.push((
        "step transition (end of step k → start of step k+1)".into(),
        format!("{:.0} ms median", median(&mut transitions.clone())),
        format!(
            "p95 {:.0} ms; n = {}",
            pct(&mut transitions, 0.95),
            transitions.len()
        ),
    ));
    rows.push((
        "one trivial step, lease to report (download, launch, upload, report)".into(),
        format!("{:.2} s median", median(&mut steps.clone())),
        format!("p95 {:.2} s", pct(&mut steps, 0.95)),
    ));
    rows.extend(timeline::rows(&timeline::read(&agent.log_text()), &leases));
    figures
}

/// Where one trivial step's time goes: `mlflow run` against running the entry point directly.
fn launcher(reps: usize, rows: &mut Vec<(String, String, String)>) {
    let project = root().join("bench/projects/noop");
    let time = |f: &dyn Fn() -> bool| {
        let t = Instant::now();
        assert!(f());
        t.elapsed().as_secs_f64()
    };
    let (mut direct, mut mlflow, mut fast) = (Vec::new(), Vec::new(), Vec::new());
    let tracking = tempfile::tempdir().unwrap();
    let venv_path = format!(
        "{}:{}",
        root().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for _ in 0..reps {
        // What the fast launcher does: work out the command from MLproject, `bash -c` it.
        fast.push(time(&|| {
            let out = std::process::Command::new(concurrent_bin())
                .args(["entry-command", "."])
                .current_dir(&project)
                .output()
                .unwrap();
            let command = String::from_utf8(out.stdout).unwrap();
            std::process::Command::new("bash")
                .args(["-c", command.trim()])
                .current_dir(&project)
                .env("PATH", &venv_path)
                .env("CONCURRENT_OUTPUT_DIR", tracking.path())
                .status()
                .is_ok_and(|s| s.success())
        }));
        direct.push(time(&|| {
            std::process::Command::new(root().join(".venv/bin/python"))
                .arg("noop.py")
                .current_dir(&project)
                .env("CONCURRENT_OUTPUT_DIR", tracking.path())
                .status()
                .is_ok_and(|s| s.success())
        }));
        mlflow.push(time(&|| {
            std::process::Command::new(root().join(".venv/bin/mlflow"))
                .args(["run", ".", "-e", "main", "--env-manager", "local"])
                .current_dir(&project)
                .env(
                    "MLFLOW_TRACKING_URI",
                    format!("sqlite:///{}/mlflow.db", tracking.path().display()),
                )
                .env("CONCURRENT_OUTPUT_DIR", tracking.path())
                .env("MLFLOW_DISABLE_TELEMETRY", "true")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }));
    }
    let (d, m, f) = (median(&mut direct), median(&mut mlflow), median(&mut fast));
    rows.push((
        "launcher: `mlflow run` of the trivial entry point".into(),
        format!("{m:.2} s median"),
        format!(
            "the entry point alone: {d:.3} s; launcher share {:.0} %",
            100.0 * (m - d) / m
        ),
    ));
    rows.push((
        "launcher: Concurrent's fast launcher, same entry point, same semantics".into(),
        format!("{f:.3} s median"),
        format!("{:.0}× faster than `mlflow run` (MLproject parsed in Rust, command run with `bash -c` as MLflow does)", m / f),
    ));
}

pub fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if let Ok(m) = e.metadata() {
                out.push((p.display().to_string(), m.len()));
            }
        }
    }
    out
}

/// The agent's memory idle, and while it tracks `n` pods (unschedulable, so they stay).
fn agent_memory(stack: &Stack, n: usize, rows: &mut Vec<(String, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let server = KubeServer::start(KubeConfig {
        cpu_millis: 1000,
        memory_bytes: 1 << 30,
        gpus: 0,
        image_files: HashMap::from([(
            "agent".to_string(),
            HashMap::from([("/concurrent".to_string(), concurrent_bin())]),
        )]),
        work_dir: dir.path().to_path_buf(),
        env: vec![],
    });
    let kubeconfig = server.kubeconfig.display().to_string();
    let cap = n.to_string();
    let args = [
        "--executor",
        "kubernetes",
        "--agent-image",
        "agent",
        "--pending-timeout",
        "3600",
        "--capacity",
        &cap,
    ];
    let agent = stack.agent_with_env("bench-memory", &args, &[("KUBECONFIG", &kubeconfig)]);
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_kib(agent.pid());
    let idle_parts = rss_by_mapping(agent.pid());
    let threads = std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": "bench-memory",
        "nodes": [{"id": "wide", "kind": "project", "uri": "synthetic", "instances": n, "resources": {"cpu": "64"}}]}));
    stack.start_run(&json!({"template": "bench-memory", "cluster": "bench-memory"}));
    let deadline = Instant::now() + Duration::from_secs(1800);
    while server
        .pods("default", "concurrent.dev/cluster=bench-memory")
        .len()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "the agent did not create {n} pods"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    let busy = rss_kib(agent.pid());
    rows.push((
        "agent memory (RSS), idle".into(),
        format!("{:.1} MiB", idle as f64 / 1024.0),
        format!(
            "Kubernetes executor, after start; {threads} threads; by mapping (MiB): {}",
            idle_parts
                .iter()
                .take(6)
                .map(|(name, kib)| format!("{name} {:.1}", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    rows.push((
        format!("agent memory (RSS), tracking {n} pods"),
        format!("{:.1} MiB", busy as f64 / 1024.0),
        format!(
            "{:.1} KiB per pod",
            (busy.saturating_sub(idle)) as f64 / n as f64
        ),
    ));
}

fn main() {
    let args = Args::parse();
    let stack = Stack::shared();
    let mut rows = Vec::new();
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    if wanted("launcher") {
        eprintln!("launcher…");
        launcher(args.reps, &mut rows);
        write_results(&rows, &args);
    }
    if wanted("chain") {
        eprintln!("chain of {}…", args.chain);
        let steps = (args.chain * args.reps, "step");
        let ours = profiled(stack, &args, "chain", steps, || {
            chain(stack, args.chain, args.reps, &mut rows)
        });
        write_results(&rows, &args);
        if !args.skip_peers {
            peers::side_by_side(&ours, args.chain, args.reps, &mut rows);
            write_results(&rows, &args);
        }
    }
    if wanted("environments") {
        eprintln!("python_env environments…");
        projects::environments(stack, args.reps, &mut rows);
        write_results(&rows, &args);
    }
    if wanted("inference") {
        eprintln!("inference over 100 files…");
        projects::inference(stack, 100, &mut rows);
        write_results(&rows, &args);
    }
    if wanted("caching") {
        eprintln!("step caching…");
        caching::rerun_after_the_last_step_changed(stack, args.reps, &mut rows);
        write_results(&rows, &args);
    }
    if wanted("fan-out") {
        eprintln!("fan-out of {}…", args.fan_out);
        use scale::Spread::ByFile;
        scale::fan_out(
            stack,
            args.fan_out,
            "SQLite, 1 worker",
            ByFile,
            1,
            true,
            &mut rows,
        );
        write_results(&rows, &args);
    }
    if wanted("fan-out") || wanted("fan-out-postgres") {
        use scale::Spread::{Broadcast, ByFile};
        // The production lease TTL (wrangler.toml's 30 s, heartbeats every 10 s): with ten
        // thousand leases in flight on two shared cores, a heartbeat can wait seconds behind
        // other calls, longer than the tests' 6 s TTL allows.
        std::env::set_var("CONCURRENT_LEASE_TTL_MS", "30000");
        let pg = postgres::Postgres::start();
        let production = Stack::start_with(concurrent_tests::Backend {
            uri: Some(pg.uri()),
            workers: 4,
        });
        scale::mlflow_ceiling(&production, 2000, "PostgreSQL, 4 workers", &mut rows);
        scale::fan_out(
            &production,
            args.fan_out,
            "PostgreSQL, 4 workers",
            ByFile,
            4,
            true,
            &mut rows,
        );
        write_results(&rows, &args);
        drop(production);
        // The memory case: every instance sees 100 input files. A fresh edge, so its memory
        // high-water mark is this run's alone.
        let production = Stack::start_with(concurrent_tests::Backend {
            uri: Some(pg.uri()),
            workers: 4,
        });
        scale::fan_out(
            &production,
            args.fan_out,
            "PostgreSQL, 4 workers, 100 files broadcast to every instance",
            Broadcast,
            4,
            true,
            &mut rows,
        );
        write_results(&rows, &args);
        drop(production);
        drop(pg);
    }
    if wanted("fan-out") || wanted("fan-out-control") {
        // The part Concurrent controls: the same fan-out with agents that make no MLflow run
        // per attempt (so MLflow's write rate is out of the way), on a fresh edge.
        std::env::set_var("CONCURRENT_LEASE_TTL_MS", "30000");
        let control = Stack::start_with(concurrent_tests::Backend::default());
        let label = "control plane only";
        // Profiled up to the run's end: the reads after it are measured apart.
        let id = profiled(
            &control,
            &args,
            "fan-out-control",
            (args.fan_out, "instance"),
            || {
                scale::run_fan_out(
                    &control,
                    args.fan_out,
                    label,
                    scale::Spread::ByFile,
                    4,
                    false,
                    &mut rows,
                )
            },
        );
        scale::read_back(&control, &id, args.fan_out, label, &mut rows);
        write_results(&rows, &args);
    }
    if wanted("many-runs") {
        eprintln!("{} one-step runs at once…", args.runs);
        std::env::set_var("CONCURRENT_LEASE_TTL_MS", "30000");
        let pg = postgres::Postgres::start();
        let production = Stack::start_with(concurrent_tests::Backend {
            uri: Some(pg.uri()),
            workers: 4,
        });
        many_runs::many_runs(
            &production,
            args.runs,
            "PostgreSQL, 4 workers",
            args.profile_edge.as_deref(),
            &mut rows,
        );
        write_results(&rows, &args);
    }
    if wanted("load") {
        eprintln!("agent protocol under load…");
        load::agents(stack, 8, 5000, load::Pace::Saturate, &mut rows);
        load::agents(stack, 8, 5000, load::Pace::Rate(500.0), &mut rows);
        write_results(&rows, &args);
    }
    if wanted("designer") {
        eprintln!("designer…");
        designer::designer(stack, args.reps, &mut rows);
        designer::bundle(&mut rows);
        write_results(&rows, &args);
    }
    if wanted("memory") {
        eprintln!("agent memory with {} pods…", args.pods);
        agent_memory(stack, args.pods, &mut rows);
        write_results(&rows, &args);
    }
    if args.keep {
        eprintln!("services' files: {}", stack.dir.path().display());
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The rows of the table in bench/RESULTS.md, so a run of some measurements (`--only`) keeps
/// the others' last figures.
fn previous_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(root().join("bench/RESULTS.md")).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| measurement"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells.len() == 3).then(|| {
                (
                    cells[0].to_string(),
                    cells[1].to_string(),
                    cells[2].to_string(),
                )
            })
        })
        .collect()
}

/// Prints the table and writes bench/RESULTS.md (rows measured now replace the same rows).
fn write_results(rows: &[Row], args: &Args) {
    let mut merged = previous_rows();
    for row in rows {
        match merged.iter_mut().find(|r| r.0 == row.0) {
            Some(r) => *r = row.clone(),
            None => merged.push(row.clone()),
        }
    }
    let mut table = String::from("| measurement | result | detail |\n|---|---|---|\n");
    for (a, b, c) in &merged {
        let _ = writeln!(table, "| {a} | {b} | {c} |");
    }
    println!("{table}");
    let machine = format!(
        "{} cores, {} GiB; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok())
            .unwrap_or(0)
            / 1048576,
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    let date = String::from_utf8(
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let report = format!(
        "# Benchmark results\n\nLast updated by `make bench` on {} (a run of some measurements with `--only` keeps the other rows), machine: {machine}. MLflow 3.17.2 (sqlite, 1 worker), the edge API in local workerd (wrangler 4.164.0), the agent with the local executor unless stated; {} repetitions where repeated. Medians, with spreads or p95/p99.\n\n{table}\n\
How each figure is measured: see bench/README.md. Prefect and Airflow run right after Concurrent's chain in the same invocation, from their own records (Prefect's task and flow runs, Airflow's task instances); the fan-out and load figures use the benchmark as synthetic agents speaking the real agent protocol (control plane only, no step runs).\n",
        date.trim(),
        args.reps
    );
    std::fs::write(root().join("bench/RESULTS.md"), report).expect("write bench/RESULTS.md");
    eprintln!("wrote bench/RESULTS.md");
}
