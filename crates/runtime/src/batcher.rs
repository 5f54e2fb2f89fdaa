//! Token-budget dynamic batching, in the manner of text-embeddings-inference.
//!
//! Requests put their sequences on one queue. A dedicated thread owns the
//! engine; each time it is free it takes a batch of at most
//! `max_batch_requests` sequences and `max_batch_tokens` tokens, always
//! including the oldest waiting sequence (so nothing starves) and filling up
//! with the sequences closest to it in length (so attention pads little).
//! While traffic is high, a partly filled batch waits up to `max_wait` for
//! the sequences that the last batch suggests are about to arrive; an idle
//! server never waits. Every sequence gets its own reply channel, so answers
//! cannot be mixed up, and a sequence whose caller has gone is dropped
//! before it costs compute.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use neocloud_api::BatchingConfig;
use tokio::sync::oneshot;

use crate::RuntimeError;

/// An engine that embeds a batch of token-id sequences.
pub trait EmbeddingEngine: Send + 'static {
    fn embed(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, RuntimeError>;
}

/// What one batch cost; reported to a [`BatchObserver`].
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub sequences: usize,
    pub tokens: usize,
    /// Time each sequence waited in the queue.
    pub queue_waits: Vec<Duration>,
    pub inference: Duration,
}

/// Receives batch statistics and queue depth (e.g. to export metrics).
pub trait BatchObserver: Send + Sync + 'static {
    fn on_batch(&self, stats: &BatchStats);
    fn on_queue_depth(&self, depth: usize);
}

struct NoObserver;
impl BatchObserver for NoObserver {
    fn on_batch(&self, _: &BatchStats) {}
    fn on_queue_depth(&self, _: usize) {}
}

type Reply = oneshot::Sender<Result<Vec<f32>, RuntimeError>>;

/// Where one sequence's vector (or its error) arrives.
pub type VectorReceiver = oneshot::Receiver<Result<Vec<f32>, RuntimeError>>;

struct Pending {
    ids: Vec<u32>,
    enqueued: Instant,
    reply: Reply,
}

struct State {
    queue: VecDeque<Pending>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    config: BatchingConfig,
    observer: Arc<dyn BatchObserver>,
    /// Recent sequences per second, for Retry-After (f64 bits).
    throughput: std::sync::atomic::AtomicU64,
}

/// A handle to the batching queue; cheap to clone.
#[derive(Clone)]
pub struct TokenBudgetBatcher {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl TokenBudgetBatcher {
    /// Starts the engine thread.
    pub fn start<E: EmbeddingEngine>(
        engine: E,
        config: BatchingConfig,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> TokenBudgetBatcher {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                shutdown: false,
            }),
            wake: Condvar::new(),
            config,
            observer: observer.unwrap_or_else(|| Arc::new(NoObserver)),
            throughput: std::sync::atomic::AtomicU64::new(0),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || run(engine, &worker))
            .expect("spawning the batcher thread");
        TokenBudgetBatcher {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Queues `seqs` (all or none) and returns one receiver per sequence, in
    /// order. A full queue refuses the whole request with `QueueFull`.
    pub fn submit(&self, seqs: Vec<Vec<u32>>) -> Result<Vec<VectorReceiver>, RuntimeError> {
        let mut receivers = Vec::with_capacity(seqs.len());
        let depth;
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.shutdown {
                return Err(RuntimeError::ShuttingDown);
            }
            let limit = self.shared.config.max_queue_requests;
            if state.queue.len() + seqs.len() > limit && !state.queue.is_empty() {
                return Err(RuntimeError::QueueFull {
                    depth: state.queue.len(),
                    retry_after: self.retry_after(state.queue.len()),
                });
            }
            let now = Instant::now();
            for ids in seqs {
                let (tx, rx) = oneshot::channel();
                state.queue.push_back(Pending {
                    ids,
                    enqueued: now,
                    reply: tx,
                });
                receivers.push(rx);
            }
            depth = state.queue.len();
        }
        self.shared.wake.notify_one();
        self.shared.observer.on_queue_depth(depth);
        Ok(receivers)
    }

    /// Submits and awaits every sequence's vector, in order.
    pub async fn embed(&self, seqs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let receivers = self.submit(seqs)?;
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(rx.await.map_err(|_| RuntimeError::ShuttingDown)??);
        }
        Ok(out)
    }

    /// Sequences waiting now.
    pub fn queue_depth(&self) -> usize {
        self.shared.state.lock().map(|s| s.queue.len()).unwrap_or(0)
    }

    /// A retry delay long enough for the current queue to drain.
    fn retry_after(&self, depth: usize) -> Duration {
        let rate = f64::from_bits(
            self.shared
                .throughput
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let secs = if rate > 0.0 { depth as f64 / rate } else { 1.0 };
        Duration::from_secs(secs.ceil().clamp(1.0, 60.0) as u64)
    }

    /// Finishes every queued sequence, then stops the engine thread.
    pub fn shutdown(&self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.shutdown = true;
        }
        self.shared.wake.notify_all();
        if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = handle.join();
        }
    }
}

