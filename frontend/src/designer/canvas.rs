//! The canvas and the palette: drawing the template as SVG and every pointer gesture on it.
//!
//! Gestures use pointer events (not HTML5 drag-and-drop), on the window while a gesture lasts,
//! so they work with touch, pens, and WebDriver. While a node is dragged only its offset
//! changes; the template itself is edited once, on release (one undo step per drag).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use concurrent_core::design::Kind;
use concurrent_core::template::{Edge, Node, Position};
use concurrent_core::Problem;
use leptos::ev;
use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;

use super::{Selection, Session};
use crate::graph::{arrow_marker, edge_path, fit as fit_label, subtitle, NodeBox, NODE_H, NODE_W};
use concurrent_core::design::gesture::Press;
use concurrent_core::design::gesture::{Action, Gesture, Select, Shown};
use concurrent_core::design::view::{self, Fit};

/// Visual state of a gesture: what the canvas draws while it lasts.
#[derive(Clone, Copy)]
struct Overlay {
    /// Offset of the nodes being moved.
    drag: RwSignal<Option<(Arc<BTreeSet<String>>, f64, f64)>>,
    /// The connection being drawn: from-port and pointer.
    link: RwSignal<Option<(Position, Position)>>,
    /// The selection box.
    rubber: RwSignal<Option<(Position, Position)>>,
    /// The node being added from the palette, at the pointer.
    ghost: RwSignal<Option<(Kind, Position)>>,
}

/// The designer's one gesture (the palette starts gestures that end on the canvas); provided by
/// the designer for both.
pub fn provide_gesture() {
    provide_context(StoredValue::new(Gesture::Idle));
}

fn gesture() -> StoredValue<Gesture> {
    expect_context::<StoredValue<Gesture>>()
}

const CANVAS_ID: &str = "cc-canvas";

fn svg() -> Option<web_sys::Element> {
    document().get_element_by_id(CANVAS_ID)
}

/// Canvas coordinates of a client (screen) point.
fn to_canvas(session: Session, client: (f64, f64)) -> Position {
    let rect = svg().map(|s| s.get_bounding_client_rect());
    let (left, top) = rect.map(|r| (r.left(), r.top())).unwrap_or_default();
    view::to_canvas(
        session.viewport.get_untracked(),
        (client.0 - left, client.1 - top),
    )
}

/// The canvas's size on screen (CSS pixels).
fn canvas_size() -> Option<(f64, f64)> {
    svg()
        .map(|s| s.get_bounding_client_rect())
        .map(|r| (r.width(), r.height()))
}

fn inside_canvas(client: (f64, f64)) -> bool {
    svg()
        .map(|s| s.get_bounding_client_rect())
        .is_some_and(|r| {
            client.0 >= r.left()
                && client.0 <= r.right()
                && client.1 >= r.top()
                && client.1 <= r.bottom()
        })
}

/// The node under a client point (what a drop lands on).
fn node_at(client: (f64, f64)) -> Option<String> {
    let el = document().element_from_point(client.0 as f32, client.1 as f32)?;
    el.closest("[data-node]").ok()??.get_attribute("data-node")
}

pub fn visible_center(session: Session) -> Position {
    let (w, h) = canvas_size().unwrap_or((800.0, 600.0));
    let c = view::to_canvas(session.viewport.get_untracked(), (w / 2.0, h / 2.0));
    Position {
        x: c.x - NODE_W / 2.0,
        y: c.y - NODE_H / 2.0,
    }
}

/// Zooms around the middle of the canvas.
pub fn zoom_by(session: Session, factor: f64) {
    let (w, h) = canvas_size().unwrap_or((800.0, 600.0));
    zoom_at(session, factor, (w / 2.0, h / 2.0));
}

fn zoom_at(session: Session, factor: f64, at: (f64, f64)) {
    session
        .viewport
        .update(|v| *v = view::zoom_at(*v, factor, at));
}

