//! Real MLflow Projects on the local executor, against the real stack: their own environments
//! (uv from PyPI), noisy output beside a quiet step, secrets, git projects at a pinned commit,
//! and the tools a project needs that the agent lacks.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use concurrent_tests::mlflow_run::tag;
use concurrent_tests::{json, root, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn project(name: &str) -> String {
    format!("tests/projects/{name}")
}

fn node(id: &str, uri: &str, entry: &str) -> Value {
    json!({"id": id, "kind": "project", "uri": uri, "entryPoint": entry})
}

fn template(name: &str, nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    json!({"apiVersion": "concurrent/v1", "name": name, "nodes": nodes, "edges": edges})
}

/// The MLflow run of attempt `attempt` of instance 0 of node `n`.
fn attempt_run(stack: &Stack, run: &Value, n: usize, attempt: usize) -> Value {
    let id = run["nodes"][n]["instances"][0]["attempts"][attempt]["mlflowRunId"]
        .as_str()
        .unwrap_or_else(|| panic!("no MLflow run: {run:#}"));
    stack.mlflow_api("GET", &format!("runs/get?run_id={id}"), None)["run"].clone()
}

fn agent_env() -> Vec<(&'static str, String)> {
    vec![(
        "CONCURRENT_UV_BIN",
        root().join(".venv/bin/uv").display().to_string(),
    )]
}

#[test]
fn a_python_env_project_builds_its_environment_once_and_its_noise_hurts_nobody() {
    let stack = Stack::shared();
    let env = agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let agent = stack.agent_with_env("noisy", &["--capacity", "2"], &env);
    let t = template(
        "noisy-beside-quiet",
        vec![
            node("noisy", &project("noisy"), "noisy"),
            node("quiet", &project("noisy"), "quiet"),
        ],
        vec![],
    );
    stack.put_template(&t);
    let started = Instant::now();
    let id = stack.start_run(&json!({"template": "noisy-beside-quiet", "cluster": "noisy"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    let first = started.elapsed();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for n in 0..2 {
        assert_eq!(
            run["nodes"][n]["instances"][0]["attempts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "each step ran once: {run:#}"
        );
    }
    // The live tail showed the bar's last state, small, whatever was printed.
    let tail = run["nodes"][0]["instances"][0]["attempts"][0]["logTail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        tail.contains("10000/10000"),
        "the bar's last state: {tail:?}"
    );
    assert!(tail.len() < 8 * 1024, "{} bytes of tail", tail.len());
    assert!(tail.contains("bad bytes: \u{fffd}"), "{tail:?}");
    let log_text = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        !log_text.contains("heartbeat failed"),
        "heartbeats kept working:\n{log_text}"
    );
    // The full log reached MLflow, with the 5 MB line and the environment's build.
    let noisy = attempt_run(stack, &run, 0, 0);
    let full = stack.artifact(&noisy, "logs/step.log");
    assert!(full.len() > 5 * 1024 * 1024, "{} bytes", full.len());
    // The two steps share one environment: one built it while the other waited for it.
    let quiet_log = stack.artifact(&attempt_run(stack, &run, 1, 0), "logs/step.log");
    let builds = [&full, &quiet_log]
        .iter()
        .filter(|l| l.contains("building the uv environment"))
        .count();
    assert_eq!(builds, 1, "built once for both steps:\n{quiet_log}");
    assert_eq!(tag(&noisy, "mlflow.project.env"), Some("uv"));
    // A second run reuses the environment.
    let started = Instant::now();
    let id = stack.start_run(&json!({"template": "noisy-beside-quiet", "cluster": "noisy"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    let second = started.elapsed();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for n in 0..2 {
        let log = stack.artifact(&attempt_run(stack, &run, n, 0), "logs/step.log");
        assert!(
            log.contains("reusing the uv environment"),
            "{}",
            &log[..log.len().min(3000)]
        );
    }
    eprintln!("noisy beside quiet: first run {first:?} (environment built), second {second:?}");
}

#[test]
fn secrets_reach_the_process_and_nowhere_else() {
    let stack = Stack::shared();
    let secret = "s3cr3t-value-4217";
    let file = stack.dir.path().join("secrets.json");
    std::fs::write(
        &file,
        json!({"test-creds": {"api_key": secret}}).to_string(),
    )
    .unwrap();
    let env = agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _agent = stack.agent_with_env("secrets", &["--secrets-file", file.to_str().unwrap()], &env);
    let mut n = node("use", &project("noisy"), "secrets");
    n["env"] = json!({"GREETING": "hello {{params.who}}"});
    n["secretEnv"] = json!({"API_KEY": {"secret": "test-creds", "key": "api_key"}});
    let mut t = template("secret-pipeline", vec![n], vec![]);
    t["parameters"] = json!([{"name": "who", "default": "ana"}]);
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "secret-pipeline", "cluster": "secrets"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let child = attempt_run(stack, &run, 0, 0);
    use std::fmt::Write;
    let digest = {
        // sha256 of the value, as the step wrote it.
        let out = Command::new("python3")
            .args([
                "-c",
                &format!("import hashlib; print(hashlib.sha256(b'{secret}').hexdigest())"),
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(
        stack.artifact(&child, "outputs/key.sha256"),
        digest,
        "the process got the value"
    );
    let log = stack.artifact(&child, "logs/step.log");
    assert!(log.contains("the key is ***"), "{log}");
    assert!(log.contains("greeting: hello ana"), "{log}");
    let mut everything = String::new();
    write!(everything, "{run}{log}{child}").unwrap();
    let parent = stack.mlflow_api(
        "GET",
        &format!(
            "runs/get?run_id={}",
            run["mlflow"]["runId"].as_str().unwrap()
        ),
        None,
    );
    write!(everything, "{parent}").unwrap();
    assert!(
        !everything.contains(secret),
        "the value is in no record, tag, param or log"
    );
    // A secret the agent does not have fails the attempt, naming it.
    let mut n = node("use", &project("noisy"), "secrets");
    n["secretEnv"] = json!({"API_KEY": {"secret": "test-creds", "key": "missing"}});
    stack.put_template(&template("secret-missing", vec![n], vec![]));
    let id = stack.start_run(&json!({"template": "secret-missing", "cluster": "secrets"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"test-creds\" has no key \"missing\""),
        "{error}"
    );
}

#[test]
fn a_step_with_secrets_shows_its_output_live_and_keeps_its_lines_whole() {
    let stack = Stack::shared();
    let file = stack.dir.path().join("secrets-live.json");
    std::fs::write(
        &file,
        json!({"test-creds": {"api_key": "s3cr3t-value-4217"}}).to_string(),
    )
    .unwrap();
    let env = agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _agent = stack.agent_with_env(
        "secrets-live",
        &["--secrets-file", file.to_str().unwrap()],
        &env,
    );
    let release = stack.dir.path().join("release-held-step");
    let mut n = node("held", &project("held"), "main");
    n["parameters"] = json!({"release": release.display().to_string()});
    n["secretEnv"] = json!({"API_KEY": {"secret": "test-creds", "key": "api_key"}});
    stack.put_template(&template("secret-live-tail", vec![n], vec![]));
    let id = stack.start_run(&json!({"template": "secret-live-tail", "cluster": "secrets-live"}));
    // The half-printed line shows in the live tail while the step waits: masking holds back
    // only what could still become a secret ("phase one " cannot).
    let tail_of = |r: &Value| {
        r["nodes"][0]["instances"][0]["attempts"][0]["logTail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let run = stack.wait_until(
        &id,
        RUN_TIMEOUT,
        "the live tail showing \"phase one\"",
        |r| tail_of(r).contains("phase one"),
    );
    assert_eq!(run["status"], "running", "{run:#}");
    std::fs::write(&release, "").unwrap();
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // Nothing of stdout waited for its next write: the stderr line follows what stdout printed
    // before it, as on a terminal.
    let log = stack.artifact(&attempt_run(stack, &run, 0, 0), "logs/step.log");
    assert!(
        log.contains("starting\nphase one a warning\nphase two\n"),
        "{log}"
    );
}

#[test]
fn a_conda_yaml_only_project_from_git_runs_on_an_agent_without_conda() {
    // `make up`'s agent on a machine without conda: --conda-env-manager uv.
    let stack = Stack::shared();
    let served = tempfile::tempdir().unwrap();
    let repo = served.path().join("conda-example.git");
    std::fs::create_dir(&repo).unwrap();
    for f in ["MLproject", "conda.yaml", "train.py", "table.csv"] {
        std::fs::copy(
            root().join("tests/projects/conda-example").join(f),
            repo.join(f),
        )
        .unwrap();
    }
    concurrent_tests::git(&repo, &["init", "--quiet", "-b", "main"]);
    concurrent_tests::git(&repo, &["add", "."]);
    concurrent_tests::git(&repo, &["commit", "--quiet", "-m", "example"]);
    let (daemon, base) = concurrent_tests::git_daemon(served.path());
    let mut env = agent_env();
    env.push(("CONCURRENT_CONDA_BIN", "/nonexistent/conda".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _agent = stack.agent_with_env("no-conda", &["--conda-env-manager", "uv"], &env);
    let mut n = node("train", &format!("{base}/conda-example.git"), "main");
    n["parameters"] = json!({"alpha": "0.3", "l1_ratio": "0.2"});
    stack.put_template(&template("conda-example", vec![n], vec![]));
    let id = stack.start_run(&json!({"template": "conda-example", "cluster": "no-conda"}));
    let run = stack.wait_run(&id, Duration::from_secs(600));
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log_tail());
    let child = attempt_run(stack, &run, 0, 0);
    let log = stack.artifact(&child, "logs/step.log");
    assert!(
        log.contains("this agent has no conda") && log.contains("building it with uv instead"),
        "the log says how the conda.yaml was built: {log}"
    );
    assert!(
        log.contains("left out, as MLflow leaves them out: numpy>=1.14.3"),
        "{log}"
    );
    let metrics = child["data"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rmse = metrics
        .iter()
        .find(|m| m["key"] == "rmse")
        .unwrap_or_else(|| panic!("no rmse metric: {child:#}"));
    assert!(rmse["value"].as_f64().unwrap() > 0.0, "{rmse}");
    assert_eq!(tag(&child, "mlflow.project.env"), Some("uv"));
    // The node's envManager still comes first: conda, which this agent lacks, is named.
    let mut n = node("train", &format!("{base}/conda-example.git"), "main");
    n["envManager"] = json!("conda");
    stack.put_template(&template("conda-example-conda", vec![n], vec![]));
    let id = stack.start_run(&json!({"template": "conda-example-conda", "cluster": "no-conda"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("needs conda"), "{error}");
}

fn write_version(repo: &Path, version: &str) {
    std::fs::write(
        repo.join("MLproject"),
        format!("name: versioned\nentry_points:\n  main:\n    parameters:\n      wait: {{type: float, default: 0}}\n    command: \"sleep {{wait}} && echo {version} > $CONCURRENT_OUTPUT_DIR/version.txt\"\n"),
    )
    .unwrap();
}

#[test]
fn a_git_project_runs_the_commit_pinned_when_it_first_started() {
    let stack = Stack::shared();
    let served = tempfile::tempdir().unwrap();
    let repo = served.path().join("repo.git");
    std::fs::create_dir(&repo).unwrap();
    concurrent_tests::git(&repo, &["init", "--quiet", "-b", "main"]);
    write_version(&repo, "one");
    concurrent_tests::git(&repo, &["add", "."]);
    concurrent_tests::git(&repo, &["commit", "--quiet", "-m", "one"]);
    let (daemon, base) = concurrent_tests::git_daemon(served.path());
    let uri = format!("{base}/repo.git");
    let _agent = stack.agent("git");
    let mut first = node("first", &uri, "main");
    first["parameters"] = json!({"wait": "4"});
    first["version"] = json!("main");
    let mut second = node("second", &uri, "main");
    second["version"] = json!("main");
    let t = template(
        "git-pinned",
        vec![first, second],
        vec![json!({"from": "first", "to": "second"})],
    );
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "git-pinned", "cluster": "git"}));
    stack.wait_until(&id, RUN_TIMEOUT, "the first step runs", |r| {
        r["nodes"][0]["instances"][0]["state"] == "running"
    });
    std::thread::sleep(Duration::from_secs(1));
    // The branch moves while the run goes on.
    write_version(&repo, "two");
    concurrent_tests::git(&repo, &["commit", "--quiet", "-am", "two"]);
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}\n{}", daemon.log_tail());
    let out =
        |run: &Value, n| stack.artifact(&attempt_run(stack, run, n, 0), "outputs/version.txt");
    assert_eq!(out(&run, 0).trim(), "one");
    assert_eq!(
        out(&run, 1).trim(),
        "one",
        "the later node runs the pinned commit"
    );
    let commit = run["pins"][format!("{uri}#main")]
        .as_str()
        .unwrap()
        .to_string();
    let child = attempt_run(stack, &run, 1, 0);
    assert_eq!(
        tag(&child, "mlflow.source.git.commit"),
        Some(commit.as_str())
    );
    assert_eq!(tag(&child, "mlflow.source.git.repoURL"), Some(uri.as_str()));
    assert_eq!(tag(&child, "mlflow.source.type"), Some("PROJECT"));
    let parent = stack.mlflow_api(
        "GET",
        &format!(
            "runs/get?run_id={}",
            run["mlflow"]["runId"].as_str().unwrap()
        ),
        None,
    )["run"]
        .clone();
    assert_eq!(
        tag(&parent, "mlflow.source.git.commit"),
        Some(commit.as_str())
    );
    // A rerun of the run still runs its commit; a new run takes the branch as it is now.
    let (status, _) = stack.api(
        "POST",
        &format!("/api/v1/runs/{id}/rerun"),
        Some(&json!({"node": "second"})),
    );
    assert_eq!(status, 200);
    let rerun = stack.wait_run(&id, RUN_TIMEOUT);
    let latest = rerun["nodes"][1]["instances"][0]["attempts"]
        .as_array()
        .unwrap()
        .len()
        - 1;
    assert_eq!(
        stack
            .artifact(
                &attempt_run(stack, &rerun, 1, latest),
                "outputs/version.txt"
            )
            .trim(),
        "one"
    );
    let new = stack.start_run(&json!({"template": "git-pinned", "cluster": "git"}));
    let new = stack.wait_run(&new, RUN_TIMEOUT);
    assert_eq!(out(&new, 1).trim(), "two");
}

#[test]
fn projects_needing_a_tool_the_agent_lacks_are_refused_at_once_saying_what_to_change() {
    let stack = Stack::shared();
    let _agent = stack.agent_with_env(
        "no-tools",
        &[],
        &[("CONCURRENT_CONDA_BIN", "/nonexistent/conda")],
    );
    let t = template(
        "needs-tools",
        vec![
            node("conda", &project("conda-only"), "main"),
            node("docker", &project("docker-only"), "main"),
        ],
        vec![],
    );
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "needs-tools", "cluster": "no-tools"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "failed");
    let errors: Vec<String> = (0..2)
        .map(|n| {
            run["nodes"][n]["instances"][0]["attempts"][0]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    // Fail-fast may cancel the second before it starts; whichever ran says why.
    let said = errors.join("\n");
    assert!(
        said.contains("needs conda") && said.contains("envManager")
            || said.contains("no Docker daemon is reachable"),
        "{said}"
    );
    // envManager: local runs the conda project with the agent's own Python.
    let mut n = node("conda", &project("conda-only"), "main");
    n["envManager"] = json!("local");
    stack.put_template(&template("conda-as-local", vec![n], vec![]));
    let id = stack.start_run(&json!({"template": "conda-as-local", "cluster": "no-tools"}));
    assert_eq!(stack.wait_run(&id, RUN_TIMEOUT)["status"], "succeeded");
    stack.put_template(&template(
        "docker-local",
        vec![node("docker", &project("docker-only"), "main")],
        vec![],
    ));
    let id = stack.start_run(&json!({"template": "docker-local", "cluster": "no-tools"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no Docker daemon is reachable") && error.contains("python:3.11-slim"),
        "{error}"
    );
}

#[test]
fn inference_loads_the_model_once_in_its_environment_and_predicts_every_file() {
    let stack = Stack::shared();
    let env = agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _agent = stack.agent_with_env("inference", &["--capacity", "2"], &env);
    let mut t = template(
        "iris-inference",
        vec![
            node("train", &project("sklearn"), "train"),
            node("data", &project("sklearn"), "data"),
            json!({"id": "predict", "kind": "inference", "modelUri": "{{params.model}}"}),
        ],
        vec![
            json!({"from": "train", "to": "data", "input": "after"}),
            json!({"from": "data", "to": "predict", "input": "data"}),
        ],
    );
    t["parameters"] = json!([{"name": "model", "default": "models:/concurrent-test-iris/1"}]);
    stack.put_template(&t);
    let check = |run: &Value| {
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let train = attempt_run(stack, run, 0, 0);
        let expected: Value =
            serde_json::from_str(&stack.artifact(&train, "outputs/expected.json")).unwrap();
        let predict = attempt_run(stack, run, 2, 0);
        for part in ["part-0.csv", "part-1.json", "part-2.parquet"] {
            let got: Value = serde_json::from_str(
                &stack.artifact(&predict, &format!("outputs/predictions/data/{part}.json")),
            )
            .unwrap();
            assert_eq!(got["predictions"], expected[part], "{part}");
        }
        let log = stack.artifact(&predict, "logs/step.log");
        assert_eq!(log.matches("model loaded once").count(), 1, "{log}");
        assert!(
            log.contains("uv environment"),
            "the model's own environment: {log}"
        );
        train
    };
    let id = stack.start_run(&json!({"template": "iris-inference", "cluster": "inference"}));
    let run = stack.wait_run(&id, Duration::from_secs(600));
    let train = check(&run);
    // The same model by its run.
    let by_run = format!("runs:/{}/model", train["info"]["run_id"].as_str().unwrap());
    let id = stack.start_run(&json!({"template": "iris-inference", "cluster": "inference", "parameters": {"model": by_run}}));
    let run = stack.wait_run(&id, Duration::from_secs(600));
    check(&run);
    // The model's environment is keyed by what its files say, not where each attempt
    // downloaded them: the second inference reuses what the first built.
    let log = stack.artifact(&attempt_run(stack, &run, 2, 0), "logs/step.log");
    assert!(log.contains("reusing the uv environment"), "{log}");
}
