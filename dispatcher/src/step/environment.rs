//! A project's Python environment, by MLflow's rules: which one the MLproject declares
//! (`python_env`, `conda_env`, `docker_env`, or the default `python_env.yaml` / `conda.yaml`
//! files, as `mlflow/projects/_project_spec.py` decides), which manager builds it (the node's
//! `envManager` overrides, like `mlflow run --env-manager`), and building it once per content:
//! environments are cached under a key made of the spec and the requirement files it names (as
//! MLflow keys its own), so a later attempt reuses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use concurrent_core::env_cache::{to_evict, Bounds, Entry};
use concurrent_core::sign::sha256_hex;
use concurrent_core::template::EnvManager;
use serde_yaml::Value;

/// The environment an MLproject declares.
#[derive(Debug, Clone, PartialEq)]
pub enum Declared {
    /// No environment: the local Python.
    None,
    /// `python_env: <file>` (or a `python_env.yaml` next to the MLproject).
    Python(PathBuf),
    /// `conda_env: <file>` (or a `conda.yaml`).
    Conda(PathBuf),
    /// `docker_env`: the project runs in this image.
    Docker(DockerEnv),
}

/// An MLproject's `docker_env`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DockerEnv {
    pub image: String,
    /// `[["NAME", "value"], "COPIED_FROM_HOST"]` as MLflow reads it: (name, Some(value)) or
    /// (name, None) for a variable copied from the environment where the step starts.
    pub environment: Vec<(String, Option<String>)>,
    pub volumes: Vec<String>,
}

