//! One error type for every request path. Each protocol surface renders it in
//! its own shape (OpenAI's `{"error": {...}}`, KServe's `{"error": "..."}`).

use std::time::Duration;

/// What went wrong, in the terms an HTTP status code can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible (400).
    BadRequest,
    /// The named model or resource does not exist (404).
    NotFound,
    /// The body is larger than the configured limit (413).
    PayloadTooLarge,
    /// The queue is full; retry after the given delay (429).
    Overloaded { retry_after: Duration },
    /// The model exists but cannot answer now, e.g. still loading (503).
    Unavailable,
    /// A bug or an engine failure (500). Never caused by the request's content.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code for this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Overloaded { .. } => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// OpenAI's `error.type` string for this kind.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::BadRequest | ErrorKind::PayloadTooLarge => "invalid_request_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Overloaded { .. } => "rate_limit_error",
            ErrorKind::Unavailable => "service_unavailable",
            ErrorKind::Internal => "internal_error",
        }
    }
}

/// An error with a message that names the problem, and optionally the request
/// parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(ErrorKind::Overloaded { retry_after }, message)
    }

    /// Names the request parameter at fault (OpenAI's `error.param`).
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The body OpenAI clients expect: `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        let code = match self.kind {
            ErrorKind::NotFound => Some("model_not_found"),
            ErrorKind::PayloadTooLarge => Some("payload_too_large"),
            ErrorKind::Overloaded { .. } => Some("queue_full"),
            _ => None,
        };
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind.openai_type(),
                "param": self.param,
                "code": code,
            }
        })
    }

    /// The body of the KServe v2 protocol: `{"error": "..."}`.
    pub fn kserve_body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message })
    }
}
