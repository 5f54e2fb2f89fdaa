//! What the CLI prints: tables of objects and events, ages, and the
//! `describe` text. Pure functions of the objects and the current time.

use std::time::SystemTime;

use serde_json::Value;

use crate::kind::Kind;
use crate::store::{Event, Object};

/// How long ago an RFC 3339 timestamp was, kubectl style: `42s`, `5m`,
/// `3h`, `12d` (`<unknown>` if it does not parse).
pub fn age(timestamp: &str, now: SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(timestamp) else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Columns padded to their widest cell, three spaces apart; no trailing
/// blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON value as one table cell.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `get` table of a kind: NAME, a few columns per kind, AGE.
pub fn objects_table(kind: Kind, objects: &[Object], now: SystemTime) -> String {
    let headers: &[&str] = match kind {
        Kind::Model => &["NAME", "TASK", "SOURCE", "AGE"],
        Kind::Service => &["NAME", "MODEL", "READY", "AGE"],
        Kind::Collection => &["NAME", "SIZE", "DISTANCE", "AGE"],
    };
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            let created = o.metadata.creation_timestamp.as_deref().unwrap_or("");
            let middle = match kind {
                Kind::Model => vec![cell(&o.spec["task"]), cell(&o.spec["source"])],
                Kind::Service => vec![service_models(&o.spec), service_ready(o)],
                Kind::Collection => vec![cell(&o.spec["size"]), cell(&o.spec["distance"])],
            };
            let mut row = vec![o.metadata.name.clone()];
            row.extend(middle);
            row.push(age(created, now));
            row
        })
        .collect();
    table(headers, &rows)
}

/// `minilm`, or `a:90,b:10` with a traffic split.
fn service_models(spec: &Value) -> String {
    match spec["traffic"].as_array() {
        Some(split) if !split.is_empty() => split
            .iter()
            .map(|t| format!("{}:{}", cell(&t["model"]), cell(&t["weight"])))
            .collect::<Vec<_>>()
            .join(","),
        _ => cell(&spec["model"]),
    }
}

/// `ready/desired`: `status.readyReplicas` over `status.desiredReplicas`
/// (what the autoscaler wants), or `spec.replicas.min` until a reconciler
/// has reported.
fn service_ready(object: &Object) -> String {
    let ready = object.status["readyReplicas"].as_u64().unwrap_or(0);
    let desired = object.status["desiredReplicas"]
        .as_u64()
        .or_else(|| object.spec["replicas"]["min"].as_u64())
        .unwrap_or(1);
    format!("{ready}/{desired}")
}

/// `3m`, or `3m (x4 over 10m)` for a repeated event.
fn event_age(event: &Event, now: SystemTime) -> String {
    let last = age(&event.last_timestamp, now);
    if event.count > 1 {
        format!(
            "{last} (x{} over {})",
            event.count,
            age(&event.first_timestamp, now)
        )
    } else {
        last
    }
}

/// The `events` table: LAST SEEN, TYPE, REASON, OBJECT, COUNT, MESSAGE.
pub fn events_table(events: &[Event], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let object = match Kind::parse(&e.involved_object.kind) {
                Some(kind) => format!("{}/{}", kind.singular(), e.involved_object.name),
                None => format!("{}/{}", e.involved_object.kind, e.involved_object.name),
            };
            vec![
                age(&e.last_timestamp, now),
                format!("{:?}", e.type_),
                e.reason.clone(),
                object,
                e.count.to_string(),
                e.message.clone(),
            ]
        })
        .collect();
    table(
        &["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"],
        &rows,
    )
}

/// `observedGeneration` → `Observed Generation`.
fn title(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with every line indented by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

fn yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| value.to_string())
}

