//! The run state machine: [`start`], [`apply`] an event, [`reconcile`] into effects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::work_item_id;
use crate::params::substitute;
use crate::partition::{input_path, plan, relative_path_problem, ArtifactFile};
use crate::template::{NodeKind, Template};
use crate::validate::{validate, Problem};
use crate::wire::{Outcome, StepSpec, WorkItem, OUTPUTS_DIR};

use super::state::*;

/// Something that happened to a run. Each is applied by [`apply`]. Serializable because the
/// cluster queues send them to the run objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// The MLflow experiment and parent run exist.
    ParentRunCreated(MlflowRef),
    /// The MLflow child run of an attempt exists.
    ChildRunCreated {
        node: String,
        instance: u32,
        attempt: u32,
        run_id: String,
    },
    /// The cluster queue holds the attempt's work item.
    Enqueued {
        node: String,
        instance: u32,
        attempt: u32,
    },
    /// The cluster queue dropped (or flagged for killing) a cancelled attempt's work item.
    Withdrawn {
        node: String,
        instance: u32,
        attempt: u32,
    },
    /// An attempt's MLflow run shows its final status.
    AttemptRunClosed {
        node: String,
        instance: u32,
        attempt: u32,
    },
    /// The MLflow parent run shows this status.
    ParentRunSynced { status: RunStatus },
    /// An agent leased the attempt.
    Leased {
        node: String,
        instance: u32,
        attempt: u32,
        agent: String,
    },
    /// The lease ended before its agent confirmed it with a heartbeat (the agent died while its
    /// long-poll was answered): nothing ran, so the attempt waits in the queue again, uncounted.
    Requeued {
        node: String,
        instance: u32,
        attempt: u32,
    },
    /// The agent sent the last lines of a running attempt's log.
    LogTail {
        node: String,
        instance: u32,
        attempt: u32,
        tail: String,
    },
    /// The attempt ended (reported by its agent, or by the queue when its lease expired).
    Finished {
        node: String,
        instance: u32,
        attempt: u32,
        outcome: Outcome,
    },
    /// A user cancelled the run.
    Cancel { reason: String },
    /// A user repairs an ended run.
    Repair { repair: Repair, by: Option<String> },
    /// Time passed (an alarm fired): retries that are due start.
    Tick,
    /// MLflow failed with a retryable error (unreachable, 5xx, 429): MLflow calls pause for a
    /// capped exponential backoff, and the run shows "waiting for MLflow: <reason>".
    MlflowUnavailable { reason: String },
    /// MLflow refused a call for good (a deleted experiment, a value it does not accept): what
    /// the call was for fails with MLflow's message, instead of being retried for ever.
    MlflowRefused { call: MlflowCall, message: String },
    /// A step resolved a git source to a commit: the first one becomes the run's pin.
    Pinned { source: String, commit: String },
}

/// Which MLflow call of the run an [`Event::MlflowRefused`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "camelCase")]
pub enum MlflowCall {
    ParentRun,
    ChildRun {
        node: String,
        instance: u32,
        attempt: u32,
    },
    CloseAttemptRun {
        node: String,
        instance: u32,
        attempt: u32,
    },
    SyncParentRun,
}

/// Work the run asks for. The edge's run object carries out each effect and applies the event
/// named in its doc line; an effect that fails is derived again by the next [`reconcile`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Find or create the experiment, then create the parent run. → [`Event::ParentRunCreated`]
    CreateParentRun {
        /// The run's id, also tagged `concurrent.key`: a create whose answer was lost (an edge
        /// restart) is found by it instead of being made twice.
        key: String,
        experiment_name: String,
        run_name: String,
        tags: Vec<(String, String)>,
        params: Vec<(String, String)>,
    },
    /// Create an attempt's child run. → [`Event::ChildRunCreated`]
    CreateChildRun {
        node: String,
        instance: u32,
        attempt: u32,
        /// The attempt's work item id, also tagged `concurrent.key` (see `CreateParentRun`).
        key: String,
        experiment_id: String,
        run_name: String,
        tags: Vec<(String, String)>,
        params: Vec<(String, String)>,
    },
    /// Put a work item into its cluster's queue (idempotent by item id). → [`Event::Enqueued`]
    Enqueue(Box<WorkItem>),
    /// Drop a queued item, or flag a leased one so its agent kills it. → [`Event::Withdrawn`]
    Withdraw {
        cluster: String,
        item_id: String,
        node: String,
        instance: u32,
        attempt: u32,
    },
    /// Set an attempt's MLflow run to its final status. → [`Event::AttemptRunClosed`]
    CloseAttemptRun {
        node: String,
        instance: u32,
        attempt: u32,
        run_id: String,
        status: &'static str,
        end_time: u64,
    },
    /// Set the parent run's status: final when the run ended, RUNNING again after a repair.
    /// → [`Event::ParentRunSynced`]
    SyncParentRun {
        run_id: String,
        status: RunStatus,
        end_time: Option<u64>,
    },
    /// Call [`reconcile`] again with an [`Event::Tick`] at this time (a retry is due).
    WakeAt(u64),
}

