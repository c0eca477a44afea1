//! What changed between two template versions, field by field, for the designer's versions view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::{Edge, Template};

/// One difference. `what` names the thing in words a user recognises ("node train",
/// "edge prepare → train (data)", "parameter parts", "template").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    Added {
        what: String,
    },
    Removed {
        what: String,
    },
    /// `before`/`after` are JSON renderings; `None` when the field is absent on that side.
    Changed {
        what: String,
        field: String,
        before: Option<String>,
        after: Option<String>,
    },
}

/// The changes that turn `old` into `new`: template fields, parameters, nodes, then edges; each
/// group in the order of `new` (removals in the order of `old`).
pub fn diff(old: &Template, new: &Template) -> Vec<Change> {
    let mut out = Vec::new();
    for (field, a, b) in [("description", &old.description, &new.description)] {
        if a != b {
            out.push(changed(
                "template",
                field,
                Some(json_str(a)),
                Some(json_str(b)),
            ));
        }
    }
    let params = |t: &Template| {
        t.parameters
            .iter()
            .map(|p| (p.name.clone(), to_value(p)))
            .collect::<Vec<_>>()
    };
    compare(&mut out, "parameter", params(old), params(new));
    let nodes = |t: &Template| {
        t.nodes
            .iter()
            .map(|n| (n.id.clone(), to_value(n)))
            .collect::<Vec<_>>()
    };
    compare(&mut out, "node", nodes(old), nodes(new));
    let edges = |t: &Template| {
        t.edges
            .iter()
            .map(|e| {
                (
                    edge_name(e),
                    serde_json::json!({ "partition": to_value(&e.partition) }),
                )
            })
            .collect::<Vec<_>>()
    };
    compare(&mut out, "edge", edges(old), edges(new));
    out
}

/// How an edge is named: an input of a node takes one edge, so this identifies it.
pub fn edge_name(e: &Edge) -> String {
    format!("{} → {} ({})", e.from, e.to, e.input)
}

fn compare(
    out: &mut Vec<Change>,
    kind: &str,
    old: Vec<(String, Value)>,
    new: Vec<(String, Value)>,
) {
    let old_map: BTreeMap<&str, &Value> = old.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let new_keys: std::collections::HashSet<&str> = new.iter().map(|(k, _)| k.as_str()).collect();
    for (key, value) in &new {
        let what = format!("{kind} {key}");
        match old_map.get(key.as_str()) {
            None => out.push(Change::Added { what }),
            Some(before) => {
                let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
                flatten("", before, &mut a);
                flatten("", value, &mut b);
                let fields: std::collections::BTreeSet<&String> =
                    a.keys().chain(b.keys()).collect();
                for f in fields {
                    let (x, y) = (a.get(f), b.get(f));
                    if x != y {
                        out.push(changed(&what, f, x.cloned(), y.cloned()));
                    }
                }
            }
        }
    }
    for (key, _) in &old {
        if !new_keys.contains(key.as_str()) {
            out.push(Change::Removed {
                what: format!("{kind} {key}"),
            });
        }
    }
}

fn changed(what: &str, field: &str, before: Option<String>, after: Option<String>) -> Change {
    Change::Changed {
        what: what.into(),
        field: field.into(),
        before,
        after,
    }
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn json_str(s: &str) -> String {
    Value::String(s.into()).to_string()
}

/// Leaves of a JSON value by dotted path (`resources.cpu`, `parameters.fail`); a position stays
/// one field so a move reads as one change.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if prefix != "position" => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Template {
        Template::from_json(include_str!("../../examples/pipeline/template.json")).unwrap()
    }

    #[test]
    fn identical_versions_have_no_changes() {
        assert!(diff(&example(), &example()).is_empty());
    }

    #[test]
    fn changes_are_named_field_by_field() {
        let old = example();
        let mut new = example();
        new.nodes[1].instances = 3;
        new.nodes[1].resources.cpu = None;
        if let crate::template::NodeKind::Project(p) = &mut new.nodes[1].kind {
            p.parameters.insert("sleep".into(), "5".into());
        }
        new.nodes.remove(2);
        new.edges.retain(|e| e.to != "report");
        new.edges[0].partition.mode = crate::template::PartitionMode::Broadcast;
        new.parameters[0].default = Some("8".into());
        let mut added = old.nodes[0].clone();
        added.id = "prepare-2".into();
        new.nodes.push(added);
        let changes = diff(&old, &new);
        let expected = vec![
            changed(
                "parameter parts",
                "default",
                Some("\"4\"".into()),
                Some("\"8\"".into()),
            ),
            changed(
                "node train",
                "instances",
                Some("2".into()),
                Some("3".into()),
            ),
            changed("node train", "parameters.sleep", None, Some("\"5\"".into())),
            changed("node train", "resources.cpu", Some("\"1\"".into()), None),
            Change::Added {
                what: "node prepare-2".into(),
            },
            Change::Removed {
                what: "node report".into(),
            },
            changed(
                "edge prepare → train (data)",
                "partition.mode",
                Some("\"by-file\"".into()),
                Some("\"broadcast\"".into()),
            ),
            Change::Removed {
                what: "edge train → report (models)".into(),
            },
        ];
        assert_eq!(changes, expected);
    }

    #[test]
    fn a_move_is_one_change() {
        let old = example();
        let mut new = example();
        new.nodes[0].position = Some(crate::template::Position { x: 10.0, y: 20.0 });
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![changed(
                "node prepare",
                "position",
                Some(r#"{"x":0.0,"y":80.0}"#.into()),
                Some(r#"{"x":10.0,"y":20.0}"#.into())
            )]
        );
    }
}
