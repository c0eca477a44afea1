//! Schedules: the list with next fire times, creating one (the cron in words and its next five
//! times as you type), pausing, resuming and deleting.

use std::collections::BTreeMap;

use concurrent_core::access::Role;
use concurrent_core::access::Route as ApiRoute;
use concurrent_core::schedule::{preview, NewSchedule, Overlap, Schedule};
use concurrent_core::wire::{TemplateSummary, TemplateVersion};
use leptos::prelude::*;

use crate::forms::{confirm, defaults, ParameterFields};
use crate::route::Route;
use crate::shell::{ticker, Nav, Page};
use crate::{api, format_time};

const REFRESH_MS: u32 = 5_000;

fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// `in 3 h 5 min` / `2 min ago`.
fn relative(at: u64, now: u64) -> String {
    let (d, future) = if at >= now {
        (at - now, true)
    } else {
        (now - at, false)
    };
    let d = crate::format_duration(d - d % 1000);
    if future {
        format!("in {d}")
    } else {
        format!("{d} ago")
    }
}

/// The same instant in the browser's time zone (cron times are UTC).
fn local(at: u64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at as f64));
    String::from(d.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
}

#[component]
pub fn Schedules() -> impl IntoView {
    let tick = ticker(REFRESH_MS);
    let admin = crate::shell::role_is(Role::Admin);
    let list = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<Schedule>>(ApiRoute::SchedulesList.path(&[]))
    });
    let creating = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let act = move |path: String, delete: bool| {
        leptos::task::spawn_local(async move {
            let result = if delete {
                api::delete(&path).await
            } else {
                api::send::<Schedule>(gloo_net::http::Request::post(&path), &serde_json::json!({}))
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
        <Nav page=Page::Schedules />
        <header class="cc-header">
            <h2>"Schedules"</h2>
            <span class="cc-sub">"Runs started by cron, in UTC. A paused schedule fires nothing; resumed, it goes on from its next tick."</span>
            <span class="cc-spacer"></span>
            {move || admin.get().then(|| view! {
                <button class="cc-primary" data-action="new-schedule" on:click=move |_| creating.update(|c| *c = !*c)>"New schedule"</button>
            })}
        </header>
        {move || creating.get().then(|| view! { <NewScheduleForm done=move || { creating.set(false); tick.update(|t| *t += 1); } /> })}
        {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
        <Transition fallback=|| view! { <p class="cc-loading">"Loading schedules…"</p> }>
            {move || list.get().map(|r| match r {
                Err(e) => view! { <p class="cc-error" role="alert">{format!("The schedules could not be listed: {e}")}</p> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="cc-empty">"No schedules yet."{move || admin.get().then_some(" Press New schedule to run a template on a cron.")}</p> }.into_any(),
                Ok(list) => {
                    let now = now();
                    view! {
                        <table class="cc-table" data-schedules="">
                            <thead><tr><th>"Name"</th><th>"Template"</th><th>"When"</th><th>"Next run"</th><th>"Last run"</th><th>"State"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|s| {
                                    let name = s.spec.name.clone();
                                    let words = preview(&s.spec.cron, now, 0).map(|p| p.description).unwrap_or_default();
                                    let base = ApiRoute::ScheduleDelete.path(&[&name]);
                                    let (pause, resume, delete) = (format!("{base}/pause"), format!("{base}/resume"), base.clone());
                                    let paused = s.paused;
                                    let state = if paused { "paused" } else { "active" };
                                    let next = (!paused).then(|| view! { <span title=local(s.next_fire)>{format_time(s.next_fire)}</span><br /><span class="cc-hint">{relative(s.next_fire, now)}</span> });
                                    let last = s.last_run_id.clone().map(|id| view! { <a class="mono" href=Route::Run(id.clone()).href()>{id[..8.min(id.len())].to_string()}</a> });
                                    let fired = s.last_fired.map(|t| view! { <br /><span class="cc-hint">{relative(t, now)}</span> });
                                    let delete_name = name.clone();
                                    view! {
                                        <tr data-schedule=name.clone() data-state=state>
                                            <td>{name.clone()}</td>
                                            <td><a href=Route::Template(s.spec.template.clone()).href()>{s.spec.template.clone()}</a></td>
                                            <td><span class="mono">{s.spec.cron.clone()}</span><br /><span class="cc-hint">{words}</span></td>
                                            <td data-next-fire=s.next_fire.to_string()>{next}{paused.then_some("–")}</td>
                                            <td>{last}{fired}
                                                {(s.skipped > 0).then(|| view! { <br /><span class="cc-hint" title="ticks that passed without a run: downtime, overlap, or starts that kept failing">{format!("{} skipped", s.skipped)}</span> })}
                                                {s.last_error.clone().map(|e| view! { <pre class="cc-error">{e}</pre> })}</td>
                                            <td><span class=format!("cc-status {}", if paused { "cancelled" } else { "running" })>{state}</span></td>
                                            <td class="cc-row-actions">{move || admin.get().then(|| {
                                                let (pause, resume, delete, delete_name) = (pause.clone(), resume.clone(), delete.clone(), delete_name.clone());
                                                view! {
                                                    {if paused {
                                                        view! { <button data-action="resume" on:click=move |_| act(resume.clone(), false)>"Resume"</button> }.into_any()
                                                    } else {
                                                        view! { <button data-action="pause" on:click=move |_| act(pause.clone(), false)>"Pause"</button> }.into_any()
                                                    }}
                                                    <button class="cc-danger" data-action="delete" on:click=move |_| if confirm(&format!("Delete schedule {delete_name}? Its runs stay.")) { act(delete.clone(), true) }>"Delete"</button>
                                                }
                                            })}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }
            })}
        </Transition>
    }
}

#[component]
fn NewScheduleForm(done: impl Fn() + Copy + 'static) -> impl IntoView {
    let templates =
        LocalResource::new(|| api::get::<Vec<TemplateSummary>>(ApiRoute::TemplatesList.path(&[])));
    let name = RwSignal::new(String::new());
    let template = RwSignal::new(String::new());
    let cron = RwSignal::new("0 2 * * *".to_string());
    let cluster = RwSignal::new(String::new());
    let overlap = RwSignal::new(Overlap::Skip);
    let values = RwSignal::new(BTreeMap::<String, String>::new());
    let error = RwSignal::new(None::<String>);
    // The chosen template's run parameters, prefilled with their defaults.
    let parameters = LocalResource::new(move || {
        let t = template.get();
        async move {
            if t.is_empty() {
                return vec![];
            }
            let path = ApiRoute::TemplateGet.path(&[&t]);
            let params = api::get::<TemplateVersion>(&path)
                .await
                .map(|tv| tv.template.parameters)
                .unwrap_or_default();
            values.set(defaults(&params));
            params
        }
    });
    let shown = Memo::new(move |_| cron.with(|c| preview(c.trim(), now(), 5)));
    let create = move |_| {
        let spec = NewSchedule {
            name: name.get_untracked().trim().to_string(),
            template: template.get_untracked(),
            cron: cron.get_untracked().trim().to_string(),
            parameters: values.get_untracked(),
            cluster: Some(cluster.get_untracked().trim().to_string()).filter(|c| !c.is_empty()),
            overlap: overlap.get_untracked(),
        };
        leptos::task::spawn_local(async move {
            match api::send::<Schedule>(
                gloo_net::http::Request::post(&ApiRoute::ScheduleCreate.path(&[])),
                &spec,
            )
            .await
            {
                Ok(_) => done(),
                Err(e) => error.set(Some(format!("the schedule was not created: {e}"))),
            }
        });
    };
    view! {
        <section class="cc-card" data-new-schedule="">
            <h3>"New schedule"</h3>
            <div class="cc-form-grid">
                <label class="cc-field"><span>"Name"</span>
                    <input type="text" name="name" placeholder="nightly-training" prop:value=move || name.get() on:input=move |e| name.set(event_target_value(&e)) /></label>
                <label class="cc-field"><span>"Template (its latest version at each tick)"</span>
                    <select name="template" on:change=move |e| template.set(event_target_value(&e))>
                        <option value="">"choose a template…"</option>
                        {move || templates.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|t| view! { <option value=t.name.clone()>{t.name.clone()}</option> }).collect_view()}
                    </select></label>
                <label class="cc-field"><span>"Cron (minute hour day-of-month month day-of-week, UTC)"</span>
                    <input type="text" name="cron" class="mono" prop:value=move || cron.get() on:input=move |e| cron.set(event_target_value(&e)) /></label>
                <label class="cc-field"><span>"Cluster (for nodes that name none)"</span>
                    <input type="text" name="cluster" placeholder="local" prop:value=move || cluster.get() on:input=move |e| cluster.set(event_target_value(&e)) /></label>
                <label class="cc-field"><span>"When the previous run is still going"</span>
                    <select name="overlap" on:change=move |e| overlap.set(if event_target_value(&e) == "allow" { Overlap::Allow } else { Overlap::Skip })>
                        <option value="skip">"skip the tick"</option>
                        <option value="allow">"start another run"</option>
                    </select></label>
            </div>
            <div class="cc-cron-preview" data-cron-preview="" aria-live="polite">
                {move || match shown.get() {
                    Err(e) => view! { <p class="cc-error">{e.to_string()}</p> }.into_any(),
                    Ok(p) => view! {
                        <p><strong>{p.description}</strong>". Next five runs:"</p>
                        <ol>{p.next.into_iter().map(|t| view! { <li data-tick=t.to_string()>{format_time(t)}<span class="cc-hint">{format!(" · {} your time · {}", local(t), relative(t, now()))}</span></li> }).collect_view()}</ol>
                    }.into_any(),
                }}
            </div>
            <Suspense fallback=|| ()>
                {move || parameters.get().map(|params| (!params.is_empty()).then(|| view! {
                    <fieldset class="cc-params"><legend>"Run parameters"</legend><ParameterFields parameters=params values /></fieldset>
                }))}
            </Suspense>
            {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
            <div class="cc-actions">
                <button on:click=move |_| done()>"Cancel"</button>
                <button class="cc-primary" data-action="create-schedule" disabled=move || shown.with(Result::is_err) || template.with(String::is_empty) on:click=create>"Create schedule"</button>
            </div>
        </section>
    }
}
