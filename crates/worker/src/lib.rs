//! The model-server service: one HTTP surface per protocol around the
//! runtime's engines.
//!
//! - `/v1/*`: OpenAI (`/v1/embeddings`, `/v1/models`), errors in OpenAI's shape;
//! - `/v2/*`: KServe v2 Open Inference Protocol, errors as `{"error": "..."}`;
//! - `/metrics`: Prometheus exposition.
//!
//! The worker serves models it is handed; it does not fetch them (that is the
//! registry's job, wired by the binary) and knows nothing of other workers.

mod error;
pub mod federate;
mod kserve;
#[cfg(feature = "llm")]
mod llm;
mod metrics;
mod openai;
mod state;

pub use kserve::server_metadata;
#[cfg(feature = "llm")]
pub use llm::{ServedLlm, chat_completion};
pub use metrics::Metrics;
pub use state::{ServedModel, WorkerState};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

/// Largest request body accepted, in bytes (413 beyond it).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The worker's full router: OpenAI, KServe v2 and metrics.
/// The worker's routes plus `extra` (other services hosted in the same
/// process, e.g. the vector store), under one 404 fallback, request metrics
/// and body limit.
pub fn router(state: WorkerState, extra: Router) -> Router {
    let max_body = state.max_body_bytes();
    let router = Router::new().merge(openai::router());
    #[cfg(feature = "llm")]
    let router = router.merge(llm::router());
    router
        .merge(kserve::router())
        .route("/metrics", get(metrics::export))
        .route("/health", get(|| async { "ok" }))
        .with_state(state.clone())
        .merge(extra)
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state,
            metrics::track_requests,
        ))
        .layer(DefaultBodyLimit::max(max_body))
}

/// Serves the worker on `listener` until `shutdown` resolves, lets in-flight
/// requests finish, then stops the engines.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WorkerState,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state.clone(), extra))
        .with_graceful_shutdown(shutdown)
        .await?;
    state.shutdown();
    Ok(())
}
