//! DAGs through the Kubernetes executor: real agent (kube-rs), real edge API, real MLflow, and
//! the project's test Kubernetes API server, whose kubelet runs each pod's containers as local
//! processes. (No real API server can run on CI machines; see tests/src/kube. With
//! CONCURRENT_TEST_KUBECONFIG the same tests run against a real cluster.)

use std::time::{Duration, Instant};

use concurrent_tests::kube::TestCluster;
use concurrent_tests::{example_template, json, Service, Stack};
use serde_json::Value;

fn kube() -> TestCluster {
    TestCluster::start()
}

fn kube_agent(stack: &Stack, cluster: &TestCluster, name: &str) -> Service {
    kube_agent_with(stack, cluster, name, &["--pending-timeout", "3"])
}

fn kube_agent_with(stack: &Stack, cluster: &TestCluster, name: &str, extra: &[&str]) -> Service {
    kube_agent_env(stack, cluster, name, extra, &[])
}

fn kube_agent_env(
    stack: &Stack,
    cluster: &TestCluster,
    name: &str,
    extra: &[&str],
    more_env: &[(&str, &str)],
) -> Service {
    let (agent_image, step_image) = (cluster.agent_image(), cluster.step_image());
    let mut args = vec![
        "--executor",
        "kubernetes",
        "--namespace",
        "default",
        "--agent-image",
        &agent_image,
        "--default-image",
        &step_image,
    ];
    args.extend_from_slice(extra);
    let env = cluster.agent_env(stack);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(more_env);
    stack.agent_with_env(name, &args, &env)
}

/// The example pipeline with the project path as the step pods see it.
fn template(cluster: &TestCluster, name: &str, nodes: usize) -> Value {
    let mut t = example_template(name, nodes);
    for n in t["nodes"].as_array_mut().unwrap() {
        n["uri"] = json!(cluster.project_dir());
    }
    t
}

