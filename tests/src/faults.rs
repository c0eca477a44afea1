//! A forwarding HTTP proxy that can be told to fail some paths: the edge as an agent sees it
//! during an outage, while the real edge keeps running behind it. It forwards every other
//! request unchanged (method, path, headers, body) and answers the blocked ones 503. It can also
//! hold the answer of a forwarded request, so that its sender dies before it learns the outcome.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};

#[derive(Default)]
struct Faults {
    /// Path suffixes answered 503.
    blocked: Mutex<Vec<String>>,
    refused: AtomicUsize,
    /// Path suffixes whose answers are held this long after the upstream answered.
    delayed: Mutex<Vec<(String, std::time::Duration)>>,
    /// Path suffixes whose next answers (this many) are dropped after the upstream answered,
    /// and 502 sent instead: a gateway that lost the answer of a call that took effect.
    lost: Mutex<Vec<(String, usize)>>,
    /// Requests forwarded, by path.
    seen: Mutex<Vec<String>>,
    /// Where requests go (changed when the service behind restarts on another port).
    upstream: Mutex<String>,
}

pub struct FaultyProxy {
    pub url: String,
    faults: Arc<Faults>,
}

impl FaultyProxy {
    /// Starts a proxy to `upstream` on a free loopback port (for the life of the process).
    pub fn start(upstream: &str) -> FaultyProxy {
        let faults = Arc::new(Faults {
            upstream: Mutex::new(upstream.trim_end_matches('/').to_string()),
            ..Faults::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let state = faults.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let http = reqwest::Client::new();
                let app = axum::Router::new().fallback(move |req: Request<Body>| {
                    let (state, http) = (state.clone(), http.clone());
                    async move {
                        let upstream = state.upstream.lock().unwrap().clone();
                        forward(req, &state, &upstream, &http).await
                    }
                });
                axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app)
                    .await
                    .unwrap();
            });
        });
        FaultyProxy { url, faults }
    }

    /// Sends requests to `upstream` from now on (the service behind restarted elsewhere).
    pub fn retarget(&self, upstream: &str) {
        *self.faults.upstream.lock().unwrap() = upstream.trim_end_matches('/').to_string();
    }

    /// Answers requests whose path ends with `suffix` with 503 from now on.
    pub fn block(&self, suffix: &str) {
        self.faults.blocked.lock().unwrap().push(suffix.into());
    }

    pub fn unblock_all(&self) {
        self.faults.blocked.lock().unwrap().clear();
        self.faults.delayed.lock().unwrap().clear();
    }

    /// Holds the answers of requests whose path ends with `suffix` for `delay` (the request
    /// itself reaches the upstream at once).
    pub fn delay(&self, suffix: &str, delay: std::time::Duration) {
        self.faults
            .delayed
            .lock()
            .unwrap()
            .push((suffix.into(), delay));
    }

    /// Forwards the next `times` requests whose path ends with `suffix`, then answers them 502
    /// instead of with the upstream's answer.
    pub fn lose_answers(&self, suffix: &str, times: usize) {
        self.faults
            .lost
            .lock()
            .unwrap()
            .push((suffix.into(), times));
    }

    /// How many forwarded requests had a path ending with `suffix`.
    pub fn seen(&self, suffix: &str) -> usize {
        self.faults
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ends_with(suffix))
            .count()
    }

    /// How many requests were answered 503.
    pub fn refused(&self) -> usize {
        self.faults.refused.load(Ordering::SeqCst)
    }
}

async fn forward(
    req: Request<Body>,
    faults: &Faults,
    upstream: &str,
    http: &reqwest::Client,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if faults
        .blocked
        .lock()
        .unwrap()
        .iter()
        .any(|s| path.ends_with(s.as_str()))
    {
        faults.refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from(
                "{\"error\":{\"code\":\"test\",\"message\":\"blocked by the test\"}}",
            ))
            .unwrap();
    }
    let hold = faults
        .delayed
        .lock()
        .unwrap()
        .iter()
        .find(|(s, _)| path.ends_with(s.as_str()))
        .map(|(_, d)| *d);
    let target = format!(
        "{upstream}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut out = http.request(method, target);
    for (k, v) in req.headers() {
        if k != "host" && k != "content-length" {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let body: Bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let sent = out.body(body.to_vec()).send().await;
    let lose = faults
        .lost
        .lock()
        .unwrap()
        .iter_mut()
        .find(|(s, left)| path.ends_with(s.as_str()) && *left > 0)
        .map(|(_, left)| *left -= 1)
        .is_some();
    faults.seen.lock().unwrap().push(path);
    if let Some(d) = hold {
        tokio::time::sleep(d).await;
    }
    if lose && sent.is_ok() {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("the test lost this answer"))
            .unwrap();
    }
    match sent {
        Ok(resp) => {
            let mut builder = Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    builder = builder.header(k.as_str(), v.as_bytes());
                }
            }
            builder
                .body(Body::from(resp.bytes().await.unwrap_or_default()))
                .unwrap()
        }
        Err(e) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(e.to_string()))
            .unwrap(),
    }
}
