//! Template validation: every problem at once, each with a JSON pointer and a plain message.
//!
//! Validation never blocks saving a draft; it blocks starting a run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::names::{dns_label_problem, identifier_problem, label_value_problem, MAX_NODE_ID_LEN};
use crate::params::{references, Reference};
use crate::template::{NodeKind, PartitionMode, Template, API_VERSION};

/// Most parallel instances one node may have.
pub const MAX_INSTANCES: u32 = 10_000;
/// Most retries one node may ask for.
pub const MAX_RETRIES: u32 = 20;

/// One thing wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON pointer to the field (`/nodes/1/instances`), or `/edges` for cycles.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Checks everything a run relies on. An empty result means the template can run.
pub fn validate(t: &Template) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    if t.api_version != API_VERSION {
        p.add(
            "/apiVersion",
            format!(
                "is {:?}; this server understands {API_VERSION:?}",
                t.api_version
            ),
        );
    }
    if let Some(why) = label_value_problem(&t.name) {
        p.add("/name", format!("template name {:?} {why}", t.name));
    }
    let declared = check_parameters(t, &mut p);
    let ids = check_nodes(t, &declared, &mut p);
    check_edges(t, &ids, &mut p);
    if ids.len() == t.nodes.len() {
        if let Some(cycle) = find_cycle(t) {
            p.add(
                "/edges",
                format!(
                    "the edges form a cycle: {}; remove one of these edges",
                    cycle.join(" → ")
                ),
            );
        }
    }
    p.0
}

fn check_parameters(t: &Template, p: &mut Problems) -> BTreeSet<String> {
    let mut declared = BTreeSet::new();
    for (i, param) in t.parameters.iter().enumerate() {
        if let Some(why) = identifier_problem(&param.name) {
            p.add(
                format!("/parameters/{i}/name"),
                format!("parameter name {:?} {why}", param.name),
            );
        }
        if !declared.insert(param.name.clone()) {
            p.add(
                format!("/parameters/{i}/name"),
                format!("parameter {:?} is declared twice", param.name),
            );
        }
    }
    declared
}

/// Returns the set of node ids seen (duplicates counted once).
fn check_nodes(
    t: &Template,
    declared: &BTreeSet<String>,
    p: &mut Problems,
) -> HashMap<String, usize> {
    if t.nodes.is_empty() {
        p.add("/nodes", "the template has no nodes; add at least one step");
    }
    let mut ids = HashMap::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let at = |field: &str| format!("/nodes/{i}/{field}");
        if let Some(why) = dns_label_problem(&n.id, MAX_NODE_ID_LEN) {
            p.add(
                at("id"),
                format!(
                    "node id {:?} {why} (it is used in Kubernetes pod names)",
                    n.id
                ),
            );
        }
        if let Some(first) = ids.insert(n.id.clone(), i) {
            p.add(
                at("id"),
                format!(
                    "node id {:?} is already used by /nodes/{first}; ids must be unique",
                    n.id
                ),
            );
            ids.insert(n.id.clone(), first);
        }
        if n.instances == 0 || n.instances > MAX_INSTANCES {
            p.add(
                at("instances"),
                format!(
                    "is {}; a node runs between 1 and {MAX_INSTANCES} instances",
                    n.instances
                ),
            );
        }
        if let Some(cluster) = &n.cluster {
            if let Some(why) = label_value_problem(cluster) {
                p.add(at("cluster"), format!("cluster name {cluster:?} {why}"));
            }
        }
        if n.retries.limit > MAX_RETRIES {
            p.add(
                at("retries/limit"),
                format!(
                    "is {}; at most {MAX_RETRIES} retries are allowed",
                    n.retries.limit
                ),
            );
        }
        if n.retries.backoff_seconds > n.retries.max_backoff_seconds {
            p.add(
                at("retries/backoffSeconds"),
                "is larger than retries.maxBackoffSeconds",
            );
        }
        if n.timeout_seconds == Some(0) {
            p.add(
                at("timeoutSeconds"),
                "must be at least 1 second (leave it out for no limit)",
            );
        }
        if let Some(cpu) = &n.resources.cpu {
            if !is_cpu_quantity(cpu) {
                p.add(
                    at("resources/cpu"),
                    format!("{cpu:?} is not a CPU quantity; write e.g. \"500m\", \"2\" or \"0.5\""),
                );
            }
        }
        if let Some(mem) = &n.resources.memory {
            if !is_memory_quantity(mem) {
                p.add(
                    at("resources/memory"),
                    format!("{mem:?} is not a memory quantity; write e.g. \"512Mi\" or \"4Gi\""),
                );
            }
        }
        let mut refs: Vec<(String, &str)> = Vec::new();
        match &n.kind {
            NodeKind::Project(spec) => {
                if spec.uri.trim().is_empty() {
                    p.add(
                        at("uri"),
                        "is required: a git URI or a local path of an MLflow Project",
                    );
                }
                if spec.entry_point.trim().is_empty() {
                    p.add(
                        at("entryPoint"),
                        "must not be empty (MLflow's default is \"main\")",
                    );
                }
                refs.push((at("uri"), &spec.uri));
                if let Some(v) = &spec.version {
                    refs.push((at("version"), v));
                }
                if let Some(s) = &spec.sub_path {
                    refs.push((at("subPath"), s));
                }
                for (k, v) in &spec.parameters {
                    if let Some(why) = identifier_problem(k) {
                        p.add(
                            at(&format!("parameters/{k}")),
                            format!("parameter name {k:?} {why}"),
                        );
                    }
                    refs.push((at(&format!("parameters/{k}")), v));
                }
            }
            NodeKind::Inference(spec) => {
                if spec.model_uri.trim().is_empty() {
                    p.add(at("modelUri"), "is required: an MLflow model URI such as models:/name/1 or runs:/<id>/model");
                }
                refs.push((at("modelUri"), &spec.model_uri));
            }
            NodeKind::Input(spec) => match (&spec.run_id, &spec.path) {
                (Some(r), None) => refs.push((at("runId"), r)),
                (None, Some(path)) => refs.push((at("path"), path)),
                _ => p.add(
                    at("runId"),
                    "an input node needs exactly one of runId (an MLflow run) or path",
                ),
            },
        }
        if let Some(image) = &n.image {
            refs.push((at("image"), image));
        }
        for (path, text) in refs {
            for r in references(text) {
                match r {
                    Reference::Param(name) if !declared.contains(name) => p.add(
                        path.clone(),
                        format!("refers to {{{{params.{name}}}}}, which is not a template parameter; declare it under parameters"),
                    ),
                    Reference::Param(_) => {}
                    Reference::Malformed(inner) => p.add(
                        path.clone(),
                        format!("'{{{{{inner}' is not a parameter reference; write {{{{params.<name>}}}}"),
                    ),
                }
            }
        }
    }
    ids
}

