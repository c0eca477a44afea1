//! Editing a template in the designer: the operations behind every pointer and keyboard action,
//! with undo/redo and a layered auto-layout. Pure, so it is tested without a browser.

use std::collections::{BTreeMap, HashMap};

use crate::template::{
    Edge, InferenceSpec, InputSpec, Node, NodeKind, Partition, Position, ProjectSpec, Template,
};

/// Horizontal and vertical spacing of the auto-layout, in canvas units.
pub const LAYER_GAP: f64 = 300.0;
pub const ROW_GAP: f64 = 110.0;

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("there is no node {0:?}")]
    NoSuchNode(String),
    #[error("a node cannot feed itself")]
    SelfLoop,
    #[error("input {input:?} of {to:?} is already connected")]
    InputTaken { to: String, input: String },
    #[error("there is no edge #{0}")]
    NoSuchEdge(usize),
    #[error("a node with id {0:?} exists already")]
    IdTaken(String),
    #[error("input nodes take no inputs")]
    IntoInput,
    /// The path that the new edge would close into a cycle.
    #[error("connecting {from} → {to} would make a cycle: {}", .path.join(" → "))]
    Cycle {
        from: String,
        to: String,
        path: Vec<String>,
    },
}

/// The kinds the palette offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Project,
    Inference,
    Input,
}

/// How many edits can be undone; each holds a copy of the template.
pub const HISTORY: usize = 200;

/// What a validation problem's JSON pointer points at, so the designer can mark the culprit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(usize),
    Edge(usize),
    Parameter(usize),
    Template,
}

/// The node, edge or parameter a problem path (`/nodes/2/uri`) belongs to.
pub fn target_of(path: &str) -> Target {
    let mut parts = path.trim_start_matches('/').split('/');
    let (kind, index) = (parts.next(), parts.next().and_then(|i| i.parse().ok()));
    match (kind, index) {
        (Some("nodes"), Some(i)) => Target::Node(i),
        (Some("edges"), Some(i)) => Target::Edge(i),
        (Some("parameters"), Some(i)) => Target::Parameter(i),
        _ => Target::Template,
    }
}

/// Nodes and the edges between them, as copied; pasting gives them fresh ids.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Clipboard {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

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

