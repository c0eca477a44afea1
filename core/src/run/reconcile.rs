//! Deriving what is still to do: [`reconcile`] a run's state into effects, and the MLflow
//! runs and work items those effects carry (tags, params, the step's spec).

use crate::sweep::point_and_partition;
use crate::template::{Node, NodeKind};
use crate::wire::{CacheSpec, ChildRun, StepSpec, WorkItem};
use std::collections::BTreeMap;

use super::due::Dues;
use super::effect::{Effect, MlflowEffect, QueueEffect};
use super::event::AttemptKey;
use super::resolve::{resolve, sub};
use super::state::*;

/// The MLflow runs of the ended attempts whose end no agent reported, with their final status.
fn unreported_attempt_runs(run: &RunState) -> BTreeMap<String, &'static str> {
    run.nodes
        .iter()
        .flat_map(|n| &n.instances)
        .flat_map(|i| &i.attempts)
        .filter(|a| a.state.is_terminal() && !a.reported)
        .filter_map(|a| Some((a.mlflow_run_id.clone()?, a.state.mlflow_status())))
        .collect()
}

/// Everything that still has to be done for the run, derived from its state alone.
pub fn reconcile(run: &RunState, now: u64) -> Vec<Effect> {
    reconcile_at_most(run, now, usize::MAX)
}

/// [`reconcile`], with at most `max_items` work items to enqueue: a 10,000-wide node's items
/// (each with its inputs) are built a batch at a time, not all at once in the run's memory.
pub fn reconcile_at_most(run: &RunState, now: u64, max_items: usize) -> Vec<Effect> {
    let mut effects = reconcile_all(run, now, max_items);
    // Webhooks are no MLflow calls: they go on while MLflow is away.
    let (notify, later) = super::notify::due(run, now);
    effects.extend(notify.into_iter().map(Effect::Notify));
    effects.extend(later.map(Effect::WakeAt));
    if let Some(w) = run.mlflow_wait.as_ref().filter(|w| w.retry_at > now) {
        // MLflow is backing off: queue effects go on, MLflow calls wait.
        effects.retain(|e| !matches!(e, Effect::Mlflow(_)));
        effects.push(Effect::WakeAt(w.retry_at));
    }
    effects
}

/// When the run next has something to do: `now` if [`reconcile`] has any effect, else its
/// earliest wake-up. What the run object asks after every event, without building the effects
/// (a 10,000-wide node's work items) only to look at their times.
pub fn next_wake(run: &RunState, now: u64) -> Option<u64> {
    next_wake_with(run, &Dues::of(run), now)
}

/// [`next_wake`] with the instances' [`Dues`] already summed (the run object keeps them).
pub fn next_wake_with(run: &RunState, dues: &Dues, now: u64) -> Option<u64> {
    // MLflow is backing off: its calls wait, and the run wakes when the backoff ends.
    let paused = run
        .mlflow_wait
        .as_ref()
        .map(|w| w.retry_at)
        .filter(|&t| t > now);
    let mut due = paused;
    let mut wake = |t: u64| due = Some(due.map_or(t, |d| d.min(t)));
    let (notify, later) = super::notify::due(run, now);
    if !notify.is_empty() {
        wake(now);
    }
    later.into_iter().for_each(&mut wake);
    let mlflow_call = if paused.is_some() { None } else { Some(now) };
    if run.mlflow.is_none() {
        if run.status == RunStatus::Pending {
            mlflow_call.into_iter().for_each(&mut wake);
        }
        return due;
    }
    if dues.any_queue_work() {
        return Some(now);
    }
    dues.first_retry_at().into_iter().for_each(&mut wake);
    let unrecorded = run.nodes.iter().enumerate().any(|(i, n)| {
        n.selections.iter().any(|s| !s.recorded) || to_note(n) || super::register::pending(run, i)
    });
    if dues.any_to_close() || !run.mlflow_in_sync() || unrecorded {
        mlflow_call.into_iter().for_each(&mut wake);
    }
    due
}

