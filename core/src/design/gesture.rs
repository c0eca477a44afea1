//! The designer's pointer gestures as a state machine: what a press starts, what moving shows,
//! what releasing does. The canvas only reads the DOM (where the pointer is, what is under it)
//! and carries out the answers, so every gesture is tested here without a browser.

use std::collections::BTreeSet;

use super::Kind;
use crate::template::{Position, Template};

/// Pixels of movement before a press becomes a drag (a click is not a move).
const DRAG_SLOP: f64 = 3.0;

/// What the pointer went down on.
#[derive(Debug, Clone, PartialEq)]
pub enum Press {
    /// A node's output port: a connection starts.
    Port(String),
    /// An edge: it is selected.
    Edge(usize),
    /// A node, with Shift held or not.
    Node { id: String, shift: bool },
    /// The background, with Shift held or not.
    Background { shift: bool },
    /// An item of the palette: a node of this kind is being added.
    Palette(Kind),
}

/// A gesture in progress.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Gesture {
    #[default]
    Idle,
    /// Dragging the background: pans from the viewport offset `origin` (a click without moving
    /// clears the selection).
    Pan {
        client: (f64, f64),
        origin: (f64, f64),
        moved: bool,
    },
    /// Dragging nodes from canvas point `start`.
    Move {
        start: Position,
        ids: BTreeSet<String>,
        moved: bool,
    },
    /// Dragging from a node's output port.
    Connect { from: String },
    /// Shift-dragging the background: box select.
    Select { start: Position },
    /// Dragging a palette item.
    Add(Kind),
}

/// What the canvas shows while the pointer moves.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    Nothing,
    /// The viewport's new offset.
    Pan {
        x: f64,
        y: f64,
    },
    /// The nodes being moved, drawn offset.
    Drag {
        ids: BTreeSet<String>,
        dx: f64,
        dy: f64,
    },
    /// The connection being drawn, from `from`'s port to the pointer.
    Link {
        from: String,
        to: Position,
    },
    /// The selection box.
    Rubber {
        from: Position,
        to: Position,
    },
    /// The node being added, at the pointer when it is over the canvas.
    Ghost {
        kind: Kind,
        at: Option<Position>,
    },
}

/// What releasing the pointer does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    ClearSelection,
    MoveNodes {
        ids: Vec<String>,
        dx: f64,
        dy: f64,
    },
    Connect {
        from: String,
        to: String,
    },
    /// Add the nodes inside the box to the selection.
    SelectBox {
        ids: BTreeSet<String>,
    },
    /// Add a node of `kind` centred at the pointer.
    AddNode {
        kind: Kind,
        at: Position,
    },
}

/// What a press means for the selection before the gesture goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    Keep,
    Edge(usize),
    /// The node alone.
    Only(String),
    /// The node in or out of the selection (Shift).
    Toggle(String),
}

impl Gesture {
    /// The gesture a press starts, and its effect on the selection. `selection` is the nodes
    /// selected before the press; `viewport` the viewport's offset.
    pub fn press(
        press: Press,
        at: Position,
        client: (f64, f64),
        viewport: (f64, f64),
        selection: &BTreeSet<String>,
    ) -> (Gesture, Select) {
        match press {
            Press::Port(from) => (Gesture::Connect { from }, Select::Keep),
            Press::Edge(i) => (Gesture::Idle, Select::Edge(i)),
            Press::Node { id, shift } => {
                let mut ids = selection.clone();
                let select = if shift {
                    if !ids.remove(&id) {
                        ids.insert(id.clone());
                    }
                    Select::Toggle(id)
                } else if ids.contains(&id) {
                    Select::Keep
                } else {
                    ids = BTreeSet::from([id.clone()]);
                    Select::Only(id)
                };
                let g = Gesture::Move {
                    start: at,
                    ids,
                    moved: false,
                };
                (g, select)
            }
            Press::Background { shift: true } => (Gesture::Select { start: at }, Select::Keep),
            Press::Background { shift: false } => (
                Gesture::Pan {
                    client,
                    origin: viewport,
                    moved: false,
                },
                Select::Keep,
            ),
            Press::Palette(kind) => (Gesture::Add(kind), Select::Keep),
        }
    }

