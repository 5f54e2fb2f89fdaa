//! The continuous-batching engine around one llama.cpp context.

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use super::stop::StopScanner;
use super::template::ChatTemplate;
use crate::RuntimeError;

/// `llama_flash_attn_type`'s value for "off".
const LLAMA_FLASH_ATTN_TYPE_DISABLED: i32 = 0;

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend, RuntimeError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| RuntimeError::Engine(format!("llama.cpp backend: {e}")))
}

/// Engine sizing. Defaults suit a small model on a few CPU cores.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// KV-cache cells shared by all sequences.
    pub kv_cells: u32,
    /// Most sequences decoding at once.
    pub max_seqs: u32,
    /// Most tokens in one decode step (decodes plus prefill chunks).
    pub step_tokens: u32,
    /// `max_tokens` for requests that do not set it.
    pub default_max_tokens: usize,
    /// Most requests waiting for admission; past it, `QueueFull`.
    pub max_waiting: usize,
    /// CPU threads for llama.cpp (default: all cores).
    pub threads: Option<i32>,
    /// One KV cache shared by all sequences (any sequence may grow to the
    /// whole cache) instead of an equal slice per sequence. Shared cells
    /// interleave sequences, so a sequence's attention sums run in an order
    /// that depends on its neighbours and greedy output can change with
    /// batch composition; per-sequence slices keep it identical.
    pub unified_kv: bool,
    /// Reuse the KV cells of a prompt prefix that a running or finished
    /// sequence already computed (see [`Scheduler::admit`]).
    pub prefix_caching: bool,
    /// A Jinja chat template to use instead of the GGUF's
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            kv_cells: 32_768,
            max_seqs: 16,
            step_tokens: 512,
            default_max_tokens: 1024,
            max_waiting: 1024,
            threads: None,
            unified_kv: false,
            prefix_caching: true,
            chat_template: None,
        }
    }
}

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_tokens: Option<usize>,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no top-k cut.
    pub top_k: i32,
    pub seed: Option<u32>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a request hears back, in order: text deltas, then one `Done` or
/// one `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Text(String),
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

/// A tokenized prompt and how to continue it.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<i32>,
    pub params: SamplingParams,
}

struct Waiting {
    req: GenerateRequest,
    max_new: usize,
    events: mpsc::UnboundedSender<GenEvent>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    shutdown: bool,
}

/// Figures the server exports (vLLM's metric names).
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    pub kv_used: usize,
    pub kv_cells: usize,
    /// Prompt tokens admitted while prefix caching was on (cumulative).
    pub prefix_queries: u64,
    /// Of those, tokens whose KV was reused instead of computed.
    pub prefix_hits: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: Mutex<EngineStats>,
}

/// A GGUF model served with continuous batching.
pub struct LlmEngine {
    model: Arc<LlamaModel>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    config: LlmConfig,
    max_context: usize,
    template: Option<ChatTemplate>,
}