/// Reads which environment the MLproject in `dir` declares (`spec` is its YAML, `Null` when
/// there is none).
///
/// # Errors
/// MLflow's messages: several environment fields, a missing file, a `docker_env` without image.
pub fn declared(dir: &Path, spec: &Value) -> Result<Declared, String> {
    let fields: Vec<&str> = ["python_env", "conda_env", "docker_env"]
        .into_iter()
        .filter(|f| spec.get(f).is_some())
        .collect();
    if fields.len() > 1 {
        return Err(format!(
            "Project cannot contain multiple environment fields: {{{}}}",
            fields
                .iter()
                .map(|f| format!("'{f}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(docker) = spec.get("docker_env") {
        let image = docker.get("image").and_then(Value::as_str).unwrap_or("");
        if image.is_empty() {
            return Err("Project configuration (MLproject file) was invalid: Docker environment specified but no image attribute found.".into());
        }
        let environment = docker
            .get("environment")
            .and_then(Value::as_sequence)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| match i {
                        Value::String(name) => Some((name.clone(), None)),
                        Value::Sequence(pair) => Some((
                            pair.first()?.as_str()?.to_string(),
                            pair.get(1).and_then(Value::as_str).map(str::to_string),
                        )),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let volumes = docker
            .get("volumes")
            .and_then(Value::as_sequence)
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Declared::Docker(DockerEnv {
            image: image.to_string(),
            environment,
            volumes,
        }));
    }
    for (field, make) in [
        ("python_env", Declared::Python as fn(PathBuf) -> Declared),
        ("conda_env", Declared::Conda as fn(PathBuf) -> Declared),
    ] {
        if let Some(file) = spec.get(field).and_then(Value::as_str) {
            let path = dir.join(file);
            if !path.exists() {
                let what = if field == "python_env" {
                    "python_env file"
                } else {
                    "conda environment file"
                };
                return Err(format!(
                    "Project specified {what} {}, but no such file was found.",
                    path.display()
                ));
            }
            return Ok(make(path));
        }
    }
    if dir.join("python_env.yaml").exists() {
        return Ok(Declared::Python(dir.join("python_env.yaml")));
    }
    if dir.join("conda.yaml").exists() {
        return Ok(Declared::Conda(dir.join("conda.yaml")));
    }
    Ok(Declared::None)
}

/// How the step's environment is made.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The local (or image's) Python as it is.
    Local,
    /// A virtual environment from this spec, made by `manager` (uv or virtualenv).
    Virtual {
        manager: EnvManager,
        spec: PythonSpec,
    },
    /// A conda environment from this file.
    Conda(PathBuf),
    Docker(DockerEnv),
}

/// What `python_env.yaml` says (or what MLflow reads from a `conda.yaml` for uv/virtualenv).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PythonSpec {
    /// Empty: the Python the manager finds first.
    pub python: String,
    pub build_dependencies: Vec<String>,
    pub dependencies: Vec<String>,
    /// The file the spec was read from (its directory resolves `-r` lines).
    pub source: Option<PathBuf>,
    /// Conda packages of a `conda.yaml` that a Python environment cannot install (MLflow drops
    /// them too, with a warning); the build says so in the step's log.
    pub dropped: Vec<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_yaml(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{} is not valid YAML: {e}", path.display()))
}

impl PythonSpec {
    /// Reads a `python_env.yaml`.
    pub fn from_python_env(path: &Path) -> Result<PythonSpec, String> {
        let y = read_yaml(path)?;
        let python = match y.get("python") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        Ok(PythonSpec {
            python,
            build_dependencies: strings(y.get("build_dependencies")),
            dependencies: strings(y.get("dependencies")),
            source: Some(path.to_path_buf()),
            dropped: Vec::new(),
        })
    }

    /// What MLflow's `_PythonEnv.from_conda_yaml` takes from a `conda.yaml`: the `python`
    /// version, `pip`/`setuptools`/`wheel` as build dependencies, the `pip:` list; other conda
    /// packages are dropped (listed in `dropped`).
    ///
    /// # Errors
    /// An unreadable file, or MLflow's refusals: an unpinned `python`, or one pinned with
    /// `<`, `>` or `!=`.
    pub fn from_conda_yaml(path: &Path) -> Result<PythonSpec, String> {
        let y = read_yaml(path)?;
        let mut spec = PythonSpec {
            source: Some(path.to_path_buf()),
            ..Default::default()
        };
        for dep in y
            .get("dependencies")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            match dep {
                Value::String(s) => match conda_dependency(s) {
                    Some(("python", op, version)) if spec.python.is_empty() => {
                        if op.is_empty() {
                            return Err(format!("{}: invalid dependency for python: {s}. It must be pinned (e.g. python=3.8.13).", path.display()));
                        }
                        if matches!(op, "<" | ">" | "!=") {
                            return Err(format!("{}: invalid version comparator for python: '{op}'. Must be one of ['<=', '>=', '=', '=='].", path.display()));
                        }
                        spec.python = version.to_string();
                    }
                    Some((name, op, version)) => {
                        let op = if op == "=" { "==" } else { op };
                        spec.build_dependencies.push(format!("{name}{op}{version}"));
                    }
                    None => spec.dropped.push(s.clone()),
                },
                Value::Mapping(m) if m.contains_key("pip") => {
                    spec.dependencies = strings(m.get("pip"));
                }
                _ => {}
            }
        }
        Ok(spec)
    }
}

/// A conda dependency as MLflow's `_CONDA_DEPENDENCY_REGEX` reads it: one of `python`, `pip`,
/// `setuptools`, `wheel`, an optional comparator and an optional version of digits and dots.
fn conda_dependency(dep: &str) -> Option<(&str, &str, &str)> {
    let name = ["python", "pip", "setuptools", "wheel"]
        .into_iter()
        .find(|n| dep.starts_with(n))?;
    let rest = &dep[name.len()..];
    let op_len = rest
        .chars()
        .take_while(|c| matches!(c, '<' | '>' | '=' | '!'))
        .count();
    let (op, version) = rest.split_at(op_len);
    let ok_op = matches!(op, "" | "<" | ">" | "<=" | ">=" | "=" | "==" | "!=");
    let ok_version = version.chars().all(|c| c.is_ascii_digit() || c == '.');
    (ok_op && ok_version).then_some((name, op, version))
}

/// Decides how the environment is made, by MLflow's rules: `docker_env` always runs in its
/// image; `python_env` with uv (or the override), `conda_env` with conda, neither locally.
/// `without_conda` is the agent's manager for `conda_env` projects when it has no conda
/// (`--conda-env-manager`): such a project is then built as `mlflow run --env-manager <it>`
/// would build it; the node's `envManager` still comes first.
///
/// # Errors
/// MLflow's refusal of conda for a `python_env` project, or an unreadable spec.
pub fn choose(
    declared: &Declared,
    wanted: Option<EnvManager>,
    without_conda: Option<EnvManager>,
) -> Result<Choice, String> {
    use EnvManager::*;
    let wanted = match (declared, wanted, without_conda) {
        (Declared::Conda(_), None, Some(m)) if m != Conda => Some(m),
        _ => wanted,
    };
    Ok(match (declared, wanted) {
        (Declared::Docker(d), _) => Choice::Docker(d.clone()),
        (_, Some(Local)) | (Declared::None, None) => Choice::Local,
        (Declared::Python(_), Some(Conda)) => {
            return Err("python_env project cannot be executed using conda. Set the node's envManager to 'uv', 'virtualenv' or 'local' to execute this project.".into())
        }
        (Declared::Python(path), m) => Choice::Virtual {
            manager: m.unwrap_or(Uv),
            spec: PythonSpec::from_python_env(path)?,
        },
        (Declared::Conda(path), None | Some(Conda)) => Choice::Conda(path.clone()),
        (Declared::Conda(path), Some(m)) => Choice::Virtual {
            manager: m,
            spec: PythonSpec::from_conda_yaml(path)?,
        },
        (Declared::None, Some(Conda)) => {
            return Err("the project declares no conda_env, so conda has nothing to build; leave envManager out, or set it to 'local', 'uv' or 'virtualenv'".into())
        }
        (Declared::None, Some(m)) => Choice::Virtual {
            manager: m,
            spec: PythonSpec::default(),
        },
    })
}

/// How the user's command finds its environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activation {
    /// Put first on `PATH`.
    pub bin: Option<PathBuf>,
    pub vars: Vec<(String, String)>,
}

/// Where the tools are and where environments are kept.
pub struct Tools<'a> {
    pub uv: &'a str,
    pub conda: &'a str,
    pub cache: &'a Path,
    /// When unused environments are let go.
    pub bounds: Bounds,
}

