//! Component tests of the designer in headless Chromium (wasm-bindgen-test): the real app
//! mounted into a page, driven by real DOM pointer and keyboard events, without a server
//! (a new template needs none).

use leptos::prelude::*;
use leptos::wasm_bindgen::JsCast;
use wasm_bindgen_test::*;
use web_sys::{Element, KeyboardEvent, KeyboardEventInit, PointerEvent, PointerEventInit};

use crate::designer::{Designer, Sessions};

wasm_bindgen_test_configure!(run_in_browser);

async fn tick() {
    gloo_timers::future::TimeoutFuture::new(30).await;
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tick().await;
    }
    panic!("{what} did not happen");
}

fn q(css: &str) -> Option<Element> {
    document().query_selector(css).unwrap()
}

fn all(css: &str) -> usize {
    document().query_selector_all(css).unwrap().length() as usize
}

fn center(el: &Element) -> (f64, f64) {
    let r = el.get_bounding_client_rect();
    (r.left() + r.width() / 2.0, r.top() + r.height() / 2.0)
}

fn pointer(target: &web_sys::EventTarget, kind: &str, at: (f64, f64), shift: bool) {
    let init = PointerEventInit::new();
    init.set_bubbles(true);
    init.set_client_x(at.0 as i32);
    init.set_client_y(at.1 as i32);
    init.set_button(0);
    init.set_shift_key(shift);
    init.set_pointer_id(1);
    let event = PointerEvent::new_with_event_init_dict(kind, &init).unwrap();
    target.dispatch_event(&event).unwrap();
}

/// Presses on `from`, moves to `to`, releases there (on the element under the pointer).
async fn drag(from: &Element, to: (f64, f64)) {
    pointer(from, "pointerdown", center(from), false);
    let window: web_sys::EventTarget = window().into();
    pointer(&window, "pointermove", to, false);
    tick().await;
    pointer(&window, "pointerup", to, false);
    tick().await;
}

fn key(k: &str, ctrl: bool, shift: bool) {
    let init = KeyboardEventInit::new();
    init.set_key(k);
    init.set_ctrl_key(ctrl);
    init.set_shift_key(shift);
    init.set_bubbles(true);
    let event = KeyboardEvent::new_with_keyboard_event_init_dict("keydown", &init).unwrap();
    document().body().unwrap().dispatch_event(&event).unwrap();
}

fn mount() {
    let root = document().create_element("div").unwrap();
    root.set_attribute("style", "width: 1200px; height: 800px")
        .unwrap();
    document().body().unwrap().append_child(&root).unwrap();
    let style = document().create_element("style").unwrap();
    style.set_text_content(Some(include_str!("../static/style.css")));
    document().head().unwrap().append_child(&style).unwrap();
    leptos::mount::mount_to(root.unchecked_into(), || {
        provide_context(Sessions::new());
        view! { <div class="cc"><Designer name=None /></div> }
    })
    .forget();
}

#[wasm_bindgen_test]
async fn palette_drags_add_nodes_connections_refuse_cycles_and_every_edit_undoes() {
    mount();
    until("the canvas", || q("#cc-canvas").is_some()).await;
    let canvas = q("#cc-canvas").unwrap();
    let (cx, cy) = center(&canvas);
    let palette = q(r#".cc-palette-item[data-kind="project"]"#).unwrap();
    for (i, dx) in [-300.0, 0.0, 300.0].into_iter().enumerate() {
        drag(&palette, (cx + dx, cy + dx / 3.0)).await;
        until("the node", || all("#cc-canvas [data-node]") == i + 1).await;
    }
    // Dropped where released: the first node is left of the second.
    let x = |id: &str| center(&q(&format!(r#"[data-node="{id}"]"#)).unwrap()).0;
    assert!(x("project-1") < x("project-2") && x("project-2") < x("project-3"));

    for (from, to) in [("project-1", "project-2"), ("project-2", "project-3")] {
        let port = q(&format!(r#"[data-port-of="{from}"]"#)).unwrap();
        drag(
            &port,
            center(&q(&format!(r#"[data-node="{to}"] .cc-node-box"#)).unwrap()),
        )
        .await;
    }
    until("two edges", || all("#cc-canvas [data-edge]") == 2).await;
    let port = q(r#"[data-port-of="project-3"]"#).unwrap();
    drag(
        &port,
        center(&q(r#"[data-node="project-1"] .cc-node-box"#).unwrap()),
    )
    .await;
    until("the refusal", || {
        q("[data-notice]").is_some_and(|n| {
            n.text_content()
                .unwrap_or_default()
                .contains("would make a cycle")
        })
    })
    .await;
    assert_eq!(all("#cc-canvas [data-edge]"), 2, "the cycle was not drawn");

    // Moving a node by dragging it, then undo and redo of the move.
    let node = q(r#"[data-node="project-2"] .cc-node-box"#).unwrap();
    let before = center(&node);
    drag(&node, (before.0, before.1 + 120.0)).await;
    let moved = center(&q(r#"[data-node="project-2"] .cc-node-box"#).unwrap());
    assert!(
        (moved.1 - before.1 - 120.0).abs() < 2.0,
        "moved by the drag: {before:?} → {moved:?}"
    );
    key("z", true, false);
    tick().await;
    assert!(
        (center(&q(r#"[data-node="project-2"] .cc-node-box"#).unwrap()).1 - before.1).abs() < 2.0,
        "undone"
    );
    key("z", true, true);
    tick().await;
    assert!(
        (center(&q(r#"[data-node="project-2"] .cc-node-box"#).unwrap()).1 - moved.1).abs() < 2.0,
        "redone"
    );

    // Select all and delete; undo brings everything back.
    key("a", true, false);
    key("Delete", false, false);
    until("all deleted", || all("#cc-canvas [data-node]") == 0).await;
    key("z", true, false);
    until("restored", || {
        all("#cc-canvas [data-node]") == 3 && all("#cc-canvas [data-edge]") == 2
    })
    .await;

    // Copy and paste a node: a fresh id.
    let second = q(r#"[data-node="project-2"] .cc-node-box"#).unwrap();
    pointer(&second, "pointerdown", center(&second), false);
    pointer(&window().into(), "pointerup", center(&second), false);
    key("c", true, false);
    key("v", true, false);
    until("pasted", || q(r#"[data-node="project-2-copy"]"#).is_some()).await;
}