    /// The pointer moved to canvas point `at` (screen point `client`); `over_canvas` tells
    /// whether it is above the canvas.
    pub fn moved(&mut self, at: Position, client: (f64, f64), over_canvas: bool) -> Shown {
        match self {
            Gesture::Idle => Shown::Nothing,
            Gesture::Pan {
                client: c,
                origin,
                moved,
            } => {
                let (dx, dy) = (client.0 - c.0, client.1 - c.1);
                *moved |= dx.abs() + dy.abs() > DRAG_SLOP;
                Shown::Pan {
                    x: origin.0 + dx,
                    y: origin.1 + dy,
                }
            }
            Gesture::Move { start, ids, moved } => {
                let (dx, dy) = (at.x - start.x, at.y - start.y);
                *moved |= dx.abs() + dy.abs() > DRAG_SLOP - 1.0;
                if *moved {
                    Shown::Drag {
                        ids: ids.clone(),
                        dx,
                        dy,
                    }
                } else {
                    Shown::Nothing
                }
            }
            Gesture::Connect { from } => Shown::Link {
                from: from.clone(),
                to: at,
            },
            Gesture::Select { start } => Shown::Rubber {
                from: *start,
                to: at,
            },
            Gesture::Add(kind) => Shown::Ghost {
                kind: *kind,
                at: over_canvas.then_some(at),
            },
        }
    }

