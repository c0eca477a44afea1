//! The Pod and Secret of one attempt (pure: built from the lease and the configuration).

use std::collections::BTreeMap;

use concurrent_core::kubernetes::KubernetesSpec;
use concurrent_core::names::pod_name;
use concurrent_core::wire::Lease;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, LocalObjectReference, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const CLUSTER: &str = "concurrent.dev/cluster";
pub const POD: &str = "concurrent.dev/pod";
pub const ITEM: &str = "concurrent.dev/item";
pub const LEASE_TOKEN: &str = "concurrent.dev/lease-token";

/// What the Kubernetes executor puts into every pod.
#[derive(Debug, Clone)]
pub struct PodSettings {
    pub cluster: String,
    pub default_image: String,
    /// Image whose `/concurrent` is the static step runner (the agent's own image).
    pub agent_image: String,
    pub service_account: Option<String>,
    pub image_pull_secrets: Vec<String>,
    pub node_selector: BTreeMap<String, String>,
    /// MLflow and the edge as the pods reach them.
    pub mlflow_uri: String,
    pub edge_url: String,
    /// The agent's own MLflow credentials (`MLFLOW_TRACKING_TOKEN`, `…_USERNAME`,
    /// `…_PASSWORD`): they reach each pod through its Secret, never its spec.
    pub mlflow_credentials: BTreeMap<String, String>,
    /// A Secret with git credentials (`.git-credentials`, or `ssh-privatekey` and
    /// `known_hosts`), mounted read-only into every pod for private repositories.
    pub git_credentials_secret: Option<String>,
    /// The platform team's pod template (`--pod-template`): every step pod starts from it.
    pub template: Option<PodTemplateSpec>,
    /// Service accounts a node may ask for (`--allow-service-account`); any other is refused,
    /// since a service account carries rights in the cluster that the template's author may
    /// not have.
    pub allowed_service_accounts: Vec<String>,
    /// The node label that names a node's GPU model (`--gpu-type-label`).
    pub gpu_type_label: String,
    /// How steps build `conda_env` projects where the image has no conda.
    pub conda_env_manager: Option<crate::step::CondaFallback>,
}

/// The user step pods run as unless the pod template says otherwise (the `restricted` pod
/// security standard refuses root).
pub const STEP_UID: i64 = 1000;

/// Reads a pod template file (YAML or JSON, a `PodTemplateSpec`: `metadata` and `spec`).
///
/// # Errors
/// The file cannot be read or is not a PodTemplateSpec (the message names the field).
pub fn read_template(path: &std::path::Path) -> anyhow::Result<PodTemplateSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--pod-template {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--pod-template {} is not a PodTemplateSpec (metadata, spec): {e}",
            path.display()
        )
    })
}

/// Security defaults that meet the `restricted` pod security standard.
fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(STEP_UID),
        run_as_group: Some(STEP_UID),
        fs_group: Some(STEP_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// Where a git credentials Secret is mounted in pods (and may be mounted in the agent's).
pub const GIT_CREDENTIALS_DIR: &str = "/concurrent-git";

/// The MLflow credentials the agent passes on to its pods, from its own environment.
pub fn mlflow_credentials_from_env() -> BTreeMap<String, String> {
    [
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect()
}

fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn name_of(lease: &Lease) -> String {
    let i = &lease.item;
    pod_name(&i.run_id, &i.node_id, i.instance, i.attempt)
}

pub fn secret_name(pod: &str) -> String {
    format!("{pod}-step")
}

/// The pod of one attempt: the pod template (if any) with what the attempt needs merged in.
/// The step token and the spec live in the Secret, never here.
///
/// # Errors
/// The node asks for a service account this agent does not allow, or its affinity is not a
/// Kubernetes `Affinity` (core's validation catches that when the template is saved).
pub fn pod(lease: &Lease, s: &PodSettings) -> anyhow::Result<Pod> {
    let k = &lease.item.step.kubernetes;
    if let Some(sa) = &k.service_account_name {
        if !s.allowed_service_accounts.contains(sa) && s.service_account.as_ref() != Some(sa) {
            let allowed = if s.allowed_service_accounts.is_empty() {
                "none are allowed".to_string()
            } else {
                format!("allowed: {}", s.allowed_service_accounts.join(", "))
            };
            anyhow::bail!(
                "node {:?} asks for service account {sa:?}, which this agent does not allow ({allowed}); \
                 the platform team adds it with --allow-service-account {sa}, or remove \
                 kubernetes.serviceAccountName from the node",
                lease.item.node_id
            );
        }
    }
    let affinity: Option<Affinity> = match &k.affinity {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
            anyhow::anyhow!(
                "node {:?} has a kubernetes.affinity that is not a Kubernetes Affinity: {e}",
                lease.item.node_id
            )
        })?),
        None => None,
    };
    let mut ours = own_pod(lease, s);
    if let Some(spec) = ours.spec.as_mut() {
        spec.affinity = affinity;
    }
    Ok(match &s.template {
        Some(t) => merge(t, ours),
        None => ours,
    })
}

