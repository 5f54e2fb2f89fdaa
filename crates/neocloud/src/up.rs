//! `neocloud up`: fetch and load the configured models, serve them, drain on
//! SIGTERM. Today every model runs inside this process; the control plane
//! and per-replica worker processes come with the orchestrator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use neocloud_api::ModelTask;
use neocloud_registry::Source;
use neocloud_runtime::{EmbedderOptions, SentenceEmbedder, TokenBudgetBatcher};
use neocloud_worker::{Metrics, ServedModel, WorkerState};

use crate::CacheArgs;
use crate::config::{self, ServiceSpec};

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
    /// Threads for inference (default: all cores).
    #[arg(long, env = "NEOCLOUD_THREADS")]
    pub threads: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = neocloud_worker::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let services = config::load(args.config.as_deref())?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => crate::home_dir()?.join(".local/share/neocloud"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let cache = args.cache.cache()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("neocloud-io")
        .build()?;
    runtime.block_on(serve(args, services, cache, data_dir))
}

async fn serve(
    args: UpArgs,
    services: Vec<ServiceSpec>,
    cache: neocloud_registry::Cache,
    data_dir: PathBuf,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // The vector store recovers its collections (snapshot + log replay,
    // index rebuild) before the first request can reach them.
    let vectors = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || neocloud_vectord::VectorState::open(&dir))
            .await?
            .context("opening the vector store")?
    };
    let collections = vectors.store().names().len();
    let state = WorkerState::new(Metrics::new(), args.max_body_bytes);
    let vectors = vectors.with_embedder(Arc::new(WorkerEmbedder(state.clone())));
    #[cfg(feature = "llm")]
    let vectors = vectors.with_generator(Arc::new(WorkerGenerator(state.clone())));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let vector_routes = neocloud_vectord::router(vectors.clone());
    let server = tokio::spawn(neocloud_worker::serve(
        listener,
        state.clone(),
        vector_routes,
        {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        },
    ));
    tracing::info!(%addr, "listening; loading models");

    // Load every model while the server already answers liveness probes.
    let threads = args.threads;
    let loading = {
        let state = state.clone();
        async move {
            let mut lines = Vec::new();
            for spec in services {
                let name = spec.name.clone();
                let line = load_service(spec, cache.clone(), &state, threads)
                    .await
                    .with_context(|| format!("service {name:?}"))?;
                lines.push(line);
            }
            anyhow::Ok(lines)
        }
    };
    let lines = tokio::select! {
        loaded = loading => match loaded {
            Ok(lines) => lines,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(e);
            }
        },
        _ = shutdown_signal() => {
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Ok(());
        }
    };
    state.set_ready(true);
    println!("neocloud listening on http://{addr}");
    for line in lines {
        println!("  serving {line}");
    }
    println!(
        "  vector store (Qdrant API): {collections} collection(s) in {}",
        vectors.store().root().display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    server.await.context("server task")??;
    Ok(())
}

/// Collections embed text with this process's served embedding models,
/// through their batching queues.
struct WorkerEmbedder(WorkerState);

impl neocloud_vectord::TextEmbedder for WorkerEmbedder {
    fn embed<'a>(
        &'a self,
        model: &'a str,
        texts: Vec<String>,
    ) -> neocloud_vectord::ModelFuture<'a, Vec<Vec<f32>>> {
        Box::pin(self.0.embed_texts(model, texts))
    }
}

/// Retrieval answers with this process's served chat models, on the same
/// engine queues as `/v1/chat/completions`.
#[cfg(feature = "llm")]
struct WorkerGenerator(WorkerState);

#[cfg(feature = "llm")]
impl neocloud_vectord::TextGenerator for WorkerGenerator {
    fn chat<'a>(
        &'a self,
        request: serde_json::Value,
    ) -> neocloud_vectord::ModelFuture<'a, serde_json::Value> {
        Box::pin(async move { neocloud_worker::chat_completion(&self.0, &request).await })
    }
}

