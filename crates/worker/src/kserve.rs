//! KServe v2 Open Inference Protocol surface (`/v2`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use neocloud_api::ApiError;
use neocloud_api::kserve::{
    InferOutput, InferRequest, InferResponse, ModelMetadata, ServerMetadata, TensorMetadata,
};
use neocloud_api::openai::EmbeddingInput;
use tracing::Instrument;

use crate::error::{KserveError, body_error};
use crate::metrics::ModelLabel;
use crate::openai::tokenize_all;
use crate::state::WorkerState;

pub fn router() -> Router<WorkerState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
}

/// `GET /v2`: the server's name, version and protocol extensions (also
/// what the platform answers in front of its workers).
pub async fn server_metadata() -> axum::Json<ServerMetadata> {
    axum::Json(ServerMetadata {
        name: "neocloud",
        version: env!("CARGO_PKG_VERSION"),
        extensions: if cfg!(feature = "llm") {
            vec!["generate"]
        } else {
            vec![]
        },
    })
}

async fn ready(State(state): State<WorkerState>) -> Response {
    if state.is_ready() {
        StatusCode::OK.into_response()
    } else {
        KserveError(ApiError::new(
            neocloud_api::ErrorKind::Unavailable,
            "models are still loading",
        ))
        .into_response()
    }
}

async fn model_metadata(
    State(state): State<WorkerState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ModelMetadata>, KserveError> {
    if state.is_llm(&name) {
        let bytes = |n: &str| TensorMetadata {
            name: n.into(),
            datatype: "BYTES".into(),
            shape: vec![1],
        };
        return Ok(axum::Json(ModelMetadata {
            name,
            versions: vec!["1".into()],
            platform: "neocloud_llama_cpp".into(),
            inputs: vec![bytes("text_input")],
            outputs: vec![bytes("text_output")],
        }));
    }
    let model = state.model(&name)?;
    Ok(axum::Json(ModelMetadata {
        name: model.name.clone(),
        versions: vec!["1".into()],
        platform: "neocloud_candle_bert".into(),
        inputs: vec![TensorMetadata {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![-1],
        }],
        outputs: vec![TensorMetadata {
            name: "embedding".into(),
            datatype: "FP32".into(),
            shape: vec![-1, model.embedder.dimension() as i64],
        }],
    }))
}

async fn model_ready(
    State(state): State<WorkerState>,
    Path(name): Path<String>,
) -> Result<StatusCode, KserveError> {
    if state.is_llm(&name) {
        return Ok(StatusCode::OK);
    }
    state.model(&name)?;
    Ok(StatusCode::OK)
}

async fn infer(
    State(state): State<WorkerState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if state.is_llm(&name) {
        return KserveError(ApiError::bad_request(format!(
            "'{name}' is a generative model: use /v2/models/{name}/generate or generate_stream"
        )))
        .into_response();
    }
    let model = match state.model(&name) {
        Ok(m) => m,
        Err(e) => return KserveError(e).into_response(),
    };
    let span = tracing::info_span!("infer", model = %model.name);
    let mut resp = async {
        let body = body.map_err(body_error)?;
        let req: InferRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid inference request: {e}")))?;
        let texts = texts_of(&req)?;
        let n = texts.len();
        let truncate = req
            .parameters
            .as_ref()
            .and_then(|p| p.get("truncate"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let ids = tokenize_all(&model, EmbeddingInput::Texts(texts), truncate).await?;
        let vectors = model.batcher.embed(ids).await.map_err(ApiError::from)?;
        let dim = model.embedder.dimension();
        let mut data = Vec::with_capacity(n * dim);
        for v in vectors {
            data.extend_from_slice(&v);
        }
        if let Some(outputs) = &req.outputs
            && let Some(o) = outputs.iter().find(|o| o.name != "embedding")
        {
            return Err(ApiError::bad_request(format!(
                "unknown output '{}'; this model has one output, 'embedding'",
                o.name
            )));
        }
        Ok::<_, ApiError>(
            axum::Json(InferResponse {
                model_name: model.name.clone(),
                model_version: Some("1".into()),
                id: req.id.clone(),
                outputs: vec![InferOutput {
                    name: "embedding".into(),
                    shape: vec![n, dim],
                    datatype: "FP32",
                    data,
                }],
            })
            .into_response(),
        )
    }
    .instrument(span)
    .await
    .unwrap_or_else(|e| KserveError(e).into_response());
    resp.extensions_mut().insert(ModelLabel(model.name.clone()));
    resp
}

/// The texts of the single BYTES input, checked against its declared shape.
fn texts_of(req: &InferRequest) -> Result<Vec<String>, ApiError> {
    let input = match req.inputs.as_slice() {
        [one] => one,
        [] => {
            return Err(ApiError::bad_request(
                "'inputs' must hold one BYTES tensor of texts",
            ));
        }
        more => {
            return Err(ApiError::bad_request(format!(
                "'inputs' holds {} tensors; this model takes one BYTES tensor of texts",
                more.len()
            )));
        }
    };
    if input.datatype != "BYTES" {
        return Err(ApiError::bad_request(format!(
            "input '{}' has datatype {}; this model takes BYTES",
            input.name, input.datatype
        )));
    }
    let items = flatten(&input.data);
    let texts = items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::String(s) if !s.is_empty() => Ok(s.clone()),
            serde_json::Value::String(_) => Err(ApiError::bad_request(format!(
                "input '{}' element {i} is empty",
                input.name
            ))),
            other => Err(ApiError::bad_request(format!(
                "input '{}' element {i} must be a string, got {other}",
                input.name
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if texts.is_empty() {
        return Err(ApiError::bad_request(format!(
            "input '{}' is empty",
            input.name
        )));
    }
    let declared: i64 = input.shape.iter().product();
    if input.shape.iter().any(|&d| d < 0) || declared != texts.len() as i64 {
        return Err(ApiError::bad_request(format!(
            "input '{}' has shape {:?} but {} elements",
            input.name,
            input.shape,
            texts.len()
        )));
    }
    Ok(texts)
}

/// Row-major flattening of nested JSON arrays (the protocol allows both).
fn flatten(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other],
    }
}
