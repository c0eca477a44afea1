//! What a reader, a hostile body and a failing MLflow find, against the real stack: roles on
//! every route and on MLflow behind the edge, sessions, step tokens, size limits, invented ids,
//! MLflow refusals, and the lifecycle cases that used to lose or repeat work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use concurrent_core::access::{Needs, ROUTES};
use concurrent_tests::faults::FaultyProxy;
use concurrent_tests::{example_template, json, Stack};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Tokens of every role (created once per test that asks).
fn tokens(stack: &Stack, prefix: &str) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    out.insert("admin", stack.token.clone());
    for (key, role, cluster) in [
        ("reader", "reader", None),
        ("editor", "editor", None),
        ("agent-gpu", "agent", Some("gpu")),
        ("agent-cpu", "agent", Some("cpu")),
    ] {
        let mut body = json!({"name": format!("{prefix}-{key}"), "role": role});
        if let Some(c) = cluster {
            body["cluster"] = json!(c);
        }
        let (status, created) = stack.api("POST", "/api/v1/tokens", Some(&body));
        assert_eq!(status, 201, "{created}");
        out.insert(key, created["token"].as_str().unwrap().to_string());
    }
    out
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A call to an edge of a test's own (not the shared stack's): status and JSON body.
fn call_edge(
    h: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    (method, path): (&str, &str),
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut rb = h
        .request(method.parse().unwrap(), format!("{url}{path}"))
        .bearer_auth(token);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().unwrap_or(Value::Null))
}

