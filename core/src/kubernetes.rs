//! What a node asks of Kubernetes beyond resources: where its pods may be scheduled (node
//! selector, tolerations, affinity), what they mount, and which service account they run as.
//!
//! The shapes follow the Kubernetes API (the same field names as a PodSpec) so that a platform
//! engineer can paste from a manifest. `validate::kubernetes` checks them, with a JSON pointer
//! for every problem, so a typo is caught when the template is saved rather than when a pod is
//! refused an hour into a run. The local executor ignores all of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A node's Kubernetes settings (`"kubernetes": {…}` on a node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// Added to the agent's and the pod template's node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Added to the pod template's tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// A Kubernetes `Affinity` (`nodeAffinity`, `podAffinity`, `podAntiAffinity`); each part
    /// given replaces the pod template's. Kept as JSON: its shape is checked by
    /// [`affinity_problems`] and decoded by the agent, so the designer's bundle carries no copy
    /// of the Kubernetes types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Value>,
    /// Volumes, each mounted into the step's container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// The step pods' service account; the agent runs only those its platform team allowed
    /// (`--allow-service-account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

impl KubernetesSpec {
    pub fn is_empty(&self) -> bool {
        *self == KubernetesSpec::default()
    }
}

/// A Kubernetes `Toleration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; all effects when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// One volume and where the step sees it. Kubernetes keeps volumes (pod) and mounts
/// (container) apart; a node has one container, so one entry holds both and they cannot
/// disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    pub name: String,
    /// Absolute path in the step's container.
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Mount only this directory of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimSource>,
    /// `{"medium": "Memory"}` for `/dev/shm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSource {
    pub claim_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    pub secret_name: String,
}

/// Volume names and mount paths the agent uses in every step pod.
pub const RESERVED_VOLUMES: [&str; 4] = ["concurrent-bin", "work", "step", "git-credentials"];
pub const RESERVED_PATHS: [&str; 4] = [
    "/work",
    "/concurrent-bin",
    "/concurrent-step",
    "/concurrent-git",
];
