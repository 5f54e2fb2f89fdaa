//! OpenAI wire types for `/v1/chat/completions` and `/v1/completions`,
//! parsed by hand so that each bad field gets a message that names it.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A chat message after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The sampling and stopping fields common to both endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub seed: Option<u32>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// What to complete: chat messages or a raw prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub params: GenerationParams,
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

fn bad(param: &str, message: String) -> ApiError {
    ApiError::bad_request(message).with_param(param)
}

fn number(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(lo..=hi).contains(&x) {
                return Err(bad(
                    key,
                    format!("'{key}' must be between {lo} and {hi}, got {n}"),
                ));
            }
            Ok(Some(x))
        }
        Some(other) => Err(bad(key, format!("'{key}' must be a number, got {other}"))),
    }
}

fn integer(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(key, format!("'{key}' is too large"))),
        Some(other) => Err(bad(key, format!("'{key}' must be an integer, got {other}"))),
    }
}

fn parse_params(obj: &Map<String, Value>) -> Result<GenerationParams, ApiError> {
    let mut max_tokens = None;
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(n) = integer(obj, key)? {
            if n < 1 {
                return Err(bad(key, format!("'{key}' must be at least 1, got {n}")));
            }
            max_tokens.get_or_insert(n as usize);
        }
    }
    if let Some(n) = integer(obj, "n")?
        && n != 1
    {
        return Err(bad(
            "n",
            format!("'n' must be 1: this server returns one choice, got {n}"),
        ));
    }
    let seed = integer(obj, "seed")?.map(|s| s as u32);
    let top_k = integer(obj, "top_k")?.unwrap_or(0);
    if top_k < 0 {
        return Err(bad("top_k", format!("'top_k' must be ≥ 0, got {top_k}")));
    }
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > 4 {
                return Err(bad("stop", "'stop' takes at most 4 sequences".into()));
            }
            items
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        bad("stop", format!("'stop' items must be strings, got {v}"))
                    })
                })
                .collect::<Result<_, _>>()?
        }
        Some(other) => {
            return Err(bad(
                "stop",
                format!("'stop' must be a string or an array, got {other}"),
            ));
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(
                "stream",
                format!("'stream' must be a boolean, got {other}"),
            ));
        }
    };
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(
                    "stream_options",
                    format!("'stream_options.include_usage' must be a boolean, got {other}"),
                ));
            }
        },
        Some(other) => {
            return Err(bad(
                "stream_options",
                format!("'stream_options' must be an object, got {other}"),
            ));
        }
    };
    Ok(GenerationParams {
        max_tokens,
        temperature: number(obj, "temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32,
        top_p: number(obj, "top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32,
        top_k: top_k.min(i32::MAX as i64) as i32,
        seed,
        presence_penalty: number(obj, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        frequency_penalty: number(obj, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32,
        stop,
        stream,
        include_usage,
    })
}

fn parse_object(body: &[u8]) -> Result<(Map<String, Value>, String), ApiError> {
    let obj = crate::openai::parse_json_object(body)?;
    let model = match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(bad("model", "you must provide a model parameter".into()));
        }
        Some(other) => {
            return Err(bad(
                "model",
                format!("'model' must be a string, got {other}"),
            ));
        }
    };
    Ok((obj, model))
}

fn message_content(i: usize, v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Ok(String::new()),
        // The array form: text parts only.
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(bad(
                        "messages",
                        format!("messages[{i}].content: only text parts are supported"),
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.concat()),
        Some(other) => Err(bad(
            "messages",
            format!(
                "messages[{i}].content must be a string or an array of text parts, got {other}"
            ),
        )),
    }
}

/// The `messages` of a chat request, each with a known role and text content.
pub fn parse_messages(obj: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(bad("messages", "'messages' must not be empty".into()));
        }
        None | Some(Value::Null) => {
            return Err(bad(
                "messages",
                "you must provide a messages parameter".into(),
            ));
        }
        Some(other) => {
            return Err(bad(
                "messages",
                format!("'messages' must be an array, got {other}"),
            ));
        }
    };
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    "messages",
                    format!("messages[{i}].role is missing or not a string"),
                )
            })?;
            if !ROLES.contains(&role) {
                return Err(bad(
                    "messages",
                    format!(
                        "messages[{i}].role {role:?} is not one of {}",
                        ROLES.join(", ")
                    ),
                ));
            }
            Ok(Message {
                role: role.to_string(),
                content: message_content(i, m.get("content"))?,
            })
        })
        .collect()
}