/// The node's volumes, and where the step's container mounts them.
fn node_volumes(k: &KubernetesSpec) -> (Vec<Volume>, Vec<VolumeMount>) {
    k.volumes
        .iter()
        .map(|v| {
            let volume = Volume {
                name: v.name.clone(),
                persistent_volume_claim: v.persistent_volume_claim.as_ref().map(|c| {
                    PersistentVolumeClaimVolumeSource {
                        claim_name: c.claim_name.clone(),
                        read_only: v.read_only.then_some(true),
                    }
                }),
                empty_dir: v.empty_dir.as_ref().map(|e| EmptyDirVolumeSource {
                    medium: e.medium.clone(),
                    size_limit: e.size_limit.clone().map(Quantity),
                }),
                config_map: v.config_map.as_ref().map(|c| ConfigMapVolumeSource {
                    name: c.name.clone(),
                    ..Default::default()
                }),
                secret: v.secret.as_ref().map(|c| SecretVolumeSource {
                    secret_name: Some(c.secret_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mount = VolumeMount {
                name: v.name.clone(),
                mount_path: v.mount_path.clone(),
                read_only: v.read_only.then_some(true),
                sub_path: v.sub_path.clone(),
                ..Default::default()
            };
            (volume, mount)
        })
        .unzip()
}

/// Merges the attempt's pod into the platform team's template. The template keeps what it
/// alone says (tolerations, affinity, extra volumes and sidecars, its security contexts);
/// labels, node selectors, pull secrets, volumes, mounts and env are unions with ours winning
/// on a clash; what makes the step run (image, command, args, restart policy, deadline, the
/// init container) is ours. A template container named `step` is the base of the step's.
pub fn merge(template: &PodTemplateSpec, ours: Pod) -> Pod {
    let mut meta = template.metadata.clone().unwrap_or_default();
    let union = |a: Option<BTreeMap<String, String>>, b: Option<BTreeMap<String, String>>| {
        let mut m = a.unwrap_or_default();
        m.extend(b.unwrap_or_default());
        (!m.is_empty()).then_some(m)
    };
    meta.labels = union(meta.labels.take(), ours.metadata.labels);
    meta.annotations = union(meta.annotations.take(), ours.metadata.annotations);
    meta.name = ours.metadata.name;
    let mine = ours.spec.unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.restart_policy = mine.restart_policy;
    spec.active_deadline_seconds = mine.active_deadline_seconds;
    spec.service_account_name = mine.service_account_name.or(spec.service_account_name);
    spec.node_selector = union(spec.node_selector.take(), mine.node_selector);
    spec.security_context = spec.security_context.or(mine.security_context);
    let mut pulls = spec.image_pull_secrets.take().unwrap_or_default();
    pulls.extend(mine.image_pull_secrets.unwrap_or_default());
    spec.image_pull_secrets = (!pulls.is_empty()).then_some(pulls);
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    tolerations.extend(mine.tolerations.unwrap_or_default());
    spec.tolerations = (!tolerations.is_empty()).then_some(tolerations);
    if let Some(node) = mine.affinity {
        let base = spec.affinity.take().unwrap_or_default();
        spec.affinity = Some(Affinity {
            node_affinity: node.node_affinity.or(base.node_affinity),
            pod_affinity: node.pod_affinity.or(base.pod_affinity),
            pod_anti_affinity: node.pod_anti_affinity.or(base.pod_anti_affinity),
        });
    }
    // A node's volume replaces the template's of the same name (Kubernetes refuses two).
    let mine_volumes = mine.volumes.unwrap_or_default();
    let mut volumes: Vec<Volume> = spec
        .volumes
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !mine_volumes.iter().any(|m| m.name == v.name))
        .collect();
    volumes.extend(mine_volumes);
    spec.volumes = Some(volumes);
    let mut inits = mine.init_containers.unwrap_or_default();
    inits.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(inits);
    let step = mine.containers.into_iter().next().unwrap_or_default();
    let mut containers = std::mem::take(&mut spec.containers);
    let at = containers.iter().position(|c| c.name == "step");
    let mut base = at.map(|i| containers.remove(i)).unwrap_or_default();
    let mut env: Vec<EnvVar> = base
        .env
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !step.env.iter().flatten().any(|o| o.name == e.name))
        .collect();
    env.extend(step.env.unwrap_or_default());
    let step_mounts = step.volume_mounts.unwrap_or_default();
    let mut mounts: Vec<VolumeMount> = base
        .volume_mounts
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !step_mounts.iter().any(|m| m.mount_path == v.mount_path))
        .collect();
    mounts.extend(step_mounts);
    let resources = {
        let (b, o) = (
            base.resources.take().unwrap_or_default(),
            step.resources.unwrap_or_default(),
        );
        let join = |a: Option<BTreeMap<String, Quantity>>,
                    b: Option<BTreeMap<String, Quantity>>| {
            let mut m = a.unwrap_or_default();
            m.extend(b.unwrap_or_default());
            (!m.is_empty()).then_some(m)
        };
        ResourceRequirements {
            requests: join(b.requests, o.requests),
            limits: join(b.limits, o.limits),
            ..Default::default()
        }
    };
    let merged = Container {
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(resources),
        security_context: base.security_context.take().or(step.security_context),
        ..Container {
            name: step.name,
            image: step.image,
            command: step.command,
            args: step.args,
            ..base
        }
    };
    containers.insert(0, merged);
    spec.containers = containers;
    Pod {
        metadata: meta,
        spec: Some(spec),
        ..Default::default()
    }
}

/// The labels of a step's pod: the recommended `app.kubernetes.io` ones, and what the agent
/// finds its pods by (cluster, run, node, instance, attempt, name).
fn labels(lease: &Lease, s: &PodSettings, name: &str) -> BTreeMap<String, String> {
    let item = &lease.item;
    let name = name.to_string();
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "concurrent-step".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), name.clone()),
        (
            "app.kubernetes.io/component".to_string(),
            "step".to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "concurrent".to_string(),
        ),
        (
            "app.kubernetes.io/version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (MANAGED_BY.to_string(), "concurrent".to_string()),
        (CLUSTER.to_string(), s.cluster.clone()),
        ("concurrent.dev/run".to_string(), item.run_id.clone()),
        ("concurrent.dev/node".to_string(), item.node_id.clone()),
        (
            "concurrent.dev/instance".to_string(),
            item.instance.to_string(),
        ),
        (
            "concurrent.dev/attempt".to_string(),
            item.attempt.to_string(),
        ),
        (POD.to_string(), name.clone()),
    ])
}

