//! Starting a run: checking the template and the parameters, and resolving `{{params.…}}`.

use std::collections::BTreeMap;

use crate::template::Template;
use crate::validate::{validate, Problem};

use super::advance::advance;
use super::resolve::{resolve, sub};
use super::state::*;

/// Why a run cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The template version has validation problems.
    #[error("the template has {} problem(s); fix them and save a new version", .0.len())]
    InvalidTemplate(Vec<Problem>),
    /// Parameter overrides do not fit the template.
    #[error("{0}")]
    BadParameters(String),
}

/// Creates a run of a template version.
///
/// # Errors
/// [`StartError`] when the template is invalid, an override names an unknown parameter, or a
/// parameter without default gets no value.
pub fn start(
    id: String,
    template: Template,
    template_version: u32,
    overrides: BTreeMap<String, String>,
    cluster: String,
    started_by: Option<String>,
    now: u64,
) -> Result<RunState, StartError> {
    let problems = validate(&template);
    if !problems.is_empty() {
        return Err(StartError::InvalidTemplate(problems));
    }
    let declared: Vec<&str> = template
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if let Some(unknown) = overrides.keys().find(|k| !declared.contains(&k.as_str())) {
        return Err(StartError::BadParameters(format!(
            "parameter {unknown:?} is not declared by template {:?} (declared: {})",
            template.name,
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        )));
    }
    let mut parameters = BTreeMap::new();
    for p in &template.parameters {
        match overrides.get(&p.name).or(p.default.as_ref()) {
            Some(v) => {
                parameters.insert(p.name.clone(), v.clone());
            }
            None => {
                return Err(StartError::BadParameters(format!(
                    "parameter {:?} has no default; give it a value when starting the run",
                    p.name
                )))
            }
        }
    }
    // Values with parameter references are checked now that the values are known.
    let mut resolved = template.clone();
    for n in &mut resolved.nodes {
        n.kind = resolve(&n.kind, &parameters, &BTreeMap::new());
        n.image = n.image.as_ref().map(|i| sub(i, &parameters));
        for v in n.env.values_mut() {
            *v = sub(v, &parameters);
        }
    }
    let problems = validate(&resolved);
    if !problems.is_empty() {
        return Err(StartError::BadParameters(format!(
            "with these parameter values the template is not valid: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let nodes = template
        .nodes
        .iter()
        .map(|n| NodeRun::new(n.id.clone()))
        .collect();
    let mut run = RunState {
        id,
        template,
        template_version,
        parameters,
        cluster,
        status: RunStatus::Pending,
        started_by,
        created_at: now,
        ended_at: None,
        error: None,
        mlflow: None,
        mlflow_status: None,
        mlflow_wait: None,
        repairs: Vec::new(),
        request: None,
        experiment_id: None,
        ignore_cache: false,
        notifications: Vec::new(),
        pins: BTreeMap::new(),
        nodes,
    };
    advance(&mut run, now);
    Ok(run)
}
