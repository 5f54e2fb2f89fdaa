//! The operations agent's policies. Today: reactive autoscaling in the
//! style of Knative's KPA ([`Kpa`]) behind the [`ScalingPolicy`] trait, so
//! that predictive policies can take its place.
//!
//! **Not here:** measuring load (the gateway counts in-flight requests) or
//! acting on a decision (the orchestrator starts and drains replicas).
//! Policies are plain state machines fed with observations and the time,
//! so tests drive them with a simulated clock.

mod kpa;

pub use kpa::Kpa;

use std::time::Instant;

/// What a policy decided, and why (for status and events).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub replicas: u32,
    /// In panic mode: scaling for a burst, never down.
    pub panic: bool,
    pub reason: String,
}

/// Decides a service's replica count from its observed load.
pub trait ScalingPolicy: Send {
    /// The service's in-flight requests (including any held while it
    /// scales from zero) and its request counter, sampled at `now`.
    fn observe(&mut self, now: Instant, in_flight: f64, requests_total: u64);
    /// A request arrived while no replica was ready: scale from zero now.
    fn wake(&mut self, now: Instant);
    /// The replicas wanted at `now`, given how many are ready.
    fn decide(&mut self, now: Instant, ready: u32) -> Decision;
}
