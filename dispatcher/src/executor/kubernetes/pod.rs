//! The Pod and Secret of one attempt (pure: built from the lease and the configuration).

use std::collections::BTreeMap;

use concurrent_core::names::pod_name;
use concurrent_core::wire::Lease;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference, Pod, PodSpec,
    ResourceRequirements, Secret, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
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

/// The pod of a leased attempt. The step token and the spec live in the Secret, never here.
pub fn pod(lease: &Lease, s: &PodSettings) -> Pod {
    let item = &lease.item;
    let name = name_of(lease);
    let labels = BTreeMap::from([
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
    ]);
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
    let secret = secret_name(&name);
    let env = vec![
        EnvVar {
            name: "CONCURRENT_STEP_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
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
            .map(|k| from_secret(k, &secret, k)),
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
    let args: Vec<String> = [
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
                secret_name: Some(secret),
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
        env.push(plain("CONCURRENT_GIT_CREDENTIALS", GIT_CREDENTIALS_DIR));
    }
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
            service_account_name: s.service_account.clone(),
            image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
                s.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
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
                    }),
                    image: None,
                    env: Default::default(),
                    secret_env: Default::default(),
                    env_manager: None,
                    parent_run_id: None,
                    commit: None,
                    resources: Resources {
                        cpu: Some("2".into()),
                        memory: Some("4Gi".into()),
                        gpu: 1,
                    },
                    timeout_seconds: Some(600),
                    partition_index: 1,
                    partition_count: 2,
                    inputs: Default::default(),
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
        }
    }

    #[test]
    fn the_pod_carries_resources_deadline_and_labels_but_no_secret() {
        let p = pod(&lease(), &settings());
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
        let mut p = pod(&lease(), &settings());
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
        let p = pod(&l, &settings());
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
