//! all-MiniLM-L6-v2 on CPU: a BERT encoder written here in plain Rust, WordPiece
//! tokenisation (`wordpiece.rs`, the same BERT-uncased rules as Hugging Face's tokenizer),
//! mean pooling over the tokens, then (in the engine) L2 normalisation — the
//! sentence-transformers recipe, reproduced to ±1e-3 in cosine (tested against reference
//! vectors).
//!
//! Why not a tensor library: a query is about 16 tokens, so every dense layer is a 16-row
//! matrix times a weight matrix read once. General GEMM kernels repack the weights on every
//! call (46 % of the time with candle, measured); here the weights are packed once at load
//! into panels of 16 outputs and one kernel ([`dense_panels`]) streams each panel once
//! against a few token rows held in registers. The tokens of a whole batch share the dense
//! layers (only attention is per text), so batches pay no padding.
//!
//! The dense weights are kept in bfloat16 (21 MB instead of 42: they fit this class of
//! machine's L3, and a query streams half the bytes); activations, sums, embeddings and
//! norms stay f32 (but for the AVX-512 BF16 kernel's rounded activations, below). Measured against f32 weights on the reference sentences: pair cosines
//! move by 1e-4 (0.25073 → 0.25083), every sentence stays ≥ 0.99998 in cosine to the
//! reference, and a 17-token query takes about 20 % less time (BENCHMARKS.md). On a CPU
//! with AVX-512F the kernel runs in 512-bit registers (`avx512.rs`, chosen at run time):
//! another 20–25 %. With AVX-512 BF16 as well, the activations entering each dense layer
//! are rounded to bfloat16 too and `vdpbf16ps` multiplies two inputs per lane: 25–30 %
//! less again, and the reference tests still pass on every kernel (pair 0.2502 for
//! 0.2507, every sentence ≥ 0.99997). Attention and layer norm sum in 16 lanes.
//!
//! Loads `config.json`, `tokenizer.json` and `model.safetensors` (f32) from a directory;
//! nothing is fetched from anywhere. Every shape is checked against the config before use,
//! so a damaged or hostile file is an error naming the tensor. Built only with the `minilm`
//! cargo feature.

use std::path::Path;

use multiversion::multiversion;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::wordpiece::WordPiece;
use crate::{Embedder, Family};

/// Tokens per text including `[CLS]` and `[SEP]` (sentence-transformers' max_seq_length).
pub const MINILM_TOKENS_MAX: usize = 256;
/// Texts per forward pass.
pub const MINILM_BATCH_MAX: usize = 32;
/// Output rows of a dense layer one thread computes at a time.
const ROWS_PER_TASK: usize = 96;

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

