//! A register node: which upstream attempt's model becomes a new model version, and the tags
//! that lead from the version back to the DAG run, the attempt and the inputs it read.

use crate::template::{NodeKind, RegisterSpec, Template};

use super::effect::MlflowEffect;
use super::resolve::resolve;
use super::state::{InstanceState, RunState, Selection};

/// The edge a register node takes its model from: the one from a node that is not an
/// approval (edges from approvals only make it wait for them).
pub fn model_edge<'a>(t: &'a Template, node: &'a str) -> Option<&'a crate::template::Edge> {
    t.incoming(node).find(|e| {
        t.node(&e.from)
            .is_some_and(|n| !matches!(n.kind, NodeKind::Approval(_)))
    })
}

/// The model a register node registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    pub node: String,
    pub instance: u32,
    /// The attempt's MLflow run.
    pub run_id: String,
    /// `models:/m-…` (a logged model) or `runs:/<run>/<path>`.
    pub uri: String,
    pub model_id: Option<String>,
}

/// The upstream attempt node `i` registers from: the one its `select` edge chose, or the
/// spec's instance (0 when it names none).
///
/// # Errors
/// That instance did not succeed, or has no MLflow run: there is nothing to register.
pub(super) fn source(
    run: &RunState,
    i: usize,
    spec: &RegisterSpec,
    selections: &[Selection],
) -> Result<Source, String> {
    let id = &run.template.nodes[i].id;
    let edge = model_edge(&run.template, id).ok_or_else(|| {
        "a register node needs the node whose model it registers upstream".to_string()
    })?;
    let from = &edge.from;
    let instance = match selections.iter().find(|s| &s.from == from) {
        Some(s) => *s
            .chosen
            .first()
            .ok_or_else(|| format!("the select edge chose nothing from {from:?}"))?,
        None => spec.instance.unwrap_or(0),
    };
    let inst = run
        .node(from)
        .and_then(|n| n.instances.get(instance as usize))
        .filter(|x| x.state == InstanceState::Succeeded)
        .ok_or_else(|| {
            format!(
                "instance {instance} of {from:?} did not succeed, so it has no model to register"
            )
        })?;
    let a = inst
        .current()
        .ok_or_else(|| format!("{from}[{instance}] has no attempt"))?;
    let run_id = a
        .mlflow_run_id
        .clone()
        .ok_or_else(|| format!("{from}[{instance}] has no MLflow run"))?;
    let logged = a
        .facts
        .model_uri
        .as_deref()
        .and_then(|m| m.strip_prefix("models:/"))
        .filter(|m| m.starts_with("m-"));
    let (uri, model_id) = match (&spec.artifact_path, logged) {
        (Some(path), _) => (format!("runs:/{run_id}/{}", path.trim_matches('/')), None),
        (None, Some(m)) => (format!("models:/{m}"), Some(m.to_string())),
        (None, None) => (format!("runs:/{run_id}/model"), None),
    };
    Ok(Source {
        node: from.clone(),
        instance,
        run_id,
        uri,
        model_id,
    })
}

/// Whether node `i` is a register node waiting for its model version.
pub(super) fn pending(run: &RunState, i: usize) -> bool {
    matches!(run.template.nodes[i].kind, NodeKind::Register(_))
        && run.nodes[i]
            .instances
            .first()
            .is_some_and(|x| x.state == InstanceState::Queued)
}

/// Longest value of the inputs tag (MLflow keeps 5,000 characters of a tag).
const MAX_INPUTS_TAG: usize = 4_000;

/// The call that registers node `i`'s model, while its instance waits for it.
pub(super) fn effect(run: &RunState, i: usize) -> Option<MlflowEffect> {
    let node = &run.nodes[i];
    if !pending(run, i) {
        return None;
    }
    let NodeKind::Register(spec) = resolve(
        &run.template.nodes[i].kind,
        &run.parameters,
        &Default::default(),
    ) else {
        return None;
    };
    let src = source(run, i, &spec, &node.selections).ok()?;
    let attempt_inputs = run
        .node(&src.node)
        .and_then(|n| {
            let inst = n.instances.get(src.instance as usize)?;
            Some(
                n.shared_inputs
                    .iter()
                    .chain(&inst.inputs)
                    .flat_map(|(name, files)| {
                        files.iter().map(move |f| {
                            format!("{name}/{} <- {}/{}", f.path, f.run_id, f.artifact_path)
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap_or_default();
    let mut inputs = String::new();
    for (k, line) in attempt_inputs.iter().enumerate() {
        if inputs.len() + line.len() > MAX_INPUTS_TAG {
            inputs.push_str(&format!("… and {} more", attempt_inputs.len() - k));
            break;
        }
        inputs.push_str(line);
        inputs.push('\n');
    }
    let mut tags = vec![
        ("concurrent.run_id".to_string(), run.id.clone()),
        (
            "concurrent.template".to_string(),
            format!("{}@{}", run.template.name, run.template_version),
        ),
        ("concurrent.node".to_string(), src.node.clone()),
        ("concurrent.instance".to_string(), src.instance.to_string()),
        (
            "concurrent.key".to_string(),
            registration_key(run, &node.id),
        ),
    ];
    if !inputs.is_empty() {
        tags.push(("concurrent.inputs".to_string(), inputs));
    }
    Some(MlflowEffect::RegisterModel {
        node: node.id.clone(),
        key: registration_key(run, &node.id),
        name: spec.model,
        source: src.uri,
        run_id: src.run_id,
        model_id: src.model_id,
        alias: spec.alias,
        tags,
    })
}

/// What the version is tagged with so a registration whose answer was lost is found, not made
/// twice.
fn registration_key(run: &RunState, node: &str) -> String {
    format!(
        "{}.{node}.{}",
        run.id,
        run.nodes
            .iter()
            .find(|n| n.id == node)
            .map_or(0, |n| n.plans)
    )
}
