//! `neocloud chat MODEL`: an interactive chat against a running server's
//! OpenAI chat API, printing the answer as it streams in.
//!
//! Lines typed are user turns; the conversation is kept and sent whole each
//! turn. `/reset` starts over, `/exit` (or end of input) quits. With stdin
//! not a terminal it reads turns line by line without prompts, so it can be
//! scripted.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct ChatArgs {
    /// The served model to talk to (see GET /v1/models).
    model: String,
    /// The server's address.
    #[arg(long, env = "NEOCLOUD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature (0 is greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    /// Seed for sampling, for reproducible answers.
    #[arg(long)]
    seed: Option<u32>,
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .build();
    check_model(&agent, &base, &args.model)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chatting with {} at {base}; /reset starts over, /exit quits",
            args.model
        );
    }
    let mut history: Vec<Value> = Vec::new();
    let opening = || -> Vec<Value> {
        args.system
            .iter()
            .map(|s| json!({"role": "system", "content": s}))
            .collect()
    };
    history.extend(opening());
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let turn = line.trim();
        match turn {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = opening();
                continue;
            }
            _ => {}
        }
        history.push(json!({"role": "user", "content": turn}));
        let answer = match stream_answer(&agent, &base, &args, &history) {
            Ok(answer) => answer,
            Err(e) => {
                // The turn failed: forget it, so the next one starts clean.
                history.pop();
                if interactive {
                    eprintln!("error: {e:#}");
                    continue;
                }
                return Err(e);
            }
        };
        history.push(json!({"role": "assistant", "content": answer}));
    }
    Ok(())
}

fn check_model(agent: &ureq::Agent, base: &str, model: &str) -> anyhow::Result<()> {
    let models: Value = agent
        .get(&format!("{base}/v1/models"))
        .call()
        .map_err(|e| describe(e, base))?
        .into_json()
        .context("reading /v1/models")?;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    if !ids.contains(&model) {
        bail!(
            "{base} does not serve a model named {model:?}; it serves: {}",
            ids.join(", ")
        );
    }
    Ok(())
}

/// Sends the conversation, prints the answer's pieces as they arrive and
/// returns the whole answer.
fn stream_answer(
    agent: &ureq::Agent,
    base: &str,
    args: &ChatArgs,
    history: &[Value],
) -> anyhow::Result<String> {
    let mut body = json!({
        "model": args.model,
        "messages": history,
        "stream": true,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
    });
    if let Some(seed) = args.seed {
        body["seed"] = json!(seed);
    }
    let resp = agent
        .post(&format!("{base}/v1/chat/completions"))
        .send_json(body)
        .map_err(|e| describe(e, base))?;
    let mut out = std::io::stdout().lock();
    let mut answer = String::new();
    let mut finish = None;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.context("reading the answer stream")?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            break;
        }
        let event: Value = serde_json::from_str(data).context("a malformed stream event")?;
        if let Some(err) = event.get("error") {
            bail!("the server failed mid-answer: {}", err["message"]);
        }
        let Some(choice) = event["choices"].get(0) else {
            continue;
        };
        if let Some(piece) = choice["delta"]["content"].as_str() {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
            answer.push_str(piece);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    writeln!(out)?;
    if finish.as_deref() == Some("length") {
        eprintln!("[cut at --max-tokens {}]", args.max_tokens);
    }
    Ok(answer)
}

/// An HTTP failure as the server explained it.
fn describe(e: ureq::Error, base: &str) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let text = resp.into_string().unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(String::from))
                .unwrap_or(text);
            anyhow::anyhow!("HTTP {code}: {message}")
        }
        ureq::Error::Transport(t) => anyhow::anyhow!("cannot reach {base}: {t}"),
    }
}
