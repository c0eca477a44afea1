//! A node's Kubernetes settings (`crate::kubernetes`), checked: label keys and values, tolerations,
//! affinity (walked field by field), volumes and their mounts, the service account; and the
//! settings as a person types them in the designer.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity::memory_bytes;
use super::{Problem, Target};
use crate::kubernetes::*;
use crate::names::{dns_label_problem, label_value_problem};
use crate::partition::relative_path_problem;

/// The field names of each object, for [`super::unknown_fields`].
pub const SPEC_FIELDS: &[&str] = &[
    "nodeSelector",
    "tolerations",
    "affinity",
    "volumes",
    "serviceAccountName",
];
pub const TOLERATION_FIELDS: &[&str] = &["key", "operator", "value", "effect", "tolerationSeconds"];
pub const VOLUME_FIELDS: &[&str] = &[
    "name",
    "mountPath",
    "readOnly",
    "subPath",
    "persistentVolumeClaim",
    "emptyDir",
    "configMap",
    "secret",
];
pub const VOLUME_SOURCE_FIELDS: [(&str, &[&str]); 4] = [
    ("persistentVolumeClaim", &["claimName"]),
    ("emptyDir", &["medium", "sizeLimit"]),
    ("configMap", &["name"]),
    ("secret", &["secretName"]),
];

/// Why text typed as Kubernetes settings cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("is not JSON: {0}")]
    NotJson(String),
    /// A field the settings do not have (`field` is its pointer below `kubernetes`).
    #[error("{field}: {message}")]
    UnknownField { field: String, message: String },
    #[error("does not have the shape of Kubernetes settings: {0}")]
    Shape(String),
}

/// Reads Kubernetes settings as a person types them (the designer's JSON field): empty text
/// is none; unknown fields are refused (serde would drop a typo silently).
///
/// # Errors
/// Not JSON, an unknown field (with the closest known one), or a field of the wrong type.
pub fn from_json(text: &str) -> Result<KubernetesSpec, SettingsError> {
    if text.trim().is_empty() {
        return Ok(KubernetesSpec::default());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| SettingsError::NotJson(e.to_string()))?;
    // The template's unknown-field check, on a node that holds only these settings.
    let doc = serde_json::json!({"nodes": [{"kind": "input", "kubernetes": v}]});
    if let Some(p) = super::unknown_fields(&doc).into_iter().next() {
        return Err(SettingsError::UnknownField {
            field: p
                .path
                .trim_start_matches("/nodes/0/kubernetes/")
                .to_string(),
            message: p.message,
        });
    }
    serde_json::from_value(v).map_err(|e| SettingsError::Shape(e.to_string()))
}

/// Every problem of a node's Kubernetes settings (`at` is the node).
pub fn problems(k: &KubernetesSpec, at: Target) -> Vec<Problem> {
    field_problems(k)
        .into_iter()
        .map(|(field, why)| Problem::at(at, &format!("kubernetes/{field}"), why))
        .collect()
}

