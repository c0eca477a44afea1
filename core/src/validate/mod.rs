//! Template validation: every problem at once, each with a JSON pointer and a plain message.
//! `nodes`, `edges` and `kubernetes` check what their names say; `gates` checks conditions,
//! trigger rules, approval and register nodes; `fields` finds the fields the model does not
//! know; `quantity` reads Kubernetes quantities.
//!
//! Validation never blocks saving a draft; it blocks starting a run.

mod edges;
mod fields;
mod gates;
pub mod kubernetes;
mod nodes;
mod quantity;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use self::edges::find_cycle;
pub use self::fields::unknown_fields;
pub use self::gates::alias_problem;
use crate::names::{identifier_problem, label_value_problem};
use crate::template::{Template, API_VERSION};

/// Most parallel instances one node may have.
pub const MAX_INSTANCES: u32 = 10_000;
/// Most retries one node may ask for.
pub const MAX_RETRIES: u32 = 20;
/// Most nodes, edges and parameters of one template: far beyond what people draw, small
/// enough that every check (and a run's planning) stays fast.
pub const MAX_NODES: usize = 10_000;
pub const MAX_EDGES: usize = 50_000;
pub const MAX_PARAMETERS: usize = 200;
/// Most GPUs, CPUs and bytes of memory one instance may ask for (more than any one machine
/// offers, so a typo such as `gpu: 1000000` is caught before it waits for ever).
pub const MAX_GPUS: u32 = 16;
pub const MAX_CPUS: f64 = 512.0;
pub const MAX_MEMORY_BYTES: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0;
/// Longest attempt timeout and retry backoff (30 days, one day).
pub const MAX_TIMEOUT_SECONDS: u64 = 30 * 86_400;
pub const MAX_BACKOFF_SECONDS: u32 = 86_400;

/// One thing wrong with a template: where (a JSON pointer, and the node, edge or parameter it
/// is about) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ProblemJson", into = "ProblemJson")]
pub struct Problem {
    /// JSON pointer to the field (`/nodes/1/instances`), or `/edges` for cycles.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// What the path points into (so the designer marks the culprit).
    target: Target,
}

/// A problem on the wire: its pointer and message (the target is read back from the pointer,
/// once, where a problem arrives).
#[derive(Serialize, Deserialize)]
struct ProblemJson {
    path: String,
    message: String,
}

impl From<ProblemJson> for Problem {
    fn from(p: ProblemJson) -> Problem {
        Problem {
            target: Target::of_pointer(&p.path),
            path: p.path,
            message: p.message,
        }
    }
}

impl From<Problem> for ProblemJson {
    fn from(p: Problem) -> ProblemJson {
        ProblemJson {
            path: p.path,
            message: p.message,
        }
    }
}

/// What a problem is about: a node, an edge or a parameter (by index), or the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(usize),
    Edge(usize),
    Parameter(usize),
    Template,
}

impl Target {
    /// The JSON pointer of `field` below the target (`/nodes/2/uri`; `field` may be empty or
    /// have several segments, `resources/cpu`).
    pub fn pointer(self, field: &str) -> String {
        let base = match self {
            Target::Node(i) => format!("/nodes/{i}"),
            Target::Edge(i) => format!("/edges/{i}"),
            Target::Parameter(i) => format!("/parameters/{i}"),
            Target::Template => String::new(),
        };
        if field.is_empty() {
            base
        } else {
            format!("{base}/{field}")
        }
    }

    /// What a JSON pointer of a template document points into.
    fn of_pointer(path: &str) -> Target {
        let mut parts = path.trim_start_matches('/').split('/');
        let (kind, index) = (parts.next(), parts.next().and_then(|i| i.parse().ok()));
        match (kind, index) {
            (Some("nodes"), Some(i)) => Target::Node(i),
            (Some("edges"), Some(i)) => Target::Edge(i),
            (Some("parameters"), Some(i)) => Target::Parameter(i),
            _ => Target::Template,
        }
    }
}

impl Problem {
    /// A problem with `field` of `target`.
    pub fn at(target: Target, field: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: target.pointer(field),
            message: message.into(),
            target,
        }
    }

    /// A problem at a JSON pointer found by walking a template document.
    fn pointing(path: String, message: impl Into<String>) -> Problem {
        Problem {
            target: Target::of_pointer(&path),
            path,
            message: message.into(),
        }
    }

    /// What the problem is about.
    pub fn target(&self) -> Target {
        self.target
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The problems found so far.
struct Problems(Vec<Problem>);

impl Problems {
    /// A problem with `field` of `target`.
    fn at(&mut self, target: Target, field: &str, message: impl Into<String>) {
        self.0.push(Problem::at(target, field, message));
    }

    /// A problem of the whole template at `field` (`nodes`, `edges`…).
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.at(Target::Template, field, message);
    }
}

