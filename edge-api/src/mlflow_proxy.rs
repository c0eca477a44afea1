//! The edge fronts the MLflow UI: every request that is not Concurrent's streams to MLflow
//! unchanged, except MLflow's `index.html`, which gets one `<script>` that adds the "DAGs" tab.
//!
//! MLflow 3 refuses a foreign `Host` and a cross-origin `Origin`; the proxy sends MLflow's own
//! host and drops an `Origin` that is the edge's own. The caller's credentials for Concurrent
//! (session cookie, bearer token) never reach MLflow; a token for a hosted MLflow
//! (`MLFLOW_TRACKING_TOKEN`) is added instead. Since the edge's own MLflow credentials serve
//! every caller, the edge applies Concurrent's roles here: readers get MLflow's reads only
//! (core's [`mlflow_access`]), editors and admins everything; agent tokens never get here.

use concurrent_core::access::{mlflow_access, MlflowAccess, Role};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response};

use crate::error::ApiError;
use crate::user::User;

const LOADER: &str = r#"<script defer src="/concurrent/loader.js"></script>"#;

fn upstream(env: &Env) -> Result<String, ApiError> {
    env.var("MLFLOW_UI_URI")
        .or_else(|_| env.var("MLFLOW_TRACKING_URI"))
        .map(|v| v.to_string().trim_end_matches('/').to_string())
        .map_err(|_| ApiError::Internal("MLFLOW_TRACKING_URI is not configured".into()))
}

/// The GraphQL document of a `/graphql` request (the `query` of its JSON body, or of its URL).
fn graphql_document(url: &worker::Url, body: Option<&str>) -> Option<String> {
    match body {
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            v.get("query")?.as_str().map(str::to_string)
        }
        None => url
            .query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned()),
    }
}

/// Forwards `req` to MLflow and returns its answer; a reader's write is refused with 403.
pub async fn forward(mut req: Request, env: &Env, user: &User) -> Result<Response, ApiError> {
    let base = upstream(env)?;
    let url = req.url()?;
    let method = req.method();
    // A reader's GraphQL request is read here to see what it does; everything else streams.
    let body_text =
        if user.role == Role::Reader && url.path() == "/graphql" && method == Method::Post {
            Some(crate::http::body_text(&mut req).await?)
        } else {
            None
        };
    if user.role == Role::Reader {
        let doc = (url.path() == "/graphql")
            .then(|| graphql_document(&url, body_text.as_deref()).unwrap_or_default());
        if mlflow_access(method.as_ref(), url.path(), doc.as_deref()) == MlflowAccess::Write {
            return Err(ApiError::Forbidden(format!(
                "{} (role reader) may only read MLflow through Concurrent; {} {} changes it. Ask an admin for an editor token",
                user.name,
                method.as_ref(),
                url.path()
            )));
        }
    }
    let own_origin = url.origin().ascii_serialization();
    let target = format!(
        "{base}{}{}",
        url.path(),
        url.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let headers = Headers::new();
    for (k, v) in req.headers().entries() {
        let drop = matches!(
            k.as_str(),
            "host" | "cookie" | "authorization" | "content-length" | "connection"
        ) || k.starts_with("cf-")
            || (k == "origin" && v == own_origin);
        if !drop {
            headers.append(&k, &v)?;
        }
    }
    if let Ok(token) = env.secret("MLFLOW_TRACKING_TOKEN") {
        headers.set("Authorization", &format!("Bearer {token}"))?;
    }
    let mut init = RequestInit::new();
    init.with_method(req.method())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    match body_text {
        Some(text) => {
            init.with_body(Some(text.into()));
        }
        None if !matches!(req.method(), Method::Get | Method::Head) => {
            init.with_body(req.inner().body().map(Into::into));
        }
        None => {}
    }
    let outgoing = Request::new_with_init(&target, &init)?;
    let mut resp = Fetch::Request(outgoing).send().await.map_err(|e| {
        ApiError::Upstream(format!(
            "MLflow at {base} is unreachable: {e}; check that it runs and MLFLOW_TRACKING_URI"
        ))
    })?;
    let is_index = req.method() == Method::Get && matches!(url.path(), "/" | "/index.html");
    let is_html = resp
        .headers()
        .get("content-type")?
        .is_some_and(|t| t.contains("text/html"));
    if is_index && is_html && resp.status_code() == 200 {
        let html = resp.text().await?;
        let injected = match html.find("</head>") {
            Some(i) => format!("{}{LOADER}{}", &html[..i], &html[i..]),
            None => format!("{LOADER}{html}"),
        };
        let mut out = Response::from_html(injected)?;
        out.headers_mut().set("Cache-Control", "no-cache")?;
        return Ok(out);
    }
    Ok(resp)
}