fn bounds(session: Session) -> Option<(Position, Position)> {
    session
        .editor
        .with_untracked(|e| concurrent_core::design::bounds(e.template()))
}

/// Shows the DAG at a readable size (its start, when it does not fit whole).
pub fn fit(session: Session) {
    if let Some(size) = canvas_size() {
        session
            .viewport
            .set(view::fit(bounds(session), size, Fit::Readable));
    }
}

/// The Fit button: a readable fit, or, pressed again, all of a big DAG.
pub fn fit_again(session: Session) {
    if let Some(size) = canvas_size() {
        let now = session.viewport.get_untracked();
        session
            .viewport
            .set(view::next_fit(now, bounds(session), size));
    }
}

/// Fits now when the canvas is in the page (then before the next draw), or once it is.
pub fn fit_when_shown(session: Session) {
    let shown = || canvas_size().is_some_and(|(w, _)| w > 0.0);
    if shown() {
        fit(session);
        return;
    }
    leptos::task::spawn_local(async move {
        for _ in 0..50 {
            gloo_timers::future::TimeoutFuture::new(20).await;
            if shown() {
                fit(session);
                return;
            }
        }
    });
}

fn client(e: &web_sys::PointerEvent) -> (f64, f64) {
    (e.client_x() as f64, e.client_y() as f64)
}

#[component]
pub fn Palette(session: Session) -> impl IntoView {
    let gesture = gesture();
    let items = [
        (
            Kind::Project,
            "MLflow Project",
            "Runs an entry point of an MLflow Project from git or a path",
        ),
        (
            Kind::Inference,
            "Model inference",
            "Applies a logged MLflow model to every input file",
        ),
        (
            Kind::Input,
            "Input data",
            "Files of an MLflow run, or a path",
        ),
        (
            Kind::Approval,
            "Approval",
            "Pauses the run until a person approves or rejects, showing the candidate's metrics beside a registered model's",
        ),
        (
            Kind::Register,
            "Register model",
            "Registers the upstream step's model as a new version of a registered model, and can move an alias to it",
        ),
    ];
    view! {
        <aside class="cc-palette" aria-label="Node kinds">
            <h3>"Add"</h3>
            {items.into_iter().map(|(kind, label, help)| view! {
                <button class="cc-palette-item" data-kind=kind_name(kind) title=format!("{label}: {help}. Drag onto the canvas, or press Enter to add it in the middle.") aria-label=label
                    on:pointerdown=move |e| { e.prevent_default(); gesture.set_value(Gesture::Add(kind)); }
                    on:click=move |_| {
                        // Keyboard (or a click without dragging): add in the middle of the view.
                        let at = super::view_center(session);
                        let mut id = String::new();
                        session.editor.update(|ed| id = ed.add_node(kind, at));
                        session.selection.set(Selection::node(&id));
                    }>
                    <span class=format!("cc-swatch cc-kind-{}", kind_name(kind))></span><span class="cc-palette-label">{label}</span>
                </button>
            }).collect_view()}
            <p class="cc-hint">"Drag from a node's right port to another node to connect. Shift-drag to select several; drag the background to pan; wheel to zoom. Del deletes, Ctrl+Z / Ctrl+Shift+Z undo and redo, Ctrl+C / Ctrl+V copy and paste, arrows move."</p>
        </aside>
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Project => "project",
        Kind::Inference => "inference",
        Kind::Input => "input",
        Kind::Approval => "approval",
        Kind::Register => "register",
    }
}

/// The input name a new connection gets: `data`, or the upstream id when `data` is taken.
fn input_name(session: Session, from: &str, to: &str) -> String {
    session.editor.with_untracked(|e| {
        let taken = |name: &str| {
            e.template()
                .edges
                .iter()
                .any(|x| x.to == to && x.input == name)
        };
        if !taken("data") {
            "data".into()
        } else {
            from.to_string()
        }
    })
}

