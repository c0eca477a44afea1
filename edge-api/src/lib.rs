//! Concurrent's edge API: a Cloudflare Worker that stores templates, runs DAG runs and hands
//! work to cluster agents.
//!
//! Where state lives (see README "Storage design"):
//! - template versions: immutable KV entries; their index and version counters: the [`Catalog`]
//!   Durable Object (one, off the hot path);
//! - a run: one [`RunObject`] per run (its state machine, in SQLite rows);
//! - work: one [`QueueObject`] per cluster (ready items and leases with fencing tokens).

// Layers, each importing only those below it: the request's way in (`router`, `routes/`),
// who is calling (`auth`, `cf_access`), the MLflow UI (`mlflow_proxy`), the Durable Objects
// (`objects/`, each with the `api` callers use), MLflow, and at the bottom the small helpers
// (`cache`, `user`, `secrets`, `alarm`, `webhook`, `http`, `error`, `platform`).
mod alarm;
mod auth;
mod cache;
mod cf_access;
mod error;
mod http;
mod mlflow;
mod mlflow_proxy;
mod objects;
mod platform;
mod router;
mod routes;
mod secrets;
mod user;
mod webhook;

pub use objects::catalog::Catalog;
pub use objects::queue::QueueObject;
pub use objects::run::RunObject;

use concurrent_core::access::{Role, API_PREFIX};
use worker::*;

use crate::error::ApiError;

#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    // Without a strong bootstrap token nothing is served, not even health: a deployment that
    // forgot its secret must not look alive.
    if let Err(e) = secrets::bootstrap_token(&env) {
        return e.into_response();
    }
    let path = req.path();
    if path == "/healthz" {
        return Response::ok("ok");
    }
    if path == "/login" {
        return auth::handle_login(req, &env)
            .await
            .or_else(ApiError::into_response);
    }
    if path == routes::triggers::HOOK_PATH && req.method() == Method::Post {
        // Authenticated by the delivery's signature, which MLflow makes with the secret the
        // edge gave it; no token reaches this path.
        return routes::triggers::handle_mlflow_hook(req, &env)
            .await
            .or_else(ApiError::into_response);
    }
    let ours = path == API_PREFIX || path.starts_with(&format!("{API_PREFIX}/"));
    let user = match auth::authenticate(&req, &env).await {
        Ok(user) => user,
        Err(e) if !ours && e.status() == 401 => return auth::login_page(e),
        Err(e) => return e.into_response(),
    };
    if !ours {
        // The UI: Concurrent's bundle under /concurrent/, everything else is MLflow's.
        if user.role == Role::Agent {
            return ApiError::Forbidden("agent and step tokens cannot open the UI".into())
                .into_response();
        }
        if path.starts_with("/concurrent/") {
            return env.assets("ASSETS")?.fetch_request(req).await;
        }
        return mlflow_proxy::forward(req, &env, &user)
            .await
            .or_else(ApiError::into_response);
    }
    let matched = match router::route(&req) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = auth::authorize(&user, &matched.permission) {
        return e.into_response();
    }
    router::dispatch(req, env, user, matched).await
}

/// The cron trigger (every minute, see wrangler.toml): fires the schedules that are due.
#[event(scheduled)]
pub async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    if let Err(e) = routes::schedules::fire_due(&env).await {
        console_error!("firing schedules failed: {}", e.detail());
    }
    if let Err(e) = routes::triggers::on_cron(&env).await {
        console_error!("firing triggers failed: {}", e.detail());
    }
}
