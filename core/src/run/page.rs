//! A node's instances a page at a time, filtered by state: what a run view of a 10,000-wide
//! node shows without handling every instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::{Instance, InstanceState, NodeRun, RunState};

/// Most instances one page of the API holds.
pub const MAX_PAGE: usize = 500;

/// A run without its instances, and how many of each node's instances are in each state: what
/// a view of a big run reads every few seconds (`GET /runs/<id>/overview`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOverview {
    /// The run, every node's instance list and shared inputs left empty (a page has them).
    pub run: RunState,
    pub nodes: Vec<NodeCounts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    pub id: String,
    pub instances: usize,
    /// State name → instances in it (only states that have some).
    pub counts: BTreeMap<String, usize>,
    /// What the node's attempts used, summed.
    #[serde(default, skip_serializing_if = "is_nothing")]
    pub usage: crate::wire::Usage,
    /// How many of its instances reused a cached result.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached: usize,
}

fn is_nothing(u: &crate::wire::Usage) -> bool {
    *u == crate::wire::Usage::default()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl NodeCounts {
    pub fn count(&self, state: InstanceState) -> usize {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }

    /// The state the node shows (see [`super::state::shown_state`]).
    pub fn shown_state(&self) -> InstanceState {
        super::state::shown_state(self.instances, |s| self.count(s))
    }
}

/// One page of a node's instances (`GET /runs/<id>/instances?node=&state=&offset=&limit=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancesPage {
    pub node: String,
    /// All the node's instances.
    pub instances: usize,
    /// Those matching the state filter.
    pub matched: usize,
    pub offset: usize,
    pub items: Vec<Instance>,
    /// What every instance of the node receives besides its own `inputs` (broadcast edges).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_inputs: BTreeMap<String, Vec<crate::partition::ArtifactFile>>,
}

/// The run's overview: no instances, and each node's counts by state.
pub fn overview(run: &RunState) -> RunOverview {
    let nodes = run
        .nodes
        .iter()
        .map(|n| {
            let mut counts = BTreeMap::new();
            for i in &n.instances {
                *counts.entry(i.state.as_str().to_string()).or_insert(0) += 1;
            }
            let cached = n
                .successes()
                .filter(|(_, a)| a.facts.cached_from.is_some())
                .count();
            NodeCounts {
                id: n.id.clone(),
                instances: n.instances.len(),
                counts,
                usage: super::usage::node_usage(n),
                cached,
            }
        })
        .collect();
    RunOverview {
        run: run.clone_header(),
        nodes,
    }
}

/// A page of `node`'s instances, or `None` when the run has no such node.
pub fn instances_page(run: &RunState, node: &str, filter: InstanceFilter) -> Option<InstancesPage> {
    let n = run.nodes.iter().find(|n| n.id == node)?;
    let filter = InstanceFilter {
        limit: filter.limit.clamp(1, MAX_PAGE),
        ..filter
    };
    let p = page(n, filter);
    Some(InstancesPage {
        node: node.to_string(),
        instances: n.instances.len(),
        matched: p.matched,
        offset: filter.offset,
        items: p.instances.into_iter().cloned().collect(),
        shared_inputs: n.shared_inputs.clone(),
    })
}

/// Which instances of a node to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceFilter {
    /// Only instances in this state; all when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
    /// Matching instances to skip.
    #[serde(default)]
    pub offset: usize,
    /// Most instances on the page.
    pub limit: usize,
}

/// One page of a node's instances.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePage<'a> {
    pub instances: Vec<&'a Instance>,
    /// How many instances match the filter (over all pages).
    pub matched: usize,
    /// How many instances are in each state (only states that have some), in
    /// [`InstanceState::ALL`] order.
    pub counts: Vec<(InstanceState, usize)>,
}

impl InstancePage<'_> {
    /// The number of pages the matching instances fill (at least one).
    pub fn pages(&self, limit: usize) -> usize {
        self.matched.div_ceil(limit.max(1)).max(1)
    }
}

