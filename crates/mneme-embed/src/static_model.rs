//! Static (model2vec-format) embeddings: one vector per vocabulary token; a text's vector is
//! the mean of its tokens' vectors. No neural network runs, so it costs microseconds.
//!
//! Reads `config.json`, `tokenizer.json` and `model.safetensors` (a single `embeddings`
//! tensor, I8 or F32, shape `[vocab, dim]`) from a directory, or uses the copy of
//! `m2v-minilm-256-int8` compiled into the binary (feature `builtin-model`).

use std::path::Path;

use crate::wordpiece::WordPiece;
use crate::{Embedder, Family};

/// Tokens beyond this many are ignored (the model's `max_length`).
pub const STATIC_TOKENS_MAX: usize = 512;

#[derive(Debug, Clone)]
enum Table {
    I8(Vec<i8>),
    F32(Vec<f32>),
}

/// A loaded static embedding model.
#[derive(Debug, Clone)]
pub struct StaticEmbedder {
    id: String,
    tokenizer: WordPiece,
    table: Table,
    dim: usize,
    rows: usize,
    /// Subtracted from every unit-length mean (the common direction of all texts).
    center: Option<Vec<f32>>,
}

#[cfg(feature = "builtin-model")]
mod builtin {
    pub const TOKENIZER: &[u8] = include_bytes!("../models/m2v-minilm-256-int8/tokenizer.json");
    pub const MODEL: &[u8] = include_bytes!("../models/m2v-minilm-256-int8/model.safetensors");
    pub const MEAN: &[u8] = include_bytes!("../models/m2v-minilm-256-int8-centered/mean.f32");
}

/// Id of the built-in model as distributed (agents created before the centered variant).
pub const BUILTIN_STATIC_ID: &str = "m2v-minilm-256-int8";

/// Id of the built-in model with its common direction removed: the default embedder.
pub const BUILTIN_CENTERED_ID: &str = "m2v-minilm-256-int8-centered";

impl StaticEmbedder {
    /// The model compiled into the binary, if the `builtin-model` feature is on.
    pub fn builtin() -> Option<Result<Self, String>> {
        #[cfg(feature = "builtin-model")]
        {
            Some(Self::from_bytes(
                BUILTIN_STATIC_ID,
                builtin::TOKENIZER,
                builtin::MODEL,
                None,
            ))
        }
        #[cfg(not(feature = "builtin-model"))]
        {
            None
        }
    }

    /// The built-in model with the mean of its unit embeddings of 60,000 English sentences
    /// (`models/m2v-minilm-256-int8-centered/README.md`) subtracted from every text's unit
    /// mean. Averaging token vectors leaves every text sharing one large common direction
    /// (norm 0.61), so unrelated texts look alike; removing it ("all-but-the-top") is what
    /// lets the static model rank "User prefers formal tone" first for "how should I write
    /// my responses?". Measured in BENCHMARKS.md.
    pub fn builtin_centered() -> Option<Result<Self, String>> {
        #[cfg(feature = "builtin-model")]
        {
            let mean: Vec<f32> = builtin::MEAN
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Some(Self::from_bytes(
                BUILTIN_CENTERED_ID,
                builtin::TOKENIZER,
                builtin::MODEL,
                Some(mean),
            ))
        }
        #[cfg(not(feature = "builtin-model"))]
        {
            None
        }
    }

    /// Loads a model directory. Its id is `m2v:` plus the directory name (the built-in
    /// model's files keep the built-in id so agents can move between the two).
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = if name == BUILTIN_STATIC_ID {
            name
        } else {
            format!("m2v:{name}")
        };
        let config: serde_json::Value = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| format!("config.json: {e}"))?;
        if let Some(kind) = config
            .get("model_type")
            .and_then(|v| v.as_str())
            .filter(|kind| *kind != "model2vec")
        {
            return Err(format!("config.json: model_type {kind:?} is not model2vec"));
        }
        Self::from_bytes(
            &id,
            &read("tokenizer.json")?,
            &read("model.safetensors")?,
            None,
        )
    }

    fn from_bytes(
        id: &str,
        tokenizer: &[u8],
        model: &[u8],
        center: Option<Vec<f32>>,
    ) -> Result<Self, String> {
        let tokenizer = WordPiece::from_json(tokenizer)?;
        let (table, rows, dim) = parse_safetensors(model)?;
        if center.as_ref().is_some_and(|c| c.len() != dim) {
            return Err(format!(
                "the centering vector does not have {dim} dimensions"
            ));
        }
        if rows < tokenizer.vocab_len() {
            return Err(format!(
                "model has {rows} rows but the tokenizer has {} tokens",
                tokenizer.vocab_len()
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            tokenizer,
            table,
            dim,
            rows,
            center,
        })
    }

    fn embed_one(&self, text: &str) -> Vec<f32> {
        let unk = self.tokenizer.unk_id();
        let mut sum = vec![0f32; self.dim];
        let mut n = 0usize;
        let ids = self.tokenizer.encode(text);
        for id in ids
            .into_iter()
            .filter(|id| Some(*id) != unk)
            .take(STATIC_TOKENS_MAX)
        {
            let row = id as usize;
            if row >= self.rows {
                continue;
            }
            let start = row * self.dim;
            match &self.table {
                Table::I8(t) => {
                    for (s, x) in sum.iter_mut().zip(&t[start..start + self.dim]) {
                        *s += f32::from(*x);
                    }
                }
                Table::F32(t) => {
                    for (s, x) in sum.iter_mut().zip(&t[start..start + self.dim]) {
                        *s += *x;
                    }
                }
            }
            n += 1;
        }
        if n > 0 {
            sum.iter_mut().for_each(|s| *s /= n as f32);
        }
        if let Some(center) = &self.center {
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                for (s, c) in sum.iter_mut().zip(center) {
                    *s = *s / norm - c;
                }
            }
        }
        sum
    }
}

