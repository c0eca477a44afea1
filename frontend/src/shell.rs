//! What every page shares: who is signed in (`Caller`, `role_is`), the tabs between the pages
//! (`Nav`), and a `ticker` for lists that refresh while shown.

use concurrent_core::access::{Role, Route as ApiRoute};
use concurrent_core::wire::Me;
use leptos::prelude::*;

use crate::api;
use crate::route::Route;

/// Who is signed in, read once: pages show only what the role may do (the API enforces it).
#[derive(Clone, Copy)]
pub struct Caller(LocalResource<Result<Me, api::ApiError>>);

impl Caller {
    /// Asks the edge who is signed in (provided as context by the app).
    pub fn read() -> Caller {
        Caller(LocalResource::new(|| {
            api::get::<Me>(ApiRoute::Me.path(&[]))
        }))
    }
}

/// Whether the signed-in caller has at least `role` (false until known).
pub fn role_is(role: Role) -> Signal<bool> {
    let caller = expect_context::<Caller>();
    Signal::derive(move || {
        caller
            .0
            .get()
            .and_then(Result::ok)
            .is_some_and(|me| me.role.includes(role))
    })
}

/// The app's pages, for the tabs on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Home,
    Schedules,
    Triggers,
    Tokens,
}

/// The tabs between the app's pages (tokens for admins only).
#[component]
pub fn Nav(page: Page) -> impl IntoView {
    let admin = role_is(Role::Admin);
    let tab = move |p: Page, href: String, label: &'static str| {
        view! { <a href=href class="cc-tab" class:cc-tab-current=page == p aria-current=(page == p).then_some("page") data-tab=label>{label}</a> }
    };
    let caller = expect_context::<Caller>();
    view! {
        <nav class="cc-tabs" aria-label="Concurrent">
            {tab(Page::Home, Route::Home.href(), "DAGs")}
            {tab(Page::Schedules, Route::Schedules.href(), "Schedules")}
            {tab(Page::Triggers, Route::Triggers.href(), "Triggers")}
            {move || admin.get().then(|| tab(Page::Tokens, Route::Tokens.href(), "Tokens"))}
            <span class="cc-spacer"></span>
            <span class="cc-hint" data-me="">{move || caller.0.get().and_then(Result::ok).map(|me| format!("signed in as {} ({})", me.name, me.role.as_str()))}</span>
        </nav>
    }
}

/// A signal that ticks every `ms` while the calling component lives.
pub fn ticker(ms: u32) -> RwSignal<u32> {
    let tick = RwSignal::new(0u32);
    let alive = StoredValue::new(true);
    on_cleanup(move || alive.set_value(false));
    leptos::task::spawn_local(async move {
        loop {
            gloo_timers::future::TimeoutFuture::new(ms).await;
            if !alive.try_get_value().unwrap_or(false) {
                return;
            }
            tick.update(|t| *t += 1);
        }
    });
    tick
}
