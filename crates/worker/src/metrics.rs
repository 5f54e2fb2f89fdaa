//! Prometheus metrics: request counts and latencies recorded by a layer,
//! batch and queue figures fed by the runtime's [`BatchObserver`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use neocloud_runtime::{BatchObserver, BatchStats};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::state::WorkerState;

/// The model a response was for, set by handlers for the metrics layer.
#[derive(Clone)]
pub struct ModelLabel(pub String);

/// Every metric the worker exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    queue_duration: HistogramVec,
    inference_duration: HistogramVec,
    batch_size: HistogramVec,
    batch_tokens: HistogramVec,
    queue_depth: IntGaugeVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "neocloud_requests_total",
                "HTTP requests by model, endpoint and status.",
            ),
            &["model", "endpoint", "status"],
        )
        .expect("valid counter");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "neocloud_queue_depth",
                "Sequences waiting in a model's batching queue.",
            ),
            &["model"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(queue_depth.clone()))
            .expect("unique metric");
        let pow2 = |max: u32| (0..=max).map(|i| f64::from(1u32 << i)).collect::<Vec<_>>();
        Metrics {
            request_duration: hist(
                "neocloud_request_duration_seconds",
                "Time from request to response.",
                LATENCY_BUCKETS.to_vec(),
                &["model", "endpoint"],
            ),
            queue_duration: hist(
                "neocloud_queue_duration_seconds",
                "Time a sequence waited in the batching queue.",
                LATENCY_BUCKETS.to_vec(),
                &["model"],
            ),
            inference_duration: hist(
                "neocloud_inference_duration_seconds",
                "Time of one batch's forward pass.",
                LATENCY_BUCKETS.to_vec(),
                &["model"],
            ),
            batch_size: hist(
                "neocloud_batch_size",
                "Sequences per batch.",
                pow2(10),
                &["model"],
            ),
            batch_tokens: hist(
                "neocloud_batch_tokens",
                "Tokens per batch.",
                pow2(17),
                &["model"],
            ),
            requests,
            queue_depth,
            registry,
        }
    }

    /// An observer that feeds this model's batch metrics.
    pub fn observer(&self, model: &str) -> Arc<dyn BatchObserver> {
        Arc::new(ModelObserver {
            metrics: self.clone(),
            model: model.to_string(),
        })
    }

    fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding our own registry to memory cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

struct ModelObserver {
    metrics: Metrics,
    model: String,
}

impl BatchObserver for ModelObserver {
    fn on_batch(&self, stats: &BatchStats) {
        let m = &self.metrics;
        let label = [self.model.as_str()];
        m.batch_size
            .with_label_values(&label)
            .observe(stats.sequences as f64);
        m.batch_tokens
            .with_label_values(&label)
            .observe(stats.tokens as f64);
        m.inference_duration
            .with_label_values(&label)
            .observe(stats.inference.as_secs_f64());
        let queue = m.queue_duration.with_label_values(&label);
        for w in &stats.queue_waits {
            queue.observe(w.as_secs_f64());
        }
    }

    fn on_queue_depth(&self, depth: usize) {
        self.metrics
            .queue_depth
            .with_label_values(&[self.model.as_str()])
            .set(depth as i64);
    }
}

/// `GET /metrics`.
pub async fn export(State(state): State<WorkerState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response()
}

/// A layer that counts every request by model, endpoint and status.
pub async fn track_requests(
    State(state): State<WorkerState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let endpoint = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    if endpoint == "/metrics" {
        return resp;
    }
    let model = resp
        .extensions()
        .get::<ModelLabel>()
        .map(|m| m.0.as_str())
        .unwrap_or("");
    let m = state.metrics();
    m.requests
        .with_label_values(&[model, endpoint.as_str(), resp.status().as_str()])
        .inc();
    m.request_duration
        .with_label_values(&[model, endpoint.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}
