//! Where the Kubernetes tests run: the project's test API server (always, on CI), or a real
//! cluster when `CONCURRENT_TEST_KUBECONFIG` names one. Tests read pods and events through
//! `kubectl`, the same way for both, so the checks do not depend on the stand-in.
//!
//! A real cluster needs, besides the kubeconfig:
//! - `CONCURRENT_TEST_AGENT_IMAGE`: the agent image (deploy/kubernetes/Dockerfile), pullable
//!   by the cluster;
//! - `CONCURRENT_TEST_STEP_IMAGE`: an image with Python, MLflow and git in which the example
//!   project sits at `CONCURRENT_TEST_PROJECT_DIR` (default `/opt/concurrent/examples/pipeline`);
//! - `CONCURRENT_TEST_STEP_HOST`: the address pods reach this machine at (e.g. `172.18.0.1`
//!   for kind), with `CONCURRENT_TEST_BIND=0.0.0.0` so MLflow and the edge listen there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{KubeConfig, KubeServer};
use crate::{concurrent_bin, root};

/// The agent image name the test server "pulls" (its /concurrent is this build's binary).
const SIMULATED_AGENT_IMAGE: &str = "concurrent-agent:test";

pub enum TestCluster {
    Simulated {
        server: KubeServer,
        _dir: tempfile::TempDir,
    },
    Real {
        kubeconfig: PathBuf,
    },
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("CONCURRENT_TEST_KUBECONFIG is set, so {name} must be too (see tests/src/kube/cluster.rs)"))
}

impl TestCluster {
    pub fn start() -> TestCluster {
        if let Ok(path) = std::env::var("CONCURRENT_TEST_KUBECONFIG") {
            return TestCluster::Real {
                kubeconfig: PathBuf::from(path),
            };
        }
        let dir = tempfile::tempdir().unwrap();
        let path = format!(
            "{}:{}",
            root().join(".venv/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let config = KubeConfig {
            cpu_millis: 8000,
            memory_bytes: 16 << 30,
            gpus: 0,
            image_files: HashMap::from([(
                SIMULATED_AGENT_IMAGE.to_string(),
                HashMap::from([("/concurrent".to_string(), concurrent_bin())]),
            )]),
            work_dir: dir.path().to_path_buf(),
            env: vec![
                ("PATH".into(), path),
                ("HOME".into(), dir.path().display().to_string()),
            ],
        };
        TestCluster::Simulated {
            server: KubeServer::start(config),
            _dir: dir,
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        match self {
            TestCluster::Simulated { server, .. } => &server.kubeconfig,
            TestCluster::Real { kubeconfig } => kubeconfig,
        }
    }

    pub fn agent_image(&self) -> String {
        match self {
            TestCluster::Simulated { .. } => SIMULATED_AGENT_IMAGE.into(),
            TestCluster::Real { .. } => var("CONCURRENT_TEST_AGENT_IMAGE"),
        }
    }

    pub fn step_image(&self) -> String {
        match self {
            TestCluster::Simulated { .. } => "python-mlflow:test".into(),
            TestCluster::Real { .. } => var("CONCURRENT_TEST_STEP_IMAGE"),
        }
    }

    /// The example project's path as the step pods see it.
    pub fn project_dir(&self) -> String {
        match self {
            TestCluster::Simulated { .. } => root().join("examples/pipeline").display().to_string(),
            TestCluster::Real { .. } => std::env::var("CONCURRENT_TEST_PROJECT_DIR")
                .unwrap_or_else(|_| "/opt/concurrent/examples/pipeline".into()),
        }
    }

    /// Agent flags and environment so pods reach MLflow and the edge.
    pub fn agent_env(&self, stack: &crate::Stack) -> Vec<(String, String)> {
        let mut env = vec![(
            "KUBECONFIG".to_string(),
            self.kubeconfig().display().to_string(),
        )];
        if let TestCluster::Real { .. } = self {
            let host = var("CONCURRENT_TEST_STEP_HOST");
            let swap = |url: &str| url.replace("127.0.0.1", &host);
            env.push(("CONCURRENT_STEP_MLFLOW_URI".into(), swap(&stack.mlflow_url)));
            env.push(("CONCURRENT_STEP_EDGE_URL".into(), swap(&stack.edge_url)));
        }
        env
    }

    fn kubectl(&self, args: &[&str]) -> Value {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .args(["-o", "json"])
            .output()
            .expect("kubectl (install it to run the Kubernetes tests)");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("kubectl -o json")
    }

    /// Pods matching a label selector, as `kubectl get pods -o json` shows them.
    pub fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        self.kubectl(&["get", "pods", "-n", ns, "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// How many times a pod of this name was created: the test server counts creates; on a
    /// real cluster every created pod is scheduled once, so its `Scheduled` events count.
    pub fn creations(&self, ns: &str, name: &str) -> u32 {
        match self {
            TestCluster::Simulated { server, .. } => server.creations(ns, name),
            TestCluster::Real { .. } => self.kubectl(&["get", "events", "-n", ns])["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|e| {
                            e["reason"] == "Scheduled" && e["involvedObject"]["name"] == name
                        })
                        .count() as u32
                })
                .unwrap_or(0),
        }
    }
}
