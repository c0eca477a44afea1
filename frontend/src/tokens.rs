//! API tokens (admins): the list, creating one (its secret shown once, with a copy button),
//! revoking.

use concurrent_core::access::Role;
use concurrent_core::access::Route as ApiRoute;
use concurrent_core::wire::{NewToken, TokenInfo};
use leptos::prelude::*;

use crate::forms::confirm;
use crate::shell::{role_is, ticker, Nav, Page};
use crate::{api, format_time};

#[component]
pub fn Tokens() -> impl IntoView {
    let tick = ticker(10_000);
    let admin = role_is(Role::Admin);
    let list = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<TokenInfo>>(ApiRoute::TokensList.path(&[]))
    });
    let created = RwSignal::new(None::<TokenInfo>);
    let error = RwSignal::new(None::<String>);
    let revoke = move |name: String| {
        if !confirm(&format!(
            "Revoke token {name}? Whoever uses it (people, agents, CI) is refused from now on."
        )) {
            return;
        }
        leptos::task::spawn_local(async move {
            match api::delete(&ApiRoute::TokenDelete.path(&[&name])).await {
                Ok(()) => error.set(None),
                Err(e) => error.set(Some(format!("token {name} was not revoked: {e}"))),
            }
            tick.update(|t| *t += 1);
        });
    };
    view! {
        <Nav page=Page::Tokens />
        <header class="cc-header">
            <h2>"API tokens"</h2>
            <span class="cc-sub">"For people (reader, editor, admin) and for agents (one cluster each). A token's secret is shown once, when it is created."</span>
        </header>
        {move || (!admin.get()).then(|| view! { <p class="cc-error" role="alert">"Only admins see and manage tokens. Ask an admin for a token with the role you need."</p> })}
        {move || admin.get().then(|| view! { <NewTokenForm created done=move || tick.update(|t| *t += 1) /> })}
        {move || created.get().map(|t| view! { <Secret token=t dismiss=move || created.set(None) /> })}
        {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
        {move || admin.get().then(|| view! {
            <Transition fallback=|| view! { <p class="cc-loading">"Loading tokens…"</p> }>
                {move || list.get().map(|r| match r {
                    Err(e) => view! { <p class="cc-error" role="alert">{format!("The tokens could not be listed: {e}")}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="cc-empty">"No tokens yet besides the deployment's bootstrap token."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="cc-table" data-tokens="">
                            <thead><tr><th>"Name"</th><th>"Role"</th><th>"Cluster"</th><th>"Created"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| {
                                    let name = t.name.clone();
                                    view! {
                                        <tr data-token=t.name.clone()>
                                            <td>{t.name.clone()}</td>
                                            <td>{t.role.as_str()}</td>
                                            <td>{t.cluster.clone().unwrap_or_else(|| "–".into())}</td>
                                            <td>{format_time(t.created_at)}</td>
                                            <td><button class="cc-danger" data-action="revoke" on:click=move |_| revoke(name.clone())>"Revoke"</button></td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        })}
    }
}

#[component]
fn NewTokenForm(
    created: RwSignal<Option<TokenInfo>>,
    done: impl Fn() + Copy + 'static,
) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let role = RwSignal::new(Role::Editor);
    let cluster = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let create = move |_| {
        let body = NewToken {
            name: name.get_untracked().trim().to_string(),
            role: role.get_untracked(),
            cluster: (role.get_untracked() == Role::Agent)
                .then(|| cluster.get_untracked().trim().to_string()),
        };
        leptos::task::spawn_local(async move {
            match api::send::<TokenInfo>(
                gloo_net::http::Request::post(&ApiRoute::TokenCreate.path(&[])),
                &body,
            )
            .await
            {
                Ok(t) => {
                    error.set(None);
                    name.set(String::new());
                    created.set(Some(t));
                    done();
                }
                Err(e) => error.set(Some(format!("the token was not created: {e}"))),
            }
        });
    };
    view! {
        <section class="cc-card" data-new-token="">
            <h3>"New token"</h3>
            <div class="cc-form-grid">
                <label class="cc-field"><span>"Name (who or what uses it)"</span>
                    <input type="text" name="name" placeholder="ci-nightly" prop:value=move || name.get() on:input=move |e| name.set(event_target_value(&e)) /></label>
                <label class="cc-field"><span>"Role"</span>
                    <select name="role" on:change=move |e| role.set(Role::parse(&event_target_value(&e)).unwrap_or(Role::Reader))>
                        {[(Role::Reader, "reader (views)"), (Role::Editor, "editor (saves, runs)"), (Role::Admin, "admin (tokens, schedules)"), (Role::Agent, "agent (one cluster)")]
                            .map(|(r, label)| view! { <option value=r.as_str() selected=r == Role::Editor>{label}</option> }).collect_view()}
                    </select></label>
                {move || (role.get() == Role::Agent).then(|| view! {
                    <label class="cc-field"><span>"Cluster (the one it serves)"</span>
                        <input type="text" name="cluster" placeholder="local" prop:value=move || cluster.get() on:input=move |e| cluster.set(event_target_value(&e)) /></label>
                })}
            </div>
            {move || error.get().map(|e| view! { <p class="cc-error" role="alert">{e}</p> })}
            <div class="cc-actions"><button class="cc-primary" data-action="create-token" on:click=create>"Create token"</button></div>
        </section>
    }
}

/// A new token's secret, once: shown in full with a copy button.
#[component]
fn Secret(token: TokenInfo, dismiss: impl Fn() + Copy + 'static) -> impl IntoView {
    let secret = token.token.clone().unwrap_or_default();
    let copied = RwSignal::new(None::<bool>);
    let input = NodeRef::<leptos::html::Input>::new();
    let copy = {
        let secret = secret.clone();
        move |_| {
            let secret = secret.clone();
            leptos::task::spawn_local(async move {
                let promise = window().navigator().clipboard().write_text(&secret);
                let ok = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
                if !ok {
                    // Without clipboard access the text is selected for Ctrl+C.
                    if let Some(i) = input.get_untracked() {
                        i.select();
                    }
                }
                copied.set(Some(ok));
            });
        }
    };
    view! {
        <div class="cc-notice cc-secret" role="status" data-secret-for=token.name.clone()>
            <div>
                <p>{format!("Token {} ({}) created. Copy its secret now: it is not shown again.", token.name, token.role.as_str())}</p>
                <div class="cc-row">
                    <input type="text" class="mono" readonly node_ref=input prop:value=secret data-secret="" on:focus=move |e| { event_target::<web_sys::HtmlInputElement>(&e).select(); } />
                    <button data-action="copy" on:click=copy>"Copy"</button>
                </div>
                {move || copied.get().map(|ok| if ok { view! { <p class="cc-ok">"Copied to the clipboard."</p> }.into_any() } else { view! { <p class="cc-hint">"The browser refused the clipboard: the secret is selected, press Ctrl+C."</p> }.into_any() })}
            </div>
            <button class="cc-link" title="Dismiss" on:click=move |_| dismiss()>"×"</button>
        </div>
    }
}