/// `y = x·Wᵀ + b` for a weight stored `[out][inp]`, kept as blocks of [`ROWS_PER_TASK`]
/// outputs (one thread's share), each a run of panels of [`COLS`] outputs stored
/// `[inp / 2][16]` (zero-padded past `out` and to an even `inp`), the layout
/// [`dense_panels`] streams. The weights are kept in bfloat16 (the top half of an f32: its
/// exponent and 8 bits of mantissa, rounded to nearest), two inputs per 32-bit word: input
/// `2i` in the low half, `2i + 1` in the high half — the pairs AVX-512 BF16's dot product
/// multiplies, and two f32s for the other kernels by a shift and a mask.
#[derive(Debug)]
struct Dense {
    blocks: Vec<Vec<u32>>,
    b: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Dense {
    fn new(w: &[f32], b: Vec<f32>, inp: usize, out: usize) -> Self {
        let pairs = inp.div_ceil(2);
        let bits = |c: usize, k: usize| {
            if k < inp {
                u32::from(half::bf16::from_f32(w[c * inp + k]).to_bits())
            } else {
                0
            }
        };
        let blocks = (0..out.div_ceil(ROWS_PER_TASK))
            .map(|task| {
                let n0 = task * ROWS_PER_TASK;
                let cols = ROWS_PER_TASK.min(out - n0);
                let panels = cols.div_ceil(COLS);
                let mut packed = vec![0u32; panels * pairs * COLS];
                for c in 0..cols {
                    let (p, l) = (c / COLS, c % COLS);
                    for i in 0..pairs {
                        packed[(p * pairs + i) * COLS + l] =
                            bits(n0 + c, 2 * i) | (bits(n0 + c, 2 * i + 1) << 16);
                    }
                }
                packed
            })
            .collect();
        Self {
            blocks,
            b,
            inp,
            out,
        }
    }
}

#[derive(Debug)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

#[derive(Debug)]
struct Layer {
    /// Query, key and value fused: each token's output row is `[q | k | v]`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// A loaded MiniLM (BERT) sentence encoder.
pub struct MiniLmEmbedder {
    id: String,
    tokenizer: WordPiece,
    cls: u32,
    sep: u32,
    vocab: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    eps: f32,
    pool: rayon::ThreadPool,
    kernel: Kernel,
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

/// The f32 tensors of a safetensors file, each checked for its expected shape.
struct Weights<'a>(SafeTensors<'a>);

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let t = self
            .0
            .tensor(name)
            .map_err(|e| format!("model.safetensors: {name}: {e}"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!(
                "model.safetensors: {name} is {:?}, only F32 is supported",
                t.dtype()
            ));
        }
        if t.shape() != shape {
            return Err(format!(
                "model.safetensors: {name} has shape {:?}, config.json implies {shape:?}",
                t.shape()
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The weight `[out][inp]` and bias of a dense layer.
    fn dense(&self, prefix: &str, inp: usize, out: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
        Ok((
            self.get(&format!("{prefix}.weight"), &[out, inp])?,
            self.get(&format!("{prefix}.bias"), &[out])?,
        ))
    }

    fn norm(&self, prefix: &str, h: usize) -> Result<Norm, String> {
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.weight"), &[h])?,
            beta: self.get(&format!("{prefix}.bias"), &[h])?,
        })
    }
}

/// Query, key and value as one dense layer of three times the outputs.
fn fuse(parts: [(Vec<f32>, Vec<f32>); 3], inp: usize) -> Dense {
    let mut w = Vec::new();
    let mut b = Vec::new();
    for (pw, pb) in parts {
        w.extend(pw);
        b.extend(pb);
    }
    let out = b.len();
    Dense::new(&w, b, inp, out)
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
        if config.max_position_embeddings < MINILM_TOKENS_MAX || config.type_vocab_size == 0 {
            return Err(format!(
                "config.json: max_position_embeddings must be at least {MINILM_TOKENS_MAX} \
                 and type_vocab_size at least 1"
            ));
        }
        let tokenizer = WordPiece::from_json(&read("tokenizer.json")?)?;
        let (cls, sep) = match (tokenizer.token_id("[CLS]"), tokenizer.token_id("[SEP]")) {
            (Some(cls), Some(sep)) => (cls, sep),
            _ => return Err("tokenizer.json: [CLS] or [SEP] missing".into()),
        };
        let bytes = read("model.safetensors")?;
        let weights = Weights(
            SafeTensors::deserialize(&bytes).map_err(|e| format!("model.safetensors: {e}"))?,
        );
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                let dense = |name: &str, inp: usize, out: usize| {
                    let (w, b) = weights.dense(&format!("{l}.{name}"), inp, out)?;
                    Ok::<_, String>(Dense::new(&w, b, inp, out))
                };
                Ok(Layer {
                    qkv: fuse(
                        [
                            weights.dense(&format!("{l}.attention.self.query"), h, h)?,
                            weights.dense(&format!("{l}.attention.self.key"), h, h)?,
                            weights.dense(&format!("{l}.attention.self.value"), h, h)?,
                        ],
                        h,
                    ),
                    attention_out: dense("attention.output.dense", h, h)?,
                    attention_norm: weights.norm(&format!("{l}.attention.output.LayerNorm"), h)?,
                    intermediate: dense("intermediate.dense", h, inter)?,
                    output: dense("output.dense", inter, h)?,
                    output_norm: weights.norm(&format!("{l}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mneme-minilm-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            id: if name.is_empty() || name == "model" {
                "minilm".into()
            } else {
                format!("minilm:{name}")
            },
            tokenizer,
            cls,
            sep,
            vocab: config.vocab_size,
            word: weights.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: weights.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: weights.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embeddings_norm: weights.norm("embeddings.LayerNorm", h)?,
            layers,
            heads: config.num_attention_heads,
            hidden: h,
            eps: config.layer_norm_eps as f32,
            pool,
            kernel: Kernel::new(MiniLmKernel::detect()).unwrap_or(Kernel::Portable),
        })
    }

    /// The same model on another dense kernel; an error when this CPU does not run it.
    pub fn with_kernel(mut self, kernel: MiniLmKernel) -> Result<Self, String> {
        self.kernel = Kernel::new(kernel)
            .ok_or_else(|| format!("this CPU does not run the {kernel:?} MiniLM kernel"))?;
        Ok(self)
    }

    /// The dense kernel this model runs.
    pub fn kernel(&self) -> MiniLmKernel {
        self.kernel.public()
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

    /// `y = x·Wᵀ + b` over `t` token rows, the column blocks split over the pool's threads.
    fn dense(&self, x: &[f32], t: usize, d: &Dense, y: &mut [f32]) {
        let tokens = pack_tokens(x, t, d.inp, self.kernel);
        let pairs = d.inp.div_ceil(2);
        let tasks: Vec<(usize, Vec<f32>)> = d
            .blocks
            .par_iter()
            .enumerate()
            .map(|(task, panels)| {
                let cols = ROWS_PER_TASK.min(d.out - task * ROWS_PER_TASK);
                let mut block = vec![0f32; t * cols];
                dense_panels(&tokens, t, pairs, panels, cols, &mut block);
                (task * ROWS_PER_TASK, block)
            })
            .collect();
        for (n0, block) in tasks {
            let cols = block.len() / t.max(1);
            for m in 0..t {
                let row = &mut y[m * d.out + n0..][..cols];
                for ((o, v), b) in row.iter_mut().zip(&block[m * cols..]).zip(&d.b[n0..]) {
                    *o = v + b;
                }
            }
        }
    }

    /// Mean-pooled last hidden states of each token sequence.
    fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        let h = self.hidden;
        let total: usize = batch.iter().map(Vec::len).sum();
        let mut x = vec![0f32; total * h];
        let mut row = 0;
        for seq in batch {
            for (pos, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(format!(
                        "token id {id} is outside the model's vocabulary of {}",
                        self.vocab
                    ));
                }
                let out = &mut x[row * h..(row + 1) * h];
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = word[i] + position[i] + self.token_type[i];
                }
                row += 1;
            }
        }
        layer_norm(&mut x, h, &self.embeddings_norm, self.eps);
        let inter = self.layers.first().map_or(0, |l| l.intermediate.out);
        let mut qkv = vec![0f32; total * 3 * h];
        let mut context = vec![0f32; total * h];
        let mut attended = vec![0f32; total * h];
        let mut inner = vec![0f32; total * inter];
        for layer in &self.layers {
            self.dense(&x, total, &layer.qkv, &mut qkv);
            let lens = batch.iter().map(Vec::len);
            attention(lens, self.heads, h, &qkv, &mut context);
            self.dense(&context, total, &layer.attention_out, &mut attended);
            attended.iter_mut().zip(&x).for_each(|(a, r)| *a += r);
            layer_norm(&mut attended, h, &layer.attention_norm, self.eps);
            self.dense(&attended, total, &layer.intermediate, &mut inner);
            gelu_in_place(&mut inner);
            self.dense(&inner, total, &layer.output, &mut x);
            x.iter_mut().zip(&attended).for_each(|(a, r)| *a += r);
            layer_norm(&mut x, h, &layer.output_norm, self.eps);
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut start = 0;
        for seq in batch {
            let mut mean = vec![0f32; h];
            for r in start..start + seq.len() {
                mean.iter_mut()
                    .zip(&x[r * h..(r + 1) * h])
                    .for_each(|(m, v)| *m += v);
            }
            let n = seq.len().max(1) as f32;
            mean.iter_mut().for_each(|m| *m /= n);
            out.push(mean);
            start += seq.len();
        }
        Ok(out)
    }
}

/// GELU, the erf form BERT uses, over a slice. erf is Abramowitz & Stegun 7.1.26 (1.5e-7 in
/// exact arithmetic, within 1e-6 of the C library's in f32, tested) on a polynomial `exp`
/// (Cephes' `expf`), branch-free so that the loop vectorises: a library `erff` call per
/// value was an eighth of a query's time.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
fn gelu_in_place(values: &mut [f32]) {
    for v in values {
        *v = gelu(*v);
    }
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Layer normalisation of each `h`-long row of `x`, in place.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn layer_norm(x: &mut [f32], h: usize, norm: &Norm, eps: f32) {
    for row in x.chunks_exact_mut(h) {
        let mean = sum(row) / h as f32;
        row.iter_mut().for_each(|v| *v -= mean);
        let var = dot(row, row) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *v = *v * inv * g + b;
        }
    }
}

/// Scaled dot-product attention within each sequence (`lens` tokens each, in order),
/// head by head, over the fused `[q | k | v]` rows of `qkv`.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
fn attention(
    lens: impl Iterator<Item = usize>,
    heads: usize,
    h: usize,
    qkv: &[f32],
    context: &mut [f32],
) {
    let dh = h / heads;
    let scale = 1.0 / (dh as f32).sqrt();
    let mut start = 0;
    let mut scores = Vec::new();
    for len in lens {
        for head in 0..heads {
            let col = head * dh;
            for i in 0..len {
                let q = &qkv[(start + i) * 3 * h + col..][..dh];
                scores.clear();
                scores.extend((0..len).map(|j| {
                    let k = &qkv[(start + j) * 3 * h + h + col..][..dh];
                    dot(q, k) * scale
                }));
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                scores.iter_mut().for_each(|s| *s = exp(*s - max));
                let inv = 1.0 / sum(&scores);
                let out = &mut context[(start + i) * h + col..][..dh];
                out.fill(0.0);
                for (j, p) in scores.iter().enumerate() {
                    let v = &qkv[(start + j) * 3 * h + 2 * h + col..][..dh];
                    let p = p * inv;
                    out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                }
            }
        }
        start += len;
    }
}

/// Lanes of the reductions below: independent partial sums, so the compiler vectorises
/// them (`Iterator::sum` adds in order, one value at a time).
const LANES: usize = 16;

/// `Σ a[i]·b[i]` in [`LANES`] partial sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    let mut lanes = [0f32; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

/// `Σ a[i]` in [`LANES`] partial sums.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let (chunks, rest) = a.as_chunks::<LANES>();
    let mut lanes = [0f32; LANES];
    for x in chunks {
        for l in 0..LANES {
            lanes[l] += x[l];
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Output columns one kernel pass holds in registers (two AVX registers of f32).
pub(crate) const COLS: usize = 16;
/// Token rows one kernel pass holds in registers.
pub(crate) const TOKENS: usize = 6;

/// The dense kernel a model runs: the fastest this CPU has, chosen at load
/// ([`MiniLmKernel::detect`]), or one picked with [`MiniLmEmbedder::with_kernel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MiniLmKernel {
    /// AVX-512 BF16's dot product of bfloat16 pairs (`vdpbf16ps`, x86_64): the activations
    /// entering a dense layer are rounded to bfloat16 like the weights, the sums stay f32;
    /// each instruction does twice the multiply-adds of an f32 one.
    Avx512Bf16,
    /// AVX-512F (x86_64): bfloat16 weights widened to f32, f32 activations.
    Avx512,
    /// Portable Rust the compiler vectorises (AVX2 with FMA, SSE4.1, or the target's
    /// baseline), f32 activations.
    Portable,
}

impl MiniLmKernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// Every kernel this CPU runs, fastest first (never empty: [`MiniLmKernel::Portable`]
    /// runs anywhere).
    pub fn available() -> Vec<Self> {
        let mut kernels = Vec::with_capacity(3);
        #[cfg(target_arch = "x86_64")]
        {
            if crate::avx512::Bf16Dot::detect().is_some() {
                kernels.push(Self::Avx512Bf16);
            }
            if crate::avx512::Avx512F::detect().is_some() {
                kernels.push(Self::Avx512);
            }
        }
        kernels.push(Self::Portable);
        kernels
    }
}

/// A [`MiniLmKernel`] with the proof that this CPU runs it.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Bf16Dot(crate::avx512::Bf16Dot),
    #[cfg(target_arch = "x86_64")]
    Avx512(crate::avx512::Avx512F),
    Portable,
}

