//! The local process backend: one manager task that, every tick, probes the
//! workers, notices exits, restarts, drains, and creates or removes replicas
//! until each replica set has its desired count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neocloud_api::{ResourceRequests, WorkerSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::probe::http_status;
use crate::process;
use crate::resources::Capacity;

/// How the orchestrator runs workers.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// The worker command before its own arguments, e.g.
    /// `[/usr/bin/neocloud, worker, --cache-dir, DIR]`; `--spec FILE
    /// --port-file FILE` are appended.
    pub command: Vec<String>,
    /// Extra environment for every worker.
    pub env: Vec<(String, String)>,
    /// Specs, port files and `replicas.json`.
    pub run_dir: PathBuf,
    /// Logs go to `LOG_DIR/services/SERVICE/REPLICA.log`.
    pub log_dir: PathBuf,
    pub capacity: Capacity,
    /// How often the manager looks at the workers.
    pub tick: Duration,
    /// How often a ready worker's liveness is probed.
    pub probe_period: Duration,
    /// How long a probe may take.
    pub probe_timeout: Duration,
    /// How long a worker may take to become ready (fetching and loading
    /// its model) before it is killed and started again.
    pub ready_timeout: Duration,
    /// How long a draining worker may take to finish before SIGKILL.
    pub drain_timeout: Duration,
    /// The longest restart backoff.
    pub backoff_max: Duration,
}

