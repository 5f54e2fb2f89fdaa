//! `neocloud up`: the platform on this machine. The control plane (store,
//! API, controller), the gateway and the vector store run in this process
//! on one listener; every model replica is a `neocloud worker` process that
//! the local orchestrator starts, probes, restarts and drains. The config
//! (the built-in defaults or `--config`) is applied to the store at start,
//! like `neocloud apply`. SIGTERM drains the gateway and the workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use neocloud_api::ApiError;
use neocloud_gateway::{Gateway, GatewayConfig};
use neocloud_orchestrator::{Capacity, LocalOrchestrator, OrchestratorConfig, ReplicaState};
use serde_json::{Value, json};

use crate::CacheArgs;
use crate::config;
use crate::platform::{Controller, Wakeups};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, env = "NEOCLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// State and vector data directory (default ~/.local/share/neocloud).
    #[arg(long, env = "NEOCLOUD_DATA")]
    data_dir: Option<PathBuf>,
    /// Models and services to serve (YAML); built-in defaults when absent.
    #[arg(long, env = "NEOCLOUD_CONFIG")]
    config: Option<PathBuf>,
    /// Inference threads per worker (default: all cores).
    #[arg(long, env = "NEOCLOUD_THREADS")]
    pub threads: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = neocloud_worker::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// API keys (YAML or JSON list of {name, key | sha256, services?});
    /// off when unset.
    #[arg(long, env = "NEOCLOUD_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// GPUs replicas may reserve (default: what NVML reports).
    #[arg(long, env = "NEOCLOUD_GPUS")]
    gpus: Option<u32>,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let docs = config::documents(args.config.as_deref())?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => crate::home_dir()?.join(".local/share/neocloud"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("neocloud-io")
        .build()?;
    runtime.block_on(serve(args, docs, data_dir))
}

async fn serve(args: UpArgs, docs: Vec<Value>, data_dir: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let keys = match &args.api_keys {
        Some(path) => Some(Arc::new(
            neocloud_gateway::ApiKeys::load(path)
                .with_context(|| format!("API keys from {}", path.display()))?,
        )),
        None => None,
    };

    // The control plane's store, with the config applied; the vector
    // store, recovered (snapshot + log replay, index rebuild).
    let (store, vectors) = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = neocloud_control::Store::open(&dir).context("opening the control store")?;
            for doc in docs {
                let what = format!(
                    "{}/{}",
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?")
                );
                let (_, outcome) = store
                    .apply(doc)
                    .with_context(|| format!("applying {what}"))?;
                tracing::info!("{what} {}", outcome.as_str());
            }
            let vectors =
                neocloud_vectord::VectorState::open(&dir).context("opening the vector store")?;
            Ok((store, vectors))
        })
        .await??
    };
    let collections = vectors.store().names().len();

    // Workers: this binary's `worker` command with the same cache.
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut command = vec![exe.display().to_string(), "worker".to_string()];
    command.extend(args.cache.worker_args()?);
    let mut ocfg = OrchestratorConfig::new(
        command,
        data_dir.join("run"),
        data_dir.join("logs"),
        Capacity::detect(args.gpus),
    );
    ocfg.env.push((
        "NEOCLOUD_LOG".into(),
        std::env::var("NEOCLOUD_LOG").unwrap_or_else(|_| "info".into()),
    ));
    let (orch, events) = LocalOrchestrator::start(ocfg);

    let wakeups = Wakeups::default();
    let wakeups_for_api = wakeups.clone();
    let gateway = {
        let w = wakeups.clone();
        Gateway::new(
            GatewayConfig {
                max_body_bytes: args.max_body_bytes,
                ..GatewayConfig::default()
            },
            Arc::new(move |service: &str| w.wake(service)),
        )
    };
    let inference = neocloud_gateway::router(gateway.clone());
    let vectors = vectors
        .with_embedder(Arc::new(ViaGateway(inference.clone())))
        .with_generator(Arc::new(ViaGateway(inference.clone())));
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let controller = Controller::new(
        store.clone(),
        orch.clone(),
        events,
        gateway.clone(),
        vectors.clone(),
        wakeups,
        threads,
        args.max_body_bytes,
    );
    let ready = controller.ready.clone();
    let synced = controller.synced.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let control_task = tokio::spawn(controller.run(stop_rx.clone()));

    let platform = Router::new()
        .route("/v2", get(neocloud_worker::server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(health_ready))
        .route("/metrics", get(metrics))
        .route("/gateway/routes", get(routes))
        .route("/gateway/wake/{service}", axum::routing::post(wake))
        .with_state(PlatformState {
            ready: ready.clone(),
            synced,
            orch: orch.clone(),
            gateway: gateway.clone(),
            wakeups: wakeups_for_api,
        });
    let mut app = Router::new()
        .merge(inference)
        .merge(neocloud_control::api::router(
            store.clone(),
            data_dir.clone(),
        ))
        .merge(neocloud_vectord::router(vectors.clone()))
        .merge(platform)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(args.max_body_bytes));
    if let Some(keys) = keys {
        app = app.layer(neocloud_gateway::ApiKeyLayer::new(keys));
    }
    let server = tokio::spawn(neocloud_gateway::serve(listener, app, {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }));
    tracing::info!(%addr, "listening; starting workers");

    let became_ready = async {
        while !ready.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let stopped_early = tokio::select! {
        _ = became_ready => false,
        _ = shutdown_signal() => true,
    };
    if !stopped_early {
        println!("neocloud listening on http://{addr}");
        let mut services: Vec<(String, usize)> = Vec::new();
        for r in orch.replicas() {
            if r.state == ReplicaState::Ready {
                match services.iter_mut().find(|(s, _)| *s == r.service) {
                    Some((_, n)) => *n += 1,
                    None => services.push((r.service.clone(), 1)),
                }
            }
        }
        for (service, n) in services {
            println!(
                "  serving {service} ({n} replica{})",
                if n == 1 { "" } else { "s" }
            );
        }
        println!(
            "  vector store (Qdrant API): {collections} collection(s) in {}",
            vectors.store().root().display()
        );
        println!("  control plane: http://{addr}/apis/neocloud.dev/v1 (neocloud get services)");
        shutdown_signal().await;
    }
    tracing::info!("shutting down: draining requests, then the workers");
    let _ = stop_tx.send(true);
    let _ = control_task.await;
    server.await.context("server task")??;
    orch.shutdown().await;
    Ok(())
}

