//! Name rules (Kubernetes labels, parameter identifiers) and the deterministic ids built from
//! them, so that a retry or a duplicate request lands on the same key.

/// Longest node id: pod names are `c-<run>-<node>-<instance>-<attempt>` and must stay within a
/// 63-character DNS label.
pub const MAX_NODE_ID_LEN: usize = 30;

/// Why `s` is not a lowercase DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most `max` chars),
/// or `None` when it is one.
pub fn dns_label_problem(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > max {
        return Some(format!(
            "is {} characters long; at most {max} are allowed",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "contains {c:?}; use only lowercase letters, digits and '-'"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit".into());
    }
    None
}

/// Why `s` is not a valid Kubernetes label value (at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending alphanumeric), or `None`.
pub fn label_value_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > 63 {
        return Some(format!(
            "is {} characters long; Kubernetes labels allow at most 63",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(format!(
            "contains {c:?}; use only letters, digits, '-', '_' and '.'"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Some("must start and end with a letter or digit".into());
    }
    None
}

/// Why `s` is not an identifier (`[A-Za-z_][A-Za-z0-9_]*`, as used for parameter and input
/// names), or `None`.
pub fn identifier_problem(s: &str) -> Option<String> {
    let mut chars = s.chars();
    match chars.next() {
        None => Some("must not be empty".into()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            Some(format!("starts with {c:?}; start with a letter or '_'"))
        }
        _ => chars
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map(|c| format!("contains {c:?}; use only letters, digits and '_'")),
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved characters (and `/` with
/// `keep_slashes`, for paths), for URLs built from names and artifact paths.
pub fn percent_encode(s: &str, keep_slashes: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b'/' if keep_slashes => "/".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The id of one attempt of one instance: the key of its work item and of its lease.
pub fn work_item_id(run_id: &str, node_id: &str, instance: u32, attempt: u32) -> String {
    format!("{run_id}.{node_id}.{instance}.{attempt}")
}

/// Deterministic pod name for an attempt; a duplicate create is `AlreadyExists`, never a second pod.
pub fn pod_name(run_id: &str, node_id: &str, instance: u32, attempt: u32) -> String {
    let short: String = run_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect();
    format!(
        "c-{}-{node_id}-{instance}-{attempt}",
        short.to_ascii_lowercase()
    )
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo (two
/// edits at most): the "did you mean" of every message.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(c, name), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_accept_lowercase_and_reject_the_rest() {
        assert_eq!(dns_label_problem("train-2", 30), None);
        assert!(dns_label_problem("Train", 30).unwrap().contains("'T'"));
        assert!(dns_label_problem("-a", 30).is_some());
        assert!(dns_label_problem(&"a".repeat(31), 30)
            .unwrap()
            .contains("31"));
    }

    #[test]
    fn pod_names_fit_a_dns_label() {
        let id = "0123456789abcdef0123456789abcdef";
        let name = pod_name(id, &"n".repeat(MAX_NODE_ID_LEN), 9999, 21);
        assert!(name.len() <= 63, "{name}");
        assert_eq!(dns_label_problem(&name, 63), None);
    }

    #[test]
    fn percent_encoding_keeps_unreserved_and_optionally_slashes() {
        assert_eq!(
            percent_encode("concurrent/a b", false),
            "concurrent%2Fa%20b"
        );
        assert_eq!(percent_encode("out/é.csv", true), "out/%C3%A9.csv");
    }

    #[test]
    fn identifiers_must_start_with_a_letter() {
        assert_eq!(identifier_problem("rows_2"), None);
        assert!(identifier_problem("2rows").is_some());
        assert!(identifier_problem("a-b").is_some());
    }
}