#[component]
pub fn Canvas(session: Session, problems: Memo<Vec<Problem>>) -> impl IntoView {
    let gesture = gesture();
    let overlay = Overlay {
        drag: RwSignal::new(None),
        link: RwSignal::new(None),
        rubber: RwSignal::new(None),
        ghost: RwSignal::new(None),
    };
    // Ids of nodes and indexes of edges with problems.
    let flagged = Memo::new(move |_| {
        let (mut nodes, mut edges) = (HashSet::new(), HashSet::new());
        session.editor.with(|e| {
            for p in problems.get() {
                match p.target() {
                    concurrent_core::Target::Node(i) => {
                        if let Some(n) = e.template().nodes.get(i) {
                            nodes.insert(n.id.clone());
                        }
                    }
                    concurrent_core::Target::Edge(i) => {
                        edges.insert(i);
                    }
                    _ => {}
                }
            }
        });
        (nodes, edges)
    });

    // The gesture itself is core's state machine; here the DOM is read and its answers drawn
    // or carried out.
    let on_move = window_event_listener(ev::pointermove, move |e| {
        let (c, at) = (client(&e), to_canvas(session, client(&e)));
        let shown = gesture.try_update_value(|g| g.moved(at, c, inside_canvas(c)));
        match shown.unwrap_or(Shown::Nothing) {
            Shown::Nothing => {}
            Shown::Pan { x, y } => session.viewport.update(|v| {
                v.x = x;
                v.y = y;
            }),
            Shown::Drag { ids, dx, dy } => overlay.drag.set(Some((Arc::new(ids), dx, dy))),
            Shown::Link { from, to } => {
                let p = session
                    .editor
                    .with_untracked(|ed| ed.template().node(&from).and_then(|n| n.position))
                    .unwrap_or_default();
                overlay.link.set(Some((p, to)));
            }
            Shown::Rubber { from, to } => overlay.rubber.set(Some((from, to))),
            Shown::Ghost { kind, at } => overlay.ghost.set(at.map(|at| (kind, at))),
        }
    });
    let on_up = window_event_listener(ev::pointerup, move |e| {
        let g = gesture.get_value();
        gesture.set_value(Gesture::Idle);
        overlay.drag.set(None);
        overlay.link.set(None);
        overlay.rubber.set(None);
        overlay.ghost.set(None);
        let c = client(&e);
        let under = node_at(c);
        let action = session.editor.with_untracked(|ed| {
            g.release(
                to_canvas(session, c),
                under.as_deref(),
                inside_canvas(c),
                ed.template(),
                (NODE_W, NODE_H),
            )
        });
        carry_out(session, action);
    });
    on_cleanup(move || {
        on_move.remove();
        on_up.remove();
    });

    let on_down = move |e: web_sys::PointerEvent| press(session, gesture, &e);
    let on_wheel = move |e: web_sys::WheelEvent| {
        e.prevent_default();
        let rect = svg().map(|s| s.get_bounding_client_rect());
        let (left, top) = rect.map(|r| (r.left(), r.top())).unwrap_or_default();
        let factor = (-e.delta_y() * 0.0015).exp();
        zoom_at(
            session,
            factor,
            (e.client_x() as f64 - left, e.client_y() as f64 - top),
        );
    };

    // Level of detail: titles too small to read on this screen are left out with the ports
    // (text is most of the paint; dragging stays smooth on a thousand nodes).
    let detail = Memo::new(move |_| {
        let dpr = window().device_pixel_ratio();
        session.viewport.with(|v| view::shows_labels(v.scale, dpr))
    });
    // Only what is near the screen is drawn (a thousand nodes' elements took most of an open):
    // the area changes when the view crosses a tile, not per frame.
    let near = Memo::new(move |_| {
        let v = session.viewport.get();
        view::near_area(v, canvas_size().unwrap_or((1600.0, 1200.0)))
    });
    // The nodes being dragged, as a memo that changes only when a drag starts or ends: they
    // (and their edges) are hidden in the big layer and drawn moving in the small overlay, so
    // a frame repaints the overlay only, however many nodes the template has.
    let dragged = Memo::new(move |_| {
        overlay.drag.with(|d| {
            d.as_ref()
                .map(|(ids, _, _)| ids.clone())
                .unwrap_or_default()
        })
    });
    let layer = Layer {
        session,
        detail,
        near,
        flagged,
        dragged,
    };
    let transform = move || {
        let v = session.viewport.get();
        format!("translate({:.2},{:.2}) scale({:.4})", v.x, v.y, v.scale)
    };

    let nodes = move || {
        let area = near.get();
        session.editor.with(|e| {
            e.template()
                .nodes
                .iter()
                .filter(|n| view::within(area, n.position.unwrap_or_default()))
                .map(|n| (node_key(n), n.clone()))
                .collect::<Vec<_>>()
        })
    };
    let edges = move || {
        let area = near.get();
        session.editor.with(|e| {
            let t = e.template();
            let at: HashMap<&str, Position> = t
                .nodes
                .iter()
                .map(|n| (n.id.as_str(), n.position.unwrap_or_default()))
                .collect();
            t.edges
                .iter()
                .enumerate()
                .filter_map(|(i, x)| {
                    let (a, b) = (*at.get(x.from.as_str())?, *at.get(x.to.as_str())?);
                    if !view::edge_near(area, a, b) {
                        return None;
                    }
                    Some((
                        format!(
                            "{i}|{}|{}|{}|{:?}|{:?}|{}",
                            x.from,
                            x.to,
                            x.input,
                            a,
                            b,
                            x.partition.mode.as_str()
                        ),
                        i,
                        x.clone(),
                        a,
                        b,
                    ))
                })
                .collect::<Vec<_>>()
        })
    };

    view! {
        <div class="cc-canvas-wrap">
            <svg id=CANVAS_ID class="cc-canvas" tabindex="0" aria-label="DAG canvas" on:pointerdown=on_down on:wheel=on_wheel>
                {arrow_marker("cc-arrow")}
                <g transform=transform>
                    <For each=edges key=|(k, ..)| k.clone() children=move |(_, i, edge, a, b)| view! {
                        <EdgeItem layer i edge a b />
                    } />
                    <For each=nodes key=|(k, _)| k.clone() children=move |(_, node)| view! {
                        <NodeItem layer node />
                    } />
                </g>
            </svg>
            <svg class="cc-canvas-overlay" aria-hidden="true">
                {arrow_marker("cc-arrow-moving")}
                <g transform=transform>
                    {move || overlay.drag.get().map(|(ids, dx, dy)| moving(session, &ids, dx, dy))}
                    {move || overlay.link.get().map(|(from, to)| view! {
                        <path class="cc-link-draft" d=edge_path(from, Position { x: to.x, y: to.y - NODE_H / 2.0 })></path>
                    })}
                    {move || overlay.ghost.get().map(|(_, at)| view! {
                        <rect class="cc-ghost" x=at.x - NODE_W / 2.0 y=at.y - NODE_H / 2.0 width=NODE_W height=NODE_H rx="8"></rect>
                    })}
                    {move || overlay.rubber.get().map(|(a, b)| view! {
                        <rect class="cc-rubber" x=a.x.min(b.x) y=a.y.min(b.y) width=(a.x - b.x).abs() height=(a.y - b.y).abs()></rect>
                    })}
                </g>
            </svg>
            {move || session.editor.with(|e| e.template().nodes.is_empty()).then(|| view! {
                <p class="cc-canvas-empty">"Drag an MLflow Project from the left onto the canvas to start, or import a template."</p>
            })}
        </div>
    }
}

