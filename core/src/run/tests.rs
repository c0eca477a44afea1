use super::*;
use crate::run::{Repair, RunStatus};
use crate::template::{NodeKind, Template};
use crate::wire::OutputFile;
use crate::wire::{Outcome, WorkItem};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::collections::BTreeSet;

fn template(train_instances: u32, retries: u32) -> Template {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "concurrent/v1",
        "name": "pipeline",
        "parameters": [{"name": "rows", "default": "10"}, {"name": "mode"}],
        "nodes": [
            {"id": "prepare", "kind": "project", "uri": "examples/pipeline", "entryPoint": "prepare",
             "parameters": {"rows": "{{params.rows}}", "mode": "{{params.mode}}"}},
            {"id": "train", "kind": "project", "uri": "examples/pipeline", "entryPoint": "train",
             "instances": train_instances, "retries": {"limit": retries, "backoffSeconds": 1}},
            {"id": "report", "kind": "project", "uri": "examples/pipeline", "entryPoint": "report"}
        ],
        "edges": [
            {"from": "prepare", "to": "train", "input": "data", "partition": {"mode": "by-file"}},
            {"from": "train", "to": "report", "input": "models"}
        ]
    }))
    .unwrap()
}

fn new_run(train_instances: u32, retries: u32) -> RunState {
    let overrides = BTreeMap::from([("mode".to_string(), "fast".to_string())]);
    start(
        "run1".into(),
        template(train_instances, retries),
        3,
        overrides,
        "local".into(),
        None,
        0,
    )
    .unwrap()
}

/// Carries out effects the way the edge does, with a queue that dedups by item id.
#[derive(Default)]
struct Driver {
    queue: Vec<WorkItem>,
    /// Shared inputs by key, as the queue keeps them.
    shared: BTreeMap<String, BTreeMap<String, Vec<crate::partition::ArtifactFile>>>,
    enqueued_ids: BTreeSet<String>,
    leased_ids: BTreeSet<String>,
    child_runs: u32,
    closed: Vec<(String, &'static str)>,
}

impl Driver {
    /// Carries out rounds as the run object does: the same batching (`plan_round`), MLflow
    /// calls first, then the queues.
    fn settle(&mut self, run: &mut RunState, now: u64) {
        for _ in 0..100 {
            let round = plan_round(reconcile(run, now), 128);
            if round.is_empty() {
                return;
            }
            let mut events = Vec::new();
            for m in round.mlflow {
                events.push(match m {
                    MlflowEffect::CreateParentRun { .. } => Event::ParentRunCreated(MlflowRef {
                        experiment_id: "1".into(),
                        run_id: "parent".into(),
                    }),
                    // MLflow's runs by key: the one the agent made, or one made now.
                    MlflowEffect::CloseUnreportedRun {
                        attempt,
                        run,
                        status,
                        ..
                    } => {
                        self.closed.push((format!("by key {}", run.key), status));
                        Event::AttemptRunClosed {
                            key: attempt,
                            run_id: Some(format!("by-key-{}", run.key)),
                        }
                    }
                    MlflowEffect::CloseAttemptRun {
                        attempt,
                        run_id,
                        status,
                        ..
                    } => {
                        self.closed.push((run_id, status));
                        Event::AttemptRunClosed {
                            key: attempt,
                            run_id: None,
                        }
                    }
                    MlflowEffect::RecordSelection { node, input, .. } => {
                        self.closed
                            .push((format!("selection {node}.{input}"), "RECORDED"));
                        Event::SelectionRecorded { node, input }
                    }
                    MlflowEffect::SyncParentRun { run_id, status, .. } => {
                        self.closed.push((run_id, status.mlflow_status()));
                        Event::ParentRunSynced { status }
                    }
                    MlflowEffect::RegisterModel { node, name, .. } => {
                        self.closed.push((format!("registered {name}"), "READY"));
                        Event::ModelRegistered {
                            node,
                            version: "1".into(),
                        }
                    }
                    MlflowEffect::NoteNode { node, .. } => {
                        self.closed.push((format!("noted {node}"), "TAGGED"));
                        Event::NodeNoted { node }
                    }
                });
            }
            let items: Vec<WorkItem> = round.enqueue.into_values().flatten().collect();
            self.shared.extend(run.shared_for(&items));
            for item in items {
                if self.enqueued_ids.insert(item.id.clone()) {
                    self.queue.push(item.clone());
                }
                events.push(Event::Enqueued { key: item.key() });
            }
            for (item_id, attempt) in round.withdraw.into_values().flatten() {
                self.queue.retain(|i| i.id != item_id);
                events.push(Event::Withdrawn { key: attempt });
            }
            // In one batch, as the run object applies a round's answers.
            for answer in apply_all(run, events, now) {
                answer.unwrap();
            }
        }
        panic!("effects never settled");
    }

