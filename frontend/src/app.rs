//! The app shell: routes from the URL hash, and the home page (templates and runs lists).

use concurrent_core::access::Route as ApiRoute;
use concurrent_core::wire::{RunSummary, TemplateSummary};
use leptos::ev;
use leptos::prelude::*;

use crate::designer::{Designer, Sessions};
use crate::route::{self, Route};
use crate::run_view::RunView;
use crate::shell::{ticker, Caller, Nav, Page};
use crate::{api, format_time};
use concurrent_core::run::RunStatus;

/// How often lists refresh while shown.
const REFRESH_MS: u32 = 3_000;
/// Runs per page.
const PAGE: usize = 25;

// The pages a designer's first load does without. `#[lazy]` makes each a split point:
// `scripts/build.sh` moves what only they use into wasm modules of their own, fetched the first
// time one is shown. The component tests' wasm is not split, so there they are plain.
#[cfg_attr(not(test), lazy)]
async fn run_page(id: String) -> AnyView {
    view! { <RunView id /> }.into_any()
}

#[cfg_attr(not(test), lazy)]
async fn schedules_page() -> AnyView {
    view! { <crate::schedules::Schedules /> }.into_any()
}

#[cfg_attr(not(test), lazy)]
async fn triggers_page() -> AnyView {
    view! { <crate::triggers::Triggers /> }.into_any()
}

#[cfg_attr(not(test), lazy)]
async fn tokens_page() -> AnyView {
    view! { <crate::tokens::Tokens /> }.into_any()
}

/// A page whose code may still be on its way. Not a `<Suspense>`: the page's own resources would
/// register with it, and each of their refreshes would put the whole page back to the fallback.
fn later(page: impl std::future::Future<Output = AnyView> + Send + 'static) -> AnyView {
    let loaded = RwSignal::new(false);
    view! {
        {move || (!loaded.get()).then(|| view! {
            <p class="cc-loading">"Loading the page… "<span class="cc-loading-slow">
                "Still loading: reload the page (Concurrent may have been updated since this tab was opened)."
            </span></p>
        })}
        {Suspend::new(async move {
            let page = page.await;
            loaded.set(true);
            page
        })}
    }
    .into_any()
}

#[component]
pub fn App() -> impl IntoView {
    provide_context(Sessions::new());
    provide_context(Caller::read());
    let current = RwSignal::new(route::current());
    let handle = window_event_listener(ev::hashchange, move |_| current.set(route::current()));
    on_cleanup(move || handle.remove());
    view! {
        <div class="cc">
            {move || match current.get() {
                Route::Home => view! { <Home /> }.into_any(),
                Route::New => view! { <Designer name=None /> }.into_any(),
                Route::Template(name) => view! { <Designer name=Some(name) /> }.into_any(),
                Route::Run(id) => later(run_page(id)),
                Route::Schedules => later(schedules_page()),
                Route::Triggers => later(triggers_page()),
                Route::Tokens => later(tokens_page()),
                Route::NotFound(path) => view! {
                    <p class="cc-error" role="alert">{format!("There is no page {path:?} here. ")}<a href="#/dags">"Go to the DAGs list"</a></p>
                }.into_any(),
            }}
        </div>
    }
}

#[component]
fn Home() -> impl IntoView {
    let tick = ticker(REFRESH_MS);
    let templates = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<TemplateSummary>>(ApiRoute::TemplatesList.path(&[]))
    });
    view! {
        <Nav page=Page::Home />
        <header class="cc-header"><h1>"DAGs"</h1><span class="cc-sub">"DAGs of MLflow Projects, run by Concurrent"</span>
            <span class="cc-spacer"></span><a class="cc-button cc-primary" href="#/dags/new" data-action="new">"New DAG"</a></header>
        <section id="templates">
            <h2>"Templates"</h2>
            <Transition fallback=|| view! { <p class="cc-loading">"Loading templates…"</p> }>
                {move || templates.get().map(|r| match r {
                    Err(e) => view! { <p class="cc-error" role="alert">{format!("The templates could not be listed: {e}")}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="cc-empty">"No templates yet. "<a href="#/dags/new">"Design your first DAG"</a>", or import one in the designer."</p>
                    }.into_any(),
                    Ok(list) => view! { <TemplateTable list /> }.into_any(),
                })}
            </Transition>
        </section>
        <Runs templates=Signal::derive(move || templates.get().and_then(Result::ok).unwrap_or_default()) tick />
    }
}

