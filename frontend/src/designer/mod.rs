//! The designer: a template on a canvas, with a palette, an inspector, live validation, saving
//! versions, their diff, import/export and the run dialog. Every edit goes through
//! [`concurrent_core::design::Editor`], so undo/redo covers all of them.

mod canvas;
mod dialogs;
mod fields;
mod gates;
mod inspector;
mod partitions;
mod project;
mod sweep;

use std::collections::{BTreeSet, HashMap};

use concurrent_core::access::Route as ApiRoute;
use concurrent_core::design::{Clipboard, Editor, Viewport};
use concurrent_core::template::{Position, API_VERSION};
use concurrent_core::wire::{SavedTemplate, TemplateVersion};
use concurrent_core::Target;
use concurrent_core::{validate, Problem, Template};
use leptos::ev;
use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;

use crate::api;
use crate::route::{self, Route};

/// What is selected on the canvas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub nodes: BTreeSet<String>,
    pub edge: Option<usize>,
}

impl Selection {
    pub fn node(id: &str) -> Selection {
        Selection {
            nodes: BTreeSet::from([id.to_string()]),
            edge: None,
        }
    }
}

/// A message over the canvas: refusals, save results, API errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub error: bool,
    pub text: String,
}

/// One template being edited. Sessions outlive the designer view, so leaving the tab and coming
/// back keeps unsaved work.
#[derive(Clone, Copy)]
pub struct Session {
    pub editor: RwSignal<Editor>,
    pub selection: RwSignal<Selection>,
    pub viewport: RwSignal<Viewport>,
    /// The saved version these edits build on, and its content (to tell unsaved changes).
    pub saved: RwSignal<Option<(u32, Template)>>,
    pub notice: RwSignal<Option<Notice>>,
    /// `None` while loading; `Some(Err)` when the template could not be loaded.
    pub loaded: RwSignal<Option<Result<(), String>>>,
}

impl Session {
    fn new(template: Template) -> Session {
        Session {
            editor: RwSignal::new(Editor::new(template)),
            selection: RwSignal::new(Selection::default()),
            viewport: RwSignal::new(Viewport::default()),
            saved: RwSignal::new(None),
            notice: RwSignal::new(None),
            loaded: RwSignal::new(None),
        }
    }

    pub fn say(&self, text: impl Into<String>) {
        self.notice.set(Some(Notice {
            error: false,
            text: text.into(),
        }));
    }

    pub fn complain(&self, text: impl Into<String>) {
        self.notice.set(Some(Notice {
            error: true,
            text: text.into(),
        }));
    }

    /// Applies an edit; a refusal becomes a notice.
    pub fn edit<E: std::fmt::Display>(&self, f: impl FnOnce(&mut Editor) -> Result<(), E>) {
        let mut refused = None;
        self.editor
            .update(|e| refused = f(e).err().map(|e| e.to_string()));
        match refused {
            Some(why) => self.complain(why),
            // A refusal shown earlier no longer applies once an edit succeeds.
            None => {
                if self
                    .notice
                    .with_untracked(|n| n.as_ref().is_some_and(|n| n.error))
                {
                    self.notice.set(None);
                }
            }
        }
    }

    pub fn template_name(&self) -> String {
        self.editor.with(|e| e.template().name.clone())
    }
}

/// Sessions by template name ("" for a new one), the copy buffer, and the owner that keeps
/// their signals alive while the designer is not shown.
#[derive(Clone, Copy)]
pub struct Sessions {
    owner: StoredValue<Owner, LocalStorage>,
    by_name: StoredValue<HashMap<String, Session>, LocalStorage>,
    pub clipboard: StoredValue<Clipboard>,
}

impl Sessions {
    /// Created once by the app, under its root owner.
    pub fn new() -> Sessions {
        Sessions {
            owner: StoredValue::new_local(Owner::current().expect("created inside the app")),
            by_name: StoredValue::new_local(HashMap::new()),
            clipboard: StoredValue::new(Clipboard::default()),
        }
    }

    fn get(&self, key: &str) -> Option<Session> {
        self.by_name.with_value(|m| m.get(key).copied())
    }

    fn create(&self, key: &str, template: Template) -> Session {
        let session = self.owner.with_value(|o| o.with(|| Session::new(template)));
        self.by_name.update_value(|m| {
            m.insert(key.to_string(), session);
        });
        session
    }

