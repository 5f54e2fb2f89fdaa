//! The vector store engine: collections of points (an id, a vector and a
//! JSON payload), an HNSW index with filtered search, payload indexes, and
//! a write-ahead log that makes every acknowledged write durable.
//!
//! **Invariant:** no HTTP and no async runtime here. The Qdrant-compatible
//! REST layer maps onto this crate; everything here is plain Rust that the
//! tests drive directly.

pub mod collection;
pub mod distance;
pub mod filter;
pub mod hnsw;
mod point;
pub mod quantize;
mod store;
mod vectors;
pub mod wal;

pub use collection::{Collection, CollectionConfig, PointStruct, ScoredPoint, SearchRequest};
pub use distance::Distance;
pub use point::{Payload, PointId};
pub use store::{Store, validate_name};
pub use vectors::VectorStore;

/// Everything that can go wrong in the engine. Messages name the problem
/// so the REST layer can pass them to the client as they are.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// A request the caller can fix (4xx).
    #[error("{0}")]
    BadRequest(String),
    /// A collection or point that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Storage failed (5xx): the write was not acknowledged.
    #[error("storage error at {path}: {err}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        err: std::io::Error,
    },
    /// A service the store relies on (a served model that embeds or
    /// generates) cannot answer now: 429 when it says when to retry, else
    /// 503. The engine itself never raises it.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_s: Option<u64>,
    },
    /// On-disk data that cannot be read back.
    #[error("corrupt data in {path}: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
}

impl VectorError {
    pub fn bad(msg: impl Into<String>) -> Self {
        VectorError::BadRequest(msg.into())
    }
}