/// Carries out what a finished gesture asks for.
fn carry_out(session: Session, action: Action) {
    match action {
        Action::Nothing => {}
        Action::ClearSelection => session.selection.set(Selection::default()),
        Action::MoveNodes { ids, dx, dy } => {
            session.editor.update(|ed| ed.move_nodes(&ids, dx, dy))
        }
        Action::Connect { from, to } => {
            let input = input_name(session, &from, &to);
            session.edit(|ed| ed.connect(&from, &to, &input));
        }
        Action::SelectBox { ids } => session.selection.update(|s| {
            s.nodes.extend(ids);
            s.edge = None;
        }),
        Action::AddNode { kind, at } => {
            let mut id = String::new();
            session.editor.update(|ed| id = ed.add_node(kind, at));
            session.selection.set(Selection::node(&id));
        }
    }
}

/// A pointer went down on the canvas: what it pressed (a port, an edge, a node, the
/// background), the gesture that starts, and the selection it makes.
fn press(session: Session, gesture: StoredValue<Gesture>, e: &web_sys::PointerEvent) {
    if e.button() != 0 {
        return;
    }
    super::blur_active();
    let target = e
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok());
    let find = |css: &str, attr: &str| {
        target
            .as_ref()
            .and_then(|t| t.closest(css).ok().flatten())
            .and_then(|el| el.get_attribute(attr))
    };
    let at = to_canvas(session, client(e));
    e.prevent_default();
    let press = if let Some(from) = find("[data-port=out]", "data-port-of") {
        Press::Port(from)
    } else if let Some(i) = find("[data-edge]", "data-edge").and_then(|i| i.parse().ok()) {
        Press::Edge(i)
    } else if let Some(id) = find("[data-node]", "data-node") {
        Press::Node {
            id,
            shift: e.shift_key(),
        }
    } else {
        Press::Background {
            shift: e.shift_key(),
        }
    };
    let v = session.viewport.get_untracked();
    let selected = session.selection.with_untracked(|s| s.nodes.clone());
    let (g, select) = Gesture::press(press, at, client(e), (v.x, v.y), &selected);
    match select {
        Select::Keep => {}
        Select::Edge(i) => session.selection.set(Selection {
            nodes: BTreeSet::new(),
            edge: Some(i),
        }),
        Select::Only(id) => session.selection.set(Selection::node(&id)),
        Select::Toggle(id) => session.selection.update(|s| {
            s.edge = None;
            if !s.nodes.remove(&id) {
                s.nodes.insert(id);
            }
        }),
    }
    gesture.set_value(g);
}

