//! Hot CPU loops compiled three times (AVX-512, AVX2+FMA, baseline) and
//! picked at run time, so one portable binary still uses the widest vectors
//! the machine has. The bodies are plain Rust written to auto-vectorise:
//! fixed-width accumulators, no libm calls, no `mul_add` (a libm call on the
//! baseline target).

/// Defines `pub fn $name(args)` that dispatches to the best compiled copy
/// of `$body`.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? $body
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for v3.
                    return unsafe { v3($($arg),*) };
                }
            }
            fn base($($arg: $ty),*) $(-> $ret)? $body
            base($($arg),*)
        }
    };
}

/// erf(x) as a ratio of odd and even polynomials on [-4, 4] (|erf| is 1
/// within f32 precision outside). Max abs error ≈ 1e-7.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_2e-3;
    q = q * x2 + -1.426_474e-2;
    p / q
}

/// e^x for x ≤ 0 (softmax after subtracting the max): range reduction to
/// 2^n · e^r with |r| ≤ ln2/2 and a degree-6 polynomial. Relative error
/// ≈ 2e-7; underflows to 0 below -87.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    // Plain comparisons rather than f32::max/round/`as i32`: their NaN and
    // saturation rules keep LLVM from vectorising the loop around this.
    let x = if x < -87.0 { -87.0 } else { x };
    // Adding 1.5·2^23 rounds x·log2(e) to the nearest integer n and leaves
    // n in the low mantissa bits: bits(t) = 0x4B40_0000 + n.
    const SHIFTER: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    // Cody-Waite: ln 2 split in two so that n·ln2 is exact in f32.
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let mut p = 1.0 / 720.0_f32;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^n from the exponent field: (n + 127) << 23, with n ≥ -126 here.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    p * scale
}

multiversion! {
    /// `dst[i] = gelu(src[i] + bias[i % bias.len()])`, exact (erf) GELU.
    pub fn bias_gelu(src: &[f32], bias: &[f32], dst: &mut [f32]) {
        for ((d, s), row_bias) in dst
            .chunks_exact_mut(bias.len())
            .zip(src.chunks_exact(bias.len()))
            .map(|(d, s)| ((d, s), bias))
        {
            for ((d, &s), &b) in d.iter_mut().zip(s).zip(row_bias) {
                let v = s + b;
                *d = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }
}

multiversion! {
    /// Dot product with 16 independent lanes.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 16];
        let mut ca = a.chunks_exact(16);
        let mut cb = b.chunks_exact(16);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..16 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut sum = 0f32;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            sum += x * y;
        }
        acc.iter().sum::<f32>() + sum
    }
}

/// Where one head's q, k and v sit in packed QKV rows.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    /// Tokens in the sequence.
    pub len: usize,
    /// Floats per QKV row (3 × hidden).
    pub stride: usize,
    pub q_off: usize,
    pub k_off: usize,
    pub v_off: usize,
    /// Head dimension.
    pub d: usize,
}

multiversion! {
    /// One attention head of one sequence. `qkv` holds `len` rows of
    /// `stride` floats in which this head's q, k and v start at the offsets
    /// in `head`; `bias` is the QKV bias for a whole row.
    /// Writes the `[len, d]` context to `out`. `scratch` is reused between
    /// calls.
    ///
    /// K is transposed first so that a query's scores against every key are
    /// built as `d` vector multiply-adds across keys, with no horizontal sums.
    pub fn attention_head(
        qkv: &[f32],
        bias: &[f32],
        head: HeadLayout,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let HeadLayout { len, stride, q_off, k_off, v_off, d } = head;
        let scale = 1.0 / (d as f32).sqrt();
        scratch.clear();
        scratch.resize(2 * d * len + len + d, 0.0);
        let (kt, rest) = scratch.split_at_mut(d * len);
        let (v, rest) = rest.split_at_mut(d * len);
        let (scores, q) = rest.split_at_mut(len);
        let (qb, kb, vb) = (&bias[q_off..][..d], &bias[k_off..][..d], &bias[v_off..][..d]);
        for j in 0..len {
            let k = &qkv[j * stride + k_off..][..d];
            for (c, (&kv, &b)) in k.iter().zip(kb).enumerate() {
                kt[c * len + j] = kv + b;
            }
            let vr = &qkv[j * stride + v_off..][..d];
            for ((dst, &x), &b) in v[j * d..(j + 1) * d].iter_mut().zip(vr).zip(vb) {
                *dst = x + b;
            }
        }
        for i in 0..len {
            for ((dst, &x), &b) in q.iter_mut().zip(&qkv[i * stride + q_off..][..d]).zip(qb) {
                *dst = (x + b) * scale;
            }
            scores.fill(0.0);
            for (c, &qv) in q.iter().enumerate() {
                for (s, &k) in scores.iter_mut().zip(&kt[c * len..(c + 1) * len]) {
                    *s += qv * k;
                }
            }
            let max = scores
                .iter()
                .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = exp_nonpositive(*s - max);
                sum += *s;
            }
            let inv = 1.0 / sum;
            let o = &mut out[i * d..(i + 1) * d];
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let p = p * inv;
                for (o, &v) in o.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                    *o += p * v;
                }
            }
        }
    }
}

