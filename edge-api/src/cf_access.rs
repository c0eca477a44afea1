//! Cloudflare Access: behind Access, its signed JWT (`Cf-Access-Jwt-Assertion`) signs the user
//! in. Set `CF_ACCESS_TEAM_DOMAIN` (`https://<team>.cloudflareaccess.com`) and `CF_ACCESS_AUD`
//! (the application's audience tag); optionally `CF_ACCESS_ROLE` (default `editor`). The token
//! is verified (RS256 with WebCrypto, against the team's published keys) and its audience,
//! issuer and validity checked; without that configuration the header is ignored, never trusted.

use std::cell::RefCell;

use concurrent_core::access::Role;
use concurrent_core::jwt;
use serde::Deserialize;
use worker::js_sys::{self, Array, Function, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Env, Request};

use crate::error::ApiError;
use crate::platform::now_ms;
use crate::user::User;

pub const HEADER: &str = "Cf-Access-Jwt-Assertion";
/// How long fetched keys are used before they are fetched again (Access rotates them).
const KEYS_TTL_MS: u64 = 3600 * 1000;
/// A token signed by a key that is not in the set fetches it again, but at most this often: an
/// unknown `kid` in every request must not turn the edge into a fetcher of Access's keys.
const KEYS_REFETCH_MS: u64 = 60 * 1000;

#[derive(Deserialize, Clone)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

thread_local! {
    /// (team domain, fetched at, keys): one isolate serves many requests.
    static KEYS: RefCell<Option<(String, u64, Jwks)>> = const { RefCell::new(None) };
}

fn unauthorized(why: impl std::fmt::Display) -> ApiError {
    ApiError::Unauthorized(format!(
        "the Cloudflare Access token is not accepted: {why}"
    ))
}

/// The user an Access JWT names, when the request carries one and Access is configured.
///
/// # Errors
/// [`ApiError::Unauthorized`] naming what failed.
pub async fn user(req: &Request, env: &Env) -> Result<Option<User>, ApiError> {
    let Ok(team) = env
        .var("CF_ACCESS_TEAM_DOMAIN")
        .map(|v| v.to_string().trim_end_matches('/').to_string())
    else {
        return Ok(None);
    };
    let Some(token) = req.headers().get(HEADER).ok().flatten() else {
        return Ok(None);
    };
    let aud = env
        .var("CF_ACCESS_AUD")
        .map(|v| v.to_string())
        .map_err(|_| ApiError::Internal("CF_ACCESS_TEAM_DOMAIN is set but CF_ACCESS_AUD is not; set the application's audience tag".into()))?;
    let parts = jwt::parse(&token).map_err(unauthorized)?;
    let key = match key(&team, &parts.kid, false).await? {
        Some(k) => k,
        // A rotated key: fetch the set again once.
        None => key(&team, &parts.kid, true).await?.ok_or_else(|| {
            unauthorized(format!(
                "it is signed by key {:?}, which {team} does not publish",
                parts.kid
            ))
        })?,
    };
    if !verify_rs256(&key, parts.signed.as_bytes(), &parts.signature).await? {
        return Err(unauthorized("its signature does not verify"));
    }
    let name = jwt::check(&parts.claims, &aud, &team, now_ms()).map_err(unauthorized)?;
    let role = env
        .var("CF_ACCESS_ROLE")
        .ok()
        .and_then(|r| Role::parse(&r.to_string()))
        .unwrap_or(Role::Editor);
    Ok(Some(User {
        name,
        role,
        cluster: None,
        lease: None,
    }))
}

async fn key(team: &str, kid: &str, refresh: bool) -> Result<Option<serde_json::Value>, ApiError> {
    let cached = KEYS.with(|k| {
        k.borrow()
            .as_ref()
            .filter(|(t, at, _)| {
                let age = now_ms().saturating_sub(*at);
                t == team && age < KEYS_TTL_MS && (!refresh || age < KEYS_REFETCH_MS)
            })
            .map(|(_, _, j)| j.clone())
    });
    let jwks = match cached {
        Some(j) => j,
        None => {
            let url = format!("{team}/cdn-cgi/access/certs");
            let mut resp = worker::Fetch::Url(url.parse().map_err(|e| {
                ApiError::Internal(format!("CF_ACCESS_TEAM_DOMAIN {team:?} is not a URL: {e}"))
            })?)
            .send()
            .await
            .map_err(|e| {
                ApiError::Upstream(format!(
                    "cannot fetch Cloudflare Access keys from {url}: {e}"
                ))
            })?;
            if resp.status_code() != 200 {
                return Err(ApiError::Upstream(format!(
                    "{url} answered {} for the Access keys",
                    resp.status_code()
                )));
            }
            let j: Jwks = resp.json().await.map_err(|e| {
                ApiError::Upstream(format!("the Access keys at {url} do not decode: {e}"))
            })?;
            KEYS.with(|k| *k.borrow_mut() = Some((team.to_string(), now_ms(), j.clone())));
            j
        }
    };
    Ok(jwks
        .keys
        .into_iter()
        .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid)))
}

fn js_err(what: &str) -> impl Fn(JsValue) -> ApiError + '_ {
    move |e| ApiError::Internal(format!("WebCrypto {what} failed: {e:?}"))
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (RS256) through the runtime's WebCrypto.
async fn verify_rs256(
    jwk: &serde_json::Value,
    data: &[u8],
    signature: &[u8],
) -> Result<bool, ApiError> {
    let subtle = Reflect::get(
        &Reflect::get(&js_sys::global(), &"crypto".into()).map_err(js_err("access"))?,
        &"subtle".into(),
    )
    .map_err(js_err("access"))?;
    let algorithm = Object::new();
    Reflect::set(&algorithm, &"name".into(), &"RSASSA-PKCS1-v1_5".into())
        .map_err(js_err("setup"))?;
    Reflect::set(&algorithm, &"hash".into(), &"SHA-256".into()).map_err(js_err("setup"))?;
    let jwk = js_sys::JSON::parse(&jwk.to_string()).map_err(js_err("key parse"))?;
    let call = |name: &str, args: Array| -> Result<js_sys::Promise, ApiError> {
        let f: Function = Reflect::get(&subtle, &name.into())
            .map_err(js_err(name))?
            .dyn_into()
            .map_err(|_| ApiError::Internal(format!("crypto.subtle.{name} is missing")))?;
        f.apply(&subtle, &args)
            .map_err(js_err(name))?
            .dyn_into()
            .map_err(|_| ApiError::Internal(format!("crypto.subtle.{name} returned no promise")))
    };
    let usages = Array::of1(&"verify".into());
    let import = call(
        "importKey",
        Array::of5(&"jwk".into(), &jwk, &algorithm, &false.into(), &usages),
    )?;
    let key = worker::wasm_bindgen_futures::JsFuture::from(import)
        .await
        .map_err(|e| unauthorized(format!("its key cannot be imported: {e:?}")))?;
    let verify = call(
        "verify",
        Array::of4(
            &algorithm,
            &key,
            &Uint8Array::from(signature),
            &Uint8Array::from(data),
        ),
    )?;
    let ok = worker::wasm_bindgen_futures::JsFuture::from(verify)
        .await
        .map_err(js_err("verify"))?;
    Ok(ok.as_bool().unwrap_or(false))
}
