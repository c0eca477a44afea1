//! A DAG run: its recorded state, the events that change it, and the effects it asks for.
//!
//! The machine is level-triggered, like a Kubernetes controller: [`apply`] records what happened,
//! [`reconcile`] derives from the state alone what still has to be done. The edge's run object
//! executes the effects and feeds their results back as events; an effect that failed (MLflow
//! down, a queue unreachable) is simply derived again on the next reconcile, so nothing is lost
//! and nothing is done twice.

mod machine;
mod state;

pub use machine::{apply, reconcile, start, Effect, Event, MlflowCall, Rejected, StartError};
pub use state::{
    mlflow_backoff_ms, Attempt, AttemptState, Instance, InstanceState, MlflowRef, MlflowWait,
    NodeRun, Repair, RepairRecord, RunState, RunStatus,
};
