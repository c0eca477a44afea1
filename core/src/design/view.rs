//! What part of the canvas the designer shows, and how much detail: fitting a DAG to the space
//! the page gives, zooming, and when labels are worth drawing.

use crate::template::Position;

/// A node's box on the canvas, in canvas units.
pub const NODE_W: f64 = 200.0;
pub const NODE_H: f64 = 56.0;
/// The node title's font size in canvas units (the stylesheet's `.cc-node-title`).
pub const TITLE_PX: f64 = 13.0;
/// A fit never shrinks titles below this many CSS pixels: smaller DAG views scroll instead.
pub const READABLE_TITLE_PX: f64 = 8.0;
/// Titles smaller than this many device pixels are left out (boxes and lines only): they
/// cannot be read, and text is most of the paint of a big DAG.
pub const LABEL_DEVICE_PX: f64 = 6.0;
pub const MIN_SCALE: f64 = 0.05;
pub const MAX_SCALE: f64 = 3.0;
/// A fit does not blow a tiny DAG up beyond this.
const MAX_FIT_SCALE: f64 = 1.25;
/// Space kept around a fitted DAG, in CSS pixels.
const MARGIN: f64 = 32.0;

/// The canvas transform: screen = canvas × scale + (x, y), in CSS pixels relative to the canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    pub x: f64,
    pub y: f64,
    pub scale: f64,
}

impl Default for Viewport {
    fn default() -> Self {
        Viewport {
            x: 40.0,
            y: 40.0,
            scale: 1.0,
        }
    }
}

/// The smallest scale at which a fit still shows readable titles.
pub fn readable_scale() -> f64 {
    READABLE_TITLE_PX / TITLE_PX
}

/// Whether node labels are drawn at `scale` on a screen of `device_pixel_ratio` (browser zoom
/// and high-density screens make the same zoom more legible).
pub fn shows_labels(scale: f64, device_pixel_ratio: f64) -> bool {
    TITLE_PX * scale * device_pixel_ratio.max(0.25) >= LABEL_DEVICE_PX
}

/// Grid step of [`near_area`], in canvas units: the area changes only when the view crosses a
/// tile edge, so panning re-decides what is drawn a few times, not on every frame.
const NEAR_TILE: f64 = 512.0;

/// The canvas area near the screen, whose nodes and edges are drawn (with labels, when the zoom
/// shows them): what a canvas of `size` CSS pixels shows, and a tile more around it, snapped to
/// the tile grid. Building the elements of a big DAG's far parts was most of the time of
/// opening it, and labels far off-screen most of its paint.
pub fn near_area(v: Viewport, size: (f64, f64)) -> (Position, Position) {
    let (lo, hi) = (to_canvas(v, (0.0, 0.0)), to_canvas(v, size));
    let down = |x: f64| (x / NEAR_TILE).floor() * NEAR_TILE - NEAR_TILE;
    let up = |x: f64| (x / NEAR_TILE).ceil() * NEAR_TILE + NEAR_TILE;
    (
        Position {
            x: down(lo.x) - NODE_W,
            y: down(lo.y) - NODE_H,
        },
        Position {
            x: up(hi.x),
            y: up(hi.y),
        },
    )
}

/// Whether a node anchored at `p` lies in `area`.
pub fn within(area: (Position, Position), p: Position) -> bool {
    (area.0.x..=area.1.x).contains(&p.x) && (area.0.y..=area.1.y).contains(&p.y)
}

/// Whether an edge between nodes anchored at `a` and `b` may pass through `area` (its bounding
/// box meets it): a long edge between two far nodes can cross the screen.
pub fn edge_near(area: (Position, Position), a: Position, b: Position) -> bool {
    a.x.min(b.x) <= area.1.x
        && a.x.max(b.x) >= area.0.x
        && a.y.min(b.y) <= area.1.y
        && a.y.max(b.y) >= area.0.y
}

/// How a fit treats a DAG too big to show whole at a readable size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Never below a readable scale: show the DAG's start (top-left) and let the user scroll.
    Readable,
    /// Everything, however small (an overview of a big DAG).
    Whole,
}

