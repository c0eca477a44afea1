//! The agent's client of the edge API's agent protocol, with retries on transient failures.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use backon::Retryable;
use concurrent_core::access::Route;
use concurrent_core::wire::{
    CompleteRequest, CompletionsRequest, CompletionsResponse, ErrorBody, HeartbeatRequest,
    HeartbeatResponse, InspectAnswer, Inspection, InspectionsRequest, InspectionsResponse,
    LeaseRef, LeaseRequest, LeaseResponse, Outcome, PinRequest, PinResponse,
};
use serde::{de::DeserializeOwned, Serialize};

/// How a call to the edge ended when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// 409: the lease is stale, cancelled or already completed. Final: drop the work.
    #[error("the edge refused: {0}")]
    Refused(String),
    /// 400, 401, 403, 404, 413, 422: the request itself is wrong; sending it again cannot help.
    #[error("{0}")]
    Permanent(String),
    /// The network, a 5xx or a 429, after the retries.
    #[error("{0}")]
    Unavailable(String),
    /// The answer does not decode.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl EdgeError {
    /// The same error again, for each of several calls it ended (a batch of completions).
    pub fn same(&self) -> EdgeError {
        match self {
            EdgeError::Refused(m) => EdgeError::Refused(m.clone()),
            EdgeError::Permanent(m) => EdgeError::Permanent(m.clone()),
            EdgeError::Unavailable(m) => EdgeError::Unavailable(m.clone()),
            EdgeError::Other(e) => EdgeError::Other(anyhow::anyhow!("{e:#}")),
        }
    }
}

#[derive(Clone)]
pub struct Edge {
    http: reqwest::Client,
    /// The edge's URL.
    base: String,
    cluster: String,
    token: String,
    agent: String,
}

impl Edge {
    pub fn new(base: &str, cluster: &str, token: String, agent: String) -> anyhow::Result<Edge> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Edge {
            http,
            base: base.trim_end_matches('/').to_string(),
            cluster: cluster.to_string(),
            token,
            agent,
        })
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// One call, classified: 409 is a refusal, other 4xx are final, the rest may pass later.
    async fn post_once<B: Serialize, R: DeserializeOwned>(
        &self,
        route: Route,
        body: &B,
        timeout: Duration,
    ) -> Result<R, EdgeError> {
        let path = route.path(&[&self.cluster]);
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| EdgeError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .with_context(|| format!("the edge's answer to {path} does not decode"))
                .map_err(EdgeError::Other);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or(text);
        Err(match status.as_u16() {
            409 => EdgeError::Refused(message),
            400 | 401 | 403 | 404 | 405 | 413 | 422 => {
                EdgeError::Permanent(format!("the edge answered {status} to {path}: {message}"))
            }
            _ => EdgeError::Unavailable(format!("{status}: {message}")),
        })
    }

    /// A call, retried with jittered exponential backoff while the edge is unavailable.
    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        route: Route,
        body: &B,
        timeout: Duration,
    ) -> Result<R, EdgeError> {
        let path = route.path(&[&self.cluster]);
        let path = path.as_str();
        (|| self.post_once(route, body, timeout))
            .retry(crate::retry::edge_call())
            .when(|e| matches!(e, EdgeError::Unavailable(_)))
            .notify(|e, wait| tracing::warn!(path, error = %e, retry_in_ms = wait.as_millis() as u64, "edge call failed; retrying"))
            .await
            .map_err(|e| match e {
                EdgeError::Unavailable(last) => EdgeError::Unavailable(format!(
                    "the edge at {} is unavailable for {path}: {last}",
                    self.base
                )),
                other => other,
            })
    }

    /// Leases up to `max` items, waiting up to `wait` for one.
    pub async fn lease(&self, max: u32, wait: Duration) -> Result<LeaseResponse, EdgeError> {
        let body = LeaseRequest {
            agent: self.agent.clone(),
            max,
            wait_ms: wait.as_millis() as u32,
        };
        self.post(Route::AgentLease, &body, wait + Duration::from_secs(15))
            .await
    }

    pub async fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        tails: BTreeMap<String, String>,
        runs: BTreeMap<String, String>,
    ) -> Result<HeartbeatResponse, EdgeError> {
        self.post(
            Route::AgentHeartbeat,
            &HeartbeatRequest {
                agent: self.agent.clone(),
                leases,
                tails,
                runs,
            },
            Duration::from_secs(20),
        )
        .await
    }

    /// Pins a git source of the lease's run to a commit; the run's pinned commit.
    pub async fn pin(&self, req: &PinRequest) -> Result<PinResponse, EdgeError> {
        self.post(Route::AgentPin, req, Duration::from_secs(30))
            .await
    }

    /// The cache entry of a step's key, if any.
    pub async fn cache_lookup(
        &self,
        key: &str,
    ) -> Result<Option<concurrent_core::cache::CacheEntry>, EdgeError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            entry: Option<concurrent_core::cache::CacheEntry>,
        }
        let answer: Answer = self
            .post(
                Route::AgentCacheLookup,
                &serde_json::json!({ "key": key }),
                Duration::from_secs(30),
            )
            .await?;
        Ok(answer.entry)
    }

    pub async fn complete(
        &self,
        item_id: &str,
        token: u64,
        outcome: Outcome,
        mlflow_run_id: Option<String>,
    ) -> Result<(), EdgeError> {
        let body = CompleteRequest {
            item_id: item_id.into(),
            token,
            outcome,
            mlflow_run_id,
            no_mlflow_run: false,
        };
        let _: bool = self
            .post(Route::AgentComplete, &body, Duration::from_secs(60))
            .await?;
        Ok(())
    }

    /// Reports several completions in one call; the edge answers for each (see `report`).
    pub async fn completions(
        &self,
        completions: Vec<CompleteRequest>,
    ) -> Result<CompletionsResponse, EdgeError> {
        self.post(
            Route::AgentCompletions,
            &CompletionsRequest { completions },
            Duration::from_secs(60),
        )
        .await
    }
}