fn run<E: EmbeddingEngine>(mut engine: E, shared: &Shared) {
    let config = shared.config;
    let mut last_batch = 1usize;
    loop {
        let batch = {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            while state.queue.is_empty() {
                if state.shutdown {
                    return;
                }
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            // Traffic that filled the last batch is likely to fill this one:
            // give stragglers a moment instead of running a sliver of a batch.
            let target = last_batch.min(config.max_batch_requests);
            if !config.max_wait.is_zero() && state.queue.len() < target && !state.shutdown {
                let deadline = Instant::now() + config.max_wait;
                while state.queue.len() < target && !state.shutdown {
                    let now = Instant::now();
                    if now >= deadline || queued_tokens(&state.queue) >= config.max_batch_tokens {
                        break;
                    }
                    state = shared
                        .wake
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            let batch = take_batch(&mut state.queue, &config);
            shared.observer.on_queue_depth(state.queue.len());
            batch
        };
        // Callers that went away need no answer.
        let batch: Vec<Pending> = batch.into_iter().filter(|p| !p.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        last_batch = batch.len();
        let started = Instant::now();
        let seqs: Vec<&[u32]> = batch.iter().map(|p| p.ids.as_slice()).collect();
        let result = engine.embed(&seqs);
        let inference = started.elapsed();
        let stats = BatchStats {
            sequences: batch.len(),
            tokens: seqs.iter().map(|s| s.len()).sum(),
            queue_waits: batch.iter().map(|p| started - p.enqueued).collect(),
            inference,
        };
        let rate = batch.len() as f64 / inference.as_secs_f64().max(1e-6);
        let old = f64::from_bits(shared.throughput.load(std::sync::atomic::Ordering::Relaxed));
        let smoothed = if old > 0.0 {
            0.8 * old + 0.2 * rate
        } else {
            rate
        };
        shared
            .throughput
            .store(smoothed.to_bits(), std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(vectors) if vectors.len() == batch.len() => {
                for (p, v) in batch.into_iter().zip(vectors) {
                    let _ = p.reply.send(Ok(v));
                }
            }
            Ok(vectors) => {
                let msg = format!(
                    "engine returned {} vectors for {} sequences",
                    vectors.len(),
                    batch.len()
                );
                for p in batch {
                    let _ = p.reply.send(Err(RuntimeError::Engine(msg.clone())));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(RuntimeError::Engine(msg.clone())));
                }
            }
        }
        shared.observer.on_batch(&stats);
    }
}

fn queued_tokens(queue: &VecDeque<Pending>) -> usize {
    queue.iter().map(|p| p.ids.len()).sum()
}

/// Removes the next batch from `queue`: the oldest sequence plus those
/// nearest to it in length, within both budgets. The rest keep their order.
fn take_batch(queue: &mut VecDeque<Pending>, config: &BatchingConfig) -> Vec<Pending> {
    let max_req = config.max_batch_requests.max(1);
    if queue.len() <= max_req && queued_tokens(queue) <= config.max_batch_tokens {
        return queue.drain(..).collect();
    }
    // Indices sorted by length; grow a window around the oldest (index 0).
    let mut order: Vec<usize> = (0..queue.len()).collect();
    order.sort_by_key(|&i| (queue[i].ids.len(), i));
    let pos = order.iter().position(|&i| i == 0).unwrap_or(0);
    let anchor = queue[0].ids.len();
    let (mut lo, mut hi) = (pos, pos + 1); // window is order[lo..hi]
    let mut tokens = anchor;
    loop {
        if hi - lo >= max_req {
            break;
        }
        let left = (lo > 0).then(|| order[lo - 1]);
        let right = (hi < order.len()).then(|| order[hi]);
        let pick_left = match (left, right) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => anchor - queue[l].ids.len() <= queue[r].ids.len() - anchor,
        };
        let next = if pick_left { order[lo - 1] } else { order[hi] };
        let len = queue[next].ids.len();
        if tokens + len > config.max_batch_tokens {
            break;
        }
        tokens += len;
        if pick_left {
            lo -= 1;
        } else {
            hi += 1;
        }
    }
    let mut chosen: Vec<usize> = order[lo..hi].to_vec();
    chosen.sort_unstable();
    let mut out = Vec::with_capacity(chosen.len());
    let mut rest = VecDeque::with_capacity(queue.len() - chosen.len());
    let mut next = chosen.iter().peekable();
    for (i, p) in queue.drain(..).enumerate() {
        if next.peek() == Some(&&i) {
            next.next();
            out.push(p);
        } else {
            rest.push_back(p);
        }
    }
    *queue = rest;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An engine whose "vector" encodes its input, so a mixed-up answer is
    /// visible, and which records every batch it saw.
    struct EchoEngine {
        batches: Arc<Mutex<Vec<Vec<usize>>>>,
        delay: Duration,
    }

    impl EmbeddingEngine for EchoEngine {
        fn embed(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, RuntimeError> {
            std::thread::sleep(self.delay);
            self.batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|s| s.len()).collect());
            Ok(batch
                .iter()
                .map(|s| vec![s[0] as f32, s.len() as f32])
                .collect())
        }
    }

    fn config(tokens: usize, requests: usize, queue: usize) -> BatchingConfig {
        BatchingConfig {
            max_batch_tokens: tokens,
            max_batch_requests: requests,
            max_wait: Duration::from_millis(1),
            max_queue_requests: queue,
        }
    }

    fn pending(len: usize) -> Pending {
        let (tx, _rx) = oneshot::channel();
        Pending {
            ids: vec![1; len],
            enqueued: Instant::now(),
            reply: tx,
        }
    }

    #[test]
    fn take_batch_respects_budgets_and_groups_by_length() {
        let mut q: VecDeque<Pending> = [50, 3, 48, 5, 52, 4, 49].into_iter().map(pending).collect();
        let batch = take_batch(&mut q, &config(160, 8, 100));
        let lens: Vec<usize> = batch.iter().map(|p| p.ids.len()).collect();
        // The oldest (50) is always in, with its nearest neighbours in length.
        assert_eq!(lens, vec![50, 48, 49]);
        let rest: Vec<usize> = q.iter().map(|p| p.ids.len()).collect();
        assert_eq!(rest, vec![3, 5, 52, 4]);
        let batch = take_batch(&mut q, &config(1000, 2, 100));
        assert_eq!(
            batch.iter().map(|p| p.ids.len()).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn oversized_sequence_still_runs_alone() {
        let mut q: VecDeque<Pending> = [300, 2].into_iter().map(pending).collect();
        let batch = take_batch(&mut q, &config(100, 8, 100));
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].ids.len(), 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_get_their_own_answers_within_budgets() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let engine = EchoEngine {
            batches: batches.clone(),
            delay: Duration::from_millis(2),
        };
        let batcher = TokenBudgetBatcher::start(engine, config(64, 6, 10_000), None);
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let (b, done) = (batcher.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let len = 1 + (i as usize * 7) % 20;
                let mut seq = vec![i; len];
                seq[0] = i;
                let out = b.embed(vec![seq, vec![i + 1000; 3]]).await.unwrap();
                assert_eq!(out[0], vec![i as f32, len as f32]);
                assert_eq!(out[1], vec![(i + 1000) as f32, 3.0]);
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(done.load(Ordering::Relaxed), 200);
        let batches = batches.lock().unwrap();
        assert!(
            batches.iter().any(|b| b.len() > 1),
            "some batching happened"
        );
        for b in batches.iter() {
            assert!(b.len() <= 6, "request budget: {b:?}");
            assert!(b.iter().sum::<usize>() <= 64, "token budget: {b:?}");
        }
        batcher.shutdown();
    }

    #[tokio::test]
    async fn full_queue_refuses_with_retry_after() {
        let engine = EchoEngine {
            batches: Arc::new(Mutex::new(Vec::new())),
            delay: Duration::from_millis(200),
        };
        let batcher = TokenBudgetBatcher::start(engine, config(8, 1, 2), None);
        let first = batcher.submit(vec![vec![1, 2]]).unwrap();
        let mut refused = None;
        // The engine holds one sequence for 200 ms; the queue holds two more.
        for _ in 0..4 {
            match batcher.submit(vec![vec![3, 4]]) {
                Err(e @ RuntimeError::QueueFull { .. }) => {
                    refused = Some(e);
                    break;
                }
                other => drop(other),
            }
        }
        match refused {
            Some(RuntimeError::QueueFull { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        for rx in first {
            assert!(rx.await.unwrap().is_ok());
        }
        batcher.shutdown();
        assert!(matches!(
            batcher.submit(vec![vec![1]]),
            Err(RuntimeError::ShuttingDown)
        ));
    }
}
