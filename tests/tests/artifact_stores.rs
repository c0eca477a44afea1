//! A tracking server that does not proxy artifacts (`--no-serve-artifacts`, a filesystem root),
//! as hosted MLflow services with s3://, gs:// or shared-path roots work: steps read and write
//! through MLflow's own client, the files land in that root, and the next node reads them. Its
//! own binary, because its MLflow is started differently.

use std::time::Duration;

use concurrent_tests::{example_template, json, ArtifactStore, Stack};

#[test]
fn steps_read_and_write_artifacts_through_mlflows_client_when_the_server_does_not_proxy_them() {
    let stack = Stack::shared_with(ArtifactStore::Filesystem);
    let _agent = stack.agent("fs-store");
    stack.put_template(&example_template("fs-store-pipeline", 3));
    let id = stack.start_run(&json!({"template": "fs-store-pipeline", "cluster": "fs-store"}));
    let run = stack.wait_run(&id, Duration::from_secs(240));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let root = stack.dir.path().join("fsroot");
    let prepare = run["nodes"][0]["instances"][0]["attempts"][0]["mlflowRunId"]
        .as_str()
        .unwrap();
    let info = &stack.mlflow_api("GET", &format!("runs/get?run_id={prepare}"), None)["run"]["info"];
    let uri = info["artifact_uri"].as_str().unwrap();
    assert!(
        uri.starts_with(root.to_str().unwrap()) || uri.contains(root.to_str().unwrap()),
        "{uri} is in the filesystem root"
    );
    let outputs = std::path::Path::new(uri.strip_prefix("file://").unwrap_or(uri)).join("outputs");
    let files: Vec<_> = std::fs::read_dir(&outputs).unwrap().flatten().collect();
    assert!(
        !files.is_empty(),
        "prepare's outputs landed in {}",
        outputs.display()
    );
    // The next nodes read them: train's two instances got their parts, report merged them.
    assert_eq!(
        run["nodes"][2]["instances"][0]["outputs"][0]["path"],
        "merged_model.json"
    );
    let report = run["nodes"][2]["instances"][0]["attempts"][0]["mlflowRunId"]
        .as_str()
        .unwrap();
    let report = &stack.mlflow_api("GET", &format!("runs/get?run_id={report}"), None)["run"];
    assert!(stack.artifact(report, "logs/step.log").contains("report"));
}
