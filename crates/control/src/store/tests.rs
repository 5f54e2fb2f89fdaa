use serde_json::json;

use super::*;

fn service(name: &str, min: u32, max: u32) -> Value {
    json!({
        "apiVersion": "neocloud.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"model": "minilm", "replicas": {"min": min, "max": max}},
    })
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn apply_creates_configures_and_leaves_unchanged() {
    let (_dir, store) = open();
    let (created, outcome) = store.apply(service("embed", 1, 2)).unwrap();
    assert_eq!(outcome, ApplyOutcome::Created);
    assert_eq!(created.kind, "Service");
    assert_eq!(created.generation(), 1);
    assert_eq!(created.resource_version(), 1);
    assert_eq!(created.status, json!({}));
    assert!(
        created
            .metadata
            .uid
            .as_deref()
            .is_some_and(|u| u.len() == 36)
    );
    let stamp = created.metadata.creation_timestamp.clone().unwrap();
    assert!(humantime::parse_rfc3339(&stamp).is_ok(), "{stamp}");
    // Defaults are filled in, so the stored spec is complete.
    assert_eq!(created.spec["replicas"], json!({"min": 1, "max": 2}));
    assert!(created.spec["batching"]["maxBatchTokens"].is_u64());

    let (same, outcome) = store.apply(service("embed", 1, 2)).unwrap();
    assert_eq!(outcome, ApplyOutcome::Unchanged);
    assert_eq!(same, created);
    assert_eq!(store.revision().unwrap(), 1);

    let (changed, outcome) = store.apply(service("embed", 1, 3)).unwrap();
    assert_eq!(outcome, ApplyOutcome::Configured);
    assert_eq!(changed.generation(), 2);
    assert_eq!(changed.resource_version(), 2);
    assert_eq!(changed.metadata.uid, created.metadata.uid);
    assert_eq!(
        changed.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );
    assert_eq!(store.get(Kind::Service, "embed").unwrap(), changed);
}

#[test]
fn stored_objects_read_back_as_typed_documents() {
    let (_dir, store) = open();
    store.apply(service("embed", 0, 3)).unwrap();
    let object = store.get(Kind::Service, "embed").unwrap();
    let Document::Service(typed) = object.document().unwrap() else {
        panic!("a Service")
    };
    assert_eq!(typed.spec.replicas.max, 3);
    assert_eq!(typed.metadata.generation, Some(1));
}

#[test]
fn labels_change_the_version_but_not_the_generation() {
    let (_dir, store) = open();
    store.apply(service("embed", 1, 1)).unwrap();
    let mut doc = service("embed", 1, 1);
    doc["metadata"]["labels"] = json!({"team": "search"});
    let (object, outcome) = store.apply(doc).unwrap();
    assert_eq!(outcome, ApplyOutcome::Configured);
    assert_eq!(object.generation(), 1);
    assert_eq!(object.resource_version(), 2);
    assert_eq!(object.metadata.labels["team"], "search");
}

#[test]
fn applied_status_and_server_fields_are_ignored() {
    let (_dir, store) = open();
    let mut doc = service("embed", 1, 1);
    doc["status"] = json!({"readyReplicas": 9});
    doc["metadata"]["generation"] = json!(42);
    doc["metadata"]["uid"] = json!("mine");
    let (object, _) = store.apply(doc).unwrap();
    assert_eq!(object.status, json!({}));
    assert_eq!(object.generation(), 1);
    assert_ne!(object.metadata.uid.as_deref(), Some("mine"));
    // What `get -o yaml` prints can be applied back unchanged.
    let (_, outcome) = store.apply(object.to_value()).unwrap();
    assert_eq!(outcome, ApplyOutcome::Unchanged);
}

#[test]
fn stale_resource_version_is_a_conflict() {
    let (_dir, store) = open();
    let (v1, _) = store.apply(service("embed", 1, 1)).unwrap();
    store.apply(service("embed", 1, 2)).unwrap();
    let mut stale = service("embed", 1, 3);
    stale["metadata"]["resourceVersion"] = json!(v1.metadata.resource_version);
    let err = store.apply(stale).unwrap_err();
    let ControlError::Conflict { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("resourceVersion 2"), "{message}");
    assert!(message.contains("expects 1"), "{message}");

    // The current version (a number in YAML) is accepted.
    let mut fresh = service("embed", 1, 3);
    fresh["metadata"]["resourceVersion"] = json!(2);
    assert_eq!(store.apply(fresh).unwrap().1, ApplyOutcome::Configured);

    // An empty version asks for no check.
    let mut blank = service("embed", 1, 4);
    blank["metadata"]["resourceVersion"] = json!("");
    assert_eq!(store.apply(blank).unwrap().1, ApplyOutcome::Configured);

    // A version for an object that does not exist is a conflict too.
    let mut ghost = service("ghost", 1, 1);
    ghost["metadata"]["resourceVersion"] = json!("5");
    assert!(matches!(
        store.apply(ghost),
        Err(ControlError::Conflict { .. })
    ));
}

#[test]
fn invalid_documents_name_the_field() {
    let (_dir, store) = open();
    let cases = [
        (service("embed", 3, 2), "spec.replicas.min"),
        (
            json!({"apiVersion": "neocloud.dev/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {}}),
            "kind",
        ),
        (
            json!({"apiVersion": "neocloud.dev/v1", "kind": "Service",
                "metadata": {"name": "s"}}),
            "spec",
        ),
        (
            json!({"apiVersion": "neocloud.dev/v1", "kind": "Service",
                "metadata": {"name": "Bad_Name"}, "spec": {"model": "m"}}),
            "metadata.name",
        ),
        (json!([1, 2]), "mapping"),
    ];
    for (doc, field) in cases {
        match store.apply(doc.clone()) {
            Err(ControlError::Invalid { message }) => {
                assert!(
                    message.contains(field),
                    "{doc}: {message} should name {field}"
                )
            }
            other => panic!("{doc}: {other:?}"),
        }
    }
    assert_eq!(store.revision().unwrap(), 0);
}

#[test]
fn status_updates_keep_the_generation() {
    let (_dir, store) = open();
    store.apply(service("embed", 1, 1)).unwrap();
    let status = json!({"observedGeneration": 1, "readyReplicas": 1});
    let object = store
        .update_status(Kind::Service, "embed", status.clone(), Some(1))
        .unwrap();
    assert_eq!(object.status, status);
    assert_eq!(object.generation(), 1);
    assert_eq!(object.resource_version(), 2);
    // The same status again writes nothing.
    let again = store
        .update_status(Kind::Service, "embed", status.clone(), None)
        .unwrap();
    assert_eq!(again.resource_version(), 2);
    // Status survives a spec change; a status for the old generation conflicts.
    let (object, _) = store.apply(service("embed", 1, 2)).unwrap();
    assert_eq!(object.status, status);
    assert!(matches!(
        store.update_status(Kind::Service, "embed", json!({}), Some(1)),
        Err(ControlError::Conflict { .. })
    ));
    assert!(matches!(
        store.update_status(Kind::Service, "nope", json!({}), None),
        Err(ControlError::NotFound { .. })
    ));
}

#[test]
fn list_get_and_delete() {
    let (_dir, store) = open();
    for name in ["b", "c", "a"] {
        store.apply(service(name, 1, 1)).unwrap();
    }
    let names: Vec<_> = store
        .list(Kind::Service)
        .unwrap()
        .into_iter()
        .map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(store.list(Kind::Model).unwrap().is_empty());
    let deleted = store.delete(Kind::Service, "b").unwrap();
    assert_eq!(deleted.resource_version(), 4);
    assert!(matches!(
        store.get(Kind::Service, "b"),
        Err(ControlError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(Kind::Service, "b"),
        Err(ControlError::NotFound { .. })
    ));
    assert_eq!(store.list(Kind::Service).unwrap().len(), 2);
}

#[test]
fn events_repeat_into_counts() {
    let (_dir, store) = open();
    let svc = Some((Kind::Service, "embed"));
    store
        .record_event(
            Kind::Service,
            "embed",
            EventType::Normal,
            "Scheduled",
            "replica-0 started",
        )
        .unwrap();
    store
        .record_event(
            Kind::Service,
            "embed",
            EventType::Warning,
            "BackOff",
            "replica-0 exited",
        )
        .unwrap();
    store
        .record_event(Kind::Model, "minilm", EventType::Normal, "Fetched", "ok")
        .unwrap();
    let repeat = store
        .record_event(
            Kind::Service,
            "embed",
            EventType::Warning,
            "BackOff",
            "replica-0 exited",
        )
        .unwrap();
    assert_eq!(repeat.count, 2);
    let events = store.events(svc).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].reason, "Scheduled");
    assert_eq!(events[1].count, 2);
    // All events, oldest (by last occurrence) first.
    let all: Vec<_> = store
        .events(None)
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert_eq!(all, ["Scheduled", "Fetched", "BackOff"]);
    // A different message is a new row.
    store
        .record_event(
            Kind::Service,
            "embed",
            EventType::Warning,
            "BackOff",
            "replica-1 exited",
        )
        .unwrap();
    assert_eq!(store.events(svc).unwrap().len(), 3);
}

#[test]
fn events_are_capped_per_object() {
    let (_dir, store) = open();
    for i in 0..MAX_EVENTS_PER_OBJECT + 5 {
        store
            .record_event(Kind::Model, "m", EventType::Normal, "Tick", &i.to_string())
            .unwrap();
    }
    let events = store.events(Some((Kind::Model, "m"))).unwrap();
    assert_eq!(events.len(), MAX_EVENTS_PER_OBJECT);
    assert_eq!(events[0].message, "5");
}

#[test]
fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.apply(service("embed", 1, 1)).unwrap();
        store
            .update_status(Kind::Service, "embed", json!({"readyReplicas": 1}), None)
            .unwrap();
        store
            .record_event(Kind::Service, "embed", EventType::Normal, "Ready", "1/1")
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let object = store.get(Kind::Service, "embed").unwrap();
    assert_eq!(object.status["readyReplicas"], 1);
    assert_eq!(store.revision().unwrap(), 2);
    assert_eq!(store.events(None).unwrap().len(), 1);
    // The counter goes on from where it was.
    let (object, _) = store.apply(service("embed", 1, 2)).unwrap();
    assert_eq!(object.resource_version(), 3);
}

#[test]
fn watch_sees_every_committed_write_in_order() {
    let (_dir, store) = open();
    let mut rx = store.watch();
    store.apply(service("embed", 1, 1)).unwrap();
    store.apply(service("embed", 1, 1)).unwrap(); // unchanged: no event
    store.apply(service("embed", 1, 2)).unwrap();
    store
        .update_status(Kind::Service, "embed", json!({"readyReplicas": 1}), None)
        .unwrap();
    store.delete(Kind::Service, "embed").unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push((event.type_, event.object.resource_version()));
    }
    assert_eq!(
        seen,
        [
            (WatchEventType::Added, 1),
            (WatchEventType::Modified, 2),
            (WatchEventType::Modified, 3),
            (WatchEventType::Deleted, 4),
        ]
    );
}

