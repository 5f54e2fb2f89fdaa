//! `GET /apis/neocloud.dev/v1/{plural}?watch=true`: newline-delimited JSON
//! watch events, the current objects first.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::broadcast;

use super::{StatusError, blocking};
use crate::kind::Kind;
use crate::store::{Store, WatchEvent, WatchEventType};

/// What a watch stream still has to send.
struct WatchStream {
    initial: VecDeque<Bytes>,
    events: broadcast::Receiver<WatchEvent>,
    kind: Kind,
    /// Changes at or below this revision are already in `initial`.
    floor: u64,
    done: bool,
}

pub(super) async fn watch(store: Store, kind: Kind, since: u64) -> Result<Response, StatusError> {
    // Subscribe before listing, so no write falls between the two.
    let events = store.watch();
    let (objects, revision) = blocking(move || store.list_at(kind)).await?;
    let initial = objects
        .into_iter()
        .filter(|o| o.resource_version() > since)
        .map(|object| {
            watch_line(&WatchEvent {
                type_: WatchEventType::Added,
                object,
            })
        })
        .collect();
    let stream = WatchStream {
        initial,
        events,
        kind,
        floor: revision.max(since),
        done: false,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        if let Some(line) = s.initial.pop_front() {
            return Some((Ok::<_, Infallible>(line), s));
        }
        if s.done {
            return None;
        }
        loop {
            match s.events.recv().await {
                Ok(event) => {
                    if event.kind() == Some(s.kind) && event.object.resource_version() > s.floor {
                        return Some((Ok(watch_line(&event)), s));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    s.done = true;
                    let status = StatusError::new(
                        StatusCode::GONE,
                        "Expired",
                        format!("the watch fell {missed} events behind; list again"),
                    );
                    let line = json!({"type": "ERROR", "object": status.body()});
                    return Some((Ok(Bytes::from(format!("{line}\n"))), s));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn watch_line(event: &WatchEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