#[test]
fn every_route_answers_each_role_as_the_route_table_says() {
    let stack = Stack::shared();
    let tokens = tokens(stack, "matrix");
    let mut checked = 0;
    for spec in ROUTES {
        let path: Vec<String> = spec
            .pattern
            .split('/')
            .map(|s| match s {
                ":cluster" => "gpu".into(),
                s if s.starts_with(':') => "x1".into(),
                s => s.into(),
            })
            .collect();
        let path = format!("/api/v1{}", path.join("/"));
        let body = (spec.method != "GET" && spec.method != "DELETE").then(|| json!({}));
        for (who, token) in &tokens {
            let allowed = match spec.needs {
                Needs::Read => !who.starts_with("agent"),
                Needs::Edit => matches!(*who, "editor" | "admin"),
                Needs::Admin => *who == "admin",
                Needs::AgentOfCluster => matches!(*who, "admin" | "agent-gpu"),
            };
            let (status, answer) = stack.api_as(Some(token), spec.method, &path, body.as_ref());
            if allowed {
                assert!(
                    ![401, 403].contains(&status),
                    "{who} {} {path} is allowed by the table, got {status}: {answer}",
                    spec.method
                );
            } else {
                assert_eq!(status, 403, "{who} {} {path}: {answer}", spec.method);
                assert!(answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("may not"));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 5);
    // Tokens are admin business, even to list.
    let (status, _) = stack.api_as(Some(&tokens["reader"]), "GET", "/api/v1/tokens", None);
    assert_eq!(status, 403);
    let (status, _) = stack.api_as(Some(""), "GET", "/api/v1/templates", None);
    assert_eq!(status, 401, "an empty bearer token is nobody");
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let stack = Stack::shared();
    let h = http();
    for (method, path, want) in [
        ("GET", "/api/v1/nowhere", 404),
        ("PUT", "/api/v1/templates/..", 404),
        ("PUT", "/api/v1/templates/", 404),
        ("PATCH", "/api/v1/templates/a", 405),
        ("GET", "/api/v1", 404),
    ] {
        let resp = h
            .request(method.parse().unwrap(), format!("{}{path}", stack.edge_url))
            .bearer_auth(&stack.token)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{method} {path}");
        let body: Value = resp
            .json()
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}

/// A run and an artifact in MLflow (made directly), for the reads of the walk.
fn mlflow_fixture(stack: &Stack, name: &str) -> (String, String) {
    let exp = stack.mlflow_api(
        "POST",
        "experiments/create",
        Some(&json!({"name": format!("{name}-{}", std::process::id())})),
    )["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = stack.mlflow_api("POST", "runs/create", Some(&json!({"experiment_id": exp})));
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run_id}/artifacts/hello.txt",
        stack.mlflow_url
    );
    assert!(http()
        .put(url)
        .body("hi")
        .send()
        .unwrap()
        .status()
        .is_success());
    (exp, run_id)
}

#[test]
fn readers_only_read_mlflow_through_the_edge_and_agents_reach_none_of_it() {
    let stack = Stack::shared();
    let tokens = tokens(stack, "walk");
    let (exp, run) = mlflow_fixture(stack, "walk");
    let art = format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts");
    let reads: Vec<(&str, String, Option<Value>)> = vec![
        (
            "GET",
            format!("/api/2.0/mlflow/experiments/get?experiment_id={exp}"),
            None,
        ),
        (
            "GET",
            format!(
                "/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=walk-{}",
                std::process::id()
            ),
            None,
        ),
        (
            "POST",
            "/ajax-api/2.0/mlflow/experiments/search".into(),
            Some(json!({"max_results": 10})),
        ),
        (
            "POST",
            "/ajax-api/2.0/mlflow/runs/search".into(),
            Some(json!({"experiment_ids": [exp]})),
        ),
        (
            "GET",
            format!("/api/2.0/mlflow/runs/get?run_id={run}"),
            None,
        ),
        (
            "GET",
            format!("/api/2.0/mlflow/artifacts/list?run_id={run}"),
            None,
        ),
        ("GET", format!("{art}/hello.txt"), None),
        (
            "GET",
            "/ajax-api/2.0/mlflow/registered-models/search".into(),
            None,
        ),
        (
            "GET",
            "/ajax-api/2.0/mlflow/model-versions/search".into(),
            None,
        ),
        (
            "POST",
            "/ajax-api/2.0/mlflow/logged-models/search".into(),
            Some(json!({"experiment_ids": [exp]})),
        ),
        (
            "GET",
            format!("/ajax-api/2.0/mlflow/traces?experiment_ids={exp}"),
            None,
        ),
        (
            "POST",
            "/graphql".into(),
            Some(json!({"query": "query { test(inputString: \"x\") { output } }"})),
        ),
    ];
    let writes = |who: &str| -> Vec<(&'static str, String, Option<Value>)> {
        vec![
            (
                "POST",
                "/api/2.0/mlflow/experiments/create".into(),
                Some(json!({"name": format!("walk-made-by-{who}-{}", std::process::id())})),
            ),
            (
                "POST",
                "/ajax-api/2.0/mlflow/runs/create".into(),
                Some(json!({"experiment_id": exp})),
            ),
            (
                "POST",
                "/ajax-api/2.0/mlflow/runs/set-tag".into(),
                Some(json!({"run_id": run, "key": "by", "value": who})),
            ),
            (
                "POST",
                "/ajax-api/2.0/mlflow/registered-models/create".into(),
                Some(json!({"name": format!("walk-model-{who}-{}", std::process::id())})),
            ),
            (
                "PUT",
                format!("{art}/outputs/planted-by-{who}.txt"),
                Some(json!("planted")),
            ),
            (
                "DELETE",
                format!("{art}/outputs/planted-by-{who}.txt"),
                None,
            ),
            (
                "POST",
                "/graphql".into(),
                Some(json!({"query": "mutation { testMutation(inputString: \"x\") { output } }"})),
            ),
        ]
    };
    let h = http();
    let send = |token: &str, method: &str, path: &str, body: &Option<Value>| -> (u16, String) {
        let mut rb = h
            .request(method.parse().unwrap(), format!("{}{path}", stack.edge_url))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    for who in ["reader", "editor", "admin"] {
        for (m, p, b) in &reads {
            let (status, text) = send(&tokens[who], m, p, b);
            assert_eq!(status, 200, "{who} {m} {p}: {text}");
        }
    }
    for who in ["reader", "editor"] {
        for (m, p, b) in &writes(who) {
            let (status, text) = send(&tokens[who], m, p, b);
            if who == "reader" {
                assert_eq!(status, 403, "reader {m} {p}: {text}");
                assert!(text.contains("may only read MLflow"), "{text}");
            } else {
                assert_eq!(status, 200, "editor {m} {p}: {text}");
            }
        }
    }
    for (m, p, b) in reads.iter().chain(writes("agent").iter()) {
        assert_eq!(
            send(&tokens["agent-gpu"], m, p, b).0,
            403,
            "an agent token: {m} {p}"
        );
    }
    // Nothing the reader tried reached MLflow.
    let resp = h
        .get(format!(
            "{}/api/2.0/mlflow/experiments/get-by-name?experiment_name=walk-made-by-reader-{}",
            stack.mlflow_url,
            std::process::id()
        ))
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "the reader's experiment was not created"
    );
    let tags =
        &stack.mlflow_api("GET", &format!("runs/get?run_id={run}"), None)["run"]["data"]["tags"];
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .all(|t| t["value"] != "reader"),
        "the reader's tag was not set: {tags}"
    );
}

#[test]
fn revoking_a_token_ends_its_browser_sessions_at_once() {
    let stack = Stack::shared();
    let (status, created) = stack.api(
        "POST",
        "/api/v1/tokens",
        Some(&json!({"name": "session-editor", "role": "editor"})),
    );
    assert_eq!(status, 201, "{created}");
    let h = http();
    let login = h
        .post(format!("{}/login", stack.edge_url))
        .json(&json!({"token": created["token"]}))
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !cookie.contains(created["token"].as_str().unwrap()),
        "the cookie holds no token"
    );
    let with_cookie = || {
        h.get(format!("{}/api/v1/templates", stack.edge_url))
            .header("Cookie", &cookie)
            .send()
            .unwrap()
    };
    assert_eq!(with_cookie().status().as_u16(), 200);
    assert_eq!(
        stack.api("DELETE", "/api/v1/tokens/session-editor", None).0,
        204
    );
    let after = with_cookie();
    assert_eq!(after.status().as_u16(), 401);
    assert!(after.text().unwrap().contains("revoked"));
}

