//! Filtered search against brute force, over random filters: every hit
//! matches, scores are right, counts are exact, and the hits are the true
//! nearest matching points (all of them when the search is exact, nearly
//! all when it walks the graph).

use std::sync::OnceLock;

use neocloud_vector::filter::{Filter, PayloadSchemaType};
use neocloud_vector::{
    Collection, CollectionConfig, Distance, PointId, PointStruct, SearchRequest,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const N: u64 = 5_000;
const DIM: usize = 8;
const KEYWORDS: [&str; 5] = ["red", "green", "blue", "cyan", "pink"];

struct Data {
    _dir: tempfile::TempDir,
    plain: Collection,
    indexed: Collection,
    points: Vec<PointStruct>,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let points: Vec<PointStruct> = (0..N)
            .map(|id| {
                let mut payload = json!({
                    "k": KEYWORDS[rng.random_range(0..KEYWORDS.len())],
                    "n": rng.random_range(0..100),
                    "f": rng.random_range(0.0..1.0),
                    "b": rng.random_bool(0.5),
                });
                if rng.random_bool(0.1) {
                    payload["k"] = Value::Null;
                }
                if rng.random_bool(0.1) {
                    payload.as_object_mut().unwrap().remove("n");
                }
                if rng.random_bool(0.1) {
                    payload["k"] =
                        json!([KEYWORDS[id as usize % 5], KEYWORDS[(id as usize + 2) % 5]]);
                }
                PointStruct {
                    id: PointId::Num(id),
                    vector: (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect(),
                    payload: payload.as_object().cloned().unwrap(),
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let config = CollectionConfig {
            dim: DIM,
            distance: Distance::Cosine,
            hnsw: Default::default(),
            embed: None,
            quantization: None,
        };
        let plain = Collection::create(&dir.path().join("plain"), config.clone()).unwrap();
        let indexed = Collection::create(&dir.path().join("indexed"), config).unwrap();
        for c in [&plain, &indexed] {
            for chunk in points.chunks(1000) {
                c.upsert(chunk.to_vec()).unwrap();
            }
        }
        indexed
            .create_field_index("k", PayloadSchemaType::Keyword)
            .unwrap();
        indexed
            .create_field_index("n", PayloadSchemaType::Integer)
            .unwrap();
        Data {
            _dir: dir,
            plain,
            indexed,
            points,
        }
    })
}

fn condition() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..KEYWORDS.len()).prop_map(|i| json!({"key": "k", "match": {"value": KEYWORDS[i]}})),
        proptest::collection::vec(0..KEYWORDS.len(), 1..3).prop_map(|v| {
            let any: Vec<&str> = v.into_iter().map(|i| KEYWORDS[i]).collect();
            json!({"key": "k", "match": {"any": any}})
        }),
        (0..100i64, 0..60i64)
            .prop_map(|(lo, w)| json!({"key": "n", "range": {"gte": lo, "lt": lo + w}})),
        (0.0..1.0f64).prop_map(|x| json!({"key": "f", "range": {"gt": x}})),
        any::<bool>().prop_map(|b| json!({"key": "b", "match": {"value": b}})),
        Just(json!({"is_null": {"key": "k"}})),
        Just(json!({"is_empty": {"key": "n"}})),
        proptest::collection::vec(0..N, 1..50).prop_map(|ids| json!({"has_id": ids})),
    ]
}

fn filter() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(condition(), 0..3),
        proptest::collection::vec(condition(), 0..3),
        proptest::collection::vec(condition(), 0..2),
    )
        .prop_map(|(must, should, must_not)| json!({"must": must, "should": should, "must_not": must_not}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn filtered_search_matches_brute_force(f in filter(), q in proptest::collection::vec(-1.0f32..1.0, DIM)) {
        let d = data();
        let filter = Filter::from_json(&f).unwrap();
        let matching: Vec<&PointStruct> = d.points.iter().filter(|p| filter.matches(&p.id, &p.payload)).collect();
        // Brute force, by cosine on normalised vectors.
        let norm = |v: &[f32]| { let n = v.iter().map(|x| x * x).sum::<f32>().sqrt(); v.iter().map(|x| x / n).collect::<Vec<f32>>() };
        let qn = norm(&q);
        let mut truth: Vec<(f32, PointId)> = matching.iter().map(|p| {
            let v = norm(&p.vector);
            (v.iter().zip(&qn).map(|(a, b)| a * b).sum::<f32>(), p.id)
        }).collect();
        truth.sort_by(|a, b| b.0.total_cmp(&a.0));
        truth.truncate(10);
        for c in [&d.plain, &d.indexed] {
            prop_assert_eq!(c.count(Some(&filter)), matching.len());
            let hits = c.search(&SearchRequest { vector: q.clone(), limit: 10, filter: Some(filter.clone()), ..Default::default() }).unwrap();
            prop_assert_eq!(hits.len(), truth.len());
            for h in &hits {
                let p = &d.points[match h.id { PointId::Num(n) => n as usize, _ => unreachable!() }];
                prop_assert!(filter.matches(&p.id, &p.payload), "hit {} does not match", h.id);
            }
            prop_assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            let found = hits.iter().filter(|h| truth.iter().any(|t| t.1 == h.id)).count();
            // The graph is approximate: allow one miss in ten.
            prop_assert!(found + 1 >= truth.len(), "recall {found}/{} for {f}", truth.len());
            let exact = c.search(&SearchRequest { vector: q.clone(), limit: 10, filter: Some(filter.clone()), exact: true, ..Default::default() }).unwrap();
            let mut exact_ids: Vec<PointId> = exact.iter().map(|h| h.id).collect();
            let mut truth_ids: Vec<PointId> = truth.iter().map(|t| t.1).collect();
            exact_ids.sort();
            truth_ids.sort();
            prop_assert_eq!(exact_ids, truth_ids);
        }
    }
}
