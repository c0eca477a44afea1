//! The edge API's control plane under real conditions: fan-out/fan-in, retries, timeouts,
//! cancel, repairs, lease expiry with fencing, schedules, auth and bad input. Real workerd,
//! real MLflow, real agents (and, for the fencing test, the test itself speaking the agent
//! protocol as a second agent would).

use std::time::{Duration, Instant};

use concurrent_tests::{example_template, json, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn attempts(run: &Value, node: usize, instance: usize) -> Vec<Value> {
    run["nodes"][node]["instances"][instance]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn mlflow_status(stack: &Stack, run_id: &str) -> String {
    stack.mlflow_api("GET", &format!("runs/get?run_id={run_id}"), None)["run"]["info"]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn fan_out_then_fan_in_gives_the_last_node_every_instance_output() {
    let stack = Stack::shared();
    let _agent = stack.agent("fan");
    stack.put_template(&example_template("fan-pipeline", 3));
    let id = stack.start_run(&json!({"template": "fan-pipeline", "cluster": "fan"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // A broadcast input is the node's, once: every instance receives it.
    let report = &run["nodes"][2];
    assert_eq!(report["instances"][0]["inputs"], json!({}), "{report:#}");
    let inputs: Vec<&str> = report["sharedInputs"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        vec![
            "0/model.json",
            "0/seen_files.txt",
            "1/model.json",
            "1/seen_files.txt"
        ]
    );
    let report_run = attempts(&run, 2, 0)[0]["mlflowRunId"]
        .as_str()
        .unwrap()
        .to_string();
    let mlrun =
        stack.mlflow_api("GET", &format!("runs/get?run_id={report_run}"), None)["run"].clone();
    let merged: Value =
        serde_json::from_str(&stack.artifact(&mlrun, "outputs/merged_model.json")).unwrap();
    assert_eq!(merged["models"], 2);
    assert_eq!(
        merged["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        60,
        "all 60 rows, from both instances"
    );
}

#[test]
fn a_retried_start_with_the_same_idempotency_key_starts_one_run() {
    let stack = Stack::shared();
    stack.put_template(&example_template("idempotent", 1));
    let body = json!({"template": "idempotent", "cluster": "nobody-serves-this"});
    let ids: Vec<Value> = (0..2)
        .map(|_| {
            let (status, run) = stack.api_with(
                "POST",
                "/api/v1/runs",
                Some(&body),
                &[("Idempotency-Key", "abc-1")],
            );
            assert_eq!(status, 201, "{run}");
            run["id"].clone()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    let (_, runs) = stack.api("GET", "/api/v1/runs?template=idempotent", None);
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_in_a_new_mlflow_run() {
    let stack = Stack::shared();
    let _agent = stack.agent("retry");
    let mut t = example_template("retry-pipeline", 2);
    t["nodes"][1]["parameters"]["fail"] = json!("first-attempt");
    t["nodes"][1]["instances"] = json!(1);
    t["nodes"][1]["retries"] = json!({"limit": 2, "backoffSeconds": 2});
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "retry-pipeline", "cluster": "retry"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let tries = attempts(&run, 1, 0);
    assert_eq!(tries.len(), 2, "{tries:#?}");
    assert_eq!(tries[0]["state"], "failed");
    assert!(tries[0]["error"].as_str().unwrap().contains("attempt 1"));
    assert_eq!(tries[1]["state"], "succeeded");
    let waited = tries[1]["createdAt"].as_u64().unwrap() - tries[0]["endedAt"].as_u64().unwrap();
    assert!(
        waited >= 2000,
        "the retry waited its 2 s backoff, not {waited} ms"
    );
    let (first, second) = (
        tries[0]["mlflowRunId"].as_str().unwrap(),
        tries[1]["mlflowRunId"].as_str().unwrap(),
    );
    assert_ne!(first, second);
    assert_eq!(mlflow_status(stack, first), "FAILED");
    assert_eq!(mlflow_status(stack, second), "FINISHED");
}

#[test]
fn a_step_that_outlives_its_timeout_is_killed_and_fails() {
    let stack = Stack::shared();
    let _agent = stack.agent("timeout");
    let mut t = example_template("timeout-pipeline", 2);
    t["nodes"][1]["parameters"]["sleep"] = json!("60");
    t["nodes"][1]["instances"] = json!(1);
    t["nodes"][1]["timeoutSeconds"] = json!(3);
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "timeout-pipeline", "cluster": "timeout"}));
    let started = Instant::now();
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 3 s"),
        "{}",
        run["error"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "killed, not waited for"
    );
}

#[test]
fn cancel_stops_running_steps_and_ends_everything_killed_within_seconds() {
    let stack = Stack::shared();
    let agent = stack.agent("cancel");
    let mut t = example_template("cancel-pipeline", 2);
    t["nodes"][1]["parameters"]["sleep"] = json!("120");
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "cancel-pipeline", "cluster": "cancel"}));
    stack.wait_until(&id, RUN_TIMEOUT, "train running", |r| {
        r["nodes"][1]["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|x| x["state"] == "running"))
    });
    // The live log tail arrives with the agent's heartbeats.
    stack.wait_until(&id, Duration::from_secs(60), "a live log tail", |r| {
        attempts(r, 1, 0)[0]["logTail"]
            .as_str()
            .is_some_and(|t| t.contains("sleeping 120"))
    });
    let (status, body) = stack.api("POST", &format!("/api/v1/runs/{id}/cancel"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let cancelled_at = Instant::now();
    let run = stack.wait_run(&id, Duration::from_secs(30));
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(15),
        "MLflow in sync within seconds"
    );
    assert_eq!(run["status"], "cancelled");
    for i in 0..2 {
        let a = &attempts(&run, 1, i)[0];
        assert_eq!(a["state"], "cancelled");
        assert_eq!(
            mlflow_status(stack, a["mlflowRunId"].as_str().unwrap()),
            "KILLED"
        );
    }
    assert_eq!(
        mlflow_status(stack, run["mlflow"]["runId"].as_str().unwrap()),
        "KILLED"
    );
    // The agent learns of the cancel at its next heartbeat (every 2 s here) and kills the steps.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&agent.log)
        .unwrap_or_default()
        .matches("step killed")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the agent did not kill both steps:\n{}",
            agent.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, body) = stack.api("POST", &format!("/api/v1/runs/{id}/cancel"), None);
    assert_eq!(status, 409, "a second cancel: {body}");
}

#[test]
fn retry_failed_and_rerun_from_keep_every_attempt_visible() {
    let stack = Stack::shared();
    let _agent = stack.agent("repair");
    let mut t = example_template("repair-pipeline", 2);
    t["nodes"][1]["parameters"]["fail"] = json!("first-attempt");
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "repair-pipeline", "cluster": "repair"}));
    let failed = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(failed["status"], "failed");
    let (status, body) = stack.api(
        "POST",
        &format!("/api/v1/runs/{id}/rerun"),
        Some(&json!({"node": "nope"})),
    );
    assert_eq!(status, 409, "{body}");

    let (status, body) = stack.api("POST", &format!("/api/v1/runs/{id}/retry"), None);
    assert_eq!(status, 200, "{body}");
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        attempts(&run, 0, 0).len(),
        1,
        "prepare succeeded and is not rerun"
    );
    for i in 0..2 {
        let tries = attempts(&run, 1, i);
        assert_eq!(tries.last().unwrap()["state"], "succeeded");
        assert!(tries.iter().all(|a| a["mlflowRunId"].is_string()));
    }
    assert_eq!(
        mlflow_status(stack, run["mlflow"]["runId"].as_str().unwrap()),
        "FINISHED",
        "the parent run reopened and finished"
    );

    let (status, body) = stack.api(
        "POST",
        &format!("/api/v1/runs/{id}/rerun"),
        Some(&json!({"node": "train"})),
    );
    assert_eq!(status, 200, "{body}");
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        attempts(&run, 0, 0).len(),
        1,
        "upstream of the rerun node is kept"
    );
    let before: usize = (0..2).map(|i| attempts(&failed, 1, i).len()).sum();
    let after: usize = (0..2).map(|i| attempts(&run, 1, i).len()).sum();
    assert!(
        after >= before + 2,
        "earlier attempts stay: {before} then {after}"
    );
    assert_eq!(run["repairs"].as_array().unwrap().len(), 2);
    assert_eq!(run["repairs"][1]["mode"], "rerun-from");
}

