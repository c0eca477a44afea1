//! Dispatch of `/api/v1`: core's route table picks the route and its permission; each route has
//! one handler here (an exhaustive `match`, so a route cannot exist without one).

use concurrent_core::access::{match_route, Matched, Route, RouteError};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::routes::ctx::Ctx;
use crate::routes::{agents, inspect, runs, schedules, templates, tokens, triggers};
use crate::user::User;

/// The route of a request, or the JSON error (404, 405) that answers it.
pub fn route(req: &Request) -> Result<Matched, ApiError> {
    match_route(req.method().as_ref(), &req.path()).map_err(|e| match e {
        RouteError::NotFound { .. } => ApiError::NotFound(e.to_string()),
        RouteError::MethodNotAllowed { .. } => ApiError::MethodNotAllowed(e.to_string()),
    })
}

/// Runs the handler of an authorized request.
pub async fn dispatch(
    req: Request,
    env: Env,
    user: User,
    matched: Matched,
) -> worker::Result<Response> {
    let ctx = Ctx {
        env,
        user,
        params: matched.params,
    };
    match matched.route {
        Route::TemplatesList => templates::handle_list(req, ctx).await,
        Route::TemplatesValidate => templates::handle_validate(req, ctx).await,
        Route::TemplateGet | Route::TemplateVersion => templates::handle_get(req, ctx).await,
        Route::TemplateSave => templates::handle_save(req, ctx).await,
        Route::TemplateDelete => templates::handle_delete(req, ctx).await,
        Route::TemplateVersions => templates::handle_versions(req, ctx).await,
        Route::RunsList => runs::handle_list(req, ctx).await,
        Route::RunStart => runs::handle_start(req, ctx).await,
        Route::RunGet => runs::handle_get(req, ctx).await,
        Route::RunOverview => runs::handle_overview(req, ctx).await,
        Route::RunInstances => runs::handle_instances(req, ctx).await,
        Route::RunCancel => runs::handle_cancel(req, ctx).await,
        Route::RunRetry => runs::handle_retry(req, ctx).await,
        Route::RunRerun => runs::handle_rerun(req, ctx).await,
        Route::RunDecide => runs::handle_decide(req, ctx).await,
        Route::SchedulesList => schedules::handle_list(req, ctx).await,
        Route::ScheduleCreate => schedules::handle_create(req, ctx).await,
        Route::ScheduleDelete => schedules::handle_delete(req, ctx).await,
        Route::SchedulePause => schedules::handle_pause(req, ctx, true).await,
        Route::ScheduleResume => schedules::handle_pause(req, ctx, false).await,
        Route::TriggersList => triggers::handle_list(req, ctx).await,
        Route::TriggerCreate => triggers::handle_create(req, ctx).await,
        Route::TriggerDelete => triggers::handle_delete(req, ctx).await,
        Route::TriggerPause => triggers::handle_pause(req, ctx, true).await,
        Route::TriggerResume => triggers::handle_pause(req, ctx, false).await,
        Route::Me => crate::error::respond(
            Ok::<_, crate::error::ApiError>(concurrent_core::wire::Me {
                name: ctx.user.name.clone(),
                role: ctx.user.role,
            }),
            200,
        ),
        Route::TokensList => tokens::handle_list(req, ctx).await,
        Route::TokenCreate => tokens::handle_create(req, ctx).await,
        Route::TokenDelete => tokens::handle_delete(req, ctx).await,
        Route::AgentLease => agents::handle_lease(req, ctx).await,
        Route::AgentHeartbeat => agents::handle_heartbeat(req, ctx).await,
        Route::AgentComplete => agents::handle_complete(req, ctx).await,
        Route::AgentCompletions => agents::handle_completions(req, ctx).await,
        Route::AgentPin => agents::handle_pin(req, ctx).await,
        Route::AgentCacheLookup => agents::handle_cache_lookup(req, ctx).await,
        Route::ProjectInspect => inspect::handle_inspect(req, ctx).await,
        Route::AgentInspections => inspect::handle_poll(req, ctx).await,
        Route::AgentInspectAnswer => inspect::handle_answer(req, ctx).await,
    }
}
