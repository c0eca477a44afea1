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

/// [`check`] for a node that sweeps: a swept parameter counts as set, and each of its values
/// (or what its distribution draws) must suit the declared type; a swept parameter the entry
/// point does not declare is named as such.
pub fn check_with_sweep(
    entry: &EntryPointInfo,
    values: &BTreeMap<String, String>,
    sweep: Option<&crate::sweep::Sweep>,
) -> Vec<ParamProblem> {
    use crate::sweep::Distribution;
    let Some(sweep) = sweep else {
        return check(entry, values);
    };
    let swept = sweep.parameter_names();
    let mut set = values.clone();
    for name in &swept {
        // Stands in for the point's value, which is checked below.
        set.entry(name.clone()).or_insert_with(|| "0".into());
    }
    let mut problems: Vec<ParamProblem> = check(entry, &set)
        .into_iter()
        .filter(|p| values.contains_key(&p.name) || !swept.contains(&p.name))
        .collect();
    for name in &swept {
        let Some(declared) = entry.parameters.iter().find(|p| &p.name == name) else {
            problems.push(ParamProblem {
                name: name.clone(),
                message: format!(
                    "the sweep sets {name:?}, which entry point {:?} does not declare; MLflow would pass it as `--{name} <value>`",
                    entry.name
                ),
            });
            continue;
        };
        let mut wrong: Vec<String> = Vec::new();
        let grid = sweep.grid.get(name).into_iter().flatten();
        let drawn = sweep.random.as_ref().and_then(|r| r.parameters.get(name));
        let choices = match drawn {
            Some(Distribution::Choice(v)) => v.as_slice(),
            _ => &[],
        };
        for v in grid.chain(choices) {
            if let Some(why) = value_problem(&declared.kind, v) {
                wrong.push(why);
            }
        }
        let numeric = matches!(
            drawn,
            Some(
                Distribution::Uniform(..)
                    | Distribution::LogUniform(..)
                    | Distribution::IntUniform(..)
            )
        );
        if numeric && matches!(declared.kind.as_str(), "uri" | "path") {
            wrong.push(format!(
                "a number is drawn for it, but the entry point declares a {}",
                declared.kind
            ));
        }
        if let Some(first) = wrong.first() {
            problems.retain(|p| &p.name != name);
            problems.push(ParamProblem {
                name: name.clone(),
                message: format!("swept: {first}"),
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

    #[test]
    fn swept_values_are_checked_against_declared_types() {
        let sweep: crate::sweep::Sweep = serde_json::from_value(serde_json::json!({
            "grid": {"alpha": ["0.1", "lots"], "label": ["a", "b"], "depth": ["3"]}
        }))
        .unwrap();
        let got = check_with_sweep(&entry(), &values(&[("data", "s3://b/x")]), Some(&sweep));
        let by: BTreeMap<_, _> = got
            .iter()
            .map(|p| (p.name.as_str(), p.message.as_str()))
            .collect();
        assert!(by["alpha"].contains("\"lots\" is not a number"), "{got:?}");
        assert!(
            !by.contains_key("label"),
            "a required parameter the sweep sets is set: {got:?}"
        );
        assert!(by["depth"].contains("does not declare"), "{got:?}");
        let random: crate::sweep::Sweep = serde_json::from_value(serde_json::json!({
            "random": {"samples": 4, "parameters": {"data": {"uniform": [0, 1]}, "label": {"choice": ["x"]}}}
        }))
        .unwrap();
        let got = check_with_sweep(&entry(), &BTreeMap::new(), Some(&random));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].name == "data" && got[0].message.contains("declares a uri"),
            "{got:?}"
        );
        assert_eq!(
            check_with_sweep(&entry(), &BTreeMap::new(), None),
            check(&entry(), &BTreeMap::new())
        );
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