/// The viewport showing the nodes within `bounds` (their anchor points, as from
/// [`super::bounds`]) on a canvas of `view` CSS pixels.
pub fn fit(bounds: Option<(Position, Position)>, view: (f64, f64), how: Fit) -> Viewport {
    let Some((lo, hi)) = bounds else {
        return Viewport::default();
    };
    let (w, h) = (view.0.max(1.0), view.1.max(1.0));
    let (cw, ch) = (hi.x - lo.x + NODE_W, hi.y - lo.y + NODE_H);
    let room = (
        (w - 2.0 * MARGIN).max(w / 2.0),
        (h - 2.0 * MARGIN).max(h / 2.0),
    );
    let whole = (room.0 / cw)
        .min(room.1 / ch)
        .clamp(MIN_SCALE, MAX_FIT_SCALE);
    let scale = match how {
        Fit::Whole => whole,
        Fit::Readable => whole.max(readable_scale().min(MAX_FIT_SCALE)),
    };
    // Centred along each axis the DAG fits in; otherwise its start is at the margin.
    let place = |size: f64, content: f64, low: f64| {
        if content * scale <= size - 2.0 * MARGIN {
            (size - content * scale) / 2.0 - low * scale
        } else {
            MARGIN - low * scale
        }
    };
    Viewport {
        x: place(w, cw, lo.x),
        y: place(h, ch, lo.y),
        scale,
    }
}

/// What the Fit button does next: a readable fit, or, when the view already is one and the DAG
/// does not fit whole at it, the whole DAG.
pub fn next_fit(
    current: Viewport,
    bounds: Option<(Position, Position)>,
    view: (f64, f64),
) -> Viewport {
    let readable = fit(bounds, view, Fit::Readable);
    if close(current, readable) {
        fit(bounds, view, Fit::Whole)
    } else {
        readable
    }
}

fn close(a: Viewport, b: Viewport) -> bool {
    (a.x - b.x).abs() < 0.5 && (a.y - b.y).abs() < 0.5 && (a.scale - b.scale).abs() < 1e-3
}

/// Zooms by `factor`, keeping the canvas point under `at` (CSS pixels in the canvas) in place.
pub fn zoom_at(v: Viewport, factor: f64, at: (f64, f64)) -> Viewport {
    let scale = (v.scale * factor).clamp(MIN_SCALE, MAX_SCALE);
    let k = scale / v.scale;
    Viewport {
        x: at.0 - (at.0 - v.x) * k,
        y: at.1 - (at.1 - v.y) * k,
        scale,
    }
}

