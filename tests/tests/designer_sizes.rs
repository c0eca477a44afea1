//! The designer on common screens: 1280×800, 1440×900 and 1920×1080, inside the real MLflow UI
//! with its Assistant panel open (as on a first visit), and at 1280 with the panel closed. After a
//! template opens, every node's title must be on the canvas, uncovered and big enough to read;
//! the canvas gets most of the width and the height the page gives it. A template of 1,000
//! nodes draws what is near the screen, and all of it once zoomed out.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::{json, Stack};
use serde_json::Value;

const SECS: Duration = Duration::from_secs(30);

/// For each node: its title's text, on-screen font height, and whether the title lies inside
/// the canvas and is the topmost thing at its centre (not under a panel).
const LABELS: &str = r#"
const canvas = document.getElementById('cc-canvas').getBoundingClientRect();
return [...document.querySelectorAll('#cc-canvas [data-node]')].map((n) => {
  const t = n.querySelector('.cc-node-title');
  if (!t || !t.textContent) return { id: n.dataset.node, text: '', px: 0, inside: false, top: false };
  const r = t.getBoundingClientRect();
  const inside = r.left >= canvas.left && r.right <= canvas.right && r.top >= canvas.top && r.bottom <= canvas.bottom;
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return { id: n.dataset.node, text: t.textContent, px: r.height, inside, top: !!hit && hit.closest('[data-node]') === n };
});
"#;

/// The designer's and the canvas's boxes, and the window's size.
const BOXES: &str = r#"
const d = document.querySelector('[data-designer]').getBoundingClientRect();
const c = document.getElementById('cc-canvas').getBoundingClientRect();
return { designer_w: d.width, designer_bottom: d.bottom, canvas_w: c.width, canvas_h: c.height, canvas_bottom: c.bottom, window_h: innerHeight };
"#;

async fn check(b: &Browser, stack: &Stack, name: &str, what: &str) -> Value {
    b.client
        .goto(&format!("{}/#/dags/templates/{name}", stack.edge_url))
        .await
        .unwrap();
    b.wait_js(
        "three nodes drawn",
        "document.querySelectorAll('#cc-canvas [data-node] .cc-node-title').length === 3",
        SECS,
    )
    .await;
    // The fit happens before the first draw; give a resize (panels settling) a moment.
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.screenshot(what).await;
    let labels = b.client.execute(LABELS, vec![]).await.unwrap();
    for l in labels.as_array().unwrap() {
        assert!(
            !l["text"].as_str().unwrap().is_empty(),
            "{what}: node {} drawn without its title: {labels}",
            l["id"]
        );
        assert!(
            l["inside"] == true && l["top"] == true,
            "{what}: the title of node {} is off the canvas or covered: {labels}",
            l["id"]
        );
        assert!(
            l["px"].as_f64().unwrap() >= 8.0,
            "{what}: the title of node {} is too small to read: {labels}",
            l["id"]
        );
    }
    let boxes = b.client.execute(BOXES, vec![]).await.unwrap();
    let f = |k: &str| boxes[k].as_f64().unwrap();
    assert!(
        f("canvas_w") >= 0.6 * f("designer_w"),
        "{what}: the canvas should get most of the designer's width: {boxes}"
    );
    assert!(
        f("designer_bottom") <= f("window_h") + 0.5 && f("designer_bottom") >= f("window_h") - 40.0,
        "{what}: the designer should take the height the page gives it: {boxes}"
    );
    boxes
}