/// The flags of a requirement line that name a file.
const FILE_FLAGS: [&str; 4] = ["-r ", "--requirement ", "-c ", "--constraint "];

/// The file a `-r`/`-c` requirement line names, as written.
fn named_file(line: &str) -> Option<(&str, &str)> {
    FILE_FLAGS
        .iter()
        .find_map(|flag| Some((*flag, line.strip_prefix(flag)?.trim())))
}

/// The requirement lines of `deps`, with `-r`/`-c` files made absolute against `base`.
fn requirement_lines(deps: &[String], base: &Path) -> Vec<String> {
    deps.iter()
        .map(|d| match named_file(d) {
            Some((flag, file)) => format!("{flag}{}", base.join(file).display()),
            None => d.clone(),
        })
        .collect()
}

/// The cache key of a spec: its lines as written and the content of the files its `-r`/`-c`
/// lines name, never where those files are (a model's `requirements.txt` lies in each
/// attempt's own directory).
fn key(manager: &str, spec: &PythonSpec, base: &Path) -> String {
    let mut text = format!("{manager}\n{}\n", spec.python);
    for line in spec.build_dependencies.iter().chain(&spec.dependencies) {
        text.push_str(line);
        text.push('\n');
        if let Some((_, file)) = named_file(line) {
            text.push_str(&std::fs::read_to_string(base.join(file)).unwrap_or_default());
            text.push('\n');
        }
    }
    format!("{manager}-{}", &sha256_hex(&text)[..16])
}

/// Runs a build command, its output into the step's log.
async fn run(log: &Path, dir: &Path, program: &str, args: &[String]) -> anyhow::Result<()> {
    super::log_line(log, &format!("$ {program} {}", args.join(" "))).await;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let status = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("cannot start {program:?}"))?;
    if !status.success() {
        bail!(
            "`{program} {}` ended with {status}; the step log has its output",
            args.join(" ")
        );
    }
    Ok(())
}

