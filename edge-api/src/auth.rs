//! Who is calling: a bearer token (CLI, agents, tests) or a signed session cookie (browsers).
//!
//! The secret `CONCURRENT_API_TOKEN` is the credential. A browser signs in at `/login` by
//! posting it once; it then holds an HttpOnly cookie `<expiry>.<hmac>` that proves the sign-in
//! without containing the token.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::now_ms;

const COOKIE: &str = "concurrent_session";
const SESSION_MS: u64 = 12 * 3600 * 1000;

/// The authenticated caller, recorded as `started_by` / `updated_by`.
#[derive(Debug, Clone)]
pub struct User(pub String);

fn api_token(env: &Env) -> Result<String, ApiError> {
    env.secret("CONCURRENT_API_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("CONCURRENT_API_TOKEN").map(|s| s.to_string()))
        .map_err(|_| ApiError::Internal("CONCURRENT_API_TOKEN is not configured; set it with `wrangler secret put CONCURRENT_API_TOKEN`".into()))
}

fn sign(token: &str, expiry: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("session:{expiry}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the request's credentials.
///
/// # Errors
/// [`ApiError::Unauthorized`] naming what was missing or wrong.
pub fn authenticate(req: &Request, env: &Env) -> Result<User, ApiError> {
    let token = api_token(env)?;
    let headers = req.headers();
    if let Some(auth) = headers.get("Authorization").ok().flatten() {
        let given = auth.strip_prefix("Bearer ").unwrap_or_default();
        return if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(User("api-token".into()))
        } else {
            Err(ApiError::Unauthorized("the bearer token is not valid".into()))
        };
    }
    let cookies = headers.get("Cookie").ok().flatten().unwrap_or_default();
    let session = cookies.split(';').find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string));
    match session.as_deref().and_then(|s| s.split_once('.')) {
        Some((expiry, mac)) => {
            let expiry: u64 = expiry.parse().map_err(|_| ApiError::Unauthorized("malformed session cookie".into()))?;
            if expiry < now_ms() {
                return Err(ApiError::Unauthorized("the session expired; sign in again".into()));
            }
            if constant_time_eq(sign(&token, expiry).as_bytes(), mac.as_bytes()) {
                Ok(User("browser".into()))
            } else {
                Err(ApiError::Unauthorized("the session cookie is not valid; sign in again".into()))
            }
        }
        None => Err(ApiError::Unauthorized(
            "no credentials: send `Authorization: Bearer <token>` or sign in at /login".into(),
        )),
    }
}

/// `GET /login` shows the sign-in page; `POST /login` with the token sets the session cookie.
pub async fn handle_login(mut req: Request, env: &Env) -> Result<Response, ApiError> {
    if req.method() != worker::Method::Post {
        return Ok(login_html(200, "")?);
    }
    #[derive(serde::Deserialize)]
    struct Login {
        token: String,
    }
    let body: Login = req.json().await.map_err(|_| ApiError::BadRequest("send {\"token\": \"...\"}".into()))?;
    let token = api_token(env)?;
    if !constant_time_eq(body.token.as_bytes(), token.as_bytes()) {
        return Err(ApiError::Unauthorized("that token is not valid".into()));
    }
    let expiry = now_ms() + SESSION_MS;
    let cookie = format!(
        "{COOKIE}={expiry}.{}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        sign(&token, expiry),
        SESSION_MS / 1000
    );
    let mut resp = Response::from_json(&serde_json::json!({"ok": true}))?;
    resp.headers_mut().set("Set-Cookie", &cookie)?;
    Ok(resp)
}

/// The sign-in page, shown instead of any page when the browser has no session.
pub fn login_page(e: ApiError) -> worker::Result<Response> {
    login_html(401, &e.body().message).map_err(|e| worker::Error::RustError(format!("{e:?}")))
}

fn login_html(status: u16, message: &str) -> Result<Response, worker::Error> {
    let message = message.replace('&', "&amp;").replace('<', "&lt;");
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Sign in · Concurrent</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;color:#1f272d}}
input,button{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}</style></head>
<body><h1>Concurrent</h1><p id="msg">{message}</p>
<form id="f"><label>API token<input id="t" type="password" autocomplete="current-password"></label>
<button>Sign in</button></form>
<script>
async function signIn(token) {{
  const r = await fetch("/login", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{token}})}});
  if (r.ok) {{ const back = sessionStorage.getItem("concurrent.back") || "/"; location.replace(back); }}
  else {{ document.getElementById("msg").textContent = (await r.json()).message; }}
}}
document.getElementById("f").onsubmit = e => {{ e.preventDefault(); signIn(document.getElementById("t").value); }};
const m = location.hash.match(/token=([^&]+)/);
if (m) {{ history.replaceState(null, "", location.pathname); signIn(decodeURIComponent(m[1])); }}
else if (location.pathname !== "/login") sessionStorage.setItem("concurrent.back", location.pathname + location.search + location.hash);
</script></body></html>"#
    );
    Ok(Response::from_html(html)?.with_status(status))
}
