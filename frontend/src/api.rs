//! Calls to the edge API from the browser (same origin; the session cookie authenticates).

use concurrent_core::wire::ErrorBody;
use serde::de::DeserializeOwned;

/// GETs `path` and decodes it; an error is a sentence for the user.
pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    let resp = gloo_net::http::Request::get(path)
        .send()
        .await
        .map_err(|e| format!("the edge API is unreachable: {e}"))?;
    if resp.status() == 401 {
        return Err("your session expired; reload the page to sign in again".into());
    }
    if !resp.ok() {
        let status = resp.status();
        return Err(match resp.json::<ErrorBody>().await {
            Ok(body) => body.error.message,
            Err(_) => format!("the edge API answered {status}"),
        });
    }
    resp.json::<T>()
        .await
        .map_err(|e| format!("the edge API's answer does not decode: {e}"))
}
