//! API errors: each maps to one status, and every error body is an [`ErrorBody`]
//! `{statusCode, error, message, path, timestamp, requestId}` (the envelope is added by
//! [`super::envelope`], which knows the path and the request id).

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Every problem of a request, named.
    #[error("{}", .0.join("; "))]
    BadRequest(Vec<String>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// A file over the operator's bound (413).
    #[error("{0}")]
    FileTooLarge(String),
    /// An upload without `Content-Length` (411).
    #[error("{0}")]
    LengthRequired(String),
    /// The desktop's engine failed (502).
    #[error("{0}")]
    BadGateway(String),
    /// Over a quota or a rate limit; `retry_after` (seconds) becomes `Retry-After`.
    #[error("{message}")]
    TooMany {
        message: String,
        retry_after: Option<u64>,
    },
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) | ApiError::FileTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound(format!("{what} not found"))
    }
}

/// The body of every error response (4xx and 5xx), whichever part of the API answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The response's HTTP status code.
    #[schema(example = 404)]
    pub status_code: u16,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    pub error: &'static str,
    /// What went wrong; a 400 names every problem of the request, separated by `; `.
    #[schema(example = "container not found")]
    pub message: String,
    /// The request's path.
    #[schema(example = "/v1/containers/4b1c0c52-4a51-4f8e-9a55-1f0f6a3f8a11")]
    pub path: String,
    /// When the error was answered: RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The request's id, also in the `x-request-id` header.
    pub request_id: String,
}

/// The message of an error response, carried to the envelope middleware.
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status().into_response();
        if let ApiError::TooMany {
            retry_after: Some(secs),
            ..
        } = &self
        {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(*secs));
        }
        resp.extensions_mut().insert(ErrorMessage(self.to_string()));
        resp
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(p) => ApiError::BadRequest(p),
            AppError::NotFound(what) => ApiError::not_found(what),
            AppError::Forbidden(m) => ApiError::Forbidden(m),
            AppError::Conflict(m) => ApiError::Conflict(m),
            AppError::OverQuota(message) => ApiError::TooMany {
                message,
                retry_after: None,
            },
            // The caller reads what failed underneath.
            AppError::Store(e) => ApiError::Unavailable(e.to_string()),
            AppError::Queue(e) => ApiError::Unavailable(e.to_string()),
            AppError::Signing(e) => ApiError::Unavailable(format!("signing failed: {e}")),
            AppError::TooLarge(m) => ApiError::FileTooLarge(m),
            AppError::Desktop(e) if e.retryable() => ApiError::Unavailable(e.to_string()),
            AppError::Desktop(e) => ApiError::BadGateway(e.to_string()),
        }
    }
}
