//! `neocloud gateway`: the gateway role alone, in front of replicas named on
//! the command line (a static routing table: each service one version).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use neocloud_gateway::{
    ApiKeys, Endpoint, Gateway, GatewayConfig, NoActivator, RoutingTable, ServiceRoute,
    VersionRoute,
};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, env = "NEOCLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A service and its replicas, NAME=HOST:PORT[,HOST:PORT...]; repeat
    /// the flag for more services. NAME is the model name clients send.
    #[arg(long = "upstream", value_name = "NAME=HOST:PORT[,...]", required = true, value_parser = parse_upstream)]
    upstreams: Vec<Upstream>,
    /// Services that generate text (prefix affinity on), by NAME.
    #[arg(long, value_name = "NAME")]
    generation: Vec<String>,
    /// API keys (YAML or JSON list of {name, key | sha256, services}); off when unset.
    #[arg(long, env = "NEOCLOUD_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// Threads of the gateway's async runtime (default: all cores).
    #[arg(long, env = "NEOCLOUD_THREADS")]
    threads: Option<usize>,
    /// Requests per service in flight or held before the gateway answers 429.
    #[arg(long, default_value_t = GatewayConfig::default().max_pending_per_service)]
    max_pending: u32,
}

#[derive(Clone)]
struct Upstream {
    name: String,
    addrs: Vec<SocketAddr>,
}

fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let (name, list) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT[,HOST:PORT...], got {text:?}"))?;
    if name.is_empty() {
        return Err(format!("the service name is empty in {text:?}"));
    }
    let addrs = list
        .split(',')
        .map(|addr| {
            addr.to_socket_addrs()
                .map_err(|e| format!("{addr:?}: {e}"))?
                .next()
                .ok_or_else(|| format!("{addr:?} resolves to no address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Upstream {
        name: name.to_string(),
        addrs,
    })
}

pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.enable_all().thread_name("neocloud-gw").build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: GatewayArgs) -> anyhow::Result<()> {
    let keys = match &args.api_keys {
        Some(path) => Some(Arc::new(ApiKeys::load(path)?)),
        None => None,
    };
    let mut table = RoutingTable::default();
    for upstream in &args.upstreams {
        let endpoints = upstream
            .addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| Endpoint {
                id: format!("{}/{i}", upstream.name),
                addr: *addr,
            })
            .collect();
        let route = ServiceRoute {
            versions: vec![VersionRoute {
                name: "static".to_string(),
                weight: 1,
                endpoints,
            }],
            generation: args.generation.contains(&upstream.name),
            max_pending: None,
        };
        table.services.insert(upstream.name.clone(), route);
    }
    let config = GatewayConfig {
        max_pending_per_service: args.max_pending,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config, Arc::new(NoActivator));
    gateway.set_table(table);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("neocloud gateway listening on http://{addr}");
    for upstream in &args.upstreams {
        let addrs: Vec<String> = upstream.addrs.iter().map(|a| a.to_string()).collect();
        println!("  {} -> {}", upstream.name, addrs.join(", "));
    }
    let app = neocloud_gateway::standalone_router(gateway, keys);
    neocloud_gateway::serve(listener, app, crate::up::shutdown_signal()).await?;
    Ok(())
}
