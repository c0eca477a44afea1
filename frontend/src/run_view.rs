//! One run: the DAG with each node's state, a node's instances, live log tails, and the
//! repairs (cancel, retry failed, rerun from a node). Polls while shown: the run's overview
//! (no instances, each node's counts) and the shown page of the selected node's instances, so a
//! 10,000-wide node costs what a page of 50 costs.

use concurrent_core::access::Route as ApiRoute;
use concurrent_core::run::{
    Attempt, AttemptState, InstanceState, InstancesPage, NodeCounts, RunOverview, RunState,
    RunStatus,
};
use concurrent_core::wire::RunSummary;
use leptos::prelude::*;

use crate::graph::{arrow_marker, edge_path, fit, subtitle, NodeBox, NODE_H, NODE_W};
use crate::log_view::{LogPanel, LogTarget};
use crate::route::{self, Route};
use crate::shell::ticker;
use crate::{api, format_duration, format_time};

/// How often a shown run is read again.
const POLL_MS: u32 = 1_500;
/// Instances per page of a node's table.
const PAGE: usize = 50;

/// What the node table shows; kept across the run's refreshes.
#[derive(Clone, Copy)]
struct TableView {
    state: RwSignal<Option<InstanceState>>,
    page: RwSignal<usize>,
    log_of: RwSignal<Option<LogTarget>>,
}

