//! An approval node in the run view: what the approver is asked, the candidate's MLflow
//! metrics beside those of the model version a registered model's alias points at (read from
//! MLflow through the edge), and the approve and reject buttons.

use std::collections::BTreeMap;

use concurrent_core::run::NodeRun;
use concurrent_core::template::ApprovalSpec;
use leptos::prelude::*;

use crate::api;

/// An MLflow run's latest metrics.
async fn metrics_of(run_id: &str) -> Result<BTreeMap<String, f64>, String> {
    let v: serde_json::Value = api::get(format!(
        "/ajax-api/2.0/mlflow/runs/get?run_id={}",
        api::segment(run_id)
    ))
    .await
    .map_err(|e| format!("run {run_id}: {e}"))?;
    Ok(v["run"]["data"]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["key"].as_str()?.to_string(), m["value"].as_f64()?)))
        .collect())
}

/// The version `model@alias` points at and its run's metrics; `None` when the alias is not set.
async fn holder(
    model: &str,
    alias: &str,
) -> Result<Option<(String, BTreeMap<String, f64>)>, String> {
    let url = api::with_query(
        "/ajax-api/2.0/mlflow/registered-models/alias",
        &[("name", model), ("alias", alias)],
    );
    let v: serde_json::Value = match api::get(&url).await {
        Ok(v) => v,
        Err(e) if e.status == 404 => return Ok(None),
        Err(e) => return Err(format!("{model}@{alias}: {e}")),
    };
    let version = v["model_version"]["version"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let metrics = match v["model_version"]["run_id"].as_str() {
        Some(run) if !run.is_empty() => metrics_of(run).await?,
        _ => BTreeMap::new(),
    };
    Ok(Some((version, metrics)))
}

/// The candidate of an approval: the instance its `select` edge chose (its MLflow run).
fn candidate(node: &NodeRun) -> Option<(String, String)> {
    let s = node.selections.first()?;
    let i = *s.chosen.first()?;
    let run = s
        .candidates
        .iter()
        .find(|c| c.instance == i)?
        .mlflow_run_id
        .clone()?;
    Some((format!("{}[{i}]", s.from), run))
}

#[component]
pub fn ApprovalPanel(
    node: NodeRun,
    spec: ApprovalSpec,
    paused: bool,
    decide: Callback<(bool, String)>,
) -> impl IntoView {
    let cand = candidate(&node);
    let compare = spec.compare.clone();
    let wanted = spec.metrics.clone();
    let cand_run = cand.as_ref().map(|(_, r)| r.clone());
    let data = LocalResource::new(move || {
        let (cand_run, compare) = (cand_run.clone(), compare.clone());
        async move {
            let mine = match &cand_run {
                Some(r) => Some(metrics_of(r).await?),
                None => None,
            };
            let theirs = match &compare {
                Some(c) => holder(&c.model, &c.alias).await?,
                None => None,
            };
            Ok::<_, String>((mine, theirs))
        }
    });
    let note = RwSignal::new(String::new());
    let decision = node.decision.clone();
    let cand_name = cand
        .map(|(name, _)| name)
        .unwrap_or_else(|| "the candidate".into());
    let compare = spec.compare.clone();
    view! {
        <div class="cc-approval" data-approval=node.id.clone()>
            <strong>{if spec.message.is_empty() { "Approve to go on, or reject to stop the run.".to_string() } else { spec.message.clone() }}</strong>
            {move || match data.get() {
                None => view! { <p class="cc-loading">"Reading the metrics from MLflow…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="cc-error">{format!("The metrics could not be read: {e}")}</p> }.into_any(),
                Some(Ok((mine, theirs))) => {
                    let mine = mine.unwrap_or_default();
                    let names: Vec<String> = if wanted.is_empty() { mine.keys().filter(|k| !k.starts_with("concurrent.")).cloned().collect() } else { wanted.clone() };
                    let head = compare.as_ref().map(|c| match &theirs {
                        Some((v, _)) => format!("{}@{} (version {v})", c.model, c.alias),
                        None => format!("{}@{} (not set yet)", c.model, c.alias),
                    });
                    let their_metrics = theirs.map(|(_, m)| m).unwrap_or_default();
                    view! {
                        <table data-compare="">
                            <thead><tr><th>"metric"</th><th>{cand_name.clone()}</th>{head.clone().map(|h| view! { <th>{h}</th> })}</tr></thead>
                            <tbody>{names.into_iter().map(|m| {
                                let shown = |v: Option<&f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into());
                                view! { <tr data-metric=m.clone()><td>{m.clone()}</td><td data-candidate="">{shown(mine.get(&m))}</td>
                                    {head.is_some().then(|| view! { <td data-current="">{shown(their_metrics.get(&m))}</td> })}</tr> }
                            }).collect_view()}</tbody>
                        </table>
                    }.into_any()
                }
            }}
            {decision.map(|d| view! {
                <p data-decision=if d.approved { "approved" } else { "rejected" }>{format!("{} by {} at {}{}", if d.approved { "Approved" } else { "Rejected" }, d.by, crate::format_time(d.at), if d.note.is_empty() { String::new() } else { format!(": {}", d.note) })}</p>
            })}
            {paused.then(|| view! {
                <label class="cc-field"><span>"Note (kept on the MLflow parent run)"</span>
                    <textarea name="decisionNote" rows="2" prop:value=move || note.get() on:input=move |e| note.set(event_target_value(&e))></textarea></label>
                <div class="cc-row">
                    <button class="cc-primary" data-action="approve" on:click=move |_| decide.run((true, note.get_untracked()))>"Approve"</button>
                    <button class="cc-danger" data-action="reject" on:click=move |_| decide.run((false, note.get_untracked()))>"Reject"</button>
                </div>
            })}
        </div>
    }
}
