//! Pieces of the designer's forms that the inspector and the project-aware fields share: a text
//! field, and the editor of a project node's `-P` parameters.

use std::collections::BTreeMap;

use concurrent_core::template::{Node, NodeKind};
use leptos::prelude::*;

use super::Session;

/// A labelled text field showing `value` and committing edits with `commit`.
pub(super) fn field(
    label: &'static str,
    name: &'static str,
    hint: &'static str,
    value: impl Fn() -> String + Send + Sync + 'static,
    commit: impl Fn(String) + 'static,
) -> AnyView {
    // Boxed, so the field's view code exists once in the bundle, not once per field.
    let value: Box<dyn Fn() -> String + Send + Sync> = Box::new(value);
    let commit: Box<dyn Fn(String)> = Box::new(commit);
    view! {
        <label class="cc-field">
            <span>{label}</span>
            <input type="text" name=name placeholder=hint prop:value=value on:change=move |e| commit(event_target_value(&e)) />
        </label>
    }
    .into_any()
}

/// A project node's project spec.
pub(super) fn project(n: &Node) -> Option<&concurrent_core::template::ProjectSpec> {
    match &n.kind {
        NodeKind::Project(p) => Some(p),
        _ => None,
    }
}

/// An edit of a project node's `-P` parameters.
pub(super) type ParamEdit = Box<dyn FnOnce(&mut BTreeMap<String, String>)>;

/// `-P key=value` rows of a project node.
#[component]
pub(super) fn ParametersEditor(session: Session, id: String) -> impl IntoView {
    let params = {
        let id = id.clone();
        move || {
            session.editor.with(|e| {
                e.template()
                    .node(&id)
                    .and_then(|n| project(n).map(|p| p.parameters.clone()))
                    .unwrap_or_default()
            })
        }
    };
    let change = move |id: String, f: ParamEdit| {
        session.edit(|e| {
            e.update_node(&id, |n| {
                if let NodeKind::Project(p) = &mut n.kind {
                    f(&mut p.parameters)
                }
            })
        });
    };
    let add = {
        let id = id.clone();
        move |_| {
            let next = (1..)
                .map(|i| format!("param{i}"))
                .find(|k| !params_has(session, &id, k))
                .unwrap_or_default();
            change(
                id.clone(),
                Box::new(move |m| {
                    m.insert(next, String::new());
                }),
            );
        }
    };
    view! {
        <fieldset class="cc-params" data-params="">
            <legend>"Parameters (-P key=value; {{params.x}} uses a template parameter)"</legend>
            {move || params().into_iter().map(|(k, v)| {
                let (id1, id2, id3) = (id.clone(), id.clone(), id.clone());
                let (k1, k2, k3) = (k.clone(), k.clone(), k.clone());
                view! {
                    <div class="cc-row cc-param">
                        <input type="text" name="paramKey" prop:value=k.clone() on:change=move |e| {
                            let new = event_target_value(&e).trim().to_string();
                            let old = k1.clone();
                            if new != old { change(id1.clone(), Box::new(move |m| { if let Some(v) = m.remove(&old) { m.insert(new, v); } })); }
                        } />
                        <input type="text" name="paramValue" prop:value=v on:change=move |e| {
                            let v = event_target_value(&e);
                            let k = k2.clone();
                            change(id2.clone(), Box::new(move |m| { m.insert(k, v); }));
                        } />
                        <button class="cc-link" title="Remove" on:click=move |_| { let k = k3.clone(); change(id3.clone(), Box::new(move |m| { m.remove(&k); })); }>"×"</button>
                    </div>
                }
            }).collect_view()}
            <button class="cc-link" data-action="add-param" on:click=add>"+ parameter"</button>
        </fieldset>
    }
}

fn params_has(session: Session, id: &str, key: &str) -> bool {
    session.editor.with_untracked(|e| {
        e.template()
            .node(id)
            .and_then(project)
            .is_some_and(|p| p.parameters.contains_key(key))
    })
}
