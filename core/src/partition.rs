//! Partition planning: which upstream files each instance of a node receives.
//!
//! # Guarantees
//! - Deterministic: the same files (in any order), instance count and mode give the same plan.
//! - `broadcast`: every instance gets every file.
//! - Other modes: every file goes to exactly one instance (files a `by-key` regex does not match
//!   go to none and are listed in [`Plan::unmatched`]); the files of one directory (`by-directory`)
//!   or one key (`by-key`) stay together.
//! - Balance: groups are placed largest first on the instance with the fewest bytes so far
//!   (LPT scheduling), so the fullest instance exceeds the emptiest by at most the largest group.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

use crate::template::{Partition, PartitionMode};

/// One file produced by an upstream instance (an MLflow artifact).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactFile {
    /// Path as laid out in the consumer's input directory (see [`input_path`]).
    pub path: String,
    /// The MLflow run that holds the artifact.
    pub run_id: String,
    /// Path of the artifact inside that run's artifact root.
    pub artifact_path: String,
    pub size: u64,
    /// Its SHA-256 (hex), when the step that wrote it took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Where an upstream file appears inside a consumer's input: the upstream output path itself
/// when the upstream node has one instance, `<instance>/<path>` when it has several (so that
/// fan-in of N instances never collides).
pub fn input_path(upstream_instances: u32, upstream_instance: u32, output_path: &str) -> String {
    if upstream_instances <= 1 {
        output_path.to_string()
    } else {
        format!("{upstream_instance}/{output_path}")
    }
}

/// Why `path` is not a safe relative artifact path (absolute, `..`, empty segments, NUL), or
/// `None`. Paths come from steps and are joined to directories on agents: this keeps every file
/// inside its directory.
pub fn relative_path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("is empty".into());
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Some(format!(
            "{path:?} must be a relative path with '/' separators"
        ));
    }
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Some(format!("{path:?} has an empty, '.' or '..' segment"));
    }
    None
}

/// The assignment of files to instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `slices[i]` are the files of instance `i`, sorted by path.
    pub slices: Vec<Vec<ArtifactFile>>,
    /// Paths a `by-key` regex did not match; no instance receives them.
    pub unmatched: Vec<String>,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Zero instances were asked for.
    #[error("a node needs at least one instance to receive its inputs")]
    NoInstances,
    /// The `by-key` regex is missing or invalid (validation normally catches this first).
    #[error("by-key partitioning needs a valid keyRegex with a capture group: {0}")]
    BadKeyRegex(String),
    /// The mode is not one this version knows.
    #[error("unknown partitioning mode {0:?}")]
    UnknownMode(String),
    /// One instance would get a file list larger than a run's records hold.
    #[error("instance {instance} would receive {files} input files ({} KiB of file list; at most {} KiB fit in one instance's record). Give the node more instances with by-file or by-directory partitioning, or have the upstream step write fewer, larger files (e.g. archives)", .bytes / 1024, MAX_INSTANCE_INPUT_BYTES / 1024)]
    TooManyInputs {
        instance: u32,
        files: usize,
        bytes: usize,
    },
}

/// The largest file list (as JSON) one instance may receive: its record, its work item and its
/// lease must each fit in the edge's storage rows and messages.
pub const MAX_INSTANCE_INPUT_BYTES: usize = 1 << 20;

/// About how many bytes `files` take in JSON (what the instance row and work item carry).
pub fn listed_bytes<'a>(files: impl IntoIterator<Item = &'a ArtifactFile>) -> usize {
    files
        .into_iter()
        .map(|f| f.path.len() + f.artifact_path.len() + f.run_id.len() + 64)
        .sum()
}

/// Plans how `files` are split across `instances`.
///
/// # Errors
/// See [`PlanError`]; every error is a template problem, never a transient one.
pub fn plan(
    files: &[ArtifactFile],
    instances: u32,
    partition: &Partition,
) -> Result<Plan, PlanError> {
    if instances == 0 {
        return Err(PlanError::NoInstances);
    }
    let files = broadcast(files.to_vec());
    let mut unmatched = Vec::new();
    let groups: Vec<(String, Vec<ArtifactFile>)> = match &partition.mode {
        PartitionMode::Broadcast => {
            return Ok(Plan {
                slices: vec![files; instances as usize],
                unmatched,
            });
        }
        PartitionMode::ByFile => files
            .into_iter()
            .map(|f| (f.path.clone(), vec![f]))
            .collect(),
        PartitionMode::ByDirectory => {
            let mut dirs = BTreeMap::<String, Vec<ArtifactFile>>::new();
            for f in files {
                let dir = f
                    .path
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_string())
                    .unwrap_or_default();
                dirs.entry(dir).or_default().push(f);
            }
            dirs.into_iter().collect()
        }
        PartitionMode::ByKey => {
            let source = partition.key_regex.as_deref().unwrap_or_default();
            let re = regex_lite::Regex::new(source)
                .map_err(|e| PlanError::BadKeyRegex(e.to_string()))?;
            if re.captures_len() < 2 {
                return Err(PlanError::BadKeyRegex(format!(
                    "{source:?} has no capture group"
                )));
            }
            let mut keyed = BTreeMap::<String, Vec<ArtifactFile>>::new();
            for f in files {
                match re.captures(&f.path).and_then(|c| c.get(1)) {
                    Some(m) => keyed.entry(m.as_str().to_string()).or_default().push(f),
                    None => unmatched.push(f.path),
                }
            }
            keyed.into_iter().collect()
        }
        PartitionMode::Unknown(m) => return Err(PlanError::UnknownMode(m.clone())),
    };
    Ok(Plan {
        slices: balance(groups, instances as usize),
        unmatched,
    })
}

