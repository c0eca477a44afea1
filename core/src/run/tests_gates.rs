//! Conditions, trigger rules, approvals and registrations through the whole machine.

use std::collections::BTreeMap;

use super::tests_ml::{output, run_item};
use super::*;
use crate::template::Template;
use crate::wire::{Outcome, WorkItem};

fn run_of(template: serde_json::Value, params: &[(&str, &str)]) -> RunState {
    let t: Template = serde_json::from_value(template).unwrap();
    let problems = crate::validate(&t);
    assert!(problems.is_empty(), "{problems:?}");
    let params = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    start("run1".into(), t, 1, params, "local".into(), None, 0).unwrap()
}

/// Carries out effects until only queue work remains: the work items queued and the MLflow
/// effects carried out (registrations answered with version 7).
fn drive(run: &mut RunState, now: u64) -> (Vec<WorkItem>, Vec<MlflowEffect>) {
    let (mut queued, mut seen) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let round = plan_round(reconcile(run, now), 128);
        if round.is_empty() {
            break;
        }
        let mut events = Vec::new();
        for m in round.mlflow {
            seen.push(m.clone());
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
                    version: "7".into(),
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
    (queued, seen)
}

fn node<'a>(run: &'a RunState, id: &str) -> &'a NodeRun {
    run.node(id).unwrap()
}

fn failed(error: &str) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        facts: Default::default(),
    }
}

fn noted(seen: &[MlflowEffect], node_id: &str) -> Vec<(String, String)> {
    seen.iter()
        .find_map(|m| match m {
            MlflowEffect::NoteNode { node, tags, .. } if node == node_id => Some(tags.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tags for {node_id}: {seen:?}"))
}

/// train → evaluate (when: accuracy high enough) → publish; and cleanup after train, whatever
/// happens.
fn gated() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "concurrent/v1", "name": "gated",
        "parameters": [{"name": "target", "default": "staging"}],
        "nodes": [
            {"id": "train", "kind": "project", "uri": "p", "entryPoint": "train", "instances": 2},
            {"id": "evaluate", "kind": "project", "uri": "p", "entryPoint": "evaluate",
             "when": "max(upstream.train.metrics.accuracy) >= 0.9 and params.target == \"prod\""},
            {"id": "publish", "kind": "project", "uri": "p", "entryPoint": "publish"},
            {"id": "alert", "kind": "project", "uri": "p", "entryPoint": "alert", "triggerRule": "anyFailed"}
        ],
        "edges": [
            {"from": "train", "to": "evaluate"},
            {"from": "evaluate", "to": "publish"},
            {"from": "train", "to": "alert", "input": "logs"}
        ]
    })
}

#[test]
fn a_false_condition_skips_the_node_and_what_needs_it_and_the_run_succeeds() {
    let mut run = run_of(gated(), &[("target", "prod")]);
    let train = drive(&mut run, 1).0;
    assert_eq!(train.len(), 2);
    run_item(
        &mut run,
        &train[0],
        output("m0", &[("accuracy", 0.71)], None),
        2,
    );
    run_item(
        &mut run,
        &train[1],
        output("m1", &[("accuracy", 0.85)], None),
        2,
    );
    let (queued, seen) = drive(&mut run, 3);
    assert!(queued.is_empty(), "{queued:?}");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let why = node(&run, "evaluate").skipped.clone().unwrap();
    assert!(
        why.contains("its condition is false") && why.contains("[0.71, 0.85]"),
        "{why}"
    );
    assert!(node(&run, "publish")
        .skipped
        .as_ref()
        .unwrap()
        .contains("\"evaluate\" was skipped"));
    assert!(node(&run, "alert")
        .skipped
        .as_ref()
        .unwrap()
        .contains("no upstream node failed"));
    assert_eq!(node(&run, "evaluate").shown_state(), InstanceState::Skipped);
    let tags = noted(&seen, "evaluate");
    assert_eq!(tags[0].0, "concurrent.skipped.evaluate");
    assert!(run.nodes.iter().all(|n| n.noted || n.skipped.is_none()));
}

