//! The designer end to end in headless Chromium, inside the real MLflow UI, against the real
//! stack: build a three-node DAG by pointer drags, connect it, fill the inspector, see and fix
//! validation problems, save, undo/redo, diff versions, run it, watch it succeed, open a node's
//! MLflow run. Screenshots of the key states go to tests/artifacts/designer/.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::{json, root, Stack};
use fantoccini::Locator;

const CTRL_Z: &str = "\u{E009}z\u{E000}";
const CTRL_SHIFT_Z: &str = "\u{E009}\u{E008}z\u{E000}";
const SECS: Duration = Duration::from_secs(20);

#[test]
fn a_dag_designed_in_the_browser_is_saved_run_and_opened_in_mlflow() {
    let stack = Stack::shared();
    let project = root().join("examples/pipeline").display().to_string();
    let runtime = concurrent_tests::browser::runtime();
    let _agent = stack.agent("local");
    runtime.block_on(async {
        let b = Browser::start("designer").await;
        b.sign_in(stack).await;
        b.wait_for(r#"aside nav a[data-concurrent="dags"]"#, Duration::from_secs(90)).await.click().await.unwrap();
        b.wait_for(r#"#concurrent-root a[data-action="new"]"#, SECS).await.click().await.unwrap();
        let canvas = b.wait_for("#cc-canvas", SECS).await;

        // Three project nodes, each dragged from the palette onto the canvas.
        let palette = b.wait_for(r#".cc-palette-item[data-kind="project"]"#, SECS).await;
        let width = b.client.execute("return document.getElementById('cc-canvas').getBoundingClientRect().width", vec![]).await.unwrap().as_f64().unwrap();
        // A diagonal, so the nodes do not overlap however narrow MLflow leaves the canvas.
        for (i, (x, y)) in [(-width / 4.0, -150.0), (0.0, 0.0), (width / 4.0, 150.0)].into_iter().enumerate() {
            b.drag(&palette, &canvas, x, y).await;
            b.wait_for(&format!(r#"[data-node="project-{}"]"#, i + 1), SECS).await;
        }
        assert_eq!(b.count("#cc-canvas [data-node]").await, 3);
        b.wait_for(r#"[data-action="fit"]"#, SECS).await.click().await.unwrap();

        // Connect by dragging from an output port onto the next node.
        for (from, to) in [(1, 2), (2, 3)] {
            let port = b.wait_for(&format!(r#"[data-port-of="project-{from}"]"#), SECS).await;
            let target = b.wait_for(&format!(r#"[data-node="project-{to}"]"#), SECS).await;
            b.drag(&port, &target, 0.0, 0.0).await;
        }
        if b.count("#cc-canvas [data-edge]").await != 2 {
            b.screenshot("debug").await;
            panic!("two connections; notice: {:?}", b.client.find(Locator::Css("[data-notice]")).await.ok().map(|_| ()));
        }
        // Closing a cycle is refused on the spot, naming the path.
        let port = b.wait_for(r#"[data-port-of="project-3"]"#, SECS).await;
        let first = b.wait_for(r#"[data-node="project-1"]"#, SECS).await;
        b.drag(&port, &first, 0.0, 0.0).await;
        let notice = b.text("[data-notice]").await;
        assert!(notice.contains("would make a cycle: project-1 → project-2 → project-3"), "{notice}");
        assert_eq!(b.count("#cc-canvas [data-edge]").await, 2);

        // The template is not valid yet: no name, no project URIs. Problems show on the nodes
        // and in the list; clicking one selects its node.
        assert!(b.count("[data-problems] li").await >= 4, "name and three URIs");
        assert_eq!(b.count("#cc-canvas .cc-node.cc-invalid").await, 3);
        assert!(b.client.find(Locator::Css(r#"[data-action="run"]"#)).await.unwrap().attr("disabled").await.unwrap().is_some());
        b.screenshot("1-problems").await;
        b.wait_for(r#"[data-problems] button[data-path="/nodes/1/uri"]"#, SECS).await.click().await.unwrap();
        b.wait_for(r#"[data-inspector="node"]"#, SECS).await;
        assert_eq!(b.wait_for(r#"[data-inspector="node"] input[name="id"]"#, SECS).await.prop("value").await.unwrap().as_deref(), Some("project-2"));

        // Fill the inspector of each node.
        for (id, name, entry) in [("project-1", "Prepare", "prepare"), ("project-2", "Train", "train"), ("project-3", "Report", "report")] {
            b.wait_for(&format!(r#"[data-node="{id}"] .cc-node-box"#), SECS).await.click().await.unwrap();
            b.wait_js("inspector", &format!(r#"document.querySelector('[data-inspector="node"] input[name="id"]')?.value === "{id}""#), SECS).await;
            b.fill(r#"[data-inspector="node"] input[name="name"]"#, name).await;
            b.fill(r#"[data-inspector="node"] input[name="uri"]"#, &project).await;
            // The agent reads the project: its entry points are offered, not typed.
            b.wait_js("the entry points read", &format!(r#"document.querySelector('[data-entry-points] option[value="{entry}"]')"#), SECS).await;
            b.wait_for("[data-entry-points]", SECS).await.select_by_value(entry).await.unwrap();
            b.wait_js("the entry point chosen", &format!(r#"document.querySelector('[data-node="{id}"]')?.textContent.includes("{entry}")"#), SECS).await;
        }
        b.wait_for(r#"[data-node="project-2"] .cc-node-box"#, SECS).await.click().await.unwrap();
        b.fill(r#"[data-inspector="node"] input[name="instances"]"#, "2").await;
        // Kubernetes settings as JSON: a typo is refused on the spot, a bad value is a problem
        // pointing into the settings, a good one is kept.
        let k8s = r#"[data-inspector="node"] textarea[name="kubernetes"]"#;
        b.fill(k8s, r#"{"nodeSelektor": {"pool": "a100"}}"#).await;
        b.wait_js("typo refused", r#"document.querySelector('[data-notice]')?.textContent.includes('did you mean "nodeSelector"')"#, SECS).await;
        b.fill(k8s, r#"{"nodeSelector": {"pool": "a100"}, "tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]}"#).await;
        b.wait_js("the toleration's problem", r#"[...document.querySelectorAll('.cc-node-problems li')].some(li => li.textContent.includes('must be empty when the operator is "Exists"'))"#, SECS).await;
        b.fill(k8s, r#"{"nodeSelector": {"pool": "a100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}"#).await;
        b.wait_js("no node problems", r#"document.querySelectorAll('.cc-node-problems li').length === 0"#, SECS).await;
        // The second connection feeds report.py's "models" input, broadcast.
        b.wait_js("train → report drawn", r#"document.querySelector('[data-edge="1"] .cc-edge-hit')"#, SECS).await;
        b.wait_for(r#"[data-edge="1"] .cc-edge-hit"#, SECS).await.click().await.unwrap();
        b.fill(r#"[data-inspector="edge"] input[name="input"]"#, "models").await;
        // The first one splits files across train's instances; the by-key preview shows keys.
        b.wait_for(r#"[data-edge="0"] .cc-edge-hit"#, SECS).await.click().await.unwrap();
        let mode = b.wait_for(r#"[data-inspector="edge"] select[name="mode"]"#, SECS).await;
        mode.select_by_value("by-key").await.unwrap();
        let preview = b.text("[data-preview]").await;
        assert!(preview.contains("a/part-0.csv a") && preview.contains("b/part-2.csv b"), "{preview}");
        mode.select_by_value("by-file").await.unwrap();

        // Still one problem: the template's name. Fix it on the template inspector.
        b.wait_js("only the name left", r#"document.querySelectorAll('[data-problems] li').length === 1"#, SECS).await;
        assert!(b.text("[data-problems]").await.contains("template name"));
        b.keys("\u{E00C}").await; // Escape: nothing selected shows the template
        b.fill(r#"[data-inspector="template"] input[name="templateName"]"#, "designed-pipeline").await;
        b.wait_js("valid", r#"document.querySelectorAll('[data-problems] li').length === 0"#, SECS).await;
        assert_eq!(b.count("#cc-canvas .cc-node.cc-invalid").await, 0);
        // Auto-layout puts the chain left to right.
        b.wait_for(r#"[data-action="layout"]"#, SECS).await.click().await.unwrap();
        let x = |id: &str| format!(r#"document.querySelector('[data-node="{id}"]').getBoundingClientRect().left"#);
        b.wait_js("left to right", &format!("{} < {} && {} < {}", x("project-1"), x("project-2"), x("project-2"), x("project-3")), SECS).await;
        b.screenshot("2-valid").await;

        // Save → version 1; the URL becomes the template's.
        b.wait_for(r#"[data-action="save"]"#, SECS).await.click().await.unwrap();
        b.wait_js("saved", r#"document.querySelector('[data-version]')?.textContent === "version 1""#, SECS).await;
        assert!(b.client.current_url().await.unwrap().fragment().unwrap().ends_with("/dags/templates/designed-pipeline"));
        let saved = tokio::task::block_in_place(|| stack.api("GET", "/api/v1/templates/designed-pipeline", None).1);
        assert_eq!(saved["template"]["edges"][1]["input"], "models", "{saved}");
        assert_eq!(saved["template"]["nodes"][1]["instances"], 2);
        assert_eq!(saved["template"]["nodes"][1]["kubernetes"], json!({"nodeSelector": {"pool": "a100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]}));

        // Undo and redo an edit (instances 2 → 3), then save it as version 2.
        b.wait_for(r#"[data-node="project-2"] .cc-node-box"#, SECS).await.click().await.unwrap();
        b.fill(r#"[data-inspector="node"] input[name="instances"]"#, "3").await;
        let sub = r#"document.querySelector('[data-node="project-2"] .cc-node-sub').textContent"#;
        b.wait_js("×3", &format!("{sub}.endsWith('×3')"), SECS).await;
        b.keys(CTRL_Z).await;
        b.wait_js("undone", &format!("{sub}.endsWith('×2')"), SECS).await;
        b.keys(CTRL_SHIFT_Z).await;
        b.wait_js("redone", &format!("{sub}.endsWith('×3')"), SECS).await;
        assert!(b.text("[data-version]").await.contains("unsaved changes"));
        b.wait_for(r#"[data-action="save"]"#, SECS).await.click().await.unwrap();
        b.wait_js("saved v2", r#"document.querySelector('[data-version]')?.textContent === "version 2""#, SECS).await;

        // The versions diff names the change field by field.
        b.wait_for(r#"[data-action="versions"]"#, SECS).await.click().await.unwrap();
        b.wait_js("diff", r#"document.querySelector('[data-diff] li')"#, SECS).await;
        let diff = b.text("[data-diff]").await;
        assert!(diff.contains("node project-2: instances 2 → 3"), "{diff}");
        b.screenshot("3-diff").await;
        b.keys("\u{E00C}").await;

        // Leaving the tab and coming back keeps unsaved edits.
        b.wait_for(r#"[data-node="project-3"] .cc-node-box"#, SECS).await.click().await.unwrap();
        b.fill(r#"[data-inspector="node"] input[name="name"]"#, "Merge").await;
        b.client.execute("location.hash = '#/experiments'", vec![]).await.unwrap();
        b.wait_js("left", "document.getElementById('concurrent-root').hidden", SECS).await;
        b.client.execute("location.hash = '#/dags/templates/designed-pipeline'", vec![]).await.unwrap();
        b.wait_js("kept", r#"document.querySelector('[data-node="project-3"] .cc-node-title')?.textContent === "Merge""#, SECS).await;
        b.keys(CTRL_Z).await;
        b.wait_js("back to saved", r#"!document.querySelector('[data-version]').textContent.includes('unsaved')"#, SECS).await;

        // The designer came without the run view's code (scripts/build.sh splits it off); the
        // run view fetches it when first shown.
        // Room for the entries to come: MLflow's UI alone fills the browser's default buffer.
        b.keep_fetches().await;
        assert!(b.fetches("/split_run_page_").await == 0, "the designer's first load fetched the run view's module");

        // Run it and watch every node turn green.
        b.wait_for(r#"[data-action="run"]:not([disabled])"#, SECS).await.click().await.unwrap();
        b.wait_for(r#"[data-action="start-run"]"#, SECS).await.click().await.unwrap();
        b.wait_for("[data-run-view]", SECS).await;
        assert!(b.fetches("/split_run_page_").await > 0, "the run view showed without its own module: is the bundle split?");
        b.wait_js("run succeeded", r#"document.querySelector('[data-run-status]')?.dataset.runStatus === "succeeded""#, Duration::from_secs(240)).await;
        assert_eq!(b.count(r#".cc-run-graph [data-state="succeeded"]"#).await, 3);
        b.screenshot("4-run-succeeded").await;

        // A node's instances link to their MLflow runs, which show the DAG's tags.
        b.wait_for(r#".cc-run-graph [data-node="project-2"]"#, SECS).await.click().await.unwrap();
        // The node's page of instances is read when it is selected.
        b.wait_js("the instances", "document.querySelectorAll('[data-instances] tr[data-instance]').length === 3", SECS).await;
        let link = b.wait_for("[data-instances] a[data-mlflow-run]", SECS).await;
        let href = link.attr("href").await.unwrap().unwrap();
        let run_id = href.rsplit('/').next().unwrap().to_string();
        link.click().await.unwrap();
        b.wait_js("MLflow run page", &format!("document.getElementById('concurrent-root').hidden && document.body.innerText.includes('{run_id}')"), Duration::from_secs(60)).await;
        b.wait_js("DAG tags on MLflow's run page", "document.body.innerText.includes('concurrent.node')", Duration::from_secs(60)).await;
        b.screenshot("5-mlflow-run").await;
        b.client.clone().close().await.unwrap();
    });
}