fn reconcile_all(run: &RunState, now: u64, max_items: usize) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut items = 0;
    let Some(mlflow) = &run.mlflow else {
        if run.status == RunStatus::Pending {
            effects.push(parent_run_effect(run));
        }
        return effects;
    };
    let mut wake: Option<u64> = None;
    for node in &run.nodes {
        for inst in &node.instances {
            if let Some(at) = inst.retry_at {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            let Some(a) = inst.current() else { continue };
            if matches!(a.state, AttemptState::Creating | AttemptState::Queued)
                && !a.enqueued
                && items < max_items
            {
                items += 1;
                effects.push(Effect::Queue(QueueEffect::Enqueue(Box::new(work_item(
                    run, mlflow, node, inst, a,
                )))));
            }
            // Earlier attempts too: a retry may start before its predecessor's run is closed,
            // and a repair before a cancelled attempt was withdrawn (its step must still stop).
            for a in &inst.attempts {
                let key = AttemptKey::new(node.id.clone(), inst.index, a.number);
                if a.state == AttemptState::Cancelled && a.enqueued && !a.withdrawn {
                    effects.push(Effect::Queue(QueueEffect::Withdraw {
                        cluster: run.cluster_of(&node.id).to_string(),
                        item_id: key.work_item_id(&run.id),
                        attempt: key.clone(),
                    }))
                }
                if !a.state.is_terminal() || a.mlflow_closed {
                    continue;
                }
                let (status, end_time) = (a.state.mlflow_status(), a.ended_at.unwrap_or(now));
                match &a.mlflow_run_id {
                    Some(run_id) => effects.push(Effect::Mlflow(MlflowEffect::CloseAttemptRun {
                        attempt: key,
                        run_id: run_id.clone(),
                        status,
                        end_time,
                    })),
                    // Its agent may have made the run and died before telling, or died before
                    // it could make one.
                    None if a.leased => {
                        let mut child = child_run(run, mlflow, node, inst, a);
                        child.maybe_exists = true;
                        effects.push(Effect::Mlflow(MlflowEffect::CloseUnreportedRun {
                            attempt: key,
                            experiment_id: mlflow.experiment_id.clone(),
                            run: child,
                            note: unreported_note(a),
                            start_time: a.started_at.unwrap_or(end_time),
                            status,
                            end_time,
                        }))
                    }
                    None => {}
                }
            }
        }
    }
    for (i, node) in run.nodes.iter().enumerate() {
        for sel in node.selections.iter().filter(|s| !s.recorded) {
            effects.push(Effect::Mlflow(selection_effect(&mlflow.run_id, node, sel)));
        }
        if let Some(e) = super::register::effect(run, i) {
            effects.push(Effect::Mlflow(e));
        }
        if let Some(e) = note_effect(&mlflow.run_id, node) {
            effects.push(Effect::Mlflow(e));
        }
    }
    if !run.mlflow_in_sync() {
        let terminal = run.status.is_terminal();
        effects.push(Effect::Mlflow(MlflowEffect::SyncParentRun {
            run_id: mlflow.run_id.clone(),
            status: if terminal {
                run.status
            } else {
                RunStatus::Running
            },
            end_time: terminal.then(|| run.ended_at.unwrap_or(now)),
            metrics: if terminal {
                super::usage::parent_metrics(run)
            } else {
                Vec::new()
            },
            // When every step's end was reported, no step is left to reopen a run: MLflow is
            // asked about none.
            attempt_runs: if terminal {
                unreported_attempt_runs(run)
            } else {
                BTreeMap::new()
            },
        }));
    }
    if let Some(at) = wake {
        effects.push(Effect::WakeAt(at));
    }
    effects
}

/// Whether the parent run has yet to carry what became of the node.
fn to_note(node: &NodeRun) -> bool {
    !node.noted && (node.skipped.is_some() || node.decision.is_some() || node.registered.is_some())
}

/// MLflow keeps at most this many characters of a tag's value (8,000 in MLflow 3; fewer kept
/// for older servers).
const MAX_TAG: usize = 5_000;

/// The parent run's tags for what became of a node: skipped and why, an approval's decision,
/// a registered version.
fn note_effect(parent: &str, node: &NodeRun) -> Option<MlflowEffect> {
    if !to_note(node) {
        return None;
    }
    let cut = |s: &str| s.chars().take(MAX_TAG).collect::<String>();
    let id = &node.id;
    let mut tags = Vec::new();
    if let Some(why) = &node.skipped {
        tags.push((format!("concurrent.skipped.{id}"), cut(why)));
    }
    if let Some(d) = &node.decision {
        let verdict = if d.approved { "approved" } else { "rejected" };
        tags.push((
            format!("concurrent.approval.{id}"),
            format!("{verdict} by {} at {}", d.by, crate::time::rfc3339(d.at)),
        ));
        if !d.note.is_empty() {
            tags.push((format!("concurrent.approval.{id}.note"), cut(&d.note)));
        }
    }
    if let Some(r) = &node.registered {
        let alias = r
            .alias
            .as_ref()
            .map(|a| format!(" (@{a})"))
            .unwrap_or_default();
        tags.push((
            format!("concurrent.registered.{id}"),
            format!("{} version {}{alias}", r.model, r.version),
        ));
    }
    Some(MlflowEffect::NoteNode {
        run_id: parent.to_string(),
        node: id.clone(),
        tags,
    })
}