/// The key a by-key regex extracts from each sample path (`None`: the path does not match, so
/// a run would refuse it).
///
/// # Errors
/// Why the regex cannot serve as a key regex.
pub fn key_preview(regex: &str, paths: &[&str]) -> Result<Vec<(String, Option<String>)>, String> {
    if let Some(why) = crate::validate::key_regex_problem(regex) {
        return Err(format!("the key regex {why}"));
    }
    let re = regex_lite::Regex::new(regex).map_err(|e| e.to_string())?;
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

/// A template under edit, with its history.
#[derive(Debug, Clone)]
pub struct Editor {
    template: Template,
    undo: Vec<Template>,
    redo: Vec<Template>,
}

impl Editor {
    pub fn new(template: Template) -> Editor {
        Editor {
            template,
            undo: Vec::new(),
            redo: Vec::new(),
        }
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Records the current state before an edit.
    fn checkpoint(&mut self) {
        if self.undo.len() == HISTORY {
            self.undo.remove(0);
        }
        self.undo.push(self.template.clone());
        self.redo.clear();
    }

    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(std::mem::replace(&mut self.template, prev));
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(&mut self.template, next));
                true
            }
            None => false,
        }
    }

    /// Adds a node of `kind` at `at`; its id is the kind with the first free number.
    pub fn add_node(&mut self, kind: Kind, at: Position) -> String {
        let (prefix, spec) = match kind {
            Kind::Project => (
                "project",
                NodeKind::Project(ProjectSpec {
                    uri: String::new(),
                    version: None,
                    sub_path: None,
                    entry_point: "main".into(),
                    parameters: BTreeMap::new(),
                }),
            ),
            Kind::Inference => (
                "inference",
                NodeKind::Inference(InferenceSpec {
                    model_uri: String::new(),
                }),
            ),
            Kind::Input => (
                "input",
                NodeKind::Input(InputSpec {
                    run_id: None,
                    artifact_path: None,
                    path: None,
                }),
            ),
        };
        let id = (1..)
            .map(|n| format!("{prefix}-{n}"))
            .find(|id| self.template.node(id).is_none())
            .expect("an unused id exists");
        self.checkpoint();
        self.template.nodes.push(Node {
            id: id.clone(),
            name: String::new(),
            kind: spec,
            instances: 1,
            cluster: None,
            image: None,
            resources: Default::default(),
            retries: Default::default(),
            timeout_seconds: None,
            env: Default::default(),
            secret_env: Default::default(),
            env_manager: None,
            position: Some(at),
        });
        id
    }

    /// Moves nodes by an offset (one undo step for the whole drag).
    pub fn move_nodes(&mut self, ids: &[String], dx: f64, dy: f64) {
        self.checkpoint();
        for n in self
            .template
            .nodes
            .iter_mut()
            .filter(|n| ids.contains(&n.id))
        {
            let p = n.position.unwrap_or_default();
            n.position = Some(Position {
                x: p.x + dx,
                y: p.y + dy,
            });
        }
    }

    /// Connects `from`'s outputs to input `input` of `to`, refusing cycles on the spot.
    ///
    /// # Errors
    /// [`EditError`] naming why; the template is unchanged.
    pub fn connect(&mut self, from: &str, to: &str, input: &str) -> Result<(), EditError> {
        for id in [from, to] {
            if self.template.node(id).is_none() {
                return Err(EditError::NoSuchNode(id.into()));
            }
        }
        if from == to {
            return Err(EditError::SelfLoop);
        }
        if matches!(
            self.template.node(to).map(|n| &n.kind),
            Some(NodeKind::Input(_))
        ) {
            return Err(EditError::IntoInput);
        }
        if self
            .template
            .edges
            .iter()
            .any(|e| e.to == to && e.input == input)
        {
            return Err(EditError::InputTaken {
                to: to.into(),
                input: input.into(),
            });
        }
        if let Some(mut path) = path_between(&self.template, to, from) {
            path.push(to.to_string());
            return Err(EditError::Cycle {
                from: from.into(),
                to: to.into(),
                path,
            });
        }
        self.checkpoint();
        self.template.edges.push(Edge {
            from: from.into(),
            to: to.into(),
            input: input.into(),
            partition: Partition::default(),
        });
        Ok(())
    }

    /// Deletes nodes (with their edges) and edges (by index), as one undo step.
    pub fn delete(&mut self, nodes: &[String], edges: &[usize]) {
        self.checkpoint();
        let mut i = 0;
        self.template.edges.retain(|e| {
            let keep = !edges.contains(&i) && !nodes.contains(&e.from) && !nodes.contains(&e.to);
            i += 1;
            keep
        });
        self.template.nodes.retain(|n| !nodes.contains(&n.id));
    }

    /// Changes one node (an inspector edit).
    ///
    /// # Errors
    /// [`EditError::NoSuchNode`].
    pub fn update_node(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Node),
    ) -> Result<(), EditError> {
        let i = self
            .template
            .nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| EditError::NoSuchNode(id.into()))?;
        self.checkpoint();
        change(&mut self.template.nodes[i]);
        Ok(())
    }

    /// Changes one edge (an inspector edit).
    ///
    /// # Errors
    /// [`EditError::NoSuchEdge`], or [`EditError::InputTaken`] when renaming onto a used input.
    pub fn update_edge(
        &mut self,
        index: usize,
        change: impl FnOnce(&mut Edge),
    ) -> Result<(), EditError> {
        let mut edge = self
            .template
            .edges
            .get(index)
            .cloned()
            .ok_or(EditError::NoSuchEdge(index))?;
        change(&mut edge);
        let taken = self
            .template
            .edges
            .iter()
            .enumerate()
            .any(|(i, e)| i != index && e.to == edge.to && e.input == edge.input);
        if taken {
            return Err(EditError::InputTaken {
                to: edge.to,
                input: edge.input,
            });
        }
        self.checkpoint();
        self.template.edges[index] = edge;
        Ok(())
    }

    /// Changes template-level fields: name, description, parameters.
    pub fn update_template(&mut self, change: impl FnOnce(&mut Template)) {
        self.checkpoint();
        change(&mut self.template);
    }

    /// Replaces the whole template (an import), as one undo step; nodes without positions are
    /// laid out.
    pub fn replace(&mut self, mut template: Template) {
        if template.nodes.iter().any(|n| n.position.is_none()) {
            let positions = layout(&template);
            for n in &mut template.nodes {
                n.position = positions.get(&n.id).copied();
            }
        }
        self.checkpoint();
        self.template = template;
    }

    /// Gives a node a new id and keeps its edges.
    ///
    /// # Errors
    /// [`EditError::NoSuchNode`], or [`EditError::IdTaken`].
    pub fn rename_node(&mut self, id: &str, new_id: &str) -> Result<(), EditError> {
        if self.template.node(id).is_none() {
            return Err(EditError::NoSuchNode(id.into()));
        }
        if id == new_id {
            return Ok(());
        }
        if self.template.node(new_id).is_some() {
            return Err(EditError::IdTaken(new_id.into()));
        }
        self.checkpoint();
        for n in self.template.nodes.iter_mut().filter(|n| n.id == id) {
            n.id = new_id.into();
        }
        for e in &mut self.template.edges {
            for end in [&mut e.from, &mut e.to] {
                if end == id {
                    *end = new_id.into();
                }
            }
        }
        Ok(())
    }

    /// The selected nodes and the edges among them.
    pub fn copy(&self, ids: &[String]) -> Clipboard {
        Clipboard {
            nodes: self
                .template
                .nodes
                .iter()
                .filter(|n| ids.contains(&n.id))
                .cloned()
                .collect(),
            edges: self
                .template
                .edges
                .iter()
                .filter(|e| ids.contains(&e.from) && ids.contains(&e.to))
                .cloned()
                .collect(),
        }
    }

    /// Adds copies of the clipboard's nodes, offset by (dx, dy), with fresh ids (`<id>-copy`,
    /// `<id>-copy-2`, …) and their edges among them; one undo step. Returns the new ids.
    pub fn paste(&mut self, clip: &Clipboard, dx: f64, dy: f64) -> Vec<String> {
        if clip.nodes.is_empty() {
            return Vec::new();
        }
        self.checkpoint();
        let mut renamed: HashMap<&str, String> = HashMap::new();
        for n in &clip.nodes {
            let base = format!("{}-copy", n.id);
            let id = std::iter::once(base.clone())
                .chain((2..).map(|i| format!("{base}-{i}")))
                .find(|c| self.template.node(c).is_none())
                .expect("an unused id exists");
            let mut copy = n.clone();
            copy.id = id.clone();
            let p = n.position.unwrap_or_default();
            copy.position = Some(Position {
                x: p.x + dx,
                y: p.y + dy,
            });
            self.template.nodes.push(copy);
            renamed.insert(n.id.as_str(), id);
        }
        for e in &clip.edges {
            if let (Some(from), Some(to)) =
                (renamed.get(e.from.as_str()), renamed.get(e.to.as_str()))
            {
                self.template.edges.push(Edge {
                    from: from.clone(),
                    to: to.clone(),
                    ..e.clone()
                });
            }
        }
        clip.nodes
            .iter()
            .map(|n| renamed[n.id.as_str()].clone())
            .collect()
    }

    /// Places every node with [`layout`] (one undo step).
    pub fn auto_layout(&mut self) {
        let positions = layout(&self.template);
        self.checkpoint();
        for n in &mut self.template.nodes {
            n.position = positions.get(&n.id).copied();
        }
    }
}