/// The canvas point at the client-relative point `at`.
pub fn to_canvas(v: Viewport, at: (f64, f64)) -> Position {
    Position {
        x: (at.0 - v.x) / v.scale,
        y: (at.1 - v.y) / v.scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(x: f64, y: f64) -> Position {
        Position { x, y }
    }

    /// Where the box of the node anchored at `at` lands on screen.
    fn on_screen(v: Viewport, at: Position) -> (f64, f64, f64, f64) {
        let (x, y) = (at.x * v.scale + v.x, at.y * v.scale + v.y);
        (x, y, x + NODE_W * v.scale, y + NODE_H * v.scale)
    }

    #[test]
    fn a_small_dag_in_a_narrow_canvas_stays_readable_and_shows_its_start() {
        let bounds = Some((p(0.0, 80.0), p(520.0, 80.0)));
        let v = fit(bounds, (275.0, 600.0), Fit::Readable);
        assert!((v.scale - readable_scale()).abs() < 1e-9, "{v:?}");
        assert!(shows_labels(v.scale, 1.0));
        let first = on_screen(v, p(0.0, 80.0));
        assert!(
            (first.0 - MARGIN).abs() < 1e-9,
            "the first node at the left margin: {first:?}"
        );
        assert!(
            first.1 > 0.0 && first.3 < 600.0,
            "vertically centred: {first:?}"
        );
        // Asked again, the view zooms out to all of it; and again, back to readable.
        let whole = next_fit(v, bounds, (275.0, 600.0));
        assert!(whole.scale < v.scale);
        assert!(on_screen(whole, p(520.0, 80.0)).2 <= 275.0);
        assert_eq!(next_fit(whole, bounds, (275.0, 600.0)), v);
    }

    #[test]
    fn a_dag_that_fits_is_centred_at_a_comfortable_scale() {
        let bounds = Some((p(0.0, 80.0), p(520.0, 80.0)));
        let v = fit(bounds, (600.0, 500.0), Fit::Readable);
        assert!(v.scale > readable_scale() && v.scale <= MAX_FIT_SCALE);
        let (l, _, _, _) = on_screen(v, p(0.0, 80.0));
        let (_, _, r, _) = on_screen(v, p(520.0, 80.0));
        assert!((l - (600.0 - r)).abs() < 1e-6, "centred: {l} … {r}");
        // One node is not blown up to fill the screen.
        assert_eq!(
            fit(
                Some((p(0.0, 0.0), p(0.0, 0.0))),
                (1600.0, 900.0),
                Fit::Readable
            )
            .scale,
            MAX_FIT_SCALE
        );
        assert_eq!(
            fit(None, (600.0, 500.0), Fit::Readable),
            Viewport::default()
        );
    }

    #[test]
    fn labels_follow_the_text_size_on_the_screen() {
        assert!(!shows_labels(0.3, 1.0), "3.9 px titles are not drawn");
        assert!(
            shows_labels(0.3, 2.0),
            "the same zoom at 200% or on a dense screen is legible"
        );
        assert!(shows_labels(readable_scale(), 1.0));
        assert!(!shows_labels(MIN_SCALE, 3.0));
    }

    proptest! {
        #[test]
        fn a_whole_fit_shows_every_node_and_a_readable_one_never_shrinks_titles(
            x0 in -5000.0..5000.0f64, y0 in -5000.0..5000.0f64,
            dx in 0.0..40000.0f64, dy in 0.0..40000.0f64,
            w in 200.0..3000.0f64, h in 200.0..2000.0f64,
        ) {
            let bounds = Some((p(x0, y0), p(x0 + dx, y0 + dy)));
            let whole = fit(bounds, (w, h), Fit::Whole);
            let (l, t, _, _) = on_screen(whole, p(x0, y0));
            let (_, _, r, b) = on_screen(whole, p(x0 + dx, y0 + dy));
            if whole.scale > MIN_SCALE {
                prop_assert!(l >= -1e-6 && t >= -1e-6 && r <= w + 1e-6 && b <= h + 1e-6, "{whole:?}: {l},{t} {r},{b}");
            }
            let readable = fit(bounds, (w, h), Fit::Readable);
            prop_assert!(readable.scale >= readable_scale() - 1e-12);
            // Its start is on screen.
            let (l, t, _, _) = on_screen(readable, p(x0, y0));
            prop_assert!(l >= -1e-6 && t >= -1e-6 && l < w && t < h);
        }

        #[test]
        fn zooming_keeps_the_point_under_the_pointer(
            x in -2000.0..2000.0f64, y in -2000.0..2000.0f64, scale in 0.1..2.0f64,
            ax in 0.0..1500.0f64, ay in 0.0..900.0f64, factor in 0.5..2.0f64,
        ) {
            let v = Viewport { x, y, scale };
            let before = to_canvas(v, (ax, ay));
            let after = to_canvas(zoom_at(v, factor, (ax, ay)), (ax, ay));
            prop_assert!((before.x - after.x).abs() < 1e-6 && (before.y - after.y).abs() < 1e-6);
        }
    }

    #[test]
    fn what_is_drawn_covers_the_screen_and_a_tile_around_it_and_moves_in_steps() {
        let v = Viewport {
            x: 0.0,
            y: 0.0,
            scale: 1.0,
        };
        let area = near_area(v, (1000.0, 600.0));
        for p in [(0.0, 0.0), (999.0, 599.0), (-100.0, -30.0), (1400.0, 900.0)] {
            assert!(
                within(area, Position { x: p.0, y: p.1 }),
                "{p:?} in {area:?}"
            );
        }
        assert!(!within(area, Position { x: 5000.0, y: 0.0 }));
        // A small pan inside the same tile changes nothing.
        let panned = Viewport { x: -10.0, ..v };
        assert_eq!(near_area(panned, (1000.0, 600.0)), area);
        assert_ne!(
            near_area(Viewport { x: -600.0, ..v }, (1000.0, 600.0)),
            area
        );
        // Edges: one end near, both far but crossing the screen, both far and beside it.
        let at = |x, y| Position { x, y };
        assert!(edge_near(area, at(100.0, 100.0), at(9000.0, 100.0)));
        assert!(edge_near(area, at(-9000.0, 300.0), at(9000.0, 300.0)));
        assert!(!edge_near(area, at(5000.0, 0.0), at(9000.0, 300.0)));
        assert!(!edge_near(area, at(0.0, 5000.0), at(900.0, 9000.0)));
    }
}
