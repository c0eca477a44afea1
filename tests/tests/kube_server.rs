//! The test Kubernetes API server is faithful enough for the real `kubectl`.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use concurrent_tests::kube::{KubeConfig, KubeServer};
use serde_json::{json, Value};

fn server() -> (KubeServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = KubeConfig {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        gpus: 0,
        image_files: HashMap::new(),
        work_dir: dir.path().to_path_buf(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap())],
    };
    (KubeServer::start(config), dir)
}

fn kubectl(server: &KubeServer, args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn create_pod(server: &KubeServer, pod: Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/namespaces/default/pods", server.url))
        .json(&pod)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().unwrap());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_gets_logs_and_deletes_pods_on_the_test_server() {
    let (server, _dir) = server();
    create_pod(
        &server,
        json!({"metadata": {"name": "hello", "labels": {"app": "demo"}}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hello from the pod; sleep 30"]}]}}),
    );
    wait_for("the pod runs", || {
        let (ok, out) = kubectl(&server, &["get", "pods", "-l", "app=demo", "-o", "json"]);
        ok && serde_json::from_str::<Value>(&out)
            .is_ok_and(|v| v["items"][0]["status"]["phase"] == "Running")
    });
    wait_for("kubectl logs shows the output", || {
        kubectl(&server, &["logs", "hello"])
            .1
            .contains("hello from the pod")
    });
    let (ok, out) = kubectl(&server, &["get", "pods"]);
    assert!(
        ok && out.contains("hello") && out.contains("Running"),
        "{out}"
    );
    let (ok, out) = kubectl(&server, &["delete", "pod", "hello", "--wait=false"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&server, &["get", "pod", "hello"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    assert_eq!(server.creations("default", "hello"), 1);
}

#[test]
fn pods_that_cannot_run_say_why() {
    let (server, _dir) = server();
    create_pod(
        &server,
        json!({"metadata": {"name": "big"}, "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"],
        "resources": {"requests": {"cpu": "64"}}}]}}),
    );
    create_pod(
        &server,
        json!({"metadata": {"name": "typo"}, "spec": {"containers": [{"name": "main", "image": "registry.example/does-not-exist:1", "command": ["true"]}]}}),
    );
    create_pod(
        &server,
        json!({"metadata": {"name": "hog"}, "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "python",
        "command": ["python3", "-c", "x = bytearray(300 * 1024 * 1024); import time; time.sleep(30)"], "resources": {"limits": {"memory": "100Mi"}}}]}}),
    );
    let pod = |name: &str| -> Value {
        serde_json::from_str(&kubectl(&server, &["get", "pod", name, "-o", "json"]).1)
            .unwrap_or(Value::Null)
    };
    wait_for("unschedulable", || {
        pod("big")["status"]["conditions"][0]["reason"] == "Unschedulable"
    });
    assert!(pod("big")["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .contains("Insufficient cpu"));
    wait_for("image pull back-off", || {
        pod("typo")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "ImagePullBackOff"
    });
    wait_for("OOMKilled", || {
        pod("hog")["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    });
    assert_eq!(pod("hog")["status"]["phase"], "Failed");
    let (_, events) = kubectl(&server, &["get", "events", "-o", "json"]);
    assert!(events.contains("FailedScheduling"), "{events}");
}
