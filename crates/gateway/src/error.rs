//! The gateway's own answers: what went wrong before a replica answered,
//! rendered in the caller's protocol (OpenAI's `{"error": {...}}` on `/v1`,
//! KServe's `{"error": "..."}` on `/v2`).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A request the gateway answers itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The body is not JSON, not an object, or lacks a string `"model"` (400).
    #[error("{0}")]
    BadRequest(String),
    /// No service has this name (404).
    #[error("The model '{model}' does not exist; served models: {}", served_list(.served))]
    UnknownModel { model: String, served: Vec<String> },
    /// The body exceeds the gateway's limit (413).
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The service's bound on in-flight plus held requests is reached (429).
    #[error("too many requests for '{service}' are in flight; retry later")]
    QueueFull {
        service: String,
        retry_after: Duration,
    },
    /// The service had no replica within the activation wait (503).
    #[error("no replica of '{service}' became ready in time; retry later")]
    NoReplica {
        service: String,
        retry_after: Duration,
    },
    /// Every endpoint tried failed before answering (502).
    #[error("no replica of '{service}' could be reached: {detail}")]
    UpstreamUnreachable {
        service: String,
        detail: String,
        retry_after: Duration,
    },
    /// No API key, or one that is not known (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The key may not call this service (403).
    #[error("the API key '{key}' may not use the model '{service}'")]
    Forbidden { key: String, service: String },
}

fn served_list(served: &[String]) -> String {
    if served.is_empty() {
        "none".to_string()
    } else {
        served.join(", ")
    }
}

/// Which protocol's error shape a path speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    OpenAi,
    KServe,
}

impl Surface {
    pub fn of_path(path: &str) -> Surface {
        if path.starts_with("/v2/") {
            Surface::KServe
        } else {
            Surface::OpenAi
        }
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnknownModel { .. } => StatusCode::NOT_FOUND,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::NoReplica { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    fn openai_type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            GatewayError::BadRequest(_) => ("invalid_request_error", None),
            GatewayError::UnknownModel { .. } => ("invalid_request_error", Some("model_not_found")),
            GatewayError::PayloadTooLarge { .. } => {
                ("invalid_request_error", Some("payload_too_large"))
            }
            GatewayError::QueueFull { .. } => ("rate_limit_error", Some("queue_full")),
            GatewayError::NoReplica { .. } => ("service_unavailable", Some("no_replica")),
            GatewayError::UpstreamUnreachable { .. } => {
                ("service_unavailable", Some("upstream_unreachable"))
            }
            GatewayError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            GatewayError::Forbidden { .. } => ("permission_error", Some("model_not_allowed")),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::QueueFull { retry_after, .. }
            | GatewayError::NoReplica { retry_after, .. }
            | GatewayError::UpstreamUnreachable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The response in `surface`'s error shape, with `Retry-After` where
    /// retrying helps and `WWW-Authenticate` on 401.
    pub(crate) fn render(&self, surface: Surface) -> Response {
        let message = self.to_string();
        let body = match surface {
            Surface::OpenAi => {
                let (kind, code) = self.openai_type_and_code();
                serde_json::json!({
                    "error": { "message": message, "type": kind, "param": null, "code": code }
                })
            }
            Surface::KServe => serde_json::json!({ "error": message }),
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, GatewayError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