impl OrchestratorConfig {
    pub fn new(
        command: Vec<String>,
        run_dir: PathBuf,
        log_dir: PathBuf,
        capacity: Capacity,
    ) -> Self {
        OrchestratorConfig {
            command,
            env: Vec::new(),
            run_dir,
            log_dir,
            capacity,
            tick: Duration::from_millis(50),
            probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(30),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// The desired replicas of one version of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSetSpec {
    pub service: String,
    /// The version's name (its model's), unique within the service.
    pub version: String,
    pub replicas: u32,
    pub worker: WorkerSpec,
    pub resources: ResourceRequests,
}

impl ReplicaSetSpec {
    /// Identifies what a worker runs: a change starts new workers and
    /// drains the old ones.
    fn hash(&self) -> String {
        let doc = serde_json::json!({"worker": self.worker, "resources": self.resources});
        let digest = Sha256::digest(doc.to_string().as_bytes());
        hex::encode(&digest[..8])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReplicaState {
    /// Waiting for room on the machine.
    Pending,
    /// Started, not yet ready.
    Starting,
    /// Ready: routable.
    Ready,
    /// Leaving: not routable, finishing in-flight requests.
    Draining,
    /// Exited or killed; waiting to be started again.
    BackOff,
}

/// One replica as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub service: String,
    pub version: String,
    pub name: String,
    pub pid: Option<u32>,
    pub addr: Option<SocketAddr>,
    pub state: ReplicaState,
    pub restarts: u32,
    /// Why it is not ready: `CrashLoopBackOff`, a placement refusal, the
    /// last exit.
    pub reason: Option<String>,
    /// Started by an earlier orchestrator and adopted.
    pub adopted: bool,
}

/// One replica set as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct SetStatus {
    pub service: String,
    pub version: String,
    pub desired: u32,
    pub ready: u32,
    /// Replicas waiting for room, and why.
    pub unschedulable: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// Something that happened to a service's replicas, for its event log.
#[derive(Debug, Clone)]
pub struct Event {
    pub service: String,
    pub kind: EventKind,
    pub reason: String,
    pub message: String,
}

/// Runs replicas as local worker processes. Cheap to clone.
#[derive(Clone)]
pub struct LocalOrchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: OrchestratorConfig,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    events: mpsc::UnboundedSender<Event>,
    stopping: watch::Sender<bool>,
    /// Wakes the manager before its next tick (a new desired state).
    poke: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// (service, version) → desired set and its spec hash.
    sets: BTreeMap<(String, String), (ReplicaSetSpec, String)>,
    replicas: Vec<Replica>,
    /// Set while the desired state has not been given yet (adopted
    /// replicas wait for it rather than being drained).
    awaiting_desired: bool,
    persisted: String,
}

struct Replica {
    service: String,
    version: String,
    name: String,
    hash: String,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    start_ticks: Option<u64>,
    addr: Option<SocketAddr>,
    state: ReplicaState,
    restarts: u32,
    /// Failures since the replica was last ready for a minute.
    failures: u32,
    backoff_until: Option<Instant>,
    started_at: Instant,
    ready_since: Option<Instant>,
    last_live_probe: Option<Instant>,
    live_failures: u32,
    drain_deadline: Option<Instant>,
    term_sent: bool,
    reserved: Option<ResourceRequests>,
    adopted: bool,
    reason: Option<String>,
}

impl Replica {
    /// A replica not started yet (`Pending`), as the reconciler creates it.
    fn new(service: String, version: String, name: String, hash: String, now: Instant) -> Replica {
        Replica {
            service,
            version,
            name,
            hash,
            child: None,
            pid: None,
            start_ticks: None,
            addr: None,
            state: ReplicaState::Pending,
            restarts: 0,
            failures: 0,
            backoff_until: None,
            started_at: now,
            ready_since: None,
            last_live_probe: None,
            live_failures: 0,
            drain_deadline: None,
            term_sent: false,
            reserved: None,
            adopted: false,
            reason: None,
        }
    }

    fn key(&self) -> (String, String) {
        (self.service.clone(), self.version.clone())
    }
}

/// What `replicas.json` remembers of a running worker.
#[derive(Serialize, Deserialize)]
struct Persisted {
    service: String,
    version: String,
    name: String,
    hash: String,
    pid: u32,
    start_ticks: u64,
    addr: Option<SocketAddr>,
}

/// A replica stays "recently failing" until it has been ready this long.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Failing liveness probes in a row that get a ready worker killed.
const LIVE_FAILURES: u32 = 3;

impl LocalOrchestrator {
    /// Starts the manager, adopting the live workers `run_dir` remembers.
    /// Events go to the returned receiver.
    pub fn start(cfg: OrchestratorConfig) -> (LocalOrchestrator, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let (changes, _) = watch::channel(0);
        let (stopping, _) = watch::channel(false);
        let mut state = State {
            awaiting_desired: true,
            ..State::default()
        };
        for p in read_persisted(&cfg.run_dir) {
            if process::alive(p.pid) && process::start_time(p.pid) == Some(p.start_ticks) {
                tracing::info!(service = %p.service, replica = %p.name, pid = p.pid, "adopting a running worker");
                let _ = events.send(Event {
                    service: p.service.clone(),
                    kind: EventKind::Normal,
                    reason: "Adopted".into(),
                    message: format!(
                        "replica {} (pid {}) was running and is adopted",
                        p.name, p.pid
                    ),
                });
                state.replicas.push(Replica {
                    pid: Some(p.pid),
                    start_ticks: Some(p.start_ticks),
                    addr: p.addr,
                    state: ReplicaState::Starting,
                    adopted: true,
                    ..Replica::new(p.service, p.version, p.name, p.hash, Instant::now())
                });
            }
        }
        let orch = LocalOrchestrator {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(state),
                changes,
                events,
                stopping,
                poke: tokio::sync::Notify::new(),
            }),
        };
        tokio::spawn(orch.clone().run());
        (orch, rx)
    }

    /// The whole desired state: every replica set that should exist. Sets
    /// not named are drained away.
    pub fn apply(&self, sets: Vec<ReplicaSetSpec>) {
        let sets: BTreeMap<_, _> = sets
            .into_iter()
            .map(|s| {
                let hash = s.hash();
                ((s.service.clone(), s.version.clone()), (s, hash))
            })
            .collect();
        let mut st = self.lock();
        if !st.awaiting_desired && st.sets == sets {
            return;
        }
        st.awaiting_desired = false;
        st.sets = sets;
        drop(st);
        self.inner.poke.notify_one();
        self.bump();
    }

