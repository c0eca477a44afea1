//! How nodes and edges are drawn, shared by the designer and the run view.

use concurrent_core::template::{Node, NodeKind, Position};
use leptos::prelude::*;

pub use concurrent_core::design::{NODE_H, NODE_W};

/// The SVG path of an edge from `from`'s output port to `to`'s input port.
pub fn edge_path(from: Position, to: Position) -> String {
    let (x1, y1) = (from.x + NODE_W, from.y + NODE_H / 2.0);
    let (x2, y2) = (to.x, to.y + NODE_H / 2.0);
    let bend = ((x2 - x1).abs() / 2.0).max(40.0);
    format!(
        "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
        x1 + bend,
        x2 - bend
    )
}

/// A node's box: its frame and kind band, and its title and subtitle when given. The `<g>`
/// around it (position, state classes, events) belongs to who draws it.
#[component]
pub fn NodeBox(title: String, #[prop(optional_no_strip)] sub: Option<String>) -> impl IntoView {
    view! {
        <rect class="cc-node-box" width=NODE_W height=NODE_H rx="8"></rect>
        <rect class="cc-node-band" width="6" height=NODE_H rx="3"></rect>
        <text class="cc-node-title" x="16" y="23">{title}</text>
        {sub.map(|s| view! { <text class="cc-node-sub" x="16" y="42">{s}</text> })}
    }
}

/// The arrowhead of edges, as an SVG marker with this id (`marker-end="url(#<id>)"`).
pub fn arrow_marker(id: &'static str) -> impl IntoView {
    view! {
        <defs>
            <marker id=id viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                <path d="M 0 0 L 10 5 L 0 10 z" class="cc-arrowhead"></path>
            </marker>
        </defs>
    }
}

/// The second line of a node's box: what it runs.
pub fn subtitle(n: &Node) -> String {
    let what = match &n.kind {
        NodeKind::Project(p) if p.uri.is_empty() => format!("project · {}", p.entry_point),
        NodeKind::Project(p) => format!("{} · {}", short(&p.uri), p.entry_point),
        NodeKind::Inference(i) if i.model_uri.is_empty() => "model inference".into(),
        NodeKind::Inference(i) => format!("predict · {}", short(&i.model_uri)),
        NodeKind::Input(_) => "input data".into(),
        NodeKind::Approval(a) => match &a.compare {
            Some(c) => format!("approval · vs {}@{}", c.model, c.alias),
            None => "approval".into(),
        },
        NodeKind::Register(r) if r.model.is_empty() => "register model".into(),
        NodeKind::Register(r) => match &r.alias {
            Some(a) => format!("register · {}@{a}", r.model),
            None => format!("register · {}", r.model),
        },
    };
    let what = match &n.when {
        Some(_) => format!("if … · {what}"),
        None => what,
    };
    let what = match n.sweep() {
        Some(s) => format!("{what} · {} points", s.count()),
        None => what,
    };
    if n.instances > 1 {
        format!("{what} · ×{}", n.instances)
    } else {
        what
    }
}

/// The last path segment of a URI, so long git URLs fit in a node.
fn short(uri: &str) -> &str {
    let trimmed = uri.trim_end_matches('/').trim_end_matches(".git");
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Truncates a label to fit the node's width.
pub fn fit(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}
