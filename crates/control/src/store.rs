//! The resource store: every `Model`, `Service` and `Collection` as a JSON
//! document in one redb file (`DATA/control.redb`), with a global revision
//! counter, events, and a watch channel.
//!
//! Each write is one redb write transaction, committed (fsynced) before the
//! call returns; its watch event goes out after the commit, in commit order.
//! Writes are few (people and reconcilers), reads are snapshots.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use neocloud_api::resource::{API_VERSION, Document, ObjectMeta};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::kind::Kind;

mod events;
use events::EVENTS;
pub use events::{Event, EventType, MAX_EVENTS_PER_OBJECT, ObjectRef};

/// The store's file under the data directory.
pub const STORE_FILE: &str = "control.redb";

/// Watch events buffered per subscriber before a slow one is cut off.
const WATCH_BUFFER: usize = 1024;

/// Counters: the revision behind every `resourceVersion`, and the event
/// sequence.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const EVENT_SEQ: &str = "event_seq";

fn objects_table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(kind.plural())
}

/// What can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The document is not a valid resource; the message names the field.
    #[error("{message}")]
    Invalid { message: String },
    #[error("{} {name:?} not found", kind.plural())]
    NotFound { kind: Kind, name: String },
    /// A stale `resourceVersion` or generation: the caller should re-read.
    #[error("{message}")]
    Conflict {
        kind: Kind,
        name: String,
        message: String,
    },
    /// The database failed (I/O, corruption): never the caller's fault.
    #[error("control store: {0}")]
    Storage(String),
}

