//! The one error type of the API and how it maps to HTTP.
//!
//! Callers learn what they can act on; internal detail (stored data, platform errors, MLflow's
//! address) goes to the log under a reference id, and the caller gets the id.

use concurrent_core::wire::ErrorBody;
use concurrent_core::Problem;
use worker::Response;

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request body or query is malformed.
    BadRequest(String),
    /// 400: a template has validation problems.
    Invalid {
        message: String,
        problems: Vec<Problem>,
    },
    /// 401: no or wrong credentials.
    Unauthorized(String),
    /// 403: valid credentials without the right.
    Forbidden(String),
    /// 404
    NotFound(String),
    /// 405: the path exists, the method does not.
    MethodNotAllowed(String),
    /// 409: a version conflict, a stale lease, or the run refused the event.
    Conflict(String),
    /// 413: the body is larger than the API accepts.
    TooLarge(String),
    /// 422: well-formed, but it contradicts what the key already stands for.
    Unprocessable(String),
    /// 503: the deployment is not configured (a missing or weak secret); the message says
    /// which setting to fix, and holds no secret.
    Misconfigured(String),
    /// 503: no agent of the cluster answered (none connected, or it took too long); the message
    /// says which cluster and what to start.
    NoAgent(String),
    /// 502: MLflow or another upstream failed; retryable. The detail is logged, not shown.
    Upstream(String),
    /// 500: a bug or a platform failure; retryable. The detail is logged, not shown.
    Internal(String),
    /// A 5xx that was already logged where it happened (across a Durable Object boundary):
    /// passed on as it is.
    Reported { status: u16, body: ErrorBody },
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::Unprocessable(_) => 422,
            ApiError::Misconfigured(_) | ApiError::NoAgent(_) => 503,
            ApiError::Upstream(_) => 502,
            ApiError::Internal(_) => 500,
            ApiError::Reported { status, .. } => *status,
        }
    }

    /// The error as the caller sees it. A 5xx is logged here with a fresh reference id, which
    /// the caller's message carries.
    pub fn body(&self) -> ErrorBody {
        let simple = |code: &str, m: &String| ErrorBody::new(code, m.clone(), vec![]);
        match self {
            ApiError::BadRequest(m) => simple("bad_request", m),
            ApiError::Invalid { message, problems } => {
                ErrorBody::new("invalid_template", message.clone(), problems.clone())
            }
            ApiError::Unauthorized(m) => simple("unauthorized", m),
            ApiError::Forbidden(m) => simple("forbidden", m),
            ApiError::NotFound(m) => simple("not_found", m),
            ApiError::MethodNotAllowed(m) => simple("method_not_allowed", m),
            ApiError::Conflict(m) => simple("conflict", m),
            ApiError::TooLarge(m) => simple("too_large", m),
            ApiError::Unprocessable(m) => simple("unprocessable", m),
            ApiError::Misconfigured(m) => {
                worker::console_error!("misconfigured: {m}");
                simple("misconfigured", m)
            }
            ApiError::NoAgent(m) => simple("no_agent", m),
            ApiError::Upstream(detail) => {
                let id = log_with_reference(502, detail);
                ErrorBody::new(
                    "upstream_unavailable",
                    format!("MLflow (or another service the edge calls) failed; retry later. Reference {id} in the edge's log has the detail"),
                    vec![],
                )
            }
            ApiError::Internal(detail) => {
                let id = log_with_reference(500, detail);
                ErrorBody::new(
                    "internal",
                    format!("internal error; retry, and if it persists report reference {id} (the edge's log has the detail)"),
                    vec![],
                )
            }
            ApiError::Reported { body, .. } => body.clone(),
        }
    }

    /// Rebuilds an error that crossed a Durable Object boundary.
    pub fn from_parts(status: u16, body: ErrorBody) -> ApiError {
        let e = body.error.clone();
        match (status, e.code.as_str()) {
            (400, "invalid_template") => ApiError::Invalid {
                message: e.message,
                problems: e.details,
            },
            (400, _) => ApiError::BadRequest(e.message),
            (401, _) => ApiError::Unauthorized(e.message),
            (403, _) => ApiError::Forbidden(e.message),
            (404, _) => ApiError::NotFound(e.message),
            (405, _) => ApiError::MethodNotAllowed(e.message),
            (409, _) => ApiError::Conflict(e.message),
            (413, _) => ApiError::TooLarge(e.message),
            (422, _) => ApiError::Unprocessable(e.message),
            (status, _) => ApiError::Reported {
                status: if status >= 500 { status } else { 500 },
                body,
            },
        }
    }

    /// The message for logs: the detail of 5xx errors, the caller's message otherwise.
    pub fn detail(&self) -> String {
        match self {
            ApiError::Upstream(d) | ApiError::Internal(d) => d.clone(),
            ApiError::Reported { body, .. } => body.error.message.clone(),
            other => other.body().error.message,
        }
    }

    pub fn into_response(self) -> worker::Result<Response> {
        let status = self.status();
        let mut resp = Response::from_json(&self.body())?.with_status(status);
        if status == 401 {
            resp.headers_mut()
                .set("WWW-Authenticate", "Bearer realm=\"concurrent\"")?;
        }
        Ok(resp)
    }
}

/// Logs a 5xx's detail under a new reference id; the id.
fn log_with_reference(status: u16, detail: &str) -> String {
    let id = crate::platform::random_id()[..12].to_string();
    worker::console_error!("[ref {id}] {status}: {detail}");
    id
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        ApiError::Internal(format!("platform error: {e}"))
    }
}

impl From<worker::KvError> for ApiError {
    fn from(e: worker::KvError) -> Self {
        ApiError::Internal(format!("KV error: {e}"))
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(format!("stored data does not decode: {e}"))
    }
}

/// Turns a handler result into a response.
pub fn respond<T: serde::Serialize>(
    result: Result<T, ApiError>,
    status: u16,
) -> worker::Result<Response> {
    match result {
        Ok(v) => Ok(Response::from_json(&v)?.with_status(status)),
        Err(e) => e.into_response(),
    }
}