/// CPU and memory requests, the memory limit (a pod over it is OOM-killed, not the node) and
/// GPUs: (requests, limits).
fn resources(lease: &Lease) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let r = &lease.item.step.resources;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        requests.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(mem) = &r.memory {
        requests.insert("memory".to_string(), Quantity(mem.clone()));
        limits.insert("memory".to_string(), Quantity(mem.clone()));
    }
    if r.gpu > 0 {
        limits.insert("nvidia.com/gpu".to_string(), Quantity(r.gpu.to_string()));
    }
    (requests, limits)
}

/// The step container's environment: the step token and secrets by reference (the spec never
/// holds a value), MLflow's address, the node's `env`.
fn environment(lease: &Lease, s: &PodSettings, secret: &str) -> Vec<EnvVar> {
    let item = &lease.item;
    let env = vec![
        EnvVar {
            name: "CONCURRENT_STEP_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_string(),
                    key: "token".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        EnvVar {
            name: "MLFLOW_TRACKING_URI".into(),
            value: Some(s.mlflow_uri.clone()),
            ..Default::default()
        },
        EnvVar {
            name: "MLFLOW_DISABLE_TELEMETRY".into(),
            value: Some("true".into()),
            ..Default::default()
        },
        // A non-root user of an image usually has no writable home; caches go to the work dir.
        EnvVar {
            name: "HOME".into(),
            value: Some("/work".into()),
            ..Default::default()
        },
    ];
    let mut env = env;
    let plain = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    };
    env.extend(item.step.env.iter().map(|(k, v)| plain(k, v)));
    // Secret values come from Secrets at the container's start; the spec names them only.
    env.extend(
        item.step
            .secret_env
            .iter()
            .map(|(k, r)| from_secret(k, &r.secret, &r.key)),
    );
    env.extend(
        s.mlflow_credentials
            .keys()
            .map(|k| from_secret(k, secret, k)),
    );
    env.push(plain(
        crate::step::SECRET_ENV,
        &item
            .step
            .secret_env
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(","),
    ));
    env
}

