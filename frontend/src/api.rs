//! Calls to the edge API from the browser (same origin; the session cookie authenticates).
//! Every failure becomes an [`ApiError`] whose message is meant for the user.

use concurrent_core::wire::ErrorBody;
use concurrent_core::Problem;
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status; 0 when the edge could not be reached.
    pub status: u16,
    pub message: String,
    /// Validation problems, when the API sent them.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn unreachable(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: 0,
        message: format!("the edge API is unreachable ({e}); check your connection and retry"),
        problems: vec![],
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, ApiError> {
    let status = resp.status();
    if status == 401 {
        return Err(ApiError {
            status,
            message: "your session expired; reload the page to sign in again".into(),
            problems: vec![],
        });
    }
    if !resp.ok() {
        return Err(match resp.json::<ErrorBody>().await {
            Ok(body) => ApiError {
                status,
                message: body.error.message,
                problems: body.error.details,
            },
            Err(_) => ApiError {
                status,
                message: format!("the edge API answered {status} {}", resp.status_text()),
                problems: vec![],
            },
        });
    }
    resp.json::<T>().await.map_err(|e| ApiError {
        status,
        message: format!("the edge API's answer does not decode: {e}"),
        problems: vec![],
    })
}

/// GETs `path` and decodes it.
pub async fn get<T: DeserializeOwned>(path: impl AsRef<str>) -> Result<T, ApiError> {
    decode(
        Request::get(path.as_ref())
            .send()
            .await
            .map_err(unreachable)?,
    )
    .await
}

/// Sends `body` as JSON with `method` (`PUT`, `POST`) and decodes the answer.
pub async fn send<T: DeserializeOwned>(
    builder: RequestBuilder,
    body: &impl Serialize,
) -> Result<T, ApiError> {
    let request = builder.json(body).map_err(unreachable)?;
    decode(request.send().await.map_err(unreachable)?).await
}

/// DELETEs `path` (the API answers 204).
pub async fn delete(path: &str) -> Result<(), ApiError> {
    let resp = Request::delete(path).send().await.map_err(unreachable)?;
    if resp.status() == 204 {
        return Ok(());
    }
    decode::<serde_json::Value>(resp).await.map(|_| ())
}

/// `path` with its query string, leaving out empty values.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", js_sys::encode_uri_component(v)))
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// A path segment (template names are DNS labels, but never trust that in a URL).
pub fn segment(s: &str) -> String {
    js_sys::encode_uri_component(s).into()
}
