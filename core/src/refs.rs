//! What the references in a node may be: container images (the distribution reference grammar),
//! project URIs, git refs, model URIs and local paths. Each `*_problem` function says why a
//! value is refused, or `None`.
//!
//! These values end up as arguments of `git`, `mlflow` or a pod spec, so anything that could be
//! read as an option (a leading `-`) or reach outside what was meant (`..`) is refused here,
//! before a run starts.

use std::sync::OnceLock;

use regex_lite::Regex;

use crate::partition::relative_path_problem;

/// Why `value` could be read as an option by the program it is handed to.
fn option_like(value: &str) -> Option<String> {
    value
        .starts_with('-')
        .then(|| format!("{value:?} starts with '-', which a program would read as an option"))
}

fn control(value: &str) -> Option<String> {
    value
        .chars()
        .any(|c| c.is_control())
        .then(|| format!("{value:?} contains a control character"))
}

fn image_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // github.com/distribution/reference, grammar of `reference`.
        let domain_component = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain_name = format!(r"{domain_component}(?:\.{domain_component})*");
        let host = format!(r"(?:{domain_name}|\[[a-fA-F0-9:]+\])");
        let domain = format!(r"{host}(?::[0-9]+)?");
        let path_component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let name = format!(r"(?:{domain}/)?{path_component}(?:/{path_component})*");
        let tag = r"[\w][\w.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        Regex::new(&format!(r"^{name}(?::{tag})?(?:@{digest})?$")).expect("image grammar")
    })
}

/// Why `image` is not a container image reference a registry accepts (`python:3.11`,
/// `ghcr.io/org/img@sha256:…`, `localhost:5000/x`).
pub fn image_reference_problem(image: &str) -> Option<String> {
    if image.len() > 255 {
        return Some(format!(
            "is {} characters long; image references have at most 255",
            image.len()
        ));
    }
    if image_regex().is_match(image) {
        return None;
    }
    let hint = if image.chars().any(|c| c.is_ascii_uppercase()) {
        " (repository names are lowercase)"
    } else if image.contains(char::is_whitespace) {
        " (it contains white space)"
    } else {
        ""
    };
    Some(format!(
        "{image:?} is not a container image reference{hint}; write e.g. \"python:3.11-slim\" or \"registry.example.com/team/image:tag\""
    ))
}

/// The schemes a git project URI may use.
const GIT_SCHEMES: [&str; 6] = ["https", "http", "ssh", "git", "git+https", "git+ssh"];

/// Why `uri` cannot name an MLflow Project: a git URI (`https://host/…`, `ssh://host/…`,
/// `git@host:org/repo.git`) or a local path (relative to the agent's project root, or absolute
/// and then checked by the agent against its allowed roots).
pub fn project_uri_problem(uri: &str) -> Option<String> {
    if let Some(why) = option_like(uri).or_else(|| control(uri)) {
        return Some(why);
    }
    if let Some((scheme, rest)) = uri.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            return local_path_problem(rest);
        }
        if !GIT_SCHEMES.contains(&scheme.as_str()) {
            return Some(format!(
                "{uri:?} has scheme {scheme:?}; a project is a git URI ({}), or a local path",
                GIT_SCHEMES.join(", ")
            ));
        }
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        if host.is_empty() {
            return Some(format!("{uri:?} names no host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']'))
        {
            return Some(format!("{uri:?} has an invalid host {host:?}"));
        }
        return None;
    }
    // scp-like git: user@host:path
    if let Some((userhost, path)) = uri.split_once(':') {
        if let Some((user, host)) = userhost.split_once('@') {
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            };
            if ok(user) && ok(host) && !path.is_empty() && !path.starts_with('-') {
                return None;
            }
            return Some(format!(
                "{uri:?} is neither a git URI (user@host:path) nor a local path"
            ));
        }
        if !userhost.contains('/') {
            return Some(format!(
                "{uri:?} has scheme {userhost:?}; a project is a git URI ({}), or a local path",
                GIT_SCHEMES.join(", ")
            ));
        }
    }
    local_path_problem(uri)
}

