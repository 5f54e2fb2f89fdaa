//! Rendering [`ApiError`] in each protocol's shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use neocloud_api::{ApiError, ErrorKind};

/// An error answered in OpenAI's shape.
pub struct OpenAiError(pub ApiError);

/// An error answered in KServe v2's shape.
pub struct KserveError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl From<ApiError> for KserveError {
    fn from(e: ApiError) -> Self {
        KserveError(e)
    }
}

impl From<neocloud_runtime::RuntimeError> for OpenAiError {
    fn from(e: neocloud_runtime::RuntimeError) -> Self {
        OpenAiError(e.into())
    }
}

impl From<neocloud_runtime::RuntimeError> for KserveError {
    fn from(e: neocloud_runtime::RuntimeError) -> Self {
        KserveError(e.into())
    }
}

fn respond(err: &ApiError, body: serde_json::Value) -> Response {
    let status =
        StatusCode::from_u16(err.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Only our own failures are errors; "still loading" is a normal answer.
    if err.kind == ErrorKind::Internal {
        tracing::error!(error = %err.message, "request failed");
    }
    let mut resp = (status, axum::Json(body)).into_response();
    if let ErrorKind::Overloaded { retry_after } = err.kind {
        let secs = retry_after.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        respond(&self.0, self.0.openai_body())
    }
}

impl IntoResponse for KserveError {
    fn into_response(self) -> Response {
        respond(&self.0, self.0.kserve_body())
    }
}

/// Maps a body-reading failure: over the limit is 413, anything else 400.
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            "the request body is larger than the server's limit",
        )
    } else {
        ApiError::bad_request(format!("cannot read the request body: {rejection}"))
    }
}

/// Unknown paths: a JSON 404 in the shape of the surface they aimed at.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let err = ApiError::not_found(format!("no route for {}", uri.path()));
    if uri.path().starts_with("/v2") {
        KserveError(err).into_response()
    } else {
        OpenAiError(err).into_response()
    }
}