fn key_values(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        "<none>".into()
    } else {
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The table of an array of objects: one column per key (in order of
/// first appearance), `conditions` with their ages.
fn objects_array_table(items: &[Value], now: SystemTime) -> String {
    let mut keys: Vec<String> = Vec::new();
    for item in items {
        if let Some(map) = item.as_object() {
            for key in map.keys() {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
    }
    // Conditions read best in kubectl's order.
    let preferred = [
        "type",
        "name",
        "status",
        "state",
        "reason",
        "lastTransitionTime",
        "message",
    ];
    keys.sort_by_key(|k| {
        let rank = preferred.iter().position(|p| p == k);
        // `message` last, other known keys first, the rest in between.
        match (rank, k.as_str()) {
            (_, "message") => (2, 0),
            (Some(r), _) => (0, r),
            (None, _) => (1, 0),
        }
    });
    let headers: Vec<String> = keys
        .iter()
        .map(|k| match k.as_str() {
            "lastTransitionTime" => "AGE".to_string(),
            k => title(k).to_uppercase(),
        })
        .collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            keys.iter()
                .map(|k| match (k.as_str(), &item[k.as_str()]) {
                    ("lastTransitionTime", Value::String(t)) => age(t, now),
                    (_, Value::Null) => String::new(),
                    (_, v) => cell(v),
                })
                .collect()
        })
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&headers, &rows)
}

/// The status, generically: scalars as `Title: value`, arrays of objects
/// (replicas, conditions) as tables, anything else as YAML.
fn status_text(status: &Value, now: SystemTime) -> String {
    let Some(map) = status.as_object().filter(|m| !m.is_empty()) else {
        return "  <none reported yet>\n".into();
    };
    let mut out = String::new();
    let is_table = |v: &Value| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object))
    };
    // Scalars first, then tables and nested values; conditions last.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| {
        let v = &map[k.as_str()];
        let rank = if k.as_str() == "conditions" {
            3
        } else if is_table(v) {
            2
        } else if v.is_object() || v.is_array() {
            1
        } else {
            0
        };
        (rank, k.as_str())
    });
    let width = keys.iter().map(|k| title(k).len()).max().unwrap_or(0) + 1;
    for key in keys {
        let value = &map[key.as_str()];
        let label = format!("{}:", title(key));
        match value {
            v if is_table(v) => {
                out.push_str(&format!("  {label}\n"));
                out.push_str(&indent(
                    &objects_array_table(v.as_array().map_or(&[], |a| a.as_slice()), now),
                    4,
                ));
            }
            Value::Object(_) | Value::Array(_) => {
                out.push_str(&format!("  {label}\n"));
                out.push_str(&indent(&yaml(value), 4));
            }
            v => out.push_str(&format!("  {label:<width$} {}\n", cell(v))),
        }
    }
    out
}