    fn lease(&mut self, run: &mut RunState, now: u64) -> Option<WorkItem> {
        if self.queue.is_empty() {
            return None;
        }
        let mut item = self.queue.remove(0);
        if let Some(key) = item.step.shared_inputs.clone() {
            item.merge_shared(&self.shared[&key]);
        }
        assert!(
            self.leased_ids.insert(item.id.clone()),
            "item {} leased twice",
            item.id
        );
        apply(
            run,
            Event::Leased {
                key: item.key(),
                agent: "a".into(),
            },
            now,
        )
        .ok()?;
        Some(self.create_run(run, item, now))
    }

    /// What the agent does first with a lease: create the attempt's MLflow run and report it.
    fn create_run(&mut self, run: &mut RunState, mut item: WorkItem, now: u64) -> WorkItem {
        assert!(
            item.step.child_run.is_some(),
            "{} has no run to create",
            item.id
        );
        self.child_runs += 1;
        item.step.mlflow.run_id = format!("child{}", self.child_runs);
        item.step.child_run = None;
        let created = Event::ChildRunCreated {
            key: item.key(),
            run_id: item.step.mlflow.run_id.clone(),
        };
        apply(run, created, now).unwrap();
        item
    }
}

fn finish(run: &mut RunState, item: &WorkItem, outcome: Outcome, now: u64) -> Result<(), Rejected> {
    apply(
        run,
        Event::Finished {
            key: item.key(),
            outcome,
        },
        now,
    )
}

fn files(names: &[(&str, u64)]) -> Outcome {
    Outcome::Succeeded {
        outputs: names
            .iter()
            .map(|(p, s)| OutputFile {
                path: p.to_string(),
                size: *s,
                run_id: None,
                artifact_path: None,
                sha256: None,
            })
            .collect(),
        facts: Default::default(),
    }
}

/// A success with `n` part files of one byte (`part-<i>.csv`).
fn part_files(n: usize) -> Outcome {
    let names: Vec<String> = (0..n).map(|i| format!("part-{i}.csv")).collect();
    let names: Vec<(&str, u64)> = names.iter().map(|p| (p.as_str(), 1)).collect();
    files(&names)
}

#[test]
fn a_run_flows_through_partitions_to_success() {
    let mut run = new_run(2, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 1);
    assert_eq!(run.status, RunStatus::Running);
    let prep = d.lease(&mut run, 2).unwrap();
    assert_eq!(prep.step.mlflow.run_id, "child1");
    match &prep.step.kind {
        NodeKind::Project(p) => {
            assert_eq!(p.parameters["rows"], "10");
            assert_eq!(p.parameters["mode"], "fast");
        }
        k => panic!("{k:?}"),
    }
    finish(
        &mut run,
        &prep,
        files(&[("part-0.csv", 10), ("part-1.csv", 10), ("part-2.csv", 5)]),
        3,
    )
    .unwrap();
    d.settle(&mut run, 3);
    let train = run.node("train").unwrap();
    assert_eq!(train.instances.len(), 2);
    let slice0: Vec<_> = train.instances[0].inputs["data"]
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    let slice1: Vec<_> = train.instances[1].inputs["data"]
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    // Balanced by bytes: 10+5 against 10 (ties go to the lower instance).
    assert_eq!(
        (slice0, slice1),
        (vec!["part-0.csv", "part-2.csv"], vec!["part-1.csv"])
    );
    assert_eq!(
        train.instances[0].inputs["data"][0].artifact_path,
        "outputs/part-0.csv"
    );
    assert_eq!(train.instances[0].inputs["data"][0].run_id, "child1");

    let (t0, t1) = (d.lease(&mut run, 4).unwrap(), d.lease(&mut run, 4).unwrap());
    assert_eq!(
        (
            t0.step.partition_index,
            t1.step.partition_index,
            t1.step.partition_count
        ),
        (0, 1, 2)
    );
    finish(&mut run, &t1, files(&[("model.txt", 1)]), 5).unwrap();
    finish(&mut run, &t0, files(&[("model.txt", 1)]), 5).unwrap();
    d.settle(&mut run, 5);
    // Fan-in: the report node sees both instances' outputs, without path collisions.
    let report_node = run.node("report").unwrap();
    let report = &report_node.instances[0];
    let paths: Vec<_> = report_node.shared_inputs["models"]
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, vec!["0/model.txt", "1/model.txt"]);
    assert!(
        report.inputs.is_empty(),
        "a broadcast input is kept once for the node, not per instance"
    );
    assert_eq!(report_node.input_size(report), (2, 2));
    let r = d.lease(&mut run, 6).unwrap();
    finish(&mut run, &r, files(&[]), 7).unwrap();
    // Every step's end was reported by its agent: no step is left to reopen a run, so the
    // final sync asks MLflow for none of them.
    let sync = reconcile(&run, 7).into_iter().find_map(|e| match e {
        Effect::Mlflow(MlflowEffect::SyncParentRun { attempt_runs, .. }) => Some(attempt_runs),
        _ => None,
    });
    assert_eq!(
        sync,
        Some(Default::default()),
        "the final sync, with no attempt runs to check"
    );
    d.settle(&mut run, 7);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.ended_at, Some(7));
    assert!(run.mlflow_in_sync());
    assert!(d.closed.contains(&("parent".into(), "FINISHED")));
    assert_eq!(
        d.closed.len(),
        5,
        "four attempts and the parent: {:?}",
        d.closed
    );
}

