//! A DAG run: its recorded state, the events that change it, and the effects it asks for.
//!
//! The machine is level-triggered, like a Kubernetes controller: [`apply`] records what happened,
//! [`reconcile`] derives from the state alone what still has to be done. The edge's run object
//! executes the effects and feeds their results back as events; an effect that failed (MLflow
//! down, a queue unreachable) is simply derived again on the next reconcile, so nothing is lost
//! and nothing is done twice.
//!
//! - `state`: what is recorded (run, nodes, instances, attempts);
//! - `event`: what happens ([`Event`], [`AttemptKey`]);
//! - `start`: a new run from a template version and its parameters;
//! - `apply`: recording an event; `advance`: planning ready nodes, starting due retries,
//!   ending the run;
//! - `reconcile`: what is still to do; `effect`: those effects and their batching; `due`: what
//!   each instance still asks, summed so the run object can ask when to wake without a walk;
//! - `gate`: trigger rules and conditions (`when`), which run or skip a node;
//! - `select`: best-of selection on edges; `register`: a register node's model and lineage;
//! - `usage`: what attempts used, summed;
//! - `page`: a node's instances a page at a time, by state.

mod advance;
mod apply;
mod due;
mod effect;
mod event;
mod gate;
pub mod notify;
mod page;
mod reconcile;
pub mod register;
mod resolve;
mod select;
mod start;
mod state;
mod usage;

pub use apply::{apply, apply_all};
pub use due::{Dues, InstanceDue};
pub use effect::{next_round, plan_round, Effect, MlflowEffect, QueueEffect, Round, RoundLimits};
pub use event::{AttemptKey, Event, MlflowCall, Rejected};
pub use page::{
    instances_page, overview, page, InstanceFilter, InstancePage, InstancesPage, NodeCounts,
    RunOverview, MAX_PAGE,
};
pub use reconcile::{next_wake, next_wake_with, reconcile, reconcile_at_most};
pub use select::upstream_values;
pub use start::{start, StartError};
pub use state::{
    mlflow_backoff_ms, Attempt, AttemptState, Decision, Ended, Instance, InstanceState, MlflowRef,
    MlflowWait, NodeRun, Registered, Repair, RepairRecord, RunState, RunStatus,
};
pub use usage::{node_usage, parent_metrics, run_usage};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gates;
#[cfg(test)]
mod tests_ml;
