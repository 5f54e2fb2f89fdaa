//! Hierarchical navigable small world graph (Malkov & Yashunin) over the
//! vectors of a [`VectorStore`], addressed by offset.
//!
//! Layout: every offset up to the largest inserted one owns a fixed-size
//! layer-0 slot (`1 + 2m` words: a count, then the links) in one flat
//! buffer; nodes on higher layers also own `level * (1 + m)` words in a
//! second buffer. Links are atomics so that `insert_batch` can add nodes
//! from several threads at once: a writer changes a node's list only while
//! holding that node's (striped) lock, writes the links before publishing
//! the count, and lists only ever grow, so a reader always sees ids of
//! nodes that are already in the graph.
//!
//! Filtered search walks the whole graph (rejected offsets included) but
//! only accepted offsets enter the result beam, so the beam's bound stays
//! loose until `ef` accepted offsets are found and a selective filter does
//! not strand the search.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering as AtomicOrdering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Distance, VectorStore};

/// HNSW build parameters (Qdrant's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers; layer 0 keeps up to `2 * m`.
    pub m: usize,
    /// Beam width while building.
    pub ef_construct: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construct: 100,
        }
    }
}

/// Marks an offset that is not in the graph.
const ABSENT: u8 = u8::MAX;
/// Highest level a node may draw (keeps `level` well below `ABSENT`).
const MAX_LEVEL: u8 = 32;
/// Striped locks guarding neighbour lists during parallel inserts.
const LOCK_STRIPES: usize = 1024;
/// `insert_batch` adds nodes serially until the graph holds this many.
const SERIAL_PREFIX: usize = 256;

/// A candidate: distance to the query, then offset (ties by offset).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cand {
    dist: f32,
    id: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A reusable visited set: a slot holds the generation that last saw it.
struct Visited {
    stamps: Vec<u32>,
    generation: u32,
}

impl Visited {
    fn new(n: usize) -> Self {
        Visited {
            stamps: vec![0; n],
            generation: 0,
        }
    }

    /// Starts a new pass over a graph of `n` offsets.
    fn reset(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
    }

    /// Marks `id`; true when it was not yet visited in this pass.
    #[inline]
    fn insert(&mut self, id: u32) -> bool {
        let slot = &mut self.stamps[id as usize];
        if *slot == self.generation {
            false
        } else {
            *slot = self.generation;
            true
        }
    }
}

/// The entry point: the node on the highest layer, and that layer.
type Entry = Option<(u32, u8)>;

/// An HNSW index over offsets of a [`VectorStore`].
pub struct Hnsw {
    distance: Distance,
    params: HnswParams,
    /// Link capacity on layer 0 (`2m`) and above (`m`).
    m0: usize,
    m_up: usize,
    /// Per offset: its top layer, or `ABSENT`.
    levels: Vec<u8>,
    /// Per offset: `1 + m0` words (count, links) for layer 0.
    links0: Vec<AtomicU32>,
    /// Per offset: start of its upper-layer lists in `upper` (level >= 1).
    upper_start: Vec<u32>,
    /// Per upper-layer node: `level` lists of `1 + m_up` words each.
    upper: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
    entry: Entry,
    count: usize,
    rng: StdRng,
    /// Visited sets kept for searches through `&self`.
    pool: Mutex<Vec<Visited>>,
}

impl fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hnsw")
            .field("distance", &self.distance)
            .field("params", &self.params)
            .field("len", &self.count)
            .field("entry", &self.entry)
            .finish()
    }
}

impl Hnsw {
    pub fn new(distance: Distance, params: HnswParams) -> Hnsw {
        let m = params.m.max(2);
        let seed = 0x6e65_6f63_6c6f_7564u64 ^ ((m as u64) << 32) ^ params.ef_construct as u64;
        Hnsw {
            distance,
            params,
            m0: 2 * m,
            m_up: m,
            levels: Vec::new(),
            links0: Vec::new(),
            upper_start: Vec::new(),
            upper: Vec::new(),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            entry: None,
            count: 0,
            rng: StdRng::seed_from_u64(seed),
            pool: Mutex::new(Vec::new()),
        }
    }