/// The step runner's arguments in the pod.
fn runner_args(s: &PodSettings) -> Vec<String> {
    let mut args: Vec<String> = [
        "step",
        "--spec",
        "/concurrent-step/spec.json",
        "--result",
        "/work/result.json",
        "--work-dir",
        "/work",
        "--mlflow-uri",
        &s.mlflow_uri,
        "--report-to",
        &s.edge_url,
        "--cluster",
        &s.cluster,
        // The container is the boundary: any local path of the image may be a project.
        "--allow-path",
        "/",
        // No Docker in a pod: a docker_env project already runs in its image.
        "--in-image",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if let Some(m) = s.conda_env_manager {
        args.extend(["--conda-env-manager".to_string(), m.as_str().into()]);
    }
    args
}

/// The pod's volumes and the step container's mounts: the runner's binary, the work directory,
/// the step's Secret, the node's own volumes, and git credentials when the agent has them.
fn volumes(lease: &Lease, s: &PodSettings, secret: &str) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mount = |volume: &str, path: &str, read_only: bool| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut volumes = vec![
        Volume {
            name: "concurrent-bin".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "work".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "step".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount("concurrent-bin", "/concurrent-bin", true),
        mount("work", "/work", false),
        mount("step", "/concurrent-step", true),
    ];
    let k = &lease.item.step.kubernetes;
    let (node_volumes, node_mounts) = node_volumes(k);
    volumes.extend(node_volumes);
    mounts.extend(node_mounts);
    if let Some(git_secret) = &s.git_credentials_secret {
        volumes.push(Volume {
            name: "git-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(git_secret.clone()),
                // ssh refuses keys that others can read.
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("git-credentials", GIT_CREDENTIALS_DIR, true));
    }
    (volumes, mounts)
}

fn own_pod(lease: &Lease, s: &PodSettings) -> Pod {
    let item = &lease.item;
    let name = name_of(lease);
    let labels = labels(lease, s, &name);
    let annotations = BTreeMap::from([
        (ITEM.to_string(), item.id.clone()),
        (LEASE_TOKEN.to_string(), lease.token.to_string()),
    ]);
    let mount = |volume: &str, path: &str, read_only: bool| VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let r = &item.step.resources;
    let (requests, limits) = resources(lease);
    let secret = secret_name(&name);
    let mut env = environment(lease, s, &secret);
    if s.git_credentials_secret.is_some() {
        env.push(EnvVar {
            name: "CONCURRENT_GIT_CREDENTIALS".into(),
            value: Some(GIT_CREDENTIALS_DIR.into()),
            ..Default::default()
        });
    }
    let args = runner_args(s);
    let (volumes, mounts) = volumes(lease, s, &secret);
    let k = &item.step.kubernetes;
    let mut node_selector = s.node_selector.clone();
    node_selector.extend(k.node_selector.clone());
    if let Some(gpu) = &r.gpu_type {
        node_selector.insert(s.gpu_type_label.clone(), gpu.clone());
    }
    let tolerations: Vec<Toleration> = k
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.clone(),
            value: t.value.clone(),
            effect: t.effect.clone(),
            toleration_seconds: t.toleration_seconds,
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: item.step.timeout_seconds.map(|t| t as i64),
            service_account_name: k
                .service_account_name
                .clone()
                .or_else(|| s.service_account.clone()),
            image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
                s.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            security_context: Some(restricted_pod()),
            volumes: Some(volumes),
            init_containers: Some(vec![Container {
                name: "concurrent-bin".into(),
                image: Some(s.agent_image.clone()),
                command: Some(vec![
                    "cp".into(),
                    "/concurrent".into(),
                    "/concurrent-bin/concurrent".into(),
                ]),
                volume_mounts: Some(vec![mount("concurrent-bin", "/concurrent-bin", false)]),
                // A ResourceQuota without LimitRange defaults refuses containers without these.
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
                    limits: Some(quantities(&[("cpu", "200m"), ("memory", "64Mi")])),
                    ..Default::default()
                }),
                security_context: Some(restricted_container()),
                ..Default::default()
            }]),
            containers: vec![Container {
                name: "step".into(),
                image: Some(
                    item.step
                        .image
                        .clone()
                        .unwrap_or_else(|| s.default_image.clone()),
                ),
                command: Some(vec!["/concurrent-bin/concurrent".into()]),
                args: Some(args),
                env: Some(env),
                resources: Some(ResourceRequirements {
                    requests: (!requests.is_empty()).then_some(requests),
                    limits: (!limits.is_empty()).then_some(limits),
                    ..Default::default()
                }),
                volume_mounts: Some(mounts),
                security_context: Some(restricted_container()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The per-pod Secret: the step token, the work item and the agent's MLflow credentials, owned
/// by the pod (deleted with it).
pub fn secret(lease: &Lease, pod: &Pod, s: &PodSettings) -> Secret {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: name.clone(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let spec = serde_json::to_vec(&lease.item).expect("a work item serializes");
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            labels: pod.metadata.labels.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(
            [
                (
                    "token".to_string(),
                    ByteString(lease.step_token.clone().into_bytes()),
                ),
                ("spec.json".to_string(), ByteString(spec)),
            ]
            .into_iter()
            .chain(
                s.mlflow_credentials
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes()))),
            )
            .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concurrent_core::run::MlflowRef;
    use concurrent_core::template::{NodeKind, ProjectSpec, Resources};
    use concurrent_core::wire::{StepSpec, WorkItem};

    pub fn lease() -> Lease {
        Lease {
            item: WorkItem {
                id: "0123456789abcdef0123456789abcdef.train.1.2".into(),
                run_id: "0123456789abcdef0123456789abcdef".into(),
                node_id: "train".into(),
                instance: 1,
                attempt: 2,
                cluster: "gpu".into(),
                step: StepSpec {
                    template: "t".into(),
                    kind: NodeKind::Project(ProjectSpec {
                        uri: "https://example.com/repo.git".into(),
                        version: None,
                        sub_path: None,
                        entry_point: "main".into(),
                        parameters: Default::default(),
                        sweep: None,
                    }),
                    image: None,
                    env: Default::default(),
                    secret_env: Default::default(),
                    env_manager: None,
                    kubernetes: Default::default(),
                    child_run: None,
                    artifact_uri: None,
                    input_roots: Default::default(),
                    parent_run_id: None,
                    commit: None,
                    cache: None,
                    resources: Resources {
                        cpu: Some("2".into()),
                        memory: Some("4Gi".into()),
                        gpu: 1,
                        gpu_type: None,
                    },
                    timeout_seconds: Some(600),
                    partition_index: 1,
                    partition_count: 2,
                    inputs: Default::default(),
                    shared_inputs: None,
                    mlflow: MlflowRef {
                        experiment_id: "1".into(),
                        run_id: "r".into(),
                    },
                },
            },
            token: 42,
            expires_at: 0,
            step_token: "cs_secret".into(),
        }
    }

    fn settings() -> PodSettings {
        PodSettings {
            cluster: "gpu".into(),
            default_image: "python:3.11".into(),
            agent_image: "concurrent-agent:1".into(),
            mlflow_credentials: BTreeMap::from([(
                "MLFLOW_TRACKING_TOKEN".into(),
                "tok-123".into(),
            )]),
            git_credentials_secret: Some("git-creds".into()),
            service_account: Some("steps".into()),
            image_pull_secrets: vec!["regcred".into()],
            node_selector: BTreeMap::from([("pool".into(), "gpu".into())]),
            mlflow_uri: "http://mlflow".into(),
            edge_url: "https://edge".into(),
            template: None,
            allowed_service_accounts: vec!["trainer".into()],
            gpu_type_label: "nvidia.com/gpu.product".into(),
            conda_env_manager: None,
        }
    }

    #[test]
    fn step_pods_meet_the_restricted_pod_security_standard_by_default() {
        let p = pod(&lease(), &settings()).unwrap();
        let spec = p.spec.unwrap();
        let psc = spec.security_context.unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user),
            (Some(true), Some(STEP_UID))
        );
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        for c in spec.init_containers.unwrap().iter().chain(&spec.containers) {
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
            assert!(c.resources.is_some(), "{} has requests", c.name);
        }
        let labels = p.metadata.labels.unwrap();
        for k in [
            "name",
            "instance",
            "component",
            "part-of",
            "version",
            "managed-by",
        ] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{k}")),
                "{k}"
            );
        }
    }

    #[test]
    fn a_pod_template_is_the_base_and_the_attempt_is_merged_in() {
        let template: PodTemplateSpec = serde_yaml::from_str(
            r#"
metadata:
  labels: {team: ml, app.kubernetes.io/name: overridden}
spec:
  tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
  nodeSelector: {zone: a}
  securityContext: {runAsNonRoot: true, runAsUser: 2000}
  volumes:
    - {name: dshm, emptyDir: {medium: Memory, sizeLimit: 2Gi}}
    - {name: data, persistentVolumeClaim: {claimName: datasets}}
  containers:
    - name: step
      env: [{name: HF_HOME, value: /data/hf}, {name: HOME, value: /nope}]
      volumeMounts: [{name: dshm, mountPath: /dev/shm}, {name: data, mountPath: /data, readOnly: true}]
      resources: {requests: {ephemeral-storage: 10Gi, cpu: "1"}}
    - name: proxy
      image: envoy:1
"#,
        )
        .unwrap();
        let mut s = settings();
        s.template = Some(template);
        let p = pod(&lease(), &s).unwrap();
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels["team"], "ml");
        assert_eq!(
            labels["app.kubernetes.io/name"], "concurrent-step",
            "ours win"
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.tolerations.unwrap()[0].key.as_deref(), Some("gpu"));
        let selector = spec.node_selector.unwrap();
        assert_eq!(
            (selector["zone"].as_str(), selector["pool"].as_str()),
            ("a", "gpu")
        );
        assert_eq!(
            spec.security_context.unwrap().run_as_user,
            Some(2000),
            "the template's"
        );
        let volumes: Vec<String> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert!(
            volumes.starts_with(&["dshm".to_string(), "data".to_string()])
                && volumes.contains(&"work".to_string())
        );
        assert_eq!(spec.containers.len(), 2, "the sidecar stays");
        let step = &spec.containers[0];
        assert_eq!(step.name, "step");
        assert_eq!(
            step.command.as_deref(),
            Some(&["/concurrent-bin/concurrent".to_string()][..])
        );
        let env = step.env.clone().unwrap();
        let value = |k: &str| {
            env.iter()
                .find(|e| e.name == k)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(value("HF_HOME").as_deref(), Some("/data/hf"));
        assert_eq!(value("HOME").as_deref(), Some("/work"), "ours win");
        assert_eq!(env.iter().filter(|e| e.name == "HOME").count(), 1);
        let mounts: Vec<&str> = step
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(
            mounts.contains(&"/dev/shm") && mounts.contains(&"/work"),
            "{mounts:?}"
        );
        let r = step.resources.clone().unwrap();
        let requests = r.requests.unwrap();
        assert_eq!(requests["ephemeral-storage"].0, "10Gi");
        assert_eq!(requests["cpu"].0, "2", "the node's request wins");
        assert_eq!(spec.init_containers.unwrap()[0].name, "concurrent-bin");
    }

    #[test]
    fn a_node_adds_its_scheduling_volumes_and_service_account_to_the_template() {
        let template: PodTemplateSpec = serde_yaml::from_str(
            r#"
spec:
  tolerations: [{key: spot, operator: Exists}]
  affinity:
    nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}
    podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1, podAffinityTerm: {topologyKey: kubernetes.io/hostname}}]}
  volumes: [{name: data, persistentVolumeClaim: {claimName: old}}]
  containers: [{name: step, volumeMounts: [{name: data, mountPath: /data}]}]
