//! `/api/v1/triggers`, MLflow's webhook deliveries (`POST /hooks/mlflow`, authenticated by their
//! signature), and the cron's part: polling the registry and starting the runs of events.
//!
//! Every event goes through the catalog, which keeps it once per trigger and key until its run
//! has started; each run's id comes from the trigger and the event's key. So a webhook delivered
//! twice, or seen by both the webhook and a poll, starts one run.

use concurrent_core::sign::{self, RunSeed};
use concurrent_core::trigger::{self, Event, NewTrigger, On, Trigger, MIN_POLL_SECONDS};
use concurrent_core::wire::StartRun;
use worker::{Env, Request, Response};

use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::{body_text, json_body};
use crate::mlflow::Mlflow;
use crate::objects::catalog::api::{CatalogClient, Pausing, TriggerOutcome, TriggerPoll};
use crate::platform::now_ms;

/// Where MLflow delivers its webhooks, below the edge's origin.
pub const HOOK_PATH: &str = "/hooks/mlflow";

/// The secret MLflow signs its deliveries with: derived from the deployment's secret, so it is
/// never stored and the same on every edge instance.
fn webhook_secret(env: &Env) -> Result<String, ApiError> {
    Ok(sign::mac_hex(
        &crate::secrets::bootstrap_token(env)?,
        "mlflow-webhook",
    ))
}

/// `POST /api/v1/triggers` — admins. The template must exist; a registry trigger has MLflow
/// send its events here (and polls as well when asked, or when MLflow cannot send webhooks).
pub async fn handle_create(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let origin = req.url().map(|u| u.origin().ascii_serialization());
    let result = async {
        let spec: NewTrigger = json_body(&mut req).await?;
        let problems = trigger::problems(&spec);
        if !problems.is_empty() {
            return Err(ApiError::BadRequest(problems.join("; ")));
        }
        super::templates::load(&ctx.env, &spec.template, None).await?;
        if let On::RunSucceeded { template } = &spec.on {
            super::templates::load(&ctx.env, template, None)
                .await
                .map_err(|e| {
                    ApiError::BadRequest(format!("on.template: {}", e.body().error.message))
                })?;
        }
        let mut t = Trigger::new(spec, now_ms());
        if t.spec.on.watches_registry() {
            let mlflow = Mlflow::from_env(&ctx.env)?;
            let hook = format!("{}{HOOK_PATH}", public_origin(&ctx.env, origin?));
            let webhook = mlflow
                .ensure_webhook(&hook, &webhook_secret(&ctx.env)?)
                .await;
            t.delivery = Some(match (&webhook, t.spec.poll_seconds) {
                (Ok(()), None) => format!("MLflow webhook to {hook}"),
                (Ok(()), Some(s)) => format!("MLflow webhook to {hook}, and polling every {s} s"),
                (Err(e), _) => {
                    let every = *t.spec.poll_seconds.get_or_insert(MIN_POLL_SECONDS);
                    format!(
                        "polling every {every} s: MLflow did not take a webhook to {hook} ({})",
                        e.reason()
                    )
                }
            });
            // What the registry holds now is the baseline: a poll fires only for what follows.
            t.seen = look(&mlflow, &t.spec.on).await.ok().flatten();
            t.polled_at = Some(now_ms());
        }
        CatalogClient::of(&ctx.env)?.create_trigger(&t).await
    }
    .await;
    respond(result, 201)
}

/// The edge's address as MLflow reaches it: `PUBLIC_URL` when set (behind a proxy), else the
/// origin the admin called.
fn public_origin(env: &Env, called: String) -> String {
    env.var("PUBLIC_URL")
        .map(|v| v.to_string().trim_end_matches('/').to_string())
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(called)
}

/// The registry's current version for a trigger: the newest version, or the alias's.
async fn look(mlflow: &Mlflow, on: &On) -> Result<Option<String>, ApiError> {
    let found = match on {
        On::ModelVersionCreated { model } => mlflow.latest_version(model).await,
        On::ModelAliasSet { model, alias } => mlflow.alias_version(model, alias).await,
        On::RunSucceeded { .. } => Ok(None),
    };
    found.map_err(|e| ApiError::Upstream(e.reason()))
}

/// `GET /api/v1/triggers`
pub async fn handle_list(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result: Result<Vec<Trigger>, _> =
        async { CatalogClient::of(&ctx.env)?.triggers(&()).await }.await;
    respond(result, 200)
}

