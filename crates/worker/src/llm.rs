//! OpenAI chat and completions over the runtime's llama.cpp engine, with
//! SSE streaming. A client that disconnects mid-stream drops the event
//! receiver, which frees its sequence in the engine at the next step.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::stream::{self, Stream};
use neocloud_api::ApiError;
use neocloud_api::chat::{
    CompletionRequest, GenerationParams, Prompt, parse_generate, parse_messages,
};
use neocloud_runtime::llm::template::ChatMessage;
use neocloud_runtime::llm::{FinishReason, GenEvent, GenerateRequest, LlmEngine, SamplingParams};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::{KserveError, OpenAiError, body_error};
use crate::metrics::ModelLabel;
use crate::state::{WorkerState, unix_now};

/// One served generative model.
pub struct ServedLlm {
    pub name: String,
    pub engine: Arc<LlmEngine>,
    pub created: u64,
}

impl ServedLlm {
    pub fn new(name: String, engine: Arc<LlmEngine>) -> Self {
        ServedLlm {
            name,
            engine,
            created: unix_now(),
        }
    }
}

pub fn router() -> Router<WorkerState> {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v2/models/{model}/generate", post(kserve_generate))
        .route(
            "/v2/models/{model}/generate_stream",
            post(kserve_generate_stream),
        )
}

fn json_body(
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    neocloud_api::openai::parse_json_object(&body.map_err(body_error)?)
}

fn model_of(
    state: &WorkerState,
    obj: &serde_json::Map<String, Value>,
) -> Result<Arc<ServedLlm>, ApiError> {
    match obj.get("model") {
        Some(Value::String(m)) => state.llm(m),
        _ => Err(ApiError::bad_request("'model' must be a string").with_param("model")),
    }
}

/// `POST /tokenize` (as vLLM): `{"model", "prompt"}` or `{"model", "messages"}`
/// (rendered with the chat template) → `{"tokens", "count", "max_model_len"}`.
async fn tokenize(
    State(state): State<WorkerState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = (|| {
        let obj = json_body(body)?;
        let model = model_of(&state, &obj)?;
        let prompt = if obj.contains_key("messages") {
            Prompt::Chat(parse_messages(&obj)?)
        } else {
            match obj.get("prompt") {
                Some(Value::String(p)) => Prompt::Text(p.clone()),
                _ => {
                    return Err(
                        ApiError::bad_request("give 'prompt' (a string) or 'messages'")
                            .with_param("prompt"),
                    );
                }
            }
        };
        let tokens = prompt_ids(&model.engine, &prompt)?;
        Ok(axum::Json(json!({
            "count": tokens.len(),
            "max_model_len": model.engine.max_context(),
            "tokens": tokens,
        })))
    })();
    match result {
        Ok(r) => r.into_response(),
        Err(e) => OpenAiError(e).into_response(),
    }
}

/// `POST /detokenize`: `{"model", "tokens": [ids]}` → `{"prompt": text}`.
async fn detokenize(
    State(state): State<WorkerState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = (|| {
        let obj = json_body(body)?;
        let model = model_of(&state, &obj)?;
        let ids = match obj.get("tokens") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "'tokens' items must be token ids, got {v}"
                            ))
                            .with_param("tokens")
                        })
                })
                .collect::<Result<Vec<i32>, _>>()?,
            _ => {
                return Err(
                    ApiError::bad_request("'tokens' must be an array of token ids")
                        .with_param("tokens"),
                );
            }
        };
        let text = model.engine.detokenize(&ids).map_err(ApiError::from)?;
        Ok(axum::Json(json!({ "prompt": text })))
    })();
    match result {
        Ok(r) => r.into_response(),
        Err(e) => OpenAiError(e).into_response(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
}

async fn chat(State(state): State<WorkerState>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(state, body, Kind::Chat).await
}

async fn completions(
    State(state): State<WorkerState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, body, Kind::Text).await
}

