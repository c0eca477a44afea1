//! The edge's MLflow client: experiments, runs, tags and statuses over MLflow's REST API.
//!
//! Configuration: the var `MLFLOW_TRACKING_URI` (as the edge reaches MLflow) and the optional
//! secret `MLFLOW_TRACKING_TOKEN` (a bearer token for a hosted MLflow). Failures are
//! [`MlflowError`]s: transient ones the run object retries with backoff, refusals end what the
//! call was for.

use concurrent_core::names::percent_encode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

use crate::error::ApiError;

/// How long an experiment's id is taken from memory instead of asked for again: runs of one
/// template started together (a schedule, a burst) need one lookup, not one each. Short,
/// because an experiment renamed away in MLflow keeps receiving runs for that long.
const EXPERIMENT_MEMORY_MS: u64 = 10_000;

thread_local! {
    /// Experiment ids by (MLflow's URL, experiment name), with when they were looked up.
    static EXPERIMENTS: std::cell::RefCell<std::collections::HashMap<(String, String), (String, u64)>> =
        Default::default();
}

pub struct Mlflow {
    base: String,
    token: Option<String>,
}

/// How an MLflow call failed.
#[derive(Debug)]
pub enum MlflowError {
    /// Unreachable, 5xx, 429, or an answer that does not decode: trying later may work.
    Transient(String),
    /// MLflow answered 4xx: trying again gets the same answer.
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

impl MlflowError {
    /// For the run's record and the caller: the reason, without MLflow's address.
    pub fn reason(&self) -> String {
        match self {
            MlflowError::Transient(why) => why.clone(),
            MlflowError::Refused {
                status,
                code,
                message,
            } => format!("MLflow answered {status} {code}: {message}"),
        }
    }
}

impl From<worker::Error> for MlflowError {
    fn from(e: worker::Error) -> Self {
        MlflowError::Transient(format!("the request could not be made: {e}"))
    }
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
    ) -> Result<T, MlflowError> {
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
        let call = path.split('?').next().unwrap_or(path);
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let req = Request::new_with_init(&url, &init)?;
        let resp = Fetch::Request(req).send().await.map_err(|e| {
            worker::console_warn!("MLflow at {} is unreachable ({call}): {e}", self.base);
            MlflowError::Transient(format!("MLflow is unreachable ({call}): {e}"))
        })?;
        let status = resp.status_code();
        let text = crate::http::response_text(resp).await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = parsed["error_code"].as_str().unwrap_or("").to_string();
            let message = parsed["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(300).collect());
            let message: String = message.chars().take(500).collect();
            return Err(if status >= 500 || status == 429 || status == 408 {
                MlflowError::Transient(format!("MLflow answered {status} to {call}: {message}"))
            } else {
                MlflowError::Refused {
                    status,
                    code,
                    message,
                }
            });
        }
        serde_json::from_str(&text).map_err(|e| {
            MlflowError::Transient(format!("MLflow's answer to {call} does not decode: {e}"))
        })
    }

    /// Checks that the experiment a caller chose exists and is not deleted.
    pub async fn check_experiment(&self, id: &str) -> Result<(), ApiError> {
        let path = format!(
            "experiments/get?experiment_id={}",
            percent_encode(id, false)
        );
        match self.send::<Value>(Method::Get, &path, None).await {
            Ok(v) if v["experiment"]["lifecycle_stage"] == "deleted" => Err(ApiError::Unprocessable(format!(
                "MLflow experiment {id} is deleted; restore it or choose another experiment"
            ))),
            Ok(_) => Ok(()),
            Err(MlflowError::Refused { status, code, .. })
                if status == 404 || code == "RESOURCE_DOES_NOT_EXIST" || code == "INVALID_PARAMETER_VALUE" =>
            {
                Err(ApiError::Unprocessable(format!(
                    "MLflow experiment {id} does not exist in the MLflow server this edge writes to \
                     (its MLFLOW_TRACKING_URI); check the experiment id, or leave experimentId out"
                )))
            }
            Err(e) => Err(ApiError::Upstream(e.reason())),
        }
    }