#[derive(Clone)]
struct PlatformState {
    ready: Arc<std::sync::atomic::AtomicBool>,
    synced: Arc<std::sync::atomic::AtomicBool>,
    orch: LocalOrchestrator,
    gateway: Gateway,
    wakeups: Wakeups,
}

/// The routing table this process's gateway serves, for gateways running
/// apart (`neocloud gateway --control-plane URL`).
/// 503 until the controller has built its first table: a control plane
/// that just started must not hand its empty table to gateways that still
/// serve the last good one.
async fn routes(State(st): State<PlatformState>) -> Response {
    if !st.synced.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "the routing table is not built yet"})),
        )
            .into_response();
    }
    axum::Json(st.gateway.table()).into_response()
}

/// A gateway running apart asks for a service at zero to be woken.
async fn wake(
    State(st): State<PlatformState>,
    axum::extract::Path(service): axum::extract::Path<String>,
) -> StatusCode {
    st.wakeups.wake(&service);
    StatusCode::ACCEPTED
}

async fn health_ready(State(st): State<PlatformState>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        StatusCode::OK.into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "services are still starting"})),
        )
            .into_response()
    }
}

/// Every ready replica's `/metrics`, each sample labelled with its
/// service and replica.
async fn metrics(State(st): State<PlatformState>) -> Response {
    let targets: Vec<(String, String, SocketAddr)> = st
        .orch
        .replicas()
        .into_iter()
        .filter(|r| r.state == ReplicaState::Ready)
        .filter_map(|r| Some((r.service, r.name, r.addr?)))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, (_, _, addr)) in targets.iter().enumerate() {
        let addr = *addr;
        set.spawn(async move {
            (
                i,
                neocloud_orchestrator::http_get(addr, "/metrics", Duration::from_secs(2)).await,
            )
        });
    }
    let mut texts: Vec<Option<String>> = vec![None; targets.len()];
    for (i, got) in set.join_all().await {
        if let Some((200, body)) = got {
            texts[i] = String::from_utf8(body).ok();
        }
    }
    let labels: Vec<[(&str, &str); 2]> = targets
        .iter()
        .map(|(s, r, _)| [("service", s.as_str()), ("replica", r.as_str())])
        .collect();
    let sources: Vec<neocloud_worker::federate::Exposition<'_>> = texts
        .iter()
        .zip(&labels)
        .filter_map(|(t, l)| {
            Some(neocloud_worker::federate::Exposition {
                labels: l,
                text: t.as_deref()?,
            })
        })
        .collect();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        neocloud_worker::federate::merge(&sources),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {"message": format!("no route for {}", uri.path()), "type": "not_found_error"}})),
    )
        .into_response()
}

/// The vector store's embedding and chat calls, sent through the gateway
/// in-process (same routing, balancing and scale-from-zero as clients get).
struct ViaGateway(Router);

impl ViaGateway {
    async fn post(&self, path: &str, body: Value) -> Result<Value, ApiError> {
        use tower::ServiceExt;
        let request = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let response = self
            .0
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = axum::body::to_bytes(response.into_body(), 256 << 20)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .or_else(|| value["error"].as_str())
            .unwrap_or("the model failed")
            .to_string();
        Err(match status.as_u16() {
            404 => ApiError::not_found(message),
            429 => ApiError::overloaded(message, Duration::from_secs(retry_after.unwrap_or(1))),
            s if s < 500 => ApiError::bad_request(message),
            503 => ApiError::new(neocloud_api::ErrorKind::Unavailable, message),
            _ => ApiError::internal(message),
        })
    }
}

impl neocloud_vectord::TextEmbedder for ViaGateway {
    fn embed<'a>(
        &'a self,
        model: &'a str,
        texts: Vec<String>,
    ) -> neocloud_vectord::ModelFuture<'a, Vec<Vec<f32>>> {
        Box::pin(async move {
            let v = self
                .post("/v1/embeddings", json!({"model": model, "input": texts}))
                .await?;
            let data = v["data"].as_array().cloned().unwrap_or_default();
            let mut out = vec![Vec::new(); data.len()];
            for item in data {
                let i = item["index"].as_u64().unwrap_or(0) as usize;
                let vector = item["embedding"]
                    .as_array()
                    .map(|xs| {
                        xs.iter()
                            .filter_map(|x| x.as_f64())
                            .map(|x| x as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(slot) = out.get_mut(i) {
                    *slot = vector;
                }
            }
            Ok(out)
        })
    }
}

impl neocloud_vectord::TextGenerator for ViaGateway {
    fn chat<'a>(&'a self, mut request: Value) -> neocloud_vectord::ModelFuture<'a, Value> {
        Box::pin(async move {
            request["stream"] = json!(false);
            self.post("/v1/chat/completions", request).await
        })
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
