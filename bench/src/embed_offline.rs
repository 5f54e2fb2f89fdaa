//! Offline embedding throughput of neocloud's engine, without HTTP: the
//! same batches the Python peers run (bench/embed_peers.py), same threads.
//!
//! embed-offline --model DIR --corpus FILE --batch-sizes 32,128 --repeats 5
//!
//! With `--stdio` it is an engine that bench/embed_peers.py drives in its
//! round-robin next to the peers: each stdin line is a JSON request
//! `{"batch_size": N, "sentences": [...]?, "return_vectors": bool}` (the
//! sentences are kept until a request sends new ones), each stdout line the
//! answer `{"n": COUNT, "vectors": [[...]] | null}`.

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
    #[arg(long, required_unless_present = "stdio")]
    corpus: Option<PathBuf>,
    /// Serve embedding passes over stdin/stdout (see the module docs).
    #[arg(long)]
    stdio: bool,
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
    let model = SentenceEmbedder::load(
        &args.model,
        &neocloud_runtime::default_device(),
        &EmbedderOptions::default(),
    )?;
    if args.stdio {
        return serve_stdio(&model);
    }
    let corpus = args.corpus.context("--corpus is required")?;
    let text = std::fs::read_to_string(&corpus).context("reading the corpus")?;
    let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    anyhow::ensure!(!sentences.is_empty(), "the corpus is empty");
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

/// One pass over `sentences` in batches of `batch_size`, in order.
fn embed_all(
    model: &SentenceEmbedder,
    sentences: &[String],
    batch_size: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(batch_size.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        out.extend(model.embed_texts(&refs)?);
    }
    Ok(out)
}

fn serve_stdio(model: &SentenceEmbedder) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut sentences: Vec<String> = Vec::new();
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let req: serde_json::Value = serde_json::from_str(&line?).context("a JSON request")?;
        if let Some(list) = req.get("sentences").and_then(|v| v.as_array()) {
            sentences = list
                .iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect();
        }
        let batch_size = req.get("batch_size").and_then(|v| v.as_u64()).unwrap_or(32) as usize;
        let vectors = embed_all(model, &sentences, batch_size)?;
        let want = req.get("return_vectors").and_then(|v| v.as_bool()) == Some(true);
        let answer = serde_json::json!({
            "n": vectors.len(),
            "vectors": if want { serde_json::json!(vectors) } else { serde_json::Value::Null },
        });
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, &answer)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}
