//! Int8 scalar quantization: every component of every vector becomes one
//! byte, a quarter of its `f32`, and distances between codes are integer
//! dot products. The graph walk uses the codes; the hits it finds are then
//! rescored with the original vectors (unless the caller says not to), so
//! quantization costs recall only where a true neighbour fell out of the
//! oversampled candidate list.
//!
//! One range `[lo, hi]` covers all components (as in Qdrant): it holds the
//! central `quantile` of a sample of the values, so a few outliers do not
//! waste the 256 levels. A value `x` is stored as
//! `q = round((x - lo) / step)` clamped to 0..=255, and read back as
//! `lo + step * q`. With both sides decoded that way,
//!
//! ```text
//! a·b   ≈ d·lo² + lo·step·(Σqa + Σqb) + step²·(qa·qb)
//! |a-b|² ≈ step²·(Σqa² + Σqb² − 2·qa·qb)
//! ```
//!
//! so per vector we keep `Σq` and `Σq²`, and the only per-pair work is the
//! byte dot product `qa·qb`.
//!
//! The range is trained on the data the first time there is any, and again
//! (re-encoding everything) each time the number of vectors doubles, so each
//! vector is encoded about twice over its life. In between, new vectors are
//! encoded with the current range, clamped.

use serde::{Deserialize, Serialize};

use crate::{Distance, VectorError, VectorStore};

/// How a collection quantizes, as in Qdrant's `quantization_config.scalar`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalarQuantization {
    /// The share of values the range covers, in [0.5, 1.0].
    #[serde(default = "default_quantile")]
    pub quantile: f32,
    /// Accepted for compatibility: codes are always in memory here.
    #[serde(default)]
    pub always_ram: Option<bool>,
}

fn default_quantile() -> f32 {
    0.99
}

impl Default for ScalarQuantization {
    fn default() -> Self {
        ScalarQuantization {
            quantile: default_quantile(),
            always_ram: None,
        }
    }
}

impl ScalarQuantization {
    pub fn validate(&self) -> Result<(), VectorError> {
        if !(0.5..=1.0).contains(&self.quantile) {
            return Err(VectorError::bad(format!(
                "quantization_config.scalar.quantile must be between 0.5 and 1.0, got {}",
                self.quantile
            )));
        }
        Ok(())
    }
}

/// Per-search quantization knobs, as in Qdrant's `params.quantization`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct QuantizationSearch {
    /// Walk the original vectors instead.
    #[serde(default)]
    pub ignore: bool,
    /// Re-rank the candidates with the original vectors.
    #[serde(default = "yes")]
    pub rescore: bool,
    /// Fetch `limit × oversampling` candidates before rescoring (≥ 1).
    #[serde(default)]
    pub oversampling: Option<f32>,
}

fn yes() -> bool {
    true
}

impl Default for QuantizationSearch {
    fn default() -> Self {
        QuantizationSearch {
            ignore: false,
            rescore: true,
            oversampling: None,
        }
    }
}

impl QuantizationSearch {
    pub fn validate(&self) -> Result<(), VectorError> {
        if let Some(o) = self.oversampling
            && !(o.is_finite() && (1.0..=100.0).contains(&o))
        {
            return Err(VectorError::bad(format!(
                "params.quantization.oversampling must be between 1 and 100, got {o}"
            )));
        }
        Ok(())
    }
}

/// Values sampled to find the range: enough for a stable 0.5% tail.
const SAMPLE_VALUES: usize = 200_000;

/// The byte codes of every vector of a [`VectorStore`], at the same
/// offsets.
#[derive(Debug, Clone)]
pub struct QuantizedVectors {
    config: ScalarQuantization,
    distance: Distance,
    dim: usize,
    lo: f32,
    step: f32,
    codes: Vec<u8>,
    /// offset → (Σq, Σq²)
    sums: Vec<(u32, u32)>,
    /// How many vectors the range was trained on.
    trained_on: usize,
}

/// A query encoded for one search.
pub struct QuantizedQuery {
    codes: Vec<u8>,
    sum: u32,
    sq: u32,
}

impl QuantizedVectors {
    pub fn new(config: ScalarQuantization, distance: Distance, dim: usize) -> Self {
        QuantizedVectors {
            config,
            distance,
            dim,
            lo: 0.0,
            step: 1.0,
            codes: Vec::new(),
            sums: Vec::new(),
            trained_on: 0,
        }
    }