#[test]
fn concurrent_writers_get_distinct_versions() {
    let (_dir, store) = open();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    store.apply(service(&format!("s{t}-{i}"), 1, 1)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut versions: Vec<_> = store
        .list(Kind::Service)
        .unwrap()
        .iter()
        .map(Object::resource_version)
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
}

/// The child of `acknowledged_writes_survive_sigkill`: applies services
/// until killed, printing each name once `apply` has returned.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("NEOCLOUD_CONTROL_CRASH_DIR") else {
        return; // only runs as the child
    };
    let store = Store::open(std::path::Path::new(&dir)).unwrap();
    for i in 0.. {
        store.apply(service(&format!("s{i}"), 1, 1)).unwrap();
        println!("acked s{i}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::tests::crash_child", "--nocapture"])
        .env("NEOCLOUD_CONTROL_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(name) = line.strip_prefix("acked ") {
            acked.push(name.to_string());
            if acked.len() == 20 {
                child.kill().unwrap(); // SIGKILL, mid-write
                break;
            }
        }
    }
    child.wait().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for name in &acked {
        store.get(Kind::Service, name).unwrap();
    }
    let count = store.list(Kind::Service).unwrap().len();
    assert!(count >= acked.len(), "{count} < {}", acked.len());
    assert_eq!(store.revision().unwrap(), count as u64);
}
