//! The request path: find the model, admit the request against its
//! service's bound, hold it while a scaled-to-zero service wakes, pick an
//! endpoint, forward the body unchanged over a pooled keep-alive connection,
//! retry on another endpoint if this one fails before answering, and stream
//! the answer back while counting the request as in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::Full;
use tracing::Instrument;

use crate::Gateway;
use crate::auth::AuthorizedKey;
use crate::balance::{self, Tried};
use crate::error::{GatewayError, Surface};
use crate::scan;
use crate::table::{CompiledService, EndpointState, ServiceCounters};
use crate::upstream::{self, ConnPool, PoolRef, UpstreamBody};

/// The gateway's inference routes (OpenAI `/v1/...`, `/tokenize`,
/// `/detokenize`, KServe `/v2/models/...`) and `GET /v1/models`. No health
/// routes, so that it merges into a server that has its own; see
/// [`standalone_router`] for the gateway alone.
pub fn router(gw: Gateway) -> Router {
    Router::new()
        .route("/v1/embeddings", post(openai))
        .route("/v1/chat/completions", post(openai))
        .route("/v1/completions", post(openai))
        .route("/tokenize", post(openai))
        .route("/detokenize", post(openai))
        .route("/v1/models", get(list_models))
        .route("/v2/models/{model}", get(kserve))
        .route("/v2/models/{model}/ready", get(kserve))
        .route("/v2/models/{model}/infer", post(kserve))
        .route("/v2/models/{model}/generate", post(kserve))
        .route("/v2/models/{model}/generate_stream", post(kserve))
        .with_state(gw)
}

/// The gateway as a server of its own: [`router`], liveness and readiness
/// (`/health`, `/v2/health/live`, `/v2/health/ready`), and API keys in
/// front when given.
pub fn standalone_router(gw: Gateway, keys: Option<Arc<crate::ApiKeys>>) -> Router {
    let app = router(gw)
        .route("/health", get(|| async { "ok" }))
        .route("/v2/health/live", get(|| async { "ok" }))
        .route("/v2/health/ready", get(|| async { "ok" }));
    match keys {
        Some(keys) => app.layer(crate::ApiKeyLayer::new(keys)),
        None => app,
    }
}

/// Serves `app` on `listener` (TCP_NODELAY on every connection) until
/// `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// OpenAI-protocol routes: the model is the body's `"model"`.
async fn openai(State(gw): State<Gateway>, request: Request) -> Response {
    let surface = Surface::OpenAi;
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, gw.config().max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return e.render(surface),
    };
    let fields = match scan::top_level_fields(&body) {
        Ok(fields) => fields,
        Err(malformed) => return bad_json(&body, malformed).render(surface),
    };
    let Some(raw_model) = fields.model else {
        return GatewayError::BadRequest(
            "the body has no \"model\": name the model to call".to_string(),
        )
        .render(surface);
    };
    let model = match scan::model_name(raw_model) {
        Ok(model) => model,
        Err(what) => return GatewayError::BadRequest(what.to_string()).render(surface),
    };
    let prompt = fields.prompt;
    let Some(service) = gw.lookup(&model) else {
        return gw
            .unknown_model(&model, parts.extensions.get())
            .render(surface);
    };
    let affinity = prompt.filter(|_| service.generation).map(|prompt| {
        let len = prompt.len().min(gw.config().affinity_prefix_bytes);
        balance::hash_bytes(&prompt[..len])
    });
    gw.proxy(service, parts, body, affinity, surface).await
}

#[derive(serde::Deserialize)]
struct ModelPath {
    model: String,
}

/// KServe v2 routes: the model is in the path.
async fn kserve(
    State(gw): State<Gateway>,
    Path(path): Path<ModelPath>,
    request: Request,
) -> Response {
    let surface = Surface::KServe;
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, gw.config().max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return e.render(surface),
    };
    let Some(service) = gw.lookup(&path.model) else {
        return gw
            .unknown_model(&path.model, parts.extensions.get())
            .render(surface);
    };
    let affinity = if service.generation && parts.method == Method::POST {
        scan::top_level_fields(&body)
            .ok()
            .and_then(|fields| fields.prompt)
            .map(|prompt| {
                let len = prompt.len().min(gw.config().affinity_prefix_bytes);
                balance::hash_bytes(&prompt[..len])
            })
    } else {
        None
    };
    gw.proxy(service, parts, body, affinity, surface).await
}

/// `GET /v1/models`: the services of the current table (those the caller's
/// key may use, when keys are on), in OpenAI's list shape.
async fn list_models(State(gw): State<Gateway>, request: Request) -> Response {
    let key = request.extensions().get::<AuthorizedKey>();
    let table = gw.inner.table.load();
    let data: Vec<serde_json::Value> = table
        .source
        .services
        .keys()
        .filter(|name| key.is_none_or(|k| k.allows(name)))
        .map(|name| {
            let created = table.services.get(name).map_or(0, |s| s.counters.created);
            serde_json::json!({ "id": name, "object": "model", "created": created, "owned_by": "neocloud" })
        })
        .collect();
    axum::Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            GatewayError::PayloadTooLarge { limit }
        } else {
            GatewayError::BadRequest(format!("could not read the request body: {e}"))
        }
    })
}

/// The 400 for a body the scanner rejected, with serde_json's precise
/// position when it agrees that the JSON is malformed.
fn bad_json(body: &[u8], malformed: scan::Malformed) -> GatewayError {
    if body.iter().all(u8::is_ascii_whitespace) {
        return GatewayError::BadRequest(
            "the request body is empty: send a JSON object with \"model\"".to_string(),
        );
    }
    let message = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(e) => format!("the body is not valid JSON: {e}"),
        Ok(_) => format!(
            "the body is not a JSON object as expected: {} (byte {})",
            malformed.what, malformed.at
        ),
    };
    GatewayError::BadRequest(message)
}

