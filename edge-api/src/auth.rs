//! Who is calling, and whether they may: bearer tokens with roles, lease-bound step tokens, and
//! signed session cookies for browsers.
//!
//! - `CONCURRENT_API_TOKEN` (a secret of at least [`crate::secrets::MIN_BOOTSTRAP_LEN`] characters) is the
//!   bootstrap admin token, and the key of every signature the edge makes.
//! - Created tokens (`POST /api/v1/tokens`) are stored as SHA-256 hashes in the catalog.
//! - Step tokens (core's [`StepToken`]) are issued with each lease and verified without storage;
//!   they act only on their own lease, with its fencing token.
//! - Behind Cloudflare Access, its verified JWT signs the user in (see `cf_access`).
//! - A browser signs in at `/login` by posting a token once; it then holds an HttpOnly cookie
//!   `<expiry>~<token hash>~<mac>`. Every request looks the token up again, so revoking a token
//!   ends its sessions at once.

use concurrent_core::access::{allows, Permission, Role};
use concurrent_core::sign;
use concurrent_core::step_token::{self, StepToken};
use concurrent_core::wire::LeaseRef;
use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::objects::catalog::api::CatalogClient;
use crate::platform::now_ms;
use crate::secrets::{bootstrap_token, token_hash};
use crate::user::User;

const COOKIE: &str = "concurrent_session";
const SESSION_MS: u64 = 12 * 3600 * 1000;

fn verify_step_token(secret: &str, token: &str) -> Option<User> {
    let (t, signed, mac) = StepToken::parse(token)?;
    if !sign::verify(secret, &signed, mac) {
        return None;
    }
    Some(User {
        name: format!("step {}", t.item_id),
        role: Role::Agent,
        cluster: Some(t.cluster),
        lease: Some(LeaseRef {
            item_id: t.item_id,
            token: t.fencing,
        }),
    })
}

/// How long this isolate believes a token it found in the catalog without asking again: every
/// agent call (lease, heartbeat, completion) would otherwise take a hop through the one catalog
/// object. A revocation ends the token at once in the isolate that revoked it, and in the
/// others within this time (kube-apiserver caches its token reviews the same way).
const KNOWN_FOR_MS: u64 = 10_000;
/// Tokens remembered at most; beyond, the memory starts over.
const KNOWN_AT_MOST: usize = 1_000;

thread_local! {
    /// Token hash → its user, and until when that is believed.
    static KNOWN: std::cell::RefCell<std::collections::HashMap<String, (User, u64)>> =
        Default::default();
}

/// Forgets every token this isolate believed (a token was revoked).
pub fn forget_known_tokens() {
    KNOWN.with(|k| k.borrow_mut().clear());
}

/// Who the token with this SHA-256 belongs to (the bootstrap token, or one in the catalog).
async fn user_of_hash(env: &Env, bootstrap: &str, hash: &str) -> Result<Option<User>, ApiError> {
    if sign::constant_time_eq(hash.as_bytes(), token_hash(bootstrap).as_bytes()) {
        return Ok(Some(User::new("admin", Role::Admin, None)));
    }
    let now = now_ms();
    let known = KNOWN.with(|k| {
        k.borrow()
            .get(hash)
            .filter(|(_, until)| *until > now)
            .map(|(user, _)| user.clone())
    });
    if known.is_some() {
        return Ok(known);
    }
    let found = CatalogClient::of(env)?
        .lookup_token(&hash.to_string())
        .await?
        .map(|t| User::new(t.name, t.role, t.cluster));
    // Only tokens found: a token made a moment ago must not be refused from memory.
    if let Some(user) = &found {
        KNOWN.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= KNOWN_AT_MOST {
                k.clear();
            }
            k.insert(hash.to_string(), (user.clone(), now + KNOWN_FOR_MS));
        });
    }
    Ok(found)
}

/// Who a bearer token belongs to.
async fn token_user(env: &Env, token: &str) -> Result<User, ApiError> {
    let bootstrap = bootstrap_token(env)?;
    if token.is_empty() {
        return Err(ApiError::Unauthorized("the bearer token is empty".into()));
    }
    if token.starts_with(step_token::PREFIX) {
        return verify_step_token(&bootstrap, token)
            .ok_or_else(|| ApiError::Unauthorized("the step token is not valid".into()));
    }
    user_of_hash(env, &bootstrap, &token_hash(token))
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized("the bearer token is not valid (unknown or revoked)".into())
        })
}

