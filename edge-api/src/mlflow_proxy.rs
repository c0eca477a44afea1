//! The edge fronts the MLflow UI: every request that is not Concurrent's streams to MLflow
//! unchanged, except MLflow's `index.html`, which gets one `<script>` that adds the "DAGs" tab.
//!
//! MLflow 3 refuses a foreign `Host` and a cross-origin `Origin`; the proxy sends MLflow's own
//! host and drops an `Origin` that is the edge's own. The caller's credentials for Concurrent
//! (session cookie, bearer token) never reach MLflow; a token for a hosted MLflow
//! (`MLFLOW_TRACKING_TOKEN`) is added instead.

use worker::{Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response};

use crate::error::ApiError;

const LOADER: &str = r#"<script defer src="/concurrent/loader.js"></script>"#;

fn upstream(env: &Env) -> Result<String, ApiError> {
    env.var("MLFLOW_UI_URI")
        .or_else(|_| env.var("MLFLOW_TRACKING_URI"))
        .map(|v| v.to_string().trim_end_matches('/').to_string())
        .map_err(|_| ApiError::Internal("MLFLOW_TRACKING_URI is not configured".into()))
}

/// Forwards `req` to MLflow and returns its answer.
pub async fn forward(req: Request, env: &Env) -> Result<Response, ApiError> {
    let base = upstream(env)?;
    let url = req.url()?;
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
    if !matches!(req.method(), Method::Get | Method::Head) {
        init.with_body(req.inner().body().map(Into::into));
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
