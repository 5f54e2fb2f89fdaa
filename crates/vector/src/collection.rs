//! A collection: its points, their HNSW and payload indexes, and the log and
//! snapshot that make them durable.
//!
//! Writes go through [`Collection::apply`]: under the write lock an
//! operation is validated, given a WAL seq and applied in memory; then,
//! outside the lock, the writer waits for its record to be fsynced (group
//! commit with every other writer) before it returns. A reader may see a
//! write a moment before it is acknowledged, never an acknowledged write
//! that a crash could take away.
//!
//! On disk (under the collection's directory): `config.json`, `wal`, and
//! `snapshot.bin`, a full image of the points as of a WAL seq. Opening loads
//! the snapshot and replays the log records after it, whole records only,
//! so a batch is applied entirely or not at all. When the log passes
//! [`CHECKPOINT_BYTES`] a new snapshot is written (to a temporary file,
//! fsynced, renamed) and the log emptied.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::filter::{Filter, PayloadIndex, PayloadSchemaType};
use crate::hnsw::{Hnsw, HnswParams, exact_search};
use crate::quantize::{QuantizationSearch, QuantizedVectors, ScalarQuantization};
use crate::wal::Wal;
use crate::{Distance, Payload, PointId, VectorError, VectorStore};

/// Past this many log bytes since the last snapshot, a write checkpoints.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// A filter expected to leave at most this many points is searched exactly:
/// cheaper than a graph walk that must skip almost every node, and exact.
pub const FULL_SCAN_POINTS: usize = 2_000;
const SNAPSHOT_MAGIC: &[u8; 8] = b"NCVSNAP1";

/// What a collection is, fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub dim: usize,
    pub distance: Distance,
    #[serde(default)]
    pub hnsw: HnswParams,
    /// The embedding service that turns text into this collection's vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<String>,
    /// Int8 scalar quantization of the vectors the graph walk reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<ScalarQuantization>,
}

impl CollectionConfig {
    pub fn validate(&self) -> Result<(), VectorError> {
        if self.dim == 0 || self.dim > 65_536 {
            return Err(VectorError::bad(format!(
                "vectors.size must be between 1 and 65536, got {}",
                self.dim
            )));
        }
        if self.hnsw.m < 2 || self.hnsw.m > 256 {
            return Err(VectorError::bad(format!(
                "hnsw_config.m must be between 2 and 256, got {}",
                self.hnsw.m
            )));
        }
        if self.hnsw.ef_construct < 4 || self.hnsw.ef_construct > 4_096 {
            return Err(VectorError::bad(format!(
                "hnsw_config.ef_construct must be between 4 and 4096, got {}",
                self.hnsw.ef_construct
            )));
        }
        if let Some(q) = &self.quantization {
            q.validate()?;
        }
        Ok(())
    }
}

/// A point as written and read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointStruct {
    pub id: PointId,
    pub vector: Vec<f32>,
    #[serde(default)]
    pub payload: Payload,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f32,
    pub payload: Payload,
    pub vector: Vec<f32>,
}

/// One logged write. Writes that depend on state (delete by filter) are
/// resolved to ids before they are logged, so replay is deterministic.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    Upsert(Vec<PointStruct>),
    Delete(Vec<PointId>),
    SetPayload {
        ids: Vec<PointId>,
        payload: Payload,
        overwrite: bool,
    },
    CreateIndex {
        field: String,
        schema: PayloadSchemaType,
    },
    DropIndex {
        field: String,
    },
}

/// How to search.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub limit: usize,
    pub offset: usize,
    pub filter: Option<Filter>,
    /// Beam width; default the collection's ef_construct.
    pub ef: Option<usize>,
    /// Brute force instead of the index.
    pub exact: bool,
    /// Drop hits worse than this score.
    pub score_threshold: Option<f32>,
    /// How to use the collection's quantized vectors, if it has them.
    pub quantization: QuantizationSearch,
}

struct Points {
    vectors: VectorStore,
    /// offset → id, `None` once the point was deleted or overwritten.
    ids: Vec<Option<PointId>>,
    /// offset → payload (emptied with the id).
    payloads: Vec<Payload>,
    by_id: BTreeMap<PointId, u32>,
    index: Hnsw,
    payload_index: PayloadIndex,
    /// The vectors' int8 codes, when the collection is quantized.
    quantized: Option<QuantizedVectors>,
}