/// Whether `program` can be started (on `PATH`, or a path).
pub fn available(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Holds a lock on a file until dropped (the lock ends with the process, too).
pub(super) struct FileLock(std::fs::File);

impl FileLock {
    fn open(path: &Path) -> anyhow::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))
    }

    /// flock(2) with `op` on `f`; false when a non-blocking request found the lock taken.
    fn flock(f: &std::fs::File, op: libc::c_int) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
    }

    async fn wait(path: PathBuf, op: libc::c_int) -> anyhow::Result<FileLock> {
        tokio::task::spawn_blocking(move || {
            let f = Self::open(&path)?;
            if !Self::flock(&f, op) {
                bail!("cannot lock {}", path.display());
            }
            Ok(FileLock(f))
        })
        .await?
    }

    /// Waits for the exclusive lock.
    pub(super) async fn take(path: PathBuf) -> anyhow::Result<FileLock> {
        Self::wait(path, libc::LOCK_EX).await
    }

    /// Waits for a shared lock (others may hold one too, nobody the exclusive one).
    async fn shared(path: PathBuf) -> anyhow::Result<FileLock> {
        Self::wait(path, libc::LOCK_SH).await
    }

    /// The exclusive lock if nobody holds any lock on the file now.
    fn try_exclusive(path: &Path) -> Option<FileLock> {
        let f = Self::open(path).ok()?;
        Self::flock(&f, libc::LOCK_EX | libc::LOCK_NB).then_some(FileLock(f))
    }

    /// Turns an exclusive lock into a shared one.
    fn share(self) -> anyhow::Result<FileLock> {
        if !Self::flock(&self.0, libc::LOCK_SH) {
            bail!("cannot share a lock");
        }
        Ok(self)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        Self::flock(&self.0, libc::LOCK_UN);
    }
}

/// Marks a built environment (its content follows its key).
const READY: &str = ".concurrent-ready";
/// When a step last started with the environment (milliseconds since the epoch, as text).
const USED: &str = ".concurrent-used";
/// The environment's size in bytes, measured once after its build (as text).
const SIZE: &str = ".concurrent-size";