#[test]
fn a_true_condition_runs_the_node() {
    let mut run = run_of(gated(), &[("target", "prod")]);
    let train = drive(&mut run, 1).0;
    run_item(
        &mut run,
        &train[0],
        output("m0", &[("accuracy", 0.93)], None),
        2,
    );
    run_item(
        &mut run,
        &train[1],
        output("m1", &[("accuracy", 0.85)], None),
        2,
    );
    let next = drive(&mut run, 3).0;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].node_id, "evaluate");
    // Another target: the same metrics, skipped.
    let mut staging = run_of(gated(), &[]);
    let train = drive(&mut staging, 1).0;
    run_item(
        &mut staging,
        &train[0],
        output("m0", &[("accuracy", 0.93)], None),
        2,
    );
    run_item(
        &mut staging,
        &train[1],
        output("m1", &[("accuracy", 0.85)], None),
        2,
    );
    drive(&mut staging, 3);
    assert!(node(&staging, "evaluate")
        .skipped
        .as_ref()
        .unwrap()
        .contains("params.target = \"staging\""));
}

#[test]
fn a_condition_that_cannot_be_evaluated_fails_the_run_naming_the_metric() {
    let mut run = run_of(gated(), &[("target", "prod")]);
    let train = drive(&mut run, 1).0;
    run_item(&mut run, &train[0], output("m0", &[("loss", 0.1)], None), 2);
    run_item(&mut run, &train[1], output("m1", &[("loss", 0.2)], None), 2);
    drive(&mut run, 3);
    assert_eq!(run.status, RunStatus::Failed);
    let e = run.error.clone().unwrap();
    assert!(
        e.contains("\"evaluate\"") && e.contains("\"accuracy\""),
        "{e}"
    );
}

#[test]
fn after_a_failure_only_nodes_with_a_trigger_rule_run_then_the_run_fails() {
    let mut t = gated();
    t["nodes"].as_array_mut().unwrap().push(serde_json::json!(
        {"id": "cleanup", "kind": "project", "uri": "p", "entryPoint": "cleanup", "triggerRule": "allDone"}));
    t["edges"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"from": "publish", "to": "cleanup"}));
    let mut run = run_of(t, &[("target", "prod")]);
    let train = drive(&mut run, 1).0;
    run_item(&mut run, &train[0], failed("out of memory"), 2);
    let (next, _) = drive(&mut run, 3);
    // train[1] was stopped; alert (anyFailed) runs; evaluate and publish are skipped; cleanup
    // (allDone) waits for publish, which is over: it runs too.
    assert_eq!(
        node(&run, "train").instances[1].state,
        InstanceState::Cancelled
    );
    let mut ids: Vec<&str> = next.iter().map(|i| i.node_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["alert", "cleanup"]);
    assert!(node(&run, "evaluate")
        .skipped
        .as_ref()
        .unwrap()
        .contains("\"train\" failed"));
    assert_eq!(
        run.status,
        RunStatus::Running,
        "the alert and the clean-up still run"
    );
    for item in &next {
        run_item(&mut run, item, output("done", &[], None), 4);
    }
    drive(&mut run, 5);
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.as_ref().unwrap().contains("out of memory"));
}

/// train (swept) → gate (approval comparing with the champion) → register (best by accuracy,
/// alias champion).
fn approved() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "concurrent/v1", "name": "ship",
        "nodes": [
            {"id": "train", "kind": "project", "uri": "p", "entryPoint": "train",
             "sweep": {"grid": {"C": ["0.1", "1", "10"]}}},
            {"id": "gate", "kind": "approval", "message": "Ship it?",
             "compare": {"model": "iris", "alias": "champion"}, "metrics": ["accuracy"]},
            {"id": "register", "kind": "register", "model": "iris", "alias": "champion"}
        ],
        "edges": [
            {"from": "train", "to": "gate", "select": {"metric": "accuracy", "mode": "max"}},
            {"from": "gate", "to": "register"},
            {"from": "train", "to": "register", "input": "model", "select": {"metric": "accuracy", "mode": "max"}}
        ]
    })
}

