/// Inference allocates and frees large tensors on every layer; mimalloc
/// reuses them where the system allocator maps and faults in fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let m = neocloud_runtime::SentenceEmbedder::load(
        std::path::Path::new(&args[1]),
        &candle_core::Device::Cpu,
        &Default::default(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&args[2]).unwrap();
    let s: Vec<&str> = text.lines().collect();
    let t = Instant::now();
    let ids: Vec<Vec<u32>> = s.iter().map(|x| m.tokenize(x, true).unwrap()).collect();
    println!(
        "tokenize all: {:.1} ms; avg tokens {:.1}",
        t.elapsed().as_secs_f64() * 1e3,
        ids.iter().map(|v| v.len()).sum::<usize>() as f64 / ids.len() as f64
    );
    for bs in [32, 128] {
        let t = Instant::now();
        for c in ids.chunks(bs) {
            let r: Vec<&[u32]> = c.iter().map(|v| v.as_slice()).collect();
            m.embed_ids(&r).unwrap();
        }
        println!("bs {bs}: embed {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}
