//! Fuzzing with a fixed budget (part of `make test`): hostile bodies and strings go through
//! everything that reads outside input — template parsing and validation, the wire types, the
//! route table, tokens, cron, parameter references, paths — and nothing may panic. A template
//! that validates must also start a run.

use concurrent_core::access::{graphql_is_read_only, match_route, mlflow_access};
use concurrent_core::run::start;
use concurrent_core::step_token::StepToken;
use concurrent_core::wire::{CompleteRequest, HeartbeatRequest, LeaseRequest, NewToken, StartRun};
use concurrent_core::{
    params, partition, refs, schedule, sign, unknown_fields, validate, Template,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Words that make up templates, so generated documents reach deep into the model.
const WORDS: &[&str] = &[
    "apiVersion",
    "concurrent/v1",
    "name",
    "nodes",
    "edges",
    "parameters",
    "id",
    "kind",
    "project",
    "inference",
    "input",
    "uri",
    "entryPoint",
    "instances",
    "from",
    "to",
    "partition",
    "mode",
    "by-key",
    "by-file",
    "keyRegex",
    "resources",
    "cpu",
    "memory",
    "gpu",
    "image",
    "retries",
    "limit",
    "timeoutSeconds",
    "modelUri",
    "runId",
    "path",
    "default",
    "{{params.x}}",
    "x",
    "-rf",
    "..",
    "/",
    "(",
    "",
    "https://",
    "ssh://",
    "git@h:r",
    "javascript:",
    "\u{0}",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WORDS).prop_map(str::to_string),
        ".{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(word(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A template document with hostile values in its fields.
fn template_doc() -> impl Strategy<Value = Value> {
    let node = (
        word(),
        word(),
        word(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(id, kind, uri, instances, resources, extra)| {
            json!({"id": id, "kind": kind, "uri": uri, "entryPoint": "main", "modelUri": uri,
                   "instances": instances, "resources": resources, "image": extra, "path": uri})
        });
    let edge = (word(), word(), word(), json_value())
        .prop_map(|(from, to, mode, key)| json!({"from": from, "to": to, "partition": {"mode": mode, "keyRegex": key}}));
    (
        word(),
        proptest::collection::vec(node, 0..8),
        proptest::collection::vec(edge, 0..8),
        json_value(),
    )
        .prop_map(|(name, nodes, edges, params)| {
            json!({"apiVersion": "concurrent/v1", "name": name, "nodes": nodes, "edges": edges, "parameters": params})
        })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn hostile_template_documents_are_answered_never_panicked_on(doc in template_doc()) {
        let text = doc.to_string();
        let _ = unknown_fields(&doc);
        if let Ok(t) = Template::from_json(&text) {
            let problems = validate(&t);
            for p in &problems {
                prop_assert!(p.path.starts_with('/'), "{p}");
                prop_assert!(!p.message.is_empty());
            }
            if problems.is_empty() {
                // A valid template starts, or refuses its parameters in words.
                let r = start("0".repeat(32), t, 1, Default::default(), "local".into(), None, 0);
                if let Err(e) = r {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn hostile_bodies_of_every_endpoint_parse_or_fail_cleanly(v in json_value()) {
        let text = v.to_string();
        let _ = serde_json::from_str::<StartRun>(&text);
        let _ = serde_json::from_str::<LeaseRequest>(&text);
        let _ = serde_json::from_str::<HeartbeatRequest>(&text);
        let _ = serde_json::from_str::<CompleteRequest>(&text);
        let _ = serde_json::from_str::<NewToken>(&text);
        let _ = serde_json::from_str::<schedule::NewSchedule>(&text);
        let _ = Template::from_json(&text);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn hostile_strings_reach_every_parser_without_a_panic(s in ".{0,80}", m in "[A-Z]{0,7}") {
        let path = format!("/api/v1/{s}");
        let _ = match_route(&m, &path);
        let _ = mlflow_access(&m, &s, Some(&s));
        let _ = graphql_is_read_only(&s);
        let _ = StepToken::parse(&s);
        let _ = sign::is_run_id("key", &s);
        let _ = refs::image_reference_problem(&s);
        let _ = refs::project_uri_problem(&s);
        let _ = refs::git_ref_problem(&s);
        let _ = refs::model_uri_problem(&s);
        let _ = refs::entry_point_problem(&s);
        let _ = partition::relative_path_problem(&s);
        let _ = schedule::next_tick(&s, 0);
        let _ = params::references(&s);
        let _ = params::substitute(&s, &Default::default());
        let _ = concurrent_core::jwt::parse(&s);
    }
}
