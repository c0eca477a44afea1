//! What a project's MLproject declares, as an agent read it for the designer (entry points,
//! their parameters with MLflow's types and defaults, the environment), and the checks of a
//! node's values against it that MLflow would make when the step starts, made before a run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A project as its MLproject describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectInfo {
    /// The MLproject's `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For git projects: the commit the version named when the agent looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `python_env`, `conda_env`, `docker_env`, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Entry points in the order the MLproject lists them. Without an MLproject there are none:
    /// a `.py` or `.sh` file of the project is then the entry point.
    pub entry_points: Vec<EntryPointInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPointInfo {
    pub name: String,
    pub command: String,
    pub parameters: Vec<ParameterInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterInfo {
    pub name: String,
    /// MLflow's type: `string`, `float`, `path` or `uri`.
    #[serde(rename = "type")]
    pub kind: String,
    /// As MLflow substitutes it (Python's `str()` of the YAML value); `None`: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

impl ProjectInfo {
    pub fn entry_point(&self, name: &str) -> Option<&EntryPointInfo> {
        self.entry_points.iter().find(|e| e.name == name)
    }
}

/// What is wrong with one parameter of a node, for the field that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamProblem {
    pub name: String,
    pub message: String,
}

/// Why `value` cannot be of MLflow type `kind`, if it cannot. Values that reference template
/// parameters are checked when the run substitutes them.
pub fn value_problem(kind: &str, value: &str) -> Option<String> {
    if !crate::params::references(value).is_empty() {
        return None;
    }
    match kind {
        "float" if value.trim().parse::<f64>().is_err() => Some(format!(
            "{value:?} is not a number (the entry point declares a float)"
        )),
        "uri" if !has_scheme(value) => Some(format!(
            "{value:?} is not a URI: it needs a scheme such as s3://, gs://, https:// or file://"
        )),
        "path" if value.is_empty() => Some("a path cannot be empty".into()),
        _ => None,
    }
}

/// A URI scheme as Python's `urllib.parse.urlparse` finds it (what MLflow checks for `uri`
/// parameters, and how it tells a remote `path` from a local one).
pub fn has_scheme(v: &str) -> bool {
    match v.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// The problems of a node's `values` for `entry`: required parameters without a value, values
/// that cannot be of the declared type, and parameters the entry point does not declare (MLflow
/// passes those as `--name value`, which the command may not expect).
pub fn check(entry: &EntryPointInfo, values: &BTreeMap<String, String>) -> Vec<ParamProblem> {
    let mut problems = Vec::new();
    for p in &entry.parameters {
        match values.get(&p.name) {
            None if p.default.is_none() => problems.push(ParamProblem {
                name: p.name.clone(),
                message: format!(
                    "required by entry point {:?} ({}, no default)",
                    entry.name, p.kind
                ),
            }),
            Some(v) => {
                if let Some(why) = value_problem(&p.kind, v) {
                    problems.push(ParamProblem {
                        name: p.name.clone(),
                        message: why,
                    });
                }
            }
            None => {}
        }
    }
    for name in values.keys() {
        if !entry.parameters.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = entry.parameters.iter().map(|p| p.name.as_str()).collect();
            problems.push(ParamProblem {
                name: name.clone(),
                message: format!(
                    "entry point {:?} declares no parameter {name:?}; MLflow would pass it as `--{name} <value>`{}",
                    entry.name,
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" (it declares {})", known.join(", "))
                    }
                ),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> EntryPointInfo {
        let p = |name: &str, kind: &str, default: Option<&str>| ParameterInfo {
            name: name.into(),
            kind: kind.into(),
            default: default.map(String::from),
        };
        EntryPointInfo {
            name: "train".into(),
            command: "python train.py".into(),
            parameters: vec![
                p("alpha", "float", Some("0.5")),
                p("data", "uri", None),
                p("out", "path", Some("out")),
                p("label", "string", None),
            ],
        }
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_required_wrong_types_and_unknown_names_are_each_marked() {
        let problems = check(
            &entry(),
            &values(&[("alpha", "high"), ("data", "bucket/x"), ("epochs", "3")]),
        );
        let by_name: BTreeMap<&str, &str> = problems
            .iter()
            .map(|p| (p.name.as_str(), p.message.as_str()))
            .collect();
        assert!(by_name["alpha"].contains("not a number"), "{problems:?}");
        assert!(by_name["data"].contains("scheme"), "{problems:?}");
        assert!(by_name["label"].contains("required"), "{problems:?}");
        assert!(
            by_name["epochs"].contains("declares no parameter")
                && by_name["epochs"].contains("alpha, data, out, label")
        );
        assert!(!by_name.contains_key("out"), "a default suffices");
        assert_eq!(problems.len(), 4);
    }

    #[test]
    fn good_values_and_template_references_pass() {
        let ok = values(&[
            ("alpha", " 1e-3"),
            ("data", "s3://b/k"),
            ("label", "y"),
            ("out", "{{ params.out }}"),
        ]);
        assert_eq!(check(&entry(), &ok), []);
        assert_eq!(value_problem("float", "{{ params.alpha }}"), None);
        assert_eq!(value_problem("uri", "file:///tmp/x"), None);
        assert!(value_problem("uri", "://x").is_some());
        assert!(value_problem("path", "").is_some());
    }
}