#[component]
fn TemplateTable(list: Vec<TemplateSummary>) -> impl IntoView {
    view! {
        <table class="cc-table">
            <thead><tr><th>"Name"</th><th>"Version"</th><th>"Description"</th><th>"Updated"</th><th>"Runnable"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|t| view! {
                    <tr data-template=t.name.clone()>
                        <td><a href=Route::Template(t.name.clone()).href()>{t.name.clone()}</a></td>
                        <td>{t.latest_version}</td>
                        <td>{t.description}</td>
                        <td>{format_time(t.updated_at)}{t.updated_by.map(|b| format!(" by {b}"))}</td>
                        <td>{if t.valid { "yes" } else { "draft (has problems)" }}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn Runs(templates: Signal<Vec<TemplateSummary>>, tick: RwSignal<u32>) -> impl IntoView {
    let template = RwSignal::new(String::new());
    let status = RwSignal::new(String::new());
    // Cursors of the pages before this one (newest first), and this page's.
    let cursors = RwSignal::new(Vec::<u64>::new());
    let runs = LocalResource::new(move || {
        tick.get();
        let limit = (PAGE + 1).to_string();
        let before = cursors
            .with(|c| c.last().map(u64::to_string))
            .unwrap_or_default();
        let path = api::with_query(
            &ApiRoute::RunsList.path(&[]),
            &[
                ("template", &template.get()),
                ("status", &status.get()),
                ("limit", &limit),
                ("before", &before),
            ],
        );
        async move { api::get::<Vec<RunSummary>>(&path).await }
    });
    let reset = move || cursors.set(vec![]);
    view! {
        <section id="runs">
            <h2>"Runs"</h2>
            <div class="cc-filters">
                <label>"Template "<select name="filterTemplate" on:change=move |e| { template.set(event_target_value(&e)); reset(); }>
                    <option value="">"all"</option>
                    {move || templates.get().into_iter().map(|t| view! { <option value=t.name.clone()>{t.name.clone()}</option> }).collect_view()}
                </select></label>
                <label>"Status "<select name="filterStatus" on:change=move |e| { status.set(event_target_value(&e)); reset(); }>
                    <option value="">"all"</option>
                    {RunStatus::ALL.map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                </select></label>
            </div>
            <Transition fallback=|| view! { <p class="cc-loading">"Loading runs…"</p> }>
                {move || runs.get().map(|r| match r {
                    Err(e) => view! { <p class="cc-error" role="alert">{format!("The runs could not be listed: {e}")}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="cc-empty">"No runs match. Open a template and press Run."</p> }.into_any(),
                    Ok(mut list) => {
                        let more = list.len() > PAGE;
                        list.truncate(PAGE);
                        let next = list.last().map(|r| r.created_at);
                        view! {
                            <RunTable list />
                            <div class="cc-pager">
                                <button disabled=move || cursors.with(Vec::is_empty) on:click=move |_| cursors.update(|c| { c.pop(); })>"Newer"</button>
                                <button disabled=!more on:click=move |_| if let Some(n) = next { cursors.update(|c| c.push(n)) }>"Older"</button>
                            </div>
                        }.into_any()
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn RunTable(list: Vec<RunSummary>) -> impl IntoView {
    view! {
        <table class="cc-table">
            <thead><tr><th>"Run"</th><th>"Template"</th><th>"Status"</th><th>"Started"</th><th>"Duration"</th><th>"By"</th><th>"MLflow"</th></tr></thead>
            <tbody>
                {list.into_iter().map(|r| {
                    let status = RunStatus::as_str(r.status);
                    let duration = r.ended_at.map(|e| crate::format_duration(e.saturating_sub(r.created_at))).unwrap_or_else(|| "–".into());
                    let mlflow = r.mlflow.map(|m| view! { <a href=route::mlflow_run(&m.experiment_id, &m.run_id)>"open"</a> });
                    view! {
                        <tr data-run=r.id.clone()>
                            <td class="mono"><a href=Route::Run(r.id.clone()).href()>{r.id[..8.min(r.id.len())].to_string()}</a></td>
                            <td>{format!("{} v{}", r.template, r.template_version)}</td>
                            <td><span class=format!("cc-status {status}") title=r.error.unwrap_or_default()>{status}</span></td>
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
