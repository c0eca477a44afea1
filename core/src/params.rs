//! Parameter references (`{{params.name}}`) in node fields: finding and substituting them.

use std::collections::BTreeMap;

/// A `{{ ... }}` occurrence in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<'a> {
    /// `{{params.<name>}}` (spaces inside the braces allowed).
    Param(&'a str),
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
                let inner = after[..end].trim();
                out.push(match inner.strip_prefix("params.") {
                    Some(name)
                        if !name.is_empty() && crate::names::identifier_problem(name).is_none() =>
                    {
                        Reference::Param(name)
                    }
                    _ => Reference::Malformed(inner),
                });
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

/// Why a text's parameter references cannot be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// A `{{` without its `}}`.
    #[error("unclosed '{{{{' in {0:?}")]
    Unclosed(String),
    /// `{{x}}` where `x` is not `params.<name>`.
    #[error("'{{{{{0}}}}}' is not a parameter reference")]
    NotAReference(String),
    /// A parameter without a value (validation prevents this for saved templates; a run checks
    /// values before it starts).
    #[error("parameter {0:?} has no value")]
    Missing(String),
}

/// Replaces every `{{params.x}}` in `text` with its value.
///
/// # Errors
/// [`SubstituteError`]: the first reference that cannot be filled in.
pub fn substitute(
    text: &str,
    values: &BTreeMap<String, String>,
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
        let name = inner
            .strip_prefix("params.")
            .ok_or_else(|| SubstituteError::NotAReference(inner.to_string()))?;
        out.push_str(
            values
                .get(name)
                .ok_or_else(|| SubstituteError::Missing(name.to_string()))?,
        );
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