    /// Brings the codes up to date with `vectors` (which only ever grows):
    /// encodes the vectors appended since the last call, or retrains on
    /// everything once the store has doubled since the range was chosen.
    pub fn sync(&mut self, vectors: &VectorStore) {
        let n = vectors.len();
        if n == 0 {
            return;
        }
        if self.trained_on == 0 || n >= 2 * self.trained_on {
            self.train(vectors);
            return;
        }
        for o in self.sums.len()..n {
            self.push(vectors.get(o as u32));
        }
    }

    /// Bytes held by the codes and their sums.
    pub fn memory_bytes(&self) -> usize {
        self.codes.capacity() + self.sums.capacity() * 8
    }

    /// The range `[lo, hi]` the codes cover.
    pub fn range(&self) -> (f32, f32) {
        (self.lo, self.lo + 255.0 * self.step)
    }

    fn train(&mut self, vectors: &VectorStore) {
        let n = vectors.len();
        let per = self.dim.max(1);
        let stride = (n * per).div_ceil(SAMPLE_VALUES).max(1);
        let mut sample: Vec<f32> = (0..n)
            .step_by(stride)
            .flat_map(|o| vectors.get(o as u32).iter().copied())
            .collect();
        let tail = (1.0 - self.config.quantile as f64) / 2.0;
        let last = sample.len() - 1;
        let lo_at = ((last as f64) * tail).floor() as usize;
        let hi_at = ((last as f64) * (1.0 - tail)).ceil() as usize;
        let lo = *sample.select_nth_unstable_by(lo_at, f32::total_cmp).1;
        let hi = *sample.select_nth_unstable_by(hi_at, f32::total_cmp).1;
        self.lo = lo;
        self.step = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        self.trained_on = n;
        self.codes.clear();
        self.sums.clear();
        self.codes.reserve(n * self.dim);
        self.sums.reserve(n);
        for o in 0..n {
            self.push(vectors.get(o as u32));
        }
    }

    fn push(&mut self, v: &[f32]) {
        let start = self.codes.len();
        self.codes.resize(start + self.dim, 0);
        let s = encode(self.lo, self.step, v, &mut self.codes[start..]);
        self.sums.push(s);
    }

    /// Whether every offset below `n` has a code.
    pub fn covers(&self, n: usize) -> bool {
        self.trained_on > 0 && self.sums.len() >= n
    }

    /// Encodes a (prepared) query; values outside the range are clamped.
    pub fn query(&self, q: &[f32]) -> QuantizedQuery {
        let mut codes = vec![0u8; self.dim];
        let (sum, sq) = encode(self.lo, self.step, q, &mut codes);
        QuantizedQuery { codes, sum, sq }
    }

    /// The approximate "lower is closer" distance between a query and the
    /// vector at `offset`, on the same scale as [`Distance::dist`].
    #[inline]
    pub fn dist(&self, q: &QuantizedQuery, offset: u32) -> f32 {
        let start = offset as usize * self.dim;
        let codes = &self.codes[start..start + self.dim];
        let (sum, sq) = self.sums[offset as usize];
        let prod = dot_u8(&q.codes, codes) as f32;
        let s = self.step;
        match self.distance {
            Distance::Cosine | Distance::Dot => {
                let d = self.dim as f32;
                let lo = self.lo;
                -(d * lo * lo + lo * s * (q.sum as f32 + sum as f32) + s * s * prod)
            }
            Distance::Euclid => s * s * (q.sq as f32 + sq as f32 - 2.0 * prod),
        }
    }
}

/// Encodes `v` into `out`; returns (Σq, Σq²).
fn encode(lo: f32, step: f32, v: &[f32], out: &mut [u8]) -> (u32, u32) {
    let inv = 1.0 / step;
    let (mut sum, mut sq) = (0u32, 0u32);
    for (x, o) in v.iter().zip(out.iter_mut()) {
        let q = ((x - lo) * inv).round().clamp(0.0, 255.0) as u8;
        *o = q;
        sum += q as u32;
        sq += (q as u32) * (q as u32);
    }
    (sum, sq)
}

/// `Σ a[i]·b[i]` over bytes. Fits a `u32` for any dimension up to 65,536.
#[inline]
pub fn dot_u8(a: &[u8], b: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2() {
            // SAFETY: the CPU has AVX2, checked above.
            return unsafe { dot_u8_avx2(a, b) };
        }
    }
    dot_u8_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn avx2() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let has = std::arch::is_x86_feature_detected!("avx2");
            HAS.store(if has { 1 } else { 2 }, Ordering::Relaxed);
            has
        }
    }
}

