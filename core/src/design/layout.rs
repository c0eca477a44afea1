//! The designer's auto-layout: nodes in layers left to right by their longest upstream path,
//! ordered within a layer to reduce crossings.

use std::collections::HashMap;

use crate::template::{Position, Template};

/// Horizontal and vertical spacing of the auto-layout, in canvas units.
pub const LAYER_GAP: f64 = 300.0;
pub const ROW_GAP: f64 = 110.0;

/// Gives the nodes that have no position their place in [`layout`], keeping the others (a
/// hand-written template opened in the designer or the run view).
pub fn place_unpositioned(t: &mut Template) {
    if t.nodes.iter().all(|n| n.position.is_some()) {
        return;
    }
    let at = layout(t);
    for n in &mut t.nodes {
        n.position = n.position.or(at.get(&n.id).copied());
    }
}

/// Layered, left-to-right positions: a node's layer is its longest path from a source; within
/// a layer nodes are ordered by the mean row of their upstream nodes (fewer crossings). Nodes on
/// a cycle (an invalid draft) go to the last layer.
pub fn layout(t: &Template) -> HashMap<String, Position> {
    let ids: Vec<&str> = t.nodes.iter().map(|n| n.id.as_str()).collect();
    let mut layer: HashMap<&str, usize> = ids.iter().map(|id| (*id, 0)).collect();
    // Longest-path layering by relaxation; |V| rounds bound it even with cycles.
    for _ in 0..ids.len() {
        let mut changed = false;
        for e in &t.edges {
            if let (Some(&lf), Some(&lt)) = (layer.get(e.from.as_str()), layer.get(e.to.as_str())) {
                if lt < lf + 1 && lf + 1 < ids.len().max(1) {
                    layer.insert(e.to.as_str(), lf + 1);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let depth = layer.values().copied().max().unwrap_or(0);
    let mut rows: HashMap<&str, f64> = HashMap::new();
    let mut out = HashMap::new();
    for l in 0..=depth {
        let mut members: Vec<(f64, usize, &str)> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| layer[*id] == l)
            .map(|(order, id)| {
                let ups: Vec<f64> = t
                    .edges
                    .iter()
                    .filter(|e| e.to == *id)
                    .filter_map(|e| rows.get(e.from.as_str()).copied())
                    .collect();
                let key = if ups.is_empty() {
                    order as f64
                } else {
                    ups.iter().sum::<f64>() / ups.len() as f64
                };
                (key, order, *id)
            })
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (row, (_, _, id)) in members.into_iter().enumerate() {
            rows.insert(id, row as f64);
            out.insert(
                id.to_string(),
                Position {
                    x: l as f64 * LAYER_GAP,
                    y: row as f64 * ROW_GAP,
                },
            );
        }
    }
    out
}
