//! The local orchestrator against real processes: `tests/fake_worker.py`
//! stands in for `neocloud worker` (same arguments, health endpoints and
//! SIGTERM drain), so these tests need no model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use neocloud_api::{ModelResource, ResourceRequests, WorkerSpec};
use neocloud_orchestrator::{
    Capacity, Event, LocalOrchestrator, OrchestratorConfig, ReplicaSetSpec, ReplicaState,
    ReplicaStatus,
};
use tokio::sync::mpsc::UnboundedReceiver;

fn config(dir: &Path, cpu: f64) -> OrchestratorConfig {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_worker.py");
    let mut cfg = OrchestratorConfig::new(
        vec!["python3".into(), script.display().to_string()],
        dir.join("run"),
        dir.join("logs"),
        Capacity {
            cpu,
            memory: 8 << 30,
            gpus: 0,
        },
    );
    cfg.probe_period = Duration::from_millis(200);
    cfg.probe_timeout = Duration::from_millis(500);
    cfg.drain_timeout = Duration::from_secs(5);
    cfg
}

fn set(service: &str, replicas: u32, mode: &str) -> ReplicaSetSpec {
    let model: ModelResource = serde_json::from_value(serde_json::json!({
        "apiVersion": "neocloud.dev/v1", "kind": "Model",
        "metadata": {"name": "m", "annotations": {"fake/mode": mode}},
        "spec": {"source": "file:///nowhere"},
    }))
    .unwrap();
    ReplicaSetSpec {
        service: service.into(),
        version: "m".into(),
        replicas,
        worker: WorkerSpec {
            service: service.into(),
            model,
            batching: Default::default(),
            generation: Default::default(),
            threads: None,
            max_body_bytes: None,
        },
        resources: ResourceRequests {
            cpu: 1.0,
            memory: 1 << 30,
            gpu: 0,
        },
    }
}

