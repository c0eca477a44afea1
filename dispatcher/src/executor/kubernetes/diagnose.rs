//! Why a pod did not run or did not succeed, in words a person can act on (pure).

use k8s_openapi::api::core::v1::Pod;

/// What a pod's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Waiting to be scheduled or started, with a reason when it is stuck.
    Pending(Option<String>),
    Running,
    Succeeded,
    /// Failed, with the diagnosis.
    Failed(String),
}

/// Reads the pod's status.
pub fn state(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Pending(None);
    };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let inits = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    match status.phase.as_deref() {
        Some("Succeeded") => PodState::Succeeded,
        Some("Failed") => {
            if status.reason.as_deref() == Some("DeadlineExceeded") {
                return PodState::Failed("deadline exceeded: the step ran longer than its timeoutSeconds and was stopped".into());
            }
            if status.reason.as_deref() == Some("Evicted") {
                return PodState::Failed(format!(
                    "the pod was evicted: {}",
                    status.message.clone().unwrap_or_default()
                ));
            }
            for c in inits.iter().chain(containers) {
                if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    if t.reason.as_deref() == Some("OOMKilled") {
                        let limit = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.containers.first())
                            .and_then(|c| {
                                c.resources
                                    .as_ref()?
                                    .limits
                                    .as_ref()?
                                    .get("memory")
                                    .map(|q| q.0.clone())
                            })
                            .unwrap_or_else(|| "none".into());
                        return PodState::Failed(format!(
                            "out of memory: container {} was OOMKilled (memory limit {limit}); raise resources.memory of the node",
                            c.name
                        ));
                    }
                    if t.exit_code != 0 {
                        return PodState::Failed(format!(
                            "container {} exited with code {}",
                            c.name, t.exit_code
                        ));
                    }
                }
            }
            PodState::Failed(format!(
                "the pod failed: {}",
                status
                    .message
                    .clone()
                    .or(status.reason.clone())
                    .unwrap_or_default()
            ))
        }
        Some("Running") => PodState::Running,
        _ => {
            let unschedulable = status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            if let Some(c) = unschedulable {
                return PodState::Pending(Some(format!(
                    "unschedulable: {} (check the node's resources, nodeSelector and the cluster's capacity)",
                    c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default())
                )));
            }
            for c in inits.iter().chain(containers) {
                if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                    if matches!(
                        w.reason.as_deref(),
                        Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName")
                    ) {
                        return PodState::Pending(Some(format!(
                            "image pull failed for {}: {} (check the image name and imagePullSecrets)",
                            c.image,
                            w.message.clone().unwrap_or_default()
                        )));
                    }
                }
            }
            PodState::Pending(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "step", "resources": {"limits": {"memory": "64Mi"}}}]}, "status": status})).unwrap()
    }

    #[test]
    fn stuck_pods_are_explained() {
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
        );
        assert!(
            matches!(state(&p), PodState::Pending(Some(m)) if m.contains("Insufficient nvidia.com/gpu"))
        );
        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "step", "image": "repo/x:1", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
        );
        assert!(
            matches!(state(&p), PodState::Pending(Some(m)) if m.contains("image pull failed for repo/x:1"))
        );
        assert_eq!(
            state(&pod(json!({"phase": "Pending"}))),
            PodState::Pending(None)
        );
    }

    #[test]
    fn failures_are_explained() {
        let p = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "step", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert!(
            matches!(state(&p), PodState::Failed(m) if m.contains("OOMKilled (memory limit 64Mi)"))
        );
        let p = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded"}));
        assert!(matches!(state(&p), PodState::Failed(m) if m.contains("timeoutSeconds")));
        let p = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "step", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}),
        );
        assert_eq!(
            state(&p),
            PodState::Failed("container step exited with code 3".into())
        );
        assert_eq!(
            state(&pod(json!({"phase": "Succeeded"}))),
            PodState::Succeeded
        );
    }
}
