//! The platform `up` runs: the control plane (resource store, its API and
//! the controller below), the local orchestrator of worker processes, the
//! autoscaler, the gateway and the vector store, on one listener.
//!
//! The controller is the loop that connects them. Every tick (and on every
//! resource change) it:
//! 1. feeds each Service's autoscaler with the gateway's in-flight count and
//!    asks it for a replica count (a request for a service at zero wakes it
//!    at once, through the gateway's activator);
//! 2. hands the orchestrator the replica sets that makes (one per version,
//!    split by traffic weight);
//! 3. hands the gateway a routing table of the ready replicas (a service
//!    with none stays in the table, so requests are held, not refused);
//! 4. writes each Service's status (when it changed) and the
//!    orchestrator's events back to the store, and creates the declared
//!    Collections in the vector store.
//!
//! The gateway keeps serving from its last table whatever the controller
//! does; the workers keep running if this process dies, and the next one
//! adopts them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neocloud_api::{CollectionResource, Document, ModelResource, ServiceResource, WorkerSpec};
use neocloud_control::{EventType, Kind, Store};
use neocloud_gateway::{Endpoint, Gateway, RoutingTable, ServiceRoute, VersionRoute};
use neocloud_ops::{Kpa, ScalingPolicy};
use neocloud_orchestrator::{
    EventKind, LocalOrchestrator, ReplicaSetSpec, ReplicaState, ReplicaStatus, SetStatus,
};
use serde_json::{Value, json};

/// Services asked for while they had no replica (the gateway's activator
/// sets them, the controller takes them).
#[derive(Clone, Default)]
pub struct Wakeups(Arc<(Mutex<BTreeSet<String>>, tokio::sync::Notify)>);

impl Wakeups {
    /// Marks `service` as wanted and wakes the controller at once (a cold
    /// start should not wait for the next tick).
    pub fn wake(&self, service: &str) {
        let mut set = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.contains(service) {
            set.insert(service.to_string());
            self.0.1.notify_one();
        }
    }

    fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.0.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn notified(&self) {
        self.0.1.notified().await
    }
}

