//! The designer's decisions, pure so they are tested without a browser: `editor` (every edit,
//! with undo/redo), `layout` (the layered auto-layout), `gesture` (pointer gestures), `view`
//! (fitting, zooming and level of detail), `sweep_form` (the sweep editor's fields), and the
//! small helpers below.

mod editor;
pub mod gesture;
mod layout;
pub mod sweep_form;
pub mod view;

pub use editor::{Clipboard, EditError, Editor, Kind, HISTORY};
pub use layout::{layout, place_unpositioned, LAYER_GAP, ROW_GAP};
pub use view::{Viewport, NODE_H, NODE_W};

use crate::template::{Position, Template};

/// The smallest box around every positioned node: (top-left, bottom-right corner of the nodes'
/// anchor points).
pub fn bounds(t: &Template) -> Option<(Position, Position)> {
    let mut it = t.nodes.iter().filter_map(|n| n.position);
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), p| {
        (
            Position {
                x: lo.x.min(p.x),
                y: lo.y.min(p.y),
            },
            Position {
                x: hi.x.max(p.x),
                y: hi.y.max(p.y),
            },
        )
    }))
}

/// Why a by-key regex cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key regex {0}")]
pub struct KeyRegexError(pub String);

/// The key a by-key regex extracts from each sample path (`None`: the path does not match, so
/// a run would refuse it).
///
/// # Errors
/// Why the regex cannot serve as a key regex.
pub fn key_preview(
    regex: &str,
    paths: &[&str],
) -> Result<Vec<(String, Option<String>)>, KeyRegexError> {
    if let Some(why) = crate::validate::key_regex_problem(regex) {
        return Err(KeyRegexError(why));
    }
    let re = regex_lite::Regex::new(regex).map_err(|e| KeyRegexError(e.to_string()))?;
    Ok(paths
        .iter()
        .map(|p| {
            (
                p.to_string(),
                re.captures(p)
                    .and_then(|c| c.get(1))
                    .map(|m| m.as_str().to_string()),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests;
