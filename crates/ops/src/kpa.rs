//! Knative-style reactive autoscaling on concurrency.
//!
//! Every observation is an instantaneous in-flight count. The *stable*
//! average covers the last `stableWindow`, the *panic* average the last
//! `panicWindow`; each divided by `targetConcurrency` (rounded up) is a
//! replica count. Normally the stable count wins; scaling down goes only
//! as low as the highest stable count of the last stable window, so a drop
//! in load scales down a full stable window later (as Kubernetes' HPA
//! stabilises scale-down). When the
//! panic count reaches `panicThreshold` × the ready replicas, the policy
//! panics: it follows the panic count up at once and does not scale down
//! until a stable window has passed without panic. With `replicas.min: 0`
//! the last replica goes after `scaleToZeroAfter` without any request or
//! anything in flight (whatever the averages still remember); a request
//! for a service at zero wakes it to one replica at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use neocloud_api::{AutoscalingConfig, ReplicaBounds};

use crate::{Decision, ScalingPolicy};

pub struct Kpa {
    cfg: AutoscalingConfig,
    bounds: ReplicaBounds,
    samples: VecDeque<(Instant, f64)>,
    panic_until: Option<Instant>,
    /// The count decided last (panic mode never goes below it).
    last: u32,
    last_requests: Option<u64>,
    last_activity: Option<Instant>,
    /// Stable-window recommendations of the last stable window: scaling
    /// down goes no lower than the highest of them.
    recent: VecDeque<(Instant, u32)>,
}

impl Kpa {
    pub fn new(cfg: AutoscalingConfig, bounds: ReplicaBounds) -> Kpa {
        Kpa {
            cfg,
            bounds,
            samples: VecDeque::new(),
            panic_until: None,
            last: bounds.min,
            last_requests: None,
            last_activity: None,
            recent: VecDeque::new(),
        }
    }

    /// Mean of the samples taken within `window` of `now` (0 if none).
    fn average(&self, now: Instant, window: Duration) -> f64 {
        let (sum, n) = self
            .samples
            .iter()
            .rev()
            .take_while(|(t, _)| now.duration_since(*t) <= window)
            .fold((0.0, 0usize), |(s, n), (_, c)| (s + c, n + 1));
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    fn replicas_for(&self, concurrency: f64) -> u32 {
        let want = (concurrency / self.cfg.target_concurrency).ceil();
        if want.is_finite() {
            want.clamp(0.0, u32::MAX as f64) as u32
        } else {
            self.bounds.max
        }
    }
}

impl ScalingPolicy for Kpa {
    fn observe(&mut self, now: Instant, in_flight: f64, requests_total: u64) {
        self.samples.push_back((now, in_flight.max(0.0)));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.cfg.stable_window)
        {
            self.samples.pop_front();
        }
        let new_requests = self.last_requests.is_some_and(|r| requests_total > r);
        if in_flight > 0.0 || new_requests || self.last_activity.is_none() {
            self.last_activity = Some(now);
        }
        self.last_requests = Some(requests_total);
    }

    fn wake(&mut self, now: Instant) {
        self.last_activity = Some(now);
        if self.last == 0 {
            self.last = 1.min(self.bounds.max);
        }
    }

