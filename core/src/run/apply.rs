//! Recording what happened: [`apply`] an event (or [`apply_all`] of a batch), then let the run
//! move forward.

use crate::partition::{relative_path_problem, ArtifactFile};
use crate::template::Template;
use crate::wire::{Outcome, OUTPUTS_DIR};

use super::advance::{advance, end_run};
use super::event::{AttemptKey, Event, MlflowCall, Rejected};
use super::state::*;

/// Records an event, then moves the run forward (ready nodes, due retries, the run's end).
///
/// # Errors
/// [`Rejected`] when the event is stale or does not fit the run; the state is then unchanged.
pub fn apply(run: &mut RunState, event: Event, now: u64) -> Result<(), Rejected> {
    if record(run, event, now)? {
        advance(run, now);
    }
    Ok(())
}

/// Records events in order, then moves the run forward once: what [`apply`] does for each,
/// with one walk over the run's instances for the batch instead of one per event (an agent
/// reports 50 completions of a 10,000-wide node at once). One answer per event, in order.
///
/// The run moves forward after the batch, so an event is judged before what the earlier ones
/// would have set off: a success reported beside the failure that ends a fail-fast run is
/// recorded rather than refused as cancelled.
pub fn apply_all(
    run: &mut RunState,
    events: impl IntoIterator<Item = Event>,
    now: u64,
) -> Vec<Result<(), Rejected>> {
    let mut moves_run = false;
    let mut answers = Vec::new();
    for event in events {
        answers.push(match record(run, event, now) {
            Ok(moves) => {
                moves_run |= moves;
                Ok(())
            }
            Err(why) => Err(why),
        });
    }
    if moves_run {
        advance(run, now);
    }
    answers
}

/// Records one event; whether the run may have to move forward.
fn record(run: &mut RunState, event: Event, now: u64) -> Result<bool, Rejected> {
    // Only these can make a node ready, start a due retry or end the run; the rest (a lease, a
    // reported MLflow run, a closed one, a log tail…) skip the walk over every instance, which
    // for a 10,000-wide node is most of an event's cost.
    let moves_run = matches!(
        event,
        Event::ParentRunCreated(_)
            | Event::Finished { .. }
            | Event::Lapsed { .. }
            | Event::Cancel { .. }
            | Event::Repair { .. }
            | Event::Tick
            | Event::MlflowRefused { .. }
            | Event::Decided { .. }
            | Event::ModelRegistered { .. }
    );
    if event.is_mlflow_answer() {
        // MLflow answered: whatever kept it away is over.
        run.mlflow_wait = None;
    }
    match event {
        Event::ParentRunCreated(_)
        | Event::ChildRunCreated { .. }
        | Event::NoAttemptRun { .. }
        | Event::ParentRunSynced { .. }
        | Event::SelectionRecorded { .. }
        | Event::ModelRegistered { .. }
        | Event::NodeNoted { .. }
        | Event::AttemptRunClosed { .. }
        | Event::MlflowUnavailable { .. }
        | Event::MlflowRefused { .. } => mlflow_answer(run, event, now)?,
        Event::Enqueued { key } => {
            let a = attempt_mut(run, &key)?;
            a.enqueued = true;
            if a.state == AttemptState::Creating {
                a.state = AttemptState::Queued;
            }
        }
        Event::Withdrawn { key } => attempt_mut(run, &key)?.withdrawn = true,
        Event::Notified { to, what, error } => super::notify::answered(run, to, what, error, now),
        Event::Leased { .. } | Event::LogTail { .. } | Event::Requeued { .. } => {
            lease_news(run, event, now)?
        }
        Event::Finished { key, outcome } => finished(run, &key, outcome, true, now)?,
        Event::Lapsed { key, error } => finished(run, &key, Outcome::failed(error), false, now)?,
        Event::Cancel { reason } => {
            if run.status.is_terminal() {
                return Err(Rejected(format!("the run already ended {:?}", run.status)));
            }
            end_run(run, RunStatus::Cancelled, reason, now);
        }
        Event::Repair { repair, by } => {
            repair_run(run, &repair)?;
            run.repairs.push(RepairRecord {
                repair,
                at: now,
                by,
            });
        }
        Event::Tick => {}
        Event::Pinned { source, commit } => {
            run.pins.entry(source).or_insert(commit);
        }
        Event::Decided {
            node,
            approve,
            by,
            note,
        } => decide(run, &node, approve, by, note, now)?,
    }
    Ok(moves_run)
}

