//! The fields of a template document that the model does not know.

use super::Problem;

/// Fields a template document has that the model does not know (typos such as `instnaces`
/// would otherwise be ignored silently), each with the closest known name.
///
/// The known names are listed here because the model flattens a node's kind into the node, and
/// serde (and `serde_ignored`) cannot see unknown fields through `#[serde(flatten)]`; a test
/// serializes a template with every field set and checks that these lists know all of them.
pub fn unknown_fields(doc: &serde_json::Value) -> Vec<Problem> {
    const TEMPLATE: &[&str] = &[
        "apiVersion",
        "name",
        "description",
        "parameters",
        "nodes",
        "edges",
        "cache",
        "notifications",
    ];
    const PARAMETER: &[&str] = &["name", "default", "description"];
    const NODE: &[&str] = &[
        "id",
        "name",
        "kind",
        "instances",
        "cluster",
        "image",
        "resources",
        "retries",
        "timeoutSeconds",
        "env",
        "secretEnv",
        "envManager",
        "kubernetes",
        "cache",
        "when",
        "triggerRule",
        "position",
    ];
    const PROJECT: &[&str] = &[
        "uri",
        "version",
        "subPath",
        "entryPoint",
        "parameters",
        "sweep",
    ];
    const SWEEP: &[&str] = &["grid", "random", "crossPartitions"];
    const RANDOM: &[&str] = &["samples", "seed", "parameters"];
    const DISTRIBUTION: &[&str] = &["uniform", "logUniform", "intUniform", "choice"];
    const CACHE: &[&str] = &["enabled", "maxAgeSeconds"];
    const SELECT: &[&str] = &["metric", "mode", "top"];
    const INFERENCE: &[&str] = &["modelUri"];
    const INPUT: &[&str] = &["runId", "artifactPath", "path"];
    const APPROVAL: &[&str] = &["message", "compare", "metrics", "onTimeout"];
    const ALIAS: &[&str] = &["model", "alias"];
    const REGISTER: &[&str] = &["model", "alias", "instance", "artifactPath"];
    const RESOURCES: &[&str] = &["cpu", "memory", "gpu", "gpuType"];
    const RETRIES: &[&str] = &["limit", "backoffSeconds", "maxBackoffSeconds"];
    const POSITION: &[&str] = &["x", "y"];
    const EDGE: &[&str] = &["from", "to", "input", "partition", "select"];
    const PARTITION: &[&str] = &["mode", "keyRegex"];
    const NOTIFICATION: &[&str] = &["url", "urlSecret", "signingSecret", "on"];

    let mut p = Vec::new();
    fn check(p: &mut Vec<Problem>, v: &serde_json::Value, path: &str, known: &[&[&str]]) {
        let Some(obj) = v.as_object() else { return };
        for key in obj.keys() {
            if known.iter().any(|k| k.contains(&key.as_str())) {
                continue;
            }
            let hint = crate::names::closest(key, known.iter().flat_map(|k| k.iter().copied()))
                .map(|k| format!("; did you mean {k:?}?"))
                .unwrap_or_default();
            p.push(Problem::pointing(
                format!("{path}/{key}"),
                format!("unknown field {key:?}{hint}"),
            ));
        }
    }
    check(&mut p, doc, "", &[TEMPLATE]);
    if let Some(v) = doc.get("cache") {
        check(&mut p, v, "/cache", &[CACHE]);
    }
    let items = |key: &str| {
        doc.get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    for (i, n) in items("notifications").iter().enumerate() {
        check(&mut p, n, &format!("/notifications/{i}"), &[NOTIFICATION]);
    }
    for (i, param) in items("parameters").iter().enumerate() {
        check(&mut p, param, &format!("/parameters/{i}"), &[PARAMETER]);
    }
    for (i, node) in items("nodes").iter().enumerate() {
        let kind: &[&str] = match node.get("kind").and_then(|k| k.as_str()) {
            Some("project") => PROJECT,
            Some("inference") => INFERENCE,
            Some("input") => INPUT,
            Some("approval") => APPROVAL,
            Some("register") => REGISTER,
            _ => &[],
        };
        let at = format!("/nodes/{i}");
        check(&mut p, node, &at, &[NODE, kind]);
        for (field, known) in [
            ("resources", RESOURCES),
            ("retries", RETRIES),
            ("position", POSITION),
            ("cache", CACHE),
            ("sweep", SWEEP),
            ("compare", ALIAS),
        ] {
            if let Some(v) = node.get(field) {
                check(&mut p, v, &format!("{at}/{field}"), &[known]);
            }
        }
        if let Some(random) = node.get("sweep").and_then(|s| s.get("random")) {
            let here = format!("{at}/sweep/random");
            check(&mut p, random, &here, &[RANDOM]);
            if let Some(params) = random.get("parameters").and_then(|v| v.as_object()) {
                for (name, d) in params {
                    check(
                        &mut p,
                        d,
                        &format!("{here}/parameters/{name}"),
                        &[DISTRIBUTION],
                    );
                }
            }
        }
        // The affinity document is checked field by field by `kubernetes::affinity_problems`.
        if let Some(k) = node.get("kubernetes") {
            use super::kubernetes::{
                SPEC_FIELDS, TOLERATION_FIELDS, VOLUME_FIELDS, VOLUME_SOURCE_FIELDS,
            };
            let at = format!("{at}/kubernetes");
            check(&mut p, k, &at, &[SPEC_FIELDS]);
            let list = |key: &str| {
                k.get(key)
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default()
            };
            for (j, t) in list("tolerations").iter().enumerate() {
                check(
                    &mut p,
                    t,
                    &format!("{at}/tolerations/{j}"),
                    &[TOLERATION_FIELDS],
                );
            }
            for (j, v) in list("volumes").iter().enumerate() {
                let here = format!("{at}/volumes/{j}");
                check(&mut p, v, &here, &[VOLUME_FIELDS]);
                for (source, known) in VOLUME_SOURCE_FIELDS {
                    if let Some(s) = v.get(source) {
                        check(&mut p, s, &format!("{here}/{source}"), &[known]);
                    }
                }
            }
        }
    }
    for (i, edge) in items("edges").iter().enumerate() {
        check(&mut p, edge, &format!("/edges/{i}"), &[EDGE]);
        if let Some(v) = edge.get("select") {
            check(&mut p, v, &format!("/edges/{i}/select"), &[SELECT]);
        }
        if let Some(v) = edge.get("partition") {
            check(&mut p, v, &format!("/edges/{i}/partition"), &[PARTITION]);
        }
    }
    p
}
