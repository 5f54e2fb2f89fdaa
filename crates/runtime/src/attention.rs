//! Self-attention over a packed batch as one candle custom op.
//!
//! Each (sequence, head) pair is an independent task on the rayon pool: its
//! scores, softmax and weighted sum are computed straight from the packed
//! `[total_tokens, 3 * hidden]` QKV matrix, so no padding, no mask and no
//! gather is ever formed, and a batch of short sentences costs one parallel
//! loop rather than thousands of tiny matmul calls.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub struct PackedAttention<'a> {
    pub lengths: &'a [usize],
    pub heads: usize,
    pub head_dim: usize,
}

/// Dot product with independent accumulators so that it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

impl PackedAttention<'_> {
    /// One head of one sequence: returns its `[len, head_dim]` context.
    fn head(&self, qkv: &[f32], start: usize, len: usize, head: usize) -> Vec<f32> {
        let (d, h) = (self.head_dim, self.heads * self.head_dim);
        let stride = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let q_at = |t: usize| &qkv[(start + t) * stride + head * d..][..d];
        let k_at = |t: usize| &qkv[(start + t) * stride + h + head * d..][..d];
        let v_at = |t: usize| &qkv[(start + t) * stride + 2 * h + head * d..][..d];
        let mut out = vec![0f32; len * d];
        let mut scores = vec![0f32; len];
        for i in 0..len {
            let q = q_at(i);
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(q, k_at(j)) * scale;
                max = max.max(*s);
            }
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            let o = &mut out[i * d..(i + 1) * d];
            for (j, &p) in scores.iter().enumerate() {
                let p = p * inv;
                for (o, &v) in o.iter_mut().zip(v_at(j)) {
                    *o += p * v;
                }
            }
        }
        out
    }
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "neocloud-packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("packed attention: only f32 is supported")
        };
        let Some((lo, hi)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed attention: QKV must be contiguous")
        };
        let qkv = &data[lo..hi];
        let h = self.heads * self.head_dim;
        let total: usize = self.lengths.iter().sum();
        if layout.dims() != [total, 3 * h] {
            candle_core::bail!(
                "packed attention: QKV has shape {:?}, expected [{total}, {}]",
                layout.dims(),
                3 * h
            )
        }
        let mut starts = Vec::with_capacity(self.lengths.len());
        let mut at = 0;
        for &len in self.lengths {
            starts.push(at);
            at += len;
        }
        let tasks: Vec<(usize, usize)> = (0..self.lengths.len())
            .flat_map(|s| (0..self.heads).map(move |hd| (s, hd)))
            .collect();
        let contexts: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(s, hd)| self.head(qkv, starts[s], self.lengths[s], hd))
            .collect();
        let d = self.head_dim;
        let mut out = vec![0f32; total * h];
        for (&(s, hd), ctx) in tasks.iter().zip(&contexts) {
            for t in 0..self.lengths[s] {
                let row = starts[s] + t;
                out[row * h + hd * d..][..d].copy_from_slice(&ctx[t * d..(t + 1) * d]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((total, h))))
    }
}

/// Attention context `[total, hidden]` from packed QKV `[total, 3 * hidden]`.
pub fn packed_attention(
    qkv: &Tensor,
    lengths: &[usize],
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&PackedAttention {
        lengths,
        heads,
        head_dim,
    })
}
