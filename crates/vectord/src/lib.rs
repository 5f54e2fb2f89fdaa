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
use neocloud_vector::filter::{Filter, PayloadSchemaType};
use neocloud_vector::hnsw::HnswParams;
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
    fn embed<'a>(&'a self, model: &'a str, texts: Vec<String>) -> EmbedFuture<'a>;
}

/// What [`TextEmbedder::embed`] returns: the vectors, or why not.
pub type EmbedFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Vec<f32>>, String>> + Send + 'a>>;

#[derive(Clone)]
pub struct VectorState {
    store: Arc<Store>,
    snapshots: PathBuf,
    embedder: Option<Arc<dyn TextEmbedder>>,
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
        })
    }

    /// Lets collections embed text with served models.
    pub fn with_embedder(mut self, embedder: Arc<dyn TextEmbedder>) -> Self {
        self.embedder = Some(embedder);
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
                let status = match &e {
                    VectorError::BadRequest(_) => StatusCode::BAD_REQUEST,
                    VectorError::NotFound(_) => StatusCode::NOT_FOUND,
                    VectorError::Io { .. } | VectorError::Corrupt { .. } => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                if status.is_server_error() {
                    tracing::error!(error = %e, "vector store");
                }
                (
                    status,
                    axum::Json(json!({"status": {"error": e.to_string()}, "time": time})),
                )
                    .into_response()
            }
        }
    }
}

/// Runs `f` on the blocking pool and wraps its answer.
async fn blocking(f: impl FnOnce() -> Result<Value, VectorError> + Send + 'static) -> Reply {
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(VectorError::bad(format!("the request failed: {e}"))));
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

// ---------------------------------------------------------------- collections

async fn root() -> axum::Json<Value> {
    axum::Json(json!({
        "title": "neocloud vector store (Qdrant-compatible)",
        "version": QDRANT_API_VERSION,
        "neocloud_version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn list_collections(State(state): State<VectorState>) -> Reply {
    blocking(move || {
        let names: Vec<Value> = state
            .store
            .names()
            .into_iter()
            .map(|n| json!({"name": n}))
            .collect();
        Ok(json!({"collections": names}))
    })
    .await
}

#[derive(Deserialize)]
struct VectorParams {
    size: usize,
    distance: DistanceName,
}

/// Qdrant spells distances `Cosine`, `Dot`, `Euclid` (and `Manhattan`,
/// which we refuse by name).
#[derive(Deserialize)]
enum DistanceName {
    Cosine,
    Dot,
    Euclid,
    Manhattan,
}

#[derive(Deserialize, Default)]
struct HnswDiff {
    m: Option<usize>,
    ef_construct: Option<usize>,
}

#[derive(Deserialize)]
struct CreateCollection {
    vectors: VectorParams,
    #[serde(default)]
    hnsw_config: Option<HnswDiff>,
    /// neocloud: the embedding service that turns this collection's text
    /// into vectors.
    #[serde(default)]
    embed: Option<String>,
}

async fn create_collection(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let req: CreateCollection = parse(body)?;
        let distance = match req.vectors.distance {
            DistanceName::Cosine => Distance::Cosine,
            DistanceName::Dot => Distance::Dot,
            DistanceName::Euclid => Distance::Euclid,
            DistanceName::Manhattan => {
                return Err(VectorError::bad(
                    "vectors.distance: Manhattan is not supported; use Cosine, Dot or Euclid",
                ));
            }
        };
        let defaults = HnswParams::default();
        let hnsw = req.hnsw_config.unwrap_or_default();
        state.store.create(
            &name,
            CollectionConfig {
                dim: req.vectors.size,
                distance,
                hnsw: HnswParams {
                    m: hnsw.m.unwrap_or(defaults.m),
                    ef_construct: hnsw.ef_construct.unwrap_or(defaults.ef_construct),
                },
                embed: req.embed,
            },
        )?;
        Ok(json!(true))
    })
    .await
}

async fn delete_collection(State(state): State<VectorState>, Path(name): Path<String>) -> Reply {
    blocking(move || Ok(json!(state.store.delete(&name)?))).await
}

async fn collection_exists(State(state): State<VectorState>, Path(name): Path<String>) -> Reply {
    blocking(move || Ok(json!({"exists": state.store.get(&name).is_ok()}))).await
}

fn distance_name(d: Distance) -> &'static str {
    match d {
        Distance::Cosine => "Cosine",
        Distance::Dot => "Dot",
        Distance::Euclid => "Euclid",
    }
}

