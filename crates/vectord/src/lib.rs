//! The vector store service: Qdrant's REST API (paths, JSON and envelope)
//! over the `neocloud-vector` engine, so that `qdrant-client` and the
//! frameworks built on it work unchanged.
//!
//! Every answer is `{"result": ..., "status": "ok", "time": seconds}`;
//! every error `{"status": {"error": "..."}, "time": seconds}` with a 4xx
//! for what the caller can fix. Engine calls (fsync, index builds) run on
//! the blocking pool. Writes are acknowledged only once durable, so
//! `?wait=false` is answered as if it were `true`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use neocloud_api::{ApiError, ErrorKind};
use neocloud_vector::filter::{Filter, PayloadSchemaType};
use neocloud_vector::hnsw::HnswParams;
use neocloud_vector::quantize::{QuantizationSearch, ScalarQuantization};
use neocloud_vector::{
    Collection, CollectionConfig, Distance, Payload, PointId, PointStruct, ScoredPoint,
    SearchRequest, Store, VectorError,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The Qdrant API level these endpoints follow (what `GET /` reports).
pub const QDRANT_API_VERSION: &str = "1.15.0";

/// Turns text into vectors with a served embedding model (in `up`, the
/// worker's batching queue, the same path as `/v1/embeddings`).
pub trait TextEmbedder: Send + Sync {
    fn embed<'a>(&'a self, model: &'a str, texts: Vec<String>) -> ModelFuture<'a, Vec<Vec<f32>>>;
}

/// Answers an OpenAI chat request (non-streaming) with a served generative
/// model: the `chat.completion` object, or the model's error. Used to
/// generate on top of retrieval.
pub trait TextGenerator: Send + Sync {
    fn chat<'a>(&'a self, request: Value) -> ModelFuture<'a, Value>;
}

/// What a served model's answer is awaited as.
pub type ModelFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// A served model's error as the store reports it: a bad request or an
/// unknown model is a 400 (the collection exists; the request names a
/// model it cannot use), overload stays a 429 with its Retry-After,
/// anything else is a 503. Messages are prefixed with `what`.
fn model_error(what: &str, e: ApiError) -> VectorError {
    let message = format!("{what}: {}", e.message);
    match e.kind {
        ErrorKind::BadRequest | ErrorKind::PayloadTooLarge | ErrorKind::NotFound => {
            VectorError::BadRequest(message)
        }
        ErrorKind::Overloaded { retry_after } => VectorError::Unavailable {
            message,
            retry_after_s: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
        },
        ErrorKind::Unavailable | ErrorKind::Internal => VectorError::Unavailable {
            message,
            retry_after_s: None,
        },
    }
}

#[derive(Clone)]
pub struct VectorState {
    store: Arc<Store>,
    snapshots: PathBuf,
    embedder: Option<Arc<dyn TextEmbedder>>,
    generator: Option<Arc<dyn TextGenerator>>,
}

impl VectorState {
    /// Collections live in `DATA/collections`, snapshots in `DATA/snapshots`.
    pub fn open(data_dir: &std::path::Path) -> Result<VectorState, VectorError> {
        let store = Store::open(&data_dir.join("collections"))?;
        let snapshots = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(|err| VectorError::Io {
            path: snapshots.clone(),
            err,
        })?;
        Ok(VectorState {
            store: Arc::new(store),
            snapshots,
            embedder: None,
            generator: None,
        })
    }

    /// Lets collections embed text with served models.
    pub fn with_embedder(mut self, embedder: Arc<dyn TextEmbedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Lets retrieval generate answers with served chat models.
    pub fn with_generator(mut self, generator: Arc<dyn TextGenerator>) -> Self {
        self.generator = Some(generator);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

pub fn router(state: VectorState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/collections", get(list_collections))
        .route(
            "/collections/{c}",
            get(get_collection)
                .put(create_collection)
                .delete(delete_collection),
        )
        .route("/collections/{c}/exists", get(collection_exists))
        .route("/collections/{c}/points", put(upsert).post(retrieve))
        .route("/collections/{c}/points/{id}", get(get_point))
        .route("/collections/{c}/points/search", post(search))
        .route("/collections/{c}/points/search/batch", post(search_batch))
        .route("/collections/{c}/points/query", post(query))
        .route("/collections/{c}/points/scroll", post(scroll))
        .route("/collections/{c}/points/count", post(count))
        .route("/collections/{c}/points/delete", post(delete_points))
        .route("/collections/{c}/points/payload", post(set_payload))
        .route("/collections/{c}/index", put(create_index))
        .route(
            "/collections/{c}/index/{field}",
            axum::routing::delete(delete_index),
        )
        .route(
            "/collections/{c}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
        .route("/collections/{c}/snapshots/recover", put(recover_snapshot))
        .route("/collections/{c}/retrieve", post(retrieve_passages))
        .with_state(state)
}

mod collections;
mod points;
mod snapshots;

use collections::*;
use points::*;
use snapshots::*;

// ---------------------------------------------------------------- envelope

struct Reply {
    started: Instant,
    result: Result<Value, VectorError>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let time = self.started.elapsed().as_secs_f64();
        match self.result {
            Ok(result) => {
                axum::Json(json!({"result": result, "status": "ok", "time": time})).into_response()
            }
            Err(e) => {
                let mut retry = None;
                let status = match &e {
                    VectorError::BadRequest(_) => StatusCode::BAD_REQUEST,
                    VectorError::NotFound(_) => StatusCode::NOT_FOUND,
                    VectorError::Unavailable {
                        retry_after_s: Some(s),
                        ..
                    } => {
                        retry = Some(*s);
                        StatusCode::TOO_MANY_REQUESTS
                    }
                    VectorError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    VectorError::Io { .. } | VectorError::Corrupt { .. } => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                if status.is_server_error() {
                    tracing::error!(error = %e, "vector store");
                }
                let mut resp = (
                    status,
                    axum::Json(json!({"status": {"error": e.to_string()}, "time": time})),
                )
                    .into_response();
                if let Some(s) = retry {
                    resp.headers_mut()
                        .insert(axum::http::header::RETRY_AFTER, s.into());
                }
                resp
            }
        }
    }
}

/// Runs `f` on the blocking pool and wraps its answer.
async fn blocking(f: impl FnOnce() -> Result<Value, VectorError> + Send + 'static) -> Reply {
    let started = Instant::now();
    let result = engine(f).await;
    Reply { started, result }
}

/// Runs an engine call on the blocking pool.
async fn engine<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(VectorError::bad(format!("the request failed: {e}"))))
}

fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, VectorError> {
    let body = body.map_err(|e| VectorError::bad(format!("reading the body: {e}")))?;
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            VectorError::bad(format!("Json deserialize error: {}", e.inner()))
        } else {
            VectorError::bad(format!("Json deserialize error: {path}: {}", e.inner()))
        }
    })
}

fn update_result(seq: u64) -> Value {
    json!({"operation_id": seq, "status": "completed"})
}

fn collection(state: &VectorState, name: &str) -> Result<Arc<Collection>, VectorError> {
    state.store.get(name)
}
