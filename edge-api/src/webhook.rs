//! Delivering a run's notification: its URL (or the `NOTIFY_…` edge secret that holds it),
//! signed with another such secret, one POST bounded in time. Errors name the secret, never
//! the URL a secret holds: they are kept on the run.

use concurrent_core::run::notify::Notify;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

use crate::platform::now_ms;

/// Longest wait for a webhook's answer.
const TIMEOUT_MS: u64 = 10_000;

fn secret(env: &Env, name: &str) -> Result<String, String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .map_err(|_| format!("the edge has no secret {name}; set it (wrangler secret put {name})"))
}

/// Sends `n` for run `run_id`; why it was not accepted, if it was not.
pub async fn deliver(env: &Env, n: &Notify, run_id: &str) -> Result<(), String> {
    let (url, named) = match (&n.notification.url, &n.notification.url_secret) {
        (Some(url), _) => (url.clone(), format!("webhook {url}")),
        (None, Some(name)) => (secret(env, name)?, format!("the webhook in {name}")),
        (None, None) => return Err("the notification has no URL".into()),
    };
    let mut body = n.body.clone();
    if let Ok(base) = env.var("PUBLIC_URL") {
        let link = format!(
            "{}/#/dags/runs/{run_id}",
            base.to_string().trim_end_matches('/')
        );
        body["run"]["url"] = link.clone().into();
        if let Some(text) = body["text"].as_str() {
            body["text"] = format!("{text} <{link}>").into();
        }
    }
    let payload = body.to_string();
    // The same id on every try, so a receiver can tell a retry from a new event.
    let id = format!("{run_id}.{}.{}", n.to, n.event);
    let at = (now_ms() / 1000).to_string();
    let headers = Headers::new();
    let header = |k: &str, v: &str| headers.set(k, v).map_err(|e| e.to_string());
    header("Content-Type", "application/json")?;
    header("X-Concurrent-Delivery-Id", &id)?;
    header("X-Concurrent-Timestamp", &at)?;
    if let Some(name) = &n.notification.signing_secret {
        let key = secret(env, name)?;
        header(
            "X-Concurrent-Signature",
            &concurrent_core::sign::webhook_signature(&key, &id, &at, &payload),
        )?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers.clone())
        .with_body(Some(payload.into()));
    let req = Request::new_with_init(&url, &init).map_err(|e| format!("{named}: {e}"))?;
    let fetch = Fetch::Request(req);
    let send = fetch.send();
    let timeout = worker::Delay::from(std::time::Duration::from_millis(TIMEOUT_MS));
    futures_util::pin_mut!(send, timeout);
    match futures_util::future::select(send, timeout).await {
        futures_util::future::Either::Left((Ok(resp), _)) => match resp.status_code() {
            200..=299 => Ok(()),
            s => Err(format!("{named} answered {s}")),
        },
        futures_util::future::Either::Left((Err(e), _)) => {
            Err(format!("{named} cannot be reached: {e}"))
        }
        futures_util::future::Either::Right(_) => Err(format!(
            "{named} did not answer within {} s",
            TIMEOUT_MS / 1000
        )),
    }
}
