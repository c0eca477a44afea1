//! Step caching where the step runs: this attempt's key (core's `cache::key`, from what its
//! result depends on), the lookup at the edge, and whether the earlier outputs still exist in
//! MLflow (a hit whose artifacts are gone is a miss).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use concurrent_core::cache::{key, unusable, KeyParts};
use concurrent_core::template::ProjectSpec;
use concurrent_core::wire::{CachedFrom, OutputFile, WorkItem};

use super::environment::{self, Choice};
use super::StepArgs;
use crate::mlflow::Mlflow;

/// What a project's result depends on that is not in the work item: where its code is.
pub(super) fn project_identity(
    p: &ProjectSpec,
    dir: &Path,
    commit: Option<&str>,
) -> anyhow::Result<String> {
    Ok(match commit {
        Some(c) => format!("git:{}@{c}", super::git::display_url(&p.uri)),
        None => format!("local:{}", tree_hash(dir)?),
    })
}

/// A hash of a local project's files (paths and contents, in order), leaving out what tools
/// write beside the code (`.git`, caches, MLflow's local runs).
fn tree_hash(dir: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let skipped = [
        ".git",
        "__pycache__",
        "mlruns",
        ".venv",
        ".ipynb_checkpoints",
    ];
    let walk = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !skipped.iter().any(|s| e.file_name() == *s));
    for entry in walk {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)?
            .to_string_lossy()
            .into_owned();
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update(super::file_sha256(entry.path())?.as_bytes());
        hasher.update([0]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The attempt's cache key.
pub(super) fn key_of(
    item: &WorkItem,
    p: &ProjectSpec,
    project: &str,
    choice: &Choice,
    dir: &Path,
) -> String {
    let step = &item.step;
    let environment = environment::identity(choice, dir);
    key(&KeyParts {
        project,
        entry_point: &p.entry_point,
        parameters: &p.parameters,
        environment: &environment,
        image: step.image.as_deref(),
        env: &step.env,
        secret_env_names: step.secret_env.keys().map(String::as_str).collect(),
        inputs: &step.inputs,
    })
}

/// An earlier attempt's result to reuse.
pub(super) struct Hit {
    pub outputs: Vec<OutputFile>,
    pub from: CachedFrom,
}

/// The cached result of `cache_key`, when the edge has one that is young enough and whose
/// files MLflow still holds; why not, in the step's log, otherwise.
pub(super) async fn lookup(
    args: &StepArgs,
    item: &WorkItem,
    cache_key: &str,
    max_age_ms: Option<u64>,
    mlflow: &Mlflow,
    log: &Path,
) -> anyhow::Result<Option<Hit>> {
    let say = |line: String| async move { super::log_line(log, &line).await };
    let Some((edge, _)) = super::step_edge(args, item)? else {
        return Ok(None);
    };
    let entry = edge
        .cache_lookup(cache_key)
        .await
        .context("cannot look the step's cache key up at the edge")?;
    let Some(entry) = entry else {
        say(format!(
            "==> cache: no earlier result for key {cache_key}; the step runs"
        ))
        .await;
        return Ok(None);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(why) = unusable(&entry, cache_key, now, max_age_ms) {
        say(format!("==> cache: not reused ({why}); the step runs")).await;
        return Ok(None);
    }
    if let Some(why) = missing(&entry.outputs, mlflow).await {
        say(format!(
            "==> cache: the result of run {} cannot be reused ({why}); the step runs",
            entry.mlflow_run_id
        ))
        .await;
        return Ok(None);
    }
    say(format!(
        "==> cache hit: reusing the {} output file(s) of MLflow run {} (DAG run {}); nothing runs",
        entry.outputs.len(),
        entry.mlflow_run_id,
        entry.run_id
    ))
    .await;
    Ok(Some(Hit {
        outputs: entry.outputs,
        from: CachedFrom {
            mlflow_run_id: entry.mlflow_run_id,
            run_id: entry.run_id,
        },
    }))
}

/// Why some of these outputs are no longer in MLflow (their run was deleted, or the files
/// were), or `None` when all are.
async fn missing(outputs: &[OutputFile], mlflow: &Mlflow) -> Option<String> {
    let mut listed: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut seen_dirs: BTreeSet<(String, String)> = BTreeSet::new();
    for o in outputs {
        let (Some(run), Some(path)) = (&o.run_id, &o.artifact_path) else {
            return Some(format!("{} names no run", o.path));
        };
        let dir = path
            .rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string());
        if seen_dirs.insert((run.clone(), dir.clone())) {
            match mlflow.list_recursive(run, &dir).await {
                Ok(files) => listed.extend(files.into_iter().map(|(p, s)| (run.clone(), p, s))),
                Err(e) => return Some(format!("run {run} cannot be read: {e:#}")),
            }
        }
        if !listed.contains(&(run.clone(), path.clone(), o.size)) {
            return Some(format!("artifact {path} of run {run} is gone"));
        }
    }
    None
}
