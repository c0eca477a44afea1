//! Editing a template: the operations behind every pointer and keyboard action, each a checked
//! change with undo/redo.

use std::collections::{BTreeMap, HashMap};

use super::layout::layout;
use crate::template::{
    Edge, InferenceSpec, InputSpec, Node, NodeKind, Partition, Position, ProjectSpec, Template,
};

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
    Approval,
    Register,
}

/// How many edits can be undone; each holds a copy of the template.
pub const HISTORY: usize = 200;

/// Nodes and the edges between them, as copied; pasting gives them fresh ids.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Clipboard {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
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
                    sweep: None,
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
            Kind::Approval => (
                "approval",
                NodeKind::Approval(crate::template::ApprovalSpec::default()),
            ),
            Kind::Register => (
                "register",
                NodeKind::Register(crate::template::RegisterSpec {
                    model: String::new(),
                    alias: None,
                    instance: None,
                    artifact_path: None,
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
            kubernetes: Default::default(),
            cache: None,
            when: None,
            trigger_rule: Default::default(),
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
            select: None,
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
