//! Large templates are answered quickly (iterative graph algorithms, bounded sizes).

use concurrent_core::{unknown_fields, validate, Template};

fn chain(n: usize) -> String {
    let nodes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"n{i}","kind":"project","uri":"examples/pipeline","entryPoint":"main"}}"#
            )
        })
        .collect();
    let edges: Vec<String> = (1..n)
        .map(|i| format!(r#"{{"from":"n{}","to":"n{i}","input":"data"}}"#, i - 1))
        .collect();
    format!(
        r#"{{"apiVersion":"concurrent/v1","name":"big","nodes":[{}],"edges":[{}]}}"#,
        nodes.join(","),
        edges.join(",")
    )
}

#[test]
fn a_ten_thousand_node_chain_validates_without_recursion() {
    let text = chain(10_000);
    let t = Template::from_json(&text).unwrap();
    let started = std::time::Instant::now();
    let problems = validate(&t);
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unknown = unknown_fields(&raw);
    eprintln!(
        "validate + unknown_fields of 10,000 nodes: {:?}",
        started.elapsed()
    );
    assert_eq!(problems, vec![]);
    assert_eq!(unknown, vec![]);
}

#[test]
fn a_ten_thousand_node_chain_starts_and_advances_in_linear_time() {
    use concurrent_core::run::{apply, reconcile, start, Event, MlflowRef};
    let t = Template::from_json(&chain(10_000)).unwrap();
    let started = std::time::Instant::now();
    let mut run = start(
        "r".repeat(32),
        t,
        1,
        Default::default(),
        "local".into(),
        None,
        0,
    )
    .unwrap();
    apply(
        &mut run,
        Event::ParentRunCreated(MlflowRef {
            experiment_id: "1".into(),
            run_id: "p".into(),
        }),
        1,
    )
    .unwrap();
    for i in 0..50 {
        let _ = reconcile(&run, i);
        apply(&mut run, Event::Tick, i).unwrap();
    }
    eprintln!(
        "start + 50 events + 50 reconciles of a 10,000-node chain: {:?}",
        started.elapsed()
    );
    assert_eq!(run.nodes[0].instances.len(), 1, "the first node is planned");
    assert!(run.nodes[1].instances.is_empty(), "the second waits for it");
}