fn trained(t: serde_json::Value) -> RunState {
    let mut run = run_of(t, &[]);
    let train = drive(&mut run, 1).0;
    for (k, acc) in [0.8, 0.95, 0.9].into_iter().enumerate() {
        let mut out = output("model/MLmodel", &[("accuracy", acc)], None);
        if let Outcome::Succeeded { facts, .. } = &mut out {
            facts.model_uri = Some(format!("models:/m-{k}"));
        }
        run_item(&mut run, &train[k], out, 2);
    }
    drive(&mut run, 3);
    run
}

#[test]
fn an_approval_pauses_the_run_and_an_approval_registers_the_best_model() {
    let mut run = trained(approved());
    assert_eq!(node(&run, "gate").instances[0].state, InstanceState::Paused);
    assert_eq!(run.status, RunStatus::Running);
    assert!(
        node(&run, "register").instances.is_empty(),
        "register waits for the decision"
    );
    let decide = |approve, by: &str| Event::Decided {
        node: "gate".into(),
        approve,
        by: by.into(),
        note: "looks good".into(),
    };
    apply(&mut run, decide(true, "alice"), 10).unwrap();
    let again = apply(&mut run, decide(false, "bob"), 11).unwrap_err();
    assert!(again.0.contains("already approved by alice"), "{again}");
    let (_, seen) = drive(&mut run, 12);
    let reg = seen
        .iter()
        .find_map(|m| match m {
            MlflowEffect::RegisterModel {
                name,
                source,
                run_id,
                model_id,
                alias,
                tags,
                ..
            } => Some((
                name.clone(),
                source.clone(),
                run_id.clone(),
                model_id.clone(),
                alias.clone(),
                tags.clone(),
            )),
            _ => None,
        })
        .expect("a registration");
    assert_eq!(reg.0, "iris");
    assert_eq!(reg.1, "models:/m-1", "the best instance's logged model");
    assert_eq!(reg.2, "ml-train-1");
    assert_eq!(reg.3.as_deref(), Some("m-1"));
    assert_eq!(reg.4.as_deref(), Some("champion"));
    let tags: BTreeMap<_, _> = reg.5.into_iter().collect();
    assert_eq!(tags["concurrent.run_id"], "run1");
    assert_eq!(tags["concurrent.node"], "train");
    assert_eq!(tags["concurrent.instance"], "1");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let r = node(&run, "register").registered.clone().unwrap();
    assert_eq!(
        (r.model.as_str(), r.version.as_str(), r.source_run.as_str()),
        ("iris", "7", "ml-train-1")
    );
    let gate_tags = noted(&seen, "gate");
    assert!(
        gate_tags[0].1.starts_with("approved by alice at "),
        "{gate_tags:?}"
    );
    assert!(noted(&seen, "register")[0].1 == "iris version 7 (@champion)");
}

#[test]
fn a_rejection_fails_the_run_and_retry_failed_asks_again() {
    let mut run = trained(approved());
    apply(
        &mut run,
        Event::Decided {
            node: "gate".into(),
            approve: false,
            by: "bob".into(),
            note: "worse than the champion".into(),
        },
        10,
    )
    .unwrap();
    drive(&mut run, 11);
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run
        .error
        .as_ref()
        .unwrap()
        .contains("rejected by bob: worse than the champion"));
    assert!(node(&run, "register").instances.is_empty());
    apply(
        &mut run,
        Event::Repair {
            repair: Repair::RetryFailed,
            by: None,
        },
        20,
    )
    .unwrap();
    drive(&mut run, 21);
    assert_eq!(node(&run, "gate").instances[0].state, InstanceState::Paused);
    assert_eq!(node(&run, "gate").decision, None);
    assert_eq!(run.status, RunStatus::Running);
    // Not an approval, or not paused: refused, nothing changes.
    let e = apply(
        &mut run,
        Event::Decided {
            node: "train".into(),
            approve: true,
            by: "x".into(),
            note: String::new(),
        },
        22,
    )
    .unwrap_err();
    assert!(e.0.contains("not an approval"));
}