/// Leases the one item of a fresh run of `template` on `cluster` as a test agent would.
fn lease_one(stack: &Stack, cluster: &str, name: &str) -> Value {
    stack.put_template(&example_template(name, 1));
    stack.start_run(&json!({"template": name, "cluster": cluster}));
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let (status, resp) = stack.api(
            "POST",
            &format!("/api/v1/agents/{cluster}/lease"),
            Some(&json!({"agent": "test", "max": 1, "waitMs": 2000})),
        );
        assert_eq!(status, 200, "{resp}");
        if let Some(l) = resp["leases"].as_array().and_then(|l| l.first()) {
            return l.clone();
        }
        assert!(Instant::now() < deadline, "nothing was leased on {cluster}");
    }
}

#[test]
fn a_step_token_acts_only_on_its_own_lease_and_not_after_it() {
    let stack = Stack::shared();
    let lease = lease_one(stack, "steptoken", "step-token-pipeline");
    let step = lease["stepToken"].as_str().unwrap();
    let item = lease["item"]["id"].as_str().unwrap();
    let token = lease["token"].as_u64().unwrap();
    let heartbeat = |fencing: u64| {
        stack.api_as(
            Some(step),
            "POST",
            "/api/v1/agents/steptoken/heartbeat",
            Some(&json!({"agent": "pod", "leases": [{"itemId": item, "token": fencing}]})),
        )
    };
    let (status, body) = heartbeat(token + 1);
    assert_eq!(status, 403, "another fencing token: {body}");
    let (status, body) = heartbeat(token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leases"][item], "active");
    let (status, _) = stack.api_as(
        Some(step),
        "POST",
        "/api/v1/agents/steptoken/lease",
        Some(&json!({"agent": "pod", "max": 1})),
    );
    assert_eq!(status, 403, "a step token cannot lease");
    let done =
        json!({"itemId": item, "token": token, "outcome": {"status": "failed", "error": "test"}});
    let (status, body) = stack.api_as(
        Some(step),
        "POST",
        "/api/v1/agents/steptoken/complete",
        Some(&done),
    );
    assert_eq!(status, 200, "{body}");
    // The lease is over: the token is good for nothing now.
    let (_, body) = heartbeat(token);
    assert_eq!(body["leases"][item], "lost");
    let (status, _) = stack.api_as(
        Some(step),
        "POST",
        "/api/v1/agents/steptoken/complete",
        Some(&done),
    );
    assert_eq!(status, 409);
}

fn chain(n: usize) -> Value {
    let nodes: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("n{i}"), "kind": "project", "uri": "p"}))
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}))
        .collect();
    json!({"apiVersion": "concurrent/v1", "name": "big", "nodes": nodes, "edges": edges})
}