/// The page of `node`'s instances that `filter` picks.
pub fn page(node: &NodeRun, filter: InstanceFilter) -> InstancePage<'_> {
    let mut counts = [0usize; InstanceState::ALL.len()];
    for i in &node.instances {
        counts[InstanceState::ALL
            .iter()
            .position(|s| *s == i.state)
            .unwrap_or(0)] += 1;
    }
    let matching = node
        .instances
        .iter()
        .filter(|i| filter.state.is_none_or(|s| i.state == s));
    let matched = match filter.state {
        None => node.instances.len(),
        Some(s) => counts[InstanceState::ALL.iter().position(|x| *x == s).unwrap_or(0)],
    };
    InstancePage {
        instances: matching.skip(filter.offset).take(filter.limit).collect(),
        matched,
        counts: InstanceState::ALL
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn node(states: &[InstanceState]) -> NodeRun {
        NodeRun {
            id: "n".into(),
            instances: states
                .iter()
                .enumerate()
                .map(|(index, state)| Instance {
                    index: index as u32,
                    state: *state,
                    inputs: BTreeMap::new(),
                    attempts: vec![],
                    outputs: vec![],
                    retry_at: None,
                    repair_base: 0,
                })
                .collect(),
            ..NodeRun::new("n")
        }
    }

    #[test]
    fn a_filtered_page_counts_every_state_and_takes_its_slice() {
        use InstanceState::*;
        let states: Vec<InstanceState> = (0..1000)
            .map(|i| match i % 10 {
                0 => Failed,
                1 | 2 => Running,
                _ => Succeeded,
            })
            .collect();
        let n = node(&states);
        let p = page(
            &n,
            InstanceFilter {
                state: Some(Running),
                offset: 50,
                limit: 50,
            },
        );
        assert_eq!(p.matched, 200);
        assert_eq!(p.pages(50), 4);
        assert_eq!(p.instances.len(), 50);
        assert!(p.instances.iter().all(|i| i.state == Running));
        assert_eq!(p.instances[0].index, 251, "the 51st running one");
        assert_eq!(p.counts, [(Running, 200), (Succeeded, 700), (Failed, 100)]);
        let all = page(
            &n,
            InstanceFilter {
                state: None,
                offset: 990,
                limit: 50,
            },
        );
        assert_eq!((all.matched, all.instances.len()), (1000, 10));
        let none = page(
            &n,
            InstanceFilter {
                state: Some(Cancelled),
                offset: 0,
                limit: 50,
            },
        );
        assert_eq!(
            (none.matched, none.instances.len(), none.pages(50)),
            (0, 0, 1)
        );
    }

    #[test]
    fn an_overview_counts_without_instances_and_a_page_is_bounded() {
        use InstanceState::*;
        let t: crate::template::Template = serde_json::from_value(serde_json::json!({
            "apiVersion": "concurrent/v1", "name": "t",
            "nodes": [{"id": "n", "kind": "project", "uri": "p", "instances": 3}]
        }))
        .unwrap();
        let mut run =
            crate::run::start("r".into(), t, 1, BTreeMap::new(), "local".into(), None, 0).unwrap();
        run.nodes[0] = NodeRun {
            id: "n".into(),
            ..node(&[Running, Failed, Running])
        };
        let o = overview(&run);
        assert!(o.run.nodes[0].instances.is_empty());
        assert_eq!(o.nodes[0].instances, 3);
        assert_eq!(
            o.nodes[0].counts,
            BTreeMap::from([("failed".into(), 1), ("running".into(), 2)])
        );
        let p = instances_page(
            &run,
            "n",
            InstanceFilter {
                state: Some(Running),
                offset: 1,
                limit: 100_000,
            },
        )
        .unwrap();
        assert_eq!(
            (p.instances, p.matched, p.items.len(), p.items[0].index),
            (3, 2, 1, 2)
        );
        assert!(instances_page(&run, "nope", InstanceFilter::default()).is_none());
    }

    proptest! {
        #[test]
        fn pages_cover_the_matching_instances_once(
            states in proptest::collection::vec(proptest::sample::select(InstanceState::ALL.to_vec()), 0..300),
            limit in 1usize..40,
            state in proptest::option::of(proptest::sample::select(InstanceState::ALL.to_vec())),
        ) {
            let n = node(&states);
            let first = page(&n, InstanceFilter { state, offset: 0, limit });
            let seen: Vec<u32> = (0..first.pages(limit))
                .flat_map(|p| page(&n, InstanceFilter { state, offset: p * limit, limit }).instances.into_iter().map(|i| i.index).collect::<Vec<_>>())
                .collect();
            let want: Vec<u32> = n.instances.iter().filter(|i| state.is_none_or(|s| i.state == s)).map(|i| i.index).collect();
            prop_assert_eq!(seen, want);
            prop_assert_eq!(first.counts.iter().map(|c| c.1).sum::<usize>(), states.len());
        }
    }
}
