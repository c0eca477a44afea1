//! The HTTP side: discovery, CRUD, list, watch and logs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use super::kubelet::Kubelet;
use super::store::{matches_selector, status, Store};

/// What the simulated node offers.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u64,
    /// Files of container images: image name → (path in the image → real file here).
    pub image_files: HashMap<String, HashMap<String, PathBuf>>,
    /// Directory for pod sandboxes.
    pub work_dir: PathBuf,
    /// Extra environment for every container (e.g. PATH to the Python with MLflow).
    pub env: Vec<(String, String)>,
}

pub type Shared = Arc<Mutex<Store>>;

/// A running test API server; stops with the test process.
pub struct KubeServer {
    pub url: String,
    pub store: Shared,
    pub kubeconfig: PathBuf,
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl KubeServer {
    /// Starts the server and its kubelet on a free loopback port, and writes a kubeconfig.
    pub fn start(config: KubeConfig) -> KubeServer {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        );
        let store: Shared = Arc::new(Mutex::new(Store::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .route("/version", get(|| async { Json(json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-concurrent-test", "platform": "linux/amd64"})) }))
            .route("/api", get(|| async { Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
            .route("/apis", get(|| async { Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }))
            .route("/api/v1", get(|| async { Json(resources()) }))
            .route("/api/v1/{resource}", get(list_all))
            .route("/api/v1/namespaces/{ns}/{resource}", get(list).post(create))
            .route("/api/v1/namespaces/{ns}/{resource}/{name}", get(read).delete(delete))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(logs))
            .with_state(store.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.expect("serve") });
        runtime.spawn(Kubelet::new(store.clone(), config.clone()).run());
        let kubeconfig = config.work_dir.join("kubeconfig");
        std::fs::create_dir_all(&config.work_dir).expect("work dir");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\nusers:\n- name: test\n  user:\n    token: test\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n"
            ),
        )
        .expect("kubeconfig");
        KubeServer {
            url,
            store,
            kubeconfig,
            _runtime: runtime,
        }
    }

    /// How many times a pod of this name was created.
    pub fn creations(&self, ns: &str, name: &str) -> u32 {
        self.store
            .lock()
            .expect("poisoned")
            .creations
            .get(&(ns.to_string(), name.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        self.store
            .lock()
            .expect("poisoned")
            .list("pods", Some(ns), selector)
    }
}

fn resources() -> Value {
    let r = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs, "shortNames": if name == "pods" { json!(["po"]) } else { json!([]) }});
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        r("pods", "Pod", true, &["create", "delete", "get", "list", "watch"]),
        r("pods/log", "Pod", true, &["get"]),
        r("secrets", "Secret", true, &["create", "delete", "get", "list", "watch"]),
        r("events", "Event", true, &["create", "get", "list", "watch"]),
        r("namespaces", "Namespace", false, &["get", "list"]),
    ]})
}

fn reply(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

fn failure(v: Value) -> Response {
    let code = StatusCode::from_u16(v["code"].as_u64().unwrap_or(500) as u16)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(code, v)
}

fn list_kind(resource: &str) -> &'static str {
    match resource {
        "pods" => "PodList",
        "secrets" => "SecretList",
        "events" => "EventList",
        _ => "List",
    }
}

async fn list_all(
    State(store): State<Shared>,
    Path(resource): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if resource == "namespaces" {
        return reply(
            StatusCode::OK,
            json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "default"}}]}),
        );
    }
    list_or_watch(store, resource, None, q).await
}

