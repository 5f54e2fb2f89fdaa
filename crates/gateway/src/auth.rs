//! API keys: a file of named keys (kept only as SHA-256 digests), and a
//! tower layer that lets through only requests with a known key. The layer
//! authenticates (401) and leaves an [`AuthorizedKey`] in the request's
//! extensions; whoever learns which service a request is for (the gateway
//! after reading the model) asks it whether the key may use it (403).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use http::{HeaderMap, Request, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{GatewayError, Surface};

/// The keys that may call the API.
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<Arc<KeyGrant>>,
}

#[derive(Debug)]
struct KeyGrant {
    name: String,
    sha256: [u8; 32],
    /// `None`: every service.
    services: Option<Vec<String>>,
}

/// The key a request was authenticated with, in its extensions.
#[derive(Debug, Clone)]
pub struct AuthorizedKey(Arc<KeyGrant>);

impl AuthorizedKey {
    /// The key's name from the key file (never the key).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Whether this key may call `service`.
    pub fn allows(&self, service: &str) -> bool {
        match &self.0.services {
            None => true,
            Some(services) => services.iter().any(|s| s == service),
        }
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeysError {
    #[error("cannot read the API key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the API key file is not a list of {{name, key | sha256, services}}: {0}")]
    Parse(String),
    #[error("API key '{name}': {problem}")]
    Entry { name: String, problem: String },
}

/// One entry of the key file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    /// The key in plain text; hashed on load and then forgotten.
    key: Option<String>,
    /// The key's SHA-256, hex.
    sha256: Option<String>,
    /// Services the key may call; all when absent.
    services: Option<Vec<String>>,
}

impl ApiKeys {
    /// Reads a key file: a YAML or JSON list of `{name, key | sha256,
    /// services}`.
    pub fn load(path: &Path) -> Result<ApiKeys, ApiKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ApiKeys::parse(&text)
    }

    /// Parses a key file's text (YAML; JSON is YAML too).
    pub fn parse(text: &str) -> Result<ApiKeys, ApiKeysError> {
        let entries: Vec<KeyEntry> =
            serde_norway::from_str(text).map_err(|e| ApiKeysError::Parse(e.to_string()))?;
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let problem = |problem: &str| ApiKeysError::Entry {
                name: entry.name.clone(),
                problem: problem.to_string(),
            };
            let sha256 = match (&entry.key, &entry.sha256) {
                (Some(key), None) if !key.is_empty() => Sha256::digest(key.as_bytes()).into(),
                (None, Some(hex_digest)) => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest.trim(), &mut digest)
                        .map_err(|_| problem("sha256 must be 64 hex digits"))?;
                    digest
                }
                (Some(_), Some(_)) => return Err(problem("give either key or sha256, not both")),
                _ => return Err(problem("needs a non-empty key or a sha256")),
            };
            keys.push(Arc::new(KeyGrant {
                name: entry.name,
                sha256,
                services: entry.services,
            }));
        }
        Ok(ApiKeys { keys })
    }

    /// The grant of `presented`, if it is one of the keys. Compares the
    /// digest with every key in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<AuthorizedKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for grant in &self.keys {
            if bool::from(grant.sha256.ct_eq(&digest)) {
                found = Some(grant);
            }
        }
        found.map(|grant| AuthorizedKey(grant.clone()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key a request presents: `Authorization: Bearer KEY`, `api-key: KEY`
/// or `x-api-key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
    {
        let value = value.trim();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") {
            return Some(value[7..].trim());
        }
    }
    ["api-key", "x-api-key"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::trim)
}

/// Paths open without a key: probes and metrics scrapes.
fn is_open(path: &str) -> bool {
    path == "/health" || path == "/metrics" || path.starts_with("/v2/health")
}

/// A tower layer that requires an API key on every request except health
/// probes and `/metrics`: missing or unknown key → 401; else the request
/// goes on with an [`AuthorizedKey`] in its extensions.
#[derive(Clone)]
pub struct ApiKeyLayer {
    keys: Arc<ApiKeys>,
}

impl ApiKeyLayer {
    pub fn new(keys: Arc<ApiKeys>) -> ApiKeyLayer {
        ApiKeyLayer { keys }
    }
}

impl<S> tower::Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> ApiKeyService<S> {
        ApiKeyService {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service [`ApiKeyLayer`] wraps around another.
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    keys: Arc<ApiKeys>,
}

impl<S, B> tower::Service<Request<B>> for ApiKeyService<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ApiKeyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> ApiKeyFuture<S::Future> {
        let path = request.uri().path();
        if !is_open(path) {
            let grant = match presented_key(request.headers()) {
                None => Err("missing API key: send it as 'Authorization: Bearer KEY'"),
                Some(key) => self
                    .keys
                    .authenticate(key)
                    .ok_or("the API key is not valid"),
            };
            match grant {
                Ok(grant) => {
                    request.extensions_mut().insert(grant);
                }
                Err(why) => {
                    let response = GatewayError::Unauthorized(why).render(Surface::of_path(path));
                    return ApiKeyFuture::Rejected {
                        response: Some(response),
                    };
                }
            }
        }
        // Call the instance that was polled ready; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ApiKeyFuture::Inner {
            future: inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ApiKeyService`]: the inner service's, or a rejection.
    #[project = ApiKeyFutureProj]
    pub enum ApiKeyFuture<F> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response> },
    }
}

impl<F, E> Future for ApiKeyFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ApiKeyFutureProj::Inner { future } => future.poll(cx),
            ApiKeyFutureProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_from_yaml_and_json_and_are_kept_hashed() {
        let digest = hex::encode(Sha256::digest(b"s3cret"));
        let yaml = format!(
            "- name: admin\n  key: top\n- name: app\n  sha256: {digest}\n  services: [embed]\n"
        );
        let keys = ApiKeys::parse(&yaml).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(!format!("{keys:?}").contains("top"));
        let app = keys.authenticate("s3cret").unwrap();
        assert_eq!(app.name(), "app");
        assert!(app.allows("embed") && !app.allows("chat"));
        assert!(keys.authenticate("top").unwrap().allows("chat"));
        assert!(keys.authenticate("nope").is_none());

        let json = r#"[{"name": "j", "key": "k1", "services": ["a"]}]"#;
        assert_eq!(
            ApiKeys::parse(json)
                .unwrap()
                .authenticate("k1")
                .unwrap()
                .name(),
            "j"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(ApiKeys::parse("- name: x\n").is_err());
        assert!(ApiKeys::parse("- name: x\n  sha256: abc\n").is_err());
        assert!(ApiKeys::parse("- name: x\n  key: a\n  sha256: abc\n").is_err());
        assert!(ApiKeys::parse("- name: x\n  key: a\n  extra: 1\n").is_err());
    }

    #[test]
    fn keys_are_read_from_three_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(presented_key(&headers), Some("abc"));
        let mut headers = HeaderMap::new();
        headers.insert("api-key", "def".parse().unwrap());
        assert_eq!(presented_key(&headers), Some("def"));
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "ghi".parse().unwrap());
        assert_eq!(presented_key(&headers), Some("ghi"));
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