pub struct Controller {
    pub store: Store,
    pub orch: LocalOrchestrator,
    pub events: tokio::sync::mpsc::UnboundedReceiver<neocloud_orchestrator::Event>,
    pub gateway: Gateway,
    pub vectors: neocloud_vectord::VectorState,
    pub wakeups: Wakeups,
    /// Inference threads each worker runs.
    pub threads: usize,
    pub max_body_bytes: usize,
    /// Set once every Service that keeps a replica has a ready one.
    pub ready: Arc<AtomicBool>,
    /// Set once the first reconcile has built a routing table: before
    /// that, this process's table is empty, not the truth.
    pub synced: Arc<AtomicBool>,
    policies: BTreeMap<String, (u64, Kpa)>,
    last_table: Option<RoutingTable>,
    collections_seen: BTreeMap<String, String>,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        orch: LocalOrchestrator,
        events: tokio::sync::mpsc::UnboundedReceiver<neocloud_orchestrator::Event>,
        gateway: Gateway,
        vectors: neocloud_vectord::VectorState,
        wakeups: Wakeups,
        threads: usize,
        max_body_bytes: usize,
    ) -> Controller {
        Controller {
            store,
            orch,
            events,
            gateway,
            vectors,
            wakeups,
            threads,
            max_body_bytes,
            ready: Arc::new(AtomicBool::new(false)),
            synced: Arc::new(AtomicBool::new(false)),
            policies: BTreeMap::new(),
            last_table: None,
            collections_seen: BTreeMap::new(),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut watch = self.store.watch();
        let mut replicas = self.orch.changes();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let wakeups = self.wakeups.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = watch.recv() => {}
                _ = replicas.changed() => {}
                _ = wakeups.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // The store blocks on fsync: reconcile on the blocking pool.
            self = match tokio::task::spawn_blocking(move || {
                if let Err(e) = self.reconcile() {
                    tracing::warn!("reconcile: {e}");
                }
                self
            })
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("the controller failed: {e}");
                    return;
                }
            };
        }
    }

    fn reconcile(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        // Events first, so that status and events tell the same story.
        while let Ok(e) = self.events.try_recv() {
            let kind = match e.kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            };
            let _ = self
                .store
                .record_event(Kind::Service, &e.service, kind, &e.reason, &e.message);
        }
        let models: BTreeMap<String, ModelResource> = self
            .store
            .list(Kind::Model)?
            .into_iter()
            .filter_map(|o| match o.document() {
                Ok(Document::Model(m)) => Some((m.metadata.name.clone(), m)),
                _ => None,
            })
            .collect();
        let services: Vec<(u64, ServiceResource)> = self
            .store
            .list(Kind::Service)?
            .into_iter()
            .filter_map(|o| {
                let generation = o.generation();
                match o.document() {
                    Ok(Document::Service(s)) => Some((generation, s)),
                    _ => None,
                }
            })
            .collect();
        let stats = self.gateway.stats();
        let woken = self.wakeups.take();
        let replicas = self.orch.replicas();
        let ready_of = |svc: &str| {
            replicas
                .iter()
                .filter(|r| r.service == svc && r.state == ReplicaState::Ready)
                .count() as u32
        };

        let mut sets = Vec::new();
        let mut decisions = BTreeMap::new();
        let mut missing: BTreeMap<String, String> = BTreeMap::new();
        for (generation, svc) in &services {
            let name = &svc.metadata.name;
            let spec = &svc.spec;
            let entry = self.policies.entry(name.clone());
            let (gen_seen, kpa) =
                entry.or_insert_with(|| (*generation, Kpa::new(spec.autoscaling, spec.replicas)));
            if gen_seen != generation {
                *gen_seen = *generation;
                *kpa = Kpa::new(spec.autoscaling, spec.replicas);
            }
            let s = stats.get(name).copied().unwrap_or_default();
            kpa.observe(now, s.in_flight as f64, s.requests_total);
            if woken.contains(name) {
                kpa.wake(now);
            }
            let decision = kpa.decide(now, ready_of(name));
            let versions = spec.versions();
            let total: u32 = versions.iter().map(|v| v.weight).sum::<u32>().max(1);
            for v in &versions {
                let Some(model) = models.get(&v.model) else {
                    missing.insert(name.clone(), v.model.clone());
                    continue;
                };
                let n = if decision.replicas == 0 || v.weight == 0 {
                    0
                } else {
                    ((decision.replicas as u64 * v.weight as u64) as f64 / total as f64)
                        .round()
                        .max(1.0) as u32
                };
                sets.push(ReplicaSetSpec {
                    service: name.clone(),
                    version: v.model.clone(),
                    replicas: n,
                    worker: WorkerSpec {
                        service: name.clone(),
                        model: model.clone(),
                        batching: spec.batching,
                        generation: spec.generation,
                        threads: Some(self.threads),
                        max_body_bytes: Some(self.max_body_bytes),
                    },
                    resources: spec.resources,
                });
            }
            decisions.insert(name.clone(), decision);
        }
        let names: BTreeSet<&String> = services.iter().map(|(_, s)| &s.metadata.name).collect();
        self.policies.retain(|n, _| names.contains(n));
        self.orch.apply(sets);

        // The routing table: every service, with its ready replicas.
        let replicas = self.orch.replicas();
        let mut table = RoutingTable::default();
        for (_, svc) in &services {
            let name = &svc.metadata.name;
            let generation = svc
                .spec
                .versions()
                .iter()
                .filter_map(|v| models.get(&v.model))
                .any(|m| m.spec.task == neocloud_api::ModelTask::Generation);
            let versions = svc
                .spec
                .versions()
                .into_iter()
                .map(|v| VersionRoute {
                    endpoints: replicas
                        .iter()
                        .filter(|r| r.service == *name && r.version == v.model)
                        .filter(|r| r.state == ReplicaState::Ready)
                        .filter_map(|r| {
                            Some(Endpoint {
                                id: format!("{name}/{}", r.name),
                                addr: r.addr?,
                            })
                        })
                        .collect(),
                    name: v.model,
                    weight: v.weight,
                })
                .collect();
            table.services.insert(
                name.clone(),
                ServiceRoute {
                    versions,
                    generation,
                    max_pending: None,
                },
            );
        }
        if self.last_table.as_ref() != Some(&table) {
            self.gateway.set_table(table.clone());
            self.last_table = Some(table);
        }

        // Status.
        let sets_now = self.orch.sets();
        let mut all_ready = !services.is_empty();
        for (generation, svc) in &services {
            let name = &svc.metadata.name;
            let mine: Vec<&ReplicaStatus> =
                replicas.iter().filter(|r| &r.service == name).collect();
            let my_sets: Vec<&SetStatus> = sets_now.iter().filter(|s| &s.service == name).collect();
            let ready = mine
                .iter()
                .filter(|r| r.state == ReplicaState::Ready)
                .count() as u32;
            let desired = decisions.get(name).map_or(0, |d| d.replicas);
            if svc.spec.replicas.min > 0 && ready == 0 {
                all_ready = false;
            }
            let status = service_status(
                *generation,
                desired,
                ready,
                &mine,
                &my_sets,
                decisions.get(name),
                missing.get(name),
            );
            // The listed object has the stored status: write only changes
            // (a no-op write still takes the store's write lock).
            if svc.status.as_ref() != Some(&status) {
                let _ = self
                    .store
                    .update_status(Kind::Service, name, status, Some(*generation));
            }
        }
        self.ready.store(all_ready, Ordering::Relaxed);
        self.synced.store(true, Ordering::Relaxed);
        self.reconcile_collections()?;
        Ok(())
    }

    /// Creates each declared Collection that the vector store lacks, and
    /// reports its points.
    fn reconcile_collections(&mut self) -> anyhow::Result<()> {
        for obj in self.store.list(Kind::Collection)? {
            let Ok(Document::Collection(c)) = obj.document() else {
                continue;
            };
            let name = c.metadata.name.clone();
            let store = self.vectors.store();
            let status = match store.get(&name) {
                Ok(col) => json!({
                    "observedGeneration": obj.generation(),
                    "points": col.len(),
                    "conditions": [condition("Ready", true, "Created", "the collection exists")],
                }),
                Err(_) => match create_collection(store, &c) {
                    Ok(()) => {
                        let _ = self.store.record_event(
                            Kind::Collection,
                            &name,
                            EventType::Normal,
                            "Created",
                            "created in the vector store",
                        );
                        json!({"observedGeneration": obj.generation(), "points": 0,
                               "conditions": [condition("Ready", true, "Created", "the collection exists")]})
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if self.collections_seen.get(&name) != Some(&msg) {
                            let _ = self.store.record_event(
                                Kind::Collection,
                                &name,
                                EventType::Warning,
                                "FailedCreate",
                                &msg,
                            );
                        }
                        self.collections_seen.insert(name.clone(), msg.clone());
                        json!({"observedGeneration": obj.generation(),
                               "conditions": [condition("Ready", false, "FailedCreate", &msg)]})
                    }
                },
            };
            if obj.status != status {
                let _ = self.store.update_status(
                    Kind::Collection,
                    &name,
                    status,
                    Some(obj.generation()),
                );
            }
        }
        Ok(())
    }
}

