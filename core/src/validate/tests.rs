use std::collections::BTreeMap;

use super::quantity::{cpu_cores, memory_bytes};
use super::*;

fn template(json: serde_json::Value) -> Template {
    serde_json::from_value(json).unwrap()
}

fn good() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "concurrent/v1",
        "name": "pipeline",
        "parameters": [{"name": "rows", "default": "10"}],
        "nodes": [
            {"id": "prepare", "kind": "project", "uri": "examples/pipeline", "entryPoint": "prepare",
             "parameters": {"rows": "{{params.rows}}"}},
            {"id": "train", "kind": "project", "uri": "examples/pipeline", "entryPoint": "train", "instances": 2}
        ],
        "edges": [{"from": "prepare", "to": "train", "input": "data", "partition": {"mode": "by-file"}}]
    })
}

fn paths(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn problems_point_at_their_node_edge_or_parameter() {
    // As problems arrive over the wire: the target is read from the pointer.
    let target = |path: &str| {
        serde_json::from_value::<Problem>(serde_json::json!({"path": path, "message": ""}))
            .unwrap()
            .target()
    };
    assert_eq!(target("/nodes/3/uri"), Target::Node(3));
    assert_eq!(target("/edges/0/partition/keyRegex"), Target::Edge(0));
    assert_eq!(target("/parameters/1/name"), Target::Parameter(1));
    assert_eq!(target("/edges"), Target::Template);
    assert_eq!(target("/name"), Target::Template);
    let p = Problem::at(Target::Edge(2), "partition/mode", "m");
    assert_eq!(
        (p.path.as_str(), p.target()),
        ("/edges/2/partition/mode", Target::Edge(2))
    );
    assert_eq!(Target::Node(1).pointer(""), "/nodes/1");
}

#[test]
fn a_good_template_has_no_problems() {
    assert_eq!(validate(&template(good())), vec![]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut t = good();
    t["nodes"][1]["id"] = "prepare".into();
    t["nodes"][1]["instances"] = 0.into();
    t["edges"][0]["partition"]["mode"] = "by-magic".into();
    t["nodes"][0]["parameters"]["rows"] = "{{params.nope}}".into();
    let problems = validate(&template(t));
    assert_eq!(
        paths(&problems),
        vec![
            "/nodes/0/parameters/rows",
            "/nodes/1/id",
            "/nodes/1/instances",
            "/edges/0/to",
            "/edges/0/partition/mode"
        ],
        "{problems:#?}"
    );
    assert!(problems[0].message.contains("params.nope"));
    assert!(problems[4].message.contains("by-magic"));
}

#[test]
fn dangling_edges_name_the_missing_node() {
    let mut t = good();
    t["edges"][0]["to"] = "ghost".into();
    let problems = validate(&template(t));
    assert_eq!(paths(&problems), vec!["/edges/0/to"]);
    assert!(problems[0].message.contains("\"ghost\""));
}

#[test]
fn cycles_are_named_node_by_node() {
    let mut t = good();
    t["nodes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": "eval", "kind": "inference", "modelUri": "models:/m/1"}));
    t["edges"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"from": "train", "to": "eval"}));
    t["edges"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"from": "eval", "to": "prepare", "input": "feedback"}));
    let problems = validate(&template(t));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, "/edges");
    assert!(
        problems[0]
            .message
            .contains("prepare → train → eval → prepare"),
        "{}",
        problems[0].message
    );
}

#[test]
fn by_key_needs_a_regex_with_a_capture_group() {
    let mut t = good();
    t["edges"][0]["partition"] = serde_json::json!({"mode": "by-key", "keyRegex": "part-\\d+"});
    let problems = validate(&template(t.clone()));
    assert!(problems[0].message.contains("no capture group"));
    t["edges"][0]["partition"]["keyRegex"] = "(unclosed".into();
    assert!(validate(&template(t.clone()))[0]
        .message
        .contains("not a valid regular expression"));
    t["edges"][0]["partition"]["keyRegex"] = "^(\\w+)/".into();
    assert_eq!(validate(&template(t)), vec![]);
}

#[test]
fn names_must_fit_kubernetes() {
    let mut t = good();
    t["name"] = "My Pipeline".into();
    t["nodes"][0]["id"] = "Prepare_Data".into();
    t["edges"][0]["from"] = "Prepare_Data".into();
    t["nodes"][0]["cluster"] = "gpu pool".into();
    let problems = validate(&template(t));
    assert_eq!(
        paths(&problems),
        vec!["/name", "/nodes/0/id", "/nodes/0/cluster"]
    );
}

#[test]
fn resources_and_inputs_are_checked() {
    let mut t = good();
    t["nodes"][0]["resources"] = serde_json::json!({"cpu": "lots", "memory": "4GB"});
    t["nodes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": "raw", "kind": "input"}));
    t["edges"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"from": "train", "to": "raw"}));
    let problems = validate(&template(t));
    assert_eq!(
        paths(&problems),
        vec![
            "/nodes/0/resources/cpu",
            "/nodes/0/resources/memory",
            "/nodes/2/runId",
            "/edges/1/to"
        ]
    );
}