/// `kubectl describe`: metadata, spec, status and the object's events.
pub fn describe(object: &Object, events: &[Event], now: SystemTime) -> String {
    let m = &object.metadata;
    let created = m.creation_timestamp.as_deref().unwrap_or("");
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{:<18}{value}\n", format!("{label}:")));
    };
    line("Name", m.name.clone());
    line("Kind", object.kind.clone());
    line("Labels", key_values(&m.labels));
    line("Annotations", key_values(&m.annotations));
    line("Created", format!("{created} ({} ago)", age(created, now)));
    line("Generation", object.generation().to_string());
    line("Resource Version", object.resource_version().to_string());
    line("UID", m.uid.clone().unwrap_or_default());
    out.push_str("Spec:\n");
    out.push_str(&indent(&yaml(&object.spec), 2));
    out.push_str("Status:\n");
    out.push_str(&status_text(&object.status, now));
    if events.is_empty() {
        out.push_str("Events:           <none>\n");
    } else {
        out.push_str("Events:\n");
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    format!("{:?}", e.type_),
                    e.reason.clone(),
                    event_age(e, now),
                    e.message.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(
            &table(&["TYPE", "REASON", "AGE", "MESSAGE"], &rows),
            2,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::store::{EventType, ObjectRef};

    fn at(stamp: &str) -> SystemTime {
        humantime::parse_rfc3339(stamp).unwrap()
    }

    fn service() -> Object {
        serde_json::from_value(json!({
            "apiVersion": "neocloud.dev/v1",
            "kind": "Service",
            "metadata": {"name": "embed", "resourceVersion": "7", "generation": 2,
                         "uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"team": "search"}},
            "spec": {"model": "minilm", "replicas": {"min": 2, "max": 4}},
            "status": {
                "observedGeneration": 2,
                "readyReplicas": 1,
                "replicas": [
                    {"name": "replica-0", "pid": 41, "port": 9001, "state": "Ready", "restarts": 0},
                    {"name": "replica-1", "pid": 42, "port": 9002, "state": "Starting", "restarts": 3}
                ],
                "conditions": [{"type": "Ready", "status": "False", "reason": "Scaling",
                                "message": "1 of 2 replicas ready",
                                "lastTransitionTime": "2026-01-01T00:04:00Z"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = at("2026-01-03T00:00:00Z");
        assert_eq!(age("2026-01-02T23:59:15Z", now), "45s");
        assert_eq!(age("2026-01-02T23:30:00Z", now), "30m");
        assert_eq!(age("2026-01-02T20:00:00Z", now), "4h");
        assert_eq!(age("2026-01-01T00:00:00Z", now), "2d");
        assert_eq!(age("yesterday", now), "<unknown>");
        // A clock behind the timestamp says 0s, not a panic.
        assert_eq!(age("2026-02-01T00:00:00Z", now), "0s");
    }

    #[test]
    fn get_tables_have_kind_columns() {
        let now = at("2026-01-01T00:10:00Z");
        let text = objects_table(Kind::Service, &[service()], now);
        assert_eq!(
            text,
            "NAME    MODEL    READY   AGE\nembed   minilm   1/2     10m\n"
        );
    }

    #[test]
    fn describe_shows_status_tables_and_events() {
        let now = at("2026-01-01T00:10:00Z");
        let event = Event {
            seq: 3,
            type_: EventType::Warning,
            reason: "BackOff".into(),
            message: "replica-1 exited with status 1".into(),
            involved_object: ObjectRef {
                kind: "Service".into(),
                name: "embed".into(),
            },
            count: 3,
            first_timestamp: "2026-01-01T00:02:00Z".into(),
            last_timestamp: (humantime::format_rfc3339_seconds(now - Duration::from_secs(30)))
                .to_string(),
        };
        let text = describe(&service(), &[event], now);
        for needle in [
            "Name:             embed",
            "Labels:           team=search",
            "Generation:       2",
            "  model: minilm",
            "  Observed Generation: 2",
            "    NAME        STATE      PID   PORT   RESTARTS",
            "    replica-1   Starting   42    9002   3",
            "    TYPE    STATUS   REASON    AGE   MESSAGE",
            "    Ready   False    Scaling   6m    1 of 2 replicas ready",
            "  Warning   BackOff   30s (x3 over 8m)   replica-1 exited with status 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let bare = Object {
            status: json!({}),
            ..service()
        };
        let text = describe(&bare, &[], now);
        assert!(text.contains("<none reported yet>"), "{text}");
        assert!(text.contains("Events:           <none>"), "{text}");
    }

    #[test]
    fn events_table_names_objects() {
        let now = at("2026-01-01T00:10:00Z");
        let event = Event {
            seq: 1,
            type_: EventType::Normal,
            reason: "Fetched".into(),
            message: "ok".into(),
            involved_object: ObjectRef {
                kind: "Model".into(),
                name: "minilm".into(),
            },
            count: 1,
            first_timestamp: "2026-01-01T00:09:00Z".into(),
            last_timestamp: "2026-01-01T00:09:00Z".into(),
        };
        let text = events_table(&[event], now);
        assert!(text.contains("model/minilm"), "{text}");
        assert!(text.starts_with("LAST SEEN   TYPE     REASON"), "{text}");
    }
}
