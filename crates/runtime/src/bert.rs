//! A BERT encoder that runs on *packed* batches: the token rows of all
//! sequences are stacked into one `[total_tokens, hidden]` matrix, so every
//! dense layer (about 90% of the work) computes no padding at all. Only the
//! attention scores are formed per sequence, on a padded `[batch, heads,
//! max_len, max_len]` view built with one gather and undone with another.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use serde::Deserialize;

use crate::RuntimeError;
use crate::attention::{bias_gelu, bias_residual_layer_norm, packed_attention};

/// The fields of a Hugging Face BERT `config.json` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

struct Linear {
    /// Stored transposed, `[in, out]`, so the forward pass is a plain matmul.
    weight_t: Tensor,
    bias: Tensor,
    /// The bias on the host, for the fused CPU ops.
    bias_host: Vec<f32>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }

    /// The matmul alone; the caller fuses the bias into what follows.
    fn forward_no_bias(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    weight_host: Vec<f32>,
    bias_host: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// `LayerNorm(linear(x) + residual)`, fused on the CPU.
    fn after(&self, lin: &Linear, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            bias_residual_layer_norm(
                &lin.forward_no_bias(x)?,
                residual,
                &lin.bias_host,
                &self.weight_host,
                &self.bias_host,
                self.eps,
            )
        } else {
            self.forward(&(lin.forward(x)? + residual)?)
        }
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

/// Loaded BERT weights, ready for [`BertModel::forward`].
pub struct BertModel {
    pub config: BertConfig,
    device: Device,
    word_embeddings: Tensor,
    /// Position embeddings with token type 0 already added: neocloud embeds
    /// single segments, so the type embedding is a constant per position.
    position_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    /// Padded batched-matmul attention (GPUs) instead of the packed CPU op.
    pub padded_attention: bool,
}

/// The positions of one packed batch and how to pad and unpad it.
pub struct PackedBatch {
    pub lengths: Vec<usize>,
    pub max_len: usize,
    pub total: usize,
    ids: Tensor,
    positions: Tensor,
    /// For each padded slot `b * max_len + t`, the packed row it reads (a
    /// pad slot reads row 0; its scores are masked and its output dropped).
    pad_index: Option<Tensor>,
    /// For each packed row, its padded slot.
    unpad_index: Option<Tensor>,
    /// `[batch, 1, 1, max_len]`: 0 for real keys, a large negative for pads.
    mask: Option<Tensor>,
}

impl PackedBatch {
    /// Packs `seqs`; the pad/unpad indices are built only for the padded
    /// attention path.
    pub fn new(
        seqs: &[&[u32]],
        device: &Device,
        padded_attention: bool,
    ) -> candle_core::Result<PackedBatch> {
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        let total: usize = lengths.iter().sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for s in seqs {
            ids.extend_from_slice(s);
            positions.extend(0..s.len() as u32);
        }
        let ragged = padded_attention && lengths.iter().any(|&l| l != max_len);
        let (pad_index, unpad_index, mask) = if ragged {
            let b = seqs.len();
            let mut pad = vec![0u32; b * max_len];
            let mut unpad = Vec::with_capacity(total);
            let mut mask = vec![0f32; b * max_len];
            let mut row = 0u32;
            for (i, &len) in lengths.iter().enumerate() {
                for t in 0..max_len {
                    let slot = i * max_len + t;
                    if t < len {
                        pad[slot] = row;
                        unpad.push(slot as u32);
                        row += 1;
                    } else {
                        mask[slot] = -1e9;
                    }
                }
            }
            (
                Some(Tensor::from_vec(pad, b * max_len, device)?),
                Some(Tensor::from_vec(unpad, total, device)?),
                Some(Tensor::from_vec(mask, (b, 1, 1, max_len), device)?),
            )
        } else {
            (None, None, None)
        };
        Ok(PackedBatch {
            ids: Tensor::from_vec(ids, total, device)?,
            positions: Tensor::from_vec(positions, total, device)?,
            lengths,
            max_len,
            total,
            pad_index,
            unpad_index,
            mask,
        })
    }
}

impl BertModel {
    /// Loads `config.json` and memory-mapped `model.safetensors` from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<BertModel, RuntimeError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| RuntimeError::load(&config_path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| RuntimeError::load(&config_path, e))?;
        if let Some(t) = &config.model_type
            && !matches!(
                t.as_str(),
                "bert" | "roberta" | "xlm-roberta" | "distilbert"
            )
        {
            return Err(RuntimeError::load(
                &config_path,
                format!("model_type {t:?} is not a BERT-family encoder"),
            ));
        }
        if config
            .position_embedding_type
            .as_deref()
            .unwrap_or("absolute")
            != "absolute"
        {
            return Err(RuntimeError::load(
                &config_path,
                "only absolute position embeddings are supported",
            ));
        }
        if config.hidden_act != "gelu" {
            return Err(RuntimeError::load(
                &config_path,
                format!(
                    "hidden_act {:?} is not supported (gelu only)",
                    config.hidden_act
                ),
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(RuntimeError::load(
                &config_path,
                "hidden_size must be a multiple of num_attention_heads",
            ));
        }
        let weights_path = dir.join("model.safetensors");
        // SAFETY: the file lives in the content-addressed cache, which is
        // only ever written through renames; nothing mutates it while mapped.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights_path) }
            .map_err(|e| RuntimeError::load(&weights_path, e))?;
        let get = |name: &str| -> Result<Tensor, RuntimeError> {
            let t = st
                .load(name, device)
                .or_else(|_| st.load(&format!("bert.{name}"), device))
                .map_err(|_| {
                    RuntimeError::load(&weights_path, format!("missing tensor {name:?}"))
                })?;
            t.to_dtype(DType::F32)
                .map_err(|e| RuntimeError::load(&weights_path, e))
        };
        let c = &config;
        let h = c.hidden_size;
        let check = |t: Tensor, shape: &[usize], name: &str| -> Result<Tensor, RuntimeError> {
            if t.dims() != shape {
                return Err(RuntimeError::load(
                    &weights_path,
                    format!("tensor {name} has shape {:?}, expected {shape:?}", t.dims()),
                ));
            }
            Ok(t)
        };
        let linear = |prefix: &str, inp: usize, out: usize| -> Result<Linear, RuntimeError> {
            let w = check(get(&format!("{prefix}.weight"))?, &[out, inp], prefix)?;
            let b = check(get(&format!("{prefix}.bias"))?, &[out], prefix)?;
            Ok(Linear {
                weight_t: w
                    .t()
                    .and_then(|t| t.contiguous())
                    .map_err(RuntimeError::engine)?,
                bias_host: b.to_vec1().map_err(RuntimeError::engine)?,
                bias: b,
            })
        };
        let norm = |prefix: &str| -> Result<LayerNorm, RuntimeError> {
            let weight = check(get(&format!("{prefix}.weight"))?, &[h], prefix)?;
            let bias = check(get(&format!("{prefix}.bias"))?, &[h], prefix)?;
            Ok(LayerNorm {
                weight_host: weight.to_vec1().map_err(RuntimeError::engine)?,
                bias_host: bias.to_vec1().map_err(RuntimeError::engine)?,
                weight,
                bias,
                eps: c.layer_norm_eps as f32,
            })
        };
        let word_embeddings = check(
            get("embeddings.word_embeddings.weight")?,
            &[c.vocab_size, h],
            "word_embeddings",
        )?;
        let positions = check(
            get("embeddings.position_embeddings.weight")?,
            &[c.max_position_embeddings, h],
            "position_embeddings",
        )?;
        let types = check(
            get("embeddings.token_type_embeddings.weight")?,
            &[c.type_vocab_size, h],
            "token_type_embeddings",
        )?;
        let position_type_embeddings = types
            .narrow(0, 0, 1)
            .and_then(|t0| positions.broadcast_add(&t0))
            .map_err(RuntimeError::engine)?;
        let embed_norm = norm("embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = linear(&format!("{p}.attention.self.query"), h, h)?;
            let k = linear(&format!("{p}.attention.self.key"), h, h)?;
            let v = linear(&format!("{p}.attention.self.value"), h, h)?;
            // One [h, 3h] matmul instead of three [h, h] ones.
            let bias =
                Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0).map_err(RuntimeError::engine)?;
            let qkv = Linear {
                weight_t: Tensor::cat(&[&q.weight_t, &k.weight_t, &v.weight_t], 1)
                    .map_err(RuntimeError::engine)?,
                bias_host: bias.to_vec1().map_err(RuntimeError::engine)?,
                bias,
            };
            layers.push(Layer {
                qkv,
                attn_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: linear(&format!("{p}.intermediate.dense"), h, c.intermediate_size)?,
                ffn_out: linear(&format!("{p}.output.dense"), c.intermediate_size, h)?,
                ffn_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(BertModel {
            padded_attention: !device.is_cpu(),
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
            config,
            device: device.clone(),
            word_embeddings,
            position_type_embeddings,
            embed_norm,
            layers,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Final hidden states of a packed batch: `[total_tokens, hidden]`.
    pub fn forward(&self, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let words = self.word_embeddings.index_select(&batch.ids, 0)?;
        let pos = self
            .position_type_embeddings
            .index_select(&batch.positions, 0)?;
        let mut x = self.embed_norm.forward(&(words + pos)?)?;
        for layer in &self.layers {
            let ctx = if !self.padded_attention {
                let qkv = layer.qkv.forward_no_bias(&x)?; // [T, 3h]
                packed_attention(
                    &qkv,
                    &layer.qkv.bias_host,
                    &batch.lengths,
                    self.heads,
                    self.head_dim,
                )?
            } else {
                self.padded_attention(layer.qkv.forward(&x)?, batch)?
            };
            x = layer.attn_norm.after(&layer.attn_out, &ctx, &x)?;
            let inner = if self.device.is_cpu() {
                bias_gelu(&layer.ffn_in.forward_no_bias(&x)?, &layer.ffn_in.bias_host)?
            } else {
                layer.ffn_in.forward(&x)?.gelu_erf()?
            };
            x = layer.ffn_norm.after(&layer.ffn_out, &inner, &x)?;
        }
        Ok(x)
    }

    /// Attention on a padded `[batch, heads, max_len, max_len]` view, for
    /// devices where batched matmuls are cheap (GPUs).
    fn padded_attention(&self, qkv: Tensor, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let (b, l, h) = (batch.lengths.len(), batch.max_len, self.config.hidden_size);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let padded = match &batch.pad_index {
            Some(idx) => qkv.index_select(idx, 0)?, // [b*l, 3h]
            None => qkv,
        };
        // [b, l, 3, heads, d] -> three [b, heads, l, d]
        let qkv = padded.reshape((b, l, 3, self.heads, self.head_dim))?;
        let q = qkv
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let k = qkv
            .narrow(2, 1, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let v = qkv
            .narrow(2, 2, 1)?
            .squeeze(2)?
            .transpose(1, 2)?
            .contiguous()?;
        let mut scores = (q.matmul(&k.t()?)? * scale)?; // [b, heads, l, l]
        if let Some(mask) = &batch.mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?; // [b, heads, l, d]
        let ctx = ctx.transpose(1, 2)?.reshape((b * l, h))?;
        match &batch.unpad_index {
            Some(idx) => ctx.index_select(idx, 0), // [T, h]
            None => Ok(ctx),
        }
    }

    /// Mean of each sequence's token rows, as one `[batch, total]` matmul.
    pub fn mean_pool(&self, hidden: &Tensor, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let mut weights = vec![0f32; batch.lengths.len() * batch.total];
        let mut row = 0;
        for (i, &len) in batch.lengths.iter().enumerate() {
            let w = 1.0 / len as f32;
            for t in 0..len {
                weights[i * batch.total + row + t] = w;
            }
            row += len;
        }
        let weights = Tensor::from_vec(weights, (batch.lengths.len(), batch.total), &self.device)?;
        weights.matmul(hidden)
    }

    /// The first token row (`[CLS]`) of each sequence.
    pub fn cls_pool(&self, hidden: &Tensor, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let mut starts = Vec::with_capacity(batch.lengths.len());
        let mut row = 0u32;
        for &len in &batch.lengths {
            starts.push(row);
            row += len as u32;
        }
        let idx = Tensor::from_vec(starts, batch.lengths.len(), &self.device)?;
        hidden.index_select(&idx, 0)
    }
}

/// Scales each row to unit L2 norm (a zero row stays zero).
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f32::MAX)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Writes a small BERT with random weights (config.json and
    /// model.safetensors) into `dir`: real loading code, no download.
    pub(crate) fn write_tiny_bert(dir: &Path, vocab: usize) {
        let (h, inter, layers, maxpos) = (16usize, 32usize, 2usize, 64usize);
        let config = serde_json::json!({
            "vocab_size": vocab, "hidden_size": h, "num_hidden_layers": layers,
            "num_attention_heads": 4, "intermediate_size": inter,
            "max_position_embeddings": maxpos, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu", "model_type": "bert"
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let dev = Device::Cpu;
        let mut t: HashMap<String, Tensor> = HashMap::new();
        let mut rnd = |name: &str, shape: &[usize]| {
            let x = Tensor::randn(0f32, 0.5, shape, &dev).unwrap();
            t.insert(name.to_string(), x);
        };
        rnd("embeddings.word_embeddings.weight", &[vocab, h]);
        rnd("embeddings.position_embeddings.weight", &[maxpos, h]);
        rnd("embeddings.token_type_embeddings.weight", &[2, h]);
        rnd("embeddings.LayerNorm.weight", &[h]);
        rnd("embeddings.LayerNorm.bias", &[h]);
        for i in 0..layers {
            let p = format!("encoder.layer.{i}");
            for (name, out, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", inter, h),
                ("output.dense", h, inter),
            ] {
                rnd(&format!("{p}.{name}.weight"), &[out, inp]);
                rnd(&format!("{p}.{name}.bias"), &[out]);
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                rnd(&format!("{p}.{name}.weight"), &[h]);
                rnd(&format!("{p}.{name}.bias"), &[h]);
            }
        }
        candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    }

    fn pooled(model: &BertModel, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
        let batch = PackedBatch::new(seqs, &Device::Cpu, model.padded_attention).unwrap();
        let hidden = model.forward(&batch).unwrap();
        model.mean_pool(&hidden, &batch).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn a_sequence_gets_the_same_vector_alone_and_in_a_ragged_batch() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 50);
        let mut model = BertModel::load(dir.path(), &Device::Cpu).unwrap();
        let seqs: Vec<Vec<u32>> = vec![
            vec![1, 5, 9, 2],
            vec![1, 7, 2],
            (0..40).map(|i| i % 50).collect(),
            vec![1, 5, 9, 2],
            vec![3],
        ];
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let together = pooled(&model, &refs);
        for (i, s) in refs.iter().enumerate() {
            let alone = &pooled(&model, &[s])[0];
            for (a, b) in alone.iter().zip(&together[i]) {
                assert!((a - b).abs() < 1e-5, "sequence {i}: {a} vs {b}");
            }
        }
        // Different inputs give different vectors: the output depends on them.
        assert!(together[0] != together[1]);
        assert_eq!(together[0], together[3]);
        // The padded (GPU) attention path computes the same thing.
        model.padded_attention = true;
        let padded = pooled(&model, &refs);
        for (p, t) in padded.iter().zip(&together) {
            for (a, b) in p.iter().zip(t) {
                assert!((a - b).abs() < 1e-5, "padded {a} vs packed {b}");
            }
        }
    }

    #[test]
    fn load_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 50);
        let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            config.replace("\"bert\"", "\"llama\""),
        )
        .unwrap();
        let err = BertModel::load(dir.path(), &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("not a BERT-family"), "{err}");
        std::fs::write(
            dir.path().join("config.json"),
            config.replace("\"vocab_size\":50", "\"vocab_size\":51"),
        )
        .unwrap();
        let err = BertModel::load(dir.path(), &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("word_embeddings"), "{err}");
    }
}