/// Most notifications one template may name.
pub const MAX_NOTIFICATIONS: usize = 10;

/// Whether `name` may name an edge secret of a notification: only `NOTIFY_…` ones, so a
/// template cannot have the edge sign with (or send to) its own credentials.
pub fn notify_secret_problem(name: &str) -> Option<String> {
    let ok = name.starts_with("NOTIFY_")
        && name.len() > "NOTIFY_".len()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    (!ok).then(|| format!("{name:?} is not a notification secret: name an edge secret NOTIFY_<NAME> (capitals, digits, _)"))
}

fn check_notifications(t: &Template, p: &mut Problems) {
    if t.notifications.len() > MAX_NOTIFICATIONS {
        p.add(
            "notifications",
            format!(
                "at most {MAX_NOTIFICATIONS} notifications, not {}",
                t.notifications.len()
            ),
        );
    }
    for (i, n) in t.notifications.iter().enumerate() {
        let at = |f: &str| {
            format!(
                "notifications/{i}{}{f}",
                if f.is_empty() { "" } else { "/" }
            )
        };
        match (&n.url, &n.url_secret) {
            (Some(_), Some(_)) | (None, None) => p.add(
                &at(""),
                "give either url or urlSecret (an edge secret holding the URL)",
            ),
            (Some(url), None) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                p.add(&at("url"), format!("{url:?} is not an http(s) URL"))
            }
            _ => {}
        }
        for (field, name) in [
            ("urlSecret", &n.url_secret),
            ("signingSecret", &n.signing_secret),
        ] {
            if let Some(why) = name.as_deref().and_then(notify_secret_problem) {
                p.add(&at(field), why);
            }
        }
        if n.on.is_empty() {
            p.add(
                &at("on"),
                "name what to notify of: succeeded, failed, waiting",
            );
        }
    }
}

/// Checks everything a run relies on. An empty result means the template can run.
pub fn validate(t: &Template) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    if t.api_version != API_VERSION {
        p.add(
            "apiVersion",
            format!(
                "is {:?}; this server understands {API_VERSION:?}",
                t.api_version
            ),
        );
    }
    if let Some(why) = label_value_problem(&t.name) {
        p.add("name", format!("template name {:?} {why}", t.name));
    }
    let mut too_big = false;
    for (what, n, max) in [
        ("nodes", t.nodes.len(), MAX_NODES),
        ("edges", t.edges.len(), MAX_EDGES),
        ("parameters", t.parameters.len(), MAX_PARAMETERS),
    ] {
        if n > max {
            too_big = true;
            p.add(
                what,
                format!("the template has {n} {what}; at most {max} are allowed (split it into several templates)"),
            );
        }
    }
    if too_big {
        return p.0;
    }
    let declared = check_parameters(t, &mut p);
    let ids = nodes::check(t, &declared, &mut p);
    edges::check(t, &ids, &mut p);
    gates::check(t, &ids, &declared, &mut p);
    check_notifications(t, &mut p);
    if ids.len() == t.nodes.len() {
        if let Some(cycle) = find_cycle(t) {
            p.add(
                "edges",
                format!(
                    "the edges form a cycle: {}; remove one of these edges",
                    cycle.join(" → ")
                ),
            );
        }
    }
    p.0
}

fn check_parameters(t: &Template, p: &mut Problems) -> BTreeSet<String> {
    let mut declared = BTreeSet::new();
    for (i, param) in t.parameters.iter().enumerate() {
        if let Some(why) = identifier_problem(&param.name) {
            p.at(
                Target::Parameter(i),
                "name",
                format!("parameter name {:?} {why}", param.name),
            );
        }
        if !declared.insert(param.name.clone()) {
            p.at(
                Target::Parameter(i),
                "name",
                format!("parameter {:?} is declared twice", param.name),
            );
        }
    }
    declared
}

/// Why `re` cannot serve as a by-key regex, or `None`.
pub fn key_regex_problem(re: &str) -> Option<String> {
    match regex_lite::Regex::new(re) {
        Err(e) => Some(format!("is not a valid regular expression: {e}")),
        Ok(r) if r.captures_len() < 2 => {
            Some("has no capture group; wrap the part of the path that is the key in ( )".into())
        }
        Ok(_) => None,
    }
}

/// Checks a value that is used as written; one with a `{{params.…}}` reference is checked
/// when the run starts (its value is known then), not here.
fn literal(
    p: &mut Problems,
    (target, field): (Target, &str),
    value: &str,
    check: fn(&str) -> Option<String>,
) {
    if value.contains("{{") {
        return;
    }
    if let Some(why) = check(value) {
        p.at(target, field, why);
    }
}
