//! The partition preview against the real stack: after one run of the example pipeline, the
//! connection inspector shows, for the upstream node's real outputs, the files (and sizes) each
//! downstream instance would get — the same split the run itself made — and follows edits of
//! the mode; a template that never ran says so.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::{json, Stack};

const SECS: Duration = Duration::from_secs(30);

async fn slices(b: &Browser) -> Vec<(u64, Vec<String>)> {
    b.client
        .execute("return [...document.querySelectorAll('[data-slices] tr[data-slice]')].map((r) => [Number(r.children[1].textContent), r.children[3].title])", vec![])
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let paths = r[1].as_str().unwrap();
            (r[0].as_u64().unwrap(), paths.lines().filter(|l| !l.is_empty()).map(String::from).collect())
        })
        .collect()
}

#[test]
fn a_connection_previews_its_split_of_the_last_runs_real_files() {
    let stack = Stack::shared();
    let _agent = stack.agent("preview");
    // Train sits lower: a level edge has a zero-height box, which WebDriver will not click.
    let mut t = concurrent_tests::example_template("preview-pipeline", 3);
    t["nodes"][1]["position"]["y"] = json!(260);
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "preview-pipeline", "cluster": "preview", "parameters": {"parts": "5"}}));
    let run = stack.wait_run(&id, Duration::from_secs(300));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // What the run gave each train instance.
    let given: Vec<Vec<String>> = run["nodes"][1]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["inputs"]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(given.iter().map(Vec::len).sum::<usize>(), 5, "{given:?}");
    t["name"] = json!("never-ran");
    stack.put_template(&t);

    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("designer_partitions", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/templates/preview-pipeline", stack.edge_url)).await.unwrap();
        b.wait_js("prepare → train drawn", r#"document.querySelector('[data-edge="0"] .cc-edge-hit')"#, Duration::from_secs(90)).await;
        b.wait_for(r#"[data-edge="0"] .cc-edge-hit"#, SECS).await.click().await.unwrap();
        b.wait_js("two slices", "document.querySelectorAll('[data-slices] tr[data-slice]').length === 2", Duration::from_secs(60)).await;
        let shown = slices(&b).await;
        assert_eq!(shown.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), given, "the preview is the split the run made");
        assert_eq!(shown.iter().map(|(n, _)| *n as usize).collect::<Vec<_>>(), given.iter().map(Vec::len).collect::<Vec<_>>());
        let summary = b.text("[data-preview-summary]").await;
        assert!(summary.contains("5 files") && summary.contains(&id[..8]) && summary.contains("2 instances"), "{summary}");
        b.screenshot("partition-preview").await;

        // Broadcast: every instance would get all five.
        b.wait_for(r#"[data-inspector="edge"] select[name="mode"]"#, SECS).await.select_by_value("broadcast").await.unwrap();
        b.wait_js("broadcast", "[...document.querySelectorAll('[data-slices] tr[data-slice]')].every((r) => r.children[1].textContent === '5')", SECS).await;

        // Fan-in: report sees both train instances' files, each under its instance. (At 1440 px
        // with MLflow's Assistant open the inspector overlays the canvas: close it first.)
        if b.count(".cc-side > .cc-close").await > 0 {
            b.wait_for(".cc-side > .cc-close", SECS).await.click().await.unwrap();
        }
        b.wait_for(r#"[data-edge="1"] .cc-edge-hit"#, SECS).await.click().await.unwrap();
        b.wait_js("one slice for report", "document.querySelectorAll('[data-slices] tr[data-slice]').length === 1", Duration::from_secs(60)).await;
        let fan_in = slices(&b).await;
        let outputs: usize = run["nodes"][1]["instances"].as_array().unwrap().iter().map(|i| i["outputs"].as_array().unwrap().len()).sum();
        assert_eq!(fan_in[0].0 as usize, outputs);
        assert!(fan_in[0].1.iter().any(|p| p.starts_with("0/")) && fan_in[0].1.iter().any(|p| p.starts_with("1/")), "{fan_in:?}");

        // A template that never ran has nothing to preview on, and says so.
        b.client.goto(&format!("{}/#/dags/templates/never-ran", stack.edge_url)).await.unwrap();
        b.wait_js("prepare → train drawn", r#"document.querySelector('[data-edge="0"] .cc-edge-hit')"#, Duration::from_secs(60)).await;
        b.wait_for(r#"[data-edge="0"] .cc-edge-hit"#, SECS).await.click().await.unwrap();
        let hint = b.text("[data-no-run]").await;
        assert!(hint.contains("run it once"), "{hint}");
        b.client.clone().close().await.unwrap();
    });
}