#[test]
fn ten_thousand_node_templates_are_answered_and_larger_ones_refused_by_size() {
    let stack = Stack::shared();
    let started = Instant::now();
    let (status, body) = stack.api("POST", "/api/v1/templates/validate", Some(&chain(10_000)));
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["problems"], json!([]));
    eprintln!("validating a 10,000-node chain at the edge took {took:?}");
    let (status, body) = stack.api("POST", "/api/v1/templates/validate", Some(&chain(10_001)));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["problems"][0]["path"], "/nodes");
    assert!(body["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("at most 10000"));
}

#[test]
fn hostile_node_values_are_refused_with_the_field() {
    let stack = Stack::shared();
    let mut t = example_template("hostile", 3);
    t["nodes"][0]["image"] = json!("UPPER:latest");
    t["nodes"][1]["image"] = json!("has space:1");
    t["nodes"][2]["resources"] = json!({"gpu": 1_000_000});
    let (status, body) = stack.api("POST", "/api/v1/templates/validate", Some(&t));
    assert_eq!(status, 200);
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/nodes/0/image", "/nodes/1/image", "/nodes/2/resources/gpu"],
        "{body}"
    );
    for uri in [
        "javascript:alert(1)",
        "ssh://",
        "-uhelp",
        "../../etc",
        "ftp://host/x",
    ] {
        let mut t = example_template("hostile-uri", 1);
        t["nodes"][0]["uri"] = json!(uri);
        let (status, body) = stack.api("PUT", "/api/v1/templates/hostile-uri", Some(&t));
        assert_eq!(status, 400, "{uri}: {body}");
        assert_eq!(
            body["error"]["details"][0]["path"], "/nodes/0/uri",
            "{uri}: {body}"
        );
    }
    // A parameter value is checked when the run starts, when its value is known.
    let mut t = example_template("hostile-param", 1);
    t["parameters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "where", "default": "examples/pipeline"}));
    t["nodes"][0]["uri"] = json!("{{params.where}}");
    stack.put_template(&t);
    let (status, body) = stack.api(
        "POST",
        "/api/v1/runs",
        Some(&json!({"template": "hostile-param", "parameters": {"where": "--upload-pack=x"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nodes/0/uri"),
        "{body}"
    );
}

#[test]
fn local_paths_outside_the_agents_roots_fail_the_attempt_with_the_roots_named() {
    let stack = Stack::shared();
    let _agent = stack.agent("roots");
    let mut t = example_template("outside-roots", 1);
    t["nodes"][0]["uri"] = json!("file:///etc");
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "outside-roots", "cluster": "roots"}));
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("outside the directories this agent offers")
            && error.contains("--allow-path"),
        "{error}"
    );
}

#[test]
fn a_deleted_experiment_fails_the_run_with_mlflows_reason_instead_of_hanging() {
    let stack = Stack::shared();
    let name = "deleted-experiment";
    stack.put_template(&example_template(name, 1));
    let has_parent = |r: &Value| !r["mlflow"].is_null();
    // A run before the deletion: the edge now remembers the experiment's id for a while.
    let before = stack.start_run(&json!({"template": name, "cluster": "nowhere"}));
    let run = stack.wait_until(&before, Duration::from_secs(30), "a parent run", has_parent);
    let exp = run["mlflow"]["experimentId"].clone();
    stack.mlflow_api(
        "POST",
        "experiments/delete",
        Some(&json!({"experiment_id": exp})),
    );
    let id = stack.start_run(&json!({"template": name, "cluster": "nowhere"}));
    let run = stack.wait_until(&id, Duration::from_secs(30), "the run fails", |r| {
        r["status"] == "failed"
    });
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("MLflow refused") && error.contains("restore"),
        "{error}"
    );
    // Restored, it serves the next run at once (what was remembered of it is gone).
    stack.mlflow_api(
        "POST",
        "experiments/restore",
        Some(&json!({"experiment_id": exp})),
    );
    let after = stack.start_run(&json!({"template": name, "cluster": "nowhere"}));
    let run = stack.wait_until(&after, Duration::from_secs(30), "a parent run", has_parent);
    assert_eq!(run["mlflow"]["experimentId"], exp, "{run}");
    stack.api("POST", &format!("/api/v1/runs/{before}/cancel"), None);
    stack.api("POST", &format!("/api/v1/runs/{after}/cancel"), None);
}

#[test]
fn an_experiment_replaced_in_mlflow_right_after_a_run_receives_the_next_run() {
    let stack = Stack::shared();
    let name = "replaced-experiment";
    stack.put_template(&example_template(name, 1));
    let has_parent = |r: &Value| !r["mlflow"].is_null();
    let first = stack.start_run(&json!({"template": name, "cluster": "nowhere"}));
    let run = stack.wait_until(&first, Duration::from_secs(30), "a parent run", has_parent);
    let old = run["mlflow"]["experimentId"].clone();
    // Within the seconds the edge remembers the old id: renamed away, deleted, and a new
    // experiment of the name made.
    stack.mlflow_api(
        "POST",
        "experiments/update",
        Some(&json!({"experiment_id": old, "new_name": "replaced-experiment-old"})),
    );
    stack.mlflow_api(
        "POST",
        "experiments/delete",
        Some(&json!({"experiment_id": old})),
    );
    let new = stack.mlflow_api(
        "POST",
        "experiments/create",
        Some(&json!({"name": format!("concurrent/{name}")})),
    )["experiment_id"]
        .clone();
    let next = stack.start_run(&json!({"template": name, "cluster": "nowhere"}));
    let run = stack.wait_until(&next, Duration::from_secs(30), "a parent run", |r| {
        has_parent(r) || r["status"] == "failed"
    });
    assert_eq!(run["mlflow"]["experimentId"], new, "{run}");
    for id in [first, next] {
        stack.api("POST", &format!("/api/v1/runs/{id}/cancel"), None);
    }
}

