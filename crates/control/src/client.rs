//! A blocking client of the control plane's REST API (see [`crate::api`]),
//! and the reading of manifest files, for the CLI.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::api::{APPLY_OUTCOME_HEADER, PREFIX};
use crate::kind::Kind;
use crate::store::{ApplyOutcome, Event, EventType, Object, WatchEvent};

/// The default address of the control plane's API.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// What can go wrong talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused: its `Status` message (which names the field).
    #[error("{message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// The server could not be reached.
    #[error("cannot reach the control plane at {server}: {message}")]
    Transport { server: String, message: String },
    /// The server answered something that is not what the API returns.
    #[error("unexpected answer from {server}: {message}")]
    Protocol { server: String, message: String },
    /// A manifest could not be read or is not a resource.
    #[error("{0}")]
    Manifest(String),
}

/// A connection to one control plane.
pub struct Client {
    server: String,
    agent: ureq::Agent,
    /// Without a read timeout: a watch may be quiet for hours.
    watch_agent: ureq::Agent,
    /// Sent as `Authorization: Bearer KEY` when the server wants API keys.
    api_key: Option<String>,
}

impl Client {
    /// `server` is the base URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(server: &str) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(60))
            .build();
        let watch_agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .build();
        Client {
            server: server.trim_end_matches('/').to_string(),
            agent,
            watch_agent,
            api_key: None,
        }
    }

    /// Sends `key` with every request (`up --api-keys`).
    pub fn with_api_key(mut self, key: Option<String>) -> Client {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    fn url(&self, parts: &[&str]) -> String {
        let mut url = format!("{}{PREFIX}", self.server);
        for part in parts {
            url.push('/');
            url.push_str(&segment(part));
        }
        url
    }

    /// Sends a request and turns refusals into [`ClientError::Status`].
    fn send(
        &self,
        request: ureq::Request,
        body: Option<&Value>,
    ) -> Result<ureq::Response, ClientError> {
        let request = match &self.api_key {
            Some(key) => request.set("Authorization", &format!("Bearer {key}")),
            None => request,
        };
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(code, response)) => {
                let text = response.into_string().unwrap_or_default();
                let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let message = status["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("HTTP {code}: {}", text.trim()));
                Err(ClientError::Status {
                    code,
                    reason: status["reason"].as_str().unwrap_or("").to_string(),
                    message,
                })
            }
            Err(e) => Err(ClientError::Transport {
                server: self.server.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: ureq::Response,
    ) -> Result<T, ClientError> {
        response.into_json().map_err(|e| ClientError::Protocol {
            server: self.server.clone(),
            message: e.to_string(),
        })
    }

    /// Applies one document; its `kind` picks the resource.
    pub fn apply(&self, doc: &Value) -> Result<(Object, ApplyOutcome), ClientError> {
        let kind = document_kind(doc)?;
        let response = self.send(self.agent.post(&self.url(&[kind.plural()])), Some(doc))?;
        let outcome = match response.header(APPLY_OUTCOME_HEADER) {
            Some("created") => ApplyOutcome::Created,
            Some("unchanged") => ApplyOutcome::Unchanged,
            _ if response.status() == 201 => ApplyOutcome::Created,
            _ => ApplyOutcome::Configured,
        };
        Ok((self.json(response)?, outcome))
    }

    pub fn get(&self, kind: Kind, name: &str) -> Result<Object, ClientError> {
        let response = self.send(self.agent.get(&self.url(&[kind.plural(), name])), None)?;
        self.json(response)
    }

    /// The list object as the server sends it (`ServiceList`).
    pub fn list_value(&self, kind: Kind) -> Result<Value, ClientError> {
        let response = self.send(self.agent.get(&self.url(&[kind.plural()])), None)?;
        self.json(response)
    }

    /// Every object of a kind, sorted by name.
    pub fn list(&self, kind: Kind) -> Result<Vec<Object>, ClientError> {
        let list = self.list_value(kind)?;
        serde_json::from_value(list["items"].clone()).map_err(|e| ClientError::Protocol {
            server: self.server.clone(),
            message: format!("items: {e}"),
        })
    }

    pub fn delete(&self, kind: Kind, name: &str) -> Result<Object, ClientError> {
        let response = self.send(self.agent.delete(&self.url(&[kind.plural(), name])), None)?;
        self.json(response)
    }

    /// Events, oldest first: all, of a kind, or of one object.
    pub fn events(
        &self,
        kind: Option<Kind>,
        name: Option<&str>,
    ) -> Result<Vec<Event>, ClientError> {
        let mut request = self.agent.get(&self.url(&["events"]));
        if let Some(kind) = kind {
            request = request.query("kind", kind.name());
        }
        if let Some(name) = name {
            request = request.query("name", name);
        }
        let list: Value = self.json(self.send(request, None)?)?;
        serde_json::from_value(list["items"].clone()).map_err(|e| ClientError::Protocol {
            server: self.server.clone(),
            message: format!("items: {e}"),
        })
    }

    /// Replaces an object's status; with `generation`, only if the spec
    /// is still at that generation (409 otherwise).
    pub fn update_status(
        &self,
        kind: Kind,
        name: &str,
        status: &Value,
        generation: Option<u64>,
    ) -> Result<Object, ClientError> {
        let mut body = serde_json::json!({ "status": status });
        if let Some(generation) = generation {
            body["metadata"] = serde_json::json!({ "generation": generation });
        }
        let url = self.url(&[kind.plural(), name, "status"]);
        let response = self.send(self.agent.put(&url), Some(&body))?;
        self.json(response)
    }

    /// Records an event about an object.
    pub fn record_event(
        &self,
        kind: Kind,
        name: &str,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Event, ClientError> {
        let body = serde_json::json!({
            "type": type_,
            "reason": reason,
            "message": message,
            "involvedObject": {"kind": kind.name(), "name": name},
        });
        let response = self.send(self.agent.post(&self.url(&["events"])), Some(&body))?;
        self.json(response)
    }

    /// Watches a kind: the current objects (changed after `since`, if
    /// given) as `Added`, then every change, blocking between them. The
    /// iterator ends when the server closes the stream; an `Err` from it
    /// (e.g. 410 when the watch fell behind) means: list and watch again.
    pub fn watch(&self, kind: Kind, since: Option<u64>) -> Result<Watch, ClientError> {
        let mut request = self
            .watch_agent
            .get(&self.url(&[kind.plural()]))
            .query("watch", "true");
        if let Some(since) = since {
            request = request.query("resourceVersion", &since.to_string());
        }
        let response = self.send(request, None)?;
        Ok(Watch {
            server: self.server.clone(),
            lines: std::io::BufReader::new(response.into_reader()).lines(),
        })
    }

    /// The last `tail` lines of each replica's log.
    pub fn logs(&self, service: &str, tail: Option<usize>) -> Result<String, ClientError> {
        let mut request = self
            .agent
            .get(&self.url(&[Kind::Service.plural(), service, "logs"]));
        if let Some(tail) = tail {
            request = request.query("tail", &tail.to_string());
        }
        self.send(request, None)?
            .into_string()
            .map_err(|e| ClientError::Protocol {
                server: self.server.clone(),
                message: e.to_string(),
            })
    }
}

/// A watch stream: see [`Client::watch`].
pub struct Watch {
    server: String,
    lines: std::io::Lines<std::io::BufReader<Box<dyn std::io::Read + Send + Sync + 'static>>>,
}

impl Iterator for Watch {
    type Item = Result<WatchEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        let protocol = |message: String| ClientError::Protocol {
            server: self.server.clone(),
            message,
        };
        let line = match self.lines.next()? {
            Ok(line) => line,
            Err(e) => return Some(Err(protocol(format!("reading the watch: {e}")))),
        };
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => return Some(Err(protocol(format!("a watch line: {e}")))),
        };
        if value["type"] == "ERROR" {
            let status = &value["object"];
            return Some(Err(ClientError::Status {
                code: status["code"].as_u64().unwrap_or(500) as u16,
                reason: status["reason"].as_str().unwrap_or("").to_string(),
                message: status["message"].as_str().unwrap_or("").to_string(),
            }));
        }
        Some(serde_json::from_value(value).map_err(|e| protocol(format!("a watch event: {e}"))))
    }
}

/// Percent-encodes a path segment (names are DNS labels, but a typo must
/// not turn into another path).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The kind a document declares.
pub fn document_kind(doc: &Value) -> Result<Kind, ClientError> {
    match doc.get("kind").and_then(Value::as_str) {
        Some(kind) => Kind::parse(kind)
            .filter(|k| k.name() == kind)
            .ok_or_else(|| {
                ClientError::Manifest(format!(
                    "kind: unknown kind {kind:?}, expected Model, Service or Collection"
                ))
            }),
        None => Err(ClientError::Manifest("kind: missing field".into())),
    }
}

/// The name a document declares.
pub fn document_name(doc: &Value) -> Result<&str, ClientError> {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Manifest("metadata.name: missing field".into()))
}