    fn decide(&mut self, now: Instant, ready: u32) -> Decision {
        let stable_c = self.average(now, self.cfg.stable_window);
        let panic_c = self.average(now, self.cfg.panic_window);
        let stable = self.replicas_for(stable_c);
        let burst = self.replicas_for(panic_c);
        let base = ready.max(1) as f64;
        if burst as f64 >= self.cfg.panic_threshold * base && burst > ready {
            if self.panic_until.is_none() {
                self.last = self.last.max(ready);
            }
            self.panic_until = Some(now + self.cfg.stable_window);
        } else if self.panic_until.is_some_and(|t| now >= t) {
            self.panic_until = None;
        }
        let panic = self.panic_until.is_some();
        self.recent.push_back((now, stable));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.cfg.stable_window)
        {
            self.recent.pop_front();
        }
        let mut want = if panic {
            burst.max(self.last)
        } else if stable < self.last {
            // Down only as far as the whole stable window agrees: a drop
            // in load scales down a stable window later, not sooner.
            let highest = self.recent.iter().map(|(_, r)| *r).max().unwrap_or(stable);
            highest.min(self.last).max(stable)
        } else {
            stable
        };
        let mut reason = if panic {
            format!(
                "panic: {panic_c:.1} in flight over the panic window, target {} per replica",
                self.cfg.target_concurrency
            )
        } else {
            format!(
                "{stable_c:.1} in flight over the stable window, target {} per replica",
                self.cfg.target_concurrency
            )
        };
        // Keep one replica while there is any recent activity; at zero
        // only after a quiet `scaleToZeroAfter`.
        let idle = self
            .last_activity
            .is_none_or(|t| now.duration_since(t) >= self.cfg.scale_to_zero_after);
        if idle && self.bounds.min == 0 && !panic {
            // Nothing in flight and no new request for the whole period:
            // the averages still remember old load, but there is none.
            want = 0;
            reason = format!(
                "no requests for {} s",
                self.cfg.scale_to_zero_after.as_secs_f64()
            );
        } else if want == 0 {
            want = 1;
        }
        let want = want.clamp(self.bounds.min, self.bounds.max);
        self.last = want;
        Decision {
            replicas: want,
            panic,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kpa(min: u32, max: u32) -> Kpa {
        // The defaults: target 4, stable 60 s, panic 6 s at 2x, zero after 30 s.
        Kpa::new(AutoscalingConfig::default(), ReplicaBounds { min, max })
    }

    /// Feeds `in_flight` every 250 ms for `secs`, deciding each time;
    /// returns the decisions and the final clock.
    fn run(
        k: &mut Kpa,
        t: Instant,
        secs: f64,
        in_flight: f64,
        ready: &mut u32,
        requests: &mut u64,
    ) -> (Vec<Decision>, Instant) {
        let mut out = Vec::new();
        let mut now = t;
        let step = Duration::from_millis(250);
        for _ in 0..(secs * 4.0) as usize {
            now += step;
            if in_flight > 0.0 {
                *requests += in_flight as u64;
            }
            k.observe(now, in_flight, *requests);
            let d = k.decide(now, *ready);
            // Replicas become ready at once in this simulation.
            *ready = d.replicas;
            out.push(d);
        }
        (out, now)
    }

    #[test]
    fn a_step_of_load_panics_up_within_the_panic_window_and_settles_after_the_stable_one() {
        let mut k = kpa(1, 10);
        let (mut ready, mut req) = (1, 0);
        let t0 = Instant::now();
        let (quiet, t) = run(&mut k, t0, 10.0, 1.0, &mut ready, &mut req);
        assert!(quiet.iter().all(|d| d.replicas == 1 && !d.panic));
        // 20 in flight with a target of 4: 5 replicas, reached in panic
        // mode well within the 6 s panic window.
        let (burst, t) = run(&mut k, t, 6.0, 20.0, &mut ready, &mut req);
        let first5 = burst
            .iter()
            .position(|d| d.replicas == 5)
            .expect("reached 5");
        assert!(first5 < 24, "took {} steps of 250 ms", first5 + 1);
        assert!(burst[first5].panic);
        assert!(burst.iter().all(|d| d.replicas <= 5));
        // Load gone: panic holds the count for a stable window (no flapping
        // down), then the stable average brings it back to min.
        let (after, _) = run(&mut k, t, 130.0, 0.0, &mut ready, &mut req);
        assert!(
            after[..40].iter().all(|d| d.replicas == 5),
            "held during panic"
        );
        let back = after
            .iter()
            .position(|d| d.replicas == 1)
            .expect("scaled down");
        let secs = (back + 1) as f64 / 4.0;
        assert!((60.0..=125.0).contains(&secs), "scaled down after {secs} s");
        assert!(!after.last().unwrap().panic);
    }

    #[test]
    fn gradual_load_scales_on_the_stable_average_without_panic() {
        let mut k = kpa(2, 10);
        let (mut ready, mut req) = (2, 0);
        let (ds, _) = run(&mut k, Instant::now(), 120.0, 10.0, &mut ready, &mut req);
        // 10 in flight wants 3 replicas, less than the panic threshold (2×)
        // of the 2 ready: the stable window decides.
        assert!(ds.iter().all(|d| !d.panic));
        assert_eq!(ds.last().unwrap().replicas, 3);
    }

    #[test]
    fn scales_to_zero_after_idle_and_wakes_on_a_request() {
        let mut k = kpa(0, 3);
        let (mut ready, mut req) = (1, 0);
        let t0 = Instant::now();
        let (busy, t) = run(&mut k, t0, 5.0, 2.0, &mut ready, &mut req);
        assert_eq!(busy.last().unwrap().replicas, 1);
        let (idle, t) = run(&mut k, t, 40.0, 0.0, &mut ready, &mut req);
        let zero = idle
            .iter()
            .position(|d| d.replicas == 0)
            .expect("scaled to zero");
        let secs = (zero + 1) as f64 / 4.0;
        assert!((29.0..=31.0).contains(&secs), "zero after {secs} s idle");
        assert!(idle[zero].reason.contains("no requests"));
        // A request arrives: woken to one at once, and kept while busy.
        let now = t + Duration::from_millis(10);
        k.wake(now);
        k.observe(now, 1.0, req + 1);
        assert_eq!(k.decide(now, 0).replicas, 1);
        let (ds, _) = run(&mut k, now, 5.0, 1.0, &mut ready, &mut req);
        assert!(ds.iter().all(|d| d.replicas == 1));
    }

    #[test]
    fn stays_within_bounds() {
        let mut k = kpa(2, 3);
        let (mut ready, mut req) = (2, 0);
        let (ds, _) = run(&mut k, Instant::now(), 20.0, 100.0, &mut ready, &mut req);
        assert!(ds.iter().all(|d| (2..=3).contains(&d.replicas)));
        assert_eq!(ds.last().unwrap().replicas, 3);
    }
}