async fn handle(state: WorkerState, body: Result<Bytes, BytesRejection>, kind: Kind) -> Response {
    let result = async {
        let body = body.map_err(body_error)?;
        let req = match kind {
            Kind::Chat => CompletionRequest::parse_chat(&body)?,
            Kind::Text => CompletionRequest::parse_completion(&body)?,
        };
        let model = state.llm(&req.model)?;
        let ids = prompt_ids(&model.engine, &req.prompt)?;
        let rx = model
            .engine
            .submit(GenerateRequest {
                prompt: ids,
                params: sampling(&req.params),
            })
            .map_err(ApiError::from)?;
        Ok::<_, ApiError>((model, req, rx))
    }
    .await;
    let (model, req, rx) = match result {
        Ok(ok) => ok,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let id = request_id(kind);
    let clock = RequestClock::new(&state, &model.name);
    let mut resp = if req.params.stream {
        stream_response(
            kind,
            id,
            model.name.clone(),
            req.params.include_usage,
            rx,
            clock,
        )
        .into_response()
    } else {
        whole_response(kind, id, model.name.clone(), rx, clock).await
    };
    resp.extensions_mut().insert(ModelLabel(model.name.clone()));
    resp
}

fn prompt_ids(engine: &LlmEngine, prompt: &Prompt) -> Result<Vec<i32>, ApiError> {
    match prompt {
        Prompt::Text(text) => Ok(engine.tokenize(text, true)),
        Prompt::Chat(messages) => {
            let template = engine.chat_template().ok_or_else(|| {
                ApiError::bad_request("this model has no chat template; use /v1/completions")
            })?;
            let messages: Vec<ChatMessage> = messages
                .iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
                .collect();
            let text = template
                .render(&messages, true)
                .map_err(|e| ApiError::bad_request(e).with_param("messages"))?;
            // The template writes any BOS itself.
            Ok(engine.tokenize(&text, false))
        }
    }
}

fn sampling(p: &GenerationParams) -> SamplingParams {
    SamplingParams {
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k,
        seed: p.seed,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        stop: p.stop.clone(),
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Reads a request's events to the end: (text, finish, prompt tokens,
/// completion tokens).
async fn collect(
    rx: &mut UnboundedReceiver<GenEvent>,
    clock: &mut RequestClock,
) -> Result<(String, FinishReason, usize, usize), ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Text(t) => {
                clock.on_text();
                text.push_str(&t);
            }
            GenEvent::Error(e) => return Err(ApiError::internal(e)),
            GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                clock.on_done(finish, prompt_tokens, completion_tokens);
                return Ok((text, finish, prompt_tokens, completion_tokens));
            }
        }
    }
    Err(ApiError::internal(
        "the engine ended the request without an answer",
    ))
}

fn request_id(kind: Kind) -> String {
    format!(
        "{}-{:x}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

async fn whole_response(
    kind: Kind,
    id: String,
    model: String,
    mut rx: UnboundedReceiver<GenEvent>,
    mut clock: RequestClock,
) -> Response {
    let (text, finish, prompt_tokens, completion_tokens) = match collect(&mut rx, &mut clock).await
    {
        Ok(done) => done,
        Err(e) => return OpenAiError(e).into_response(),
    };
    let choice = match kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish.as_str(),
        }),
        Kind::Text => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish.as_str(),
        }),
    };
    axum::Json(json!({
        "id": id,
        "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": unix_now(),
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response()
}

/// A whole (non-streaming) chat completion for a caller in this process,
/// e.g. retrieval-augmented generation in the vector store: `body` is an
/// OpenAI chat request, validated as `/v1/chat/completions` validates it,
/// and the answer is the `chat.completion` object. It runs on the same
/// engine queue and counts in the same metrics as an HTTP request.
pub async fn chat_completion(state: &WorkerState, body: &Value) -> Result<Value, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let req = CompletionRequest::parse_chat(&bytes)?;
    if req.params.stream {
        return Err(ApiError::bad_request("'stream' is not supported here").with_param("stream"));
    }
    let model = state.llm(&req.model)?;
    let ids = prompt_ids(&model.engine, &req.prompt)?;
    let mut rx = model
        .engine
        .submit(GenerateRequest {
            prompt: ids,
            params: sampling(&req.params),
        })
        .map_err(ApiError::from)?;
    let mut clock = RequestClock::new(state, &model.name);
    let (text, finish, prompt_tokens, completion_tokens) = collect(&mut rx, &mut clock).await?;
    Ok(json!({
        "id": request_id(Kind::Chat),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish.as_str(),
        }],
        "usage": usage(prompt_tokens, completion_tokens),
    }))
}

