//! `neocloud up`: fetch and load the configured models, serve them, drain on
//! SIGTERM. Today every model runs inside this process; the control plane
//! and per-replica worker processes come with the orchestrator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
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
    runtime.block_on(serve(args, services, cache))
}

async fn serve(
    args: UpArgs,
    services: Vec<ServiceSpec>,
    cache: neocloud_registry::Cache,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let state = WorkerState::new(Metrics::new(), args.max_body_bytes);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(neocloud_worker::serve(listener, state.clone(), {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }));
    tracing::info!(%addr, "listening; loading models");

    // Load every model while the server already answers liveness probes.
    let loading = {
        let state = state.clone();
        async move {
            for spec in services {
                let name = spec.name.clone();
                let served = load_service(spec, cache.clone(), &state)
                    .await
                    .with_context(|| format!("service {name:?}"))?;
                state.add_model(served);
            }
            anyhow::Ok(())
        }
    };
    let mut stop_rx_load = stop_rx.clone();
    tokio::select! {
        loaded = loading => {
            if let Err(e) = loaded {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(e);
            }
        }
        _ = shutdown_signal() => {
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Ok(());
        }
        _ = stop_rx_load.wait_for(|s| *s) => {}
    }
    state.set_ready(true);
    println!("neocloud listening on http://{addr}");
    for m in state.models() {
        println!(
            "  serving {} (embedding, {} dimensions, up to {} tokens)",
            m.name,
            m.embedder.dimension(),
            m.embedder.max_tokens()
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    server.await.context("server task")??;
    Ok(())
}

async fn load_service(
    spec: ServiceSpec,
    cache: neocloud_registry::Cache,
    state: &WorkerState,
) -> anyhow::Result<ServedModel> {
    let model_spec = spec.model.spec.clone();
    let source = Source::parse(&model_spec.source).context("spec.source")?;
    let name = spec.name.clone();
    let embedder = tokio::task::spawn_blocking(move || -> anyhow::Result<SentenceEmbedder> {
        let fetched = cache.fetch(&source, model_spec.sha256.as_deref())?;
        tracing::info!(service = %name, source = %source, path = %fetched.path.display(), "loading");
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
    Ok(ServedModel::new(spec.name, embedder, batcher))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
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