    pub fn distance(&self) -> Distance {
        self.distance
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Number of offsets in the graph.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `offset` is in the graph.
    pub fn contains(&self, offset: u32) -> bool {
        self.levels
            .get(offset as usize)
            .is_some_and(|&l| l != ABSENT)
    }

    /// Adds `offset` (its vector is `vectors.get(offset)`) to the graph.
    /// Offsets are inserted in increasing order but may skip values;
    /// inserting an offset twice is a caller bug (debug_assert).
    pub fn insert(&mut self, vectors: &VectorStore, offset: u32) {
        debug_assert!(!self.contains(offset), "offset {offset} inserted twice");
        if self.contains(offset) {
            return;
        }
        let level = self.prepare(offset);
        let entry = Mutex::new(self.entry);
        let mut visited = self.take_visited();
        self.insert_prepared(vectors, offset, level, &entry, &mut visited);
        self.give_visited(visited);
        self.entry = entry.into_inner().unwrap_or_else(|e| e.into_inner());
    }

    /// Adds many offsets, using `threads` threads (1 = serial). The graph
    /// has the same quality as one built by serial inserts.
    pub fn insert_batch(&mut self, vectors: &VectorStore, offsets: &[u32], threads: usize) {
        // Levels are drawn serially, in order, so they match serial inserts.
        let mut todo = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            debug_assert!(!self.contains(offset), "offset {offset} inserted twice");
            if self.contains(offset) {
                continue;
            }
            todo.push((offset, self.prepare(offset)));
        }
        let entry = Mutex::new(self.entry);
        let this = &*self;
        let mut visited = this.take_visited();
        let serial = if threads <= 1 {
            todo.len()
        } else {
            SERIAL_PREFIX.saturating_sub(this.count).min(todo.len())
        };
        for &(offset, level) in &todo[..serial] {
            this.insert_prepared(vectors, offset, level, &entry, &mut visited);
        }
        this.give_visited(visited);
        let rest = &todo[serial..];
        if !rest.is_empty() {
            let next = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..threads.min(rest.len()) {
                    s.spawn(|| {
                        let mut visited = Visited::new(this.levels.len());
                        loop {
                            let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                            let Some(&(offset, level)) = rest.get(i) else {
                                break;
                            };
                            this.insert_prepared(vectors, offset, level, &entry, &mut visited);
                        }
                    });
                }
            });
        }
        self.entry = entry.into_inner().unwrap_or_else(|e| e.into_inner());
    }

    /// The `k` offsets closest to `query` (already `Distance::prepare`d)
    /// among those `accept` takes, as (offset, dist) sorted by dist
    /// ascending (ties by offset), with beam width `max(ef, k)`. Rejected
    /// offsets are traversed but never returned. May return fewer than `k`
    /// when few accepted offsets are reachable.
    pub fn search(
        &self,
        vectors: &VectorStore,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let dist = |id: u32| self.distance.dist(query, vectors.get(id));
        self.search_by(&dist, k, ef, accept)
    }

    /// [`Hnsw::search`] with the query's distance to an offset given by
    /// `dist`, e.g. an approximate one over quantized codes.
    pub fn search_by(
        &self,
        dist: &impl Fn(u32) -> f32,
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let Some((ep, top)) = self.entry else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let mut visited = self.take_visited();
        let mut eps = vec![Cand {
            dist: dist(ep),
            id: ep,
        }];
        for layer in (1..=top as usize).rev() {
            eps = self.search_layer(dist, &eps, 1, layer, &mut visited, None);
        }
        let found = self.search_layer(dist, &eps, ef, 0, &mut visited, Some(accept));
        self.give_visited(visited);
        found.into_iter().take(k).map(|c| (c.id, c.dist)).collect()
    }

    // ---- building -------------------------------------------------------

    /// Draws `offset`'s level and makes room for its lists (needs `&mut`).
    fn prepare(&mut self, offset: u32) -> u8 {
        let ml = 1.0 / (self.m_up as f64).ln();
        let u: f64 = self.rng.random::<f64>();
        let level = (-(1.0 - u).ln() * ml).floor().min(MAX_LEVEL as f64) as u8;
        let need = offset as usize + 1;
        if self.levels.len() < need {
            self.levels.resize(need, ABSENT);
            self.upper_start.resize(need, u32::MAX);
            self.links0
                .resize_with(need * (1 + self.m0), || AtomicU32::new(0));
        }
        if level > 0 {
            let start = self.upper.len();
            assert!(start < u32::MAX as usize, "HNSW upper layers overflow");
            self.upper_start[offset as usize] = start as u32;
            self.upper
                .resize_with(start + level as usize * (1 + self.m_up), || {
                    AtomicU32::new(0)
                });
        }
        self.levels[offset as usize] = level;
        self.count += 1;
        level
    }

    /// Links a prepared node into the graph; safe to run from several
    /// threads at once for different nodes.
    fn insert_prepared(
        &self,
        vectors: &VectorStore,
        offset: u32,
        level: u8,
        entry: &Mutex<Entry>,
        visited: &mut Visited,
    ) {
        let current = {
            let mut e = entry.lock().unwrap_or_else(|e| e.into_inner());
            match *e {
                None => {
                    *e = Some((offset, level));
                    return;
                }
                Some(cur) => cur,
            }
        };
        let (ep, top) = current;
        let query = vectors.get(offset);
        let dist = |id: u32| self.distance.dist(query, vectors.get(id));
        let mut eps = vec![Cand {
            dist: dist(ep),
            id: ep,
        }];
        for layer in (level as usize + 1..=top as usize).rev() {
            eps = self.search_layer(&dist, &eps, 1, layer, visited, None);
        }
        let ef = self.params.ef_construct.max(self.m0);
        for layer in (0..=level.min(top) as usize).rev() {
            let found = self.search_layer(&dist, &eps, ef, layer, visited, None);
            let cap = self.cap(layer);
            let chosen = {
                let _guard = self.lock(offset);
                let slots = self.slots(offset, layer);
                // Another thread may have linked to this node already (it can
                // reach it from a layer above): keep those links as candidates.
                let n = slots[0].load(AtomicOrdering::Acquire) as usize;
                let chosen = if n == 0 {
                    self.select(vectors, offset, None, &found, cap)
                } else {
                    let mut cands = found.clone();
                    for s in &slots[1..=n] {
                        let id = s.load(AtomicOrdering::Relaxed);
                        if !cands.iter().any(|c| c.id == id) {
                            let dist = self.distance.dist(query, vectors.get(id));
                            cands.push(Cand { dist, id });
                        }
                    }
                    self.select(vectors, offset, None, &cands, cap)
                };
                write_links(slots, &chosen);
                chosen
            };
            for &n in &chosen {
                self.link_back(vectors, n, offset, layer);
            }
            eps = found;
        }
        if level > top {
            let mut e = entry.lock().unwrap_or_else(|e| e.into_inner());
            if e.is_none_or(|(_, t)| level > t) {
                *e = Some((offset, level));
            }
        }
    }

    /// Adds `new` to `node`'s list on `layer`, pruning with the heuristic
    /// when the list is full.
    fn link_back(&self, vectors: &VectorStore, node: u32, new: u32, layer: usize) {
        let _guard = self.lock(node);
        let slots = self.slots(node, layer);
        let n = slots[0].load(AtomicOrdering::Acquire) as usize;
        let current: Vec<u32> = slots[1..=n]
            .iter()
            .map(|s| s.load(AtomicOrdering::Relaxed))
            .collect();
        if current.contains(&new) {
            return;
        }
        let cap = self.cap(layer);
        if n < cap {
            slots[1 + n].store(new, AtomicOrdering::Relaxed);
            slots[0].store(n as u32 + 1, AtomicOrdering::Release);
            return;
        }
        let base = vectors.get(node);
        let cands: Vec<Cand> = current
            .iter()
            .chain(std::iter::once(&new))
            .map(|&id| Cand {
                dist: self.distance.dist(base, vectors.get(id)),
                id,
            })
            .collect();
        let chosen = self.select(vectors, node, Some(new), &cands, cap);
        write_links(slots, &chosen);
    }

    /// The neighbour-selection heuristic: walking candidates from the
    /// closest, keep one only if it is closer to the base than to every
    /// neighbour kept so far. `cands` is sorted by distance to the base.
    ///
    /// Equal distances (duplicate vectors) are ordered first by `favour`
    /// (the node being linked in, so a full list of duplicates still takes
    /// the newcomer), then by a hash of (base, candidate) rather than by
    /// offset: with offset order every node would link to the same few
    /// oldest duplicates and later ones would become unreachable.
    fn select(
        &self,
        vectors: &VectorStore,
        base: u32,
        favour: Option<u32>,
        cands: &[Cand],
        cap: usize,
    ) -> Vec<u32> {
        let mut order: Vec<Cand> = cands.to_vec();
        order.sort_unstable_by(|a, b| {
            a.dist
                .total_cmp(&b.dist)
                .then_with(|| (Some(b.id) == favour).cmp(&(Some(a.id) == favour)))
                .then_with(|| mix(base, a.id).cmp(&mix(base, b.id)))
        });
        let base_vec = vectors.get(base);
        let mut kept: Vec<u32> = Vec::with_capacity(cap);
        for c in &order {
            if kept.len() >= cap {
                break;
            }
            let v = vectors.get(c.id);
            let diverse = kept.iter().all(|&s| {
                let sv = vectors.get(s);
                let d = self.distance.dist(v, sv);
                // Exact ties only arise with duplicate vectors: a copy of a
                // kept neighbour is redundant, but a kept copy of the base
                // hides nothing (otherwise a group of duplicates would
                // prune every link leaving the group).
                d > c.dist || (d == c.dist && v != sv && sv == base_vec)
            });
            if diverse {
                kept.push(c.id);
            }
        }
        // The pruned candidates are dropped, not used to fill the list up
        // (as hnswlib and faiss do): full lists made every back-link re-run
        // this heuristic over 2m + 1 candidates, and building took twice
        // as long for the same queries/s at a given recall.
        kept
    }

    // ---- searching ------------------------------------------------------

    /// Beam search on one layer from `eps`; returns up to `ef` nodes (only
    /// accepted ones when `accept` is given), closest first.
    fn search_layer(
        &self,
        dist_to: &impl Fn(u32) -> f32,
        eps: &[Cand],
        ef: usize,
        layer: usize,
        visited: &mut Visited,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Cand> {
        visited.reset(self.levels.len());
        let ok = |id: u32| accept.is_none_or(|f| f(id));
        let mut frontier: BinaryHeap<Reverse<Cand>> = BinaryHeap::new();
        let mut best: BinaryHeap<Cand> = BinaryHeap::new();
        for &c in eps {
            if visited.insert(c.id) {
                frontier.push(Reverse(c));
                if ok(c.id) {
                    best.push(c);
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        while let Some(Reverse(c)) = frontier.pop() {
            if best.len() >= ef && best.peek().is_some_and(|w| c.dist > w.dist) {
                break;
            }
            let slots = self.slots(c.id, layer);
            let n = slots[0].load(AtomicOrdering::Acquire) as usize;
            for s in &slots[1..=n] {
                let id = s.load(AtomicOrdering::Relaxed);
                if !visited.insert(id) {
                    continue;
                }
                let dist = dist_to(id);
                let full = best.len() >= ef;
                if !full || best.peek().is_some_and(|w| dist < w.dist) {
                    let cand = Cand { dist, id };
                    frontier.push(Reverse(cand));
                    if ok(id) {
                        best.push(cand);
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        best.into_sorted_vec()
    }

    // ---- storage --------------------------------------------------------

    fn cap(&self, layer: usize) -> usize {
        if layer == 0 { self.m0 } else { self.m_up }
    }

    /// `node`'s list on `layer`: the count, then `cap(layer)` link slots.
    #[inline]
    fn slots(&self, node: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let start = node as usize * (1 + self.m0);
            &self.links0[start..start + 1 + self.m0]
        } else {
            debug_assert!(self.levels[node as usize] as usize >= layer);
            let start = self.upper_start[node as usize] as usize + (layer - 1) * (1 + self.m_up);
            &self.upper[start..start + 1 + self.m_up]
        }
    }

    fn lock(&self, node: u32) -> std::sync::MutexGuard<'_, ()> {
        self.locks[node as usize % LOCK_STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn take_visited(&self) -> Visited {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| Visited::new(self.levels.len()))
    }

    fn give_visited(&self, v: Visited) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 64 {
            pool.push(v);
        }
    }
}

/// A cheap deterministic hash of a pair of offsets (for tie-breaking).
#[inline]
fn mix(a: u32, b: u32) -> u64 {
    let mut x = ((a as u64) << 32 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 32)
}

/// Replaces a list: links first, then the count that publishes them.
fn write_links(slots: &[AtomicU32], links: &[u32]) {
    debug_assert!(links.len() < slots.len());
    for (s, &id) in slots[1..].iter().zip(links) {
        s.store(id, AtomicOrdering::Relaxed);
    }
    slots[0].store(links.len() as u32, AtomicOrdering::Release);
}

/// Exact search over `candidates` (brute force), same output contract as
/// [`Hnsw::search`].
pub fn exact_search(
    vectors: &VectorStore,
    distance: Distance,
    query: &[f32],
    k: usize,
    candidates: impl Iterator<Item = u32>,
) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut best: BinaryHeap<Cand> = BinaryHeap::with_capacity(k + 1);
    for id in candidates {
        let cand = Cand {
            dist: distance.dist(query, vectors.get(id)),
            id,
        };
        if best.len() < k {
            best.push(cand);
        } else if best.peek().is_some_and(|w| cand < *w) {
            best.pop();
            best.push(cand);
        }
    }
    best.into_sorted_vec()
        .into_iter()
        .map(|c| (c.id, c.dist))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 32;
    const N: usize = 5_000;
    const QUERIES: usize = 100;
    const K: usize = 10;
    const EF: usize = 64;
    const NOISE: f32 = 0.8;

    fn gaussian(rng: &mut StdRng) -> f32 {
        // Box-Muller.
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random::<f64>();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// `n` points and `queries` queries drawn around 50 Gaussian centres,
    /// prepared for `distance`.
    fn clustered(distance: Distance, n: usize, queries: usize) -> (VectorStore, Vec<Vec<f32>>) {
        let mut rng = StdRng::seed_from_u64(7);
        let centres: Vec<Vec<f32>> = (0..50)
            .map(|_| (0..DIM).map(|_| gaussian(&mut rng)).collect())
            .collect();
        let sample = |rng: &mut StdRng| {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut v: Vec<f32> = c.iter().map(|x| x + NOISE * gaussian(rng)).collect();
            distance.prepare(&mut v);
            v
        };
        let mut store = VectorStore::new(DIM);
        for _ in 0..n {
            store.push(&sample(&mut rng));
        }
        let qs = (0..queries).map(|_| sample(&mut rng)).collect();
        (store, qs)
    }

    fn build(distance: Distance, store: &VectorStore, threads: usize) -> Hnsw {
        let mut index = Hnsw::new(distance, HnswParams::default());
        let offsets: Vec<u32> = (0..store.len() as u32).collect();
        if threads == 0 {
            for &o in &offsets {
                index.insert(store, o);
            }
        } else {
            index.insert_batch(store, &offsets, threads);
        }
        assert_eq!(index.len(), store.len());
        index
    }

    fn assert_sorted(found: &[(u32, f32)]) {
        for w in found.windows(2) {
            assert!(
                w[0].1 < w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0),
                "not sorted: {found:?}"
            );
        }
    }

    /// Mean recall@K of the index against exact search over accepted offsets.
    fn recall(
        distance: Distance,
        store: &VectorStore,
        index: &Hnsw,
        queries: &[Vec<f32>],
        accept: &dyn Fn(u32) -> bool,
    ) -> f64 {
        let mut hits = 0usize;
        let mut total = 0usize;
        for q in queries {
            let found = index.search(store, q, K, EF, accept);
            assert_sorted(&found);
            assert!(found.iter().all(|&(o, _)| accept(o)));
            for &(o, d) in &found {
                assert_eq!(d, distance.dist(q, store.get(o)));
            }
            let truth = exact_search(
                store,
                distance,
                q,
                K,
                (0..store.len() as u32).filter(|&o| accept(o)),
            );
            total += truth.len();
            hits += found
                .iter()
                .filter(|f| truth.iter().any(|t| t.0 == f.0))
                .count();
        }
        hits as f64 / total as f64
    }

    fn check_recall(distance: Distance, threads: usize) {
        let (store, queries) = clustered(distance, N, QUERIES);
        let index = build(distance, &store, threads);
        let r = recall(distance, &store, &index, &queries, &|_| true);
        eprintln!("{distance:?} threads={threads}: recall@{K} = {r:.4}");
        assert!(r >= 0.95, "{distance:?} threads={threads}: recall {r}");
    }

    #[test]
    fn hnsw_recall_cosine() {
        check_recall(Distance::Cosine, 0);
    }

    #[test]
    fn hnsw_recall_dot() {
        check_recall(Distance::Dot, 0);
    }

    #[test]
    fn hnsw_recall_euclid() {
        check_recall(Distance::Euclid, 0);
    }

    #[test]
    fn hnsw_recall_cosine_batch() {
        check_recall(Distance::Cosine, 2);
    }

    #[test]
    fn hnsw_recall_dot_batch() {
        check_recall(Distance::Dot, 2);
    }

    #[test]
    fn hnsw_recall_euclid_batch() {
        check_recall(Distance::Euclid, 2);
    }

    #[test]
    fn hnsw_filtered_search() {
        let distance = Distance::Cosine;
        let (store, queries) = clustered(distance, N, QUERIES);
        let index = build(distance, &store, 2);
        let r10 = recall(distance, &store, &index, &queries, &|o| o % 10 == 3);
        eprintln!("filter 10%: recall@{K} = {r10:.4}");
        assert!(r10 >= 0.9, "10% filter recall {r10}");
        let r1 = recall(distance, &store, &index, &queries, &|o| o % 100 == 7);
        eprintln!("filter 1%: precision vs exact top-{K} = {r1:.4}");
        assert!(r1 >= 0.8, "1% filter precision {r1}");
        // Nothing accepted: nothing returned.
        assert!(
            index
                .search(&store, &queries[0], K, EF, &|_| false)
                .is_empty()
        );
    }

    #[test]
    fn hnsw_skipped_offsets_and_later_inserts() {
        let distance = Distance::Euclid;
        let (store, queries) = clustered(distance, 2_000, 20);
        let mut index = Hnsw::new(distance, HnswParams::default());
        // Only even offsets, first one at a time, then as a batch.
        let evens: Vec<u32> = (0..store.len() as u32).filter(|o| o % 2 == 0).collect();
        for &o in &evens[..300] {
            index.insert(&store, o);
        }
        index.insert_batch(&store, &evens[300..], 2);
        assert_eq!(index.len(), evens.len());
        assert!(index.contains(4) && !index.contains(5));
        let mut hits = 0;
        for q in &queries {
            let found = index.search(&store, q, K, EF, &|_| true);
            assert_eq!(found.len(), K);
            assert!(found.iter().all(|&(o, _)| o % 2 == 0));
            let truth = exact_search(&store, distance, q, K, evens.iter().copied());
            hits += found.iter().filter(|f| truth.contains(f)).count();
        }
        let r = hits as f64 / (K * queries.len()) as f64;
        assert!(r >= 0.95, "recall {r}");
    }

    #[test]
    fn hnsw_serial_builds_are_deterministic() {
        let distance = Distance::Dot;
        let (store, queries) = clustered(distance, 1_000, 10);
        let a = build(distance, &store, 1);
        let b = build(distance, &store, 0);
        for q in &queries {
            assert_eq!(
                a.search(&store, q, K, 16, &|_| true),
                b.search(&store, q, K, 16, &|_| true)
            );
        }
    }

    #[test]
    fn hnsw_edge_cases() {
        let distance = Distance::Euclid;
        let mut store = VectorStore::new(2);
        let index = Hnsw::new(distance, HnswParams::default());
        assert!(index.is_empty());
        assert!(
            index
                .search(&store, &[0.0, 0.0], 5, 10, &|_| true)
                .is_empty()
        );
        assert!(exact_search(&store, distance, &[0.0, 0.0], 5, std::iter::empty()).is_empty());

        // A single point.
        let mut index = Hnsw::new(
            distance,
            HnswParams {
                m: 4,
                ef_construct: 8,
            },
        );
        store.push(&[1.0, 2.0]);
        index.insert(&store, 0);
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.search(&store, &[0.0, 0.0], 3, 1, &|_| true),
            vec![(0, 5.0)]
        );
        assert!(
            index
                .search(&store, &[0.0, 0.0], 0, 1, &|_| true)
                .is_empty()
        );

        // k larger than len.
        for v in [[3.0, 0.0], [0.0, 1.0], [2.0, 2.0]] {
            let o = store.push(&v);
            index.insert(&store, o);
        }
        let found = index.search(&store, &[0.0, 0.0], 10, 1, &|_| true);
        assert_eq!(found, vec![(2, 1.0), (0, 5.0), (3, 8.0), (1, 9.0)]);

        // Duplicate vectors: all reachable, ties ordered by offset.
        let mut store = VectorStore::new(3);
        let mut index = Hnsw::new(
            distance,
            HnswParams {
                m: 4,
                ef_construct: 16,
            },
        );
        for i in 0..200u32 {
            let o = store.push(&[1.0, (i % 2) as f32, 0.0]);
            index.insert(&store, o);
        }
        let found = index.search(&store, &[1.0, 0.0, 0.0], K, 32, &|_| true);
        assert_eq!(found.len(), K);
        assert_sorted(&found);
        assert!(found.iter().all(|&(o, d)| o % 2 == 0 && d == 0.0));
        // A group of exact duplicates much larger than 2m cannot all stay
        // linked; most must (a new node takes m = 4 links here), and what
        // comes back is still right. Collection::search falls back to
        // exact search when the graph returns fewer than asked.
        let found = index.search(&store, &[1.0, 0.0, 0.0], 200, 200, &|_| true);
        eprintln!(
            "duplicates: {} of 200 reachable, {} at dist 0",
            found.len(),
            found.iter().filter(|f| f.1 == 0.0).count()
        );
        assert!(found.len() >= 160, "{}", found.len());
        assert_sorted(&found);
        let zeros = found.iter().take_while(|f| f.1 == 0.0).count();
        assert!(found[..zeros].iter().all(|f| f.0 % 2 == 0));
        assert!(found[zeros..].iter().all(|f| f.0 % 2 == 1 && f.1 == 1.0));
        // The second group is not cut off from the first.
        let found = index.search(&store, &[1.0, 1.0, 0.0], K, 32, &|_| true);
        assert_eq!(found.len(), K);
        assert!(found.iter().all(|&(o, d)| o % 2 == 1 && d == 0.0));
        // Small groups of duplicates are found completely.
        let mut store = VectorStore::new(2);
        let mut index = Hnsw::new(
            distance,
            HnswParams {
                m: 4,
                ef_construct: 16,
            },
        );
        for i in 0..60u32 {
            let o = store.push(&[(i % 10) as f32, 0.0]);
            index.insert(&store, o);
        }
        let found = index.search(&store, &[3.0, 0.0], 6, 16, &|_| true);
        assert_eq!(
            found.iter().map(|f| f.0).collect::<Vec<_>>(),
            [3, 13, 23, 33, 43, 53]
        );
    }

    #[test]
    fn exact_search_is_the_true_top_k() {
        let distance = Distance::Euclid;
        let (store, queries) = clustered(distance, 500, 5);
        for q in &queries {
            let mut all: Vec<(u32, f32)> = (0..store.len() as u32)
                .map(|o| (o, distance.dist(q, store.get(o))))
                .collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let got = exact_search(&store, distance, q, 7, 0..store.len() as u32);
            assert_eq!(got, all[..7].to_vec());
            let got = exact_search(&store, distance, q, 1_000, 0..store.len() as u32);
            assert_eq!(got, all);
        }
    }
}
