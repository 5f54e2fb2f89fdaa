//! Qdrant-compatible payload filters and payload indexes.
//!
//! A [`Filter`] is parsed from Qdrant's REST JSON with [`Filter::from_json`]
//! (errors name the offending part, e.g. `filter.must[1].range: ...`) and
//! evaluated against a point's id and payload with [`Filter::matches`].
//!
//! Semantics follow Qdrant:
//! - keys are dotted paths into nested objects (`a.b.c`; a `[]` suffix on a
//!   segment, as in `cities[].name`, is accepted and means the same thing,
//!   since arrays along the path are always looked through);
//! - when the value (or a value along the path) is an array, a condition
//!   holds if any element satisfies it;
//! - `must` = all, `should` = at least one (when non-empty), `must_not` =
//!   none, `min_should` = at least `min_count` of its conditions; an empty
//!   filter matches everything.
//!
//! [`PayloadIndex`] keeps per-field indexes (keyword, integer, float, bool)
//! and computes a cheap superset of the offsets that can match a filter.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::Serialize;
use serde_json::Value;

use crate::{Payload, PointId, VectorError};

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// A Qdrant filter: `{"must": [...], "should": [...], "must_not": [...],
/// "min_should": {"conditions": [...], "min_count": n}}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_not: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_should: Option<MinShould>,
}

/// At least `min_count` of `conditions` must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinShould {
    pub conditions: Vec<Condition>,
    pub min_count: usize,
}

/// One condition of a filter clause.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Condition {
    /// `{"key": k, "match"|"range"|"values_count": ...}`
    Field(FieldCondition),
    /// `{"is_empty": {"key": k}}`: missing, null, `[]` (or only nulls).
    IsEmpty(IsEmptyCondition),
    /// `{"is_null": {"key": k}}`: the key is present with a null value.
    IsNull(IsNullCondition),
    /// `{"has_id": [ids]}`
    HasId(HasIdCondition),
    /// `{"nested": {"key": k, "filter": {...}}}`: some object of the array
    /// at `k` matches `filter` on its own.
    Nested(NestedCondition),
    /// A nested filter used as a condition.
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRef {
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IsEmptyCondition {
    pub is_empty: KeyRef,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IsNullCondition {
    pub is_null: KeyRef,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HasIdCondition {
    pub has_id: Vec<PointId>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NestedCondition {
    pub nested: NestedInner,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NestedInner {
    pub key: String,
    pub filter: Filter,
}

/// A condition on one payload field. When several of `match`, `range` and
/// `values_count` are given, all of them must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldCondition {
    pub key: String,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Match>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_count: Option<ValuesCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Match {
    Value { value: MatchValue },
    Any { any: AnyValues },
    Except { except: AnyValues },
    Text { text: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MatchValue {
    Keyword(String),
    Integer(i64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AnyValues {
    Keywords(Vec<String>),
    Integers(Vec<i64>),
}

/// Numeric range; integers and floats compare numerically (as f64).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Range {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

/// Range on the number of values stored under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ValuesCount {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gt: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gte: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lt: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lte: Option<usize>,
}

impl<'de> serde::Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Filter::from_json(&v).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

/// The values stored at a dotted key, looking through arrays along the
/// path. Terminal arrays are returned as they are (see [`flatten`]).
fn values_at<'a>(payload: &'a Payload, key: &str) -> Vec<&'a Value> {
    let mut segs = key.split('.').map(|s| s.strip_suffix("[]").unwrap_or(s));
    let first = segs.next().unwrap_or_default();
    let mut cur: Vec<&Value> = payload.get(first).into_iter().collect();
    for seg in segs {
        let mut next = Vec::new();
        for v in cur {
            match v {
                Value::Object(m) => next.extend(m.get(seg)),
                Value::Array(items) => {
                    for item in items {
                        if let Value::Object(m) = item {
                            next.extend(m.get(seg));
                        }
                    }
                }
                _ => {}
            }
        }
        cur = next;
    }
    cur
}

/// Terminal values with arrays expanded one level.
fn flatten<'a>(values: &[&'a Value]) -> impl Iterator<Item = &'a Value> {
    values.iter().flat_map(|v| match v {
        Value::Array(items) => items.iter().collect::<Vec<_>>(),
        other => vec![*other],
    })
}

fn value_in(v: &Value, list: &AnyValues) -> bool {
    match (list, v) {
        (AnyValues::Keywords(l), Value::String(s)) => l.iter().any(|x| x == s),
        (AnyValues::Integers(l), Value::Number(n)) => n.as_i64().is_some_and(|i| l.contains(&i)),
        _ => false,
    }
}

fn value_eq(v: &Value, m: &MatchValue) -> bool {
    match (m, v) {
        (MatchValue::Keyword(k), Value::String(s)) => k == s,
        (MatchValue::Integer(i), Value::Number(n)) => n.as_i64() == Some(*i),
        (MatchValue::Bool(b), Value::Bool(x)) => b == x,
        _ => false,
    }
}

impl Range {
    fn check(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

impl ValuesCount {
    fn check(&self, n: usize) -> bool {
        self.gt.is_none_or(|b| n > b)
            && self.gte.is_none_or(|b| n >= b)
            && self.lt.is_none_or(|b| n < b)
            && self.lte.is_none_or(|b| n <= b)
    }
}

impl Match {
    fn check(&self, values: &[&Value]) -> bool {
        match self {
            Match::Value { value } => flatten(values).any(|v| value_eq(v, value)),
            Match::Any { any } => flatten(values).any(|v| value_in(v, any)),
            Match::Except { except } => {
                let mut present = flatten(values).filter(|v| !v.is_null()).peekable();
                // No value at all: nothing is in the list, so the point passes.
                present.peek().is_none() || present.any(|v| !value_in(v, except))
            }
            Match::Text { text } => {
                flatten(values).any(|v| v.as_str().is_some_and(|s| s.contains(text.as_str())))
            }
        }
    }
}

impl FieldCondition {
    fn check(&self, payload: &Payload) -> bool {
        let values = values_at(payload, &self.key);
        self.r#match.as_ref().is_none_or(|m| m.check(&values))
            && self
                .range
                .as_ref()
                .is_none_or(|r| flatten(&values).any(|v| v.as_f64().is_some_and(|x| r.check(x))))
            && self.values_count.as_ref().is_none_or(|c| {
                let n = values
                    .iter()
                    .map(|v| match v {
                        Value::Array(items) => items.len(),
                        Value::Null => 0,
                        _ => 1,
                    })
                    .sum();
                c.check(n)
            })
    }
}

impl Condition {
    /// True when this single condition holds for the point.
    pub fn matches(&self, id: &PointId, payload: &Payload) -> bool {
        match self {
            Condition::Field(f) => f.check(payload),
            Condition::IsEmpty(c) => {
                let values = values_at(payload, &c.is_empty.key);
                flatten(&values).all(Value::is_null)
            }
            Condition::IsNull(c) => values_at(payload, &c.is_null.key)
                .iter()
                .any(|v| v.is_null()),
            Condition::HasId(h) => h.has_id.contains(id),
            Condition::Nested(n) => {
                let values = values_at(payload, &n.nested.key);
                flatten(&values).any(|v| match v {
                    Value::Object(m) => n.nested.filter.matches(id, m),
                    _ => false,
                })
            }
            Condition::Filter(f) => f.matches(id, payload),
        }
    }
}

mod index;
mod parse;
#[cfg(test)]
mod tests;

pub use index::{PayloadIndex, PayloadSchemaType};