/// The test plays a second agent over the real protocol: it leases, stops heartbeating, and
/// comes back after its lease expired and the work was leased again.
#[test]
fn an_expired_lease_is_rerun_and_the_stale_agent_is_fenced_off() {
    let stack = Stack::shared();
    let mut t = example_template("fenced", 1);
    t["nodes"][0]["retries"] = json!({"limit": 1, "backoffSeconds": 1});
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "fenced", "cluster": "fenced"}));
    let lease = |agent: &str| -> Value {
        let (status, body) = stack.api(
            "POST",
            "/api/v1/agents/fenced/lease",
            Some(&json!({"agent": agent, "max": 1, "waitMs": 20000})),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["leases"].as_array().unwrap().len(), 1, "{body}");
        body["leases"][0].clone()
    };
    let heartbeat = |agent: &str, item: &str, token: u64| -> Value {
        let (status, body) = stack.api(
            "POST",
            "/api/v1/agents/fenced/heartbeat",
            Some(&json!({"agent": agent, "leases": [{"itemId": item, "token": token}]})),
        );
        assert_eq!(status, 200, "{body}");
        body["leases"][item].clone()
    };
    // A lease never confirmed by a heartbeat (its agent died as the long-poll answered) goes back
    // to the queue after the TTL without counting an attempt.
    let ghost = lease("ghost-agent");
    let again = lease("stale-agent");
    assert_eq!(
        again["item"]["id"], ghost["item"]["id"],
        "the same attempt, leased again"
    );
    assert!(again["token"].as_u64() > ghost["token"].as_u64());
    assert_eq!(
        heartbeat(
            "ghost-agent",
            ghost["item"]["id"].as_str().unwrap(),
            ghost["token"].as_u64().unwrap()
        ),
        "lost"
    );
    let (_, run) = stack.api("GET", &format!("/api/v1/runs/{id}"), None);
    assert_eq!(attempts(&run, 0, 0).len(), 1, "no attempt was counted");

    let first = again;
    let (item, stale_token) = (
        first["item"]["id"].as_str().unwrap().to_string(),
        first["token"].as_u64().unwrap(),
    );
    assert!(first["stepToken"].as_str().unwrap().starts_with("cs_"));
    assert_eq!(heartbeat("stale-agent", &item, stale_token), "active");

    // Confirmed, then silent: after the 6 s TTL the attempt fails and, after its 1 s backoff,
    // comes back as attempt 2.
    let run = stack.wait_until(&id, Duration::from_secs(30), "lease expiry", |r| {
        attempts(r, 0, 0).len() == 2
    });
    let expired = &attempts(&run, 0, 0)[0];
    assert_eq!(expired["state"], "failed");
    assert!(
        expired["error"].as_str().unwrap().contains("lease expired"),
        "{expired}"
    );
    let second = lease("new-agent");
    let fresh_token = second["token"].as_u64().unwrap();
    assert!(fresh_token > stale_token, "fencing tokens only grow");
    assert_ne!(
        second["item"]["id"],
        json!(item),
        "a new attempt is a new item"
    );

    let done = json!({"status": "succeeded", "outputs": []});
    assert_eq!(heartbeat("stale-agent", &item, stale_token), "lost");
    let (status, body) = stack.api(
        "POST",
        "/api/v1/agents/fenced/complete",
        Some(&json!({"itemId": item, "token": stale_token, "outcome": done})),
    );
    assert_eq!(
        status, 409,
        "the stale agent's completion is refused: {body}"
    );
    let new_item = second["item"]["id"].as_str().unwrap();
    let (status, body) = stack.api(
        "POST",
        "/api/v1/agents/fenced/complete",
        Some(&json!({"itemId": new_item, "token": fresh_token - 1, "outcome": done})),
    );
    assert_eq!(status, 409, "a wrong token is refused too: {body}");
    // A step token may complete its own lease only.
    let step_token = second["stepToken"].as_str().unwrap();
    let (status, _) = stack.api_as(
        Some(step_token),
        "POST",
        "/api/v1/agents/fenced/complete",
        Some(&json!({"itemId": item, "token": stale_token, "outcome": done})),
    );
    assert_eq!(status, 403);
    let (status, _) = stack.api_as(
        Some(step_token),
        "POST",
        "/api/v1/agents/fenced/lease",
        Some(&json!({"agent": "x", "max": 1})),
    );
    assert_eq!(status, 403);
    let (status, body) = stack.api_as(
        Some(step_token),
        "POST",
        "/api/v1/agents/fenced/complete",
        Some(&json!({"itemId": new_item, "token": fresh_token, "outcome": done})),
    );
    assert_eq!(status, 200, "{body}");
    let run = stack.wait_run(&id, Duration::from_secs(30));
    assert_eq!(run["status"], "succeeded");
}

