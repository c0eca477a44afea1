//! `concurrent templates …` and `concurrent runs …` against the real stack, as a terminal user
//! runs them: tables, `--output json`, `--follow` exiting with the run's outcome, the whole log,
//! and errors that say what to do.

use std::process::{Command, Output};

use concurrent_tests::{concurrent_bin, example_template, json, root, Stack};
use serde_json::Value;

fn cli(stack: &Stack, args: &[&str]) -> Output {
    Command::new(concurrent_bin())
        .args(args)
        .env("CONCURRENT_EDGE_URL", &stack.edge_url)
        .env("CONCURRENT_TOKEN", &stack.token)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_terminal_user_pushes_a_template_runs_it_follows_it_and_reads_its_log() {
    let stack = Stack::shared();
    let _agent = stack.agent("cli");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");

    // A bad template: each problem, and a failing exit.
    let mut bad = example_template("cli-pipeline", 3);
    bad["nodes"][1]["instances"] = json!(0);
    std::fs::write(&file, bad.to_string()).unwrap();
    let o = cli(stack, &["templates", "validate", file.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("/nodes/1/instances"), "{out}");
    assert!(err.starts_with("error: 1 problem(s)"), "{err}");

    std::fs::write(&file, example_template("cli-pipeline", 3).to_string()).unwrap();
    let o = cli(stack, &["templates", "push", file.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("saved cli-pipeline version "), "{out}");
    let (table, _) = text(&cli(stack, &["templates", "list"]));
    assert!(
        table.starts_with("NAME") && table.lines().any(|l| l.starts_with("cli-pipeline ")),
        "{table}"
    );
    let listed: Value =
        serde_json::from_slice(&cli(stack, &["templates", "list", "-o", "json"]).stdout).unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "cli-pipeline"));

    // Start and follow: progress on stderr, the final table on stdout, exit 0.
    let o = cli(
        stack,
        &[
            "runs",
            "start",
            "cli-pipeline",
            "-p",
            "parts=3",
            "--cluster",
            "cli",
            "--follow",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        err.contains("started run ") && err.contains("running"),
        "progress shown: {err}"
    );
    assert!(
        out.contains(": succeeded") && out.contains("train") && out.contains("2/2"),
        "{out}"
    );
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("started run "))
        .unwrap()
        .trim()
        .to_string();
    let (status, run) = stack.api("GET", &format!("/api/v1/runs/{id}"), None);
    assert_eq!((status, run["status"].as_str()), (200, Some("succeeded")));

    let runs: Value = serde_json::from_slice(
        &cli(
            stack,
            &["runs", "list", "--template", "cli-pipeline", "-o", "json"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(runs[0]["id"], id.as_str());
    let o = cli(stack, &["runs", "logs", &id, "--node", "prepare"]);
    let (log, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(log.contains("prepare.py"), "the step's own log: {log}");
    let (_, err) = text(&cli(stack, &["runs", "logs", &id]));
    assert!(
        err.contains("pick one with --node (prepare, train, report)"),
        "{err}"
    );

    // A failing run: --follow exits non-zero with the run's error.
    let o = cli(
        stack,
        &[
            "runs",
            "start",
            "cli-pipeline",
            "-p",
            "fail=yes",
            "--cluster",
            "cli",
            "-f",
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("ended failed"), "{err}");
    let retried = cli(
        stack,
        &[
            "runs",
            "retry",
            err.lines()
                .find_map(|l| l.strip_prefix("started run "))
                .unwrap()
                .trim(),
        ],
    );
    assert!(retried.status.success(), "{}", text(&retried).1);
}

#[test]
fn without_a_token_or_with_a_bad_one_the_cli_says_what_to_do() {
    let stack = Stack::shared();
    let o = Command::new(concurrent_bin())
        .args(["runs", "list"])
        .env("CONCURRENT_EDGE_URL", &stack.edge_url)
        .env_remove("CONCURRENT_TOKEN")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("CONCURRENT_TOKEN") && err.contains("--token-file"),
        "{err}"
    );
    let o = Command::new(concurrent_bin())
        .args(["runs", "list"])
        .env("CONCURRENT_EDGE_URL", &stack.edge_url)
        .env("CONCURRENT_TOKEN", "nope-nope")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(err.contains("(401") && err.contains("revoked"), "{err}");
    // The config file works too.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".config/concurrent")).unwrap();
    std::fs::write(
        home.path().join(".config/concurrent/config.json"),
        json!({"edgeUrl": stack.edge_url, "token": stack.token}).to_string(),
    )
    .unwrap();
    let o = Command::new(concurrent_bin())
        .args(["templates", "list"])
        .env_remove("CONCURRENT_EDGE_URL")
        .env_remove("CONCURRENT_TOKEN")
        .env("HOME", home.path())
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
}
