//! Moving a run forward: due retries start, nodes whose upstream nodes are over are planned
//! into instances (or skipped, by their trigger rule and condition), and the run ends when it
//! is over.

use std::collections::BTreeMap;

use crate::partition::{broadcast, listed_bytes, plan, ArtifactFile};
use crate::template::{NodeKind, PartitionMode, Template, Verdict};

use super::gate::{self, Go};
use super::state::*;

/// Makes ready nodes start (or skips them), starts due retries, decides timed-out approvals,
/// and ends the run when it is over.
///
/// A failure stops the run (fail-fast): what still runs is cancelled. Nodes whose trigger rule
/// is `allDone` or `anyFailed` still run once their upstream nodes are over (clean-up and alert
/// steps); the run ends, failed, when nothing runs any more.
pub(super) fn advance(run: &mut RunState, now: u64) {
    if run.status.is_terminal() {
        return;
    }
    due_retries_and_timeouts(run, now);
    // Nodes become ready in template order; a node's readiness only depends on upstream nodes,
    // so one pass per newly ready layer; loop until nothing changes. The edges are indexed once
    // per call, so a pass is linear in the template's size (a 10,000-node chain stays fast).
    let incoming = incoming_edges(&run.template);
    let finally = run
        .template
        .nodes
        .iter()
        .any(|n| !n.trigger_rule.is_default());
    // Each pass tallies every node once; the last pass's tallies describe the run as it ends
    // the loop (a pass that starts nodes goes round again).
    let (mut tallies, mut failure);
    loop {
        tallies = tally(run);
        failure = first_failure(run, &tallies);
        if let Some((_, msg)) = &failure {
            if !finally {
                end_run(run, RunStatus::Failed, msg.clone(), now);
                return;
            }
            // Cancels what still goes; the failed instances stay as they are.
            stop_all_but_finally(run, now);
            tallies = tally(run);
        }
        let stopping = failure.as_ref().map(|(node, _)| node.as_str());
        let ended: Vec<Option<Ended>> = run
            .nodes
            .iter()
            .zip(&tallies)
            .map(|(n, t)| n.ended_by(t))
            .collect();
        let ready: Vec<(usize, Go)> = (0..run.nodes.len())
            .filter_map(|i| {
                let n = &run.nodes[i];
                let unplanned = n.instances.is_empty() || tallies[i].waiting > 0;
                if !unplanned || n.error.is_some() {
                    return None;
                }
                let upstream: Vec<(&str, Ended)> = incoming[i]
                    .iter()
                    .map(|&(_, from)| Some((run.nodes[from].id.as_str(), ended[from]?)))
                    .collect::<Option<_>>()?;
                let rule = run.template.nodes[i].trigger_rule;
                Some((i, gate::by_rule(rule, &upstream, stopping)))
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        for (i, go) in ready {
            if let Err(msg) = start_node(run, i, &incoming[i], go, now) {
                run.nodes[i].error = Some(msg.clone());
                end_run(run, RunStatus::Failed, msg, now);
                return;
            }
        }
    }
    if let Some((_, msg)) = failure {
        if tallies.iter().all(|t| t.going == 0) {
            end_run(run, RunStatus::Failed, msg, now);
        }
    } else if run
        .nodes
        .iter()
        .zip(&tallies)
        .all(|(n, t)| matches!(n.ended_by(t), Some(Ended::Succeeded | Ended::Skipped)))
    {
        run.status = RunStatus::Succeeded;
        run.ended_at = Some(now);
    }
}

fn tally(run: &RunState) -> Vec<Tally> {
    run.nodes.iter().map(NodeRun::tally).collect()
}

/// Retries that are due start; approvals nobody decided in time are decided by their rule.
fn due_retries_and_timeouts(run: &mut RunState, now: u64) {
    let RunState {
        template, nodes, ..
    } = run;
    for (spec, node) in template.nodes.iter().zip(nodes.iter_mut()) {
        for inst in node.instances.iter_mut() {
            if inst.retry_at.is_none_or(|at| at > now) {
                continue;
            }
            match inst.state {
                InstanceState::Retrying => {
                    inst.retry_at = None;
                    inst.state = InstanceState::Queued;
                    let number = inst.attempts.len() as u32 + 1;
                    inst.attempts.push(new_attempt(number, now));
                }
                InstanceState::Paused => {
                    if let NodeKind::Approval(a) = &spec.kind {
                        let secs = spec.timeout_seconds.unwrap_or_default();
                        node.decision = Some(Decision {
                            approved: a.on_timeout == Verdict::Approve,
                            by: "timeout".into(),
                            at: now,
                            note: format!(
                                "nobody decided within {secs} s; the node's onTimeout decides"
                            ),
                        });
                        inst.retry_at = None;
                        inst.state = if a.on_timeout == Verdict::Approve {
                            InstanceState::Succeeded
                        } else {
                            node.error = Some(format!(
                                "approval {:?} was rejected: nobody decided within {secs} s and its onTimeout is reject",
                                node.id
                            ));
                            InstanceState::Failed
                        };
                    }
                }
                _ => {}
            }
        }
    }
}

/// The first failed instance's node, and what to say of it.
fn first_failure(run: &RunState, tallies: &[Tally]) -> Option<(String, String)> {
    run.nodes.iter().zip(tallies).find_map(|(n, t)| {
        let i = &n.instances[t.first_failed?];
        let msg = match i.current() {
            Some(a) => format!(
                "node {:?} instance {} failed after {} attempt(s): {}",
                n.id,
                i.index,
                i.attempts.len(),
                a.error.clone().unwrap_or_default()
            ),
            None => n
                .error
                .clone()
                .unwrap_or_else(|| format!("node {:?} failed", n.id)),
        };
        Some((n.id.clone(), msg))
    })
}

/// A failure stops the run: everything still going is cancelled, except nodes with a trigger
/// rule of their own (they exist to run then).
fn stop_all_but_finally(run: &mut RunState, now: u64) {
    let RunState {
        template, nodes, ..
    } = run;
    for (spec, node) in template.nodes.iter().zip(nodes.iter_mut()) {
        if !spec.trigger_rule.is_default() {
            continue;
        }
        for inst in node.instances.iter_mut() {
            cancel(inst, now);
        }
    }
}

/// Starts node `i` as `go` says: skips it, or plans its instances (then its condition may
/// still skip it).
///
/// # Errors
/// Its inputs cannot be planned, or its condition cannot be evaluated.
fn start_node(
    run: &mut RunState,
    i: usize,
    incoming: &[(usize, usize)],
    go: Go,
    now: u64,
) -> Result<(), String> {
    let id = run.nodes[i].id.clone();
    let fail = |why: String| format!("cannot start node {id:?}: {why}");
    let plan = match go {
        Go::Skip(why) => {
            skip(&mut run.nodes[i], why);
            return Ok(());
        }
        Go::Run => plan_node(run, i, incoming)
            .map_err(|e| format!("cannot plan the inputs of node {id:?}: {e}"))?,
    };
    if let Some(when) = &run.template.nodes[i].when {
        if let Go::Skip(why) = gate::by_condition(when, run, &plan.selections).map_err(fail)? {
            skip(&mut run.nodes[i], why);
            return Ok(());
        }
    }
    let kind = run.template.nodes[i].kind.clone();
    if let NodeKind::Register(spec) = &kind {
        super::register::source(run, i, spec, &plan.selections).map_err(fail)?;
    }
    let NodePlan {
        shared,
        own: inputs,
        unmatched,
        selections,
    } = plan;
    let node = &mut run.nodes[i];
    node.unmatched_inputs = unmatched;
    node.selections = selections;
    node.shared_inputs = shared;
    node.plans += 1;
    let deadline = match &kind {
        NodeKind::Approval(_) => run.template.nodes[i]
            .timeout_seconds
            .map(|s| now + s.saturating_mul(1000)),
        _ => None,
    };
    let fresh = |k: usize, inputs| {
        let (state, attempts) = match &kind {
            NodeKind::Approval(_) => (InstanceState::Paused, vec![]),
            NodeKind::Register(_) => (InstanceState::Queued, vec![]),
            _ => (InstanceState::Queued, vec![new_attempt(1, now)]),
        };
        Instance {
            index: k as u32,
            state,
            inputs,
            attempts,
            outputs: Vec::new(),
            retry_at: deadline,
            repair_base: 0,
        }
    };
    if node.instances.is_empty() {
        node.instances = inputs
            .into_iter()
            .enumerate()
            .map(|(k, x)| fresh(k, x))
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
    Ok(())
}

/// Marks a node skipped: one instance, in state `Skipped`, with no attempt.
fn skip(node: &mut NodeRun, why: String) {
    node.skipped = Some(why);
    node.noted = false;
    node.instances = vec![Instance {
        index: 0,
        state: InstanceState::Skipped,
        inputs: BTreeMap::new(),
        attempts: Vec::new(),
        outputs: Vec::new(),
        retry_at: None,
        repair_base: 0,
    }];
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

/// What a node receives: the inputs all its instances share, and each instance's own.
struct NodePlan {
    shared: Inputs,
    own: Vec<Inputs>,
    unmatched: Vec<String>,
    selections: Vec<Selection>,
}

/// Plans node `i`'s instances from its upstream nodes' outputs: one per partition of its inputs,
/// times the points of its sweep (instance `point × partitions + partition`); `select` edges
/// pass only their chosen instances' outputs.
fn plan_node(run: &RunState, i: usize, incoming: &[(usize, usize)]) -> Result<NodePlan, String> {
    let node = &run.template.nodes[i];
    let n = node.partitions() as usize;
    let mut shared = Inputs::new();
    let mut per_partition: Vec<Inputs> = vec![BTreeMap::new(); n];
    let mut unmatched = Vec::new();
    let mut selections = Vec::new();
    for &(k, from) in incoming {
        let edge = &run.template.edges[k];
        let files = match &edge.select {
            Some(sel) => {
                let (files, selection) = super::select::choose(&run.nodes[from], edge, sel)?;
                selections.push(selection);
                files
            }
            None => run.nodes[from].outputs_as_inputs(),
        };
        if edge.partition.mode == PartitionMode::Broadcast {
            shared.insert(edge.input.clone(), broadcast(files));
            continue;
        }
        let p = plan(&files, n as u32, &edge.partition).map_err(|e| e.to_string())?;
        unmatched.extend(
            p.unmatched
                .into_iter()
                .map(|path| format!("{}/{path}", edge.input)),
        );
        for (k, slice) in p.slices.into_iter().enumerate() {
            per_partition[k].insert(edge.input.clone(), slice);
        }
    }
    let shared_bytes = listed_bytes(shared.values().flatten());
    for (k, inputs) in per_partition.iter().enumerate() {
        let bytes = shared_bytes + listed_bytes(inputs.values().flatten());
        if bytes > crate::partition::MAX_INSTANCE_INPUT_BYTES {
            return Err(crate::partition::PlanError::TooManyInputs {
                instance: k as u32,
                files: shared.values().chain(inputs.values()).map(Vec::len).sum(),
                bytes,
            }
            .to_string());
        }
    }
    let points = node.sweep().map_or(1, |s| s.count().max(1));
    let own = (0..points)
        .flat_map(|_| per_partition.iter().cloned())
        .collect();
    Ok(NodePlan {
        shared,
        own,
        unmatched,
        selections,
    })
}

fn new_attempt(number: u32, now: u64) -> Attempt {
    Attempt {
        number,
        state: AttemptState::Queued,
        mlflow_run_id: None,
        enqueued: false,
        withdrawn: false,
        mlflow_closed: false,
        leased: false,
        reported: false,
        agent: None,
        created_at: now,
        started_at: None,
        ended_at: None,
        error: None,
        log_tail: None,
        facts: Default::default(),
    }
}

/// Ends the run; every instance still going is cancelled (fail-fast: a failed node cancels the
/// rest of the run, so nothing keeps spending compute on a run that has already failed).
pub(super) fn end_run(run: &mut RunState, status: RunStatus, reason: String, now: u64) {
    run.status = status;
    run.ended_at = Some(now);
    run.error = Some(reason);
    for inst in run.nodes.iter_mut().flat_map(|n| n.instances.iter_mut()) {
        cancel(inst, now);
    }
}

/// Cancels an instance that has not ended, and its attempt.
fn cancel(inst: &mut Instance, now: u64) {
    if inst.state.is_terminal() {
        return;
    }
    inst.state = InstanceState::Cancelled;
    inst.retry_at = None;
    if let Some(a) = inst.current_mut().filter(|a| !a.state.is_terminal()) {
        a.state = AttemptState::Cancelled;
        a.ended_at = Some(now);
    }
}