/// Every problem of a node's Kubernetes settings, as (field below `kubernetes`, message).
fn field_problems(k: &KubernetesSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |field: String, message: String| out.push((field, message));
    for (key, value) in &k.node_selector {
        let at = format!("nodeSelector/{}", escape(key));
        if let Some(why) = label_key_problem(key) {
            add(at.clone(), format!("label key {key:?} {why}"));
        }
        if !value.is_empty() {
            if let Some(why) = label_value_problem(value) {
                add(at, format!("label value {value:?} {why}"));
            }
        }
    }
    for (i, t) in k.tolerations.iter().enumerate() {
        for (field, why) in toleration_problems(t) {
            add(format!("tolerations/{i}/{field}"), why);
        }
    }
    if let Some(a) = &k.affinity {
        for (field, why) in affinity_problems(a) {
            add(format!("affinity{field}"), why);
        }
    }
    let mut names = BTreeMap::new();
    let mut paths = BTreeMap::new();
    for (i, v) in k.volumes.iter().enumerate() {
        let at = |f: &str| format!("volumes/{i}/{f}");
        if let Some(why) = dns_label_problem(&v.name, 63) {
            add(at("name"), format!("volume name {:?} {why}", v.name));
        } else if RESERVED_VOLUMES.contains(&v.name.as_str()) {
            add(
                at("name"),
                format!(
                    "{:?} is a volume the agent adds to every step pod; choose another name",
                    v.name
                ),
            );
        }
        if let Some(first) = names.insert(v.name.clone(), i) {
            add(
                at("name"),
                format!("volume {:?} is already declared by volumes/{first}", v.name),
            );
        }
        if let Some(why) = mount_path_problem(&v.mount_path) {
            add(at("mountPath"), why);
        }
        if let Some(first) = paths.insert(v.mount_path.clone(), i) {
            add(
                at("mountPath"),
                format!(
                    "{:?} is already the mount path of volumes/{first}",
                    v.mount_path
                ),
            );
        }
        if let Some(sub) = &v.sub_path {
            if let Some(why) = relative_path_problem(sub) {
                add(at("subPath"), why);
            }
        }
        for (field, why) in volume_source_problems(v) {
            add(at(&field), why);
        }
    }
    if let Some(sa) = &k.service_account_name {
        if let Some(why) = dns_subdomain_problem(sa) {
            add(
                "serviceAccountName".into(),
                format!("service account {sa:?} {why}"),
            );
        }
    }
    out
}

/// A map key as one JSON pointer segment (`/` and `~` are escaped).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Why `key` is not a Kubernetes label key (`[prefix/]name`: a DNS subdomain of at most 253
/// characters, then a name of at most 63), or `None`.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if let Some(why) = dns_subdomain_problem(p) {
            return Some(format!("has the prefix {p:?}, which {why}"));
        }
    }
    label_value_problem(name).map(|why| format!("has the name {name:?}, which {why}"))
}

/// Why `s` is not a DNS subdomain (dot-separated lowercase DNS labels, at most 253 characters).
pub fn dns_subdomain_problem(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some(format!(
            "is {} characters long; at most 253 are allowed",
            s.len()
        ));
    }
    s.split('.')
        .find_map(|label| dns_label_problem(label, 63))
        .map(|why| format!("is not a DNS name: {why}"))
}

fn toleration_problems(t: &Toleration) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let exists = match t.operator.as_deref() {
        None | Some("Equal") => false,
        Some("Exists") => true,
        Some(other) => {
            out.push((
                "operator",
                format!("is {other:?}; use \"Equal\" or \"Exists\""),
            ));
            false
        }
    };
    match t.key.as_deref() {
        Some(key) if !key.is_empty() => {
            if let Some(why) = label_key_problem(key) {
                out.push(("key", format!("taint key {key:?} {why}")));
            }
        }
        _ if !exists => out.push((
            "key",
            "is required unless the operator is \"Exists\" (which then tolerates every taint)"
                .into(),
        )),
        _ => {}
    }
    match (&t.value, exists) {
        (Some(v), true) if !v.is_empty() => out.push((
            "value",
            "must be empty when the operator is \"Exists\"; remove it or use \"Equal\"".into(),
        )),
        (Some(v), false) if !v.is_empty() => {
            if let Some(why) = label_value_problem(v) {
                out.push(("value", format!("taint value {v:?} {why}")));
            }
        }
        _ => {}
    }
    if let Some(e) = &t.effect {
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e.as_str()) {
            out.push((
                "effect",
                format!("is {e:?}; use \"NoSchedule\", \"PreferNoSchedule\" or \"NoExecute\" (or leave it out for all)"),
            ));
        }
    }
    if let Some(secs) = t.toleration_seconds {
        if t.effect.as_deref() != Some("NoExecute") {
            out.push((
                "tolerationSeconds",
                "only applies to the \"NoExecute\" effect; remove it or set that effect".into(),
            ));
        } else if secs < 0 {
            out.push((
                "tolerationSeconds",
                format!("is {secs}; it must not be negative"),
            ));
        }
    }
    out
}