#[component]
pub fn RunView(id: String) -> impl IntoView {
    let tick = ticker(POLL_MS);
    let path = ApiRoute::RunGet.path(&[&id]);
    let run = LocalResource::new({
        let path = format!("{path}/overview");
        move || {
            tick.get();
            let path = path.clone();
            async move { api::get::<RunOverview>(&path).await }
        }
    });
    // The last good answer stays on screen while the next one loads (no flicker).
    let last = RwSignal::new(None::<Result<RunOverview, api::ApiError>>);
    Effect::new(move |_| {
        if let Some(r) = run.get() {
            last.set(Some(r));
        }
    });
    let selected = RwSignal::new(None::<String>);
    let table = TableView {
        state: RwSignal::new(None),
        page: RwSignal::new(0),
        log_of: RwSignal::new(None),
    };
    // The selected node's shown page of instances, read with the overview.
    let rows = LocalResource::new({
        let path = format!("{path}/instances");
        move || {
            tick.get();
            let node = selected.get();
            let state = table.state.get().map(InstanceState::as_str).unwrap_or("");
            let offset = (table.page.get() * PAGE).to_string();
            let url = api::with_query(
                &path,
                &[
                    ("node", node.as_deref().unwrap_or("")),
                    ("state", state),
                    ("offset", &offset),
                    ("limit", &PAGE.to_string()),
                ],
            );
            async move {
                match node {
                    Some(_) => Some(api::get::<InstancesPage>(&url).await),
                    None => None,
                }
            }
        }
    });
    let last_rows = RwSignal::new(None::<Result<InstancesPage, api::ApiError>>);
    Effect::new(move |_| {
        if let Some(r) = rows.get() {
            // A page of another node or filter than the one shown is dropped with it.
            last_rows.set(r);
        }
    });
    Effect::new(move |_| {
        selected.track();
        table.state.set(None);
        table.page.set(0);
        last_rows.set(None);
    });
    // Whether the attempt whose log is open may still write to it.
    let log_running = Signal::derive(move || {
        let Some(t) = table.log_of.get() else {
            return false;
        };
        last_rows.with(|r| {
            let Some(Ok(page)) = r else { return false };
            page.items
                .iter()
                .filter(|i| page.node == t.node && i.index as usize == t.index)
                .flat_map(|i| i.attempts.iter().find(|a| a.number == t.attempt))
                .any(|a| !a.state.is_terminal())
        })
    });
    let action_error = RwSignal::new(None::<String>);
    let path = StoredValue::new(path);
    let act = move |what: &'static str, body: serde_json::Value| {
        let url = format!("{}/{what}", path.read_value());
        leptos::task::spawn_local(async move {
            match api::send::<RunSummary>(gloo_net::http::Request::post(&url), &body).await {
                Ok(_) => {
                    action_error.set(None);
                    tick.update(|t| *t += 1);
                }
                Err(e) => action_error.set(Some(format!("{what} failed: {e}"))),
            }
        });
    };
    view! {
        <div class="cc-run" data-run-view="">
            {move || match last.get() {
                None => view! { <p class="cc-loading">"Loading the run…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="cc-error" role="alert">{format!("The run could not be read: {e}. ")}<a href="#/dags">"Back to the list"</a></p> }.into_any(),
                Some(Ok(RunOverview { run: state, nodes: counts })) => {
                    let terminal = state.status.is_terminal();
                    let failed = counts.iter().any(|n| n.count(InstanceState::Failed) + n.count(InstanceState::Cancelled) > 0);
                    let status = RunStatus::as_str(state.status);
                    let duration = format_duration(state.ended_at.unwrap_or_else(|| js_sys::Date::now() as u64).saturating_sub(state.created_at));
                    let experiment = state.mlflow.as_ref().map(|m| m.experiment_id.clone()).unwrap_or_default();
                    view! {
                        <header class="cc-header">
                            <a class="cc-back" href="#/dags">"← DAGs"</a>
                            <h1><a href=Route::Template(state.template.name.clone()).href()>{state.template.name.clone()}</a>{format!(" v{}", state.template_version)}</h1>
                            <span class=format!("cc-status {status}") data-run-status=status>{status}</span>
                            <span class="cc-sub">{format!("started {} by {} · {duration} · cluster {}", format_time(state.created_at), state.started_by.clone().unwrap_or_else(|| "?".into()), state.cluster)}</span>
                            <span class="cc-spacer"></span>
                            {state.mlflow.as_ref().map(|m| view! { <a class="cc-button" data-mlflow-parent="" href=route::mlflow_run(&m.experiment_id, &m.run_id)>"Open in MLflow"</a> })}
                            {(!terminal).then(|| view! { <button class="cc-danger" data-action="cancel" on:click=move |_| act("cancel", serde_json::json!({}))>"Cancel"</button> })}
                            {(terminal && failed).then(|| view! { <button data-action="retry" on:click=move |_| act("retry", serde_json::json!({}))>"Retry failed"</button> })}
                        </header>
                        {state.error.clone().map(|e| view! { <pre class="cc-error cc-run-error" role="alert">{e}</pre> })}
                        {(!state.notifications.is_empty()).then(|| view! {
                            <ul class="cc-notifications" data-notifications="">
                                {state.notifications.iter().map(|d| {
                                    let what = format!("Notification {} ({})", d.to + 1, d.event);
                                    let line = match (&d.delivered_at, &d.error) {
                                        (Some(at), _) => format!("{what}: sent at {}", crate::format_time(*at)),
                                        (None, Some(e)) => format!("{what}: not delivered after {} tries: {e}{}", d.attempts, d.retry_at.map(|t| format!("; next try at {}", crate::format_time(t))).unwrap_or_else(|| "; given up".into())),
                                        (None, None) => format!("{what}: sending"),
                                    };
                                    let failed = d.delivered_at.is_none() && d.error.is_some();
                                    view! { <li class:cc-error=failed data-delivery=d.event.clone() data-delivered=d.delivered_at.is_some().to_string()>{line}</li> }
                                }).collect_view()}
                            </ul>
                        })}
                        {move || action_error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
                        {(!state.parameters.is_empty()).then(|| view! {
                            <p class="cc-sub">"Parameters: "{state.parameters.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")}</p>
                        })}
                        <RunGraph state=state.clone() counts=counts.clone() selected />
                        {move || selected.get().and_then(|id| Some((state.nodes.iter().find(|n| n.id == id).cloned()?, counts.iter().find(|n| n.id == id).cloned()?))).map(|(node, count)| {
                            let rerun_id = node.id.clone();
                            let node_id = node.id.clone();
                            let experiment = experiment.clone();
                            // Instances of this node a downstream `select` chose.
                            let best: Vec<u32> = state.nodes.iter().flat_map(|n| &n.selections).filter(|s| s.from == node_id).flat_map(|s| s.chosen.clone()).collect();
                            let selections = node.selections.clone();
                            let usage = count.usage;
                            view! {
                                <section class="cc-node-detail" data-node-detail=node_id>
                                    <h2>{format!("{} — {}", node.id, InstanceState::as_str(count.shown_state()))}</h2>
                                    {terminal.then(|| view! { <button data-action="rerun" title="Run this node and everything downstream again" on:click=move |_| act("rerun", serde_json::json!({"node": rerun_id.clone()}))>"Rerun from this node"</button> })}
                                    {node.error.clone().map(|e| view! { <pre class="cc-error">{e}</pre> })}
                                    {node.skipped.clone().map(|why| view! { <p class="cc-sub" data-skipped="">{format!("Skipped: {why}")}</p> })}
                                    {node.registered.clone().map(|r| view! {
                                        <p data-registered="">"Registered "<a href=format!("/#/models/{}/versions/{}", api::segment(&r.model), api::segment(&r.version))>{format!("{} version {}", r.model, r.version)}</a>{r.alias.map(|a| format!(" and moved @{a} to it"))}</p>
                                    })}
                                    {match state.template.node(&node.id).map(|n| n.kind.clone()) {
                                        Some(concurrent_core::template::NodeKind::Approval(spec)) => {
                                            let paused = count.count(InstanceState::Paused) > 0;
                                            let id = node.id.clone();
                                            let decide = Callback::new(move |(approve, note): (bool, String)| act("decide", serde_json::json!({"node": id.clone(), "approve": approve, "note": note})));
                                            Some(view! { <crate::approval::ApprovalPanel node=node.clone() spec paused decide /> })
                                        }
                                        _ => None,
                                    }}
                                    {(!node.unmatched_inputs.is_empty()).then(|| view! { <p class="cc-error">{format!("Files no partition took: {}", node.unmatched_inputs.join(", "))}</p> })}
                                    {(usage != Default::default()).then(|| view! {
                                        <p class="cc-sub" data-usage="">{usage_line(&usage, count.cached)}</p>
                                    })}
                                    {selections.into_iter().map(|s| {
                                        let value = |i: u32| s.candidates.iter().find(|c| c.instance == i).and_then(|c| c.value).map(|v| format!("{v:.4}")).unwrap_or_default();
                                        let chosen = s.chosen.iter().map(|&i| format!("{}[{i}] ({})", s.from, value(i))).collect::<Vec<_>>().join(", ");
                                        let missing = s.without_metric();
                                        let mode = if s.mode == concurrent_core::template::SelectMode::Min { "lowest" } else { "highest" };
                                        view! {
                                            <p class="cc-selection" data-selection=s.input.clone()>
                                                {format!("Input {}: the {mode} {} of {} {} candidate(s): {chosen}", s.input, s.metric, s.candidates.len(), s.from)}
                                                {(!missing.is_empty()).then(|| view! { <span class="cc-error" data-without-metric="">{format!(" — did not log {}: {}", s.metric, missing.iter().map(|i| format!("{}[{i}]", s.from)).collect::<Vec<_>>().join(", "))}</span> })}
                                            </p>
                                        }
                                    }).collect_view()}
                                    {move || match last_rows.get() {
                                        None => view! { <p class="cc-loading">"Loading the instances…"</p> }.into_any(),
                                        Some(Err(e)) => view! { <p class="cc-error" role="alert">{format!("The instances could not be read: {e}")}</p> }.into_any(),
                                        Some(Ok(page)) => instance_table(&count, &page, &experiment, table, &best).into_any(),
                                    }}
                                </section>
                            }
                        })}
                    }.into_any()
                }
            }}
            {move || table.log_of.get().map(|target| view! {
                <LogPanel target running=log_running on_close=Callback::new(move |_| table.log_of.set(None)) />
            })}
        </div>
    }
}

#[component]
fn RunGraph(
    state: RunState,
    counts: Vec<NodeCounts>,
    selected: RwSignal<Option<String>>,
) -> impl IntoView {
    let mut t = state.template.clone();
    concurrent_core::design::place_unpositioned(&mut t);
    let pos = |id: &str| t.node(id).and_then(|n| n.position).unwrap_or_default();
    let (lo, hi) = concurrent_core::design::bounds(&t).unwrap_or_default();
    let (w, h) = (
        (hi.x - lo.x + NODE_W + 40.0).max(200.0),
        (hi.y - lo.y + NODE_H + 40.0).max(100.0),
    );
    let view_box = format!("{:.0} {:.0} {w:.0} {h:.0}", lo.x - 20.0, lo.y - 20.0);
    let edges = t.edges.iter().map(|e| view! { <path class="cc-edge-line" d=edge_path(pos(&e.from), pos(&e.to)) marker-end="url(#cc-run-arrow)"></path> }).collect_view();
    let nodes = t.nodes.iter().map(|n| {
        let run: Option<&NodeCounts> = counts.iter().find(|r| r.id == n.id);
        let shown = run.map(|r| InstanceState::as_str(r.shown_state())).unwrap_or("waiting");
        let counts = run.map(|r| format!("{}/{} done", r.count(InstanceState::Succeeded), r.instances)).unwrap_or_default();
        let p = pos(&n.id);
        let id = n.id.clone();
        let sel = n.id.clone();
        view! {
            <g class=format!("cc-node cc-state-{shown}") data-node=n.id.clone() data-state=shown transform=format!("translate({:.1},{:.1})", p.x, p.y)
                class:cc-selected=move || selected.with(|s| s.as_deref() == Some(sel.as_str()))
                tabindex="0" on:click=move |_| selected.set(Some(id.clone()))>
                <title>{format!("{}: {shown}", n.id)}</title>
                <NodeBox title=fit(n.display_name(), 24) sub=Some(format!("{shown} · {counts}")) />
                <title>{subtitle(n)}</title>
            </g>
        }
    }).collect_view();
    view! {
        // Never narrower than a readable scale: a wide DAG scrolls sideways instead.
        <div class="cc-run-graph-wrap">
            <svg class="cc-run-graph" viewBox=view_box aria-label="The run's DAG"
                style=format!("max-height: {:.0}px; min-width: {:.0}px", h.min(520.0), w * concurrent_core::design::view::readable_scale())>
                {arrow_marker("cc-run-arrow")}
                {edges}{nodes}
            </svg>
        </div>
        <p class="cc-hint">"Select a node to see its instances."</p>
    }
}

/// The chips (the node's counts), the pager and the page of rows the edge answered with.
fn instance_table(
    count: &NodeCounts,
    page: &InstancesPage,
    experiment: &str,
    table: TableView,
    best: &[u32],
) -> impl IntoView {
    let pages = page.matched.div_ceil(PAGE).max(1);
    let shown = table.page.get_untracked().min(pages - 1);
    let chip = move |state: Option<InstanceState>, label: String| {
        let on = table.state.get_untracked() == state;
        view! {
            <button class="cc-chip" class:cc-chip-on=on aria-pressed=on.to_string()
                data-filter=state.map(InstanceState::as_str).unwrap_or("all")
                on:click=move |_| { table.state.set(state); table.page.set(0); }>{label}</button>
        }
    };
    let chips = std::iter::once(chip(None, format!("all {}", count.instances)))
        .chain(
            InstanceState::ALL
                .into_iter()
                .filter(|s| count.count(*s) > 0)
                .map(|s| {
                    chip(
                        Some(s),
                        format!("{} {}", InstanceState::as_str(s), count.count(s)),
                    )
                }),
        )
        .collect_view();
    let first = if page.matched > 0 { page.offset + 1 } else { 0 };
    let last = (page.offset + page.items.len()).min(page.matched);
    let pager = (pages > 1).then(|| view! {
        <span class="cc-pager" data-pager="">
            <button data-page="prev" disabled={shown == 0} on:click=move |_| table.page.update(|p| *p = p.saturating_sub(1))>"‹ Previous"</button>
            <span data-page-of="">{format!("{first}–{last} of {} · page {} of {pages}", page.matched, shown + 1)}</span>
            <button data-page="next" disabled={shown + 1 >= pages} on:click=move |_| table.page.update(|p| *p += 1)>"Next ›"</button>
        </span>
    });
    let node_id = page.node.clone();
    let rows = page.items.iter().map(|i| {
        let current: Option<&Attempt> = i.current();
        let all = || page.shared_inputs.iter().chain(&i.inputs);
        let files: usize = all().map(|(_, v)| v.len()).sum();
        let bytes: u64 = all().flat_map(|(_, v)| v).map(|f| f.size).sum();
        let inputs = all().map(|(k, v)| format!("{k}: {}", v.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("\n");
        let duration = current.and_then(|a| Some(a.ended_at.unwrap_or_else(|| js_sys::Date::now() as u64).saturating_sub(a.started_at?))).map(format_duration).unwrap_or_else(|| "–".into());
        let link = current.and_then(|a| a.mlflow_run_id.clone()).map(|r| view! { <a data-mlflow-run="" href=route::mlflow_run(experiment, &r)>{r[..8.min(r.len())].to_string()}</a> });
        let log = current.and_then(|a| Some(LogTarget { node: node_id.clone(), index: i.index as usize, attempt: a.number, mlflow_run_id: a.mlflow_run_id.clone()? }))
            .map(|target| view! { <button class="cc-link" data-open-log="" title="Read the whole log" on:click=move |_| table.log_of.set(Some(target.clone()))>"Log"</button> });
        let error = i.attempts.iter().rev().find_map(|a| a.error.clone());
        let chosen = best.contains(&i.index);
        let cached = current.and_then(|a| a.facts.cached_from.clone()).map(|from| view! {
            <span class="cc-chip" data-cached-from=from.mlflow_run_id.clone() title="This instance ran nothing: it reused the outputs of an earlier attempt with the same code, parameters, environment and inputs">
                "cached from "<a href=Route::Run(from.run_id.clone()).href()>{format!("run {}", &from.run_id[..8.min(from.run_id.len())])}</a>
            </span>
        });
        let tail = current.filter(|a| a.state == AttemptState::Running).and_then(|a| a.log_tail.clone());
        view! {
            <tr data-instance=i.index.to_string()>
                <td>{i.index}</td>
                <td><span class=format!("cc-status {}", InstanceState::as_str(i.state))>{InstanceState::as_str(i.state)}</span></td>
                <td>{format!("{} of {}", current.map(|a| a.number).unwrap_or(0), i.attempts.len())}</td>
                <td title=inputs>{format!("{files} file(s), {}", crate::format_bytes(bytes))}</td>
                <td>{duration}</td>
                <td>{link}" "{log}" "{cached}{chosen.then(|| view! { <span class="cc-chip cc-best" data-best="" title="A downstream select edge chose this instance">"★ best"</span> })}</td>
                <td>{error.map(|e| view! { <pre class="cc-error">{e}</pre> })}</td>
            </tr>
            {tail.map(|t| view! { <tr class="cc-tail"><td colspan="7"><pre data-log-tail="">{t}</pre></td></tr> })}
        }
    }).collect_view();
    view! {
        <div class="cc-table-tools" data-instance-filters="">{chips}<span class="cc-spacer"></span>{pager}</div>
        <table class="cc-table" data-instances="">
            <thead><tr><th>"#"</th><th>"State"</th><th>"Attempt"</th><th>"Inputs"</th><th>"Duration"</th><th>"MLflow run"</th><th>"Last error"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {(page.matched == 0).then(|| view! { <p class="cc-sub">"No instance is in this state."</p> })}
    }
}

/// What a node's attempts used, leaving out what was not measured (a cached attempt used nothing;
/// a process without GPUs has no GPU time).
fn usage_line(usage: &concurrent_core::wire::Usage, cached: usize) -> String {
    let mut parts = vec![format!("{:.1} CPU-seconds", usage.cpu_seconds)];
    if usage.peak_memory_bytes > 0 {
        parts.push(format!(
            "{} peak memory",
            crate::format_bytes(usage.peak_memory_bytes)
        ));
    }
    if usage.gpu_seconds > 0.0 {
        parts.push(format!("{:.1} GPU-seconds", usage.gpu_seconds));
    }
    parts.push(format!("{:.1} s of attempts", usage.wall_seconds));
    let mut line = format!("Used: {}", parts.join(", "));
    if cached > 0 {
        line.push_str(&format!(" · {cached} instance(s) reused a cached result"));
    }
    line
}