/// Per-request timing for the vLLM histograms and counters.
struct RequestClock {
    metrics: crate::metrics::VllmMetrics,
    model: String,
    start: std::time::Instant,
    last: Option<std::time::Instant>,
    finished: bool,
}

impl RequestClock {
    fn new(state: &WorkerState, model: &str) -> Self {
        RequestClock {
            metrics: state.metrics().vllm.clone(),
            model: model.to_string(),
            start: std::time::Instant::now(),
            last: None,
            finished: false,
        }
    }

    fn on_text(&mut self) {
        let now = std::time::Instant::now();
        let label = [self.model.as_str()];
        match self.last {
            None => self
                .metrics
                .ttft
                .with_label_values(&label)
                .observe((now - self.start).as_secs_f64()),
            Some(prev) => self
                .metrics
                .itl
                .with_label_values(&label)
                .observe((now - prev).as_secs_f64()),
        }
        self.last = Some(now);
    }

    fn on_done(&mut self, finish: FinishReason, prompt: usize, completion: usize) {
        self.finished = true;
        let m = &self.metrics;
        let label = [self.model.as_str()];
        m.e2e
            .with_label_values(&label)
            .observe(self.start.elapsed().as_secs_f64());
        m.prompt_tokens
            .with_label_values(&label)
            .inc_by(prompt as u64);
        m.generation_tokens
            .with_label_values(&label)
            .inc_by(completion as u64);
        m.success
            .with_label_values(&[self.model.as_str(), finish.as_str()])
            .inc();
    }
}

/// A request that ends any other way (the client went away, the engine
/// failed) counts as vLLM's `abort`.
impl Drop for RequestClock {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics
                .success
                .with_label_values(&[self.model.as_str(), "abort"])
                .inc();
        }
    }
}

struct StreamState {
    kind: Kind,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    rx: UnboundedReceiver<GenEvent>,
    clock: RequestClock,
    /// Events ready to send before reading the engine again.
    pending: std::collections::VecDeque<Event>,
    started: bool,
    done: bool,
}

impl StreamState {
    fn chunk(&self, delta_or_text: Value, finish: Option<FinishReason>) -> Event {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0, "delta": delta_or_text, "logprobs": null,
                "finish_reason": finish.map(FinishReason::as_str),
            }),
            Kind::Text => json!({
                "index": 0, "text": delta_or_text, "logprobs": null,
                "finish_reason": finish.map(FinishReason::as_str),
            }),
        };
        let mut body = json!({
            "id": self.id,
            "object": if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            body["usage"] = Value::Null;
        }
        Event::default().data(body.to_string())
    }
}

fn stream_response(
    kind: Kind,
    id: String,
    model: String,
    include_usage: bool,
    rx: UnboundedReceiver<GenEvent>,
    clock: RequestClock,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = StreamState {
        kind,
        id,
        model,
        created: unix_now(),
        include_usage,
        rx,
        clock,
        pending: Default::default(),
        started: false,
        done: false,
    };
    Sse::new(stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                return Some((Ok(ev), s));
            }
            if s.done {
                return None;
            }
            if !s.started && s.kind == Kind::Chat {
                s.started = true;
                let first = s.chunk(json!({"role": "assistant", "content": ""}), None);
                s.pending.push_back(first);
                continue;
            }
            match s.rx.recv().await {
                Some(GenEvent::Text(t)) => {
                    s.clock.on_text();
                    let ev = match s.kind {
                        Kind::Chat => s.chunk(json!({"content": t}), None),
                        Kind::Text => s.chunk(json!(t), None),
                    };
                    s.pending.push_back(ev);
                }
                Some(GenEvent::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    s.clock.on_done(finish, prompt_tokens, completion_tokens);
                    let last = match s.kind {
                        Kind::Chat => s.chunk(json!({}), Some(finish)),
                        Kind::Text => s.chunk(json!(""), Some(finish)),
                    };
                    s.pending.push_back(last);
                    if s.include_usage {
                        let body = json!({
                            "id": s.id,
                            "object": if s.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                            "created": s.created,
                            "model": s.model,
                            "choices": [],
                            "usage": usage(prompt_tokens, completion_tokens),
                        });
                        s.pending.push_back(Event::default().data(body.to_string()));
                    }
                    s.pending.push_back(Event::default().data("[DONE]"));
                    s.done = true;
                }
                Some(GenEvent::Error(e)) => {
                    let err = ApiError::internal(e).openai_body();
                    s.pending.push_back(Event::default().data(err.to_string()));
                    s.done = true;
                }
                None => return None,
            }
        }
    }))
}

