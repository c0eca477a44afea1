//! Notifications on the real stack: a local receiver gets a signed JSON POST (Slack-compatible
//! `text`) when an approval waits and when the run succeeds; a delivery the receiver refuses is
//! tried again, what failed is on the run, and the signing key is nowhere in the run record.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concurrent_tests::{json, Stack, NOTIFY_TEST_KEY};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// A request the receiver got: its headers (lower-case names) and body.
type Got = (BTreeMap<String, String>, String);

/// An HTTP receiver on loopback that answers 503 to its first request and 200 afterwards.
fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::<Got>::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = BTreeMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let first = {
                let mut g = seen.lock().unwrap();
                g.push((headers, String::from_utf8(body).unwrap()));
                g.len() == 1
            };
            let status = if first {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

fn wait_for(got: &Mutex<Vec<Got>>, n: usize, what: &str) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let g = got.lock().unwrap().clone();
        if g.len() >= n {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the receiver got {} request(s): {g:#?}",
            g.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_approval_waiting_and_a_success_are_posted_signed_and_a_refused_delivery_is_retried() {
    let stack = Stack::shared();
    let _agent = stack.agent("notify");
    let (url, got) = receiver();
    stack.put_template(&json!({
        "apiVersion": "concurrent/v1", "name": "notified",
        "nodes": [
            {"id": "step", "kind": "project", "uri": "bench/projects/noop", "entryPoint": "main"},
            {"id": "gate", "kind": "approval", "message": "Go on?"}
        ],
        "edges": [{"from": "step", "to": "gate", "input": "x"}],
        "notifications": [{"url": url, "signingSecret": "NOTIFY_TEST_KEY", "on": ["waiting", "succeeded", "failed"]}]
    }));
    // A notification naming a secret that is not a NOTIFY_ one cannot be saved as runnable.
    let (status, body) = stack.api("POST", "/api/v1/templates/validate", Some(&json!({
        "apiVersion": "concurrent/v1", "name": "leaky", "nodes": [],
        "notifications": [{"url": url, "signingSecret": "CONCURRENT_API_TOKEN", "on": ["failed"]}]})));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("is not a notification secret"),
        "{body}"
    );

    let id = stack.start_run(&json!({"template": "notified", "cluster": "notify"}));
    // The waiting approval: refused once (503), delivered on the retry, the same delivery id.
    let g = wait_for(&got, 2, "the approval's notification and its retry");
    let (headers, body) = &g[1];
    assert_eq!(
        g[0].0["x-concurrent-delivery-id"],
        headers["x-concurrent-delivery-id"]
    );
    let sig = concurrent_core::sign::webhook_signature(
        NOTIFY_TEST_KEY,
        &headers["x-concurrent-delivery-id"],
        &headers["x-concurrent-timestamp"],
        body,
    );
    assert_eq!(
        headers["x-concurrent-signature"], sig,
        "signed with NOTIFY_TEST_KEY"
    );
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["event"], "waiting");
    assert_eq!(v["node"], "gate");
    assert!(
        v["text"].as_str().unwrap().contains(&format!(
            "run {id} of notified waits for an approval at node gate"
        )),
        "{v}"
    );
    let run = stack.wait_until(&id, RUN_TIMEOUT, "the delivery recorded", |r| {
        r["notifications"][0]["deliveredAt"].is_u64()
    });
    let d = &run["notifications"][0];
    assert_eq!(
        (d["event"].as_str(), d["attempts"].as_u64()),
        (Some("waiting:gate"), Some(2)),
        "{d}"
    );

    // Approved: the success is posted.
    let (status, body) = stack.api(
        "POST",
        &format!("/api/v1/runs/{id}/decide"),
        Some(&json!({"node": "gate", "approve": true})),
    );
    assert_eq!(status, 200, "{body}");
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let g = wait_for(&got, 3, "the success's notification");
    let v: Value = serde_json::from_str(&g[2].1).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["run"]["status"].as_str()),
        (Some("succeeded"), Some("succeeded")),
        "{v}"
    );
    let run = stack.wait_until(&id, RUN_TIMEOUT, "both deliveries recorded", |r| {
        r["notifications"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|d| d["deliveredAt"].is_u64()))
    });
    assert!(
        !run.to_string().contains(NOTIFY_TEST_KEY),
        "the signing key is in the run record"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        got.lock().unwrap().len(),
        3,
        "nothing is sent twice once delivered"
    );
}
