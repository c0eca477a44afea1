//! The simulated kubelet: schedules, "pulls", and runs pods as local processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::server::{KubeConfig, Shared};
use super::store::now;

pub struct Kubelet {
    store: Shared,
    config: KubeConfig,
}

fn cpu_millis(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => (q.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64,
    }
}

fn bytes(q: &str) -> u64 {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return (n.parse::<f64>().unwrap_or(0.0) * factor as f64) as u64;
        }
    }
    q.parse().unwrap_or(0)
}

/// A process and every process below it (a container's processes, as its cgroup would hold
/// them), from /proc.
fn process_tree(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let ppid = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

fn tree_rss(root: i32) -> u64 {
    process_tree(root)
        .iter()
        .filter_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/statm"))
                .ok()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum::<u64>()
        * 4096
}

/// Kills a container: every process of its tree, like a cgroup kill.
fn kill_tree(root: i32) {
    for pid in process_tree(root) {
        // SAFETY: kill(2) on processes of the container this kubelet started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

enum Exit {
    Code(i32),
    OomKilled,
    Deadline,
    Deleted,
}

impl Kubelet {
    pub fn new(store: Shared, config: KubeConfig) -> Kubelet {
        Kubelet { store, config }
    }

    pub async fn run(self) {
        let mut rx = self.store.lock().expect("poisoned").changes.subscribe();
        loop {
            match rx.recv().await {
                Ok(c) if c.resource == "pods" && c.kind == "ADDED" => {
                    let (store, config) = (self.store.clone(), self.config.clone());
                    tokio::spawn(
                        async move { run_pod(store, config, c.namespace, c.object).await },
                    );
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    }
}

fn exists(store: &Shared, ns: &str, name: &str) -> bool {
    store
        .lock()
        .expect("poisoned")
        .get("pods", ns, name)
        .is_some()
}

fn set(store: &Shared, ns: &str, name: &str, status: Value) {
    store.lock().expect("poisoned").set_status(ns, name, status);
}

fn event(store: &Shared, ns: &str, pod: &Value, kind: &str, reason: &str, message: &str) {
    store
        .lock()
        .expect("poisoned")
        .event(ns, pod, kind, reason, message);
}

async fn run_pod(store: Shared, config: KubeConfig, ns: String, pod: Value) {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &pod["spec"];
    let empty = vec![];
    let containers = spec["containers"].as_array().unwrap_or(&empty);
    let inits = spec["initContainers"].as_array().unwrap_or(&empty);

    // Scheduling against the one node's capacity.
    let (mut cpu, mut mem, mut gpu) = (0u64, 0u64, 0u64);
    for c in containers {
        let r = &c["resources"];
        let pick = |k: &str| {
            r["requests"][k]
                .as_str()
                .or(r["limits"][k].as_str())
                .map(str::to_string)
        };
        cpu += pick("cpu").map_or(0, |q| cpu_millis(&q));
        mem += pick("memory").map_or(0, |q| bytes(&q));
        gpu += r["limits"]["nvidia.com/gpu"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .or(r["limits"]["nvidia.com/gpu"].as_u64())
            .unwrap_or(0);
    }
    let short: Vec<&str> = [
        (cpu > config.cpu_millis, "cpu"),
        (mem > config.memory_bytes, "memory"),
        (gpu > config.gpus, "nvidia.com/gpu"),
    ]
    .iter()
    .filter(|(over, _)| *over)
    .map(|(_, what)| *what)
    .collect();
    if !short.is_empty() {
        let message = format!(
            "0/1 nodes are available: {}.",
            short
                .iter()
                .map(|w| format!("1 Insufficient {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        set(
            &store,
            &ns,
            &name,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": now()}]}),
        );
        event(&store, &ns, &pod, "Warning", "FailedScheduling", &message);
        return;
    }
    let scheduled = json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now()});
    set(
        &store,
        &ns,
        &name,
        json!({"phase": "Pending", "nodeName": "test-node", "conditions": [scheduled]}),
    );
    event(
        &store,
        &ns,
        &pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to test-node"),
    );

    // Image pulls: names containing "does-not-exist" fail as a registry would.
    for c in inits.iter().chain(containers) {
        let image = c["image"].as_str().unwrap_or_default();
        if image.contains("does-not-exist") {
            let cname = c["name"].clone();
            let pull = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
            let waiting = |reason: &str, message: &str| {
                json!({"phase": "Pending", "nodeName": "test-node", "conditions": [scheduled],
                "containerStatuses": [{"name": cname, "image": image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
                                       "state": {"waiting": {"reason": reason, "message": message}}}]})
            };
            set(&store, &ns, &name, waiting("ErrImagePull", &pull));
            event(
                &store,
                &ns,
                &pod,
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image}\": {pull}"),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            set(
                &store,
                &ns,
                &name,
                waiting(
                    "ImagePullBackOff",
                    &format!("Back-off pulling image \"{image}\""),
                ),
            );
            event(
                &store,
                &ns,
                &pod,
                "Normal",
                "BackOff",
                &format!("Back-off pulling image \"{image}\""),
            );
            return;
        }
    }

    // The sandbox: volumes become directories.
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or("x")
        .rsplit('-')
        .next()
        .unwrap_or("x")
        .to_string();
    let sandbox = config
        .work_dir
        .join("pods")
        .join(format!("{ns}-{name}-{uid}"));
    let mut volumes: HashMap<String, PathBuf> = HashMap::new();
    for v in spec["volumes"].as_array().unwrap_or(&empty) {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        let dir = sandbox.join("volumes").join(&vname);
        std::fs::create_dir_all(&dir).expect("volume dir");
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            let Some(data) = wait_secret(&store, &ns, &name, secret).await else {
                return;
            };
            for (k, b64) in data.as_object().into_iter().flatten() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_str().unwrap_or_default())
                    .unwrap_or_default();
                std::fs::write(dir.join(k), bytes).expect("secret file");
            }
        }
        volumes.insert(vname, dir);
    }
    let started = Instant::now();
    let deadline = spec["activeDeadlineSeconds"]
        .as_u64()
        .map(Duration::from_secs);

    for c in inits {
        set(
            &store,
            &ns,
            &name,
            json!({"phase": "Pending", "nodeName": "test-node", "conditions": [scheduled], "startTime": now(),
            "initContainerStatuses": [{"name": c["name"], "image": c["image"], "ready": false, "restartCount": 0, "state": {"running": {"startedAt": now()}}}]}),
        );
        match run_container(
            &store,
            &config,
            &ns,
            &name,
            c,
            &volumes,
            &sandbox,
            None,
            deadline.map(|d| d.saturating_sub(started.elapsed())),
        )
        .await
        {
            Exit::Code(0) => {}
            Exit::Deleted => return,
            other => {
                let code = if let Exit::Code(c) = other { c } else { 137 };
                set(
                    &store,
                    &ns,
                    &name,
                    json!({"phase": "Failed", "nodeName": "test-node", "reason": "Init:Error",
                    "initContainerStatuses": [{"name": c["name"], "image": c["image"], "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": now()}}}]}),
                );
                return;
            }
        }
    }

    let Some(main) = containers.first() else {
        return;
    };
    let started_at = now();
    let running = |state: Value, phase: &str| {
        json!({"phase": phase, "nodeName": "test-node", "startTime": started_at,
        "conditions": [scheduled, {"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}],
        "containerStatuses": [{"name": main["name"], "image": main["image"], "imageID": "", "ready": phase == "Running",
                               "restartCount": 0, "started": phase == "Running", "state": state}]})
    };
    set(
        &store,
        &ns,
        &name,
        running(json!({"running": {"startedAt": started_at}}), "Running"),
    );
    event(
        &store,
        &ns,
        &pod,
        "Normal",
        "Started",
        &format!(
            "Started container {}",
            main["name"].as_str().unwrap_or_default()
        ),
    );
    let limit = main["resources"]["limits"]["memory"].as_str().map(bytes);
    let exit = run_container(
        &store,
        &config,
        &ns,
        &name,
        main,
        &volumes,
        &sandbox,
        limit,
        deadline.map(|d| d.saturating_sub(started.elapsed())),
    )
    .await;
    let terminated = |code: i32, reason: &str| json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now()}});
    let mut status = match exit {
        Exit::Deleted => return,
        Exit::Code(0) => running(terminated(0, "Completed"), "Succeeded"),
        Exit::Code(code) => running(terminated(code, "Error"), "Failed"),
        Exit::OomKilled => {
            event(
                &store,
                &ns,
                &pod,
                "Warning",
                "OOMKilling",
                "Memory cgroup out of memory: Killed process",
            );
            running(terminated(137, "OOMKilled"), "Failed")
        }
        Exit::Deadline => {
            event(
                &store,
                &ns,
                &pod,
                "Normal",
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            );
            running(terminated(137, "Error"), "Failed")
        }
    };
    if matches!(exit, Exit::Deadline) {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    set(&store, &ns, &name, status);
}

async fn wait_secret(store: &Shared, ns: &str, pod: &str, secret: &str) -> Option<Value> {
    loop {
        if let Some(s) = store.lock().expect("poisoned").get("secrets", ns, secret) {
            return Some(s["data"].clone());
        }
        if !exists(store, ns, pod) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Maps a path inside the container to this machine: volume mounts first, then image files.
fn rewrite(
    arg: &str,
    mounts: &[(String, PathBuf)],
    image_files: Option<&HashMap<String, PathBuf>>,
) -> String {
    let best = mounts
        .iter()
        .filter(|(m, _)| arg == m || arg.starts_with(&format!("{m}/")))
        .max_by_key(|(m, _)| m.len());
    if let Some((m, dir)) = best {
        return format!("{}{}", dir.display(), &arg[m.len()..]);
    }
    if let Some(real) = image_files.and_then(|f| f.get(arg)) {
        return real.display().to_string();
    }
    arg.to_string()
}

#[allow(clippy::too_many_arguments)] // the container, its pod's volumes and its limits; a struct would only rename them
async fn run_container(
    store: &Shared,
    config: &KubeConfig,
    ns: &str,
    pod: &str,
    c: &Value,
    volumes: &HashMap<String, PathBuf>,
    sandbox: &Path,
    memory_limit: Option<u64>,
    deadline: Option<Duration>,
) -> Exit {
    let empty = vec![];
    let mounts: Vec<(String, PathBuf)> = c["volumeMounts"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|m| {
            Some((
                m["mountPath"].as_str()?.trim_end_matches('/').to_string(),
                volumes.get(m["name"].as_str()?)?.clone(),
            ))
        })
        .collect();
    let image_files = config
        .image_files
        .get(c["image"].as_str().unwrap_or_default());
    let argv: Vec<String> = c["command"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .chain(c["args"].as_array().unwrap_or(&empty))
        .filter_map(|a| a.as_str())
        .map(|a| rewrite(a, &mounts, image_files))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Exit::Code(128);
    };
    let root = sandbox.join("root");
    std::fs::create_dir_all(&root).expect("root dir");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&root)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in &config.env {
        cmd.env(k, v);
    }
    for e in c["env"].as_array().unwrap_or(&empty) {
        let key = e["name"].as_str().unwrap_or_default();
        let value = match (&e["value"], &e["valueFrom"]["secretKeyRef"]) {
            (Value::String(v), _) => Some(v.clone()),
            (_, r) if r.is_object() => store
                .lock()
                .expect("poisoned")
                .get("secrets", ns, r["name"].as_str().unwrap_or_default())
                .and_then(|s| {
                    s["data"][r["key"].as_str().unwrap_or_default()]
                        .as_str()
                        .map(str::to_string)
                })
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        };
        if let Some(v) = value {
            cmd.env(key, rewrite(&v, &mounts, image_files));
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            store
                .lock()
                .expect("poisoned")
                .logs
                .entry((ns.into(), pod.into()))
                .or_default()
                .push_str(&format!("exec {program}: {e}\n"));
            return Exit::Code(128);
        }
    };
    let pgid = child.id().unwrap_or(0) as i32;
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        let (store, key) = (store.clone(), (ns.to_string(), pod.to_string()));
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                store
                    .lock()
                    .expect("poisoned")
                    .logs
                    .entry(key.clone())
                    .or_default()
                    .push_str(&format!("{line}\n"));
            }
        });
    }
    let start = Instant::now();
    let kill = kill_tree;
    loop {
        tokio::select! {
            status = child.wait() => return Exit::Code(status.ok().and_then(|s| s.code()).unwrap_or(137)),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if !exists(store, ns, pod) {
            kill(pgid);
            return Exit::Deleted;
        }
        if deadline.is_some_and(|d| start.elapsed() > d) {
            kill(pgid);
            let _ = child.wait().await;
            return Exit::Deadline;
        }
        if memory_limit.is_some_and(|limit| tree_rss(pgid) > limit) {
            kill(pgid);
            let _ = child.wait().await;
            return Exit::OomKilled;
        }
    }
}