#[test]
fn a_failed_step_is_retried_with_backoff_then_fails_the_run() {
    let mut run = new_run(1, 1);
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    finish(&mut run, &prep, files(&[("a", 1)]), 0).unwrap();
    d.settle(&mut run, 0);
    let t = d.lease(&mut run, 0).unwrap();
    // The first attempt's agent dies: its lease lapses.
    apply(
        &mut run,
        Event::Lapsed {
            key: t.key(),
            error: "lease lapsed".into(),
        },
        100,
    )
    .unwrap();
    assert_eq!(
        run.node("train").unwrap().instances[0].state,
        InstanceState::Retrying
    );
    assert!(reconcile(&run, 100).contains(&Effect::WakeAt(1100)));
    d.settle(&mut run, 100);
    assert!(
        d.lease(&mut run, 100).is_none(),
        "the retry waits for its backoff"
    );
    apply(&mut run, Event::Tick, 1100).unwrap();
    d.settle(&mut run, 1100);
    let t2 = d.lease(&mut run, 1100).unwrap();
    assert_eq!(t2.attempt, 2);
    assert_ne!(
        t2.step.mlflow.run_id, t.step.mlflow.run_id,
        "each attempt has its own MLflow run"
    );
    // The first attempt's late completion is stale and changes nothing.
    assert!(finish(&mut run, &t, files(&[]), 1101).is_err());
    finish(
        &mut run,
        &t2,
        Outcome::Failed {
            error: "exit 2".into(),
            facts: Default::default(),
        },
        1200,
    )
    .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error.as_deref().unwrap().contains("exit 2"),
        "{:?}",
        run.error
    );
    // The parent's final sync closes again any attempt's run a step reopened: the runs of
    // the attempts whose end no agent reported (a step may have outlived the lapsed one), with
    // the status the run gave them; a reported end left nothing behind.
    let closing = reconcile(&run, 1200).into_iter().find_map(|e| match e {
        Effect::Mlflow(MlflowEffect::SyncParentRun { attempt_runs, .. }) => Some(attempt_runs),
        _ => None,
    });
    let closing = closing.expect("the ended run syncs its parent run");
    assert_eq!(
        closing.get(&t.step.mlflow.run_id),
        Some(&"FAILED"),
        "{closing:?}"
    );
    assert_eq!(closing.len(), 1, "only the lapsed attempt: {closing:?}");
    d.settle(&mut run, 1200);
    assert!(d.closed.contains(&("parent".into(), "FAILED")));
    assert!(
        run.node("report").unwrap().instances.is_empty(),
        "downstream never starts"
    );
}

