//! The routing table the control plane hands the gateway, and the compiled
//! form that requests read: endpoints resolved to their shared state, weights
//! summed, lookups by `&str`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::{GatewayConfig, Registry};

/// Everything the gateway routes: service name (the name clients send as
/// `"model"`) → route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    pub services: BTreeMap<String, ServiceRoute>,
}

/// One service: its versions and how to balance among its replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRoute {
    /// Versions that share the traffic, by weight. A service whose versions
    /// have no endpoints at all is scaled to zero: requests are held while
    /// the activator wakes it.
    pub versions: Vec<VersionRoute>,
    /// A generation (LLM) service: requests with the same prompt prefix
    /// prefer the same replica, whose prefix cache holds it.
    #[serde(default)]
    pub generation: bool,
    /// This service's bound on in-flight plus held requests; the gateway's
    /// `max_pending_per_service` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
}

/// One version of a service (e.g. a model revision during a canary).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRoute {
    pub name: String,
    /// Relative share of the service's traffic. Versions without endpoints
    /// get none; if every version with endpoints weighs 0, they share it
    /// evenly.
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
}

/// One replica: a worker process that serves the service's model under the
/// service's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable name of the replica, e.g. `"embed/replica-2"`. Balancing and
    /// health state is kept per id across table swaps.
    pub id: String,
    pub addr: SocketAddr,
}

/// Live state of one endpoint, shared by every table that names it.
pub(crate) struct EndpointState {
    pub id: String,
    pub addr: SocketAddr,
    /// `addr` as a URI authority, built once.
    pub authority: http::uri::Authority,
    /// A hash of `id`, for rendezvous hashing.
    pub id_hash: u64,
    /// Requests forwarded to it whose response has not ended.
    pub outstanding: AtomicU64,
    /// Failures since the last success.
    pub consecutive_failures: AtomicU32,
    /// Ejections since the last success (the next one lasts 2^n times longer).
    pub ejections: AtomicU32,
    /// Gateway-clock nanoseconds until which it is ejected; 0: never was.
    pub ejected_until: AtomicU64,
    /// Idle keep-alive connections to it.
    pub pool: crate::upstream::ConnPool,
}

impl EndpointState {
    pub fn new(id: &str, addr: SocketAddr) -> Option<EndpointState> {
        let authority = http::uri::Authority::try_from(addr.to_string()).ok()?;
        Some(EndpointState {
            id: id.to_string(),
            addr,
            authority,
            id_hash: crate::balance::hash_bytes(id.as_bytes()),
            outstanding: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            pool: Default::default(),
        })
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now
    }

    /// An answer came back that is not a 5xx.
    pub fn record_success(&self) {
        // Loads first: a healthy endpoint's hot path then writes nothing
        // shared.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A connect or send failure, or a 5xx. Ejects after `eject_after_failures`
    /// in a row, or at once when the endpoint is back from an ejection
    /// without having succeeded since.
    pub fn record_failure(&self, now: u64, config: &GatewayConfig) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let on_probation = self.ejections.load(Ordering::Relaxed) > 0;
        if self.is_ejected(now) {
            return;
        }
        if failures >= config.eject_after_failures.max(1) || on_probation {
            let previous = self.ejections.fetch_add(1, Ordering::Relaxed);
            let factor = 1u32 << previous.min(16);
            let time = config
                .eject_time
                .saturating_mul(factor)
                .min(config.max_eject_time.max(config.eject_time));
            self.ejected_until
                .store(now + time.as_nanos() as u64, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(endpoint = %self.id, addr = %self.addr, ?time, "endpoint ejected");
        }
    }
}

/// Per-service counters, shared by every table that names the service.
pub(crate) struct ServiceCounters {
    pub in_flight: AtomicU64,
    pub requests_total: AtomicU64,
    /// When the service first appeared in a table (Unix seconds): the
    /// `created` of `/v1/models`.
    pub created: u64,
}

impl Default for ServiceCounters {
    fn default() -> Self {
        ServiceCounters {
            in_flight: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The table as requests read it.
#[derive(Default)]
pub(crate) struct CompiledTable {
    pub services: HashMap<String, Arc<CompiledService>>,
    /// The table as given (sorted by name): `/v1/models` and `Gateway::table`.
    pub source: RoutingTable,
}

pub(crate) struct CompiledService {
    pub name: String,
    pub generation: bool,
    pub max_pending: u64,
    pub versions: Vec<CompiledVersion>,
    pub counters: Arc<ServiceCounters>,
}

pub(crate) struct CompiledVersion {
    pub weight: u32,
    pub endpoints: Vec<Arc<EndpointState>>,
}

impl CompiledService {
    pub fn has_endpoints(&self) -> bool {
        self.versions.iter().any(|v| !v.endpoints.is_empty())
    }
}

impl CompiledTable {
    /// Resolves `table` against the state that outlives tables, and prunes
    /// that state down to what `table` names.
    pub fn compile(
        table: RoutingTable,
        registry: &mut Registry,
        config: &GatewayConfig,
    ) -> CompiledTable {
        let mut endpoints: HashMap<String, Arc<EndpointState>> = HashMap::new();
        let mut counters: HashMap<String, Arc<ServiceCounters>> = HashMap::new();
        let mut services = HashMap::with_capacity(table.services.len());
        for (name, route) in &table.services {
            let service_counters = registry.services.get(name).cloned().unwrap_or_default();
            counters.insert(name.clone(), service_counters.clone());
            let versions = route
                .versions
                .iter()
                .map(|version| CompiledVersion {
                    weight: version.weight,
                    endpoints: version
                        .endpoints
                        .iter()
                        .filter_map(|ep| {
                            let state = match registry.endpoints.get(&ep.id) {
                                Some(state) if state.addr == ep.addr => state.clone(),
                                _ => Arc::new(EndpointState::new(&ep.id, ep.addr)?),
                            };
                            endpoints.insert(ep.id.clone(), state.clone());
                            Some(state)
                        })
                        .collect(),
                })
                .collect();
            services.insert(
                name.clone(),
                Arc::new(CompiledService {
                    name: name.clone(),
                    generation: route.generation,
                    max_pending: u64::from(
                        route.max_pending.unwrap_or(config.max_pending_per_service),
                    ),
                    versions,
                    counters: service_counters,
                }),
            );
        }
        registry.endpoints = endpoints;
        registry.services = counters;
        CompiledTable {
            services,
            source: table,
        }
    }
}