impl Edge {
    /// Waits up to `wait` for project inspections to answer (once, no retries: the loop
    /// that calls it backs off).
    pub async fn inspections(&self, wait: Duration) -> Result<Vec<Inspection>, EdgeError> {
        let body = InspectionsRequest {
            agent: self.agent.clone(),
            wait_ms: wait.as_millis() as u32,
        };
        let answer: InspectionsResponse = self
            .post_once(
                Route::AgentInspections,
                &body,
                wait + Duration::from_secs(15),
            )
            .await?;
        Ok(answer.inspections)
    }

    /// What this agent found for an inspection.
    pub async fn answer_inspection(&self, answer: &InspectAnswer) -> Result<(), EdgeError> {
        let _: bool = self
            .post(Route::AgentInspectAnswer, answer, Duration::from_secs(15))
            .await?;
        Ok(())
    }
}

/// Reports an outcome with `report` until the edge accepts or refuses it: a finished step's
/// result is never dropped because the edge was away for a while. Gives up only when `stop`
/// fires (the lease was lost meanwhile, or the agent stops), or the request itself is wrong.
pub async fn complete_until_settled<F, Fut>(
    item_id: &str,
    stop: &tokio_util::sync::CancellationToken,
    report: F,
) -> Result<(), EdgeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), EdgeError>>,
{
    let report = report
        .retry(crate::retry::report())
        .when(|e| matches!(e, EdgeError::Unavailable(_)))
        .notify(|e, wait| {
            tracing::warn!(
                item = item_id,
                retry_in_s = wait.as_secs(),
                "reporting the outcome failed; trying again: {e}"
            )
        });
    tokio::select! {
        settled = report => settled,
        _ = stop.cancelled() => Err(EdgeError::Refused("the lease ended while its outcome was being reported".into())),
    }
}

/// Checks that the edge URL looks like one, so a typo fails at start.
pub fn check_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--edge-url {url:?} must start with http:// or https://");
    }
    Ok(())
}