impl LlmEngine {
    /// Loads a GGUF file and starts the engine thread.
    pub fn load(path: &Path, config: LlmConfig) -> Result<LlmEngine, RuntimeError> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| RuntimeError::load(path, e))?;
        let model = Arc::new(model);
        let per_seq = if config.unified_kv {
            config.kv_cells
        } else {
            config.kv_cells / config.max_seqs.max(1)
        };
        let max_context = (model.n_ctx_train() as usize).min(per_seq as usize);
        let source = match &config.chat_template {
            Some(src) => Some(src.clone()),
            None => model.meta_val_str("tokenizer.chat_template").ok(),
        };
        let template = match source {
            Some(src) => {
                let vocab = model.vocab();
                let piece = |t: LlamaToken| {
                    String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
                };
                Some(
                    ChatTemplate::new(&src, &piece(vocab.bos()), &piece(vocab.eos()))
                        .map_err(|e| RuntimeError::load(path, e))?,
                )
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stats: Mutex::new(EngineStats {
                kv_cells: config.kv_cells as usize,
                ..Default::default()
            }),
        });
        // The context is created on the engine thread, which owns it; wait
        // for that to succeed before reporting the model loaded.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (model, shared, config) = (model.clone(), shared.clone(), config.clone());
            std::thread::Builder::new()
                .name("llm-engine".into())
                .spawn(move || {
                    let ctx = match new_context(&model, backend, &config) {
                        Ok(ctx) => {
                            let _ = ready_tx.send(Ok(()));
                            ctx
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    Scheduler::new(&model, ctx, &shared, &config).run();
                })
                .map_err(|e| RuntimeError::Engine(format!("spawning the engine thread: {e}")))?
        };
        ready_rx
            .recv()
            .map_err(|_| RuntimeError::Engine("the engine thread died".into()))??;
        Ok(LlmEngine {
            model,
            shared,
            thread: Mutex::new(Some(thread)),
            config,
            max_context,
            template,
        })
    }

    /// The model's chat template, if its GGUF carries one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Most tokens (prompt plus completion) one sequence may hold.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    pub fn n_vocab(&self) -> usize {
        self.model.n_vocab().max(0) as usize
    }

    /// Token ids of `text`; `add_special` adds BOS where the model wants it.
    /// Special-token text (e.g. `<|im_start|>`) is parsed as those tokens.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// Text of `ids`, special tokens rendered.
    pub fn detokenize(&self, ids: &[i32]) -> Result<String, RuntimeError> {
        let n = self.n_vocab();
        if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= n) {
            return Err(RuntimeError::InvalidTokenId {
                id: bad.max(0) as u32,
                vocab: n,
            });
        }
        let tokens: Vec<LlamaToken> = ids.iter().map(|&i| LlamaToken(i)).collect();
        let bytes = self.model.vocab().detokenize(&tokens, false, true);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Queues a request; its events arrive on the returned receiver.
    /// Dropping the receiver cancels the request and frees its sequence.
    pub fn submit(
        &self,
        req: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<GenEvent>, RuntimeError> {
        let prompt = req.prompt.len();
        if prompt == 0 {
            return Err(RuntimeError::Tokenize("the prompt is empty".into()));
        }
        if let Some(&bad) = req
            .prompt
            .iter()
            .find(|&&i| i < 0 || i as usize >= self.n_vocab())
        {
            return Err(RuntimeError::InvalidTokenId {
                id: bad.max(0) as u32,
                vocab: self.n_vocab(),
            });
        }
        if prompt >= self.max_context {
            return Err(RuntimeError::InputTooLong {
                tokens: prompt,
                max: self.max_context - 1,
            });
        }
        let room = self.max_context - prompt;
        let max_new = req
            .params
            .max_tokens
            .unwrap_or(self.config.default_max_tokens)
            .min(room);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.shutdown {
                return Err(RuntimeError::ShuttingDown);
            }
            if q.waiting.len() >= self.config.max_waiting {
                return Err(RuntimeError::QueueFull {
                    depth: q.waiting.len(),
                    retry_after: std::time::Duration::from_secs(1),
                });
            }
            q.waiting.push_back(Waiting {
                req,
                max_new,
                events: tx,
            });
        }
        self.shared.wake.notify_one();
        Ok(rx)
    }

    pub fn stats(&self) -> EngineStats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finishes running sequences, refuses new ones, stops the thread.
    pub fn shutdown(&self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for LlmEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn new_context<'m>(
    model: &'m LlamaModel,
    backend: &LlamaBackend,
    config: &LlmConfig,
) -> Result<LlamaContext<'m>, RuntimeError> {
    let threads = config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as i32)
            .unwrap_or(1)
    });
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.kv_cells))
        .with_n_batch(config.step_tokens)
        .with_n_ubatch(config.step_tokens)
        .with_n_seq_max(config.max_seqs)
        .with_kv_unified(config.unified_kv)
        // llama.cpp's CPU flash attention picks a tiled kernel for ubatches
        // of many tokens, a vector kernel for few and splits the KV across
        // threads for one, and each sums in a different order. A prompt's
        // logits would then depend on how its prefill was chunked and on
        // whether its prefix came from the cache. The plain path (KQ matmul,
        // softmax, KQV matmul) computes every row the same way at any batch
        // size; it is also llama-cpp-python's default.
        .with_flash_attention_policy(LLAMA_FLASH_ATTN_TYPE_DISABLED)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    model
        .new_context(backend, params)
        .map_err(|e| RuntimeError::Engine(format!("creating the llama.cpp context: {e}")))
}

