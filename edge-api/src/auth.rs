//! Who is calling, and whether they may: bearer tokens with roles, lease-bound step tokens, and
//! signed session cookies for browsers.
//!
//! - `CONCURRENT_API_TOKEN` (a secret) is the bootstrap admin token.
//! - Created tokens (`POST /api/v1/tokens`) are stored as SHA-256 hashes in the catalog.
//! - Step tokens `cs_<cluster>:<item>:<fencing token>:<hmac>` are issued with each lease and
//!   verified without storage.
//! - Behind Cloudflare Access, its verified JWT signs the user in (see `cf_access`).
//! - A browser signs in at `/login` by posting a token once; it then holds an HttpOnly cookie
//!   `<expiry>~<role>~<name>~<hmac>` that proves the sign-in without containing the token.

use concurrent_core::access::{allows, permission_for, Permission, Role};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::http::{call, now_ms, stub};

const COOKIE: &str = "concurrent_session";
const SESSION_MS: u64 = 12 * 3600 * 1000;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct User {
    /// Recorded as `started_by` / `updated_by`.
    pub name: String,
    pub role: Role,
    /// The one cluster of an agent or step token.
    pub cluster: Option<String>,
    /// The one work item of a step token.
    pub lease_item: Option<String>,
}

impl User {
    /// # Errors
    /// [`ApiError::Forbidden`] when a step token is used for another work item.
    pub fn check_item(&self, item_id: &str) -> Result<(), ApiError> {
        match &self.lease_item {
            Some(own) if own != item_id => Err(ApiError::Forbidden(format!(
                "this step token is bound to work item {own}, not {item_id}"
            ))),
            _ => Ok(()),
        }
    }
}

