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
// Parsing
// ---------------------------------------------------------------------------

fn err(path: &str, msg: impl std::fmt::Display) -> VectorError {
    VectorError::bad(format!("{path}: {msg}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn as_object<'a>(
    v: &'a Value,
    path: &str,
) -> Result<&'a serde_json::Map<String, Value>, VectorError> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected an object, got {}", type_name(v))))
}

fn check_keys(
    obj: &serde_json::Map<String, Value>,
    allowed: &[&str],
    path: &str,
) -> Result<(), VectorError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(err(
                path,
                format!(
                    "unknown field `{k}` (expected one of {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

const FILTER_KEYS: &[&str] = &["must", "should", "must_not", "min_should"];

impl Filter {
    /// Parses Qdrant filter JSON with an error that names the bad part,
    /// e.g. `filter.must[1]: unknown condition ...`.
    pub fn from_json(v: &Value) -> Result<Filter, VectorError> {
        parse_filter(v, "filter", false)
    }

    /// True when the point with this id and payload passes the filter.
    pub fn matches(&self, id: &PointId, payload: &Payload) -> bool {
        self.must.iter().all(|c| c.matches(id, payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(id, payload)))
            && !self.must_not.iter().any(|c| c.matches(id, payload))
            && self.min_should.as_ref().is_none_or(|m| {
                m.conditions
                    .iter()
                    .filter(|c| c.matches(id, payload))
                    .take(m.min_count)
                    .count()
                    >= m.min_count
            })
    }

    /// True when the filter has no conditions at all (matches everything).
    pub fn is_empty(&self) -> bool {
        self.must.is_empty()
            && self.should.is_empty()
            && self.must_not.is_empty()
            && self.min_should.is_none()
    }
}

fn parse_filter(v: &Value, path: &str, in_nested: bool) -> Result<Filter, VectorError> {
    let obj = as_object(v, path)?;
    check_keys(obj, FILTER_KEYS, path)?;
    let clause = |name: &str| -> Result<Vec<Condition>, VectorError> {
        parse_conditions(obj.get(name), &format!("{path}.{name}"), in_nested)
    };
    let must = clause("must")?;
    let should = clause("should")?;
    let must_not = clause("must_not")?;
    let min_should = match obj.get("min_should") {
        None | Some(Value::Null) => None,
        Some(m) => {
            let mpath = format!("{path}.min_should");
            let mo = as_object(m, &mpath)?;
            check_keys(mo, &["conditions", "min_count"], &mpath)?;
            let conditions = match mo.get("conditions") {
                Some(c) => parse_conditions(Some(c), &format!("{mpath}.conditions"), in_nested)?,
                None => return Err(err(&mpath, "missing field `conditions`")),
            };
            let min_count = match mo.get("min_count") {
                Some(n) => n.as_u64().ok_or_else(|| {
                    err(
                        &format!("{mpath}.min_count"),
                        format!("expected a non-negative integer, got {n}"),
                    )
                })? as usize,
                None => return Err(err(&mpath, "missing field `min_count`")),
            };
            Some(MinShould {
                conditions,
                min_count,
            })
        }
    };
    Ok(Filter {
        must,
        should,
        must_not,
        min_should,
    })
}

/// A clause may be an array of conditions, a single condition, or null.
fn parse_conditions(
    v: Option<&Value>,
    path: &str,
    in_nested: bool,
) -> Result<Vec<Condition>, VectorError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, c)| parse_condition(c, &format!("{path}[{i}]"), in_nested))
            .collect(),
        Some(c @ Value::Object(_)) => Ok(vec![parse_condition(c, path, in_nested)?]),
        Some(other) => Err(err(
            path,
            format!("expected an array of conditions, got {}", type_name(other)),
        )),
    }
}

fn parse_key(v: Option<&Value>, path: &str) -> Result<String, VectorError> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s.split('.').all(|seg| !seg.is_empty()) => {
            Ok(s.clone())
        }
        Some(Value::String(s)) => Err(err(
            &format!("{path}.key"),
            format!("invalid key {s:?}: expected a dotted path such as \"a.b\""),
        )),
        Some(other) => Err(err(
            &format!("{path}.key"),
            format!("expected a string, got {}", type_name(other)),
        )),
        None => Err(err(path, "missing field `key`")),
    }
}

fn parse_key_ref(v: &Value, path: &str) -> Result<KeyRef, VectorError> {
    let obj = as_object(v, path)?;
    check_keys(obj, &["key"], path)?;
    Ok(KeyRef {
        key: parse_key(obj.get("key"), path)?,
    })
}