/// An environment made ready for a step: how to activate it, and a shared lock that keeps it
/// from being evicted until the step ends (drop it then).
pub struct Prepared {
    pub activation: Activation,
    _in_use: Option<FileLock>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Bytes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The cache key and manager of an environment that is built (none for the local Python or a
/// Docker image).
fn built_key(choice: &Choice, project: &Path) -> Option<(String, EnvManager)> {
    match choice {
        Choice::Local | Choice::Docker(_) => None,
        Choice::Virtual { manager, spec } => {
            let base = spec
                .source
                .as_ref()
                .and_then(|s| s.parent())
                .unwrap_or(project);
            Some((key(manager.as_str(), spec, base), *manager))
        }
        Choice::Conda(file) => Some((
            format!(
                "conda-{}",
                &sha256_hex(&std::fs::read_to_string(file).unwrap_or_default())[..16]
            ),
            EnvManager::Conda,
        )),
    }
}

/// What an environment is, by content: its build's key, `local`, or `docker:<image>` (what a
/// step's cache key takes).
pub fn identity(choice: &Choice, project: &Path) -> String {
    match (choice, built_key(choice, project)) {
        (_, Some((key, _))) => key,
        (Choice::Docker(d), None) => format!("docker:{}", d.image),
        _ => "local".into(),
    }
}

/// Builds the environment (or finds it built) and says how to activate it. The build shows in
/// the step's log, with its time; afterwards the cache lets go of what its bounds say (never
/// an environment a running step holds).
///
/// # Errors
/// A missing tool (named, with the node field to change), or a failed build.
pub async fn prepare(
    choice: &Choice,
    project: &Path,
    tools: &Tools<'_>,
    log: &Path,
) -> anyhow::Result<Prepared> {
    let Some((key, manager)) = built_key(choice, project) else {
        return Ok(Prepared {
            activation: Activation::default(),
            _in_use: None,
        });
    };
    let tool = match manager {
        EnvManager::Uv => Some(("uv", tools.uv)),
        EnvManager::Conda => Some(("conda", tools.conda)),
        _ => None,
    };
    if let Some((name, program)) = tool {
        if !available(program) {
            bail!(
                "this project's environment needs {name}, which this agent does not have ({program:?} is not found); install {name} on the agent (or in the image), or set the node's envManager to another manager (local uses the agent's own Python)"
            );
        }
    }
    std::fs::create_dir_all(tools.cache).with_context(|| {
        format!(
            "cannot create the environment cache {}",
            tools.cache.display()
        )
    })?;
    let env = tools.cache.join(&key);
    let lock = tools.cache.join(format!("{key}.lock"));
    let activation = Activation {
        bin: Some(env.join("bin")),
        vars: vec![(
            if manager == EnvManager::Conda {
                "CONDA_PREFIX"
            } else {
                "VIRTUAL_ENV"
            }
            .to_string(),
            env.display().to_string(),
        )],
    };
    let reusing = format!(
        "==> reusing the {} environment {key} (built before)",
        manager.as_str()
    );
    // Most steps find their environment built: shared locks let them start together, and
    // keep the cache's eviction away while they run.
    let shared = FileLock::shared(lock.clone()).await?;
    let in_use = if env.join(READY).exists() {
        super::log_line(log, &reusing).await;
        shared
    } else {
        drop(shared);
        let exclusive = FileLock::take(lock).await?;
        if env.join(READY).exists() {
            super::log_line(log, &reusing).await;
        } else {
            build_once(choice, project, tools, log, &key, manager).await?;
        }
        std::fs::write(env.join(USED), now_ms().to_string())?;
        exclusive.share()?
    };
    std::fs::write(env.join(USED), now_ms().to_string())?;
    for line in evict(tools.cache, tools.bounds, now_ms()) {
        super::log_line(log, &line).await;
    }
    Ok(Prepared {
        activation,
        _in_use: Some(in_use),
    })
}

/// Builds the environment `key` into a scratch directory, then moves it into place.
async fn build_once(
    choice: &Choice,
    project: &Path,
    tools: &Tools<'_>,
    log: &Path,
    key: &str,
    manager: EnvManager,
) -> anyhow::Result<()> {
    let env = tools.cache.join(key);
    let started = Instant::now();
    let tmp = tools.cache.join(format!("{key}.building"));
    let _ = std::fs::remove_dir_all(&tmp);
    super::log_line(
        log,
        &format!(
            "==> building the {} environment {key} (cached in {})",
            manager.as_str(),
            tools.cache.display()
        ),
    )
    .await;
    if let Choice::Virtual { spec, .. } = choice {
        if !spec.dropped.is_empty() {
            super::log_line(
                log,
                &format!(
                    "==> conda packages a Python environment cannot install are left out, as MLflow leaves them out: {}",
                    spec.dropped.join(", ")
                ),
            )
            .await;
        }
    }
    let built = build(choice, project, tools, &tmp, log).await;
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!(
            "building the {} environment failed",
            manager.as_str()
        )));
    }
    std::fs::write(tmp.join(SIZE), size_of(&tmp).to_string())?;
    std::fs::write(tmp.join(READY), format!("{:?}\n", choice))?;
    let _ = std::fs::remove_dir_all(&env);
    std::fs::rename(&tmp, &env)?;
    super::log_line(
        log,
        &format!(
            "==> environment {key} ready in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    )
    .await;
    Ok(())
}

/// Lets go of the environments the cache's bounds say (core's `env_cache::to_evict`), never one
/// a step holds; what it did, as log lines. An environment is first renamed out of the way
/// (at once, under its exclusive lock), then deleted in the background; what a stopped
/// process left half deleted is deleted on the next pass.
fn evict(cache: &Path, bounds: Bounds, now: u64) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return vec![];
    };
    let mut entries = Vec::new();
    let mut leftovers = Vec::new();
    for e in dir.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".evicting-") {
            leftovers.push(path);
            continue;
        }
        if !path.join(READY).exists() {
            continue;
        }
        let bytes = read_number(&path.join(SIZE)).unwrap_or_else(|| {
            // Built before sizes were recorded: measured once.
            let size = size_of(&path);
            let _ = std::fs::write(path.join(SIZE), size.to_string());
            size
        });
        let in_use = FileLock::try_exclusive(&cache.join(format!("{name}.lock"))).is_none();
        entries.push(Entry {
            last_used: read_number(&path.join(USED)).unwrap_or(0),
            key: name,
            bytes,
            in_use,
        });
    }
    let mut said = Vec::new();
    for key in to_evict(&entries, now, bounds) {
        let Some(e) = entries.iter().find(|e| e.key == key) else {
            continue;
        };
        let path = cache.join(&key);
        let Some(_lock) = FileLock::try_exclusive(&cache.join(format!("{key}.lock"))) else {
            continue; // a step took it meanwhile
        };
        if read_number(&path.join(USED)).unwrap_or(0) != e.last_used {
            continue; // used meanwhile
        }
        let away = cache.join(format!("{key}.evicting-{}", std::process::id()));
        if std::fs::rename(&path, &away).is_ok() {
            leftovers.push(away);
            said.push(format!(
                "==> environment cache {}: let go of {key} ({:.1} MB, unused for {:.1} days; bounds: --env-cache-max-age-days, --env-cache-max-gib)",
                cache.display(),
                e.bytes as f64 / 1e6,
                now.saturating_sub(e.last_used) as f64 / 86_400_000.0,
            ));
        }
    }
    if !leftovers.is_empty() {
        std::thread::spawn(move || {
            for path in leftovers {
                let _ = std::fs::remove_dir_all(path);
            }
        });
    }
    said
}