#[test]
fn a_dag_runs_end_to_end_through_pods() {
    let stack = Stack::shared();
    let server = kube();
    let listen = format!("127.0.0.1:{}", concurrent_tests::free_port());
    // The platform team's pod template: a toleration, /dev/shm in memory, a label of theirs.
    let dir = tempfile::tempdir().unwrap();
    let pod_template = dir.path().join("pod-template.yaml");
    std::fs::write(&pod_template, "metadata:\n  labels: {team: ml}\nspec:\n  tolerations: [{key: dedicated, operator: Equal, value: ml, effect: NoSchedule}]\n  volumes: [{name: dshm, emptyDir: {medium: Memory}}]\n  containers:\n    - name: step\n      volumeMounts: [{name: dshm, mountPath: /dev/shm}]\n").unwrap();
    let pod_template = pod_template.display().to_string();
    let _agent = kube_agent_with(
        stack,
        &server,
        "k8s-e2e",
        &[
            "--listen",
            &listen,
            "--pod-template",
            &pod_template,
            "--allow-service-account",
            "trainer",
        ],
    );
    // The train node asks for a node pool, a taint's toleration, its dataset claim, a bigger
    // /dev/shm than the template's and its own service account. (The test node has no GPUs;
    // `resources.gpuType` is checked by the pod's unit tests.)
    let mut t = template(&server, "k8s-pipeline", 3);
    t["nodes"][1]["kubernetes"] = json!({
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
             "labelSelector": {"matchLabels": {"concurrent.dev/node": "train"}}}}]}},
        "volumes": [
            {"name": "dataset", "mountPath": "/data", "readOnly": true, "persistentVolumeClaim": {"claimName": "imagenet"}},
            {"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
        ],
        "serviceAccountName": "trainer"
    });
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "k8s-pipeline", "cluster": "k8s-e2e"}));
    let run = stack.wait_run(&id, Duration::from_secs(300));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let pods = server.pods("default", "concurrent.dev/cluster=k8s-e2e");
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        pods.len(),
        4,
        "prepare, train x2, report: {names:?}\n{run:#}"
    );
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}");
        assert_eq!(server.creations("default", name), 1, "{name} created once");
        let spec = p["spec"].to_string();
        assert!(!spec.contains("cs_"), "no step token in the pod spec");
        // The template's parts, and the restricted defaults.
        assert_eq!(p["metadata"]["labels"]["team"], "ml");
        assert_eq!(
            p["metadata"]["labels"]["app.kubernetes.io/component"],
            "step"
        );
        assert_eq!(p["spec"]["tolerations"][0]["key"], "dedicated", "{p:#}");
        assert!(p["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/dev/shm"));
        assert_eq!(p["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            p["spec"]["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in p["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["spec"]["containers"].as_array().unwrap())
        {
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{c:#}"
            );
            assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        }
        assert!(p["spec"]["initContainers"][0]["resources"]["requests"]["memory"].is_string());
        if p["metadata"]["labels"]["concurrent.dev/node"] == "train" {
            let spec = &p["spec"];
            assert_eq!(spec["serviceAccountName"], "trainer", "{spec:#}");
            assert_eq!(spec["nodeSelector"]["pool"], "a100");
            let tolerated: Vec<&Value> = spec["tolerations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| &t["key"])
                .collect();
            assert_eq!(tolerated, [&json!("dedicated"), &json!("nvidia.com/gpu")]);
            assert_eq!(
                spec["affinity"]["podAntiAffinity"]
                    ["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
                100
            );
            let volume = |n: &str| {
                spec["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| v["name"] == n)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                volume("dataset")[0]["persistentVolumeClaim"]["claimName"],
                "imagenet"
            );
            let shm = volume("dshm");
            assert_eq!(shm.len(), 1, "the node's /dev/shm replaces the template's");
            assert_eq!(shm[0]["emptyDir"]["sizeLimit"], "8Gi");
        } else {
            assert!(p["spec"]["serviceAccountName"].is_null(), "{p:#}");
        }
        let typed: k8s_openapi::api::core::v1::PodSpec =
            serde_json::from_value(p["spec"].clone()).unwrap();
        assert_eq!(
            concurrent_tests::pss::restricted_problems(&typed),
            Vec::<String>::new(),
            "a restricted namespace admits the step pod"
        );
    }
    let merged = &run["nodes"][2]["instances"][0]["outputs"];
    assert_eq!(merged[0]["path"], "merged_model.json");
    let metrics = reqwest::blocking::get(format!("http://{listen}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("concurrent_steps_total{outcome=\"stopped\"} 4"),
        "each pod reported for itself:\n{metrics}"
    );
    assert!(metrics.contains("concurrent_leases_held 0"), "{metrics}");
    // Histograms of what took how long: 4 steps ran, each pod was seen running.
    for line in [
        "concurrent_step_duration_seconds_count 4",
        "concurrent_pod_start_seconds_count 4",
        "# TYPE concurrent_lease_latency_seconds histogram",
        &format!(
            "concurrent_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    for probe in ["healthz", "readyz"] {
        let r = reqwest::blocking::get(format!("http://{listen}/{probe}")).unwrap();
        assert_eq!(r.status().as_u16(), 200, "/{probe}: {}", r.text().unwrap());
    }
}

/// Readiness means the edge answers: an agent whose edge is down is alive but not ready, and
/// says why.
#[test]
fn an_agent_that_cannot_reach_its_edge_is_alive_but_not_ready() {
    let stack = Stack::shared();
    let listen = format!("127.0.0.1:{}", concurrent_tests::free_port());
    let dead_edge = format!("http://127.0.0.1:{}", concurrent_tests::free_port());
    let _agent = stack.agent_via(&dead_edge, "no-edge", &["--listen", &listen], &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (status, text) = loop {
        let r = reqwest::blocking::get(format!("http://{listen}/readyz"));
        if let Ok(r) = r {
            let status = r.status().as_u16();
            let text = r.text().unwrap();
            if text.contains("cannot be reached") || std::time::Instant::now() > deadline {
                break (status, text);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never answered"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("the edge cannot be reached"), "{text}");
    let live = reqwest::blocking::get(format!("http://{listen}/healthz")).unwrap();
    assert_eq!(live.status().as_u16(), 200, "its loops still turn");
}

#[test]
fn pods_that_cannot_start_or_run_out_of_memory_fail_with_a_diagnosis() {
    let stack = Stack::shared();
    let server = kube();
    let _agent = kube_agent(stack, &server, "k8s-diag");
    let cases = [
        (
            "k8s-unschedulable",
            json!({"resources": {"cpu": "64"}}),
            "Insufficient cpu",
        ),
        (
            "k8s-image",
            json!({"image": "registry.example/does-not-exist:1"}),
            "image pull failed",
        ),
        (
            "k8s-oom",
            json!({"resources": {"memory": "60Mi"}}),
            "OOMKilled",
        ),
    ];
    let ids: Vec<(String, &str)> = cases
        .iter()
        .map(|(name, patch, expected)| {
            let mut t = template(&server, name, 1);
            for (k, v) in patch.as_object().unwrap() {
                t["nodes"][0][k] = v.clone();
            }
            stack.put_template(&t);
            (
                stack.start_run(&json!({"template": name, "cluster": "k8s-diag"})),
                *expected,
            )
        })
        .collect();
    for (id, expected) in ids {
        let run = stack.wait_run(&id, Duration::from_secs(120));
        assert_eq!(run["status"], "failed");
        let error = run["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "expected {expected:?} in: {error}"
        );
    }
}

#[test]
fn running_pods_show_a_live_log_tail_and_cancel_deletes_them() {
    let stack = Stack::shared();
    let server = kube();
    let _agent = kube_agent(stack, &server, "k8s-cancel");
    let mut t = template(&server, "k8s-cancel", 2);
    t["nodes"][1]["parameters"]["sleep"] = json!("120");
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "k8s-cancel", "cluster": "k8s-cancel"}));
    stack.wait_until(&id, Duration::from_secs(120), "train pods running", |r| {
        r["nodes"][1]["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|x| x["state"] == "running"))
    });
    // The pod's log (read through the pods/log API) reaches the run with the agent's heartbeats.
    stack.wait_until(
        &id,
        Duration::from_secs(60),
        "a live log tail from the pod",
        |r| {
            r["nodes"][1]["instances"][0]["attempts"][0]["logTail"]
                .as_str()
                .is_some_and(|t| t.contains("sleeping 120"))
        },
    );
    let (status, _) = stack.api("POST", &format!("/api/v1/runs/{id}/cancel"), None);
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .pods("default", "concurrent.dev/node=train")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the train pods were not deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_agent_restarts_and_adopts_its_pods_without_running_a_step_twice() {
    let stack = Stack::shared();
    let server = kube();
    let mut agent = kube_agent(stack, &server, "k8s-restart");
    let mut t = template(&server, "k8s-restart", 2);
    t["nodes"][1]["parameters"]["sleep"] = json!("6");
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "k8s-restart", "cluster": "k8s-restart"}));
    stack.wait_until(&id, Duration::from_secs(120), "train pods running", |r| {
        r["nodes"][1]["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|x| x["state"] == "running"))
    });
    // Past the agent's first heartbeat (a third of the 6 s lease TTL), so the leases are
    // confirmed: a lease that was never confirmed goes back to the queue by design, and its pod
    // would be made again; this test is about adopting confirmed ones.
    std::thread::sleep(Duration::from_secs(3));
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5));
    let _restarted = kube_agent(stack, &server, "k8s-restart");
    let run = stack.wait_run(&id, Duration::from_secs(180));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for i in 0..2 {
        assert_eq!(
            run["nodes"][1]["instances"][i]["attempts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "no second attempt"
        );
    }
    for p in server.pods("default", "concurrent.dev/cluster=k8s-restart") {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            server.creations("default", name),
            1,
            "{name} was created once"
        );
    }
}

#[test]
fn a_lost_lease_deletes_the_orphaned_pod_and_the_retry_runs_in_a_new_one() {
    let stack = Stack::shared();
    let server = kube();
    let mut agent = kube_agent(stack, &server, "k8s-lost");
    let mut t = template(&server, "k8s-lost", 2);
    t["nodes"][1]["parameters"]["sleep"] = json!("30");
    t["nodes"][1]["instances"] = json!(1);
    t["nodes"][1]["retries"] = json!({"limit": 1, "backoffSeconds": 1});
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "k8s-lost", "cluster": "k8s-lost"}));
    stack.wait_until(&id, Duration::from_secs(120), "train running", |r| {
        r["nodes"][1]["instances"][0]["state"] == "running"
    });
    // Let the agent confirm the lease with a heartbeat (every 2 s here); an unconfirmed lease
    // would go back to the queue uncounted instead, and its pod be adopted.
    std::thread::sleep(Duration::from_secs(3));
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5));
    // Longer than the 6 s lease TTL: the attempt fails as "lease expired".
    stack.wait_until(&id, Duration::from_secs(30), "lease expiry", |r| {
        r["nodes"][1]["instances"][0]["attempts"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let orphan = server.pods(
        "default",
        "concurrent.dev/attempt=1,concurrent.dev/node=train",
    );
    assert_eq!(
        orphan.len(),
        1,
        "the first pod is still there while no agent runs"
    );
    let _restarted = kube_agent(stack, &server, "k8s-lost");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .pods(
            "default",
            "concurrent.dev/attempt=1,concurrent.dev/node=train",
        )
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the orphaned pod of the lost lease was not deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = stack.wait_run(&id, Duration::from_secs(180));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let attempts = run["nodes"][1]["instances"][0]["attempts"]
        .as_array()
        .unwrap();
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap()
        .contains("lease expired"));
}

#[test]
fn a_node_asking_for_a_service_account_the_agent_does_not_allow_fails_with_the_fix() {
    let stack = Stack::shared();
    let server = kube();
    let _agent = kube_agent(stack, &server, "k8s-sa");
    let mut t = template(&server, "k8s-sa", 1);
    t["nodes"][0]["kubernetes"] = json!({"serviceAccountName": "cluster-admin"});
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "k8s-sa", "cluster": "k8s-sa"}));
    let run = stack.wait_run(&id, Duration::from_secs(120));
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["nodes"][0]["instances"][0]["attempts"][0]["error"].to_string();
    assert!(
        error.contains("cluster-admin") && error.contains("--allow-service-account cluster-admin"),
        "{error}"
    );
    assert!(
        server
            .pods("default", "concurrent.dev/cluster=k8s-sa")
            .is_empty(),
        "no pod was made"
    );
}

