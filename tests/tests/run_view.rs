//! The run view in headless Chromium against the real stack: an attempt's whole log read from
//! MLflow while the step runs and after, followed, searched and downloaded; and a node of 1,000
//! instances shown a page at a time, filtered by state.

use std::time::{Duration, Instant};

use concurrent_tests::browser::{runtime, Browser};
use concurrent_tests::{json, Stack};
use serde_json::Value;

const SECS: Duration = Duration::from_secs(30);

fn api(stack: &Stack, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    tokio::task::block_in_place(|| stack.api(method, path, body))
}

#[test]
fn the_whole_log_is_followed_while_the_step_runs_then_searched_and_downloaded() {
    let stack = Stack::shared();
    let _agent = stack.agent("chatty");
    // 1,500 lines over ~25 s after one 5 MB line: more than the 4 MB the view reads at once.
    stack.put_template(
        &json!({"apiVersion": "concurrent/v1", "name": "chatty", "nodes": [
        {"id": "talk", "kind": "project", "uri": "tests/projects/chatty", "entryPoint": "main",
         "parameters": {"lines": "1500", "per_second": "60", "big": "5"}}], "edges": []}),
    );
    let id = stack.start_run(&json!({"template": "chatty", "cluster": "chatty"}));
    runtime().block_on(async {
        let b = Browser::start_sized("run_view_log", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/runs/{id}", stack.edge_url)).await.unwrap();
        b.wait_for(r#"[data-node="talk"]"#, Duration::from_secs(90)).await.click().await.unwrap();
        b.wait_for("[data-open-log]", Duration::from_secs(120)).await.click().await.unwrap();

        // The log shows while the step still writes it.
        let early = b
            .wait_js("the log while running", "(() => { const t = document.querySelector('[data-log-text]')?.textContent; return t && t.includes('line 1') ? t : null })()", Duration::from_secs(120))
            .await;
        let early = early.as_str().unwrap();
        assert!(!early.contains("all lines written"), "read before the step ended");
        let (_, run) = api(stack, "GET", &format!("/api/v1/runs/{id}"), None);
        assert_ne!(run["status"], "succeeded", "the step was still running: {run:#}");

        // Followed to the end, without a click.
        b.wait_js("the end of the log, followed", "document.querySelector('[data-log-text]')?.textContent.includes('all lines written')", Duration::from_secs(180)).await;
        b.wait_js("scrolled to the newest line", "(() => { const e = document.querySelector('[data-log-text]'); return e.scrollTop + e.clientHeight + 8 >= e.scrollHeight })()", SECS).await;
        let run = tokio::task::block_in_place(|| stack.wait_run(&id, Duration::from_secs(120)));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let text = b.text("[data-log-text]").await;
        let numbered: Vec<&str> = text.lines().filter(|l| l.starts_with("line ")).collect();
        assert_eq!(numbered.last().copied(), Some("line 1499"), "every line up to the last");
        assert!(!text.contains("bbbb"), "the window starts after the 5 MB line");
        let size = b.text("[data-log-size]").await;
        assert!(size.contains("the last") && size.contains("download for the whole log"), "{size}");

        // Search: every 100th line from line 7 carries the marker.
        b.fill("[data-log-search]", "NEEDLE").await;
        b.wait_js("15 matches", "document.querySelectorAll('[data-log-match]').length === 15", SECS).await;
        let first = b.text("[data-log-match]").await;
        assert!(first.starts_with('8') && first.contains("line 7 needle"), "line numbers and text: {first}");
        assert!(b.text("[data-log-size]").await.contains("15 matching lines"));
        b.screenshot("log-search").await;
        b.fill("[data-log-search]", "").await;

        // Download is the whole log, as MLflow has it.
        let href = b.wait_js("the download link", "document.querySelector('[data-log-download]')?.getAttribute('href')", SECS).await;
        let href = href.as_str().unwrap();
        let attempt = &run["nodes"][0]["instances"][0]["attempts"][0];
        assert!(href.contains(attempt["mlflowRunId"].as_str().unwrap()), "{href}");
        // A 5 MB read through the edge while the other test of this binary loads it: more time
        // than WebDriver's default 30 s for a script.
        let mut timeouts = b.client.get_timeouts().await.unwrap();
        timeouts.set_script(Some(Duration::from_secs(180)));
        b.client.update_timeouts(timeouts).await.unwrap();
        let downloaded = b
            .client
            .execute_async("const done = arguments[arguments.length - 1]; fetch(arguments[0]).then((r) => r.ok ? r.arrayBuffer().then((a) => done(a.byteLength)) : r.text().then((t) => done(r.status + ' ' + t))).catch((e) => done(String(e)))", vec![json!(href)])
            .await
            .unwrap();
        let mlflow_run = tokio::task::block_in_place(|| stack.mlflow_api("GET", &format!("runs/get?run_id={}", attempt["mlflowRunId"].as_str().unwrap()), None))["run"].clone();
        let whole = tokio::task::block_in_place(|| stack.artifact(&mlflow_run, "logs/step.log"));
        assert!(whole.len() > 5 << 20);
        assert_eq!(downloaded.as_u64(), Some(whole.len() as u64), "the download is the whole log: {downloaded} from {href}");
        b.screenshot("log-view").await;
        b.wait_for("[data-log-close]", SECS).await.click().await.unwrap();
        assert_eq!(b.count("[data-log-view]").await, 0);
        b.client.clone().close().await.unwrap();
    });
}

/// The test plays the cluster's agent over the real protocol: one upstream item writes 1,000
/// files, and each of the 1,000 downstream items succeeds, except every 20th: those are held
/// (heartbeating) and then failed, and the first failure cancels the other 49.
#[test]
fn a_node_of_a_thousand_instances_is_paged_and_filtered_by_state() {
    let stack = Stack::shared();
    let n = 1000;
    let node = |id: &str, instances: usize| json!({"id": id, "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": instances});
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": "wide", "nodes": [node("a", 1), node("b", n)],
        "edges": [{"from": "a", "to": "b", "partition": {"mode": "by-file"}}]}));
    let id = stack.start_run(&json!({"template": "wide", "cluster": "wide"}));
    let started = Instant::now();
    let complete = |item: &Value, token: &Value, outcome: Value| {
        let (status, body) = stack.api(
            "POST",
            "/api/v1/agents/wide/complete",
            Some(&json!({"itemId": item["id"], "token": token, "outcome": outcome})),
        );
        let cancelled = status == 409 && body.to_string().to_lowercase().contains("cancelled");
        assert!(status == 200 || cancelled, "{status} {body}");
        status
    };
    // Held leases are heartbeaten at least every second (the stack's lease TTL is 6 s): a
    // loaded machine takes seconds for a hundred completions, and an expired lease would fail
    // its instance with another error than the one this test reads back.
    let heartbeat = |held: &[(Value, Value)]| {
        let leases: Vec<Value> = held
            .iter()
            .map(|(i, t)| json!({"itemId": i["id"], "token": t}))
            .collect();
        let (status, body) = stack.api(
            "POST",
            "/api/v1/agents/wide/heartbeat",
            Some(&json!({"agent": "synthetic", "leases": leases})),
        );
        assert_eq!(status, 200, "{body}");
        Instant::now()
    };
    let (mut done, mut held) = (0, Vec::<(Value, Value)>::new());
    let mut beat = Instant::now();
    while done + held.len() < n + 1 {
        let (status, body) = stack.api(
            "POST",
            "/api/v1/agents/wide/lease",
            Some(&json!({"agent": "synthetic", "max": 100, "waitMs": 1000})),
        );
        assert_eq!(status, 200, "{body}");
        // Confirmed at once, as an agent does: an unconfirmed lease lapses within seconds.
        let fresh: Vec<(Value, Value)> = body["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["item"].clone(), l["token"].clone()))
            .collect();
        if !fresh.is_empty() {
            heartbeat(&fresh);
        }
        for (k, l) in body["leases"].as_array().unwrap().iter().enumerate() {
            // Every lease still held, the batch's not yet completed ones too.
            if beat.elapsed() > Duration::from_secs(1) {
                let alive: Vec<(Value, Value)> = held.iter().chain(&fresh[k..]).cloned().collect();
                beat = heartbeat(&alive);
            }
            let item = &l["item"];
            if item["nodeId"] == "a" {
                complete(
                    item,
                    &l["token"],
                    json!({"status": "succeeded", "outputs": (0..n).map(|i| json!({"path": format!("part-{i:04}"), "size": 100 + i})).collect::<Vec<_>>()}),
                );
            } else if item["instance"].as_u64().unwrap() % 20 == 3 {
                held.push((item.clone(), l["token"].clone()));
                continue;
            } else {
                complete(
                    item,
                    &l["token"],
                    json!({"status": "succeeded", "outputs": []}),
                );
            }
            done += 1;
        }
        beat = heartbeat(&held);
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {done} of {} items done",
            n + 1
        );
    }
    let answers: Vec<u16> = held
        .iter()
        .map(|(item, token)| {
            let error = format!("synthetic failure of instance {}", item["instance"]);
            complete(item, token, json!({"status": "failed", "error": error}))
        })
        .collect();
    assert_eq!(answers[0], 200, "the first failure is taken");
    let run = stack.wait_run(&id, Duration::from_secs(300));
    assert_eq!(run["status"], "failed", "an instance failed");
    let states: Vec<&str> = run["nodes"][1]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), n);
    let count = |s: &str| states.iter().filter(|x| **x == s).count();
    let (failed, cancelled) = (count("failed"), count("cancelled"));
    assert_eq!((failed + cancelled, count("succeeded")), (50, 950));
    assert!(
        failed >= 1 && cancelled >= 1,
        "{failed} failed, {cancelled} cancelled"
    );
    let first_failed = states.iter().position(|s| *s == "failed").unwrap();
    // The same, from the API a view of a big run reads: counts without instances, and pages.
    let (status, overview) = stack.api("GET", &format!("/api/v1/runs/{id}/overview"), None);
    assert_eq!(status, 200, "{overview}");
    assert!(overview["run"]["nodes"][1]["instances"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(overview["nodes"][1]["instances"], n);
    assert_eq!(overview["nodes"][1]["counts"]["succeeded"], 950);
    assert_eq!(overview["nodes"][1]["counts"]["failed"], failed);
    let (status, page) = stack.api(
        "GET",
        &format!("/api/v1/runs/{id}/instances?node=b&state=succeeded&offset=100&limit=25"),
        None,
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["instances"].as_u64(), page["matched"].as_u64()),
        (Some(n as u64), Some(950))
    );
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 25);
    assert!(items.iter().all(|i| i["state"] == "succeeded"));
    let nth_succeeded = run["nodes"][1]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "succeeded")
        .nth(100)
        .unwrap();
    assert_eq!(items[0]["index"], nth_succeeded["index"]);
    let (status, body) = stack.api(
        "GET",
        &format!("/api/v1/runs/{id}/instances?node=nope"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["message"], "the run has no node \"nope\"");
    let (status, body) = stack.api(
        "GET",
        &format!("/api/v1/runs/{id}/instances?state=failed"),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("node=<id>"), "{body}");

    runtime().block_on(async {
        let b = Browser::start_sized("run_view_wide", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/runs/{id}", stack.edge_url)).await.unwrap();
        b.wait_for(r#"[data-node="b"]"#, Duration::from_secs(90)).await.click().await.unwrap();
        b.wait_for("[data-instances]", SECS).await;
        // A page of 50 rows, the states as filter chips with their counts.
        assert_eq!(b.count("[data-instances] tbody tr[data-instance]").await, 50);
        assert_eq!(b.text(r#"[data-filter="all"]"#).await, "all 1000");
        assert_eq!(b.text(r#"[data-filter="failed"]"#).await, format!("failed {failed}"));
        assert_eq!(b.text(r#"[data-filter="cancelled"]"#).await, format!("cancelled {cancelled}"));
        assert_eq!(b.text(r#"[data-filter="succeeded"]"#).await, "succeeded 950");
        assert_eq!(b.count(r#"[data-filter="running"]"#).await, 0, "no chip for a state nobody is in");
        assert_eq!(b.text("[data-page-of]").await, "1–50 of 1000 · page 1 of 20");
        b.screenshot("wide-node").await;

        // Next page, then the cancelled ones only (one page, every row cancelled), then the failed.
        b.click(r#"[data-page="next"]"#).await;
        b.wait_js("page 2", "document.querySelector('[data-page-of]')?.textContent.startsWith('51–100 of 1000')", SECS).await;
        assert_eq!(b.text("[data-instances] tbody tr[data-instance]").await.split_whitespace().next(), Some("50"));
        b.click(r#"[data-filter="cancelled"]"#).await;
        b.wait_js("the cancelled ones", "[...document.querySelectorAll('[data-instances] tbody tr[data-instance]')].every((r) => r.querySelector('.cc-status').textContent === 'cancelled')", SECS).await;
        assert_eq!(b.count("[data-instances] tbody tr[data-instance]").await, cancelled);
        assert_eq!(b.count("[data-pager]").await, 0, "one page needs no pager");
        b.click(r#"[data-filter="failed"]"#).await;
        b.wait_js("the failed ones", "[...document.querySelectorAll('[data-instances] tbody tr[data-instance]')].every((r) => r.querySelector('.cc-status').textContent === 'failed')", SECS).await;
        // Read in one script: the live view may redraw the rows between a lookup and a read.
        let first = b.wait_js("the first failed row", "document.querySelector('[data-instances] tbody tr[data-instance]')?.getAttribute('data-instance')", SECS).await;
        assert_eq!(first, json!(first_failed.to_string()));
        let rows = b.text("[data-instances] tbody").await;
        assert!(rows.contains(&format!("synthetic failure of instance {first_failed}")), "{rows}");
        // The page stays live: it still answers after several refreshes of the 1,000-instance run.
        tokio::time::sleep(Duration::from_secs(5)).await;
        b.click(r#"[data-filter="all"]"#).await;
        b.wait_js("all again", "document.querySelector('[data-page-of]')?.textContent === '1–50 of 1000 · page 1 of 20'", SECS).await;
        b.client.clone().close().await.unwrap();
    });
}