#[test]
fn cancel_withdraws_queued_work_and_kills_mlflow_runs() {
    let mut run = new_run(3, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    finish(&mut run, &prep, files(&[("a", 1), ("b", 1), ("c", 1)]), 0).unwrap();
    d.settle(&mut run, 0);
    let running = d.lease(&mut run, 1).unwrap();
    apply(
        &mut run,
        Event::Cancel {
            reason: "stopped by alice".into(),
        },
        2,
    )
    .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    let withdraws = reconcile(&run, 2)
        .iter()
        .filter(|e| matches!(e, Effect::Queue(QueueEffect::Withdraw { .. })))
        .count();
    assert_eq!(
        withdraws, 3,
        "the leased item is flagged, the two queued ones dropped"
    );
    d.settle(&mut run, 2);
    assert!(d.queue.is_empty());
    // The running attempt's run and the parent; queued attempts never had a run.
    assert_eq!(
        d.closed.iter().filter(|(_, s)| *s == "KILLED").count(),
        2,
        "{:?}",
        d.closed
    );
    assert!(
        finish(&mut run, &running, files(&[]), 3).is_err(),
        "a cancelled attempt cannot succeed later"
    );
    assert!(apply(
        &mut run,
        Event::Cancel {
            reason: "again".into()
        },
        4
    )
    .is_err());
}

#[test]
fn a_repair_before_the_withdraw_still_stops_the_cancelled_attempt() {
    let mut run = new_run(1, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    apply(
        &mut run,
        Event::Cancel {
            reason: "stop".into(),
        },
        1,
    )
    .unwrap();
    // The repair comes before the run object carried out the withdraw.
    apply(
        &mut run,
        Event::Repair {
            repair: Repair::RetryFailed,
            by: None,
        },
        2,
    )
    .unwrap();
    let withdraws: Vec<_> = reconcile(&run, 2)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Queue(QueueEffect::Withdraw { item_id, .. }) => Some(item_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        withdraws,
        vec![prep.id.clone()],
        "attempt 1 must still be stopped"
    );
}

#[test]
fn mlflow_trouble_waits_with_backoff_and_refusals_end_what_they_were_for() {
    let mut run = new_run(1, 0);
    apply(
        &mut run,
        Event::MlflowUnavailable {
            reason: "connection refused".into(),
        },
        100,
    )
    .unwrap();
    apply(
        &mut run,
        Event::MlflowUnavailable {
            reason: "connection refused".into(),
        },
        200,
    )
    .unwrap();
    let wait = run.mlflow_wait.clone().unwrap();
    assert_eq!(wait.message, "waiting for MLflow: connection refused");
    assert_eq!(
        (wait.since, wait.failures, wait.retry_at),
        (100, 2, 200 + 2000)
    );
    let effects = reconcile(&run, 300);
    assert_eq!(
        effects,
        vec![Effect::WakeAt(2200)],
        "no MLflow call before the backoff"
    );
    assert!(matches!(
        reconcile(&run, 2200)[0],
        Effect::Mlflow(MlflowEffect::CreateParentRun { .. })
    ));
    apply(
        &mut run,
        Event::MlflowRefused {
            call: MlflowCall::ParentRun,
            message: "MLflow answered 400 INVALID_STATE: experiment must be active".into(),
        },
        2300,
    )
    .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.mlflow_wait.is_none());
    let error = run.error.clone().unwrap();
    assert!(
        error.contains("must be active") && error.contains("restore"),
        "{error}"
    );
    assert_eq!(reconcile(&run, 2400), vec![], "nothing is retried for ever");
}

#[test]
fn a_wide_node_is_queued_at_once_and_its_runs_are_made_where_steps_start() {
    let mut run = new_run(1, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 1);
    let prep = d.lease(&mut run, 2).unwrap();
    // A node of 1,000 instances: every item is queued in one round, none waits for MLflow.
    let mut wide = new_run(1000, 0);
    let mut w = Driver::default();
    w.settle(&mut wide, 1);
    let first = w.lease(&mut wide, 2).unwrap();
    finish(&mut wide, &first, part_files(1000), 3).unwrap();
    let round = plan_round(reconcile(&wide, 4), 128);
    assert!(
        round
            .mlflow
            .iter()
            .all(|m| matches!(m, MlflowEffect::CloseAttemptRun { .. })),
        "no MLflow call but closing the finished attempt: {:?}",
        round.mlflow
    );
    let items = &round.enqueue["local"];
    assert_eq!(items.len(), 1000);
    let child = items[999].step.child_run.as_ref().unwrap();
    assert_eq!(child.key, items[999].id);
    assert!(
        child
            .tags
            .contains(&("mlflow.parentRunId".into(), "parent".into())),
        "{:?}",
        child.tags
    );
    assert!(child
        .tags
        .contains(&("concurrent.partition".into(), "999/1000".into())));
    assert!(items.iter().all(|i| i.step.mlflow.run_id.is_empty()));
    drop(prep);
}

#[test]
fn a_batch_of_events_ends_as_the_same_events_one_at_a_time() {
    // Two runs driven alike up to 50 leased `train` instances; their completions are then
    // applied one at a time to one and as one batch to the other.
    let prepared = || {
        let mut run = new_run(50, 0);
        let mut d = Driver::default();
        d.settle(&mut run, 1);
        let prep = d.lease(&mut run, 2).unwrap();
        finish(&mut run, &prep, part_files(50), 3).unwrap();
        d.settle(&mut run, 4);
        let items: Vec<WorkItem> = (0..50).map_while(|_| d.lease(&mut run, 5)).collect();
        assert_eq!(items.len(), 50);
        (run, items)
    };
    let finished = |item: &WorkItem| Event::Finished {
        key: item.key(),
        outcome: files(&[("model.pkl", 1)]),
    };
    let (mut one_by_one, items) = prepared();
    for item in &items {
        apply(&mut one_by_one, finished(item), 6).unwrap();
    }
    let (mut batched, items) = prepared();
    let answers = apply_all(&mut batched, items.iter().map(finished), 6);
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(batched, one_by_one);
    assert_eq!(
        batched.node("report").unwrap().instances.len(),
        1,
        "the batch moved the run on"
    );
    // A replay in a batch is refused alone; the rest of the batch is taken.
    let (mut run, items) = prepared();
    let mut events: Vec<Event> = items[..2].iter().map(finished).collect();
    events.push(finished(&items[0]));
    let answers = apply_all(&mut run, events, 6);
    assert!(answers[0].is_ok() && answers[1].is_ok() && answers[2].is_err());

    // The run moves on after the batch: a success beside the failure that ends the run is
    // recorded, not cancelled.
    let (mut run, items) = prepared();
    let failed = Event::Finished {
        key: items[0].key(),
        outcome: Outcome::Failed {
            error: "boom".into(),
            facts: Default::default(),
        },
    };
    let answers = apply_all(&mut run, [failed, finished(&items[1])], 6);
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(run.status, RunStatus::Failed);
    let train = &run.node("train").unwrap().instances;
    assert_eq!(train[1].state, InstanceState::Succeeded);
    assert_eq!(train[2].state, InstanceState::Cancelled);
}

#[test]
fn broadcast_inputs_are_kept_once_and_wide_nodes_are_queued_a_batch_at_a_time() {
    let mut t = template(1000, 0);
    t.edges[0].partition.mode = crate::template::PartitionMode::parse("broadcast");
    let mode = BTreeMap::from([("mode".to_string(), "fast".to_string())]);
    let mut run = start("run1".into(), t, 1, mode, "local".into(), None, 0).unwrap();
    let mut d = Driver::default();
    d.settle(&mut run, 1);
    let prep = d.lease(&mut run, 2).unwrap();
    let names: Vec<String> = (0..100).map(|i| format!("f-{i:03}.csv")).collect();
    let outputs: Vec<(&str, u64)> = names.iter().map(|p| (p.as_str(), 7)).collect();
    finish(&mut run, &prep, files(&outputs), 3).unwrap();
    let train = run.node("train").unwrap();
    assert_eq!(train.instances.len(), 1000);
    assert_eq!(train.shared_inputs["data"].len(), 100);
    assert!(train.instances.iter().all(|i| i.inputs.is_empty()));
    assert_eq!(train.input_size(&train.instances[5]), (100, 700));
    assert_eq!(train.plans, 1);

    // Work items are built 300 at a time; the shared files go along once, each item says how
    // many it receives, and the queue's merge gives each its full list.
    let mut seen = BTreeSet::new();
    loop {
        let round = plan_round(reconcile_at_most(&run, 4, 300), 128);
        let Some(items) = round.enqueue.get("local") else {
            break;
        };
        assert!(items.len() <= 300);
        let shared = run.shared_for(items);
        for item in items {
            assert!(
                item.step.inputs.is_empty(),
                "shared inputs travel once, not per item"
            );
            let key = item.step.shared_inputs.as_ref().unwrap();
            assert_eq!(shared[key]["data"].len(), 100);
            let mut leased = item.clone();
            leased.merge_shared(&shared[key]);
            assert_eq!(leased.step.inputs["data"].len(), 100);
            assert_eq!(leased.step.shared_inputs, None);
            // The queue reads only an item's head from the JSON it stored.
            for (stored, shares) in [(item, Some(key)), (&leased, None)] {
                let head: crate::wire::WorkItemHead =
                    serde_json::from_str(&serde_json::to_string(stored).unwrap()).unwrap();
                assert_eq!(
                    (&head.id, &head.run_id, &head.cluster, head.key()),
                    (&item.id, &item.run_id, &item.cluster, item.key())
                );
                assert_eq!(head.step.shared_inputs.as_ref(), shares);
            }
            let tags = &item.step.child_run.as_ref().unwrap().tags;
            assert!(tags.contains(&("concurrent.input_files".into(), "100".into())));
            assert!(seen.insert(item.id.clone()), "{} built twice", item.id);
            apply(&mut run, Event::Enqueued { key: item.key() }, 4).unwrap();
        }
    }
    assert_eq!(seen.len(), 1000);
}

#[test]
fn a_round_that_queues_a_wide_node_leaves_mlflow_calls_for_the_rounds_after() {
    let mut run = new_run(1000, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 1);
    let prep = d.lease(&mut run, 2).unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("f-{i:04}.csv")).collect();
    let outputs: Vec<(&str, u64)> = names.iter().map(|p| (p.as_str(), 7)).collect();
    finish(&mut run, &prep, files(&outputs), 3).unwrap();
    // prepare's MLflow run waits to be closed while train's 1,000 items wait to be queued.
    let limits = RoundLimits {
        items: 300,
        mlflow: 128,
    };
    assert!(!plan_round(reconcile_at_most(&run, 4, 300), 128)
        .mlflow
        .is_empty());
    let mut queued = 0;
    let round = loop {
        let round = next_round(&run, 4, limits);
        let items = round.enqueue.get("local").cloned().unwrap_or_default();
        if !round.queueing {
            break round;
        }
        assert_eq!(items.len(), 300);
        assert!(round.mlflow.is_empty(), "{:?}", round.mlflow);
        for item in items {
            queued += 1;
            apply(&mut run, Event::Enqueued { key: item.key() }, 4).unwrap();
        }
    };
    // The last, partial batch goes with the calls that waited.
    assert_eq!(queued + round.enqueue["local"].len(), 1000);
    assert!(round
        .mlflow
        .iter()
        .any(|m| matches!(m, MlflowEffect::CloseAttemptRun { .. })));
}

