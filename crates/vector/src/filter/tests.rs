//! Tests of filters and payload indexes.
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
    let trex = dino(json!([{"food": "leaves", "likes": false}, {"food": "meat", "likes": true}]));
    let diplo = dino(json!([{"food": "leaves", "likes": true}, {"food": "meat", "likes": false}]));
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
    let e = bad(json!({"must": [{"nested": {"key": "d", "filter": {"must": [{"has_id": [1]}]}}}]}));
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
    let mut o =
        json!({"must": list(&f.must), "should": list(&f.should), "must_not": list(&f.must_not)});
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
    let int = prop_oneof![6 => int_value().prop_map(|i| json!(i)), 1 => Just(json!(2.5))].boxed();
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