impl Kernel {
    fn new(kernel: MiniLmKernel) -> Option<Self> {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            MiniLmKernel::Avx512Bf16 => crate::avx512::Bf16Dot::detect().map(Self::Bf16Dot),
            #[cfg(target_arch = "x86_64")]
            MiniLmKernel::Avx512 => crate::avx512::Avx512F::detect().map(Self::Avx512),
            MiniLmKernel::Portable => Some(Self::Portable),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    fn public(self) -> MiniLmKernel {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Bf16Dot(_) => MiniLmKernel::Avx512Bf16,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => MiniLmKernel::Avx512,
            Self::Portable => MiniLmKernel::Portable,
        }
    }
}

/// Token rows packed by [`pack_tokens`] for the kernel that will multiply them.
enum Packed {
    /// Groups of [`TOKENS`] rows, each stored `[inputs][TOKENS]` in f32, for the AVX-512F
    /// kernel when the proof is there, the portable one otherwise.
    F32(Vec<f32>, Kernel),
    /// Groups of [`TOKENS`] rows, each stored `[inputs / 2][TOKENS]` in words of two
    /// bfloat16 (input `2i` low, `2i + 1` high), the layout of the weight panels.
    #[cfg(target_arch = "x86_64")]
    Bf16Pairs(Vec<u32>, crate::avx512::Bf16Dot),
}