#[test]
fn an_idempotency_key_reused_for_another_request_is_refused() {
    let stack = Stack::shared();
    stack.put_template(&example_template("idem-pipeline", 1));
    let key = [("Idempotency-Key", "hardening-key-1")];
    let first = json!({"template": "idem-pipeline", "cluster": "nowhere"});
    let (status, a) = stack.api_with("POST", "/api/v1/runs", Some(&first), &key);
    assert_eq!(status, 201, "{a}");
    let (status, b) = stack.api_with("POST", "/api/v1/runs", Some(&first), &key);
    assert_eq!(
        (status, &b["id"]),
        (201, &a["id"]),
        "the same request: the same run"
    );
    let other = json!({"template": "idem-pipeline", "cluster": "elsewhere"});
    let (status, body) = stack.api_with("POST", "/api/v1/runs", Some(&other), &key);
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
}

fn run_objects(dir: &std::path::Path) -> usize {
    walkdir(&dir.join("wrangler"))
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("RunObject")
                && p.extension().is_some_and(|e| e == "sqlite")
        })
        .count()
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn reads_of_invented_run_ids_create_no_state() {
    let stack = Stack::shared();
    // An edge of its own: the shared one's other tests start runs (and objects) meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let token = stack.token.clone();
    let (edge, url) = concurrent_tests::start_edge(dir.path(), &token, &stack.mlflow_url, None);
    concurrent_tests::wait_ready(&format!("{url}/healthz"), &edge, Duration::from_secs(90));
    let h = http();
    let call = |method: &str, path: &str, body: Option<Value>| {
        let if_match: &[(&str, &str)] = if method == "PUT" {
            &[("If-Match", "*")]
        } else {
            &[]
        };
        call_edge(&h, &url, &token, (method, path), body, if_match)
    };
    // One real run, so the directory counted is where run objects live.
    let name = format!("invented-{}", std::process::id());
    let path = format!("/api/v1/templates/{name}");
    let (status, body) = call("PUT", &path, Some(example_template(&name, 1)));
    assert_eq!(status, 201, "{body}");
    let start = json!({"template": name, "cluster": "nowhere"});
    let (status, body) = call("POST", "/api/v1/runs", Some(start));
    assert_eq!(status, 201, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let before = run_objects(dir.path());
    assert!(before > 0, "run objects live under the persist directory");
    for i in 0..20 {
        let (status, _) = call("GET", &format!("/api/v1/runs/{i:032x}"), None);
        assert_eq!(status, 404);
        let (status, _) = call("POST", &format!("/api/v1/runs/{i:032x}/cancel"), None);
        assert_eq!(status, 404);
    }
    assert_eq!(
        run_objects(dir.path()),
        before,
        "no object was created for invented ids"
    );
}

#[test]
fn a_completion_is_retried_until_the_edge_takes_it() {
    let stack = Stack::shared();
    let proxy = FaultyProxy::start(&stack.edge_url);
    let _agent = stack.agent_via(&proxy.url, "flaky-edge", &[], &[]);
    let mut t = example_template("flaky-complete", 1);
    t["nodes"][0]["retries"] = json!({"limit": 0});
    stack.put_template(&t);
    // Completions (the agent reports them in batches, at /completions) fail for 25 s, longer
    // than the agent's inner retries; heartbeats go through.
    proxy.block("/completions");
    let id = stack.start_run(&json!({"template": "flaky-complete", "cluster": "flaky-edge"}));
    stack.wait_until(&id, RUN_TIMEOUT, "the step runs", |r| {
        r["nodes"][0]["instances"][0]["state"] == "running"
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.refused() == 0 {
        assert!(Instant::now() < deadline, "the step never reported");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(25));
    proxy.unblock_all();
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let attempts = run["nodes"][0]["instances"][0]["attempts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(attempts, 1, "the step ran once");
}

#[test]
fn a_lease_never_confirmed_is_counted_after_bounded_requeues() {
    let stack = Stack::shared();
    let first = lease_one(stack, "dies-early", "dies-early-pipeline");
    let run_id = first["item"]["runId"].as_str().unwrap().to_string();
    // The agent "dies" before each first heartbeat: lease, then never heartbeat.
    let mut leases = 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, run) = stack.api("GET", &format!("/api/v1/runs/{run_id}"), None);
        if run["status"] == "failed" {
            let error = run["error"].as_str().unwrap();
            assert!(error.contains("none of them confirmed it"), "{error}");
            assert!(
                error.contains("never started"),
                "the step is not blamed: {error}"
            );
            assert_eq!(leases, 11, "ten requeues, then the eleventh expiry counts");
            break;
        }
        assert!(Instant::now() < deadline, "the run never failed: {run:#}");
        let (_, resp) = stack.api(
            "POST",
            "/api/v1/agents/dies-early/lease",
            Some(&json!({"agent": "doomed", "max": 1, "waitMs": 1000})),
        );
        leases += resp["leases"].as_array().map_or(0, Vec::len);
    }
}

#[test]
fn broadcast_inputs_larger_than_a_message_reach_every_instance() {
    let stack = Stack::shared();
    // An MLflow run with 1,500 artifacts of long names: each downstream item carries ~0.6 MB of
    // file list, ten of them far more than one message between the edge's objects holds.
    let (exp, source) = mlflow_fixture(stack, "big-inputs");
    let h = http();
    let names: Vec<String> = (0..1500)
        .map(|i| format!("data/{}-{i:05}.csv", "x".repeat(150)))
        .collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(150) {
            let (h, exp, source) = (&h, &exp, &source);
            s.spawn(move || {
                for n in chunk {
                    let url = format!(
                        "{}/api/2.0/mlflow-artifacts/artifacts/{exp}/{source}/artifacts/{n}",
                        stack.mlflow_url
                    );
                    assert!(h.put(url).body("1").send().unwrap().status().is_success());
                }
            });
        }
    });
    let _agent = stack.agent("big-inputs");
    let t = json!({
        "apiVersion": "concurrent/v1", "name": "big-broadcast",
        "nodes": [
            {"id": "source", "kind": "input", "runId": source, "artifactPath": "data", "cluster": "big-inputs"},
            {"id": "wide", "kind": "project", "uri": "examples/pipeline", "instances": 10, "cluster": "big-consumers"}
        ],
        "edges": [{"from": "source", "to": "wide", "input": "data", "partition": {"mode": "broadcast"}}]
    });
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "big-broadcast"}));
    // A test agent takes the wide node's items: all ten must arrive, each with every file.
    let mut got = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while got.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} of 10 items were leased",
            got.len()
        );
        let (status, resp) = stack.api(
            "POST",
            "/api/v1/agents/big-consumers/lease",
            Some(&json!({"agent": "bulk", "max": 10, "waitMs": 2000})),
        );
        assert_eq!(status, 200, "{resp}");
        for l in resp["leases"].as_array().unwrap() {
            assert_eq!(
                l["item"]["step"]["inputs"]["data"]
                    .as_array()
                    .unwrap()
                    .len(),
                1500
            );
            got.insert(l["item"]["instance"].as_u64().unwrap());
            let done = json!({"itemId": l["item"]["id"], "token": l["token"], "outcome": {"status": "succeeded", "outputs": []}});
            let (status, body) =
                stack.api("POST", "/api/v1/agents/big-consumers/complete", Some(&done));
            assert_eq!(status, 200, "{body}");
        }
    }
    let run = stack.wait_run(&id, RUN_TIMEOUT);
    assert_eq!(run["status"], "succeeded");
}