impl Effect {
    /// The MLflow call this effect makes, or `None` for queue and timer effects.
    pub fn mlflow_call(&self) -> Option<MlflowCall> {
        match self {
            Effect::CreateParentRun { .. } => Some(MlflowCall::ParentRun),
            Effect::CreateChildRun {
                node,
                instance,
                attempt,
                ..
            } => Some(MlflowCall::ChildRun {
                node: node.clone(),
                instance: *instance,
                attempt: *attempt,
            }),
            Effect::CloseAttemptRun {
                node,
                instance,
                attempt,
                ..
            } => Some(MlflowCall::CloseAttemptRun {
                node: node.clone(),
                instance: *instance,
                attempt: *attempt,
            }),
            Effect::SyncParentRun { .. } => Some(MlflowCall::SyncParentRun),
            Effect::Enqueue(_) | Effect::Withdraw { .. } | Effect::WakeAt(_) => None,
        }
    }
}

/// An event that does not apply to the run as it is (a stale completion, a second cancel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Why a run cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The template version has validation problems.
    #[error("the template has {} problem(s); fix them and save a new version", .0.len())]
    InvalidTemplate(Vec<Problem>),
    /// Parameter overrides do not fit the template.
    #[error("{0}")]
    BadParameters(String),
}

/// Creates a run of a template version.
///
/// # Errors
/// [`StartError`] when the template is invalid, an override names an unknown parameter, or a
/// parameter without default gets no value.
pub fn start(
    id: String,
    template: Template,
    template_version: u32,
    overrides: BTreeMap<String, String>,
    cluster: String,
    started_by: Option<String>,
    now: u64,
) -> Result<RunState, StartError> {
    let problems = validate(&template);
    if !problems.is_empty() {
        return Err(StartError::InvalidTemplate(problems));
    }
    let declared: Vec<&str> = template
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if let Some(unknown) = overrides.keys().find(|k| !declared.contains(&k.as_str())) {
        return Err(StartError::BadParameters(format!(
            "parameter {unknown:?} is not declared by template {:?} (declared: {})",
            template.name,
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        )));
    }
    let mut parameters = BTreeMap::new();
    for p in &template.parameters {
        match overrides.get(&p.name).or(p.default.as_ref()) {
            Some(v) => {
                parameters.insert(p.name.clone(), v.clone());
            }
            None => {
                return Err(StartError::BadParameters(format!(
                    "parameter {:?} has no default; give it a value when starting the run",
                    p.name
                )))
            }
        }
    }
    // Values with parameter references are checked now that the values are known.
    let mut resolved = template.clone();
    for n in &mut resolved.nodes {
        n.kind = resolve(&n.kind, &parameters);
        n.image = n.image.as_ref().map(|i| sub(i, &parameters));
        for v in n.env.values_mut() {
            *v = sub(v, &parameters);
        }
    }
    let problems = validate(&resolved);
    if !problems.is_empty() {
        return Err(StartError::BadParameters(format!(
            "with these parameter values the template is not valid: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let nodes = template
        .nodes
        .iter()
        .map(|n| NodeRun {
            id: n.id.clone(),
            instances: Vec::new(),
            unmatched_inputs: Vec::new(),
            error: None,
        })
        .collect();
    let mut run = RunState {
        id,
        template,
        template_version,
        parameters,
        cluster,
        status: RunStatus::Pending,
        started_by,
        created_at: now,
        ended_at: None,
        error: None,
        mlflow: None,
        mlflow_status: None,
        mlflow_wait: None,
        repairs: Vec::new(),
        request: None,
        pins: BTreeMap::new(),
        nodes,
    };
    advance(&mut run, now);
    Ok(run)
}

/// Records an event, then moves the run forward (ready nodes, due retries, the run's end).
///
/// # Errors
/// [`Rejected`] when the event is stale or does not fit the run; the state is then unchanged.
pub fn apply(run: &mut RunState, event: Event, now: u64) -> Result<(), Rejected> {
    if matches!(
        event,
        Event::ParentRunCreated(_)
            | Event::ChildRunCreated { .. }
            | Event::AttemptRunClosed { .. }
            | Event::ParentRunSynced { .. }
            | Event::MlflowRefused { .. }
    ) {
        // MLflow answered: whatever kept it away is over.
        run.mlflow_wait = None;
    }
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
        Event::ChildRunCreated {
            node,
            instance,
            attempt,
            run_id,
        } => {
            let a = attempt_mut(run, &node, instance, attempt)?;
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
        Event::Enqueued {
            node,
            instance,
            attempt,
        } => attempt_mut(run, &node, instance, attempt)?.enqueued = true,
        Event::Withdrawn {
            node,
            instance,
            attempt,
        } => attempt_mut(run, &node, instance, attempt)?.withdrawn = true,
        Event::ParentRunSynced { status } => run.mlflow_status = Some(status),
        Event::AttemptRunClosed {
            node,
            instance,
            attempt,
        } => attempt_mut(run, &node, instance, attempt)?.mlflow_closed = true,
        Event::Leased {
            node,
            instance,
            attempt,
            agent,
        } => {
            let inst = current_instance_mut(run, &node, instance, attempt)?;
            let a = inst
                .current_mut()
                .expect("current_instance_mut checked the attempt");
            match a.state {
                AttemptState::Queued => {
                    a.state = AttemptState::Running;
                    a.started_at = Some(now);
                    a.agent = Some(agent);
                    inst.state = InstanceState::Running;
                }
                AttemptState::Running if a.agent.as_deref() == Some(agent.as_str()) => {}
                s => {
                    return Err(Rejected(format!(
                        "attempt {attempt} of {node}[{instance}] is {s:?}, not queued"
                    )))
                }
            }
        }
        Event::LogTail {
            node,
            instance,
            attempt,
            tail,
        } => {
            let a = attempt_mut(run, &node, instance, attempt)?;
            if a.state != AttemptState::Running {
                return Err(Rejected(format!(
                    "attempt {attempt} of {node}[{instance}] is not running"
                )));
            }
            a.log_tail = Some(tail);
        }
        Event::Requeued {
            node,
            instance,
            attempt,
        } => {
            let inst = current_instance_mut(run, &node, instance, attempt)?;
            let a = inst
                .current_mut()
                .expect("current_instance_mut checked the attempt");
            if a.state != AttemptState::Running {
                return Err(Rejected(format!(
                    "attempt {attempt} of {node}[{instance}] is {:?}, not running",
                    a.state
                )));
            }
            a.state = AttemptState::Queued;
            a.agent = None;
            a.started_at = None;
            inst.state = InstanceState::Queued;
        }
        Event::Finished {
            node,
            instance,
            attempt,
            outcome,
        } => {
            let retries = run
                .template
                .node(&node)
                .map(|n| n.retries.clone())
                .unwrap_or_default();
            let inst = current_instance_mut(run, &node, instance, attempt)?;
            let a = inst
                .current_mut()
                .expect("current_instance_mut checked the attempt");
            if a.state.is_terminal() || a.state == AttemptState::Creating {
                return Err(Rejected(format!(
                    "attempt {attempt} of {node}[{instance}] is already {:?}",
                    a.state
                )));
            }
            a.ended_at = Some(now);
            a.started_at.get_or_insert(now);
            let own_run = a.mlflow_run_id.clone().unwrap_or_default();
            // A step that reports an unsafe path (absolute, `..`) fails: downstream agents would
            // write outside their input directory.
            let outcome = match outcome {
                Outcome::Succeeded { outputs } => {
                    match outputs.iter().find_map(|o| relative_path_problem(&o.path)) {
                        Some(why) => Outcome::Failed {
                            error: format!("the step reported an unsafe output path: {why}"),
                        },
                        None => Outcome::Succeeded { outputs },
                    }
                }
                failed => failed,
            };
            match outcome {
                Outcome::Succeeded { outputs } => {
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
                        })
                        .collect();
                }
                Outcome::Failed { error } => {
                    a.state = AttemptState::Failed;
                    a.error = Some(error);
                    if inst.attempts.len() as u32 - inst.repair_base <= retries.limit {
                        inst.state = InstanceState::Retrying;
                        inst.retry_at =
                            Some(now + retries.delay_ms(inst.attempts.len() as u32 + 1));
                    } else {
                        inst.state = InstanceState::Failed;
                    }
                }
            }
        }
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
        Event::Pinned { source, commit } => {
            run.pins.entry(source).or_insert(commit);
        }
    }
    advance(run, now);
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
        MlflowCall::ChildRun {
            node,
            instance,
            attempt,
        } => {
            let inst = current_instance_mut(run, &node, instance, attempt)?;
            let a = inst
                .current_mut()
                .expect("current_instance_mut checked the attempt");
            if a.state != AttemptState::Creating {
                return Err(Rejected(format!(
                    "attempt {attempt} of {node}[{instance}] is {:?}, not being created",
                    a.state
                )));
            }
            a.state = AttemptState::Failed;
            a.ended_at = Some(now);
            a.error = Some(format!(
                "MLflow refused to create this attempt's run: {message}; fix what MLflow names (the experiment, a tag or parameter value), then retry the run"
            ));
            // Retrying cannot help: MLflow would refuse again.
            inst.state = InstanceState::Failed;
            inst.retry_at = None;
        }
        MlflowCall::CloseAttemptRun {
            node,
            instance,
            attempt,
        } => {
            // The attempt's own record keeps its outcome; MLflow's copy stays as it is.
            attempt_mut(run, &node, instance, attempt)?.mlflow_closed = true;
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

/// Everything that still has to be done for the run, derived from its state alone.
pub fn reconcile(run: &RunState, now: u64) -> Vec<Effect> {
    let mut effects = reconcile_all(run, now);
    if let Some(w) = run.mlflow_wait.as_ref().filter(|w| w.retry_at > now) {
        // MLflow is backing off: queue effects go on, MLflow calls wait.
        effects.retain(|e| e.mlflow_call().is_none());
        effects.push(Effect::WakeAt(w.retry_at));
    }
    effects
}

fn reconcile_all(run: &RunState, now: u64) -> Vec<Effect> {
    let mut effects = Vec::new();
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
            match (a.state, &a.mlflow_run_id) {
                (AttemptState::Creating, None) => {
                    effects.push(child_run_effect(run, mlflow, &node.id, inst, a))
                }
                (AttemptState::Queued, Some(_)) if !a.enqueued => effects.push(Effect::Enqueue(
                    Box::new(work_item(run, mlflow, &node.id, inst, a)),
                )),
                _ => {}
            }
            // Earlier attempts too: a retry may start before its predecessor's run is closed,
            // and a repair before a cancelled attempt was withdrawn (its step must still stop).
            for a in &inst.attempts {
                if a.state == AttemptState::Cancelled && a.enqueued && !a.withdrawn {
                    effects.push(Effect::Withdraw {
                        cluster: run.cluster_of(&node.id).to_string(),
                        item_id: work_item_id(&run.id, &node.id, inst.index, a.number),
                        node: node.id.clone(),
                        instance: inst.index,
                        attempt: a.number,
                    })
                }
                if let (true, Some(run_id), false) =
                    (a.state.is_terminal(), &a.mlflow_run_id, a.mlflow_closed)
                {
                    effects.push(Effect::CloseAttemptRun {
                        node: node.id.clone(),
                        instance: inst.index,
                        attempt: a.number,
                        run_id: run_id.clone(),
                        status: a.state.mlflow_status(),
                        end_time: a.ended_at.unwrap_or(now),
                    });
                }
            }
        }
    }
    if !run.mlflow_in_sync() {
        let terminal = run.status.is_terminal();
        effects.push(Effect::SyncParentRun {
            run_id: mlflow.run_id.clone(),
            status: if terminal {
                run.status
            } else {
                RunStatus::Running
            },
            end_time: terminal.then(|| run.ended_at.unwrap_or(now)),
        });
    }
    if let Some(at) = wake {
        effects.push(Effect::WakeAt(at));
    }
    effects
}

/// Makes ready nodes start, starts due retries, and ends the run when it is over.
fn advance(run: &mut RunState, now: u64) {
    if run.status.is_terminal() {
        return;
    }
    for inst in run.nodes.iter_mut().flat_map(|n| n.instances.iter_mut()) {
        if inst.state == InstanceState::Retrying && inst.retry_at.is_some_and(|at| at <= now) {
            inst.retry_at = None;
            inst.state = InstanceState::Queued;
            let number = inst.attempts.len() as u32 + 1;
            inst.attempts.push(new_attempt(number, now));
        }
    }
    // Nodes become ready in template order; a node's readiness only depends on upstream nodes,
    // so one pass per newly ready layer; loop until nothing changes. The edges are indexed once
    // per call, so a pass is linear in the template's size (a 10,000-node chain stays fast).
    let incoming = incoming_edges(&run.template);
    loop {
        let done: Vec<bool> = run
            .nodes
            .iter()
            .map(|n| !n.instances.is_empty() && n.all(InstanceState::Succeeded))
            .collect();
        let ready: Vec<usize> = (0..run.nodes.len())
            .filter(|&i| {
                let n = &run.nodes[i];
                let unplanned = n.instances.is_empty()
                    || n.instances
                        .iter()
                        .any(|x| x.state == InstanceState::Waiting);
                unplanned && n.error.is_none() && incoming[i].iter().all(|&(_, from)| done[from])
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        let mut progressed = false;
        for i in ready {
            match plan_node(run, i, &incoming[i]) {
                Ok((inputs, unmatched)) => {
                    let node = &mut run.nodes[i];
                    node.unmatched_inputs = unmatched;
                    if node.instances.is_empty() {
                        node.instances = inputs
                            .into_iter()
                            .enumerate()
                            .map(|(k, inputs)| Instance {
                                index: k as u32,
                                state: InstanceState::Queued,
                                inputs,
                                attempts: vec![new_attempt(1, now)],
                                outputs: Vec::new(),
                                retry_at: None,
                                repair_base: 0,
                            })
                            .collect();
                    } else {
                        // After a repair: waiting instances get fresh inputs and a new attempt.
                        for (inst, inputs) in node.instances.iter_mut().zip(inputs) {
                            if inst.state == InstanceState::Waiting {
                                inst.inputs = inputs;
                                inst.state = InstanceState::Queued;
                                inst.repair_base = inst.attempts.len() as u32;
                                inst.attempts
                                    .push(new_attempt(inst.attempts.len() as u32 + 1, now));
                            }
                        }
                    }
                    progressed = true;
                }
                Err(e) => {
                    let msg = format!("cannot plan the inputs of node {:?}: {e}", run.nodes[i].id);
                    run.nodes[i].error = Some(msg.clone());
                    end_run(run, RunStatus::Failed, msg, now);
                    return;
                }
            }
        }
        if !progressed {
            break;
        }
    }
    let failed = run.nodes.iter().find_map(|n| {
        n.instances
            .iter()
            .find(|i| i.state == InstanceState::Failed)
            .map(|i| {
                let why = i
                    .current()
                    .and_then(|a| a.error.clone())
                    .unwrap_or_default();
                format!(
                    "node {:?} instance {} failed after {} attempt(s): {why}",
                    n.id,
                    i.index,
                    i.attempts.len()
                )
            })
    });
    if let Some(msg) = failed {
        end_run(run, RunStatus::Failed, msg, now);
    } else if run
        .nodes
        .iter()
        .all(|n| !n.instances.is_empty() && n.all(InstanceState::Succeeded))
    {
        run.status = RunStatus::Succeeded;
        run.ended_at = Some(now);
    }
}

/// Ends the run; every instance still going is cancelled (fail-fast: a failed node cancels the
/// rest of the run, so nothing keeps spending compute on a run that has already failed).
fn end_run(run: &mut RunState, status: RunStatus, reason: String, now: u64) {
    run.status = status;
    run.ended_at = Some(now);
    run.error = Some(reason);
    for inst in run.nodes.iter_mut().flat_map(|n| n.instances.iter_mut()) {
        if inst.state.is_terminal() {
            continue;
        }
        inst.state = InstanceState::Cancelled;
        inst.retry_at = None;
        if let Some(a) = inst.current_mut().filter(|a| !a.state.is_terminal()) {
            a.state = AttemptState::Cancelled;
            a.ended_at = Some(now);
        }
    }
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
    for node in run.nodes.iter_mut().filter(|n| rerun.contains(&n.id)) {
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

/// Per node (by index): its incoming edges, as (edge index, upstream node index), in template
/// order. Run nodes mirror template nodes, so the indices serve both.
fn incoming_edges(t: &Template) -> Vec<Vec<(usize, usize)>> {
    let index: std::collections::HashMap<&str, usize> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut incoming = vec![Vec::new(); t.nodes.len()];
    for (k, e) in t.edges.iter().enumerate() {
        if let (Some(&from), Some(&to)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) {
            incoming[to].push((k, from));
        }
    }
    incoming
}

type Inputs = BTreeMap<String, Vec<ArtifactFile>>;

/// Plans node `i`'s partitions from its upstream nodes' outputs.
fn plan_node(
    run: &RunState,
    i: usize,
    incoming: &[(usize, usize)],
) -> Result<(Vec<Inputs>, Vec<String>), crate::partition::PlanError> {
    let node = &run.template.nodes[i];
    let n = node.instances.max(1) as usize;
    let mut per_instance: Vec<Inputs> = vec![BTreeMap::new(); n];
    let mut unmatched = Vec::new();
    for &(k, from) in incoming {
        let edge = &run.template.edges[k];
        let upstream = &run.nodes[from];
        let count = upstream.instances.len() as u32;
        let files: Vec<ArtifactFile> = upstream
            .instances
            .iter()
            .flat_map(|inst| {
                inst.outputs.iter().map(move |f| ArtifactFile {
                    path: input_path(count, inst.index, &f.path),
                    ..f.clone()
                })
            })
            .collect();
        let p = plan(&files, n as u32, &edge.partition)?;
        unmatched.extend(
            p.unmatched
                .into_iter()
                .map(|path| format!("{}/{path}", edge.input)),
        );
        for (k, slice) in p.slices.into_iter().enumerate() {
            per_instance[k].insert(edge.input.clone(), slice);
        }
    }
    for (k, inputs) in per_instance.iter().enumerate() {
        let bytes = crate::partition::listed_bytes(inputs.values().flatten());
        if bytes > crate::partition::MAX_INSTANCE_INPUT_BYTES {
            return Err(crate::partition::PlanError::TooManyInputs {
                instance: k as u32,
                files: inputs.values().map(Vec::len).sum(),
                bytes,
            });
        }
    }
    Ok((per_instance, unmatched))
}

fn new_attempt(number: u32, now: u64) -> Attempt {
    Attempt {
        number,
        state: AttemptState::Creating,
        mlflow_run_id: None,
        enqueued: false,
        withdrawn: false,
        mlflow_closed: false,
        agent: None,
        created_at: now,
        started_at: None,
        ended_at: None,
        error: None,
        log_tail: None,
    }
}

fn attempt_mut<'a>(
    run: &'a mut RunState,
    node: &str,
    instance: u32,
    attempt: u32,
) -> Result<&'a mut Attempt, Rejected> {
    run.node_mut(node)
        .and_then(|n| n.instances.get_mut(instance as usize))
        .and_then(|i| i.attempts.get_mut(attempt.wrapping_sub(1) as usize))
        .ok_or_else(|| {
            Rejected(format!(
                "run has no attempt {attempt} of {node}[{instance}]"
            ))
        })
}

/// The instance, if `attempt` is its current attempt.
fn current_instance_mut<'a>(
    run: &'a mut RunState,
    node: &str,
    instance: u32,
    attempt: u32,
) -> Result<&'a mut Instance, Rejected> {
    let inst = run
        .node_mut(node)
        .and_then(|n| n.instances.get_mut(instance as usize))
        .ok_or_else(|| Rejected(format!("run has no instance {node}[{instance}]")))?;
    match inst.current() {
        Some(a) if a.number == attempt => Ok(inst),
        Some(a) => Err(Rejected(format!(
            "attempt {attempt} of {node}[{instance}] is stale; attempt {} replaced it",
            a.number
        ))),
        None => Err(Rejected(format!("{node}[{instance}] has not started"))),
    }
}

fn parent_run_effect(run: &RunState) -> Effect {
    let t = &run.template;
    Effect::CreateParentRun {
        key: run.id.clone(),
        experiment_name: format!("concurrent/{}", t.name),
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
    }
}

fn child_run_effect(
    run: &RunState,
    mlflow: &MlflowRef,
    node_id: &str,
    inst: &Instance,
    a: &Attempt,
) -> Effect {
    let node = run
        .template
        .node(node_id)
        .expect("run nodes mirror template nodes");
    let kind = resolve(&node.kind, &run.parameters);
    let key = work_item_id(&run.id, node_id, inst.index, a.number);
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
            format!("{}/{}", inst.index, node.instances),
        ),
        (
            "concurrent.input_files".into(),
            inst.inputs
                .values()
                .map(Vec::len)
                .sum::<usize>()
                .to_string(),
        ),
        ("concurrent.kind".into(), kind.tag().to_string()),
    ];
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
        NodeKind::Input(_) => Vec::new(),
    };
    Effect::CreateChildRun {
        node: node_id.to_string(),
        instance: inst.index,
        attempt: a.number,
        key,
        experiment_id: mlflow.experiment_id.clone(),
        run_name: format!("{node_id}[{}] #{}", inst.index, a.number),
        tags,
        params,
    }
}