#[test]
fn a_schedule_fires_from_the_cron_trigger_once_per_tick() {
    let stack = Stack::shared();
    let _agent = stack.agent("cron");
    stack.put_template(&example_template("cron-pipeline", 1));
    let (status, body) = stack.api("POST", "/api/v1/schedules", Some(&json!({"name": "nightly", "template": "cron-pipeline", "cron": "0 0 30 2 *", "cluster": "cron"})));
    assert_eq!(status, 400, "a cron that never fires is refused: {body}");
    let (status, body) = stack.api("POST", "/api/v1/schedules", Some(&json!({"name": "every-minute", "template": "cron-pipeline", "cron": "* * * * *", "cluster": "cron"})));
    assert_eq!(status, 201, "{body}");
    let next_fire = body["nextFire"].as_u64().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    while now() < next_fire + 500 {
        std::thread::sleep(Duration::from_millis(250));
    }
    for _ in 0..2 {
        stack.cron();
    }
    let (_, schedules) = stack.api("GET", "/api/v1/schedules", None);
    let s = schedules
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "every-minute")
        .unwrap()
        .clone();
    let run_id = s["lastRunId"]
        .as_str()
        .unwrap_or_else(|| panic!("the schedule started no run: {s}"));
    let (_, runs) = stack.api("GET", "/api/v1/runs?template=cron-pipeline", None);
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "two triggers in the same minute start one run: {runs}"
    );
    assert_eq!(runs[0]["startedBy"], "schedule every-minute");
    let run = stack.wait_run(run_id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        stack
            .api("DELETE", "/api/v1/schedules/every-minute", None)
            .0,
        204
    );
}

