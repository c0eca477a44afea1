//! The page: templates and runs, refreshed while it is open.

use concurrent_core::run::RunStatus;
use concurrent_core::wire::{RunSummary, TemplateSummary};
use leptos::prelude::*;

use crate::api;

/// How often the lists refresh.
const REFRESH_MS: u32 = 3_000;

#[component]
pub fn App() -> impl IntoView {
    let tick = RwSignal::new(0u32);
    leptos::task::spawn_local(async move {
        loop {
            gloo_timers::future::TimeoutFuture::new(REFRESH_MS).await;
            tick.update(|t| *t += 1);
        }
    });
    let templates = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<TemplateSummary>>("/api/v1/templates")
    });
    let runs = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<RunSummary>>("/api/v1/runs?limit=50")
    });
    view! {
        <header><h1>"Concurrent"</h1><span class="sub">"DAGs of MLflow Projects"</span></header>
        <main>
            <section id="templates">
                <h2>"Templates"</h2>
                <Transition fallback=|| view! { <p class="loading">"Loading templates…"</p> }>
                    {move || templates.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e}</p> }.into_any(),
                        Ok(list) if list.is_empty() => view! {
                            <p class="empty">"No templates yet. Save one with PUT /api/v1/templates/<name>."</p>
                        }.into_any(),
                        Ok(list) => view! { <TemplateTable list /> }.into_any(),
                    })}
                </Transition>
            </section>
            <section id="runs">
                <h2>"Runs"</h2>
                <Transition fallback=|| view! { <p class="loading">"Loading runs…"</p> }>
                    {move || runs.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e}</p> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="empty">"No runs yet."</p> }.into_any(),
                        Ok(list) => view! { <RunTable list /> }.into_any(),
                    })}
                </Transition>
            </section>
        </main>
    }
}

#[component]
fn TemplateTable(list: Vec<TemplateSummary>) -> impl IntoView {
    view! {
        <table>
            <thead><tr><th>"Name"</th><th>"Version"</th><th>"Description"</th><th>"Updated"</th><th>"Runnable"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|t| view! {
                    <tr data-template=t.name.clone()>
                        <td>{t.name.clone()}</td>
                        <td>{t.latest_version}</td>
                        <td>{t.description}</td>
                        <td>{format_time(t.updated_at)}</td>
                        <td>{if t.valid { "yes" } else { "draft (has problems)" }}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn RunTable(list: Vec<RunSummary>) -> impl IntoView {
    view! {
        <table>
            <thead><tr><th>"Run"</th><th>"Template"</th><th>"Status"</th><th>"Started"</th><th>"Duration"</th><th>"By"</th><th>"MLflow"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|r| {
                    let status = status_name(r.status);
                    let duration = r.ended_at.map(|e| format!("{:.1} s", (e.saturating_sub(r.created_at)) as f64 / 1000.0)).unwrap_or_else(|| "–".into());
                    let mlflow = r.mlflow.map(|m| view! {
                        <a href=format!("/#/experiments/{}/runs/{}", m.experiment_id, m.run_id)>"open"</a>
                    });
                    let id = r.id.clone();
                    view! {
                        <tr data-run=id>
                            <td class="mono">{r.id[..8].to_string()}</td>
                            <td>{format!("{} v{}", r.template, r.template_version)}</td>
                            <td><span class=format!("status {status}") title=r.error.unwrap_or_default()>{status}</span></td>
                            <td>{format_time(r.created_at)}</td>
                            <td>{duration}</td>
                            <td>{r.started_by.unwrap_or_default()}</td>
                            <td>{mlflow}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Pending => "pending",
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn format_time(ms: u64) -> String {
    concurrent_core::time::rfc3339(ms)
        .replace('T', " ")
        .replace('Z', " UTC")
}
