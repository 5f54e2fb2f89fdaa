//! OpenAI wire types for `/v1/embeddings` and `/v1/models`.
//!
//! Requests are parsed by hand from `serde_json::Value` rather than derived,
//! so that each wrong type gets a message naming the field, the way OpenAI's
//! own server answers.

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// What to embed: texts, or token-id sequences of the model's own tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    Texts(Vec<String>),
    TokenIds(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::TokenIds(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// A validated `POST /v1/embeddings` body.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    pub encoding_format: EncodingFormat,
    pub dimensions: Option<usize>,
    /// Non-standard (as in TEI): cut inputs longer than the model's maximum
    /// instead of rejecting them.
    pub truncate: bool,
}

/// Most inputs in one request, as OpenAI documents.
pub const MAX_INPUTS_PER_REQUEST: usize = 2048;

/// A request body that must be one JSON object; every OpenAI-style endpoint
/// starts here, so every one words these two errors alike.
pub fn parse_json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

impl EmbeddingsRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let obj = parse_json_object(body)?;
        let model = match obj.get("model") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::bad_request("'model' must not be empty").with_param("model"));
            }
            Some(other) => {
                return Err(type_error("model", "a string", other));
            }
            None => {
                return Err(
                    ApiError::bad_request("you must provide a model parameter").with_param("model")
                );
            }
        };
        let input = parse_input(obj.get("input"))?;
        let encoding_format = match obj.get("encoding_format") {
            None | Some(Value::Null) => EncodingFormat::Float,
            Some(Value::String(s)) if s == "float" => EncodingFormat::Float,
            Some(Value::String(s)) if s == "base64" => EncodingFormat::Base64,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "'encoding_format' must be \"float\" or \"base64\", got {other}"
                ))
                .with_param("encoding_format"));
            }
        };
        let dimensions = match obj.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(d) if d > 0 => Some(d as usize),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "'dimensions' must be a positive integer, got {n}"
                    ))
                    .with_param("dimensions"));
                }
            },
            Some(other) => return Err(type_error("dimensions", "an integer", other)),
        };
        let truncate = match obj.get("truncate") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(type_error("truncate", "a boolean", other)),
        };
        if let Some(user) = obj.get("user")
            && !user.is_string()
            && !user.is_null()
        {
            return Err(type_error("user", "a string", user));
        }
        Ok(EmbeddingsRequest {
            model,
            input,
            encoding_format,
            dimensions,
            truncate,
        })
    }
}

fn type_error(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::bad_request(format!(
        "'{param}' must be {expected}, got {}",
        json_type_name(got)
    ))
    .with_param(param)
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_token_ids(items: &[Value], at: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "'input{at}[{i}]' must be a non-negative integer token id, got {v}"
                    ))
                    .with_param("input")
                })
        })
        .collect()
}

fn parse_input(value: Option<&Value>) -> Result<EmbeddingInput, ApiError> {
    let empty = || ApiError::bad_request("'input' must not be empty").with_param("input");
    let input = match value {
        None | Some(Value::Null) => {
            return Err(
                ApiError::bad_request("you must provide an input parameter").with_param("input")
            );
        }
        Some(Value::String(s)) => EmbeddingInput::Texts(vec![s.clone()]),
        Some(Value::Array(items)) => match items.first() {
            None => return Err(empty()),
            Some(Value::String(_)) => {
                let texts = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(type_error(&format!("input[{i}]"), "a string", other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                EmbeddingInput::Texts(texts)
            }
            Some(Value::Number(_)) => EmbeddingInput::TokenIds(vec![parse_token_ids(items, "")?]),
            Some(Value::Array(_)) => {
                let seqs = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::Array(ids) => parse_token_ids(ids, &format!("[{i}]")),
                        other => Err(type_error(
                            &format!("input[{i}]"),
                            "an array of token ids",
                            other,
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                EmbeddingInput::TokenIds(seqs)
            }
            Some(other) => {
                return Err(type_error(
                    "input[0]",
                    "a string, a token id or an array of token ids",
                    other,
                ));
            }
        },
        Some(other) => {
            return Err(type_error(
                "input",
                "a string, an array of strings or an array of token ids",
                other,
            ));
        }
    };
    if input.len() > MAX_INPUTS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "'input' has {} items, at most {MAX_INPUTS_PER_REQUEST} are allowed",
            input.len()
        ))
        .with_param("input"));
    }
    let any_empty = match &input {
        EmbeddingInput::Texts(t) => t.iter().position(|s| s.is_empty()),
        EmbeddingInput::TokenIds(t) => t.iter().position(|s| s.is_empty()),
    };
    if let Some(i) = any_empty {
        return Err(
            ApiError::bad_request(format!("'input[{i}]' must not be empty")).with_param("input"),
        );
    }
    Ok(input)
}

/// One vector of a response, as floats or as base64 of little-endian f32.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EmbeddingsRequest, ApiError> {
        EmbeddingsRequest::parse(s.as_bytes())
    }

    #[test]
    fn accepts_every_input_shape() {
        let r = parse(r#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(r.input, EmbeddingInput::Texts(vec!["hi".into()]));
        let r = parse(r#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#).unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
        let r = parse(r#"{"model":"m","input":[101,2000,102]}"#).unwrap();
        assert_eq!(
            r.input,
            EmbeddingInput::TokenIds(vec![vec![101, 2000, 102]])
        );
        let r = parse(
            r#"{"model":"m","input":[[101,102],[101,7,102]],"dimensions":384,"truncate":true}"#,
        )
        .unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(r.dimensions, Some(384));
        assert!(r.truncate);
    }

    #[test]
    fn rejects_bad_input_naming_the_problem() {
        let cases = [
            ("{", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"input":"x"}"#, "model"),
            (r#"{"model":3,"input":"x"}"#, "'model' must be a string"),
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":5}"#, "'input' must be"),
            (r#"{"model":"m","input":[]}"#, "must not be empty"),
            (r#"{"model":"m","input":""}"#, "must not be empty"),
            (
                r#"{"model":"m","input":["a",""]}"#,
                "'input[1]' must not be empty",
            ),
            (
                r#"{"model":"m","input":["a",3]}"#,
                "'input[1]' must be a string",
            ),
            (r#"{"model":"m","input":[1.5]}"#, "token id"),
            (r#"{"model":"m","input":[-1]}"#, "token id"),
            (r#"{"model":"m","input":[[]]}"#, "must not be empty"),
            (
                r#"{"model":"m","input":"x","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (r#"{"model":"m","input":"x","dimensions":0}"#, "dimensions"),
            (
                r#"{"model":"m","input":"x","dimensions":"8"}"#,
                "dimensions",
            ),
        ];
        for (body, needle) in cases {
            let err = parse(body).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::BadRequest);
            assert!(
                err.message.contains(needle),
                "{body}: {:?} lacks {needle:?}",
                err.message
            );
        }
    }
}