/// The portable loop, compiled with AVX2 so that the widening multiply-add
/// becomes `vpmaddwd` on 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_u8_avx2(a: &[u8], b: &[u8]) -> u32 {
    dot_u8_portable(a, b)
}

#[inline(always)]
fn dot_u8_portable(a: &[u8], b: &[u8]) -> u32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] as i16 as i32 * y[i] as i16 as i32;
        }
    }
    let mut tail = 0u32;
    for (x, y) in ra.iter().zip(rb) {
        tail += *x as u32 * *y as u32;
    }
    acc.iter().map(|&x| x as u32).sum::<u32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn byte_dot_matches_the_naive_sum() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [1, 15, 16, 17, 50, 384, 1_000] {
            let a: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let want: u32 = a.iter().zip(&b).map(|(x, y)| *x as u32 * *y as u32).sum();
            assert_eq!(dot_u8(&a, &b), want, "{n}");
            assert_eq!(dot_u8_portable(&a, &b), want, "{n}");
        }
        // The largest possible sum does not overflow.
        let big = vec![255u8; 65_536];
        assert_eq!(dot_u8(&big, &big), 255 * 255 * 65_536);
    }

    #[test]
    fn quantized_distances_track_the_true_ones() {
        let mut rng = StdRng::seed_from_u64(7);
        for distance in [Distance::Cosine, Distance::Dot, Distance::Euclid] {
            let dim = 64;
            let mut store = VectorStore::new(dim);
            for _ in 0..500 {
                let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-2.0..2.0)).collect();
                distance.prepare(&mut v);
                store.push(&v);
            }
            let mut qv = QuantizedVectors::new(ScalarQuantization::default(), distance, dim);
            qv.sync(&store);
            assert!(qv.covers(500));
            let mut q: Vec<f32> = (0..dim).map(|_| rng.random_range(-2.0..2.0)).collect();
            distance.prepare(&mut q);
            let qq = qv.query(&q);
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let longest = (0..500).map(|o| norm(store.get(o))).fold(0.0, f32::max);
            // Every distance here is at most (|q| + |v|)².
            let scale = (norm(&q) + longest).powi(2);
            let mut worst = 0.0f32;
            for o in 0..500 {
                let exact = distance.dist(&q, store.get(o));
                worst = worst.max((exact - qv.dist(&qq, o)).abs());
            }
            assert!(worst <= 0.01 * scale, "{distance:?}: {worst} vs {scale}");
            // The true nearest is among the five nearest by code.
            let nearest = (0..500u32)
                .min_by(|&a, &b| {
                    distance
                        .dist(&q, store.get(a))
                        .total_cmp(&distance.dist(&q, store.get(b)))
                })
                .unwrap();
            let mut by_code: Vec<u32> = (0..500).collect();
            by_code.sort_by(|&a, &b| qv.dist(&qq, a).total_cmp(&qv.dist(&qq, b)));
            assert!(by_code[..5].contains(&nearest), "{distance:?}");
        }
    }

    #[test]
    fn retrains_as_the_data_grows_and_encodes_appends() {
        let dim = 4;
        let mut store = VectorStore::new(dim);
        store.push(&[0.0, 0.1, 0.2, 0.3]);
        let mut qv = QuantizedVectors::new(
            ScalarQuantization {
                quantile: 1.0,
                always_ram: None,
            },
            Distance::Euclid,
            dim,
        );
        qv.sync(&store);
        assert_eq!(qv.range(), (0.0, 0.3));
        // A second vector doubles the store: the range widens to it.
        store.push(&[0.0, 0.0, 0.0, 3.0]);
        qv.sync(&store);
        let (lo, hi) = qv.range();
        assert_eq!(lo, 0.0);
        assert!((hi - 3.0).abs() < 1e-5);
        // A third is encoded within the range, clamped where outside it.
        store.push(&[-1.0, 0.75, 3.0, 9.0]);
        qv.sync(&store);
        assert!(qv.covers(3));
        assert_eq!(qv.range().1, hi);
        let q = qv.query(&[-1.0, 0.75, 3.0, 9.0]);
        assert_eq!(q.codes, vec![0, 64, 255, 255]);
    }

    #[test]
    fn bad_knobs_are_named() {
        let bad = ScalarQuantization {
            quantile: 0.2,
            always_ram: None,
        };
        assert!(bad.validate().unwrap_err().to_string().contains("quantile"));
        let over = QuantizationSearch {
            oversampling: Some(0.5),
            ..Default::default()
        };
        assert!(
            over.validate()
                .unwrap_err()
                .to_string()
                .contains("oversampling")
        );
    }
}
