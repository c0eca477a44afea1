//! A connection's partitioning previewed on real files: the upstream node's outputs in the
//! newest run of this template where that node succeeded, planned by core's partitioner with
//! the connection's mode and the downstream node's instance count, as it is being edited.

use concurrent_core::access::Route as ApiRoute;
use concurrent_core::partition::plan;
use concurrent_core::run::{InstanceState, NodeRun, RunState};
use concurrent_core::wire::RunSummary;
use leptos::prelude::*;

use super::Session;
use crate::{api, format_bytes, format_time};

/// Runs looked at (newest first) for one where the upstream node succeeded.
const RUNS_LOOKED_AT: usize = 10;
/// Instances listed; the rest are summed up.
const ROWS: usize = 50;

/// The newest run of `template` where every instance of `node` succeeded: (run id, start, node).
async fn latest_outputs(
    template: &str,
    node: &str,
) -> Result<Option<(String, u64, NodeRun)>, api::ApiError> {
    let runs: Vec<RunSummary> = api::get(&api::with_query(
        &ApiRoute::RunsList.path(&[]),
        &[
            ("template", template),
            ("limit", &RUNS_LOOKED_AT.to_string()),
        ],
    ))
    .await?;
    for r in runs {
        let state: RunState = api::get(&ApiRoute::RunGet.path(&[&r.id])).await?;
        if let Some(n) = state.node(node) {
            if !n.instances.is_empty() && n.all(InstanceState::Succeeded) {
                return Ok(Some((r.id, r.created_at, n.clone())));
            }
        }
    }
    Ok(None)
}

#[component]
pub fn PartitionPreview(session: Session, index: usize) -> impl IntoView {
    let edge = Memo::new(move |_| {
        session
            .editor
            .with(|e| e.template().edges.get(index).cloned())
    });
    let from = Memo::new(move |_| edge.get().map(|e| e.from).unwrap_or_default());
    let instances = Memo::new(move |_| {
        let to = edge.get().map(|e| e.to).unwrap_or_default();
        session
            .editor
            .with(|e| e.template().node(&to).map_or(1, |n| n.instances))
    });
    let template = Memo::new(move |_| session.editor.with(|e| e.template().name.clone()));
    let source = LocalResource::new(move || {
        let (template, from) = (template.get(), from.get());
        async move { latest_outputs(&template, &from).await }
    });
    view! {
        <section class="cc-partition-preview" data-partition-preview="">
            <h3>"On real files"</h3>
            {move || match source.get() {
                None => view! { <p class="cc-hint">{format!("Looking for a run where {} succeeded…", from.get())}</p> }.into_any(),
                Some(Err(e)) => view! { <p class="cc-error" role="alert">{format!("The runs could not be read: {e}")}</p> }.into_any(),
                Some(Ok(None)) => view! { <p class="cc-hint" data-no-run="">{format!(
                    "None of the last {RUNS_LOOKED_AT} runs of this template finished {}; run it once to preview this connection on its real outputs.", from.get())}</p> }.into_any(),
                Some(Ok(Some((run_id, at, upstream)))) => {
                    let files = upstream.outputs_as_inputs();
                    let total: u64 = files.iter().map(|f| f.size).sum();
                    let Some(e) = edge.get() else { return ().into_any() };
                    let n = instances.get();
                    let head = format!("{} files ({}) from run {} of {}, over {n} instance{}:", files.len(), format_bytes(total), &run_id[..run_id.len().min(8)], format_time(at), if n == 1 { "" } else { "s" });
                    match plan(&files, n, &e.partition) {
                        Err(why) => view! { <p class="cc-sub">{head}</p><p class="cc-error" data-plan-error="">{why.to_string()}</p> }.into_any(),
                        Ok(p) => {
                            let sizes: Vec<u64> = p.slices.iter().map(|s| s.iter().map(|f| f.size).sum()).collect();
                            let spread = format!("per instance: {} to {}", format_bytes(sizes.iter().copied().min().unwrap_or(0)), format_bytes(sizes.iter().copied().max().unwrap_or(0)));
                            let more = p.slices.len().saturating_sub(ROWS);
                            let rows = p.slices.iter().zip(&sizes).enumerate().take(ROWS).map(|(i, (slice, bytes))| {
                                let names: Vec<&str> = slice.iter().map(|f| f.path.as_str()).collect();
                                let shown = if names.len() > 3 { format!("{} … (+{})", names[..3].join(", "), names.len() - 3) } else { names.join(", ") };
                                view! {
                                    <tr data-slice=i.to_string()>
                                        <td>{i}</td><td>{slice.len()}</td><td>{format_bytes(*bytes)}</td>
                                        <td class="mono" title=names.join("\n")>{shown}</td>
                                    </tr>
                                }
                            }).collect_view();
                            view! {
                                <p class="cc-sub" data-preview-summary="">{head}" "{spread}</p>
                                <table class="cc-preview" data-slices="">
                                    <thead><tr><th>"#"</th><th>"files"</th><th>"size"</th><th>"paths"</th></tr></thead>
                                    <tbody>{rows}</tbody>
                                </table>
                                {(more > 0).then(|| view! { <p class="cc-hint">{format!("… and {more} more instances")}</p> })}
                                {(!p.unmatched.is_empty()).then(|| view! { <p class="cc-error" data-unmatched="">{format!("No instance would get: {}", p.unmatched.join(", "))}</p> })}
                            }.into_any()
                        }
                    }
                }
            }}
        </section>
    }
}
