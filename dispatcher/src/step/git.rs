//! Git projects at a fixed commit: one bare clone per repository in the agent's cache, fetched
//! when needed; each attempt gets its own copy of one commit (`git archive`), so a branch that
//! moves during a run changes nothing that has started. Credentials come from git's own
//! configuration (the agent's, or the files of a mounted Secret in pods) and never appear in a
//! log line or a tag: URLs are shown without their user part.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use concurrent_core::sign::sha256_hex;

/// A project checked out for one attempt.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The commit's files.
    pub dir: PathBuf,
    pub commit: String,
}

pub use concurrent_core::refs::display_url;

/// Runs `git` with `args` (shown as `shown` in the log), output into the log.
async fn git(log: &Path, args: &[&str], shown: &str) -> anyhow::Result<String> {
    super::log_line(log, &format!("$ git {shown}")).await;
    let out = tokio::process::Command::new("git")
        .args(args)
        .envs(credential_env())
        // Never wait for a password on a terminal nobody watches.
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot start git; the agent (or the step's image) needs git for git projects")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        super::log_line(log, stderr.trim_end()).await;
    }
    if !out.status.success() {
        bail!(
            "`git {shown}` failed ({}): {}",
            out.status,
            stderr.lines().last().unwrap_or("").trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn has_commit(bare: &str, commit: &str) -> bool {
    tokio::process::Command::new("git")
        .args([
            "--git-dir",
            bare,
            "cat-file",
            "-e",
            &format!("{commit}^{{commit}}"),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Extra environment for git when the credentials of a mounted Secret are at hand
/// (`CONCURRENT_GIT_CREDENTIALS` names its directory): a `.git-credentials` file for https, an
/// `ssh-privatekey` (and `known_hosts`) for ssh. Otherwise git's own configuration applies.
fn credential_env() -> Vec<(String, String)> {
    let Ok(dir) = std::env::var("CONCURRENT_GIT_CREDENTIALS") else {
        return Vec::new();
    };
    let dir = Path::new(&dir);
    let mut env = Vec::new();
    if dir.join(".git-credentials").exists() {
        env.extend([
            ("GIT_CONFIG_COUNT".to_string(), "1".to_string()),
            ("GIT_CONFIG_KEY_0".into(), "credential.helper".into()),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!("store --file={}", dir.join(".git-credentials").display()),
            ),
        ]);
    }
    if dir.join("ssh-privatekey").exists() {
        let known = dir.join("known_hosts");
        let hosts = if known.exists() {
            format!("-o UserKnownHostsFile={}", known.display())
        } else {
            "-o StrictHostKeyChecking=accept-new".to_string()
        };
        env.push((
            "GIT_SSH_COMMAND".into(),
            format!(
                "ssh -i {} -o IdentitiesOnly=yes {hosts}",
                dir.join("ssh-privatekey").display()
            ),
        ));
    }
    env
}

/// The cached bare clone of `uri` (cloned or fetched as needed) and the commit to use: `pinned`
/// when the run already fixed one, else what `version` (a branch, tag or commit; `None` for
/// the default branch) names now.
///
/// # Errors
/// Git's reason (no such repository, no access, no such ref), with the URL shown safely.
pub async fn resolve(
    uri: &str,
    version: Option<&str>,
    pinned: Option<&str>,
    cache: &Path,
    log: &Path,
) -> anyhow::Result<(PathBuf, String)> {
    let shown = display_url(uri);
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create the git cache {}", cache.display()))?;
    let name = format!("{}.git", &sha256_hex(uri)[..16]);
    let bare = cache.join(&name);
    let bare_s = bare.display().to_string();
    let _lock = super::environment::FileLock::take(cache.join(format!("{name}.lock"))).await?;
    if !bare.join("HEAD").exists() {
        let tmp = cache.join(format!("{name}.cloning"));
        let _ = std::fs::remove_dir_all(&tmp);
        let tmp_s = tmp.display().to_string();
        git(
            log,
            &["clone", "--bare", "--quiet", "--", uri, &tmp_s],
            &format!("clone --bare {shown}"),
        )
        .await?;
        std::fs::rename(&tmp, &bare)?;
    }
    let fetch_args = [
        "--git-dir",
        &bare_s,
        "fetch",
        "--quiet",
        "--prune",
        "--force",
        "--",
        uri,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
    ];
    let fetch_shown = format!("fetch {shown}");
    let fetch = || git(log, &fetch_args, &fetch_shown);
    let commit = match pinned {
        Some(c) => {
            if !has_commit(&bare_s, c).await {
                fetch().await?;
            }
            c.to_string()
        }
        None => {
            fetch().await?;
            let want = format!("{}^{{commit}}", version.unwrap_or("HEAD"));
            git(
                log,
                &[
                    "--git-dir",
                    &bare_s,
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &want,
                ],
                &format!("rev-parse {want}"),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{shown} has no branch, tag or commit {:?}; check the node's version",
                    version.unwrap_or("HEAD")
                )
            })?
        }
    };
    Ok((bare, commit))
}

/// The MLproject file (found case-insensitively in `sub`) at `commit` of a cached clone.
pub async fn read_mlproject(
    bare: &Path,
    commit: &str,
    sub: Option<&str>,
    log: &Path,
) -> anyhow::Result<Option<String>> {
    let bare_s = bare.display().to_string();
    let dir = sub
        .map(|s| format!("{}/", s.trim_end_matches('/')))
        .unwrap_or_default();
    let tree = format!("{commit}:{dir}");
    let names = git(
        log,
        &["--git-dir", &bare_s, "ls-tree", "--name-only", &tree],
        &format!("ls-tree {tree}"),
    )
    .await?;
    let Some(name) = names.lines().find(|n| n.eq_ignore_ascii_case("mlproject")) else {
        return Ok(None);
    };
    let object = format!("{commit}:{dir}{name}");
    Ok(Some(
        git(
            log,
            &["--git-dir", &bare_s, "show", &object],
            &format!("show {object}"),
        )
        .await?,
    ))
}

/// The files of `uri` at its pinned (or current) commit, unpacked into `into`.
///
/// # Errors
/// See [`resolve`]; also an unpacking failure.
pub async fn checkout(
    uri: &str,
    version: Option<&str>,
    pinned: Option<&str>,
    cache: &Path,
    into: &Path,
    log: &Path,
) -> anyhow::Result<Checkout> {
    let shown = display_url(uri);
    let (bare, commit) = resolve(uri, version, pinned, cache, log).await?;
    let bare_s = bare.display().to_string();
    std::fs::create_dir_all(into)?;
    let tar = tokio::process::Command::new("sh")
        .envs(credential_env())
        .arg("-c")
        .arg("git --git-dir \"$1\" archive --format=tar \"$2\" | tar -x -C \"$3\"")
        .args(["sh", &bare_s, &commit, &into.display().to_string()])
        .stdin(std::process::Stdio::null())
        .status()
        .await?;
    if !tar.success() {
        bail!(
            "cannot unpack commit {commit} of {shown} into {}",
            into.display()
        );
    }
    super::log_line(log, &format!("==> {shown} at commit {commit}")).await;
    Ok(Checkout {
        dir: into.to_path_buf(),
        commit,
    })
}