fn parse_condition(v: &Value, path: &str, in_nested: bool) -> Result<Condition, VectorError> {
    let obj = as_object(v, path)?;
    if obj.contains_key("key") {
        return parse_field_condition(obj, path).map(Condition::Field);
    }
    let single = |name: &str| -> Result<&Value, VectorError> {
        if obj.len() != 1 {
            let others: Vec<&str> = obj
                .keys()
                .map(|k| k.as_str())
                .filter(|k| *k != name)
                .collect();
            return Err(err(
                path,
                format!(
                    "`{name}` condition has unexpected fields: {}",
                    others.join(", ")
                ),
            ));
        }
        Ok(&obj[name])
    };
    if obj.contains_key("is_empty") {
        let inner = single("is_empty")?;
        return Ok(Condition::IsEmpty(IsEmptyCondition {
            is_empty: parse_key_ref(inner, &format!("{path}.is_empty"))?,
        }));
    }
    if obj.contains_key("is_null") {
        let inner = single("is_null")?;
        return Ok(Condition::IsNull(IsNullCondition {
            is_null: parse_key_ref(inner, &format!("{path}.is_null"))?,
        }));
    }
    if obj.contains_key("has_id") {
        let inner = single("has_id")?;
        let hpath = format!("{path}.has_id");
        if in_nested {
            return Err(err(
                &hpath,
                "has_id is not supported inside a nested filter; put it in an adjacent clause",
            ));
        }
        let items = inner.as_array().ok_or_else(|| {
            err(
                &hpath,
                format!("expected an array of point ids, got {}", type_name(inner)),
            )
        })?;
        let ids = items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                serde_json::from_value::<PointId>(x.clone()).map_err(|_| {
                    err(
                        &format!("{hpath}[{i}]"),
                        format!("not a point id (an unsigned integer or a UUID): {x}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Condition::HasId(HasIdCondition { has_id: ids }));
    }
    if obj.contains_key("nested") {
        let inner = single("nested")?;
        let npath = format!("{path}.nested");
        let no = as_object(inner, &npath)?;
        check_keys(no, &["key", "filter"], &npath)?;
        let key = parse_key(no.get("key"), &npath)?;
        let filter = match no.get("filter") {
            Some(f) => parse_filter(f, &format!("{npath}.filter"), true)?,
            None => return Err(err(&npath, "missing field `filter`")),
        };
        return Ok(Condition::Nested(NestedCondition {
            nested: NestedInner { key, filter },
        }));
    }
    if obj.keys().all(|k| FILTER_KEYS.contains(&k.as_str())) {
        return parse_filter(v, path, in_nested).map(Condition::Filter);
    }
    let keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    Err(err(
        path,
        format!(
            "unknown condition with fields {{{}}} (expected a field condition with `key`, \
             or one of is_empty, is_null, has_id, nested, or a filter with must/should/must_not)",
            keys.join(", ")
        ),
    ))
}

fn parse_field_condition(
    obj: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<FieldCondition, VectorError> {
    for k in obj.keys() {
        match k.as_str() {
            "key" | "match" | "range" | "values_count" => {}
            "geo_bounding_box" | "geo_radius" | "geo_polygon" | "datetime_range" => {
                return Err(err(path, format!("`{k}` conditions are not supported")));
            }
            other => {
                return Err(err(
                    path,
                    format!(
                        "unknown field `{other}` in field condition \
                         (expected key, match, range, values_count)"
                    ),
                ));
            }
        }
    }
    let key = parse_key(obj.get("key"), path)?;
    let r#match = match obj.get("match") {
        None | Some(Value::Null) => None,
        Some(m) => Some(parse_match(m, &format!("{path}.match"))?),
    };
    let range = match obj.get("range") {
        None | Some(Value::Null) => None,
        Some(r) => Some(parse_range(r, &format!("{path}.range"))?),
    };
    let values_count = match obj.get("values_count") {
        None | Some(Value::Null) => None,
        Some(r) => Some(parse_values_count(r, &format!("{path}.values_count"))?),
    };
    if r#match.is_none() && range.is_none() && values_count.is_none() {
        return Err(err(
            path,
            format!("field condition on {key:?} needs one of match, range, values_count"),
        ));
    }
    Ok(FieldCondition {
        key,
        r#match,
        range,
        values_count,
    })
}

fn parse_match(v: &Value, path: &str) -> Result<Match, VectorError> {
    let obj = as_object(v, path)?;
    if obj.len() != 1 {
        let keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
        return Err(err(
            path,
            format!(
                "match needs exactly one of value, any, except, text (got {{{}}})",
                keys.join(", ")
            ),
        ));
    }
    let (k, val) = obj.iter().next().expect("one entry");
    let vpath = format!("{path}.{k}");
    match k.as_str() {
        "value" => {
            let mv = match val {
                Value::String(s) => MatchValue::Keyword(s.clone()),
                Value::Bool(b) => MatchValue::Bool(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => MatchValue::Integer(i),
                    None => {
                        return Err(err(
                            &vpath,
                            format!(
                                "expected a string, an integer or a bool, got {n} \
                                 (use range to match floats)"
                            ),
                        ));
                    }
                },
                other => {
                    return Err(err(
                        &vpath,
                        format!(
                            "expected a string, an integer or a bool, got {} \
                             (use is_null to match null)",
                            type_name(other)
                        ),
                    ));
                }
            };
            Ok(Match::Value { value: mv })
        }
        "any" => Ok(Match::Any {
            any: parse_any_values(val, &vpath)?,
        }),
        "except" => Ok(Match::Except {
            except: parse_any_values(val, &vpath)?,
        }),
        "text" => match val {
            Value::String(s) => Ok(Match::Text { text: s.clone() }),
            other => Err(err(
                &vpath,
                format!("expected a string, got {}", type_name(other)),
            )),
        },
        other => Err(err(
            path,
            format!("unknown match `{other}` (expected one of value, any, except, text)"),
        )),
    }
}

fn parse_any_values(v: &Value, path: &str) -> Result<AnyValues, VectorError> {
    let items = v.as_array().ok_or_else(|| {
        err(
            path,
            format!(
                "expected an array of strings or integers, got {}",
                type_name(v)
            ),
        )
    })?;
    if items.iter().all(Value::is_string) {
        return Ok(AnyValues::Keywords(
            items
                .iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect(),
        ));
    }
    if items.iter().all(|x| x.as_i64().is_some()) {
        return Ok(AnyValues::Integers(
            items
                .iter()
                .map(|x| x.as_i64().unwrap_or_default())
                .collect(),
        ));
    }
    Err(err(
        path,
        "expected an array of all strings or all integers",
    ))
}

fn parse_bounds<T>(
    v: &Value,
    path: &str,
    what: &str,
    conv: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<[Option<T>; 4], VectorError> {
    let obj = as_object(v, path)?;
    check_keys(obj, &["gt", "gte", "lt", "lte"], path)?;
    let mut out = [None, None, None, None];
    for (i, name) in ["gt", "gte", "lt", "lte"].iter().enumerate() {
        match obj.get(*name) {
            None | Some(Value::Null) => {}
            Some(x) => {
                out[i] = Some(conv(x).ok_or_else(|| {
                    err(
                        &format!("{path}.{name}"),
                        format!("expected {expected}, got {x}"),
                    )
                })?);
            }
        }
    }
    if out.iter().all(Option::is_none) {
        return Err(err(
            path,
            format!("{what} needs at least one of gt, gte, lt, lte"),
        ));
    }
    Ok(out)
}

fn parse_range(v: &Value, path: &str) -> Result<Range, VectorError> {
    let [gt, gte, lt, lte] = parse_bounds(v, path, "range", Value::as_f64, "a number")?;
    Ok(Range { gt, gte, lt, lte })
}

fn parse_values_count(v: &Value, path: &str) -> Result<ValuesCount, VectorError> {
    let [gt, gte, lt, lte] = parse_bounds(
        v,
        path,
        "values_count",
        |x| x.as_u64().map(|n| n as usize),
        "a non-negative integer",
    )?;
    Ok(ValuesCount { gt, gte, lt, lte })
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

// ---------------------------------------------------------------------------
// Payload indexes
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadSchemaType {
    Keyword,
    Integer,
    Float,
    Bool,
}

/// A totally ordered f64 key (no NaN in JSON; -0.0 is stored as 0.0).
#[derive(Debug, Clone, Copy)]
struct NumKey(f64);

impl NumKey {
    fn new(x: f64) -> Self {
        NumKey(x + 0.0)
    }
}

impl PartialEq for NumKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for NumKey {}
impl PartialOrd for NumKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for NumKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

type Postings = BTreeSet<u32>;

/// The index of one field. Which maps are filled depends on the schema:
/// keyword → `keywords`; integer → `integers` (match) and `numbers`
/// (range, every number including floats); float → `numbers`; bool → `bools`.
#[derive(Debug)]
struct FieldIndex {
    schema: PayloadSchemaType,
    keywords: BTreeMap<String, Postings>,
    integers: BTreeMap<i64, Postings>,
    numbers: BTreeMap<NumKey, Postings>,
    bools: [Postings; 2],
}

fn insert<K: Ord>(map: &mut BTreeMap<K, Postings>, k: K, offset: u32) {
    map.entry(k).or_default().insert(offset);
}

fn remove<K: Ord>(map: &mut BTreeMap<K, Postings>, k: &K, offset: u32) {
    if let Some(set) = map.get_mut(k) {
        set.remove(&offset);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

impl FieldIndex {
    fn new(schema: PayloadSchemaType) -> Self {
        FieldIndex {
            schema,
            keywords: BTreeMap::new(),
            integers: BTreeMap::new(),
            numbers: BTreeMap::new(),
            bools: [BTreeSet::new(), BTreeSet::new()],
        }
    }

    fn update(&mut self, key: &str, offset: u32, payload: &Payload, add: bool) {
        let values = values_at(payload, key);
        for v in flatten(&values) {
            match (self.schema, v) {
                (PayloadSchemaType::Keyword, Value::String(s)) => {
                    if add {
                        insert(&mut self.keywords, s.clone(), offset);
                    } else {
                        remove(&mut self.keywords, s, offset);
                    }
                }
                (PayloadSchemaType::Integer | PayloadSchemaType::Float, Value::Number(n)) => {
                    if self.schema == PayloadSchemaType::Integer
                        && let Some(i) = n.as_i64()
                    {
                        if add {
                            insert(&mut self.integers, i, offset);
                        } else {
                            remove(&mut self.integers, &i, offset);
                        }
                    }
                    if let Some(x) = n.as_f64() {
                        let k = NumKey::new(x);
                        if add {
                            insert(&mut self.numbers, k, offset);
                        } else {
                            remove(&mut self.numbers, &k, offset);
                        }
                    }
                }
                (PayloadSchemaType::Bool, Value::Bool(b)) => {
                    let set = &mut self.bools[usize::from(*b)];
                    if add {
                        set.insert(offset);
                    } else {
                        set.remove(&offset);
                    }
                }
                _ => {}
            }
        }
    }

    /// Offsets that can satisfy `fc`, or `None` when this index cannot tell.
    fn lookup(&self, fc: &FieldCondition) -> Option<Postings> {
        let mut best: Option<Postings> = None;
        let mut narrow = |set: Postings| {
            best = Some(match best.take() {
                None => set,
                Some(prev) => prev.intersection(&set).copied().collect(),
            });
        };
        if let Some(m) = &fc.r#match
            && let Some(set) = self.lookup_match(m)
        {
            narrow(set);
        }
        if let Some(r) = &fc.range
            && let Some(set) = self.lookup_range(r)
        {
            narrow(set);
        }
        best
    }

    fn lookup_match(&self, m: &Match) -> Option<Postings> {
        let union = |sets: Vec<Option<&Postings>>| -> Postings {
            sets.into_iter().flatten().flatten().copied().collect()
        };
        match (self.schema, m) {
            // Matches nothing, whatever the field holds.
            (
                _,
                Match::Any {
                    any: AnyValues::Keywords(l),
                },
            ) if l.is_empty() => Some(Postings::new()),
            (
                PayloadSchemaType::Keyword,
                Match::Value {
                    value: MatchValue::Keyword(k),
                },
            ) => Some(self.keywords.get(k).cloned().unwrap_or_default()),
            (
                PayloadSchemaType::Integer,
                Match::Value {
                    value: MatchValue::Integer(i),
                },
            ) => Some(self.integers.get(i).cloned().unwrap_or_default()),
            (
                PayloadSchemaType::Bool,
                Match::Value {
                    value: MatchValue::Bool(b),
                },
            ) => Some(self.bools[usize::from(*b)].clone()),
            (
                PayloadSchemaType::Keyword,
                Match::Any {
                    any: AnyValues::Keywords(l),
                },
            ) => Some(union(l.iter().map(|k| self.keywords.get(k)).collect())),
            (
                PayloadSchemaType::Integer,
                Match::Any {
                    any: AnyValues::Integers(l),
                },
            ) => Some(union(l.iter().map(|i| self.integers.get(i)).collect())),
            _ => None,
        }
    }

    fn lookup_range(&self, r: &Range) -> Option<Postings> {
        if !matches!(
            self.schema,
            PayloadSchemaType::Integer | PayloadSchemaType::Float
        ) {
            return None;
        }
        // The tighter of gt/gte as the start; the upper bounds are checked
        // while walking, so no (panicking) inverted range is ever built.
        let lower = match (r.gt, r.gte) {
            (Some(a), Some(b)) if b > a => Bound::Included(NumKey::new(b)),
            (Some(a), _) => Bound::Excluded(NumKey::new(a)),
            (None, Some(b)) => Bound::Included(NumKey::new(b)),
            (None, None) => Bound::Unbounded,
        };
        let mut out = Postings::new();
        for (k, set) in self.numbers.range((lower, Bound::Unbounded)) {
            if r.lt.is_some_and(|b| k.0 >= b) || r.lte.is_some_and(|b| k.0 > b) {
                break;
            }
            out.extend(set.iter().copied());
        }
        Some(out)
    }
}

/// Indexes of payload fields for fast candidate selection. Offsets are u32.
#[derive(Default, Debug)]
pub struct PayloadIndex {
    fields: BTreeMap<String, FieldIndex>,
}

impl PayloadIndex {
    /// Creates (or recreates) the index of `key`, indexing `existing` points.
    pub fn create_field<'a>(
        &mut self,
        key: &str,
        schema: PayloadSchemaType,
        existing: impl Iterator<Item = (u32, &'a Payload)>,
    ) {
        let mut index = FieldIndex::new(schema);
        for (offset, payload) in existing {
            index.update(key, offset, payload, true);
        }
        self.fields.insert(key.to_string(), index);
    }

    pub fn drop_field(&mut self, key: &str) {
        self.fields.remove(key);
    }

    /// The indexed fields and their schemas, sorted by key.
    pub fn fields(&self) -> Vec<(String, PayloadSchemaType)> {
        self.fields
            .iter()
            .map(|(k, f)| (k.clone(), f.schema))
            .collect()
    }

    /// Indexes a point's payload under `offset`.
    pub fn add(&mut self, offset: u32, payload: &Payload) {
        for (key, index) in &mut self.fields {
            index.update(key, offset, payload, true);
        }
    }

    /// Removes a point; `payload` must be the payload it was added with.
    pub fn remove(&mut self, offset: u32, payload: &Payload) {
        for (key, index) in &mut self.fields {
            index.update(key, offset, payload, false);
        }
    }

    /// A superset of the offsets that can match `filter`, computed from
    /// indexed `must` conditions only (match value/any on keyword/integer/bool
    /// fields, range on integer/float fields, and nested filters in `must`,
    /// recursively), intersected; `None` when no must-condition is indexed.
    /// The caller still checks `matches` on each candidate. Sorted.
    pub fn candidates(&self, filter: &Filter) -> Option<Vec<u32>> {
        self.candidate_set(filter).map(|s| s.into_iter().collect())
    }

    fn candidate_set(&self, filter: &Filter) -> Option<Postings> {
        let mut sets: Vec<Postings> = filter
            .must
            .iter()
            .filter_map(|c| match c {
                Condition::Field(fc) => self.fields.get(&fc.key)?.lookup(fc),
                Condition::Filter(f) => self.candidate_set(f),
                _ => None,
            })
            .collect();
        sets.sort_by_key(BTreeSet::len);
        let mut iter = sets.into_iter();
        let mut acc = iter.next()?;
        for s in iter {
            acc.retain(|o| s.contains(o));
            if acc.is_empty() {
                break;
            }
        }
        Some(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Payload {
        v.as_object().expect("object").clone()
    }

    fn f(v: Value) -> Filter {
        Filter::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn m(filter: Value, payload: Value) -> bool {
        f(filter).matches(&PointId::Num(1), &p(payload))
    }

    fn bad(v: Value) -> String {
        match Filter::from_json(&v) {
            Ok(x) => panic!("{v} parsed as {x:?}"),
            Err(e) => {
                assert!(matches!(e, VectorError::BadRequest(_)));
                e.to_string()
            }
        }
    }

    fn cond(c: Value) -> Value {
        json!({ "must": [c] })
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(m(json!({}), json!({})));
        assert!(m(json!({"must": [], "should": null}), json!({"a": 1})));
        assert!(f(json!({})).is_empty());
    }

    #[test]
    fn match_value_by_type() {
        let kw = cond(json!({"key": "c", "match": {"value": "red"}}));
        assert!(m(kw.clone(), json!({"c": "red"})));
        assert!(!m(kw.clone(), json!({"c": "Red"})));
        assert!(!m(kw.clone(), json!({})));
        assert!(m(kw.clone(), json!({"c": ["blue", "red"]})));
        assert!(!m(kw, json!({"c": []})));
        let int = cond(json!({"key": "n", "match": {"value": 5}}));
        assert!(m(int.clone(), json!({"n": 5})));
        assert!(!m(int.clone(), json!({"n": "5"})));
        assert!(!m(int.clone(), json!({"n": 5.5})));
        assert!(m(int, json!({"n": [1, 5]})));
        let b = cond(json!({"key": "b", "match": {"value": true}}));
        assert!(m(b.clone(), json!({"b": true})));
        assert!(!m(b.clone(), json!({"b": false})));
        assert!(!m(b, json!({"b": 1})));
    }

    #[test]
    fn nested_keys_and_arrays_along_the_path() {
        let payload = json!({"country": {"name": "Japan", "cities": [
            {"name": "Tokyo", "population": 9.3, "sights": ["Tower", "Skytree"]},
            {"name": "Osaka", "population": 2.7, "sights": ["Castle"]}
        ]}});
        assert!(m(
            cond(json!({"key": "country.name", "match": {"value": "Japan"}})),
            payload.clone()
        ));
        assert!(m(
            cond(json!({"key": "country.cities[].population", "range": {"gt": 9.0}})),
            payload.clone()
        ));
        assert!(m(
            cond(json!({"key": "country.cities.population", "range": {"gt": 9.0}})),
            payload.clone()
        ));
        assert!(!m(
            cond(json!({"key": "country.cities.population", "range": {"gt": 10}})),
            payload.clone()
        ));
        assert!(m(
            cond(json!({"key": "country.cities[].sights", "match": {"value": "Castle"}})),
            payload.clone()
        ));
        assert!(!m(
            cond(json!({"key": "country.name.x", "match": {"value": "Japan"}})),
            payload.clone()
        ));
        assert!(m(
            cond(json!({"key": "country.cities.sights", "values_count": {"gte": 3}})),
            payload
        ));
    }

    #[test]
    fn any_except_text() {
        let any = cond(json!({"key": "c", "match": {"any": ["black", "yellow"]}}));
        assert!(m(any.clone(), json!({"c": "black"})));
        assert!(m(any.clone(), json!({"c": ["green", "black"]})));
        assert!(!m(any.clone(), json!({"c": "green"})));
        assert!(!m(any, json!({})));
        let anyi = cond(json!({"key": "n", "match": {"any": [1, 2]}}));
        assert!(m(anyi.clone(), json!({"n": 2})));
        assert!(!m(anyi, json!({"n": 3})));
        let ex = cond(json!({"key": "c", "match": {"except": ["black", "yellow"]}}));
        assert!(!m(ex.clone(), json!({"c": "black"})));
        assert!(m(ex.clone(), json!({"c": "green"})));
        assert!(m(ex.clone(), json!({"c": ["black", "green"]})));
        assert!(!m(ex.clone(), json!({"c": ["black", "yellow"]})));
        assert!(m(ex.clone(), json!({})), "no value is not in the list");
        assert!(m(ex.clone(), json!({"c": null})));
        assert!(m(ex, json!({"c": 3})), "other types are not in the list");
        let text = cond(json!({"key": "t", "match": {"text": "lo w"}}));
        assert!(m(text.clone(), json!({"t": "hello world"})));
        assert!(!m(text.clone(), json!({"t": "hello"})));
        assert!(m(text, json!({"t": ["x", "hello world"]})));
    }

    #[test]
    fn ranges_compare_numerically() {
        let r = cond(json!({"key": "x", "range": {"gte": 1, "lt": 2.5}}));
        assert!(m(r.clone(), json!({"x": 1})));
        assert!(m(r.clone(), json!({"x": 1.0})));
        assert!(m(r.clone(), json!({"x": 2.4})));
        assert!(!m(r.clone(), json!({"x": 2.5})));
        assert!(!m(r.clone(), json!({"x": "1"})));
        assert!(!m(r.clone(), json!({})));
        assert!(m(r, json!({"x": [0, 2]})));
        assert!(!m(
            cond(json!({"key": "x", "range": {"gt": -0.0, "lte": 0}})),
            json!({"x": 0})
        ));
        assert!(m(
            cond(json!({"key": "x", "range": {"gte": 0.0}})),
            json!({"x": -0.0})
        ));
    }

    #[test]
    fn values_count() {
        let c = cond(json!({"key": "a", "values_count": {"gt": 1}}));
        assert!(m(c.clone(), json!({"a": [1, 2]})));
        assert!(!m(c.clone(), json!({"a": [1]})));
        assert!(!m(c.clone(), json!({"a": 7})));
        assert!(!m(c, json!({})));
        assert!(m(
            cond(json!({"key": "a", "values_count": {"lt": 1}})),
            json!({})
        ));
        assert!(m(
            cond(json!({"key": "a", "values_count": {"lte": 1}})),
            json!({"a": "x"})
        ));
    }

    #[test]
    fn null_and_empty() {
        let is_null = cond(json!({"is_null": {"key": "r"}}));
        let is_empty = cond(json!({"is_empty": {"key": "r"}}));
        for (payload, null, empty) in [
            (json!({"r": null}), true, true),
            (json!({}), false, true),
            (json!({"r": []}), false, true),
            (json!({"r": [null]}), false, true),
            (json!({"r": 0}), false, false),
            (json!({"r": ""}), false, false),
            (json!({"r": [1]}), false, false),
            (json!({"r": {}}), false, false),
        ] {
            assert_eq!(
                m(is_null.clone(), payload.clone()),
                null,
                "is_null {payload}"
            );
            assert_eq!(
                m(is_empty.clone(), payload.clone()),
                empty,
                "is_empty {payload}"
            );
        }
        assert!(m(
            cond(json!({"is_null": {"key": "a.b"}})),
            json!({"a": [{"b": 1}, {"b": null}]})
        ));
        assert!(m(
            json!({"must_not": [{"is_empty": {"key": "r"}}]}),
            json!({"r": [1]})
        ));
    }

    #[test]
    fn has_id_numbers_and_uuids() {
        let u = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26";
        let flt = f(json!({"must": [{"has_id": [1, 7, u]}]}));
        let empty = Payload::new();
        assert!(flt.matches(&PointId::Num(7), &empty));
        assert!(!flt.matches(&PointId::Num(2), &empty));
        let uid: PointId = serde_json::from_value(json!(u)).unwrap();
        assert!(flt.matches(&uid, &empty));
        let upper: PointId = serde_json::from_value(json!(u.to_uppercase())).unwrap();
        assert!(flt.matches(&upper, &empty));
        let other: PointId =
            serde_json::from_value(json!("00000000-0000-0000-0000-000000000001")).unwrap();
        assert!(!flt.matches(&other, &empty));
        assert!(!f(json!({"must": [{"has_id": []}]})).matches(&PointId::Num(1), &empty));
    }

    #[test]
    fn clause_combinations() {
        let flt = json!({
            "must": [{"key": "city", "match": {"value": "London"}}],
            "should": [{"key": "color", "match": {"value": "red"}}, {"key": "color", "match": {"value": "green"}}],
            "must_not": [{"key": "n", "range": {"gt": 10}}]
        });
        assert!(m(
            flt.clone(),
            json!({"city": "London", "color": "red", "n": 1})
        ));
        assert!(!m(
            flt.clone(),
            json!({"city": "London", "color": "blue", "n": 1})
        ));
        assert!(!m(flt.clone(), json!({"city": "Paris", "color": "red"})));
        assert!(!m(
            flt.clone(),
            json!({"city": "London", "color": "green", "n": 11})
        ));
        assert!(m(flt, json!({"city": "London", "color": "green"})));
        // nested filter as a condition: must_not of (a AND b)
        let nested = json!({"must_not": [{"must": [
            {"key": "a", "match": {"value": 1}}, {"key": "b", "match": {"value": 2}}]}]});
        assert!(!m(nested.clone(), json!({"a": 1, "b": 2})));
        assert!(m(nested, json!({"a": 1, "b": 3})));
        // a single condition in place of an array
        assert!(m(
            json!({"must": {"key": "a", "match": {"value": 1}}}),
            json!({"a": 1})
        ));
        // min_should
        let ms = json!({"min_should": {"min_count": 2, "conditions": [
            {"key": "a", "match": {"value": 1}}, {"key": "b", "match": {"value": 1}},
            {"key": "c", "match": {"value": 1}}]}});
        assert!(m(ms.clone(), json!({"a": 1, "c": 1})));
        assert!(!m(ms, json!({"a": 1, "c": 2})));
    }

    #[test]
    fn nested_object_filter() {
        let dino = |diet: Value| json!({"diet": diet});
        let plain = json!({"must": [
            {"key": "diet[].food", "match": {"value": "meat"}},
            {"key": "diet[].likes", "match": {"value": true}}]});
        let nested = json!({"must": [{"nested": {"key": "diet", "filter": {"must": [
            {"key": "food", "match": {"value": "meat"}},
            {"key": "likes", "match": {"value": true}}]}}}]});
        let trex =
            dino(json!([{"food": "leaves", "likes": false}, {"food": "meat", "likes": true}]));
        let diplo =
            dino(json!([{"food": "leaves", "likes": true}, {"food": "meat", "likes": false}]));
        assert!(m(plain.clone(), trex.clone()));
        assert!(m(plain, diplo.clone()));
        assert!(m(nested.clone(), trex));
        assert!(!m(nested, diplo));
    }

    #[test]
    fn bad_json_names_the_part() {
        let e = bad(json!([1]));
        assert!(e.starts_with("filter: expected an object"), "{e}");
        let e = bad(json!({"must": [{"key": "a", "match": {"value": 1}}, {"foo": 1}]}));
        assert!(e.starts_with("filter.must[1]: unknown condition"), "{e}");
        let e = bad(json!({"must": [{"key": "a", "range": {}}]}));
        assert!(
            e.contains("filter.must[0].range")
                && e.contains("range needs at least one of gt, gte, lt, lte"),
            "{e}"
        );
        let e = bad(json!({"should": [{"key": "a", "match": {}}]}));
        assert!(
            e.starts_with(
                "filter.should[0].match: match needs exactly one of value, any, except, text"
            ),
            "{e}"
        );
        let e = bad(json!({"must": [{"key": "a", "match": {"values": 1}}]}));
        assert!(e.contains("unknown match `values`"), "{e}");
        let e = bad(json!({"must": [{"key": "a", "match": {"value": 1.5}}]}));
        assert!(
            e.starts_with("filter.must[0].match.value: expected a string, an integer or a bool"),
            "{e}"
        );
        let e = bad(json!({"must": [{"key": "a", "match": {"value": null}}]}));
        assert!(e.contains("is_null"), "{e}");
        let e = bad(json!({"must": [{"key": "a", "match": {"any": [1, "x"]}}]}));
        assert!(e.starts_with("filter.must[0].match.any:"), "{e}");
        let e = bad(json!({"must": [{"key": "a", "range": {"gt": "3"}}]}));
        assert!(
            e.starts_with("filter.must[0].range.gt: expected a number"),
            "{e}"
        );
        let e = bad(json!({"must": [{"key": "a", "range": {"gt": 1, "eq": 2}}]}));
        assert!(e.contains("unknown field `eq`"), "{e}");
        let e = bad(json!({"must": [{"key": 5, "match": {"value": 1}}]}));
        assert!(
            e.starts_with("filter.must[0].key: expected a string"),
            "{e}"
        );
        let e = bad(json!({"must": [{"key": "a"}]}));
        assert!(e.contains("needs one of match, range, values_count"), "{e}");
        let e = bad(json!({"must": 3}));
        assert!(e.starts_with("filter.must: expected an array"), "{e}");
        let e = bad(json!({"must_not": [{"has_id": [1, -2]}]}));
        assert!(
            e.starts_with("filter.must_not[0].has_id[1]: not a point id"),
            "{e}"
        );
        let e = bad(json!({"must_not": [{"has_id": [1, "nope"]}]}));
        assert!(e.starts_with("filter.must_not[0].has_id[1]"), "{e}");
        let e = bad(json!({"musts": []}));
        assert!(e.contains("unknown field `musts`"), "{e}");
        let e = bad(json!({"must": [{"must": [{"is_null": "a"}]}]}));
        assert!(
            e.starts_with("filter.must[0].must[0].is_null: expected an object"),
            "{e}"
        );
        let e = bad(json!({"must": [{"is_empty": {"key": "a"}, "x": 1}]}));
        assert!(e.contains("unexpected fields: x"), "{e}");
        let e =
            bad(json!({"must": [{"nested": {"key": "d", "filter": {"must": [{"has_id": [1]}]}}}]}));
        assert!(
            e.contains("has_id is not supported inside a nested filter"),
            "{e}"
        );
        let e = bad(json!({"min_should": {"conditions": []}}));
        assert!(e.contains("min_count"), "{e}");
        let e = bad(json!({"must": [{"key": "a..b", "match": {"value": 1}}]}));
        assert!(e.contains("invalid key"), "{e}");
        // serde's Deserialize goes through the same parser
        let e = serde_json::from_value::<Filter>(json!({"must": [{"foo": 1}]})).unwrap_err();
        assert!(
            e.to_string().contains("filter.must[0]: unknown condition"),
            "{e}"
        );
    }

    #[test]
    fn serialises_back_to_qdrant_json() {
        let v = json!({
            "must": [{"key": "a.b", "match": {"value": "x"}}, {"key": "n", "range": {"gte": 1.0, "lt": 5.5}},
                     {"has_id": [1, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]}],
            "should": [{"is_null": {"key": "z"}}, {"is_empty": {"key": "y"}},
                       {"key": "t", "match": {"except": [1, 2]}}, {"key": "c", "values_count": {"gt": 2}}],
            "must_not": [{"must": [{"key": "k", "match": {"any": ["p", "q"]}}]},
                         {"nested": {"key": "d", "filter": {"must": [{"key": "e", "match": {"text": "hi"}}]}}}],
            "min_should": {"conditions": [{"key": "b", "match": {"value": true}}], "min_count": 1}
        });
        let flt = f(v.clone());
        assert_eq!(serde_json::to_value(&flt).unwrap(), v);
        let back: Filter = serde_json::from_value(serde_json::to_value(&flt).unwrap()).unwrap();
        assert_eq!(back, flt);
    }

    #[test]
    fn index_basics() {
        let payloads: Vec<Payload> = vec![
            p(json!({"c": "red", "n": 1, "x": 0.5, "b": true})),
            p(json!({"c": ["red", "blue"], "n": [2, 3], "x": -1.5})),
            p(json!({"c": "blue", "n": 3.5, "b": false})),
            p(json!({})),
        ];
        let mut idx = PayloadIndex::default();
        let existing = || payloads.iter().enumerate().map(|(i, p)| (i as u32, p));
        idx.create_field("c", PayloadSchemaType::Keyword, existing());
        idx.create_field("n", PayloadSchemaType::Integer, existing());
        idx.create_field("x", PayloadSchemaType::Float, existing());
        idx.create_field("b", PayloadSchemaType::Bool, existing());
        assert_eq!(idx.fields().len(), 4);
        fn c_of(idx: &PayloadIndex, v: Value) -> Option<Vec<u32>> {
            idx.candidates(&f(v))
        }
        assert_eq!(
            c_of(&idx, cond(json!({"key": "c", "match": {"value": "red"}}))),
            Some(vec![0, 1])
        );
        assert_eq!(
            c_of(
                &idx,
                cond(json!({"key": "c", "match": {"any": ["blue", "green"]}}))
            ),
            Some(vec![1, 2])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "n", "match": {"value": 3}}))),
            Some(vec![1])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "n", "range": {"gte": 3}}))),
            Some(vec![1, 2])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "n", "range": {"lt": 2}}))),
            Some(vec![0])
        );
        assert_eq!(
            c_of(
                &idx,
                cond(json!({"key": "n", "range": {"gt": 1, "lte": 2}}))
            ),
            Some(vec![1])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "x", "range": {"lt": 0}}))),
            Some(vec![1])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "x", "range": {"gt": 1, "lt": 0}}))),
            Some(vec![])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "b", "match": {"value": false}}))),
            Some(vec![2])
        );
        assert_eq!(
            c_of(
                &idx,
                json!({"must": [{"key": "c", "match": {"value": "blue"}}, {"must": [{"key": "n", "range": {"lt": 3}}]}]})
            ),
            Some(vec![1])
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "c", "match": {"text": "re"}}))),
            None
        );
        assert_eq!(
            c_of(
                &idx,
                json!({"should": [{"key": "c", "match": {"value": "red"}}]})
            ),
            None
        );
        assert_eq!(
            c_of(&idx, cond(json!({"key": "zz", "match": {"value": "red"}}))),
            None
        );
        idx.remove(1, &payloads[1]);
        assert_eq!(
            c_of(&idx, cond(json!({"key": "c", "match": {"value": "red"}}))),
            Some(vec![0])
        );
        idx.add(7, &payloads[1]);
        assert_eq!(
            c_of(&idx, cond(json!({"key": "c", "match": {"value": "red"}}))),
            Some(vec![0, 7])
        );
        idx.drop_field("c");
        assert_eq!(
            c_of(&idx, cond(json!({"key": "c", "match": {"value": "red"}}))),
            None
        );
        assert_eq!(idx.fields().len(), 3);
    }

    // -----------------------------------------------------------------------
    // Property tests: `matches` against a straightforward reference evaluator,
    // and the candidate superset/exactness properties of the index.
    // -----------------------------------------------------------------------

    use proptest::prelude::*;

    const KEYS: &[(&str, PayloadSchemaType)] = &[
        ("kw", PayloadSchemaType::Keyword),
        ("int", PayloadSchemaType::Integer),
        ("flt", PayloadSchemaType::Float),
        ("flag", PayloadSchemaType::Bool),
        ("obj.kw", PayloadSchemaType::Keyword),
        ("objs.int", PayloadSchemaType::Integer),
    ];
    const WORDS: &[&str] = &["red", "green", "blue", "light red"];

    /// Test-side filter model, turned into Qdrant JSON for the parser.
    #[derive(Debug, Clone)]
    enum TC {
        Eq(&'static str, Value),
        Any(&'static str, Vec<Value>),
        Except(&'static str, Vec<Value>),
        Text(&'static str, String),
        Range(&'static str, [Option<f64>; 4]),
        Count(&'static str, [Option<usize>; 4]),
        IsNull(&'static str),
        IsEmpty(&'static str),
        HasId(Vec<u64>),
        Sub(Box<TF>),
    }

    #[derive(Debug, Clone)]
    struct TF {
        must: Vec<TC>,
        should: Vec<TC>,
        must_not: Vec<TC>,
        min: Option<(Vec<TC>, usize)>,
    }

    fn bounds_json<T: Serialize>(b: &[Option<T>; 4]) -> Value {
        let mut o = serde_json::Map::new();
        for (name, x) in ["gt", "gte", "lt", "lte"].iter().zip(b) {
            if let Some(x) = x {
                o.insert(name.to_string(), json!(x));
            }
        }
        Value::Object(o)
    }

    fn tc_json(c: &TC) -> Value {
        match c {
            TC::Eq(k, v) => json!({"key": k, "match": {"value": v}}),
            TC::Any(k, l) => json!({"key": k, "match": {"any": l}}),
            TC::Except(k, l) => json!({"key": k, "match": {"except": l}}),
            TC::Text(k, t) => json!({"key": k, "match": {"text": t}}),
            TC::Range(k, b) => json!({"key": k, "range": bounds_json(b)}),
            TC::Count(k, b) => json!({"key": k, "values_count": bounds_json(b)}),
            TC::IsNull(k) => json!({"is_null": {"key": k}}),
            TC::IsEmpty(k) => json!({"is_empty": {"key": k}}),
            TC::HasId(ids) => json!({"has_id": ids}),
            TC::Sub(f) => tf_json(f),
        }
    }

    fn tf_json(f: &TF) -> Value {
        let list = |l: &[TC]| Value::Array(l.iter().map(tc_json).collect());
        let mut o = json!({"must": list(&f.must), "should": list(&f.should), "must_not": list(&f.must_not)});
        if let Some((conds, n)) = &f.min {
            o["min_should"] = json!({"conditions": list(conds), "min_count": n});
        }
        o
    }

    /// The values stored under one of the test keys, written out per key.
    fn ref_terminals(p: &Payload, key: &str) -> Vec<Value> {
        match key {
            "obj.kw" => p
                .get("obj")
                .and_then(|o| o.get("kw"))
                .cloned()
                .into_iter()
                .collect(),
            "objs.int" => match p.get("objs") {
                Some(Value::Array(items)) => {
                    items.iter().filter_map(|o| o.get("int").cloned()).collect()
                }
                _ => Vec::new(),
            },
            k => p.get(k).cloned().into_iter().collect(),
        }
    }

    fn ref_leaves(p: &Payload, key: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for t in ref_terminals(p, key) {
            match t {
                Value::Array(items) => out.extend(items),
                other => out.push(other),
            }
        }
        out
    }

    fn ref_eq(stored: &Value, wanted: &Value) -> bool {
        match (stored, wanted) {
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a.is_i64() && a.as_i64() == b.as_i64(),
            _ => false,
        }
    }

    fn in_bounds<T: PartialOrd + Copy>(x: T, b: &[Option<T>; 4]) -> bool {
        let [gt, gte, lt, lte] = *b;
        !(gt.is_some_and(|v| x <= v)
            || gte.is_some_and(|v| x < v)
            || lt.is_some_and(|v| x >= v)
            || lte.is_some_and(|v| x > v))
    }

    fn ref_cond(c: &TC, id: u64, p: &Payload) -> bool {
        match c {
            TC::Eq(k, v) => ref_leaves(p, k).iter().any(|l| ref_eq(l, v)),
            TC::Any(k, list) => ref_leaves(p, k)
                .iter()
                .any(|l| list.iter().any(|v| ref_eq(l, v))),
            TC::Except(k, list) => {
                let present: Vec<Value> = ref_leaves(p, k)
                    .into_iter()
                    .filter(|l| !l.is_null())
                    .collect();
                present.is_empty() || present.iter().any(|l| !list.iter().any(|v| ref_eq(l, v)))
            }
            TC::Text(k, t) => ref_leaves(p, k)
                .iter()
                .any(|l| matches!(l, Value::String(s) if s.contains(t.as_str()))),
            TC::Range(k, b) => ref_leaves(p, k)
                .iter()
                .any(|l| matches!(l, Value::Number(n) if in_bounds(n.as_f64().unwrap(), b))),
            TC::Count(k, b) => {
                let mut n = 0usize;
                for t in ref_terminals(p, k) {
                    n += match t {
                        Value::Array(a) => a.len(),
                        Value::Null => 0,
                        _ => 1,
                    };
                }
                in_bounds(n, b)
            }
            TC::IsNull(k) => ref_terminals(p, k).contains(&Value::Null),
            TC::IsEmpty(k) => ref_leaves(p, k).iter().all(|l| *l == Value::Null),
            TC::HasId(ids) => ids.contains(&id),
            TC::Sub(f) => ref_filter(f, id, p),
        }
    }

    fn ref_filter(f: &TF, id: u64, p: &Payload) -> bool {
        let n_true = |l: &[TC]| l.iter().filter(|c| ref_cond(c, id, p)).count();
        n_true(&f.must) == f.must.len()
            && (f.should.is_empty() || n_true(&f.should) > 0)
            && n_true(&f.must_not) == 0
            && f.min.as_ref().is_none_or(|(l, n)| n_true(l) >= *n)
    }

    /// A condition the index answers exactly.
    fn indexed(c: &TC) -> bool {
        match c {
            TC::Eq(k, v) => matches!(
                (*k, v),
                ("kw" | "obj.kw", Value::String(_))
                    | ("int" | "objs.int", Value::Number(_))
                    | ("flag", Value::Bool(_))
            ),
            TC::Any(k, l) => match *k {
                "kw" | "obj.kw" => l.iter().all(Value::is_string),
                "int" | "objs.int" => l.iter().all(Value::is_number),
                _ => false,
            },
            TC::Range(k, _) => matches!(*k, "int" | "flt" | "objs.int"),
            _ => false,
        }
    }

    fn field(scalar: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
        let elem = prop_oneof![4 => scalar.clone(), 1 => Just(Value::Null)];
        prop_oneof![
            2 => Just(None),
            1 => Just(Some(Value::Null)),
            4 => scalar.prop_map(Some),
            2 => prop::collection::vec(elem, 0..3).prop_map(|v| Some(Value::Array(v))),
        ]
        .boxed()
    }

    /// Integers in 0..100, mostly small so that conditions hit often.
    fn int_value() -> BoxedStrategy<i64> {
        prop_oneof![3 => 0i64..8, 1 => 0i64..100].boxed()
    }

    fn word() -> BoxedStrategy<Value> {
        prop::sample::select(WORDS).prop_map(|w| json!(w)).boxed()
    }

    fn payload_strategy() -> impl Strategy<Value = Payload> {
        let kw = prop_oneof![5 => word(), 1 => (0i64..3).prop_map(|i| json!(i))].boxed();
        let int =
            prop_oneof![6 => int_value().prop_map(|i| json!(i)), 1 => Just(json!(2.5))].boxed();
        let flt = prop_oneof![4 => (-5.0f64..5.0).prop_map(|x| json!(x)), 1 => (-5i64..5).prop_map(|i| json!(i))].boxed();
        let flag = any::<bool>().prop_map(|b| json!(b)).boxed();
        let obj = prop::option::of(field(kw.clone()));
        let objs = prop::option::of(prop::collection::vec(field(int.clone()), 0..3));
        (field(kw), field(int), field(flt), field(flag), obj, objs).prop_map(
            |(kw, int, flt, flag, obj, objs)| {
                let mut p = Payload::new();
                for (k, v) in [("kw", kw), ("int", int), ("flt", flt), ("flag", flag)] {
                    if let Some(v) = v {
                        p.insert(k.into(), v);
                    }
                }
                if let Some(o) = obj {
                    let mut m = serde_json::Map::new();
                    if let Some(v) = o {
                        m.insert("kw".into(), v);
                    }
                    p.insert("obj".into(), Value::Object(m));
                }
                if let Some(items) = objs {
                    let arr = items
                        .into_iter()
                        .map(|v| match v {
                            Some(v) => json!({"int": v, "other": 1}),
                            None => json!({"other": 1}),
                        })
                        .collect();
                    p.insert("objs".into(), Value::Array(arr));
                }
                p
            },
        )
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>())
    }

    fn scalar() -> BoxedStrategy<Value> {
        prop_oneof![
            word(),
            int_value().prop_map(|i| json!(i)),
            any::<bool>().prop_map(|b| json!(b))
        ]
        .boxed()
    }

    fn value_list() -> BoxedStrategy<Vec<Value>> {
        prop_oneof![
            prop::collection::vec(word(), 0..3),
            prop::collection::vec(int_value().prop_map(|i| json!(i)), 0..4),
        ]
        .boxed()
    }

    fn leaf() -> BoxedStrategy<TC> {
        let fbound = prop::option::of(prop_oneof![
            int_value().prop_map(|i| i as f64),
            -5.0f64..5.0,
            (-5i64..5).prop_map(|i| i as f64),
        ]);
        let ubound = prop::option::of(0usize..4);
        prop_oneof![
            4 => (key(), scalar()).prop_map(|(k, v)| TC::Eq(k, v)),
            2 => (key(), value_list()).prop_map(|(k, l)| TC::Any(k, l)),
            2 => (key(), value_list()).prop_map(|(k, l)| TC::Except(k, l)),
            1 => (key(), prop::sample::select(vec!["re", "red", "light", "x"]))
                .prop_map(|(k, t)| TC::Text(k, t.to_string())),
            4 => (key(), [fbound.clone(), fbound.clone(), fbound.clone(), fbound])
                .prop_filter("a bound", |(_, b)| b.iter().any(Option::is_some))
                .prop_map(|(k, b)| TC::Range(k, b)),
            1 => (key(), [ubound.clone(), ubound.clone(), ubound.clone(), ubound])
                .prop_filter("a bound", |(_, b)| b.iter().any(Option::is_some))
                .prop_map(|(k, b)| TC::Count(k, b)),
            1 => key().prop_map(TC::IsNull),
            1 => key().prop_map(TC::IsEmpty),
            1 => prop::collection::vec(0u64..30, 0..4).prop_map(TC::HasId),
        ]
        .boxed()
    }

    fn tf(c: BoxedStrategy<TC>) -> BoxedStrategy<TF> {
        (
            prop::collection::vec(c.clone(), 0..4),
            prop::collection::vec(c.clone(), 0..3),
            prop::collection::vec(c.clone(), 0..2),
            prop::option::weighted(0.2, (prop::collection::vec(c, 0..4), 0usize..3)),
        )
            .prop_map(|(must, should, must_not, min)| TF {
                must,
                should,
                must_not,
                min,
            })
            .boxed()
    }

    fn filter_strategy() -> BoxedStrategy<TF> {
        let cond = leaf().prop_recursive(2, 24, 4, |inner| {
            tf(inner).prop_map(|f| TC::Sub(Box::new(f))).boxed()
        });
        tf(cond.boxed())
    }

    /// Filters made only of indexed must-conditions, for the exactness check.
    fn indexed_filter_strategy() -> BoxedStrategy<TF> {
        let word_key = prop::sample::select(vec!["kw", "obj.kw"]);
        let int_key = prop::sample::select(vec!["int", "objs.int"]);
        let num = int_value().prop_map(|i| json!(i));
        let fbound = prop::option::of(prop_oneof![
            int_value().prop_map(|i| i as f64),
            -5.0f64..5.0,
        ]);
        let c = prop_oneof![
            (word_key.clone(), word()).prop_map(|(k, v)| TC::Eq(k, v)),
            (int_key.clone(), num.clone()).prop_map(|(k, v)| TC::Eq(k, v)),
            any::<bool>().prop_map(|b| TC::Eq("flag", json!(b))),
            (word_key, prop::collection::vec(word(), 0..3)).prop_map(|(k, l)| TC::Any(k, l)),
            (int_key, prop::collection::vec(num, 1..4)).prop_map(|(k, l)| TC::Any(k, l)),
            (
                prop::sample::select(vec!["int", "flt", "objs.int"]),
                [fbound.clone(), fbound.clone(), fbound.clone(), fbound],
            )
                .prop_filter("a bound", |(_, b)| b.iter().any(Option::is_some))
                .prop_map(|(k, b)| TC::Range(k, b)),
        ]
        .prop_filter("indexed", indexed)
        .boxed();
        prop::collection::vec(c, 1..3)
            .prop_map(|must| TF {
                must,
                should: vec![],
                must_not: vec![],
                min: None,
            })
            .boxed()
    }

    fn check_case(payloads: &[Payload], tf: &TF) -> Result<(), TestCaseError> {
        let json = tf_json(tf);
        let filter =
            Filter::from_json(&json).map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
        let expected: Vec<u32> = (0..payloads.len() as u32)
            .filter(|&i| ref_filter(tf, i as u64, &payloads[i as usize]))
            .collect();
        for (i, p) in payloads.iter().enumerate() {
            prop_assert_eq!(
                filter.matches(&PointId::Num(i as u64), p),
                ref_filter(tf, i as u64, p),
                "filter {} on payload {}",
                json,
                Value::Object(p.clone())
            );
        }
        let exact = !tf.must.is_empty()
            && tf.should.is_empty()
            && tf.must_not.is_empty()
            && tf.min.is_none()
            && tf.must.iter().all(indexed);

        // An index built over existing points.
        let mut idx = PayloadIndex::default();
        for (k, schema) in KEYS {
            let existing = payloads.iter().enumerate().map(|(i, p)| (i as u32, p));
            idx.create_field(k, *schema, existing);
        }
        if let Some(c) = idx.candidates(&filter) {
            prop_assert!(c.windows(2).all(|w| w[0] < w[1]), "sorted {:?}", c);
            for o in &expected {
                prop_assert!(c.contains(o), "{} missing from {:?} for {}", o, c, json);
            }
            if exact {
                prop_assert_eq!(&c, &expected, "exact candidates for {}", json);
            }
        } else {
            prop_assert!(!exact, "no candidates for indexed filter {}", json);
        }

        // An index maintained by add/remove: every third point removed.
        let mut idx2 = PayloadIndex::default();
        for (k, schema) in KEYS {
            idx2.create_field(k, *schema, std::iter::empty());
        }
        for (i, p) in payloads.iter().enumerate() {
            idx2.add(i as u32, p);
        }
        for (i, p) in payloads.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            idx2.remove(i as u32, p);
        }
        let live: Vec<u32> = expected.iter().copied().filter(|o| o % 3 != 0).collect();
        if let Some(c) = idx2.candidates(&filter) {
            prop_assert!(c.iter().all(|o| o % 3 != 0), "removed offsets in {:?}", c);
            for o in &live {
                prop_assert!(c.contains(o), "{} missing from {:?} for {}", o, c, json);
            }
            if exact {
                prop_assert_eq!(&c, &live, "exact candidates for {}", json);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn matches_agrees_with_reference_and_index_is_a_superset(
            payloads in prop::collection::vec(payload_strategy(), 0..24),
            tf in filter_strategy(),
        ) {
            check_case(&payloads, &tf)?;
        }

        #[test]
        fn indexed_must_conditions_give_exact_candidates(
            payloads in prop::collection::vec(payload_strategy(), 0..24),
            tf in indexed_filter_strategy(),
        ) {
            check_case(&payloads, &tf)?;
        }
    }
}
