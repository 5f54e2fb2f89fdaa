//! The control plane's REST API, in the Kubernetes style, over the
//! [`Store`]:
//!
//! | method and path (under `/apis/neocloud.dev/v1`) | what |
//! | --- | --- |
//! | `GET /` | the resources served (`APIResourceList`) |
//! | `GET /{plural}` | a list (`ServiceList`); `?watch=true` streams changes |
//! | `POST /{plural}`, `PUT /{plural}/{name}` | apply (JSON or YAML): 201 created, 200 otherwise |
//! | `GET`, `DELETE /{plural}/{name}` | one object; delete returns it |
//! | `GET`, `PUT /{plural}/{name}/status` | the object; replace its status |
//! | `GET /events?kind=K&name=N` | events, oldest first (`EventList`) |
//! | `POST /events` | record an event (`type`, `reason`, `message`, `involvedObject`) |
//! | `GET /services/{name}/logs?tail=N` | the replicas' log tails, text |
//!
//! Every error is a Kubernetes `Status` object with a 4xx for what the
//! caller can fix, its message naming the field. A watch is newline-
//! delimited JSON `{"type": "ADDED"|"MODIFIED"|"DELETED", "object"}`:
//! the current objects as `ADDED`, then each committed change, until the
//! client goes away. The store keeps no history, so `?resourceVersion=N`
//! only skips objects unchanged since N; a watcher that falls behind gets
//! an `ERROR` event (410 Expired) and should list again.
//!
//! The apply outcome (`created`, `configured`, `unchanged`) is also in the
//! `neocloud-apply-outcome` response header.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::kind::Kind;
use crate::store::{ApplyOutcome, ControlError, EventType, Store};

mod logs;
mod watch;

/// Where the API lives.
pub const PREFIX: &str = "/apis/neocloud.dev/v1";

/// The largest request body accepted (413 past it).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The response header that tells what an apply did.
pub const APPLY_OUTCOME_HEADER: &str = "neocloud-apply-outcome";

/// What the handlers share.
#[derive(Clone)]
pub struct ControlState {
    pub store: Store,
    /// The data directory: service logs are read from `logs/services/`.
    pub data_dir: PathBuf,
}

/// The API's routes, to be merged into a server's router. It sets no
/// fallback, so merging never clashes.
pub fn router(store: Store, data_dir: PathBuf) -> Router {
    let state = ControlState { store, data_dir };
    Router::new()
        .route(PREFIX, get(discovery).fallback(method_not_allowed))
        .route(
            &format!("{PREFIX}/events"),
            get(events).post(post_event).fallback(method_not_allowed),
        )
        .route(
            &format!("{PREFIX}/{{plural}}"),
            get(list).post(create).fallback(method_not_allowed),
        )
        .route(
            &format!("{PREFIX}/{{plural}}/{{name}}"),
            get(get_object)
                .put(replace)
                .delete(delete)
                .fallback(method_not_allowed),
        )
        .route(
            &format!("{PREFIX}/{{plural}}/{{name}}/status"),
            get(get_object).put(put_status).fallback(method_not_allowed),
        )
        .route(
            &format!("{PREFIX}/{{plural}}/{{name}}/logs"),
            get(logs::service_logs).fallback(method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

// ------------------------------------------------------------------ errors

/// A Kubernetes `Status` error.
#[derive(Debug)]
pub struct StatusError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// The object concerned: (plural, name).
    pub details: Option<(String, String)>,
}

impl StatusError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        StatusError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    fn about(mut self, kind: Kind, name: &str) -> Self {
        self.details = Some((kind.plural().to_string(), name.to_string()));
        self
    }

    /// The `Status` body.
    pub fn body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some((kind, name)) = &self.details {
            status["details"] = json!({"name": name, "kind": kind});
        }
        status
    }
}

impl From<ControlError> for StatusError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::Invalid { .. } => {
                StatusError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            }
            ControlError::NotFound { kind, name } => {
                StatusError::not_found(message).about(kind, &name)
            }
            ControlError::Conflict { kind, name, .. } => {
                StatusError::new(StatusCode::CONFLICT, "Conflict", message).about(kind, &name)
            }
            ControlError::Storage(_) => {
                tracing::error!(error = %message, "control store");
                StatusError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
            }
        }
    }
}

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.body())).into_response()
    }
}

async fn method_not_allowed() -> StatusError {
    StatusError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the method is not allowed on this path",
    )
}

// ----------------------------------------------------------------- helpers

/// Runs a store call on the blocking pool (commits fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, StatusError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StatusError::from),
        Err(e) => Err(StatusError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("the request failed: {e}"),
        )),
    }
}

