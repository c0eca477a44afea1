//! Notifications: which webhook deliveries a run owes (derived from its state: it succeeded,
//! failed, or an approval waits), their bodies, and what a delivery's answer does. Each
//! delivery is tried until it is answered with a 2xx, with backoff, at most
//! [`MAX_DELIVERY_ATTEMPTS`] times; what failed stays on the run for a person to see.

use serde_json::json;

use crate::template::{Notification, NotifyOn};

use super::state::*;

pub use super::state::MAX_DELIVERY_ATTEMPTS;

/// A webhook delivery to make. → [`super::Event::Notified`]
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub to: u32,
    pub event: String,
    pub notification: Notification,
    /// The JSON body: a Slack-compatible `text` and the facts.
    pub body: serde_json::Value,
}

/// The events the run owes its notifications now: (notification, event, node waiting).
fn owed(run: &RunState) -> Vec<(u32, String, Option<&str>)> {
    let round = if run.repairs.is_empty() {
        String::new()
    } else {
        format!("#{}", run.repairs.len())
    };
    let mut out = Vec::new();
    for (i, n) in run.template.notifications.iter().enumerate() {
        let i = i as u32;
        for on in &n.on {
            match on {
                NotifyOn::Succeeded if run.status == RunStatus::Succeeded => {
                    out.push((i, format!("succeeded{round}"), None))
                }
                NotifyOn::Failed if run.status == RunStatus::Failed => {
                    out.push((i, format!("failed{round}"), None))
                }
                NotifyOn::Waiting => {
                    for node in &run.nodes {
                        if node
                            .instances
                            .iter()
                            .any(|x| x.state == InstanceState::Paused)
                        {
                            out.push((i, format!("waiting:{}", node.id), Some(node.id.as_str())));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The deliveries due at `now`, and the earliest later retry.
pub(super) fn due(run: &RunState, now: u64) -> (Vec<Notify>, Option<u64>) {
    let (mut out, mut later) = (Vec::new(), None::<u64>);
    for (to, event, node) in owed(run) {
        let d = run
            .notifications
            .iter()
            .find(|d| d.to == to && d.event == event);
        match d {
            Some(d) if !d.open() => continue,
            Some(d) if d.retry_at.is_some_and(|t| t > now) => {
                let t = d.retry_at.unwrap_or(now);
                later = Some(later.map_or(t, |l| l.min(t)));
                continue;
            }
            _ => {}
        }
        out.push(Notify {
            to,
            body: body(run, &event, node),
            event,
            notification: run.template.notifications[to as usize].clone(),
        });
    }
    (out, later)
}

fn body(run: &RunState, event: &str, node: Option<&str>) -> serde_json::Value {
    let what = match node {
        Some(n) => format!("waits for an approval at node {n}"),
        None => serde_json::to_value(run.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    let mut text = format!("Concurrent: run {} of {} {what}", run.id, run.template.name);
    if let (None, Some(e)) = (node, &run.error) {
        text.push_str(&format!(": {e}"));
    }
    json!({
        "text": text,
        "event": event.split([':', '#']).next().unwrap_or(event),
        "node": node,
        "run": {"id": run.id, "template": run.template.name, "status": run.status, "error": run.error,
                "mlflowRunId": run.mlflow.as_ref().map(|m| m.run_id.clone())},
    })
}

/// What a delivery's answer does: recorded, or tried again after a backoff (2 s, doubling, at
/// most 5 min) until [`MAX_DELIVERY_ATTEMPTS`].
pub(super) fn answered(
    run: &mut RunState,
    to: u32,
    event: String,
    error: Option<String>,
    now: u64,
) {
    let i = match run
        .notifications
        .iter()
        .position(|d| d.to == to && d.event == event)
    {
        Some(i) => i,
        None => {
            run.notifications.push(Delivery {
                to,
                event,
                attempts: 0,
                delivered_at: None,
                error: None,
                retry_at: None,
            });
            run.notifications.len() - 1
        }
    };
    let d = &mut run.notifications[i];
    if !d.open() {
        return;
    }
    d.attempts += 1;
    match error {
        None => {
            d.delivered_at = Some(now);
            d.error = None;
            d.retry_at = None;
        }
        Some(why) => {
            d.error = Some(why);
            d.retry_at = (d.attempts < MAX_DELIVERY_ATTEMPTS)
                .then(|| now + (2_000u64 << (d.attempts - 1).min(8)).min(300_000));
        }
    }
}
