//! The Python client (`mlflow_concurrent.Client`) against the real stack: start a run, wait for
//! it, list runs, typed errors, a failed run raising `RunFailed`, cancel; and a retried start
//! (the same Idempotency-Key) starting one run.

use std::process::Command;

use concurrent_tests::{example_template, root, Stack};

const SCRIPT: &str = r#"
import os, sys
from mlflow_concurrent import Client, NotFound, Unauthorized, Invalid, RunFailed, Unavailable

c = Client(os.environ["EDGE"], os.environ["TOKEN"])
run = c.start_run("py-pipeline", {"parts": 3}, cluster="py")
state = run.wait(timeout=300, poll=0.5)
assert state["status"] == "succeeded", state
assert [n["id"] for n in state["nodes"]] == ["prepare", "train", "report"]
assert any(r["id"] == run.id for r in c.runs(template="py-pipeline")), "listed"

try:
    c.start_run("py-pipeline", {"fail": "yes"}, cluster="py").wait(timeout=300, poll=0.5)
    raise SystemExit("a failed run must raise")
except RunFailed as e:
    assert e.state["status"] == "failed" and "instance" in str(e), e

try:
    c.start_run("no-such-template")
    raise SystemExit("must raise")
except NotFound as e:
    assert e.status == 404, e

try:
    c.push_template({"apiVersion": "concurrent/v1", "name": "py-bad", "nodes": [{"id": "a", "kind": "project", "uri": "", "entryPoint": "main"}]})
    raise SystemExit("must raise")
except Invalid as e:
    assert any(p["path"] == "/nodes/0/uri" for p in e.problems), e.problems

try:
    Client(os.environ["EDGE"], "wrong-token").runs()
    raise SystemExit("must raise")
except Unauthorized:
    pass

try:
    Client("http://127.0.0.1:9", "t", retries=1).runs()
    raise SystemExit("must raise")
except Unavailable as e:
    assert "unreachable" in str(e), e

# What a retried start sends: the same Idempotency-Key gives the same run.
body = {"template": "py-pipeline", "cluster": "nobody-runs-this", "parameters": {}}
first = c.call("POST", "/api/v1/runs", body, {"Idempotency-Key": "py-retry-1"})
again = c.call("POST", "/api/v1/runs", body, {"Idempotency-Key": "py-retry-1"})
assert first["id"] == again["id"], (first, again)
c.run(first["id"]).cancel()

long = c.start_run("py-pipeline", {"parts": 3}, cluster="nobody-runs-this")
long.cancel()
try:
    long.wait(timeout=60, poll=0.5)
except RunFailed as e:
    assert e.state["status"] == "cancelled", e.state
print("ok")
"#;

#[test]
fn the_python_client_starts_waits_lists_cancels_and_raises_typed_errors() {
    let stack = Stack::shared();
    let _agent = stack.agent("py");
    stack.put_template(&example_template("py-pipeline", 3));
    let out = Command::new(root().join(".venv/bin/python"))
        .args(["-c", SCRIPT])
        .env("EDGE", &stack.edge_url)
        .env("TOKEN", &stack.token)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim_end().ends_with("ok"),
        "{text}"
    );
}