fn kind_of(plural: &str) -> Result<Kind, StatusError> {
    Kind::parse(plural)
        .filter(|k| k.plural() == plural)
        .ok_or_else(|| {
            StatusError::not_found(format!(
                "the server could not find the requested resource {plural:?} \
                 (known: models, services, collections)"
            ))
        })
}

fn path_error(e: PathRejection) -> StatusError {
    StatusError::bad_request(format!("path: {}", e.body_text()))
}

fn query_error(e: QueryRejection) -> StatusError {
    StatusError::bad_request(format!("query: {}", e.body_text()))
}

/// The request body as JSON: parsed as JSON when the Content-Type says so
/// or it starts with `{`, as YAML otherwise.
fn parse_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, StatusError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            StatusError::bad_request(format!("reading the body: {}", e.body_text()))
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let starts_like_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    let value =
        if content_type.contains("json") || (!content_type.contains("yaml") && starts_like_json) {
            serde_json::from_slice::<Value>(&body)
                .map_err(|e| StatusError::bad_request(format!("the body is not valid JSON: {e}")))?
        } else {
            let text = std::str::from_utf8(&body)
                .map_err(|e| StatusError::bad_request(format!("the body is not UTF-8: {e}")))?;
            serde_norway::from_str::<Value>(text)
                .map_err(|e| StatusError::bad_request(format!("the body is not valid YAML: {e}")))?
        };
    if !value.is_object() {
        return Err(StatusError::bad_request(
            "the body must be one resource, a mapping with apiVersion, kind, metadata and spec",
        ));
    }
    Ok(value)
}

/// The document's kind must be the one the URL names.
fn check_kind(doc: &Value, kind: Kind) -> Result<(), StatusError> {
    match doc.get("kind").and_then(Value::as_str) {
        Some(given) if given != kind.name() => Err(StatusError::bad_request(format!(
            "kind: {given:?} does not match the URL, which is for {} (kind {})",
            kind.plural(),
            kind.name()
        ))),
        // Missing or not a string: validation says so.
        _ => Ok(()),
    }
}

fn json_response(code: StatusCode, value: Value) -> Response {
    (code, axum::Json(value)).into_response()
}

// ---------------------------------------------------------------- handlers

async fn discovery() -> Response {
    let resources: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| {
            json!({
                "name": k.plural(),
                "singularName": k.singular(),
                "kind": k.name(),
                "namespaced": false,
                "verbs": ["create", "delete", "get", "list", "update", "watch"],
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": neocloud_api::API_VERSION,
            "resources": resources,
        }),
    )
}

async fn list(
    State(state): State<ControlState>,
    plural: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Response, StatusError> {
    let Path(plural) = plural.map_err(path_error)?;
    let Query(query) = query.map_err(query_error)?;
    let kind = kind_of(&plural)?;
    let watching = match query.get("watch").map(String::as_str) {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(StatusError::bad_request(format!(
                "watch: {other:?} is not a boolean (true, false, 1 or 0)"
            )));
        }
    };
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            StatusError::bad_request(format!(
                "resourceVersion: {v:?} is not a resource version (a whole number)"
            ))
        })?,
    };
    if watching {
        return watch::watch(state.store, kind, since).await;
    }
    let store = state.store.clone();
    let (objects, revision) = blocking(move || store.list_at(kind)).await?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "apiVersion": neocloud_api::API_VERSION,
            "kind": format!("{}List", kind.name()),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": objects,
        }),
    ))
}

