//! A sentence-transformers model folder loaded for inference: tokenizer,
//! BERT encoder, pooling and normalisation, as `modules.json` describes.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::RuntimeError;
use crate::batcher::EmbeddingEngine;
use crate::bert::{BertModel, PackedBatch, l2_normalize};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// A loaded sentence-embedding model.
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    truncating: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    max_tokens: usize,
}

/// Options that override what the model folder says.
#[derive(Debug, Clone, Default)]
pub struct EmbedderOptions {
    pub max_input_tokens: Option<usize>,
}

impl SentenceEmbedder {
    /// Loads a BERT-family sentence-transformers folder from `dir`.
    pub fn load(
        dir: &Path,
        device: &Device,
        options: &EmbedderOptions,
    ) -> Result<SentenceEmbedder, RuntimeError> {
        if !dir.is_dir() {
            return Err(RuntimeError::load(dir, "not a model directory"));
        }
        let model = BertModel::load(dir, device)?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| RuntimeError::load(&tok_path, e))?;
        // The file may bake in padding and truncation (MiniLM's pads and cuts
        // at 128): both would silently change results, so both go.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| RuntimeError::load(&tok_path, e))?;

        let pooling = read_pooling(dir)?;
        let normalize = read_normalize(dir)?;
        let st_max = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.max_seq_length);
        let max_tokens = options
            .max_input_tokens
            .or(st_max)
            .unwrap_or(model.config.max_position_embeddings)
            .min(model.config.max_position_embeddings);
        if max_tokens < 2 {
            return Err(RuntimeError::load(
                dir,
                "the maximum input length must be ≥ 2 tokens",
            ));
        }
        let mut truncating = tokenizer.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| RuntimeError::load(&tok_path, e))?;
        Ok(SentenceEmbedder {
            model,
            tokenizer,
            truncating,
            pooling,
            normalize,
            max_tokens,
        })
    }

    pub fn dimension(&self) -> usize {
        self.model.config.hidden_size
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Token ids of `text` with the model's special tokens. Longer than the
    /// maximum is an error unless `truncate`, which cuts it to the maximum.
    pub fn tokenize(&self, text: &str, truncate: bool) -> Result<Vec<u32>, RuntimeError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| RuntimeError::Tokenize(e.to_string()))?;
        if enc.len() <= self.max_tokens {
            return Ok(enc.get_ids().to_vec());
        }
        if !truncate {
            return Err(RuntimeError::InputTooLong {
                tokens: enc.len(),
                max: self.max_tokens,
            });
        }
        let enc = self
            .truncating
            .encode(text, true)
            .map_err(|e| RuntimeError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Checks caller-supplied token ids (used as given, special tokens
    /// included); with `truncate`, keeps the first `max_tokens`.
    pub fn check_ids(&self, mut ids: Vec<u32>, truncate: bool) -> Result<Vec<u32>, RuntimeError> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            return Err(RuntimeError::InvalidTokenId {
                id: bad,
                vocab: self.vocab_size(),
            });
        }
        if ids.len() > self.max_tokens {
            if !truncate {
                return Err(RuntimeError::InputTooLong {
                    tokens: ids.len(),
                    max: self.max_tokens,
                });
            }
            ids.truncate(self.max_tokens);
        }
        Ok(ids)
    }

    /// Embeds already-tokenized sequences in one forward pass.
    pub fn embed_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(s) = seqs
            .iter()
            .find(|s| s.is_empty() || s.len() > self.max_tokens)
        {
            return Err(RuntimeError::InputTooLong {
                tokens: s.len(),
                max: self.max_tokens,
            });
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let batch = PackedBatch::new(seqs, self.model.device(), self.model.padded_attention)?;
            let hidden = self.model.forward(&batch)?;
            let mut pooled: Tensor = match self.pooling {
                Pooling::Mean => self.model.mean_pool(&hidden, &batch)?,
                Pooling::Cls => self.model.cls_pool(&hidden, &batch)?,
            };
            if self.normalize {
                pooled = l2_normalize(&pooled)?;
            }
            pooled.to_vec2::<f32>()
        };
        run().map_err(RuntimeError::engine)
    }

    /// Convenience for tests and benchmarks: tokenize (truncating) and embed.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t, true))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
        self.embed_ids(&refs)
    }
}

impl EmbeddingEngine for std::sync::Arc<SentenceEmbedder> {
    fn embed(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        self.embed_ids(batch)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RuntimeError::load(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::load(path, e)),
    }
}

fn read_pooling(dir: &Path) -> Result<Pooling, RuntimeError> {
    let path = dir.join("1_Pooling/config.json");
    let Some(cfg) = read_json::<PoolingConfig>(&path)? else {
        // sentence-transformers' own default for a bare transformer.
        return Ok(Pooling::Mean);
    };
    let modes = [
        cfg.pooling_mode_cls_token,
        cfg.pooling_mode_mean_tokens,
        cfg.pooling_mode_max_tokens,
        cfg.pooling_mode_mean_sqrt_len_tokens,
    ];
    match modes {
        [true, false, false, false] => Ok(Pooling::Cls),
        [false, true, false, false] => Ok(Pooling::Mean),
        _ => Err(RuntimeError::load(
            &path,
            "only a single mean or CLS pooling mode is supported",
        )),
    }
}

fn read_normalize(dir: &Path) -> Result<bool, RuntimeError> {
    let path = dir.join("modules.json");
    Ok(read_json::<Vec<ModuleEntry>>(&path)?
        .map(|mods| mods.iter().any(|m| m.kind.ends_with(".Normalize")))
        .unwrap_or(false))
}