fn schema_name(s: PayloadSchemaType) -> &'static str {
    match s {
        PayloadSchemaType::Keyword => "keyword",
        PayloadSchemaType::Integer => "integer",
        PayloadSchemaType::Float => "float",
        PayloadSchemaType::Bool => "bool",
    }
}

async fn get_collection(State(state): State<VectorState>, Path(name): Path<String>) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let config = c.config();
        let n = c.len();
        let mut schema = serde_json::Map::new();
        for (field, ty) in c.field_indexes() {
            schema.insert(field, json!({"data_type": schema_name(ty), "points": n}));
        }
        let mut params = json!({
            "vectors": {"size": config.dim, "distance": distance_name(config.distance)},
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": false,
        });
        if let Some(embed) = &config.embed {
            params["embed"] = json!(embed);
        }
        Ok(json!({
            "status": "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": n,
            "points_count": n,
            "segments_count": 1,
            "config": {
                "params": params,
                "hnsw_config": {
                    "m": config.hnsw.m,
                    "ef_construct": config.hnsw.ef_construct,
                    "full_scan_threshold": neocloud_vector::collection::FULL_SCAN_POINTS,
                    "on_disk": false,
                },
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 1,
                    "flush_interval_sec": 0,
                },
                "wal_config": {"wal_capacity_mb": 64, "wal_segments_ahead": 0},
            },
            "payload_schema": schema,
        }))
    })
    .await
}

// ---------------------------------------------------------------- points

#[derive(Deserialize)]
struct PointIn {
    id: PointId,
    vector: Value,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Batch {
    ids: Vec<PointId>,
    vectors: Vec<Value>,
    #[serde(default)]
    payloads: Option<Vec<Option<Payload>>>,
}

#[derive(Deserialize)]
struct UpsertBody {
    #[serde(default)]
    points: Option<Vec<PointIn>>,
    #[serde(default)]
    batch: Option<Batch>,
}

/// A vector as given: numbers, or text to embed (Qdrant's inference
/// object `{"text": "...", "model": "..."}`; the model defaults to the
/// collection's `embed` service).
enum VecIn {
    Dense(Vec<f32>),
    Text { text: String, model: Option<String> },
}

fn vec_in(v: &Value, what: &str) -> Result<VecIn, VectorError> {
    if let Value::Object(o) = v
        && o.contains_key("text")
    {
        let text = match o.get("text") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => {
                return Err(VectorError::bad(format!(
                    "{what}.text must be a non-empty string"
                )));
            }
        };
        let model = match o.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.clone()),
            Some(other) => {
                return Err(VectorError::bad(format!(
                    "{what}.model must be a string, got {other}"
                )));
            }
        };
        return Ok(VecIn::Text { text, model });
    }
    dense(v, what).map(VecIn::Dense)
}

/// Embeds the texts among `inputs` (one call per model) and returns every
/// vector in order.
async fn resolve(
    state: &VectorState,
    c: &Collection,
    inputs: Vec<VecIn>,
) -> Result<Vec<Vec<f32>>, VectorError> {
    let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(inputs.len());
    let mut by_model: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (i, v) in inputs.into_iter().enumerate() {
        match v {
            VecIn::Dense(d) => out.push(Some(d)),
            VecIn::Text { text, model } => {
                let model = model.or_else(|| c.config().embed.clone()).ok_or_else(|| {
                    VectorError::bad(
                        "text given but the collection has no `embed` service: create it with \"embed\": \"MODEL\" or pass \"model\"",
                    )
                })?;
                by_model.entry(model).or_default().push((i, text));
                out.push(None);
            }
        }
    }
    for (model, items) in by_model {
        let embedder = state.embedder.as_ref().ok_or_else(|| {
            VectorError::bad("this server does not embed text (no embedding models)")
        })?;
        let (slots, texts): (Vec<usize>, Vec<String>) = items.into_iter().unzip();
        let vectors = embedder
            .embed(&model, texts)
            .await
            .map_err(|e| VectorError::bad(format!("embedding with {model:?}: {e}")))?;
        for (slot, v) in slots.into_iter().zip(vectors) {
            out[slot] = Some(v);
        }
    }
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}

