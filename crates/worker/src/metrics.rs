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
    #[cfg(feature = "llm")]
    pub(crate) vllm: VllmMetrics,
}

/// LLM metrics under vLLM's names and labels, so that dashboards and
/// autoscalers built for vLLM read neocloud unchanged.
#[cfg(feature = "llm")]
#[derive(Clone)]
pub(crate) struct VllmMetrics {
    pub running: prometheus::GaugeVec,
    pub waiting: prometheus::GaugeVec,
    pub kv_usage: prometheus::GaugeVec,
    pub ttft: HistogramVec,
    pub itl: HistogramVec,
    pub e2e: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub generation_tokens: IntCounterVec,
    pub success: IntCounterVec,
    pub prefix_queries: IntCounterVec,
    pub prefix_hits: IntCounterVec,
    /// Held while engine counters are copied out, so that two scrapes at
    /// once cannot both add the same increment.
    pub refresh: Arc<std::sync::Mutex<()>>,
}

#[cfg(feature = "llm")]
impl VllmMetrics {
    fn new(registry: &Registry) -> VllmMetrics {
        let gauge = |name: &str, help: &str| {
            let g = prometheus::GaugeVec::new(Opts::new(name, help), &["model_name"])
                .expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["model_name"],
            )
            .expect("valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        const TTFT: &[f64] = &[
            0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0,
        ];
        const ITL: &[f64] = &[
            0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0,
        ];
        const E2E: &[f64] = &[
            0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
            120.0, 240.0, 480.0, 960.0,
        ];
        VllmMetrics {
            running: gauge("vllm:num_requests_running", "Requests decoding now."),
            waiting: gauge(
                "vllm:num_requests_waiting",
                "Requests waiting for admission.",
            ),
            kv_usage: gauge(
                "vllm:kv_cache_usage_perc",
                "Fraction of KV-cache cells in use (0-1).",
            ),
            ttft: hist(
                "vllm:time_to_first_token_seconds",
                "Time to first token.",
                TTFT,
            ),
            itl: hist(
                "vllm:inter_token_latency_seconds",
                "Time between output tokens.",
                ITL,
            ),
            e2e: hist("vllm:e2e_request_latency_seconds", "Request latency.", E2E),
            prompt_tokens: counter(
                "vllm:prompt_tokens_total",
                "Prompt tokens processed.",
                &["model_name"],
            ),
            generation_tokens: counter(
                "vllm:generation_tokens_total",
                "Tokens generated.",
                &["model_name"],
            ),
            success: counter(
                "vllm:request_success_total",
                "Requests finished, by finish reason.",
                &["model_name", "finished_reason"],
            ),
            prefix_queries: counter(
                "vllm:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache.",
                &["model_name"],
            ),
            prefix_hits: counter(
                "vllm:prefix_cache_hits_total",
                "Prompt tokens whose KV came from the prefix cache.",
                &["model_name"],
            ),
            refresh: Arc::default(),
        }
    }
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
            #[cfg(feature = "llm")]
            vllm: VllmMetrics::new(&registry),
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
    #[cfg(feature = "llm")]
    state.refresh_llm_gauges();
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
