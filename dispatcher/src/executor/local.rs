//! The local executor: each step is a `concurrent step` child process on this machine.

use std::path::PathBuf;
use std::process::Stdio;

use concurrent_core::template::SecretRef;
use concurrent_core::wire::{Lease, LeaseRef, Outcome};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::Executor;

/// How long a cancelled step may take to stop its processes.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct LocalExecutor {
    pub work_dir: PathBuf,
    pub mlflow_uri: String,
    pub mlflow_bin: String,
    pub project_root: PathBuf,
    pub allow_path: Vec<PathBuf>,
    pub secrets_file: Option<PathBuf>,
    /// The edge as the steps reach it (they pin git commits with their step token).
    pub edge_url: String,
    pub keep_work_dirs: bool,
    /// Flags every step gets from the agent's configuration (environment policy).
    pub step_flags: Vec<String>,
}

/// The values of a step's `secretEnv`, from the agent's secrets file.
fn secret_env(
    file: Option<&std::path::Path>,
    wanted: &std::collections::BTreeMap<String, SecretRef>,
) -> Result<Vec<(String, String)>, String> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let file = file.ok_or_else(|| {
        "the node asks for secretEnv, but this agent has no secrets file; start it with --secrets-file <json>".to_string()
    })?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the secrets file {}: {e}", file.display()))?;
    let secrets: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "the secrets file {} is not {{\"<secret>\": {{\"<key>\": \"<value>\"}}}}: {e}",
                file.display()
            )
        })?;
    wanted
        .iter()
        .map(|(name, r)| {
            secrets
                .get(&r.secret)
                .and_then(|keys| keys.get(&r.key))
                .map(|v| (name.clone(), v.clone()))
                .ok_or_else(|| {
                    format!(
                        "secretEnv {name}: secret {:?} has no key {:?} in the agent's secrets file {}",
                        r.secret,
                        r.key,
                        file.display()
                    )
                })
        })
        .collect()
}

impl LocalExecutor {
    /// One directory per lease: an attempt that went back to the queue unconfirmed may run
    /// again (here or elsewhere) while a first copy is still stopping; they must not share it.
    fn step_dir(&self, item_id: &str, token: u64) -> PathBuf {
        self.work_dir.join(format!("{item_id}-{token}"))
    }

    async fn run_step(
        &self,
        lease: &Lease,
        cancel: CancellationToken,
    ) -> Result<Option<Outcome>, String> {
        let dir = self.step_dir(&lease.item.id, lease.token);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the step directory {}: {e}", dir.display()))?;
        let spec = dir.join("spec.json");
        let result = dir.join("result.json");
        let _ = std::fs::remove_file(&result);
        std::fs::write(
            &spec,
            serde_json::to_vec(&lease.item).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("cannot write {}: {e}", spec.display()))?;
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the concurrent binary: {e}"))?;
        let secrets = secret_env(self.secrets_file.as_deref(), &lease.item.step.secret_env)?;
        let mut command = Command::new(exe);
        command
            .arg("step")
            .arg("--env-cache")
            .arg(self.work_dir.join("envs"))
            .arg("--git-cache")
            .arg(self.work_dir.join("git"))
            .arg("--edge-url")
            .arg(&self.edge_url)
            .args(&self.step_flags)
            .env("CONCURRENT_STEP_TOKEN", &lease.step_token)
            .envs(secrets)
            .env(
                crate::step::SECRET_ENV,
                lease
                    .item
                    .step
                    .secret_env
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            );
        for dir in &self.allow_path {
            command.arg("--allow-path").arg(dir);
        }
        // If the agent dies (SIGKILL, OOM), its steps stop too: their leases lapse with it and
        // their attempts are run again elsewhere, so a step left running would run twice. The
        // step runner stops its user's processes on SIGTERM.
        let agent = std::process::id();
        // SAFETY: prctl(2) and getppid(2) in the child between fork and exec touch no shared
        // state.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The agent died before the signal was asked for.
                if libc::getppid() as u32 != agent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = command
            .arg("--spec")
            .arg(&spec)
            .arg("--result")
            .arg(&result)
            .arg("--work-dir")
            .arg(&dir)
            .arg("--mlflow-uri")
            .arg(&self.mlflow_uri)
            .arg("--mlflow-bin")
            .arg(&self.mlflow_bin)
            .arg("--project-root")
            .arg(&self.project_root)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the step runner: {e}"))?;
        let status = tokio::select! {
            s = child.wait() => s.map_err(|e| format!("waiting for the step runner failed: {e}"))?,
            _ = cancel.cancelled() => {
                // SIGTERM lets the step runner stop the user's processes; SIGKILL if it hangs.
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on our own child's pid; no memory is involved.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                tracing::info!(item = %lease.item.id, "step killed (cancelled or lease lost)");
                return Ok(None);
            }
        };
        let outcome = match std::fs::read(&result) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("the step's result does not decode: {e}"))?,
            Err(_) => Outcome::Failed {
                error: format!(
                    "the step runner ended with {status} without writing a result; see {}",
                    dir.join("step.log").display()
                ),
                facts: Default::default(),
            },
        };
        if !self.keep_work_dirs {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(Some(outcome))
    }
}

impl Executor for LocalExecutor {
    fn reads_local_paths(&self) -> bool {
        true
    }

    async fn tail(&self, lease: &LeaseRef) -> Option<String> {
        // The step keeps a small tail file up to date; the log itself may be gigabytes.
        let dir = self.step_dir(&lease.item_id, lease.token);
        tokio::fs::read_to_string(dir.join("tail.txt"))
            .await
            .ok()
            .filter(|t| !t.is_empty())
    }

    async fn run(&self, lease: &Lease, cancel: CancellationToken) -> Option<Outcome> {
        match self.run_step(lease, cancel).await {
            Ok(outcome) => outcome,
            Err(error) => Some(Outcome::failed(error)),
        }
    }
}
