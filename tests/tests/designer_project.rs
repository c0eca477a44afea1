//! The project-aware inspector against the real stack: a live agent of the chosen cluster reads
//! a project's MLproject (a local path in its project root, or a git repository at a tag and
//! sub-directory) through the edge; the designer offers its entry points and typed parameter
//! fields and marks what MLflow would refuse; with no agent connected it says so at once.

use std::time::{Duration, Instant};

use concurrent_tests::browser::Browser;
use concurrent_tests::{json, Stack};
use serde_json::Value;

const SECS: Duration = Duration::from_secs(30);

fn inspect(stack: &Stack, cluster: &str, body: Value) -> (u16, Value) {
    tokio::task::block_in_place(|| {
        stack.api(
            "POST",
            &format!("/api/v1/clusters/{cluster}/inspect"),
            Some(&body),
        )
    })
}

#[test]
fn a_live_agent_reads_local_and_git_projects_and_says_why_it_cannot() {
    let stack = Stack::shared();
    // No agent of this cluster has ever polled: the answer comes at once, and says what to do.
    let asked = Instant::now();
    let (status, body) = inspect(stack, "nobody-here", json!({"uri": "tests/projects/noisy"}));
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no agent of cluster \"nobody-here\"")
            && message.contains("concurrent agent --cluster nobody-here"),
        "{message}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "not a timeout: {:?}",
        asked.elapsed()
    );

    let _agent = stack.agent("inspect");
    // A local project in the agent's project root.
    // Until the new agent's first poll, it is not connected yet.
    let started = Instant::now();
    let (status, body) = loop {
        let answer = inspect(stack, "inspect", json!({"uri": "tests/projects/noisy"}));
        if answer.0 != 503 || started.elapsed() > Duration::from_secs(60) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "noisy");
    assert_eq!(body["environment"], "python_env");
    let names: Vec<&str> = body["entryPoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["noisy", "quiet", "secrets"],
        "in the MLproject's order"
    );
    assert_eq!(
        body["entryPoints"][0]["parameters"],
        json!([{"name": "updates", "type": "float", "default": "10000"}])
    );

    // A git project at a tag, in a sub-directory; the answer names the commit.
    let served = tempfile::tempdir().unwrap();
    let repo = served.path().join("models.git");
    std::fs::create_dir_all(repo.join("train")).unwrap();
    concurrent_tests::git(&repo, &["init", "--quiet", "-b", "main"]);
    std::fs::write(
        repo.join("train/MLproject"),
        "name: trainer\ndocker_env:\n  image: python:3.11\nentry_points:\n  fit:\n    parameters:\n      data: uri\n      alpha: {type: float, default: 0.1}\n    command: python fit.py --data {data} --alpha {alpha}\n",
    )
    .unwrap();
    concurrent_tests::git(&repo, &["add", "."]);
    concurrent_tests::git(&repo, &["commit", "--quiet", "-m", "fit"]);
    concurrent_tests::git(&repo, &["tag", "v1"]);
    let commit = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&repo)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let (_daemon, base) = concurrent_tests::git_daemon(served.path());
    let uri = format!("{base}/models.git");
    let (status, body) = inspect(
        stack,
        "inspect",
        json!({"uri": uri, "version": "v1", "subPath": "train"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["commit"], commit.trim());
    assert_eq!(body["environment"], "docker_env");
    assert_eq!(
        body["entryPoints"][0]["parameters"][0],
        json!({"name": "data", "type": "uri"}),
        "required: no default"
    );

    // What the agent cannot read is a 422 that says why.
    let (status, body) = inspect(stack, "inspect", json!({"uri": uri, "version": "v9"}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no branch, tag or commit \"v9\""),
        "{body}"
    );
    let (status, body) = inspect(stack, "inspect", json!({"uri": "/etc"}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the directories this agent offers"),
        "{body}"
    );
    // A malformed request never reaches an agent.
    let (status, body) = inspect(
        stack,
        "inspect",
        json!({"uri": "tests/projects/noisy", "version": "--upload-pack=x"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("version:"),
        "{body}"
    );
    // Agents' own tokens may not ask (they answer).
    let token = std::fs::read_to_string(stack.agent_token_file("inspect")).unwrap();
    let (status, _) = tokio::task::block_in_place(|| {
        stack.api_as(
            Some(token.trim()),
            "POST",
            "/api/v1/clusters/inspect/inspect",
            Some(&json!({"uri": "x"})),
        )
    });
    assert_eq!(status, 403);
}

#[test]
fn the_designer_offers_the_projects_entry_points_and_marks_bad_parameters() {
    let stack = Stack::shared();
    let _agent = stack.agent("inspect-ui");
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": "aware", "nodes": [
        {"id": "train", "kind": "project", "uri": "tests/projects/noisy", "entryPoint": "noisy", "cluster": "inspect-ui",
         "parameters": {"epochs": "3"}, "position": {"x": 0, "y": 0}}], "edges": []}));
    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("designer_project", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/templates/aware", stack.edge_url)).await.unwrap();
        b.wait_for(r#"[data-node="train"] .cc-node-box"#, Duration::from_secs(90)).await.click().await.unwrap();
        // The entry points come from the MLproject, read by the cluster's agent.
        b.wait_js("the entry points offered", "document.querySelectorAll('[data-entry-points] option').length === 3", Duration::from_secs(60)).await;
        let options: Vec<String> = b.client.execute("return [...document.querySelectorAll('[data-entry-points] option')].map((o) => o.value)", vec![]).await.unwrap()
            .as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(options, ["noisy", "quiet", "secrets"]);
        assert!(b.text("[data-project-about]").await.contains("python_env"));
        let updates = b.wait_for(r#"[data-param="updates"] input"#, SECS).await;
        assert_eq!(updates.attr("placeholder").await.unwrap().as_deref(), Some("default 10000"));
        assert!(b.text(r#"[data-param="updates"]"#).await.contains("float"));
        // The node's undeclared parameter is marked.
        let undeclared = b.text(r#"[data-undeclared][data-param="epochs"]"#).await;
        assert!(undeclared.contains("declares no parameter") && undeclared.contains("updates"), "{undeclared}");
        // A value that is not a float is marked as soon as it is entered.
        b.fill(r#"[data-param="updates"] input"#, "lots").await;
        b.wait_js("the float refused", r#"document.querySelector('[data-param="updates"] [data-param-problem]')?.textContent.includes('not a number')"#, SECS).await;
        b.screenshot("project-aware").await;
        b.fill(r#"[data-param="updates"] input"#, "250").await;
        b.wait_js("the float accepted", r#"!document.querySelector('[data-param="updates"] [data-param-problem]')"#, SECS).await;
        // Picking another entry point changes the node; its parameters follow.
        b.wait_for("[data-entry-points]", SECS).await.select_by_value("quiet").await.unwrap();
        b.wait_js("the quiet entry point", r#"!document.querySelector('[data-param="updates"] input') && document.querySelector('[data-undeclared][data-param="updates"]')"#, SECS).await;
        // With no agent for the cluster, the designer says so and the free fields stay.
        b.fill(r#"input[name="inspectCluster"]"#, "nobody-ui").await;
        let why = b.text("[data-inspect-error]").await;
        assert!(why.contains("no agent of cluster \"nobody-ui\""), "{why}");
        assert_eq!(b.count(r#"input[name="entryPoint"]"#).await, 1, "the entry point can still be typed");
        b.client.clone().close().await.unwrap();
    });
}