/// Gives the nodes that have no position their place in [`layout`], keeping the others (a
/// hand-written template opened in the designer or the run view).
pub fn place_unpositioned(t: &mut Template) {
    if t.nodes.iter().all(|n| n.position.is_some()) {
        return;
    }
    let at = layout(t);
    for n in &mut t.nodes {
        n.position = n.position.or(at.get(&n.id).copied());
    }
}

/// A path of edges from `start` to `goal`, as node ids, if there is one.
fn path_between(t: &Template, start: &str, goal: &str) -> Option<Vec<String>> {
    let mut previous: HashMap<&str, &str> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = std::collections::HashSet::from([start]);
    while let Some(at) = queue.pop_front() {
        if at == goal {
            let mut path = vec![goal.to_string()];
            let mut cur = goal;
            while let Some(p) = previous.get(cur) {
                path.push(p.to_string());
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for e in t.edges.iter().filter(|e| e.from == at) {
            if seen.insert(e.to.as_str()) {
                previous.insert(e.to.as_str(), at);
                queue.push_back(e.to.as_str());
            }
        }
    }
    None
}

/// Layered, left-to-right positions: a node's layer is its longest path from a source; within
/// a layer nodes are ordered by the mean row of their upstream nodes (fewer crossings). Nodes on
/// a cycle (an invalid draft) go to the last layer.
pub fn layout(t: &Template) -> HashMap<String, Position> {
    let ids: Vec<&str> = t.nodes.iter().map(|n| n.id.as_str()).collect();
    let mut layer: HashMap<&str, usize> = ids.iter().map(|id| (*id, 0)).collect();
    // Longest-path layering by relaxation; |V| rounds bound it even with cycles.
    for _ in 0..ids.len() {
        let mut changed = false;
        for e in &t.edges {
            if let (Some(&lf), Some(&lt)) = (layer.get(e.from.as_str()), layer.get(e.to.as_str())) {
                if lt < lf + 1 && lf + 1 < ids.len().max(1) {
                    layer.insert(e.to.as_str(), lf + 1);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let depth = layer.values().copied().max().unwrap_or(0);
    let mut rows: HashMap<&str, f64> = HashMap::new();
    let mut out = HashMap::new();
    for l in 0..=depth {
        let mut members: Vec<(f64, usize, &str)> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| layer[*id] == l)
            .map(|(order, id)| {
                let ups: Vec<f64> = t
                    .edges
                    .iter()
                    .filter(|e| e.to == *id)
                    .filter_map(|e| rows.get(e.from.as_str()).copied())
                    .collect();
                let key = if ups.is_empty() {
                    order as f64
                } else {
                    ups.iter().sum::<f64>() / ups.len() as f64
                };
                (key, order, *id)
            })
            .collect();
        members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (row, (_, _, id)) in members.into_iter().enumerate() {
            rows.insert(id, row as f64);
            out.insert(
                id.to_string(),
                Position {
                    x: l as f64 * LAYER_GAP,
                    y: row as f64 * ROW_GAP,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn empty() -> Editor {
        Editor::new(Template {
            api_version: crate::template::API_VERSION.into(),
            name: "t".into(),
            description: String::new(),
            parameters: vec![],
            nodes: vec![],
            edges: vec![],
        })
    }

    #[test]
    fn a_connection_that_would_make_a_cycle_is_refused_with_the_path() {
        let mut e = empty();
        let [a, b, c] = [0.0, 1.0, 2.0].map(|x| e.add_node(Kind::Project, Position { x, y: 0.0 }));
        e.connect(&a, &b, "data").unwrap();
        e.connect(&b, &c, "data").unwrap();
        let err = e.connect(&c, &a, "data").unwrap_err();
        assert_eq!(err.to_string(), "connecting project-3 → project-1 would make a cycle: project-1 → project-2 → project-3 → project-1");
        assert_eq!(e.template().edges.len(), 2, "nothing changed");
        assert_eq!(e.connect(&a, &a, "x").unwrap_err(), EditError::SelfLoop);
        assert!(matches!(
            e.connect(&a, &b, "data").unwrap_err(),
            EditError::InputTaken { .. }
        ));
        let i = e.add_node(Kind::Input, Position::default());
        assert_eq!(e.connect(&a, &i, "data").unwrap_err(), EditError::IntoInput);
    }

    #[test]
    fn every_edit_undoes_and_redoes() {
        let mut e = empty();
        let a = e.add_node(Kind::Project, Position::default());
        let b = e.add_node(Kind::Inference, Position::default());
        e.connect(&a, &b, "data").unwrap();
        e.move_nodes(&[a.clone()], 10.0, 5.0);
        e.update_node(&b, |n| n.instances = 4).unwrap();
        let done = e.template().clone();
        e.delete(&[a.clone()], &[]);
        assert!(
            e.template().edges.is_empty(),
            "a deleted node takes its edges"
        );
        assert!(e.undo());
        assert_eq!(e.template(), &done);
        for _ in 0..5 {
            assert!(e.undo());
        }
        assert!(!e.undo());
        assert!(e.template().nodes.is_empty());
        for _ in 0..6 {
            assert!(e.redo());
        }
        assert!(e.template().nodes.len() == 1 && !e.can_redo());
    }

    #[test]
    fn auto_layout_puts_every_edge_left_to_right() {
        let mut e = empty();
        let ids: Vec<String> = (0..5)
            .map(|_| e.add_node(Kind::Project, Position::default()))
            .collect();
        for (f, t) in [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (0, 4)] {
            e.connect(&ids[f], &ids[t], &format!("in{f}")).unwrap();
        }
        e.auto_layout();
        let pos: HashMap<&str, Position> = e
            .template()
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.position.unwrap()))
            .collect();
        for edge in &e.template().edges {
            assert!(
                pos[edge.from.as_str()].x < pos[edge.to.as_str()].x,
                "{edge:?}"
            );
        }
        assert_eq!(
            pos[ids[4].as_str()].x,
            3.0 * LAYER_GAP,
            "longest path decides the layer"
        );
    }

    #[test]
    fn problems_point_at_their_node_edge_or_parameter() {
        assert_eq!(target_of("/nodes/3/uri"), Target::Node(3));
        assert_eq!(target_of("/edges/0/partition/keyRegex"), Target::Edge(0));
        assert_eq!(target_of("/parameters/1/name"), Target::Parameter(1));
        assert_eq!(target_of("/edges"), Target::Template);
        assert_eq!(target_of("/name"), Target::Template);
    }

    #[test]
    fn paste_gives_fresh_ids_keeps_inner_edges_and_undoes_at_once() {
        let mut e = empty();
        let a = e.add_node(Kind::Project, Position { x: 0.0, y: 0.0 });
        let b = e.add_node(Kind::Project, Position { x: 100.0, y: 0.0 });
        let c = e.add_node(Kind::Project, Position { x: 200.0, y: 0.0 });
        e.connect(&a, &b, "data").unwrap();
        e.connect(&b, &c, "data").unwrap();
        let clip = e.copy(&[a.clone(), b.clone()]);
        assert_eq!(clip.edges.len(), 1, "only the edge among the copied nodes");
        let first = e.paste(&clip, 10.0, 10.0);
        let second = e.paste(&clip, 20.0, 20.0);
        assert_eq!(first, vec!["project-1-copy", "project-2-copy"]);
        assert_eq!(second, vec!["project-1-copy-2", "project-2-copy-2"]);
        assert!(e
            .template()
            .edges
            .iter()
            .any(|x| x.from == "project-1-copy" && x.to == "project-2-copy"));
        assert_eq!(
            e.template().node("project-1-copy-2").unwrap().position,
            Some(Position { x: 20.0, y: 20.0 })
        );
        assert!(crate::validate::find_cycle(e.template()).is_none());
        e.undo();
        e.undo();
        assert_eq!(e.template().nodes.len(), 3);
    }

    #[test]
    fn renaming_a_node_keeps_its_edges_and_refuses_a_taken_id() {
        let mut e = empty();
        let a = e.add_node(Kind::Project, Position::default());
        let b = e.add_node(Kind::Project, Position::default());
        e.connect(&a, &b, "data").unwrap();
        assert_eq!(e.rename_node(&a, &b), Err(EditError::IdTaken(b.clone())));
        e.rename_node(&a, "prepare").unwrap();
        assert_eq!(e.template().edges[0].from, "prepare");
        e.undo();
        assert_eq!(e.template().edges[0].from, a);
    }

    #[test]
    fn an_edge_cannot_be_renamed_onto_a_used_input() {
        let mut e = empty();
        let a = e.add_node(Kind::Project, Position::default());
        let b = e.add_node(Kind::Project, Position::default());
        let c = e.add_node(Kind::Project, Position::default());
        e.connect(&a, &c, "data").unwrap();
        e.connect(&b, &c, "models").unwrap();
        let err = e.update_edge(1, |x| x.input = "data".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input \"data\" of \"project-3\" is already connected"
        );
        e.update_edge(1, |x| {
            x.partition.mode = crate::template::PartitionMode::ByFile
        })
        .unwrap();
        assert_eq!(
            e.template().edges[1].partition.mode,
            crate::template::PartitionMode::ByFile
        );
    }

    #[test]
    fn key_preview_shows_each_paths_key_or_no_match() {
        let preview = key_preview(r"^(\w+)/", &["a/1.csv", "b/2.csv", "top.csv"]).unwrap();
        assert_eq!(preview[0].1.as_deref(), Some("a"));
        assert_eq!(preview[2].1, None);
        assert!(key_preview("^no-group$", &[])
            .unwrap_err()
            .contains("capture group"));
        assert!(key_preview("(", &[])
            .unwrap_err()
            .contains("not a valid regular expression"));
    }

    #[test]
    fn an_import_without_positions_is_laid_out() {
        let mut t =
            Template::from_json(include_str!("../../examples/pipeline/template.json")).unwrap();
        for n in &mut t.nodes {
            n.position = None;
        }
        let mut e = empty();
        e.replace(t);
        assert!(e.template().nodes.iter().all(|n| n.position.is_some()));
        let (lo, hi) = bounds(e.template()).unwrap();
        assert_eq!((lo.x, hi.x), (0.0, 2.0 * LAYER_GAP));
        e.undo();
        assert!(e.template().nodes.is_empty());
    }

    proptest! {
        #[test]
        fn random_connections_never_make_a_cycle(pairs in proptest::collection::vec((0usize..8, 0usize..8), 0..40)) {
            let mut e = empty();
            let ids: Vec<String> = (0..8).map(|_| e.add_node(Kind::Project, Position::default())).collect();
            for (n, (f, t)) in pairs.into_iter().enumerate() {
                let _ = e.connect(&ids[f], &ids[t], &format!("in{n}"));
            }
            prop_assert_eq!(crate::validate::find_cycle(e.template()), None);
            let pos = layout(e.template());
            for edge in &e.template().edges {
                prop_assert!(pos[&edge.from].x < pos[&edge.to].x);
            }
        }
    }
}