#[test]
fn an_attempt_that_ended_before_its_run_was_reported_is_closed_by_key() {
    let mut run = new_run(1, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 1);
    // The agent leases prepare and dies before its heartbeat could report the run it made.
    let item = d.queue.remove(0);
    apply(
        &mut run,
        Event::Leased {
            key: item.key(),
            agent: "a".into(),
        },
        2,
    )
    .unwrap();
    let expired = Outcome::Failed {
        error: "lease expired".into(),
        facts: Default::default(),
    };
    finish(&mut run, &item, expired, 3).unwrap();
    d.settle(&mut run, 4);
    assert!(
        d.closed
            .contains(&(format!("by key {}", item.id), "FAILED")),
        "{:?}",
        d.closed
    );
    // What was found or made by key is the attempt's run from now on, with the reason.
    let a = &run.nodes[0].instances[0].attempts[0];
    assert_eq!(a.mlflow_run_id, Some(format!("by-key-{}", item.id)));
    let round = plan_round(reconcile(&run, 5), 128);
    assert!(round
        .mlflow
        .iter()
        .all(|m| !matches!(m, MlflowEffect::CloseUnreportedRun { .. })));
    // Never leased (cancelled while queued): nothing to look for.
    let mut queued = new_run(1, 0);
    let mut q = Driver::default();
    q.settle(&mut queued, 1);
    apply(
        &mut queued,
        Event::Cancel {
            reason: "stop".into(),
        },
        2,
    )
    .unwrap();
    q.settle(&mut queued, 3);
    assert!(
        q.closed.iter().all(|(r, _)| !r.starts_with("by key")),
        "{:?}",
        q.closed
    );
}