/// Fetches, loads and starts serving one service; returns the line `up`
/// prints for it.
async fn load_service(
    spec: ServiceSpec,
    cache: neocloud_registry::Cache,
    state: &WorkerState,
    threads: Option<usize>,
) -> anyhow::Result<String> {
    let model_spec = spec.model.spec.clone();
    let source = Source::parse(&model_spec.source).context("spec.source")?;
    let name = spec.name.clone();
    let fetched = {
        let (source, digest, name) = (source.clone(), model_spec.sha256.clone(), name.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let fetched = cache.fetch(&source, digest.as_deref())?;
            tracing::info!(service = %name, source = %source, path = %fetched.path.display(), "loading");
            Ok(fetched)
        })
        .await??
    };
    if model_spec.task == ModelTask::Generation {
        return load_llm(spec, fetched.path, state, threads).await;
    }
    let _ = threads;
    let embedder = tokio::task::spawn_blocking(move || -> anyhow::Result<SentenceEmbedder> {
        let options = EmbedderOptions {
            max_input_tokens: model_spec.max_input_tokens,
        };
        Ok(SentenceEmbedder::load(
            &fetched.path,
            &neocloud_runtime::default_device(),
            &options,
        )?)
    })
    .await??;
    let embedder = Arc::new(embedder);
    let batcher = TokenBudgetBatcher::start(
        embedder.clone(),
        spec.batching,
        Some(state.metrics().observer(&spec.name)),
    );
    let line = format!(
        "{} (embedding, {} dimensions, up to {} tokens)",
        spec.name,
        embedder.dimension(),
        embedder.max_tokens()
    );
    state.add_model(ServedModel::new(spec.name, embedder, batcher));
    Ok(line)
}

#[cfg(feature = "llm")]
async fn load_llm(
    spec: ServiceSpec,
    path: std::path::PathBuf,
    state: &WorkerState,
    threads: Option<usize>,
) -> anyhow::Result<String> {
    use neocloud_runtime::llm::{LlmConfig, LlmEngine};
    let engine = tokio::task::spawn_blocking(move || -> anyhow::Result<LlmEngine> {
        let gguf = find_gguf(&path)?;
        let g = spec.generation;
        let chat_template = spec.model.spec.chat_template.clone();
        let config = LlmConfig {
            kv_cells: g.kv_cells,
            max_seqs: g.max_sequences,
            step_tokens: g.step_tokens,
            default_max_tokens: g.default_max_tokens,
            max_waiting: g.max_waiting,
            threads: threads.map(|t| t as i32),
            unified_kv: false,
            prefix_caching: g.prefix_caching,
            chat_template,
        };
        Ok(LlmEngine::load(&gguf, config)?)
    })
    .await??;
    let line = format!(
        "{} (generation, up to {} tokens per sequence)",
        spec.name,
        engine.max_context()
    );
    state.add_llm(neocloud_worker::ServedLlm::new(spec.name, Arc::new(engine)));
    Ok(line)
}

#[cfg(not(feature = "llm"))]
async fn load_llm(
    spec: ServiceSpec,
    _: std::path::PathBuf,
    _: &WorkerState,
    _: Option<usize>,
) -> anyhow::Result<String> {
    let _ = spec.generation; // read only by the engine this build lacks
    anyhow::bail!(
        "Model {:?}: this neocloud was built without the `llm` feature (cargo build --features llm)",
        spec.model.metadata.name
    )
}

/// The GGUF file of a fetched model: the path itself, or the one `.gguf`
/// file in the directory.
#[cfg(feature = "llm")]
fn find_gguf(path: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let found: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no .gguf file in {}", path.display()),
        many => anyhow::bail!(
            "{} .gguf files in {}: name one with the source's #SUBDIR",
            many.len(),
            path.display()
        ),
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
