//! A template's nodes: ids, how they run (instances, cluster, retries, timeout), what they ask
//! for (resources, Kubernetes settings), what they run (project, inference, input), their
//! environment, and the parameters their values refer to.

use std::collections::{BTreeSet, HashMap};

use super::quantity::{cpu_cores, memory_bytes};
use super::{literal, Problems, Target};
use super::{
    MAX_BACKOFF_SECONDS, MAX_CPUS, MAX_GPUS, MAX_INSTANCES, MAX_MEMORY_BYTES, MAX_RETRIES,
    MAX_TIMEOUT_SECONDS,
};
use crate::names::{dns_label_problem, identifier_problem, label_value_problem, MAX_NODE_ID_LEN};
use crate::params::{references, Reference};
use crate::partition::relative_path_problem;
use crate::refs;
use crate::template::{Node, NodeKind, Template};

/// A value that may refer to template parameters, and where it is.
type Referring<'a> = (&'a str, String, &'a str);

/// Checks every node; the node ids seen (duplicates counted once), by index.
pub(super) fn check(
    t: &Template,
    declared: &BTreeSet<String>,
    p: &mut Problems,
) -> HashMap<String, usize> {
    if t.nodes.is_empty() {
        p.add("nodes", "the template has no nodes; add at least one step");
    }
    let mut ids = HashMap::new();
    for (i, n) in t.nodes.iter().enumerate() {
        let at = Target::Node(i);
        if let Some(why) = dns_label_problem(&n.id, MAX_NODE_ID_LEN) {
            p.at(
                at,
                "id",
                format!(
                    "node id {:?} {why} (it is used in Kubernetes pod names)",
                    n.id
                ),
            );
        }
        if let Some(first) = ids.insert(n.id.clone(), i) {
            p.at(
                at,
                "id",
                format!(
                    "node id {:?} is already used by /nodes/{first}; ids must be unique",
                    n.id
                ),
            );
            ids.insert(n.id.clone(), first);
        }
        how_it_runs(at, n, p);
        sweep_and_cache(at, n, p);
        resources(at, n, p);
        for problem in super::kubernetes::problems(&n.kubernetes, at) {
            p.0.push(problem);
        }
        let mut referring = what_it_runs(at, n, p);
        referring.extend(environment(at, n, p));
        // What this node may read of upstream choices: nodes a `select` edge takes it from.
        let chosen: BTreeSet<&str> = t
            .incoming(&n.id)
            .filter(|e| e.select.is_some())
            .map(|e| e.from.as_str())
            .collect();
        parameter_references(at, referring, declared, &chosen, p);
    }
    ids
}

/// Instances, cluster, retries and timeout.
fn how_it_runs(at: Target, n: &Node, p: &mut Problems) {
    if n.instances == 0 || n.instances > MAX_INSTANCES {
        p.at(
            at,
            "instances",
            format!(
                "is {}; a node runs between 1 and {MAX_INSTANCES} instances",
                n.instances
            ),
        );
    }
    if let Some(cluster) = &n.cluster {
        if let Some(why) = label_value_problem(cluster) {
            p.at(at, "cluster", format!("cluster name {cluster:?} {why}"));
        }
    }
    let r = &n.retries;
    if r.limit > MAX_RETRIES {
        p.at(
            at,
            "retries/limit",
            format!("is {}; at most {MAX_RETRIES} retries are allowed", r.limit),
        );
    }
    if r.backoff_seconds > r.max_backoff_seconds {
        p.at(
            at,
            "retries/backoffSeconds",
            "is larger than retries.maxBackoffSeconds",
        );
    }
    if r.max_backoff_seconds > MAX_BACKOFF_SECONDS {
        p.at(
            at,
            "retries/maxBackoffSeconds",
            format!(
                "is {}; at most {MAX_BACKOFF_SECONDS} (a day) is allowed",
                r.max_backoff_seconds
            ),
        );
    }
    match n.timeout_seconds {
        Some(0) => p.at(
            at,
            "timeoutSeconds",
            "must be at least 1 second (leave it out for no limit)",
        ),
        Some(t) if t > MAX_TIMEOUT_SECONDS => p.at(
            at,
            "timeoutSeconds",
            format!("is {t}; at most {MAX_TIMEOUT_SECONDS} (30 days) is allowed; leave it out for no limit"),
        ),
        _ => {}
    }
}

