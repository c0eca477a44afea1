//! Template validation: every problem at once, each with a JSON pointer and a plain message.
//!
//! Validation never blocks saving a draft; it blocks starting a run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::names::{dns_label_problem, identifier_problem, label_value_problem, MAX_NODE_ID_LEN};
use crate::params::{references, Reference};
use crate::partition::relative_path_problem;
use crate::refs;
use crate::template::{NodeKind, PartitionMode, Template, API_VERSION};

/// Most parallel instances one node may have.
pub const MAX_INSTANCES: u32 = 10_000;
/// Most retries one node may ask for.
pub const MAX_RETRIES: u32 = 20;
/// Most nodes, edges and parameters of one template: far beyond what people draw, small
/// enough that every check (and a run's planning) stays fast.
pub const MAX_NODES: usize = 10_000;
pub const MAX_EDGES: usize = 50_000;
pub const MAX_PARAMETERS: usize = 200;
/// Most GPUs, CPUs and bytes of memory one instance may ask for (more than any one machine
/// offers, so a typo such as `gpu: 1000000` is caught before it waits for ever).
pub const MAX_GPUS: u32 = 16;
pub const MAX_CPUS: f64 = 512.0;
pub const MAX_MEMORY_BYTES: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0;
/// Longest attempt timeout and retry backoff (30 days, one day).
pub const MAX_TIMEOUT_SECONDS: u64 = 30 * 86_400;
pub const MAX_BACKOFF_SECONDS: u32 = 86_400;

/// One thing wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON pointer to the field (`/nodes/1/instances`), or `/edges` for cycles.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What a problem is about: a node, an edge or a parameter (by index), or the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(usize),
    Edge(usize),
    Parameter(usize),
    Template,
}

impl Target {
    /// The JSON pointer of `field` below the target (`/nodes/2/uri`; `field` may be empty or
    /// have several segments, `resources/cpu`).
    pub fn pointer(self, field: &str) -> String {
        let base = match self {
            Target::Node(i) => format!("/nodes/{i}"),
            Target::Edge(i) => format!("/edges/{i}"),
            Target::Parameter(i) => format!("/parameters/{i}"),
            Target::Template => String::new(),
        };
        if field.is_empty() {
            base
        } else {
            format!("{base}/{field}")
        }
    }
}

