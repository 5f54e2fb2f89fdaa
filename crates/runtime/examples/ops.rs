use candle_core::{Device, Tensor};
use std::time::Instant;
fn time<F: FnMut()>(name: &str, mut f: F) {
    for _ in 0..3 {
        f();
    }
    let iters = 30;
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    println!(
        "{name}: {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / iters as f64
    );
}
fn main() {
    let dev = Device::Cpu;
    let t = 480usize;
    let x = Tensor::randn(0f32, 1.0, (t, 384), &dev).unwrap();
    let big = Tensor::randn(0f32, 1.0, (t, 1536), &dev).unwrap();
    let qkv = Tensor::randn(0f32, 1.0, (t, 1152), &dev).unwrap();
    let b384 = Tensor::randn(0f32, 1.0, 384, &dev).unwrap();
    let b1536 = Tensor::randn(0f32, 1.0, 1536, &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, 384, &dev).unwrap();
    time("bias add 384", || {
        x.broadcast_add(&b384).unwrap();
    });
    time("bias add 1536", || {
        big.broadcast_add(&b1536).unwrap();
    });
    time("residual add", || {
        (&x + &x).unwrap();
    });
    time("layer_norm", || {
        candle_nn::ops::layer_norm(&x, &w, &b384, 1e-12).unwrap();
    });
    let bias_host = b1536.to_vec1::<f32>().unwrap();
    time("bias+gelu fused", || {
        neocloud_runtime::attention::bias_gelu(&big, &bias_host).unwrap();
    });
    let (g, bb) = (w.to_vec1::<f32>().unwrap(), b384.to_vec1::<f32>().unwrap());
    time("bias+residual+layer_norm fused", || {
        neocloud_runtime::attention::bias_residual_layer_norm(&x, &x, &bb, &g, &bb, 1e-12).unwrap();
    });
    time("gelu candle", || {
        big.gelu_erf().unwrap();
    });
    let lens = vec![15usize; 32];
    time("attention packed", || {
        neocloud_runtime::attention::packed_attention(&qkv, &vec![0f32; 1152], &lens, 12, 32)
            .unwrap();
    });
    let emb = Tensor::randn(0f32, 1.0, (30522, 384), &dev).unwrap();
    let ids = Tensor::from_vec((0..t as u32).collect::<Vec<_>>(), t, &dev).unwrap();
    time("index_select", || {
        emb.index_select(&ids, 0).unwrap();
    });
}