    /// Files a new template's session under its saved name.
    fn rename(&self, from: &str, to: &str) {
        self.by_name.update_value(|m| {
            if let Some(s) = m.remove(from) {
                m.insert(to.to_string(), s);
            }
        });
    }
}

fn empty_template() -> Template {
    Template {
        api_version: API_VERSION.into(),
        name: String::new(),
        description: String::new(),
        parameters: vec![],
        nodes: vec![],
        edges: vec![],
        cache: None,
        notifications: vec![],
    }
}

/// The session for `name` (`None`: a new template), loading it from the API the first time.
fn session_for(sessions: Sessions, name: Option<String>) -> Session {
    let key = name.clone().unwrap_or_default();
    if let Some(s) = sessions.get(&key) {
        return s;
    }
    let session = sessions.create(&key, empty_template());
    match name {
        None => session.loaded.set(Some(Ok(()))),
        Some(name) => leptos::task::spawn_local(async move {
            let path = ApiRoute::TemplateSave.path(&[&name]);
            match api::get::<TemplateVersion>(&path).await {
                Ok(tv) => {
                    // The open's phases, for `make bench`: fetched (and decoded), laid out,
                    // drawn (the elements near the screen built; style, layout and paint follow).
                    crate::mark("cc-open-fetched");
                    // Hand-written templates have no positions: lay them out first (not an
                    // edit), so the canvas draws each node once, where it belongs.
                    let mut t = tv.template.clone();
                    concurrent_core::design::place_unpositioned(&mut t);
                    crate::mark("cc-open-laid-out");
                    session.editor.set(Editor::new(t.clone()));
                    // Fitted before the first draw: a big template zoomed out draws no labels.
                    canvas::fit_when_shown(session);
                    // Positions added on opening are not unsaved work.
                    session.saved.set(Some((tv.version, t)));
                    session.loaded.set(Some(Ok(())));
                    // The views update in microtasks; the next frame's callbacks run once they
                    // all have, before that frame's style, layout and paint.
                    request_animation_frame(|| crate::mark("cc-open-drawn"));
                }
                Err(e) => session
                    .loaded
                    .set(Some(Err(format!("cannot open template {name:?}: {e}")))),
            }
        }),
    }
    session
}

