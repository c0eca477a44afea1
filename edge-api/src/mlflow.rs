//! The edge's MLflow client: experiments, runs, tags and statuses over MLflow's REST API.
//!
//! Configuration: the var `MLFLOW_TRACKING_URI` (as the edge reaches MLflow) and the optional
//! secret `MLFLOW_TRACKING_TOKEN` (a bearer token for a hosted MLflow). Every failure is an
//! [`ApiError::Upstream`]: retryable, and the run object retries it from its alarm.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

use crate::error::ApiError;

pub struct Mlflow {
    base: String,
    token: Option<String>,
}

fn kv(pairs: &[(String, String)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

impl Mlflow {
    pub fn from_env(env: &Env) -> Result<Mlflow, ApiError> {
        let base = env
            .var("MLFLOW_TRACKING_URI")
            .map_err(|_| {
                ApiError::Internal(
                    "MLFLOW_TRACKING_URI is not configured (wrangler.toml [vars])".into(),
                )
            })?
            .to_string();
        let token = env
            .secret("MLFLOW_TRACKING_TOKEN")
            .ok()
            .map(|s| s.to_string());
        Ok(Mlflow {
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ApiError> {
        let headers = Headers::new();
        headers.set("Content-Type", "application/json")?;
        if let Some(t) = &self.token {
            headers.set("Authorization", &format!("Bearer {t}"))?;
        }
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(b) = &body {
            init.with_body(Some(b.to_string().into()));
        }
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let req = Request::new_with_init(&url, &init)?;
        let mut resp = Fetch::Request(req).send().await.map_err(|e| {
            ApiError::Upstream(format!(
                "MLflow at {} is unreachable ({path}): {e}",
                self.base
            ))
        })?;
        let status = resp.status_code();
        let text = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(ApiError::Upstream(format!(
                "MLflow answered {status} to {path}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text).map_err(|e| {
            ApiError::Upstream(format!("MLflow's answer to {path} does not decode: {e}"))
        })
    }

    /// The id of the experiment `name`, created when missing.
    pub async fn experiment_id(&self, name: &str) -> Result<String, ApiError> {
        let path = format!(
            "experiments/get-by-name?experiment_name={}",
            urlencode(name)
        );
        if let Ok(v) = self.send::<Value>(Method::Get, &path, None).await {
            if let Some(id) = v["experiment"]["experiment_id"].as_str() {
                return Ok(id.to_string());
            }
        }
        let created = self
            .send::<Value>(
                Method::Post,
                "experiments/create",
                Some(
                    json!({"name": name, "tags": [{"key": "concurrent.managed", "value": "true"}]}),
                ),
            )
            .await;
        match created {
            Ok(v) => v["experiment_id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::Upstream("experiments/create returned no id".into())),
            // Created concurrently by another run: read it again.
            Err(_) => {
                let v: Value = self.send(Method::Get, &path, None).await?;
                v["experiment"]["experiment_id"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ApiError::Upstream(format!(
                            "experiment {name:?} cannot be created or found"
                        ))
                    })
            }
        }
    }

    /// Creates a run with its tags and params; returns its id.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: u64,
        tags: &[(String, String)],
        params: &[(String, String)],
    ) -> Result<String, ApiError> {
        let mut all_tags = tags.to_vec();
        all_tags.push(("mlflow.runName".into(), run_name.into()));
        let v: Value = self
            .send(Method::Post, "runs/create", Some(json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": start_time, "tags": kv(&all_tags)})))
            .await?;
        let run_id = v["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| ApiError::Upstream("runs/create returned no run id".into()))?
            .to_string();
        // MLflow takes at most 100 params per batch.
        for chunk in params.chunks(100) {
            self.send::<Value>(
                Method::Post,
                "runs/log-batch",
                Some(json!({"run_id": run_id, "params": kv(chunk)})),
            )
            .await?;
        }
        Ok(run_id)
    }

    /// Sets a run's final (or current) status.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<u64>,
    ) -> Result<(), ApiError> {
        let mut body = json!({"run_id": run_id, "status": status});
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.send::<Value>(Method::Post, "runs/update", Some(body))
            .await
            .map(|_| ())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
