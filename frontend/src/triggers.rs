//! Triggers: templates started by a model-registry event or another template's success; the
//! list with what each last did (its run, or why an event could not start one), pausing,
//! resuming and deleting. Admins create them with the API or `concurrent triggers create`.

use concurrent_core::access::Role;
use concurrent_core::access::Route as ApiRoute;
use concurrent_core::trigger::{On, Trigger};
use leptos::prelude::*;

use crate::api;
use crate::forms::confirm;
use crate::route::Route;
use crate::shell::{ticker, Nav, Page};

const REFRESH_MS: u32 = 5_000;

/// What starts it, in words.
fn on_words(on: &On) -> String {
    match on {
        On::ModelVersionCreated { model } => format!("a new version of {model}"),
        On::ModelAliasSet { model, alias } => format!("{model}@{alias} moved"),
        On::RunSucceeded { template } => format!("a run of {template} succeeded"),
    }
}

#[component]
pub fn Triggers() -> impl IntoView {
    let tick = ticker(REFRESH_MS);
    let admin = crate::shell::role_is(Role::Admin);
    let list = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<Trigger>>(ApiRoute::TriggersList.path(&[]))
    });
    let error = RwSignal::new(None::<String>);
    let act = move |path: String, delete: bool| {
        leptos::task::spawn_local(async move {
            let result = if delete {
                api::delete(&path).await
            } else {
                api::send::<Trigger>(gloo_net::http::Request::post(&path), &serde_json::json!({}))
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => error.set(None),
                Err(e) => error.set(Some(e.to_string())),
            }
            tick.update(|t| *t += 1);
        });
    };
    view! {
        <Nav page=Page::Triggers />
        <header class="cc-header">
            <h2>"Triggers"</h2>
            <span class="cc-sub">"Runs started by the model registry (MLflow's signed webhooks, or polling) or by another template's success. The same event never starts two runs."</span>
        </header>
        {move || admin.get().then(|| view! {
            <p class="cc-hint">"Create one with "<code>"concurrent triggers create trigger.json"</code>" or "<code>"POST /api/v1/triggers"</code>" (see docs/gates.md)."</p>
        })}
        {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
        <Transition fallback=|| view! { <p class="cc-loading">"Loading triggers…"</p> }>
            {move || list.get().map(|r| match r {
                Err(e) => view! { <p class="cc-error" role="alert">{format!("The triggers could not be listed: {e}")}</p> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="cc-empty">"No triggers yet."</p> }.into_any(),
                Ok(list) => view! {
                    <table class="cc-table" data-triggers="">
                        <thead><tr><th>"Name"</th><th>"Starts"</th><th>"When"</th><th>"Runs"</th><th>"Last run"</th><th>"State"</th><th></th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|t| {
                                let name = t.spec.name.clone();
                                let base = ApiRoute::TriggerDelete.path(&[&name]);
                                let (pause, resume, delete) = (format!("{base}/pause"), format!("{base}/resume"), base.clone());
                                let paused = t.paused;
                                let state = if paused { "paused" } else { "active" };
                                let last = t.last_run_id.clone().map(|id| view! { <a class="mono" href=Route::Run(id.clone()).href()>{id[..8.min(id.len())].to_string()}</a> });
                                let delete_name = name.clone();
                                view! {
                                    <tr data-trigger=name.clone() data-state=state>
                                        <td>{name.clone()}</td>
                                        <td><a href=Route::Template(t.spec.template.clone()).href()>{t.spec.template.clone()}</a></td>
                                        <td>{on_words(&t.spec.on)}{t.delivery.clone().map(|d| view! { <br /><span class="cc-hint">{d}</span> })}</td>
                                        <td>{t.fired}</td>
                                        <td>{last}{t.last_event.clone().map(|e| view! { <br /><span class="cc-hint mono">{e}</span> })}
                                            {t.last_error.clone().map(|e| view! { <pre class="cc-error" data-trigger-error="">{e}</pre> })}</td>
                                        <td><span class=format!("cc-status {}", if paused { "cancelled" } else { "running" })>{state}</span></td>
                                        <td class="cc-row-actions">{move || admin.get().then(|| {
                                            let (pause, resume, delete, delete_name) = (pause.clone(), resume.clone(), delete.clone(), delete_name.clone());
                                            view! {
                                                {if paused {
                                                    view! { <button data-action="resume" on:click=move |_| act(resume.clone(), false)>"Resume"</button> }.into_any()
                                                } else {
                                                    view! { <button data-action="pause" on:click=move |_| act(pause.clone(), false)>"Pause"</button> }.into_any()
                                                }}
                                                <button class="cc-danger" data-action="delete" on:click=move |_| if confirm(&format!("Delete trigger {delete_name}? Its runs stay.")) { act(delete.clone(), true) }>"Delete"</button>
                                            }
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            })}
        </Transition>
    }
}