fn check_edges(t: &Template, ids: &HashMap<String, usize>, p: &mut Problems) {
    let mut seen = BTreeMap::new();
    for (i, e) in t.edges.iter().enumerate() {
        let at = |field: &str| format!("/edges/{i}/{field}");
        for (field, id) in [("from", &e.from), ("to", &e.to)] {
            if !ids.contains_key(id) {
                p.add(
                    at(field),
                    format!("refers to node {id:?}, which does not exist"),
                );
            }
        }
        if e.from == e.to {
            p.add(at("to"), format!("node {:?} cannot feed itself", e.to));
        }
        if let Some(&to) = ids.get(&e.to) {
            if matches!(t.nodes[to].kind, NodeKind::Input(_)) {
                p.add(
                    at("to"),
                    format!("node {:?} is an input node and takes no inputs", e.to),
                );
            }
        }
        if let Some(why) = identifier_problem(&e.input) {
            p.add(at("input"), format!("input name {:?} {why}", e.input));
        }
        if let Some(first) = seen.insert((e.to.clone(), e.input.clone()), i) {
            p.add(
                at("input"),
                format!(
                    "input {:?} of node {:?} is already fed by /edges/{first}",
                    e.input, e.to
                ),
            );
        }
        match (&e.partition.mode, &e.partition.key_regex) {
            (PartitionMode::Unknown(m), _) => p.add(
                at("partition/mode"),
                format!(
                    "unknown partitioning mode {m:?}; use one of {}",
                    PartitionMode::KNOWN.join(", ")
                ),
            ),
            (PartitionMode::ByKey, None) => p.add(
                at("partition/keyRegex"),
                "by-key partitioning needs a keyRegex with one capture group",
            ),
            (PartitionMode::ByKey, Some(re)) => {
                if let Some(why) = key_regex_problem(re) {
                    p.add(at("partition/keyRegex"), why);
                }
            }
            (_, Some(_)) => p.add(
                at("partition/keyRegex"),
                "is only used with by-key partitioning; remove it",
            ),
            _ => {}
        }
    }
}