fn mount_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!(
            "{path:?} is not an absolute path; write e.g. \"/data\""
        ));
    }
    if path.split('/').any(|seg| seg == "..") {
        return Some(format!("{path:?} contains \"..\"; write the path it means"));
    }
    if path.contains(':') {
        return Some(format!(
            "{path:?} contains ':', which Kubernetes refuses in mount paths"
        ));
    }
    let clean = path.trim_end_matches('/');
    if clean.is_empty() {
        return Some("\"/\" would hide the image; mount below it, e.g. \"/data\"".into());
    }
    RESERVED_PATHS
        .iter()
        .find(|r| clean == **r || clean.starts_with(&format!("{r}/")) || r.starts_with(&format!("{clean}/")))
        .map(|r| format!("{path:?} overlaps {r}, which the agent mounts in every step pod; mount elsewhere, e.g. \"/data\""))
}

fn volume_source_problems(v: &VolumeSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let given = [
        v.persistent_volume_claim.is_some(),
        v.empty_dir.is_some(),
        v.config_map.is_some(),
        v.secret.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        out.push((
            "name".into(),
            format!(
                "volume {:?} needs exactly one of persistentVolumeClaim, emptyDir, configMap or secret",
                v.name
            ),
        ));
    }
    let named = |field: &str, name: &str, what: &str| {
        dns_subdomain_problem(name).map(|why| (field.to_string(), format!("{what} {name:?} {why}")))
    };
    if let Some(c) = &v.persistent_volume_claim {
        out.extend(named(
            "persistentVolumeClaim/claimName",
            &c.claim_name,
            "claim",
        ));
    }
    if let Some(c) = &v.config_map {
        out.extend(named("configMap/name", &c.name, "config map"));
    }
    if let Some(s) = &v.secret {
        out.extend(named("secret/secretName", &s.secret_name, "secret"));
    }
    if let Some(e) = &v.empty_dir {
        match e.medium.as_deref() {
            None | Some("") | Some("Memory") => {}
            Some(m) => out.push((
                "emptyDir/medium".into(),
                format!("is {m:?}; use \"Memory\" (a tmpfs, e.g. for /dev/shm) or leave it out for disk"),
            )),
        }
        if let Some(size) = &e.size_limit {
            if memory_bytes(size).is_none() {
                out.push((
                    "emptyDir/sizeLimit".into(),
                    format!("{size:?} is not a quantity; write e.g. \"1Gi\""),
                ));
            }
        }
    }
    out
}

/// Every problem of a Kubernetes `Affinity` document, as (JSON pointer below it, message).
pub fn affinity_problems(a: &Value) -> Vec<(String, String)> {
    let mut w = Walk(Vec::new());
    w.object(
        a,
        "",
        &["nodeAffinity", "podAffinity", "podAntiAffinity"],
        |w, key, v, at| match key {
            "nodeAffinity" => w.node_affinity(v, at),
            _ => w.pod_affinity(v, at),
        },
    );
    w.0
}

/// A walk over a JSON document that collects problems by pointer.
struct Walk(Vec<(String, String)>);

const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";

impl Walk {
    fn add(&mut self, at: &str, message: impl Into<String>) {
        self.0.push((at.to_string(), message.into()));
    }

    /// Visits each known key of an object; unknown keys and non-objects are problems.
    fn object(
        &mut self,
        v: &Value,
        at: &str,
        known: &[&str],
        mut visit: impl FnMut(&mut Walk, &str, &Value, &str),
    ) {
        let Some(obj) = v.as_object() else {
            return self.add(at, "must be an object");
        };
        for (key, value) in obj {
            let here = format!("{at}/{}", escape(key));
            if known.contains(&key.as_str()) {
                visit(self, key, value, &here);
            } else {
                self.add(
                    &here,
                    format!("unknown field {key:?}; known here: {}", known.join(", ")),
                );
            }
        }
    }

