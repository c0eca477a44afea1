use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn empty() -> Editor {
    Editor::new(Template {
        api_version: crate::template::API_VERSION.into(),
        name: "t".into(),
        description: String::new(),
        parameters: vec![],
        nodes: vec![],
        edges: vec![],
        cache: None,
        notifications: vec![],
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
    e.move_nodes(std::slice::from_ref(&a), 10.0, 5.0);
    e.update_node(&b, |n| n.instances = 4).unwrap();
    let done = e.template().clone();
    e.delete(std::slice::from_ref(&a), &[]);
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
        .to_string()
        .contains("capture group"));
    assert!(key_preview("(", &[])
        .unwrap_err()
        .to_string()
        .contains("not a valid regular expression"));
}

#[test]
fn an_import_without_positions_is_laid_out() {
    let mut t =
        Template::from_json(include_str!("../../../examples/pipeline/template.json")).unwrap();
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