async fn build(
    choice: &Choice,
    project: &Path,
    tools: &Tools<'_>,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<()> {
    let d = dir.display().to_string();
    match choice {
        Choice::Virtual { manager, spec } => {
            let base = spec
                .source
                .as_ref()
                .and_then(|s| s.parent())
                .unwrap_or(project);
            let python = dir.join("bin/python").display().to_string();
            match manager {
                EnvManager::Uv => {
                    let mut args = vec!["venv".to_string(), d.clone(), "--quiet".into()];
                    if !spec.python.is_empty() {
                        args.push(format!("--python={}", spec.python));
                    }
                    run(log, project, tools.uv, &args).await?;
                }
                _ => {
                    let interpreter = find_python(&spec.python)?;
                    run(
                        log,
                        project,
                        &interpreter,
                        &["-m".into(), "venv".into(), d.clone()],
                    )
                    .await?;
                }
            }
            for deps in [&spec.build_dependencies, &spec.dependencies] {
                if deps.is_empty() {
                    continue;
                }
                let reqs = dir.join("requirements.concurrent.txt");
                std::fs::write(&reqs, requirement_lines(deps, base).join("\n") + "\n")?;
                let reqs = reqs.display().to_string();
                match manager {
                    EnvManager::Uv => {
                        let args = ["pip", "install", "--python", &python, "-r", &reqs];
                        run(log, project, tools.uv, &args.map(String::from)).await?
                    }
                    _ => {
                        let args = [
                            "-m",
                            "pip",
                            "install",
                            "--disable-pip-version-check",
                            "-r",
                            &reqs,
                        ];
                        run(log, project, &python, &args.map(String::from)).await?
                    }
                }
            }
            Ok(())
        }
        Choice::Conda(file) => {
            let args = [
                "env",
                "create",
                "--quiet",
                "--prefix",
                &d,
                "--file",
                &file.display().to_string(),
            ];
            run(log, project, tools.conda, &args.map(String::from)).await
        }
        Choice::Local | Choice::Docker(_) => Ok(()),
    }
}

/// An interpreter of `version` ("3.11", "3.11.7", or empty for any) on `PATH`.
fn find_python(version: &str) -> anyhow::Result<String> {
    let short: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let mut candidates = Vec::new();
    if !short.is_empty() {
        candidates.push(format!("python{short}"));
    }
    candidates.extend(["python3".to_string(), "python".to_string()]);
    for c in candidates {
        if !available(&c) {
            continue;
        }
        let out = std::process::Command::new(&c)
            .args(["-c", "import platform; print(platform.python_version())"])
            .output();
        if let Ok(out) = out {
            let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if version.is_empty() || found == version || found.starts_with(&format!("{version}.")) {
                return Ok(c);
            }
        }
    }
    bail!(
        "the project asks for Python {version}, which this agent does not have; install it, or set the node's envManager to 'uv' (which finds or installs Python versions)"
    )
}