impl ControlError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ControlError::Invalid {
            message: message.into(),
        }
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ControlError {
            fn from(e: $t) -> Self {
                ControlError::Storage(e.to_string())
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A stored resource: the applied document with its server-managed
/// metadata (`resourceVersion`, `generation`, `uid`, `creationTimestamp`)
/// set and a `status` that only reconcilers write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default = "empty_status")]
    pub status: Value,
}

fn empty_status() -> Value {
    json!({})
}

impl Object {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The revision of the object's last write (0 if never stored).
    pub fn resource_version(&self) -> u64 {
        self.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Bumped on every change of `spec`; 1 when created.
    pub fn generation(&self) -> u64 {
        self.metadata.generation.unwrap_or(0)
    }

    /// The object as JSON.
    pub fn to_value(&self) -> Value {
        // An Object is plain data with string keys: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The typed resource, for reconcilers. Stored specs were validated
    /// on apply, so this fails only if the types changed since.
    pub fn document(&self) -> Result<Document, ControlError> {
        Document::from_value(self.to_value()).map_err(|e| ControlError::invalid(e.message))
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl ApplyOutcome {
    /// As kubectl prints it: `created`, `configured`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        }
    }
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change. A deleted object carries the revision of its
/// deletion as its `resourceVersion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub type_: WatchEventType,
    pub object: Object,
}

impl WatchEvent {
    pub fn kind(&self) -> Option<Kind> {
        Kind::parse(&self.object.kind)
    }
}

/// The control plane's resource store. Cheap to clone; usable from
/// threads and async tasks alike (calls block for a commit's fsync, so
/// async callers run them on the blocking pool).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    watch: broadcast::Sender<WatchEvent>,
    /// Held across commit and broadcast so that watchers see writes in
    /// commit order (redb serialises the transactions themselves).
    write: Mutex<()>,
}

impl Store {
    /// Opens (or creates) `DATA/control.redb`.
    pub fn open(data_dir: &Path) -> Result<Store, ControlError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ControlError::Storage(format!("creating {}: {e}", data_dir.display())))?;
        Self::open_file(&data_dir.join(STORE_FILE))
    }

    /// Opens (or creates) the store at `path`.
    pub fn open_file(path: &Path) -> Result<Store, ControlError> {
        let db = Database::create(path)
            .map_err(|e| ControlError::Storage(format!("opening {}: {e}", path.display())))?;
        // Create every table once, so that read transactions find them.
        let txn = db.begin_write()?;
        for kind in Kind::ALL {
            txn.open_table(objects_table(kind))?;
        }
        txn.open_table(META)?;
        txn.open_table(EVENTS)?;
        txn.commit()?;
        let (watch, _) = broadcast::channel(WATCH_BUFFER);
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                watch,
                write: Mutex::new(()),
            }),
        })
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it torn.
        self.inner
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates or updates an object from a document (JSON, or YAML turned
    /// into JSON). The document is validated as its kind; `status`,
    /// `generation`, `uid` and `creationTimestamp` in it are ignored. A
    /// `metadata.resourceVersion` makes the write conditional on the stored
    /// object still having it.
    pub fn apply(&self, doc: Value) -> Result<(Object, ApplyOutcome), ControlError> {
        let (kind, meta, spec) = validate(doc)?;
        let name = meta.name.clone();
        let _guard = self.write_lock();
        let txn = self.inner.db.begin_write()?;
        let (object, outcome) = {
            let mut table = txn.open_table(objects_table(kind))?;
            let stored = match table.get(name.as_str())? {
                Some(bytes) => Some(decode(bytes.value())?),
                None => None,
            };
            if let Some(wanted) = &meta.resource_version {
                match &stored {
                    None => {
                        return Err(conflict(
                            kind,
                            &name,
                            format!(
                                "metadata.resourceVersion: {} {name:?} does not exist, \
                                 but the document expects resourceVersion {wanted}",
                                kind.plural()
                            ),
                        ));
                    }
                    Some(old) if old.metadata.resource_version.as_ref() != Some(wanted) => {
                        return Err(conflict(
                            kind,
                            &name,
                            format!(
                                "metadata.resourceVersion: the object has been modified: \
                                 {} {name:?} is at resourceVersion {}, the document \
                                 expects {wanted}; read it again and reapply",
                                kind.plural(),
                                old.resource_version()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            let (object, outcome) = match stored {
                None => {
                    let revision = next_counter(&txn, REVISION)?;
                    let object = Object {
                        api_version: API_VERSION.to_string(),
                        kind: kind.name().to_string(),
                        metadata: ObjectMeta {
                            name: name.clone(),
                            labels: meta.labels,
                            annotations: meta.annotations,
                            resource_version: Some(revision.to_string()),
                            generation: Some(1),
                            uid: Some(uuid::Uuid::new_v4().to_string()),
                            creation_timestamp: Some(now()),
                        },
                        spec,
                        status: empty_status(),
                    };
                    (object, ApplyOutcome::Created)
                }
                Some(old) => {
                    let spec_changed = old.spec != spec;
                    if !spec_changed
                        && old.metadata.labels == meta.labels
                        && old.metadata.annotations == meta.annotations
                    {
                        drop(table);
                        txn.abort()?;
                        return Ok((old, ApplyOutcome::Unchanged));
                    }
                    let revision = next_counter(&txn, REVISION)?;
                    let mut object = old;
                    object.metadata.labels = meta.labels;
                    object.metadata.annotations = meta.annotations;
                    object.metadata.resource_version = Some(revision.to_string());
                    if spec_changed {
                        object.metadata.generation = Some(object.generation() + 1);
                        object.spec = spec;
                    }
                    (object, ApplyOutcome::Configured)
                }
            };
            table.insert(name.as_str(), encode(&object).as_slice())?;
            (object, outcome)
        };
        txn.commit()?;
        let type_ = if outcome == ApplyOutcome::Created {
            WatchEventType::Added
        } else {
            WatchEventType::Modified
        };
        self.publish(type_, &object);
        Ok((object, outcome))
    }

    /// One object.
    pub fn get(&self, kind: Kind, name: &str) -> Result<Object, ControlError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(objects_table(kind))?;
        match table.get(name)? {
            Some(bytes) => decode(bytes.value()),
            None => Err(not_found(kind, name)),
        }
    }

    /// Every object of a kind, sorted by name.
    pub fn list(&self, kind: Kind) -> Result<Vec<Object>, ControlError> {
        Ok(self.list_at(kind)?.0)
    }

    /// Every object of a kind, sorted by name, and the store's revision at
    /// that moment (a watch from it misses nothing).
    pub fn list_at(&self, kind: Kind) -> Result<(Vec<Object>, u64), ControlError> {
        let txn = self.inner.db.begin_read()?;
        let revision = txn
            .open_table(META)?
            .get(REVISION)?
            .map_or(0, |v| v.value());
        let table = txn.open_table(objects_table(kind))?;
        let mut objects = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            objects.push(decode(bytes.value())?);
        }
        Ok((objects, revision))
    }

    /// The revision of the latest write.
    pub fn revision(&self) -> Result<u64, ControlError> {
        let txn = self.inner.db.begin_read()?;
        let revision = txn
            .open_table(META)?
            .get(REVISION)?
            .map_or(0, |v| v.value());
        Ok(revision)
    }

    /// Removes an object and returns it, carrying the deletion's revision.
    /// Its events stay (they age out with the per-object limit).
    pub fn delete(&self, kind: Kind, name: &str) -> Result<Object, ControlError> {
        let _guard = self.write_lock();
        let txn = self.inner.db.begin_write()?;
        let object = {
            let mut table = txn.open_table(objects_table(kind))?;
            let removed = table.remove(name)?.map(|bytes| decode(bytes.value()));
            let Some(object) = removed else {
                drop(table);
                txn.abort()?;
                return Err(not_found(kind, name));
            };
            let mut object = object?;
            object.metadata.resource_version = Some(next_counter(&txn, REVISION)?.to_string());
            object
        };
        txn.commit()?;
        self.publish(WatchEventType::Deleted, &object);
        Ok(object)
    }

    /// Replaces an object's status (a reconciler's report). Never touches
    /// `spec` or `generation`. With `expected_generation`, fails with a
    /// conflict when the spec has changed since the reconciler read it.
    /// A status equal to the stored one is not written again.
    pub fn update_status(
        &self,
        kind: Kind,
        name: &str,
        status: Value,
        expected_generation: Option<u64>,
    ) -> Result<Object, ControlError> {
        if !status.is_object() {
            return Err(ControlError::invalid("status: must be a mapping"));
        }
        let _guard = self.write_lock();
        let txn = self.inner.db.begin_write()?;
        let object = {
            let mut table = txn.open_table(objects_table(kind))?;
            let stored = match table.get(name)? {
                Some(bytes) => decode(bytes.value())?,
                None => return Err(not_found(kind, name)),
            };
            if let Some(generation) = expected_generation
                && generation != stored.generation()
            {
                return Err(conflict(
                    kind,
                    name,
                    format!(
                        "metadata.generation: {} {name:?} is at generation {}, \
                         the status was computed for generation {generation}",
                        kind.plural(),
                        stored.generation()
                    ),
                ));
            }
            if stored.status == status {
                drop(table);
                txn.abort()?;
                return Ok(stored);
            }
            let mut object = stored;
            object.status = status;
            object.metadata.resource_version = Some(next_counter(&txn, REVISION)?.to_string());
            table.insert(name, encode(&object).as_slice())?;
            object
        };
        txn.commit()?;
        self.publish(WatchEventType::Modified, &object);
        Ok(object)
    }

    /// Every committed write from now on: applies, status updates and
    /// deletes. A receiver that falls more than ~1000 events behind gets
    /// `Lagged` and should list again.
    pub fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.inner.watch.subscribe()
    }

    fn publish(&self, type_: WatchEventType, object: &Object) {
        // No receivers is fine: nobody is watching.
        let _ = self.inner.watch.send(WatchEvent {
            type_,
            object: object.clone(),
        });
    }
}

/// Validates an applied document and splits it into what is stored:
/// kind, user-set metadata and the spec with its defaults filled in (so
/// that re-applying the same content is recognised as unchanged).
fn validate(mut doc: Value) -> Result<(Kind, ObjectMeta, Value), ControlError> {
    let Some(map) = doc.as_object_mut() else {
        return Err(ControlError::invalid("a resource must be a mapping"));
    };
    map.remove("status");
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        for server_managed in ["generation", "uid", "creationTimestamp"] {
            meta.remove(server_managed);
        }
        // YAML users write `resourceVersion: 7` unquoted; an empty one
        // (or null) asks for no check.
        match meta.get("resourceVersion") {
            Some(Value::Number(n)) => {
                let text = n.to_string();
                meta.insert("resourceVersion".into(), Value::String(text));
            }
            Some(Value::Null) => {
                meta.remove("resourceVersion");
            }
            Some(Value::String(s)) if s.is_empty() => {
                meta.remove("resourceVersion");
            }
            _ => {}
        }
    }
    let document = Document::from_value(doc).map_err(|e| ControlError::invalid(e.message))?;
    // Names become directory names (logs, caches): no `.` or `..`.
    if matches!(document.metadata().name.as_str(), "." | "..") {
        return Err(ControlError::invalid(
            "metadata.name: may not be \".\" or \"..\"",
        ));
    }
    let spec = match &document {
        Document::Model(r) => serde_json::to_value(&r.spec),
        Document::Service(r) => serde_json::to_value(&r.spec),
        Document::Collection(r) => serde_json::to_value(&r.spec),
    }
    .map_err(|e| ControlError::invalid(format!("spec: {e}")))?;
    let kind = Kind::parse(document.kind())
        .ok_or_else(|| ControlError::invalid(format!("kind: {:?}", document.kind())))?;
    Ok((kind, document.metadata().clone(), spec))
}

/// Bumps and returns a counter.
fn next_counter(txn: &redb::WriteTransaction, counter: &str) -> Result<u64, ControlError> {
    let mut meta = txn.open_table(META)?;
    let value = meta.get(counter)?.map_or(0, |v| v.value()) + 1;
    meta.insert(counter, value)?;
    Ok(value)
}

fn encode(object: &Object) -> Vec<u8> {
    serde_json::to_vec(object).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Result<Object, ControlError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError::Storage(format!("a stored object does not parse: {e}")))
}

fn not_found(kind: Kind, name: &str) -> ControlError {
    ControlError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn conflict(kind: Kind, name: &str, message: String) -> ControlError {
    ControlError::Conflict {
        kind,
        name: name.to_string(),
        message,
    }
}

/// The current time in RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
