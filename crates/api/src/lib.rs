//! neocloud's shared vocabulary: the declarative resource types
//! (`Model`, `Service`), the wire types of the protocols neocloud speaks
//! (OpenAI, KServe v2 Open Inference Protocol) and the error type every role
//! maps onto its protocol's error shape.
//!
//! This crate does no I/O: no files, no network, no clocks. Everything in it
//! is plain data plus validation, so every other crate may depend on it.

pub mod chat;
pub mod error;
pub mod kserve;
pub mod openai;
pub mod resource;

pub use error::{ApiError, ErrorKind};
pub use resource::{
    API_VERSION, AutoscalingConfig, BatchingConfig, CollectionHnsw, CollectionQuantization,
    CollectionResource, CollectionSpec, Document, GenerationConfig, ModelFormat, ModelResource,
    ModelSpec, ModelTask, ObjectMeta, ReplicaBounds, ResourceRequests, RuntimeKind,
    ServiceResource, ServiceSpec, TrafficTarget, WorkerSpec,
};