/// A KServe v2 generate-extension body (`POST /v2/models/{m}/generate`):
/// `text_input` plus sampling knobs, either at the top level (Triton's
/// style) or in a `parameters` object, which wins where both set one.
/// `stream` is the endpoint's to decide and is ignored here.
pub fn parse_generate(body: &[u8]) -> Result<(String, GenerationParams), ApiError> {
    let obj = crate::openai::parse_json_object(body)?;
    let text = match obj.get("text_input") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(bad("text_input", "'text_input' must not be empty".into()));
        }
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        None | Some(Value::Null) => {
            return Err(bad("text_input", "you must provide 'text_input'".into()));
        }
        Some(other) => {
            return Err(bad(
                "text_input",
                format!("'text_input' must be a string, got {other}"),
            ));
        }
    };
    let mut knobs: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "text_input" | "parameters" | "id"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match obj.get("parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => knobs.extend(p.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(other) => {
            return Err(bad(
                "parameters",
                format!("'parameters' must be an object, got {other}"),
            ));
        }
    }
    knobs.remove("stream");
    knobs.remove("stream_options");
    Ok((text, parse_params(&knobs)?))
}

impl CompletionRequest {
    /// A `POST /v1/chat/completions` body.
    pub fn parse_chat(body: &[u8]) -> Result<Self, ApiError> {
        let (obj, model) = parse_object(body)?;
        let messages = parse_messages(&obj)?;
        Ok(CompletionRequest {
            model,
            prompt: Prompt::Chat(messages),
            params: parse_params(&obj)?,
        })
    }

    /// A `POST /v1/completions` body (one prompt string).
    pub fn parse_completion(body: &[u8]) -> Result<Self, ApiError> {
        let (obj, model) = parse_object(body)?;
        let prompt = match obj.get("prompt") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => {
                return Err(bad("prompt", "'prompt' must not be empty".into()));
            }
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                items[0].as_str().unwrap_or_default().to_string()
            }
            Some(Value::Array(_)) => {
                return Err(bad(
                    "prompt",
                    "'prompt' must be one string (batches of prompts are not supported)".into(),
                ));
            }
            None | Some(Value::Null) => {
                return Err(bad("prompt", "you must provide a prompt parameter".into()));
            }
            Some(other) => {
                return Err(bad(
                    "prompt",
                    format!("'prompt' must be a string, got {other}"),
                ));
            }
        };
        Ok(CompletionRequest {
            model,
            prompt: Prompt::Text(prompt),
            params: parse_params(&obj)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chat_with_every_knob() {
        let r = CompletionRequest::parse_chat(br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"temperature":0,"top_p":0.9,"top_k":40,"seed":7,"stop":"\n","stream":true,"stream_options":{"include_usage":true},"presence_penalty":0.5,"frequency_penalty":-0.5,"n":1}"#).unwrap();
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(m[1].content, "hi");
        let p = &r.params;
        assert_eq!(
            (p.max_tokens, p.temperature, p.top_k, p.seed),
            (Some(5), 0.0, 40, Some(7))
        );
        assert_eq!(p.stop, vec!["\n".to_string()]);
        assert!(p.stream && p.include_usage);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"model":"m","messages":[]}"#,
                "'messages' must not be empty",
            ),
            (br#"{"model":"m"}"#, "messages"),
            (
                br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                "'n'",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":5}"#,
                "stop",
            ),
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (br#"{"model":"m","prompt":""}"#, "prompt"),
        ];
        for (body, needle) in cases {
            let err = CompletionRequest::parse_chat(body)
                .or_else(|e| {
                    if body.windows(6).any(|w| w == b"prompt") {
                        CompletionRequest::parse_completion(body)
                    } else {
                        Err(e)
                    }
                })
                .unwrap_err();
            assert!(
                err.message.contains(needle),
                "{:?}: {}",
                String::from_utf8_lossy(body),
                err.message
            );
        }
    }

    #[test]
    fn parses_kserve_generate_from_either_place() {
        let (text, p) = parse_generate(
            br#"{"text_input":"hi","max_tokens":9,"parameters":{"temperature":0,"max_tokens":4,"stream":"x"}}"#,
        )
        .unwrap();
        assert_eq!(text, "hi");
        // `parameters` wins; `stream` is the endpoint's business.
        assert_eq!(
            (p.max_tokens, p.temperature, p.stream),
            (Some(4), 0.0, false)
        );
        for (body, needle) in [
            (&br#"{"parameters":{}}"#[..], "text_input"),
            (br#"{"text_input":""}"#, "text_input"),
            (br#"{"text_input":3}"#, "text_input"),
            (br#"{"text_input":"x","parameters":[1]}"#, "parameters"),
            (
                br#"{"text_input":"x","parameters":{"max_tokens":-2}}"#,
                "max_tokens",
            ),
            (br#"{"text_input":"x","top_p":7}"#, "top_p"),
        ] {
            let err = parse_generate(body).unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }
}
