//! Real servers on 127.0.0.1 for the gateway's tests: upstream workers with
//! scripted behaviour, the gateway itself, and a small HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use neocloud_gateway::{
    Activator, ApiKeys, Endpoint, Gateway, GatewayConfig, NoActivator, RoutingTable, ServiceRoute,
    VersionRoute,
};

/// What an upstream worker does with a request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers 200 with `{"served_by": NAME}`.
    Answer,
    /// Answers 500.
    Fail,
    /// Never answers (until the test ends).
    Hang,
    /// Answers 429 with `Retry-After: 7`.
    Throttle,
}

/// A scripted upstream worker.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub active: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    behaviour: Behaviour,
}

impl Upstream {
    pub async fn start(name: &str, behaviour: Behaviour) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream {
            name: name.to_string(),
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            active: Arc::default(),
            connections: Arc::default(),
            failing: Arc::new(AtomicBool::new(behaviour == Behaviour::Fail)),
            behaviour,
        };
        let state = upstream.clone();
        let handler = move |body: Bytes| {
            let state = state.clone();
            async move { state.answer(body).await }
        };
        let app = Router::new()
            .route("/v1/embeddings", post(handler.clone()))
            .route("/v1/chat/completions", post(handler.clone()))
            .route("/v2/models/{model}/infer", post(handler.clone()))
            .route("/v2/models/{model}", get(move || handler(Bytes::new())));
        let connections = upstream.connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        upstream
    }

    /// Turns a failing upstream into an answering one, or back.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            id: self.name.clone(),
            addr: self.addr,
        }
    }

    async fn answer(&self, _body: Bytes) -> Response {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let _active = Active::new(self.active.clone());
        if self.failing.load(Ordering::SeqCst) {
            return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
        }
        match self.behaviour {
            Behaviour::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Behaviour::Throttle => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7")],
                "slow down",
            )
                .into_response(),
            _ => axum::Json(serde_json::json!({ "served_by": self.name })).into_response(),
        }
    }
}

struct Active(Arc<AtomicUsize>);

impl Active {
    fn new(counter: Arc<AtomicUsize>) -> Active {
        counter.fetch_add(1, Ordering::SeqCst);
        Active(counter)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An address where nothing listens (connection refused).
pub async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A table with one service of one version.
pub fn table(services: &[(&str, Vec<Endpoint>)]) -> RoutingTable {
    RoutingTable {
        services: services
            .iter()
            .map(|(name, endpoints)| {
                let route = ServiceRoute {
                    versions: vec![VersionRoute {
                        name: "v1".into(),
                        weight: 1,
                        endpoints: endpoints.clone(),
                    }],
                    ..ServiceRoute::default()
                };
                (name.to_string(), route)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A gateway serving `table` on a fresh port.
pub async fn gateway(config: GatewayConfig, table: RoutingTable) -> (Gateway, SocketAddr) {
    gateway_with(config, table, Arc::new(NoActivator), None).await
}

pub async fn gateway_with(
    config: GatewayConfig,
    table: RoutingTable,
    activator: Arc<dyn Activator>,
    keys: Option<ApiKeys>,
) -> (Gateway, SocketAddr) {
    let gw = Gateway::new(config, activator);
    gw.set_table(table);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = neocloud_gateway::standalone_router(gw.clone(), keys.map(Arc::new));
    tokio::spawn(neocloud_gateway::serve(
        listener,
        app,
        std::future::pending::<()>(),
    ));
    (gw, addr)
}

/// A test client.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

impl TestClient {
    pub fn new(addr: SocketAddr) -> TestClient {
        TestClient {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: format!("http://{addr}"),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> http::Response<hyper::body::Incoming> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.client.request(request))
            .await
            .expect("the gateway answers in time")
            .expect("the gateway is reachable")
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let response = self.send(method, path, body, headers).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// `POST /v1/embeddings` for `model`.
    pub async fn embed(&self, model: &str) -> Answer {
        let body = serde_json::json!({ "model": model, "input": "hi" }).to_string();
        self.call("POST", "/v1/embeddings", &body, &[]).await
    }
}

/// Waits until `check` holds, polling; panics after 10 s.
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A streaming upstream: each request's body is a channel the test feeds.
pub async fn streaming_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<http_body_util::channel::Sender<Bytes>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let tx = tx.clone();
            async move {
                let (sender, body) = http_body_util::channel::Channel::<Bytes>::new(1);
                let _ = tx.send(sender);
                ([("content-type", "text/event-stream")], Body::new(body)).into_response()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// The next data frame of a streamed body.
pub async fn next_chunk(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a chunk in time")?
            .ok()?;
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// An upstream that answers one request per connection and then closes it
/// without saying so (no `Connection: close`), as a worker whose idle
/// timeout fires would.
pub async fn closing_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"served_by\":\"c\"}";
                let _ = stream.write_all(answer.as_bytes()).await;
                // Close a little later, once the gateway has pooled it.
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    addr
}
