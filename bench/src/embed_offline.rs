//! Offline embedding throughput of neocloud's engine, without HTTP: the
//! same batches the Python peers run (bench/embed_peers.py), same threads.
//!
//! embed-offline --model DIR --corpus FILE --batch-sizes 32,128 --repeats 5

/// Inference allocates and frees large tensors on every layer; mimalloc
/// reuses them where the system allocator maps and faults in fresh pages
/// (see `neocloud_runtime::keep_freed_pages`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use neocloud_runtime::{EmbedderOptions, SentenceEmbedder};

#[derive(Parser)]
struct Args {
    /// A sentence-transformers model folder.
    #[arg(long)]
    model: PathBuf,
    /// One sentence per line.
    #[arg(long)]
    corpus: PathBuf,
    #[arg(long, default_value = "32,128", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Passes over the corpus per batch size; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Write results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    neocloud_runtime::keep_freed_pages();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.corpus).context("reading the corpus")?;
    let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(!sentences.is_empty(), "the corpus is empty");
    let model = SentenceEmbedder::load(
        &args.model,
        &neocloud_runtime::default_device(),
        &EmbedderOptions::default(),
    )?;
    let threads = candle_threads();
    // Tokenize once: the peers' timings below include tokenization too, so
    // we time it as well, inside the loop.
    let mut results = Vec::new();
    for &bs in &args.batch_sizes {
        // Warm-up pass over a few batches.
        for chunk in sentences.chunks(bs).take(2) {
            model.embed_texts(chunk)?;
        }
        let mut rates = Vec::new();
        for _ in 0..args.repeats {
            let start = Instant::now();
            for chunk in sentences.chunks(bs) {
                model.embed_texts(chunk)?;
            }
            rates.push(sentences.len() as f64 / start.elapsed().as_secs_f64());
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        let median = rates[rates.len() / 2];
        println!(
            "neocloud batch={bs:<4} threads={threads} {median:>9.1} sentences/s (runs: {rates:.1?})"
        );
        results.push(serde_json::json!({
            "engine": "neocloud", "batch_size": bs, "threads": threads,
            "sentences_per_s": median, "runs": rates, "sentences": sentences.len(),
        }));
    }
    if let Some(out) = args.out {
        std::fs::write(&out, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}
