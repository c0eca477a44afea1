//! Answers the designer's project inspections: reads a project's MLproject where this agent's
//! steps would read it (git with the agent's credentials and cache, or a local path inside its
//! project root and `--allow-path` directories) and describes its entry points.

use std::path::PathBuf;

use concurrent_core::project::ProjectInfo;
use concurrent_core::template::is_git_uri;
use concurrent_core::wire::InspectRequest;

use crate::step::{git, mlproject};

/// Where this agent reads projects from.
#[derive(Debug, Clone)]
pub struct Inspector {
    pub project_root: PathBuf,
    pub allow_path: Vec<PathBuf>,
    pub git_cache: PathBuf,
    /// Whether local paths are this machine's (the local executor) rather than a step image's.
    pub local_paths: bool,
}

impl Inspector {
    /// What the project of `req` declares, or why it cannot be read (meant for the designer).
    pub async fn inspect(&self, req: &InspectRequest) -> Result<ProjectInfo, String> {
        let sub = req.sub_path.as_deref().filter(|s| !s.is_empty());
        if is_git_uri(&req.uri) {
            let log = self.git_cache.with_extension("inspect.log");
            let (bare, commit) = git::resolve(
                &req.uri,
                req.version.as_deref(),
                None,
                &self.git_cache,
                &log,
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            let text = git::read_mlproject(&bare, &commit, sub, &log)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let mut info = mlproject::describe(text.as_deref())?;
            info.commit = Some(commit);
            return Ok(info);
        }
        if !self.local_paths {
            return Err(format!(
                "{:?} is a local path: on Kubernetes it lives in the step's image, which this agent cannot read; use a git URI to see its entry points",
                req.uri
            ));
        }
        let mut dir = crate::step::within_roots(&self.project_root, &self.allow_path, &req.uri)
            .map_err(|e| format!("{e:#}"))?;
        if let Some(s) = sub {
            dir = crate::step::within_roots(&dir, &[], s).map_err(|e| format!("subPath: {e:#}"))?;
        }
        mlproject::describe(mlproject::read_local(&dir)?.as_deref())
    }
}
