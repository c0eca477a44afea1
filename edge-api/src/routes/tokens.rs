//! `/api/v1/tokens` (admin): create, list and revoke API tokens. A token's secret is shown once.

use concurrent_core::access::Role;
use concurrent_core::wire::{NewToken, TokenInfo};
use worker::{Request, Response};

use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::json_body;
use crate::objects::catalog::api::{CatalogClient, StoredToken};
use crate::platform::{now_ms, random_id};
use crate::secrets::token_hash;

/// `POST /api/v1/tokens` `{"name", "role", "cluster"?}` → the token, once.
pub async fn handle_create(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let t: NewToken = json_body(&mut req).await?;
        if t.name.is_empty()
            || t.name.len() > 64
            || !t
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::BadRequest(format!(
                "token name {:?} must be 1-64 letters, digits, '-' or '_'",
                t.name
            )));
        }
        match (t.role, &t.cluster) {
            (Role::Agent, None) => {
                return Err(ApiError::BadRequest(
                    "an agent token needs the cluster it serves".into(),
                ))
            }
            (Role::Agent, Some(c)) => {
                if let Some(why) = concurrent_core::names::label_value_problem(c) {
                    return Err(ApiError::BadRequest(format!("cluster {c:?} {why}")));
                }
            }
            (_, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "only agent tokens are bound to a cluster".into(),
                ))
            }
            _ => {}
        }
        let secret = format!("ct_{}{}", random_id(), random_id());
        let info = TokenInfo {
            name: t.name,
            role: t.role,
            cluster: t.cluster,
            created_at: now_ms(),
            token: None,
        };
        let stored: TokenInfo = CatalogClient::of(&ctx.env)?
            .create_token(&StoredToken {
                hash: token_hash(&secret),
                info,
            })
            .await?;
        Ok(TokenInfo {
            token: Some(secret),
            ..stored
        })
    }
    .await;
    respond(result, 201)
}

/// `GET /api/v1/tokens`
pub async fn handle_list(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result: Result<Vec<TokenInfo>, _> =
        async { CatalogClient::of(&ctx.env)?.list_tokens(&()).await }.await;
    respond(result, 200)
}

/// `DELETE /api/v1/tokens/:name` — revokes at once here, and everywhere within seconds (the
/// edge's other isolates believe a token they found for a few seconds).
pub async fn handle_delete(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let name = ctx.param("name").cloned().unwrap_or_default();
    let result: Result<bool, _> =
        async { CatalogClient::of(&ctx.env)?.delete_token(&name).await }.await;
    crate::auth::forget_known_tokens();
    match result {
        Ok(_) => Ok(Response::empty()?.with_status(204)),
        Err(e) => e.into_response(),
    }
}