"#,
        )
        .unwrap();
        let mut l = lease();
        l.item.step.resources.gpu = 1;
        l.item.step.resources.gpu_type = Some("NVIDIA-A100-SXM4-80GB".into());
        l.item.step.kubernetes = serde_json::from_value(serde_json::json!({
            "nodeSelector": {"pool": "a100", "disk": "ssd"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}},
            "volumes": [
                {"name": "data", "mountPath": "/data", "readOnly": true, "persistentVolumeClaim": {"claimName": "imagenet"}},
                {"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
            ],
            "serviceAccountName": "trainer"
        }))
        .unwrap();
        let mut s = settings();
        s.template = Some(template);
        let spec = pod(&l, &s).unwrap().spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("trainer"));
        let selector = spec.node_selector.unwrap();
        assert_eq!(selector["pool"], "a100", "the node's wins over the agent's");
        assert_eq!(selector["disk"], "ssd");
        assert_eq!(selector["nvidia.com/gpu.product"], "NVIDIA-A100-SXM4-80GB");
        let tolerated: Vec<_> = spec
            .tolerations
            .unwrap()
            .into_iter()
            .filter_map(|t| t.key)
            .collect();
        assert_eq!(
            tolerated,
            ["spot", "nvidia.com/gpu"],
            "the template's and the node's"
        );
        let affinity = spec.affinity.unwrap();
        let terms = affinity
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            terms.node_selector_terms[0]
                .match_expressions
                .as_ref()
                .unwrap()[0]
                .values,
            Some(vec!["b".to_string()]),
            "the node's node affinity replaces the template's"
        );
        assert!(
            affinity.pod_anti_affinity.is_some(),
            "the template's other parts stay"
        );
        let volumes = spec.volumes.unwrap();
        let data: Vec<_> = volumes.iter().filter(|v| v.name == "data").collect();
        assert_eq!(data.len(), 1, "one volume per name");
        assert_eq!(
            data[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "imagenet"
        );
        let shm = volumes.iter().find(|v| v.name == "dshm").unwrap();
        assert_eq!(
            shm.empty_dir.as_ref().unwrap().medium.as_deref(),
            Some("Memory")
        );
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        let at_data: Vec<_> = mounts.iter().filter(|m| m.mount_path == "/data").collect();
        assert_eq!((at_data.len(), at_data[0].read_only), (1, Some(true)));
        assert!(mounts
            .iter()
            .any(|m| m.mount_path == "/dev/shm" && m.name == "dshm"));
    }

    #[test]
    fn a_service_account_the_agent_does_not_allow_is_refused() {
        let mut l = lease();
        l.item.step.kubernetes.service_account_name = Some("cluster-admin".into());
        let err = pod(&l, &settings()).unwrap_err().to_string();
        assert!(
            err.contains("\"cluster-admin\"")
                && err.contains("--allow-service-account cluster-admin")
                && err.contains("allowed: trainer"),
            "{err}"
        );
        l.item.step.kubernetes.service_account_name = Some("steps".into());
        assert!(
            pod(&l, &settings()).is_ok(),
            "the agent's own step account is allowed"
        );
    }

    #[test]
    fn the_pod_carries_resources_deadline_and_labels_but_no_secret() {
        let p = pod(&lease(), &settings()).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("cs_secret"),
            "the step token never appears in the pod spec"
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let c = &spec.containers[0];
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        assert_eq!(limits["memory"].0, "4Gi");
        assert_eq!(c.image.as_deref(), Some("python:3.11"));
        assert_eq!(p.metadata.name.as_deref(), Some("c-0123456789-train-1-2"));
        assert_eq!(p.metadata.annotations.unwrap()[LEASE_TOKEN], "42");
        assert_eq!(spec.node_selector.unwrap()["pool"], "gpu");
    }

    #[test]
    fn the_secret_is_owned_by_its_pod() {
        let mut p = pod(&lease(), &settings()).unwrap();
        p.metadata.uid = Some("uid-1".into());
        let s = secret(&lease(), &p, &settings());
        assert_eq!(s.metadata.owner_references.unwrap()[0].uid, "uid-1");
        let data = s.data.unwrap();
        assert_eq!(data["token"].0, b"cs_secret");
        assert_eq!(data["MLFLOW_TRACKING_TOKEN"].0, b"tok-123");
    }

    #[test]
    fn secrets_reach_the_pod_by_reference_and_plain_env_by_value() {
        let mut l = lease();
        l.item.step.env = BTreeMap::from([("EPOCHS".into(), "3".into())]);
        l.item.step.secret_env = BTreeMap::from([(
            "AWS_SECRET_ACCESS_KEY".into(),
            concurrent_core::template::SecretRef {
                secret: "s3-creds".into(),
                key: "secret_key".into(),
            },
        )]);
        let p = pod(&l, &settings()).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("tok-123"),
            "no MLflow credential in the spec"
        );
        let env = &p.spec.unwrap().containers[0].env.clone().unwrap();
        let find = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(find("EPOCHS").value.as_deref(), Some("3"));
        let aws = find("AWS_SECRET_ACCESS_KEY")
            .value_from
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(
            (aws.name.as_str(), aws.key.as_str()),
            ("s3-creds", "secret_key")
        );
        let token = find("MLFLOW_TRACKING_TOKEN")
            .value_from
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(token.name, "c-0123456789-train-1-2-step");
        assert_eq!(
            find("CONCURRENT_SECRET_ENV").value.as_deref(),
            Some("AWS_SECRET_ACCESS_KEY")
        );
        assert_eq!(
            find("CONCURRENT_GIT_CREDENTIALS").value.as_deref(),
            Some(GIT_CREDENTIALS_DIR)
        );
    }
}