/// What every instance of a `broadcast` edge receives: each file once, in path order. (The run
/// keeps it once per node rather than in every instance.)
pub fn broadcast(mut files: Vec<ArtifactFile>) -> Vec<ArtifactFile> {
    files.sort();
    files.dedup();
    files
}

/// Longest-processing-time-first: biggest group to the lightest instance; ties go to the
/// lower key and the lower instance index, which keeps the result deterministic.
fn balance(groups: Vec<(String, Vec<ArtifactFile>)>, instances: usize) -> Vec<Vec<ArtifactFile>> {
    let mut sized: Vec<(u64, String, Vec<ArtifactFile>)> = groups
        .into_iter()
        .map(|(k, fs)| (fs.iter().map(|f| f.size).sum(), k, fs))
        .collect();
    // Largest first; among equal sizes, key order (groups arrive sorted; the sort is stable).
    sized.sort_by_key(|g| std::cmp::Reverse(g.0));
    // The lightest instance is the least of (bytes, files, index): equal loads are broken by
    // file count, so zero-byte files still spread out, then by the lower index. A heap, not a
    // scan: 5,000 groups over 100,000 instances were 500 million comparisons.
    let mut lightest: BinaryHeap<Reverse<(u64, usize, usize)>> =
        (0..instances).map(|i| Reverse((0, 0, i))).collect();
    let mut slices: Vec<Vec<ArtifactFile>> = vec![Vec::new(); instances];
    for (bytes, _, fs) in sized {
        let Some(Reverse((load, count, target))) = lightest.pop() else {
            break;
        };
        lightest.push(Reverse((load + bytes, count + fs.len(), target)));
        slices[target].extend(fs);
    }
    for s in &mut slices {
        s.sort();
    }
    slices
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, size: u64) -> ArtifactFile {
        ArtifactFile {
            path: path.into(),
            run_id: "r".into(),
            artifact_path: format!("outputs/{path}"),
            size,
            sha256: None,
        }
    }

    fn mode(m: &str, key: Option<&str>) -> Partition {
        Partition {
            mode: PartitionMode::parse(m),
            key_regex: key.map(String::from),
        }
    }

    fn bytes(slice: &[ArtifactFile]) -> u64 {
        slice.iter().map(|f| f.size).sum()
    }

    #[test]
    fn partition_plan_balances_instances_by_bytes() {
        let files = [
            file("a", 100),
            file("b", 60),
            file("c", 40),
            file("d", 1),
            file("e", 1),
        ];
        let p = plan(&files, 2, &mode("by-file", None)).unwrap();
        assert_eq!(
            p.slices[0]
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "d"]
        );
        assert_eq!(
            p.slices[1]
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            vec!["b", "c", "e"]
        );
    }

    #[test]
    fn by_directory_keeps_a_directory_together() {
        let files = [
            file("x/1", 5),
            file("x/2", 5),
            file("y/1", 5),
            file("top", 1),
        ];
        let p = plan(&files, 3, &mode("by-directory", None)).unwrap();
        assert_eq!(p.slices[0].len(), 2);
        assert!(p.slices[0].iter().all(|f| f.path.starts_with("x/")));
    }

    #[test]
    fn by_key_groups_by_the_capture_and_reports_unmatched_files() {
        let files = [
            file("2024-01-a.csv", 1),
            file("2024-01-b.csv", 1),
            file("2024-02-a.csv", 1),
            file("README", 1),
        ];
        let p = plan(&files, 2, &mode("by-key", Some(r"^(\d{4}-\d{2})-"))).unwrap();
        assert_eq!(p.unmatched, vec!["README"]);
        assert_eq!(p.slices[0].len(), 2);
        assert_eq!(
            p.slices[1]
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            vec!["2024-02-a.csv"]
        );
    }

    #[test]
    fn more_instances_than_files_leaves_some_empty() {
        let p = plan(&[file("only", 3)], 3, &mode("by-file", None)).unwrap();
        assert_eq!(
            p.slices.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 0, 0]
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(relative_path_problem("a/b.csv"), None);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            assert!(relative_path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn fan_in_paths_never_collide() {
        assert_eq!(input_path(1, 0, "model.pkl"), "model.pkl");
        assert_ne!(input_path(2, 0, "model.pkl"), input_path(2, 1, "model.pkl"));
    }

    fn arb_files() -> impl Strategy<Value = Vec<ArtifactFile>> {
        // Paths are unique within one upstream node, as they are in real manifests.
        proptest::collection::btree_map("[a-c]{1,2}/[a-e]{1,3}", 0u64..10_000, 0..40)
            .prop_map(|m| m.into_iter().map(|(p, s)| file(&p, s)).collect())
    }

    fn arb_mode() -> impl Strategy<Value = Partition> {
        prop_oneof![
            Just(mode("broadcast", None)),
            Just(mode("by-file", None)),
            Just(mode("by-directory", None)),
            Just(mode("by-key", Some("^[a-c]+/([a-c])"))),
        ]
    }

    /// The balance as it was first written, scanning every instance per group: what the heap
    /// must choose too, so that a run planned before and after the change gets the same slices.
    fn balance_by_scan(
        groups: Vec<(String, Vec<ArtifactFile>)>,
        instances: usize,
    ) -> Vec<Vec<ArtifactFile>> {
        let mut sized: Vec<(u64, String, Vec<ArtifactFile>)> = groups
            .into_iter()
            .map(|(k, fs)| (fs.iter().map(|f| f.size).sum(), k, fs))
            .collect();
        sized.sort_by_key(|g| std::cmp::Reverse(g.0));
        let mut load: Vec<(u64, usize)> = vec![(0, 0); instances];
        let mut slices: Vec<Vec<ArtifactFile>> = vec![Vec::new(); instances];
        for (bytes, _, fs) in sized {
            let target = (0..instances).min_by_key(|&i| (load[i], i)).unwrap_or(0);
            load[target].0 += bytes;
            load[target].1 += fs.len();
            slices[target].extend(fs);
        }
        for s in &mut slices {
            s.sort();
        }
        slices
    }

    proptest! {
        #[test]
        fn the_heap_balances_as_the_scan_did(
            sizes in proptest::collection::vec((0u64..50, 1usize..4), 0..60),
            n in 1usize..20,
        ) {
            // Many equal sizes (and zero-byte files), so the ties decide most choices.
            let groups: Vec<(String, Vec<ArtifactFile>)> = sizes
                .iter()
                .enumerate()
                .map(|(g, &(size, count))| {
                    let key = format!("g{g:03}");
                    (key.clone(), (0..count).map(|f| file(&format!("{key}/{f}"), size)).collect())
                })
                .collect();
            prop_assert_eq!(balance(groups.clone(), n), balance_by_scan(groups, n));
        }

        #[test]
        fn every_file_is_assigned_exactly_once_or_to_all(files in arb_files(), n in 1u32..8, m in arb_mode()) {
            let p = plan(&files, n, &m).unwrap();
            prop_assert_eq!(p.slices.len(), n as usize);
            let mut distinct = files.clone();
            distinct.sort();
            distinct.dedup();
            if m.mode == PartitionMode::Broadcast {
                for s in &p.slices { prop_assert_eq!(s, &distinct); }
            } else {
                let mut all: Vec<ArtifactFile> = p.slices.concat();
                all.sort();
                let mut expected: Vec<ArtifactFile> = distinct.into_iter().filter(|f| !p.unmatched.contains(&f.path)).collect();
                expected.sort();
                prop_assert_eq!(all, expected);
            }
        }

        #[test]
        fn plans_do_not_depend_on_input_order(files in arb_files(), n in 1u32..8, m in arb_mode()) {
            let mut reversed = files.clone();
            reversed.reverse();
            prop_assert_eq!(plan(&files, n, &m).unwrap(), plan(&reversed, n, &m).unwrap());
        }

        #[test]
        fn instances_are_balanced_within_the_largest_group(files in arb_files(), n in 1u32..8) {
            for m in [mode("by-file", None), mode("by-directory", None)] {
                let p = plan(&files, n, &m).unwrap();
                let loads: Vec<u64> = p.slices.iter().map(|s| bytes(s)).collect();
                let largest_group = match m.mode {
                    PartitionMode::ByFile => files.iter().map(|f| f.size).max().unwrap_or(0),
                    _ => {
                        let mut dirs = BTreeMap::<&str, u64>::new();
                        let mut distinct = files.clone(); distinct.sort(); distinct.dedup();
                        for f in &distinct { *dirs.entry(f.path.rsplit_once('/').unwrap().0).or_default() += f.size; }
                        dirs.values().copied().max().unwrap_or(0)
                    }
                };
                let (max, min) = (*loads.iter().max().unwrap(), *loads.iter().min().unwrap());
                prop_assert!(max - min <= largest_group, "loads {:?}, largest group {}", loads, largest_group);
            }
        }

        #[test]
        fn a_key_never_spans_two_instances(files in arb_files(), n in 1u32..8) {
            let p = plan(&files, n, &mode("by-key", Some("^[a-c]+/([a-c])"))).unwrap();
            let mut owner = BTreeMap::new();
            for (i, s) in p.slices.iter().enumerate() {
                for f in s {
                    let key = f.path.split('/').nth(1).unwrap()[..1].to_string();
                    prop_assert_eq!(*owner.entry(key).or_insert(i), i);
                }
            }
        }
    }
}