#[component]
pub fn Designer(name: Option<String>) -> impl IntoView {
    let sessions = expect_context::<Sessions>();
    let session = session_for(sessions, name.clone());
    let problems = Memo::new(move |_| session.editor.with(|e| validate(e.template())));
    let dirty = Memo::new(move |_| {
        session.editor.with(|e| {
            session
                .saved
                .with(|s| s.as_ref().map(|(_, t)| t) != Some(e.template()))
        })
    });
    let dialog = RwSignal::new(None::<dialogs::Dialog>);
    canvas::provide_gesture();
    // Where the inspector overlays the canvas (narrow screens), it shows on demand: when
    // something is selected or its toolbar button is pressed.
    let side_open = RwSignal::new(false);
    Effect::new(move |previous: Option<Selection>| {
        let now = session.selection.get();
        if previous.is_some_and(|p| p != now) && (!now.nodes.is_empty() || now.edge.is_some()) {
            side_open.set(true);
        }
        now
    });
    let root = NodeRef::<leptos::html::Div>::new();
    fill_height(root);

    let save = move || {
        let template = session.editor.with_untracked(|e| e.template().clone());
        let previous = session
            .saved
            .with_untracked(|s| s.as_ref().map(|(v, _)| *v));
        let name = template.name.clone();
        if let Some(why) = concurrent_core::names::label_value_problem(&name) {
            session.complain(format!("name the template before saving: its name {why} (select the canvas background to edit it)"));
            return;
        }
        leptos::task::spawn_local(async move {
            let path = format!("{}?draft=true", ApiRoute::TemplateSave.path(&[&name]));
            let mut request = gloo_net::http::Request::put(&path);
            if let Some(v) = previous {
                request = request.header("If-Match", &v.to_string());
            }
            match api::send::<SavedTemplate>(request, &template).await {
                Ok(saved) => {
                    session.saved.set(Some((saved.version, template)));
                    let note = if saved.problems.is_empty() { String::new() } else { format!(" as a draft ({} problem(s) to fix before it can run)", saved.problems.len()) };
                    session.say(format!("saved {} version {}{note}", saved.name, saved.version));
                    if previous.is_none() {
                        sessions.rename("", &saved.name);
                        route::go(&Route::Template(saved.name));
                    }
                }
                Err(e) if e.status == 409 && previous.is_none() => {
                    session.complain(format!("a template named {name:?} exists already; choose another name, or open it from the list"))
                }
                Err(e) if e.status == 409 => session.complain(format!(
                    "{e}. Someone saved {name} since you opened it: export your edits, reload the template, and apply them again"
                )),
                Err(e) => session.complain(format!("saving failed: {e}")),
            }
        });
    };

    keyboard(session, sessions, dialog, save);

    let can_run = Memo::new(move |_| {
        problems.with(Vec::is_empty) && !dirty.get() && session.saved.with(Option::is_some)
    });
    let run_blocked_why = move || {
        if !problems.with(Vec::is_empty) {
            "fix the problems listed on the right first"
        } else if session.saved.with(Option::is_none) || dirty.get() {
            "save your changes first: a run uses a saved version"
        } else {
            "start a run of this version"
        }
    };

    view! {
        <div class="cc-designer" data-designer="" node_ref=root>
            {move || match session.loaded.get() {
                None => view! { <p class="cc-loading">"Loading the template…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="cc-error" role="alert">{e}" "<a href="#/dags">"Back to the list"</a></p> }.into_any(),
                Some(Ok(())) => ().into_any(),
            }}
            <div class="cc-toolbar">
                <a class="cc-back" href="#/dags" title="All templates and runs">"← DAGs"</a>
                <strong data-title="">{move || { let n = session.template_name(); if n.is_empty() { "New DAG".to_string() } else { n } }}</strong>
                <span class="cc-version" data-version="">{move || match (session.saved.get().map(|(v, _)| v), dirty.get()) {
                    (None, _) => "not saved yet".to_string(),
                    (Some(v), false) => format!("version {v}"),
                    (Some(v), true) => format!("version {v} · unsaved changes"),
                }}</span>
                <span class="cc-spacer"></span>
                <button data-action="undo" title="Undo (Ctrl+Z)" disabled=move || !session.editor.with(Editor::can_undo) on:click=move |_| { session.editor.update(|e| { e.undo(); }); }>"Undo"</button>
                <button data-action="redo" title="Redo (Ctrl+Shift+Z)" disabled=move || !session.editor.with(Editor::can_redo) on:click=move |_| { session.editor.update(|e| { e.redo(); }); }>"Redo"</button>
                <button data-action="layout" title="Arrange the nodes left to right" on:click=move |_| { session.editor.update(Editor::auto_layout); canvas::fit(session); }>"Auto-layout"</button>
                <button data-action="fit" title="Fit to view (F): the DAG at a readable size; press again to see all of a big one" on:click=move |_| canvas::fit_again(session)>"Fit"</button>
                <button data-action="zoom-out" title="Zoom out (-)" on:click=move |_| canvas::zoom_by(session, 1.0 / 1.25)>"−"</button>
                <button data-action="zoom-in" title="Zoom in (+)" on:click=move |_| canvas::zoom_by(session, 1.25)>"+"</button>
                <button data-action="inspector" class="cc-narrow-only" aria-pressed=move || side_open.get().to_string() title="Show or hide the inspector and the problems" on:click=move |_| side_open.update(|o| *o = !*o)>
                    {move || match problems.with(Vec::len) { 0 => "Inspector".to_string(), n => format!("Inspector · {n} problem(s)") }}
                </button>
                <button data-action="import" on:click=move |_| dialog.set(Some(dialogs::Dialog::Import))>"Import"</button>
                <button data-action="export" on:click=move |_| dialogs::export(session)>"Export"</button>
                <button data-action="versions" disabled=move || session.saved.with(Option::is_none) on:click=move |_| dialog.set(Some(dialogs::Dialog::Versions))>"Versions"</button>
                <button data-action="save" class="cc-primary" title="Save as a new version (Ctrl+S); drafts with problems can be saved" on:click=move |_| save()>"Save"</button>
                <button data-action="run" class="cc-primary" disabled=move || !can_run.get() title=run_blocked_why on:click=move |_| dialog.set(Some(dialogs::Dialog::Run))>"Run…"</button>
            </div>
            {move || session.notice.get().map(|n| view! {
                <div class=if n.error { "cc-notice cc-notice-error" } else { "cc-notice" } role=if n.error { "alert" } else { "status" } data-notice="">
                    <span>{n.text}</span>
                    <button class="cc-link" on:click=move |_| session.notice.set(None) title="Dismiss">"×"</button>
                </div>
            })}
            <div class="cc-workspace" class:cc-side-open=move || side_open.get()>
                <canvas::Palette session />
                <canvas::Canvas session problems />
                <aside class="cc-side" aria-label="Inspector">
                    <button class="cc-link cc-close cc-narrow-only" title="Hide the inspector" on:click=move |_| side_open.set(false)>"×"</button>
                    <inspector::Inspector session problems />
                    <ProblemList session problems />
                </aside>
            </div>
            {move || dialog.get().map(|d| view! { <dialogs::DialogView dialog=d session close=move || dialog.set(None) /> })}
        </div>
    }
}

/// Gives the designer the height its page leaves below it (MLflow's main area, or the
/// window), now and whenever the window is resized.
fn fill_height(root: NodeRef<leptos::html::Div>) {
    let fit = move || {
        let Some(el) = root.get_untracked() else {
            return;
        };
        let el: &web_sys::HtmlElement = &el;
        let top = el.get_bounding_client_rect().top();
        let window_h = window()
            .inner_height()
            .ok()
            .and_then(|h| h.as_f64())
            .unwrap_or(800.0);
        let bottom = el
            .closest("main")
            .ok()
            .flatten()
            .map(|m| {
                let pad = window()
                    .get_computed_style(&m)
                    .ok()
                    .flatten()
                    .and_then(|s| s.get_property_value("padding-bottom").ok())
                    .and_then(|p| p.trim_end_matches("px").parse::<f64>().ok())
                    .unwrap_or(0.0);
                m.get_bounding_client_rect().bottom() - pad
            })
            .unwrap_or(window_h)
            .min(window_h);
        let height = (bottom - top).max(420.0);
        el.style()
            .set_property("height", &format!("{height:.0}px"))
            .ok();
        // Paddings below the designer (ours, MLflow's) would make the page scroll: take
        // what overflows back off.
        if let Some(scroller) = el.closest("main").ok().flatten() {
            let over = scroller.scroll_height() - scroller.client_height();
            if over > 0 {
                let height = (height - f64::from(over)).max(420.0);
                el.style()
                    .set_property("height", &format!("{height:.0}px"))
                    .ok();
            }
        }
    };
    Effect::new(move |_| {
        if root.get().is_some() {
            fit();
        }
    });
    let handle = window_event_listener(ev::resize, move |_| fit());
    on_cleanup(move || handle.remove());
}

/// Blurs the focused form field, so its pending `change` is committed.
pub fn blur_active() {
    if let Some(el) = document()
        .active_element()
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    {
        el.blur().ok();
    }
}

/// Whether a key event belongs to a form field (then the designer leaves it alone).
fn typing(e: &web_sys::KeyboardEvent) -> bool {
    e.target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        .is_some_and(|el| {
            matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                || el.has_attribute("contenteditable")
        })
}

/// The designer's keyboard: every pointer action has a key; Ctrl+S saves even from a field.
fn keyboard(
    session: Session,
    sessions: Sessions,
    dialog: RwSignal<Option<dialogs::Dialog>>,
    save: impl Fn() + 'static,
) {
    let handle = window_event_listener(ev::keydown, move |e| {
        if (e.ctrl_key() || e.meta_key()) && e.key().eq_ignore_ascii_case("s") {
            e.prevent_default();
            // Commit the field being typed in first (its change event fires on blur).
            blur_active();
            save();
            return;
        }
        if typing(&e) || dialog.with_untracked(Option::is_some) {
            if e.key() == "Escape" {
                dialog.set(None);
            }
            return;
        }
        let ctrl = e.ctrl_key() || e.meta_key();
        let key = e.key();
        let selected: Vec<String> = session
            .selection
            .with_untracked(|s| s.nodes.iter().cloned().collect());
        let mut handled = true;
        match key.as_str() {
            "z" | "Z" if ctrl && e.shift_key() => session.editor.update(|ed| {
                ed.redo();
            }),
            "z" | "Z" if ctrl => session.editor.update(|ed| {
                ed.undo();
            }),
            "y" if ctrl => session.editor.update(|ed| {
                ed.redo();
            }),
            "c" if ctrl => sessions
                .clipboard
                .set_value(session.editor.with_untracked(|ed| ed.copy(&selected))),
            "x" if ctrl => {
                sessions
                    .clipboard
                    .set_value(session.editor.with_untracked(|ed| ed.copy(&selected)));
                session.editor.update(|ed| ed.delete(&selected, &[]));
                session.selection.set(Selection::default());
            }
            "v" if ctrl => {
                let clip = sessions.clipboard.get_value();
                let mut pasted = vec![];
                session
                    .editor
                    .update(|ed| pasted = ed.paste(&clip, 40.0, 40.0));
                session.selection.set(Selection {
                    nodes: pasted.into_iter().collect(),
                    edge: None,
                });
            }
            "a" if ctrl => session.selection.set(Selection {
                nodes: session.editor.with_untracked(|ed| {
                    ed.template().nodes.iter().map(|n| n.id.clone()).collect()
                }),
                edge: None,
            }),
            "Delete" | "Backspace" => {
                let edges: Vec<usize> = session
                    .selection
                    .with_untracked(|s| s.edge.into_iter().collect());
                if !selected.is_empty() || !edges.is_empty() {
                    session.editor.update(|ed| ed.delete(&selected, &edges));
                    session.selection.set(Selection::default());
                }
            }
            "ArrowLeft" | "ArrowRight" | "ArrowUp" | "ArrowDown" if !selected.is_empty() => {
                let step = if e.shift_key() { 50.0 } else { 10.0 };
                let (dx, dy) = match key.as_str() {
                    "ArrowLeft" => (-step, 0.0),
                    "ArrowRight" => (step, 0.0),
                    "ArrowUp" => (0.0, -step),
                    _ => (0.0, step),
                };
                session.editor.update(|ed| ed.move_nodes(&selected, dx, dy));
            }
            "Escape" => session.selection.set(Selection::default()),
            "+" | "=" => canvas::zoom_by(session, 1.25),
            "-" => canvas::zoom_by(session, 1.0 / 1.25),
            "f" | "F" if !ctrl => canvas::fit_again(session),
            _ => handled = false,
        }
        if handled {
            e.prevent_default();
        }
    });
    on_cleanup(move || handle.remove());
}

/// Selects the node, edge or parameter a problem belongs to.
pub fn select_target(session: Session, target: Target) {
    match target {
        Target::Node(i) => {
            if let Some(id) = session
                .editor
                .with_untracked(|e| e.template().nodes.get(i).map(|n| n.id.clone()))
            {
                session.selection.set(Selection::node(&id));
            }
        }
        Target::Edge(i) => session.selection.set(Selection {
            nodes: BTreeSet::new(),
            edge: Some(i),
        }),
        Target::Parameter(_) | Target::Template => session.selection.set(Selection::default()),
    }
}

/// Words for a problem: which thing it is about, then what is wrong.
pub fn describe(session: Session, p: &Problem) -> String {
    let what = session.editor.with_untracked(|e| {
        let t = e.template();
        match p.target() {
            Target::Node(i) => t.nodes.get(i).map(|n| format!("node {}", n.id)),
            Target::Edge(i) => t
                .edges
                .get(i)
                .map(concurrent_core::diff::edge_name)
                .map(|n| format!("edge {n}")),
            Target::Parameter(i) => t.parameters.get(i).map(|x| {
                format!(
                    "parameter {}",
                    if x.name.is_empty() {
                        "(unnamed)"
                    } else {
                        &x.name
                    }
                )
            }),
            Target::Template => Some("template".into()),
        }
    });
    let field = p
        .path
        .rsplit('/')
        .next()
        .filter(|f| f.parse::<usize>().is_err() && !matches!(*f, "nodes" | "edges"))
        .unwrap_or("");
    match what {
        Some(w) if !field.is_empty() => format!("{w}, {field}: {}", p.message),
        Some(w) => format!("{w}: {}", p.message),
        None => p.to_string(),
    }
}

#[component]
fn ProblemList(session: Session, problems: Memo<Vec<Problem>>) -> impl IntoView {
    view! {
        <section class="cc-problems" data-problems="">
            <h3>{move || match problems.with(Vec::len) { 0 => "Problems".to_string(), n => format!("Problems ({n})") }}</h3>
            {move || {
                let list = problems.get();
                if list.is_empty() {
                    return view! { <p class="cc-ok">"No problems: this template can run once saved."</p> }.into_any();
                }
                view! {
                    <ul>
                        {list.into_iter().map(|p| {
                            let target = p.target();
                            view! {
                                <li><button class="cc-link cc-problem" data-path=p.path.clone() on:click=move |_| select_target(session, target)>
                                    {describe(session, &p)}
                                </button></li>
                            }
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </section>
    }
}

/// Where a new node goes when added from the keyboard: the middle of the visible canvas.
pub fn view_center(session: Session) -> Position {
    canvas::visible_center(session)
}