/// Headers that describe one connection, not the request: never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

impl Gateway {
    fn lookup(&self, model: &str) -> Option<Arc<CompiledService>> {
        self.inner.table.load().services.get(model).cloned()
    }

    /// The 404 for `model`, listing the services the caller may use.
    fn unknown_model(&self, model: &str, key: Option<&AuthorizedKey>) -> GatewayError {
        let table = self.inner.table.load();
        GatewayError::UnknownModel {
            model: model.to_string(),
            served: table
                .source
                .services
                .keys()
                .filter(|name| key.is_none_or(|k| k.allows(name)))
                .cloned()
                .collect(),
        }
    }

    async fn proxy(
        &self,
        service: Arc<CompiledService>,
        parts: http::request::Parts,
        body: Bytes,
        affinity: Option<u64>,
        surface: Surface,
    ) -> Response {
        if let Some(key) = parts.extensions.get::<AuthorizedKey>()
            && !key.allows(&service.name)
        {
            return GatewayError::Forbidden {
                key: key.name().to_string(),
                service: service.name.clone(),
            }
            .render(surface);
        }
        let span = tracing::debug_span!("gateway", service = %service.name);
        match self
            .admit_and_forward(service, parts, body, affinity)
            .instrument(span)
            .await
        {
            Ok(response) => response,
            Err(e) => e.render(surface),
        }
    }

    async fn admit_and_forward(
        &self,
        mut service: Arc<CompiledService>,
        parts: http::request::Parts,
        body: Bytes,
        affinity: Option<u64>,
    ) -> Result<Response, GatewayError> {
        let config = &self.inner.config;
        let counters = service.counters.clone();
        counters.requests_total.fetch_add(1, Ordering::Relaxed);
        if counters.in_flight.fetch_add(1, Ordering::Relaxed) >= service.max_pending {
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(GatewayError::QueueFull {
                service: service.name.clone(),
                retry_after: config.retry_after,
            });
        }
        let in_flight = InFlight(counters);
        if !service.has_endpoints() {
            service = self.hold(service).await?;
        }

        let http::request::Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        strip_hop_by_hop(&mut headers);
        // Hyper sets Host from the upstream URI.
        headers.remove(header::HOST);
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        let mut tried = Tried::default();
        let mut version = None;
        let mut last_error = String::new();
        for _attempt in 0..=config.max_retries {
            let now = self.now_nanos();
            let Some((v, endpoint)) =
                balance::pick(&service, &tried, version, affinity, now, config)
            else {
                break;
            };
            version = Some(v);
            let build = || {
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(endpoint.authority.clone());
                uri.path_and_query = Some(path.clone());
                let mut request = http::Request::new(Full::new(body.clone()));
                *request.method_mut() = method.clone();
                *request.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
                *request.headers_mut() = headers.clone();
                request
            };
            endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
            let load = Outstanding(endpoint.clone());
            match upstream::send(&endpoint.pool, endpoint.addr, config.connect_timeout, build).await
            {
                Ok((response, conn)) => {
                    if response.status().is_server_error() {
                        endpoint.record_failure(self.now_nanos(), config);
                    } else {
                        endpoint.record_success();
                    }
                    return Ok(respond(response, conn, load, in_flight).await);
                }
                Err(e) => {
                    endpoint.record_failure(self.now_nanos(), config);
                    last_error = error_chain(&e);
                    tracing::debug!(endpoint = %endpoint.id, error = %last_error, "upstream failed; retrying elsewhere");
                    tried.add(&endpoint);
                }
            }
        }
        drop(in_flight);
        Err(GatewayError::UpstreamUnreachable {
            service: service.name.clone(),
            detail: last_error,
            retry_after: config.retry_after,
        })
    }

    /// Scale from zero: wakes the service and waits, bounded, for a table
    /// that gives it an endpoint.
    async fn hold(
        &self,
        service: Arc<CompiledService>,
    ) -> Result<Arc<CompiledService>, GatewayError> {
        // Subscribe before looking, so no table published in between is missed.
        let mut versions = self.inner.table_version.subscribe();
        self.inner.activator.wake(&service.name);
        tracing::debug!("holding the request while the service wakes");
        let deadline = tokio::time::Instant::now() + self.inner.config.activation_timeout;
        loop {
            match self.lookup(&service.name) {
                Some(current) if current.has_endpoints() => return Ok(current),
                Some(_) => {}
                None => return Err(self.unknown_model(&service.name, None)),
            }
            match tokio::time::timeout_at(deadline, versions.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(GatewayError::NoReplica {
                        service: service.name.clone(),
                        retry_after: self.inner.config.retry_after,
                    });
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

async fn respond(
    response: http::Response<hyper::body::Incoming>,
    conn: upstream::UpstreamConn,
    load: Outstanding,
    in_flight: InFlight,
) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let mut body = UpstreamBody::new(body, conn, load);
    body.settle_if_empty().await;
    Response::from_parts(
        parts,
        Body::new(Tracked {
            inner: body,
            _in_flight: in_flight,
        }),
    )
}

/// One request counted in its service's `in_flight` until dropped.
struct InFlight(Arc<ServiceCounters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request counted in its endpoint's `outstanding` until dropped.
struct Outstanding(Arc<EndpointState>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolRef for Outstanding {
    fn pool(&self) -> &ConnPool {
        &self.0.pool
    }
}

/// An upstream response body, passed through frame by frame; the request
/// stays counted (in its endpoint's outstanding requests and its service's
/// in-flight ones) until the body ends or the client goes away (which drops
/// this, and with it the upstream connection).
struct Tracked {
    inner: UpstreamBody<Outstanding>,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