#[test]
fn the_known_field_lists_cover_every_field_of_the_model() {
    use crate::template::*;
    let node = |kind: NodeKind| Node {
        id: "n".into(),
        name: "N".into(),
        kind,
        instances: 2,
        cluster: Some("c".into()),
        image: Some("i".into()),
        resources: Resources {
            cpu: Some("1".into()),
            memory: Some("1Gi".into()),
            gpu: 1,
            gpu_type: Some("t4".into()),
        },
        retries: Retries {
            limit: 1,
            backoff_seconds: 1,
            max_backoff_seconds: 2,
        },
        timeout_seconds: Some(1),
        env: BTreeMap::from([("A".into(), "1".into())]),
        secret_env: BTreeMap::from([(
            "B".into(),
            SecretRef {
                secret: "s".into(),
                key: "k".into(),
            },
        )]),
        env_manager: Some(EnvManager::Uv),
        kubernetes: crate::kubernetes::KubernetesSpec {
            node_selector: BTreeMap::from([("a".into(), "b".into())]),
            tolerations: vec![crate::kubernetes::Toleration {
                key: Some("k".into()),
                operator: Some("Equal".into()),
                value: Some("v".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(1),
            }],
            affinity: Some(serde_json::json!({})),
            volumes: vec![crate::kubernetes::VolumeSpec {
                name: "v".into(),
                mount_path: "/v".into(),
                read_only: true,
                sub_path: Some("s".into()),
                persistent_volume_claim: Some(crate::kubernetes::ClaimSource {
                    claim_name: "c".into(),
                }),
                empty_dir: Some(crate::kubernetes::EmptyDirSource {
                    medium: Some("Memory".into()),
                    size_limit: Some("1Gi".into()),
                }),
                config_map: Some(crate::kubernetes::ConfigMapSource { name: "m".into() }),
                secret: Some(crate::kubernetes::SecretSource {
                    secret_name: "s".into(),
                }),
            }],
            service_account_name: Some("sa".into()),
        },
        cache: Some(Cache {
            enabled: true,
            max_age_seconds: Some(60),
        }),
        when: Some("params.p == 1".into()),
        trigger_rule: TriggerRule::AllDone,
        position: Some(Position { x: 1.0, y: 2.0 }),
    };
    let t = Template {
        api_version: API_VERSION.into(),
        name: "t".into(),
        description: "d".into(),
        parameters: vec![Parameter {
            name: "p".into(),
            default: Some("1".into()),
            description: "d".into(),
        }],
        nodes: vec![
            node(NodeKind::Project(ProjectSpec {
                uri: "u".into(),
                version: Some("v".into()),
                sub_path: Some("s".into()),
                entry_point: "main".into(),
                parameters: BTreeMap::from([("a".into(), "1".into())]),
                sweep: Some(crate::sweep::Sweep {
                    grid: BTreeMap::from([("a".into(), vec!["1".into()])]),
                    random: Some(crate::sweep::RandomSweep {
                        samples: 1,
                        seed: 1,
                        parameters: BTreeMap::from([(
                            "b".into(),
                            crate::sweep::Distribution::Uniform(0.0, 1.0),
                        )]),
                    }),
                    cross_partitions: true,
                }),
            })),
            node(NodeKind::Inference(InferenceSpec {
                model_uri: "models:/m/1".into(),
            })),
            node(NodeKind::Input(InputSpec {
                run_id: Some("r".into()),
                artifact_path: Some("a".into()),
                path: Some("p".into()),
            })),
            node(NodeKind::Approval(ApprovalSpec {
                message: "m".into(),
                compare: Some(AliasRef {
                    model: "m".into(),
                    alias: "a".into(),
                }),
                metrics: vec!["m".into()],
                on_timeout: Verdict::Approve,
            })),
            node(NodeKind::Register(RegisterSpec {
                model: "m".into(),
                alias: Some("a".into()),
                instance: Some(1),
                artifact_path: Some("model".into()),
            })),
        ],
        edges: vec![Edge {
            from: "a".into(),
            to: "b".into(),
            input: "data".into(),
            partition: Partition {
                mode: PartitionMode::ByKey,
                key_regex: Some("(x)".into()),
            },
            select: Some(Select {
                metric: "m".into(),
                mode: SelectMode::Max,
                top: 1,
            }),
        }],
        cache: Some(Cache {
            enabled: true,
            max_age_seconds: None,
        }),
        notifications: vec![crate::template::Notification {
            url: Some("https://example.com/hook".into()),
            url_secret: Some("NOTIFY_URL".into()),
            signing_secret: Some("NOTIFY_KEY".into()),
            on: vec![crate::template::NotifyOn::Failed],
        }],
    };
    assert_eq!(unknown_fields(&serde_json::to_value(&t).unwrap()), vec![]);
}

#[test]
fn unknown_fields_are_reported_with_a_suggestion() {
    let mut t = good();
    t["nodes"][1]["instnaces"] = 3.into();
    t["edges"][0]["partition"]["keyregex"] = "x".into();
    t["colour"] = "blue".into();
    t["nodes"][0]["kubernetes"] = serde_json::json!({
        "tolerations": [{"key": "k", "efect": "NoSchedule"}],
        "volumes": [{"name": "d", "mountPath": "/d", "emptyDir": {"sizelimit": "1Gi"}}],
        "nodeSelektor": {}
    });
    let problems = unknown_fields(&t);
    assert_eq!(
        paths(&problems),
        vec![
            "/colour",
            "/nodes/0/kubernetes/nodeSelektor",
            "/nodes/0/kubernetes/tolerations/0/efect",
            "/nodes/0/kubernetes/volumes/0/emptyDir/sizelimit",
            "/nodes/1/instnaces",
            "/edges/0/partition/keyregex"
        ]
    );
    assert!(
        problems[4].message.contains("did you mean \"instances\""),
        "{}",
        problems[4].message
    );
    assert_eq!(unknown_fields(&good()), vec![]);
}

#[test]
fn kubernetes_settings_are_checked_with_the_node() {
    let mut t = good();
    t["nodes"][1]["resources"] = serde_json::json!({"gpuType": "nvidia-tesla-t4"});
    t["nodes"][1]["kubernetes"] = serde_json::json!({
        "tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    });
    let problems = validate(&template(t));
    assert_eq!(
        paths(&problems),
        vec![
            "/nodes/1/resources/gpuType",
            "/nodes/1/kubernetes/tolerations/0/value",
            "/nodes/1/kubernetes/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
        ]
    );
    assert!(
        problems[0].message.contains("set resources.gpu"),
        "{}",
        problems[0].message
    );
}

#[test]
fn quantities_follow_kubernetes_syntax() {
    assert_eq!(cpu_cores("500m"), Some(0.5));
    assert_eq!(cpu_cores("2"), Some(2.0));
    assert_eq!(cpu_cores("0.5"), Some(0.5));
    for bad in ["m", "-1", "NaN", "inf", "1e3", ""] {
        assert_eq!(cpu_cores(bad), None, "{bad}");
    }
    assert_eq!(memory_bytes("512Mi"), Some(512.0 * 1048576.0));
    assert_eq!(memory_bytes("1G"), Some(1e9));
    assert_eq!(memory_bytes("1000"), Some(1000.0));
    assert_eq!(memory_bytes("4GB"), None);
    assert_eq!(memory_bytes("Gi"), None);
}

#[test]
fn sweeps_selections_caching_and_upstream_references_are_checked() {
    let mut t = good();
    t["nodes"][1]["sweep"] =
        serde_json::json!({"grid": {"alpha": []}, "random": {"samples": 0, "parameters": {}}});
    t["nodes"][1]["cache"] = serde_json::json!({"enabled": true, "maxAgeSeconds": 0});
    t["edges"][0]["select"] = serde_json::json!({"metric": "", "mode": "max", "top": 0});
    t["nodes"][0]["parameters"]["best"] = "{{upstream.prepar.best.run_id}}".into();
    let problems = validate(&template(t));
    let got = paths(&problems);
    for expected in [
        "/nodes/1/sweep",
        "/nodes/1/sweep/grid/alpha",
        "/nodes/1/sweep/random/samples",
        "/nodes/1/instances",
        "/nodes/1/cache/maxAgeSeconds",
        "/edges/0/select/metric",
        "/edges/0/select/top",
        "/nodes/0/parameters/best",
    ] {
        assert!(got.contains(&expected), "{expected} in {got:?}");
    }
    let upstream = problems
        .iter()
        .find(|p| p.path == "/nodes/0/parameters/best")
        .unwrap();
    assert!(
        upstream.message.contains("no edge into this node selects"),
        "{upstream}"
    );
    // Into train, which `prepare` feeds with a select edge: a typo gets a suggestion.
    let mut t = good();
    t["edges"][0]["select"] = serde_json::json!({"metric": "rows", "mode": "min"});
    t["nodes"][1]["parameters"] = serde_json::json!({"best": "{{upstream.prepar.best.model_uri}}"});
    let problems = validate(&template(t));
    assert_eq!(paths(&problems), ["/nodes/1/parameters/best"]);
    assert!(
        problems[0].message.contains("did you mean \"prepare\"?"),
        "{}",
        problems[0]
    );
    let mut t = good();
    t["edges"][0]["select"] = serde_json::json!({"metric": "rows", "mode": "min"});
    t["nodes"][1]["parameters"] =
        serde_json::json!({"best": "{{upstream.prepare.best.metrics.rows}}"});
    t["nodes"][1]["sweep"] =
        serde_json::json!({"grid": {"alpha": ["1", "2"]}, "crossPartitions": true});
    assert_eq!(validate(&template(t)), vec![]);
}
