//! OpenAI-compatible `/v1` surface.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use neocloud_api::ApiError;
use neocloud_api::openai::{
    EmbeddingData, EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
    EncodingFormat, ModelCard, ModelList, Usage,
};
use tracing::Instrument;

use crate::error::{OpenAiError, body_error};
use crate::metrics::ModelLabel;
use crate::state::{ServedModel, WorkerState};

pub fn router() -> Router<WorkerState> {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
}

async fn list_models(State(state): State<WorkerState>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list",
        data: state
            .model_cards()
            .into_iter()
            .map(|(id, created)| ModelCard {
                id,
                object: "model",
                created,
                owned_by: "neocloud",
            })
            .collect(),
    })
}

/// Inputs above this count are tokenized off the async threads.
const INLINE_TOKENIZE_MAX: usize = 8;

/// Turns every input into checked token ids, in order.
pub(crate) async fn tokenize_all(
    model: &Arc<ServedModel>,
    input: EmbeddingInput,
    truncate: bool,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let n = input.len();
    let embedder = model.embedder.clone();
    let work = move || -> Result<Vec<Vec<u32>>, ApiError> {
        let with_index = |i: usize, e: neocloud_runtime::RuntimeError| {
            let mut err = ApiError::from(e);
            if err.kind == neocloud_api::ErrorKind::BadRequest {
                err.message = format!("input[{i}]: {}", err.message);
            }
            err
        };
        match input {
            EmbeddingInput::Texts(texts) => texts
                .iter()
                .enumerate()
                .map(|(i, t)| embedder.tokenize(t, truncate).map_err(|e| with_index(i, e)))
                .collect(),
            EmbeddingInput::TokenIds(seqs) => seqs
                .into_iter()
                .enumerate()
                .map(|(i, ids)| {
                    embedder
                        .check_ids(ids, truncate)
                        .map_err(|e| with_index(i, e))
                })
                .collect(),
        }
    };
    if n <= INLINE_TOKENIZE_MAX {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
    }
}

async fn embeddings(
    State(state): State<WorkerState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rej) => return OpenAiError(body_error(rej)).into_response(),
    };
    let req = match EmbeddingsRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let model = match state.model(&req.model) {
        Ok(m) => m,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let span = tracing::info_span!("embeddings", model = %model.name, inputs = req.input.len());
    let mut resp = embed(model.clone(), req)
        .instrument(span)
        .await
        .unwrap_or_else(|e| e.into_response());
    resp.extensions_mut().insert(ModelLabel(model.name.clone()));
    resp
}

async fn embed(model: Arc<ServedModel>, req: EmbeddingsRequest) -> Result<Response, OpenAiError> {
    let dim = model.embedder.dimension();
    if let Some(d) = req.dimensions
        && d != dim
    {
        return Err(ApiError::bad_request(format!(
            "'dimensions' {d} is not supported by model '{}': it only produces {dim}-dimensional vectors",
            model.name
        ))
        .with_param("dimensions")
        .into());
    }
    let ids = tokenize_all(&model, req.input, req.truncate).await?;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let vectors = model.batcher.embed(ids).await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match req.encoding_format {
                EncodingFormat::Float => EmbeddingVector::Float(v),
                EncodingFormat::Base64 => EmbeddingVector::Base64(encode_f32_le(&v)),
            },
        })
        .collect();
    Ok(axum::Json(EmbeddingsResponse {
        object: "list",
        data,
        model: model.name.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response())
}

/// base64 of the vector as little-endian f32, as OpenAI encodes it.
fn encode_f32_le(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
