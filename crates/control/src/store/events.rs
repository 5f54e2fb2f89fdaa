//! Events: what happened to an object, told by reconcilers, kept in the
//! store's `events` table keyed by (kind, name, sequence number).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{ControlError, EVENT_SEQ, Store, next_counter, now};
use crate::kind::Kind;

/// Events kept per object; older ones are dropped.
pub const MAX_EVENTS_PER_OBJECT: usize = 1000;

/// Events keyed by (kind plural, object name, sequence number).
pub(super) const EVENTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("events");

/// `Normal` or `Warning`, as in Kubernetes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
}

/// Something that happened to an object, told by a reconciler. Repeats of
/// the latest event of an object (same type, reason and message) raise
/// `count` and `lastTimestamp` instead of adding a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Order of the event's last occurrence among all events.
    pub seq: u64,
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub involved_object: ObjectRef,
    pub count: u64,
    pub first_timestamp: String,
    pub last_timestamp: String,
}

impl Store {
    /// Records an event about an object (which need not exist). A repeat
    /// of the object's latest event bumps its count and moves it to the end.
    pub fn record_event(
        &self,
        kind: Kind,
        name: &str,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Event, ControlError> {
        let _guard = self.write_lock();
        let txn = self.inner.db.begin_write()?;
        let event = {
            let mut table = txn.open_table(EVENTS)?;
            let range = (kind.plural(), name, 0)..=(kind.plural(), name, u64::MAX);
            let last = match table.range(range.clone())?.next_back() {
                Some(entry) => {
                    let (key, bytes) = entry?;
                    Some((key.value().2, decode_event(bytes.value())?))
                }
                None => None,
            };
            let seq = next_counter(&txn, EVENT_SEQ)?;
            let stamp = now();
            let event = match last {
                Some((old_seq, old))
                    if old.type_ == type_ && old.reason == reason && old.message == message =>
                {
                    table.remove((kind.plural(), name, old_seq))?;
                    Event {
                        seq,
                        count: old.count + 1,
                        last_timestamp: stamp,
                        ..old
                    }
                }
                _ => Event {
                    seq,
                    type_,
                    reason: reason.to_string(),
                    message: message.to_string(),
                    involved_object: ObjectRef {
                        kind: kind.name().to_string(),
                        name: name.to_string(),
                    },
                    count: 1,
                    first_timestamp: stamp.clone(),
                    last_timestamp: stamp,
                },
            };
            let bytes = serde_json::to_vec(&event).unwrap_or_default();
            table.insert((kind.plural(), name, seq), bytes.as_slice())?;
            let kept = table.range(range.clone())?.count();
            if kept > MAX_EVENTS_PER_OBJECT {
                let mut old_seqs = Vec::new();
                for entry in table.range(range)?.take(kept - MAX_EVENTS_PER_OBJECT) {
                    old_seqs.push(entry?.0.value().2);
                }
                for old_seq in old_seqs {
                    table.remove((kind.plural(), name, old_seq))?;
                }
            }
            event
        };
        txn.commit()?;
        Ok(event)
    }

    /// Events, oldest first: all of them, or those of one object.
    pub fn events(&self, filter: Option<(Kind, &str)>) -> Result<Vec<Event>, ControlError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut events = Vec::new();
        let mut push = |bytes: &[u8]| -> Result<(), ControlError> {
            events.push(decode_event(bytes)?);
            Ok(())
        };
        match filter {
            Some((kind, name)) => {
                for entry in
                    table.range((kind.plural(), name, 0)..=(kind.plural(), name, u64::MAX))?
                {
                    push(entry?.1.value())?;
                }
            }
            None => {
                for entry in table.iter()? {
                    push(entry?.1.value())?;
                }
            }
        }
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }
}

fn decode_event(bytes: &[u8]) -> Result<Event, ControlError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError::Storage(format!("a stored event does not parse: {e}")))
}