async fn create(
    State(state): State<ControlState>,
    plural: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, StatusError> {
    let Path(plural) = plural.map_err(path_error)?;
    let kind = kind_of(&plural)?;
    let doc = parse_body(&headers, body)?;
    check_kind(&doc, kind)?;
    apply(state.store, doc).await
}

async fn replace(
    State(state): State<ControlState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, StatusError> {
    let Path((plural, name)) = path.map_err(path_error)?;
    let kind = kind_of(&plural)?;
    let doc = parse_body(&headers, body)?;
    check_kind(&doc, kind)?;
    match doc.pointer("/metadata/name").and_then(Value::as_str) {
        Some(given) if given != name => {
            return Err(StatusError::bad_request(format!(
                "metadata.name: {given:?} does not match the name in the URL, {name:?}"
            ))
            .about(kind, &name));
        }
        _ => {}
    }
    apply(state.store, doc).await
}

async fn apply(store: Store, doc: Value) -> Result<Response, StatusError> {
    let (object, outcome) = blocking(move || store.apply(doc)).await?;
    tracing::info!(
        kind = %object.kind,
        name = %object.metadata.name,
        outcome = outcome.as_str(),
        "apply"
    );
    let code = if outcome == ApplyOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(code, object.to_value());
    response.headers_mut().insert(
        APPLY_OUTCOME_HEADER,
        HeaderValue::from_static(outcome.as_str()),
    );
    Ok(response)
}

async fn get_object(
    State(state): State<ControlState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, StatusError> {
    let Path((plural, name)) = path.map_err(path_error)?;
    let kind = kind_of(&plural)?;
    let store = state.store;
    let object = blocking(move || store.get(kind, &name)).await?;
    Ok(json_response(StatusCode::OK, object.to_value()))
}

async fn delete(
    State(state): State<ControlState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, StatusError> {
    let Path((plural, name)) = path.map_err(path_error)?;
    let kind = kind_of(&plural)?;
    let store = state.store;
    let object = blocking(move || store.delete(kind, &name)).await?;
    tracing::info!(kind = %object.kind, name = %object.metadata.name, "delete");
    Ok(json_response(StatusCode::OK, object.to_value()))
}

/// Replaces an object's status with the body's `status`. A
/// `metadata.generation` in the body is the generation the status was
/// computed for: 409 if the spec has moved on since.
async fn put_status(
    State(state): State<ControlState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, StatusError> {
    let Path((plural, name)) = path.map_err(path_error)?;
    let kind = kind_of(&plural)?;
    let doc = parse_body(&headers, body)?;
    let status = match doc.get("status") {
        Some(status @ Value::Object(_)) => status.clone(),
        Some(_) => return Err(StatusError::bad_request("status: must be a mapping")),
        None => return Err(StatusError::bad_request("status: missing field")),
    };
    let generation = match doc.pointer("/metadata/generation") {
        None | Some(Value::Null) => None,
        Some(g) => Some(g.as_u64().ok_or_else(|| {
            StatusError::bad_request(format!("metadata.generation: {g} is not a whole number"))
        })?),
    };
    let store = state.store;
    let object = blocking(move || store.update_status(kind, &name, status, generation)).await?;
    Ok(json_response(StatusCode::OK, object.to_value()))
}

async fn events(
    State(state): State<ControlState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Response, StatusError> {
    let Query(query) = query.map_err(query_error)?;
    let kind = match query.get("kind") {
        None => None,
        Some(k) => Some(Kind::parse(k).ok_or_else(|| {
            StatusError::bad_request(format!(
                "kind: unknown kind {k:?}, expected Model, Service or Collection"
            ))
        })?),
    };
    let name = query.get("name").cloned();
    if kind.is_none() && name.is_some() {
        return Err(StatusError::bad_request(
            "name: filtering by name needs a kind too (?kind=Service&name=...)",
        ));
    }
    let store = state.store;
    let items = blocking(move || match (kind, name) {
        (Some(kind), Some(name)) => store.events(Some((kind, &name))),
        (Some(kind), None) => Ok(store
            .events(None)?
            .into_iter()
            .filter(|e| e.involved_object.kind == kind.name())
            .collect()),
        _ => store.events(None),
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "apiVersion": neocloud_api::API_VERSION,
            "kind": "EventList",
            "items": items,
        }),
    ))
}

/// Records an event: `{"type": "Normal"|"Warning", "reason", "message",
/// "involvedObject": {"kind", "name"}}`. Answers 201 with the event (its
/// `count` above 1 when it repeated the object's latest one).
async fn post_event(
    State(state): State<ControlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, StatusError> {
    let doc = parse_body(&headers, body)?;
    let text = |pointer: &str, field: &str| -> Result<String, StatusError> {
        match doc.pointer(pointer) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(StatusError::bad_request(format!(
                "{field}: must not be empty"
            ))),
            Some(_) => Err(StatusError::bad_request(format!(
                "{field}: must be a string"
            ))),
            None => Err(StatusError::bad_request(format!("{field}: missing field"))),
        }
    };
    let type_ = match text("/type", "type")?.as_str() {
        "Normal" => EventType::Normal,
        "Warning" => EventType::Warning,
        other => {
            return Err(StatusError::bad_request(format!(
                "type: {other:?} is not Normal or Warning"
            )));
        }
    };
    let reason = text("/reason", "reason")?;
    let message = match doc.get("message") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(StatusError::bad_request("message: must be a string")),
    };
    let kind_text = text("/involvedObject/kind", "involvedObject.kind")?;
    let kind = Kind::parse(&kind_text).ok_or_else(|| {
        StatusError::bad_request(format!(
            "involvedObject.kind: unknown kind {kind_text:?}, expected Model, Service or Collection"
        ))
    })?;
    let name = text("/involvedObject/name", "involvedObject.name")?;
    let store = state.store;
    let event = blocking(move || store.record_event(kind, &name, type_, &reason, &message)).await?;
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::to_value(event).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests;