/// Why `path` is not an acceptable local path: relative (to the agent's project root) or
/// absolute, with no `..` segment either way.
pub fn local_path_problem(path: &str) -> Option<String> {
    if let Some(why) = option_like(path).or_else(|| control(path)) {
        return Some(why);
    }
    if path.is_empty() {
        return Some("is empty".into());
    }
    let inner = path.trim_start_matches('/').trim_end_matches('/');
    if inner.is_empty() {
        return Some(format!("{path:?} is the file system's root"));
    }
    if inner.split('/').any(|seg| seg == "..") {
        return Some(format!(
            "{path:?} has a '..' segment; name the directory itself"
        ));
    }
    None
}

/// Why `version` is not a git ref or commit `git` accepts (see `git check-ref-format`).
pub fn git_ref_problem(version: &str) -> Option<String> {
    if let Some(why) = option_like(version).or_else(|| control(version)) {
        return Some(why);
    }
    if version.is_empty() {
        return Some("is empty; leave it out for the default branch".into());
    }
    let bad = version.contains("..")
        || version.contains("@{")
        || version.ends_with('/')
        || version.ends_with(".lock")
        || version.starts_with('/')
        || version
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\'));
    bad.then(|| format!("{version:?} is not a git branch, tag or commit"))
}

/// Why `entry` is not an entry point: a name in the MLproject, or a `.py`/`.sh` file of it.
pub fn entry_point_problem(entry: &str) -> Option<String> {
    if entry.trim().is_empty() {
        return Some("must not be empty (MLflow's default is \"main\")".into());
    }
    option_like(entry)
        .or_else(|| control(entry))
        .or_else(|| relative_path_problem(entry).map(|why| format!("entry point {why}")))
}

/// The URI schemes of MLflow models.
const MODEL_SCHEMES: [&str; 12] = [
    "models:/",
    "runs:/",
    "mlflow-artifacts:/",
    "s3://",
    "gs://",
    "wasbs://",
    "abfss://",
    "dbfs:/",
    "hdfs://",
    "https://",
    "http://",
    "file://",
];

/// Why `uri` is not an MLflow model URI.
pub fn model_uri_problem(uri: &str) -> Option<String> {
    if let Some(why) = option_like(uri).or_else(|| control(uri)) {
        return Some(why);
    }
    if uri.trim().is_empty() {
        return Some(
            "is required: an MLflow model URI such as models:/name/1 or runs:/<id>/model".into(),
        );
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        return local_path_problem(rest);
    }
    if MODEL_SCHEMES.iter().any(|s| uri.starts_with(s)) {
        return None;
    }
    if uri.contains(':') {
        return Some(format!(
            "{uri:?} is not a model URI; use models:/<name>/<version>, runs:/<run id>/<path> or a store URI (s3://, gs://, dbfs:/, …)"
        ));
    }
    local_path_problem(uri)
}

/// `uri` without a user name or password (`https://token@host/x` → `https://host/x`), for
/// logs and tags.
pub fn display_url(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            if rest.contains('/') {
                format!("{scheme}://{host}/{path}")
            } else {
                format!("{scheme}://{host}")
            }
        }
        None => uri.to_string(),
    }
}

/// Variables the step runner sets itself: a node may not replace them.
const RESERVED_ENV: [&str; 4] = [
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_ID",
    "PATH",
];

/// Why `name` cannot be an environment variable of a step.
pub fn env_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(format!(
            "{name:?} is not an environment variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    if name.starts_with("CONCURRENT_") || RESERVED_ENV.contains(&name) {
        return Some(format!(
            "{name} is set by the step runner itself; choose another name"
        ));
    }
    None
}

/// Why `secret`/`key` cannot name a key of a Kubernetes Secret.
pub fn secret_ref_problem(secret: &str, key: &str) -> Option<String> {
    let subdomain = !secret.is_empty()
        && secret.len() <= 253
        && secret
            .split('.')
            .all(|label| crate::names::dns_label_problem(label, 63).is_none());
    if !subdomain {
        return Some(format!(
            "secret {secret:?} is not a Kubernetes Secret name (lowercase letters, digits, '-' and '.')"
        ));
    }
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!key_ok).then(|| format!("key {key:?} is not a Secret key (letters, digits, '-', '_', '.')"))
}

