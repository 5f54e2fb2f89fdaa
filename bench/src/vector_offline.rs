//! Offline HNSW benchmark of neocloud's vector index, without HTTP or a
//! collection around it: `Hnsw::insert_batch` over a `VectorStore`, then
//! `Hnsw::search` over held-out queries at several `ef`.
//!
//! vector-offline --base BASE.npy --queries QUERIES.npy [--gt GT.npy]
//!                [--m 16 --ef-construct 100 --threads 2 --efs 10,16,32,64,128,256
//!                 --k 10 --repeats 3 --out FILE.json]
//!
//! The .npy files are what bench/vector_peers.py writes: BASE and QUERIES
//! f32 rows (raw; Cosine normalises them here, outside the timings, as the
//! peers get normalised rows), GT the exact top-k row numbers of BASE per
//! query (i32 or i64). Offsets in the index are BASE row numbers.
//!
//! Two query modes per ef: `seq` (one query after another on one thread,
//! the latency view) and `batch` (all queries, `--threads` threads taking
//! them from a shared counter).
//!
//! With `--quantize OVERSAMPLING` the vectors are also int8-quantized
//! (`QuantizedVectors`, part of the build time); searches walk the graph on
//! the codes with a beam of `max(ef, k × OVERSAMPLING)` and rescore the
//! whole beam with the original vectors, as a quantized collection does.
//!
//! With `--stdio` it is an engine that bench/vector_peers.py drives in
//! turns with the peers: each stdin line is a JSON request, each stdout
//! line its answer:
//!   {"cmd":"build","m":16,"ef_construct":100,"threads":2}
//!     -> {"build_s", "rss_before_kib", "rss_after_kib", "hwm_after_kib"}
//!   {"cmd":"search","ef":64,"k":10,"mode":"seq"|"batch","threads":2,"warmup":100}
//!     -> {"seconds", "qps", "ids": [k ids per query, flat]}

/// The build allocates and frees candidate lists on every insert; the
/// server binary runs on mimalloc too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use neocloud_vector::hnsw::{Hnsw, HnswParams};
use neocloud_vector::quantize::{QuantizedVectors, ScalarQuantization};
use neocloud_vector::{Distance, VectorStore};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The vectors to index (N x d, f32).
    #[arg(long)]
    base: PathBuf,
    /// The queries (Q x d, f32).
    #[arg(long)]
    queries: PathBuf,
    /// Exact top-k rows of BASE per query (Q x k, i32/i64), for recall.
    #[arg(long)]
    gt: Option<PathBuf>,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 100)]
    ef_construct: usize,
    /// Build threads and batch-query threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = "10,16,32,64,128,256", value_delimiter = ',')]
    efs: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Timed passes over the queries per (ef, mode); the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Quantize to int8 and search with this oversampling, rescoring.
    #[arg(long)]
    quantize: Option<f32>,
    /// Serve build/search requests over stdin/stdout (see the module docs).
    #[arg(long)]
    stdio: bool,
    /// Write results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

// ---- .npy ------------------------------------------------------------------

/// An array read from a .npy file, in C (row-major) order.
struct Array<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

/// The element types we read: little-endian f32, i32 and i64.
trait Elem: Copy + Default {
    const DESCRS: &'static [&'static str];
    fn from_le(bytes: &[u8], descr: &str) -> Self;
}

impl Elem for f32 {
    const DESCRS: &'static [&'static str] = &["<f4"];
    fn from_le(b: &[u8], _: &str) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
}

impl Elem for i64 {
    const DESCRS: &'static [&'static str] = &["<i4", "<i8"];
    fn from_le(b: &[u8], descr: &str) -> Self {
        if descr == "<i4" {
            i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64
        } else {
            i64::from_le_bytes(b.try_into().expect("8 bytes"))
        }
    }
}

/// The value of `key` in the header's dict literal, as text: `'<f4'`,
/// `False`, `(400000, 50)`.
fn header_value<'a>(header: &'a str, key: &str) -> anyhow::Result<&'a str> {
    let quoted = format!("'{key}':");
    let at = header
        .find(&quoted)
        .with_context(|| format!("no {quoted} in the .npy header {header:?}"))?;
    let rest = header[at + quoted.len()..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .with_context(|| format!("unterminated {key} in {header:?}"))?;
    Ok(rest[..end].trim())
}

