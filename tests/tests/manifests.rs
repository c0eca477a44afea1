//! `deploy/kubernetes` (the base, the example overlay, the Prometheus Operator component) renders
//! with kustomize and every object is a valid Kubernetes object:
//! it decodes into k8s-openapi's types, and nothing is lost on the way (no misspelt fields).

use std::process::Command;

use concurrent_tests::root;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).unwrap();
    // stringData is write-only in the API; compare everything else.
    let mut expected = doc.clone();
    expected.as_object_mut().unwrap().remove("stringData");
    let mut got = back;
    got.as_object_mut().unwrap().remove("stringData");
    assert_eq!(
        normalize(&got),
        normalize(&expected),
        "{} lost or changed fields on a round trip",
        doc["kind"]
    );
}

/// Drops empty objects and arrays that serialization adds or omits.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !matches!(v, Value::Object(o) if o.is_empty()))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        v => v.clone(),
    }
}

/// `kubectl kustomize <dir>`: the rendered YAML.
fn render(dir: &std::path::Path) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(dir)
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Checks every object of a rendering strictly; their kinds, sorted.
fn check(text: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let doc: Value =
            serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        let kind = doc["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Namespace" => {
                strict::<Namespace>(&doc);
                assert_eq!(
                    doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
                    "the namespace enforces the restricted pod security standard"
                );
            }
            "ServiceAccount" => strict::<ServiceAccount>(&doc),
            "Role" => strict::<Role>(&doc),
            "RoleBinding" => strict::<RoleBinding>(&doc),
            "Secret" => strict::<Secret>(&doc),
            "Service" => strict::<Service>(&doc),
            "ConfigMap" => {
                strict::<ConfigMap>(&doc);
                // A pod template in a ConfigMap must be one the agent reads.
                if let Some(t) = doc["data"]["pod-template.yaml"].as_str() {
                    let t: Value =
                        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(t).unwrap())
                            .unwrap();
                    strict::<PodTemplateSpec>(&t);
                }
            }
            "Deployment" => {
                strict::<Deployment>(&doc);
                // The namespace enforces the restricted standard: the agent itself must meet it.
                let d: Deployment = serde_json::from_value(doc.clone()).unwrap();
                let spec = d.spec.unwrap().template.spec.unwrap();
                assert_eq!(
                    concurrent_tests::pss::restricted_problems(&spec),
                    Vec::<String>::new()
                );
            }
            // The Prometheus Operator's CRD has no k8s-openapi type: its shape is checked here.
            "ServiceMonitor" => {
                assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
                assert_eq!(
                    doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
                    "concurrent-agent"
                );
                assert_eq!(doc["spec"]["endpoints"][0]["port"], "metrics");
            }
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert!(
        !text.contains("clusterrole") && !text.contains("ClusterRole"),
        "least privilege: namespaced Role only"
    );
    kinds.sort();
    kinds
}

const BASE: [&str; 8] = [
    "Deployment",
    "Namespace",
    "Role",
    "RoleBinding",
    "Secret",
    "Service",
    "ServiceAccount",
    "ServiceAccount",
];

#[test]
fn the_base_is_valid_kubernetes_objects() {
    let text = render(&root().join("deploy/kubernetes/base"));
    assert_eq!(check(&text), BASE);
    assert!(
        text.contains("prometheus.io/scrape"),
        "the Service is scraped"
    );
}

#[test]
fn the_example_overlay_sets_image_token_edge_and_a_pod_template() {
    let text = render(&root().join("deploy/kubernetes/overlays/example"));
    let mut want: Vec<&str> = BASE.to_vec();
    want.push("ConfigMap");
    want.sort();
    assert_eq!(check(&text), want);
    for needle in [
        "registry.example.com/ml/concurrent-agent:0.1.0",
        "CONCURRENT_POD_TEMPLATE",
        "value: gpu",
        "claimName: datasets",
    ] {
        assert!(text.contains(needle), "{needle} in the overlay:\n{text}");
    }
    // The agent mounts the generated ConfigMap under its hashed name.
    let deployment = text
        .split("---")
        .find(|d| d.contains("kind: Deployment"))
        .unwrap();
    assert!(
        deployment.contains("name: concurrent-pod-template-"),
        "{deployment}"
    );
}

#[test]
fn the_prometheus_operator_component_adds_a_service_monitor() {
    // kustomize wants relative paths inside one tree: render a copy with an overlay using it.
    let tmp = tempfile::tempdir().unwrap();
    let copy = |from: &str| {
        let src = root().join("deploy/kubernetes").join(from);
        let dst = tmp.path().join(from);
        std::fs::create_dir_all(&dst).unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
        }
    };
    copy("base");
    copy("components/prometheus-operator");
    std::fs::create_dir_all(tmp.path().join("overlays/monitored")).unwrap();
    std::fs::write(
        tmp.path().join("overlays/monitored/kustomization.yaml"),
        "resources: [../../base]\ncomponents: [../../components/prometheus-operator]\n",
    )
    .unwrap();
    let kinds = check(&render(&tmp.path().join("overlays/monitored")));
    assert!(kinds.contains(&"ServiceMonitor".to_string()), "{kinds:?}");
}
