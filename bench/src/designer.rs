//! The designer on a big template in headless Chromium: open time of 1,000 nodes and 1,500
//! edges (fetch, layout, render, first paint) and frame times while dragging a node in it.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::{json, Stack};
use serde_json::Value;

use crate::{median, pct, Row};

/// A layered template without positions: `layers` × `width` nodes; every node after the first
/// layer takes one input from the layer before, and every third of them a second one.
pub fn big_template(name: &str, layers: usize, width: usize) -> Value {
    let id = |l: usize, i: usize| format!("n{l}-{i}");
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for l in 0..layers {
        for i in 0..width {
            nodes.push(json!({"id": id(l, i), "kind": "project", "uri": "examples/pipeline", "entryPoint": "train"}));
            if l > 0 {
                edges.push(json!({"from": id(l - 1, i), "to": id(l, i), "input": "data"}));
                if i % 3 != 2 {
                    edges.push(json!({"from": id(l - 1, (i * 7 + 3) % width), "to": id(l, i), "input": "extra"}));
                }
            }
        }
    }
    json!({"apiVersion": "concurrent/v1", "name": name, "nodes": nodes, "edges": edges})
}

/// Opens `#/dags/templates/<name>` from the running app and resolves, two animation frames
/// after the designer drew it (so the frame is painted), with the milliseconds it took, when
/// the designer's marks of the open's phases came (`cc-open-*`, ms after the start) and how
/// many nodes it drew (those near the screen).
const OPEN: &str = r#"
const [name, done] = arguments;
performance.clearMarks();
const t0 = performance.now();
location.hash = '#/dags/templates/' + name;
const check = () => {
  if (performance.getEntriesByName('cc-open-drawn').length > 0) {
    requestAnimationFrame(() => requestAnimationFrame(() => {
      const total = performance.now() - t0;
      const marks = {};
      for (const m of performance.getEntriesByType('mark')) marks[m.name] = m.startTime - t0;
      const drawn = document.querySelectorAll('#cc-canvas [data-node]').length;
      done({total, marks, drawn});
    }));
  } else {
    requestAnimationFrame(check);
  }
};
check();
"#;

/// The open's phases, from its marks: fetch (request and JSON decode), layout, draw (the
/// elements near the screen, to the next frame's start) and paint (that frame's style, layout
/// and paint, to the frame after).
const PHASES: [(&str, &str); 3] = [
    ("fetch", "cc-open-fetched"),
    ("layout", "cc-open-laid-out"),
    ("draw", "cc-open-drawn"),
];

