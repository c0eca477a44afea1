//! Objects, resource versions and watch fan-out.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// A change, as a watch streams it.
#[derive(Clone, Debug)]
pub struct Change {
    pub resource: String,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

pub struct Store {
    rv: u64,
    /// (resource, namespace, name) → object
    objects: BTreeMap<(String, String, String), Value>,
    pub changes: broadcast::Sender<Change>,
    pub logs: HashMap<(String, String), String>,
    /// How often each pod name was created (to prove no step ran twice).
    pub creations: HashMap<(String, String), u32>,
    next_uid: u64,
}

pub fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "pods" => "Pod",
        "secrets" => "Secret",
        "events" => "Event",
        _ => "Unknown",
    }
}

pub fn now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    concurrent_core::time::rfc3339(ms)
}

impl Store {
    pub fn new() -> Store {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            changes: broadcast::channel(4096).0,
            logs: HashMap::new(),
            creations: HashMap::new(),
            next_uid: 1,
        }
    }

    pub fn resource_version(&self) -> String {
        self.rv.to_string()
    }

    fn bump(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
    }

    fn emit(&self, resource: &str, namespace: &str, kind: &'static str, object: &Value) {
        let _ = self.changes.send(Change {
            resource: resource.into(),
            namespace: namespace.into(),
            kind,
            object: object.clone(),
        });
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&(resource.into(), ns.into(), name.into()))
            .cloned()
    }

    pub fn create(&mut self, resource: &str, ns: &str, mut obj: Value) -> Result<Value, Value> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(status(
                422,
                "Invalid",
                format!("{resource} must have metadata.name"),
            ));
        }
        let key = (resource.to_string(), ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(status(
                409,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        obj["kind"] = json!(kind_of(resource));
        obj["apiVersion"] = json!("v1");
        // As the API server does: a Secret's `stringData` is written into `data`, base64.
        if let Some(strings) = obj
            .as_object_mut()
            .and_then(|o| o.remove("stringData"))
            .and_then(|v| v.as_object().cloned())
        {
            use base64::Engine;
            for (k, v) in strings {
                let text = v.as_str().unwrap_or_default();
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            }
        }
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.next_uid));
        self.next_uid += 1;
        obj["metadata"]["creationTimestamp"] = json!(now());
        if resource == "pods" {
            obj["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
            *self
                .creations
                .entry((ns.to_string(), name.clone()))
                .or_default() += 1;
        }
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.emit(resource, ns, "ADDED", &obj);
        Ok(obj)
    }

    /// Replaces an object's status (the kubelet's writes).
    pub fn set_status(&mut self, ns: &str, name: &str, status: Value) {
        let key = ("pods".to_string(), ns.to_string(), name.to_string());
        let Some(mut obj) = self.objects.get(&key).cloned() else {
            return;
        };
        obj["status"] = status;
        if let Some(node) = obj["status"].get("nodeName").cloned() {
            obj["spec"]["nodeName"] = node;
            obj["status"]
                .as_object_mut()
                .expect("status object")
                .remove("nodeName");
        }
        self.bump(&mut obj);
        self.objects.insert(key, obj.clone());
        self.emit("pods", ns, "MODIFIED", &obj);
    }

    pub fn delete(&mut self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .remove(&(resource.into(), ns.into(), name.into()))?;
        self.bump(&mut obj);
        self.emit(resource, ns, "DELETED", &obj);
        // Garbage collection: objects owned by the deleted one go too.
        let uid = obj["metadata"]["uid"].clone();
        let owned: Vec<(String, String, String)> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (r, n, name) in owned {
            self.delete(&r, &n, &name);
        }
        Some(obj)
    }

    pub fn list(&self, resource: &str, ns: Option<&str>, selector: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), o)| {
                r == resource && ns.is_none_or(|ns| ns == n) && matches_selector(o, selector)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn event(&mut self, ns: &str, pod: &Value, kind: &str, reason: &str, message: &str) {
        let name = format!(
            "{}.{}",
            pod["metadata"]["name"].as_str().unwrap_or("pod"),
            self.rv
        );
        let ev = json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]},
            "type": kind, "reason": reason, "message": message, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "kubelet", "host": "test-node"}
        });
        let _ = self.create("events", ns, ev);
    }
}

/// Equality-based label selectors (`a=b,c!=d,e`), as kube-rs and kubectl send them.
pub fn matches_selector(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .all(|term| {
            let term = term.trim();
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                labels[k.trim().trim_end_matches('=')].as_str() == Some(v.trim())
            } else {
                labels.get(term).is_some()
            }
        })
}