fn create_collection(
    store: &neocloud_vector::Store,
    c: &CollectionResource,
) -> Result<(), neocloud_vector::VectorError> {
    use neocloud_vector::hnsw::HnswParams;
    use neocloud_vector::quantize::ScalarQuantization;
    let spec = &c.spec;
    let distance: neocloud_vector::Distance = serde_json::from_value(json!(spec.distance))
        .map_err(|e| neocloud_vector::VectorError::bad(format!("spec.distance: {e}")))?;
    let defaults = HnswParams::default();
    let hnsw = HnswParams {
        m: spec.hnsw.and_then(|h| h.m).unwrap_or(defaults.m),
        ef_construct: spec
            .hnsw
            .and_then(|h| h.ef_construct)
            .unwrap_or(defaults.ef_construct),
    };
    let quantization = spec.quantization.as_ref().map(|q| ScalarQuantization {
        quantile: q.quantile.unwrap_or(ScalarQuantization::default().quantile),
        always_ram: None,
    });
    store.create(
        &c.metadata.name,
        neocloud_vector::CollectionConfig {
            dim: spec.size,
            distance,
            hnsw,
            embed: spec.embed.clone(),
            quantization,
        },
    )?;
    Ok(())
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

fn service_status(
    generation: u64,
    desired: u32,
    ready: u32,
    replicas: &[&ReplicaStatus],
    sets: &[&SetStatus],
    decision: Option<&neocloud_ops::Decision>,
    missing_model: Option<&String>,
) -> Value {
    let restarts: u32 = replicas.iter().map(|r| r.restarts).sum();
    let unschedulable = sets.iter().find_map(|s| s.unschedulable.clone());
    let crash = replicas.iter().find_map(|r| {
        r.reason
            .clone()
            .filter(|x| x.starts_with("CrashLoopBackOff"))
    });
    let mut conditions = Vec::new();
    conditions.push(
        match (missing_model, ready >= desired.max(1) || desired == 0) {
            (Some(m), _) => condition(
                "Ready",
                false,
                "ModelMissing",
                &format!("no Model named {m:?}"),
            ),
            (None, true) => condition(
                "Ready",
                true,
                "ReplicasReady",
                &format!("{ready} of {desired} replicas ready"),
            ),
            (None, false) => condition(
                "Ready",
                false,
                if crash.is_some() {
                    "CrashLoopBackOff"
                } else {
                    "ReplicasNotReady"
                },
                &format!("{ready} of {desired} replicas ready"),
            ),
        },
    );
    conditions.push(match &unschedulable {
        Some(why) => condition("Scheduled", false, "Unschedulable", why),
        None => condition("Scheduled", true, "Placed", "every replica has room"),
    });
    json!({
        "observedGeneration": generation,
        "desiredReplicas": desired,
        "replicas": replicas.len(),
        "readyReplicas": ready,
        "restarts": restarts,
        "autoscaler": decision.map(|d| json!({"desired": d.replicas, "panic": d.panic, "reason": d.reason})),
        "replicaStatuses": replicas.iter().map(|r| json!({
            "name": r.name,
            "version": r.version,
            "state": format!("{:?}", r.state),
            "pid": r.pid,
            "address": r.addr.map(|a| a.to_string()),
            "restarts": r.restarts,
            "reason": r.reason,
            "adopted": r.adopted,
        })).collect::<Vec<_>>(),
        "conditions": conditions,
    })
}
