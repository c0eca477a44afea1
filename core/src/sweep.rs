//! Parameter sweeps of a project node: the points of a grid (lists of values per parameter,
//! crossed) or of random samples (seeded, so a rerun draws the same points), and which point
//! and which partition of the node's inputs each instance runs.
//!
//! A swept node runs one instance per point, each on all of its inputs; with
//! `crossPartitions`, one per point and partition (`points × instances`), instance
//! `point × partitions + partition`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most points one sweep may have.
pub const MAX_POINTS: usize = 1_000;

/// A sweep over a project node's parameters: `grid` or `random`, not both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sweep {
    /// Parameter → the values to try; every combination is a point.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomSweep>,
    /// Run every point on each partition of the node's inputs (the node's `instances`);
    /// otherwise each point runs once, on all of them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_partitions: bool,
}

/// Random points: `samples` draws of every parameter from its distribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RandomSweep {
    pub samples: u32,
    /// The same seed draws the same points.
    #[serde(default)]
    pub seed: u64,
    pub parameters: BTreeMap<String, Distribution>,
}

/// Where a random parameter's values come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Distribution {
    /// `{"uniform": [low, high]}`: a float, evenly.
    Uniform(f64, f64),
    /// `{"logUniform": [low, high]}`: a float whose logarithm is even (learning rates).
    LogUniform(f64, f64),
    /// `{"intUniform": [low, high]}`: a whole number, both ends included.
    IntUniform(i64, i64),
    /// `{"choice": [values…]}`: one of the values.
    Choice(Vec<String>),
}

impl Sweep {
    /// The parameters it sets, by name.
    pub fn parameter_names(&self) -> std::collections::BTreeSet<String> {
        let drawn = self.random.iter().flat_map(|r| r.parameters.keys());
        self.grid.keys().chain(drawn).cloned().collect()
    }

    /// How many points the sweep has (0 when it has none: a validation problem).
    pub fn count(&self) -> usize {
        if let Some(r) = &self.random {
            return r.samples as usize;
        }
        if self.grid.is_empty() {
            return 0;
        }
        self.grid
            .values()
            .try_fold(1usize, |n, values| n.checked_mul(values.len()))
            .unwrap_or(usize::MAX)
    }

    /// Every point, in order: parameter → value. A grid varies its last parameter (by name)
    /// fastest; random points are drawn from the seed, parameter by parameter in name order.
    pub fn points(&self) -> Vec<BTreeMap<String, String>> {
        match &self.random {
            Some(r) => random_points(r),
            None => grid_points(&self.grid),
        }
    }

    /// Point `index` alone (what [`Sweep::points`] has at that place): a grid's is read off
    /// its digits, a random one is drawn after the earlier ones.
    pub fn point(&self, index: usize) -> BTreeMap<String, String> {
        match &self.random {
            Some(r) => random_points(&RandomSweep {
                samples: (index + 1).min(r.samples as usize) as u32,
                ..r.clone()
            })
            .pop()
            .unwrap_or_default(),
            None => {
                let mut rest = index;
                let mut point = BTreeMap::new();
                for (name, values) in self.grid.iter().rev() {
                    let n = values.len().max(1);
                    if let Some(v) = values.get(rest % n) {
                        point.insert(name.clone(), v.clone());
                    }
                    rest /= n;
                }
                point
            }
        }
    }

    /// Every problem of the sweep, as (field below `sweep`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.random, self.grid.is_empty()) {
            (Some(_), false) => out.push((
                String::new(),
                "has both a grid and random samples; a sweep is one or the other".into(),
            )),
            (None, true) => out.push((
                String::new(),
                "has no points: give a grid (parameter → values) or random samples".into(),
            )),
            _ => {}
        }
        for (name, values) in &self.grid {
            if let Some(why) = crate::names::identifier_problem(name) {
                out.push((
                    format!("grid/{name}"),
                    format!("parameter name {name:?} {why}"),
                ));
            }
            if values.is_empty() {
                out.push((format!("grid/{name}"), "lists no values".into()));
            }
        }
        if let Some(r) = &self.random {
            if r.samples == 0 {
                out.push(("random/samples".into(), "must be at least 1".into()));
            }
            if r.parameters.is_empty() {
                out.push((
                    "random/parameters".into(),
                    "names no parameter to draw".into(),
                ));
            }
            for (name, d) in &r.parameters {
                let at = format!("random/parameters/{name}");
                if let Some(why) = crate::names::identifier_problem(name) {
                    out.push((at.clone(), format!("parameter name {name:?} {why}")));
                }
                if let Some(why) = d.problem() {
                    out.push((at, why));
                }
            }
        }
        let n = self.count();
        if n > MAX_POINTS {
            out.push((
                String::new(),
                format!("has {n} points; at most {MAX_POINTS} are allowed (fewer values, or random samples)"),
            ));
        }
        out
    }
}

