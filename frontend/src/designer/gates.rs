//! The inspector's fields for what decides whether a node runs (its condition and trigger
//! rule) and for the nodes that are decisions themselves (approvals, registrations).

use concurrent_core::template::{AliasRef, Node, NodeKind, TriggerRule, Verdict};
use leptos::prelude::*;

use super::fields::field;
use super::Session;

/// Reads and commits one value of node `id`; a commit that changes nothing records nothing,
/// and a refused one says why.
#[derive(Clone, Copy)]
struct NodeField {
    session: Session,
    id: StoredValue<String>,
}

impl NodeField {
    fn read(self, f: fn(&Node) -> String) -> impl Fn() -> String + Send + Sync + 'static {
        move || {
            self.session
                .editor
                .with(|e| e.template().node(&self.id.read_value()).map(f))
                .unwrap_or_default()
        }
    }

    fn write(self, f: fn(&mut Node, String) -> Result<(), String>) -> impl Fn(String) + 'static {
        move |v: String| {
            let id = self.id.get_value();
            let Some(mut n) = self
                .session
                .editor
                .with_untracked(|e| e.template().node(&id).cloned())
            else {
                return;
            };
            if let Err(why) = f(&mut n, v) {
                self.session.complain(why);
                return;
            }
            if self
                .session
                .editor
                .with_untracked(|e| e.template().node(&id) != Some(&n))
            {
                self.session.edit(|e| e.update_node(&id, |x| *x = n));
            }
        }
    }
}

