//! The control plane's state: the resource store.
//!
//! - [`store`]: `Model`, `Service` and `Collection` objects in an embedded
//!   redb file (`DATA/control.redb`), written by apply (people) and status
//!   updates (reconcilers), with a global revision behind every
//!   `resourceVersion`, Kubernetes-style events and a watch channel.
//!
//! What it is not: no model serving, no process management, no
//! reconcilers. Those read the store (`Store::watch`, `Store::list`) and
//! write status and events back; the store knows nothing about them.

pub mod kind;
pub mod store;

pub use kind::Kind;
pub use store::{
    ApplyOutcome, ControlError, Event, EventType, Object, ObjectRef, Store, WatchEvent,
    WatchEventType,
};