/// A point's vector: a list of numbers, or Qdrant's single unnamed vector
/// in the named form `{"": [...]}`.
fn dense(v: &Value, what: &str) -> Result<Vec<f32>, VectorError> {
    let list = match v {
        Value::Array(items) => items,
        Value::Object(named) if named.len() == 1 && named.contains_key("") => {
            return dense(&named[""], what);
        }
        Value::Object(_) => {
            return Err(VectorError::bad(format!(
                "{what}: named vectors are not supported; give a list of numbers"
            )));
        }
        other => {
            return Err(VectorError::bad(format!(
                "{what}: expected a list of numbers, got {other}"
            )));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, x)| match x.as_f64() {
            Some(f) if f.is_finite() && (f as f32).is_finite() => Ok(f as f32),
            _ => Err(VectorError::bad(format!(
                "{what}[{i}]: {x} is not a finite number"
            ))),
        })
        .collect()
}

async fn upsert(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let started = Instant::now();
    let result = async {
        let c = collection(&state, &name)?;
        let req: UpsertBody = parse(body)?;
        let mut ids = Vec::new();
        let mut vectors = Vec::new();
        let mut payloads = Vec::new();
        match (req.points, req.batch) {
            (Some(points), None) => {
                for (i, p) in points.into_iter().enumerate() {
                    vectors.push(vec_in(&p.vector, &format!("points[{i}].vector"))?);
                    ids.push(p.id);
                    payloads.push(p.payload.unwrap_or_default());
                }
            }
            (None, Some(b)) => {
                if b.vectors.len() != b.ids.len()
                    || b.payloads.as_ref().is_some_and(|p| p.len() != b.ids.len())
                {
                    return Err(VectorError::bad(
                        "batch: ids, vectors and payloads must have the same length",
                    ));
                }
                for (i, v) in b.vectors.iter().enumerate() {
                    vectors.push(vec_in(v, &format!("batch.vectors[{i}]"))?);
                }
                let n = b.ids.len();
                ids = b.ids;
                payloads = b
                    .payloads
                    .unwrap_or_default()
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                payloads.resize(n, Payload::new());
            }
            _ => return Err(VectorError::bad("give either `points` or `batch`")),
        }
        let vectors = resolve(&state, &c, vectors).await?;
        let points: Vec<PointStruct> = ids
            .into_iter()
            .zip(vectors)
            .zip(payloads)
            .map(|((id, vector), payload)| PointStruct {
                id,
                vector,
                payload,
            })
            .collect();
        engine(move || Ok(update_result(c.upsert(points)?))).await
    }
    .await;
    Reply { started, result }
}

/// `with_payload` / `with_vector`: a bool, or (for payload) a list of keys
/// or `{"include": [...]}` / `{"exclude": [...]}`.
#[derive(Deserialize, Clone, Default)]
#[serde(untagged)]
enum WithPayload {
    Flag(bool),
    Keys(Vec<String>),
    Select {
        #[serde(default)]
        include: Option<Vec<String>>,
        #[serde(default)]
        exclude: Option<Vec<String>>,
    },
    #[default]
    Default,
}

impl WithPayload {
    fn apply(&self, payload: Payload, default: bool) -> Option<Payload> {
        match self {
            WithPayload::Flag(false) => None,
            WithPayload::Flag(true) => Some(payload),
            WithPayload::Default => default.then_some(payload),
            WithPayload::Keys(keys) => Some(
                payload
                    .into_iter()
                    .filter(|(k, _)| keys.contains(k))
                    .collect(),
            ),
            WithPayload::Select { include, exclude } => Some(
                payload
                    .into_iter()
                    .filter(|(k, _)| include.as_ref().is_none_or(|i| i.contains(k)))
                    .filter(|(k, _)| exclude.as_ref().is_none_or(|e| !e.contains(k)))
                    .collect(),
            ),
        }
    }
}

fn record(
    p: PointStruct,
    with_payload: &WithPayload,
    default_payload: bool,
    with_vector: bool,
) -> Value {
    let mut r = json!({"id": p.id});
    if let Some(payload) = with_payload.apply(p.payload, default_payload) {
        r["payload"] = Value::Object(payload);
    }
    if with_vector {
        r["vector"] = json!(p.vector);
    }
    r
}

