//! Sweeps, best-of selection and usage through the whole machine: planned, queued, reported,
//! chosen from, recorded.

use std::collections::BTreeMap;

use super::*;
use crate::template::{NodeKind, Template};
use crate::wire::{Outcome, OutputFile, StepFacts, Usage, WorkItem};

/// prepare → train (swept) → report, `select` on the edge into report when `select` is given.
fn swept(
    sweep: serde_json::Value,
    train_instances: u32,
    select: Option<serde_json::Value>,
) -> RunState {
    let mut into_report = serde_json::json!({"from": "train", "to": "report", "input": "model"});
    let mut report_params = serde_json::json!({});
    if let Some(s) = select {
        into_report["select"] = s;
        report_params = serde_json::json!({"best": "{{upstream.train.best.run_id}}", "auc": "{{upstream.train.best.metrics.auc}}"});
    }
    let t: Template = serde_json::from_value(serde_json::json!({
        "apiVersion": "concurrent/v1",
        "name": "sweep",
        "nodes": [
            {"id": "prepare", "kind": "project", "uri": "p", "entryPoint": "prepare"},
            {"id": "train", "kind": "project", "uri": "p", "entryPoint": "train",
             "parameters": {"alpha": "9", "epochs": "3"}, "instances": train_instances, "sweep": sweep},
            {"id": "report", "kind": "project", "uri": "p", "entryPoint": "report",
             "parameters": report_params}
        ],
        "edges": [
            {"from": "prepare", "to": "train", "input": "data", "partition": {"mode": "by-file"}},
            into_report
        ]
    }))
    .unwrap();
    let problems = crate::validate(&t);
    assert!(problems.is_empty(), "{problems:?}");
    start(
        "run1".into(),
        t,
        1,
        BTreeMap::new(),
        "local".into(),
        None,
        0,
    )
    .unwrap()
}

/// Carries out effects until only queue work remains; the work items queued.
fn settle(run: &mut RunState, now: u64) -> Vec<WorkItem> {
    let mut queued = Vec::new();
    for _ in 0..50 {
        let round = plan_round(reconcile(run, now), 128);
        if round.is_empty() {
            break;
        }
        let mut events = Vec::new();
        for m in round.mlflow {
            events.push(match m {
                MlflowEffect::CreateParentRun { .. } => Event::ParentRunCreated(MlflowRef {
                    experiment_id: "1".into(),
                    run_id: "parent".into(),
                }),
                MlflowEffect::CloseAttemptRun { attempt, .. } => Event::AttemptRunClosed {
                    key: attempt,
                    run_id: None,
                },
                MlflowEffect::CloseUnreportedRun { attempt, .. } => Event::AttemptRunClosed {
                    key: attempt,
                    run_id: Some("x".into()),
                },
                MlflowEffect::RecordSelection { node, input, .. } => {
                    Event::SelectionRecorded { node, input }
                }
                MlflowEffect::SyncParentRun { status, .. } => Event::ParentRunSynced { status },
                MlflowEffect::RegisterModel { node, .. } => Event::ModelRegistered {
                    node,
                    version: "1".into(),
                },
                MlflowEffect::NoteNode { node, .. } => Event::NodeNoted { node },
            });
        }
        for item in round.enqueue.into_values().flatten() {
            events.push(Event::Enqueued { key: item.key() });
            queued.push(item);
        }
        for answer in apply_all(run, events, now) {
            answer.unwrap();
        }
    }
    queued
}

/// The agent's part: lease, make the MLflow run, report the outcome.
pub(super) fn run_item(run: &mut RunState, item: &WorkItem, outcome: Outcome, now: u64) {
    let key = item.key();
    apply(
        run,
        Event::Leased {
            key: key.clone(),
            agent: "a".into(),
        },
        now,
    )
    .unwrap();
    let run_id = format!("ml-{}-{}", item.node_id, item.instance);
    apply(
        run,
        Event::ChildRunCreated {
            key: key.clone(),
            run_id,
        },
        now,
    )
    .unwrap();
    apply(run, Event::Finished { key, outcome }, now).unwrap();
}

