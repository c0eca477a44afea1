//! References in node fields: template parameters (`{{params.name}}`) and what a best-of
//! selection chose upstream (`{{upstream.<node>.best.run_id}}`, `.model_uri`,
//! `.metrics.<name>`): finding and substituting them.

use std::collections::BTreeMap;

/// A `{{ ... }}` occurrence in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `{{params.<name>}}` (spaces inside the braces allowed).
    Param(&'a str),
    /// `{{upstream.<node>.best.<field>}}`: `field` is `run_id`, `model_uri` or `metrics.<name>`.
    Upstream { node: &'a str, field: &'a str },
    /// Anything else between braces, or an unclosed `{{`: always a validation problem.
    Malformed(&'a str),
}

/// Every reference in `text`, in order.
pub fn references(text: &str) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push(parse(after[..end].trim()));
                rest = &after[end + 2..];
            }
            None => {
                out.push(Reference::Malformed(after));
                break;
            }
        }
    }
    out
}

/// What is between a reference's braces.
fn parse(inner: &str) -> Reference<'_> {
    if let Some(name) = inner.strip_prefix("params.") {
        if !name.is_empty() && crate::names::identifier_problem(name).is_none() {
            return Reference::Param(name);
        }
    }
    if let Some(rest) = inner.strip_prefix("upstream.") {
        if let Some((node, field)) = rest.split_once(".best.") {
            let known = field == "run_id"
                || field == "model_uri"
                || field
                    .strip_prefix("metrics.")
                    .is_some_and(|m| !m.is_empty());
            if !node.is_empty() && known {
                return Reference::Upstream { node, field };
            }
        }
    }
    Reference::Malformed(inner)
}

/// The key of an upstream value in the map [`substitute_all`] takes: `<node>.best.<field>`.
pub fn upstream_key(node: &str, field: &str) -> String {
    format!("{node}.best.{field}")
}

/// Why a text's parameter references cannot be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// A `{{` without its `}}`.
    #[error("unclosed '{{{{' in {0:?}")]
    Unclosed(String),
    /// `{{x}}` where `x` is not `params.<name>` or `upstream.<node>.best.<field>`.
    #[error("'{{{{{0}}}}}' is not a parameter reference")]
    NotAReference(String),
    /// An upstream value that is not known (yet): the upstream node has not been chosen from.
    #[error("{{{{upstream.{0}}}}} is not known here")]
    NoUpstream(String),
    /// A parameter without a value (validation prevents this for saved templates; a run checks
    /// values before it starts).
    #[error("parameter {0:?} has no value")]
    Missing(String),
}

/// Replaces every `{{params.x}}` in `text` with its value.
///
/// # Errors
/// [`SubstituteError`]: the first reference that cannot be filled in (an upstream one among
/// them: see [`substitute_all`]).
pub fn substitute(
    text: &str,
    values: &BTreeMap<String, String>,
) -> Result<String, SubstituteError> {
    substitute_all(text, values, &BTreeMap::new())
}

/// Replaces every reference in `text`: parameters from `params`, upstream choices from
/// `upstream` (by [`upstream_key`]).
///
/// # Errors
/// [`SubstituteError`]: the first reference that cannot be filled in.
pub fn substitute_all(
    text: &str,
    params: &BTreeMap<String, String>,
    upstream: &BTreeMap<String, String>,
) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(SubstituteError::Unclosed(text.to_string()));
        };
        let inner = after[..end].trim();
        let value = match parse(inner) {
            Reference::Param(name) => params
                .get(name)
                .ok_or_else(|| SubstituteError::Missing(name.to_string()))?,
            Reference::Upstream { node, field } => {
                let key = upstream_key(node, field);
                upstream.get(&key).ok_or(SubstituteError::NoUpstream(key))?
            }
            Reference::Malformed(_) => {
                return Err(SubstituteError::NotAReference(inner.to_string()))
            }
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_with_or_without_spaces() {
        assert_eq!(
            references("a {{params.x}} b {{ params.y }} {{oops}} {{params."),
            vec![
                Reference::Param("x"),
                Reference::Param("y"),
                Reference::Malformed("oops"),
                Reference::Malformed("params.")
            ]
        );
    }

    #[test]
    fn upstream_choices_are_references_too() {
        assert_eq!(
            references("{{upstream.train.best.run_id}} {{ upstream.train.best.metrics.val_auc }} {{upstream.train.best.other}}"),
            vec![
                Reference::Upstream { node: "train", field: "run_id" },
                Reference::Upstream { node: "train", field: "metrics.val_auc" },
                Reference::Malformed("upstream.train.best.other"),
            ]
        );
        let up = BTreeMap::from([(upstream_key("train", "run_id"), "abc".to_string())]);
        assert_eq!(
            substitute_all(
                "runs:/{{upstream.train.best.run_id}}/model",
                &BTreeMap::new(),
                &up
            )
            .unwrap(),
            "runs:/abc/model"
        );
        assert_eq!(
            substitute("{{upstream.train.best.run_id}}", &BTreeMap::new()).unwrap_err(),
            SubstituteError::NoUpstream("train.best.run_id".into())
        );
    }

    #[test]
    fn substitution_replaces_every_reference() {
        let values = BTreeMap::from([
            ("x".to_string(), "1".to_string()),
            ("y".to_string(), "two".to_string()),
        ]);
        assert_eq!(
            substitute("{{params.x}}-{{ params.y }}", &values).unwrap(),
            "1-two"
        );
        assert_eq!(
            substitute("{{params.z}}", &values).unwrap_err(),
            SubstituteError::Missing("z".into())
        );
    }
}
