//! Payload indexes: candidate offsets for a filter's indexed must-conditions.

use super::*;

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
