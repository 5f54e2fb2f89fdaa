//! Parsing Qdrant filter JSON, with errors that name the bad part.

use super::*;

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
