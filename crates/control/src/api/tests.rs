use axum::body::Body;
use axum::http::Request;
use futures_util::StreamExt;
use serde_json::json;
use tower::ServiceExt;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    store: Store,
    app: Router,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let store = Store::open(&data).unwrap();
    let app = router(store.clone(), data.clone());
    Fixture {
        _dir: dir,
        data,
        store,
        app,
    }
}

const SERVICE_YAML: &str = "apiVersion: neocloud.dev/v1
kind: Service
metadata:
  name: embed
spec:
  model: minilm
  replicas: {min: 1, max: 2}
";

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (status, _, value) = call(app, "GET", uri, None, Body::empty()).await;
    (status, value)
}

#[tokio::test]
async fn apply_yaml_then_json_get_list_delete() {
    let f = fixture();
    let uri = "/apis/neocloud.dev/v1/services";
    let (status, headers, created) =
        call(&f.app, "POST", uri, Some("application/yaml"), SERVICE_YAML).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers[APPLY_OUTCOME_HEADER], "created");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["metadata"]["resourceVersion"], "1");

    // The same document, sniffed as YAML without a Content-Type: unchanged.
    let (status, headers, _) = call(&f.app, "POST", uri, None, SERVICE_YAML).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[APPLY_OUTCOME_HEADER], "unchanged");

    // PUT with JSON: configured.
    let mut doc: Value = serde_norway::from_str(SERVICE_YAML).unwrap();
    doc["spec"]["replicas"]["max"] = json!(3);
    let (status, headers, updated) = call(
        &f.app,
        "PUT",
        "/apis/neocloud.dev/v1/services/embed",
        Some("application/json"),
        doc.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(headers[APPLY_OUTCOME_HEADER], "configured");
    assert_eq!(updated["metadata"]["generation"], 2);

    let (status, list) = get_json(&f.app, uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["metadata"]["resourceVersion"], "2");
    assert_eq!(list["items"][0]["metadata"]["name"], "embed");

    let (status, one) = get_json(&f.app, "/apis/neocloud.dev/v1/services/embed").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, updated);
    let (status, one) = get_json(&f.app, "/apis/neocloud.dev/v1/services/embed/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["status"], json!({}));

    let (status, _, deleted) = call(
        &f.app,
        "DELETE",
        "/apis/neocloud.dev/v1/services/embed",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["metadata"]["name"], "embed");
    let (status, gone) = get_json(&f.app, "/apis/neocloud.dev/v1/services/embed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["kind"], "Status");
    assert_eq!(gone["reason"], "NotFound");
    assert_eq!(
        gone["details"],
        json!({"name": "embed", "kind": "services"})
    );
}

#[tokio::test]
async fn bad_input_is_a_4xx_status_naming_the_field() {
    let f = fixture();
    f.store
        .apply(serde_norway::from_str(SERVICE_YAML).unwrap())
        .unwrap();
    let services = "/apis/neocloud.dev/v1/services";
    let embed = "/apis/neocloud.dev/v1/services/embed";
    let stale = SERVICE_YAML.replace("name: embed", "name: embed\n  resourceVersion: \"7\"");
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "GET",
            "/apis/neocloud.dev/v1/widgets",
            String::new(),
            404,
            "widgets",
        ),
        (
            "POST",
            "/apis/neocloud.dev/v1/widgets",
            SERVICE_YAML.into(),
            404,
            "widgets",
        ),
        (
            "POST",
            services,
            SERVICE_YAML.replace("kind: Service", "kind: Widget"),
            400,
            "kind",
        ),
        (
            "POST",
            "/apis/neocloud.dev/v1/models",
            SERVICE_YAML.into(),
            400,
            "kind",
        ),
        (
            "POST",
            services,
            SERVICE_YAML.replace("  model: minilm\n", ""),
            422,
            "model",
        ),
        (
            "POST",
            services,
            SERVICE_YAML.replace("min: 1", "min: 5"),
            422,
            "spec.replicas.min",
        ),
        (
            "POST",
            services,
            SERVICE_YAML.replace("max: 2", "max: lots"),
            422,
            "spec.replicas.max",
        ),
        (
            "POST",
            services,
            SERVICE_YAML.replace("apiVersion: neocloud.dev/v1", "apiVersion: v2"),
            422,
            "apiVersion",
        ),
        ("POST", services, stale.clone(), 409, "resourceVersion"),
        ("PUT", embed, stale, 409, "resourceVersion"),
        (
            "PUT",
            "/apis/neocloud.dev/v1/services/other",
            SERVICE_YAML.into(),
            400,
            "metadata.name",
        ),
        ("POST", services, "spec: [unclosed".into(), 400, "YAML"),
        ("POST", services, "{\"kind\": ".into(), 400, "JSON"),
        ("POST", services, "- a\n- b\n".into(), 400, "mapping"),
        ("POST", services, String::new(), 400, "body"),
        (
            "GET",
            "/apis/neocloud.dev/v1/services?watch=maybe",
            String::new(),
            400,
            "watch",
        ),
        (
            "GET",
            "/apis/neocloud.dev/v1/services?watch=1&resourceVersion=x",
            String::new(),
            400,
            "resourceVersion",
        ),
        ("PATCH", embed, String::new(), 405, "method"),
        (
            "GET",
            "/apis/neocloud.dev/v1/events?kind=Pod",
            String::new(),
            400,
            "kind",
        ),
        (
            "GET",
            "/apis/neocloud.dev/v1/events?name=x",
            String::new(),
            400,
            "name",
        ),
        (
            "GET",
            "/apis/neocloud.dev/v1/services/embed/logs?tail=-1",
            String::new(),
            400,
            "tail",
        ),
        (
            "GET",
            "/apis/neocloud.dev/v1/services/nope/logs",
            String::new(),
            404,
            "nope",
        ),
        (
            "GET",
            "/apis/neocloud.dev/v1/models/x/logs",
            String::new(),
            404,
            "services only",
        ),
        (
            "POST",
            "/apis/neocloud.dev/v1/events",
            r#"{"type": "Odd", "reason": "R", "involvedObject": {"kind": "Service", "name": "x"}}"#
                .into(),
            400,
            "type",
        ),
        (
            "POST",
            "/apis/neocloud.dev/v1/events",
            r#"{"type": "Normal", "reason": "R", "involvedObject": {"kind": "Pod", "name": "x"}}"#
                .into(),
            400,
            "involvedObject.kind",
        ),
        (
            "POST",
            "/apis/neocloud.dev/v1/events",
            r#"{"type": "Normal", "involvedObject": {"kind": "Service", "name": "x"}}"#.into(),
            400,
            "reason",
        ),
        (
            "PUT",
            "/apis/neocloud.dev/v1/services/embed/status",
            "{}".into(),
            400,
            "status",
        ),
        (
            "PUT",
            "/apis/neocloud.dev/v1/services/embed/status",
            "{\"status\": {}, \"metadata\": {\"generation\": \"x\"}}".into(),
            400,
            "metadata.generation",
        ),
    ];
    for (method, uri, body, code, needle) in cases {
        let (status, _, value) = call(&f.app, method, uri, None, body.clone()).await;
        assert_eq!(status.as_u16(), code, "{method} {uri} {body:?}: {value}");
        assert_eq!(value["kind"], "Status", "{method} {uri}: {value}");
        assert_eq!(value["code"], code);
        let message = value["message"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{method} {uri} {body:?}: {message:?} should name {needle}"
        );
    }
    // Nothing above changed the object.
    assert_eq!(f.store.revision().unwrap(), 1);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let f = fixture();
    let body = format!(
        "{{\"apiVersion\": \"neocloud.dev/v1\", \"pad\": \"{}\"}}",
        "x".repeat(MAX_BODY_BYTES)
    );
    let (status, _, value) = call(
        &f.app,
        "POST",
        "/apis/neocloud.dev/v1/services",
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(value["reason"], "RequestEntityTooLarge");
}

