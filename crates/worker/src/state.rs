//! What a worker serves and shares across handlers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use neocloud_api::ApiError;
use neocloud_runtime::{SentenceEmbedder, TokenBudgetBatcher};

use crate::metrics::Metrics;

/// One served embedding model: its tokenizer side (used on request threads)
/// and the batcher that owns its compute.
pub struct ServedModel {
    pub name: String,
    pub embedder: Arc<SentenceEmbedder>,
    pub batcher: TokenBudgetBatcher,
    pub created: u64,
}

impl ServedModel {
    pub fn new(name: String, embedder: Arc<SentenceEmbedder>, batcher: TokenBudgetBatcher) -> Self {
        ServedModel {
            name,
            embedder,
            batcher,
            created: unix_now(),
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it), for the
/// `created` fields of the APIs.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Inner {
    models: RwLock<BTreeMap<String, Arc<ServedModel>>>,
    #[cfg(feature = "llm")]
    llms: RwLock<BTreeMap<String, Arc<crate::llm::ServedLlm>>>,
    /// Set once every configured model is loaded.
    ready: AtomicBool,
    metrics: Metrics,
    max_body_bytes: usize,
}

/// Shared state of a worker; cheap to clone.
#[derive(Clone)]
pub struct WorkerState(Arc<Inner>);

impl WorkerState {
    pub fn new(metrics: Metrics, max_body_bytes: usize) -> Self {
        WorkerState(Arc::new(Inner {
            models: RwLock::new(BTreeMap::new()),
            #[cfg(feature = "llm")]
            llms: RwLock::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            metrics,
            max_body_bytes,
        }))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn max_body_bytes(&self) -> usize {
        self.0.max_body_bytes
    }

    /// Starts serving `model` under its name.
    pub fn add_model(&self, model: ServedModel) {
        let mut models = self.0.models.write().unwrap_or_else(|p| p.into_inner());
        models.insert(model.name.clone(), Arc::new(model));
    }

    /// Marks the worker ready (`/v2/health/ready` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    pub fn model(&self, name: &str) -> Result<Arc<ServedModel>, ApiError> {
        let models = self.0.models.read().unwrap_or_else(|p| p.into_inner());
        models.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = models.keys().map(String::as_str).collect();
            ApiError::not_found(format!(
                "the model '{name}' does not exist; served models: {}",
                known.join(", ")
            ))
            .with_param("model")
        })
    }

    /// Starts serving a generative model under its name.
    #[cfg(feature = "llm")]
    pub fn add_llm(&self, model: crate::llm::ServedLlm) {
        let mut llms = self.0.llms.write().unwrap_or_else(|p| p.into_inner());
        llms.insert(model.name.clone(), Arc::new(model));
    }

    /// A served generative model by name; an embedding model's name gets a
    /// 400 that says so.
    #[cfg(feature = "llm")]
    pub fn llm(&self, name: &str) -> Result<Arc<crate::llm::ServedLlm>, ApiError> {
        let llms = self.0.llms.read().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = llms.get(name) {
            return Ok(m.clone());
        }
        if self.model(name).is_ok() {
            return Err(ApiError::bad_request(format!(
                "the model '{name}' is an embedding model; use /v1/embeddings"
            ))
            .with_param("model"));
        }
        let known: Vec<&str> = llms.keys().map(String::as_str).collect();
        Err(ApiError::not_found(format!(
            "the model '{name}' does not exist; served generative models: {}",
            known.join(", ")
        ))
        .with_param("model"))
    }

    /// Embeds texts with the served embedding model `name` through the
    /// same tokenizer and batching queue as `POST /v1/embeddings`. Texts
    /// longer than the model's maximum are refused, not cut.
    pub async fn embed_texts(
        &self,
        name: &str,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let model = self.model(name)?;
        let ids = crate::openai::tokenize_all(
            &model,
            neocloud_api::openai::EmbeddingInput::Texts(texts),
            false,
        )
        .await?;
        model.batcher.embed(ids).await.map_err(ApiError::from)
    }

    /// Whether `name` is a served generative model.
    pub fn is_llm(&self, name: &str) -> bool {
        #[cfg(feature = "llm")]
        {
            let llms = self.0.llms.read().unwrap_or_else(|p| p.into_inner());
            llms.contains_key(name)
        }
        #[cfg(not(feature = "llm"))]
        {
            let _ = name;
            false
        }
    }

    /// Sets the vLLM gauges from each engine's current state.
    #[cfg(feature = "llm")]
    pub fn refresh_llm_gauges(&self) {
        let llms = self.0.llms.read().unwrap_or_else(|p| p.into_inner());
        let v = &self.0.metrics.vllm;
        let _serial = v.refresh.lock().unwrap_or_else(|p| p.into_inner());
        for m in llms.values() {
            let s = m.engine.stats();
            let label = [m.name.as_str()];
            v.running.with_label_values(&label).set(s.running as f64);
            v.waiting.with_label_values(&label).set(s.waiting as f64);
            let usage = if s.kv_cells > 0 {
                s.kv_used as f64 / s.kv_cells as f64
            } else {
                0.0
            };
            v.kv_usage.with_label_values(&label).set(usage);
            // The engine counts; the exporter catches its counters up.
            for (counter, total) in [
                (&v.prefix_queries, s.prefix_queries),
                (&v.prefix_hits, s.prefix_hits),
            ] {
                let c = counter.with_label_values(&label);
                c.inc_by(total.saturating_sub(c.get()));
            }
        }
    }

    /// Names and creation times of every served model, of any task.
    pub fn model_cards(&self) -> Vec<(String, u64)> {
        let mut cards: Vec<(String, u64)> = self
            .models()
            .iter()
            .map(|m| (m.name.clone(), m.created))
            .collect();
        #[cfg(feature = "llm")]
        {
            let llms = self.0.llms.read().unwrap_or_else(|p| p.into_inner());
            cards.extend(llms.values().map(|m| (m.name.clone(), m.created)));
        }
        cards.sort();
        cards
    }

    pub fn models(&self) -> Vec<Arc<ServedModel>> {
        let models = self.0.models.read().unwrap_or_else(|p| p.into_inner());
        models.values().cloned().collect()
    }

    /// Stops every batcher after its queue drains.
    pub fn shutdown(&self) {
        self.set_ready(false);
        for m in self.models() {
            m.batcher.shutdown();
        }
        #[cfg(feature = "llm")]
        {
            let llms: Vec<_> = self
                .0
                .llms
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            for m in llms {
                m.engine.shutdown();
            }
        }
    }
}