fn kubectl(server: &TestCluster, args: &[&str]) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_docker_env_git_project_runs_in_its_image_with_secrets_by_reference_only() {
    let stack = Stack::shared();
    let server = kube();
    // A git project whose MLproject names its Docker image and environment.
    let served = tempfile::tempdir().unwrap();
    let repo = served.path().join("docker-project.git");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("MLproject"),
        "name: in-docker\ndocker_env:\n  image: python:3.11-slim\n  environment: [[\"GREETING\", \"from the MLproject\"]]\nentry_points:\n  main:\n    command: \"python step.py\"\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("step.py"),
        "import hashlib, os\nout = os.environ['CONCURRENT_OUTPUT_DIR']\nopen(os.path.join(out, 'seen.txt'), 'w').write('\\n'.join([os.environ['GREETING'], os.environ['EPOCHS'], hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest(), str(bool(os.environ.get('MLFLOW_TRACKING_TOKEN')))]))\nprint('key', os.environ['API_KEY'])\n",
    )
    .unwrap();
    concurrent_tests::git(&repo, &["init", "--quiet", "-b", "main"]);
    concurrent_tests::git(&repo, &["add", "."]);
    concurrent_tests::git(&repo, &["commit", "--quiet", "-m", "docker project"]);
    let (_daemon, base) = concurrent_tests::git_daemon(served.path());
    let (api_key, git_password, mlflow_token) =
        ("k8s-secret-value-81", "gitpass-93", "mlflow-token-27");
    for (name, key, value) in [
        ("api-creds", "api_key", api_key.to_string()),
        (
            "git-creds",
            ".git-credentials",
            format!("https://bot:{git_password}@git.example.com"),
        ),
    ] {
        let file = served.path().join(format!("{name}.json"));
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "stringData": {key: value}});
        std::fs::write(&file, secret.to_string()).unwrap();
        kubectl(
            &server,
            &["create", "--validate=false", "-f", file.to_str().unwrap()],
        );
    }
    let (agent_image, step_image) = (server.agent_image(), server.step_image());
    let mut env = server.agent_env(stack);
    env.push(("MLFLOW_TRACKING_TOKEN".into(), mlflow_token.into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _agent = stack.agent_with_env(
        "k8s-docker",
        &[
            "--executor",
            "kubernetes",
            "--namespace",
            "default",
            "--agent-image",
            &agent_image,
            "--default-image",
            &step_image,
            "--git-credentials-secret",
            "git-creds",
        ],
        &env,
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = json!({
        "apiVersion": "concurrent/v1", "name": "k8s-docker",
        "nodes": [{"id": "main", "kind": "project", "uri": format!("{base}/docker-project.git"),
                   "env": {"EPOCHS": "3"}, "secretEnv": {"API_KEY": {"secret": "api-creds", "key": "api_key"}}}]
    });
    stack.put_template(&t);
    let id = stack.start_run(&json!({"template": "k8s-docker", "cluster": "k8s-docker"}));
    let run = stack.wait_run(&id, Duration::from_secs(180));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let pods = server.pods("default", "concurrent.dev/cluster=k8s-docker");
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(
        pod["spec"]["containers"][0]["image"], "python:3.11-slim",
        "the pod runs in the MLproject's image"
    );
    let spec = pod["spec"].to_string();
    for secret in [api_key, git_password, mlflow_token] {
        assert!(!spec.contains(secret), "{secret} is not in the pod spec");
    }
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let by_name = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        by_name("API_KEY")["valueFrom"]["secretKeyRef"],
        json!({"name": "api-creds", "key": "api_key", "optional": false})
    );
    assert!(
        by_name("MLFLOW_TRACKING_TOKEN")["valueFrom"]["secretKeyRef"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-step")
    );
    let mounts = pod["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/concurrent-git"),
        "git credentials are mounted: {mounts}"
    );
    let attempt = &run["nodes"][0]["instances"][0]["attempts"][0];
    let child = stack.mlflow_api(
        "GET",
        &format!(
            "runs/get?run_id={}",
            attempt["mlflowRunId"].as_str().unwrap()
        ),
        None,
    )["run"]
        .clone();
    let seen = stack.artifact(&child, "outputs/seen.txt");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "from the MLproject");
    assert_eq!(lines[1], "3");
    assert_eq!(lines[3], "True", "MLflow's credentials reached the pod");
    let log = stack.artifact(&child, "logs/step.log");
    assert!(
        log.contains("key ***") && !log.contains(api_key),
        "the secret is masked in the log"
    );
}