#[test]
fn an_approval_nobody_decides_is_decided_by_its_timeout() {
    let mut t = approved();
    t["nodes"][1]["timeoutSeconds"] = 60.into();
    t["nodes"][1]["onTimeout"] = "approve".into();
    let mut run = trained(t);
    let wake = next_wake(&run, 3).expect("the run wakes for the timeout");
    assert_eq!(
        wake,
        2 + 60_000,
        "paused when the last train instance ended, at 2"
    );
    apply(&mut run, Event::Tick, wake - 1).unwrap();
    assert_eq!(node(&run, "gate").instances[0].state, InstanceState::Paused);
    apply(&mut run, Event::Tick, wake).unwrap();
    let d = node(&run, "gate").decision.clone().unwrap();
    assert!(d.approved && d.by == "timeout");
    drive(&mut run, wake);
    assert_eq!(run.status, RunStatus::Succeeded);
}

#[test]
fn a_refused_registration_fails_the_run_with_mlflows_reason() {
    let mut t = approved();
    t["nodes"] = serde_json::json!([t["nodes"][0], t["nodes"][2]]);
    t["edges"] = serde_json::json!([{"from": "train", "to": "register", "input": "model", "select": {"metric": "accuracy", "mode": "max"}}]);
    t["nodes"][1]["artifactPath"] = "model".into();
    let mut run = run_of(t, &[]);
    let train = drive(&mut run, 1).0;
    for (k, acc) in [0.8, 0.95, 0.9].into_iter().enumerate() {
        run_item(
            &mut run,
            &train[k],
            output("model/MLmodel", &[("accuracy", acc)], None),
            2,
        );
    }
    let round = plan_round(reconcile(&run, 3), 128);
    let source = round.mlflow.iter().find_map(|m| match m {
        MlflowEffect::RegisterModel { source, .. } => Some(source.clone()),
        _ => None,
    });
    assert_eq!(
        source.as_deref(),
        Some("runs:/ml-train-1/model"),
        "artifactPath names the model in the run"
    );
    apply(
        &mut run,
        Event::MlflowRefused {
            call: MlflowCall::RegisterModel {
                node: "register".into(),
            },
            message: "RESOURCE_DOES_NOT_EXIST".into(),
        },
        4,
    )
    .unwrap();
    drive(&mut run, 5);
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error
            .as_ref()
            .unwrap()
            .contains("MLflow refused to register")
            && run
                .error
                .as_ref()
                .unwrap()
                .contains("RESOURCE_DOES_NOT_EXIST")
    );
}

#[test]
fn conditions_trigger_rules_approvals_and_registers_are_validated() {
    let problems = |t: serde_json::Value| {
        let t: Template = serde_json::from_value(t).unwrap();
        crate::validate(&t)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
    };
    let mut t = gated();
    t["nodes"][1]["when"] = "upstream.trian.best.metrics.a > 1 and params.targte == 'x' and upstream.publish.state == 'failed' and (".into();
    let p = problems(t.clone());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("/nodes/1/when: is not a condition: at character"),
        "{p:?}"
    );
    t["nodes"][1]["when"] = "upstream.trian.best.metrics.a > 1 and params.targte == 'x' and upstream.publish.state == 'failed' and upstream.train.best.run_id != ''".into();
    let p = problems(t.clone());
    assert!(
        p.iter()
            .any(|m| m.contains("node \"trian\", which does not exist; did you mean \"train\"")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("params.targte") && m.contains("did you mean params.target")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("\"publish\", which is not upstream")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("the best of \"train\"") && m.contains("add select")),
        "{p:?}"
    );
    let mut t = approved();
    t["nodes"][1]["instances"] = 2.into();
    t["nodes"][1]["compare"]["alias"] = "latest".into();
    t["nodes"][2]["alias"] = "v2".into();
    t["nodes"][0]["triggerRule"] = "anyFailed".into();
    t["edges"].as_array_mut().unwrap().pop();
    let p = problems(t);
    for want in [
        "/nodes/1/instances",
        "/nodes/1/compare/alias",
        "/nodes/2/alias",
        "/nodes/0/triggerRule",
        "/nodes/2/kind",
    ] {
        assert!(p.iter().any(|m| m.starts_with(want)), "{want}: {p:?}");
    }
}

