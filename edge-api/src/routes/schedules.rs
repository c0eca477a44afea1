//! `/api/v1/schedules` and the cron trigger that fires them.

use concurrent_core::schedule::{NewSchedule, Schedule};
use concurrent_core::sign::{self, RunSeed};
use concurrent_core::wire::StartRun;
use worker::{Env, Request, Response};

use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::json_body;
use crate::objects::catalog::api::{CatalogClient, Pausing, TickOutcome};
use crate::platform::now_ms;

/// `POST /api/v1/schedules` — the cron is checked (it must fire), the template must exist.
pub async fn handle_create(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let spec: NewSchedule = json_body(&mut req).await?;
        if concurrent_core::names::label_value_problem(&spec.name).is_some() {
            return Err(ApiError::BadRequest(format!(
                "schedule name {:?} must be 1-63 letters, digits, '-', '_' or '.'",
                spec.name
            )));
        }
        let schedule =
            Schedule::new(spec, now_ms()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        super::templates::load(&ctx.env, &schedule.spec.template, None).await?;
        CatalogClient::of(&ctx.env)?
            .create_schedule(&schedule)
            .await
    }
    .await;
    respond(result, 201)
}

/// `GET /api/v1/schedules`
pub async fn handle_list(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result: Result<Vec<Schedule>, _> =
        async { CatalogClient::of(&ctx.env)?.schedules(&()).await }.await;
    respond(result, 200)
}

/// `DELETE /api/v1/schedules/:name`
pub async fn handle_delete(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let name = ctx.param("name").cloned().unwrap_or_default();
    let result: Result<bool, _> =
        async { CatalogClient::of(&ctx.env)?.delete_schedule(&name).await }.await;
    match result {
        Ok(_) => Ok(Response::empty()?.with_status(204)),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/schedules/:name/pause` and `/resume`: the schedule as it is now.
pub async fn handle_pause(_req: Request, ctx: Ctx, paused: bool) -> worker::Result<Response> {
    let name = ctx.param("name").cloned().unwrap_or_default();
    let result = async {
        CatalogClient::of(&ctx.env)?
            .set_paused(&Pausing {
                name,
                paused,
                now: now_ms(),
            })
            .await
    }
    .await;
    respond(result, 200)
}

/// The cron trigger: the catalog picks the due ticks (keeping each pending until its run has
/// started), then a run starts for each; a failed start stays pending for the next trigger.
pub async fn fire_due(env: &Env) -> Result<(), ApiError> {
    let catalog = CatalogClient::of(env)?;
    let due = catalog.due_schedules(&now_ms()).await?;
    let secret = crate::secrets::bootstrap_token(env)?;
    for (s, at) in due {
        let body = StartRun {
            template: s.spec.template.clone(),
            version: None,
            parameters: s.spec.parameters.clone(),
            cluster: s.spec.cluster.clone(),
            experiment_id: None,
            ignore_cache: false,
        };
        // One run per schedule tick, even if the trigger fires twice or a start is retried.
        let id = sign::run_id(
            &secret,
            RunSeed::ScheduleTick {
                schedule: &s.spec.name,
                at,
            },
        );
        let by = format!("schedule {}", s.spec.name);
        let result = match super::runs::start_run(env, body, &by, id).await {
            Ok(run) => Ok(run.id),
            // The same tick again after an earlier start did go through: it is that run.
            Err(e) => {
                worker::console_error!(
                    "schedule {}: starting a run of {} failed: {}",
                    s.spec.name,
                    s.spec.template,
                    e.detail()
                );
                Err(e.body().error.message)
            }
        };
        let outcome = TickOutcome {
            name: s.spec.name.clone(),
            at,
            result,
        };
        if let Err(e) = catalog.record_tick(&outcome).await {
            worker::console_error!(
                "schedule {}: recording the tick at {at} failed: {}",
                s.spec.name,
                e.detail()
            );
        }
    }
    Ok(())
}
