//! Inference engines and the batchers in front of them.
//!
//! - [`SentenceEmbedder`]: BERT-family sentence-transformers models on candle
//!   (CPU by default, CUDA behind the `cuda` feature), run on packed batches.
//! - [`TokenBudgetBatcher`]: a queue that forms batches under a token and a
//!   request budget, grouping by length, and answers each sequence alone.
//! - `llm` (cargo feature `llm`): GGUF models on llama.cpp with continuous
//!   batching.
//!
//! This crate has no HTTP and no metrics exporter: callers observe batches
//! through [`BatchObserver`] and map [`RuntimeError`] to their protocol.

pub mod attention;
pub mod batcher;
pub mod bert;
pub mod embedder;
#[cfg(feature = "llm")]
pub mod llm;
pub mod simd;

pub use batcher::{BatchObserver, BatchStats, EmbeddingEngine, TokenBudgetBatcher};
pub use embedder::{EmbedderOptions, Pooling, SentenceEmbedder};

use std::path::Path;

use neocloud_api::ApiError;

/// Errors of loading and running engines.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot load {path}: {reason}")]
    Load { path: String, reason: String },
    #[error(
        "input has {tokens} tokens, more than the model's maximum of {max}; shorten it or set \"truncate\": true"
    )]
    InputTooLong { tokens: usize, max: usize },
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    InvalidTokenId { id: u32, vocab: usize },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("the queue is full ({depth} sequences waiting)")]
    QueueFull {
        depth: usize,
        retry_after: std::time::Duration,
    },
    #[error("the model is shutting down")]
    ShuttingDown,
    #[error("engine failure: {0}")]
    Engine(String),
}

impl RuntimeError {
    pub(crate) fn load(path: &Path, reason: impl std::fmt::Display) -> Self {
        RuntimeError::Load {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn engine(err: impl std::fmt::Display) -> Self {
        RuntimeError::Engine(err.to_string())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(err: RuntimeError) -> ApiError {
        let message = err.to_string();
        match err {
            RuntimeError::InputTooLong { .. } | RuntimeError::InvalidTokenId { .. } => {
                ApiError::bad_request(message).with_param("input")
            }
            RuntimeError::Tokenize(_) => ApiError::bad_request(message).with_param("input"),
            RuntimeError::QueueFull { retry_after, .. } => {
                ApiError::overloaded(message, retry_after)
            }
            RuntimeError::ShuttingDown => {
                ApiError::new(neocloud_api::ErrorKind::Unavailable, message)
            }
            RuntimeError::Load { .. } | RuntimeError::Engine(_) => ApiError::internal(message),
        }
    }
}

/// The device to run on: the first CUDA device when built with `cuda` and
/// one is present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(dev) = candle_core::Device::new_cuda(0) {
        return dev;
    }
    candle_core::Device::Cpu
}

/// Tells mimalloc (when it is the global allocator) to keep freed pages
/// mapped. Each batch frees and reallocates tensors of the same sizes;
/// purging them only to fault them in again cost ~8% of inference time on
/// two cores. Memory stays bounded by the batch budgets. Call it first thing
/// in `main`; without mimalloc as the allocator it changes nothing.
pub fn keep_freed_pages() {
    /// `mi_option_purge_delay` in mimalloc's option enum.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide allocator option; no memory is touched.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}
