//! The control plane's state: the resource store and its REST API.
//!
//! - [`store`]: `Model`, `Service` and `Collection` objects in an embedded
//!   redb file (`DATA/control.redb`), written by apply (people) and status
//!   updates (reconcilers), with a global revision behind every
//!   `resourceVersion`, Kubernetes-style events and a watch channel.
//! - [`api`]: the Kubernetes-style REST API over the store
//!   (`/apis/neocloud.dev/v1/...`), as an `axum::Router`.
//! - [`client`]: a blocking client of that API, for the CLI.
//! - [`render`]: tables and `describe` text for the CLI.
//!
//! What it is not: no model serving, no process management, no
//! reconcilers. Those read the store (`Store::watch`, `Store::list`) and
//! write status and events back; the store knows nothing about them.
//!
//! To serve the API, open the store and merge the router into a server's:
//!
//! ```no_run
//! # fn wire(data_dir: std::path::PathBuf, app: axum::Router) -> Result<axum::Router, neocloud_control::ControlError> {
//! let store = neocloud_control::Store::open(&data_dir)?;
//! let app = app.merge(neocloud_control::api::router(store.clone(), data_dir));
//! # Ok(app) }
//! ```
//!
//! The router has no fallback of its own, so it merges with any other.

pub mod api;
pub mod client;
pub mod kind;
pub mod render;
pub mod store;

pub use kind::Kind;
pub use store::{
    ApplyOutcome, ControlError, Event, EventType, Object, ObjectRef, Store, WatchEvent,
    WatchEventType,
};