/// The work item of an attempt, with parameters substituted.
fn work_item(
    run: &RunState,
    mlflow: &MlflowRef,
    node_id: &str,
    inst: &Instance,
    a: &Attempt,
) -> WorkItem {
    let node = run
        .template
        .node(node_id)
        .expect("run nodes mirror template nodes");
    let kind = resolve(&node.kind, &run.parameters);
    WorkItem {
        id: work_item_id(&run.id, node_id, inst.index, a.number),
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
            partition_index: inst.index,
            partition_count: node.instances,
            inputs: inst.inputs.clone(),
            mlflow: MlflowRef {
                experiment_id: mlflow.experiment_id.clone(),
                run_id: a.mlflow_run_id.clone().unwrap_or_default(),
            },
            parent_run_id: Some(mlflow.run_id.clone()),
            commit: match &kind {
                NodeKind::Project(p) if p.is_git() => run.pins.get(&p.source_key()).cloned(),
                _ => None,
            },
            kind,
        },
    }
}

/// `start` checked that every reference has a value, so substitution cannot fail here; a
/// reference that somehow has none is left as written rather than guessed.
fn sub(text: &str, params: &BTreeMap<String, String>) -> String {
    substitute(text, params).unwrap_or_else(|_| text.to_string())
}

fn resolve(kind: &NodeKind, params: &BTreeMap<String, String>) -> NodeKind {
    let opt = |o: &Option<String>| o.as_ref().map(|s| sub(s, params));
    match kind {
        NodeKind::Project(p) => {
            let mut p = p.clone();
            p.uri = sub(&p.uri, params);
            p.version = opt(&p.version);
            p.sub_path = opt(&p.sub_path);
            p.parameters = p
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), sub(v, params)))
                .collect();
            NodeKind::Project(p)
        }
        NodeKind::Inference(i) => NodeKind::Inference(crate::template::InferenceSpec {
            model_uri: sub(&i.model_uri, params),
        }),
        NodeKind::Input(i) => NodeKind::Input(crate::template::InputSpec {
            run_id: opt(&i.run_id),
            artifact_path: opt(&i.artifact_path),
            path: opt(&i.path),
        }),
    }
}

#[cfg(test)]
mod tests;
