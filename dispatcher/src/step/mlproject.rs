//! Starting an MLproject entry point the way `mlflow run --env-manager local --run-id <id>`
//! does (MLflow 3's `mlflow/projects`), without importing MLflow first: that import is ~3 s of
//! every step. The decision is pure: which command, in which directory, or why only
//! `mlflow run` itself can do it (then the step falls back to it).
//!
//! Parity with MLflow, checked by `tests/tests/launcher.rs` against MLflow's own code:
//! - the MLproject file is found case-insensitively; without an entry point of that name, a
//!   `.py` / `.sh` file is run with `python` / `$SHELL`;
//! - parameters without a value and without a default are an error naming them;
//! - values (and defaults as Python prints them) are shell-quoted like Python's `shlex.quote`
//!   and substituted into the command; undeclared parameters are appended as `--key value`;
//! - `uri` parameters must have a scheme; local `path` parameters must exist and become
//!   absolute;
//! - the command runs as `bash -c <command>` in the project directory with `MLFLOW_RUN_ID`,
//!   `MLFLOW_TRACKING_URI` and `MLFLOW_EXPERIMENT_ID` set, and the run is tagged
//!   `mlflow.project.backend=local`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use concurrent_core::project::{has_scheme, EntryPointInfo, ParameterInfo, ProjectInfo};
use serde_yaml::Value;

use super::environment::{declared, Declared};

/// How a step starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// `bash -c <command>` in `dir`, in the environment the MLproject declares.
    Direct {
        dir: PathBuf,
        command: String,
        env: Declared,
    },
    /// Only `mlflow run` can do this (artifact download, Python format syntax); why.
    Mlflow(String),
}

/// Decides how to start `entry` of the local project in `dir` with `params`; `cwd` is where
/// relative `path` values resolve (where `mlflow run` would have been started).
///
/// # Errors
/// The message `mlflow run` would fail with.
pub fn plan(
    dir: &Path,
    entry: &str,
    params: &BTreeMap<String, String>,
    cwd: &Path,
) -> Result<Plan, String> {
    let spec = match find_mlproject(dir) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_yaml::from_str::<Value>(&text)
                .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))?
        }
        None => Value::Null,
    };
    let env = declared(dir, &spec)?;
    let entry_points = spec.get("entry_points").and_then(Value::as_mapping);
    let found = entry_points.and_then(|m| m.get(entry));
    let (declared, command) = match found {
        Some(ep) => {
            let command = ep
                .get("command")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("entry point {entry:?} has no command"))?;
            let declared: Vec<(String, String, Option<String>)> = ep
                .get("parameters")
                .and_then(Value::as_mapping)
                .map(|m| m.iter().map(|(k, v)| parameter(k, v)).collect())
                .unwrap_or_default();
            (declared, command.to_string())
        }
        None => {
            let runner = match Path::new(entry).extension().and_then(|e| e.to_str()) {
                Some("py") => "python".to_string(),
                Some("sh") => std::env::var("SHELL").unwrap_or_else(|_| "bash".into()),
                _ => {
                    let names: Vec<String> = entry_points
                        .map(|m| {
                            m.keys()
                                .filter_map(|k| k.as_str().map(|s| format!("'{s}'")))
                                .collect()
                        })
                        .unwrap_or_default();
                    return Err(format!(
                        "Could not find {entry} among entry points [{}] or interpret {entry} as a runnable script. Supported script file extensions: ['.py', '.sh']",
                        names.join(", ")
                    ));
                }
            };
            (vec![], format!("{runner} {}", quote(entry)))
        }
    };
    let missing: Vec<String> = declared
        .iter()
        .filter(|(name, _, default)| !params.contains_key(name) && default.is_none())
        .map(|(n, _, _)| format!("'{n}'"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "No value given for missing parameters: {}",
            missing.join(", ")
        ));
    }
    let mut values = BTreeMap::new();
    for (name, ty, default) in &declared {
        let value = params
            .get(name)
            .cloned()
            .or_else(|| default.clone())
            .unwrap_or_default();
        let value = match ty.as_str() {
            "uri" if !has_scheme(&value) => {
                return Err(format!("Expected URI for parameter {name} but got {value}"))
            }
            "path" if has_scheme(&value) && !value.starts_with("file:") => {
                return Ok(Plan::Mlflow(format!(
                    "parameter {name} is a remote path to download"
                )))
            }
            "path" => {
                let local = value.strip_prefix("file://").unwrap_or(&value);
                let p = cwd.join(local);
                if !p.exists() {
                    return Err(format!("Got value {value} for parameter {name}, but no such file or directory was found."));
                }
                absolute(&p)
            }
            _ => value,
        };
        values.insert(name.clone(), quote(&value));
    }
    let mut command = match format_command(&command, &values) {
        Ok(c) => c,
        Err(why) if why.contains("Python format syntax") => return Ok(Plan::Mlflow(why)),
        Err(why) => return Err(why),
    };
    for (k, v) in params
        .iter()
        .filter(|(k, _)| !declared.iter().any(|(n, _, _)| n == *k))
    {
        command.push_str(&format!(" --{} {}", quote(k), quote(v)));
    }
    Ok(Plan::Direct {
        dir: dir.to_path_buf(),
        command,
        env,
    })
}

