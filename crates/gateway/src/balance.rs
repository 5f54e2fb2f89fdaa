//! Choosing where a request goes: a version by weight, then an endpoint by
//! power of two choices on outstanding requests, or by prefix affinity
//! (rendezvous hashing) for generation services. Ejected endpoints are
//! skipped unless nothing else is left.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::Rng;

use crate::GatewayConfig;
use crate::table::{CompiledService, EndpointState};

/// Endpoints this request already tried, by address of their state. Empty
/// (and unallocated) unless an attempt failed.
#[derive(Default)]
pub(crate) struct Tried(Vec<usize>);

impl Tried {
    pub fn add(&mut self, endpoint: &Arc<EndpointState>) {
        self.0.push(Arc::as_ptr(endpoint) as usize);
    }

    fn contains(&self, endpoint: &Arc<EndpointState>) -> bool {
        !self.0.is_empty() && self.0.contains(&(Arc::as_ptr(endpoint) as usize))
    }
}

/// Picks an endpoint of `service` that this request has not tried: in
/// version `stay_in` if it still has one (a retry stays with its version),
/// else in a version drawn by weight. `affinity` is the hash of the
/// request's prompt prefix (generation services only). `None`: nothing
/// left to try.
pub(crate) fn pick(
    service: &CompiledService,
    tried: &Tried,
    stay_in: Option<usize>,
    affinity: Option<u64>,
    now: u64,
    config: &GatewayConfig,
) -> Option<(usize, Arc<EndpointState>)> {
    let has_untried = |v: usize| {
        service.versions[v]
            .endpoints
            .iter()
            .any(|e| !tried.contains(e))
    };
    let version = match stay_in {
        Some(v) if has_untried(v) => v,
        _ => choose_version(service, has_untried)?,
    };
    let endpoints = &service.versions[version].endpoints;
    let endpoint = choose_endpoint(endpoints, tried, affinity, now, config)?;
    Some((version, endpoint.clone()))
}

/// A random version among those with endpoints left, by weight.
fn choose_version(service: &CompiledService, usable: impl Fn(usize) -> bool) -> Option<usize> {
    let versions = &service.versions;
    if versions.len() == 1 {
        return usable(0).then_some(0);
    }
    let total: u64 = (0..versions.len())
        .filter(|&v| usable(v))
        .map(|v| u64::from(versions[v].weight))
        .sum();
    let mut rng = rand::rng();
    if total == 0 {
        // Only weightless versions have endpoints: share evenly.
        let count = (0..versions.len()).filter(|&v| usable(v)).count();
        if count == 0 {
            return None;
        }
        return (0..versions.len())
            .filter(|&v| usable(v))
            .nth(rng.random_range(0..count));
    }
    let mut ticket = rng.random_range(0..total);
    for v in (0..versions.len()).filter(|&v| usable(v)) {
        let weight = u64::from(versions[v].weight);
        if ticket < weight {
            return Some(v);
        }
        ticket -= weight;
    }
    None
}

fn choose_endpoint<'a>(
    endpoints: &'a [Arc<EndpointState>],
    tried: &Tried,
    affinity: Option<u64>,
    now: u64,
    config: &GatewayConfig,
) -> Option<&'a Arc<EndpointState>> {
    let untried = |e: &&Arc<EndpointState>| !tried.contains(e);
    let healthy = |e: &&Arc<EndpointState>| !tried.contains(e) && !e.is_ejected(now);
    let outstanding = |e: &Arc<EndpointState>| e.outstanding.load(Ordering::Relaxed);
    let count = endpoints.iter().filter(healthy).count();
    if count == 0 {
        // Everything left is ejected: never refuse for that, try the one
        // whose ejection ends first (the least recently failed).
        return endpoints
            .iter()
            .filter(untried)
            .min_by_key(|e| e.ejected_until.load(Ordering::Relaxed));
    }
    if let Some(prefix) = affinity {
        let preferred = endpoints
            .iter()
            .filter(healthy)
            .max_by_key(|e| mix(prefix ^ e.id_hash))?;
        let least = endpoints
            .iter()
            .filter(healthy)
            .min_by_key(|e| outstanding(e))?;
        return if outstanding(preferred) <= outstanding(least) + config.affinity_slack {
            Some(preferred)
        } else {
            Some(least)
        };
    }
    if count == 1 {
        return endpoints.iter().find(healthy);
    }
    // Power of two choices: two distinct random endpoints, the less loaded.
    let mut rng = rand::rng();
    let a = rng.random_range(0..count);
    let mut b = rng.random_range(0..count - 1);
    if b >= a {
        b += 1;
    }
    let first = endpoints.iter().filter(healthy).nth(a)?;
    let second = endpoints.iter().filter(healthy).nth(b)?;
    if outstanding(second) < outstanding(first) {
        Some(second)
    } else {
        Some(first)
    }
}