struct Running {
    seq: i32,
    prompt: Vec<i32>,
    /// Every token whose KV this sequence holds, in position order.
    tokens: Vec<i32>,
    prefilled: usize,
    pos: i32,
    generated: usize,
    max_new: usize,
    reserved: usize,
    last: Option<LlamaToken>,
    /// Admission order: prompts are prefilled first come, first served.
    admitted: u64,
    sampler: LlamaSampler,
    scanner: StopScanner,
    events: mpsc::UnboundedSender<GenEvent>,
}

/// A finished sequence whose KV cells are kept for prefix reuse until its
/// sequence id or its cells are needed.
struct Idle {
    seq: i32,
    tokens: Vec<i32>,
    last_used: u64,
}

/// Where an admitted prompt's cached prefix comes from.
#[derive(Clone, Copy)]
enum PrefixSource {
    /// An idle sequence, taken over in place (no copy).
    Idle(usize),
    /// A running sequence, copied into the new one.
    Running(usize),
}

/// Shortest prefix worth taking over an idle sequence for.
const MIN_REUSE_TOKENS: usize = 16;
/// Shortest prefix worth a copy between per-sequence KV streams, which
/// moves the whole stream (every layer, all its cells): at 64 tokens that
/// is already cheaper than computing them.
const MIN_STREAM_COPY_TOKENS: usize = 64;

struct Scheduler<'m, 's> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    shared: &'s Shared,
    config: &'s LlmConfig,
    /// Sequence ids holding nothing. Ids are handed out lowest first (see
    /// [`Scheduler::take_seq`]).
    free_seqs: BTreeSet<i32>,
    running: Vec<Running>,
    reserved: usize,
    idle: Vec<Idle>,
    idle_cells: usize,
    clock: u64,
    prefix_queries: u64,
    prefix_hits: u64,
}

fn sampler_for(model: &LlamaModel, p: &SamplingParams) -> LlamaSampler {
    let mut chain = Vec::new();
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        // Over everything generated so far (last_n = -1: the context).
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            -1,
            1.0,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(p.seed.unwrap_or_else(rand_seed)));
    }
    LlamaSampler::chain_simple(chain)
}

fn rand_seed() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u32
}

