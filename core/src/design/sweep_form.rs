//! The sweep editor's fields as a person types them: values as a comma-separated list, a
//! distribution as its kind and its range (or its values).

use crate::sweep::Distribution;

/// The kinds of distribution, as the editor's select names them.
pub const DISTRIBUTIONS: [&str; 4] = ["uniform", "logUniform", "intUniform", "choice"];

/// Values typed as `0.1, 1, 10` (spaces around commas ignored, empty entries dropped).
pub fn values_from_text(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// Values as the editor shows them.
pub fn values_to_text(values: &[String]) -> String {
    values.join(", ")
}

/// A distribution's kind and what follows it: `low, high` or, for `choice`, its values.
pub fn distribution_to_text(d: &Distribution) -> (&'static str, String) {
    match d {
        Distribution::Uniform(a, b) => ("uniform", format!("{a}, {b}")),
        Distribution::LogUniform(a, b) => ("logUniform", format!("{a}, {b}")),
        Distribution::IntUniform(a, b) => ("intUniform", format!("{a}, {b}")),
        Distribution::Choice(v) => ("choice", values_to_text(v)),
    }
}

/// The distribution of `kind` with `text` (`low, high`, or the values of a choice).
///
/// # Errors
/// An unknown kind, or a range that is not two numbers (whole ones for `intUniform`).
pub fn distribution_from_text(kind: &str, text: &str) -> Result<Distribution, String> {
    let parts = values_from_text(text);
    let pair = || -> Result<(f64, f64), String> {
        match parts.as_slice() {
            [a, b] => Ok((
                a.parse().map_err(|_| format!("{a:?} is not a number"))?,
                b.parse().map_err(|_| format!("{b:?} is not a number"))?,
            )),
            _ => Err(format!("{kind} needs a range: low, high (not {text:?})")),
        }
    };
    Ok(match kind {
        "uniform" => pair().map(|(a, b)| Distribution::Uniform(a, b))?,
        "logUniform" => pair().map(|(a, b)| Distribution::LogUniform(a, b))?,
        "intUniform" => match parts.as_slice() {
            [a, b] => Distribution::IntUniform(
                a.parse()
                    .map_err(|_| format!("{a:?} is not a whole number"))?,
                b.parse()
                    .map_err(|_| format!("{b:?} is not a whole number"))?,
            ),
            _ => {
                return Err(format!(
                    "intUniform needs a range: low, high (not {text:?})"
                ))
            }
        },
        "choice" => Distribution::Choice(parts),
        other => {
            return Err(format!(
                "{other:?} is not a distribution; use one of {}",
                DISTRIBUTIONS.join(", ")
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_distributions_round_trip_through_their_text() {
        assert_eq!(values_from_text(" 0.1, 1 ,, 10"), vec!["0.1", "1", "10"]);
        assert_eq!(values_to_text(&values_from_text("a,b")), "a, b");
        for d in [
            Distribution::Uniform(0.0, 1.5),
            Distribution::LogUniform(0.001, 1.0),
            Distribution::IntUniform(2, 9),
            Distribution::Choice(vec!["rbf".into(), "linear".into()]),
        ] {
            let (kind, text) = distribution_to_text(&d);
            assert_eq!(distribution_from_text(kind, &text), Ok(d));
        }
        assert!(distribution_from_text("uniform", "1")
            .unwrap_err()
            .contains("low, high"));
        assert!(distribution_from_text("intUniform", "1.5, 2")
            .unwrap_err()
            .contains("whole"));
        assert!(distribution_from_text("gauss", "1, 2").is_err());
    }
}
