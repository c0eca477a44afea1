//! Sweeps, best-of selection and caching in the browser, against the real stack: the run view
//! marks the chosen instance and the ones a cache served, and says what a selection chose; the
//! designer edits a sweep (showing its points on the node) and a connection's selection.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::{example_template, json, Stack};

const SECS: Duration = Duration::from_secs(30);

#[test]
fn the_run_view_marks_the_best_and_the_cached_and_the_designer_edits_sweeps_and_selections() {
    let stack = Stack::shared();
    let _agent = stack.agent_with("ml-ui", &["--capacity", "2"]);
    let mut t = example_template("ml-marks", 3);
    t["cache"] = json!({"enabled": true});
    // Train sits lower: a level edge has a zero-height box, which WebDriver will not click.
    t["nodes"][1]["position"]["y"] = json!(260);
    t["edges"][1]["select"] = json!({"metric": "rows", "mode": "max"});
    stack.put_template(&t);
    let go = || {
        let id = stack.start_run(
            &json!({"template": "ml-marks", "cluster": "ml-ui", "parameters": {"parts": "5"}}),
        );
        let run = stack.wait_run(&id, Duration::from_secs(300));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        (id, run)
    };
    let (_, first) = go();
    let (second, run) = go();
    // The best train instance: the one that logged the most rows (both runs agree).
    let chosen = run["nodes"][2]["selections"][0]["chosen"][0]
        .as_u64()
        .unwrap();
    assert_eq!(first["nodes"][2]["selections"][0]["chosen"][0], chosen);

    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("designer_ml", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/runs/{second}", stack.edge_url)).await.unwrap();
        b.wait_for(r#"[data-run-status="succeeded"]"#, Duration::from_secs(60)).await;
        b.wait_for(r#".cc-run-graph [data-node="train"]"#, SECS).await.click().await.unwrap();
        b.wait_js("both train instances served from the cache", "document.querySelectorAll('[data-instances] [data-cached-from]').length === 2", SECS).await;
        b.wait_js("the chosen one marked best", "document.querySelectorAll('[data-instances] [data-best]').length === 1", SECS).await;
        let best_row = b
            .client
            .execute("return document.querySelector('[data-instances] [data-best]').closest('tr').dataset.instance", vec![])
            .await
            .unwrap();
        assert_eq!(best_row, json!(chosen.to_string()));
        let usage = b.text("[data-usage]").await;
        assert!(usage.contains("CPU-seconds") && usage.contains("2 instance(s) reused a cached result"), "{usage}");
        b.screenshot("run-view-best-and-cached").await;
        b.wait_for(r#".cc-run-graph [data-node="report"]"#, SECS).await.click().await.unwrap();
        let said = b.text(r#"[data-selection="models"]"#).await;
        assert!(said.contains("the highest rows of 2 train candidate(s)") && said.contains(&format!("train[{chosen}]")), "{said}");

        // The designer: a grid sweep on train, crossed with its two partitions.
        b.client.goto(&format!("{}/#/dags/templates/ml-marks", stack.edge_url)).await.unwrap();
        b.wait_for(r#"[data-node="train"] .cc-node-box"#, Duration::from_secs(90)).await.click().await.unwrap();
        b.wait_for(r#"[data-inspector="node"] select[name="sweepKind"]"#, SECS).await.select_by_value("grid").await.unwrap();
        b.fill(r#"[data-sweep-param="alpha"] input[name="sweepValues"]"#, "0.1, 1, 10").await;
        b.wait_for(r#"[data-action="add-sweep-param"]"#, SECS).await.click().await.unwrap();
        b.fill(r#"[data-sweep-param="param1"] input[name="sweepValues"]"#, "a, b").await;
        // The project read by the run's agent: a swept parameter the entry point does not
        // declare is named.
        b.fill(r#"input[name="inspectCluster"]"#, "ml-ui").await;
        b.wait_for(r#"[data-typed-params]"#, Duration::from_secs(60)).await;
        b.wait_js("the undeclared swept parameter named", r#"[...document.querySelectorAll('[data-sweep-problem]')].some(e => e.textContent.includes('"alpha"') && e.textContent.includes('does not declare'))"#, SECS).await;
        b.wait_js("six points", r#"document.querySelector('[data-sweep-points]')?.dataset.sweepPoints === "6""#, SECS).await;
        b.wait_for(r#"input[name="crossPartitions"]"#, SECS).await.click().await.unwrap();
        b.wait_js("the node shows its points", r#"document.querySelector('[data-node="train"]')?.textContent.includes("6 points")"#, SECS).await;
        b.screenshot("sweep-editor").await;
        // The connection into report: choose by the lowest rows instead. At this size the
        // inspector overlays the canvas, so it is put away first, as a user would.
        b.wait_for(r#"[data-action="inspector"]"#, SECS).await.click().await.unwrap();
        b.wait_for(r#"[data-edge="1"] .cc-edge-hit"#, SECS).await.click().await.unwrap();
        b.wait_js("the selection shown", r#"document.querySelector('[data-inspector="edge"] input[name="selectMetric"]')?.value === "rows""#, SECS).await;
        b.wait_for(r#"[data-inspector="edge"] select[name="selectMode"]"#, SECS).await.select_by_value("min").await.unwrap();
        b.wait_for(r#"[data-action="save"]"#, SECS).await.click().await.unwrap();
        b.wait_js("saved", r#"document.querySelector('[data-version]')?.textContent === "version 2""#, SECS).await;
    });
    let (status, saved) = stack.api("GET", "/api/v1/templates/ml-marks", None);
    assert_eq!(status, 200, "{saved}");
    let train = &saved["template"]["nodes"][1];
    assert_eq!(
        train["sweep"]["grid"]["alpha"],
        json!(["0.1", "1", "10"]),
        "{train:#}"
    );
    assert_eq!(train["sweep"]["grid"]["param1"], json!(["a", "b"]));
    assert_eq!(train["sweep"]["crossPartitions"], true);
    assert_eq!(
        saved["template"]["edges"][1]["select"],
        json!({"metric": "rows", "mode": "min", "top": 1})
    );
}
