//! The local orchestrator: runs each replica of a service as its own worker
//! process (`neocloud worker --spec FILE --port-file FILE`) and keeps the
//! running set equal to the desired one.
//!
//! - **Placement**: every replica reserves its service's CPU, memory and
//!   GPUs from the machine's [`Capacity`] (GPUs counted through NVML,
//!   `libnvidia-ml` loaded at run time, or given by an override); a replica
//!   that does not fit stays `Pending` and its set reports why.
//! - **Probes**: a replica is `Starting` until `GET /v2/health/ready`
//!   answers 200, then `Ready`; while ready, a failing `GET
//!   /v2/health/live` (three in a row) gets it killed and restarted.
//! - **Restarts**: a worker that exits or is killed is started again, at
//!   once the first time and then with exponential backoff (1 s doubling to
//!   60 s); three failures without a minute of readiness in between show
//!   as `CrashLoopBackOff`.
//! - **Drains**: a replica taken away (scale-down, a new spec) first leaves
//!   the routing (its state is `Draining`), then gets SIGTERM, on which the
//!   worker finishes its in-flight requests; SIGKILL after a grace period.
//! - **Adoption**: the replicas' pids, addresses and process start times
//!   are kept in `RUN_DIR/replicas.json`; an orchestrator started on the
//!   same directory adopts the workers still alive (same pid and start
//!   time, so a reused pid is not mistaken for one) instead of starting
//!   duplicates. Workers run in their own process group, so they outlive
//!   a control plane that crashes.
//!
//! **Not here:** deciding how many replicas a service wants (the
//! autoscaler), routing requests (the gateway), storing resources (the
//! control plane). This crate takes a desired state and reports the actual
//! one.

mod local;
mod probe;
mod process;
mod resources;

pub use local::{
    Event, EventKind, LocalOrchestrator, OrchestratorConfig, ReplicaSetSpec, ReplicaState,
    ReplicaStatus, SetStatus,
};
pub use probe::{http_get, http_status};
pub use resources::{Capacity, detect_gpus};
