//! `/api/v1/agents/:cluster/...`: the agent protocol, forwarded to the cluster's queue object.

use concurrent_core::wire::{CompleteRequest, HeartbeatRequest, LeaseRequest, PinRequest};
use worker::{Request, Response};

use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::json_body;
use crate::objects::queue::api::QueueClient;

/// The route's `:cluster`, once it is a valid cluster name.
pub(crate) fn cluster(ctx: &Ctx) -> Result<String, ApiError> {
    let cluster = ctx.param("cluster").cloned().unwrap_or_default();
    if let Some(why) = concurrent_core::names::label_value_problem(&cluster) {
        return Err(ApiError::BadRequest(format!(
            "cluster name {cluster:?} {why}"
        )));
    }
    Ok(cluster)
}

/// The queue of the route's cluster.
pub(crate) fn queue(ctx: &Ctx) -> Result<QueueClient, ApiError> {
    QueueClient::of(&ctx.env, &cluster(ctx)?)
}

/// `POST .../lease` — long-polls up to `waitMs` for work.
pub async fn handle_lease(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: LeaseRequest = json_body(&mut req).await?;
        if ctx.user.lease.is_some() {
            return Err(ApiError::Forbidden("a step token cannot lease work".into()));
        }
        queue(&ctx)?.lease_response(&body).await
    }
    .await;
    result.or_else(ApiError::into_response)
}

/// `POST .../heartbeat` — extends leases; answers which were cancelled or lost.
pub async fn handle_heartbeat(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: HeartbeatRequest = json_body(&mut req).await?;
        for l in &body.leases {
            ctx.user.check_lease(&l.item_id, l.token)?;
        }
        queue(&ctx)?.heartbeat(&body).await
    }
    .await;
    respond(result, 200)
}

/// `POST .../complete` — 409 when the lease token is stale.
pub async fn handle_complete(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: CompleteRequest = json_body(&mut req).await?;
        ctx.user.check_lease(&body.item_id, body.token)?;
        queue(&ctx)?.complete(&body).await
    }
    .await;
    respond(result, 200)
}

/// `POST .../completions` — up to 100 completions; one answer each, in order.
pub async fn handle_completions(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: concurrent_core::wire::CompletionsRequest = json_body(&mut req).await?;
        if body.completions.len() > concurrent_core::wire::MAX_COMPLETIONS {
            return Err(ApiError::BadRequest(format!(
                "{} completions in one call; at most {} are allowed",
                body.completions.len(),
                concurrent_core::wire::MAX_COMPLETIONS
            )));
        }
        for c in &body.completions {
            ctx.user.check_lease(&c.item_id, c.token)?;
        }
        queue(&ctx)?.completions(&body).await
    }
    .await;
    respond(result, 200)
}

/// `POST .../pin` — a step's git commit for its source; answers the run's pin.
pub async fn handle_pin(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: PinRequest = json_body(&mut req).await?;
        ctx.user.check_lease(&body.item_id, body.token)?;
        if body.commit.len() < 7
            || body.commit.len() > 64
            || !body.commit.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ApiError::BadRequest(format!(
                "commit {:?} is not a git commit id",
                body.commit
            )));
        }
        queue(&ctx)?.pin(&body).await
    }
    .await;
    respond(result, 200)
}

/// `POST .../cache` `{"key"}` — the cache entry a step's key names, if any: the step checks its
/// age and that its artifacts still exist before it reuses them.
pub async fn handle_cache_lookup(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lookup {
        key: String,
    }
    let result = async {
        let body: Lookup = json_body(&mut req).await?;
        let hex = body.key.strip_prefix("v1-").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::BadRequest(format!(
                "{:?} is not a cache key (v1-<64 hex digits>)",
                body.key
            )));
        }
        let entry = crate::cache::read(&ctx.env, &body.key).await?;
        Ok(serde_json::json!({ "entry": entry }))
    }
    .await;
    respond(result, 200)
}
