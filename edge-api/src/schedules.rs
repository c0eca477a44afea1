//! `/api/v1/schedules` and the cron trigger that fires them.

use concurrent_core::schedule::{next_tick, NewSchedule, Schedule};
use concurrent_core::wire::StartRun;
use worker::{Env, Request, Response, RouteContext};

use crate::auth::User;
use crate::error::{respond, ApiError};
use crate::http::{call, json_body, now_ms, stub};

type Ctx = RouteContext<User>;

fn catalog(env: &Env) -> Result<worker::Stub, ApiError> {
    stub(env, crate::catalog::BINDING, crate::catalog::NAME)
}

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
        let now = now_ms();
        let next_fire = next_tick(&spec.cron, now).map_err(ApiError::BadRequest)?;
        crate::templates::load(&ctx.env, &spec.template, None).await?;
        let schedule = Schedule {
            spec,
            created_at: now,
            next_fire,
            last_fired: None,
            last_run_id: None,
            skipped: 0,
        };
        call::<_, Schedule>(&catalog(&ctx.env)?, "/schedules/create", &schedule).await
    }
    .await;
    respond(result, 201)
}

/// `GET /api/v1/schedules`
pub async fn handle_list(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result: Result<Vec<Schedule>, _> =
        async { call(&catalog(&ctx.env)?, "/schedules/list", &()).await }.await;
    respond(result, 200)
}

/// `DELETE /api/v1/schedules/:name`
pub async fn handle_delete(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let name = ctx.param("name").cloned().unwrap_or_default();
    let result: Result<bool, _> =
        async { call(&catalog(&ctx.env)?, "/schedules/delete", &name).await }.await;
    match result {
        Ok(_) => Ok(Response::empty()?.with_status(204)),
        Err(e) => e.into_response(),
    }
}

/// The cron trigger: the catalog picks the due schedules (marking them fired, so a second
/// trigger cannot fire them again), then a run starts for each.
pub async fn fire_due(env: &Env) -> Result<(), ApiError> {
    let due: Vec<Schedule> = call(&catalog(env)?, "/schedules/due", &now_ms()).await?;
    for s in due {
        let body = StartRun {
            template: s.spec.template.clone(),
            version: None,
            parameters: s.spec.parameters.clone(),
            cluster: s.spec.cluster.clone(),
        };
        // One run per schedule tick, even if the trigger fires twice.
        let id = crate::auth::token_hash(&format!(
            "schedule\n{}\n{}",
            s.spec.name,
            s.last_fired.unwrap_or_default()
        ))[..32]
            .to_string();
        match crate::runs::start_run(env, body, &format!("schedule {}", s.spec.name), id).await {
            Ok(run) => {
                let record = (s.spec.name.clone(), run.id.clone());
                if let Err(e) = call::<_, bool>(&catalog(env)?, "/schedules/record", &record).await
                {
                    worker::console_error!(
                        "schedule {}: recording run {} failed: {}",
                        s.spec.name,
                        run.id,
                        e.body().error.message
                    );
                }
            }
            Err(e) => worker::console_error!(
                "schedule {}: starting a run of {} failed: {}",
                s.spec.name,
                s.spec.template,
                e.body().error.message
            ),
        }
    }
    Ok(())
}