    /// Every replica, in creation order.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.lock()
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                service: r.service.clone(),
                version: r.version.clone(),
                name: r.name.clone(),
                pid: r.pid,
                addr: r.addr,
                state: r.state,
                restarts: r.restarts,
                reason: r.reason.clone(),
                adopted: r.adopted,
            })
            .collect()
    }

    /// Every desired set with its ready count.
    pub fn sets(&self) -> Vec<SetStatus> {
        let st = self.lock();
        st.sets
            .iter()
            .map(|((service, version), (spec, hash))| {
                let mine = st
                    .replicas
                    .iter()
                    .filter(|r| &r.service == service && &r.version == version && &r.hash == hash);
                let ready = mine
                    .clone()
                    .filter(|r| r.state == ReplicaState::Ready)
                    .count() as u32;
                let unschedulable = mine
                    .filter(|r| r.state == ReplicaState::Pending)
                    .find_map(|r| r.reason.clone());
                SetStatus {
                    service: service.clone(),
                    version: version.clone(),
                    desired: spec.replicas,
                    ready,
                    unschedulable,
                }
            })
            .collect()
    }

    /// Bumped on every change of a replica's state or address.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Drains every worker (SIGTERM, then SIGKILL after the drain timeout)
    /// and stops the manager; `replicas.json` is left empty.
    pub async fn shutdown(&self) {
        self.apply(Vec::new());
        let deadline = Instant::now() + self.inner.cfg.drain_timeout + Duration::from_secs(1);
        while Instant::now() < deadline {
            if self.lock().replicas.is_empty() {
                break;
            }
            tokio::time::sleep(self.inner.cfg.tick).await;
        }
        let _ = self.inner.stopping.send(true);
    }

    /// Stops managing without touching the workers, as a crash would: a
    /// new orchestrator on the same run dir adopts them.
    pub fn detach(&self) {
        let _ = self.inner.stopping.send(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    fn event(&self, service: &str, kind: EventKind, reason: &str, message: String) {
        match kind {
            EventKind::Normal => tracing::info!(%service, reason, "{message}"),
            EventKind::Warning => tracing::warn!(%service, reason, "{message}"),
        }
        let _ = self.inner.events.send(Event {
            service: service.to_string(),
            kind,
            reason: reason.to_string(),
            message,
        });
    }

    async fn run(self) {
        let mut stop = self.inner.stopping.subscribe();
        let mut tick = tokio::time::interval(self.inner.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.poke.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.probe().await;
            let changed = self.step();
            if changed {
                self.bump();
            }
            self.persist();
        }
    }

    /// Probes readiness of starting workers and liveness of ready ones,
    /// all at once, outside the lock.
    async fn probe(&self) {
        let cfg = &self.inner.cfg;
        let now = Instant::now();
        let targets: Vec<(String, SocketAddr, &'static str)> = {
            let mut st = self.lock();
            let mut out = Vec::new();
            for r in st.replicas.iter_mut() {
                let Some(addr) = r.addr else { continue };
                match r.state {
                    ReplicaState::Starting => out.push((r.name.clone(), addr, "/v2/health/ready")),
                    ReplicaState::Ready
                        if r.last_live_probe
                            .is_none_or(|t| now - t >= cfg.probe_period) =>
                    {
                        r.last_live_probe = Some(now);
                        out.push((r.name.clone(), addr, "/v2/health/live"));
                    }
                    _ => {}
                }
            }
            out
        };
        if targets.is_empty() {
            return;
        }
        let mut set = tokio::task::JoinSet::new();
        for (name, addr, path) in targets {
            let timeout = cfg.probe_timeout;
            set.spawn(async move { (name, path, http_status(addr, path, timeout).await) });
        }
        let results = set.join_all().await;
        let mut st = self.lock();
        for (name, path, status) in results {
            let Some(r) = st.replicas.iter_mut().find(|r| r.name == name) else {
                continue;
            };
            let ok = status == Some(200);
            if path == "/v2/health/ready" && r.state == ReplicaState::Starting && ok {
                r.state = ReplicaState::Ready;
                r.ready_since = Some(Instant::now());
                r.reason = None;
                r.live_failures = 0;
                let (service, msg) = (
                    r.service.clone(),
                    format!(
                        "replica {} is ready at {} after {:.2} s",
                        r.name,
                        r.addr.map(|a| a.to_string()).unwrap_or_default(),
                        r.started_at.elapsed().as_secs_f64()
                    ),
                );
                self.event(&service, EventKind::Normal, "Ready", msg);
                self.bump();
            } else if path == "/v2/health/live" && r.state == ReplicaState::Ready {
                if ok {
                    r.live_failures = 0;
                } else {
                    r.live_failures += 1;
                    if r.live_failures >= LIVE_FAILURES
                        && let Some(pid) = r.pid
                    {
                        let (service, msg) = (
                            r.service.clone(),
                            format!(
                                "replica {} failed {LIVE_FAILURES} liveness probes in a row; killing pid {pid}",
                                r.name
                            ),
                        );
                        process::signal(pid, libc::SIGKILL);
                        r.live_failures = 0;
                        self.event(&service, EventKind::Warning, "Unhealthy", msg);
                    }
                }
            }
        }
    }

    /// One pass of the state machine; true if anything routable changed.
    fn step(&self) -> bool {
        let cfg = &self.inner.cfg;
        let now = Instant::now();
        let mut changed = false;
        let mut st = self.lock();
        let st = &mut *st;

        // 1. Exits, port files, timeouts, drains, backoffs.
        let mut gone = Vec::new();
        for (i, r) in st.replicas.iter_mut().enumerate() {
            if let Some(ready) = r.ready_since
                && now - ready >= HEALTHY_AFTER
            {
                r.failures = 0;
            }
            let exited = match (&mut r.child, r.pid) {
                (Some(child), _) => match child.try_wait() {
                    Ok(Some(status)) => Some(describe_exit(status)),
                    Ok(None) => None,
                    Err(e) => Some(format!("wait failed: {e}")),
                },
                (None, Some(pid)) => (!process::alive(pid)).then(|| "exited".to_string()),
                (None, None) => None,
            };
            if let Some(how) = exited {
                let was_ready = r.state == ReplicaState::Ready;
                r.child = None;
                r.pid = None;
                r.start_ticks = None;
                r.addr = None;
                r.ready_since = None;
                changed |= was_ready;
                if r.state == ReplicaState::Draining {
                    let msg = format!("replica {} stopped ({how})", r.name);
                    self.event(&r.service, EventKind::Normal, "Stopped", msg);
                    gone.push(i);
                    continue;
                }
                r.restarts += 1;
                r.failures += 1;
                let delay = backoff(r.failures, cfg.backoff_max);
                r.backoff_until = Some(now + delay);
                r.state = ReplicaState::BackOff;
                r.reason = Some(if r.failures >= 3 {
                    format!("CrashLoopBackOff: {how}")
                } else {
                    how.clone()
                });
                let msg = format!(
                    "replica {} {how}; restart {} in {:.1} s",
                    r.name,
                    r.restarts,
                    delay.as_secs_f64()
                );
                let reason = if r.failures >= 3 {
                    "CrashLoopBackOff"
                } else {
                    "Restarting"
                };
                self.event(&r.service, EventKind::Warning, reason, msg);
                continue;
            }
            match r.state {
                ReplicaState::Starting => {
                    if r.addr.is_none() {
                        r.addr = read_port_file(&port_file(&cfg.run_dir, &r.service, &r.name));
                    }
                    if now - r.started_at > cfg.ready_timeout
                        && let Some(pid) = r.pid
                    {
                        let msg = format!(
                            "replica {} not ready after {} s; killing pid {pid}",
                            r.name,
                            cfg.ready_timeout.as_secs()
                        );
                        process::signal(pid, libc::SIGKILL);
                        self.event(&r.service, EventKind::Warning, "ReadyTimeout", msg);
                    }
                }
                ReplicaState::Draining => match r.pid {
                    None => gone.push(i),
                    Some(pid) => {
                        if !r.term_sent {
                            process::signal(pid, libc::SIGTERM);
                            r.term_sent = true;
                        } else if r.drain_deadline.is_some_and(|d| now >= d) {
                            process::signal(pid, libc::SIGKILL);
                        }
                    }
                },
                _ => {}
            }
        }
        for i in gone.into_iter().rev() {
            st.replicas.remove(i);
        }

        // 2. Desired counts: drain extras and stale specs, add missing.
        if !st.awaiting_desired {
            changed |= self.reconcile(st, now);
        }

        // 3. Start what is due: pending replicas that now fit, backoffs
        //    that expired.
        let mut used = reserved(&st.replicas);
        for r in st.replicas.iter_mut() {
            let due = match r.state {
                ReplicaState::Pending => true,
                ReplicaState::BackOff => r.backoff_until.is_none_or(|t| now >= t),
                _ => false,
            };
            if !due {
                continue;
            }
            let Some((spec, _)) = st.sets.get(&r.key()) else {
                continue;
            };
            if r.state == ReplicaState::Pending {
                if let Some(why) = cfg.capacity.refuse(&used, &spec.resources) {
                    if r.reason.as_deref() != Some(why.as_str()) {
                        let msg = format!("replica {}: {why}", r.name);
                        self.event(&r.service, EventKind::Warning, "FailedScheduling", msg);
                        r.reason = Some(why);
                    }
                    continue;
                }
                add(&mut used, &spec.resources);
                r.reserved = Some(spec.resources);
            }
            match self.spawn(spec, &r.name) {
                Ok(child) => {
                    r.pid = child.id();
                    r.start_ticks = r.pid.and_then(process::start_time);
                    r.child = Some(child);
                    r.state = ReplicaState::Starting;
                    r.started_at = now;
                    r.addr = None;
                    r.reason = None;
                    r.backoff_until = None;
                    let msg = format!(
                        "replica {} started (pid {})",
                        r.name,
                        r.pid.unwrap_or_default()
                    );
                    self.event(&r.service, EventKind::Normal, "Started", msg);
                }
                Err(e) => {
                    r.failures += 1;
                    r.state = ReplicaState::BackOff;
                    r.backoff_until = Some(now + backoff(r.failures.max(2), cfg.backoff_max));
                    r.reason = Some(format!("cannot start the worker: {e}"));
                    let msg = format!("replica {}: cannot start the worker: {e}", r.name);
                    self.event(&r.service, EventKind::Warning, "FailedStart", msg);
                }
            }
        }
        changed
    }

    fn reconcile(&self, st: &mut State, now: Instant) -> bool {
        let cfg = &self.inner.cfg;
        let mut changed = false;
        // Adopted replicas learn what they reserve from their set.
        for r in st.replicas.iter_mut() {
            if r.adopted
                && r.reserved.is_none()
                && let Some((spec, _)) = st.sets.get(&r.key())
            {
                r.reserved = Some(spec.resources);
            }
        }
        let mut drain = Vec::new();
        let mut add_to: Vec<((String, String), u32)> = Vec::new();
        // Replicas of sets that are gone, or of an older spec: those not
        // ready at once; ready ones once the new spec's replicas are all
        // ready, or one at a time while a new replica waits for the room an
        // old one holds (a rolling update on a full machine).
        let mut making_room: Vec<(String, String)> = st
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Draining)
            .filter(|r| st.sets.get(&r.key()).is_some_and(|(_, h)| &r.hash != h))
            .map(Replica::key)
            .collect();
        for (i, r) in st.replicas.iter().enumerate() {
            if r.state == ReplicaState::Draining {
                continue;
            }
            match st.sets.get(&r.key()) {
                None => drain.push(i),
                Some((spec, hash)) if &r.hash != hash => {
                    let new = st
                        .replicas
                        .iter()
                        .filter(|o| o.key() == r.key() && &o.hash == hash);
                    let ready_new = new
                        .clone()
                        .filter(|o| o.state == ReplicaState::Ready)
                        .count() as u32;
                    let blocked = new.clone().any(|o| o.state == ReplicaState::Pending);
                    if ready_new >= spec.replicas || r.state != ReplicaState::Ready {
                        drain.push(i);
                    } else if blocked && !making_room.contains(&r.key()) {
                        making_room.push(r.key());
                        drain.push(i);
                    }
                }
                _ => {}
            }
        }
        for (key, (spec, hash)) in &st.sets {
            let mut current: Vec<usize> = st
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| &r.key() == key && &r.hash == hash)
                .filter(|(_, r)| r.state != ReplicaState::Draining)
                .map(|(i, _)| i)
                .collect();
            let want = spec.replicas as usize;
            if current.len() > want {
                // Remove the least useful first: waiting, then backing off,
                // starting, and ready last; newest first within each.
                current.sort_by_key(|&i| {
                    let r = &st.replicas[i];
                    let rank = match r.state {
                        ReplicaState::Pending => 0,
                        ReplicaState::BackOff => 1,
                        ReplicaState::Starting => 2,
                        _ => 3,
                    };
                    (rank, std::cmp::Reverse(i))
                });
                drain.extend(current[..current.len() - want].iter().copied());
            } else if current.len() < want {
                add_to.push((key.clone(), (want - current.len()) as u32));
            }
        }
        drain.sort_unstable();
        drain.dedup();
        for i in drain.into_iter().rev() {
            let r = &mut st.replicas[i];
            if r.pid.is_none() {
                // Nothing running: just forget it.
                st.replicas.remove(i);
                continue;
            }
            changed |= r.state == ReplicaState::Ready;
            r.state = ReplicaState::Draining;
            r.drain_deadline = Some(now + cfg.drain_timeout);
            r.term_sent = false;
            let msg = format!("replica {} is draining", r.name);
            self.event(&r.service, EventKind::Normal, "Draining", msg);
        }
        for ((service, version), n) in add_to {
            let hash = st.sets[&(service.clone(), version.clone())].1.clone();
            for _ in 0..n {
                let name = free_name(&st.replicas, &service, &version);
                st.replicas.push(Replica::new(
                    service.clone(),
                    version.clone(),
                    name,
                    hash.clone(),
                    now,
                ));
            }
        }
        changed
    }

    fn spawn(&self, spec: &ReplicaSetSpec, name: &str) -> std::io::Result<tokio::process::Child> {
        let cfg = &self.inner.cfg;
        let dir = cfg.run_dir.join("services").join(&spec.service);
        std::fs::create_dir_all(&dir)?;
        let spec_path = dir.join(format!("{name}.json"));
        let mut worker = spec.worker.clone();
        if worker.threads.is_none() {
            worker.threads = Some(spec.resources.cpu.ceil().max(1.0) as usize);
        }
        let text = serde_json::to_vec_pretty(&worker).map_err(std::io::Error::other)?;
        std::fs::write(&spec_path, text)?;
        let port = port_file(&cfg.run_dir, &spec.service, name);
        let _ = std::fs::remove_file(&port);
        let log = cfg
            .log_dir
            .join("services")
            .join(&spec.service)
            .join(format!("{name}.log"));
        let args = vec![
            "--spec".to_string(),
            spec_path.display().to_string(),
            "--port-file".to_string(),
            port.display().to_string(),
        ];
        let mut env = cfg.env.clone();
        if let Some(t) = worker.threads {
            env.push(("RAYON_NUM_THREADS".into(), t.to_string()));
        }
        process::spawn(&cfg.command, &args, &env, &log)
    }

    fn persist(&self) {
        let mut st = self.lock();
        let list: Vec<Persisted> = st
            .replicas
            .iter()
            .filter_map(|r| {
                Some(Persisted {
                    service: r.service.clone(),
                    version: r.version.clone(),
                    name: r.name.clone(),
                    hash: r.hash.clone(),
                    pid: r.pid?,
                    start_ticks: r.start_ticks?,
                    addr: r.addr,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
        if text == st.persisted {
            return;
        }
        let path = self.inner.cfg.run_dir.join("replicas.json");
        let tmp = path.with_extension("tmp");
        let written = std::fs::create_dir_all(&self.inner.cfg.run_dir)
            .and_then(|_| std::fs::write(&tmp, &text))
            .and_then(|_| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => st.persisted = text,
            Err(e) => tracing::warn!(path = %path.display(), "cannot record the replicas: {e}"),
        }
    }
}

fn read_persisted(run_dir: &Path) -> Vec<Persisted> {
    std::fs::read(run_dir.join("replicas.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn port_file(run_dir: &Path, service: &str, name: &str) -> PathBuf {
    run_dir
        .join("services")
        .join(service)
        .join(format!("{name}.addr"))
}

fn read_port_file(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The lowest free `VERSION-N` name in the service.
fn free_name(replicas: &[Replica], service: &str, version: &str) -> String {
    (0..)
        .map(|n| format!("{version}-{n}"))
        .find(|name| {
            !replicas
                .iter()
                .any(|r| r.service == service && &r.name == name)
        })
        .expect("an unused name")
}

/// Restart delay after the `failures`-th failure in a row: at once, then
/// 1 s doubling up to `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let secs = 1u64 << (failures - 2).min(16);
    Duration::from_secs(secs).min(max)
}

fn reserved(replicas: &[Replica]) -> ResourceRequests {
    let mut used = ResourceRequests {
        cpu: 0.0,
        memory: 0,
        gpu: 0,
    };
    for r in replicas {
        if let Some(res) = &r.reserved {
            add(&mut used, res);
        }
    }
    used
}

fn add(used: &mut ResourceRequests, r: &ResourceRequests) {
    used.cpu += r.cpu;
    used.memory = used.memory.saturating_add(r.memory);
    used.gpu += r.gpu;
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let max = Duration::from_secs(60);
        let got: Vec<u64> = (1..=9).map(|f| backoff(f, max).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