/// Why `id` is not an MLflow run id.
pub fn run_id_problem(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (!ok).then(|| format!("{id:?} is not an MLflow run id (32 hex digits)"))
}

/// Why `id` is not an MLflow experiment id (digits in MLflow's stores; letters, `-` and `_`
/// are let through for other tracking servers), or `None`.
pub fn experiment_id_problem(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (!ok).then(|| format!("{id:?} is not an MLflow experiment id (such as \"0\" or \"42\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            display_url("https://user:tok@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            display_url("https://github.com/o/r"),
            "https://github.com/o/r"
        );
        assert_eq!(display_url("ssh://git@host:22/r"), "ssh://host:22/r");
        assert_eq!(
            display_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(display_url("https://tok@host"), "https://host");
    }

    #[test]
    fn image_references_follow_the_registry_grammar() {
        for good in [
            "python",
            "python:3.11-slim",
            "ghcr.io/mlflow/mlflow:v3.17.2",
            "localhost:5000/team/img",
            "registry.example.com:443/a/b_c/d-e:1.0",
            "img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "[::1]:5000/x:y",
        ] {
            assert_eq!(image_reference_problem(good), None, "{good}");
        }
        for bad in [
            "UPPER:latest",
            "has space:1",
            "",
            "-rm",
            "a:",
            "a//b",
            "img@sha256:short",
            "a:b:c",
        ] {
            assert!(image_reference_problem(bad).is_some(), "{bad}");
        }
        assert!(image_reference_problem("UPPER:latest")
            .unwrap()
            .contains("lowercase"));
    }

    #[test]
    fn project_uris_are_git_or_local_paths() {
        for good in [
            "examples/pipeline",
            "/home/ana/project",
            "https://github.com/mlflow/mlflow-example",
            "ssh://git@github.com/org/repo.git",
            "git@github.com:org/repo.git",
            "file:///srv/projects/x",
            "./x",
        ] {
            assert_eq!(project_uri_problem(good), None, "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "ssh:///repo",
            "ssh://",
            "-uhelp",
            "--upload-pack=evil",
            "ftp://host/x",
            "../outside",
            "a/../../etc",
            "file:///etc/../root",
            "/",
            "git@:x",
            "https://ho st/x",
            "x\ny",
        ] {
            assert!(project_uri_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn refs_entry_points_and_model_uris_refuse_options_and_escapes() {
        assert_eq!(git_ref_problem("v1.2"), None);
        assert_eq!(git_ref_problem("feature/x"), None);
        assert_eq!(git_ref_problem("0123abc"), None);
        for bad in ["-f", "a..b", "a b", "x~1", "HEAD^", "a:b", ""] {
            assert!(git_ref_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(entry_point_problem("train"), None);
        assert_eq!(entry_point_problem("src/train.py"), None);
        for bad in ["-e", "../x.py", "/abs.py", " "] {
            assert!(entry_point_problem(bad).is_some(), "{bad}");
        }
        for good in [
            "models:/iris/3",
            "runs:/0123/model",
            "s3://b/m",
            "models:/m-abc",
        ] {
            assert_eq!(model_uri_problem(good), None, "{good}");
        }
        for bad in ["javascript:x", "-m", ""] {
            assert!(model_uri_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(env_name_problem("AWS_SECRET_ACCESS_KEY"), None);
        for bad in [
            "1X",
            "A-B",
            "",
            "CONCURRENT_INPUT_DIR",
            "MLFLOW_RUN_ID",
            "PATH",
        ] {
            assert!(env_name_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(secret_ref_problem("s3-creds", "secret_key"), None);
        assert!(secret_ref_problem("S3", "k").is_some());
        assert!(secret_ref_problem("s3", "a/b").is_some());
        assert_eq!(run_id_problem("0123456789abcdef0123456789abcdef"), None);
        assert!(run_id_problem("x; rm").is_some());
    }
}
