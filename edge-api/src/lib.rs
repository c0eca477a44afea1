//! Concurrent's edge API: a Cloudflare Worker that stores templates, runs DAG runs and hands
//! work to cluster agents.
//!
//! Where state lives (see README "Storage design"):
//! - template versions: immutable KV entries; their index and version counters: the [`Catalog`]
//!   Durable Object (one, off the hot path);
//! - a run: one [`RunObject`] per run (its state machine, in SQLite rows);
//! - work: one [`QueueObject`] per cluster (ready items and leases with fencing tokens).

mod agents;
mod auth;
mod catalog;
mod cf_access;
mod error;
mod http;
mod mlflow;
mod mlflow_proxy;
mod queue;
mod run_object;
mod runs;
mod schedules;
mod templates;
mod tokens;

pub use catalog::Catalog;
pub use queue::QueueObject;
pub use run_object::RunObject;

use worker::*;

use crate::error::ApiError;

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/healthz" {
        return Response::ok("ok");
    }
    if path == "/login" {
        return auth::handle_login(req, &env)
            .await
            .or_else(ApiError::into_response);
    }
    let ours = path.starts_with("/api/v1/");
    let user = match auth::authenticate(&req, &env).await {
        Ok(user) => user,
        Err(e) if !ours => return auth::login_page(e),
        Err(e) => return e.into_response(),
    };
    if !ours {
        // The UI: Concurrent's bundle under /concurrent/, everything else is MLflow's.
        if user.role == concurrent_core::access::Role::Agent {
            return ApiError::Forbidden("agent and step tokens cannot open the UI".into())
                .into_response();
        }
        if path.starts_with("/concurrent/") {
            return env.assets("ASSETS")?.fetch_request(req).await;
        }
        return mlflow_proxy::forward(req, &env)
            .await
            .or_else(ApiError::into_response);
    }
    if let Err(e) = auth::authorize(&user, req.method().as_ref(), &path) {
        return e.into_response();
    }
    Router::with_data(user)
        .get_async("/api/v1/templates", templates::handle_list)
        .post_async("/api/v1/templates/validate", templates::handle_validate)
        .get_async("/api/v1/templates/:name", templates::handle_get)
        .put_async("/api/v1/templates/:name", templates::handle_save)
        .delete_async("/api/v1/templates/:name", templates::handle_delete)
        .get_async(
            "/api/v1/templates/:name/versions",
            templates::handle_versions,
        )
        .get_async(
            "/api/v1/templates/:name/versions/:version",
            templates::handle_get,
        )
        .get_async("/api/v1/runs", runs::handle_list)
        .post_async("/api/v1/runs", runs::handle_start)
        .get_async("/api/v1/runs/:id", runs::handle_get)
        .post_async("/api/v1/runs/:id/cancel", runs::handle_cancel)
        .post_async("/api/v1/runs/:id/retry", runs::handle_retry)
        .post_async("/api/v1/runs/:id/rerun", runs::handle_rerun)
        .get_async("/api/v1/schedules", schedules::handle_list)
        .post_async("/api/v1/schedules", schedules::handle_create)
        .delete_async("/api/v1/schedules/:name", schedules::handle_delete)
        .get_async("/api/v1/tokens", tokens::handle_list)
        .post_async("/api/v1/tokens", tokens::handle_create)
        .delete_async("/api/v1/tokens/:name", tokens::handle_delete)
        .post_async("/api/v1/agents/:cluster/lease", agents::handle_lease)
        .post_async(
            "/api/v1/agents/:cluster/heartbeat",
            agents::handle_heartbeat,
        )
        .post_async("/api/v1/agents/:cluster/complete", agents::handle_complete)
        .or_else_any_method("/api/v1/*rest", |req, _| {
            ApiError::NotFound(format!("no API route {} {}", req.method(), req.path()))
                .into_response()
        })
        .run(req, env)
        .await
}

/// The cron trigger (every minute, see wrangler.toml): fires the schedules that are due.
#[event(scheduled)]
pub async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    if let Err(e) = schedules::fire_due(&env).await {
        console_error!("firing schedules failed: {}", e.body().error.message);
    }
}