fn parse_safetensors(bytes: &[u8]) -> Result<(Table, usize, usize), String> {
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize)
        .ok_or("model.safetensors is shorter than its header length")?;
    let header_end = 8usize
        .checked_add(header_len)
        .filter(|end| *end <= bytes.len())
        .ok_or("model.safetensors header runs past the file")?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| format!("model.safetensors header: {e}"))?;
    let tensor = header
        .get("embeddings")
        .ok_or("model.safetensors has no `embeddings` tensor")?;
    let dtype = tensor.get("dtype").and_then(|v| v.as_str()).unwrap_or("");
    let shape: Vec<usize> = tensor
        .get("shape")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default();
    let offsets: Vec<usize> = tensor
        .get("data_offsets")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default();
    let ([rows, dim], [begin, end]) = (shape.as_slice(), offsets.as_slice()) else {
        return Err("`embeddings` must be 2-D with two data offsets".into());
    };
    let (rows, dim) = (*rows, *dim);
    if dim == 0 || dim > crate::DIMENSIONS_MAX {
        return Err(format!("`embeddings` has {dim} dimensions"));
    }
    let data = bytes
        .get(header_end + begin..header_end + end)
        .ok_or("`embeddings` data runs past the file")?;
    let elem = match dtype {
        "I8" => 1,
        "F32" => 4,
        other => {
            return Err(format!(
                "`embeddings` dtype {other} is not supported (I8, F32)"
            ));
        }
    };
    if data.len() != rows * dim * elem {
        return Err(format!(
            "`embeddings` holds {} bytes, shape needs {}",
            data.len(),
            rows * dim * elem
        ));
    }
    let table = if elem == 1 {
        Table::I8(data.iter().map(|b| *b as i8).collect())
    } else {
        Table::F32(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    Ok((table, rows, dim))
}

impl Embedder for StaticEmbedder {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.dim
    }
    /// A table lookup per token: microseconds.
    fn is_cheap(&self) -> bool {
        true
    }

    fn family(&self) -> Family {
        if self.center.is_some() {
            Family::StaticMiniLmCentered
        } else {
            Family::StaticMiniLm
        }
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(all(test, feature = "builtin-model"))]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
            * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    }

    /// Checks `cos(query, text)` against the value a model's README publishes.
    #[allow(clippy::unwrap_used, reason = "a test helper fails loudly")]
    fn assert_cosines(model: &StaticEmbedder, query: &str, pairs: &[(&str, f32)], tol: f32) {
        let q = &model.embed(&[query]).unwrap()[0];
        for (text, published) in pairs {
            let c = cos(q, &model.embed(&[text]).unwrap()[0]);
            assert!((c - published).abs() < tol, "{}: {text:?} {c}", model.id());
        }
    }

    #[test]
    fn the_builtin_models_reproduce_their_published_cosines() {
        let plain = StaticEmbedder::builtin().unwrap().unwrap();
        assert_eq!(plain.dim(), 256);
        // m2v-minilm-256-int8/README.md.
        let formal = "User prefers formal tone";
        assert_cosines(
            &plain,
            formal,
            &[
                ("how should I write my responses?", 0.290),
                ("Last deployment was on March 10", 0.032),
            ],
            2e-3,
        );
        let centered = StaticEmbedder::builtin_centered().unwrap().unwrap();
        assert_eq!((centered.id(), centered.dim()), (BUILTIN_CENTERED_ID, 256));
        // m2v-minilm-256-int8-centered/README.md: the canonical example ranks right.
        assert_cosines(
            &centered,
            "how should I write my responses?",
            &[(formal, 0.234), ("User is on the Pro plan", 0.032)],
            3e-3,
        );
        assert!(centered.embed(&[""]).unwrap()[0].iter().all(|x| *x == 0.0));
    }

    #[test]
    fn loading_a_directory_gives_the_same_vectors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/m2v-minilm-256-int8");
        let from_dir = StaticEmbedder::from_dir(&dir).unwrap();
        let builtin = StaticEmbedder::builtin().unwrap().unwrap();
        assert_eq!(from_dir.id(), builtin.id());
        assert_eq!(
            from_dir.embed(&["hello world"]).unwrap(),
            builtin.embed(&["hello world"]).unwrap()
        );
        assert!(StaticEmbedder::from_dir(Path::new("/nonexistent")).is_err());
    }
}