impl<'m, 's> Scheduler<'m, 's> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        shared: &'s Shared,
        config: &'s LlmConfig,
    ) -> Self {
        Scheduler {
            model,
            ctx,
            shared,
            config,
            free_seqs: (0..config.max_seqs as i32).collect(),
            running: Vec::new(),
            reserved: 0,
            idle: Vec::new(),
            idle_cells: 0,
            clock: 0,
            prefix_queries: 0,
            prefix_hits: 0,
        }
    }

    fn run(mut self) {
        let mut batch = LlamaBatch::new(
            self.config.step_tokens as usize,
            self.config.max_seqs as i32,
        );
        loop {
            if !self.admit() {
                return;
            }
            if self.drop_cancelled() {
                self.publish_stats();
            }
            if self.running.is_empty() {
                continue;
            }
            let owners = self.fill(&mut batch);
            if batch.n_tokens() == 0 {
                continue;
            }
            if let Err(e) = self.ctx.decode(&mut batch) {
                let msg = format!("llama.cpp decode failed: {e}");
                for r in std::mem::take(&mut self.running) {
                    let _ = r.events.send(GenEvent::Error(msg.clone()));
                    self.release(r.seq, r.reserved);
                }
                continue;
            }
            self.sample(&owners);
            self.publish_stats();
        }
    }

    /// Moves waiting requests into free sequences while the KV cache has
    /// room for their prompt plus completion. Blocks while there is nothing
    /// to do. Returns false once shut down and drained.
    ///
    /// With prefix caching, a prompt starts from the longest prefix of it
    /// that some sequence's KV already holds: an idle (finished) sequence is
    /// taken over in place and trimmed to the prefix; a running one is
    /// copied. Either way the prefix's cells keep their positions, so the
    /// continuation computes exactly what a fresh prefill would.
    fn admit(&mut self) -> bool {
        let shared = self.shared;
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        while self.running.is_empty() && q.waiting.is_empty() {
            if q.shutdown {
                return false;
            }
            q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        let kv_cells = self.config.kv_cells as usize;
        while let Some(front) = q.waiting.front() {
            if front.events.is_closed() {
                q.waiting.pop_front();
                continue;
            }
            let need = front.req.prompt.len() + front.max_new;
            let hit = if self.config.prefix_caching {
                self.best_prefix(&front.req.prompt)
            } else {
                None
            };
            // Take the idle sequence to reuse out of the pool first, so that
            // making room below cannot evict it.
            let mut reuse = None;
            let mut copy_from = None;
            match hit {
                Some((PrefixSource::Idle(j), len)) => {
                    let e = self.idle.swap_remove(j);
                    self.idle_cells -= e.tokens.len();
                    reuse = Some((e, len));
                }
                Some((PrefixSource::Running(i), len)) => {
                    copy_from = Some((self.running[i].seq, len))
                }
                None => {}
            }
            let mut room = reuse.is_some() || !self.free_seqs.is_empty() || !self.idle.is_empty();
            while room && self.reserved + need + self.shared_idle_cells() > kv_cells {
                room = self.evict_lru();
            }
            if !room {
                if let Some((e, _)) = reuse {
                    self.idle_cells += e.tokens.len();
                    self.idle.push(e);
                }
                break;
            }
            let Some(w) = q.waiting.pop_front() else {
                break;
            };
            let (seq, cached) = match (reuse, copy_from) {
                (Some((e, len)), _) => {
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(e.seq as u32), Some(len as u32), None);
                    (e.seq, len)
                }
                (None, copy) => {
                    let Some(seq) = self.take_seq() else {
                        unreachable!("room was made for a sequence");
                    };
                    match copy {
                        Some((src, len)) => {
                            // Within one stream this only shares cells; across
                            // per-sequence streams llama.cpp copies the stream
                            // before the next decode. Then drop what follows
                            // the shared prefix.
                            let _ = self.ctx.copy_kv_cache_seq(src, seq, None, None);
                            let _ = self.ctx.clear_kv_cache_seq(
                                Some(seq as u32),
                                Some(len as u32),
                                None,
                            );
                            (seq, len)
                        }
                        None => (seq, 0),
                    }
                }
            };
            if self.config.prefix_caching {
                self.prefix_queries += w.req.prompt.len() as u64;
                self.prefix_hits += cached as u64;
            }
            self.reserved += need;
            self.running.push(Running {
                seq,
                sampler: sampler_for(self.model, &w.req.params),
                scanner: StopScanner::new(w.req.params.stop.clone()),
                tokens: w.req.prompt[..cached].to_vec(),
                prompt: w.req.prompt,
                prefilled: cached,
                pos: cached as i32,
                generated: 0,
                max_new: w.max_new,
                reserved: need,
                last: None,
                admitted: self.clock,
                events: w.events,
            });
            self.clock += 1;
        }
        let waiting = q.waiting.len();
        drop(q);
        let mut stats = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.waiting = waiting;
        stats.running = self.running.len();
        stats.prefix_queries = self.prefix_queries;
        stats.prefix_hits = self.prefix_hits;
        true
    }

    /// The longest cached prefix of `prompt` worth reusing, leaving at least
    /// one prompt token to compute (its logits give the first new token).
    /// Ties go to idle sequences, which need no copy.
    fn best_prefix(&self, prompt: &[i32]) -> Option<(PrefixSource, usize)> {
        let cap = prompt.len().saturating_sub(1);
        let common = |tokens: &[i32]| {
            tokens
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
                .min(cap)
        };
        let min_copy = if self.config.unified_kv {
            MIN_REUSE_TOKENS
        } else {
            MIN_STREAM_COPY_TOKENS
        };
        let idle = self
            .idle
            .iter()
            .enumerate()
            .map(|(j, e)| (PrefixSource::Idle(j), common(&e.tokens)))
            .filter(|&(_, n)| n >= MIN_REUSE_TOKENS);
        let running = self
            .running
            .iter()
            .enumerate()
            .map(|(i, r)| (PrefixSource::Running(i), common(&r.tokens)))
            .filter(|&(_, n)| n >= min_copy);
        // Longest first; then idle (no copy); then the lowest id, which keeps
        // running sequences packed (see `take_seq`).
        let rank = |&(src, n): &(PrefixSource, usize)| match src {
            PrefixSource::Idle(j) => (n, 1, -self.idle[j].seq),
            PrefixSource::Running(i) => (n, 0, -self.running[i].seq),
        };
        idle.chain(running).max_by_key(rank)
    }

    /// Idle cells that take room from running sequences: with one shared
    /// KV cache all of them; with a stream per sequence none.
    fn shared_idle_cells(&self) -> usize {
        if self.config.unified_kv {
            self.idle_cells
        } else {
            0
        }
    }

    /// Frees the least recently used idle sequence; false if there is none.
    fn evict_lru(&mut self) -> bool {
        let Some(j) = (0..self.idle.len()).min_by_key(|&j| self.idle[j].last_used) else {
            return false;
        };
        let seq = self.evict(j);
        self.free_seqs.insert(seq);
        true
    }

    /// The lowest sequence id that is free or only idle (evicting that idle
    /// entry). With a KV stream per sequence, llama.cpp decodes together
    /// only sequences whose ids run consecutively (and in ascending order
    /// in the batch): every gap costs another pass over the weights, so
    /// running sequences are kept packed at the low ids.
    fn take_seq(&mut self) -> Option<i32> {
        let free = self.free_seqs.first().copied();
        let idle = (0..self.idle.len()).min_by_key(|&j| self.idle[j].seq);
        match (free, idle) {
            (Some(f), Some(j)) if self.idle[j].seq < f => Some(self.evict(j)),
            (Some(f), _) => self.free_seqs.take(&f),
            (None, Some(j)) => Some(self.evict(j)),
            (None, None) => None,
        }
    }

    /// Drops idle entry `j`'s KV; returns its sequence id (not made free).
    fn evict(&mut self, j: usize) -> i32 {
        let e = self.idle.swap_remove(j);
        self.idle_cells -= e.tokens.len();
        let _ = self.ctx.clear_kv_cache_seq(Some(e.seq as u32), None, None);
        e.seq
    }

    /// A sequence that ended normally: keep its KV for prefix reuse, or
    /// free it.
    fn retire(&mut self, r: Running) {
        if !self.config.prefix_caching || r.tokens.is_empty() {
            self.release(r.seq, r.reserved);
            return;
        }
        self.reserved -= r.reserved;
        self.clock += 1;
        self.idle_cells += r.tokens.len();
        self.idle.push(Idle {
            seq: r.seq,
            tokens: r.tokens,
            last_used: self.clock,
        });
    }

    /// Frees the sequences of callers that went away; true if there were any.
    fn drop_cancelled(&mut self) -> bool {
        let before = self.running.len();
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].events.is_closed() {
                let r = self.running.swap_remove(i);
                self.retire(r);
            } else {
                i += 1;
            }
        }
        self.running.len() != before
    }

    fn release(&mut self, seq: i32, reserved: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        self.free_seqs.insert(seq);
        self.reserved -= reserved;
    }

    /// One decode step: a token for every decoding sequence first, then
    /// prompt chunks in admission order within the step's token budget.
    /// Returns (running index, batch index) for every position to sample.
    fn fill(&mut self, batch: &mut LlamaBatch) -> Vec<(usize, i32)> {
        batch.clear();
        // Decode tokens in ascending sequence id, so that llama.cpp can put
        // consecutive ids into one ubatch (see `take_seq`).
        self.running.sort_unstable_by_key(|r| r.seq);
        let mut owners = Vec::new();
        let mut budget = self.config.step_tokens as usize;
        for (i, r) in self.running.iter_mut().enumerate() {
            if let Some(tok) = r.last
                && batch.add(tok, r.pos, &[r.seq], true).is_ok()
            {
                r.last = None;
                r.tokens.push(tok.0);
                owners.push((i, batch.n_tokens() - 1));
                r.pos += 1;
                budget -= 1;
            }
        }
        let mut prefilling: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].prefilled < self.running[i].prompt.len())
            .collect();
        prefilling.sort_unstable_by_key(|&i| self.running[i].admitted);
        for i in prefilling {
            let r = &mut self.running[i];
            if budget == 0 {
                break;
            }
            let left = r.prompt.len() - r.prefilled;
            if left == 0 {
                continue;
            }
            for _ in 0..left.min(budget) {
                let at = r.prefilled;
                let last = at + 1 == r.prompt.len();
                if batch
                    .add(LlamaToken(r.prompt[at]), r.pos, &[r.seq], last)
                    .is_err()
                {
                    break;
                }
                r.tokens.push(r.prompt[at]);
                r.pos += 1;
                r.prefilled += 1;
                budget -= 1;
                if last {
                    owners.push((i, batch.n_tokens() - 1));
                }
            }
        }
        owners
    }

    fn sample(&mut self, owners: &[(usize, i32)]) {
        let vocab = self.model.vocab();
        // (running index, reason, whether a stop sequence matched)
        let mut finished: Vec<(usize, FinishReason, bool)> = Vec::new();
        for &(i, idx) in owners {
            let r = &mut self.running[i];
            let tok = r.sampler.sample(&self.ctx, idx);
            r.generated += 1;
            if vocab.is_eog(tok) {
                finished.push((i, FinishReason::Stop, false));
                continue;
            }
            let piece = vocab.token_to_piece(tok, false, None);
            let out = r.scanner.push(&piece);
            if !out.text.is_empty() {
                let _ = r.events.send(GenEvent::Text(out.text));
            }
            if out.stopped {
                finished.push((i, FinishReason::Stop, true));
            } else if r.generated >= r.max_new {
                finished.push((i, FinishReason::Length, false));
            } else {
                r.last = Some(tok);
            }
        }
        // Remove from the highest index down so indices stay valid.
        finished.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (i, finish, matched_stop) in finished {
            let mut r = self.running.swap_remove(i);
            // Text held back as a possible stop prefix is real output
            // unless a stop sequence did match.
            let rest = r.scanner.finish();
            if !rest.is_empty() && !matched_stop {
                let _ = r.events.send(GenEvent::Text(rest));
            }
            let _ = r.events.send(GenEvent::Done {
                finish,
                prompt_tokens: r.prompt.len(),
                completion_tokens: r.generated,
            });
            self.retire(r);
        }
    }

    fn publish_stats(&self) {
        let used: usize = self.running.iter().map(|r| r.pos.max(0) as usize).sum();
        let mut stats = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.running = self.running.len();
        stats.kv_used = used;
    }
}