/// FNV-1a, finished with a mixer so that short inputs spread over all bits.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix(hash)
}

/// The splitmix64 finaliser.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{CompiledVersion, ServiceCounters};

    fn endpoint(id: &str, port: u16) -> Arc<EndpointState> {
        Arc::new(EndpointState::new(id, ([127, 0, 0, 1], port).into()).unwrap())
    }

    fn service(versions: Vec<(u32, Vec<Arc<EndpointState>>)>) -> CompiledService {
        CompiledService {
            name: "svc".into(),
            generation: false,
            max_pending: 10,
            versions: versions
                .into_iter()
                .map(|(weight, endpoints)| CompiledVersion { weight, endpoints })
                .collect(),
            counters: Arc::new(ServiceCounters::default()),
        }
    }

    #[test]
    fn two_choices_never_pick_the_busier_of_two() {
        let config = GatewayConfig::default();
        let (idle, busy) = (endpoint("a", 1), endpoint("b", 2));
        busy.outstanding.store(5, Ordering::Relaxed);
        let svc = service(vec![(1, vec![idle.clone(), busy])]);
        for _ in 0..100 {
            let (_, got) = pick(&svc, &Tried::default(), None, None, 1, &config).unwrap();
            assert_eq!(got.id, "a");
        }
    }

    #[test]
    fn weightless_versions_without_endpoints_get_nothing() {
        let config = GatewayConfig::default();
        let svc = service(vec![(0, vec![endpoint("a", 1)]), (5, vec![])]);
        for _ in 0..20 {
            let (v, _) = pick(&svc, &Tried::default(), None, None, 1, &config).unwrap();
            assert_eq!(v, 0);
        }
    }

    #[test]
    fn retries_skip_tried_endpoints_and_then_give_up() {
        let config = GatewayConfig::default();
        let svc = service(vec![(1, vec![endpoint("a", 1), endpoint("b", 2)])]);
        let mut tried = Tried::default();
        let (v, first) = pick(&svc, &tried, None, None, 1, &config).unwrap();
        tried.add(&first);
        let (_, second) = pick(&svc, &tried, Some(v), None, 1, &config).unwrap();
        assert_ne!(first.id, second.id);
        tried.add(&second);
        assert!(pick(&svc, &tried, Some(v), None, 1, &config).is_none());
    }

    #[test]
    fn all_ejected_falls_back_to_the_earliest_return() {
        let config = GatewayConfig::default();
        let (a, b) = (endpoint("a", 1), endpoint("b", 2));
        a.ejected_until.store(500, Ordering::Relaxed);
        b.ejected_until.store(300, Ordering::Relaxed);
        let svc = service(vec![(1, vec![a, b])]);
        let (_, got) = pick(&svc, &Tried::default(), None, None, 100, &config).unwrap();
        assert_eq!(got.id, "b");
    }

    #[test]
    fn affinity_is_sticky_until_the_slack_is_exceeded() {
        let config = GatewayConfig::default();
        let eps: Vec<_> = (0..4).map(|i| endpoint(&format!("r{i}"), i)).collect();
        let svc = service(vec![(1, eps.clone())]);
        let prefix = hash_bytes(b"You are a helpful assistant.");
        let (_, first) = pick(&svc, &Tried::default(), None, Some(prefix), 1, &config).unwrap();
        for _ in 0..10 {
            let (_, again) = pick(&svc, &Tried::default(), None, Some(prefix), 1, &config).unwrap();
            assert_eq!(again.id, first.id);
        }
        first
            .outstanding
            .store(config.affinity_slack + 1, Ordering::Relaxed);
        let (_, moved) = pick(&svc, &Tried::default(), None, Some(prefix), 1, &config).unwrap();
        assert_ne!(moved.id, first.id);
    }
}