multiversion! {
    /// Post-LN residual block tail, fused: for each row,
    /// `out = LayerNorm(x + bias + residual) * gamma + beta`.
    pub fn bias_residual_layer_norm(
        x: &[f32],
        bias: &[f32],
        residual: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        let h = gamma.len();
        for ((o, xr), rr) in out
            .chunks_exact_mut(h)
            .zip(x.chunks_exact(h))
            .zip(residual.chunks_exact(h))
        {
            let mut sum = [0f32; 16];
            // First pass: v = x + b + r into `o`, and the row sum.
            for (i, ((o, (&xv, &bv)), &rv)) in
                o.iter_mut().zip(xr.iter().zip(bias)).zip(rr).enumerate()
            {
                let v = xv + bv + rv;
                *o = v;
                sum[i % 16] += v;
            }
            let mean = sum.iter().sum::<f32>() / h as f32;
            let mut sq = [0f32; 16];
            for (i, &v) in o.iter().enumerate() {
                let c = v - mean;
                sq[i % 16] += c * c;
            }
            let var = sq.iter().sum::<f32>() / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((o, &g), &b) in o.iter_mut().zip(gamma).zip(beta) {
                *o = (*o - mean) * inv * g + b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        let mut x = -6.0f32;
        while x <= 6.0 {
            worst = worst.max((erf(x) - libm::erff(x)).abs());
            x += 0.001;
        }
        assert!(worst < 5e-7, "max abs error {worst}");
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x <= 0.0 {
            let (a, b) = (exp_nonpositive(x), x.exp());
            worst = worst.max((a - b).abs() / b.max(f32::MIN_POSITIVE));
            x += 0.0013;
        }
        assert!(worst < 1e-6, "max rel error {worst}");
        assert_eq!(exp_nonpositive(-200.0), exp_nonpositive(-87.0));
    }

    #[test]
    fn fused_layer_norm_matches_the_definition() {
        let h = 40;
        let x: Vec<f32> = (0..2 * h).map(|i| (i as f32 * 0.37).sin()).collect();
        let r: Vec<f32> = (0..2 * h).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..h).map(|i| i as f32 * 0.01).collect();
        let g: Vec<f32> = (0..h).map(|i| 1.0 + i as f32 * 0.02).collect();
        let be: Vec<f32> = (0..h).map(|i| -(i as f32) * 0.03).collect();
        let mut out = vec![0f32; 2 * h];
        bias_residual_layer_norm(&x, &b, &r, &g, &be, 1e-12, &mut out);
        for row in 0..2 {
            let v: Vec<f64> = (0..h)
                .map(|i| (x[row * h + i] + b[i] + r[row * h + i]) as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / h as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / h as f64;
            for i in 0..h {
                let want = (v[i] - mean) / (var + 1e-12).sqrt() * g[i] as f64 + be[i] as f64;
                assert!((out[row * h + i] as f64 - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn dot_handles_remainders() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let want: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), want);
    }
}