/// Validates and submits a KServe generate request.
fn kserve_submit(
    state: &WorkerState,
    name: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Arc<ServedLlm>, UnboundedReceiver<GenEvent>), ApiError> {
    let model = state.llm(name)?;
    let (text, params) = parse_generate(&body.map_err(body_error)?)?;
    let ids = model.engine.tokenize(&text, true);
    let rx = model
        .engine
        .submit(GenerateRequest {
            prompt: ids,
            params: sampling(&params),
        })
        .map_err(ApiError::from)?;
    Ok((model, rx))
}

fn kserve_body(model: &str, text: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("model_name".into(), json!(model));
    m.insert("model_version".into(), json!("1"));
    m.insert("text_output".into(), json!(text));
    m
}

fn kserve_finish(
    body: &mut serde_json::Map<String, Value>,
    finish: FinishReason,
    prompt: usize,
    completion: usize,
) {
    body.insert("finish_reason".into(), json!(finish.as_str()));
    body.insert("usage".into(), usage(prompt, completion));
}

/// `POST /v2/models/{m}/generate` (KServe v2 / Triton generate extension):
/// `{"text_input", "parameters": {...}}` → `{"model_name", "model_version",
/// "text_output", "finish_reason", "usage"}`. The text is used as given
/// (no chat template).
async fn kserve_generate(
    State(state): State<WorkerState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (model, mut rx) = match kserve_submit(&state, &name, body) {
        Ok(ok) => ok,
        Err(e) => return KserveError(e).into_response(),
    };
    let mut clock = RequestClock::new(&state, &model.name);
    let mut text = String::new();
    let mut resp = loop {
        match rx.recv().await {
            Some(GenEvent::Text(t)) => {
                clock.on_text();
                text.push_str(&t);
            }
            Some(GenEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                clock.on_done(finish, prompt_tokens, completion_tokens);
                let mut body = kserve_body(&model.name, &text);
                kserve_finish(&mut body, finish, prompt_tokens, completion_tokens);
                break axum::Json(Value::Object(body)).into_response();
            }
            Some(GenEvent::Error(e)) => break KserveError(ApiError::internal(e)).into_response(),
            None => {
                break KserveError(ApiError::internal(
                    "the engine ended the request without an answer",
                ))
                .into_response();
            }
        }
    };
    resp.extensions_mut().insert(ModelLabel(model.name.clone()));
    resp
}

/// `POST /v2/models/{m}/generate_stream`: the same request, answered as
/// server-sent events, one `{"model_name", "model_version", "text_output"}`
/// per piece of text; the last carries `finish_reason` and `usage`. An
/// error mid-stream is an event `{"error": "..."}`.
async fn kserve_generate_stream(
    State(state): State<WorkerState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (model, rx) = match kserve_submit(&state, &name, body) {
        Ok(ok) => ok,
        Err(e) => return KserveError(e).into_response(),
    };
    let clock = RequestClock::new(&state, &model.name);
    let name = model.name.clone();
    let events = stream::unfold((rx, clock, false), move |(mut rx, mut clock, done)| {
        let name = name.clone();
        async move {
            if done {
                return None;
            }
            let (data, done) = match rx.recv().await? {
                GenEvent::Text(t) => {
                    clock.on_text();
                    (Value::Object(kserve_body(&name, &t)), false)
                }
                GenEvent::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    clock.on_done(finish, prompt_tokens, completion_tokens);
                    let mut body = kserve_body(&name, "");
                    kserve_finish(&mut body, finish, prompt_tokens, completion_tokens);
                    (Value::Object(body), true)
                }
                GenEvent::Error(e) => (ApiError::internal(e).kserve_body(), true),
            };
            let event = Event::default().data(data.to_string());
            Some((Ok::<_, Infallible>(event), (rx, clock, done)))
        }
    });
    let mut resp = Sse::new(events).into_response();
    resp.extensions_mut().insert(ModelLabel(model.name.clone()));
    resp
}