/// The `t` token rows of `x` (each `inp` long) in groups of [`TOKENS`] (zero rows past `t`,
/// a zero input when `inp` is odd), so the kernel walks a panel and a group in step without
/// bounds checks. Packed once per dense layer, shared by every thread's blocks.
fn pack_tokens(x: &[f32], t: usize, inp: usize, kernel: Kernel) -> Packed {
    let pairs = inp.div_ceil(2);
    let groups = t.div_ceil(TOKENS);
    let rows = x.chunks_exact(inp).take(t).enumerate();
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Bf16Dot(cpu) => {
            let mut packed = vec![0u32; groups * pairs * TOKENS];
            let mut words = vec![0u32; pairs];
            for (m, row) in rows {
                let (g, j) = (m / TOKENS, m % TOKENS);
                bf16_pairs(row, &mut words);
                for (i, w) in words.iter().enumerate() {
                    packed[(g * pairs + i) * TOKENS + j] = *w;
                }
            }
            Packed::Bf16Pairs(packed, cpu)
        }
        _ => {
            let mut packed = vec![0f32; groups * 2 * pairs * TOKENS];
            for (m, row) in rows {
                let (g, j) = (m / TOKENS, m % TOKENS);
                for (k, v) in row.iter().enumerate() {
                    packed[(g * 2 * pairs + k) * TOKENS + j] = *v;
                }
            }
            Packed::F32(packed, kernel)
        }
    }
}

