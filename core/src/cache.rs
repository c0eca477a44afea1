//! Step caching: the key of everything a step's result depends on, the entry a success leaves
//! for later steps with the same key, and whether an entry may be reused.
//!
//! The key is made of contents, never of places or times: the project's identity (repository
//! and resolved commit, or a hash of a local project's files), the entry point, the resolved
//! parameters, the environment's spec, the image, the node's plain environment variables (the
//! names of its secret ones) and the SHA-256 of every input file (recorded when it was
//! uploaded, so nothing is downloaded to make a key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::partition::ArtifactFile;
use crate::sign::sha256_hex;
use crate::wire::{OutputFile, OUTPUTS_DIR};

/// Bumped when what goes into a key changes, so older entries are never mistaken for new ones.
const KEY_VERSION: &str = "v1";

/// What a step's result depends on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyParts<'a> {
    /// `git:<repository>@<commit>` or `local:<sha256 of the project's files>`.
    pub project: &'a str,
    pub entry_point: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
    /// The environment's content key (manager and spec), or `local`, or `docker:<image>`.
    pub environment: &'a str,
    pub image: Option<&'a str>,
    pub env: &'a BTreeMap<String, String>,
    pub secret_env_names: Vec<&'a str>,
    pub inputs: &'a BTreeMap<String, Vec<ArtifactFile>>,
}

/// An input file as a key sees it: its digest, or where it is kept when it has none (files of
/// an input node pointing at another MLflow run).
fn input_identity(f: &ArtifactFile) -> String {
    match &f.sha256 {
        Some(d) => format!("{}={d}", f.path),
        None => format!("{}@{}/{}:{}", f.path, f.run_id, f.artifact_path, f.size),
    }
}

/// The cache key of a step.
pub fn key(parts: &KeyParts<'_>) -> String {
    let inputs: BTreeMap<&String, Vec<String>> = parts
        .inputs
        .iter()
        .map(|(name, files)| {
            let mut ids: Vec<String> = files.iter().map(input_identity).collect();
            ids.sort();
            (name, ids)
        })
        .collect();
    let mut secret = parts.secret_env_names.clone();
    secret.sort_unstable();
    let canonical = serde_json::json!({
        "project": parts.project,
        "entryPoint": parts.entry_point,
        "parameters": parts.parameters,
        "environment": parts.environment,
        "image": parts.image,
        "env": parts.env,
        "secretEnv": secret,
        "inputs": inputs,
    });
    format!("{KEY_VERSION}-{}", sha256_hex(&canonical.to_string()))
}

/// What a successful attempt leaves under its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub key: String,
    /// The attempt's MLflow run, which holds the outputs.
    pub mlflow_run_id: String,
    /// The DAG run it belonged to.
    pub run_id: String,
    /// Its outputs, each naming the run and artifact path that hold it.
    pub outputs: Vec<OutputFile>,
    pub created_at: u64,
}

/// The entry of a success whose outputs (as the step reported them, relative to its own run
/// when they name none) are in `mlflow_run_id`.
pub fn entry(
    key: &str,
    outputs: &[OutputFile],
    mlflow_run_id: &str,
    run_id: &str,
    now: u64,
) -> CacheEntry {
    CacheEntry {
        key: key.to_string(),
        mlflow_run_id: mlflow_run_id.to_string(),
        run_id: run_id.to_string(),
        outputs: outputs
            .iter()
            .map(|o| OutputFile {
                run_id: Some(
                    o.run_id
                        .clone()
                        .unwrap_or_else(|| mlflow_run_id.to_string()),
                ),
                artifact_path: Some(
                    o.artifact_path
                        .clone()
                        .unwrap_or_else(|| format!("{OUTPUTS_DIR}/{}", o.path)),
                ),
                ..o.clone()
            })
            .collect(),
        created_at: now,
    }
}

/// The entry a reported outcome leaves: a success with a cache key that ran (not itself a
/// hit), whose MLflow run is known.
pub fn entry_of(
    outcome: &crate::wire::Outcome,
    mlflow_run_id: Option<&str>,
    run_id: &str,
    now: u64,
) -> Option<CacheEntry> {
    match outcome {
        crate::wire::Outcome::Succeeded { outputs, facts } if facts.cached_from.is_none() => {
            let key = facts.cache_key.as_deref()?;
            let mlflow_run_id = mlflow_run_id.filter(|r| !r.is_empty())?;
            Some(entry(key, outputs, mlflow_run_id, run_id, now))
        }
        _ => None,
    }
}

/// Why an entry may not be reused now, or `None` when it may: it must have been made under
/// this key and be younger than `max_age_ms`.
pub fn unusable(
    entry: &CacheEntry,
    key: &str,
    now: u64,
    max_age_ms: Option<u64>,
) -> Option<String> {
    if entry.key != key {
        return Some("the entry was made under another key".into());
    }
    let age = now.saturating_sub(entry.created_at);
    match max_age_ms {
        Some(max) if age > max => Some(format!(
            "the cached result is {} s old, more than the node's maxAgeSeconds ({} s)",
            age / 1000,
            max / 1000
        )),
        _ => None,
    }
}

