//! What a run's attempts used, summed per node and for the run (from each attempt's
//! [`Usage`], measured where it ran): shown in the run view, logged on the parent run.

use crate::wire::Usage;

use super::state::{NodeRun, RunState};

/// The sum over every attempt of the node, failed ones included (they used it too).
pub fn node_usage(node: &NodeRun) -> Usage {
    node.instances
        .iter()
        .flat_map(|i| &i.attempts)
        .filter_map(|a| a.facts.usage)
        .fold(Usage::default(), Usage::combined)
}

/// The run's total, and each node's.
pub fn run_usage(run: &RunState) -> (Usage, Vec<(String, Usage)>) {
    let per_node: Vec<(String, Usage)> = run
        .nodes
        .iter()
        .map(|n| (n.id.clone(), node_usage(n)))
        .collect();
    let total = per_node
        .iter()
        .fold(Usage::default(), |t, (_, u)| t.combined(*u));
    (total, per_node)
}

/// The parent run's metrics of what the run used: `concurrent.<what>` for the run and
/// `concurrent.node.<id>.<what>` for each node that used anything.
pub fn parent_metrics(run: &RunState) -> Vec<(String, f64)> {
    let (total, per_node) = run_usage(run);
    let mut out: Vec<(String, f64)> = total
        .metrics()
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    for (id, u) in per_node {
        if u == Usage::default() {
            continue;
        }
        for (k, v) in u.metrics() {
            let what = k.trim_start_matches("concurrent.");
            out.push((format!("concurrent.node.{id}.{what}"), v));
        }
    }
    out
}