fn scored(p: ScoredPoint, with_payload: &WithPayload, with_vector: bool) -> Value {
    let mut r = json!({"id": p.id, "version": 0, "score": p.score});
    if let Some(payload) = with_payload.apply(p.payload, false) {
        r["payload"] = Value::Object(payload);
    }
    if with_vector {
        r["vector"] = json!(p.vector);
    }
    r
}

#[derive(Deserialize)]
struct RetrieveBody {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
}

async fn retrieve(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: RetrieveBody = parse(body)?;
        let points: Vec<Value> = c
            .get(&req.ids)
            .into_iter()
            .map(|p| record(p, &req.with_payload, true, req.with_vector))
            .collect();
        Ok(json!(points))
    })
    .await
}

async fn get_point(
    State(state): State<VectorState>,
    Path((name, id)): Path<(String, String)>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let id: PointId = serde_json::from_str(&id)
            .or_else(|_| serde_json::from_value(Value::String(id.clone())))
            .map_err(|_| VectorError::bad(format!("{id:?} is not a point id")))?;
        let p = c
            .get(&[id])
            .pop()
            .ok_or_else(|| VectorError::NotFound(format!("No point with id {id} found")))?;
        Ok(record(p, &WithPayload::Flag(true), true, true))
    })
    .await
}

fn filter_of(v: Option<Value>) -> Result<Option<Filter>, VectorError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Filter::from_json(&v).map(Some),
    }
}

#[derive(Deserialize, Default)]
struct SearchParams {
    #[serde(default)]
    hnsw_ef: Option<usize>,
    #[serde(default)]
    exact: bool,
}

#[derive(Deserialize)]
struct SearchBody {
    vector: Value,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
    #[serde(default)]
    params: Option<SearchParams>,
    #[serde(default)]
    score_threshold: Option<f32>,
}

fn ten() -> usize {
    10
}

/// Embeds the query if it is text, then searches on the blocking pool.
async fn run_search(
    state: &VectorState,
    c: Arc<Collection>,
    req: SearchBody,
) -> Result<Vec<Value>, VectorError> {
    let query = vec_in(&req.vector, "vector")?;
    let vector = resolve(state, &c, vec![query]).await?.remove(0);
    let params = req.params.unwrap_or_default();
    let filter = filter_of(req.filter)?;
    let (with_payload, with_vector) = (req.with_payload, req.with_vector);
    let hits = engine(move || {
        c.search(&SearchRequest {
            vector,
            limit: req.limit,
            offset: req.offset,
            filter,
            ef: params.hnsw_ef,
            exact: params.exact,
            score_threshold: req.score_threshold,
        })
    })
    .await?;
    Ok(hits
        .into_iter()
        .map(|h| scored(h, &with_payload, with_vector))
        .collect())
}

async fn search(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let started = Instant::now();
    let result = async {
        let c = collection(&state, &name)?;
        Ok(json!(run_search(&state, c, parse(body)?).await?))
    }
    .await;
    Reply { started, result }
}

#[derive(Deserialize)]
struct SearchBatchBody {
    searches: Vec<SearchBody>,
}

async fn search_batch(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let started = Instant::now();
    let result = async {
        let c = collection(&state, &name)?;
        let req: SearchBatchBody = parse(body)?;
        let mut out = Vec::with_capacity(req.searches.len());
        for s in req.searches {
            out.push(run_search(&state, c.clone(), s).await?);
        }
        Ok(json!(out))
    }
    .await;
    Reply { started, result }
}

#[derive(Deserialize)]
struct QueryBody {
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
    #[serde(default)]
    params: Option<SearchParams>,
    #[serde(default)]
    score_threshold: Option<f32>,
}

