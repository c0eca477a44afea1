//! The inspector: every field of the selected node or edge, or of the template itself.
//! A field commits on `change` (blur or Enter), so one edit is one undo step, not one per key.

use concurrent_core::design::key_preview;
use concurrent_core::template::{
    Cache, Node, NodeKind, Parameter, PartitionMode, Select, SelectMode,
};
use concurrent_core::Problem;
use leptos::prelude::*;

use super::fields::{field, project};
use super::{describe, Selection, Session};

fn number(what: &str, v: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("{what} must be a whole number, not {v:?}"))
}

fn optional(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[component]
pub fn Inspector(session: Session, problems: Memo<Vec<Problem>>) -> impl IntoView {
    move || {
        let selection = session.selection.get();
        let exists = |id: &str| {
            session
                .editor
                .with_untracked(|e| e.template().node(id).is_some())
        };
        if let Some(i) = selection.edge.filter(|i| {
            session
                .editor
                .with_untracked(|e| *i < e.template().edges.len())
        }) {
            return view! { <EdgeInspector session index=i /> }.into_any();
        }
        let nodes: Vec<String> = selection
            .nodes
            .into_iter()
            .filter(|id| exists(id))
            .collect();
        match nodes.as_slice() {
            [] => view! { <TemplateInspector session /> }.into_any(),
            [id] => view! { <NodeInspector session id=id.clone() problems /> }.into_any(),
            many => {
                let ids = many.to_vec();
                view! {
                    <section class="cc-inspector">
                        <h3>{format!("{} nodes selected", ids.len())}</h3>
                        <p class="cc-hint">"Drag one of them to move them together; Ctrl+C copies them with the edges between them."</p>
                        <button class="cc-danger" on:click=move |_| { session.editor.update(|e| e.delete(&ids, &[])); session.selection.set(Selection::default()); }>"Delete them"</button>
                    </section>
                }.into_any()
            }
        }
    }
}

#[component]
fn NodeInspector(session: Session, id: String, problems: Memo<Vec<Problem>>) -> impl IntoView {
    // Copy handles, so every field's closures can share them.
    let id = StoredValue::new(id);
    let node = move || {
        session
            .editor
            .with(|e| e.template().node(&id.read_value()).cloned())
    };
    // Reads one value of the node for a field.
    let read = move |f: fn(&Node) -> String| move || node().map(|n| f(&n)).unwrap_or_default();
    // Commits one change to the node; a change to the same value records nothing.
    let write = move |f: fn(&mut Node, String) -> Result<(), String>| {
        move |v: String| {
            let id = id.get_value();
            let Some(mut n) = session
                .editor
                .with_untracked(|e| e.template().node(&id).cloned())
            else {
                return;
            };
            if let Err(why) = f(&mut n, v) {
                session.complain(why);
                return;
            }
            if session
                .editor
                .with_untracked(|e| e.template().node(&id) != Some(&n))
            {
                session.edit(|e| e.update_node(&id, |x| *x = n));
            }
        }
    };
    let kind = move || node().map(|n| n.kind.tag()).unwrap_or("project");
    let rename = move |v: String| {
        let v = v.trim().to_string();
        let mut ok = false;
        session.edit(|e| e.rename_node(&id.get_value(), &v).map(|()| ok = true));
        if ok {
            session.selection.set(Selection::node(&v));
        }
    };
    let own_problems = move || {
        let index = session.editor.with(|e| {
            e.template()
                .nodes
                .iter()
                .position(|n| n.id == *id.read_value())
        });
        problems
            .get()
            .into_iter()
            .filter(|p| index.is_some_and(|i| p.target() == concurrent_core::Target::Node(i)))
            .collect::<Vec<_>>()
    };
    let others = move || {
        session.editor.with(|e| {
            e.template()
                .nodes
                .iter()
                .map(|n| n.id.clone())
                .filter(|n| *n != *id.read_value())
                .collect::<Vec<_>>()
        })
    };
    let connect_from = move |e: leptos::ev::Event| {
        let from = event_target_value(&e);
        if from.is_empty() {
            return;
        }
        let to = id.get_value();
        let input = session.editor.with_untracked(|ed| {
            if ed
                .template()
                .edges
                .iter()
                .any(|x| x.to == to && x.input == "data")
            {
                from.clone()
            } else {
                "data".to_string()
            }
        });
        session.edit(|ed| ed.connect(&from, &to, &input));
    };
    let delete = move |_| {
        session.editor.update(|e| e.delete(&[id.get_value()], &[]));
        session.selection.set(Selection::default());
    };
    let project_fields = move || {
        (kind() == "project").then(|| {
            view! {
                {field("Project URI", "uri", "https://github.com/org/repo.git or a path", read(|n| project(n).map(|p| p.uri.clone()).unwrap_or_default()), write(|n, v| with_project(n, |p| p.uri = v.trim().to_string())))}
                {field("Git version", "version", "branch, tag or commit", read(|n| project(n).and_then(|p| p.version.clone()).unwrap_or_default()), write(|n, v| with_project(n, |p| p.version = optional(v))))}
                {field("Sub-directory", "subPath", "where MLproject is, if not at the root", read(|n| project(n).and_then(|p| p.sub_path.clone()).unwrap_or_default()), write(|n, v| with_project(n, |p| p.sub_path = optional(v))))}
                <super::project::ProjectAware session id />
                <super::sweep::SweepEditor session id=id.get_value() />
                <label class="cc-check"><input type="checkbox" name="cache" prop:checked=move || node().and_then(|n| n.cache).is_some_and(|c| c.enabled)
                    on:change=move |e| { let on = event_target_checked(&e); write(if on { |n, _| { n.cache = Some(Cache { enabled: true, ..n.cache.unwrap_or_default() }); Ok(()) } } else { |n, _| { n.cache = None; Ok(()) } })(String::new()) } />
                    <span>"Cache results: reuse an earlier attempt's outputs when code, parameters, environment and inputs are the same"</span></label>
                {move || node().and_then(|n| n.cache).is_some_and(|c| c.enabled).then(|| field("Reuse results at most this old (s)", "cacheMaxAge", "no limit", read(|n| n.cache.and_then(|c| c.max_age_seconds).map(|s| s.to_string()).unwrap_or_default()), write(|n, v| { let age = if v.trim().is_empty() { None } else { Some(number("the age", &v)?) }; if let Some(c) = n.cache.as_mut() { c.max_age_seconds = age; } Ok(()) })))}
            }
        })
    };
    let other_fields = move || {
        match kind() {
        "inference" => Some(field("Model URI", "modelUri", "models:/name/1 or runs:/<id>/model", read(|n| match &n.kind { NodeKind::Inference(i) => i.model_uri.clone(), _ => String::new() }), write(|n, v| match &mut n.kind { NodeKind::Inference(i) => { i.model_uri = v.trim().into(); Ok(()) } _ => Ok(()) })).into_any()),
        "input" => Some(view! {
            {field("MLflow run id", "runId", "use this run's artifacts", read(|n| input(n).and_then(|i| i.run_id.clone()).unwrap_or_default()), write(|n, v| with_input(n, |i| i.run_id = optional(v))))}
            {field("Artifact path", "artifactPath", "below the run's artifact root", read(|n| input(n).and_then(|i| i.artifact_path.clone()).unwrap_or_default()), write(|n, v| with_input(n, |i| i.artifact_path = optional(v))))}
            {field("Path", "path", "or a file or directory the agent can read", read(|n| input(n).and_then(|i| i.path.clone()).unwrap_or_default()), write(|n, v| with_input(n, |i| i.path = optional(v))))}
        }.into_any()),
        "approval" => Some(view! { <super::gates::ApprovalFields session id /> }.into_any()),
        "register" => Some(view! { <super::gates::RegisterFields session id /> }.into_any()),
        _ => None,
    }
    };
    view! {
        <section class="cc-inspector" data-inspector="node">
            <h3>{move || format!("{} node", kind())}</h3>
            <label class="cc-field"><span>"Id"</span>
                <input type="text" name="id" prop:value=read(|n| n.id.clone()) on:change=move |e| rename(event_target_value(&e)) /></label>
            {field("Name", "name", "shown on the canvas", read(|n| n.name.clone()), write(|n, v| { n.name = v.trim().to_string(); Ok(()) }))}
            {project_fields}
            {other_fields}
            <super::gates::GateFields session id />
            {move || matches!(kind(), "project" | "inference").then(|| view! {
                {field("Instances", "instances", "parallel copies", read(|n| n.instances.to_string()), write(|n, v| { n.instances = number("instances", &v)? as u32; Ok(()) }))}
                {field("Cluster", "cluster", "the run's cluster", read(|n| n.cluster.clone().unwrap_or_default()), write(|n, v| { n.cluster = optional(v); Ok(()) }))}
                {field("Image", "image", "the cluster's default image", read(|n| n.image.clone().unwrap_or_default()), write(|n, v| { n.image = optional(v); Ok(()) }))}
                <div class="cc-row">
                    {field("CPU", "cpu", "e.g. 500m", read(|n| n.resources.cpu.clone().unwrap_or_default()), write(|n, v| { n.resources.cpu = optional(v); Ok(()) }))}
                    {field("Memory", "memory", "e.g. 2Gi", read(|n| n.resources.memory.clone().unwrap_or_default()), write(|n, v| { n.resources.memory = optional(v); Ok(()) }))}
                    {field("GPUs", "gpu", "0", read(|n| n.resources.gpu.to_string()), write(|n, v| { n.resources.gpu = number("GPUs", &v)? as u32; Ok(()) }))}
                    {field("GPU type", "gpuType", "any", read(|n| n.resources.gpu_type.clone().unwrap_or_default()), write(|n, v| { n.resources.gpu_type = optional(v); Ok(()) }))}
                </div>
                <div class="cc-row">
                    {field("Retries", "retries", "0", read(|n| n.retries.limit.to_string()), write(|n, v| { n.retries.limit = number("retries", &v)? as u32; Ok(()) }))}
                    {field("Backoff (s)", "backoffSeconds", "10", read(|n| n.retries.backoff_seconds.to_string()), write(|n, v| { n.retries.backoff_seconds = number("backoff", &v)? as u32; Ok(()) }))}
                    {field("Timeout (s)", "timeoutSeconds", "none", read(|n| n.timeout_seconds.map(|t| t.to_string()).unwrap_or_default()), write(|n, v| { n.timeout_seconds = if v.trim().is_empty() { None } else { Some(number("timeout", &v)?) }; Ok(()) }))}
                </div>
                <label class="cc-field"><span>"Kubernetes (JSON)"</span>
                    <textarea name="kubernetes" rows="3" class="mono" placeholder=r#"{"nodeSelector": {…}, "tolerations": […], "volumes": […]}"#
                        prop:value=read(|n| if n.kubernetes.is_empty() { String::new() } else { serde_json::to_string_pretty(&n.kubernetes).unwrap_or_default() })
                        on:change=move |e| write(|n, v| { n.kubernetes = concurrent_core::validate::kubernetes::from_json(&v).map_err(|why| format!("Kubernetes settings: {why}"))?; Ok(()) })(event_target_value(&e))></textarea></label>
                <label class="cc-field"><span>"Add an input from"</span>
                    <select name="connectFrom" on:change=connect_from prop:value="">
                        <option value="">"choose a node…"</option>
                        {others().into_iter().map(|o| view! { <option value=o.clone()>{o.clone()}</option> }).collect_view()}
                    </select>
                </label>
            })}
            <ul class="cc-node-problems">
                {move || own_problems().into_iter().map(|p| view! { <li class="cc-error">{describe(session, &p)}</li> }).collect_view()}
            </ul>
            <button class="cc-danger" on:click=delete>"Delete node"</button>
        </section>
    }
}

fn with_project(
    n: &mut Node,
    f: impl FnOnce(&mut concurrent_core::template::ProjectSpec),
) -> Result<(), String> {
    if let NodeKind::Project(p) = &mut n.kind {
        f(p);
    }
    Ok(())
}

fn input(n: &Node) -> Option<&concurrent_core::template::InputSpec> {
    match &n.kind {
        NodeKind::Input(i) => Some(i),
        _ => None,
    }
}

fn with_input(
    n: &mut Node,
    f: impl FnOnce(&mut concurrent_core::template::InputSpec),
) -> Result<(), String> {
    if let NodeKind::Input(i) = &mut n.kind {
        f(i);
    }
    Ok(())
}

#[component]
fn EdgeInspector(session: Session, index: usize) -> impl IntoView {
    let edge = move || {
        session
            .editor
            .with(|e| e.template().edges.get(index).cloned())
    };
    let samples = RwSignal::new("a/part-0.csv\na/part-1.csv\nb/part-2.csv".to_string());
    let regex = RwSignal::new(
        edge()
            .and_then(|e| e.partition.key_regex)
            .unwrap_or_else(|| r"^([^/]+)/".into()),
    );
    let preview = move || {
        let text = samples.get();
        let paths: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        key_preview(&regex.get(), &paths)
    };
    let set = move |f: Box<dyn FnOnce(&mut concurrent_core::template::Edge)>| {
        session.edit(|e| e.update_edge(index, f))
    };
    view! {
        <section class="cc-inspector" data-inspector="edge">
            <h3>"Connection"</h3>
            <p class="mono">{move || edge().map(|e| concurrent_core::diff::edge_name(&e)).unwrap_or_default()}</p>
            <label class="cc-field"><span>"Input name (files land in $CONCURRENT_INPUT_DIR/<input>/)"</span>
                <input type="text" name="input" prop:value=move || edge().map(|e| e.input).unwrap_or_default()
                    on:change=move |e| { let v = event_target_value(&e).trim().to_string(); set(Box::new(move |x| x.input = v)); } /></label>
            <label class="cc-field"><span>"Partitioning across the instances"</span>
                <select name="mode" prop:value=move || edge().map(|e| e.partition.mode.as_str().to_string()).unwrap_or_default()
                    on:change=move |e| { let v = event_target_value(&e); set(Box::new(move |x| {
                        x.partition.mode = PartitionMode::parse(&v);
                        if x.partition.mode != PartitionMode::ByKey { x.partition.key_regex = None; }
                    })); }>
                    <option value="broadcast">"broadcast: every instance gets every file"</option>
                    <option value="by-file">"by-file: files spread, balanced by size"</option>
                    <option value="by-directory">"by-directory: a directory's files stay together"</option>
                    <option value="by-key">"by-key: files with the same key stay together"</option>
                </select></label>
            {move || (edge().is_some_and(|e| e.partition.mode == PartitionMode::ByKey)).then(|| view! {
                <label class="cc-field"><span>"Key regex (first capture group is the key)"</span>
                    <input type="text" name="keyRegex" prop:value=move || regex.get()
                        on:input=move |e| regex.set(event_target_value(&e))
                        on:change=move |e| { let v = event_target_value(&e); set(Box::new(move |x| x.partition.key_regex = optional(v))); } /></label>
                <label class="cc-field"><span>"Sample paths, one per line"</span>
                    <textarea name="samples" rows="3" prop:value=move || samples.get() on:input=move |e| samples.set(event_target_value(&e))></textarea></label>
                <table class="cc-preview" data-preview="">
                    <thead><tr><th>"path"</th><th>"key"</th></tr></thead>
                    <tbody>{move || match preview() {
                        Err(why) => view! { <tr><td colspan="2" class="cc-error">{why.to_string()}</td></tr> }.into_any(),
                        Ok(rows) => rows.into_iter().map(|(p, k)| view! {
                            <tr><td class="mono">{p}</td><td class={ if k.is_some() { "mono" } else { "cc-error" } }>{k.clone().unwrap_or_else(|| "no match: a run would refuse this file".into())}</td></tr>
                        }).collect_view().into_any(),
                    }}</tbody>
                </table>
            })}
            <fieldset class="cc-select" data-select="">
                <legend>"Best of the upstream instances (by an MLflow metric)"</legend>
                <label class="cc-field"><span>"Metric (empty: pass every instance's outputs)"</span>
                    <input type="text" name="selectMetric" placeholder="e.g. val_auc" prop:value=move || edge().and_then(|e| e.select).map(|s| s.metric).unwrap_or_default()
                        on:change=move |e| { let v = event_target_value(&e).trim().to_string(); set(Box::new(move |x| {
                            x.select = if v.is_empty() { None } else { Some(Select { metric: v, ..x.select.clone().unwrap_or(Select { metric: String::new(), mode: SelectMode::Max, top: 1 }) }) };
                        })); } /></label>
                {move || edge().and_then(|e| e.select).map(|s| view! {
                    <div class="cc-row">
                        <label class="cc-field"><span>"Best is"</span>
                            <select name="selectMode" prop:value=if s.mode == SelectMode::Min { "min" } else { "max" }
                                on:change=move |e| { let min = event_target_value(&e) == "min"; set(Box::new(move |x| { if let Some(s) = x.select.as_mut() { s.mode = if min { SelectMode::Min } else { SelectMode::Max }; } })); }>
                                <option value="max">"the highest"</option>
                                <option value="min">"the lowest"</option>
                            </select></label>
                        <label class="cc-field"><span>"How many"</span>
                            <input type="text" name="selectTop" prop:value=s.top.to_string()
                                on:change=move |e| { let v = event_target_value(&e); match v.trim().parse::<u32>() {
                                    Ok(n) => set(Box::new(move |x| { if let Some(s) = x.select.as_mut() { s.top = n; } })),
                                    Err(_) => session.complain(format!("how many must be a whole number, not {v:?}")),
                                } } /></label>
                    </div>
                    <p class="cc-hint">"Downstream fields may use {{upstream.<node>.best.run_id}}, .model_uri and .metrics.<name>."</p>
                })}
            </fieldset>
            <super::partitions::PartitionPreview session index />
            <button class="cc-danger" on:click=move |_| { session.editor.update(|e| e.delete(&[], &[index])); session.selection.set(Selection::default()); }>"Delete connection"</button>
        </section>
    }
}

#[component]
fn TemplateInspector(session: Session) -> impl IntoView {
    let saved = move || session.saved.with(Option::is_some);
    let parameters = move || session.editor.with(|e| e.template().parameters.clone());
    let set_param = move |i: usize, f: Box<dyn FnOnce(&mut Parameter)>| {
        session.editor.update(|e| {
            e.update_template(|t| {
                if let Some(p) = t.parameters.get_mut(i) {
                    f(p)
                }
            })
        });
    };
    view! {
        <section class="cc-inspector" data-inspector="template">
            <h3>"Template"</h3>
            <label class="cc-field"><span>"Name (also the MLflow experiment concurrent/<name>)"</span>
                <input type="text" name="templateName" readonly=saved prop:value=move || session.template_name()
                    on:change=move |e| { let v = event_target_value(&e).trim().to_string(); if v != session.template_name() { session.editor.update(|ed| ed.update_template(|t| t.name = v)); } } /></label>
            <label class="cc-field"><span>"Description"</span>
                <textarea name="description" rows="2" prop:value=move || session.editor.with(|e| e.template().description.clone())
                    on:change=move |e| { let v = event_target_value(&e); session.editor.update(|ed| ed.update_template(|t| t.description = v)); }></textarea></label>
            <fieldset class="cc-params">
                <legend>"Run parameters ({{params.<name>}} in node fields)"</legend>
                {move || parameters().into_iter().enumerate().map(|(i, p)| view! {
                    <div class="cc-row cc-param" data-parameter=i.to_string()>
                        <input type="text" name="paramName" placeholder="name" prop:value=p.name.clone() on:change=move |e| { let v = event_target_value(&e).trim().to_string(); set_param(i, Box::new(move |p| p.name = v)); } />
                        <input type="text" name="paramDefault" placeholder="default (required when empty)" prop:value=p.default.clone().unwrap_or_default() on:change=move |e| { let v = event_target_value(&e); set_param(i, Box::new(move |p| p.default = (!v.is_empty()).then_some(v))); } />
                        <button class="cc-link" title="Remove" on:click=move |_| session.editor.update(|e| e.update_template(|t| { t.parameters.remove(i); }))>"×"</button>
                    </div>
                }).collect_view()}
                <button class="cc-link" on:click=move |_| session.editor.update(|e| e.update_template(|t| t.parameters.push(Parameter { name: format!("param{}", t.parameters.len() + 1), default: None, description: String::new() })))>"+ run parameter"</button>
            </fieldset>
            <p class="cc-hint">"Select a node or a connection to edit it."</p>
        </section>
    }
}
