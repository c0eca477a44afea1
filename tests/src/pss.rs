//! The `restricted` Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards),
//! checked the way the admission controller checks a pod spec: what a namespace labelled
//! `pod-security.kubernetes.io/enforce: restricted` would refuse, in words.

use k8s_openapi::api::core::v1::PodSpec;

/// Every reason the restricted standard refuses `spec`; empty when it admits it.
pub fn restricted_problems(spec: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        out.push("host namespaces are shared".into());
    }
    for v in spec.volumes.iter().flatten() {
        if v.host_path.is_some() {
            out.push(format!("volume {} is a hostPath", v.name));
        }
    }
    let pod_seccomp = pod.seccomp_profile.as_ref().map(|p| p.type_.clone());
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let name = &c.name;
        if sc.privileged == Some(true) {
            out.push(format!("container {name} is privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            out.push(format!(
                "container {name} must set allowPrivilegeEscalation: false"
            ));
        }
        let drops_all = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            out.push(format!("container {name} must drop ALL capabilities"));
        }
        let added = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        if added.iter().any(|a| a != "NET_BIND_SERVICE") {
            out.push(format!("container {name} adds capabilities {added:?}"));
        }
        if sc.run_as_non_root.or(pod.run_as_non_root) != Some(true) {
            out.push(format!(
                "container {name} must run as non-root (runAsNonRoot: true)"
            ));
        }
        if sc.run_as_user.or(pod.run_as_user) == Some(0) {
            out.push(format!("container {name} runs as user 0"));
        }
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.clone())
            .or(pod_seccomp.clone());
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            out.push(format!(
                "container {name} needs seccompProfile RuntimeDefault or Localhost"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unhardened_pod_is_refused_with_each_reason() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}]
        }))
        .unwrap();
        let problems = restricted_problems(&spec);
        assert_eq!(problems.len(), 5, "{problems:?}");
    }
}