impl Distribution {
    fn problem(&self) -> Option<String> {
        let finite = |a: f64, b: f64| a.is_finite() && b.is_finite();
        match self {
            Distribution::Uniform(a, b) if !finite(*a, *b) || a >= b => {
                Some(format!("uniform [{a}, {b}] needs low < high"))
            }
            Distribution::LogUniform(a, b) if !finite(*a, *b) || *a <= 0.0 || a >= b => {
                Some(format!("logUniform [{a}, {b}] needs 0 < low < high"))
            }
            Distribution::IntUniform(a, b) if a > b => {
                Some(format!("intUniform [{a}, {b}] needs low <= high"))
            }
            Distribution::Choice(v) if v.is_empty() => Some("choice lists no values".into()),
            _ => None,
        }
    }

    /// A value drawn with `rng`.
    fn draw(&self, rng: &mut SplitMix) -> String {
        match self {
            Distribution::Uniform(a, b) => short(a + (b - a) * rng.unit()),
            Distribution::LogUniform(a, b) => {
                short((a.ln() + (b.ln() - a.ln()) * rng.unit()).exp())
            }
            Distribution::IntUniform(a, b) => {
                let span = (b - a) as u64 + 1;
                (a + (rng.next() % span) as i64).to_string()
            }
            Distribution::Choice(v) => v[(rng.next() % v.len() as u64) as usize].clone(),
        }
    }
}

/// A float as a person reads it: 6 significant digits, no trailing zeros.
fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = 6 - 1 - x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits.clamp(0, 300));
    let rounded = (x * scale).round() / scale;
    format!("{rounded}")
}

fn grid_points(grid: &BTreeMap<String, Vec<String>>) -> Vec<BTreeMap<String, String>> {
    let mut points = vec![BTreeMap::new()];
    for (name, values) in grid {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.insert(name.clone(), v.clone());
                    p
                })
            })
            .collect();
    }
    points
}

fn random_points(r: &RandomSweep) -> Vec<BTreeMap<String, String>> {
    let mut rng = SplitMix(r.seed);
    (0..r.samples)
        .map(|_| {
            r.parameters
                .iter()
                .map(|(name, d)| (name.clone(), d.draw(&mut rng)))
                .collect()
        })
        .collect()
}

