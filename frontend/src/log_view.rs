//! An attempt's whole log: the end of its `logs/step.log` in MLflow (read through the edge, which
//! fronts MLflow with the caller's role), refreshed and followed while the step runs, searched,
//! and downloadable whole. The agent sends MLflow the log every few seconds while a step runs.

use concurrent_core::logview::{self, LogWindow};
use gloo_net::http::Request;
use leptos::html::Pre;
use leptos::prelude::*;

use crate::shell::ticker;
use crate::{api, format_bytes};

/// How often a running step's log is read again while followed.
const REFRESH_MS: u32 = 3_000;

/// Whose log is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub node: String,
    pub index: usize,
    pub attempt: u32,
    pub mlflow_run_id: String,
}

impl LogTarget {
    fn url(&self) -> String {
        format!(
            "/get-artifact?run_uuid={}&path=logs%2Fstep.log",
            api::segment(&self.mlflow_run_id)
        )
    }
}

/// The end of the log, or `None` while MLflow has none yet.
async fn read(url: &str) -> Result<Option<LogWindow>, String> {
    let unreachable = |e: gloo_net::Error| {
        format!("MLflow is unreachable through the edge ({e}); retry in a moment")
    };
    let resp = Request::get(url)
        .header("Range", &logview::range_header())
        .send()
        .await
        .map_err(unreachable)?;
    // A log shorter than the window: the suffix range is refused, so read all of it.
    let resp = if resp.status() == 416 {
        Request::get(url).send().await.map_err(unreachable)?
    } else {
        resp
    };
    match resp.status() {
        200 | 206 => {
            let start_total = resp
                .headers()
                .get("content-range")
                .and_then(|h| logview::content_range(&h));
            let bytes = resp
                .binary()
                .await
                .map_err(|e| format!("the log could not be read: {e}"))?;
            let (start, total) = start_total.unwrap_or((0, bytes.len() as u64));
            Ok(Some(logview::window(&bytes, start, total)))
        }
        401 => Err("your session expired; reload the page to sign in again".into()),
        403 => Err(
            "your token may not read MLflow's artifacts; ask an admin for a reader token".into(),
        ),
        // MLflow answers a missing artifact with 404 or, on some stores, 500.
        _ => Ok(None),
    }
}

/// The log panel; `running` says whether the attempt may still write.
#[component]
pub fn LogPanel(target: LogTarget, running: Signal<bool>, on_close: Callback<()>) -> impl IntoView {
    let url = target.url();
    let tick = ticker(REFRESH_MS);
    let follow = RwSignal::new(true);
    let query = RwSignal::new(String::new());
    let log = LocalResource::new({
        let url = url.clone();
        move || {
            // Reads again on each tick only while the step runs and the end is followed.
            if running.get() && follow.get() {
                tick.get();
            }
            let url = url.clone();
            async move { read(&url).await }
        }
    });
    // The last answer stays on screen while the next one loads.
    let shown = RwSignal::new(None::<Result<Option<LogWindow>, String>>);
    Effect::new(move |_| {
        if let Some(r) = log.get() {
            shown.set(Some(r));
        }
    });
    let text_ref = NodeRef::<Pre>::new();
    Effect::new(move |_| {
        shown.track();
        if follow.get() {
            if let Some(pre) = text_ref.get() {
                // After this render, so the new lines count.
                request_animation_frame(move || pre.set_scroll_top(pre.scroll_height()));
            }
        }
    });
    let title = format!(
        "{} #{} · attempt {}",
        target.node, target.index, target.attempt
    );
    let download = format!(
        "{}-{}-attempt{}-step.log",
        target.node, target.index, target.attempt
    );
    let label = format!("Log of {title}");
    view! {
        <section class="cc-log" data-log-view="" role="dialog" aria-label=label
            on:keydown=move |e| if e.key() == "Escape" { on_close.run(()) }>
            <header class="cc-log-head">
                <h3>"Log — "{title}</h3>
                <input type="search" placeholder="Search the log" aria-label="Search the log" data-log-search=""
                    prop:value=move || query.get() on:input=move |e| query.set(event_target_value(&e)) />
                <label title="Keep the newest lines in view"><input type="checkbox" data-log-follow=""
                    prop:checked=move || follow.get() on:change=move |e| follow.set(event_target_checked(&e)) />" Follow"</label>
                <a class="cc-button" href=url.clone() download=download data-log-download="">"Download"</a>
                <button data-log-close="" on:click=move |_| on_close.run(())>"Close"</button>
            </header>
            {move || match shown.get() {
                None => view! { <p class="cc-loading">"Reading the log from MLflow…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="cc-error" role="alert">{e}</p> }.into_any(),
                Some(Ok(None)) => view! {
                    <p class="cc-sub" data-log-missing="">{if running.get() {
                        "MLflow has no log for this attempt yet: the agent sends it every few seconds while the step runs. The live tail is in the table."
                    } else {
                        "This attempt left no log in MLflow (it may not have started, or its store is written only at the end)."
                    }}</p>
                }.into_any(),
                Some(Ok(Some(w))) => {
                    let q = query.get();
                    let hits = logview::matching(&w.lines, &q);
                    let size = if w.skipped_bytes > 0 {
                        format!("{} lines · the last {} of {}; download for the whole log", w.lines.len(), format_bytes(w.total_bytes - w.skipped_bytes), format_bytes(w.total_bytes))
                    } else {
                        format!("{} lines · {}", w.lines.len(), format_bytes(w.total_bytes))
                    };
                    let body = if q.is_empty() {
                        view! { <pre class="cc-log-text" data-log-text="" node_ref=text_ref
                            on:scroll=move |e| {
                                let el = event_target::<leptos::web_sys::HtmlElement>(&e);
                                follow.set(el.scroll_top() + el.client_height() + 4 >= el.scroll_height());
                            }>{w.lines.join("\n")}</pre> }.into_any()
                    } else {
                        let rows = hits.iter().map(|&i| view! { <div data-log-match=i.to_string()><span class="cc-ln">{i + 1}</span>{w.lines[i].clone()}</div> }).collect_view();
                        view! { <div class="cc-log-text cc-log-matches" data-log-matches="">{rows}</div> }.into_any()
                    };
                    view! {
                        <p class="cc-sub" data-log-size="">{size}{(!q.is_empty()).then(|| format!(" · {} matching line{}{}", hits.len(), if hits.len() == 1 { "" } else { "s" }, if hits.len() == logview::MAX_MATCHES { " (the first ones)" } else { "" }))}</p>
                        {body}
                    }.into_any()
                }
            }}
        </section>
    }
}
