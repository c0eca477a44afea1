//! A template's edges: which nodes they join, which input they feed, how they partition; and
//! cycles.

use std::collections::{BTreeMap, HashMap};

use super::{key_regex_problem, Problems, Target};
use crate::names::identifier_problem;
use crate::template::{NodeKind, PartitionMode, Template};

/// Checks every edge against the nodes (`ids`: node id → index).
pub(super) fn check(t: &Template, ids: &HashMap<String, usize>, p: &mut Problems) {
    let mut seen = BTreeMap::new();
    for (i, e) in t.edges.iter().enumerate() {
        let at = Target::Edge(i);
        for (field, id) in [("from", &e.from), ("to", &e.to)] {
            if !ids.contains_key(id) {
                p.at(
                    at,
                    field,
                    format!("refers to node {id:?}, which does not exist"),
                );
            }
        }
        if e.from == e.to {
            p.at(at, "to", format!("node {:?} cannot feed itself", e.to));
        }
        if let Some(&to) = ids.get(&e.to) {
            if matches!(t.nodes[to].kind, NodeKind::Input(_)) {
                p.at(
                    at,
                    "to",
                    format!("node {:?} is an input node and takes no inputs", e.to),
                );
            }
        }
        if let Some(why) = identifier_problem(&e.input) {
            p.at(at, "input", format!("input name {:?} {why}", e.input));
        }
        if let Some(first) = seen.insert((e.to.clone(), e.input.clone()), i) {
            p.at(
                at,
                "input",
                format!(
                    "input {:?} of node {:?} is already fed by /edges/{first}",
                    e.input, e.to
                ),
            );
        }
        if let Some(sel) = &e.select {
            if sel.metric.trim().is_empty() {
                p.at(
                    at,
                    "select/metric",
                    "names no metric; write the MLflow metric to choose by (e.g. val_auc)",
                );
            }
            if sel.top == 0 {
                p.at(at, "select/top", "must be at least 1");
            } else if let Some(&from) = ids.get(&e.from) {
                let have = t.nodes[from].instance_count();
                if sel.top > have {
                    p.at(
                        at,
                        "select/top",
                        format!(
                            "is {}, but node {:?} runs {have} instance(s)",
                            sel.top, e.from
                        ),
                    );
                }
            }
        }
        match (&e.partition.mode, &e.partition.key_regex) {
            (PartitionMode::Unknown(m), _) => p.at(
                at,
                "partition/mode",
                format!(
                    "unknown partitioning mode {m:?}; use one of {}",
                    PartitionMode::KNOWN.join(", ")
                ),
            ),
            (PartitionMode::ByKey, None) => p.at(
                at,
                "partition/keyRegex",
                "by-key partitioning needs a keyRegex with one capture group",
            ),
            (PartitionMode::ByKey, Some(re)) => {
                if let Some(why) = key_regex_problem(re) {
                    p.at(at, "partition/keyRegex", why);
                }
            }
            (_, Some(_)) => p.at(
                at,
                "partition/keyRegex",
                "is only used with by-key partitioning; remove it",
            ),
            _ => {}
        }
    }
}

/// A cycle as node ids, first id repeated at the end, or `None` for a DAG. Deterministic: the
/// search starts from nodes in template order. Iterative, so a 10,000-node chain cannot
/// overflow the stack (a Worker's is small).
pub fn find_cycle(t: &Template) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); t.nodes.len()];
    for e in &t.edges {
        if let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) {
            next[a].push(b);
        }
    }
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut color = vec![0u8; t.nodes.len()];
    for root in 0..t.nodes.len() {
        if color[root] != 0 {
            continue;
        }
        // The path: (node, index of its next edge to follow).
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&mut (v, ref mut k)) = stack.last_mut() {
            if let Some(&w) = next[v].get(*k) {
                *k += 1;
                match color[w] {
                    0 => {
                        color[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => {
                        let start = stack.iter().position(|&(x, _)| x == w).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|&(x, _)| t.nodes[x].id.clone())
                            .collect();
                        cycle.push(t.nodes[w].id.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                color[v] = 2;
                stack.pop();
            }
        }
    }
    None
}
