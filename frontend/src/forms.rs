//! Form pieces shared by pages and dialogs.

use std::collections::BTreeMap;

use concurrent_core::template::Parameter;
use leptos::prelude::*;

/// A field per run parameter of a template, prefilled with its default.
#[component]
pub fn ParameterFields(
    parameters: Vec<Parameter>,
    values: RwSignal<BTreeMap<String, String>>,
) -> impl IntoView {
    parameters
        .into_iter()
        .map(|p| {
            let (key, key2) = (p.name.clone(), p.name.clone());
            let label = if p.description.is_empty() {
                p.name.clone()
            } else {
                format!("{} — {}", p.name, p.description)
            };
            view! {
                <label class="cc-field"><span>{label}</span>
                    <input type="text" name=format!("param-{}", p.name) placeholder=p.default.clone().map(|d| format!("default: {d}")).unwrap_or_else(|| "required".into())
                        prop:value=move || values.with(|v| v.get(&key).cloned().unwrap_or_default())
                        on:input=move |e| { let v = event_target_value(&e); values.update(|m| { m.insert(key2.clone(), v); }); } /></label>
            }
        })
        .collect_view()
}

/// The defaults of `parameters`, as the values a form starts from.
pub fn defaults(parameters: &[Parameter]) -> BTreeMap<String, String> {
    parameters
        .iter()
        .map(|p| (p.name.clone(), p.default.clone().unwrap_or_default()))
        .collect()
}

/// Asks the browser's confirmation dialog.
pub fn confirm(question: &str) -> bool {
    window().confirm_with_message(question).unwrap_or(false)
}