/// `POST .../points/query`: `query` is a vector, `{"nearest": vector}`,
/// text to embed (`{"text": ...}`, also under `nearest`), or a point id
/// (search by that point's vector); absent, it lists points in id order
/// like scroll.
async fn query(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let started = Instant::now();
    let result = async {
        let c = collection(&state, &name)?;
        let req: QueryBody = parse(body)?;
        let vector = match req.query {
            None | Some(Value::Null) => {
                let filter = filter_of(req.filter)?;
                let (limit, offset) = (req.limit, req.offset);
                let (with_payload, with_vector) = (req.with_payload, req.with_vector);
                return engine(move || {
                    let (points, _) = c.scroll(filter.as_ref(), None, offset + limit);
                    let points: Vec<Value> = points
                        .into_iter()
                        .skip(offset)
                        .map(|p| {
                            let mut r = record(p, &with_payload, false, with_vector);
                            r["version"] = json!(0);
                            r["score"] = json!(1.0);
                            r
                        })
                        .collect();
                    Ok(json!({"points": points}))
                })
                .await;
            }
            Some(Value::Object(o)) if o.contains_key("nearest") => o["nearest"].clone(),
            Some(v @ (Value::Array(_) | Value::Object(_))) => v,
            Some(id @ (Value::Number(_) | Value::String(_))) => {
                let id: PointId = serde_json::from_value(id.clone())
                    .map_err(|_| VectorError::bad(format!("query: {id} is not a point id")))?;
                let p = c.get(&[id]).pop().ok_or_else(|| {
                    VectorError::NotFound(format!("query: no point with id {id}"))
                })?;
                json!(p.vector)
            }
            Some(other) => {
                return Err(VectorError::bad(format!(
                    "query: expected a vector, {{\"nearest\": vector}}, {{\"text\": ...}} or a point id, got {other}"
                )));
            }
        };
        let hits = run_search(
            &state,
            c,
            SearchBody {
                vector,
                filter: req.filter,
                limit: req.limit,
                offset: req.offset,
                with_payload: req.with_payload,
                with_vector: req.with_vector,
                params: req.params,
                score_threshold: req.score_threshold,
            },
        )
        .await?;
        Ok(json!({"points": hits}))
    }
    .await;
    Reply { started, result }
}

#[derive(Deserialize)]
struct RetrieveTextBody {
    query: String,
    #[serde(default = "five")]
    limit: usize,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    model: Option<String>,
    /// The payload key that holds a point's passage.
    #[serde(default = "text_key")]
    text_key: String,
}

fn five() -> usize {
    5
}

fn text_key() -> String {
    "text".into()
}

/// `POST /collections/{c}/retrieve` (neocloud): the top-k passages for a
/// text query, embedded with the collection's service: `{"query", "limit",
/// "filter"?, "model"?, "text_key"?}` → `{"passages": [{"id", "score",
/// "text", "payload"}]}`.
async fn retrieve_passages(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let started = Instant::now();
    let result = async {
        let c = collection(&state, &name)?;
        let req: RetrieveTextBody = parse(body)?;
        if req.query.trim().is_empty() {
            return Err(VectorError::bad("query must not be empty"));
        }
        let query = json!({"text": req.query, "model": req.model});
        let hits = run_search(
            &state,
            c,
            SearchBody {
                vector: query,
                filter: req.filter,
                limit: req.limit,
                offset: 0,
                with_payload: WithPayload::Flag(true),
                with_vector: false,
                params: None,
                score_threshold: None,
            },
        )
        .await?;
        let passages: Vec<Value> = hits
            .into_iter()
            .map(|mut h| {
                let text = h["payload"]
                    .get(&req.text_key)
                    .cloned()
                    .unwrap_or(Value::Null);
                h.as_object_mut().map(|o| o.remove("version"));
                h["text"] = text;
                h
            })
            .collect();
        Ok(json!({"passages": passages}))
    }
    .await;
    Reply { started, result }
}

#[derive(Deserialize)]
struct ScrollBody {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default)]
    offset: Option<PointId>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
}

async fn scroll(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: ScrollBody = parse(body)?;
        let filter = filter_of(req.filter)?;
        let (points, next) = c.scroll(filter.as_ref(), req.offset, req.limit);
        let points: Vec<Value> = points
            .into_iter()
            .map(|p| record(p, &req.with_payload, true, req.with_vector))
            .collect();
        Ok(json!({"points": points, "next_page_offset": next}))
    })
    .await
}

#[derive(Deserialize)]
struct CountBody {
    #[serde(default)]
    filter: Option<Value>,
}

async fn count(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: CountBody = parse(body)?;
        let filter = filter_of(req.filter)?;
        Ok(json!({"count": c.count(filter.as_ref())}))
    })
    .await
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Value>,
}