#[test]
fn every_node_label_is_readable_at_common_screen_sizes() {
    let stack = Stack::shared();
    let name = "sizes-pipeline";
    stack.put_template(&concurrent_tests::example_template(name, 3));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (w, h) in [(1280, 800), (1440, 900), (1920, 1080)] {
            let b = Browser::start_sized("designer_sizes", (w, h)).await;
            b.sign_in(stack).await;
            b.wait_for(r#"aside nav a[data-concurrent="dags"]"#, Duration::from_secs(90))
                .await;
            let assistant = b
                .wait_js(
                    "MLflow's Assistant panel open on a first visit",
                    "!!document.evaluate(\"//*[text()[contains(., 'MLflow Assistant')]]\", document, null, 9, null).singleNodeValue",
                    SECS,
                )
                .await;
            assert_eq!(assistant, Value::Bool(true));
            let with_panel = check(&b, stack, name, &format!("{w}x{h}")).await;
            if w == 1280 {
                // The inspector overlays the narrow canvas on demand: selecting a node shows it,
                // its × hides it again.
                let side = "getComputedStyle(document.querySelector('.cc-side')).display";
                let shown: Value = b.client.execute(&format!("return {side}"), vec![]).await.unwrap();
                assert_eq!(shown, "none", "the inspector starts hidden on a narrow canvas");
                b.wait_for(r#"#cc-canvas [data-node="train"]"#, SECS).await.click().await.unwrap();
                b.wait_js("the inspector shown for the selected node", &format!("{side} !== 'none' && document.querySelector('.cc-side input[name=id]')?.value === 'train'"), SECS).await;
                b.screenshot(&format!("{w}x{h}-inspector")).await;
                b.wait_for(".cc-side > .cc-close", SECS).await.click().await.unwrap();
                b.wait_js("the inspector hidden again", &format!("{side} === 'none'"), SECS).await;
                // Closing the Assistant gives the canvas the room back.
                b.wait_for(r#"[data-component-id="mlflow.assistant.chat_panel.close"]"#, SECS)
                    .await
                    .click()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
                let without = check(&b, stack, name, &format!("{w}x{h}-no-assistant")).await;
                assert!(
                    without["canvas_w"].as_f64().unwrap() > with_panel["canvas_w"].as_f64().unwrap() + 100.0,
                    "closing the Assistant widens the canvas: {with_panel} → {without}"
                );
            }
        }
    });
}

#[test]
fn a_big_template_draws_what_is_near_the_screen_and_all_of_it_zoomed_out() {
    let stack = Stack::shared();
    let name = "sizes-thousand";
    let (layers, width) = (10, 100);
    let id = |l: usize, i: usize| format!("n{l}-{i}");
    let mut nodes = vec![];
    let mut edges = vec![];
    for l in 0..layers {
        for i in 0..width {
            nodes.push(json!({"id": id(l, i), "kind": "project", "uri": "examples/pipeline", "entryPoint": "train"}));
            if l > 0 {
                edges.push(json!({"from": id(l - 1, i), "to": id(l, i), "input": "data"}));
            }
        }
    }
    stack.put_template(
        &json!({"apiVersion": "concurrent/v1", "name": name, "nodes": nodes, "edges": edges}),
    );
    let count = "return [document.querySelectorAll('#cc-canvas [data-node]').length, document.querySelectorAll('#cc-canvas [data-edge]').length]";
    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("designer_sizes", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client
            .goto(&format!("{}/#/dags/templates/{name}", stack.edge_url))
            .await
            .unwrap();
        b.wait_js(
            "the first layer's first node drawn with its title",
            r#"document.querySelector('#cc-canvas [data-node="n0-0"] .cc-node-title')?.textContent === 'n0-0'"#,
            SECS,
        )
        .await;
        let near: Vec<u64> = serde_json::from_value(b.client.execute(count, vec![]).await.unwrap()).unwrap();
        b.screenshot("thousand-readable").await;
        assert!(
            near[0] > 10 && near[0] < 500 && near[1] < 900,
            "at a readable zoom only the nodes and edges near the screen are drawn: {near:?}"
        );
        // Fit shows the readable fit, and pressed again the whole DAG (the first press gives
        // the readable fit again if the canvas changed size since the open).
        for _ in 0..2 {
            b.wait_for(r#"button[data-action="fit"]"#, SECS).await.click().await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
            let drawn: Vec<u64> = serde_json::from_value(b.client.execute(count, vec![]).await.unwrap()).unwrap();
            if drawn[0] == 1000 {
                break;
            }
        }
        b.wait_js(
            "every node and edge drawn once the whole DAG is in view",
            "document.querySelectorAll('#cc-canvas [data-node]').length === 1000 && document.querySelectorAll('#cc-canvas [data-edge]').length === 900",
            SECS,
        )
        .await;
        b.screenshot("thousand-whole").await;
        b.client.clone().close().await.ok();
    });
}