/// MLflow's answers to the run's calls (and the agents' runs it heard of).
fn mlflow_answer(run: &mut RunState, event: Event, now: u64) -> Result<(), Rejected> {
    match event {
        Event::ParentRunCreated(mlflow) => {
            if run.mlflow.is_none() {
                run.mlflow = Some(mlflow);
                run.mlflow_status = Some(RunStatus::Running);
            }
            if run.status == RunStatus::Pending {
                run.status = RunStatus::Running;
            }
        }
        Event::ChildRunCreated { key, run_id } => {
            let a = attempt_mut(run, &key)?;
            match &a.mlflow_run_id {
                Some(existing) if *existing != run_id => {
                    return Err(Rejected(format!(
                        "attempt already has MLflow run {existing}"
                    )))
                }
                _ => a.mlflow_run_id = Some(run_id),
            }
            if a.state == AttemptState::Creating {
                a.state = AttemptState::Queued;
            }
        }
        Event::NoAttemptRun { key } => {
            let a = attempt_mut(run, &key)?;
            if let Some(existing) = &a.mlflow_run_id {
                return Err(Rejected(format!(
                    "attempt already has MLflow run {existing}"
                )));
            }
            a.mlflow_closed = true;
        }
        Event::ParentRunSynced { status } => run.mlflow_status = Some(status),
        Event::SelectionRecorded { node, input } => {
            selection_mut(run, &node, &input)?.recorded = true
        }
        Event::ModelRegistered { node, version } => {
            let i = node_index(run, &node)?;
            let spec = match super::resolve::resolve(
                &run.template.nodes[i].kind,
                &run.parameters,
                &Default::default(),
            ) {
                crate::template::NodeKind::Register(r) => r,
                _ => return Err(Rejected(format!("node {node:?} registers no model"))),
            };
            let source = super::register::source(run, i, &spec, &run.nodes[i].selections)
                .map_err(Rejected)?;
            let n = &mut run.nodes[i];
            let inst = n
                .instances
                .first_mut()
                .filter(|x| x.state == InstanceState::Queued)
                .ok_or_else(|| Rejected(format!("node {node:?} is not registering")))?;
            inst.state = InstanceState::Succeeded;
            n.registered = Some(Registered {
                model: spec.model,
                version,
                source_run: source.run_id,
                alias: spec.alias,
            });
            n.noted = false;
        }
        Event::NodeNoted { node } => {
            run.node_mut(&node)
                .ok_or_else(|| Rejected(format!("the run has no node {node:?}")))?
                .noted = true
        }
        Event::AttemptRunClosed { key, run_id } => {
            let a = attempt_mut(run, &key)?;
            a.mlflow_closed = true;
            if a.mlflow_run_id.is_none() {
                a.mlflow_run_id = run_id;
            }
        }
        Event::MlflowUnavailable { reason } => {
            let (since, failures) = run
                .mlflow_wait
                .as_ref()
                .map_or((now, 1), |w| (w.since, w.failures + 1));
            run.mlflow_wait = Some(MlflowWait {
                message: format!("waiting for MLflow: {reason}"),
                since,
                failures,
                retry_at: now + mlflow_backoff_ms(failures),
            });
        }
        Event::MlflowRefused { call, message } => mlflow_refused(run, call, &message, now)?,
        other => unreachable!("not an MLflow answer: {other:?}"),
    }
    Ok(())
}

