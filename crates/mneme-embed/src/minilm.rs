//! all-MiniLM-L6-v2 on CPU: a BERT encoder written here on `candle-nn`, WordPiece
//! tokenisation (`wordpiece.rs`, the same BERT-uncased rules as Hugging Face's tokenizer),
//! mean pooling over the attention mask, then L2 normalisation — the sentence-transformers
//! recipe, reproduced to ±1e-3 in cosine (tested against reference vectors).
//!
//! Loads `config.json`, `tokenizer.json` and `model.safetensors` from a directory; nothing
//! is fetched from anywhere. Built only with the `minilm` cargo feature.

use std::path::Path;

use crate::wordpiece::WordPiece;
use crate::{Embedder, Family};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder, embedding, layer_norm, linear};

/// Tokens per text including `[CLS]` and `[SEP]` (sentence-transformers' max_seq_length).
pub const MINILM_TOKENS_MAX: usize = 256;
/// Texts per forward pass.
pub const MINILM_BATCH_MAX: usize = 32;

#[derive(Debug, Clone, serde::Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: Option<String>,
}

#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A loaded MiniLM (BERT) sentence encoder.
pub struct MiniLmEmbedder {
    id: String,
    tokenizer: WordPiece,
    cls: u32,
    sep: u32,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    device: Device,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for MiniLmEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLmEmbedder")
            .field("id", &self.id)
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl MiniLmEmbedder {
    /// Loads the model in `dir`, running inference on `threads` threads (0: all cores).
    pub fn from_dir(dir: &Path, threads: usize) -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("config.json: {e}"))?;
        if config.hidden_act.as_deref().is_some_and(|a| a != "gelu") {
            return Err(format!(
                "config.json: hidden_act {:?} is not supported (gelu)",
                config.hidden_act
            ));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(
                "config.json: hidden_size must be a multiple of num_attention_heads".into(),
            );
        }
        let tokenizer = WordPiece::from_json(&read("tokenizer.json")?)?;
        let (cls, sep) = match (tokenizer.token_id("[CLS]"), tokenizer.token_id("[SEP]")) {
            (Some(cls), Some(sep)) => (cls, sep),
            _ => return Err("tokenizer.json: [CLS] or [SEP] missing".into()),
        };
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &device)
            .map_err(|e| format!("model.safetensors: {e}"))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let e = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                Ok(Layer {
                    query: linear(h, h, l.pp("attention.self.query"))?,
                    key: linear(h, h, l.pp("attention.self.key"))?,
                    value: linear(h, h, l.pp("attention.self.value"))?,
                    attention_out: linear(h, h, l.pp("attention.output.dense"))?,
                    attention_norm: layer_norm(h, eps, l.pp("attention.output.LayerNorm"))?,
                    intermediate: linear(h, config.intermediate_size, l.pp("intermediate.dense"))?,
                    output: linear(config.intermediate_size, h, l.pp("output.dense"))?,
                    output_norm: layer_norm(h, eps, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(|e| format!("model.safetensors: {e}"))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mneme-minilm-{i}"))
            .build()
            .map_err(err)?;
        Ok(Self {
            id: if name.is_empty() || name == "model" {
                "minilm".into()
            } else {
                format!("minilm:{name}")
            },
            tokenizer,
            cls,
            sep,
            word: embedding(config.vocab_size, h, e.pp("word_embeddings")).map_err(err)?,
            position: embedding(
                config.max_position_embeddings,
                h,
                e.pp("position_embeddings"),
            )
            .map_err(err)?,
            token_type: embedding(config.type_vocab_size, h, e.pp("token_type_embeddings"))
                .map_err(err)?,
            embeddings_norm: layer_norm(h, eps, e.pp("LayerNorm")).map_err(err)?,
            layers,
            heads: config.num_attention_heads,
            hidden: h,
            device,
            pool,
        })
    }

    fn encode_ids(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(32);
        ids.push(self.cls);
        ids.extend(
            self.tokenizer
                .encode(text)
                .into_iter()
                .take(MINILM_TOKENS_MAX - 2),
        );
        ids.push(self.sep);
        ids
    }

    fn forward(&self, batch: &[Vec<u32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let (b, t) = (batch.len(), batch.iter().map(Vec::len).max().unwrap_or(0));
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (row, seq) in batch.iter().enumerate() {
            ids[row * t..row * t + seq.len()].copy_from_slice(seq);
            mask[row * t..row * t + seq.len()]
                .iter_mut()
                .for_each(|m| *m = 1.0);
        }
        let ids = Tensor::from_vec(ids, (b, t), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
        let positions = Tensor::arange(0u32, t as u32, &self.device)?;
        let types = ids.zeros_like()?;
        let x = self
            .word
            .forward(&ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        // Padding positions get a large negative score before the softmax.
        let bias = ((mask.ones_like()? - &mask)? * -1e9)?.reshape((b, 1, 1, t))?;
        let dh = self.hidden / self.heads;
        let scale = 1.0 / (dh as f64).sqrt();
        for layer in &self.layers {
            let split = |y: Tensor| {
                y.reshape((b, t, self.heads, dh))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context =
                probs
                    .matmul(&v)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b, t, self.hidden))?;
            let attended = layer
                .attention_norm
                .forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = layer.intermediate.forward(&attended)?.gelu_erf()?;
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&inner)? + &attended)?)?;
        }
        let weights = mask.unsqueeze(2)?;
        let summed = x.broadcast_mul(&weights)?.sum(1)?;
        let counts = weights.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        mean.to_vec2::<f32>()
    }
}

impl Embedder for MiniLmEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.hidden
    }
    fn family(&self) -> Family {
        Family::MiniLm
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(MINILM_BATCH_MAX) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|t| self.encode_ids(t)).collect();
            let vectors = self.pool.install(|| self.forward(&batch)).map_err(err)?;
            out.extend(vectors);
        }
        Ok(out)
    }
}