/// A durable, searchable set of points.
pub struct Collection {
    dir: PathBuf,
    config: CollectionConfig,
    points: RwLock<Points>,
    wal: Wal,
    /// Orders log seqs with the order writes are applied in.
    writer: Mutex<()>,
    log_bytes: AtomicU64,
    threads: usize,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VectorError + '_ {
    move |err| VectorError::Io {
        path: path.to_path_buf(),
        err,
    }
}

impl Collection {
    /// Creates a new collection in the empty or absent directory `dir`.
    pub fn create(dir: &Path, config: CollectionConfig) -> Result<Collection, VectorError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let text = serde_json::to_vec_pretty(&config).expect("a config serialises");
        write_atomically(&dir.join("config.json"), &text)?;
        Collection::open(dir)
    }

    /// Opens an existing collection, recovering its acknowledged state.
    pub fn open(dir: &Path) -> Result<Collection, VectorError> {
        let config_path = dir.join("config.json");
        let text = fs::read(&config_path).map_err(io_err(&config_path))?;
        let config: CollectionConfig =
            serde_json::from_slice(&text).map_err(|e| VectorError::Corrupt {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        let mut points = Points {
            vectors: VectorStore::new(config.dim),
            ids: Vec::new(),
            payloads: Vec::new(),
            by_id: BTreeMap::new(),
            index: Hnsw::new(config.distance, config.hnsw),
            payload_index: PayloadIndex::default(),
            quantized: config
                .quantization
                .map(|q| QuantizedVectors::new(q, config.distance, config.dim)),
        };
        let snapshot_path = dir.join("snapshot.bin");
        let mut last_seq = 0;
        if snapshot_path.exists() {
            let (seq, fields, loaded) = read_snapshot(&snapshot_path, config.dim)?;
            last_seq = seq;
            for (field, schema) in fields {
                points
                    .payload_index
                    .create_field(&field, schema, std::iter::empty());
            }
            points.upsert_unindexed(loaded);
        }
        let wal_path = dir.join("wal");
        let (wal, records) = Wal::open(&wal_path, last_seq + 1)?;
        let mut log_bytes = 0;
        for (seq, body) in records {
            log_bytes += body.len() as u64;
            if seq <= last_seq {
                continue; // already in the snapshot
            }
            let op: Op = serde_json::from_slice(&body).map_err(|e| VectorError::Corrupt {
                path: wal_path.clone(),
                reason: format!("record {seq}: {e}"),
            })?;
            points.apply_unindexed(op);
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        points.build_index(threads);
        Ok(Collection {
            dir: dir.to_path_buf(),
            config,
            points: RwLock::new(points),
            wal,
            writer: Mutex::new(()),
            log_bytes: AtomicU64::new(log_bytes),
            threads,
        })
    }

    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> RwLockReadGuard<'_, Points> {
        self.points.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Points> {
        self.points.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks and prepares points for writing: the right dimension, finite
    /// values, unit length for Cosine.
    fn prepare(&self, mut points: Vec<PointStruct>) -> Result<Vec<PointStruct>, VectorError> {
        for (i, p) in points.iter_mut().enumerate() {
            if p.vector.len() != self.config.dim {
                return Err(VectorError::bad(format!(
                    "point {} (#{i}): wrong vector dimension: expected {}, got {}",
                    p.id,
                    self.config.dim,
                    p.vector.len()
                )));
            }
            if let Some(bad) = p.vector.iter().position(|x| !x.is_finite()) {
                return Err(VectorError::bad(format!(
                    "point {} (#{i}): vector[{bad}] is {}: vectors must be finite",
                    p.id, p.vector[bad]
                )));
            }
            self.config.distance.prepare(&mut p.vector);
        }
        Ok(points)
    }

    /// Logs and applies `op`; returns once it is durable.
    fn apply(&self, op: Op) -> Result<u64, VectorError> {
        let body = serde_json::to_vec(&op).expect("an op serialises");
        let seq = {
            let _order = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let seq = self.wal.append(&body)?;
            self.write().apply(op, self.threads);
            seq
        };
        self.wal.sync(seq)?;
        let logged = self
            .log_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if logged + body.len() as u64 > CHECKPOINT_BYTES {
            self.checkpoint()?;
        }
        Ok(seq)
    }

    /// Inserts or replaces points. Returns the operation's seq.
    pub fn upsert(&self, points: Vec<PointStruct>) -> Result<u64, VectorError> {
        let points = self.prepare(points)?;
        self.apply(Op::Upsert(points))
    }

    /// Deletes points by id (absent ids are ignored).
    pub fn delete(&self, ids: Vec<PointId>) -> Result<u64, VectorError> {
        self.apply(Op::Delete(ids))
    }

    /// Deletes every point that matches `filter`.
    pub fn delete_by_filter(&self, filter: &Filter) -> Result<u64, VectorError> {
        // Resolve under the writer lock so no write slips in between.
        let order = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let ids = self.ids_matching(filter);
        let body = serde_json::to_vec(&Op::Delete(ids.clone())).expect("an op serialises");
        let seq = self.wal.append(&body)?;
        self.write().apply(Op::Delete(ids), self.threads);
        drop(order);
        self.wal.sync(seq)?;
        self.log_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(seq)
    }

    /// The ids of the points that match `filter`, in id order.
    pub fn ids_matching(&self, filter: &Filter) -> Vec<PointId> {
        let p = self.read();
        p.by_id
            .iter()
            .filter(|(id, o)| filter.matches(id, &p.payloads[**o as usize]))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sets payload keys of points (replacing the whole payload when
    /// `overwrite`).
    pub fn set_payload(
        &self,
        ids: Vec<PointId>,
        payload: Payload,
        overwrite: bool,
    ) -> Result<u64, VectorError> {
        self.apply(Op::SetPayload {
            ids,
            payload,
            overwrite,
        })
    }

    /// Indexes a payload field for filtered search.
    pub fn create_field_index(
        &self,
        field: &str,
        schema: PayloadSchemaType,
    ) -> Result<u64, VectorError> {
        if field.is_empty() {
            return Err(VectorError::bad("field_name must not be empty"));
        }
        self.apply(Op::CreateIndex {
            field: field.to_string(),
            schema,
        })
    }

    pub fn drop_field_index(&self, field: &str) -> Result<u64, VectorError> {
        self.apply(Op::DropIndex {
            field: field.to_string(),
        })
    }

    /// The indexed payload fields.
    pub fn field_indexes(&self) -> Vec<(String, PayloadSchemaType)> {
        self.read().payload_index.fields()
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The points with these ids, in the order asked, skipping absent ones.
    pub fn get(&self, ids: &[PointId]) -> Vec<PointStruct> {
        let p = self.read();
        ids.iter()
            .filter_map(|id| p.by_id.get(id).map(|&o| p.record(o)))
            .collect()
    }

    /// Points in id order from `from` (inclusive), at most `limit`, and
    /// the id to continue from.
    pub fn scroll(
        &self,
        filter: Option<&Filter>,
        from: Option<PointId>,
        limit: usize,
    ) -> (Vec<PointStruct>, Option<PointId>) {
        let p = self.read();
        let start = match from {
            Some(id) => std::ops::Bound::Included(id),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for (id, &o) in p.by_id.range((start, std::ops::Bound::Unbounded)) {
            if filter.is_some_and(|f| !f.matches(id, &p.payloads[o as usize])) {
                continue;
            }
            if out.len() == limit {
                return (out, Some(*id));
            }
            out.push(p.record(o));
        }
        (out, None)
    }

    /// Points matching `filter` (all points without one).
    pub fn count(&self, filter: Option<&Filter>) -> usize {
        let p = self.read();
        match filter {
            None => p.by_id.len(),
            Some(f) => p
                .by_id
                .iter()
                .filter(|(id, o)| f.matches(id, &p.payloads[**o as usize]))
                .count(),
        }
    }

    /// The nearest points to `req.vector`, best first.
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<ScoredPoint>, VectorError> {
        if req.vector.len() != self.config.dim {
            return Err(VectorError::bad(format!(
                "wrong vector dimension: expected {}, got {}",
                self.config.dim,
                req.vector.len()
            )));
        }
        if let Some(bad) = req.vector.iter().position(|x| !x.is_finite()) {
            return Err(VectorError::bad(format!(
                "vector[{bad}] is {}: vectors must be finite",
                req.vector[bad]
            )));
        }
        req.quantization.validate()?;
        let mut query = req.vector.clone();
        let distance = self.config.distance;
        distance.prepare(&mut query);
        let want = req.limit.saturating_add(req.offset);
        if want == 0 {
            return Ok(Vec::new());
        }
        let p = self.read();
        let filter = req.filter.as_ref();
        let accept = |o: u32| {
            p.ids[o as usize]
                .as_ref()
                .is_some_and(|id| filter.is_none_or(|f| f.matches(id, &p.payloads[o as usize])))
        };
        let hits = match p.scan_candidates(filter, req.exact) {
            Some(candidates) => exact_search(
                &p.vectors,
                distance,
                &query,
                want,
                candidates.into_iter().filter(|&o| accept(o)),
            ),
            None => {
                let ef = req.ef.unwrap_or(self.config.hnsw.ef_construct).max(want);
                let found = match &p.quantized {
                    Some(qv) if !req.quantization.ignore && qv.covers(p.vectors.len()) => {
                        p.quantized_search(qv, &query, want, ef, &req.quantization, &accept)
                    }
                    _ => p.index.search(&p.vectors, &query, want, ef, &accept),
                };
                if found.len() < want && (filter.is_some() || found.len() < p.by_id.len()) {
                    // Too few matches reachable in the graph (a selective
                    // filter, or a crowd of duplicate vectors): be exact.
                    exact_search(
                        &p.vectors,
                        distance,
                        &query,
                        want,
                        p.live().filter(|&o| accept(o)),
                    )
                } else {
                    found
                }
            }
        };
        Ok(hits
            .into_iter()
            .skip(req.offset)
            .map(|(o, d)| (o, distance.score(d)))
            .filter(|&(_, score)| match req.score_threshold {
                None => true,
                Some(t) if distance.higher_is_better() => score >= t,
                Some(t) => score <= t,
            })
            .map(|(o, score)| {
                let r = p.record(o);
                ScoredPoint {
                    id: r.id,
                    score,
                    payload: r.payload,
                    vector: r.vector,
                }
            })
            .collect())
    }

    /// Writes a snapshot of everything applied so far and empties the log.
    pub fn checkpoint(&self) -> Result<(), VectorError> {
        let _order = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.wal.next_seq() - 1;
        {
            let p = self.read();
            write_snapshot(&self.dir.join("snapshot.bin"), seq, &p)?;
        }
        // Records still buffered are in the snapshot: emptying the log makes
        // their writers' sync() return at once.
        self.wal.reset()?;
        self.log_bytes.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a self-contained snapshot (config and points) to `path`.
    pub fn snapshot_to(&self, path: &Path) -> Result<(), VectorError> {
        let _order = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let p = self.read();
        let tmp = path.with_extension("partial");
        {
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut w = BufWriter::new(file);
            let config = serde_json::to_vec(&self.config).expect("a config serialises");
            w.write_all(&(config.len() as u32).to_le_bytes())
                .and_then(|()| w.write_all(&config))
                .map_err(io_err(&tmp))?;
            encode_snapshot(&mut w, 0, &p).map_err(io_err(&tmp))?;
            let file = w.into_inner().map_err(|e| VectorError::Io {
                path: tmp.clone(),
                err: e.into_error(),
            })?;
            file.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io_err(path))?;
        Ok(())
    }

    /// Creates a collection in `dir` from a file written by
    /// [`Collection::snapshot_to`].
    pub fn restore(dir: &Path, snapshot: &Path) -> Result<Collection, VectorError> {
        let file = File::open(snapshot).map_err(io_err(snapshot))?;
        let mut r = BufReader::new(file);
        let corrupt = |reason: String| VectorError::Corrupt {
            path: snapshot.to_path_buf(),
            reason,
        };
        let mut len = [0u8; 4];
        r.read_exact(&mut len)
            .map_err(|e| corrupt(format!("no header: {e}")))?;
        let mut config = vec![0u8; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut config)
            .map_err(|e| corrupt(format!("truncated config: {e}")))?;
        let config: CollectionConfig =
            serde_json::from_slice(&config).map_err(|e| corrupt(e.to_string()))?;
        config.validate()?;
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).map_err(io_err(snapshot))?;
        // Check it decodes before anything is written.
        decode_snapshot(&rest, config.dim).map_err(corrupt)?;
        if dir.join("config.json").exists() {
            return Err(VectorError::bad(format!(
                "{} already holds a collection",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _ = fs::remove_file(dir.join("wal"));
        write_atomically(&dir.join("snapshot.bin"), &rest)?;
        let text = serde_json::to_vec_pretty(&config).expect("a config serialises");
        write_atomically(&dir.join("config.json"), &text)?;
        Collection::open(dir)
    }
}

impl Points {
    fn record(&self, o: u32) -> PointStruct {
        PointStruct {
            id: self.ids[o as usize].expect("records are read for live offsets"),
            vector: self.vectors.get(o).to_vec(),
            payload: self.payloads[o as usize].clone(),
        }
    }

    fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_id.values().copied()
    }

    /// The offsets to scan exactly, or `None` to use the graph: all of
    /// them when asked to be exact; those a payload index or `has_id`
    /// leaves when that is few; those a sample predicts few matches for.
    fn scan_candidates(&self, filter: Option<&Filter>, exact: bool) -> Option<Vec<u32>> {
        if exact {
            return Some(self.live().collect());
        }
        let filter = filter?;
        if let Some(c) = self.payload_index.candidates(filter)
            && c.len() <= FULL_SCAN_POINTS
        {
            return Some(c);
        }
        // Estimate the matching share from an evenly spaced sample.
        let n = self.by_id.len();
        if n <= FULL_SCAN_POINTS {
            return Some(self.live().collect());
        }
        let step = (n / 512).max(1);
        let (mut seen, mut hit) = (0usize, 0usize);
        for (id, &o) in self.by_id.iter().step_by(step) {
            seen += 1;
            if filter.matches(id, &self.payloads[o as usize]) {
                hit += 1;
            }
        }
        let expected = hit * n / seen.max(1);
        (expected <= FULL_SCAN_POINTS).then(|| self.live().collect())
    }

    /// Applies an op without touching the graph (recovery builds it once
    /// at the end).
    fn apply_unindexed(&mut self, op: Op) -> Vec<u32> {
        match op {
            Op::Upsert(points) => return self.upsert_unindexed(points),
            Op::Delete(ids) => {
                for id in ids {
                    self.remove(&id);
                }
            }
            Op::SetPayload {
                ids,
                payload,
                overwrite,
            } => {
                for id in ids {
                    if let Some(&o) = self.by_id.get(&id) {
                        let old = std::mem::take(&mut self.payloads[o as usize]);
                        self.payload_index.remove(o, &old);
                        let mut new = if overwrite { Payload::new() } else { old };
                        new.extend(payload.clone());
                        self.payload_index.add(o, &new);
                        self.payloads[o as usize] = new;
                    }
                }
            }
            Op::CreateIndex { field, schema } => {
                let existing = self
                    .by_id
                    .values()
                    .map(|&o| (o, &self.payloads[o as usize]));
                self.payload_index.create_field(&field, schema, existing);
            }
            Op::DropIndex { field } => self.payload_index.drop_field(&field),
        }
        Vec::new()
    }

    /// The graph walk over int8 codes. With rescoring, every candidate the
    /// walk kept (its `ef` beam, and at least `want × oversampling`) is
    /// re-ranked with the original vectors: a true neighbour that the codes
    /// placed just outside the top `want` still makes it. Without, the
    /// codes' own top `want`.
    fn quantized_search(
        &self,
        qv: &QuantizedVectors,
        query: &[f32],
        want: usize,
        ef: usize,
        knobs: &QuantizationSearch,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let over = knobs.oversampling.unwrap_or(1.0) as f64;
        let fetch = ((want as f64 * over).ceil() as usize).max(want);
        let code = qv.query(query);
        let dist = |o: u32| qv.dist(&code, o);
        let ef = ef.max(fetch);
        let keep = if knobs.rescore { ef } else { want };
        let mut found = self.index.search_by(&dist, keep, ef, accept);
        if knobs.rescore {
            let distance = self.index.distance();
            for hit in found.iter_mut() {
                hit.1 = distance.dist(query, self.vectors.get(hit.0));
            }
            found.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        }
        found.truncate(want);
        found
    }

    fn apply(&mut self, op: Op, threads: usize) {
        let added = self.apply_unindexed(op);
        if let Some(qv) = &mut self.quantized {
            qv.sync(&self.vectors);
        }
        if added.len() > 64 && threads > 1 {
            self.index.insert_batch(&self.vectors, &added, threads);
        } else {
            for o in added {
                self.index.insert(&self.vectors, o);
            }
        }
    }

    fn remove(&mut self, id: &PointId) {
        if let Some(o) = self.by_id.remove(id) {
            self.ids[o as usize] = None;
            let old = std::mem::take(&mut self.payloads[o as usize]);
            self.payload_index.remove(o, &old);
        }
    }

    /// Stores points at new offsets (a replaced point's old offset is
    /// retired); returns the new offsets.
    fn upsert_unindexed(&mut self, points: Vec<PointStruct>) -> Vec<u32> {
        let mut added = Vec::with_capacity(points.len());
        for p in points {
            self.remove(&p.id);
            let o = self.vectors.push(&p.vector);
            self.ids.push(Some(p.id));
            self.payload_index.add(o, &p.payload);
            self.payloads.push(p.payload);
            self.by_id.insert(p.id, o);
            added.push(o);
        }
        added
    }

    fn build_index(&mut self, threads: usize) {
        let live: Vec<u32> = {
            let mut v: Vec<u32> = self.live().collect();
            v.sort_unstable();
            v
        };
        self.index.insert_batch(&self.vectors, &live, threads);
        if let Some(qv) = &mut self.quantized {
            qv.sync(&self.vectors);
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), VectorError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `MAGIC, seq u64, fields JSON (len u32), count u64, then per point:
/// id JSON (len u32), payload JSON (len u32), dim f32; crc32 of all before`.
fn encode_snapshot(w: &mut impl Write, seq: u64, p: &Points) -> std::io::Result<()> {
    let mut body = Vec::new();
    body.extend_from_slice(SNAPSHOT_MAGIC);
    body.extend_from_slice(&seq.to_le_bytes());
    let fields = serde_json::to_vec(&p.payload_index.fields()).expect("fields serialise");
    body.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    body.extend_from_slice(&fields);
    body.extend_from_slice(&(p.by_id.len() as u64).to_le_bytes());
    for (id, &o) in &p.by_id {
        let id = serde_json::to_vec(id).expect("ids serialise");
        let payload = serde_json::to_vec(&p.payloads[o as usize]).expect("payloads serialise");
        body.extend_from_slice(&(id.len() as u32).to_le_bytes());
        body.extend_from_slice(&id);
        body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        body.extend_from_slice(&payload);
        for x in p.vectors.get(o) {
            body.extend_from_slice(&x.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&body);
    w.write_all(&body)?;
    w.write_all(&crc.to_le_bytes())
}

fn write_snapshot(path: &Path, seq: u64, p: &Points) -> Result<(), VectorError> {
    let mut bytes = Vec::new();
    encode_snapshot(&mut bytes, seq, p).map_err(io_err(path))?;
    write_atomically(path, &bytes)
}

type Snapshot = (u64, Vec<(String, PayloadSchemaType)>, Vec<PointStruct>);

fn decode_snapshot(bytes: &[u8], dim: usize) -> Result<Snapshot, String> {
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("not a neocloud collection snapshot".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap_or([0; 4])) {
        return Err("checksum mismatch".into());
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body.get(at..at + n).ok_or("truncated")?;
        at += n;
        Ok(s)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize;
    let seq = u64::from_le_bytes(take(8)?.try_into().unwrap_or([0; 8]));
    let n = u32_of(take(4)?);
    let fields = serde_json::from_slice(take(n)?).map_err(|e| e.to_string())?;
    let count = u64::from_le_bytes(take(8)?.try_into().unwrap_or([0; 8])) as usize;
    let mut points = Vec::with_capacity(count.min(1 << 24));
    for _ in 0..count {
        let n = u32_of(take(4)?);
        let id = serde_json::from_slice(take(n)?).map_err(|e| e.to_string())?;
        let n = u32_of(take(4)?);
        let payload = serde_json::from_slice(take(n)?).map_err(|e| e.to_string())?;
        let vector = take(dim * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect();
        points.push(PointStruct {
            id,
            vector,
            payload,
        });
    }
    Ok((seq, fields, points))
}

fn read_snapshot(path: &Path, dim: usize) -> Result<Snapshot, VectorError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    decode_snapshot(&bytes, dim).map_err(|reason| VectorError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(dim: usize, distance: Distance) -> CollectionConfig {
        CollectionConfig {
            dim,
            distance,
            hnsw: HnswParams::default(),
            embed: None,
            quantization: None,
        }
    }

    fn point(id: u64, vector: Vec<f32>, payload: serde_json::Value) -> PointStruct {
        PointStruct {
            id: PointId::Num(id),
            vector,
            payload: payload.as_object().cloned().unwrap_or_default(),
        }
    }

    fn grid(n: u64) -> Vec<PointStruct> {
        (0..n)
            .map(|i| {
                let v = vec![(i % 10) as f32, (i / 10) as f32, 1.0];
                point(
                    i,
                    v,
                    json!({"i": i, "even": i % 2 == 0, "tag": format!("t{}", i % 3)}),
                )
            })
            .collect()
    }

    #[test]
    fn upsert_get_delete_scroll_count() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collection::create(dir.path(), config(3, Distance::Euclid)).unwrap();
        c.upsert(grid(25)).unwrap();
        assert_eq!(c.len(), 25);
        let got = c.get(&[PointId::Num(7), PointId::Num(99), PointId::Num(3)]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].vector, vec![7.0, 0.0, 1.0]);
        assert_eq!(got[0].payload["i"], json!(7));
        // Replace one point: new vector, new payload, same count.
        c.upsert(vec![point(7, vec![0.5, 0.5, 0.5], json!({"new": true}))])
            .unwrap();
        assert_eq!(c.len(), 25);
        assert_eq!(
            c.get(&[PointId::Num(7)])[0].payload,
            json!({"new": true}).as_object().unwrap().clone()
        );
        c.delete(vec![PointId::Num(0), PointId::Num(1), PointId::Num(1000)])
            .unwrap();
        assert_eq!(c.len(), 23);
        // Scroll in id order, in pages.
        let (page, next) = c.scroll(None, None, 10);
        assert_eq!(page.first().unwrap().id, PointId::Num(2));
        assert_eq!(next, Some(PointId::Num(12)));
        let (rest, end) = c.scroll(None, next, 100);
        assert_eq!(rest.len(), 13);
        assert_eq!(end, None);
    }

    #[test]
    fn search_is_exact_on_small_sets_and_scores_follow_the_distance() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collection::create(dir.path(), config(3, Distance::Euclid)).unwrap();
        c.upsert(grid(30)).unwrap();
        let hits = c
            .search(&SearchRequest {
                vector: vec![3.0, 1.0, 1.0],
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(hits[0].id, PointId::Num(13));
        assert_eq!(hits[0].score, 0.0);
        assert!(hits[1].score <= hits[2].score && hits[1].score == 1.0);
        // offset skips, threshold cuts.
        let page2 = c
            .search(&SearchRequest {
                vector: vec![3.0, 1.0, 1.0],
                limit: 2,
                offset: 1,
                score_threshold: Some(1.0),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page2.len(), 2);
        assert!(page2.iter().all(|h| h.score <= 1.0));
    }

    #[test]
    fn quantized_search_rescores_with_the_originals() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(32, Distance::Cosine);
        cfg.quantization = Some(ScalarQuantization::default());
        let c = Collection::create(dir.path(), cfg).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let mut random = |n: usize| -> Vec<Vec<f32>> {
            (0..n)
                .map(|_| (0..32).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect()
        };
        let data = random(3_000);
        for (b, chunk) in data.chunks(500).enumerate() {
            let pts = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| point((b * 500 + i) as u64, v.clone(), json!({})))
                .collect();
            c.upsert(pts).unwrap();
        }
        let queries = random(40);
        let search = |q: &Vec<f32>, knobs: QuantizationSearch, exact: bool| {
            c.search(&SearchRequest {
                vector: q.clone(),
                limit: 10,
                exact,
                quantization: knobs,
                ..Default::default()
            })
            .unwrap()
        };
        let rescored = QuantizationSearch {
            oversampling: Some(2.0),
            ..Default::default()
        };
        let raw = QuantizationSearch {
            rescore: false,
            ..Default::default()
        };
        let (mut hit, mut moved) = (0, 0);
        for q in &queries {
            let truth = search(q, QuantizationSearch::default(), true);
            let found = search(q, rescored, false);
            hit += found
                .iter()
                .filter(|h| truth.iter().any(|t| t.id == h.id))
                .count();
            // Rescored scores are the exact ones.
            for h in &found {
                let mut v = q.clone();
                Distance::Cosine.prepare(&mut v);
                let exact = Distance::Cosine.score(Distance::Cosine.dist(&v, &h.vector));
                assert_eq!(h.score, exact);
            }
            // Without rescoring the scores come from the codes: close (the 0.99
            // quantile clips the largest components), not equal.
            for h in search(q, raw, false) {
                let mut v = q.clone();
                Distance::Cosine.prepare(&mut v);
                let exact = Distance::Cosine.score(Distance::Cosine.dist(&v, &h.vector));
                assert!((h.score - exact).abs() < 0.05, "{} vs {exact}", h.score);
                moved += usize::from(h.score != exact);
            }
        }
        let recall = hit as f64 / (10 * queries.len()) as f64;
        assert!(recall >= 0.9, "recall {recall}");
        assert!(moved > 0, "the walk never used the codes");
        // The setting survives a reopen; `ignore` walks the originals.
        drop(c);
        let c = Collection::open(dir.path()).unwrap();
        assert!(c.config().quantization.is_some());
        let q = &queries[0];
        let raw_hits = c
            .search(&SearchRequest {
                vector: q.clone(),
                limit: 10,
                quantization: raw,
                ..Default::default()
            })
            .unwrap();
        let ignored = c
            .search(&SearchRequest {
                vector: q.clone(),
                limit: 10,
                quantization: QuantizationSearch {
                    ignore: true,
                    rescore: false,
                    oversampling: None,
                },
                ..Default::default()
            })
            .unwrap();
        let mut v = q.clone();
        Distance::Cosine.prepare(&mut v);
        let exact = |h: &ScoredPoint| Distance::Cosine.score(Distance::Cosine.dist(&v, &h.vector));
        assert!(ignored.iter().all(|h| h.score == exact(h)));
        assert!(raw_hits.iter().any(|h| h.score != exact(h)));
        let bad = c.search(&SearchRequest {
            vector: q.clone(),
            limit: 10,
            quantization: QuantizationSearch {
                oversampling: Some(0.1),
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(bad.unwrap_err().to_string().contains("oversampling"));
    }

    #[test]
    fn bad_vectors_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collection::create(dir.path(), config(3, Distance::Cosine)).unwrap();
        let e = c
            .upsert(vec![point(1, vec![1.0, 2.0], json!({}))])
            .unwrap_err();
        assert!(e.to_string().contains("expected 3, got 2"), "{e}");
        let e = c
            .upsert(vec![point(1, vec![1.0, f32::NAN, 0.0], json!({}))])
            .unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
        let e = c
            .search(&SearchRequest {
                vector: vec![f32::INFINITY, 0.0, 0.0],
                limit: 1,
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
        assert_eq!(c.len(), 0, "a refused batch writes nothing");
        let bad = CollectionConfig {
            dim: 0,
            ..config(3, Distance::Dot)
        };
        assert!(Collection::create(&dir.path().join("x"), bad).is_err());
    }

    #[test]
    fn state_survives_reopen_checkpoint_and_a_torn_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Collection::create(dir.path(), config(3, Distance::Dot)).unwrap();
            c.upsert(grid(10)).unwrap();
            c.checkpoint().unwrap();
            c.upsert(grid(20).split_off(10)).unwrap();
            c.delete(vec![PointId::Num(4)]).unwrap();
            c.set_payload(
                vec![PointId::Num(5)],
                json!({"x": 1}).as_object().unwrap().clone(),
                false,
            )
            .unwrap();
        }
        // A write that was never acknowledged: half a record at the end.
        let mut wal = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("wal"))
            .unwrap();
        wal.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(wal);
        let c = Collection::open(dir.path()).unwrap();
        assert_eq!(c.len(), 19);
        assert!(c.get(&[PointId::Num(4)]).is_empty());
        let five = &c.get(&[PointId::Num(5)])[0];
        assert_eq!(five.payload["x"], json!(1));
        assert_eq!(five.payload["i"], json!(5));
        // Writes continue after recovery and survive another reopen.
        c.upsert(vec![point(100, vec![1.0, 1.0, 1.0], json!({}))])
            .unwrap();
        drop(c);
        assert_eq!(Collection::open(dir.path()).unwrap().len(), 20);
    }

    #[test]
    fn a_snapshot_file_restores_the_collection() {
        let dir = tempfile::tempdir().unwrap();
        let c = Collection::create(&dir.path().join("a"), config(3, Distance::Cosine)).unwrap();
        c.upsert(grid(12)).unwrap();
        let file = dir.path().join("a.snapshot");
        c.snapshot_to(&file).unwrap();
        c.delete(vec![PointId::Num(1)]).unwrap();
        let r = Collection::restore(&dir.path().join("b"), &file).unwrap();
        assert_eq!(r.len(), 12);
        assert_eq!(r.config(), c.config());
        assert_eq!(r.get(&[PointId::Num(3)]), c.get(&[PointId::Num(3)]));
        assert!(
            Collection::restore(&dir.path().join("b"), &file).is_err(),
            "not over an existing one"
        );
        let mut bytes = fs::read(&file).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        fs::write(&file, bytes).unwrap();
        let e = Collection::restore(&dir.path().join("c"), &file)
            .err()
            .unwrap();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn concurrent_writers_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(
            Collection::create(dir.path(), config(3, Distance::Euclid)).unwrap(),
        );
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let id = t * 1000 + i;
                        c.upsert(vec![point(id, vec![id as f32, 0.0, 0.0], json!({"t": t}))])
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        drop(c);
        assert_eq!(Collection::open(dir.path()).unwrap().len(), 100);
    }
}