    /// The pointer was released at canvas point `at`, over the node `under` (if any) and over
    /// the canvas or not. The gesture is over.
    pub fn release(
        self,
        at: Position,
        under: Option<&str>,
        over_canvas: bool,
        template: &Template,
        node_size: (f64, f64),
    ) -> Action {
        match self {
            Gesture::Idle => Action::Nothing,
            Gesture::Pan { moved: false, .. } => Action::ClearSelection,
            Gesture::Pan { .. } => Action::Nothing,
            Gesture::Move {
                ids,
                moved: true,
                start,
            } => Action::MoveNodes {
                ids: ids.into_iter().collect(),
                dx: at.x - start.x,
                dy: at.y - start.y,
            },
            Gesture::Move { .. } => Action::Nothing,
            Gesture::Connect { from } => match under.filter(|to| *to != from) {
                Some(to) => Action::Connect {
                    from,
                    to: to.to_string(),
                },
                None => Action::Nothing,
            },
            Gesture::Select { start } => {
                let (lo, hi) = (
                    Position {
                        x: start.x.min(at.x),
                        y: start.y.min(at.y),
                    },
                    Position {
                        x: start.x.max(at.x),
                        y: start.y.max(at.y),
                    },
                );
                let (w, h) = node_size;
                let ids = template
                    .nodes
                    .iter()
                    .filter(|n| {
                        let p = n.position.unwrap_or_default();
                        p.x + w >= lo.x && p.x <= hi.x && p.y + h >= lo.y && p.y <= hi.y
                    })
                    .map(|n| n.id.clone())
                    .collect();
                Action::SelectBox { ids }
            }
            Gesture::Add(kind) if over_canvas => Action::AddNode {
                kind,
                at: Position {
                    x: at.x - node_size.0 / 2.0,
                    y: at.y - node_size.1 / 2.0,
                },
            },
            Gesture::Add(_) => Action::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: (f64, f64) = (200.0, 56.0);

    fn p(x: f64, y: f64) -> Position {
        Position { x, y }
    }

    fn template() -> Template {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "concurrent/v1", "name": "t",
            "nodes": [
                {"id": "a", "kind": "project", "uri": "x", "position": {"x": 0, "y": 0}},
                {"id": "b", "kind": "project", "uri": "x", "position": {"x": 300, "y": 0}},
                {"id": "c", "kind": "project", "uri": "x", "position": {"x": 0, "y": 400}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn dragging_a_node_moves_the_selection_and_a_click_moves_nothing() {
        let selected = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let press = Press::Node {
            id: "a".into(),
            shift: false,
        };
        let (mut g, select) = Gesture::press(
            press.clone(),
            p(10.0, 10.0),
            (0.0, 0.0),
            (0.0, 0.0),
            &selected,
        );
        assert_eq!(
            select,
            Select::Keep,
            "pressing a selected node keeps the selection"
        );
        assert_eq!(
            g.moved(p(11.0, 10.0), (1.0, 0.0), true),
            Shown::Nothing,
            "within the slop"
        );
        assert!(
            matches!(g.moved(p(50.0, 30.0), (40.0, 20.0), true), Shown::Drag { ref ids, .. } if ids.len() == 2)
        );
        match g.release(p(50.0, 30.0), None, true, &template(), SIZE) {
            Action::MoveNodes { ids, dx, dy } => {
                assert_eq!(ids, vec!["a".to_string(), "b".to_string()]);
                assert_eq!((dx, dy), (40.0, 20.0));
            }
            other => panic!("{other:?}"),
        }
        let (g, _) = Gesture::press(press, p(10.0, 10.0), (0.0, 0.0), (0.0, 0.0), &selected);
        assert_eq!(
            g.release(p(10.0, 10.0), None, true, &template(), SIZE),
            Action::Nothing
        );
    }

    #[test]
    fn shift_toggles_and_a_plain_press_selects_only_that_node() {
        let selected = BTreeSet::from(["a".to_string()]);
        let (_, s) = Gesture::press(
            Press::Node {
                id: "a".into(),
                shift: true,
            },
            p(0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            &selected,
        );
        assert_eq!(s, Select::Toggle("a".into()));
        let (g, s) = Gesture::press(
            Press::Node {
                id: "c".into(),
                shift: false,
            },
            p(0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            &selected,
        );
        assert_eq!(s, Select::Only("c".into()));
        assert!(matches!(g, Gesture::Move { ref ids, .. } if ids.len() == 1 && ids.contains("c")));
    }

    #[test]
    fn connecting_needs_another_node_under_the_pointer() {
        let (mut g, _) = Gesture::press(
            Press::Port("a".into()),
            p(0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            &BTreeSet::new(),
        );
        assert_eq!(
            g.moved(p(5.0, 5.0), (5.0, 5.0), true),
            Shown::Link {
                from: "a".into(),
                to: p(5.0, 5.0)
            }
        );
        assert_eq!(
            g.clone()
                .release(p(5.0, 5.0), Some("a"), true, &template(), SIZE),
            Action::Nothing
        );
        assert_eq!(
            g.clone()
                .release(p(5.0, 5.0), None, true, &template(), SIZE),
            Action::Nothing
        );
        assert_eq!(
            g.release(p(5.0, 5.0), Some("b"), true, &template(), SIZE),
            Action::Connect {
                from: "a".into(),
                to: "b".into()
            }
        );
    }

    #[test]
    fn a_box_selects_the_nodes_it_touches() {
        let (g, _) = Gesture::press(
            Press::Background { shift: true },
            p(-10.0, -10.0),
            (0.0, 0.0),
            (0.0, 0.0),
            &BTreeSet::new(),
        );
        match g.release(p(350.0, 20.0), None, true, &template(), SIZE) {
            Action::SelectBox { ids } => {
                assert_eq!(ids, BTreeSet::from(["a".to_string(), "b".to_string()]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_background_pans_and_a_click_on_it_clears_the_selection() {
        let (mut g, _) = Gesture::press(
            Press::Background { shift: false },
            p(0.0, 0.0),
            (100.0, 100.0),
            (5.0, 7.0),
            &BTreeSet::new(),
        );
        assert_eq!(
            g.moved(p(0.0, 0.0), (130.0, 90.0), true),
            Shown::Pan { x: 35.0, y: -3.0 }
        );
        assert_eq!(
            g.release(p(0.0, 0.0), None, true, &template(), SIZE),
            Action::Nothing
        );
        let (g, _) = Gesture::press(
            Press::Background { shift: false },
            p(0.0, 0.0),
            (100.0, 100.0),
            (0.0, 0.0),
            &BTreeSet::new(),
        );
        assert_eq!(
            g.release(p(0.0, 0.0), None, true, &template(), SIZE),
            Action::ClearSelection
        );
    }

    #[test]
    fn a_palette_item_adds_a_node_only_when_dropped_on_the_canvas() {
        let (mut g, _) = Gesture::press(
            Press::Palette(Kind::Project),
            p(0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            &BTreeSet::new(),
        );
        assert_eq!(
            g.moved(p(500.0, 300.0), (0.0, 0.0), false),
            Shown::Ghost {
                kind: Kind::Project,
                at: None
            }
        );
        assert_eq!(
            g.clone()
                .release(p(500.0, 300.0), None, false, &template(), SIZE),
            Action::Nothing
        );
        assert_eq!(
            g.release(p(500.0, 300.0), None, true, &template(), SIZE),
            Action::AddNode {
                kind: Kind::Project,
                at: p(400.0, 272.0)
            }
        );
    }
}