#[test]
fn roles_limit_what_each_token_can_do() {
    let stack = Stack::shared();
    stack.put_template(&example_template("auth-pipeline", 1));
    let mut tokens = std::collections::HashMap::new();
    for (name, role, cluster) in [
        ("r", "reader", None),
        ("e", "editor", None),
        ("a", "agent", Some("gpu")),
    ] {
        let mut body = json!({"name": format!("test-{name}"), "role": role});
        if let Some(c) = cluster {
            body["cluster"] = json!(c);
        }
        let (status, created) = stack.api("POST", "/api/v1/tokens", Some(&body));
        assert_eq!(status, 201, "{created}");
        tokens.insert(name, created["token"].as_str().unwrap().to_string());
    }
    let (_, listed) = stack.api("GET", "/api/v1/tokens", None);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["token"].is_null()),
        "secrets are never listed"
    );
    let lease = json!({"agent": "x", "max": 1, "waitMs": 0});
    let start = json!({"template": "auth-pipeline", "cluster": "nowhere"});
    // (token, method, path, body, expected status)
    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("r", "GET", "/api/v1/templates".into(), None, 200),
        ("r", "POST", "/api/v1/runs".into(), Some(start.clone()), 403),
        (
            "r",
            "POST",
            "/api/v1/agents/gpu/lease".into(),
            Some(lease.clone()),
            403,
        ),
        ("e", "POST", "/api/v1/runs".into(), Some(start.clone()), 201),
        (
            "e",
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "x", "role": "admin"})),
            403,
        ),
        (
            "e",
            "POST",
            "/api/v1/schedules".into(),
            Some(json!({})),
            403,
        ),
        (
            "a",
            "POST",
            "/api/v1/agents/gpu/lease".into(),
            Some(lease.clone()),
            200,
        ),
        (
            "a",
            "POST",
            "/api/v1/agents/cpu/lease".into(),
            Some(lease.clone()),
            403,
        ),
        ("a", "GET", "/api/v1/runs".into(), None, 403),
        (
            "a",
            "GET",
            "/api/v1/runs/00000000000000000000000000000000".into(),
            None,
            403,
        ),
    ];
    for (who, method, path, body, expected) in cases {
        let (status, answer) = stack.api_as(Some(&tokens[who]), method, &path, body.as_ref());
        assert_eq!(status, expected, "{who} {method} {path}: {answer}");
    }
    assert_eq!(stack.api("DELETE", "/api/v1/tokens/test-e", None).0, 204);
    assert_eq!(
        stack
            .api_as(Some(&tokens["e"]), "GET", "/api/v1/templates", None)
            .0,
        401,
        "a revoked token is refused at once"
    );
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let stack = Stack::shared();
    let big = json!({"template": "x".repeat(1_100_000)});
    let (status, body) = stack.api("POST", "/api/v1/runs", Some(&big));
    assert_eq!(status, 413, "{body}");
    let (status, body) = stack.api(
        "POST",
        "/api/v1/runs",
        Some(&json!({"template": "t", "paramters": {}})),
    );
    assert_eq!(status, 400, "unknown fields: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("paramters"));
    let mut t = example_template("typo", 1);
    t["nodes"][0]["instnaces"] = json!(2);
    let (status, body) = stack.api("PUT", "/api/v1/templates/typo", Some(&t));
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["details"][0]["path"], "/nodes/0/instnaces",
        "{body}"
    );
    let (status, _) = stack.api("PUT", "/api/v1/templates/a%2Fb", Some(&t));
    assert_eq!(status, 400, "a name with a path separator");
    let mut huge = example_template("huge", 1);
    huge["nodes"][0]["instances"] = json!(1_000_000_000);
    let (status, body) = stack.api("PUT", "/api/v1/templates/huge", Some(&huge));
    assert_eq!(status, 400, "{body}");
    huge["nodes"][0]["instances"] = json!(99_999_999_999u64);
    assert_eq!(
        stack.api("PUT", "/api/v1/templates/huge", Some(&huge)).0,
        400,
        "beyond u32"
    );
    let (status, body) = stack.api("GET", "/api/v1/runs/..%2F..%2Fetc", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = stack.api(
        "POST",
        "/api/v1/agents/bad%20cluster/lease",
        Some(&json!({"agent": "a", "max": 1})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = stack.api(
        "POST",
        "/api/v1/schedules",
        Some(&json!({"name": "s", "template": "typo", "cron": "not a cron"})),
    );
    assert_eq!(status, 400, "{body}");
    for path in ["/api/v1/templates/typo", "/api/v1/templates/huge"] {
        assert_eq!(
            stack.api("GET", path, None).0,
            404,
            "nothing stored for {path}"
        );
    }
}

#[test]
fn a_cloudflare_access_jwt_signs_in_only_when_it_verifies() {
    let stack = Stack::shared();
    let access = &stack.access;
    let http = reqwest::blocking::Client::new();
    let call = |jwt: &str, path: &str| {
        let resp = http
            .get(format!("{}{path}", stack.edge_url))
            .header("Cf-Access-Jwt-Assertion", jwt)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap())
    };
    // A valid token is a signed-in user: the API and MLflow's pages behind the edge open.
    let good = access.token("ana@example.com", json!({}), None);
    let (status, body) = call(&good, "/api/v1/templates");
    assert_eq!(status, 200, "{body}");
    let (status, page) = call(&good, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("/concurrent/loader.js"),
        "MLflow's page, with the tab's loader"
    );
    // Anything else is refused with the reason, never trusted because the header is there.
    let dir = tempfile::tempdir().unwrap();
    let other_key = concurrent_tests::access::new_key(dir.path(), "intruder");
    let cases = [
        (
            access.token("ana@example.com", json!({}), Some(&other_key)),
            "signature does not verify",
        ),
        (
            access.token("ana@example.com", json!({"aud": ["another-app"]}), None),
            "another application",
        ),
        (
            access.token(
                "ana@example.com",
                json!({"iss": "https://evil.example"}),
                None,
            ),
            "issued by",
        ),
        (
            access.token("ana@example.com", json!({"exp": 1_000_000}), None),
            "expired",
        ),
        (
            "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImFAYi5jIn0.".to_string(),
            "only RS256",
        ),
    ];
    for (jwt, why) in cases {
        let (status, body) = call(&jwt, "/api/v1/templates");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains(why), "expected {why:?} in {body}");
    }
    // The user's name is recorded on what they do.
    let mut t = example_template("access-pipeline", 1);
    t["description"] = json!("saved through Access");
    let resp = http
        .put(format!(
            "{}/api/v1/templates/access-pipeline",
            stack.edge_url
        ))
        .header("Cf-Access-Jwt-Assertion", &good)
        .header("If-Match", "*")
        .json(&t)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().unwrap());
    let (_, list) = stack.api("GET", "/api/v1/templates", None);
    let saved = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "access-pipeline")
        .unwrap();
    assert_eq!(saved["updatedBy"], "ana@example.com");
}

