//! Moving a run forward: due retries start, nodes whose upstream succeeded are planned into
//! instances, and the run ends when it is over.

use std::collections::BTreeMap;

use crate::partition::{broadcast, listed_bytes, plan, ArtifactFile};
use crate::template::{PartitionMode, Template};

use super::state::*;

/// Makes ready nodes start, starts due retries, and ends the run when it is over.
pub(super) fn advance(run: &mut RunState, now: u64) {
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
                Ok(NodePlan {
                    shared,
                    own: inputs,
                    unmatched,
                    selections,
                }) => {
                    let node = &mut run.nodes[i];
                    node.unmatched_inputs = unmatched;
                    node.selections = selections;
                    node.shared_inputs = shared;
                    node.plans += 1;
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