#[test]
fn an_attempt_whose_agent_made_no_run_is_not_looked_for() {
    let mut run = new_run(1, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 1);
    // MLflow refused the agent's create of a first lease: it says there is no run.
    let item = d.queue.remove(0);
    let leased = Event::Leased {
        key: item.key(),
        agent: "a".into(),
    };
    apply(&mut run, leased, 2).unwrap();
    apply(&mut run, Event::NoAttemptRun { key: item.key() }, 3).unwrap();
    let refused = Outcome::Failed {
        error: "MLflow refused to create this attempt's run".into(),
        facts: Default::default(),
    };
    finish(&mut run, &item, refused, 3).unwrap();
    d.settle(&mut run, 4);
    assert!(
        d.closed.iter().all(|(r, _)| !r.starts_with("by key")),
        "{:?}",
        d.closed
    );
    // An attempt with a run cannot be said to have none.
    let mut other = new_run(1, 0);
    let mut o = Driver::default();
    o.settle(&mut other, 1);
    let item = o.lease(&mut other, 2).unwrap();
    let said = apply(&mut other, Event::NoAttemptRun { key: item.key() }, 3);
    assert!(
        said.as_ref()
            .is_err_and(|r| r.0.contains("already has MLflow run")),
        "{said:?}"
    );
}

#[test]
fn start_refuses_invalid_templates_and_parameters() {
    let mut t = template(2, 0);
    t.edges[0].to = "ghost".into();
    assert!(
        matches!(start("r".into(), t, 1, BTreeMap::new(), "local".into(), None, 0), Err(StartError::InvalidTemplate(p)) if p.len() == 1)
    );
    let err = start(
        "r".into(),
        template(2, 0),
        1,
        BTreeMap::new(),
        "local".into(),
        None,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"mode\" has no default"), "{err}");
    let bad = BTreeMap::from([
        ("mode".to_string(), "x".to_string()),
        ("typo".to_string(), "1".to_string()),
    ]);
    let err = start("r".into(), template(2, 0), 1, bad, "local".into(), None, 0).unwrap_err();
    assert!(
        err.to_string().contains("\"typo\" is not declared"),
        "{err}"
    );
}

#[test]
fn a_bad_key_regex_at_plan_time_fails_the_run_with_the_reason() {
    let mut run = new_run(2, 0);
    // Simulate a template that validation let through but planning refuses (defence in depth).
    run.template.edges[0].partition = crate::template::Partition {
        mode: crate::template::PartitionMode::ByKey,
        key_regex: Some("no-group".into()),
    };
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    finish(&mut run, &prep, files(&[("a", 1)]), 1).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run
        .node("train")
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("capture group"));
}

