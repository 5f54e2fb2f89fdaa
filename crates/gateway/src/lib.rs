//! The gateway role: the front door that every inference request passes on
//! its way to a model replica.
//!
//! A request names a model (the OpenAI body's `"model"` field, or the KServe
//! v2 path `/v2/models/{model}/...`). The gateway looks the name up in its
//! [`RoutingTable`] to find a Service, picks a version by traffic weight and
//! then one replica endpoint (power of two choices on outstanding requests,
//! with prefix affinity for generation services so that repeated prompts
//! reach the replica whose KV cache holds them), and proxies the request with
//! the body unchanged, streaming the answer back chunk by chunk. Around that:
//! retries on endpoints that fail before answering, outlier ejection, a
//! bounded per-service queue (429 past it), a scale-from-zero hold that wakes
//! the service through an [`Activator`], API keys ([`ApiKeys`], a tower
//! layer), and per-service counters for the autoscaler ([`Gateway::stats`]).
//!
//! What it is not: it starts no replicas, reads no resources and keeps no
//! state beyond counters. The control plane hands it routing tables through
//! [`Gateway::set_table`]; the autoscaler reads [`Gateway::stats`].
//!
//! **Invariant: the gateway never waits on the control plane.** It serves
//! from the last routing table it was given; a control plane that restarts
//! or stalls changes nothing for requests except that the table stops
//! changing. The only wait is the scale-from-zero hold, which is bounded and
//! ends when any new table gives the service an endpoint.

mod auth;
mod balance;
mod config;
mod error;
mod proxy;
mod scan;
mod table;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

pub use auth::{ApiKeyLayer, ApiKeyService, ApiKeys, ApiKeysError, AuthorizedKey};
pub use config::GatewayConfig;
pub use error::GatewayError;
pub use proxy::{router, serve, standalone_router};
pub use table::{Endpoint, RoutingTable, ServiceRoute, VersionRoute};

use table::{CompiledTable, EndpointState, ServiceCounters};

/// Wakes a service that has no replicas (scale from zero). The gateway
/// calls it for every request that arrives while the service has no
/// endpoint, then holds the request until a routing table gives the service
/// one; implementations should be cheap and idempotent (e.g. set a flag the
/// autoscaler reads) and must not block.
pub trait Activator: Send + Sync {
    fn wake(&self, service: &str);
}

impl<F: Fn(&str) + Send + Sync> Activator for F {
    fn wake(&self, service: &str) {
        self(service)
    }
}

/// An activator that does nothing: for gateways whose services never scale
/// to zero (a static table).
pub struct NoActivator;

impl Activator for NoActivator {
    fn wake(&self, _service: &str) {}
}

/// What the autoscaler reads per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStats {
    /// Requests admitted and not yet finished: forwarded ones until their
    /// response body ends, plus those held waiting for a replica.
    pub in_flight: u64,
    /// Requests that named this service since the gateway started,
    /// including those refused with 429.
    pub requests_total: u64,
}

/// The gateway: a cheap handle (clone it freely) over the shared routing
/// state and the upstream connection pool.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    activator: Arc<dyn Activator>,
    table: ArcSwap<CompiledTable>,
    /// Per-endpoint and per-service state that outlives a table swap, by
    /// endpoint id and service name. Locked only by `set_table`.
    registry: Mutex<Registry>,
    /// Bumped by every `set_table`; held requests wait on it.
    table_version: tokio::sync::watch::Sender<u64>,
    /// The zero of the nanosecond clock that ejection deadlines use.
    epoch: Instant,
}

#[derive(Default)]
struct Registry {
    endpoints: HashMap<String, Arc<EndpointState>>,
    services: HashMap<String, Arc<ServiceCounters>>,
}

impl Gateway {
    /// A gateway with an empty routing table. Upstream connections are made
    /// lazily on the Tokio runtime that serves the requests.
    pub fn new(config: GatewayConfig, activator: Arc<dyn Activator>) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                config,
                activator,
                table: ArcSwap::from_pointee(CompiledTable::default()),
                registry: Mutex::new(Registry::default()),
                table_version: tokio::sync::watch::Sender::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// Replaces the routing table. Requests already routed finish where they
    /// are; new ones use the new table at once. Outstanding counts, failure
    /// counts and ejections carry over for every endpoint whose id and
    /// address stay the same (a changed address is a new process: it starts
    /// fresh). Requests held for a service without replicas are released if
    /// the new table gives it an endpoint.
    pub fn set_table(&self, table: RoutingTable) {
        let mut registry = match self.inner.registry.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let compiled = CompiledTable::compile(table, &mut registry, &self.inner.config);
        self.inner.table.store(Arc::new(compiled));
        drop(registry);
        self.inner.table_version.send_modify(|v| *v += 1);
    }

    /// The table currently served, as it was given.
    pub fn table(&self) -> RoutingTable {
        self.inner.table.load().source.clone()
    }

    /// Per-service counters for the autoscaler, for every service in the
    /// current table. Reads a few atomics per service.
    pub fn stats(&self) -> BTreeMap<String, ServiceStats> {
        let table = self.inner.table.load();
        table
            .services
            .iter()
            .map(|(name, svc)| {
                let stats = ServiceStats {
                    in_flight: svc.counters.in_flight.load(Ordering::Relaxed),
                    requests_total: svc.counters.requests_total.load(Ordering::Relaxed),
                };
                (name.clone(), stats)
            })
            .collect()
    }

    /// The configuration this gateway was built with.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    fn now_nanos(&self) -> u64 {
        // +1 so that 0 can mean "never" in the endpoint state.
        self.inner.epoch.elapsed().as_nanos() as u64 + 1
    }
}
