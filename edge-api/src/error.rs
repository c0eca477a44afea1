//! The one error type of the API and how it maps to HTTP.

use concurrent_core::wire::ErrorBody;
use concurrent_core::Problem;
use worker::Response;

/// Everything a handler can fail with. Internal detail goes to the log, not to the caller.
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
    /// 413: the body is larger than the API accepts.
    TooLarge(String),
    /// 404
    NotFound(String),
    /// 409: a version conflict or a stale lease.
    Conflict(String),
    /// 502: MLflow or another upstream failed; retryable.
    Upstream(String),
    /// 500: a bug or a platform failure; retryable.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::TooLarge(_) => 413,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Upstream(_) => 502,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (code, message, problems) = match self {
            ApiError::BadRequest(m) => ("bad_request", m.clone(), vec![]),
            ApiError::Invalid { message, problems } => {
                ("invalid_template", message.clone(), problems.clone())
            }
            ApiError::Unauthorized(m) => ("unauthorized", m.clone(), vec![]),
            ApiError::Forbidden(m) => ("forbidden", m.clone(), vec![]),
            ApiError::TooLarge(m) => ("too_large", m.clone(), vec![]),
            ApiError::NotFound(m) => ("not_found", m.clone(), vec![]),
            ApiError::Conflict(m) => ("conflict", m.clone(), vec![]),
            ApiError::Upstream(m) => ("upstream_unavailable", m.clone(), vec![]),
            ApiError::Internal(m) => ("internal", m.clone(), vec![]),
        };
        ErrorBody::new(code, message, problems)
    }

    /// Rebuilds an error that crossed a Durable Object boundary.
    pub fn from_parts(status: u16, body: ErrorBody) -> ApiError {
        let e = body.error;
        match (status, e.code.as_str()) {
            (400, "invalid_template") => ApiError::Invalid {
                message: e.message,
                problems: e.details,
            },
            (400, _) => ApiError::BadRequest(e.message),
            (401, _) => ApiError::Unauthorized(e.message),
            (403, _) => ApiError::Forbidden(e.message),
            (413, _) => ApiError::TooLarge(e.message),
            (404, _) => ApiError::NotFound(e.message),
            (409, _) => ApiError::Conflict(e.message),
            (502, _) => ApiError::Upstream(e.message),
            _ => ApiError::Internal(e.message),
        }
    }

    pub fn into_response(self) -> worker::Result<Response> {
        if self.status() >= 500 {
            worker::console_error!("{}: {}", self.status(), self.body().error.message);
        }
        Ok(Response::from_json(&self.body())?.with_status(self.status()))
    }
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