/// What a `select` edge chose, as the parent run records it: tags with the metric and the
/// chosen MLflow runs, and every candidate's value as `selections/<node>.<input>.json`.
fn selection_effect(parent: &str, node: &NodeRun, sel: &Selection) -> MlflowEffect {
    let run_of = |i: u32| {
        sel.candidates
            .iter()
            .find(|c| c.instance == i)
            .and_then(|c| c.mlflow_run_id.clone())
            .unwrap_or_default()
    };
    let chosen: Vec<String> = sel.chosen.iter().map(|&i| run_of(i)).collect();
    let prefix = format!("concurrent.select.{}.{}", node.id, sel.input);
    let mode = match sel.mode {
        crate::template::SelectMode::Min => "min",
        crate::template::SelectMode::Max => "max",
    };
    let mut tags = vec![
        (format!("{prefix}.metric"), format!("{mode} {}", sel.metric)),
        (format!("{prefix}.chosen"), chosen.join(",")),
    ];
    let missing = sel.without_metric();
    if !missing.is_empty() {
        tags.push((
            format!("{prefix}.without_metric"),
            missing
                .iter()
                .map(|i| format!("{}[{i}]", sel.from))
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    MlflowEffect::RecordSelection {
        run_id: parent.to_string(),
        node: node.id.clone(),
        input: sel.input.clone(),
        tags,
        path: format!("selections/{}.{}.json", node.id, sel.input),
        json: serde_json::to_string_pretty(sel).unwrap_or_default(),
    }
}

/// The parent run: the template, its version, the run and its parameters.
fn parent_run_effect(run: &RunState) -> Effect {
    let t = &run.template;
    Effect::Mlflow(MlflowEffect::CreateParentRun {
        key: run.id.clone(),
        experiment_name: format!("concurrent/{}", t.name),
        experiment_id: run.experiment_id.clone(),
        run_name: format!("{}-{}", t.name, &run.id[..run.id.len().min(8)]),
        tags: vec![
            ("concurrent.key".into(), run.id.clone()),
            ("concurrent.run_id".into(), run.id.clone()),
            ("concurrent.template".into(), t.name.clone()),
            (
                "concurrent.template_version".into(),
                run.template_version.to_string(),
            ),
            ("concurrent.cluster".into(), run.cluster.clone()),
            (
                "mlflow.source.name".into(),
                format!("concurrent:{}", t.name),
            ),
        ],
        params: run
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// What instance `inst` of node `node_id` runs: the node's kind with parameters and upstream
/// choices filled in, its sweep point's values among its project parameters; and which point
/// and partition it is.
fn instance_kind(run: &RunState, node: &Node, index: u32) -> (NodeKind, Option<u32>, u32) {
    let upstream = super::select::upstream_values(run, &node.id);
    let mut kind = resolve(&node.kind, &run.parameters, &upstream);
    let (point, partition) = point_and_partition(index, node.partitions());
    let swept = match (&mut kind, node.sweep()) {
        (NodeKind::Project(p), Some(s)) => {
            p.parameters.extend(s.point(point as usize));
            p.sweep = None;
            Some(point)
        }
        _ => None,
    };
    (kind, swept, partition)
}

/// An attempt's child run, tagged with where it sits in the DAG (and its sweep point), its
/// params the node's resolved project parameters.
fn child_run(
    run: &RunState,
    mlflow: &MlflowRef,
    node_run: &NodeRun,
    inst: &Instance,
    a: &Attempt,
) -> ChildRun {
    let node_id = node_run.id.as_str();
    let node = run
        .template
        .node(node_id)
        .expect("run nodes mirror template nodes");
    let (kind, point, partition) = instance_kind(run, node, inst.index);
    let key = AttemptKey::new(node_id, inst.index, a.number).work_item_id(&run.id);
    let mut tags = vec![
        ("concurrent.key".to_string(), key.clone()),
        ("mlflow.parentRunId".to_string(), mlflow.run_id.clone()),
        ("concurrent.run_id".into(), run.id.clone()),
        ("concurrent.template".into(), run.template.name.clone()),
        ("concurrent.node".into(), node_id.to_string()),
        ("concurrent.instance".into(), inst.index.to_string()),
        ("concurrent.attempt".into(), a.number.to_string()),
        (
            "concurrent.partition".into(),
            format!("{partition}/{}", node.partitions()),
        ),
        (
            "concurrent.input_files".into(),
            node_run.input_size(inst).0.to_string(),
        ),
        ("concurrent.kind".into(), kind.tag().to_string()),
    ];
    if let Some(point) = point {
        tags.push(("concurrent.sweep.point".into(), point.to_string()));
    }
    let params = match &kind {
        NodeKind::Project(p) => {
            tags.push((
                "mlflow.source.name".into(),
                crate::refs::display_url(&p.uri),
            ));
            tags.push(("mlflow.project.entryPoint".into(), p.entry_point.clone()));
            p.parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
        NodeKind::Inference(i) => vec![("model_uri".into(), i.model_uri.clone())],
        // Approvals and registrations have no attempts, so no child run.
        NodeKind::Input(_) | NodeKind::Approval(_) | NodeKind::Register(_) => Vec::new(),
    };
    ChildRun {
        key,
        run_name: match point {
            Some(p) => format!("{node_id}[{}] point {p} #{}", inst.index, a.number),
            None => format!("{node_id}[{}] #{}", inst.index, a.number),
        },
        tags,
        params,
        maybe_exists: false,
    }
}

/// The description of an attempt's MLflow run that the run itself made, its agent having
/// ended without reporting one.
fn unreported_note(a: &Attempt) -> String {
    let agent = a.agent.as_deref().unwrap_or("unknown");
    let why = a.error.as_deref().unwrap_or("no reason was recorded");
    crate::logtail::keep_start(
        &format!("Concurrent recorded this attempt's end without its agent ({agent}) reporting an MLflow run (the agent may have stopped before it could make one). {why}"),
        4000,
    )
}

/// The work item of an attempt, with parameters, upstream choices and its sweep point filled in.
fn work_item(
    run: &RunState,
    mlflow: &MlflowRef,
    node_run: &NodeRun,
    inst: &Instance,
    a: &Attempt,
) -> WorkItem {
    let node_id = node_run.id.as_str();
    let node = run
        .template
        .node(node_id)
        .expect("run nodes mirror template nodes");
    let (kind, _, partition) = instance_kind(run, node, inst.index);
    let cache = match &kind {
        NodeKind::Project(_) => node
            .cache
            .or(run.template.cache)
            .filter(|c| c.enabled)
            .map(|c| CacheSpec {
                read: !run.ignore_cache,
                max_age_ms: c.max_age_seconds.map(|s| s.saturating_mul(1000)),
            }),
        _ => None,
    };
    WorkItem {
        id: AttemptKey::new(node_id, inst.index, a.number).work_item_id(&run.id),
        run_id: run.id.clone(),
        node_id: node_id.to_string(),
        instance: inst.index,
        attempt: a.number,
        cluster: run.cluster_of(node_id).to_string(),
        step: StepSpec {
            template: run.template.name.clone(),
            image: node.image.as_ref().map(|i| sub(i, &run.parameters)),
            resources: node.resources.clone(),
            timeout_seconds: node.timeout_seconds,
            env: node
                .env
                .iter()
                .map(|(k, v)| (k.clone(), sub(v, &run.parameters)))
                .collect(),
            secret_env: node.secret_env.clone(),
            env_manager: node.env_manager,
            kubernetes: node.kubernetes.clone(),
            partition_index: partition,
            partition_count: node.partitions(),
            // Shared inputs travel once per batch (`RunState::shared_for`), not in each item.
            inputs: inst.inputs.clone(),
            shared_inputs: node_run.shared_key(&run.id),
            mlflow: MlflowRef {
                experiment_id: mlflow.experiment_id.clone(),
                run_id: a.mlflow_run_id.clone().unwrap_or_default(),
            },
            child_run: a
                .mlflow_run_id
                .is_none()
                .then(|| child_run(run, mlflow, node_run, inst, a)),
            artifact_uri: None,
            input_roots: Default::default(),
            parent_run_id: Some(mlflow.run_id.clone()),
            commit: match &kind {
                NodeKind::Project(p) if p.is_git() => run.pins.get(&p.source_key()).cloned(),
                _ => None,
            },
            cache,
            kind,
        },
    }
}