/// One document of a manifest and where it came from (`FILE` or
/// `FILE#N` for the Nth of several).
#[derive(Debug, Clone)]
pub struct ManifestDocument {
    pub origin: String,
    pub value: Value,
}

/// The documents of a file, or of every `*.yaml`, `*.yml` and `*.json`
/// file of a directory (not its subdirectories), in name order. YAML files
/// may hold several documents; a `...List` document (what `get -o yaml`
/// prints for a list) stands for its items.
pub fn read_manifests(path: &Path) -> Result<Vec<ManifestDocument>, ClientError> {
    let io = |e: std::io::Error| ClientError::Manifest(format!("{}: {e}", path.display()));
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let file = entry.map_err(io)?.path();
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
            if file.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                files.push(file);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ClientError::Manifest(format!("{}: {e}", file.display())))?;
        docs.extend(parse_manifest(&file.display().to_string(), &text)?);
    }
    Ok(docs)
}

/// The documents of one manifest text (JSON or multi-document YAML).
pub fn parse_manifest(origin: &str, text: &str) -> Result<Vec<ManifestDocument>, ClientError> {
    use serde::Deserialize;
    let mut values = Vec::new();
    if text.trim_start().starts_with('{') {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ClientError::Manifest(format!("{origin}: not valid JSON: {e}")))?;
        values.push(value);
    } else {
        for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(de).map_err(|e| {
                ClientError::Manifest(format!("{origin}: document {}: not valid YAML: {e}", i + 1))
            })?;
            values.push(value);
        }
    }
    let mut expanded = Vec::new();
    for value in values {
        match value {
            Value::Null => {} // an empty document, e.g. after a trailing `---`
            Value::Object(ref map)
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                if let Some(Value::Array(items)) = map.get("items") {
                    expanded.extend(items.iter().cloned());
                }
            }
            other => expanded.push(other),
        }
    }
    let several = expanded.len() > 1;
    Ok(expanded
        .into_iter()
        .enumerate()
        .map(|(i, value)| ManifestDocument {
            origin: if several {
                format!("{origin}#{}", i + 1)
            } else {
                origin.to_string()
            },
            value,
        })
        .collect())
}

#[cfg(test)]
mod tests;
