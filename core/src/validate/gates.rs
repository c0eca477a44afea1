//! What decides whether a node runs and what it does besides running steps: conditions
//! (`when`), trigger rules, approval and register nodes.

use std::collections::{BTreeSet, HashMap};

use super::{Problems, Target};
use crate::expr::{self, Ref};
use crate::names::closest;
use crate::template::{NodeKind, Template};

/// Checks every node's condition and trigger rule, and the approval and register nodes
/// (`ids`: node id → index).
pub(super) fn check(
    t: &Template,
    ids: &HashMap<String, usize>,
    declared: &BTreeSet<String>,
    p: &mut Problems,
) {
    for (i, n) in t.nodes.iter().enumerate() {
        let at = Target::Node(i);
        let upstream: Vec<&str> = t.incoming(&n.id).map(|e| e.from.as_str()).collect();
        if !n.trigger_rule.is_default() && upstream.is_empty() {
            p.at(
                at,
                "triggerRule",
                format!(
                    "is {}, but no node feeds this one; connect the nodes it waits for, or remove the rule",
                    n.trigger_rule.as_str()
                ),
            );
        }
        if let Some(when) = &n.when {
            condition(t, i, when, ids, declared, p);
        }
        let model_edges = || {
            t.incoming(&n.id)
                .filter(|e| {
                    ids.get(&e.from)
                        .is_some_and(|&k| !matches!(t.nodes[k].kind, NodeKind::Approval(_)))
                })
                .count()
        };
        match &n.kind {
            NodeKind::Approval(a) => {
                single_instance(at, n.instances, "an approval", p);
                if let Some(c) = &a.compare {
                    if c.model.trim().is_empty() {
                        p.at(at, "compare/model", "names no registered model");
                    }
                    if let Some(why) = alias_problem(&c.alias) {
                        p.at(at, "compare/alias", why);
                    }
                }
            }
            NodeKind::Register(r) => {
                single_instance(at, n.instances, "a register node", p);
                if r.model.trim().is_empty() {
                    p.at(
                        at,
                        "model",
                        "names no registered model; write the name to register the model under",
                    );
                }
                if let Some(why) = r.alias.as_deref().and_then(alias_problem) {
                    p.at(at, "alias", why);
                }
                if let Some(path) = &r.artifact_path {
                    if let Some(why) = crate::partition::relative_path_problem(path) {
                        p.at(at, "artifactPath", why);
                    }
                }
                match model_edges() {
                    0 => p.at(at, "kind", "a register node registers the model of the step upstream of it; connect that step to it (edges from approvals only make it wait)"),
                    1 => {}
                    k => p.at(at, "kind", format!("{k} steps feed this register node; it registers the model of exactly one (approvals may feed it too)")),
                }
            }
            _ => {}
        }
    }
}

fn single_instance(at: Target, instances: u32, what: &str, p: &mut Problems) {
    if instances != 1 {
        p.at(
            at,
            "instances",
            format!("is {instances}; {what} has exactly one instance"),
        );
    }
}

/// Why `alias` cannot be a registered model's alias (MLflow's rules: letters, digits, `_` and
/// `-`; not `latest`, and not `v<number>`, which reads as a version).
pub fn alias_problem(alias: &str) -> Option<String> {
    if alias.contains("{{") {
        return None;
    }
    if alias.is_empty() || alias.len() > 255 {
        return Some("an alias has 1 to 255 characters".into());
    }
    if !alias
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Some(format!(
            "alias {alias:?} may only use letters, digits, _ and -"
        ));
    }
    let lower = alias.to_ascii_lowercase();
    if lower == "latest"
        || (lower.starts_with('v')
            && lower.len() > 1
            && lower[1..].chars().all(|c| c.is_ascii_digit()))
    {
        return Some(format!("MLflow reserves the alias {alias:?} (latest, and v<number> for versions); choose another"));
    }
    None
}

/// A node's condition: it parses, and everything it reads is there before the node runs.
fn condition(
    t: &Template,
    i: usize,
    when: &str,
    ids: &HashMap<String, usize>,
    declared: &BTreeSet<String>,
    p: &mut Problems,
) {
    let at = Target::Node(i);
    let e = match expr::parse(when) {
        Ok(e) => e,
        Err(e) => {
            p.at(at, "when", format!("is not a condition: {e}"));
            return;
        }
    };
    let node = &t.nodes[i].id;
    let above = ancestors(t, node);
    let chosen: BTreeSet<&str> = t
        .incoming(node)
        .filter(|e| e.select.is_some())
        .map(|e| e.from.as_str())
        .collect();
    for r in e.refs() {
        match r {
            Ref::Param(name) if !declared.contains(name) => p.at(
                at,
                "when",
                match closest(name, declared.iter().map(String::as_str)) {
                    Some(near) => format!("reads params.{name}, which is not a template parameter; did you mean params.{near}?"),
                    None => format!("reads params.{name}, which is not a template parameter; declare it under parameters"),
                },
            ),
            Ref::Param(_) => {}
            other => {
                let Some(up) = other.node() else { continue };
                if !ids.contains_key(up) {
                    let near = closest(up, ids.keys().map(String::as_str));
                    p.at(
                        at,
                        "when",
                        match near {
                            Some(near) => format!("reads node {up:?}, which does not exist; did you mean {near:?}?"),
                            None => format!("reads node {up:?}, which does not exist"),
                        },
                    );
                } else if !above.contains(up) {
                    p.at(
                        at,
                        "when",
                        format!("reads node {up:?}, which is not upstream of {node:?}: it may not have ended when {node:?} starts; connect it to {node:?} (or to a node before it)"),
                    );
                } else if matches!(other, Ref::Best { .. }) && !chosen.contains(up) {
                    p.at(
                        at,
                        "when",
                        format!("reads the best of {up:?}, but no edge from {up:?} into {node:?} selects one; add select (a metric, min or max) to that edge"),
                    );
                }
            }
        }
    }
}

/// Every node upstream of `node`, through any number of edges.
fn ancestors<'a>(t: &'a Template, node: &'a str) -> BTreeSet<&'a str> {
    let mut found: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = t.incoming(node).map(|e| e.from.as_str()).collect();
    while let Some(n) = todo.pop() {
        if found.insert(n) {
            todo.extend(t.incoming(n).map(|e| e.from.as_str()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_follow_mlflows_rules() {
        assert_eq!(alias_problem("champion"), None);
        assert_eq!(alias_problem("prod-2"), None);
        assert!(alias_problem("latest").unwrap().contains("reserves"));
        assert!(alias_problem("V3").unwrap().contains("reserves"));
        assert!(alias_problem("a b").unwrap().contains("letters"));
        assert!(alias_problem("").is_some());
        assert_eq!(alias_problem("{{params.alias}}"), None);
    }
}