#[test]
fn completions_in_one_call_are_each_taken_or_refused_with_the_reason() {
    let stack = Stack::shared();
    let node = json!({"id": "w", "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": 3});
    stack.put_template(&json!({"apiVersion": "concurrent/v1", "name": "batched", "nodes": [node]}));
    let id = stack.start_run(&json!({"template": "batched", "cluster": "batched"}));
    let mut leases = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while leases.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only {} of 3 items leased",
            leases.len()
        );
        let (status, body) = stack.api(
            "POST",
            "/api/v1/agents/batched/lease",
            Some(&json!({"agent": "synthetic", "max": 3, "waitMs": 2000})),
        );
        assert_eq!(status, 200, "{body}");
        leases.extend(body["leases"].as_array().unwrap().clone());
    }
    // Each item carries the run to make, and none was made ahead of the lease.
    assert!(leases
        .iter()
        .all(|l| l["item"]["step"]["childRun"]["key"] == l["item"]["id"]));
    assert!(leases
        .iter()
        .all(|l| l["item"]["step"]["mlflow"]["runId"] == ""));
    let experiment = leases[0]["item"]["step"]["mlflow"]["experimentId"].clone();
    let made = stack.mlflow_api(
        "POST",
        "runs/create",
        Some(&json!({"experiment_id": experiment})),
    );
    let mlflow_run = made["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let completion = |l: &Value, token: &Value| {
        json!({"itemId": l["item"]["id"], "token": token, "mlflowRunId": mlflow_run,
               "outcome": {"status": "succeeded", "outputs": [{"path": "out.txt", "size": 3}]}})
    };
    let body = json!({"completions": [
        completion(&leases[0], &leases[0]["token"]),
        completion(&leases[1], &json!(leases[1]["token"].as_u64().unwrap() + 1000)),
        completion(&leases[2], &leases[2]["token"]),
    ]});
    let (status, answer) = stack.api("POST", "/api/v1/agents/batched/completions", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        results[0]["refused"].is_null() && results[2]["refused"].is_null(),
        "{answer}"
    );
    assert!(
        results[1]["refused"].as_str().unwrap().contains("is stale"),
        "{answer}"
    );
    // The run took both, with the MLflow run their agent named.
    let (_, page) = stack.api(
        "GET",
        &format!("/api/v1/runs/{id}/instances?node=w&state=succeeded"),
        None,
    );
    assert_eq!(page["matched"], 2, "{page}");
    for i in page["items"].as_array().unwrap() {
        assert_eq!(i["attempts"][0]["mlflowRunId"], mlflow_run.as_str());
        assert_eq!(
            i["outputs"][0]["runId"],
            mlflow_run.as_str(),
            "outputs live in that run"
        );
    }
    // More than 100 at once is refused before anything is taken.
    let many: Vec<Value> = (0..101)
        .map(|_| completion(&leases[1], &leases[1]["token"]))
        .collect();
    let (status, body) = stack.api(
        "POST",
        "/api/v1/agents/batched/completions",
        Some(&json!({"completions": many})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100"),
        "{body}"
    );
    stack.api(
        "POST",
        &format!("/api/v1/runs/{id}/cancel"),
        Some(&json!({})),
    );
}