#[tokio::test]
async fn status_events_and_logs() {
    let f = fixture();
    f.store
        .apply(serde_norway::from_str(SERVICE_YAML).unwrap())
        .unwrap();
    let (status, _, object) = call(
        &f.app,
        "PUT",
        "/apis/neocloud.dev/v1/services/embed/status",
        None,
        json!({"status": {"readyReplicas": 1}, "metadata": {"generation": 1}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{object}");
    assert_eq!(object["status"]["readyReplicas"], 1);
    assert_eq!(object["metadata"]["generation"], 1);
    let (status, _, stale) = call(
        &f.app,
        "PUT",
        "/apis/neocloud.dev/v1/services/embed/status",
        None,
        json!({"status": {}, "metadata": {"generation": 9}}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");

    use crate::store::EventType;
    f.store
        .record_event(
            Kind::Service,
            "embed",
            EventType::Normal,
            "Started",
            "replica-0",
        )
        .unwrap();
    f.store
        .record_event(Kind::Model, "minilm", EventType::Normal, "Fetched", "ok")
        .unwrap();
    let (_, events) = get_json(&f.app, "/apis/neocloud.dev/v1/events?kind=svc&name=embed").await;
    assert_eq!(events["kind"], "EventList");
    assert_eq!(events["items"].as_array().unwrap().len(), 1);
    assert_eq!(events["items"][0]["reason"], "Started");
    assert_eq!(events["items"][0]["involvedObject"]["name"], "embed");
    let (_, events) = get_json(&f.app, "/apis/neocloud.dev/v1/events?kind=Model").await;
    assert_eq!(events["items"][0]["reason"], "Fetched");
    let (_, events) = get_json(&f.app, "/apis/neocloud.dev/v1/events").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 2);

    let logs = f.data.join("logs/services/embed");
    let (status, text) = get_json(&f.app, "/apis/neocloud.dev/v1/services/embed/logs").await;
    assert_eq!((status, text), (StatusCode::OK, json!("")));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("replica-0.log"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(logs.join("replica-1.log"), "uno\n").unwrap();
    let (status, text) = get_json(&f.app, "/apis/neocloud.dev/v1/services/embed/logs?tail=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        text,
        json!("[replica-0] two\n[replica-0] three\n[replica-1] uno\n")
    );
}

#[tokio::test]
async fn discovery_lists_the_kinds() {
    let f = fixture();
    let (status, value) = get_json(&f.app, "/apis/neocloud.dev/v1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["resources"][1]["name"], "services");
}

/// Reads one newline-terminated JSON line from a streaming body.
async fn next_line(
    stream: &mut (impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    pending: &mut Vec<u8>,
) -> Value {
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return serde_json::from_slice(&line).unwrap();
        }
        // A bound instead of a hang if an event never comes.
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("no watch event within 10s")
            .expect("the watch ended")
            .unwrap();
        pending.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn watch_streams_added_then_changes() {
    let f = fixture();
    f.store
        .apply(serde_norway::from_str(SERVICE_YAML).unwrap())
        .unwrap();
    f.store
        .apply(json!({"apiVersion": "neocloud.dev/v1", "kind": "Model",
                      "metadata": {"name": "minilm"}, "spec": {"source": "file:///m"}}))
        .unwrap();
    let response = f
        .app
        .clone()
        .oneshot(
            Request::get("/apis/neocloud.dev/v1/services?watch=true")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut pending = Vec::new();
    let first = next_line(&mut stream, &mut pending).await;
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "embed");

    // A model change is not a service event; a status update and a delete are.
    let store = f.store.clone();
    tokio::task::spawn_blocking(move || {
        store
            .apply(json!({"apiVersion": "neocloud.dev/v1", "kind": "Model",
                          "metadata": {"name": "other"}, "spec": {"source": "file:///o"}}))
            .unwrap();
        store
            .update_status(Kind::Service, "embed", json!({"readyReplicas": 1}), None)
            .unwrap();
        store.delete(Kind::Service, "embed").unwrap();
    })
    .await
    .unwrap();
    let second = next_line(&mut stream, &mut pending).await;
    assert_eq!(second["type"], "MODIFIED");
    assert_eq!(second["object"]["status"]["readyReplicas"], 1);
    let third = next_line(&mut stream, &mut pending).await;
    assert_eq!(third["type"], "DELETED");
    assert_eq!(third["object"]["metadata"]["resourceVersion"], "5");

    // From a resourceVersion: objects unchanged since (minilm, 2) are not
    // repeated.
    f.store
        .apply(serde_norway::from_str(SERVICE_YAML).unwrap())
        .unwrap();
    let response = f
        .app
        .clone()
        .oneshot(
            Request::get("/apis/neocloud.dev/v1/models?watch=1&resourceVersion=2")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut stream = response.into_body().into_data_stream();
    let mut pending = Vec::new();
    let first = next_line(&mut stream, &mut pending).await;
    assert_eq!(first["object"]["metadata"]["name"], "other");
}