/// What an MLproject (its text; `None`: the project has none) declares, for the designer.
///
/// # Errors
/// The file is not valid YAML, or its `entry_points` are not a mapping.
pub fn describe(text: Option<&str>) -> Result<ProjectInfo, String> {
    let Some(text) = text else {
        return Ok(ProjectInfo::default());
    };
    let spec: Value =
        serde_yaml::from_str(text).map_err(|e| format!("the MLproject is not valid YAML: {e}"))?;
    let environment = ["python_env", "conda_env", "docker_env"]
        .into_iter()
        .find(|k| spec.get(*k).is_some())
        .map(String::from);
    let entry_points = match spec.get("entry_points") {
        None | Some(Value::Null) => vec![],
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(name, ep)| EntryPointInfo {
                name: python_str(name).unwrap_or_default(),
                command: ep
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                parameters: ep
                    .get("parameters")
                    .and_then(Value::as_mapping)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let (name, kind, default) = parameter(k, v);
                                ParameterInfo {
                                    name,
                                    kind,
                                    default,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        Some(_) => return Err("the MLproject's entry_points is not a mapping".into()),
    };
    Ok(ProjectInfo {
        name: spec.get("name").and_then(python_str),
        commit: None,
        environment,
        entry_points,
    })
}

/// The MLproject file of a local project directory, if it has one.
pub fn read_local(dir: &Path) -> Result<Option<String>, String> {
    find_mlproject(dir)
        .map(|p| {
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
        .transpose()
}

fn find_mlproject(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case("mlproject"))
        })
}

/// (name, type, default as Python's `str()` prints it).
fn parameter(key: &Value, spec: &Value) -> (String, String, Option<String>) {
    let name = python_str(key).unwrap_or_default();
    match spec {
        Value::String(ty) => (name, ty.clone(), None),
        _ => (
            name,
            spec.get("type")
                .and_then(Value::as_str)
                .unwrap_or("string")
                .to_string(),
            spec.get("default").and_then(python_str),
        ),
    }
}

/// A YAML scalar as Python's `str()` of what `yaml.safe_load` gives (`None` for null).
fn python_str(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        Value::Number(n) if n.is_f64() => Some(python_float(n.as_f64().unwrap_or_default())),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        other => Some(
            serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, positional for 1e-4 ≤ |x| < 1e16.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{x:e}"); // shortest digits: "-1.2345e-5"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let s = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// Python's `shlex.quote`.
pub fn quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let safe = |c: char| c.is_alphanumeric() && c.is_ascii() || "@%+=:,./-_".contains(c);
    if s.chars().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

fn absolute(p: &Path) -> String {
    // os.path.abspath: normalised, symlinks kept.
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

/// Python's `str.format(**values)` for `{name}` fields; `{{`/`}}` are literal braces.
fn format_command(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                if name.contains([':', '!', '[', '.']) {
                    return Err(format!(
                        "{{{name}}} uses Python format syntax; only mlflow run itself applies it"
                    ));
                }
                let value = values.get(&name).ok_or_else(|| format!("the command refers to {{{name}}}, which is not a parameter of the entry point"))?;
                out.push_str(value);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_lists_entry_points_in_order_with_typed_parameters() {
        let info = describe(Some(
            "name: demo\npython_env: python_env.yaml\nentry_points:\n  train:\n    parameters:\n      alpha: {type: float, default: 0.5}\n      data: uri\n      n: {default: 3}\n    command: python t.py\n  eval:\n    command: python e.py\n",
        ))
        .unwrap();
        assert_eq!(info.name.as_deref(), Some("demo"));
        assert_eq!(info.environment.as_deref(), Some("python_env"));
        let names: Vec<&str> = info.entry_points.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["train", "eval"]);
        let p = &info.entry_points[0].parameters;
        let shown: Vec<(&str, &str, Option<&str>)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.kind.as_str(), p.default.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                ("alpha", "float", Some("0.5")),
                ("data", "uri", None),
                ("n", "string", Some("3"))
            ]
        );
        assert_eq!(describe(None).unwrap(), ProjectInfo::default());
        assert!(describe(Some("entry_points: [a, b]"))
            .unwrap_err()
            .contains("not a mapping"));
        assert!(describe(Some("name: ["))
            .unwrap_err()
            .contains("not valid YAML"));
    }

    #[test]
    fn quoting_matches_python_shlex() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("abc-1.2_x/y@z%+=:,"), "abc-1.2_x/y@z%+=:,");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\"'\"'s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("é"), "'é'");
    }

    #[test]
    fn floats_print_as_python_does() {
        for (x, s) in [
            (4.0, "4.0"),
            (0.0, "0.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (123.456, "123.456"),
            (-2.5, "-2.5"),
            (1e-4, "0.0001"),
            (1.5e20, "1.5e+20"),
        ] {
            assert_eq!(python_float(x), s, "{x}");
        }
    }

    #[test]
    fn a_declared_entry_point_gets_quoted_values_defaults_and_extras() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("MLproject"), "entry_points:\n  main:\n    parameters:\n      a: {type: float, default: 4}\n      b: string\n      flag: {default: true}\n    command: \"python t.py --a {a} --b {b} {flag} {{literal}}\"\n").unwrap();
        let params = BTreeMap::from([
            ("b".to_string(), "x y".to_string()),
            ("extra".to_string(), "$HOME".to_string()),
        ]);
        let plan = plan(dir.path(), "main", &params, dir.path()).unwrap();
        assert_eq!(
            plan,
            Plan::Direct {
                dir: dir.path().into(),
                command: "python t.py --a 4 --b 'x y' True {literal} --extra '$HOME'".into(),
                env: Declared::None,
            }
        );
        let err = super::plan(dir.path(), "main", &BTreeMap::new(), dir.path()).unwrap_err();
        assert_eq!(err, "No value given for missing parameters: 'b'");
        assert!(
            super::plan(dir.path(), "other", &BTreeMap::new(), dir.path())
                .unwrap_err()
                .contains("Could not find other among entry points ['main']")
        );
        assert_eq!(
            super::plan(dir.path(), "go.py", &BTreeMap::new(), dir.path()).unwrap(),
            Plan::Direct {
                dir: dir.path().into(),
                command: "python go.py".into(),
                env: Declared::None,
            }
        );
    }

    #[test]
    fn uri_and_path_parameters_are_checked_and_docker_env_is_declared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mlproject"), "entry_points:\n  main:\n    parameters: {u: uri, p: path}\n    command: \"run {u} {p}\"\n").unwrap();
        std::fs::write(dir.path().join("data.csv"), "").unwrap();
        let p = |u: &str, path: &str| {
            BTreeMap::from([
                ("u".to_string(), u.to_string()),
                ("p".to_string(), path.to_string()),
            ])
        };
        assert_eq!(
            plan(dir.path(), "main", &p("relative", "data.csv"), dir.path()).unwrap_err(),
            "Expected URI for parameter u but got relative"
        );
        assert!(plan(
            dir.path(),
            "main",
            &p("s3://b/k", "missing.csv"),
            dir.path()
        )
        .unwrap_err()
        .contains("no such file or directory"));
        let Plan::Direct { command, .. } =
            plan(dir.path(), "main", &p("s3://b/k", "./data.csv"), dir.path()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            command,
            format!("run s3://b/k {}", dir.path().join("data.csv").display())
        );
        assert!(matches!(
            plan(
                dir.path(),
                "main",
                &p("s3://b/k", "s3://b/data.csv"),
                dir.path()
            )
            .unwrap(),
            Plan::Mlflow(_)
        ));
        std::fs::write(
            dir.path().join("mlproject"),
            "docker_env: {image: x}\nentry_points: {main: {command: run}}\n",
        )
        .unwrap();
        assert!(matches!(
            plan(dir.path(), "main", &BTreeMap::new(), dir.path()).unwrap(),
            Plan::Direct {
                env: Declared::Docker(_),
                ..
            }
        ));
    }
}
