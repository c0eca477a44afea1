//! Approvals and gates in the browser, against the real stack: the run view shows the
//! candidate's metrics beside the alias holder's and approves or rejects with a note; the
//! designer edits a node's condition, trigger rule, and the approval's and register's fields.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::{json, Stack};
use serde_json::Value;

const SECS: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const MODEL: &str = "ui-iris";

fn template() -> Value {
    json!({
        "apiVersion": "concurrent/v1", "name": "ship-ui",
        "nodes": [
            {"id": "train", "kind": "project", "uri": "tests/projects/sklearn", "entryPoint": "tune",
             "parameters": {"C": "1"}, "position": {"x": 40, "y": 60}},
            {"id": "gate", "kind": "approval", "message": "Ship the new model?",
             "compare": {"model": MODEL, "alias": "champion"}, "metrics": ["val_accuracy"],
             "position": {"x": 320, "y": 260}},
            {"id": "register", "kind": "register", "model": MODEL, "alias": "champion",
             "position": {"x": 600, "y": 60}}
        ],
        "edges": [
            {"from": "train", "to": "gate", "input": "model", "select": {"metric": "val_accuracy", "mode": "max"}},
            {"from": "gate", "to": "register", "input": "approved"},
            {"from": "train", "to": "register", "input": "model", "select": {"metric": "val_accuracy", "mode": "max"}}
        ]
    })
}

fn gate(run: &Value) -> &Value {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "gate")
        .unwrap()
}

#[test]
fn the_run_view_approves_beside_the_champion_and_the_designer_edits_gates() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("gates-ui", &["--capacity", "2"]);
    stack.put_template(&template());
    let start = || stack.start_run(&json!({"template": "ship-ui", "cluster": "gates-ui"}));
    let paused = |id: &str| {
        stack.wait_until(id, RUN_TIMEOUT, "the approval pauses the run", |r| {
            gate(r)["instances"][0]["state"] == "paused"
        })
    };
    let first = start();
    let run = paused(&first);
    let accuracy = {
        let train = run["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "train")
            .unwrap();
        let run_id = train["instances"][0]["attempts"][0]["mlflowRunId"]
            .as_str()
            .unwrap();
        let r = stack.mlflow_api("GET", &format!("runs/get?run_id={run_id}"), None);
        let m = r["run"]["data"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == "val_accuracy")
            .unwrap()["value"]
            .as_f64()
            .unwrap();
        format!("{m:.4}")
    };

    let runtime = concurrent_tests::browser::runtime();
    // The stack's calls block: they are made between the browser's async blocks.
    let b = runtime.block_on(Browser::start_sized("designer_gates", (1440, 900)));
    runtime.block_on(async {
        b.sign_in(stack).await;
        // First approval: nobody holds @champion yet.
        b.client.goto(&format!("{}/#/dags/runs/{first}", stack.edge_url)).await.unwrap();
        b.wait_for(r#".cc-run-graph [data-node="gate"]"#, Duration::from_secs(60)).await.click().await.unwrap();
        b.wait_js("the candidate's accuracy", &format!(r#"document.querySelector('[data-approval="gate"] [data-metric="val_accuracy"] [data-candidate]')?.textContent === "{accuracy}""#), SECS).await;
        let head = b.text(r#"[data-approval="gate"] thead"#).await;
        assert!(head.contains(&format!("{MODEL}@champion (not set yet)")), "{head}");
        b.fill(r#"textarea[name="decisionNote"]"#, "first model").await;
        b.wait_for(r#"[data-action="approve"]"#, SECS).await.click().await.unwrap();
        b.wait_for(r#"[data-run-status="succeeded"]"#, RUN_TIMEOUT).await;
        b.wait_for(r#".cc-run-graph [data-node="register"]"#, SECS).await.click().await.unwrap();
        let registered = b.text("[data-registered]").await;
        assert!(registered.contains(&format!("{MODEL} version 1")) && registered.contains("@champion"), "{registered}");
    });

    // Second: the champion (version 1) beside the candidate; rejected with a note.
    let second = start();
    paused(&second);
    runtime.block_on(async {
        b.client.goto(&format!("{}/#/dags/runs/{second}", stack.edge_url)).await.unwrap();
        b.wait_for(r#".cc-run-graph [data-node="gate"]"#, Duration::from_secs(60)).await.click().await.unwrap();
        b.wait_js("the champion's accuracy beside it", &format!(r#"document.querySelector('[data-approval="gate"] [data-metric="val_accuracy"] [data-current]')?.textContent === "{accuracy}""#), SECS).await;
        let head = b.text(r#"[data-approval="gate"] thead"#).await;
        assert!(head.contains(&format!("{MODEL}@champion (version 1)")), "{head}");
        b.screenshot("approval-beside-champion").await;
        b.fill(r#"textarea[name="decisionNote"]"#, "no better").await;
        b.wait_for(r#"[data-action="reject"]"#, SECS).await.click().await.unwrap();
        b.wait_for(r#"[data-run-status="failed"]"#, RUN_TIMEOUT).await;
        b.wait_for(r#".cc-run-graph [data-node="gate"]"#, SECS).await.click().await.unwrap();
        let said = b.text(r#"[data-decision="rejected"]"#).await;
        assert!(said.contains("Rejected by admin") && said.contains("no better"), "{said}");

        // The designer: a condition on the gate, read back from the saved template.
        b.client.goto(&format!("{}/#/dags/templates/ship-ui", stack.edge_url)).await.unwrap();
        b.wait_for(r#"[data-node="gate"] .cc-node-box"#, Duration::from_secs(90)).await.click().await.unwrap();
        b.wait_js("the approval's question", r#"document.querySelector('[data-inspector="node"] input[name="message"]')?.value === "Ship the new model?""#, SECS).await;
        b.fill(r#"[data-inspector="node"] input[name="when"]"#, "upstream.trian.state == \"succeeded\"").await;
        b.wait_js("the misspelt node named", r#"document.querySelector('[data-problems]')?.textContent.includes('did you mean "train"')"#, SECS).await;
        b.fill(r#"[data-inspector="node"] input[name="when"]"#, "max(upstream.train.metrics.val_accuracy) >= 0.8").await;
        b.wait_for(r#"[data-inspector="node"] select[name="triggerRule"]"#, SECS).await.select_by_value("allDone").await.unwrap();
        b.screenshot("approval-fields").await;
        b.wait_for(r#"[data-action="save"]"#, SECS).await.click().await.unwrap();
        b.wait_js("saved", r#"document.querySelector('[data-version]')?.textContent === "version 2""#, SECS).await;
    });
    let (status, saved) = stack.api("GET", "/api/v1/templates/ship-ui", None);
    assert_eq!(status, 200, "{saved}");
    let node = saved["template"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "gate")
        .unwrap();
    assert_eq!(
        node["when"], "max(upstream.train.metrics.val_accuracy) >= 0.8",
        "{node:#}"
    );
    assert_eq!(node["triggerRule"], "allDone", "{node:#}");
}
