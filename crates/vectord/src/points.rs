//! Points: upsert, retrieve, delete, payloads, indexes, search, query, scroll, count, and text retrieval.

use super::*;

#[derive(Deserialize)]
pub(crate) struct PointIn {
    id: PointId,
    vector: Value,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
pub(crate) struct Batch {
    ids: Vec<PointId>,
    vectors: Vec<Value>,
    #[serde(default)]
    payloads: Option<Vec<Option<Payload>>>,
}

#[derive(Deserialize)]
pub(crate) struct UpsertBody {
    #[serde(default)]
    points: Option<Vec<PointIn>>,
    #[serde(default)]
    batch: Option<Batch>,
}

/// A vector as given: numbers, or text to embed (Qdrant's inference
/// object `{"text": "...", "model": "..."}`; the model defaults to the
/// collection's `embed` service).
pub(crate) enum VecIn {
    Dense(Vec<f32>),
    Text { text: String, model: Option<String> },
}

pub(crate) fn vec_in(v: &Value, what: &str) -> Result<VecIn, VectorError> {
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
pub(crate) async fn resolve(
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
            .map_err(|e| model_error(&format!("embedding with {model:?}"), e))?;
        for (slot, v) in slots.into_iter().zip(vectors) {
            out[slot] = Some(v);
        }
    }
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}

/// A point's vector: a list of numbers, or Qdrant's single unnamed vector
/// in the named form `{"": [...]}`.
pub(crate) fn dense(v: &Value, what: &str) -> Result<Vec<f32>, VectorError> {
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

pub(crate) async fn upsert(
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
pub(crate) enum WithPayload {
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

pub(crate) fn record(
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

pub(crate) fn scored(p: ScoredPoint, with_payload: &WithPayload, with_vector: bool) -> Value {
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
pub(crate) struct RetrieveBody {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: WithPayload,
    #[serde(default)]
    with_vector: bool,
}

pub(crate) async fn retrieve(
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

pub(crate) async fn get_point(
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

pub(crate) fn filter_of(v: Option<Value>) -> Result<Option<Filter>, VectorError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Filter::from_json(&v).map(Some),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct SearchParams {
    #[serde(default)]
    hnsw_ef: Option<usize>,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    quantization: Option<QuantizationSearch>,
}

#[derive(Deserialize)]
pub(crate) struct SearchBody {
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

pub(crate) fn ten() -> usize {
    10
}

/// Embeds the query if it is text, then searches on the blocking pool.
pub(crate) async fn run_search(
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
            quantization: params.quantization.unwrap_or_default(),
        })
    })
    .await?;
    Ok(hits
        .into_iter()
        .map(|h| scored(h, &with_payload, with_vector))
        .collect())
}

pub(crate) async fn search(
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
pub(crate) struct SearchBatchBody {
    searches: Vec<SearchBody>,
}

pub(crate) async fn search_batch(
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
pub(crate) struct QueryBody {
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
pub(crate) async fn query(
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
pub(crate) struct RetrieveTextBody {
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
    /// Answer the query from the passages with a served chat model.
    #[serde(default)]
    generate: Option<Value>,
}

/// The instruction a grounded answer starts from, unless `generate.system`
/// replaces it.
const RAG_SYSTEM: &str = "Answer the question using only the numbered passages you are given. \
Cite the passages you use by their number, like [1]. If the passages do not contain the answer, \
say that you do not know.";

/// The chat request that answers `query` from `passages`: the caller's
/// `generate` object (model and sampling knobs, as in
/// `/v1/chat/completions`) with the messages filled in.
fn rag_request(generate: Value, query: &str, passages: &[Value]) -> Result<Value, VectorError> {
    let Value::Object(mut body) = generate else {
        return Err(VectorError::bad(format!(
            "generate: expected an object like {{\"model\": \"...\"}}, got {generate}"
        )));
    };
    if !body.get("model").is_some_and(Value::is_string) {
        return Err(VectorError::bad("generate.model: name a served chat model"));
    }
    for taken in ["messages", "stream", "n"] {
        if body.contains_key(taken) {
            return Err(VectorError::bad(format!(
                "generate.{taken}: not allowed here (the store writes the messages and answers whole)"
            )));
        }
    }
    let system = match body.remove("system") {
        None => RAG_SYSTEM.to_string(),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(VectorError::bad(format!(
                "generate.system: expected a string, got {other}"
            )));
        }
    };
    let mut context = String::new();
    for (i, p) in passages.iter().enumerate() {
        let text = match &p["text"] {
            Value::String(t) => t.clone(),
            Value::Null => continue,
            other => other.to_string(),
        };
        context.push_str(&format!("[{}] {}\n", i + 1, text.trim()));
    }
    if context.is_empty() {
        context.push_str("(no passages found)\n");
    }
    // The passages go with the instruction and the question stands alone
    // as the user's turn: small models then answer the question instead of
    // echoing the passage nearest the end of the prompt.
    body.insert(
        "messages".into(),
        json!([
            {"role": "system", "content": format!("{system}\n\nPassages:\n{context}")},
            {"role": "user", "content": query},
        ]),
    );
    Ok(Value::Object(body))
}

pub(crate) fn five() -> usize {
    5
}

pub(crate) fn text_key() -> String {
    "text".into()
}

/// `POST /collections/{c}/retrieve` (neocloud): the top-k passages for a
/// text query, embedded with the collection's service: `{"query", "limit",
/// "filter"?, "model"?, "text_key"?}` → `{"passages": [{"id", "score",
/// "text", "payload"}]}`. With `"generate": {"model", ...chat knobs}` a
/// served chat model also answers the query from the numbered passages:
/// `"answer": {"model", "text", "finish_reason", "usage"}`.
pub(crate) async fn retrieve_passages(
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
        // Check the generation request before any work is done for it.
        let generate = match req.generate {
            None | Some(Value::Null) => None,
            Some(g) => {
                rag_request(g.clone(), &req.query, &[])?;
                if state.generator.is_none() {
                    return Err(VectorError::bad(
                        "generate: this server serves no chat models",
                    ));
                }
                Some(g)
            }
        };
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
        let Some(generate) = generate else {
            return Ok(json!({"passages": passages}));
        };
        let request = rag_request(generate, &req.query, &passages)?;
        let generator = state.generator.as_ref().expect("checked above");
        let done = generator
            .chat(request)
            .await
            .map_err(|e| model_error("generate", e))?;
        let choice = &done["choices"][0];
        Ok(json!({
            "passages": passages,
            "answer": {
                "model": done["model"],
                "text": choice["message"]["content"],
                "finish_reason": choice["finish_reason"],
                "usage": done["usage"],
            },
        }))
    }
    .await;
    Reply { started, result }
}

#[derive(Deserialize)]
pub(crate) struct ScrollBody {
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

pub(crate) async fn scroll(
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
pub(crate) struct CountBody {
    #[serde(default)]
    filter: Option<Value>,
}

pub(crate) async fn count(
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
pub(crate) struct DeleteBody {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Value>,
}

pub(crate) async fn delete_points(
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
pub(crate) struct SetPayloadBody {
    payload: Payload,
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Value>,
}

pub(crate) async fn set_payload(
    State(state): State<VectorState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        let req: SetPayloadBody = parse(body)?;
        let ids = match (req.points, filter_of(req.filter)?) {
            (Some(ids), None) => ids,
            (None, Some(f)) => c.ids_matching(&f),
            _ => return Err(VectorError::bad("give either `points` or `filter`")),
        };
        Ok(update_result(c.set_payload(ids, req.payload, false)?))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct CreateIndexBody {
    field_name: String,
    field_schema: Value,
}

pub(crate) async fn create_index(
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

pub(crate) async fn delete_index(
    State(state): State<VectorState>,
    Path((name, field)): Path<(String, String)>,
) -> Reply {
    blocking(move || {
        let c = collection(&state, &name)?;
        Ok(update_result(c.drop_field_index(&field)?))
    })
    .await
}
