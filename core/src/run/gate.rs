//! Whether a node whose upstream nodes are over runs or is skipped: its trigger rule over how
//! they ended, then its condition (core's `expr`) over the run's parameters, upstream states
//! and the metrics their attempts logged.

use crate::expr::{self, BestField, Facts, Value};
use crate::template::TriggerRule;

use super::state::{Ended, InstanceState, RunState, Selection};

/// What becomes of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Go {
    Run,
    Skip(String),
}

/// By its trigger rule, given how each upstream node ended and, when a failure is stopping
/// the run, which node failed.
pub(super) fn by_rule(rule: TriggerRule, upstream: &[(&str, Ended)], stopping: Option<&str>) -> Go {
    match rule {
        TriggerRule::AllSucceeded => {
            if let Some(failed) = stopping {
                return Go::Skip(format!("not run: node {failed:?} failed, so the run stops"));
            }
            match upstream.iter().find(|(_, e)| *e != Ended::Succeeded) {
                None => Go::Run,
                Some((id, e)) => Go::Skip(format!(
                    "upstream node {id:?} {}; this node runs only when all of them succeed (its trigger rule is allSucceeded)",
                    match e {
                        Ended::Failed => "failed",
                        Ended::Skipped => "was skipped",
                        _ => "was cancelled",
                    }
                )),
            }
        }
        TriggerRule::AllDone => Go::Run,
        TriggerRule::AnyFailed => {
            if upstream
                .iter()
                .any(|(_, e)| matches!(e, Ended::Failed | Ended::Cancelled))
            {
                Go::Run
            } else {
                Go::Skip("no upstream node failed (its trigger rule is anyFailed)".into())
            }
        }
    }
}

/// By its condition `when`, read against the run (and the choices the node's `select` edges
/// made).
///
/// # Errors
/// When the condition cannot be evaluated (a metric nobody logged, a type that does not fit):
/// running or skipping the node would then be a guess.
pub(super) fn by_condition(
    when: &str,
    run: &RunState,
    selections: &[Selection],
) -> Result<Go, String> {
    let e = expr::parse(when).map_err(|e| format!("its condition {when:?} does not parse: {e}"))?;
    let facts = RunFacts { run, selections };
    match expr::eval(&e, &facts) {
        Ok(true) => Ok(Go::Run),
        Ok(false) => Ok(Go::Skip(format!(
            "its condition is false: {when} ({})",
            expr::explain(&e, &facts)
        ))),
        Err(why) => Err(format!("its condition {when:?} cannot be evaluated: {why}")),
    }
}

/// A run as a condition reads it.
struct RunFacts<'a> {
    run: &'a RunState,
    selections: &'a [Selection],
}

impl RunFacts<'_> {
    fn succeeded_metric(&self, node: &str, instance: u32, metric: &str) -> Option<f64> {
        let inst = self.run.node(node)?.instances.get(instance as usize)?;
        if inst.state != InstanceState::Succeeded {
            return None;
        }
        inst.current()?.facts.metrics.get(metric).copied()
    }
}

impl Facts for RunFacts<'_> {
    fn param(&self, name: &str) -> Option<String> {
        self.run.parameters.get(name).cloned()
    }

    fn state(&self, node: &str) -> Option<String> {
        Some(self.run.node(node)?.ended()?.as_str().to_string())
    }

    fn best(&self, node: &str, field: &BestField) -> Option<Value> {
        let sel = self.selections.iter().find(|s| s.from == node)?;
        let i = *sel.chosen.first()?;
        let a = self.run.node(node)?.instances.get(i as usize)?.current()?;
        match field {
            BestField::RunId => a.mlflow_run_id.clone().map(Value::Str),
            BestField::ModelUri => {
                let run = a.mlflow_run_id.as_ref()?;
                Some(Value::Str(
                    a.facts
                        .model_uri
                        .clone()
                        .unwrap_or_else(|| format!("runs:/{run}/model")),
                ))
            }
            BestField::Metric(m) => a.facts.metrics.get(m).copied().map(Value::Num),
        }
    }

    fn instance_metric(&self, node: &str, instance: u32, metric: &str) -> Option<f64> {
        self.succeeded_metric(node, instance, metric)
    }

    fn metrics(&self, node: &str, metric: &str) -> Vec<f64> {
        let Some(n) = self.run.node(node) else {
            return Vec::new();
        };
        n.successes()
            .filter_map(|(_, a)| a.facts.metrics.get(metric).copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ended() -> impl Strategy<Value = Ended> {
        prop_oneof![
            Just(Ended::Succeeded),
            Just(Ended::Failed),
            Just(Ended::Skipped),
            Just(Ended::Cancelled)
        ]
    }

    proptest! {
        /// allSucceeded runs exactly when every upstream node succeeded and nothing is
        /// stopping the run; allDone always runs; anyFailed exactly when one failed or was
        /// stopped. A skip always says why.
        #[test]
        fn trigger_rules_follow_their_names(
            ups in proptest::collection::vec(ended(), 0..5),
            stopping in any::<bool>(),
        ) {
            let named: Vec<(&str, Ended)> = ups.iter().map(|e| ("up", *e)).collect();
            let stop = stopping.then_some("boom");
            let all_ok = ups.iter().all(|e| *e == Ended::Succeeded);
            let any_failed = ups.iter().any(|e| matches!(e, Ended::Failed | Ended::Cancelled));
            let go = |r| by_rule(r, &named, stop);
            prop_assert_eq!(go(TriggerRule::AllSucceeded) == Go::Run, all_ok && !stopping);
            prop_assert_eq!(go(TriggerRule::AllDone), Go::Run);
            prop_assert_eq!(go(TriggerRule::AnyFailed) == Go::Run, any_failed);
            for r in [TriggerRule::AllSucceeded, TriggerRule::AnyFailed] {
                if let Go::Skip(why) = go(r) {
                    prop_assert!(why.len() > 10);
                }
            }
        }
    }

    #[test]
    fn a_skip_names_the_upstream_node_that_did_not_succeed() {
        let go = by_rule(
            TriggerRule::AllSucceeded,
            &[("prep", Ended::Succeeded), ("eval", Ended::Skipped)],
            None,
        );
        assert!(
            matches!(go, Go::Skip(why) if why.starts_with("upstream node \"eval\" was skipped"))
        );
        let go = by_rule(
            TriggerRule::AllSucceeded,
            &[("prep", Ended::Succeeded)],
            Some("train"),
        );
        assert!(matches!(go, Go::Skip(why) if why.contains("\"train\" failed")));
    }
}
