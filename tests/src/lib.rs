//! Test harness: starts real services on free loopback ports and stops them afterwards.
//!
//! - [`Stack::shared`]: one MLflow server (sqlite store, proxied artifacts) and one edge API
//!   under `wrangler dev` (workerd, local persistence in a temp dir) per test binary. Every
//!   process runs in its own process group, killed when the binary exits, also after a panic.
//! - [`Stack::agent`]: an agent (`concurrent agent`, local executor) for one cluster, stopped
//!   when the returned handle drops.
//!
//! Nothing is mocked. Prerequisites come from `scripts/setup.sh` and `scripts/build.sh`; when
//! one is missing the tests fail with the command that fixes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use serde_json::json;

pub mod access;
pub mod browser;
pub mod faults;
pub mod kube;
pub mod mlflow_run;
pub mod openapi;
pub mod pss;

/// Process groups to kill, and directories to remove, when the test binary exits.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn kill_all_groups() {
    let groups = GROUPS.lock().map(|g| g.clone()).unwrap_or_default();
    for pgid in &groups {
        // SAFETY: kill(2) on process groups this harness started.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
    }
    std::thread::sleep(Duration::from_millis(800));
    for pgid in &groups {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    // CONCURRENT_TEST_KEEP=1 keeps the services' files and logs for a post-mortem.
    if std::env::var_os("CONCURRENT_TEST_KEEP").is_none() {
        for dir in DIRS.lock().map(|d| d.clone()).unwrap_or_default() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The edge secret `NOTIFY_TEST_KEY` of every test edge (notifications are signed with it).
pub const NOTIFY_TEST_KEY: &str = "notify-test-signing-key-0123456789";

/// The repository root.
pub fn root() -> PathBuf {
    // The run-time value first: cargo sets it for what it runs, while the compile-time one
    // names the checkout that built the binary. With a target directory shared between
    // checkouts (scripts/env.sh shares one), cargo reuses a test binary built from another
    // checkout of the same sources, and would have it test that checkout's edge and bundle.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").exists())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .expect("every package is inside the repository")
        .to_path_buf()
}

fn require(path: &Path, fix: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing; run `{fix}` first (or `make test`, which does)",
        path.display()
    );
    path.to_path_buf()
}

/// The `concurrent` binary built by scripts/build.sh.
pub fn concurrent_bin() -> PathBuf {
    let path = std::env::var_os("CONCURRENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root().join("target"));
            target.join("debug/concurrent")
        });
    require(&path, "scripts/build.sh")
}

/// Picks a free loopback port.
/// A free port for a service to listen on, below the kernel's ephemeral range: a service takes
/// seconds to bind the port it is given (MLflow, wrangler), and a port from that range could be
/// handed meanwhile to another process's outgoing connection or `bind(0)` (workerd's, Chromium's).
/// Never the same port twice in one test binary.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_100));
    let mut given = GIVEN.lock().expect("poisoned");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
        ^ (u64::from(std::process::id()) << 20)
        | 1;
    for _ in 0..10_000 {
        // xorshift: a different start in each binary, no dependency for it.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = low + (seed % u64::from(high - low)) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port between {low} and {high}");
}

/// A started process; its whole group is stopped on drop.
pub struct Service {
    pub name: String,
    pub log: PathBuf,
    /// Where a DevTools client reaches the service's JavaScript (the edge's workerd).
    pub inspector_port: Option<u16>,
    child: Child,
}

impl Service {
    pub fn start(name: &str, cmd: &mut Command, log: PathBuf) -> Service {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut groups = GROUPS.lock().expect("poisoned");
        if groups.is_empty() {
            unsafe { libc::atexit(kill_all_groups) };
        }
        groups.push(child.id() as i32);
        Service {
            name: name.into(),
            log,
            inspector_port: None,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The service's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the service's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(-(self.child.id() as i32), signal) };
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits up to `timeout` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
        GROUPS
            .lock()
            .map(|mut g| g.retain(|p| *p != self.child.id() as i32))
            .ok();
    }
}

pub fn wait_ready(url: &str, service: &Service, timeout: Duration) {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{} did not answer {url} within {timeout:?}; its log ends:\n{}",
        service.name,
        service.log_tail()
    );
}