/// `DELETE /api/v1/triggers/:name`
pub async fn handle_delete(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let name = ctx.param("name").cloned().unwrap_or_default();
    let result: Result<bool, _> =
        async { CatalogClient::of(&ctx.env)?.delete_trigger(&name).await }.await;
    match result {
        Ok(_) => Ok(Response::empty()?.with_status(204)),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/triggers/:name/pause` and `/resume`
pub async fn handle_pause(_req: Request, ctx: Ctx, paused: bool) -> worker::Result<Response> {
    let name = ctx.param("name").cloned().unwrap_or_default();
    let result = async {
        CatalogClient::of(&ctx.env)?
            .pause_trigger(&Pausing {
                name,
                paused,
                now: now_ms(),
            })
            .await
    }
    .await;
    respond(result, 200)
}

/// `POST /hooks/mlflow` — a delivery from MLflow's webhooks, checked against its signature
/// (no other credential reaches this path). Its events are kept, then their runs started.
pub async fn handle_mlflow_hook(mut req: Request, env: &Env) -> Result<Response, ApiError> {
    let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
    let (id, at, signature) = (
        header("X-MLflow-Delivery-Id"),
        header("X-MLflow-Timestamp"),
        header("X-MLflow-Signature"),
    );
    let payload = body_text(&mut req).await?;
    trigger::verify_delivery(
        &webhook_secret(env)?,
        &id,
        &at,
        &payload,
        &signature,
        now_ms() / 1000,
    )
    .map_err(|why| {
        ApiError::Unauthorized(format!("MLflow webhook delivery {id:?} refused: {why}"))
    })?;
    let body: serde_json::Value = serde_json::from_str(&payload)
        .map_err(|e| ApiError::BadRequest(format!("the delivery is not JSON: {e}")))?;
    let kept = match Event::from_mlflow(&body) {
        Some(event) => CatalogClient::of(env)?.record_event(&event).await?,
        None => 0,
    };
    if kept > 0 {
        start_pending(env).await?;
    }
    Ok(Response::from_json(&serde_json::json!({"kept": kept}))?)
}

/// The cron's part: poll the registry for the triggers that poll, then start the runs of every
/// event kept (a run that succeeded is kept by the catalog as it is recorded).
pub async fn on_cron(env: &Env) -> Result<(), ApiError> {
    let catalog = CatalogClient::of(env)?;
    let now = now_ms();
    let polling: Vec<Trigger> = catalog
        .triggers(&())
        .await?
        .into_iter()
        .filter(|t| t.poll_due(now))
        .collect();
    if !polling.is_empty() {
        let mlflow = Mlflow::from_env(env)?;
        for t in polling {
            let (seen, error) = match look(&mlflow, &t.spec.on).await {
                Ok(v) => (v, None),
                Err(e) => (
                    t.seen.clone(),
                    Some(format!(
                        "polling the registry failed: {}",
                        e.body().error.message
                    )),
                ),
            };
            if let Some(event) = t.polled(seen.as_deref()) {
                catalog.record_event(&event).await?;
            }
            catalog
                .record_poll(&TriggerPoll {
                    name: t.spec.name.clone(),
                    at: now,
                    seen,
                    error,
                })
                .await?;
        }
    }
    start_pending(env).await
}

/// Starts a run for each event kept and not yet started; records each outcome on its trigger.
async fn start_pending(env: &Env) -> Result<(), ApiError> {
    let catalog = CatalogClient::of(env)?;
    let secret = crate::secrets::bootstrap_token(env)?;
    for (t, event) in catalog.pending_events(&()).await? {
        let key = event.key();
        let body = StartRun {
            template: t.spec.template.clone(),
            version: None,
            parameters: trigger::parameters(&t.spec, &event),
            cluster: t.spec.cluster.clone(),
            experiment_id: None,
            ignore_cache: false,
        };
        let id = sign::run_id(
            &secret,
            RunSeed::TriggerEvent {
                trigger: &t.spec.name,
                event: &key,
            },
        );
        let by = format!("trigger {} ({key})", t.spec.name);
        let result = match super::runs::start_run(env, body, &by, id).await {
            Ok(run) => Ok(run.id),
            Err(e) => {
                worker::console_error!(
                    "trigger {}: starting a run of {} for {key} failed: {}",
                    t.spec.name,
                    t.spec.template,
                    e.detail()
                );
                Err(e.body().error.message)
            }
        };
        catalog
            .record_trigger(&TriggerOutcome {
                name: t.spec.name.clone(),
                key,
                result,
            })
            .await?;
    }
    Ok(())
}