#[test]
fn a_big_run_read_whole_agrees_with_its_pages() {
    // 3,000 queued instances make a JSON answer of several hundred KB, which the run object
    // writes in pieces (`http::Body`); a piece lost, doubled or out of order shows here.
    let stack = Stack::shared();
    let node = json!({"id": "w", "kind": "project", "uri": "synthetic", "entryPoint": "main", "instances": 3000});
    stack
        .put_template(&json!({"apiVersion": "concurrent/v1", "name": "big-read", "nodes": [node]}));
    let id = stack.start_run(&json!({"template": "big-read", "cluster": "big-read"}));
    let whole = stack.wait_until(
        &id,
        Duration::from_secs(60),
        "all 3,000 items enqueued",
        |run| {
            run["nodes"][0]["instances"].as_array().is_some_and(|i| {
                i.len() == 3000 && i.iter().all(|i| i["attempts"][0]["enqueued"] == true)
            })
        },
    );
    let text = whole.to_string();
    assert!(
        text.len() > 512 << 10,
        "only {} bytes: too small to come in pieces",
        text.len()
    );
    let instances = whole["nodes"][0]["instances"].as_array().unwrap();
    for (k, i) in instances.iter().enumerate() {
        assert_eq!(i["index"], k, "instance {k} of the whole run");
    }
    for offset in [0, 1234, 2950] {
        let (status, page) = stack.api(
            "GET",
            &format!("/api/v1/runs/{id}/instances?node=w&offset={offset}&limit=50"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        assert_eq!(
            page["items"].as_array().unwrap().as_slice(),
            &instances[offset..offset + 50],
            "the page at {offset} and the whole run differ"
        );
    }
    let (status, body) = stack.api("POST", &format!("/api/v1/runs/{id}/cancel"), None);
    assert_eq!(status, 200, "{body}");
}