/// Drags a node (`id`, or the one nearest the canvas's centre) for `frames` animation frames with real pointer events, one move per frame;
/// resolves with the frame intervals and each move's handling time (events, style and layout).
const DRAG: &str = r#"
const [id, frames, done] = arguments;
// No id: the node nearest the canvas's centre.
const nearest = () => {
  const c = document.getElementById('cc-canvas').getBoundingClientRect();
  const d = (b) => { const r = b.getBoundingClientRect(); return Math.hypot(r.left + r.width / 2 - c.left - c.width / 2, r.top + r.height / 2 - c.top - c.height / 2); };
  return [...document.querySelectorAll('#cc-canvas [data-node] .cc-node-box')].sort((a, b) => d(a) - d(b))[0];
};
const box = id ? document.querySelector(`[data-node="${id}"] .cc-node-box`) : nearest();
const r = box.getBoundingClientRect();
let x = r.left + r.width / 2, y = r.top + r.height / 2;
box.dispatchEvent(new PointerEvent('pointerdown', {bubbles: true, button: 0, clientX: x, clientY: y, pointerId: 1}));
const intervals = [], work = [];
let last = null, n = 0;
const frame = (ts) => {
  if (last !== null) intervals.push(ts - last);
  last = ts;
  if (n++ === frames) {
    window.dispatchEvent(new PointerEvent('pointerup', {clientX: x, clientY: y, pointerId: 1}));
    done({intervals, work});
    return;
  }
  x += 3; y += 1;
  const t0 = performance.now();
  window.dispatchEvent(new PointerEvent('pointermove', {clientX: x, clientY: y, pointerId: 1}));
  document.body.getBoundingClientRect();
  work.push(performance.now() - t0);
  requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
"#;

/// The numbers of a list in a script's answer.
fn numbers(answer: &Value, key: &str) -> Vec<f64> {
    let list = answer[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in the script's answer: {answer}"));
    list.iter().filter_map(Value::as_f64).collect()
}

/// Back to the templates list, so the next open starts from the running app.
async fn back_to_list(b: &Browser) {
    b.client
        .execute("location.hash = '#/dags'", vec![])
        .await
        .unwrap();
    b.wait_for("#concurrent-root #templates h2", Duration::from_secs(30))
        .await;
}

pub fn designer(stack: &Stack, reps: usize, rows: &mut Vec<Row>) {
    let (layers, width) = (10, 100);
    let names: Vec<String> = (0..reps).map(|r| format!("bench-designer-{r}")).collect();
    let mut edges = 0;
    for name in &names {
        let t = big_template(name, layers, width);
        edges = t["edges"].as_array().unwrap().len();
        let (status, body) = stack.api_with(
            "PUT",
            &format!("/api/v1/templates/{name}"),
            Some(&t),
            &[("If-Match", "*")],
        );
        assert!(status == 201, "saving {name}: {status} {body}");
    }
    let nodes = layers * width;
    let small = big_template("bench-designer-small", 2, 3);
    let (status, body) = stack.api_with(
        "PUT",
        "/api/v1/templates/bench-designer-small",
        Some(&small),
        &[("If-Match", "*")],
    );
    assert!(
        status == 201,
        "saving bench-designer-small: {status} {body}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut open, mut intervals, mut work, mut baseline) = (vec![], vec![], vec![], vec![]);
    let mut phases: Vec<Vec<f64>> = vec![vec![]; PHASES.len() + 1];
    let mut drawn = vec![];
    runtime.block_on(async {
        let b = Browser::start("bench-designer").await;
        b.sign_in(stack).await;
        b.wait_for(
            r#"aside nav a[data-concurrent="dags"]"#,
            Duration::from_secs(90),
        )
        .await
        .click()
        .await
        .unwrap();
        b.wait_for("#concurrent-root #templates h2", Duration::from_secs(30))
            .await;
        // The same drag on a 6-node template: what this browser does per frame at best.
        b.client
            .execute_async(OPEN, vec![json!("bench-designer-small")])
            .await
            .expect("open the small template");
        let drag = b
            .client
            .execute_async(DRAG, vec![json!("n1-1"), json!(60)])
            .await
            .expect("drag a node");
        baseline.extend(numbers(&drag, "intervals"));
        back_to_list(&b).await;
        for name in &names {
            let opened = b
                .client
                .execute_async(OPEN, vec![json!(name)])
                .await
                .expect("open the big template");
            let total = opened["total"].as_f64().unwrap();
            open.push(total);
            drawn.push(opened["drawn"].as_f64().unwrap());
            let mut since = 0.0;
            for (i, (_, mark)) in PHASES.iter().enumerate() {
                let at = opened["marks"][mark]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no mark {mark} in the open: {opened}"));
                phases[i].push(at - since);
                since = at;
            }
            phases[PHASES.len()].push(total - since);
            let drag = b
                .client
                .execute_async(DRAG, vec![Value::Null, json!(60)])
                .await
                .expect("drag a node");
            intervals.extend(numbers(&drag, "intervals"));
            work.extend(numbers(&drag, "work"));
            back_to_list(&b).await;
        }
        b.client.clone().close().await.ok();
    });
    let spread = crate::spread(&open);
    rows.push((
        format!("designer: open a template of {nodes} nodes, {edges} edges (no positions)"),
        format!("{:.0} ms median", median(&mut open.clone())),
        format!(
            "fetch + auto-layout + draw + paint, headless Chromium at 1920×1080; spread {spread} over {reps}; {:.0} nodes drawn (those near the screen at the readable fit)",
            median(&mut drawn)
        ),
    ));
    let breakdown: Vec<String> = PHASES
        .iter()
        .map(|(phase, _)| *phase)
        .chain(["paint"])
        .zip(phases.iter_mut())
        .map(|(phase, ms)| format!("{phase} {:.0}", median(ms)))
        .collect();
    rows.push((
        "designer: the open's phases (medians, ms)".into(),
        breakdown.join(", "),
        "fetch: request and JSON decode; layout: core's auto-layout; draw: the elements near the screen, to the next frame's start (marks `cc-open-*` in the designer); paint: that frame's style, layout and paint, to the frame after".into(),
    ));
    rows.push((
        format!("designer: dragging a node among {nodes}, frame interval"),
        format!("{:.1} ms median", median(&mut intervals)),
        format!(
            "p95 {:.1} ms; the same drag among 6 nodes: {:.1} ms (this browser's floor); handling one move (events, style, layout) {:.2} ms median, p95 {:.2} ms",
            pct(&mut intervals, 0.95),
            median(&mut baseline),
            median(&mut work),
            pct(&mut work, 0.95)
        ),
    ));
}

/// The designer's download, gzipped (as the edge serves them): what its first load fetches (the
/// main module, its JS, the split modules' loader, the page's loader and CSS), and apart, the
/// modules of the pages fetched when first shown.
pub fn bundle(rows: &mut Vec<Row>) {
    let dir = concurrent_tests::root().join("frontend/dist/concurrent");
    let gz = |path: &std::path::Path| -> (u64, u64) {
        let raw = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build.sh --release", path.display()))
            .len();
        let out = std::process::Command::new("gzip")
            .arg("-9c")
            .arg(path)
            .output()
            .expect("gzip");
        (raw, out.stdout.len() as u64)
    };
    // scripts/build.sh puts each build's modules in a directory of their own.
    let build = std::fs::read_dir(&dir)
        .expect("frontend/dist/concurrent")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a build directory in frontend/dist/concurrent; run scripts/build.sh --release");
    let (wasm, wasm_gz) = gz(&build.join("concurrent_frontend_bg.wasm"));
    let (js, js_gz) = gz(&build.join("concurrent_frontend.js"));
    let (_, split_js_gz) = gz(&build.join("__wasm_split.js"));
    let (loader, loader_gz) = gz(&dir.join("loader.js"));
    let (css, css_gz) = gz(&dir.join("style.css"));
    let total = wasm_gz + js_gz + split_js_gz + loader_gz + css_gz;
    let mut later: Vec<(String, u64)> = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && !p.ends_with("concurrent_frontend_bg.wasm"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), gz(&p).1))
        .collect();
    later.sort();
    let page = |prefix: &str| -> u64 {
        later.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, b)| b).sum()
    };
    rows.push((
        "designer bundle, gzipped: the first load (wasm + JS + loader + CSS)".into(),
        format!("{:.0} KB", total as f64 / 1000.0),
        format!(
            "wasm {:.0} KB ({:.0} KB raw), JS {:.0} KB, loader {:.1} KB, CSS {:.1} KB",
            wasm_gz as f64 / 1000.0,
            wasm as f64 / 1000.0,
            (js_gz + split_js_gz) as f64 / 1000.0,
            loader_gz as f64 / 1000.0,
            css_gz as f64 / 1000.0
        ) + &format!(" (raw JS {js} B, loader {loader} B, CSS {css} B)"),
    ));
    rows.push((
        "designer bundle, gzipped: the pages fetched when first shown".into(),
        format!("{:.0} KB", later.iter().map(|(_, b)| b).sum::<u64>() as f64 / 1000.0),
        format!(
            "the run view {:.0} KB, schedules {:.0} KB, triggers {:.0} KB, tokens {:.0} KB, {} modules they share {:.0} KB",
            page("split_run_page") as f64 / 1000.0,
            page("split_schedules_page") as f64 / 1000.0,
            page("split_triggers_page") as f64 / 1000.0,
            page("split_tokens_page") as f64 / 1000.0,
            later.iter().filter(|(n, _)| n.starts_with("chunk_")).count(),
            page("chunk_") as f64 / 1000.0
        ),
    ));
}