/// A sweep's points and how they meet the node's partitions; the node's caching.
fn sweep_and_cache(at: Target, n: &Node, p: &mut Problems) {
    if let Some(s) = n.sweep() {
        for (field, why) in s.problems() {
            let field = if field.is_empty() {
                "sweep".to_string()
            } else {
                format!("sweep/{field}")
            };
            p.at(at, &field, why);
        }
        if n.instances > 1 && !s.cross_partitions {
            p.at(
                at,
                "instances",
                format!(
                    "is {}, and the node sweeps: a sweep runs each point on all of the node's inputs; set sweep.crossPartitions to run each point on each of {} partitions (points × instances), or set instances to 1",
                    n.instances, n.instances
                ),
            );
        }
        let total = n.partitions() as usize * s.count();
        if s.count() <= crate::sweep::MAX_POINTS && total > MAX_INSTANCES as usize {
            p.at(
                at,
                "sweep",
                format!("{} points × {} partitions make {total} instances; at most {MAX_INSTANCES} are allowed", s.count(), n.partitions()),
            );
        }
    }
    if let Some(c) = &n.cache {
        if c.max_age_seconds == Some(0) {
            p.at(
                at,
                "cache/maxAgeSeconds",
                "must be at least 1 second (leave it out for no limit)",
            );
        }
    }
}

/// CPUs, memory and GPUs of one instance.
fn resources(at: Target, n: &Node, p: &mut Problems) {
    let r = &n.resources;
    if let Some(cpu) = &r.cpu {
        match cpu_cores(cpu) {
            None => p.at(
                at,
                "resources/cpu",
                format!("{cpu:?} is not a CPU quantity; write e.g. \"500m\", \"2\" or \"0.5\""),
            ),
            Some(c) if c > MAX_CPUS => p.at(
                at,
                "resources/cpu",
                format!("{cpu:?} is more than {MAX_CPUS} CPUs, which no machine offers"),
            ),
            _ => {}
        }
    }
    if let Some(mem) = &r.memory {
        match memory_bytes(mem) {
            None => p.at(
                at,
                "resources/memory",
                format!("{mem:?} is not a memory quantity; write e.g. \"512Mi\" or \"4Gi\""),
            ),
            Some(b) if b > MAX_MEMORY_BYTES => p.at(
                at,
                "resources/memory",
                format!("{mem:?} is more than 16Ti, which no machine offers"),
            ),
            _ => {}
        }
    }
    if r.gpu > MAX_GPUS {
        p.at(
            at,
            "resources/gpu",
            format!(
                "is {}; one instance may have at most {MAX_GPUS} GPUs",
                r.gpu
            ),
        );
    }
    match (&r.gpu_type, r.gpu) {
        (Some(_), 0) => p.at(
            at,
            "resources/gpuType",
            "chooses a GPU model, but the node asks for no GPU; set resources.gpu too",
        ),
        (Some(t), _) => {
            if let Some(why) = label_value_problem(t) {
                p.at(
                    at,
                    "resources/gpuType",
                    format!("GPU type {t:?} {why} (it becomes a node label value)"),
                );
            }
        }
        _ => {}
    }
}