/// What the cluster's queue tells of a lease: taken, alive (its log tail), back unconfirmed.
fn lease_news(run: &mut RunState, event: Event, now: u64) -> Result<(), Rejected> {
    match event {
        Event::Leased { key, agent } => {
            let inst = current_instance_mut(run, &key)?;
            let a = inst
                .current_mut()
                .expect("current_instance_mut checked the attempt");
            match a.state {
                AttemptState::Queued => {
                    a.state = AttemptState::Running;
                    a.started_at = Some(now);
                    a.agent = Some(agent);
                    a.leased = true;
                    inst.state = InstanceState::Running;
                }
                AttemptState::Running if a.agent.as_deref() == Some(agent.as_str()) => {}
                s => return Err(Rejected(format!("{key} is {s:?}, not queued"))),
            }
        }
        Event::LogTail { key, tail } => {
            let a = attempt_mut(run, &key)?;
            if a.state != AttemptState::Running {
                return Err(Rejected(format!("{key} is not running")));
            }
            a.log_tail = Some(tail);
        }
        Event::Requeued { key } => {
            let inst = current_instance_mut(run, &key)?;
            let a = inst
                .current_mut()
                .expect("current_instance_mut checked the attempt");
            if a.state != AttemptState::Running {
                return Err(Rejected(format!("{key} is {:?}, not running", a.state)));
            }
            a.state = AttemptState::Queued;
            a.agent = None;
            a.started_at = None;
            inst.state = InstanceState::Queued;
        }
        other => unreachable!("not news of a lease: {other:?}"),
    }
    Ok(())
}

/// An attempt ended (`reported` by its agent, or its lease lapsed): its outcome, and what
/// becomes of its instance (done, a retry, failed).
fn finished(
    run: &mut RunState,
    key: &AttemptKey,
    outcome: Outcome,
    reported: bool,
    now: u64,
) -> Result<(), Rejected> {
    let retries = run
        .template
        .node(&key.node)
        .map(|n| n.retries.clone())
        .unwrap_or_default();
    let inst = current_instance_mut(run, key)?;
    let a = inst
        .current_mut()
        .expect("current_instance_mut checked the attempt");
    if a.state.is_terminal() || a.state == AttemptState::Creating {
        return Err(Rejected(format!("{key} is already {:?}", a.state)));
    }
    a.ended_at = Some(now);
    a.started_at.get_or_insert(now);
    a.reported = reported;
    let own_run = a.mlflow_run_id.clone().unwrap_or_default();
    // A step that reports an unsafe path (absolute, `..`) fails: downstream agents would
    // write outside their input directory.
    let outcome = match outcome {
        Outcome::Succeeded { outputs, facts } => {
            match outputs.iter().find_map(|o| relative_path_problem(&o.path)) {
                Some(why) => Outcome::Failed {
                    error: format!("the step reported an unsafe output path: {why}"),
                    facts,
                },
                None => Outcome::Succeeded { outputs, facts },
            }
        }
        failed => failed,
    };
    match outcome {
        Outcome::Succeeded { outputs, facts } => {
            a.facts = facts;
            a.state = AttemptState::Succeeded;
            inst.state = InstanceState::Succeeded;
            inst.outputs = outputs
                .into_iter()
                .map(|o| ArtifactFile {
                    artifact_path: o
                        .artifact_path
                        .unwrap_or_else(|| format!("{OUTPUTS_DIR}/{}", o.path)),
                    run_id: o.run_id.unwrap_or_else(|| own_run.clone()),
                    path: o.path,
                    size: o.size,
                    sha256: o.sha256,
                })
                .collect();
        }
        Outcome::Failed { error, facts } => {
            a.facts = facts;
            a.state = AttemptState::Failed;
            a.error = Some(error);
            if inst.attempts.len() as u32 - inst.repair_base <= retries.limit {
                inst.state = InstanceState::Retrying;
                inst.retry_at = Some(now + retries.delay_ms(inst.attempts.len() as u32 + 1));
            } else {
                inst.state = InstanceState::Failed;
            }
        }
    }
    Ok(())
}

