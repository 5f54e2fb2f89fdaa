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

use anyhow::Context;
use neocloud_api::WorkerSpec;
use neocloud_worker::{Metrics, WorkerState};

use crate::CacheArgs;
use crate::config::ServiceSpec;

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
    let threads = spec.threads;
    let service = ServiceSpec {
        name: spec.service.clone(),
        model: spec.model,
        batching: spec.batching,
        generation: spec.generation,
    };
    let loading = crate::up::load_service(service, cache, &state, threads);
    let line = tokio::select! {
        loaded = loading => match loaded {
            Ok(line) => line,
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = server.await;
                return Err(e.context(format!("service {:?}", spec.service)));
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