/// Fields a template document has that the model does not know (typos such as `instnaces`
/// would otherwise be ignored silently), each with the closest known name.
pub fn unknown_fields(doc: &serde_json::Value) -> Vec<Problem> {
    const TEMPLATE: &[&str] = &[
        "apiVersion",
        "name",
        "description",
        "parameters",
        "nodes",
        "edges",
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
        "position",
    ];
    const PROJECT: &[&str] = &["uri", "version", "subPath", "entryPoint", "parameters"];
    const INFERENCE: &[&str] = &["modelUri"];
    const INPUT: &[&str] = &["runId", "artifactPath", "path"];
    const RESOURCES: &[&str] = &["cpu", "memory", "gpu"];
    const RETRIES: &[&str] = &["limit", "backoffSeconds", "maxBackoffSeconds"];
    const POSITION: &[&str] = &["x", "y"];
    const EDGE: &[&str] = &["from", "to", "input", "partition"];
    const PARTITION: &[&str] = &["mode", "keyRegex"];

    let mut p = Problems(Vec::new());
    fn check(p: &mut Problems, v: &serde_json::Value, path: &str, known: &[&[&str]]) {
        let Some(obj) = v.as_object() else { return };
        for key in obj.keys() {
            if known.iter().any(|k| k.contains(&key.as_str())) {
                continue;
            }
            let closest = known
                .iter()
                .flat_map(|k| k.iter())
                .min_by_key(|k| edit_distance(k, key));
            let hint = closest
                .filter(|k| edit_distance(k, key) <= 2)
                .map(|k| format!("; did you mean {k:?}?"))
                .unwrap_or_default();
            p.add(
                format!("{path}/{key}"),
                format!("unknown field {key:?}{hint}"),
            );
        }
    }
    check(&mut p, doc, "", &[TEMPLATE]);
    let items = |key: &str| {
        doc.get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    for (i, param) in items("parameters").iter().enumerate() {
        check(&mut p, param, &format!("/parameters/{i}"), &[PARAMETER]);
    }
    for (i, node) in items("nodes").iter().enumerate() {
        let kind: &[&str] = match node.get("kind").and_then(|k| k.as_str()) {
            Some("project") => PROJECT,
            Some("inference") => INFERENCE,
            Some("input") => INPUT,
            _ => &[],
        };
        let at = format!("/nodes/{i}");
        check(&mut p, node, &at, &[NODE, kind]);
        for (field, known) in [
            ("resources", RESOURCES),
            ("retries", RETRIES),
            ("position", POSITION),
        ] {
            if let Some(v) = node.get(field) {
                check(&mut p, v, &format!("{at}/{field}"), &[known]);
            }
        }
    }
    for (i, edge) in items("edges").iter().enumerate() {
        check(&mut p, edge, &format!("/edges/{i}"), &[EDGE]);
        if let Some(v) = edge.get("partition") {
            check(&mut p, v, &format!("/edges/{i}/partition"), &[PARTITION]);
        }
    }
    p.0
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Why `re` cannot serve as a by-key regex, or `None`.
pub fn key_regex_problem(re: &str) -> Option<String> {
    match regex_lite::Regex::new(re) {
        Err(e) => Some(format!("is not a valid regular expression: {e}")),
        Ok(r) if r.captures_len() < 2 => {
            Some("has no capture group; wrap the part of the path that is the key in ( )".into())
        }
        Ok(_) => None,
    }
}

/// A cycle as node ids, first id repeated at the end, or `None` for a DAG. Deterministic: the
/// search starts from nodes in template order.
pub fn find_cycle(t: &Template) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); t.nodes.len()];
    for e in &t.edges {
        if let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) {
            next[a].push(b);
        }
    }
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut color = vec![0u8; t.nodes.len()];
    let mut path = Vec::new();
    fn visit(
        v: usize,
        next: &[Vec<usize>],
        color: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        color[v] = 1;
        path.push(v);
        for &w in &next[v] {
            if color[w] == 1 {
                let start = path.iter().position(|&x| x == w).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(w);
                return Some(cycle);
            }
            if color[w] == 0 {
                if let Some(c) = visit(w, next, color, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        color[v] = 2;
        None
    }
    (0..t.nodes.len()).find_map(|v| {
        (color[v] == 0)
            .then(|| visit(v, &next, &mut color, &mut path))
            .flatten()
            .map(|c| c.into_iter().map(|i| t.nodes[i].id.clone()).collect())
    })
}

fn is_cpu_quantity(s: &str) -> bool {
    let digits = s.strip_suffix('m').unwrap_or(s);
    !digits.is_empty()
        && digits
            .parse::<f64>()
            .is_ok_and(|v| v > 0.0 && v.is_finite())
}

fn is_memory_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suf| s.strip_suffix(suf))
        .unwrap_or(s);
    !number.is_empty()
        && number
            .parse::<f64>()
            .is_ok_and(|v| v > 0.0 && v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(json: serde_json::Value) -> Template {
        serde_json::from_value(json).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "concurrent/v1",
            "name": "pipeline",
            "parameters": [{"name": "rows", "default": "10"}],
            "nodes": [
                {"id": "prepare", "kind": "project", "uri": "examples/pipeline", "entryPoint": "prepare",
                 "parameters": {"rows": "{{params.rows}}"}},
                {"id": "train", "kind": "project", "uri": "examples/pipeline", "entryPoint": "train", "instances": 2}
            ],
            "edges": [{"from": "prepare", "to": "train", "input": "data", "partition": {"mode": "by-file"}}]
        })
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_good_template_has_no_problems() {
        assert_eq!(validate(&template(good())), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut t = good();
        t["nodes"][1]["id"] = "prepare".into();
        t["nodes"][1]["instances"] = 0.into();
        t["edges"][0]["partition"]["mode"] = "by-magic".into();
        t["nodes"][0]["parameters"]["rows"] = "{{params.nope}}".into();
        let problems = validate(&template(t));
        assert_eq!(
            paths(&problems),
            vec![
                "/nodes/0/parameters/rows",
                "/nodes/1/id",
                "/nodes/1/instances",
                "/edges/0/to",
                "/edges/0/partition/mode"
            ],
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("params.nope"));
        assert!(problems[4].message.contains("by-magic"));
    }

    #[test]
    fn dangling_edges_name_the_missing_node() {
        let mut t = good();
        t["edges"][0]["to"] = "ghost".into();
        let problems = validate(&template(t));
        assert_eq!(paths(&problems), vec!["/edges/0/to"]);
        assert!(problems[0].message.contains("\"ghost\""));
    }

    #[test]
    fn cycles_are_named_node_by_node() {
        let mut t = good();
        t["nodes"].as_array_mut().unwrap().push(
            serde_json::json!({"id": "eval", "kind": "inference", "modelUri": "models:/m/1"}),
        );
        t["edges"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"from": "train", "to": "eval"}));
        t["edges"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"from": "eval", "to": "prepare", "input": "feedback"}));
        let problems = validate(&template(t));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].path, "/edges");
        assert!(
            problems[0]
                .message
                .contains("prepare → train → eval → prepare"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn by_key_needs_a_regex_with_a_capture_group() {
        let mut t = good();
        t["edges"][0]["partition"] = serde_json::json!({"mode": "by-key", "keyRegex": "part-\\d+"});
        let problems = validate(&template(t.clone()));
        assert!(problems[0].message.contains("no capture group"));
        t["edges"][0]["partition"]["keyRegex"] = "(unclosed".into();
        assert!(validate(&template(t.clone()))[0]
            .message
            .contains("not a valid regular expression"));
        t["edges"][0]["partition"]["keyRegex"] = "^(\\w+)/".into();
        assert_eq!(validate(&template(t)), vec![]);
    }

    #[test]
    fn names_must_fit_kubernetes() {
        let mut t = good();
        t["name"] = "My Pipeline".into();
        t["nodes"][0]["id"] = "Prepare_Data".into();
        t["edges"][0]["from"] = "Prepare_Data".into();
        t["nodes"][0]["cluster"] = "gpu pool".into();
        let problems = validate(&template(t));
        assert_eq!(
            paths(&problems),
            vec!["/name", "/nodes/0/id", "/nodes/0/cluster"]
        );
    }

    #[test]
    fn resources_and_inputs_are_checked() {
        let mut t = good();
        t["nodes"][0]["resources"] = serde_json::json!({"cpu": "lots", "memory": "4GB"});
        t["nodes"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"id": "raw", "kind": "input"}));
        t["edges"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"from": "train", "to": "raw"}));
        let problems = validate(&template(t));
        assert_eq!(
            paths(&problems),
            vec![
                "/nodes/0/resources/cpu",
                "/nodes/0/resources/memory",
                "/nodes/2/runId",
                "/edges/1/to"
            ]
        );
    }

    #[test]
    fn unknown_fields_are_reported_with_a_suggestion() {
        let mut t = good();
        t["nodes"][1]["instnaces"] = 3.into();
        t["edges"][0]["partition"]["keyregex"] = "x".into();
        t["colour"] = "blue".into();
        let problems = unknown_fields(&t);
        assert_eq!(
            paths(&problems),
            vec![
                "/colour",
                "/nodes/1/instnaces",
                "/edges/0/partition/keyregex"
            ]
        );
        assert!(
            problems[1].message.contains("did you mean \"instances\""),
            "{}",
            problems[1].message
        );
        assert_eq!(unknown_fields(&good()), vec![]);
    }

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        assert!(is_cpu_quantity("500m") && is_cpu_quantity("2") && is_cpu_quantity("0.5"));
        assert!(!is_cpu_quantity("m") && !is_cpu_quantity("-1") && !is_cpu_quantity("NaN"));
        assert!(
            is_memory_quantity("512Mi") && is_memory_quantity("1G") && is_memory_quantity("1000")
        );
        assert!(!is_memory_quantity("4GB") && !is_memory_quantity("Gi"));
    }
}