async fn delete_points(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: DeleteBody = parse(body)?;
        let seq = match (req.points, filter_of(req.filter)?) {
            (Some(ids), None) => c.delete(ids)?,
            (None, Some(f)) => c.delete_by_filter(&f)?,
            _ => return Err(VectorError::bad("give either `points` or `filter`")),
        };
        Ok(update_result(seq))
    })
    .await
}

#[derive(Deserialize)]
struct SetPayloadBody {
    payload: Payload,
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Value>,
}

async fn set_payload(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: SetPayloadBody = parse(body)?;
        let ids = match (req.points, filter_of(req.filter)?) {
            (Some(ids), None) => ids,
            (None, Some(f)) => c
                .scroll(Some(&f), None, usize::MAX)
                .0
                .into_iter()
                .map(|p| p.id)
                .collect(),
            _ => return Err(VectorError::bad("give either `points` or `filter`")),
        };
        Ok(update_result(c.set_payload(ids, req.payload, false)?))
    })
    .await
}

#[derive(Deserialize)]
struct CreateIndexBody {
    field_name: String,
    field_schema: Value,
}

async fn create_index(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: CreateIndexBody = parse(body)?;
        // A type name, or `{"type": name, ...params}`.
        let ty = match &req.field_schema {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let schema = match ty.as_str() {
            "keyword" => PayloadSchemaType::Keyword,
            "integer" => PayloadSchemaType::Integer,
            "float" => PayloadSchemaType::Float,
            "bool" => PayloadSchemaType::Bool,
            other => {
                return Err(VectorError::bad(format!(
                    "field_schema: {other:?} is not supported; use keyword, integer, float or bool"
                )));
            }
        };
        Ok(update_result(
            c.create_field_index(&req.field_name, schema)?,
        ))
    })
    .await
}

async fn delete_index(
    State(state): State<VectorState>,
    Path((name, field)): Path<(String, String)>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        Ok(update_result(c.drop_field_index(&field)?))
    })
    .await
}

// ---------------------------------------------------------------- snapshots

fn snapshot_info(path: &std::path::Path) -> Option<Value> {
    let meta = std::fs::metadata(path).ok()?;
    let created = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(json!({
        "name": path.file_name()?.to_string_lossy(),
        "creation_time": unix_to_iso(created),
        "size": meta.len(),
    }))
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) from Unix seconds.
fn unix_to_iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

async fn create_snapshot(State(state): State<VectorState>, Path(name): Path<String>) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let dir = state.snapshots.join(&name);
        std::fs::create_dir_all(&dir).map_err(|err| VectorError::Io {
            path: dir.clone(),
            err,
        })?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = dir.join(format!("{name}-{stamp}.snapshot"));
        c.snapshot_to(&path)?;
        snapshot_info(&path).ok_or_else(|| VectorError::bad("the snapshot vanished"))
    })
    .await
}

async fn list_snapshots(State(state): State<VectorState>, Path(name): Path<String>) -> Reply {
    blocking(move || {
        collection(&state, &name)?;
        let dir = state.snapshots.join(&name);
        let mut out: Vec<Value> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
                    .filter_map(|p| snapshot_info(&p))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(json!(out))
    })
    .await
}

#[derive(Deserialize)]
struct RecoverBody {
    location: String,
}

/// `PUT .../snapshots/recover {"location": "file:///path"}` (or a snapshot
/// name this server made for the collection). Replaces the collection.
async fn recover_snapshot(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let req: RecoverBody = parse(body)?;
        let path = if let Some(p) = req.location.strip_prefix("file://") {
            PathBuf::from(p)
        } else if req.location.contains("://") {
            return Err(VectorError::bad(format!(
                "location {:?}: only file:// locations on this server are supported",
                req.location
            )));
        } else {
            let file = std::path::Path::new(&req.location);
            match file.file_name() {
                Some(f) if file.components().count() == 1 => state.snapshots.join(&name).join(f),
                _ => PathBuf::from(&req.location),
            }
        };
        if !path.is_file() {
            return Err(VectorError::bad(format!(
                "location {:?}: no snapshot file at {}",
                req.location,
                path.display()
            )));
        }
        state.store.restore(&name, &path)?;
        Ok(json!(true))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(unix_to_iso(0), "1970-01-01T00:00:00");
        assert_eq!(unix_to_iso(1_795_943_043), "2026-11-29T09:04:03");
        assert_eq!(unix_to_iso(951_782_400), "2000-02-29T00:00:00");
    }
}