/// Reads a 1-D or 2-D .npy array (format versions 1-3), C or Fortran order.
/// The data is read in chunks straight into the array, so no file-sized
/// byte buffer stays behind in the allocator to blur the memory figures.
fn read_npy<T: Elem>(path: &Path) -> anyhow::Result<Array<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut f = std::io::BufReader::new(file);
    let mut lead = [0u8; 8];
    f.read_exact(&mut lead)
        .with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        &lead[..6] == b"\x93NUMPY",
        "{} is not a .npy file",
        path.display()
    );
    let header_len = match lead[6] {
        1 => {
            let mut n = [0u8; 2];
            f.read_exact(&mut n)?;
            u16::from_le_bytes(n) as usize
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            f.read_exact(&mut n)?;
            u32::from_le_bytes(n) as usize
        }
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let header = String::from_utf8(header)?;
    let descr = header_value(&header, "descr")?.trim_matches(['\'', '"']);
    ensure!(
        T::DESCRS.contains(&descr),
        "{}: dtype {descr}, expected one of {:?}",
        path.display(),
        T::DESCRS
    );
    let fortran = match header_value(&header, "fortran_order")? {
        "True" => true,
        "False" => false,
        other => bail!("{}: fortran_order {other}", path.display()),
    };
    let dims: Vec<usize> = header_value(&header, "shape")?
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .with_context(|| format!("shape entry {s:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let (rows, cols) = match dims[..] {
        [n] => (n, 1),
        [r, c] => (r, c),
        _ => bail!("{}: shape {dims:?} is not 1-D or 2-D", path.display()),
    };
    let size = if descr.ends_with('8') { 8 } else { 4 };
    let total = rows * cols;
    let mut data = vec![T::default(); total];
    let mut buf = vec![0u8; size * 16384];
    let mut i = 0;
    while i < total {
        let n = (total - i).min(16384);
        f.read_exact(&mut buf[..n * size]).with_context(|| {
            format!(
                "{}: data ends before shape ({rows}, {cols})",
                path.display()
            )
        })?;
        for chunk in buf[..n * size].chunks_exact(size) {
            // Fortran order stores column after column.
            let at = if fortran {
                (i % rows) * cols + i / rows
            } else {
                i
            };
            data[at] = T::from_le(chunk, descr);
            i += 1;
        }
    }
    ensure!(
        f.read(&mut buf)? == 0,
        "{}: more data than shape ({rows}, {cols})",
        path.display()
    );
    Ok(Array { rows, cols, data })
}

// ---- the engine ------------------------------------------------------------

/// Resident and peak memory of this process, KiB (`VmRSS`, `VmHWM`).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux: "5" > /proc/self/clear_refs),
/// so the peak after a build is the build's own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Bench {
    dim: usize,
    /// BASE rows, as read (normalised into the store at build time).
    base: Array<f32>,
    /// Normalised queries, one after another.
    queries: Vec<f32>,
    n_queries: usize,
    /// Oversampling for int8-quantized search, when quantizing.
    quantize: Option<f32>,
    built: Option<(VectorStore, Hnsw, Option<QuantizedVectors>)>,
}

struct BuildStats {
    build_s: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    hwm_after_kib: u64,
}

struct SearchStats {
    seconds: f64,
    ids: Vec<u32>,
}

impl Bench {
    fn load(base: &Path, queries: &Path, quantize: Option<f32>) -> anyhow::Result<Bench> {
        let base = read_npy::<f32>(base)?;
        let q = read_npy::<f32>(queries)?;
        ensure!(
            base.cols == q.cols,
            "base has {} columns, queries {}",
            base.cols,
            q.cols
        );
        let mut queries = q.data;
        for v in queries.chunks_exact_mut(q.cols) {
            Distance::Cosine.prepare(v);
        }
        Ok(Bench {
            dim: base.cols,
            base,
            queries,
            n_queries: q.rows,
            quantize,
            built: None,
        })
    }

    /// Builds the index from scratch: normalise and store every BASE row,
    /// then `insert_batch` them all. The time covers both (the peers' `add`
    /// copies the vectors too); memory is measured around it.
    fn build(&mut self, params: HnswParams, threads: usize) -> BuildStats {
        self.built = None;
        reset_peak();
        let (rss_before_kib, _) = memory_kib();
        let start = Instant::now();
        let mut store = VectorStore::new(self.dim);
        let mut row = vec![0.0f32; self.dim];
        for v in self.base.data.chunks_exact(self.dim) {
            row.copy_from_slice(v);
            Distance::Cosine.prepare(&mut row);
            store.push(&row);
        }
        let offsets: Vec<u32> = (0..self.base.rows as u32).collect();
        let mut index = Hnsw::new(Distance::Cosine, params);
        index.insert_batch(&store, &offsets, threads);
        let codes = self.quantize.map(|_| {
            let mut q =
                QuantizedVectors::new(ScalarQuantization::default(), Distance::Cosine, self.dim);
            q.sync(&store);
            q
        });
        let build_s = start.elapsed().as_secs_f64();
        drop(offsets);
        let (rss_after_kib, hwm_after_kib) = memory_kib();
        self.built = Some((store, index, codes));
        BuildStats {
            build_s,
            rss_before_kib,
            rss_after_kib,
            hwm_after_kib,
        }
    }

    fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }

    /// One pass over the queries (after `warmup` untimed ones), sequential
    /// or with `threads` threads; the ids are k per query (u32::MAX pads
    /// a short answer).
    fn search(
        &self,
        ef: usize,
        k: usize,
        batch: bool,
        threads: usize,
        warmup: usize,
    ) -> SearchStats {
        let (store, index, codes) = self.built.as_ref().expect("build first");
        let one = |i: usize, out: &mut [u32]| {
            let query = self.query(i);
            let found = match (codes, self.quantize) {
                (Some(codes), Some(over)) => {
                    // As Collection::search does for a quantized collection.
                    let ef = ef.max(((k as f32 * over).ceil() as usize).max(k));
                    let code = codes.query(query);
                    let dist = |o: u32| codes.dist(&code, o);
                    let mut found = index.search_by(&dist, ef, ef, &|_| true);
                    for hit in found.iter_mut() {
                        hit.1 = Distance::Cosine.dist(query, store.get(hit.0));
                    }
                    found.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                    found.truncate(k);
                    found
                }
                _ => index.search(store, query, k, ef, &|_| true),
            };
            out.fill(u32::MAX);
            for (slot, (id, _)) in out.iter_mut().zip(found) {
                *slot = id;
            }
        };
        let mut ids = vec![u32::MAX; self.n_queries * k];
        for i in 0..warmup.min(self.n_queries) {
            one(i, &mut ids[i * k..(i + 1) * k]);
        }
        let start = Instant::now();
        if !batch || threads <= 1 {
            for (i, out) in ids.chunks_exact_mut(k).enumerate() {
                one(i, out);
            }
        } else {
            // Threads take chunks of queries from a shared counter, so a
            // thread slowed by the machine's other load does not hold the
            // rest back.
            const CHUNK: usize = 8;
            let next = AtomicUsize::new(0);
            let parts: Vec<Vec<(usize, Vec<u32>)>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                let from = next.fetch_add(CHUNK, Ordering::Relaxed);
                                if from >= self.n_queries {
                                    break;
                                }
                                let to = (from + CHUNK).min(self.n_queries);
                                let mut out = vec![u32::MAX; (to - from) * k];
                                for (j, o) in out.chunks_exact_mut(k).enumerate() {
                                    one(from + j, o);
                                }
                                mine.push((from, out));
                            }
                            mine
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a query thread panicked"))
                    .collect()
            });
            for (from, out) in parts.into_iter().flatten() {
                ids[from * k..from * k + out.len()].copy_from_slice(&out);
            }
        }
        SearchStats {
            seconds: start.elapsed().as_secs_f64(),
            ids,
        }
    }
}