    /// The id of the experiment `name` and whether it came from memory (looked up in the last
    /// few seconds, so MLflow may have deleted it since: see [`Mlflow::forget_experiment`]).
    pub async fn experiment_id_remembered(
        &self,
        name: &str,
    ) -> Result<(String, bool), MlflowError> {
        let key = (self.base.clone(), name.to_string());
        let now = crate::platform::now_ms();
        let known = EXPERIMENTS.with(|m| {
            m.borrow()
                .get(&key)
                .filter(|(_, at)| now.saturating_sub(*at) < EXPERIMENT_MEMORY_MS)
                .map(|(id, _)| id.clone())
        });
        if let Some(id) = known {
            return Ok((id, true));
        }
        let id = self.experiment_id(name).await?;
        EXPERIMENTS.with(|m| m.borrow_mut().insert(key, (id.clone(), now)));
        Ok((id, false))
    }

    /// Drops what [`Mlflow::experiment_id_remembered`] remembers of `name`.
    pub fn forget_experiment(&self, name: &str) {
        EXPERIMENTS.with(|m| {
            m.borrow_mut()
                .remove(&(self.base.clone(), name.to_string()))
        });
    }

    /// The id of the experiment `name`, created when missing.
    pub async fn experiment_id(&self, name: &str) -> Result<String, MlflowError> {
        let path = format!(
            "experiments/get-by-name?experiment_name={}",
            percent_encode(name, false)
        );
        let id_of = |v: &Value| {
            v["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_string)
        };
        match self.send::<Value>(Method::Get, &path, None).await {
            Ok(v) => {
                if let Some(id) = id_of(&v) {
                    return Ok(id);
                }
            }
            Err(MlflowError::Refused { status: 404, .. }) => {}
            Err(MlflowError::Refused { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => {}
            Err(e) => return Err(e),
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
                .ok_or_else(|| MlflowError::Transient("experiments/create returned no id".into())),
            // Created concurrently by another run: read it again.
            Err(MlflowError::Refused { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => {
                let v: Value = self.send(Method::Get, &path, None).await?;
                id_of(&v).ok_or_else(|| {
                    MlflowError::Transient(format!("experiment {name:?} cannot be found"))
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The run tagged `concurrent.key = key` in the experiment, if one exists.
    pub async fn find_run(
        &self,
        experiment_id: &str,
        key: &str,
    ) -> Result<Option<String>, MlflowError> {
        let v: Value = self
            .send(
                Method::Post,
                "runs/search",
                Some(json!({
                    "experiment_ids": [experiment_id],
                    "filter": format!("tags.`concurrent.key` = '{}'", key.replace('\'', "")),
                    "run_view_type": "ALL",
                    "max_results": 1,
                })),
            )
            .await?;
        Ok(v["runs"][0]["info"]["run_id"].as_str().map(str::to_string))
    }

    /// The newest version of a registered model, if it has any.
    pub async fn latest_version(&self, model: &str) -> Result<Option<String>, MlflowError> {
        let v: Value = self
            .send(
                Method::Post,
                "model-versions/search",
                Some(json!({
                    "filter": format!("name = '{}'", model.replace('\'', "")),
                    "order_by": ["version_number DESC"],
                    "max_results": 1,
                })),
            )
            .await?;
        Ok(v["model_versions"][0]["version"]
            .as_str()
            .map(str::to_string))
    }

    /// The version `model@alias` points at; `None` when the alias (or the model) is not set.
    pub async fn alias_version(
        &self,
        model: &str,
        alias: &str,
    ) -> Result<Option<String>, MlflowError> {
        let path = format!(
            "registered-models/alias?name={}&alias={}",
            percent_encode(model, false),
            percent_encode(alias, false)
        );
        match self.send::<Value>(Method::Get, &path, None).await {
            Ok(v) => Ok(v["model_version"]["version"].as_str().map(str::to_string)),
            Err(MlflowError::Refused { status: 404, .. }) => Ok(None),
            Err(MlflowError::Refused { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes sure MLflow sends the registry's model-version and alias events to `url`, signed
    /// with `secret` (one webhook per URL: an existing one is updated to the secret).
    pub async fn ensure_webhook(&self, url: &str, secret: &str) -> Result<(), MlflowError> {
        // The REST API takes the protobuf enum names (the deliveries carry lower case).
        let events = json!([
            {"entity": "MODEL_VERSION", "action": "CREATED"},
            {"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"}
        ]);
        let listed: Value = self
            .send(Method::Get, "webhooks?max_results=100", None)
            .await?;
        let existing = listed["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["url"] == url)
            .and_then(|w| w["webhook_id"].as_str().map(str::to_string));
        let body = json!({"name": "concurrent-triggers", "url": url, "events": events, "secret": secret, "status": "ACTIVE"});
        if let Some(id) = existing {
            let path = format!("webhooks/{id}");
            // It fails when MLflow cannot read the old secret (its encryption key changed): a
            // new webhook is made instead.
            if self
                .send::<Value>(Method::Patch, &path, Some(body.clone()))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        self.send::<Value>(Method::Post, "webhooks", Some(body))
            .await?;
        Ok(())
    }

    /// A run's status (RUNNING, FINISHED, FAILED, KILLED…).
    pub async fn run_status(&self, run_id: &str) -> Result<String, MlflowError> {
        let path = format!("runs/get?run_id={}", percent_encode(run_id, false));
        let v: Value = self.send(Method::Get, &path, None).await?;
        Ok(v["run"]["info"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Creates a run with its tags (which carry `concurrent.key = key`) and params; returns its
    /// id. With `maybe_exists` (an earlier create of this key may have reached MLflow), the run
    /// is looked up first, so a create whose answer was lost is never made twice.
    pub async fn create_run(
        &self,
        key: &str,
        maybe_exists: bool,
        experiment_id: &str,
        run_name: &str,
        start_time: u64,
        tags: &[(String, String)],
        params: &[(String, String)],
    ) -> Result<String, MlflowError> {
        let found = if maybe_exists {
            self.find_run(experiment_id, key).await?
        } else {
            None
        };
        let run_id = match found {
            Some(id) => id,
            None => {
                let mut all_tags = tags.to_vec();
                all_tags.push(("mlflow.runName".into(), run_name.into()));
                let v: Value = self
                    .send(Method::Post, "runs/create", Some(json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": start_time, "tags": kv(&all_tags)})))
                    .await?;
                v["run"]["info"]["run_id"]
                    .as_str()
                    .ok_or_else(|| MlflowError::Transient("runs/create returned no run id".into()))?
                    .to_string()
            }
        };
        // MLflow takes at most 100 params per batch; logging the same value again is allowed,
        // so a found run gets them too.
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

    /// Registers a model version of `name` from `source` (the registered model is made if it
    /// is new), then points `alias` at it; the version. A version tagged `concurrent.key` =
    /// `key` is taken instead of making another: a registration whose answer was lost (an
    /// edge restart) is not made twice.
    #[allow(clippy::too_many_arguments)]
    pub async fn register_model(
        &self,
        name: &str,
        key: &str,
        source: &str,
        run_id: &str,
        model_id: Option<&str>,
        tags: &[(String, String)],
        alias: Option<&str>,
    ) -> Result<String, MlflowError> {
        match self
            .send::<Value>(
                Method::Post,
                "registered-models/create",
                Some(json!({"name": name})),
            )
            .await
        {
            Ok(_) => {}
            Err(MlflowError::Refused { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => {}
            Err(e) => return Err(e),
        }
        let filter = format!(
            "name = '{}' and tags.`concurrent.key` = '{}'",
            name.replace('\'', "\\'"),
            key.replace('\'', "")
        );
        let found: Value = self
            .send(
                Method::Get,
                &format!(
                    "model-versions/search?filter={}&max_results=1",
                    percent_encode(&filter, false)
                ),
                None,
            )
            .await?;
        let version = match found["model_versions"][0]["version"].as_str() {
            Some(v) => v.to_string(),
            None => {
                let mut body =
                    json!({"name": name, "source": source, "run_id": run_id, "tags": kv(tags)});
                if let Some(m) = model_id {
                    body["model_id"] = json!(m);
                }
                let v: Value = self
                    .send(Method::Post, "model-versions/create", Some(body))
                    .await?;
                v["model_version"]["version"]
                    .as_str()
                    .ok_or_else(|| {
                        MlflowError::Transient("model-versions/create returned no version".into())
                    })?
                    .to_string()
            }
        };
        if let Some(alias) = alias {
            self.send::<Value>(
                Method::Post,
                "registered-models/alias",
                Some(json!({"name": name, "alias": alias, "version": version})),
            )
            .await?;
        }
        Ok(version)
    }

    /// Sets a run's final (or current) status.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: Option<u64>,
    ) -> Result<(), MlflowError> {
        let mut body = json!({"run_id": run_id, "status": status});
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.send::<Value>(Method::Post, "runs/update", Some(body))
            .await
            .map(|_| ())
    }

    /// Logs tags and metrics on a run (MLflow takes at most 100 tags and 1,000 metrics a
    /// call; what a run logs here is far less).
    pub async fn log_batch(
        &self,
        run_id: &str,
        tags: &[(String, String)],
        metrics: &[(String, f64)],
        now: u64,
    ) -> Result<(), MlflowError> {
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
            .collect();
        self.send::<Value>(
            Method::Post,
            "runs/log-batch",
            Some(json!({"run_id": run_id, "tags": kv(tags), "metrics": metrics})),
        )
        .await
        .map(|_| ())
    }

    /// Writes `text` as the artifact `path` of a run whose artifacts the tracking server
    /// serves (`mlflow-artifacts:`); false for a run in another store (it is left without).
    pub async fn put_artifact(
        &self,
        run_id: &str,
        path: &str,
        text: &str,
    ) -> Result<bool, MlflowError> {
        let v: Value = self
            .send(Method::Get, &format!("runs/get?run_id={run_id}"), None)
            .await?;
        let uri = v["run"]["info"]["artifact_uri"]
            .as_str()
            .unwrap_or_default();
        let Some(rest) = uri.strip_prefix("mlflow-artifacts:") else {
            return Ok(false);
        };
        // mlflow-artifacts:/1/abc/artifacts or mlflow-artifacts://host/1/abc/artifacts
        let rest = rest.trim_start_matches("//").trim_start_matches('/');
        let rest = if uri.starts_with("mlflow-artifacts://") {
            rest.split_once('/').map_or("", |(_, r)| r)
        } else {
            rest
        };
        let headers = Headers::new();
        if let Some(t) = &self.token {
            headers.set("Authorization", &format!("Bearer {t}"))?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Put)
            .with_headers(headers)
            .with_body(Some(text.to_string().into()));
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{rest}/{}",
            self.base,
            percent_encode(path, true)
        );
        let req = Request::new_with_init(&url, &init)?;
        let resp = Fetch::Request(req).send().await.map_err(|e| {
            MlflowError::Transient(format!("MLflow is unreachable (artifact upload): {e}"))
        })?;
        match resp.status_code() {
            200..=299 => Ok(true),
            s if s >= 500 => Err(MlflowError::Transient(format!(
                "MLflow answered {s} to an artifact upload"
            ))),
            s => Err(MlflowError::Refused {
                status: s,
                code: String::new(),
                message: format!("MLflow refused the artifact {path} ({s})"),
            }),
        }
    }
}
