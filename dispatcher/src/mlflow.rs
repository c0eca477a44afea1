//! The step runner's MLflow client: artifact download, upload and listing through MLflow's
//! artifact proxy (the fast `mlflow-artifacts` route), streamed and retried.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context};
use backon::Retryable;
use concurrent_core::names::percent_encode;
use futures::TryStreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

pub struct Mlflow {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// run id → URL prefix of its artifacts behind the proxy (`None`: another store).
    roots: Mutex<HashMap<String, Option<String>>>,
}

/// MLflow answered 4xx: the same call would be refused again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// MLflow could not be reached, or answered as an overloaded or failing server does (5xx):
/// the same call may pass later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    /// Whether `e` (or what caused it) is MLflow being away.
    pub fn caused(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<Unavailable>())
    }
}

/// How an MLflow call failed: 4xx answers are final, the rest may pass on a retry.
enum Failure {
    Final(anyhow::Error),
    Again(anyhow::Error),
}

impl Failure {
    fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Final(e) => e,
            Failure::Again(e) => anyhow::Error::new(Unavailable(format!("{e:#}"))),
        }
    }
}

impl Mlflow {
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Mlflow> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Mlflow {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            roots: Mutex::new(HashMap::new()),
        })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request built by `request` until MLflow answers, retrying server errors and
    /// unreachability with backoff; a 4xx is final. `what` names the call in errors.
    async fn send(
        &self,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        (|| self.send_once(what, &request))
            .retry(crate::retry::mlflow_call())
            .when(|f| matches!(f, Failure::Again(_)))
            .await
            .map_err(Failure::into_error)
    }

    /// One try of [`Mlflow::send`]: for a call that must not be repeated blindly (a create
    /// whose answer was lost may have made the run).
    async fn send_once(
        &self,
        what: &str,
        request: &impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        match self.auth(request()).send().await {
            Ok(r) if r.status().is_success() => Ok(r),
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let message = format!("MLflow answered {status} to {what}: {text}");
                // MLflow answers an exhausted database connection pool, or a locked SQLite
                // file, with 400 BAD_REQUEST: an overload that passes, not a refusal.
                if text.contains("QueuePool limit") || text.contains("database is locked") {
                    Err(Failure::Again(anyhow!(message)))
                } else {
                    Err(Failure::Final(anyhow::Error::new(Refused(message))))
                }
            }
            Ok(r) => Err(Failure::Again(anyhow!(
                "MLflow answered {} to {what}",
                r.status()
            ))),
            Err(e) => Err(Failure::Again(anyhow!(
                "MLflow at {} is unreachable: {e}",
                self.base
            ))),
        }
    }

    /// The attempt's MLflow run: the one tagged with its key when an earlier agent may have
    /// made it, or a new one, with the run name, tags and params the edge chose. A 4xx
    /// (a deleted experiment, a value MLflow refuses) is final; the create is tried once (the
    /// caller tries again with `maybe_exists`), the other calls until MLflow answers.
    /// Its answer: the run's id, and its artifact root when MLflow told it.
    pub async fn ensure_run(
        &self,
        experiment_id: &str,
        child: &concurrent_core::wire::ChildRun,
    ) -> anyhow::Result<(String, Option<String>)> {
        let pairs = |kv: &[(String, String)]| -> Vec<Value> {
            kv.iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect()
        };
        // `once`: a create whose answer was lost may have made the run, so it is not repeated
        // here; the caller tries again as if an earlier agent had (looking it up first).
        let call = |path: &str, body: Value, once: bool| {
            let url = format!("{}/api/2.0/mlflow/{path}", self.base);
            let what = format!("{path} for {}", child.key);
            async move {
                let request = || {
                    self.http
                        .post(&url)
                        .json(&body)
                        .timeout(Duration::from_secs(30))
                };
                let r = if once {
                    self.send_once(&what, &request)
                        .await
                        .map_err(Failure::into_error)?
                } else {
                    self.send(&what, request).await?
                };
                anyhow::Ok(r.json::<Value>().await?)
            }
        };
        let post = |path: &str, body: Value| call(path, body, false);
        let found = if child.maybe_exists {
            let filter = format!("tags.`concurrent.key` = '{}'", child.key.replace('\'', ""));
            let v = post("runs/search", serde_json::json!({"experiment_ids": [experiment_id], "filter": filter, "run_view_type": "ALL", "max_results": 1})).await?;
            v["runs"][0]["info"].as_object().cloned()
        } else {
            None
        };
        let info = match found {
            Some(info) => Value::Object(info),
            None => {
                let mut tags = child.tags.clone();
                tags.push(("mlflow.runName".into(), child.run_name.clone()));
                let start = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let body = serde_json::json!({"experiment_id": experiment_id, "run_name": child.run_name, "start_time": start, "tags": pairs(&tags)});
                let mut v = call("runs/create", body, true).await?;
                v["run"]["info"].take()
            }
        };
        let run_id = info["run_id"]
            .as_str()
            .ok_or_else(|| anyhow!("MLflow's answer for {} has no run id", child.key))?
            .to_string();
        let artifact_uri = info["artifact_uri"].as_str().map(str::to_string);
        // At most 100 params per batch; logging the same value again is allowed.
        for chunk in child.params.chunks(100) {
            post(
                "runs/log-batch",
                serde_json::json!({"run_id": run_id, "params": pairs(chunk)}),
            )
            .await?;
        }
        Ok((run_id, artifact_uri))
    }

    /// Sets tags on a run (one call).
    pub async fn set_tags(&self, run_id: &str, tags: &[(&str, &str)]) -> anyhow::Result<()> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect();
        self.log_batch(
            serde_json::json!({"run_id": run_id, "tags": tags}),
            &format!("setting tags on run {run_id}"),
        )
        .await
    }

    /// Logs metrics on a run (step 0, now).
    pub async fn log_metrics(&self, run_id: &str, metrics: &[(&str, f64)]) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v, "timestamp": now, "step": 0}))
            .collect();
        self.log_batch(
            serde_json::json!({"run_id": run_id, "metrics": metrics}),
            &format!("logging metrics on run {run_id}"),
        )
        .await
    }

    /// `runs/log-batch` with `body` (tags, metrics or params of one run).
    async fn log_batch(&self, body: Value, what: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/2.0/mlflow/runs/log-batch", self.base);
        self.send(what, || {
            self.http
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(30))
        })
        .await?;
        Ok(())
    }

    /// A run's latest value of each metric, and the model it logged (`models:/<id>`), if any.
    pub async fn run_facts(
        &self,
        run_id: &str,
    ) -> anyhow::Result<(std::collections::BTreeMap<String, f64>, Option<String>)> {
        let v = self.get_json("runs/get", &[("run_id", run_id)]).await?;
        let metrics = v["run"]["data"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["key"].as_str()?.to_string(), m["value"].as_f64()?)))
            .collect();
        let model = v["run"]["outputs"]["model_outputs"]
            .as_array()
            .and_then(|models| models.last())
            .and_then(|m| m["model_id"].as_str())
            .map(|id| format!("models:/{id}"));
        Ok((metrics, model))
    }

    /// Gives a run `status` (ending it now) unless it has it already; the status it had, when
    /// it had another.
    pub async fn end_as(&self, run_id: &str, status: &str) -> anyhow::Result<Option<String>> {
        let v = self.get_json("runs/get", &[("run_id", run_id)]).await?;
        let was = v["run"]["info"]["status"].as_str().unwrap_or_default();
        if was == status {
            return Ok(None);
        }
        let was = was.to_string();
        let url = format!("{}/api/2.0/mlflow/runs/update", self.base);
        let end_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = serde_json::json!({"run_id": run_id, "status": status, "end_time": end_time});
        self.send(&format!("ending run {run_id}"), || {
            self.http
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(30))
        })
        .await?;
        Ok(Some(was))
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let r = self
            .send(path, || {
                self.http
                    .get(&url)
                    .query(query)
                    .timeout(Duration::from_secs(60))
            })
            .await?;
        Ok(r.json().await?)
    }

    /// Whether a run's artifacts go through the tracking server's proxy (`mlflow-artifacts:`);
    /// otherwise they live in a store MLflow's Python client reaches (s3://, a shared path…).
    pub async fn proxied(&self, run_id: &str) -> anyhow::Result<bool> {
        Ok(self.proxy_root(run_id).await?.is_some())
    }

    /// Notes a run's artifact root as MLflow told it elsewhere (the agent's create), so that
    /// no call asks for it again.
    pub fn knows_artifact_uri(&self, run_id: &str, artifact_uri: &str) {
        let root = self.proxy_url(artifact_uri);
        self.roots
            .lock()
            .expect("poisoned")
            .insert(run_id.into(), root);
    }

    /// The proxy's URL for an artifact root, when it is behind the proxy.
    fn proxy_url(&self, uri: &str) -> Option<String> {
        uri.strip_prefix("mlflow-artifacts:").map(|rest| {
            // mlflow-artifacts:/1/abc/artifacts or mlflow-artifacts://host/1/abc/artifacts
            let rest = rest.trim_start_matches("//").trim_start_matches('/');
            let rest = if uri.starts_with("mlflow-artifacts://") {
                rest.split_once('/').map_or("", |(_, r)| r)
            } else {
                rest
            };
            format!("{}/api/2.0/mlflow-artifacts/artifacts/{rest}", self.base)
        })
    }

    /// The URL under which a run's artifacts are served by the proxy, if they are.
    async fn proxy_root(&self, run_id: &str) -> anyhow::Result<Option<String>> {
        if let Some(r) = self.roots.lock().expect("poisoned").get(run_id) {
            return Ok(r.clone());
        }
        let v = self.get_json("runs/get", &[("run_id", run_id)]).await?;
        let uri = v["run"]["info"]["artifact_uri"]
            .as_str()
            .ok_or_else(|| anyhow!("run {run_id} has no artifact_uri"))?;
        self.knows_artifact_uri(run_id, uri);
        Ok(self.proxy_url(uri))
    }

    async fn root(&self, run_id: &str) -> anyhow::Result<String> {
        self.proxy_root(run_id).await?.ok_or_else(|| {
            anyhow!("run {run_id} does not store its artifacts behind the proxy; they go through MLflow's client")
        })
    }

    /// Streams one artifact to `dest`, retrying from the start on failure.
    pub async fn download(
        &self,
        run_id: &str,
        artifact_path: &str,
        dest: &Path,
    ) -> anyhow::Result<u64> {
        let url = format!(
            "{}/{}",
            self.root(run_id).await?,
            percent_encode(artifact_path, true)
        );
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let once = || async {
            match self.auth(self.http.get(&url)).send().await {
                Ok(r) if r.status().is_success() => {
                    let mut file = tokio::fs::File::create(dest)
                        .await
                        .map_err(|e| Failure::Final(e.into()))?;
                    let mut stream = r.bytes_stream();
                    let mut n = 0u64;
                    let copied: anyhow::Result<()> = async {
                        while let Some(chunk) = stream.try_next().await? {
                            n += chunk.len() as u64;
                            file.write_all(&chunk).await?;
                        }
                        file.flush().await?;
                        Ok(())
                    }
                    .await;
                    copied.map(|()| n).map_err(Failure::Again)
                }
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Err(Failure::Final(
                    anyhow!("artifact {artifact_path} of run {run_id} does not exist (404)"),
                )),
                Ok(r) => Err(Failure::Again(anyhow!(
                    "MLflow answered {} for artifact {artifact_path}",
                    r.status()
                ))),
                Err(e) => Err(Failure::Again(anyhow!("{e}"))),
            }
        };
        once.retry(crate::retry::mlflow_call())
            .when(|f| matches!(f, Failure::Again(_)))
            .await
            .map_err(|f| {
                f.into_error().context(format!(
                    "downloading artifact {artifact_path} of run {run_id} failed"
                ))
            })
    }

    /// Streams a local file to `artifact_path` in the run's artifacts.
    pub async fn upload(
        &self,
        run_id: &str,
        artifact_path: &str,
        src: &Path,
    ) -> anyhow::Result<()> {
        let url = format!(
            "{}/{}",
            self.root(run_id).await?,
            percent_encode(artifact_path, true)
        );
        let once = || async {
            let file = tokio::fs::File::open(src)
                .await
                .with_context(|| format!("cannot open {}", src.display()))
                .map_err(Failure::Final)?;
            let len = file
                .metadata()
                .await
                .map_err(|e| Failure::Final(e.into()))?
                .len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            match self
                .auth(self.http.put(&url))
                .header("Content-Length", len)
                .body(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) if r.status().is_client_error() => Err(Failure::Final(anyhow!(
                    "MLflow refused artifact {artifact_path}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ))),
                Ok(r) => Err(Failure::Again(anyhow!(
                    "MLflow answered {} for artifact {artifact_path}",
                    r.status()
                ))),
                Err(e) => Err(Failure::Again(anyhow!("{e}"))),
            }
        };
        once.retry(crate::retry::mlflow_call())
            .when(|f| matches!(f, Failure::Again(_)))
            .await
            .map_err(|f| {
                f.into_error().context(format!(
                    "uploading artifact {artifact_path} to run {run_id} failed"
                ))
            })
    }

    /// Every file below `path` in a run's artifacts, with sizes.
    pub async fn list_recursive(
        &self,
        run_id: &str,
        path: &str,
    ) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut dirs = vec![path.to_string()];
        while let Some(dir) = dirs.pop() {
            let v = self
                .get_json("artifacts/list", &[("run_id", run_id), ("path", &dir)])
                .await?;
            for f in v["files"].as_array().into_iter().flatten() {
                let p = f["path"].as_str().unwrap_or_default().to_string();
                if f["is_dir"].as_bool().unwrap_or(false) {
                    dirs.push(p);
                } else {
                    out.push((p, f["file_size"].as_u64().unwrap_or(0)));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Mlflow;

    #[test]
    fn an_artifact_root_told_by_the_create_is_not_asked_for_again() {
        let m = Mlflow::new("http://mlflow:5000/", None).unwrap();
        m.knows_artifact_uri("r1", "mlflow-artifacts:/1/r1/artifacts");
        m.knows_artifact_uri("r2", "mlflow-artifacts://mlflow:5000/2/r2/artifacts");
        m.knows_artifact_uri("r3", "s3://bucket/3/r3/artifacts");
        let roots = m.roots.lock().unwrap();
        let proxy = "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts";
        assert_eq!(
            roots["r1"].as_deref(),
            Some(&*format!("{proxy}/1/r1/artifacts"))
        );
        assert_eq!(
            roots["r2"].as_deref(),
            Some(&*format!("{proxy}/2/r2/artifacts"))
        );
        assert_eq!(roots["r3"], None);
    }
}