#[test]
fn a_schedule_tick_whose_start_failed_is_retried_at_the_next_trigger() {
    let stack = Stack::shared();
    stack.put_template(&example_template("sched-retry", 1));
    let (status, body) = stack.api(
        "POST",
        "/api/v1/schedules",
        Some(&json!({"name": "sched-retry", "template": "sched-retry", "cron": "* * * * *", "cluster": "nowhere"})),
    );
    assert_eq!(status, 201, "{body}");
    // The template goes away before the tick: its start fails.
    assert_eq!(
        stack.api("DELETE", "/api/v1/templates/sched-retry", None).0,
        204
    );
    let fire = || stack.cron();
    let schedule = || -> Value {
        let (_, list) = stack.api("GET", "/api/v1/schedules", None);
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "sched-retry")
            .cloned()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let failed = loop {
        fire();
        let s = schedule();
        if s["lastError"].is_string() {
            break s;
        }
        assert!(Instant::now() < deadline, "the tick never came: {s}");
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(failed["pending"]["at"].is_u64(), "{failed}");
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("was deleted"),
        "{failed}"
    );
    // Back again: the same tick starts at the next trigger.
    stack.put_template(&example_template("sched-retry", 1));
    fire();
    let started = schedule();
    assert!(started["pending"].is_null(), "{started}");
    assert!(started["lastError"].is_null(), "{started}");
    assert_eq!(started["lastFired"], failed["pending"]["at"]);
    let run_id = started["lastRunId"].as_str().unwrap();
    let (status, _) = stack.api("GET", &format!("/api/v1/runs/{run_id}"), None);
    assert_eq!(status, 200);
    assert_eq!(
        stack.api("DELETE", "/api/v1/schedules/sched-retry", None).0,
        204
    );
}