pub fn bootstrap_token(env: &Env) -> Result<String, ApiError> {
    env.secret("CONCURRENT_API_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("CONCURRENT_API_TOKEN").map(|s| s.to_string()))
        .map_err(|_| ApiError::Internal("CONCURRENT_API_TOKEN is not configured; set it with `wrangler secret put CONCURRENT_API_TOKEN`".into()))
}

fn mac(key: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The step token of one lease.
pub fn step_token(secret: &str, cluster: &str, item_id: &str, fencing: u64) -> String {
    let body = format!("{cluster}:{item_id}:{fencing}");
    format!("cs_{body}:{}", mac(secret, &format!("step:{body}")))
}

fn verify_step_token(secret: &str, token: &str) -> Option<User> {
    let rest = token.strip_prefix("cs_")?;
    let (body, given) = rest.rsplit_once(':')?;
    if !constant_time_eq(
        mac(secret, &format!("step:{body}")).as_bytes(),
        given.as_bytes(),
    ) {
        return None;
    }
    let mut parts = body.splitn(3, ':');
    let (cluster, item) = (parts.next()?, parts.next()?);
    Some(User {
        name: format!("step {item}"),
        role: Role::Agent,
        cluster: Some(cluster.into()),
        lease_item: Some(item.into()),
    })
}

/// Who a bearer token belongs to.
async fn token_user(env: &Env, token: &str) -> Result<User, ApiError> {
    let bootstrap = bootstrap_token(env)?;
    if constant_time_eq(token.as_bytes(), bootstrap.as_bytes()) {
        return Ok(User {
            name: "admin".into(),
            role: Role::Admin,
            cluster: None,
            lease_item: None,
        });
    }
    if token.starts_with("cs_") {
        return verify_step_token(&bootstrap, token)
            .ok_or_else(|| ApiError::Unauthorized("the step token is not valid".into()));
    }
    let found: Option<concurrent_core::wire::TokenInfo> = call(
        &stub(env, crate::catalog::BINDING, crate::catalog::NAME)?,
        "/tokens/lookup",
        &token_hash(token),
    )
    .await?;
    found
        .map(|t| User {
            name: t.name,
            role: t.role,
            cluster: t.cluster,
            lease_item: None,
        })
        .ok_or_else(|| {
            ApiError::Unauthorized("the bearer token is not valid (unknown or revoked)".into())
        })
}

/// Checks the request's credentials.
///
/// # Errors
/// [`ApiError::Unauthorized`] naming what was missing or wrong.
pub async fn authenticate(req: &Request, env: &Env) -> Result<User, ApiError> {
    if let Some(user) = crate::cf_access::user(req, env).await? {
        return Ok(user);
    }
    let headers = req.headers();
    if let Some(auth) = headers.get("Authorization").ok().flatten() {
        let given = auth
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("use `Authorization: Bearer <token>`".into()))?;
        return token_user(env, given.trim()).await;
    }
    let cookies = headers.get("Cookie").ok().flatten().unwrap_or_default();
    let session = cookies.split(';').find_map(|c| {
        c.trim()
            .strip_prefix(&format!("{COOKIE}="))
            .map(str::to_string)
    });
    let Some(session) = session else {
        return Err(ApiError::Unauthorized(
            "no credentials: send `Authorization: Bearer <token>` or sign in at /login".into(),
        ));
    };
    let invalid =
        || ApiError::Unauthorized("the session cookie is not valid; sign in again".into());
    let (body, given) = session.rsplit_once('~').ok_or_else(invalid)?;
    if !constant_time_eq(
        mac(&bootstrap_token(env)?, &format!("session:{body}")).as_bytes(),
        given.as_bytes(),
    ) {
        return Err(invalid());
    }
    let mut parts = body.splitn(3, '~');
    let expiry: u64 = parts
        .next()
        .and_then(|e| e.parse().ok())
        .ok_or_else(invalid)?;
    let role = parts.next().and_then(Role::parse).ok_or_else(invalid)?;
    let name = parts.next().ok_or_else(invalid)?.to_string();
    if expiry < now_ms() {
        return Err(ApiError::Unauthorized(
            "the session expired; sign in again".into(),
        ));
    }
    Ok(User {
        name,
        role,
        cluster: None,
        lease_item: None,
    })
}

/// # Errors
/// [`ApiError::Forbidden`] when the caller's role does not cover the route.
pub fn authorize(user: &User, method: &str, path: &str) -> Result<(), ApiError> {
    let needed = permission_for(method, path);
    if allows(user.role, user.cluster.as_deref(), &needed) {
        return Ok(());
    }
    let what = match &needed {
        Permission::Read => "read".to_string(),
        Permission::Edit => "edit templates and runs".to_string(),
        Permission::Admin => "manage tokens and schedules".to_string(),
        Permission::Agent { cluster } => format!("take work of cluster {cluster:?}"),
    };
    Err(ApiError::Forbidden(
        format!("{} (role {:?}) may not {what}", user.name, user.role).to_lowercase(),
    ))
}

/// `GET /login` shows the sign-in page; `POST /login` with a token sets the session cookie.
pub async fn handle_login(mut req: Request, env: &Env) -> Result<Response, ApiError> {
    if req.method() != worker::Method::Post {
        return Ok(login_html(200, "")?);
    }
    #[derive(serde::Deserialize)]
    struct Login {
        token: String,
    }
    let body: Login = req
        .json()
        .await
        .map_err(|_| ApiError::BadRequest("send {\"token\": \"...\"}".into()))?;
    let user = token_user(env, body.token.trim()).await?;
    if user.role == Role::Agent {
        return Err(ApiError::Forbidden(
            "agent and step tokens cannot sign in to the UI".into(),
        ));
    }
    let expiry = now_ms() + SESSION_MS;
    let role = serde_json::to_value(user.role)?
        .as_str()
        .unwrap_or("reader")
        .to_string();
    let session_body = format!("{expiry}~{role}~{}", user.name.replace('~', "-"));
    let cookie = format!(
        "{COOKIE}={session_body}~{}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        mac(&bootstrap_token(env)?, &format!("session:{session_body}")),
        SESSION_MS / 1000
    );
    let mut resp =
        Response::from_json(&serde_json::json!({"ok": true, "name": user.name, "role": role}))?;
    resp.headers_mut().set("Set-Cookie", &cookie)?;
    Ok(resp)
}

/// The sign-in page, shown instead of any page when the browser has no session.
pub fn login_page(e: ApiError) -> worker::Result<Response> {
    login_html(401, &e.body().error.message).map_err(|e| worker::Error::RustError(format!("{e:?}")))
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
  else {{ document.getElementById("msg").textContent = (await r.json()).error.message; }}
}}
document.getElementById("f").onsubmit = e => {{ e.preventDefault(); signIn(document.getElementById("t").value); }};
const m = location.hash.match(/token=([^&]+)/);
if (m) {{ history.replaceState(null, "", location.pathname); signIn(decodeURIComponent(m[1])); }}
else if (location.pathname !== "/login") sessionStorage.setItem("concurrent.back", location.pathname + location.search + location.hash);
</script></body></html>"#
    );
    Ok(Response::from_html(html)?.with_status(status))
}
