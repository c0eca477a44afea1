//! Best-of selection on an edge: which upstream instances pass their outputs downstream, by
//! an MLflow metric their attempts logged (reported by the agents with each outcome), and what
//! a downstream node may read of the choice (`{{upstream.<node>.best.…}}`).

use std::collections::BTreeMap;

use crate::params::upstream_key;
use crate::partition::{input_path, ArtifactFile};
use crate::template::{Edge, Select, SelectMode};

use super::state::{Candidate, NodeRun, RunState, Selection};

/// The files `edge` passes from `from` (the chosen instances' outputs) and the choice made.
/// With `top: 1` the chosen outputs keep the paths the step wrote; with more, each is under
/// its instance's number, as fan-in lays them out.
///
/// # Errors
/// When no instance logged the metric: nothing may be chosen silently.
pub(super) fn choose(
    from: &NodeRun,
    edge: &Edge,
    sel: &Select,
) -> Result<(Vec<ArtifactFile>, Selection), String> {
    let candidates: Vec<Candidate> = from
        .successes()
        .map(|(inst, a)| Candidate {
            instance: inst.index,
            mlflow_run_id: a.mlflow_run_id.clone(),
            value: a.facts.metrics.get(&sel.metric).copied(),
        })
        .collect();
    let chosen = rank(&candidates, sel.mode, sel.top);
    if chosen.is_empty() {
        return Err(format!(
            "none of node {:?}'s {} successful instance(s) logged the metric {:?}, which the edge into input {:?} selects by; log it in the step (mlflow.log_metric({:?}, …)) or select by another metric",
            from.id,
            candidates.len(),
            sel.metric,
            edge.input,
            sel.metric
        ));
    }
    let count = from.instances.len() as u32;
    let files = chosen
        .iter()
        .filter_map(|&i| from.instances.get(i as usize))
        .flat_map(|inst| {
            inst.outputs.iter().map(move |f| ArtifactFile {
                path: if sel.top <= 1 {
                    f.path.clone()
                } else {
                    input_path(count, inst.index, &f.path)
                },
                ..f.clone()
            })
        })
        .collect();
    Ok((
        files,
        Selection {
            from: from.id.clone(),
            input: edge.input.clone(),
            metric: sel.metric.clone(),
            mode: sel.mode,
            chosen,
            candidates,
            recorded: false,
        },
    ))
}

/// The `top` best candidates that have a value, best first; ties go to the lower instance, so
/// the same values always choose the same.
pub(super) fn rank(candidates: &[Candidate], mode: SelectMode, top: u32) -> Vec<u32> {
    let mut ranked: Vec<(f64, u32)> = candidates
        .iter()
        .filter_map(|c| Some((c.value?, c.instance)))
        .collect();
    ranked.sort_by(|(x, a), (y, b)| {
        let order = match mode {
            SelectMode::Min => x.total_cmp(y),
            SelectMode::Max => y.total_cmp(x),
        };
        order.then(a.cmp(b))
    });
    ranked
        .into_iter()
        .take(top.max(1) as usize)
        .map(|(_, i)| i)
        .collect()
}

/// What node `node_id` may read of its upstream choices, by [`upstream_key`]: for the best
/// instance of each node a `select` edge takes it from, `run_id`, `model_uri` (the model it
/// logged, or `runs:/<run>/model`) and `metrics.<name>` of every metric it reported.
pub fn upstream_values(run: &RunState, node_id: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(node) = run.node(node_id) else {
        return out;
    };
    for sel in &node.selections {
        let best = sel
            .chosen
            .first()
            .and_then(|&i| run.node(&sel.from)?.instances.get(i as usize)?.current());
        let Some(a) = best else { continue };
        if let Some(id) = &a.mlflow_run_id {
            out.insert(upstream_key(&sel.from, "run_id"), id.clone());
            let model = a
                .facts
                .model_uri
                .clone()
                .unwrap_or_else(|| format!("runs:/{id}/model"));
            out.insert(upstream_key(&sel.from, "model_uri"), model);
        }
        for (k, v) in &a.facts.metrics {
            out.insert(
                upstream_key(&sel.from, &format!("metrics.{k}")),
                v.to_string(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn candidates(values: &[Option<i8>]) -> Vec<Candidate> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Candidate {
                instance: i as u32,
                mlflow_run_id: Some(format!("run{i}")),
                value: v.map(f64::from),
            })
            .collect()
    }

    proptest! {
        /// The chosen are the best `top` of those with a value, best first, and nothing
        /// without a value is ever chosen; no unchosen one beats a chosen one.
        #[test]
        fn the_chosen_beat_everything_left_out(
            values in proptest::collection::vec(proptest::option::of(-5i8..5), 0..12),
            top in 0u32..5,
            min in any::<bool>(),
        ) {
            let mode = if min { SelectMode::Min } else { SelectMode::Max };
            let c = candidates(&values);
            let chosen = rank(&c, mode, top);
            let valued = values.iter().filter(|v| v.is_some()).count();
            prop_assert_eq!(chosen.len(), valued.min(top.max(1) as usize));
            let better = |a: i8, b: i8| if min { a < b } else { a > b };
            let value = |i: u32| values[i as usize].expect("only valued ones are chosen");
            for w in chosen.windows(2) {
                prop_assert!(!better(value(w[1]), value(w[0])), "best first");
                if value(w[0]) == value(w[1]) {
                    prop_assert!(w[0] < w[1], "ties go to the lower instance");
                }
            }
            for (i, v) in values.iter().enumerate() {
                let (i, Some(v)) = (i as u32, *v) else { continue };
                if !chosen.contains(&i) {
                    for &k in &chosen {
                        prop_assert!(!better(v, value(k)), "instance {} ({}) left out for {} ({})", i, v, k, value(k));
                    }
                }
            }
        }
    }
}