/// What every node and edge of the canvas reads besides its own data.
#[derive(Clone, Copy)]
struct Layer {
    session: Session,
    /// Titles are readable at this zoom.
    detail: Memo<bool>,
    /// The area near the screen: what is drawn, and where labels are.
    near: Memo<(Position, Position)>,
    /// Ids of nodes and indexes of edges with problems.
    flagged: Memo<(HashSet<String>, HashSet<usize>)>,
    /// The nodes being dragged (drawn in the overlay instead).
    dragged: Memo<Arc<BTreeSet<String>>>,
}

/// One edge: its path (and a wider invisible one to click), and its label near the screen.
#[component]
fn EdgeItem(layer: Layer, i: usize, edge: Edge, a: Position, b: Position) -> impl IntoView {
    let Layer {
        session,
        detail,
        near,
        flagged,
        dragged,
    } = layer;
    let d = edge_path(a, b);
    let label = format!("{} · {}", edge.input, edge.partition.mode.as_str());
    let (mx, my) = (
        (a.x + NODE_W + b.x) / 2.0,
        (a.y + b.y) / 2.0 + NODE_H / 2.0 - 6.0,
    );
    let (from, to) = (edge.from.clone(), edge.to.clone());
    let mid = Position { x: mx, y: my };
    let shown = Memo::new(move |_| detail.get() && near.with(|a| view::within(*a, mid)));
    view! {
        <g class="cc-edge" data-edge=i.to_string() data-from=edge.from.clone() data-to=edge.to.clone()
            class:cc-selected=move || session.selection.with(|s| s.edge == Some(i))
            class:cc-invalid=move || flagged.with(|f| f.1.contains(&i))
            class:cc-hidden=move || dragged.with(|ids| ids.contains(&from) || ids.contains(&to))>
            <path class="cc-edge-hit" d=d.clone()></path>
            <path class="cc-edge-line" d=d marker-end="url(#cc-arrow)"></path>
            {move || shown.get().then(|| view! {
                <text class="cc-edge-label" x=format!("{mx:.1}") y=format!("{my:.1}") text-anchor="middle">{label.clone()}</text>
            })}
        </g>
    }
}