fn notifies(run: &RunState, now: u64) -> Vec<super::notify::Notify> {
    plan_round(reconcile(run, now), 128).notify
}

#[test]
fn notifications_are_owed_for_a_waiting_approval_and_the_end_and_retried_until_answered() {
    let mut t = approved();
    t["notifications"] = serde_json::json!([
        {"urlSecret": "NOTIFY_SLACK", "signingSecret": "NOTIFY_KEY", "on": ["waiting", "failed"]},
        {"url": "https://example.com/hook", "on": ["succeeded"]}
    ]);
    let mut run = trained(t);
    let due = notifies(&run, 3);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].to, due[0].event.as_str()), (0, "waiting:gate"));
    assert_eq!(due[0].body["event"], "waiting");
    assert!(due[0].body["text"]
        .as_str()
        .unwrap()
        .contains("waits for an approval at node gate"));
    // A refused delivery is tried again after its backoff; the error stays on the run.
    let answer = |run: &mut RunState, what: &str, error: Option<&str>, now| {
        apply(
            run,
            Event::Notified {
                to: 0,
                what: what.into(),
                error: error.map(String::from),
            },
            now,
        )
        .unwrap();
    };
    answer(&mut run, "waiting:gate", Some("503 from the webhook"), 4);
    assert!(notifies(&run, 5).is_empty());
    assert!(reconcile(&run, 5).contains(&Effect::WakeAt(4 + 2_000)));
    assert_eq!(next_wake(&run, 5), Some(2_004));
    assert_eq!(
        run.notifications[0].error.as_deref(),
        Some("503 from the webhook")
    );
    assert_eq!(
        notifies(&run, 2_004).len(),
        1,
        "due again after the backoff"
    );
    answer(&mut run, "waiting:gate", None, 2_005);
    assert!(notifies(&run, 10_000).is_empty(), "delivered once");
    assert_eq!(run.notifications[0].delivered_at, Some(2_005));
    // Rejected: the run failed, which the first webhook is told; the second waits for a success.
    apply(
        &mut run,
        Event::Decided {
            node: "gate".into(),
            approve: false,
            by: "bob".into(),
            note: String::new(),
        },
        10_001,
    )
    .unwrap();
    drive(&mut run, 10_002);
    let due = notifies(&run, 10_003);
    assert_eq!(
        due.iter()
            .map(|n| (n.to, n.event.as_str()))
            .collect::<Vec<_>>(),
        vec![(0, "failed")]
    );
    assert!(
        due[0].body["text"].as_str().unwrap().contains("failed: "),
        "{}",
        due[0].body
    );
    // Given up after MAX_DELIVERY_ATTEMPTS, and never more.
    for k in 0..super::notify::MAX_DELIVERY_ATTEMPTS {
        answer(
            &mut run,
            "failed",
            Some("unreachable"),
            20_000 + u64::from(k) * 400_000,
        );
    }
    assert!(notifies(&run, u64::MAX / 2).is_empty());
    let d = run
        .notifications
        .iter()
        .find(|d| d.event == "failed")
        .unwrap();
    assert_eq!(
        (d.attempts, d.delivered_at, d.retry_at),
        (super::notify::MAX_DELIVERY_ATTEMPTS, None, None)
    );
}

#[test]
fn notification_secrets_must_be_notify_secrets() {
    let mut t = approved();
    t["notifications"] = serde_json::json!([
        {"urlSecret": "CONCURRENT_API_TOKEN", "on": ["failed"]},
        {"url": "ftp://x", "signingSecret": "NOTIFY_KEY", "on": []},
        {"on": ["succeeded"]}
    ]);
    let t: Template = serde_json::from_value(t).unwrap();
    let p: Vec<String> = crate::validate(&t)
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert!(
        p.iter().any(|m| m.starts_with(
            "/notifications/0/urlSecret: \"CONCURRENT_API_TOKEN\" is not a notification secret"
        )),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("/notifications/1/url: \"ftp://x\" is not an http(s) URL")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("/notifications/1/on: name what to notify of")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("/notifications/2: give either url or urlSecret")),
        "{p:?}"
    );
}
