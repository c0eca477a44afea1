//! The artifact roots of the MLflow runs this agent made, the latest few thousand. A step
//! whose inputs are those runs' outputs gets their roots with its work item, and does not ask
//! MLflow where its inputs are (a `runs/get` per upstream run and step: a chain's every step,
//! a fan-out's every instance).

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Runs remembered, at most (the oldest are forgotten first).
const REMEMBERED: usize = 4096;
/// Roots handed to one step, at most: its work item travels in a pod's Secret, whose size is
/// bounded, and a fan-in of thousands of runs asks MLflow for the rest as it always did.
const PER_STEP: usize = 256;

#[derive(Default)]
pub struct KnownRoots {
    order: VecDeque<String>,
    roots: HashMap<String, String>,
}

impl KnownRoots {
    /// Notes the artifact root MLflow gave a run this agent made.
    pub fn remember(&mut self, run_id: &str, artifact_uri: &str) {
        if self
            .roots
            .insert(run_id.to_string(), artifact_uri.to_string())
            .is_none()
        {
            self.order.push_back(run_id.to_string());
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.roots.remove(&oldest);
            }
        }
    }

    /// The known roots of `runs` (those a step reads its inputs from).
    pub fn of<'a>(&self, runs: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for run in runs {
            if out.len() == PER_STEP {
                break;
            }
            if let Some(root) = self.roots.get(run) {
                out.insert(run.to_string(), root.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_roots_it_knows_only() {
        let mut known = KnownRoots::default();
        known.remember("a", "mlflow-artifacts:/1/a/artifacts");
        known.remember("x", "mlflow-artifacts:/1/x/artifacts");
        let roots = known.of(["a", "b", "a"]);
        assert_eq!(
            roots,
            BTreeMap::from([("a".into(), "mlflow-artifacts:/1/a/artifacts".into())])
        );
    }

    #[test]
    fn forgets_the_oldest_and_hands_out_a_bounded_number() {
        let mut known = KnownRoots::default();
        let runs: Vec<String> = (0..REMEMBERED + 10).map(|i| format!("r{i}")).collect();
        for r in &runs {
            known.remember(r, &format!("s3://b/{r}"));
        }
        known.remember("r20", "s3://b/r20");
        assert_eq!(known.roots.len(), REMEMBERED);
        assert_eq!(known.order.len(), REMEMBERED);
        assert!(!known.roots.contains_key("r0") && known.roots.contains_key("r10"));
        assert_eq!(known.of(runs.iter().map(String::as_str)).len(), PER_STEP);
    }
}
