//! `deploy/kubernetes` renders with kustomize and every object is a valid Kubernetes object:
//! it decodes into k8s-openapi's types, and nothing is lost on the way (no misspelt fields).

use std::process::Command;

use concurrent_tests::root;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
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

#[test]
fn the_manifests_are_valid_kubernetes_objects() {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join("deploy/kubernetes"))
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
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
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
            "Secret",
            "ServiceAccount",
            "ServiceAccount"
        ]
    );
    assert!(
        !text.contains("clusterrole") && !text.contains("ClusterRole"),
        "least privilege: namespaced Role only"
    );
}