pub(super) fn output(path: &str, metrics: &[(&str, f64)], usage: Option<Usage>) -> Outcome {
    Outcome::Succeeded {
        outputs: vec![OutputFile {
            path: path.into(),
            size: 1,
            run_id: None,
            artifact_path: None,
            sha256: None,
        }],
        facts: StepFacts {
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            usage,
            ..Default::default()
        },
    }
}

fn project(item: &WorkItem) -> &crate::template::ProjectSpec {
    match &item.step.kind {
        NodeKind::Project(p) => p,
        other => panic!("{other:?}"),
    }
}

/// Prepare's success: four part files.
fn four_parts() -> Outcome {
    Outcome::Succeeded {
        outputs: (0..4)
            .map(|i| OutputFile {
                path: format!("part-{i}.csv"),
                size: 1,
                run_id: None,
                artifact_path: None,
                sha256: None,
            })
            .collect(),
        facts: Default::default(),
    }
}

#[test]
fn a_grid_sweep_runs_every_point_on_all_the_inputs_with_its_values_logged() {
    let mut run = swept(
        serde_json::json!({"grid": {"alpha": ["0.1", "1"], "l1_ratio": ["0.1", "0.5", "0.9"]}}),
        1,
        None,
    );
    let prep = settle(&mut run, 1).remove(0);
    run_item(&mut run, &prep, four_parts(), 2);
    let items = settle(&mut run, 3);
    assert_eq!(items.len(), 6, "one instance per point");
    for (i, item) in items.iter().enumerate() {
        let p = project(item);
        assert_eq!(
            p.parameters["epochs"], "3",
            "the node's other parameters stay"
        );
        assert_eq!(item.step.partition_count, 1);
        assert_eq!(
            item.step.inputs["data"].len(),
            4,
            "every point sees all the inputs"
        );
        let child = item.step.child_run.as_ref().unwrap();
        let tag = |k: &str| {
            child
                .tags
                .iter()
                .find(|(t, _)| t == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(tag("concurrent.sweep.point"), Some(i.to_string()));
        let params: BTreeMap<_, _> = child.params.iter().cloned().collect();
        assert_eq!(
            params["alpha"], p.parameters["alpha"],
            "the point's values are the run's params"
        );
    }
    let alphas: Vec<&str> = items
        .iter()
        .map(|i| project(i).parameters["alpha"].as_str())
        .collect();
    assert_eq!(alphas, ["0.1", "0.1", "0.1", "1", "1", "1"]);
    let l1: Vec<&str> = items
        .iter()
        .map(|i| project(i).parameters["l1_ratio"].as_str())
        .collect();
    assert_eq!(l1, ["0.1", "0.5", "0.9", "0.1", "0.5", "0.9"]);
}

#[test]
fn a_sweep_crossed_with_partitions_runs_every_point_on_each_partition() {
    let mut run = swept(
        serde_json::json!({"grid": {"alpha": ["1", "2", "3"]}, "crossPartitions": true}),
        2,
        None,
    );
    let prep = settle(&mut run, 1).remove(0);
    run_item(&mut run, &prep, four_parts(), 2);
    let items = settle(&mut run, 3);
    assert_eq!(items.len(), 6, "3 points × 2 partitions");
    let shape: Vec<(String, u32, u32)> = items
        .iter()
        .map(|i| {
            (
                project(i).parameters["alpha"].clone(),
                i.step.partition_index,
                i.step.partition_count,
            )
        })
        .collect();
    assert_eq!(
        shape[4],
        ("3".into(), 0, 2),
        "instance 4 is point 2 on partition 0"
    );
    assert_eq!(
        items[0].step.inputs["data"].len(),
        2,
        "each partition has half the files"
    );
}

#[test]
fn the_best_attempt_by_a_metric_passes_its_outputs_and_its_values_downstream() {
    let mut run = swept(
        serde_json::json!({"grid": {"alpha": ["1", "2", "3", "4"]}}),
        1,
        Some(serde_json::json!({"metric": "auc", "mode": "max"})),
    );
    let prep = settle(&mut run, 1).remove(0);
    run_item(&mut run, &prep, output("data.csv", &[], None), 2);
    let items = settle(&mut run, 3);
    let usage = Usage {
        wall_seconds: 2.0,
        cpu_seconds: 1.5,
        peak_memory_bytes: 100,
        gpu_seconds: 0.0,
    };
    for (item, auc) in items.iter().zip([Some(0.7), Some(0.93), None, Some(0.8)]) {
        let metrics: Vec<(&str, f64)> = auc.map(|v| ("auc", v)).into_iter().collect();
        run_item(
            &mut run,
            item,
            output("model.pkl", &metrics, Some(usage)),
            4,
        );
    }
    let report = settle(&mut run, 5);
    assert_eq!(report.len(), 1);
    let r = &report[0];
    // A broadcast edge: the node's shared inputs, merged into each item as it is leased.
    let files = &run.node("report").unwrap().shared_inputs["model"];
    assert_eq!(
        files.len(),
        1,
        "only the best instance's outputs: {files:?}"
    );
    assert_eq!(
        files[0].path, "model.pkl",
        "top 1 keeps the step's own paths"
    );
    assert_eq!(files[0].run_id, "ml-train-1");
    assert_eq!(project(r).parameters["best"], "ml-train-1");
    assert_eq!(project(r).parameters["auc"], "0.93");
    let sel = &run.node("report").unwrap().selections[0];
    assert_eq!(sel.chosen, vec![1]);
    assert_eq!(
        sel.without_metric(),
        vec![2],
        "the run says which instance lacked it"
    );
    assert!(sel.recorded, "recorded on the parent run");
    // What the run used, summed for the parent run once it ends.
    run_item(&mut run, r, output("report.txt", &[], Some(usage)), 6);
    let effects = reconcile(&run, 7);
    let metrics = effects
        .iter()
        .find_map(|e| match e {
            Effect::Mlflow(MlflowEffect::SyncParentRun { metrics, .. }) => Some(metrics.clone()),
            _ => None,
        })
        .expect("the parent run is closed");
    let m: BTreeMap<String, f64> = metrics.into_iter().collect();
    assert_eq!(
        m["concurrent.cpu_seconds"], 7.5,
        "four train attempts and the report"
    );
    assert_eq!(m["concurrent.node.train.cpu_seconds"], 6.0);
    assert_eq!(m["concurrent.peak_memory_bytes"], 100.0);
}

#[test]
fn a_selection_without_any_candidate_metric_fails_the_run_naming_it() {
    let mut run = swept(
        serde_json::json!({"grid": {"alpha": ["1", "2"]}}),
        1,
        Some(serde_json::json!({"metric": "val_auc", "mode": "max"})),
    );
    let prep = settle(&mut run, 1).remove(0);
    run_item(&mut run, &prep, output("data.csv", &[], None), 2);
    for item in settle(&mut run, 3) {
        run_item(
            &mut run,
            &item,
            output("model.pkl", &[("loss", 0.1)], None),
            4,
        );
    }
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.clone().unwrap();
    assert!(
        error.contains("\"val_auc\"") && error.contains("\"train\""),
        "{error}"
    );
}

#[test]
fn a_random_sweep_draws_the_same_points_in_a_new_run() {
    let sweep = serde_json::json!({"random": {"samples": 5, "seed": 11, "parameters": {"alpha": {"logUniform": [0.001, 1.0]}}}});
    let alphas = |mut run: RunState| -> Vec<String> {
        let prep = settle(&mut run, 1).remove(0);
        run_item(&mut run, &prep, output("d.csv", &[], None), 2);
        settle(&mut run, 3)
            .iter()
            .map(|i| project(i).parameters["alpha"].clone())
            .collect()
    };
    let first = alphas(swept(sweep.clone(), 1, None));
    assert_eq!(first.len(), 5);
    assert_eq!(first, alphas(swept(sweep, 1, None)));
}
