//! Distances between vectors and the kernels that compute them.
//!
//! Internally every distance is "lower is closer" (`dist`): the negated dot
//! product for Cosine (on unit vectors) and Dot, the squared L2 distance for
//! Euclid. Scores shown to users follow Qdrant: similarity (higher is
//! better) for Cosine and Dot, the L2 distance (lower is better) for Euclid.

use serde::{Deserialize, Serialize};

/// A collection's distance, spelled as in Qdrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    Cosine,
    Dot,
    Euclid,
}

impl Distance {
    /// Turns a vector into its stored form: unit length for Cosine (a zero
    /// vector stays zero), unchanged otherwise.
    pub fn prepare(self, v: &mut [f32]) {
        if self == Distance::Cosine {
            let norm = dot(v, v).sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }

    /// "Lower is closer" distance between two stored vectors.
    #[inline]
    pub fn dist(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => -dot(a, b),
            Distance::Euclid => l2_squared(a, b),
        }
    }

    /// The score users see for an internal distance.
    #[inline]
    pub fn score(self, dist: f32) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => -dist,
            Distance::Euclid => dist.max(0.0).sqrt(),
        }
    }

    /// Whether a higher user-facing score is better (Cosine, Dot).
    pub fn higher_is_better(self) -> bool {
        self != Distance::Euclid
    }
}

/// Dot product. Eight independent accumulators let the compiler keep the
/// loop in vector registers without reassociating floating-point sums.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// Squared Euclidean distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        tail += d * d;
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_the_naive_sums() {
        for n in [1, 7, 8, 9, 50, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let l: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((dot(&a, &b) - d).abs() < 1e-4 * (1.0 + d.abs()), "{n}");
            assert!((l2_squared(&a, &b) - l).abs() < 1e-4 * (1.0 + l), "{n}");
        }
    }

    #[test]
    fn scores_follow_qdrant() {
        let mut a = vec![3.0, 4.0];
        Distance::Cosine.prepare(&mut a);
        assert!((a[0] - 0.6).abs() < 1e-6);
        assert!((Distance::Cosine.score(Distance::Cosine.dist(&a, &a)) - 1.0).abs() < 1e-6);
        let (x, y) = ([0.0, 0.0], [3.0, 4.0]);
        assert_eq!(Distance::Euclid.score(Distance::Euclid.dist(&x, &y)), 5.0);
        assert_eq!(Distance::Dot.score(Distance::Dot.dist(&y, &y)), 25.0);
        assert_eq!(
            serde_json::from_str::<Distance>("\"Euclid\"").unwrap(),
            Distance::Euclid
        );
    }
}