async fn wait_for(
    orch: &LocalOrchestrator,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&[ReplicaStatus]) -> bool,
) -> Vec<ReplicaStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = orch.replicas();
        if ok(&now) {
            return now;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; replicas: {now:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(rs: &[ReplicaStatus]) -> usize {
    rs.iter().filter(|r| r.state == ReplicaState::Ready).count()
}

fn drain_events(rx: &mut UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn log_of(dir: &Path, service: &str, replica: &str) -> String {
    std::fs::read_to_string(dir.join(format!("logs/services/{service}/{replica}.log")))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_heals_scales_down_gracefully_and_adopts() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, mut events) = LocalOrchestrator::start(config(dir.path(), 4.0));
    orch.apply(vec![set("emb", 2, "ok")]);
    let rs = wait_for(&orch, "2 ready", Duration::from_secs(20), |r| ready(r) == 2).await;
    assert!(rs.iter().all(|r| r.addr.is_some() && r.pid.is_some()));
    let names: Vec<&str> = rs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["m-0", "m-1"]);
    // The worker got its thread count from the CPU request.
    assert!(log_of(dir.path(), "emb", "m-0").contains("threads=1"));
    let kinds: Vec<String> = drain_events(&mut events)
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert_eq!(
        kinds.iter().filter(|r| *r == "Ready").count(),
        2,
        "{kinds:?}"
    );

    // SIGKILL one worker: it is restarted (at once, the first time).
    let victim = rs[0].pid.unwrap();
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let rs = wait_for(&orch, "the replacement", Duration::from_secs(20), |r| {
        ready(r) == 2 && r[0].restarts == 1 && r[0].pid != Some(victim)
    })
    .await;
    let evs = drain_events(&mut events);
    assert!(
        evs.iter()
            .any(|e| e.reason == "Restarting" && e.message.contains("signal 9")),
        "{evs:?}"
    );

    // Scale down: the newest replica drains (SIGTERM, the worker finishes)
    // and goes.
    orch.apply(vec![set("emb", 1, "ok")]);
    wait_for(&orch, "1 replica", Duration::from_secs(20), |r| {
        r.len() == 1
    })
    .await;
    assert!(log_of(dir.path(), "emb", "m-1").contains("SIGTERM: drained"));
    assert!(log_of(dir.path(), "emb", "m-1").contains("exiting 0"));

    // A crash of the orchestrator: a new one on the same run dir adopts the
    // running worker instead of starting another.
    let survivor = rs[0].pid.unwrap();
    orch.detach();
    let (orch2, mut events2) = LocalOrchestrator::start(config(dir.path(), 4.0));
    orch2.apply(vec![set("emb", 1, "ok")]);
    let rs2 = wait_for(
        &orch2,
        "the adopted replica ready",
        Duration::from_secs(20),
        |r| ready(r) == 1,
    )
    .await;
    assert_eq!(rs2.len(), 1);
    assert_eq!(rs2[0].pid, Some(survivor));
    assert!(rs2[0].adopted);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(orch2.replicas().len(), 1, "no duplicate started");
    assert!(
        drain_events(&mut events2)
            .iter()
            .any(|e| e.reason == "Adopted")
    );

    orch2.shutdown().await;
    assert!(orch2.replicas().is_empty());
    let left = std::fs::read_to_string(dir.path().join("run/replicas.json")).unwrap();
    assert_eq!(left.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_worker_backs_off_and_shows_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, mut events) = LocalOrchestrator::start(config(dir.path(), 4.0));
    orch.apply(vec![set("bad", 1, "crash")]);
    let rs = wait_for(&orch, "a crash loop", Duration::from_secs(20), |r| {
        r.first().is_some_and(|r| {
            r.restarts >= 3
                && r.state == ReplicaState::BackOff
                && r.reason
                    .as_deref()
                    .is_some_and(|s| s.starts_with("CrashLoopBackOff"))
        })
    })
    .await;
    assert!(rs[0].reason.as_ref().unwrap().contains("code 3"));
    let evs = drain_events(&mut events);
    assert!(
        evs.iter().any(|e| e.reason == "CrashLoopBackOff"),
        "{evs:?}"
    );
    // Backoff: the third restart waits 1 s after the second, the fourth 2 s.
    let t0 = Instant::now();
    let before = orch.replicas()[0].restarts;
    wait_for(&orch, "one more restart", Duration::from_secs(10), |r| {
        r[0].restarts > before
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    orch.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_refuses_what_does_not_fit_and_rolls_new_specs() {
    let dir = tempfile::tempdir().unwrap();
    let (orch, mut events) = LocalOrchestrator::start(config(dir.path(), 2.0));
    orch.apply(vec![set("big", 3, "ok")]);
    wait_for(&orch, "2 ready, 1 pending", Duration::from_secs(20), |r| {
        ready(r) == 2 && r.iter().any(|r| r.state == ReplicaState::Pending)
    })
    .await;
    let sets = orch.sets();
    assert_eq!((sets[0].desired, sets[0].ready), (3, 2));
    let why = sets[0].unschedulable.clone().unwrap();
    assert!(why.contains("insufficient cpu"), "{why}");
    assert!(
        drain_events(&mut events)
            .iter()
            .any(|e| e.reason == "FailedScheduling")
    );

    // A new spec (2 replicas): the new replicas start, and the old ones
    // drain once enough new ones are ready; the CPU freed by each drained
    // replica lets the next new one start.
    let old: BTreeMap<String, u32> = orch
        .replicas()
        .into_iter()
        .filter_map(|r| Some((r.name, r.pid?)))
        .collect();
    let mut next = set("big", 2, "ok");
    next.worker.threads = Some(1);
    orch.apply(vec![next]);
    let rs = wait_for(
        &orch,
        "the new spec rolled out",
        Duration::from_secs(30),
        |r| {
            r.len() == 2
                && ready(r) == 2
                && r.iter().all(|r| !old.values().any(|p| Some(*p) == r.pid))
        },
    )
    .await;
    assert_eq!(rs.len(), 2);
    orch.shutdown().await;
}