/// The KV key of a cache entry.
pub fn storage_key(key: &str) -> String {
    format!("cache/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha: Option<&str>) -> ArtifactFile {
        ArtifactFile {
            path: path.into(),
            run_id: "r1".into(),
            artifact_path: format!("outputs/{path}"),
            size: 3,
            sha256: sha.map(str::to_string),
        }
    }

    fn parts<'a>(
        params: &'a BTreeMap<String, String>,
        inputs: &'a BTreeMap<String, Vec<ArtifactFile>>,
        env: &'a BTreeMap<String, String>,
    ) -> KeyParts<'a> {
        KeyParts {
            project: "git:https://example.com/p.git@abc",
            entry_point: "main",
            parameters: params,
            environment: "uv-123",
            image: None,
            env,
            secret_env_names: vec!["TOKEN"],
            inputs,
        }
    }

    #[test]
    fn keys_follow_contents_not_places() {
        let params = BTreeMap::from([("alpha".to_string(), "0.5".to_string())]);
        let env = BTreeMap::new();
        let a = BTreeMap::from([("data".to_string(), vec![file("x.csv", Some("d1"))])]);
        let mut moved = a.clone();
        moved.get_mut("data").unwrap()[0].run_id = "another-run".into();
        let base = key(&parts(&params, &a, &env));
        assert_eq!(
            base,
            key(&parts(&params, &moved, &env)),
            "the same content elsewhere"
        );
        let changed = BTreeMap::from([("data".to_string(), vec![file("x.csv", Some("d2"))])]);
        assert_ne!(base, key(&parts(&params, &changed, &env)), "other content");
        let other = BTreeMap::from([("alpha".to_string(), "0.6".to_string())]);
        assert_ne!(
            base,
            key(&parts(&other, &a, &env)),
            "another parameter value"
        );
        let mut p = parts(&params, &a, &env);
        p.project = "git:https://example.com/p.git@def";
        assert_ne!(base, key(&p), "another commit");
        let mut p = parts(&params, &a, &env);
        p.environment = "uv-456";
        assert_ne!(base, key(&p), "another environment");
        assert!(base.starts_with("v1-"));
    }

    proptest::proptest! {
        /// A key does not depend on the order the files were listed in or on where they are
        /// kept, and any parameter's value is part of it.
        #[test]
        fn keys_ignore_order_and_place_but_not_values(
            files in proptest::collection::btree_map("[a-z]{1,6}", "[0-9a-f]{8}", 1..6),
            params in proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9.]{0,4}", 1..5),
            rotate in 0usize..6,
            changed in 0usize..5,
        ) {
            let listed: Vec<ArtifactFile> = files.iter().map(|(p, d)| file(p, Some(d))).collect();
            let mut other = listed.clone();
            other.rotate_left(rotate % listed.len());
            for f in &mut other {
                f.run_id = "elsewhere".into();
            }
            let env = BTreeMap::new();
            let a = BTreeMap::from([("data".to_string(), listed)]);
            let b = BTreeMap::from([("data".to_string(), other)]);
            let base = key(&parts(&params, &a, &env));
            proptest::prop_assert_eq!(&base, &key(&parts(&params, &b, &env)));
            let mut p2 = params.clone();
            let name = p2.keys().nth(changed % p2.len()).unwrap().clone();
            p2.get_mut(&name).unwrap().push('!');
            proptest::prop_assert_ne!(&base, &key(&parts(&p2, &a, &env)));
        }
    }

    #[test]
    fn an_entry_names_where_each_output_is_and_ages() {
        let outputs = vec![OutputFile {
            path: "model.json".into(),
            size: 9,
            run_id: None,
            artifact_path: None,
            sha256: Some("d".into()),
        }];
        let e = entry("k", &outputs, "mlrun", "dagrun", 1_000);
        assert_eq!(e.outputs[0].run_id.as_deref(), Some("mlrun"));
        assert_eq!(
            e.outputs[0].artifact_path.as_deref(),
            Some("outputs/model.json")
        );
        assert_eq!(unusable(&e, "k", 5_000, None), None);
        assert_eq!(unusable(&e, "k", 5_000, Some(10_000)), None);
        assert!(unusable(&e, "k", 20_000, Some(10_000))
            .unwrap()
            .contains("maxAgeSeconds"));
        assert!(unusable(&e, "other", 5_000, None).is_some());
        let facts = |hit: bool| crate::wire::StepFacts {
            cache_key: Some("k".into()),
            cached_from: hit.then(|| crate::wire::CachedFrom {
                mlflow_run_id: "old".into(),
                run_id: "r0".into(),
            }),
            ..Default::default()
        };
        let ran = crate::wire::Outcome::Succeeded {
            outputs: outputs.clone(),
            facts: facts(false),
        };
        assert!(entry_of(&ran, Some("mlrun"), "r", 1).is_some());
        assert!(
            entry_of(&ran, None, "r", 1).is_none(),
            "no MLflow run to point at"
        );
        let hit = crate::wire::Outcome::Succeeded {
            outputs,
            facts: facts(true),
        };
        assert!(
            entry_of(&hit, Some("mlrun"), "r", 1).is_none(),
            "a hit leaves no new entry"
        );
    }
}