/// The activation as environment variables for the user's command.
pub fn env_vars(a: &Activation) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = a.vars.iter().cloned().collect();
    if let Some(bin) = &a.bin {
        let path = std::env::var("PATH").unwrap_or_default();
        vars.insert("PATH".into(), format!("{}:{path}", bin.display()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_declared_environment_follows_mlflows_rules() {
        let d = project(&[
            ("python_env.yaml", "python: '3.11'\ndependencies: [tqdm]\n"),
            ("conda.yaml", "dependencies: [python=3.11]\n"),
        ]);
        assert_eq!(
            declared(d.path(), &Value::Null).unwrap(),
            Declared::Python(d.path().join("python_env.yaml")),
            "python_env.yaml wins over conda.yaml"
        );
        let spec = yaml("conda_env: conda.yaml\n");
        assert_eq!(
            declared(d.path(), &spec).unwrap(),
            Declared::Conda(d.path().join("conda.yaml"))
        );
        let both = yaml("conda_env: conda.yaml\npython_env: python_env.yaml\n");
        assert!(declared(d.path(), &both)
            .unwrap_err()
            .contains("multiple environment fields"));
        let missing = yaml("python_env: nope.yaml\n");
        assert!(declared(d.path(), &missing)
            .unwrap_err()
            .contains("no such file"));
        let docker = yaml("docker_env:\n  image: python:3.11\n  environment: [[A, '1'], B]\n  volumes: ['/data:/data']\n");
        match declared(d.path(), &docker).unwrap() {
            Declared::Docker(e) => {
                assert_eq!(e.image, "python:3.11");
                assert_eq!(
                    e.environment,
                    vec![("A".into(), Some("1".into())), ("B".into(), None)]
                );
                assert_eq!(e.volumes, vec!["/data:/data".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        let empty = project(&[]);
        assert_eq!(
            declared(empty.path(), &Value::Null).unwrap(),
            Declared::None
        );
    }

    #[test]
    fn the_manager_is_chosen_like_mlflow_run_env_manager() {
        let d = project(&[
            (
                "python_env.yaml",
                "python: '3.11'\nbuild_dependencies: [pip]\ndependencies: [tqdm==4.66.5]\n",
            ),
            (
                "conda.yaml",
                "dependencies:\n  - python=3.10\n  - pip\n  - pip: [scikit-learn]\n",
            ),
        ]);
        let py = Declared::Python(d.path().join("python_env.yaml"));
        let conda = Declared::Conda(d.path().join("conda.yaml"));
        match choose(&py, None, None).unwrap() {
            Choice::Virtual { manager, spec } => {
                assert_eq!(manager, EnvManager::Uv);
                assert_eq!(spec.python, "3.11");
                assert_eq!(spec.dependencies, vec!["tqdm==4.66.5".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            choose(&py, Some(EnvManager::Local), None).unwrap(),
            Choice::Local
        );
        assert!(choose(&py, Some(EnvManager::Conda), None)
            .unwrap_err()
            .contains("cannot be executed using conda"));
        assert_eq!(
            choose(&conda, None, None).unwrap(),
            Choice::Conda(d.path().join("conda.yaml"))
        );
        match choose(&conda, Some(EnvManager::Uv), None).unwrap() {
            Choice::Virtual { spec, .. } => {
                assert_eq!(spec.python, "3.10");
                assert_eq!(spec.build_dependencies, vec!["pip".to_string()]);
                assert_eq!(spec.dependencies, vec!["scikit-learn".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(choose(&Declared::None, None, None).unwrap(), Choice::Local);
        // An agent without conda builds conda_env projects with its --conda-env-manager...
        assert!(matches!(
            choose(&conda, None, Some(EnvManager::Uv)).unwrap(),
            Choice::Virtual {
                manager: EnvManager::Uv,
                ..
            }
        ));
        // ...unless the node says otherwise; python_env projects are not affected.
        assert_eq!(
            choose(&conda, Some(EnvManager::Local), Some(EnvManager::Uv)).unwrap(),
            Choice::Local
        );
        assert!(matches!(
            choose(&py, None, Some(EnvManager::Virtualenv)).unwrap(),
            Choice::Virtual {
                manager: EnvManager::Uv,
                ..
            }
        ));
    }

    #[test]
    fn a_conda_yaml_becomes_a_python_environment_as_mlflow_converts_it() {
        // mlflow/mlflow-example's conda.yaml: conda packages beside pip's.
        let d = project(&[(
            "conda.yaml",
            "name: tutorial\nchannels: [defaults]\ndependencies:\n  - numpy>=1.14.3\n  - pandas>=1.0.0\n  - scikit-learn>0.19.1\n  - pip\n  - pip:\n    - mlflow\n",
        )]);
        let spec = PythonSpec::from_conda_yaml(&d.path().join("conda.yaml")).unwrap();
        assert_eq!(spec.python, "", "no python pinned: the manager's own");
        assert_eq!(spec.build_dependencies, vec!["pip".to_string()]);
        assert_eq!(spec.dependencies, vec!["mlflow".to_string()]);
        assert_eq!(
            spec.dropped,
            vec!["numpy>=1.14.3", "pandas>=1.0.0", "scikit-learn>0.19.1"]
        );
        let d = project(&[(
            "conda.yaml",
            "dependencies: [python=3.10.4, pip=23.1, setuptools, wheel>=0.40]\n",
        )]);
        let spec = PythonSpec::from_conda_yaml(&d.path().join("conda.yaml")).unwrap();
        assert_eq!(spec.python, "3.10.4");
        assert_eq!(
            spec.build_dependencies,
            vec!["pip==23.1", "setuptools", "wheel>=0.40"]
        );
        for (bad, why) in [("python", "must be pinned"), ("python<3.12", "comparator")] {
            std::fs::write(
                d.path().join("conda.yaml"),
                format!("dependencies: ['{bad}']\n"),
            )
            .unwrap();
            let e = PythonSpec::from_conda_yaml(&d.path().join("conda.yaml")).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn cache_keys_follow_the_content_of_requirement_files() {
        let d = project(&[("requirements.txt", "tqdm\n")]);
        let spec = PythonSpec {
            python: "3.11".into(),
            dependencies: vec!["-r requirements.txt".into()],
            ..Default::default()
        };
        let a = key("uv", &spec, d.path());
        assert_eq!(a, key("uv", &spec, d.path()));
        assert_ne!(a, key("virtualenv", &spec, d.path()));
        std::fs::write(d.path().join("requirements.txt"), "tqdm==4.66.5\n").unwrap();
        assert_ne!(
            a,
            key("uv", &spec, d.path()),
            "a changed requirements file is a new environment"
        );
        // The same files elsewhere (a model downloaded into each attempt's own directory)
        // are the same environment.
        let other = project(&[("requirements.txt", "tqdm==4.66.5\n")]);
        assert_eq!(key("uv", &spec, d.path()), key("uv", &spec, other.path()));
    }

    fn bounds(max_age: u64, max_bytes: u64) -> Bounds {
        Bounds { max_age, max_bytes }
    }

    /// A built environment in `cache`, last used at `used`, of `bytes` bytes.
    fn built(cache: &Path, key: &str, used: u64, bytes: usize) {
        let env = cache.join(key);
        std::fs::create_dir_all(env.join("bin")).unwrap();
        std::fs::write(env.join("bin/python"), vec![b'x'; bytes]).unwrap();
        std::fs::write(env.join(READY), "").unwrap();
        std::fs::write(env.join(USED), used.to_string()).unwrap();
    }

    #[tokio::test]
    async fn the_cache_lets_go_of_what_no_running_step_uses() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        built(c, "uv-old", 1_000, 10);
        built(c, "uv-old-running", 1_000, 10);
        built(c, "uv-new", 9_000, 10);
        let running = FileLock::shared(c.join("uv-old-running.lock"))
            .await
            .unwrap();
        let said = evict(c, bounds(5_000, 1 << 30), 10_000);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("let go of uv-old "), "{said:?}");
        assert!(!c.join("uv-old").exists());
        assert!(
            c.join("uv-old-running").join(READY).exists(),
            "in use: kept"
        );
        assert!(c.join("uv-new").join(READY).exists());
        drop(running);
        // Over the size bound, the least recently used goes first.
        let said = evict(c, bounds(u64::MAX, 25), 10_000);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(!c.join("uv-old-running").exists());
        assert!(c.join("uv-new").join(READY).exists());
        // What was moved aside is gone once the background deletion ends.
        for _ in 0..100 {
            let left = std::fs::read_dir(c)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".evicting-"));
            if !left {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("evicted environments were not deleted");
    }

    #[tokio::test]
    async fn a_prepared_environment_is_held_until_its_step_ends() {
        let cache = tempfile::tempdir().unwrap();
        let c = cache.path();
        let spec = PythonSpec::default();
        let k = key("virtualenv", &spec, c);
        built(c, &k, 1, 10);
        let log = c.join("step.log");
        let tools = Tools {
            uv: "uv",
            conda: "conda",
            cache: c,
            bounds: bounds(0, 0),
        };
        let choice = Choice::Virtual {
            manager: EnvManager::Virtualenv,
            spec,
        };
        let prepared = prepare(&choice, c, &tools, &log).await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("reusing the virtualenv environment"),
            "{text}"
        );
        // Bounds of zero let go of everything idle; this one is not idle.
        assert!(evict(c, bounds(0, 0), u64::MAX).is_empty());
        assert!(c.join(&k).join(READY).exists());
        drop(prepared);
        assert_eq!(evict(c, bounds(0, 0), u64::MAX).len(), 1);
    }
}
