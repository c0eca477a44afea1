//! A Kubernetes API server for tests, because no real one can run on our CI machines.
//!
//! It speaks the real Kubernetes REST/JSON protocol for what Concurrent's agent uses, well
//! enough that kube-rs and `kubectl` work against it unchanged: discovery, pods and secrets
//! (create, get, list with label selectors, delete, watch from a resourceVersion), pod logs and
//! events. A simulated kubelet schedules pods against one node's capacity, "pulls" images
//! (names containing `does-not-exist` fail), runs init and main containers as real local
//! processes (volumes become directories, secret volumes and `secretKeyRef` env are resolved),
//! enforces memory limits (OOMKilled) and `activeDeadlineSeconds`, and records logs and events.
//!
//! What it does not do: authentication, RBAC, admission, patches, field selectors, more than one
//! node. The executor's tests read pods and events with `kubectl`, so the same tests run against
//! a real cluster with `CONCURRENT_TEST_KUBECONFIG` (see `cluster.rs` for the variables).

mod cluster;
mod kubelet;
mod server;
mod store;

pub use cluster::TestCluster;
pub use server::{KubeConfig, KubeServer};