#[test]
fn an_unconfirmed_lease_returns_to_the_queue_without_counting_an_attempt() {
    let mut run = new_run(1, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    let requeue = Event::Requeued { key: prep.key() };
    apply(&mut run, requeue.clone(), 1).unwrap();
    let inst = &run.node("prepare").unwrap().instances[0];
    assert_eq!(
        (inst.state, inst.attempts.len(), inst.attempts[0].state),
        (InstanceState::Queued, 1, AttemptState::Queued)
    );
    assert!(
        apply(&mut run, requeue, 2).is_err(),
        "only a running attempt can be requeued"
    );
    apply(
        &mut run,
        Event::Leased {
            key: AttemptKey::new("prepare", 0, 1),
            agent: "b".into(),
        },
        3,
    )
    .unwrap();
    finish(&mut run, &prep, files(&[("a", 1)]), 4).unwrap();
    assert_eq!(
        run.node("prepare").unwrap().instances[0].state,
        InstanceState::Succeeded
    );
}

#[test]
fn retry_failed_reruns_only_what_failed_and_keeps_the_history() {
    let mut run = new_run(2, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    finish(&mut run, &prep, files(&[("a", 1), ("b", 1)]), 0).unwrap();
    d.settle(&mut run, 0);
    let (t0, t1) = (d.lease(&mut run, 1).unwrap(), d.lease(&mut run, 1).unwrap());
    finish(&mut run, &t0, files(&[("m", 1)]), 2).unwrap();
    finish(
        &mut run,
        &t1,
        Outcome::Failed {
            error: "oom".into(),
            facts: Default::default(),
        },
        3,
    )
    .unwrap();
    d.settle(&mut run, 3);
    assert_eq!(run.status, RunStatus::Failed);
    assert!(apply(
        &mut run,
        Event::Repair {
            repair: Repair::RerunFrom {
                node: "ghost".into()
            },
            by: None
        },
        4
    )
    .is_err());

    apply(
        &mut run,
        Event::Repair {
            repair: Repair::RetryFailed,
            by: Some("alice".into()),
        },
        4,
    )
    .unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.repairs.len(), 1);
    assert!(reconcile(&run, 4).iter().any(|e| matches!(
        e,
        Effect::Mlflow(MlflowEffect::SyncParentRun {
            status: RunStatus::Running,
            ..
        })
    )));
    d.settle(&mut run, 4);
    let retry = d.lease(&mut run, 5).unwrap();
    assert_eq!(
        (retry.node_id.as_str(), retry.instance, retry.attempt),
        ("train", 1, 2),
        "only the failed instance runs again"
    );
    assert!(
        d.lease(&mut run, 5).is_none(),
        "prepare and train[0] keep their results"
    );
    let train = run.node("train").unwrap();
    assert_eq!(
        train.instances[1].attempts[0].error.as_deref(),
        Some("oom"),
        "the failed attempt stays visible"
    );
    finish(&mut run, &retry, files(&[("m", 1)]), 6).unwrap();
    d.settle(&mut run, 6);
    let report = d.lease(&mut run, 7).unwrap();
    finish(&mut run, &report, files(&[]), 8).unwrap();
    d.settle(&mut run, 8);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(run.mlflow_in_sync());
    assert!(
        apply(
            &mut run,
            Event::Repair {
                repair: Repair::RetryFailed,
                by: None
            },
            9
        )
        .is_err(),
        "nothing to retry"
    );
}

#[test]
fn rerun_from_a_node_replans_it_and_everything_downstream() {
    let mut run = new_run(2, 0);
    let mut d = Driver::default();
    d.settle(&mut run, 0);
    let prep = d.lease(&mut run, 0).unwrap();
    finish(&mut run, &prep, files(&[("a", 1), ("b", 1)]), 0).unwrap();
    for _ in 0..2 {
        d.settle(&mut run, 1);
        while let Some(i) = d.lease(&mut run, 1) {
            finish(&mut run, &i, files(&[("out", 1)]), 2).unwrap();
        }
    }
    d.settle(&mut run, 2);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(apply(
        &mut run,
        Event::Repair {
            repair: Repair::RetryFailed,
            by: None
        },
        3
    )
    .is_err());

    apply(
        &mut run,
        Event::Repair {
            repair: Repair::RerunFrom {
                node: "train".into(),
            },
            by: None,
        },
        3,
    )
    .unwrap();
    d.settle(&mut run, 3);
    let mut leased: Vec<(String, u32, u32)> = Vec::new();
    while let Some(i) = d.lease(&mut run, 4) {
        leased.push((i.node_id.clone(), i.instance, i.attempt));
        finish(&mut run, &i, files(&[("new", 1)]), 5).unwrap();
    }
    assert_eq!(
        leased,
        vec![("train".into(), 0, 2), ("train".into(), 1, 2)],
        "report waits for train"
    );
    d.settle(&mut run, 5);
    let report = d.lease(&mut run, 6).unwrap();
    assert_eq!(report.attempt, 2);
    let paths: Vec<_> = report.step.inputs["models"]
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        paths,
        vec!["0/new", "1/new"],
        "re-planned from the new outputs"
    );
    finish(&mut run, &report, files(&[]), 7).unwrap();
    d.settle(&mut run, 7);
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(
        run.node("prepare").unwrap().instances[0].attempts.len(),
        1,
        "upstream is not rerun"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Settle,
    Lease,
    Succeed(usize),
    Fail(usize),
    Replay(usize),
    Tick(u64),
    Cancel,
    RetryFailed,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Settle),
        3 => Just(Step::Lease),
        3 => (0usize..8).prop_map(Step::Succeed),
        1 => (0usize..8).prop_map(Step::Fail),
        1 => (0usize..8).prop_map(Step::Replay),
        1 => (0u64..3000).prop_map(Step::Tick),
        1 => Just(Step::Cancel),
        1 => Just(Step::RetryFailed),
    ]
}

