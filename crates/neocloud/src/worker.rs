//! `neocloud worker`: one model replica as its own HTTP microservice, the
//! process the orchestrator starts per replica. It loads the one model its
//! spec names, serves it under the service's name (OpenAI, KServe v2,
//! `/metrics`, `/v2/health/live` at once and `/v2/health/ready` once
//! loaded), and drains in-flight requests on SIGTERM.
//!
//! It binds before it loads and then writes the bound address to
//! `--port-file` (atomically), so the orchestrator can listen on port 0
//! without races and probe liveness while the model loads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use neocloud_api::{ModelTask, WorkerSpec};
use neocloud_registry::Source;
use neocloud_runtime::{EmbedderOptions, SentenceEmbedder, TokenBudgetBatcher};
use neocloud_worker::{Metrics, ServedModel, WorkerState};

use crate::CacheArgs;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The replica's spec (JSON: service, model, batching, generation).
    #[arg(long)]
    spec: PathBuf,
    /// Address to listen on (port 0: any free port, see --port-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the bound address once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let text = std::fs::read(&args.spec)
        .with_context(|| format!("reading the worker spec {}", args.spec.display()))?;
    let spec: WorkerSpec = serde_json::from_slice(&text)
        .with_context(|| format!("parsing the worker spec {}", args.spec.display()))?;
    let cache = args.cache.cache()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("neocloud-worker")
        .build()?;
    runtime.block_on(serve(args, spec, cache))
}

async fn serve(
    args: WorkerArgs,
    spec: WorkerSpec,
    cache: neocloud_registry::Cache,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let max_body = spec
        .max_body_bytes
        .unwrap_or(neocloud_worker::DEFAULT_MAX_BODY_BYTES);
    let state = WorkerState::new(Metrics::new(), max_body);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(neocloud_worker::serve(
        listener,
        state.clone(),
        axum::Router::new(),
        {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        },
    ));
    if let Some(path) = &args.port_file {
        write_atomically(path, addr.to_string().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%addr, service = %spec.service, "worker listening; loading the model");
    let service = spec.service.clone();
    let loading = load_service(spec, cache, &state);
    let line = tokio::select! {
        loaded = loading => match loaded {
            Ok(line) => line,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(e.context(format!("service {service:?}")));
            }
        },
        _ = crate::up::shutdown_signal() => {
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Ok(());
        }
    };
    state.set_ready(true);
    tracing::info!(%addr, "ready: serving {line}");
    crate::up::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    server.await.context("server task")??;
    Ok(())
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Fetches, loads and starts serving one service; returns the line `up`
/// prints for it.
async fn load_service(
    spec: WorkerSpec,
    cache: neocloud_registry::Cache,
    state: &WorkerState,
) -> anyhow::Result<String> {
    let model_spec = spec.model.spec.clone();
    let source = Source::parse(&model_spec.source).context("spec.source")?;
    let name = spec.service.clone();
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
        return load_llm(spec, fetched.path, state).await;
    }
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
        Some(state.metrics().observer(&spec.service)),
    );
    let line = format!(
        "{} (embedding, {} dimensions, up to {} tokens)",
        spec.service,
        embedder.dimension(),
        embedder.max_tokens()
    );
    state.add_model(ServedModel::new(spec.service, embedder, batcher));
    Ok(line)
}

#[cfg(feature = "llm")]
async fn load_llm(
    spec: WorkerSpec,
    path: std::path::PathBuf,
    state: &WorkerState,
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
            threads: spec.threads.map(|t| t as i32),
            unified_kv: false,
            prefix_caching: g.prefix_caching,
            chat_template,
        };
        Ok(LlmEngine::load(&gguf, config)?)
    })
    .await??;
    let line = format!(
        "{} (generation, up to {} tokens per sequence)",
        spec.service,
        engine.max_context()
    );
    state.add_llm(neocloud_worker::ServedLlm::new(
        spec.service,
        Arc::new(engine),
    ));
    Ok(line)
}

#[cfg(not(feature = "llm"))]
async fn load_llm(
    spec: WorkerSpec,
    _: std::path::PathBuf,
    _: &WorkerState,
) -> anyhow::Result<String> {
    let _ = (spec.generation, spec.threads); // read only by the engine this build lacks
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
