//! Prefect and Airflow side by side: the same chain of trivial steps, each installed from PyPI
//! into its own virtualenv by the benchmark and run in its recommended local setup, measured
//! from its own records (Prefect's task runs, Airflow's task instances). Drivers are in
//! `bench/peers/*.py`.

use std::path::PathBuf;
use std::process::Command;

use concurrent_tests::root;
use serde_json::Value;

use crate::{median, pct, spread, Row};

/// The versions measured; change them here.
const PREFECT: &str = "prefect==3.9.1";
const AIRFLOW: &str = "apache-airflow==3.1.8";

/// A chain's figures: wall times (s) per run and every transition (ms).
pub struct Chain {
    pub walls: Vec<f64>,
    pub transitions_ms: Vec<f64>,
}

/// A virtualenv with `requirement`, made once under ~/.cache/concurrent/bench.
fn venv(name: &str, requirement: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let dir = PathBuf::from(home)
        .join(".cache/concurrent/bench")
        .join(name);
    let marker = dir.join("requirement.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirement) {
        return dir;
    }
    eprintln!("installing {requirement} into {} (once)…", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ])
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "installing {requirement} failed; see the pip output above (needs python3 with venv and access to PyPI)");
    std::fs::write(&marker, requirement).unwrap();
    dir
}

/// Runs a driver; each output line is one run with `tasks` [{start, end}] in seconds.
fn drive(
    name: &str,
    requirement: &str,
    script: &str,
    extra: &[&str],
    steps: usize,
    reps: usize,
) -> Chain {
    let env = venv(name, requirement);
    let home = tempfile::Builder::new()
        .prefix(&format!("bench-{name}-"))
        .tempdir()
        .unwrap();
    eprintln!("{name}: chain of {steps}, {reps} runs…");
    let out = Command::new(env.join("bin/python"))
        .arg(root().join("bench/peers").join(script))
        .arg(home.path())
        .args([steps.to_string(), reps.to_string()])
        .args(extra)
        .output()
        .expect("run the driver");
    assert!(
        out.status.success(),
        "{name} driver failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let mut chain = Chain {
        walls: vec![],
        transitions_ms: vec![],
    };
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
    {
        let run: Value = serde_json::from_str(line).expect("driver output is JSON");
        let tasks = run["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), steps, "{name} ran every step: {line}");
        let t = |i: usize, k: &str| tasks[i][k].as_f64().unwrap();
        chain
            .walls
            .push(run["run_end"].as_f64().unwrap() - run["run_start"].as_f64().unwrap());
        chain
            .transitions_ms
            .extend((1..steps).map(|i| (t(i, "start") - t(i - 1, "end")) * 1000.0));
    }
    assert_eq!(chain.walls.len(), reps, "{name} reported every run");
    chain
}

fn rows_for(label: &str, steps: usize, reps: usize, c: &Chain, rows: &mut Vec<Row>) {
    let mut walls = c.walls.clone();
    let mut tr = c.transitions_ms.clone();
    rows.push((
        format!("{label}: chain of {steps} trivial tasks, wall time"),
        format!("{:.1} s", median(&mut walls)),
        format!("spread {} s over {reps} runs", spread(&c.walls)),
    ));
    rows.push((
        format!("{label}: task transition"),
        format!("{:.0} ms median", median(&mut tr.clone())),
        format!(
            "p95 {:.0} ms; n = {}",
            pct(&mut tr, 0.95),
            c.transitions_ms.len()
        ),
    ));
}

/// Measures Prefect and Airflow now (after Concurrent's chain), and the ratios.
pub fn side_by_side(ours: &Chain, steps: usize, reps: usize, rows: &mut Vec<Row>) {
    let version = PREFECT.trim_start_matches("prefect==");
    let prefect = drive(
        "prefect",
        PREFECT,
        "prefect_chain.py",
        &["tasks"],
        steps,
        reps,
    );
    rows_for(
        &format!("Prefect {version}, tasks in one flow (server + process worker)"),
        steps,
        reps,
        &prefect,
        rows,
    );
    let isolated = drive(
        "prefect",
        PREFECT,
        "prefect_chain.py",
        &["flows"],
        steps,
        reps,
    );
    rows_for(
        &format!(
            "Prefect {version}, each step its own flow run (process worker polling every 1 s)"
        ),
        steps,
        reps,
        &isolated,
        rows,
    );
    let airflow = drive("airflow", AIRFLOW, "airflow_chain.py", &[], steps, reps);
    rows_for(
        &format!(
            "Airflow {} (standalone, LocalExecutor)",
            AIRFLOW.trim_start_matches("apache-airflow==")
        ),
        steps,
        reps,
        &airflow,
        rows,
    );
    let m = |v: &[f64]| median(&mut v.to_vec());
    let ratio = |theirs: f64, ours: f64| {
        if theirs >= ours {
            format!("{:.1}× faster", theirs / ours)
        } else {
            format!("{:.1}× slower", ours / theirs)
        }
    };
    for (name, c) in [
        ("Prefect (tasks in one process)", &prefect),
        ("Prefect (a process per step)", &isolated),
        ("Airflow", &airflow),
    ] {
        rows.push((
            format!("Concurrent vs {name}: transition, same machine, same invocation"),
            ratio(m(&c.transitions_ms), m(&ours.transitions_ms)),
            format!(
                "{:.0} ms vs {:.0} ms (medians)",
                m(&ours.transitions_ms),
                m(&c.transitions_ms)
            ),
        ));
        rows.push((
            format!("Concurrent vs {name}: chain wall time"),
            ratio(m(&c.walls), m(&ours.walls)),
            format!("{:.1} s vs {:.1} s (medians)", m(&ours.walls), m(&c.walls)),
        ));
    }
}
