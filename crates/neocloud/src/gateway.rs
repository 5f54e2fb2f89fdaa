//! `neocloud gateway`: the gateway role alone, in front of replicas named on
//! the command line (a static routing table: each service one version), or
//! following a control plane (`--control-plane URL`): it polls the routing
//! table `up` publishes at `/gateway/routes`, keeps serving from the last
//! one it got while the control plane is away, and asks it to wake
//! services at zero (`POST /gateway/wake/{service}`).

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
    #[arg(long = "upstream", value_name = "NAME=HOST:PORT[,...]", required_unless_present = "control_plane", value_parser = parse_upstream)]
    upstreams: Vec<Upstream>,
    /// Follow this control plane's routing table (e.g. http://127.0.0.1:8080)
    /// instead of static upstreams.
    #[arg(long, env = "NEOCLOUD_SERVER", conflicts_with = "upstreams")]
    control_plane: Option<String>,
    /// How often the routing table is fetched from the control plane.
    #[arg(long, default_value = "250ms", value_parser = humantime_serde::re::humantime::parse_duration)]
    refresh: std::time::Duration,
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

/// Runs the gateway on `--threads` threads, each a single-threaded Tokio
/// runtime with its own listening socket on the same port (SO_REUSEPORT),
/// so that the kernel spreads connections over them and a request never
/// changes threads: the shape of nginx's worker processes.
pub fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let keys = match &args.api_keys {
        Some(path) => Some(Arc::new(ApiKeys::load(path)?)),
        None => None,
    };
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<String>();
    let activator: Arc<dyn neocloud_gateway::Activator> = match &args.control_plane {
        Some(_) => Arc::new(move |service: &str| {
            let _ = wake_tx.send(service.to_string());
        }),
        None => Arc::new(NoActivator),
    };
    let gateway = Gateway::new(
        GatewayConfig {
            max_pending_per_service: args.max_pending,
            ..GatewayConfig::default()
        },
        activator,
    );
    match &args.control_plane {
        Some(url) => follow(
            gateway.clone(),
            url.trim_end_matches('/').to_string(),
            args.refresh,
            wake_rx,
        )?,
        None => gateway.set_table(table(&args)),
    }

    // The main thread's runtime waits for the signal; binding happens
    // inside it because Tokio's sockets need a reactor (each listener
    // then moves to its own thread's runtime).
    let main_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let entered = main_runtime.enter();
    let first = reuseport_listener(args.listen)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport_listener(addr)?);
    }
    drop(entered);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::with_capacity(threads);
    for (i, listener) in listeners.into_iter().enumerate() {
        let app = neocloud_gateway::standalone_router(gateway.clone(), keys.clone());
        let mut stop = stop_rx.clone();
        let worker = std::thread::Builder::new()
            .name(format!("neocloud-gw-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    };
                    neocloud_gateway::serve(listener, app, shutdown).await?;
                    Ok(())
                })
            })?;
        workers.push(worker);
    }

    println!("neocloud gateway listening on http://{addr} ({threads} threads)");
    if let Some(url) = &args.control_plane {
        println!("  routing table from {url}/gateway/routes");
    }
    for upstream in &args.upstreams {
        let addrs: Vec<String> = upstream.addrs.iter().map(|a| a.to_string()).collect();
        println!("  {} -> {}", upstream.name, addrs.join(", "));
    }
    main_runtime.block_on(crate::up::shutdown_signal());
    let _ = stop_tx.send(true);
    for worker in workers {
        match worker.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("a gateway thread panicked"),
        }
    }
    Ok(())
}

/// Keeps `gateway`'s table equal to the control plane's, from a thread of
/// its own: every `refresh` it fetches `/gateway/routes`; while that
/// fails, the gateway serves from the last table (logged once per outage).
/// Services the gateway wants woken are posted to `/gateway/wake/NAME`.
fn follow(
    gateway: Gateway,
    url: String,
    refresh: std::time::Duration,
    wakes: std::sync::mpsc::Receiver<String>,
) -> anyhow::Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(2))
        .build();
    let fetch = {
        let (agent, url) = (agent.clone(), url.clone());
        move || -> anyhow::Result<RoutingTable> {
            let resp = agent.get(&format!("{url}/gateway/routes")).call()?;
            Ok(serde_json::from_reader(resp.into_reader())?)
        }
    };
    // The first table before serving, when the control plane is there.
    match fetch() {
        Ok(table) => gateway.set_table(table),
        Err(e) => {
            tracing::warn!("no routing table from {url} yet ({e}); serving none until it answers")
        }
    }
    std::thread::Builder::new()
        .name("neocloud-gw-follow".into())
        .spawn(move || {
            let mut last = gateway.table();
            let mut down = false;
            loop {
                let deadline = std::time::Instant::now() + refresh;
                // Wake requests are sent as they come, deduplicated per round.
                let mut woken = std::collections::BTreeSet::new();
                while let Ok(service) =
                    wakes.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                {
                    if woken.insert(service.clone()) {
                        let _ = agent.post(&format!("{url}/gateway/wake/{service}")).call();
                    }
                }
                match fetch() {
                    Ok(table) => {
                        if down {
                            tracing::info!("the control plane at {url} answers again");
                            down = false;
                        }
                        if table != last {
                            gateway.set_table(table.clone());
                            last = table;
                        }
                    }
                    Err(e) => {
                        if !down {
                            tracing::warn!("the control plane at {url} does not answer ({e}); serving from the last routing table");
                            down = true;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// The static table of the command line: each `--upstream` one service of
/// one version.
fn table(args: &GatewayArgs) -> RoutingTable {
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
    table
}

/// A non-blocking listening socket that shares its port with the other
/// threads' ones.
fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
    let listener = socket.listen(1024)?;
    Ok(listener.into_std()?)
}
