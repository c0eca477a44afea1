//! `/api/v1/templates`: save versions (KV + catalog), read, list, validate, delete.

use concurrent_core::wire::{SavedTemplate, TemplateVersion, VersionSummary};
use concurrent_core::{unknown_fields, validate, Problem, Template};
use serde::Serialize;
use worker::{Env, Request, Response};

use super::ctx::Ctx;
use crate::error::{respond, ApiError};
use crate::http::body_text;
use crate::objects::catalog::api::{CatalogClient, Commit, Expected, VersionQuery, VersionRow};
use crate::platform::{now_ms, random_id};

pub const KV: &str = "TEMPLATES";

fn name_param(ctx: &Ctx) -> String {
    ctx.param("name").cloned().unwrap_or_default()
}

/// Parses a template body; also returns the problems only the raw document shows (unknown fields).
async fn parse(req: &mut Request) -> Result<(Template, Vec<Problem>), ApiError> {
    let text = body_text(req).await?;
    let template = Template::from_json(&text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((template, unknown_fields(&raw)))
}

/// Every problem of a parsed template document.
fn problems_of(template: &Template, unknown: Vec<Problem>) -> Vec<Problem> {
    let mut problems = unknown;
    problems.extend(validate(template));
    problems
}

/// `PUT /api/v1/templates/:name` — saves a new version. `If-Match: <version>` (or `*`) is
/// required once the template exists, so concurrent editors get a 409 instead of a lost update.
/// An invalid template is refused with 400 and its problems, unless `?draft=true`.
pub async fn handle_save(mut req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = save(&mut req, &ctx).await;
    respond(result, 201)
}

async fn save(req: &mut Request, ctx: &Ctx) -> Result<SavedTemplate, ApiError> {
    let name = name_param(ctx);
    if let Some(why) = concurrent_core::names::label_value_problem(&name) {
        return Err(ApiError::BadRequest(format!(
            "template name {name:?} in the URL {why}"
        )));
    }
    let (template, unknown) = parse(req).await?;
    if template.name != name {
        return Err(ApiError::BadRequest(format!(
            "the body's name {:?} differs from the URL's {name:?}",
            template.name
        )));
    }
    let draft = req
        .url()?
        .query_pairs()
        .any(|(k, v)| k == "draft" && v == "true");
    let problems = problems_of(&template, unknown);
    if !problems.is_empty() && !draft {
        return Err(ApiError::Invalid {
            message: format!(
                "template {name:?} has {} problem(s); fix them, or save with ?draft=true",
                problems.len()
            ),
            problems,
        });
    }
    let expected = match req.headers().get("If-Match")? {
        None => Expected::New,
        Some(v) if v.trim() == "*" => Expected::Any,
        Some(v) => Expected::Version(v.trim().trim_matches('"').parse::<u32>().map_err(|_| {
            ApiError::BadRequest(format!("If-Match must be a version number or *, not {v:?}"))
        })?),
    };
    // The body goes to a fresh, write-once key first; the catalog then commits it as the next
    // version atomically. A losing concurrent save leaves only an unreferenced KV entry.
    let kv_key = format!("tpl/{name}/{}", random_id());
    ctx.kv(KV)?
        .put(&kv_key, serde_json::to_string(&template)?)?
        .execute()
        .await?;
    let commit = Commit {
        name: name.clone(),
        expected,
        kv_key,
        description: template.description.clone(),
        author: Some(ctx.user.name.clone()),
        created_at: now_ms(),
        problems: problems.clone(),
    };
    let version = CatalogClient::of(&ctx.env)?.commit(&commit).await?;
    Ok(SavedTemplate {
        name,
        version,
        problems,
    })
}

/// Loads a template version (the latest when `version` is `None`).
pub async fn load(
    env: &Env,
    name: &str,
    version: Option<u32>,
) -> Result<TemplateVersion, ApiError> {
    let row: VersionRow = CatalogClient::of(env)?
        .version(&VersionQuery {
            name: name.into(),
            version,
        })
        .await?;
    let text = env.kv(KV)?.get(&row.kv_key).text().await?.ok_or_else(|| {
        ApiError::Internal(format!(
            "template {name:?} version {} is missing from KV ({})",
            row.version, row.kv_key
        ))
    })?;
    Ok(TemplateVersion {
        name: row.name,
        version: row.version,
        created_at: row.created_at,
        author: row.author,
        problems: row.problems,
        template: serde_json::from_str(&text)?,
    })
}

/// `GET /api/v1/templates/:name[/versions/:version]`
pub async fn handle_get(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let version = match ctx.param("version").map(|v| v.parse::<u32>()) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(_)) => Err(ApiError::BadRequest(
            "version must be a positive number".into(),
        )),
    };
    let result = match version {
        Ok(v) => load(&ctx.env, &name_param(&ctx), v).await,
        Err(e) => Err(e),
    };
    respond(result, 200)
}

/// `GET /api/v1/templates`
pub async fn handle_list(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async { CatalogClient::of(&ctx.env)?.list_templates(&()).await }.await;
    respond(result, 200)
}

/// `GET /api/v1/templates/:name/versions`
pub async fn handle_versions(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        let rows = CatalogClient::of(&ctx.env)?
            .versions(&name_param(&ctx))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| VersionSummary {
                version: r.version,
                created_at: r.created_at,
                author: r.author,
                valid: r.problems.is_empty(),
            })
            .collect::<Vec<_>>())
    }
    .await;
    respond(result, 200)
}

/// `DELETE /api/v1/templates/:name` — soft: versions stay readable and runs keep working.
pub async fn handle_delete(_req: Request, ctx: Ctx) -> worker::Result<Response> {
    let result = async {
        CatalogClient::of(&ctx.env)?
            .delete_template(&name_param(&ctx))
            .await
    }
    .await;
    match result {
        Ok(_) => Ok(Response::empty()?.with_status(204)),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/templates/validate` — the problems of a template, without saving it.
pub async fn handle_validate(mut req: Request, _ctx: Ctx) -> worker::Result<Response> {
    #[derive(Serialize)]
    struct Answer {
        problems: Vec<Problem>,
    }
    let result = parse(&mut req).await.map(|(t, unknown)| Answer {
        problems: problems_of(&t, unknown),
    });
    respond(result, 200)
}
