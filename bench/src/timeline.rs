//! Where a step's time goes: the agent's and the step runner's phase timings (their JSON log
//! lines "step reported" and "step ran"), lined up with the times the run recorded.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::median;

/// One step's phases as the agent and its step runner logged them.
#[derive(Default, Debug)]
pub struct StepTimes {
    /// When the agent had the lease's answer (ms since the epoch).
    pub leased_at_ms: Option<f64>,
    /// The agent's phases: confirm, mlflow_run, step, report.
    pub agent: BTreeMap<String, f64>,
    /// The step runner's phases: inputs, node, outputs, learn_and_log.
    pub runner: BTreeMap<String, f64>,
}

/// `a=1.5 b=2.0` → {a: 1.5, b: 2.0}.
fn phases(text: &str) -> BTreeMap<String, f64> {
    text.split_whitespace()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The steps of an agent's log (written with `CONCURRENT_LOG_FORMAT=json`), by work item id.
pub fn read(agent_log: &str) -> BTreeMap<String, StepTimes> {
    let mut steps: BTreeMap<String, StepTimes> = BTreeMap::new();
    for line in agent_log.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let f = &v["fields"];
        let (Some(item), Some(text)) = (f["item"].as_str(), f["phases_ms"].as_str()) else {
            continue;
        };
        let step = steps.entry(item.to_string()).or_default();
        match f["message"].as_str() {
            Some("step reported") => {
                step.agent = phases(text);
                step.leased_at_ms = f["leased_at_ms"].as_f64();
            }
            Some("step ran") => step.runner = phases(text),
            _ => {}
        }
    }
    steps
}

/// Medians of each phase over `steps`, as `name m ms` joined by `, `.
fn medians(steps: &[&StepTimes], which: fn(&StepTimes) -> &BTreeMap<String, f64>) -> String {
    let mut names: Vec<&String> = steps.iter().flat_map(|s| which(s).keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let mut v: Vec<f64> = steps
                .iter()
                .filter_map(|s| which(s).get(n).copied())
                .collect();
            format!("{n} {:.1} ms", median(&mut v))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The breakdown rows of a chain's steps (lease to report), phase by phase. `leases`: the
/// start of each step as the run recorded it (ms since the epoch) and its work item id.
pub fn rows(steps: &BTreeMap<String, StepTimes>, leases: &[(f64, String)]) -> Vec<crate::Row> {
    let all: Vec<&StepTimes> = steps.values().filter(|s| !s.agent.is_empty()).collect();
    // The step runner's own time against the agent's wait for it: the rest is the process's
    // start and exit (exec, reading the spec, writing the result).
    let mut overhead: Vec<f64> = all
        .iter()
        .filter(|s| !s.runner.is_empty())
        .filter_map(|s| Some(s.agent.get("step")? - s.runner.values().sum::<f64>()))
        .collect();
    // From the run's record of the next lease to the agent having its answer.
    let mut answer: Vec<f64> = leases
        .iter()
        .filter_map(|(started, item)| Some(steps.get(item)?.leased_at_ms? - started))
        .collect();
    vec![
        (
            "one trivial step, where the time goes (agent)".into(),
            format!("{} steps", all.len()),
            format!(
                "medians: {}; the lease's answer reaching the agent after the run recorded it {:.1} ms",
                medians(&all, |s| &s.agent),
                median(&mut answer)
            ),
        ),
        (
            "one trivial step, where the step runner's time goes".into(),
            format!("{:.1} ms process start and exit", median(&mut overhead)),
            format!(
                "medians: {} (node: the project's tags and its process, `python noop.py`)",
                medians(&all, |s| &s.runner)
            ),
        ),
    ]
}