/// A permanent MLflow refusal ends what the call was for, with MLflow's message and what to do.
fn mlflow_refused(
    run: &mut RunState,
    call: MlflowCall,
    message: &str,
    now: u64,
) -> Result<(), Rejected> {
    match call {
        MlflowCall::ParentRun => {
            if run.mlflow.is_some() || run.status.is_terminal() {
                return Err(Rejected("the parent run already exists".into()));
            }
            let why = format!(
                "MLflow refused to create the run's parent run in experiment \"concurrent/{}\": {message}. \
                 If that experiment was deleted, restore it in MLflow or remove it for good (`mlflow gc`), then start the run again",
                run.template.name
            );
            end_run(run, RunStatus::Failed, why, now);
        }
        MlflowCall::CloseAttemptRun { key } => {
            // The attempt's own record keeps its outcome; MLflow's copy stays as it is.
            attempt_mut(run, &key)?.mlflow_closed = true;
        }
        MlflowCall::RecordSelection { node, input } => {
            // The run's own record keeps the choice; MLflow goes without it.
            selection_mut(run, &node, &input)?.recorded = true;
        }
        MlflowCall::RegisterModel { node } => {
            let n = run
                .node_mut(&node)
                .ok_or_else(|| Rejected(format!("the run has no node {node:?}")))?;
            let inst = n
                .instances
                .first_mut()
                .filter(|x| x.state == InstanceState::Queued)
                .ok_or_else(|| Rejected(format!("node {node:?} is not registering")))?;
            inst.state = InstanceState::Failed;
            n.error = Some(format!(
                "MLflow refused to register the model of node {node:?}: {message}. Check the model name and that the upstream attempt logged a model (or set the node's artifactPath)"
            ));
        }
        MlflowCall::NoteNode { node } => {
            // The run's own record keeps it; MLflow goes without the tags.
            if let Some(n) = run.node_mut(&node) {
                n.noted = true;
            }
        }
        MlflowCall::SyncParentRun => {
            run.mlflow_status = Some(if run.status.is_terminal() {
                run.status
            } else {
                RunStatus::Running
            });
        }
    }
    Ok(())
}

/// A person's decision on a paused approval node.
fn decide(
    run: &mut RunState,
    node: &str,
    approve: bool,
    by: String,
    note: String,
    now: u64,
) -> Result<(), Rejected> {
    let i = node_index(run, node)?;
    if !matches!(
        run.template.nodes[i].kind,
        crate::template::NodeKind::Approval(_)
    ) {
        return Err(Rejected(format!("node {node:?} is not an approval")));
    }
    let n = &mut run.nodes[i];
    let Some(inst) = n
        .instances
        .first_mut()
        .filter(|x| x.state == InstanceState::Paused)
    else {
        return Err(Rejected(match &n.decision {
            Some(d) => format!(
                "approval {node:?} was already {} by {}",
                if d.approved { "approved" } else { "rejected" },
                d.by
            ),
            None => format!("approval {node:?} is not waiting for a decision"),
        }));
    };
    inst.retry_at = None;
    inst.state = if approve {
        InstanceState::Succeeded
    } else {
        n.error = Some(format!(
            "approval {node:?} was rejected by {by}{}",
            if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            }
        ));
        InstanceState::Failed
    };
    n.decision = Some(Decision {
        approved: approve,
        by,
        at: now,
        note,
    });
    n.noted = false;
    Ok(())
}

fn node_index(run: &RunState, node: &str) -> Result<usize, Rejected> {
    run.nodes
        .iter()
        .position(|n| n.id == node)
        .ok_or_else(|| Rejected(format!("the run has no node {node:?}")))
}

