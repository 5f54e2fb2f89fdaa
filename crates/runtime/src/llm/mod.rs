//! Generative LLMs on llama.cpp with continuous batching.
//!
//! [`LlmEngine`] owns one llama.cpp context on a dedicated thread. Requests
//! join a waiting queue; between decode steps the engine admits as many as
//! the KV cache can hold (each gets its own sequence id), prefills prompts in
//! chunks so that a long prompt never stalls running decodes, decodes one
//! token for every running sequence in a single llama.cpp batch, and retires
//! sequences that finish or whose caller went away. Each request receives
//! its own stream of [`GenEvent`]s.

mod engine;
mod stop;
pub mod template;

pub use engine::{FinishReason, GenEvent, GenerateRequest, LlmConfig, LlmEngine, SamplingParams};
pub use template::ChatTemplate;