    fn array(&mut self, v: &Value, at: &str, mut each: impl FnMut(&mut Walk, &Value, &str)) {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    each(self, item, &format!("{at}/{i}"));
                }
            }
            None => self.add(at, "must be a list"),
        }
    }

    fn require(&mut self, v: &Value, at: &str, keys: &[&str]) {
        if let Some(obj) = v.as_object() {
            for k in keys {
                if !obj.contains_key(*k) {
                    self.add(&format!("{at}/{k}"), "is required");
                }
            }
        }
    }

    fn string<'a>(&mut self, v: &'a Value, at: &str) -> Option<&'a str> {
        let s = v.as_str();
        if s.is_none() {
            self.add(at, "must be a string");
        }
        s
    }

    /// A string that must be a label key (`what` names it in the message).
    fn label_key(&mut self, v: &Value, at: &str, what: &str) {
        if let Some(k) = self.string(v, at) {
            if let Some(why) = label_key_problem(k) {
                self.add(at, format!("{what} {k:?} {why}"));
            }
        }
    }

    fn weight(&mut self, v: &Value, at: &str) {
        match v.as_i64() {
            Some(1..=100) => {}
            _ => self.add(
                at,
                format!("is {v}; a weight is a whole number from 1 to 100"),
            ),
        }
    }

    fn node_affinity(&mut self, v: &Value, at: &str) {
        self.object(v, at, &[REQUIRED, PREFERRED], |w, key, v, at| {
            if key == REQUIRED {
                w.object(v, at, &["nodeSelectorTerms"], |w, _, v, at| {
                    if v.as_array().is_some_and(|a| a.is_empty()) {
                        w.add(
                            at,
                            "must list at least one term (a node matches if any term matches)",
                        );
                    }
                    w.array(v, at, |w, term, at| w.node_selector_term(term, at));
                });
                w.require(v, at, &["nodeSelectorTerms"]);
            } else {
                w.array(v, at, |w, item, at| {
                    w.object(
                        item,
                        at,
                        &["weight", "preference"],
                        |w, key, v, at| match key {
                            "weight" => w.weight(v, at),
                            _ => w.node_selector_term(v, at),
                        },
                    );
                    w.require(item, at, &["weight", "preference"]);
                });
            }
        });
    }

    fn node_selector_term(&mut self, v: &Value, at: &str) {
        self.object(
            v,
            at,
            &["matchExpressions", "matchFields"],
            |w, _, v, at| {
                w.array(v, at, |w, req, at| w.requirement(req, at, true));
            },
        );
    }

    /// A `key`, `operator`, `values` requirement; node requirements also allow `Gt` and `Lt`.
    fn requirement(&mut self, v: &Value, at: &str, node: bool) {
        let mut operator = None;
        let mut values: Option<Vec<Value>> = None;
        self.object(
            v,
            at,
            &["key", "operator", "values"],
            |w, key, v, at| match key {
                "key" => {
                    w.label_key(v, at, "label key");
                }
                "operator" => operator = w.string(v, at).map(str::to_string),
                _ => match v.as_array() {
                    Some(list) => {
                        for (i, item) in list.iter().enumerate() {
                            w.string(item, &format!("{at}/{i}"));
                        }
                        values = Some(list.clone());
                    }
                    None => w.add(at, "must be a list of strings"),
                },
            },
        );
        self.require(v, at, &["key", "operator"]);
        let count = values.as_ref().map_or(0, Vec::len);
        let allowed: &[&str] = if node {
            &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
        } else {
            &["In", "NotIn", "Exists", "DoesNotExist"]
        };
        let here = format!("{at}/values");
        match operator.as_deref() {
            None => {}
            Some(op) if !allowed.contains(&op) => self.add(
                &format!("{at}/operator"),
                format!("is {op:?}; use one of {}", allowed.join(", ")),
            ),
            Some("In" | "NotIn") if count == 0 => {
                self.add(&here, "must list at least one value for In and NotIn")
            }
            Some("Exists" | "DoesNotExist") if count > 0 => self.add(
                &here,
                "must be empty for Exists and DoesNotExist; remove it",
            ),
            Some("Gt" | "Lt") => {
                let one_integer = values.as_deref().is_some_and(|v| {
                    v.len() == 1 && v[0].as_str().is_some_and(|s| s.parse::<i64>().is_ok())
                });
                if !one_integer {
                    self.add(
                        &here,
                        "must be exactly one whole number (as a string) for Gt and Lt",
                    );
                }
            }
            _ => {}
        }
    }

    fn pod_affinity(&mut self, v: &Value, at: &str) {
        self.object(v, at, &[REQUIRED, PREFERRED], |w, key, v, at| {
            if key == REQUIRED {
                w.array(v, at, |w, term, at| w.pod_affinity_term(term, at));
            } else {
                w.array(v, at, |w, item, at| {
                    w.object(
                        item,
                        at,
                        &["weight", "podAffinityTerm"],
                        |w, key, v, at| match key {
                            "weight" => w.weight(v, at),
                            _ => w.pod_affinity_term(v, at),
                        },
                    );
                    w.require(item, at, &["weight", "podAffinityTerm"]);
                });
            }
        });
    }

    fn pod_affinity_term(&mut self, v: &Value, at: &str) {
        const KNOWN: &[&str] = &[
            "labelSelector",
            "namespaceSelector",
            "namespaces",
            "topologyKey",
            "matchLabelKeys",
            "mismatchLabelKeys",
        ];
        self.object(v, at, KNOWN, |w, key, v, at| match key {
            "labelSelector" | "namespaceSelector" => w.label_selector(v, at),
            "topologyKey" => {
                w.label_key(v, at, "topology key");
            }
            _ => w.array(v, at, |w, item, at| {
                w.string(item, at);
            }),
        });
        self.require(v, at, &["topologyKey"]);
    }

    fn label_selector(&mut self, v: &Value, at: &str) {
        self.object(
            v,
            at,
            &["matchLabels", "matchExpressions"],
            |w, key, v, at| {
                if key == "matchExpressions" {
                    w.array(v, at, |w, req, at| w.requirement(req, at, false));
                    return;
                }
                let Some(labels) = v.as_object() else {
                    return w.add(at, "must be an object of label keys and values");
                };
                for (k, value) in labels {
                    let here = format!("{at}/{}", escape(k));
                    if let Some(why) = label_key_problem(k) {
                        w.add(&here, format!("label key {k:?} {why}"));
                    }
                    match value.as_str() {
                        Some("") => {}
                        Some(s) => {
                            if let Some(why) = label_value_problem(s) {
                                w.add(&here, format!("label value {s:?} {why}"));
                            }
                        }
                        None => w.add(&here, "must be a string"),
                    }
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> KubernetesSpec {
        serde_json::from_value(v).unwrap()
    }

    fn fields(p: &[(String, String)]) -> Vec<&str> {
        p.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn a_typical_gpu_node_has_no_problems() {
        let k = spec(json!({
            "nodeSelector": {"cloud.google.com/gke-nodepool": "gpu-pool"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 60}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}]}
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 50, "preference": {"matchExpressions": [{"key": "gpu-memory", "operator": "Gt", "values": ["16"]}]}}
                    ]
                },
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"concurrent.dev/node": "train"}}}}
                ]}
            },
            "volumes": [
                {"name": "dataset", "mountPath": "/data", "readOnly": true, "persistentVolumeClaim": {"claimName": "imagenet"}},
                {"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                {"name": "conf", "mountPath": "/etc/train", "subPath": "v2", "configMap": {"name": "train-config"}},
                {"name": "keys", "mountPath": "/var/keys", "secret": {"secretName": "s3-keys"}}
            ],
            "serviceAccountName": "trainer"
        }));
        assert_eq!(field_problems(&k), vec![]);
    }

    #[test]
    fn each_problem_names_its_field() {
        let k = spec(json!({
            "nodeSelector": {"bad key!": "v", "ok": "bad value!"},
            "tolerations": [
                {"operator": "Equals"},
                {"key": "k", "operator": "Exists", "value": "v", "effect": "NoRun"},
                {"key": "k", "tolerationSeconds": 5}
            ],
            "volumes": [
                {"name": "work", "mountPath": "data", "persistentVolumeClaim": {"claimName": "Data_Set"}},
                {"name": "two", "mountPath": "/work/x", "emptyDir": {"medium": "Disk", "sizeLimit": "lots"}, "configMap": {"name": "c"}},
                {"name": "two", "mountPath": "/data/../etc", "subPath": "/abs", "secret": {"secretName": "s"}}
            ],
            "serviceAccountName": "Trainer"
        }));
        assert_eq!(
            fields(&field_problems(&k)),
            vec![
                "nodeSelector/bad key!",
                "nodeSelector/ok",
                "tolerations/0/operator",
                "tolerations/0/key",
                "tolerations/1/value",
                "tolerations/1/effect",
                "tolerations/2/tolerationSeconds",
                "volumes/0/name",
                "volumes/0/mountPath",
                "volumes/0/persistentVolumeClaim/claimName",
                "volumes/1/mountPath",
                "volumes/1/name",
                "volumes/1/emptyDir/medium",
                "volumes/1/emptyDir/sizeLimit",
                "volumes/2/name",
                "volumes/2/mountPath",
                "volumes/2/subPath",
                "serviceAccountName",
            ]
        );
    }

    #[test]
    fn affinity_problems_point_into_the_document() {
        let a = json!({
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [
                        {"key": "zone", "operator": "Within", "values": ["a"]},
                        {"key": "zone", "operator": "In"},
                        {"key": "gpu", "operator": "Gt", "values": ["many"]},
                        {"operator": "Exists", "values": ["x"]}
                    ]}
                ]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "preference": {}}]
            },
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": 3}, "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}
            ]},
            "nodeAfinity": {}
        });
        let base = "/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions";
        let mut got = fields(&affinity_problems(&a))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        got.sort();
        let mut want: Vec<String> = vec![
            format!("{base}/0/operator"),
            format!("{base}/1/values"),
            format!("{base}/2/values"),
            format!("{base}/3/key"),
            format!("{base}/3/values"),
            "/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0/weight".into(),
            "/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/0/labelSelector/matchLabels/app".into(),
            "/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/0/labelSelector/matchExpressions/0/operator".into(),
            "/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/0/topologyKey".into(),
            "/nodeAfinity".into(),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(
            affinity_problems(&json!([])),
            vec![("".to_string(), "must be an object".to_string())]
        );
    }

    #[test]
    fn typed_settings_refuse_typos_and_wrong_types() {
        assert_eq!(from_json("  "), Ok(KubernetesSpec::default()));
        let k = from_json(r#"{"nodeSelector": {"pool": "a100"}}"#).unwrap();
        assert_eq!(k.node_selector["pool"], "a100");
        match from_json(r#"{"tolerations": [{"key": "k", "efect": "NoSchedule"}]}"#) {
            Err(SettingsError::UnknownField { field, message }) => {
                assert_eq!(field, "tolerations/0/efect");
                assert!(message.contains("\"effect\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(from_json("{"), Err(SettingsError::NotJson(_))));
        assert!(matches!(
            from_json(r#"{"volumes": {}}"#),
            Err(SettingsError::Shape(_))
        ));
    }

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        for good in [
            "app",
            "nvidia.com/gpu.product",
            "kubernetes.io/hostname",
            "a_b.c-d",
        ] {
            assert_eq!(label_key_problem(good), None, "{good}");
        }
        for bad in ["", "/x", "Example.com/x", "a/b/c", "x/", &"k".repeat(64)] {
            assert!(label_key_problem(bad).is_some(), "{bad}");
        }
    }
}
