//! `/api/v1/runs`: start, list, get, cancel.

use concurrent_core::run::{self, Event, Repair, StartError};
use concurrent_core::sign::{self, RunSeed};
use concurrent_core::wire::{DecideRequest, RunSummary, StartRun, MAX_DECISION_NOTE};
use worker::{Env, Request, Response};

use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::json_body;
use crate::objects::catalog::api::{CatalogClient, RunQuery};
use crate::objects::run::api::RunClient;
use crate::platform::{now_ms, random_id};
use crate::secrets::bootstrap_token;

/// The cluster of nodes that name none, when the request names none either.
pub const DEFAULT_CLUSTER: &str = "local";

/// `POST /api/v1/runs` — starts a run of a valid template version.
pub async fn handle_start(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: StartRun = json_body(&mut req).await?;
        // A retried request with the same Idempotency-Key lands on the same run.
        let key = req.headers().get("Idempotency-Key")?;
        let random = random_id();
        let seed = match &key {
            Some(key) if !key.is_empty() && key.len() <= 200 => RunSeed::Idempotent {
                caller: &ctx.user.name,
                key,
            },
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be 1-200 characters".into(),
                ))
            }
            None => RunSeed::Fresh(&random),
        };
        let id = sign::run_id(&bootstrap_token(&ctx.env)?, seed);
        start_run(&ctx.env, body, &ctx.user.name, id).await
    }
    .await;
    respond(result, 201)
}

/// Starts a run (from the API or a schedule). Starting the same id again returns that run when
/// the request is the same, and a 422 when it differs (an `Idempotency-Key` reused for another
/// request must not silently answer with the old run).
pub async fn start_run(
    env: &Env,
    body: StartRun,
    by: &str,
    id: String,
) -> Result<RunSummary, ApiError> {
    let request = sign::sha256_hex(&serde_json::to_string(&body)?);
    let tv = super::templates::load(env, &body.template, body.version).await?;
    let cluster = body.cluster.unwrap_or_else(|| DEFAULT_CLUSTER.into());
    if let Some(why) = concurrent_core::names::label_value_problem(&cluster) {
        return Err(ApiError::BadRequest(format!("cluster {cluster:?} {why}")));
    }
    let mut state = run::start(id.clone(), tv.template, tv.version, body.parameters, cluster, Some(by.to_string()), now_ms()).map_err(|e| match e {
        StartError::InvalidTemplate(problems) => ApiError::Invalid {
            message: format!(
                "template {:?} version {} has {} problem(s) and cannot run; fix them and save a new version",
                body.template,
                tv.version,
                problems.len()
            ),
            problems,
        },
        StartError::BadParameters(m) => ApiError::BadRequest(m),
    })?;
    state.request = Some(request);
    if let Some(exp) = &body.experiment_id {
        if let Some(why) = concurrent_core::refs::experiment_id_problem(exp) {
            return Err(ApiError::BadRequest(format!("experimentId {why}")));
        }
        crate::mlflow::Mlflow::from_env(env)?
            .check_experiment(exp)
            .await?;
    }
    state.experiment_id = body.experiment_id.clone();
    state.ignore_cache = body.ignore_cache;
    RunClient::of(env, &id)?.start(&state).await
}

/// `GET /api/v1/runs?template=&status=&limit=&before=` — newest first.
pub async fn handle_list(req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let q: RunQuery = req
            .query()
            .map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
        CatalogClient::of(&ctx.env)?.list_runs(&q).await
    }
    .await;
    respond(result, 200)
}

fn run_client(ctx: &Ctx) -> Result<(String, RunClient), ApiError> {
    let id = ctx.param("id").cloned().unwrap_or_default();
    // Ids the edge never issued are refused before any object is addressed: a read of an
    // invented id must not create a run object.
    if !sign::is_run_id(&bootstrap_token(&ctx.env)?, &id) {
        return Err(ApiError::NotFound(format!("run {id:?} does not exist")));
    }
    Ok((id.clone(), RunClient::of(&ctx.env, &id)?))
}

/// The run object's "no such run", naming the run.
fn named_missing(id: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::NotFound(_) => ApiError::NotFound(format!("run {id} does not exist")),
        e => e,
    }
}

/// `GET /api/v1/runs/:id` — every node, instance and attempt.
pub async fn handle_get(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let (id, run) = run_client(&ctx)?;
        run.get_response().await.map_err(|e| named_missing(&id, e))
    }
    .await;
    result.or_else(ApiError::into_response)
}

/// `GET /api/v1/runs/:id/overview` — the run without instances, each node's counts.
pub async fn handle_overview(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let (id, run) = run_client(&ctx)?;
        run.overview(&()).await.map_err(|e| named_missing(&id, e))
    }
    .await;
    respond(result, 200)
}

/// `GET /api/v1/runs/:id/instances?node=&state=&offset=&limit=` — a page of a node's instances.
pub async fn handle_instances(req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let q: concurrent_core::wire::InstancesQuery = req.query().map_err(|e| {
            ApiError::BadRequest(format!(
                "bad query: {e}; give node=<id>, and optionally state, offset, limit"
            ))
        })?;
        let (_, run) = run_client(&ctx)?;
        run.instances(&q).await
    }
    .await;
    respond(result, 200)
}

/// Applies one user event to a run; 409 with the reason when the run refuses it.
async fn user_event(ctx: &Ctx, what: &str, event: Event) -> Result<RunSummary, ApiError> {
    let (_, run) = run_client(ctx)?;
    let answers = run.events(&vec![event]).await?;
    match answers.into_iter().next().flatten() {
        Some(why) => Err(ApiError::Conflict(format!("cannot {what}: {why}"))),
        None => run.overview(&()).await.map(|o| o.run.summary()),
    }
}

/// `POST /api/v1/runs/:id/cancel`
pub async fn handle_cancel(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let reason = format!("cancelled by {}", ctx.user.name);
    respond(
        user_event(&ctx, "cancel", Event::Cancel { reason }).await,
        200,
    )
}

/// `POST /api/v1/runs/:id/retry` — failed and cancelled instances run again; earlier attempts stay.
pub async fn handle_retry(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let by = Some(ctx.user.name.clone());
    respond(
        user_event(
            &ctx,
            "retry",
            Event::Repair {
                repair: Repair::RetryFailed,
                by,
            },
        )
        .await,
        200,
    )
}

/// `POST /api/v1/runs/:id/rerun` `{"node": "<id>"}` — that node and everything downstream run again.
pub async fn handle_rerun(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        node: String,
    }
    let result = async {
        let body: Body = json_body(&mut req).await?;
        let by = Some(ctx.user.name.clone());
        user_event(
            &ctx,
            "rerun",
            Event::Repair {
                repair: Repair::RerunFrom { node: body.node },
                by,
            },
        )
        .await
    }
    .await;
    respond(result, 200)
}

/// `POST /api/v1/runs/:id/decide` `{"node", "approve", "note"?}` — approves or rejects a paused
/// approval node, as the caller.
pub async fn handle_decide(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: DecideRequest = json_body(&mut req).await?;
        if body.note.chars().count() > MAX_DECISION_NOTE {
            return Err(ApiError::BadRequest(format!(
                "note: is longer than {MAX_DECISION_NOTE} characters; keep the record short and link to details"
            )));
        }
        let verb = if body.approve { "approve" } else { "reject" };
        user_event(
            &ctx,
            verb,
            Event::Decided {
                node: body.node,
                approve: body.approve,
                by: ctx.user.name.clone(),
                note: body.note,
            },
        )
        .await
    }
    .await;
    respond(result, 200)
}