async fn list(
    State(store): State<Shared>,
    Path((ns, resource)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if wants_table(&headers) && resource == "pods" && !q.contains_key("watch") {
        let s = store.lock().expect("poisoned");
        let items = s.list(
            &resource,
            Some(&ns),
            q.get("labelSelector").map_or("", String::as_str),
        );
        return reply(StatusCode::OK, pod_table(&items, s.resource_version()));
    }
    list_or_watch(store, resource, Some(ns), q).await
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// The server-side printing kubectl asks for (`kubectl get pods` without `-o`).
fn pod_table(pods: &[Value], rv: String) -> Value {
    let col = |name: &str| json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": 0});
    let rows: Vec<Value> = pods
        .iter()
        .map(|p| {
            let statuses = p["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
            let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let waiting = statuses.iter().find_map(|c| c["state"]["waiting"]["reason"].as_str());
            let terminated = statuses.iter().find_map(|c| c["state"]["terminated"]["reason"].as_str());
            let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
            let shown = waiting.or(terminated.filter(|r| *r != "Completed" || phase != "Succeeded")).unwrap_or(if phase == "Succeeded" { "Completed" } else { phase });
            let age = age(p["metadata"]["creationTimestamp"].as_str().unwrap_or_default());
            json!({"cells": [p["metadata"]["name"], format!("{ready}/{total}"), shown, "0", age],
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
           "columnDefinitions": [col("Name"), col("Ready"), col("Status"), col("Restarts"), col("Age")], "rows": rows})
}

fn age(rfc3339: &str) -> String {
    let created = concurrent_core::time::parse_rfc3339(rfc3339).unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let secs = (now - created).max(0);
    if secs < 120 {
        format!("{secs}s")
    } else {
        format!("{}m", secs / 60)
    }
}

async fn list_or_watch(
    store: Shared,
    resource: String,
    ns: Option<String>,
    q: HashMap<String, String>,
) -> Response {
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let s = store.lock().expect("poisoned");
        let items = s.list(&resource, ns.as_deref(), &selector);
        return reply(
            StatusCode::OK,
            json!({"kind": list_kind(&resource), "apiVersion": "v1", "metadata": {"resourceVersion": s.resource_version()}, "items": items}),
        );
    }
    // Changes after the given resourceVersion; events we no longer hold are not replayed, as a
    // real server would answer 410 Gone for a too-old version (clients then list again).
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(290u64);
    let rx = store.lock().expect("poisoned").changes.subscribe();
    let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
        .filter_map(move |c| {
            let (resource, ns, selector) = (resource.clone(), ns.clone(), selector.clone());
            async move {
                let c = c.ok()?;
                let rv: u64 = c.object["metadata"]["resourceVersion"]
                    .as_str()?
                    .parse()
                    .ok()?;
                let fits = c.resource == resource
                    && ns.as_ref().is_none_or(|n| *n == c.namespace)
                    && matches_selector(&c.object, &selector);
                (fits && rv > since).then(|| {
                    Ok::<_, std::io::Error>(format!(
                        "{}\n",
                        json!({"type": c.kind, "object": c.object})
                    ))
                })
            }
        })
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}

async fn create(
    State(store): State<Shared>,
    Path((ns, resource)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // kubectl may send JSON without `application/json` (e.g. with a charset, or `*/*`).
    let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
        let kind = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return failure(status(
            415,
            "UnsupportedMediaType",
            format!("the test server reads JSON bodies only, not {kind}"),
        ));
    };
    match store.lock().expect("poisoned").create(&resource, &ns, obj) {
        Ok(o) => reply(StatusCode::CREATED, o),
        Err(e) => failure(e),
    }
}

async fn read(
    State(store): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    match store.lock().expect("poisoned").get(&resource, &ns, &name) {
        Some(o) => reply(StatusCode::OK, o),
        None => failure(status(
            404,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
        )),
    }
}

async fn delete(
    State(store): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    match store
        .lock()
        .expect("poisoned")
        .delete(&resource, &ns, &name)
    {
        Some(o) => reply(StatusCode::OK, o),
        None => failure(status(
            404,
            "NotFound",
            format!("{resource} \"{name}\" not found"),
        )),
    }
}

async fn logs(
    State(store): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = store.lock().expect("poisoned");
    if s.get("pods", &ns, &name).is_none() {
        return failure(status(
            404,
            "NotFound",
            format!("pods \"{name}\" not found"),
        ));
    }
    let text = s.logs.get(&(ns, name)).cloned().unwrap_or_default();
    let text = match q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
        }
        None => text,
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}