/// Where the stack's MLflow and edge listen: loopback, or `CONCURRENT_TEST_BIND` (e.g.
/// `0.0.0.0` so a real cluster's pods reach them; see tests/src/kube/cluster.rs).
fn bind_address() -> String {
    std::env::var("CONCURRENT_TEST_BIND").unwrap_or_else(|_| "127.0.0.1".into())
}

/// Where the test MLflow keeps artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactStore {
    /// Behind the tracking server's proxy (`mlflow-artifacts:/`), as `make up` runs it.
    Proxy,
    /// `--no-serve-artifacts` with a filesystem root (`<dir>/fsroot`) that clients write
    /// themselves, as hosted MLflow services with s3://, gs:// or shared-path roots work.
    Filesystem,
}

/// MLflow's tracking store: the default SQLite file with one worker, or a database URI (the
/// benchmark's PostgreSQL) with several.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    pub uri: Option<String>,
    pub workers: u32,
}

fn start_mlflow(dir: &Path, port: u16, store: ArtifactStore, backend: &Backend) -> Service {
    let mlflow_bin = require(&root().join(".venv/bin/mlflow"), "scripts/setup.sh");
    let mut cmd = Command::new(&mlflow_bin);
    let uri = backend
        .uri
        .clone()
        .unwrap_or_else(|| format!("sqlite:///{}/mlflow.db", dir.display()));
    cmd.args(["server", "--backend-store-uri", &uri]);
    match store {
        ArtifactStore::Proxy => cmd
            .args([
                "--default-artifact-root",
                "mlflow-artifacts:/",
                "--serve-artifacts",
                "--artifacts-destination",
            ])
            .arg(dir.join("artifacts")),
        ArtifactStore::Filesystem => cmd
            .args(["--no-serve-artifacts", "--default-artifact-root"])
            .arg(dir.join("fsroot")),
    };
    Service::start(
        "MLflow",
        cmd.args([
            "--host",
            &bind_address(),
            "--port",
            &port.to_string(),
            "--workers",
            &backend.workers.max(1).to_string(),
        ])
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        // The registry's webhooks reach the edge on loopback, over http, at once.
        .env("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
        .env("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
        .env("MLFLOW_WEBHOOK_CACHE_TTL", "1")
        // Webhook secrets are stored encrypted; without a key of its own MLflow draws one per
        // process and cannot read them after a restart.
        .env(
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        dir.join(format!("mlflow-{}.log", free_port())),
    )
}

/// Starts the edge API under `wrangler dev` with this bootstrap token (state under `dir`);
/// the service and its URL. It is not waited for: call [`wait_ready`] on `/healthz`.
pub fn start_edge(
    dir: &Path,
    token: &str,
    mlflow_url: &str,
    access: Option<&access::AccessIssuer>,
) -> (Service, String) {
    let root = root();
    let wrangler = require(&root.join("node_modules/.bin/wrangler"), "scripts/setup.sh");
    let env_file = dir.join(format!("edge-{}.env", free_port()));
    // NOTIFY_TEST_KEY: the signing secret the notification tests name.
    std::fs::write(
        &env_file,
        format!("CONCURRENT_API_TOKEN={token}\nNOTIFY_TEST_KEY={NOTIFY_TEST_KEY}\n"),
    )
    .expect("env file");
    let edge_port = free_port();
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let inspector_port = free_port();
    let path = format!(
        "{}:{}",
        root.join("node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut vars = vec![
        format!("MLFLOW_TRACKING_URI:{mlflow_url}"),
        // Short, so the suites see leases expire within seconds; the benchmark's wide runs
        // set the production default instead.
        format!(
            "LEASE_TTL_MS:{}",
            std::env::var("CONCURRENT_LEASE_TTL_MS").unwrap_or_else(|_| "6000".into())
        ),
    ];
    if let Some(a) = access {
        vars.push(format!("CF_ACCESS_TEAM_DOMAIN:{}", a.url));
        vars.push(format!("CF_ACCESS_AUD:{}", access::AUD));
    }
    let mut cmd = Command::new(&wrangler);
    cmd.current_dir(&root)
        .args([
            "dev",
            "--ip",
            &bind_address(),
            "--port",
            &edge_port.to_string(),
            "--persist-to",
        ])
        .arg(dir.join("wrangler"))
        .args(["--show-interactive-dev-session=false", "--env-file"])
        .arg(&env_file)
        .arg("--test-scheduled")
        .args(["--inspector-port", &inspector_port.to_string()])
        .env("PATH", path)
        .env("CONCURRENT_PREBUILT", "1")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false");
    for v in &vars {
        cmd.args(["--var", v]);
    }
    // wrangler picks its inner ports (workerd's sockets, the inspector's) by probing for free
    // ones and binding them later: two edges of one test binary starting at once can pick the
    // same one ("Address already in use"). So they start one at a time, each until it is ready
    // or has failed.
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    let mut edge = Service::start(
        "edge API (wrangler dev)",
        &mut cmd,
        dir.join(format!("edge-{edge_port}.log")),
    );
    edge.inspector_port = Some(inspector_port);
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let log = edge.log_text();
        if log.contains("Ready on") || log.contains("ERROR") || edge.exited() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (edge, edge_url)
}

/// MLflow and the edge API, shared by the tests of one binary.
pub struct Stack {
    /// The stand-in Cloudflare Access key publisher the edge is configured with.
    pub access: access::AccessIssuer,
    pub dir: tempfile::TempDir,
    pub mlflow_url: String,
    pub edge_url: String,
    pub token: String,
    pub token_file: PathBuf,
    pub mlflow: Mutex<Option<Service>>,
    mlflow_port: u16,
    pub store: ArtifactStore,
    backend: Backend,
    pub edge: Service,
    http: reqwest::blocking::Client,
}

static SHARED: OnceLock<Stack> = OnceLock::new();

impl Stack {
    /// The binary's stack, started on first use.
    pub fn shared() -> &'static Stack {
        Stack::shared_with(ArtifactStore::Proxy)
    }

    /// The binary's stack with this artifact store (the first call of a binary decides).
    pub fn shared_with(store: ArtifactStore) -> &'static Stack {
        SHARED.get_or_init(|| Stack::start(store, Backend::default()))
    }

    /// A stack of its own (not the binary's shared one) whose MLflow uses `backend`.
    pub fn start_with(backend: Backend) -> Stack {
        Stack::start(ArtifactStore::Proxy, backend)
    }

    fn start(store: ArtifactStore, backend: Backend) -> Stack {
        let root = root();
        require(&root.join(".venv/bin/mlflow"), "scripts/setup.sh");
        require(&root.join("edge-api/build/index.js"), "scripts/build.sh");
        require(
            &root.join("frontend/dist/concurrent/index.html"),
            "scripts/build.sh",
        );
        let dir = tempfile::Builder::new()
            .prefix("concurrent-test-")
            .tempdir()
            .expect("temp dir");
        // The shared stack lives in a static and is never dropped: remove its files at exit.
        DIRS.lock()
            .expect("poisoned")
            .push(dir.path().to_path_buf());
        // At least 32 characters: the edge refuses weaker bootstrap tokens.
        let token = format!(
            "test-{}-{}-{}",
            std::process::id(),
            free_port(),
            "0123456789abcdef0123456789"
        );
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).expect("token file");

        let mlflow_port = free_port();
        let mlflow_url = format!("http://127.0.0.1:{mlflow_port}");
        let mlflow = start_mlflow(dir.path(), mlflow_port, store, &backend);
        let access = access::AccessIssuer::start(dir.path());

        let (edge, edge_url) = start_edge(dir.path(), &token, &mlflow_url, Some(&access));
        wait_ready(
            &format!("{edge_url}/healthz"),
            &edge,
            Duration::from_secs(90),
        );
        wait_ready(
            &format!("{mlflow_url}/health"),
            &mlflow,
            Duration::from_secs(120),
        );
        let mlflow = Mutex::new(Some(mlflow));
        Stack {
            access,
            dir,
            mlflow_url,
            edge_url,
            token,
            token_file,
            mlflow,
            mlflow_port,
            store,
            backend,
            edge,
            http: reqwest::blocking::Client::new(),
        }
    }

    /// Stops the MLflow server (an outage).
    pub fn stop_mlflow(&self) {
        drop(self.mlflow.lock().expect("poisoned").take());
    }

    /// Starts MLflow again on the same port, store and artifacts.
    pub fn start_mlflow(&self) {
        let service = start_mlflow(self.dir.path(), self.mlflow_port, self.store, &self.backend);
        wait_ready(
            &format!("{}/health", self.mlflow_url),
            &service,
            Duration::from_secs(120),
        );
        *self.mlflow.lock().expect("poisoned") = Some(service);
    }

    /// Starts an agent (local executor) for `cluster`.
    pub fn agent(&self, cluster: &str) -> Service {
        self.agent_with(cluster, &[])
    }

    pub fn agent_with(&self, cluster: &str, extra: &[&str]) -> Service {
        self.agent_with_env(cluster, extra, &[])
    }

    pub fn agent_with_env(&self, cluster: &str, extra: &[&str], env: &[(&str, &str)]) -> Service {
        self.agent_via(&self.edge_url, cluster, extra, env)
    }

    /// An agent that reaches the edge at `edge_url` (e.g. through a [`faults::FaultyProxy`]).
    pub fn agent_via(
        &self,
        edge_url: &str,
        cluster: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        let work = self
            .dir
            .path()
            .join(format!("agent-{cluster}-{}", free_port()));
        let token_file = self.agent_token_file(cluster);
        self.start_agent(edge_url, cluster, &token_file, &work, extra, env)
    }

    /// An agent with this token file and work directory (an edge of a test's own issued the
    /// token, say).
    pub fn start_agent(
        &self,
        edge_url: &str,
        cluster: &str,
        token_file: &Path,
        work: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        let root = root();
        // `--mlflow-uri` in `extra` replaces the stack's (e.g. a faulty proxy in front of it).
        let mlflow_uri = extra
            .windows(2)
            .find(|w| w[0] == "--mlflow-uri")
            .map_or(self.mlflow_url.as_str(), |w| w[1]);
        let extra: Vec<&str> = extra
            .iter()
            .enumerate()
            .filter(|(i, a)| **a != "--mlflow-uri" && (*i == 0 || extra[i - 1] != "--mlflow-uri"))
            .map(|(_, a)| *a)
            .collect();
        let mut agent = Service::start(
            &format!("agent for {cluster}"),
            Command::new(concurrent_bin())
                .args([
                    "agent",
                    "--edge-url",
                    edge_url,
                    "--cluster",
                    cluster,
                    "--token-file",
                ])
                .arg(token_file)
                .args(["--mlflow-uri", mlflow_uri, "--work-dir"])
                .arg(work)
                .arg("--project-root")
                .arg(&root)
                .arg("--mlflow-bin")
                .arg(root.join(".venv/bin/mlflow"))
                .args(&extra)
                .envs(env.iter().copied())
                .env("MLFLOW_DISABLE_TELEMETRY", "true"),
            self.dir
                .path()
                .join(format!("agent-{cluster}-{}.log", free_port())),
        );
        // A bad flag or setting ends the agent at once: fail here, with its message.
        if let Some(code) = agent.wait_exit(Duration::from_millis(500)) {
            panic!(
                "the agent for {cluster} exited with {code} at start:\n{}",
                agent.log_tail()
            );
        }
        agent
    }

    /// A file holding a new agent token of `cluster` (agents never hold the admin token).
    pub fn agent_token_file(&self, cluster: &str) -> PathBuf {
        let name = format!("agent-{cluster}-{}", free_port());
        let (status, created) = self.api(
            "POST",
            "/api/v1/tokens",
            Some(&json!({"name": name.replace('.', "-"), "role": "agent", "cluster": cluster})),
        );
        assert_eq!(status, 201, "creating an agent token: {created}");
        let file = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&file, created["token"].as_str().expect("token")).expect("token file");
        file
    }

    /// Calls the edge API with the token; the status and the JSON body (Null when empty).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.api_with(method, path, body, &[])
    }

    pub fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(
                method.parse().expect("HTTP method"),
                format!("{}{path}", self.edge_url),
            )
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().unwrap_or_else(|e| {
            panic!(
                "{method} {path} failed: {e}\nedge log:\n{}",
                self.edge.log_tail()
            )
        });
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        openapi::check(method, path, status, &body);
        (status, body)
    }

    /// Calls the edge API with another bearer token (or none).
    pub fn api_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(
                method.parse().expect("HTTP method"),
                format!("{}{path}", self.edge_url),
            )
            .timeout(Duration::from_secs(60));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb
            .send()
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let status = resp.status().as_u16();
        let body = serde_json::from_str(&resp.text().unwrap_or_default()).unwrap_or(Value::Null);
        openapi::check(method, path, status, &body);
        (status, body)
    }

    /// Rings the edge's cron once, as Cloudflare's trigger does every minute (schedules,
    /// trigger polls and the runs of kept events).
    pub fn cron(&self) {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}/__scheduled?cron=*+*+*+*+*", self.edge_url))
            .send()
            .unwrap();
        assert!(
            resp.status().is_success(),
            "the local cron trigger: {}",
            resp.status()
        );
    }

    /// Polls the run until `pred` holds for it (or panics after `timeout`).
    pub fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, run) = self.api("GET", &format!("/api/v1/runs/{id}"), None);
            if pred(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id}: {what} did not happen within {timeout:?}:\n{run:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Calls MLflow's REST API.
    pub fn mlflow_api(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut rb = self.http.request(
            method.parse().expect("HTTP method"),
            format!("{}/api/2.0/mlflow/{path}", self.mlflow_url),
        );
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().expect("MLflow answers");
        assert!(
            resp.status().is_success(),
            "MLflow {path}: {}",
            resp.status()
        );
        resp.json().expect("MLflow JSON")
    }

    /// Downloads a run's artifact as text.
    pub fn artifact(&self, run: &Value, path: &str) -> String {
        let uri = run["info"]["artifact_uri"].as_str().expect("artifact_uri");
        if self.store == ArtifactStore::Filesystem {
            let file = Path::new(uri.strip_prefix("file://").unwrap_or(uri)).join(path);
            return std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("artifact {}: {e}", file.display()));
        }
        let rest = uri
            .strip_prefix("mlflow-artifacts:/")
            .expect("proxied artifacts");
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{rest}/{path}",
            self.mlflow_url
        );
        let resp = self.http.get(&url).send().expect("artifact download");
        assert!(
            resp.status().is_success(),
            "artifact {path}: {}",
            resp.status()
        );
        resp.text().expect("text")
    }

    /// Saves a template (any current version), asserting success.
    pub fn put_template(&self, template: &Value) -> u32 {
        let name = template["name"].as_str().expect("name");
        let (status, body) = self.api_with(
            "PUT",
            &format!("/api/v1/templates/{name}"),
            Some(template),
            &[("If-Match", "*")],
        );
        assert_eq!(status, 201, "saving {name}: {body}");
        body["version"].as_u64().expect("version") as u32
    }

    /// Starts a run, asserting success; its id.
    pub fn start_run(&self, body: &Value) -> String {
        let (status, resp) = self.api("POST", "/api/v1/runs", Some(body));
        assert_eq!(status, 201, "starting a run: {resp}");
        resp["id"].as_str().expect("run id").to_string()
    }

    /// Polls a run until it ends (or `timeout`); the run's full state.
    pub fn wait_run(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, run) = self.api("GET", &format!("/api/v1/runs/{id}"), None);
            assert_eq!(status, 200, "reading run {id}: {run}");
            let s = run["status"].as_str().unwrap_or_default();
            let mlflow_synced = run["mlflow"].is_null() || run["mlflowStatus"].as_str() == Some(s);
            if matches!(s, "succeeded" | "failed" | "cancelled") && mlflow_synced {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} is still {s} after {timeout:?}:\n{run:#}\nedge log:\n{}",
                self.edge.log_tail()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The example pipeline as a template named `name`, limited to the first `nodes` nodes.
pub fn example_template(name: &str, nodes: usize) -> Value {
    let text = std::fs::read_to_string(root().join("examples/pipeline/template.json"))
        .expect("example template");
    let mut t: Value = serde_json::from_str(&text).expect("example template JSON");
    t["name"] = json!(name);
    let kept: Vec<Value> = t["nodes"].as_array().expect("nodes")[..nodes].to_vec();
    let ids: Vec<String> = kept
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    t["nodes"] = json!(kept);
    let edges: Vec<Value> = t["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| {
            ids.iter().any(|i| e["to"] == json!(i)) && ids.iter().any(|i| e["from"] == json!(i))
        })
        .cloned()
        .collect();
    t["edges"] = json!(edges);
    t
}

/// Runs `git` in `dir` as a test author would (a fixed identity), asserting success.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

/// Serves the git repositories below `dir` with `git daemon` on a free loopback port; the
/// service and the `git://` URL prefix.
pub fn git_daemon(dir: &Path) -> (Service, String) {
    let port = free_port();
    let daemon = Service::start(
        "git daemon",
        Command::new("git").args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", dir.display()),
            &dir.display().to_string(),
        ]),
        dir.join("daemon.log"),
    );
    std::thread::sleep(Duration::from_millis(500));
    (daemon, format!("git://127.0.0.1:{port}"))
}
