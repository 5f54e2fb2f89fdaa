//! Incremental detokenization with stop sequences: bytes from token pieces
//! are released as text only once they are valid UTF-8 and can no longer be
//! the start of a stop sequence.

/// Text released by one step of [`StopScanner::push`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    /// A stop sequence matched; generation must end (its text is withheld).
    pub stopped: bool,
}

pub struct StopScanner {
    stops: Vec<String>,
    /// Decoded text not yet released (may hold a partial stop match).
    held: String,
    /// Bytes not yet forming a complete UTF-8 character.
    partial: Vec<u8>,
}

impl StopScanner {
    pub fn new(stops: Vec<String>) -> Self {
        StopScanner {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            partial: Vec::new(),
        }
    }

    /// Adds a token's bytes; returns the text that is now safe to emit.
    pub fn push(&mut self, piece: &[u8]) -> Released {
        self.partial.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes, not just incomplete: replace and go on.
                let s = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.held.push_str(&s);
                return self.scan();
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.partial.split_off(valid);
        let text = std::mem::replace(&mut self.partial, rest);
        // `text` is valid UTF-8 up to `valid` by construction.
        self.held.push_str(&String::from_utf8_lossy(&text));
        self.scan()
    }

    fn scan(&mut self) -> Released {
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Released {
                text,
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a prefix of some stop.
        let mut keep = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if self.held.ends_with(&stop[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Released {
            text,
            stopped: false,
        }
    }

    /// Whatever is still held when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        if !self.partial.is_empty() {
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let mut s = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let r = s.push(p);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stops_across_token_boundaries_and_withholds_the_stop() {
        assert_eq!(
            run(&["END"], &[b"hello E", b"N", b"D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &[b"a\n", b"b"]), ("a\nb".into(), false));
        assert_eq!(run(&[], &[b"abc"]), ("abc".into(), false));
    }

    #[test]
    fn multibyte_characters_split_over_tokens_come_out_whole() {
        let e = "é".as_bytes();
        assert_eq!(run(&[], &[&e[..1], &e[1..], b"!"]), ("é!".into(), false));
        let mut s = StopScanner::new(vec![]);
        assert_eq!(s.push(&e[..1]).text, "");
    }
}