/// One node: its box, its title and subtitle near the screen, and its ports.
#[component]
fn NodeItem(layer: Layer, node: Node) -> impl IntoView {
    let Layer {
        session,
        detail,
        near: _,
        flagged,
        dragged,
    } = layer;
    let id = node.id.clone();
    let p = node.position.unwrap_or_default();
    let (sel_id, bad_id, drag_id) = (id.clone(), id.clone(), id.clone());
    view! {
        <g class=format!("cc-node cc-kind-{}", node.kind.tag()) data-node=id.clone() tabindex="0"
            transform=format!("translate({:.1},{:.1})", p.x, p.y)
            class:cc-hidden=move || dragged.with(|ids| ids.contains(&drag_id))
            class:cc-selected=move || session.selection.with(|s| s.nodes.contains(&sel_id))
            class:cc-invalid=move || flagged.with(|f| f.0.contains(&bad_id))
            on:focus={ let id = id.clone(); move |_| if session.selection.with_untracked(|s| !s.nodes.contains(&id)) { session.selection.set(Selection::node(&id)) } }>
            <title>{format!("{} ({})", node.display_name(), node.id)}</title>
            {
                let (title, sub) = (fit_label(node.display_name(), 24), fit_label(&subtitle(&node), 30));
                let takes_input = !matches!(node.kind, concurrent_core::template::NodeKind::Input(_));
                let id = id.clone();
                // Zoomed out, only the box is drawn (a drawn node is near the screen).
                move || if !detail.get() { view! { <NodeBox title=String::new() sub=None /> }.into_any() } else { view! {
                    <NodeBox title=title.clone() sub=Some(sub.clone()) />
                    {takes_input.then(|| view! { <circle class="cc-port cc-port-in" data-port="in" cx="0" cy=NODE_H / 2.0 r="6"></circle> })}
                    <circle class="cc-port cc-port-out" data-port="out" data-port-of=id.clone() cx=NODE_W cy=NODE_H / 2.0 r="7"></circle>
                }.into_any() }
            }
        </g>
    }
}

/// The nodes being dragged and their edges, drawn at their offset in the overlay.
fn moving(session: Session, ids: &BTreeSet<String>, dx: f64, dy: f64) -> impl IntoView {
    session.editor.with_untracked(|e| {
        let t = e.template();
        let at = |id: &str| {
            let p = t.node(id).and_then(|n| n.position).unwrap_or_default();
            if ids.contains(id) { Position { x: p.x + dx, y: p.y + dy } } else { p }
        };
        let edges = t
            .edges
            .iter()
            .filter(|x| ids.contains(&x.from) || ids.contains(&x.to))
            .map(|x| view! { <path class="cc-edge-line" d=edge_path(at(&x.from), at(&x.to)) marker-end="url(#cc-arrow-moving)"></path> })
            .collect_view();
        let nodes = t
            .nodes
            .iter()
            .filter(|n| ids.contains(&n.id))
            .map(|n| {
                let p = at(&n.id);
                view! {
                    <g class=format!("cc-node cc-selected cc-kind-{}", n.kind.tag()) transform=format!("translate({:.1},{:.1})", p.x, p.y)>
                        <NodeBox title=fit_label(n.display_name(), 24) sub=None />
                    </g>
                }
            })
            .collect_view();
        view! { {edges}{nodes} }
    })
}

/// Everything a node's box shows: when it changes, the box is drawn again.
fn node_key(n: &Node) -> String {
    let p = n.position.unwrap_or_default();
    format!(
        "{}|{}|{}|{:.1}|{:.1}",
        n.id,
        n.display_name(),
        subtitle(n),
        p.x,
        p.y
    )
}
