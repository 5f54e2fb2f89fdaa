//! Fused CPU ops for the packed BERT forward pass, as candle custom ops.
//!
//! - [`packed_attention`]: each (sequence, head) pair is an independent task
//!   on the rayon pool, computed straight from the packed `[total_tokens,
//!   3 * hidden]` QKV matrix: no padding, no mask, no gather, and one
//!   parallel loop instead of thousands of tiny matmul calls.
//! - [`bias_gelu`]: bias add and exact GELU in one pass.
//! - [`bias_residual_layer_norm`]: bias add, residual add and LayerNorm in
//!   one pass.
//!
//! Each reads its input once and writes its output once; the arithmetic is
//! in [`crate::simd`].

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::simd;

/// Rows per parallel task for the row-wise ops.
const ROWS_PER_TASK: usize = 16;

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let Some((lo, hi)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok(&data[lo..hi])
}

struct PackedAttention<'a> {
    lengths: &'a [usize],
    bias: &'a [f32],
    heads: usize,
    head_dim: usize,
}

/// The output buffer, shared by tasks that each write a disjoint block of
/// it: their sequence's rows, their head's columns.
struct SharedOut(*mut f32, usize);
// SAFETY: tasks write disjoint regions; the buffer outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The `len` floats at `offset`.
    ///
    /// # Safety
    /// No other live slice may overlap `offset..offset + len`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn segment(&self, offset: usize, len: usize) -> &mut [f32] {
        assert!(offset + len <= self.1, "segment out of bounds");
        // SAFETY: in bounds (checked above); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "neocloud-packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32_slice(storage, layout, self.name())?;
        let (d, h) = (self.head_dim, self.heads * self.head_dim);
        let total: usize = self.lengths.iter().sum();
        if layout.dims() != [total, 3 * h] || self.bias.len() != 3 * h {
            candle_core::bail!(
                "packed attention: QKV has shape {:?} and bias {}, expected [{total}, {}]",
                layout.dims(),
                self.bias.len(),
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
        let mut out = vec![0f32; total * h];
        let shared = SharedOut(out.as_mut_ptr(), out.len());
        tasks.par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, ctx), &(s, hd)| {
                let (start, len) = (starts[s], self.lengths[s]);
                ctx.clear();
                ctx.resize(len * d, 0.0);
                simd::attention_head(
                    &qkv[start * 3 * h..(start + len) * 3 * h],
                    self.bias,
                    simd::HeadLayout {
                        len,
                        stride: 3 * h,
                        q_off: hd * d,
                        k_off: h + hd * d,
                        v_off: 2 * h + hd * d,
                        d,
                    },
                    scratch,
                    ctx,
                );
                for t in 0..len {
                    // SAFETY: row start+t, columns hd*d..hd*d+d belong to this
                    // (sequence, head) task alone.
                    let row = unsafe { shared.segment((start + t) * h + hd * d, d) };
                    row.copy_from_slice(&ctx[t * d..(t + 1) * d]);
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((total, h))))
    }
}

/// Attention context `[total, hidden]` from packed QKV `[total, 3 * hidden]`
/// before its bias, which is added here.
pub fn packed_attention(
    qkv: &Tensor,
    bias: &[f32],
    lengths: &[usize],
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1_no_bwd(&PackedAttention {
        lengths,
        bias,
        heads,
        head_dim,
    })
}

struct BiasGelu<'a> {
    bias: &'a [f32],
}

impl CustomOp1 for BiasGelu<'_> {
    fn name(&self) -> &'static str {
        "neocloud-bias-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, self.name())?;
        let n = self.bias.len();
        if layout.dims().last() != Some(&n) {
            candle_core::bail!("bias_gelu: last dim of {:?} is not {n}", layout.dims())
        }
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(src.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(o, s)| simd::bias_gelu(s, self.bias, o));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `gelu(x + bias)` with the exact erf GELU, over rows of `x`.
pub fn bias_gelu(x: &Tensor, bias: &[f32]) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&BiasGelu { bias })
}

struct BiasResidualLayerNorm<'a> {
    bias: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

impl CustomOp2 for BiasResidualLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "neocloud-bias-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let residual = f32_slice(s2, l2, self.name())?;
        let h = self.gamma.len();
        if l1.dims() != l2.dims() || l1.dims().last() != Some(&h) {
            candle_core::bail!(
                "layer norm: shapes {:?} and {:?} do not match hidden size {h}",
                l1.dims(),
                l2.dims()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .zip(residual.par_chunks(h * ROWS_PER_TASK))
            .for_each(|((o, x), r)| {
                simd::bias_residual_layer_norm(x, self.bias, r, self.gamma, self.beta, self.eps, o)
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `LayerNorm(x + bias + residual)` over rows.
pub fn bias_residual_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(
        &residual.contiguous()?,
        &BiasResidualLayerNorm {
            bias,
            gamma,
            beta,
            eps,
        },
    )
}