impl Problem {
    /// A problem with `field` of `target`.
    pub fn at(target: Target, field: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: target.pointer(field),
            message: message.into(),
        }
    }

    /// What the problem is about, read from its pointer (so the designer marks the culprit).
    pub fn target(&self) -> Target {
        let mut parts = self.path.trim_start_matches('/').split('/');
        let (kind, index) = (parts.next(), parts.next().and_then(|i| i.parse().ok()));
        match (kind, index) {
            (Some("nodes"), Some(i)) => Target::Node(i),
            (Some("edges"), Some(i)) => Target::Edge(i),
            (Some("parameters"), Some(i)) => Target::Parameter(i),
            _ => Target::Template,
        }
    }
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
    let mut too_big = false;
    for (path, what, n, max) in [
        ("/nodes", "nodes", t.nodes.len(), MAX_NODES),
        ("/edges", "edges", t.edges.len(), MAX_EDGES),
        (
            "/parameters",
            "parameters",
            t.parameters.len(),
            MAX_PARAMETERS,
        ),
    ] {
        if n > max {
            too_big = true;
            p.add(
                path,
                format!("the template has {n} {what}; at most {max} are allowed (split it into several templates)"),
            );
        }
    }
    if too_big {
        return p.0;
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
                Target::Parameter(i).pointer("name"),
                format!("parameter name {:?} {why}", param.name),
            );
        }
        if !declared.insert(param.name.clone()) {
            p.add(
                Target::Parameter(i).pointer("name"),
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
        let at = |field: &str| Target::Node(i).pointer(field);
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
        if n.retries.max_backoff_seconds > MAX_BACKOFF_SECONDS {
            p.add(
                at("retries/maxBackoffSeconds"),
                format!(
                    "is {}; at most {MAX_BACKOFF_SECONDS} (a day) is allowed",
                    n.retries.max_backoff_seconds
                ),
            );
        }
        match n.timeout_seconds {
            Some(0) => p.add(
                at("timeoutSeconds"),
                "must be at least 1 second (leave it out for no limit)",
            ),
            Some(t) if t > MAX_TIMEOUT_SECONDS => p.add(
                at("timeoutSeconds"),
                format!("is {t}; at most {MAX_TIMEOUT_SECONDS} (30 days) is allowed; leave it out for no limit"),
            ),
            _ => {}
        }
        if let Some(cpu) = &n.resources.cpu {
            match cpu_cores(cpu) {
                None => p.add(
                    at("resources/cpu"),
                    format!("{cpu:?} is not a CPU quantity; write e.g. \"500m\", \"2\" or \"0.5\""),
                ),
                Some(c) if c > MAX_CPUS => p.add(
                    at("resources/cpu"),
                    format!("{cpu:?} is more than {MAX_CPUS} CPUs, which no machine offers"),
                ),
                _ => {}
            }
        }
        if let Some(mem) = &n.resources.memory {
            match memory_bytes(mem) {
                None => p.add(
                    at("resources/memory"),
                    format!("{mem:?} is not a memory quantity; write e.g. \"512Mi\" or \"4Gi\""),
                ),
                Some(b) if b > MAX_MEMORY_BYTES => p.add(
                    at("resources/memory"),
                    format!("{mem:?} is more than 16Ti, which no machine offers"),
                ),
                _ => {}
            }
        }
        if n.resources.gpu > MAX_GPUS {
            p.add(
                at("resources/gpu"),
                format!(
                    "is {}; one instance may have at most {MAX_GPUS} GPUs",
                    n.resources.gpu
                ),
            );
        }
        match (&n.resources.gpu_type, n.resources.gpu) {
            (Some(_), 0) => p.add(
                at("resources/gpuType"),
                "chooses a GPU model, but the node asks for no GPU; set resources.gpu too",
            ),
            (Some(t), _) => {
                if let Some(why) = label_value_problem(t) {
                    p.add(
                        at("resources/gpuType"),
                        format!("GPU type {t:?} {why} (it becomes a node label value)"),
                    );
                }
            }
            _ => {}
        }
        for (field, why) in crate::kubernetes::problems(&n.kubernetes) {
            p.add(at(&format!("kubernetes/{field}")), why);
        }
        let mut refs: Vec<(String, &str)> = Vec::new();
        match &n.kind {
            NodeKind::Project(spec) => {
                if spec.uri.trim().is_empty() {
                    p.add(
                        at("uri"),
                        "is required: a git URI or a local path of an MLflow Project",
                    );
                } else {
                    literal(p, at("uri"), &spec.uri, refs::project_uri_problem);
                }
                literal(
                    p,
                    at("entryPoint"),
                    &spec.entry_point,
                    refs::entry_point_problem,
                );
                if let Some(v) = &spec.version {
                    literal(p, at("version"), v, refs::git_ref_problem);
                }
                if let Some(sub) = &spec.sub_path {
                    literal(p, at("subPath"), sub, relative_path_problem);
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
                literal(p, at("modelUri"), &spec.model_uri, refs::model_uri_problem);
                refs.push((at("modelUri"), &spec.model_uri));
            }
            NodeKind::Input(spec) => {
                match (&spec.run_id, &spec.path) {
                    (Some(r), None) => {
                        literal(p, at("runId"), r, refs::run_id_problem);
                        refs.push((at("runId"), r));
                    }
                    (None, Some(path)) => {
                        literal(p, at("path"), path, refs::local_path_problem);
                        refs.push((at("path"), path));
                    }
                    _ => p.add(
                        at("runId"),
                        "an input node needs exactly one of runId (an MLflow run) or path",
                    ),
                }
                if let Some(a) = &spec.artifact_path {
                    literal(p, at("artifactPath"), a, relative_path_problem);
                }
            }
        }
        if let Some(image) = &n.image {
            literal(p, at("image"), image, refs::image_reference_problem);
            refs.push((at("image"), image));
        }
        for (name, value) in &n.env {
            if let Some(why) = refs::env_name_problem(name) {
                p.add(at(&format!("env/{name}")), why);
            }
            if n.secret_env.contains_key(name) {
                p.add(
                    at(&format!("env/{name}")),
                    format!("{name} is also in secretEnv; keep it in one of them"),
                );
            }
            refs.push((at(&format!("env/{name}")), value));
        }
        for (name, r) in &n.secret_env {
            let here = at(&format!("secretEnv/{name}"));
            if let Some(why) = refs::env_name_problem(name) {
                p.add(here.clone(), why);
            }
            if let Some(why) = refs::secret_ref_problem(&r.secret, &r.key) {
                p.add(here, why);
            }
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
        let at = |field: &str| Target::Edge(i).pointer(field);
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
        "position",
    ];
    const PROJECT: &[&str] = &["uri", "version", "subPath", "entryPoint", "parameters"];
    const INFERENCE: &[&str] = &["modelUri"];
    const INPUT: &[&str] = &["runId", "artifactPath", "path"];
    const RESOURCES: &[&str] = &["cpu", "memory", "gpu", "gpuType"];
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
                .min_by_key(|k| strsim::levenshtein(k, key));
            let hint = closest
                .filter(|k| strsim::levenshtein(k, key) <= 2)
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
        // The affinity document is checked field by field by `kubernetes::affinity_problems`.
        if let Some(k) = node.get("kubernetes") {
            use crate::kubernetes::{
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
        if let Some(v) = edge.get("partition") {
            check(&mut p, v, &format!("/edges/{i}/partition"), &[PARTITION]);
        }
    }
    p.0
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
/// search starts from nodes in template order. Iterative, so a 10,000-node chain cannot
/// overflow the stack (a Worker's is small).
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
    for root in 0..t.nodes.len() {
        if color[root] != 0 {
            continue;
        }
        // The path: (node, index of its next edge to follow).
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&mut (v, ref mut k)) = stack.last_mut() {
            if let Some(&w) = next[v].get(*k) {
                *k += 1;
                match color[w] {
                    0 => {
                        color[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => {
                        let start = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|&(x, _)| t.nodes[x].id.clone())
                            .collect();
                        cycle.push(t.nodes[w].id.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                color[v] = 2;
                stack.pop();
            }
        }
    }
    None
}

/// Checks a value that is used as written; one with a `{{params.…}}` reference is checked
/// when the run starts (its value is known then), not here.
fn literal(p: &mut Problems, path: String, value: &str, check: fn(&str) -> Option<String>) {
    if value.contains("{{") {
        return;
    }
    if let Some(why) = check(value) {
        p.add(path, why);
    }
}

/// A positive, finite number in plain decimal notation (no exponents, signs or `NaN`).
fn plain_number(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.chars().filter(|&c| c == '.').count() <= 1;
    let v: f64 = s.parse().ok().filter(|_| ok)?;
    (v > 0.0 && v.is_finite()).then_some(v)
}

/// CPUs of a Kubernetes CPU quantity (`500m`, `2`, `0.5`).
fn cpu_cores(s: &str) -> Option<f64> {
    match s.strip_suffix('m') {
        Some(milli) => plain_number(milli).map(|v| v / 1000.0),
        None => plain_number(s),
    }
}

/// Bytes of a Kubernetes memory quantity (`512Mi`, `1G`, `1000`).
pub(crate) fn memory_bytes(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, unit) = SUFFIXES
        .iter()
        .find_map(|(suf, unit)| s.strip_suffix(suf).map(|n| (n, *unit)))
        .unwrap_or((s, 1.0));
    plain_number(number).map(|v| v * unit)
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
    fn problems_point_at_their_node_edge_or_parameter() {
        let target = |path: &str| {
            Problem {
                path: path.into(),
                message: String::new(),
            }
            .target()
        };
        assert_eq!(target("/nodes/3/uri"), Target::Node(3));
        assert_eq!(target("/edges/0/partition/keyRegex"), Target::Edge(0));
        assert_eq!(target("/parameters/1/name"), Target::Parameter(1));
        assert_eq!(target("/edges"), Target::Template);
        assert_eq!(target("/name"), Target::Template);
        let p = Problem::at(Target::Edge(2), "partition/mode", "m");
        assert_eq!(
            (p.path.as_str(), p.target()),
            ("/edges/2/partition/mode", Target::Edge(2))
        );
        assert_eq!(Target::Node(1).pointer(""), "/nodes/1");
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
    fn the_known_field_lists_cover_every_field_of_the_model() {
        use crate::template::*;
        let node = |kind: NodeKind| Node {
            id: "n".into(),
            name: "N".into(),
            kind,
            instances: 2,
            cluster: Some("c".into()),
            image: Some("i".into()),
            resources: Resources {
                cpu: Some("1".into()),
                memory: Some("1Gi".into()),
                gpu: 1,
                gpu_type: Some("t4".into()),
            },
            retries: Retries {
                limit: 1,
                backoff_seconds: 1,
                max_backoff_seconds: 2,
            },
            timeout_seconds: Some(1),
            env: BTreeMap::from([("A".into(), "1".into())]),
            secret_env: BTreeMap::from([(
                "B".into(),
                SecretRef {
                    secret: "s".into(),
                    key: "k".into(),
                },
            )]),
            env_manager: Some(EnvManager::Uv),
            kubernetes: crate::kubernetes::KubernetesSpec {
                node_selector: BTreeMap::from([("a".into(), "b".into())]),
                tolerations: vec![crate::kubernetes::Toleration {
                    key: Some("k".into()),
                    operator: Some("Equal".into()),
                    value: Some("v".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(1),
                }],
                affinity: Some(serde_json::json!({})),
                volumes: vec![crate::kubernetes::VolumeSpec {
                    name: "v".into(),
                    mount_path: "/v".into(),
                    read_only: true,
                    sub_path: Some("s".into()),
                    persistent_volume_claim: Some(crate::kubernetes::ClaimSource {
                        claim_name: "c".into(),
                    }),
                    empty_dir: Some(crate::kubernetes::EmptyDirSource {
                        medium: Some("Memory".into()),
                        size_limit: Some("1Gi".into()),
                    }),
                    config_map: Some(crate::kubernetes::ConfigMapSource { name: "m".into() }),
                    secret: Some(crate::kubernetes::SecretSource {
                        secret_name: "s".into(),
                    }),
                }],
                service_account_name: Some("sa".into()),
            },
            position: Some(Position { x: 1.0, y: 2.0 }),
        };
        let t = Template {
            api_version: API_VERSION.into(),
            name: "t".into(),
            description: "d".into(),
            parameters: vec![Parameter {
                name: "p".into(),
                default: Some("1".into()),
                description: "d".into(),
            }],
            nodes: vec![
                node(NodeKind::Project(ProjectSpec {
                    uri: "u".into(),
                    version: Some("v".into()),
                    sub_path: Some("s".into()),
                    entry_point: "main".into(),
                    parameters: BTreeMap::from([("a".into(), "1".into())]),
                })),
                node(NodeKind::Inference(InferenceSpec {
                    model_uri: "models:/m/1".into(),
                })),
                node(NodeKind::Input(InputSpec {
                    run_id: Some("r".into()),
                    artifact_path: Some("a".into()),
                    path: Some("p".into()),
                })),
            ],
            edges: vec![Edge {
                from: "a".into(),
                to: "b".into(),
                input: "data".into(),
                partition: Partition {
                    mode: PartitionMode::ByKey,
                    key_regex: Some("(x)".into()),
                },
            }],
        };
        assert_eq!(unknown_fields(&serde_json::to_value(&t).unwrap()), vec![]);
    }

    #[test]
    fn unknown_fields_are_reported_with_a_suggestion() {
        let mut t = good();
        t["nodes"][1]["instnaces"] = 3.into();
        t["edges"][0]["partition"]["keyregex"] = "x".into();
        t["colour"] = "blue".into();
        t["nodes"][0]["kubernetes"] = serde_json::json!({
            "tolerations": [{"key": "k", "efect": "NoSchedule"}],
            "volumes": [{"name": "d", "mountPath": "/d", "emptyDir": {"sizelimit": "1Gi"}}],
            "nodeSelektor": {}
        });
        let problems = unknown_fields(&t);
        assert_eq!(
            paths(&problems),
            vec![
                "/colour",
                "/nodes/0/kubernetes/nodeSelektor",
                "/nodes/0/kubernetes/tolerations/0/efect",
                "/nodes/0/kubernetes/volumes/0/emptyDir/sizelimit",
                "/nodes/1/instnaces",
                "/edges/0/partition/keyregex"
            ]
        );
        assert!(
            problems[4].message.contains("did you mean \"instances\""),
            "{}",
            problems[4].message
        );
        assert_eq!(unknown_fields(&good()), vec![]);
    }

    #[test]
    fn kubernetes_settings_are_checked_with_the_node() {
        let mut t = good();
        t["nodes"][1]["resources"] = serde_json::json!({"gpuType": "nvidia-tesla-t4"});
        t["nodes"][1]["kubernetes"] = serde_json::json!({
            "tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
        });
        let problems = validate(&template(t));
        assert_eq!(
            paths(&problems),
            vec![
                "/nodes/1/resources/gpuType",
                "/nodes/1/kubernetes/tolerations/0/value",
                "/nodes/1/kubernetes/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
            ]
        );
        assert!(
            problems[0].message.contains("set resources.gpu"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        assert_eq!(cpu_cores("500m"), Some(0.5));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert_eq!(cpu_cores("0.5"), Some(0.5));
        for bad in ["m", "-1", "NaN", "inf", "1e3", ""] {
            assert_eq!(cpu_cores(bad), None, "{bad}");
        }
        assert_eq!(memory_bytes("512Mi"), Some(512.0 * 1048576.0));
        assert_eq!(memory_bytes("1G"), Some(1e9));
        assert_eq!(memory_bytes("1000"), Some(1000.0));
        assert_eq!(memory_bytes("4GB"), None);
        assert_eq!(memory_bytes("Gi"), None);
    }
}
