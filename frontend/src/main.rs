//! Concurrent's browser app: the designer and the runs views. It runs as the "DAGs" tab of the
//! MLflow UI (mounted by `loader.js`) or on its own page (`/concurrent/`).

mod api;
mod app;
mod approval;
mod designer;
mod forms;
mod graph;
mod log_view;
mod route;
mod run_view;
mod schedules;
mod shell;
#[cfg(all(test, target_arch = "wasm32"))]
mod tests;
mod tokens;
mod triggers;

use wasm_bindgen::prelude::*;

fn main() {
    console_error_panic_hook::set_once();
}

/// Mounts the app into the element with this id (called by `loader.js` and `index.html`).
#[wasm_bindgen]
pub fn mount_in(id: &str) -> Result<(), JsValue> {
    let element = leptos::prelude::document()
        .get_element_by_id(id)
        .ok_or_else(|| JsValue::from_str(&format!("no element #{id} to mount Concurrent in")))?;
    let element: leptos::web_sys::HtmlElement = element.dyn_into()?;
    leptos::mount::mount_to(element, app::App).forget();
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(ms: u64) -> String {
    concurrent_core::time::rfc3339(ms)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// `4.2 s`, `3 min 5 s`, `2 h 1 min`.
pub fn format_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// `812 B`, `3.4 KB`, `12.0 MB`.
pub fn format_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KB", n as f64 / 1024.0),
        _ => format!("{:.1} MB", n as f64 / 1_048_576.0),
    }
}

/// A performance mark named `name` (read by `make bench`'s designer figures, and in the
/// browser's performance panel).
pub fn mark(name: &str) {
    if let Some(p) = leptos::prelude::window().performance() {
        let _ = p.mark(name);
    }
}