fn recall(ids: &[u32], gt: &Array<i64>, k: usize) -> f64 {
    let mut hits = 0usize;
    for (found, truth) in ids.chunks_exact(k).zip(gt.data.chunks_exact(gt.cols)) {
        let truth = &truth[..k.min(gt.cols)];
        hits += found
            .iter()
            .filter(|&&id| id != u32::MAX && truth.contains(&(id as i64)))
            .count();
    }
    hits as f64 / (gt.rows * k.min(gt.cols)) as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut bench = Bench::load(&args.base, &args.queries, args.quantize)?;
    if args.stdio {
        return serve_stdio(&mut bench);
    }
    let gt = args.gt.as_deref().map(read_npy::<i64>).transpose()?;
    if let Some(gt) = &gt {
        ensure!(
            gt.rows == bench.n_queries && gt.cols >= args.k,
            "ground truth is {}x{}, want {}x{}+",
            gt.rows,
            gt.cols,
            bench.n_queries,
            args.k
        );
    }
    let params = HnswParams {
        m: args.m,
        ef_construct: args.ef_construct,
    };
    let b = bench.build(params, args.threads);
    eprintln!(
        "neocloud build: {} vectors in {:.2} s ({} threads), RSS +{} MiB (peak +{} MiB)",
        bench.base.rows,
        b.build_s,
        args.threads,
        (b.rss_after_kib.saturating_sub(b.rss_before_kib)) / 1024,
        (b.hwm_after_kib.saturating_sub(b.rss_before_kib)) / 1024,
    );
    let mut sweep = Vec::new();
    for &ef in &args.efs {
        for (mode, batch) in [("seq", false), ("batch", true)] {
            let mut qps = Vec::new();
            let mut last = None;
            for _ in 0..args.repeats.max(1) {
                let s = bench.search(ef, args.k, batch, args.threads, 100);
                qps.push(bench.n_queries as f64 / s.seconds);
                last = Some(s);
            }
            let r = gt
                .as_ref()
                .map(|gt| recall(&last.expect("a pass").ids, gt, args.k));
            let q = median(qps.clone());
            eprintln!(
                "neocloud ef={ef:<4} {mode:<5} {q:>10.0} q/s  recall@{} {}",
                args.k,
                r.map_or("-".into(), |r| format!("{r:.4}"))
            );
            sweep.push(json!({"ef": ef, "mode": mode, "qps": q, "runs": qps, "recall": r}));
        }
    }
    let doc = json!({
        "engine": "neocloud",
        "n": bench.base.rows, "dim": bench.dim, "queries": bench.n_queries, "k": args.k,
        "m": args.m, "ef_construct": args.ef_construct, "threads": args.threads,
        "build_s": b.build_s,
        "rss_before_kib": b.rss_before_kib, "rss_after_kib": b.rss_after_kib,
        "hwm_after_kib": b.hwm_after_kib,
        "sweep": sweep,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    match &args.out {
        Some(out) => std::fs::write(out, text + "\n")?,
        None => println!("{text}"),
    }
    Ok(())
}

fn serve_stdio(bench: &mut Bench) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Value = serde_json::from_str(&line).context("a JSON request")?;
        let int = |key: &str, default: usize| {
            req.get(key)
                .and_then(Value::as_u64)
                .map_or(default, |v| v as usize)
        };
        let answer = match req.get("cmd").and_then(Value::as_str) {
            Some("build") => {
                let params = HnswParams {
                    m: int("m", 16),
                    ef_construct: int("ef_construct", 100),
                };
                let b = bench.build(params, int("threads", 1));
                json!({
                    "build_s": b.build_s, "rss_before_kib": b.rss_before_kib,
                    "rss_after_kib": b.rss_after_kib, "hwm_after_kib": b.hwm_after_kib,
                })
            }
            Some("search") => {
                ensure!(bench.built.is_some(), "search before build");
                let batch = match req.get("mode").and_then(Value::as_str) {
                    Some("seq") | None => false,
                    Some("batch") => true,
                    Some(other) => bail!("unknown mode {other:?}"),
                };
                let s = bench.search(
                    int("ef", 64),
                    int("k", 10),
                    batch,
                    int("threads", 1),
                    int("warmup", 0),
                );
                json!({
                    "seconds": s.seconds,
                    "qps": bench.n_queries as f64 / s.seconds,
                    "ids": s.ids,
                })
            }
            other => bail!("unknown cmd {other:?}"),
        };
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, &answer)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 .npy file as numpy writes it.
    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("vector-offline-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reads_c_and_fortran_order() {
        // [[0, 1, 2], [3, 4, 5]]
        let c: Vec<u8> = (0..6).flat_map(|x| (x as f32).to_le_bytes()).collect();
        let f: Vec<u8> = [0, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect();
        for (name, bytes) in [
            ("c.npy", npy("<f4", false, "(2, 3)", &c)),
            ("f.npy", npy("<f4", true, "(2, 3)", &f)),
        ] {
            let path = write_tmp(name, &bytes);
            let a = read_npy::<f32>(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            assert_eq!((a.rows, a.cols), (2, 3), "{name}");
            assert_eq!(a.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "{name}");
        }
    }

    #[test]
    fn reads_integer_ids_and_rejects_bad_files() {
        let ids: Vec<u8> = [7i32, -1, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        let path = write_tmp("i4.npy", &npy("<i4", false, "(3,)", &ids));
        let a = read_npy::<i64>(&path).unwrap();
        assert_eq!((a.rows, a.cols, a.data), (3, 1, vec![7, -1, 3]));
        assert!(read_npy::<f32>(&path).is_err(), "wrong dtype");
        std::fs::remove_file(&path).unwrap();
        let short = write_tmp("short.npy", &npy("<f4", false, "(2, 3)", &[0; 20]));
        assert!(read_npy::<f32>(&short).is_err(), "truncated data");
        std::fs::remove_file(&short).unwrap();
    }

    #[test]
    fn recall_counts_hits_per_query() {
        let gt = Array {
            rows: 2,
            cols: 3,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        // k = 2: query 0 finds 2 (hit) and 9; query 1 finds 5 and 4 (hits).
        assert_eq!(recall(&[2, 9, 5, 4], &gt, 2), 0.75);
        assert_eq!(recall(&[u32::MAX, u32::MAX, 4, 5], &gt, 2), 0.5);
    }
}