#[test]
fn an_unknown_signing_key_fetches_access_keys_at_most_once_a_minute() {
    let stack = Stack::shared();
    let jwt = stack
        .access
        .token("mallory@example.com", json!({"_kid": "unknown-key"}), None);
    let h = http();
    let before = stack.access.fetches();
    for _ in 0..10 {
        let resp = h
            .get(format!("{}/api/v1/templates", stack.edge_url))
            .header("Cf-Access-Jwt-Assertion", &jwt)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    assert!(
        stack.access.fetches() - before <= 1,
        "{} fetches for 10 requests",
        stack.access.fetches() - before
    );
}

#[test]
fn a_weak_bootstrap_token_stops_the_edge_from_serving() {
    let stack = Stack::shared();
    let dir = tempfile::tempdir().unwrap();
    let (edge, url) = concurrent_tests::start_edge(dir.path(), "short", &stack.mlflow_url, None);
    let h = http();
    let deadline = Instant::now() + Duration::from_secs(90);
    let resp = loop {
        if let Ok(r) = h.get(format!("{url}/healthz")).send() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never answered:\n{}",
            edge.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("CONCURRENT_API_TOKEN") && message.contains("32"),
        "{message}"
    );
    assert!(
        !message.contains("short"),
        "the secret itself is never shown"
    );
    let resp = h
        .get(format!("{url}/api/v1/templates"))
        .bearer_auth("short")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503, "not an admin");
}

#[test]
fn an_edge_killed_between_creating_an_mlflow_run_and_recording_it_creates_it_once() {
    let stack = Stack::shared();
    let proxy = FaultyProxy::start(&stack.mlflow_url);
    let dir = tempfile::tempdir().unwrap();
    let token = stack.token.clone();
    let start = || {
        let (edge, url) = concurrent_tests::start_edge(dir.path(), &token, &proxy.url, None);
        concurrent_tests::wait_ready(&format!("{url}/healthz"), &edge, Duration::from_secs(90));
        (edge, url)
    };
    let h = http();
    let call =
        |url: &str, method: &str, path: &str, body: Option<Value>, extra: &[(&str, &str)]| {
            call_edge(&h, url, &token, (method, path), body, extra)
        };
    let name = format!("restart-{}", std::process::id());
    let mut t = example_template(&name, 1);
    t["name"] = json!(name);
    // MLflow creates the parent run, but its answer is held until the edge is dead.
    proxy.delay("/runs/create", Duration::from_secs(30));
    let (edge, url) = start();
    let (status, body) = call(
        &url,
        "PUT",
        &format!("/api/v1/templates/{name}"),
        Some(t),
        &[("If-Match", "*")],
    );
    assert_eq!(status, 201, "{body}");
    let (status, run) = call(
        &url,
        "POST",
        "/api/v1/runs",
        Some(json!({"template": name, "cluster": "nowhere"})),
        &[],
    );
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.seen("/runs/create") == 0 {
        assert!(
            Instant::now() < deadline,
            "the edge never created the parent run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    edge.signal(libc_sigkill());
    drop(edge);
    proxy.unblock_all();
    // A new edge process on the same storage carries on with the run.
    let (_edge, url) = start();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, run) = call(&url, "GET", &format!("/api/v1/runs/{id}"), None, &[]);
        // The parent run recorded and the first attempt queued (its own run is made by the
        // agent that leases it).
        let attempt = &run["nodes"][0]["instances"][0]["attempts"][0];
        if run["mlflow"]["runId"].is_string() && attempt["enqueued"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not go on after the restart: {run:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let exp = stack.mlflow_api(
        "GET",
        &format!("experiments/get-by-name?experiment_name=concurrent/{name}"),
        None,
    )["experiment"]["experiment_id"]
        .clone();
    let runs = stack.mlflow_api(
        "POST",
        "runs/search",
        Some(&json!({"experiment_ids": [exp], "filter": format!("tags.`concurrent.run_id` = '{id}'"), "max_results": 50})),
    );
    assert_eq!(
        runs["runs"].as_array().map_or(0, Vec::len),
        1,
        "one parent run, not made twice: {runs:#}"
    );
}

#[test]
fn an_agent_whose_create_answer_was_lost_makes_the_steps_run_once() {
    let stack = Stack::shared();
    // MLflow makes the step's run, but the answer never reaches the agent (a gateway's 502).
    let proxy = FaultyProxy::start(&stack.mlflow_url);
    proxy.lose_answers("/runs/create", 1);
    let cluster = format!("lost-answer-{}", std::process::id());
    let _agent = stack.agent_with(&cluster, &["--mlflow-uri", &proxy.url]);
    let name = format!("lost-answer-{}", std::process::id());
    stack.put_template(&example_template(&name, 1));
    let id = stack.start_run(&json!({"template": name, "cluster": cluster}));
    let run = stack.wait_run(&id, Duration::from_secs(120));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        proxy.seen("/runs/create") >= 1,
        "the agent never created a run"
    );
    let runs = stack.mlflow_api(
        "POST",
        "runs/search",
        Some(&json!({"experiment_ids": [run["mlflow"]["experimentId"]], "filter": format!("tags.`concurrent.run_id` = '{id}'"), "max_results": 50})),
    );
    let mut keys: Vec<String> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            let tags = r["data"]["tags"].as_array().unwrap();
            let tag = |k: &str| tags.iter().find(|t| t["key"] == k);
            tag("mlflow.parentRunId")?;
            Some(tag("concurrent.key")?["value"].as_str()?.to_string())
        })
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(all, keys.len(), "one MLflow run per attempt: {runs:#}");
    assert!(!keys.is_empty(), "{runs:#}");
}

