//! The designer's dialogs: run, import, versions with their diff; and export.

use concurrent_core::access::Route as ApiRoute;
use concurrent_core::diff::{diff, Change};
use concurrent_core::wire::{RunSummary, StartRun, TemplateVersion, VersionSummary};
use concurrent_core::Template;
use leptos::prelude::*;
use leptos::wasm_bindgen::{JsCast, JsValue};

use super::Session;
use crate::api;
use crate::route::{self, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialog {
    Run,
    Import,
    Versions,
}

#[component]
pub fn DialogView(
    dialog: Dialog,
    session: Session,
    close: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let body = match dialog {
        Dialog::Run => view! { <RunDialog session close /> }.into_any(),
        Dialog::Import => view! { <ImportDialog session close /> }.into_any(),
        Dialog::Versions => view! { <VersionsDialog session /> }.into_any(),
    };
    view! {
        <div class="cc-modal-back" on:click=move |_| close()>
            <div class="cc-modal" role="dialog" aria-modal="true" on:click=|e| e.stop_propagation()>
                <button class="cc-link cc-close" title="Close (Esc)" on:click=move |_| close()>"×"</button>
                {body}
            </div>
        </div>
    }
}

/// Downloads the template as JSON.
pub fn export(session: Session) {
    let template = session.editor.with_untracked(|e| e.template().clone());
    let text = serde_json::to_string_pretty(&template).unwrap_or_default();
    let parts = js_sys::Array::of1(&JsValue::from_str(&text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("application/json");
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options) else {
        return;
    };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else {
        return;
    };
    if let Ok(a) = document()
        .create_element("a")
        .map(|a| a.unchecked_into::<web_sys::HtmlAnchorElement>())
    {
        a.set_href(&url);
        let name = if template.name.is_empty() {
            "dag".to_string()
        } else {
            template.name.clone()
        };
        a.set_download(&format!("{name}.json"));
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

#[component]
fn ImportDialog(session: Session, close: impl Fn() + Copy + 'static) -> impl IntoView {
    let text = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let import = move |_| match Template::from_json(&text.get_untracked()) {
        Err(e) => error.set(Some(format!("this is not a template: {e}"))),
        Ok(mut t) => {
            // Saving goes to the template open here, so an import keeps its name once saved.
            if let Some((_, saved)) = session.saved.get_untracked() {
                t.name = saved.name;
            }
            let nodes = t.nodes.len();
            session.editor.update(|e| e.replace(t));
            session.selection.set(super::Selection::default());
            super::canvas::fit(session);
            session.say(format!(
                "imported {nodes} node(s); Ctrl+Z undoes the import"
            ));
            close();
        }
    };
    let on_file = move |e: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&e);
        let Some(file) = input.files().and_then(|f| f.get(0)) else {
            return;
        };
        leptos::task::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(file.text()).await {
                Ok(v) => text.set(v.as_string().unwrap_or_default()),
                Err(_) => error.set(Some("the file could not be read".into())),
            }
        });
    };
    view! {
        <h2>"Import a template"</h2>
        <p class="cc-hint">"Paste template JSON (apiVersion concurrent/v1) or choose a file. Nodes without positions are laid out automatically."</p>
        <input type="file" accept=".json,application/json" on:change=on_file />
        <textarea name="importJson" rows="12" class="mono" prop:value=move || text.get() on:input=move |e| text.set(event_target_value(&e))></textarea>
        {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
        <div class="cc-actions"><button class="cc-primary" data-action="do-import" on:click=import>"Import"</button></div>
    }
}

#[component]
fn RunDialog(session: Session, close: impl Fn() + Copy + 'static) -> impl IntoView {
    let (version, template) = session
        .saved
        .get_untracked()
        .expect("run needs a saved version");
    let values = RwSignal::new(crate::forms::defaults(&template.parameters));
    let cluster = RwSignal::new("local".to_string());
    let ignore_cache = RwSignal::new(false);
    let caches = template.cache.is_some_and(|c| c.enabled)
        || template
            .nodes
            .iter()
            .any(|n| n.cache.is_some_and(|c| c.enabled));
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let name = template.name.clone();
    let start = move |_| {
        let body = StartRun {
            template: name.clone(),
            version: Some(version),
            parameters: values.get_untracked(),
            cluster: Some(cluster.get_untracked()).filter(|c| !c.trim().is_empty()),
            experiment_id: None,
            ignore_cache: ignore_cache.get_untracked(),
        };
        busy.set(true);
        leptos::task::spawn_local(async move {
            match api::send::<RunSummary>(
                gloo_net::http::Request::post(&ApiRoute::RunStart.path(&[])),
                &body,
            )
            .await
            {
                Ok(run) => {
                    close();
                    route::go(&Route::Run(run.id));
                }
                Err(e) => {
                    busy.set(false);
                    error.set(Some(format!("the run did not start: {e}")));
                }
            }
        });
    };
    view! {
        <h2>{format!("Run {} version {version}", template.name)}</h2>
        <crate::forms::ParameterFields parameters=template.parameters.clone() values />
        <label class="cc-field"><span>"Cluster (for nodes that name none)"</span>
            <input type="text" name="cluster" prop:value=move || cluster.get() on:input=move |e| cluster.set(event_target_value(&e)) /></label>
        {caches.then(|| view! {
            <label class="cc-check"><input type="checkbox" name="ignoreCache" prop:checked=move || ignore_cache.get() on:change=move |e| ignore_cache.set(event_target_checked(&e)) />
                <span>"Ignore cached results (run every step; new results are still cached)"</span></label>
        })}
        {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
        <div class="cc-actions"><button class="cc-primary" data-action="start-run" disabled=move || busy.get() on:click=start>"Start run"</button></div>
    }
}

#[component]
fn VersionsDialog(session: Session) -> impl IntoView {
    let name = session.template_name();
    let list = LocalResource::new({
        let name = name.clone();
        move || {
            let name = name.clone();
            async move {
                api::get::<Vec<VersionSummary>>(ApiRoute::TemplateVersions.path(&[&name])).await
            }
        }
    });
    let latest = session.saved.get_untracked().map(|(v, _)| v).unwrap_or(1);
    let from = RwSignal::new(latest.saturating_sub(1).max(1));
    let to = RwSignal::new(latest);
    let changes = LocalResource::new(move || {
        let (a, b, name) = (from.get(), to.get(), name.clone());
        async move {
            let (old, new) = (version(&name, a).await?, version(&name, b).await?);
            Ok::<_, api::ApiError>(diff(&old.template, &new.template))
        }
    });
    let options = move |selected: RwSignal<u32>| {
        list.get().and_then(Result::ok).unwrap_or_default().into_iter().map(move |v| {
            let label = format!("version {}{} — {}{}", v.version, if v.valid { "" } else { " (draft)" }, crate::format_time(v.created_at), v.author.map(|a| format!(" by {a}")).unwrap_or_default());
            view! { <option value=v.version.to_string() selected=move || selected.get() == v.version>{label}</option> }
        }).collect_view()
    };
    view! {
        <h2>"Versions"</h2>
        {move || list.get().and_then(Result::err).map(|e| view! { <p class="cc-error" role="alert">{format!("the versions could not be listed: {e}")}</p> })}
        <div class="cc-row">
            <label class="cc-field"><span>"From"</span><select name="diffFrom" on:change=move |e| from.set(event_target_value(&e).parse().unwrap_or(1))>{move || options(from)}</select></label>
            <label class="cc-field"><span>"To"</span><select name="diffTo" on:change=move |e| to.set(event_target_value(&e).parse().unwrap_or(1))>{move || options(to)}</select></label>
        </div>
        <div class="cc-diff" data-diff="">
            {move || match changes.get() {
                None => view! { <p class="cc-loading">"Comparing…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="cc-error" role="alert">{format!("the versions could not be compared: {e}")}</p> }.into_any(),
                Some(Ok(list)) if list.is_empty() => view! { <p class="cc-empty">"No differences."</p> }.into_any(),
                Some(Ok(list)) => view! { <ul>{list.into_iter().map(change_view).collect_view()}</ul> }.into_any(),
            }}
        </div>
    }
}

async fn version(name: &str, v: u32) -> Result<TemplateVersion, api::ApiError> {
    api::get::<TemplateVersion>(ApiRoute::TemplateVersion.path(&[name, &v.to_string()])).await
}

fn change_view(c: Change) -> impl IntoView {
    match c {
        Change::Added { what } => view! { <li class="cc-added">"+ added "{what}</li> }.into_any(),
        Change::Removed { what } => view! { <li class="cc-removed">"− removed "{what}</li> }.into_any(),
        Change::Changed { what, field, before, after } => view! {
            <li class="cc-changed">{format!("~ {what}: {field} ")}<span class="mono">{before.unwrap_or_else(|| "(unset)".into())}</span>" → "<span class="mono">{after.unwrap_or_else(|| "(unset)".into())}</span></li>
        }.into_any(),
    }
}
