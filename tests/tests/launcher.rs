//! The fast launcher starts an entry point with exactly the command `mlflow run --env-manager
//! local` would: compared here with MLflow's own code (`mlflow.projects._project_spec`) for
//! hostile values, defaults, extra parameters, scripts and errors.

use std::process::Command;

use concurrent_tests::{concurrent_bin, root};

const MLPROJECT: &str = r#"
name: parity
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
      tiny: {type: float, default: 0.00001}
      big: {type: float, default: 12345678901234567890.0}
      count: {type: int, default: 3}
      flag: {type: string, default: true}
      name: string
      data: {type: path, default: data.csv}
      where: {type: uri, default: "s3://bucket/key"}
    command: "python train.py --alpha {alpha} --tiny {tiny} --big {big} --count {count} --flag {flag} --name {name} --data {data} --where {where} {{braces}}"
  bare:
    command: "echo bare"
"#;

fn ours(dir: &std::path::Path, entry: &str, params: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(concurrent_bin());
    cmd.current_dir(dir)
        .args(["entry-command", "."])
        .args(["-e", entry]);
    for (k, v) in params {
        cmd.arg("-P").arg(format!("{k}={v}"));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    })
    .trim()
    .to_string();
    text
}

fn mlflows(dir: &std::path::Path, entry: &str, params: &[(&str, &str)]) -> String {
    let script = r#"
import json, sys, tempfile
from mlflow.projects._project_spec import load_project
entry, params = sys.argv[1], json.loads(sys.argv[2])
try:
    print(load_project(".").get_entry_point(entry).compute_command(params, tempfile.mkdtemp()))
except Exception as e:
    print("ERROR", e)
"#;
    let params: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    let out = Command::new(root().join(".venv/bin/python"))
        .current_dir(dir)
        .args([
            "-c",
            script,
            entry,
            &serde_json::Value::Object(params).to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_fast_launcher_builds_the_same_command_as_mlflow_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("MLproject"), MLPROJECT).unwrap();
    std::fs::write(dir.path().join("data.csv"), "x\n").unwrap();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("main", vec![("name", "plain")]),
        ("main", vec![("name", "two words")]),
        (
            "main",
            vec![("name", "it's $(rm -rf /) `x` \"q\" ; & | > *")],
        ),
        ("main", vec![("name", "ünïcode ✓"), ("alpha", "1e-3")]),
        (
            "main",
            vec![("name", ""), ("extra", "v w"), ("z-flag", "1")],
        ),
        (
            "main",
            vec![
                ("name", "n"),
                ("data", "./data.csv"),
                ("where", "https://example.com/x?y=1&z"),
            ],
        ),
        ("bare", vec![("anything", "goes here")]),
        ("script.py", vec![("k", "v")]),
        ("run me.sh", vec![]),
    ];
    for (entry, params) in &cases {
        let expected = mlflows(dir.path(), entry, params);
        assert!(
            !expected.starts_with("ERROR"),
            "MLflow refused a case meant to run: {expected}"
        );
        assert_eq!(
            ours(dir.path(), entry, params),
            expected,
            "entry {entry:?} with {params:?}"
        );
    }
    // Errors name the same problem MLflow names.
    let refused: Vec<(&str, Vec<(&str, &str)>, &str)> = vec![
        (
            "main",
            vec![],
            "No value given for missing parameters: 'name'",
        ),
        (
            "main",
            vec![("name", "n"), ("where", "not-a-uri")],
            "Expected URI for parameter where but got not-a-uri",
        ),
        (
            "main",
            vec![("name", "n"), ("data", "missing.csv")],
            "but no such file or directory was found",
        ),
        ("nope", vec![], "Could not find nope among entry points"),
    ];
    for (entry, params, why) in refused {
        let expected = mlflows(dir.path(), entry, &params);
        assert!(expected.contains(why), "MLflow says: {expected}");
        let got = ours(dir.path(), entry, &params);
        assert!(got.contains(why), "expected {why:?}, got {got:?}");
    }
}
