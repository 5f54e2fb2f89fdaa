//! Finding the top-level `"model"` (and the prompt, for affinity) in a JSON
//! body without building a document: one pass over the bytes that follows
//! strings and nesting and allocates nothing. The body is forwarded as it
//! is, so the worker still parses and validates it in full; this pass only
//! has to be right about well-formed JSON and to reject what is not an
//! object. When it fails, `serde_json` is asked for the precise message.

use std::borrow::Cow;

/// Top-level keys whose value is the prompt, in the protocols the gateway
/// serves: chat `messages`, completions `prompt`, KServe generate
/// `text_input`.
const PROMPT_KEYS: [&[u8]; 3] = [b"messages", b"prompt", b"text_input"];

/// What a body says about routing.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Fields<'a> {
    /// The raw JSON text of the top-level `"model"` value (the last one if
    /// repeated, as JSON parsers keep).
    pub model: Option<&'a [u8]>,
    /// The raw JSON text of the prompt's value.
    pub prompt: Option<&'a [u8]>,
}

/// Why a body could not be scanned; the caller turns it into a message.
#[derive(Debug, PartialEq)]
pub(crate) struct Malformed {
    pub at: usize,
    pub what: &'static str,
}

pub(crate) fn top_level_fields(body: &[u8]) -> Result<Fields<'_>, Malformed> {
    let mut s = Scanner { b: body, i: 0 };
    let mut fields = Fields::default();
    s.skip_ws();
    if s.peek() != Some(b'{') {
        return Err(s.err("the body must be a JSON object"));
    }
    s.i += 1;
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.skip_ws();
            if s.peek() != Some(b'"') {
                return Err(s.err("expected a key string"));
            }
            let key_start = s.i + 1;
            s.skip_string()?;
            let key = &body[key_start..s.i - 1];
            s.skip_ws();
            if s.peek() != Some(b':') {
                return Err(s.err("expected ':' after a key"));
            }
            s.i += 1;
            s.skip_ws();
            let value_start = s.i;
            s.skip_value()?;
            let value = &body[value_start..s.i];
            if key == b"model" {
                fields.model = Some(value);
            } else if PROMPT_KEYS.contains(&key) {
                fields.prompt = Some(value);
            }
            s.skip_ws();
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return Err(s.err("expected ',' or '}' in the object")),
            }
        }
    }
    s.skip_ws();
    if s.i != body.len() {
        return Err(s.err("trailing characters after the JSON object"));
    }
    Ok(fields)
}

/// The `"model"` value as a string, or what is wrong with it.
pub(crate) fn model_name(raw: &[u8]) -> Result<Cow<'_, str>, &'static str> {
    if raw.len() < 2 || raw[0] != b'"' {
        return Err("\"model\" must be a string");
    }
    let inner = &raw[1..raw.len() - 1];
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner)
            .map(Cow::Borrowed)
            .map_err(|_| "\"model\" is not valid UTF-8");
    }
    serde_json::from_slice::<String>(raw)
        .map(Cow::Owned)
        .map_err(|_| "\"model\" is not a valid JSON string")
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, what: &'static str) -> Malformed {
        Malformed { at: self.i, what }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// At an opening quote: moves past the closing one.
    fn skip_string(&mut self) -> Result<(), Malformed> {
        self.i += 1;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.b[self.i..]) {
                None => {
                    self.i = self.b.len();
                    return Err(self.err("unterminated string"));
                }
                Some(off) => {
                    self.i += off;
                    if self.b[self.i] == b'"' {
                        self.i += 1;
                        return Ok(());
                    }
                    // An escape: skip the backslash and the escaped byte.
                    self.i += 2;
                    if self.i > self.b.len() {
                        self.i = self.b.len();
                        return Err(self.err("unterminated string"));
                    }
                }
            }
        }
    }

    fn skip_value(&mut self) -> Result<(), Malformed> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{' | b'[') => self.skip_nested(),
            Some(_) => self.skip_scalar(),
            None => Err(self.err("expected a value")),
        }
    }

    /// At `{` or `[`: moves past the matching close, following strings.
    fn skip_nested(&mut self) -> Result<(), Malformed> {
        let mut stack: u64 = 0; // one bit per level: 1 = object
        let mut depth = 0u32;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unexpected end inside an array or object"));
            };
            match c {
                b'"' => {
                    self.skip_string()?;
                    continue;
                }
                b'{' | b'[' => {
                    if depth == 64 {
                        return Err(self.err("nested too deeply"));
                    }
                    stack = (stack << 1) | u64::from(c == b'{');
                    depth += 1;
                }
                b'}' | b']' => {
                    if depth == 0 || ((stack & 1) == 1) != (c == b'}') {
                        return Err(self.err("mismatched bracket"));
                    }
                    stack >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// A number, `true`, `false` or `null`.
    fn skip_scalar(&mut self) -> Result<(), Malformed> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
        let token = &self.b[start..self.i];
        let number = !token.is_empty()
            && token
                .iter()
                .all(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
        if number || matches!(token, b"true" | b"false" | b"null") {
            Ok(())
        } else {
            self.i = start;
            Err(self.err("expected a value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(body: &str) -> Option<String> {
        let fields = top_level_fields(body.as_bytes()).ok()?;
        model_name(fields.model?).ok().map(|m| m.into_owned())
    }

    #[test]
    fn finds_the_top_level_model_only() {
        assert_eq!(
            model(r#"{"model":"echo","input":"hi"}"#).as_deref(),
            Some("echo")
        );
        assert_eq!(
            model(r#" { "input" : {"model": "inner"}, "model" : "outer" } "#).as_deref(),
            Some("outer")
        );
        assert_eq!(
            model(r#"{"input":["a\"model\":\"x", 1, -2.5e3, true, null], "model":"m"}"#).as_deref(),
            Some("m")
        );
        assert_eq!(model(r#"{"input":"hi"}"#), None);
        assert_eq!(model(r#"{"model":"a\u0062c"}"#).as_deref(), Some("abc"));
    }

    #[test]
    fn finds_the_prompt() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let fields = top_level_fields(body).unwrap();
        assert_eq!(
            fields.prompt,
            Some(&br#"[{"role":"user","content":"hi"}]"#[..])
        );
    }

    #[test]
    fn rejects_what_is_not_a_json_object() {
        for bad in [
            "",
            "[1]",
            "{",
            r#"{"model":"echo""#,
            r#"{"model":"echo",}"#,
            r#"{"model":"echo"} x"#,
            r#"{"model" "echo"}"#,
            r#"{"model":[1}"#,
            r#"{"model":nope}"#,
            r#"{"model":"unterminated}"#,
        ] {
            assert!(top_level_fields(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(top_level_fields(b"{}").unwrap().model.is_none());
    }

    #[test]
    fn model_must_be_a_string() {
        let fields = top_level_fields(br#"{"model":42}"#).unwrap();
        assert!(model_name(fields.model.unwrap()).is_err());
    }
}
