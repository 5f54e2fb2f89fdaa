//! The gateway's knobs, with their defaults in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the gateway balances, retries, ejects and sheds load. Every field
/// has a default (`GatewayConfig::default()`); YAML/JSON durations are
/// humantime strings ("5s", "250ms").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Requests per service that may be in flight or held at once; past it
    /// the gateway answers 429. A `ServiceRoute` may set its own. Default 1024.
    pub max_pending_per_service: u32,
    /// How long a request for a service without replicas is held while the
    /// service wakes; then 503. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub activation_timeout: Duration,
    /// Further endpoints tried when one fails before answering. Default 2.
    pub max_retries: u32,
    /// Consecutive failures (connect errors, 5xx) that eject an endpoint.
    /// Default 3.
    pub eject_after_failures: u32,
    /// How long a first ejection lasts; each further one without a success
    /// in between doubles it, up to `max_eject_time`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub eject_time: Duration,
    /// The longest ejection. Default 2 min.
    #[serde(with = "humantime_serde")]
    pub max_eject_time: Duration,
    /// Prefix affinity (generation services): how many leading bytes of the
    /// prompt or messages pick the preferred replica. Default 256.
    pub affinity_prefix_bytes: usize,
    /// Prefix affinity yields to load: the preferred replica is taken while
    /// its outstanding requests exceed the least loaded one's by at most
    /// this many. Default 2.
    pub affinity_slack: u64,
    /// Connect timeout for upstream connections. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest request body the gateway buffers; larger ones get 413.
    /// Default 32 MiB.
    pub max_body_bytes: usize,
    /// The `Retry-After` sent with the gateway's own 429 and 503. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_pending_per_service: 1024,
            activation_timeout: Duration::from_secs(30),
            max_retries: 2,
            eject_after_failures: 3,
            eject_time: Duration::from_secs(5),
            max_eject_time: Duration::from_secs(120),
            affinity_prefix_bytes: 256,
            affinity_slack: 2,
            connect_timeout: Duration::from_secs(2),
            max_body_bytes: 32 * 1024 * 1024,
            retry_after: Duration::from_secs(1),
        }
    }
}