#[test]
fn an_agent_killed_while_creating_a_steps_mlflow_run_leaves_one_run_per_attempt_all_closed() {
    let stack = Stack::shared();
    // The agent's MLflow creates the step's run, but the answer is held: the agent dies
    // before it could tell anyone.
    let proxy = FaultyProxy::start(&stack.mlflow_url);
    proxy.delay("/runs/create", Duration::from_secs(60));
    let cluster = format!("dying-{}", std::process::id());
    let mut agent = stack.agent_with(&cluster, &["--mlflow-uri", &proxy.url]);
    let name = format!("dying-{}", std::process::id());
    let mut t = example_template(&name, 1);
    t["nodes"][0]["retries"] = json!({"limit": 1, "backoffSeconds": 1});
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": name, "cluster": cluster}));
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.seen("/runs/create") == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent never created the step's run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    agent.signal(libc_sigkill());
    agent.wait_exit(Duration::from_secs(5));
    proxy.unblock_all();
    // Another agent carries on: the lease goes back to the queue (the new agent then finds
    // the run the dead one made), or expires (that run is then closed as failed, a retry
    // gets its own).
    let _next = stack.agent(&cluster);
    let run = stack.wait_run(&id, Duration::from_secs(180));
    let attempts = run["nodes"][0]["instances"][0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    let experiment = run["mlflow"]["experimentId"].clone();
    let runs = stack.mlflow_api(
        "POST",
        "runs/search",
        Some(&json!({"experiment_ids": [experiment], "filter": format!("tags.`concurrent.run_id` = '{id}'"), "max_results": 50})),
    );
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in runs["runs"].as_array().unwrap() {
        let tag = |k: &str| {
            r["data"]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["key"] == k)
                .map(|t| t["value"].as_str().unwrap().to_string())
        };
        if tag("mlflow.parentRunId").is_none() {
            continue;
        }
        assert_ne!(
            r["info"]["status"], "RUNNING",
            "every step run is closed: {r:#}"
        );
        by_key
            .entry(tag("concurrent.key").unwrap())
            .or_default()
            .push(r["info"]["run_id"].as_str().unwrap().into());
    }
    assert!(
        by_key.values().all(|runs| runs.len() == 1),
        "one MLflow run per attempt: {by_key:#?}\n{run:#}"
    );
    assert!(!by_key.is_empty());
    // The run's record names the MLflow run of the attempt that succeeded.
    let last = attempts.last().unwrap();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        by_key
            .values()
            .any(|r| r[0] == last["mlflowRunId"].as_str().unwrap()),
        "{by_key:?} {last:#}"
    );
}

fn libc_sigkill() -> i32 {
    9
}
