//! Concurrent's browser app: for now the templates and runs lists. It runs as the "DAGs" tab of
//! the MLflow UI (mounted by `loader.js`) or on its own page (`/concurrent/`).

mod api;
mod app;

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