/// `row` rounded to bfloat16 (to nearest, ties to even: the bits of `half::bf16::from_f32`
/// for every finite value), two per word, input `2i` in the low half. Integer arithmetic
/// the compiler vectorises: a library conversion per value was a sixth of a query.
#[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2"))]
fn bf16_pairs(row: &[f32], words: &mut [u32]) {
    let round = |v: f32| {
        let bits = v.to_bits();
        bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16
    };
    let (pairs, odd) = row.as_chunks::<2>();
    for (w, pair) in words.iter_mut().zip(pairs) {
        *w = round(pair[0]) | (round(pair[1]) << 16);
    }
    if let [last] = odd {
        words[pairs.len()] = round(*last);
    }
}

/// `out[m][c] = Σ_k x[m][k]·w[c][k]` for the `t` token rows packed in `tokens` (see
/// [`pack_tokens`]) and the `cols` output columns packed in `panels` (see [`Dense::new`]),
/// written token-row major. Per panel and 6 tokens, each step broadcasts one input value
/// (or pair) of each token and multiplies it into the panel's 16 contiguous weights: 12
/// register accumulators, no horizontal sums; a panel (16 × `inp` weights, 12 KiB at 384
/// in bfloat16) is streamed in order once and then served from L1 for the other tokens.
fn dense_panels(
    tokens: &Packed,
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    match tokens {
        #[cfg(target_arch = "x86_64")]
        Packed::Bf16Pairs(x, cpu) => {
            crate::avx512::dense_bf16(*cpu, x, t, pairs, panels, cols, out)
        }
        #[cfg(target_arch = "x86_64")]
        Packed::F32(x, Kernel::Avx512(cpu)) => {
            crate::avx512::dense_f32(*cpu, x, t, pairs, panels, cols, out);
        }
        Packed::F32(x, _) => {
            if fused_multiply_add() {
                dense_panels_fused(x, t, pairs, panels, cols, out);
            } else {
                dense_panels_plain(x, t, pairs, panels, cols, out);
            }
        }
    }
}