/// Checks the request's credentials.
///
/// # Errors
/// [`ApiError::Unauthorized`] naming what was missing or wrong.
pub async fn authenticate(req: &Request, env: &Env) -> Result<User, ApiError> {
    let bootstrap = bootstrap_token(env)?;
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
    if !sign::verify(&bootstrap, &format!("session:{body}"), given) {
        return Err(invalid());
    }
    let (expiry, hash) = body.split_once('~').ok_or_else(invalid)?;
    let expiry: u64 = expiry.parse().map_err(|_| invalid())?;
    if expiry < now_ms() {
        return Err(ApiError::Unauthorized(
            "the session expired; sign in again".into(),
        ));
    }
    user_of_hash(env, &bootstrap, hash).await?.ok_or_else(|| {
        ApiError::Unauthorized(
            "the token this session signed in with was revoked; sign in again with a valid token"
                .into(),
        )
    })
}

/// # Errors
/// [`ApiError::Forbidden`] when the caller's role does not cover the route.
pub fn authorize(user: &User, needed: &Permission) -> Result<(), ApiError> {
    if allows(user.role, user.cluster.as_deref(), needed) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{} (role {}) may not {}",
        user.name,
        user.role.as_str(),
        needed.describe()
    )))
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
    let body: Login = serde_json::from_str(&crate::http::body_text(&mut req).await?)
        .map_err(|_| ApiError::BadRequest("send {\"token\": \"...\"}".into()))?;
    let token = body.token.trim();
    let user = token_user(env, token).await?;
    if user.role == Role::Agent {
        return Err(ApiError::Forbidden(
            "agent and step tokens cannot sign in to the UI".into(),
        ));
    }
    let expiry = now_ms() + SESSION_MS;
    let session_body = format!("{expiry}~{}", token_hash(token));
    let cookie = format!(
        "{COOKIE}={session_body}~{}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        sign::mac_hex(&bootstrap_token(env)?, &format!("session:{session_body}")),
        SESSION_MS / 1000
    );
    let mut resp = Response::from_json(
        &serde_json::json!({"ok": true, "name": user.name, "role": user.role.as_str()}),
    )?;
    resp.headers_mut().set("Set-Cookie", &cookie)?;
    Ok(resp)
}

/// The sign-in page, shown instead of any page when the browser has no session.
pub fn login_page(e: ApiError) -> worker::Result<Response> {
    login_html(e.status(), &e.body().error.message)
        .map_err(|e| worker::Error::RustError(format!("{e:?}")))
}

/// The sign-in page. It returns to the page it was shown for, and only to a path of this
/// origin: `//evil.example/x` is a path to the browser's URL parser but another site to
/// `location.replace`, so the return address is parsed and its origin compared.
fn login_html(status: u16, message: &str) -> Result<Response, worker::Error> {
    let message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Sign in · Concurrent</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;color:#1f272d}}
input,button{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}</style></head>
<body><h1>Concurrent</h1><p id="msg">{message}</p>
<form id="f"><label>API token<input id="t" type="password" autocomplete="current-password"></label>
<button>Sign in</button></form>
<script>
function sameOrigin(where) {{
  try {{
    const u = new URL(where, location.origin);
    if (u.origin !== location.origin) return "/";
    return u.pathname + u.search + u.hash;
  }} catch (e) {{ return "/"; }}
}}
async function signIn(token) {{
  const r = await fetch("/login", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{token}})}});
  if (r.ok) {{ location.replace(sameOrigin(sessionStorage.getItem("concurrent.back") || "/")); }}
  else {{ document.getElementById("msg").textContent = (await r.json()).error.message; }}
}}
document.getElementById("f").onsubmit = e => {{ e.preventDefault(); signIn(document.getElementById("t").value); }};
const m = location.hash.match(/token=([^&]+)/);
if (m) {{ history.replaceState(null, "", location.pathname); signIn(decodeURIComponent(m[1])); }}
else if (location.pathname !== "/login") sessionStorage.setItem("concurrent.back", sameOrigin(location.pathname.replace(/^\/+/, "/") + location.search + location.hash));
</script></body></html>"#
    );
    Ok(Response::from_html(html)?.with_status(status))
}
