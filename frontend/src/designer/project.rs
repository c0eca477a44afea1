//! The project-aware part of a project node's inspector: once the URI (with version and
//! sub-directory) is set, a live agent of the chosen cluster reads the project's MLproject
//! through the edge, and the entry point becomes a choice and its parameters typed fields,
//! marked the way MLflow would refuse them at the start of the step. Without an answer (no URI,
//! no agent, an unreadable project) the free-text fields stay.

use std::collections::BTreeMap;

use concurrent_core::access::Route as ApiRoute;
use concurrent_core::project::{check_with_sweep, EntryPointInfo, ProjectInfo};
use concurrent_core::sweep::Sweep;
use concurrent_core::template::NodeKind;
use concurrent_core::wire::InspectRequest;
use leptos::prelude::*;

use super::fields::{field, ParamEdit, ParametersEditor};
use super::Session;
use crate::api;

/// Where the project lives, as the node says.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    uri: String,
    version: Option<String>,
    sub_path: Option<String>,
}

/// Sets the node's entry point (one undo step).
fn set_entry_point(session: Session, id: StoredValue<String>, v: String) {
    session.edit(|e| {
        e.update_node(&id.get_value(), |n| {
            if let NodeKind::Project(p) = &mut n.kind {
                p.entry_point = v;
            }
        })
    })
}

#[component]
pub fn ProjectAware(session: Session, id: StoredValue<String>) -> impl IntoView {
    let spec = Memo::new(move |_| {
        session.editor.with(
            |e| match e.template().node(&id.read_value()).map(|n| &n.kind) {
                Some(NodeKind::Project(p)) => Some(p.clone()),
                _ => None,
            },
        )
    });
    let default_cluster = session.editor.with_untracked(|e| {
        e.template()
            .node(&id.read_value())
            .and_then(|n| n.cluster.clone())
            .unwrap_or_else(|| "local".into())
    });
    let cluster = RwSignal::new(default_cluster);
    let source = Memo::new(move |_| {
        spec.get()
            .filter(|p| !p.uri.trim().is_empty())
            .map(|p| Source {
                uri: p.uri,
                version: p.version,
                sub_path: p.sub_path,
            })
    });
    let again = RwSignal::new(0u32);
    let info = LocalResource::new(move || {
        again.track();
        let (source, cluster) = (source.get(), cluster.get());
        async move {
            let s = source?;
            let path = ApiRoute::ProjectInspect.path(&[cluster.trim()]);
            let body = InspectRequest {
                uri: s.uri,
                version: s.version,
                sub_path: s.sub_path,
            };
            Some(api::send::<ProjectInfo>(gloo_net::http::Request::post(&path), &body).await)
        }
    });
    let set_entry = move |v: String| set_entry_point(session, id, v);
    let fallback = move || {
        view! {
            {field("Entry point", "entryPoint", "main", move || spec.get().map(|p| p.entry_point).unwrap_or_default(), move |v| set_entry(v.trim().to_string()))}
            <ParametersEditor session id=id.get_value() />
        }
    };
    view! {
        <div class="cc-project" data-project="">
            <div class="cc-row cc-project-from">
                <label class="cc-field"><span>"Read by an agent of cluster"</span>
                    <input type="text" name="inspectCluster" prop:value=move || cluster.get()
                        on:change=move |e| cluster.set(event_target_value(&e).trim().to_string()) /></label>
                <button data-action="inspect" title="Read the project's MLproject again (e.g. after a push)"
                    disabled=move || source.get().is_none() on:click=move |_| again.update(|n| *n += 1)>"Read again"</button>
            </div>
            {move || match info.get() {
                Some(Some(Ok(p))) => view! { <Described session id info=p spec_entry=Signal::derive(move || spec.get().map(|s| s.entry_point).unwrap_or_default()) /> }.into_any(),
                other => view! {
                    {match other {
                        None if source.get().is_some() => Some(view! { <p class="cc-hint" data-inspecting="">"Reading the project…"</p> }.into_any()),
                        Some(None) | None => Some(view! { <p class="cc-hint">"Set the project's URI to pick its entry point and parameters from its MLproject."</p> }.into_any()),
                        Some(Some(Err(e))) => Some(view! { <p class="cc-error" role="alert" data-inspect-error="">{format!("The project could not be read: {e}")}</p> }.into_any()),
                        Some(Some(Ok(_))) => None,
                    }}
                    {fallback()}
                }.into_any(),
            }}
        </div>
    }
}