/// Puts the instances a repair covers back to `Waiting`; they are planned again (with a new
/// attempt) as soon as their upstream nodes have succeeded.
fn repair_run(run: &mut RunState, repair: &Repair) -> Result<(), Rejected> {
    if !run.status.is_terminal() {
        return Err(Rejected(
            format!(
                "the run is still {:?}; wait for it to end or cancel it first",
                run.status
            )
            .to_lowercase(),
        ));
    }
    let rerun: Vec<String> = match repair {
        Repair::RetryFailed => {
            let failed: Vec<String> = run
                .nodes
                .iter()
                .filter(|n| {
                    n.error.is_some()
                        || n.skipped.is_some()
                        || n.instances.iter().any(|i| {
                            matches!(i.state, InstanceState::Failed | InstanceState::Cancelled)
                        })
                })
                .map(|n| n.id.clone())
                .collect();
            if failed.is_empty() && run.nodes.iter().all(|n| !n.instances.is_empty()) {
                return Err(Rejected(
                    "nothing failed or was cancelled; use rerun-from to run nodes again".into(),
                ));
            }
            failed
        }
        Repair::RerunFrom { node } => {
            if run.node(node).is_none() {
                return Err(Rejected(format!("the run has no node {node:?}")));
            }
            downstream_of(&run.template, node)
        }
    };
    let everything = matches!(repair, Repair::RerunFrom { .. });
    let RunState {
        template, nodes, ..
    } = run;
    for (spec, node) in template
        .nodes
        .iter()
        .zip(nodes.iter_mut())
        .filter(|(_, n)| rerun.contains(&n.id))
    {
        // Skipped, approval and register nodes are decided afresh from their planning.
        if node.skipped.is_some() || !spec.kind.runs_on_agent() {
            node.reset();
            continue;
        }
        node.error = None;
        for inst in &mut node.instances {
            if everything || matches!(inst.state, InstanceState::Failed | InstanceState::Cancelled)
            {
                inst.state = InstanceState::Waiting;
                inst.outputs.clear();
                inst.retry_at = None;
            }
        }
    }
    run.status = if run.mlflow.is_some() {
        RunStatus::Running
    } else {
        RunStatus::Pending
    };
    run.ended_at = None;
    run.error = None;
    Ok(())
}

/// `node` and every node downstream of it, in template order.
fn downstream_of(t: &Template, node: &str) -> Vec<String> {
    let mut found = vec![node.to_string()];
    loop {
        let more: Vec<String> = t
            .edges
            .iter()
            .filter(|e| found.contains(&e.from) && !found.contains(&e.to))
            .map(|e| e.to.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        found.extend(more);
        found.sort();
        found.dedup();
    }
    t.nodes
        .iter()
        .filter(|n| found.contains(&n.id))
        .map(|n| n.id.clone())
        .collect()
}

fn selection_mut<'a>(
    run: &'a mut RunState,
    node: &str,
    input: &str,
) -> Result<&'a mut Selection, Rejected> {
    run.node_mut(node)
        .and_then(|n| n.selections.iter_mut().find(|s| s.input == input))
        .ok_or_else(|| {
            Rejected(format!(
                "node {node:?} has no selection for input {input:?}"
            ))
        })
}

fn attempt_mut<'a>(run: &'a mut RunState, key: &AttemptKey) -> Result<&'a mut Attempt, Rejected> {
    run.node_mut(&key.node)
        .and_then(|n| n.instances.get_mut(key.instance as usize))
        .and_then(|i| i.attempts.get_mut(key.attempt.wrapping_sub(1) as usize))
        .ok_or_else(|| Rejected(format!("run has no {key}")))
}

/// The instance, if `key.attempt` is its current attempt.
fn current_instance_mut<'a>(
    run: &'a mut RunState,
    key: &AttemptKey,
) -> Result<&'a mut Instance, Rejected> {
    let inst = run
        .node_mut(&key.node)
        .and_then(|n| n.instances.get_mut(key.instance as usize))
        .ok_or_else(|| {
            Rejected(format!(
                "run has no instance {}[{}]",
                key.node, key.instance
            ))
        })?;
    match inst.current() {
        Some(a) if a.number == key.attempt => Ok(inst),
        Some(a) => Err(Rejected(format!(
            "{key} is stale; attempt {} replaced it",
            a.number
        ))),
        None => Err(Rejected(format!(
            "{}[{}] has not started",
            key.node, key.instance
        ))),
    }
}