fn optional(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A node's condition and trigger rule.
#[component]
pub(super) fn GateFields(session: Session, id: StoredValue<String>) -> impl IntoView {
    let f = NodeField { session, id };
    let rule = f.read(|n| n.trigger_rule.as_str().to_string());
    view! {
        <fieldset class="cc-params" data-gate="">
            <legend>"When it runs"</legend>
            <label class="cc-field"><span>"After its upstream nodes"</span>
                <select name="triggerRule" prop:value=rule on:change=move |e| f.write(|n, v| {
                    n.trigger_rule = match v.as_str() {
                        "allDone" => TriggerRule::AllDone,
                        "anyFailed" => TriggerRule::AnyFailed,
                        _ => TriggerRule::AllSucceeded,
                    };
                    Ok(())
                })(event_target_value(&e))>
                    <option value="allSucceeded">"all succeeded (otherwise skipped)"</option>
                    <option value="allDone">"all ended, however (a clean-up)"</option>
                    <option value="anyFailed">"one failed (an alert; runs after a failure)"</option>
                </select></label>
            {field("Only if (a condition; false skips it)", "when", "upstream.train.best.metrics.val_auc >= 0.9",
                f.read(|n| n.when.clone().unwrap_or_default()),
                f.write(|n, v| { n.when = optional(v); Ok(()) }))}
            <p class="cc-hint">"Reads params.<name>, upstream.<node>.state, upstream.<node>.best.metrics.<m> (through a select edge), max|min|mean(upstream.<node>.metrics.<m>), upstream.<node>[i].metrics.<m>; and, or, not, == != < <= > >=."</p>
        </fieldset>
    }
}

fn approval(n: &Node) -> Option<&concurrent_core::template::ApprovalSpec> {
    match &n.kind {
        NodeKind::Approval(a) => Some(a),
        _ => None,
    }
}

fn with_approval(
    n: &mut Node,
    f: impl FnOnce(&mut concurrent_core::template::ApprovalSpec),
) -> Result<(), String> {
    if let NodeKind::Approval(a) = &mut n.kind {
        f(a);
    }
    Ok(())
}

fn register(n: &Node) -> Option<&concurrent_core::template::RegisterSpec> {
    match &n.kind {
        NodeKind::Register(r) => Some(r),
        _ => None,
    }
}

fn with_register(
    n: &mut Node,
    f: impl FnOnce(&mut concurrent_core::template::RegisterSpec),
) -> Result<(), String> {
    if let NodeKind::Register(r) = &mut n.kind {
        f(r);
    }
    Ok(())
}

/// An approval node: what the approver is asked, what they compare, when it decides itself.
#[component]
pub(super) fn ApprovalFields(session: Session, id: StoredValue<String>) -> impl IntoView {
    let f = NodeField { session, id };
    view! {
        {field("Question for the approver", "message", "Ship the new model?",
            f.read(|n| approval(n).map(|a| a.message.clone()).unwrap_or_default()),
            f.write(|n, v| with_approval(n, |a| a.message = v.trim().to_string())))}
        <div class="cc-row">
            {field("Compare with model", "compareModel", "registered model",
                f.read(|n| approval(n).and_then(|a| a.compare.clone()).map(|c| c.model).unwrap_or_default()),
                f.write(|n, v| with_approval(n, |a| {
                    let alias = a.compare.as_ref().map_or_else(|| "champion".to_string(), |c| c.alias.clone());
                    a.compare = optional(v).map(|model| AliasRef { model, alias });
                })))}
            {field("at alias", "compareAlias", "champion",
                f.read(|n| approval(n).and_then(|a| a.compare.clone()).map(|c| c.alias).unwrap_or_default()),
                f.write(|n, v| with_approval(n, |a| { if let (Some(c), Some(alias)) = (a.compare.as_mut(), optional(v)) { c.alias = alias; } })))}
        </div>
        {field("Metrics shown side by side", "metrics", "val_auc, val_loss (all when empty)",
            f.read(|n| approval(n).map(|a| a.metrics.join(", ")).unwrap_or_default()),
            f.write(|n, v| with_approval(n, |a| a.metrics = v.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect())))}
        <div class="cc-row">
            {field("Decide after (s)", "timeoutSeconds", "wait for ever",
                f.read(|n| n.timeout_seconds.map(|t| t.to_string()).unwrap_or_default()),
                f.write(|n, v| { n.timeout_seconds = if v.trim().is_empty() { None } else { Some(v.trim().parse().map_err(|_| format!("the timeout must be a whole number of seconds, not {v:?}"))?) }; Ok(()) }))}
            <label class="cc-field"><span>"then"</span>
                <select name="onTimeout" prop:value=f.read(|n| approval(n).map_or("reject", |a| if a.on_timeout == Verdict::Approve { "approve" } else { "reject" }).to_string())
                    on:change=move |e| f.write(|n, v| with_approval(n, |a| a.on_timeout = if v == "approve" { Verdict::Approve } else { Verdict::Reject }))(event_target_value(&e))>
                    <option value="reject">"reject"</option>
                    <option value="approve">"approve"</option>
                </select></label>
        </div>
    }
}

/// A register node: the registered model, the alias it moves, which upstream model.
#[component]
pub(super) fn RegisterFields(session: Session, id: StoredValue<String>) -> impl IntoView {
    let f = NodeField { session, id };
    view! {
        {field("Registered model", "model", "e.g. iris-classifier",
            f.read(|n| register(n).map(|r| r.model.clone()).unwrap_or_default()),
            f.write(|n, v| with_register(n, |r| r.model = v.trim().to_string())))}
        {field("Alias to move to the new version", "alias", "e.g. champion (none when empty)",
            f.read(|n| register(n).and_then(|r| r.alias.clone()).unwrap_or_default()),
            f.write(|n, v| with_register(n, |r| r.alias = optional(v))))}
        <div class="cc-row">
            {field("Upstream instance", "instance", "the best, or 0",
                f.read(|n| register(n).and_then(|r| r.instance).map(|i| i.to_string()).unwrap_or_default()),
                f.write(|n, v| { let i = if v.trim().is_empty() { None } else { Some(v.trim().parse().map_err(|_| format!("the instance must be a whole number, not {v:?}"))?) }; with_register(n, |r| r.instance = i) }))}
            {field("Model path in its run", "artifactPath", "its logged model",
                f.read(|n| register(n).and_then(|r| r.artifact_path.clone()).unwrap_or_default()),
                f.write(|n, v| with_register(n, |r| r.artifact_path = optional(v))))}
        </div>
        <p class="cc-hint">"Registers the model of the step connected to this node (the best one when that edge selects); connect approvals to it to register only once approved. The version is tagged with this run, the attempt and the inputs it read."</p>
    }
}