/// True when the CPU has a fused multiply-add (then `f32::mul_add` is one instruction, not
/// a library call).
fn fused_multiply_add() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn dense_panels_fused(
    tokens: &[f32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    panels_kernel::<true>(tokens, t, pairs, panels, cols, out);
}

#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn dense_panels_plain(
    tokens: &[f32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    panels_kernel::<false>(tokens, t, pairs, panels, cols, out);
}

#[inline(always)]
fn mac<const FUSED: bool>(acc: f32, v: f32, w: f32) -> f32 {
    if FUSED {
        v.mul_add(w, acc)
    } else {
        acc + v * w
    }
}

#[inline(always)]
fn panels_kernel<const FUSED: bool>(
    packed: &[f32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    for (p, panel) in panels.chunks_exact(pairs * COLS).enumerate() {
        let c0 = p * COLS;
        let width = COLS.min(cols - c0);
        for (g, group) in packed.chunks_exact(2 * pairs * TOKENS).enumerate() {
            let mut acc = [[0f32; COLS]; TOKENS];
            for (w, xs) in panel
                .as_chunks::<COLS>()
                .0
                .iter()
                .zip(group.as_chunks::<{ 2 * TOKENS }>().0)
            {
                // Two bfloat16 to two f32: each becomes the top half of an f32 (vectorises
                // to a shift and a mask).
                let even: [f32; COLS] = std::array::from_fn(|l| f32::from_bits(w[l] << 16));
                let odd: [f32; COLS] = std::array::from_fn(|l| f32::from_bits(w[l] & 0xffff_0000));
                let (xe, xo) = xs.split_at(TOKENS);
                for ((a, ve), vo) in acc.iter_mut().zip(xe).zip(xo) {
                    for l in 0..COLS {
                        a[l] = mac::<FUSED>(mac::<FUSED>(a[l], *ve, even[l]), *vo, odd[l]);
                    }
                }
            }
            let m0 = g * TOKENS;
            for (j, a) in acc.iter().enumerate().take(t - m0) {
                out[(m0 + j) * cols + c0..][..width].copy_from_slice(&a[..width]);
            }
        }
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
            out.extend(self.pool.install(|| self.forward(&batch))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs equals the plain definition, for every block shape and
    /// remainder (odd input counts too), the portable one in its fused (FMA) and its plain
    /// form.
    #[test]
    fn dense_equals_the_definition() {
        for kernel in MiniLmKernel::available() {
            dense_equals_the_definition_with(Kernel::new(kernel).unwrap(), None);
        }
        dense_equals_the_definition_with(Kernel::Portable, Some(dense_panels_fused));
        dense_equals_the_definition_with(Kernel::Portable, Some(dense_panels_plain));
    }

    type Portable = fn(&[f32], usize, usize, &[u32], usize, &mut [f32]);

    fn dense_equals_the_definition_with(kernel: Kernel, portable: Option<Portable>) {
        for (out, t, inp) in [
            (9, 7, 37),
            (16, 4, 8),
            (1, 1, 1),
            (200, 16, 384),
            (97, 5, 3),
            (40, 13, 50),
        ] {
            // Values bfloat16 holds exactly (at most 7 significant bits), so the definition
            // below, the packed weights and the bfloat16 activations agree.
            let w: Vec<f32> = (0..out * inp)
                .map(|i| ((i * 7919) % 97) as f32 / 128.0 - 0.375)
                .collect();
            let x: Vec<f32> = (0..t * inp)
                .map(|i| (((i * 104_729) % 89) as f32 - 44.0) / 64.0)
                .collect();
            let b: Vec<f32> = (0..out).map(|i| i as f32 / 10.0).collect();
            let d = Dense::new(&w, b.clone(), inp, out);
            let pairs = inp.div_ceil(2);
            let tokens = pack_tokens(&x, t, inp, kernel);
            let mut y = vec![0f32; t * out];
            for (task, panels) in d.blocks.iter().enumerate() {
                let cols = ROWS_PER_TASK.min(out - task * ROWS_PER_TASK);
                let mut block = vec![0f32; t * cols];
                match (portable, &tokens) {
                    (Some(run), Packed::F32(x, _)) => run(x, t, pairs, panels, cols, &mut block),
                    _ => dense_panels(&tokens, t, pairs, panels, cols, &mut block),
                }
                for m in 0..t {
                    for c in 0..cols {
                        y[m * out + task * ROWS_PER_TASK + c] =
                            block[m * cols + c] + b[task * ROWS_PER_TASK + c];
                    }
                }
            }
            for n in 0..out {
                for m in 0..t {
                    let want: f32 = b[n]
                        + (0..inp)
                            .map(|k| w[n * inp + k] * x[m * inp + k])
                            .sum::<f32>();
                    assert!(
                        (y[m * out + n] - want).abs() < 1e-3,
                        "{kernel:?} {out}x{t}x{inp} at {n},{m}: {} vs {want}",
                        y[m * out + n]
                    );
                }
            }
        }
    }

    /// The vectorisable erf and exp against the C library's, over the range that matters.
    #[test]
    fn erf_and_exp_match_the_library() {
        for i in -8_000..=8_000 {
            let x = i as f32 / 1_000.0;
            assert!(
                (erf(x) - libm::erff(x)).abs() < 1e-6,
                "erf({x}): {} vs {}",
                erf(x),
                libm::erff(x)
            );
            let e = exp(x);
            assert!(
                ((e - libm::expf(x)) / libm::expf(x)).abs() < 2e-7,
                "exp({x})"
            );
        }
        assert_eq!(exp(-200.0), libm::expf(-87.0));
        assert!(erf(f32::INFINITY) == 1.0 && erf(f32::NEG_INFINITY) == -1.0);
    }

    #[test]
    fn gelu_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_3),
            (3.0, 2.995_950_5),
        ] {
            assert!((gelu(x) - want).abs() < 1e-6, "gelu({x}) = {}", gelu(x));
        }
    }
}