/// The entry point as a choice and its parameters as typed, checked fields.
#[component]
fn Described(
    session: Session,
    id: StoredValue<String>,
    info: ProjectInfo,
    spec_entry: Signal<String>,
) -> impl IntoView {
    let info = StoredValue::new(info);
    let params = Memo::new(move |_| {
        session.editor.with(
            |e| match e.template().node(&id.read_value()).map(|n| &n.kind) {
                Some(NodeKind::Project(p)) => p.parameters.clone(),
                _ => BTreeMap::new(),
            },
        )
    });
    let sweep = Memo::new(move |_| {
        session.editor.with(
            |e| match e.template().node(&id.read_value()).map(|n| &n.kind) {
                Some(NodeKind::Project(p)) => p.sweep.clone(),
                _ => None,
            },
        )
    });
    let change = move |f: ParamEdit| {
        session.edit(|e| {
            e.update_node(&id.get_value(), |n| {
                if let NodeKind::Project(p) = &mut n.kind {
                    f(&mut p.parameters)
                }
            })
        })
    };
    let set_entry = move |v: String| set_entry_point(session, id, v);
    let about = info.with_value(|p| {
        [
            p.name.clone().map(|n| format!("project {n}")),
            p.commit
                .as_ref()
                .map(|c| format!("commit {}", &c[..c.len().min(10)])),
            p.environment.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
    });
    let entry = move || {
        let name = spec_entry.get();
        info.with_value(|p| p.entry_point(&name).cloned())
    };
    view! {
        <p class="cc-hint" data-project-about="">{about}</p>
        <label class="cc-field"><span>"Entry point"</span>
            <select name="entryPoint" data-entry-points="" prop:value=move || spec_entry.get()
                on:change=move |e| set_entry(event_target_value(&e))>
                {move || {
                    let current = spec_entry.get();
                    let known = info.with_value(|p| p.entry_points.iter().map(|e| e.name.clone()).collect::<Vec<_>>());
                    let missing = (!known.contains(&current)).then(|| view! { <option value=current.clone()>{format!("{current} (not in the MLproject)")}</option> });
                    view! {
                        {missing}
                        {known.into_iter().map(|n| view! { <option value=n.clone() selected=n == current>{n.clone()}</option> }).collect_view()}
                    }
                }}
            </select>
        </label>
        {move || match entry() {
            None => {
                let name = spec_entry.get();
                let script = name.ends_with(".py") || name.ends_with(".sh");
                view! {
                    <p class=if script { "cc-hint" } else { "cc-error" } data-entry-problem="">{if script {
                        format!("{name} is not an entry point of the MLproject; MLflow runs it as a script")
                    } else {
                        format!("entry point {name:?} is not in the MLproject; pick one of the list")
                    }}</p>
                    <ParametersEditor session id=id.get_value() />
                }.into_any()
            }
            Some(ep) => view! { <TypedParameters ep values=params sweep change=Callback::new(move |f| change(f)) /> }.into_any(),
        }}
    }
}

/// One field per declared parameter (its MLflow type, its default as the placeholder), then
/// the node's undeclared ones, each with what MLflow would say about it; what the node's sweep
/// sets is checked too.
#[component]
fn TypedParameters(
    ep: EntryPointInfo,
    values: Memo<BTreeMap<String, String>>,
    sweep: Memo<Option<Sweep>>,
    change: Callback<ParamEdit>,
) -> impl IntoView {
    let ep = StoredValue::new(ep);
    let problems = Memo::new(move |_| {
        let v = values.get();
        let s = sweep.get();
        ep.with_value(|ep| check_with_sweep(ep, &v, s.as_ref()))
            .into_iter()
            .map(|p| (p.name, p.message))
            .collect::<BTreeMap<_, _>>()
    });
    let declared = ep.with_value(|ep| ep.parameters.clone());
    let rows = declared.into_iter().map(|p| {
        let (name, kind) = (p.name.clone(), p.kind.clone());
        let (n1, n2, n3, n4) = (name.clone(), name.clone(), name.clone(), name.clone());
        let placeholder = p.default.clone().map(|d| format!("default {d}")).unwrap_or_else(|| "required".into());
        let mode = if kind == "float" { "decimal" } else { "text" };
        view! {
            <label class="cc-field cc-typed" data-param=name.clone() class:cc-invalid=move || problems.with(|m| m.contains_key(&n3))>
                <span>{name.clone()}<small class="cc-type">{format!(" {kind}")}</small></span>
                <input type="text" name=format!("param-{name}") inputmode=mode placeholder=placeholder
                    prop:value=move || values.with(|v| v.get(&n1).cloned().unwrap_or_default())
                    on:change=move |e| {
                        let v = event_target_value(&e);
                        let k = n2.clone();
                        change.run(Box::new(move |m| { if v.is_empty() { m.remove(&k); } else { m.insert(k, v); } }));
                    } />
                {move || problems.with(|m| m.get(&n4).cloned()).map(|why| view! { <small class="cc-error" data-param-problem="">{why}</small> })}
            </label>
        }
    }).collect_view();
    let undeclared = move || {
        let v = values.get();
        ep.with_value(|ep| {
            v.into_iter()
                .filter(|(k, _)| !ep.parameters.iter().any(|p| &p.name == k))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .map(|(k, v)| {
            let k2 = k.clone();
            let why = problems.with(|m| m.get(&k).cloned()).unwrap_or_default();
            view! {
                <div class="cc-field cc-typed cc-invalid" data-param=k.clone() data-undeclared="">
                    <span>{format!("{k} = {v}")}<button class="cc-link" title="Remove" on:click=move |_| { let k = k2.clone(); change.run(Box::new(move |m| { m.remove(&k); })); }>"×"</button></span>
                    <small class="cc-error" data-param-problem="">{why}</small>
                </div>
            }
        })
        .collect_view()
    };
    // Swept parameters the entry point does not declare have no field of their own.
    let swept_undeclared = move || {
        let v = values.get();
        problems.with(|m| {
            m.iter()
                .filter(|(k, _)| !v.contains_key(*k) && !ep.with_value(|ep| ep.parameters.iter().any(|p| &p.name == *k)))
                .map(|(_, why)| view! { <p class="cc-error" data-param-problem="" data-sweep-problem="">{why.clone()}</p> })
                .collect_view()
        })
    };
    let typed_hint = "MLflow types: float values must be numbers, uri values need a scheme; {{params.x}} uses a template parameter.";
    view! {
        <fieldset class="cc-params" data-typed-params="">
            <legend>"Parameters"</legend>
            {rows}
            {undeclared}
            {swept_undeclared}
            {move || ep.with_value(|ep| ep.parameters.is_empty()).then(|| view! { <p class="cc-hint">"This entry point declares no parameters."</p> })}
            <p class="cc-hint">{typed_hint}</p>
        </fieldset>
    }
}