/// The node's kind (a project, an inference, an input) and its image; the values that may
/// refer to parameters.
fn what_it_runs<'a>(at: Target, n: &'a Node, p: &mut Problems) -> Vec<Referring<'a>> {
    let mut referring: Vec<Referring<'a>> = Vec::new();
    match &n.kind {
        NodeKind::Project(spec) => {
            if spec.uri.trim().is_empty() {
                p.at(
                    at,
                    "uri",
                    "is required: a git URI or a local path of an MLflow Project",
                );
            } else {
                literal(p, (at, "uri"), &spec.uri, refs::project_uri_problem);
            }
            literal(
                p,
                (at, "entryPoint"),
                &spec.entry_point,
                refs::entry_point_problem,
            );
            referring.push(("uri", String::new(), &spec.uri));
            if let Some(v) = &spec.version {
                literal(p, (at, "version"), v, refs::git_ref_problem);
                referring.push(("version", String::new(), v));
            }
            if let Some(sub) = &spec.sub_path {
                literal(p, (at, "subPath"), sub, relative_path_problem);
                referring.push(("subPath", String::new(), sub));
            }
            for (k, v) in &spec.parameters {
                if let Some(why) = identifier_problem(k) {
                    p.at(
                        at,
                        &format!("parameters/{k}"),
                        format!("parameter name {k:?} {why}"),
                    );
                }
                referring.push(("parameters", k.clone(), v));
            }
        }
        NodeKind::Inference(spec) => {
            literal(
                p,
                (at, "modelUri"),
                &spec.model_uri,
                refs::model_uri_problem,
            );
            referring.push(("modelUri", String::new(), &spec.model_uri));
        }
        NodeKind::Input(spec) => {
            match (&spec.run_id, &spec.path) {
                (Some(r), None) => {
                    literal(p, (at, "runId"), r, refs::run_id_problem);
                    referring.push(("runId", String::new(), r));
                }
                (None, Some(path)) => {
                    literal(p, (at, "path"), path, refs::local_path_problem);
                    referring.push(("path", String::new(), path));
                }
                _ => p.at(
                    at,
                    "runId",
                    "an input node needs exactly one of runId (an MLflow run) or path",
                ),
            }
            if let Some(a) = &spec.artifact_path {
                literal(p, (at, "artifactPath"), a, relative_path_problem);
            }
        }
        NodeKind::Approval(spec) => {
            referring.push(("message", String::new(), &spec.message));
        }
        NodeKind::Register(spec) => {
            referring.push(("model", String::new(), &spec.model));
            if let Some(a) = &spec.alias {
                referring.push(("alias", String::new(), a));
            }
        }
    }
    if let Some(image) = &n.image {
        literal(p, (at, "image"), image, refs::image_reference_problem);
        referring.push(("image", String::new(), image));
    }
    referring
}

/// `env` and `secretEnv`; the values that may refer to parameters.
fn environment<'a>(at: Target, n: &'a Node, p: &mut Problems) -> Vec<Referring<'a>> {
    let mut referring: Vec<Referring<'a>> = Vec::new();
    for (name, value) in &n.env {
        let field = format!("env/{name}");
        if let Some(why) = refs::env_name_problem(name) {
            p.at(at, &field, why);
        }
        if n.secret_env.contains_key(name) {
            p.at(
                at,
                &field,
                format!("{name} is also in secretEnv; keep it in one of them"),
            );
        }
        referring.push(("env", name.clone(), value));
    }
    for (name, r) in &n.secret_env {
        let field = format!("secretEnv/{name}");
        if let Some(why) = refs::env_name_problem(name) {
            p.at(at, &field, why);
        }
        if let Some(why) = refs::secret_ref_problem(&r.secret, &r.key) {
            p.at(at, &field, why);
        }
    }
    referring
}

/// Every `{{params.…}}` must name a declared parameter, every `{{upstream.<node>.best.…}}` a
/// node a `select` edge takes this one from (`chosen`), and each be written as one.
fn parameter_references(
    at: Target,
    referring: Vec<Referring<'_>>,
    declared: &BTreeSet<String>,
    chosen: &BTreeSet<&str>,
    p: &mut Problems,
) {
    for (field, key, text) in referring {
        let field = if key.is_empty() {
            field.to_string()
        } else {
            format!("{field}/{key}")
        };
        for r in references(text) {
            match r {
                Reference::Param(name) if !declared.contains(name) => p.at(
                    at,
                    &field,
                    format!("refers to {{{{params.{name}}}}}, which is not a template parameter; declare it under parameters"),
                ),
                Reference::Param(_) => {}
                Reference::Upstream { node, .. } if !chosen.contains(node) => p.at(
                    at,
                    &field,
                    match crate::names::closest(node, chosen.iter().copied()) {
                        Some(near) => format!("refers to the best of node {node:?}, which no select edge feeds into this node; did you mean {near:?}?"),
                        None if chosen.is_empty() => format!("refers to the best of node {node:?}, but no edge into this node selects the best upstream attempts; add select (metric, min or max) to the edge from {node:?}"),
                        None => format!("refers to the best of node {node:?}, which no select edge feeds into this node (those that do: {})", chosen.iter().copied().collect::<Vec<_>>().join(", ")),
                    },
                ),
                Reference::Upstream { .. } => {}
                Reference::Malformed(inner) => p.at(
                    at,
                    &field,
                    format!("'{{{{{inner}' is not a parameter reference; write {{{{params.<name>}}}}"),
                ),
            }
        }
    }
}
