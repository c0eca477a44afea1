//! Project inspection for the designer: `POST /clusters/:cluster/inspect` hands the request to
//! a live agent of that cluster (which reads the project where its steps would, so private
//! repositories and the agent's project root work) and answers with what the agent found.
//! The cluster's queue holds the requests; an agent long-polls
//! `POST /agents/:cluster/inspections` beside its leases and posts each answer to
//! `.../inspections/answer`.

use concurrent_core::refs;
use concurrent_core::wire::{InspectAnswer, InspectRequest, InspectionsRequest};
use worker::{Request, Response};

use super::agents::{cluster, queue};
use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::json_body;
use crate::objects::queue::api::{InspectCall, QueueClient};

/// `POST /clusters/:cluster/inspect` — what the project declares, read by a live agent.
pub async fn handle_inspect(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: InspectRequest = json_body(&mut req).await?;
        let problem = refs::project_uri_problem(&body.uri)
            .map(|why| format!("uri: {why}"))
            .or_else(|| {
                body.version
                    .as_deref()
                    .and_then(refs::git_ref_problem)
                    .map(|why| format!("version: {why}"))
            })
            .or_else(|| {
                body.sub_path
                    .as_deref()
                    .and_then(refs::local_path_problem)
                    .map(|why| format!("subPath: {why}"))
            });
        if let Some(why) = problem {
            return Err(ApiError::BadRequest(why));
        }
        let cluster = cluster(&ctx)?;
        QueueClient::of(&ctx.env, &cluster)?
            .inspect(&InspectCall {
                cluster,
                request: body,
            })
            .await
    }
    .await;
    respond(result, 200)
}

/// `POST /agents/:cluster/inspections` — an agent long-polls for inspections.
pub async fn handle_poll(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let body: InspectionsRequest = json_body(&mut req).await?;
        if ctx.user.lease.is_some() {
            return Err(ApiError::Forbidden(
                "a step token cannot take inspections".into(),
            ));
        }
        queue(&ctx)?.take_inspections(&body).await
    }
    .await;
    respond(result, 200)
}

/// `POST /agents/:cluster/inspections/answer` — what the agent found.
pub async fn handle_answer(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let mut body: InspectAnswer = json_body(&mut req).await?;
        if ctx.user.lease.is_some() {
            return Err(ApiError::Forbidden(
                "a step token cannot answer inspections".into(),
            ));
        }
        if let Some(e) = body.error.take() {
            body.error = Some(concurrent_core::logtail::keep_start(&e, 4096));
        }
        queue(&ctx)?.answer_inspection(&body).await
    }
    .await;
    respond(result, 200)
}