/// SplitMix64: small, fast, and the same on every platform (wasm32 included).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Which point and partition instance `index` of a node runs, with `partitions` partitions
/// of its inputs (its `instances`; 1 for a sweep that does not cross them).
pub fn point_and_partition(index: u32, partitions: u32) -> (u32, u32) {
    let p = partitions.max(1);
    (index / p, index % p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grid(pairs: &[(&str, &[&str])]) -> Sweep {
        Sweep {
            grid: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_grid_crosses_every_value_of_every_parameter() {
        let s = grid(&[
            ("alpha", &["0.1", "1"]),
            ("l1_ratio", &["0.1", "0.5", "0.9"]),
        ]);
        assert_eq!(s.count(), 6);
        let points = s.points();
        assert_eq!(points.len(), 6);
        assert_eq!(points[0]["alpha"], "0.1");
        assert_eq!(points[0]["l1_ratio"], "0.1");
        assert_eq!(
            points[1]["l1_ratio"], "0.5",
            "the last parameter varies fastest"
        );
        assert_eq!(points[5]["alpha"], "1");
        assert!(s.problems().is_empty());
    }

    #[test]
    fn random_points_follow_their_distributions_and_their_seed() {
        let s = Sweep {
            random: Some(RandomSweep {
                samples: 50,
                seed: 7,
                parameters: BTreeMap::from([
                    ("lr".into(), Distribution::LogUniform(1e-4, 1e-1)),
                    ("depth".into(), Distribution::IntUniform(2, 5)),
                    ("x".into(), Distribution::Uniform(-1.0, 1.0)),
                    (
                        "kernel".into(),
                        Distribution::Choice(vec!["rbf".into(), "linear".into()]),
                    ),
                ]),
            }),
            ..Default::default()
        };
        let points = s.points();
        assert_eq!(points.len(), 50);
        assert_eq!(points, s.points(), "the same seed draws the same points");
        assert_eq!(s.point(17), points[17]);
        for p in &points {
            let lr: f64 = p["lr"].parse().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            let depth: i64 = p["depth"].parse().unwrap();
            assert!((2..=5).contains(&depth));
            let x: f64 = p["x"].parse().unwrap();
            assert!((-1.0..=1.0).contains(&x));
            assert!(["rbf", "linear"].contains(&p["kernel"].as_str()));
        }
        let depths: std::collections::BTreeSet<&str> =
            points.iter().map(|p| p["depth"].as_str()).collect();
        assert_eq!(depths.len(), 4, "both ends included: {depths:?}");
        let mut other = s.clone();
        other.random.as_mut().unwrap().seed = 8;
        assert_ne!(points, other.points(), "another seed, other points");
    }

    #[test]
    fn a_sweep_says_what_is_wrong_with_it() {
        let fields =
            |s: &Sweep| -> Vec<String> { s.problems().into_iter().map(|(f, _)| f).collect() };
        assert_eq!(fields(&Sweep::default()), vec![String::new()]);
        let bad = Sweep {
            grid: BTreeMap::from([("a".into(), vec![])]),
            random: Some(RandomSweep {
                samples: 0,
                seed: 0,
                parameters: BTreeMap::from([
                    ("b".into(), Distribution::LogUniform(0.0, 1.0)),
                    ("c".into(), Distribution::IntUniform(3, 1)),
                ]),
            }),
            cross_partitions: false,
        };
        let f = fields(&bad);
        for expected in [
            "",
            "grid/a",
            "random/samples",
            "random/parameters/b",
            "random/parameters/c",
        ] {
            assert!(f.contains(&expected.to_string()), "{expected:?} in {f:?}");
        }
        let big = grid(&[("a", &["1"; 40]), ("b", &["2"; 40])]);
        assert!(
            big.problems()[0].1.contains("1600 points"),
            "{:?}",
            big.problems()
        );
    }

    #[test]
    fn instances_run_a_point_on_a_partition() {
        assert_eq!(point_and_partition(0, 1), (0, 0));
        assert_eq!(point_and_partition(5, 1), (5, 0));
        assert_eq!(point_and_partition(5, 2), (2, 1));
        assert_eq!(point_and_partition(5, 0), (5, 0));
    }

    #[test]
    fn floats_are_shown_short() {
        assert_eq!(short(0.123456789), "0.123457");
        assert_eq!(short(12345.6789), "12345.7");
        assert_eq!(short(0.000123456789), "0.000123457");
        assert_eq!(short(2.0), "2");
    }

    proptest! {
        #[test]
        fn a_grid_has_as_many_distinct_points_as_it_counts(
            sizes in proptest::collection::vec(1usize..5, 1..4),
        ) {
            let grid: BTreeMap<String, Vec<String>> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("p{i}"), (0..*n).map(|v| v.to_string()).collect()))
                .collect();
            let s = Sweep { grid, ..Default::default() };
            let points = s.points();
            prop_assert_eq!(points.len(), s.count());
            let distinct: std::collections::BTreeSet<_> = points.iter().collect();
            prop_assert_eq!(distinct.len(), points.len());
            for (i, p) in points.iter().enumerate() {
                prop_assert_eq!(&s.point(i), p);
            }
        }
    }
}