proptest! {
    /// Random orders of leases, completions, failures, replays of old completions, ticks and
    /// cancels: no item is leased twice, a stale completion changes nothing, and once the
    /// events stop arriving in any order the run ends in a terminal state with MLflow closed.
    #[test]
    fn any_event_order_keeps_the_invariants(steps in proptest::collection::vec(arb_step(), 0..60), n in 1u32..4, retries in 0u32..3) {
        let mut run = new_run(n, retries);
        let mut d = Driver::default();
        let mut now = 0;
        let mut leased: Vec<WorkItem> = Vec::new();
        let mut done: Vec<WorkItem> = Vec::new();
        for step in steps {
            now += 10;
            match step {
                Step::Settle => d.settle(&mut run, now),
                Step::Lease => if let Some(i) = d.lease(&mut run, now) { leased.push(i) },
                Step::Succeed(k) | Step::Fail(k) if !leased.is_empty() => {
                    let item = leased.remove(k % leased.len());
                    let outcome = if matches!(step, Step::Succeed(_)) { files(&[("f", 1), ("g", 2)]) } else { Outcome::Failed { error: "boom".into(), facts: Default::default(), } };
                    let _ = finish(&mut run, &item, outcome, now);
                    done.push(item);
                }
                Step::Replay(k) if !done.is_empty() => {
                    let before = run.clone();
                    let item = &done[k % done.len()];
                    prop_assert!(finish(&mut run, item, files(&[]), now).is_err());
                    prop_assert_eq!(&before, &run);
                }
                Step::Tick(dt) => { now += dt; let _ = apply(&mut run, Event::Tick, now); }
                Step::Cancel => { let _ = apply(&mut run, Event::Cancel { reason: "user".into() }, now); }
                Step::RetryFailed => { let _ = apply(&mut run, Event::Repair { repair: Repair::RetryFailed, by: None }, now); }
                _ => {}
            }
            // The run object's cheap question agrees with the effects themselves.
            let effects = reconcile(&run, now);
            let from_effects = effects.iter().map(|e| if let Effect::WakeAt(t) = e { *t } else { now }).min();
            prop_assert_eq!(next_wake(&run, now).map(|t| t.max(now)), from_effects.map(|t| t.max(now)), "{:?}", effects);
        }
        // Drain: run every remaining item to success, with time moving past every backoff.
        for _ in 0..200 {
            now += 1_000_000;
            let _ = apply(&mut run, Event::Tick, now);
            d.settle(&mut run, now);
            if run.status.is_terminal() { break; }
            while let Some(i) = d.lease(&mut run, now) { leased.push(i); }
            for item in leased.drain(..) { let _ = finish(&mut run, &item, files(&[("f", 1)]), now); }
        }
        d.settle(&mut run, now);
        prop_assert!(run.status.is_terminal(), "run stuck in {:?}", run.status);
        prop_assert!(run.mlflow_in_sync(), "parent run left open");
        for node in &run.nodes {
            for inst in &node.instances {
                prop_assert!(inst.state.is_terminal());
                for a in &inst.attempts {
                    prop_assert!(a.state.is_terminal());
                    if a.mlflow_run_id.is_some() { prop_assert!(a.mlflow_closed); }
                    // Every attempt an agent held has its MLflow run, made by the agent or,
                    // when it never reported one, found or made by the run.
                    if a.leased { prop_assert!(a.mlflow_run_id.is_some(), "{a:?} has no MLflow run"); }
                }
            }
        }
    }
}
