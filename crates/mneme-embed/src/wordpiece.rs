//! A BERT (uncased) WordPiece tokenizer read from a Hugging Face `tokenizer.json`:
//! the `BertNormalizer` (clean text, pad CJK characters, strip accents, lower-case), the
//! `BertPreTokenizer` (split on whitespace and punctuation) and greedy longest-match
//! WordPiece with the `##` continuation prefix. Written here so the default build needs no
//! tokenizer library; it covers exactly the configuration MiniLM-family models use and
//! refuses others.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

/// A loaded WordPiece vocabulary and its settings.
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk_id: Option<u32>,
    prefix: String,
    max_chars_per_word: usize,
    lowercase: bool,
    strip_accents: bool,
}

fn str_field<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

impl WordPiece {
    /// Parses `tokenizer.json`.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let root: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let model = root.get("model").ok_or("tokenizer.json has no model")?;
        if str_field(model, &["type"]) != Some("WordPiece") {
            return Err("tokenizer.json: only WordPiece models are supported".into());
        }
        let vocab_json = model
            .get("vocab")
            .and_then(|v| v.as_object())
            .ok_or("tokenizer.json: model.vocab missing")?;
        let mut vocab = HashMap::with_capacity(vocab_json.len());
        for (token, id) in vocab_json {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("tokenizer.json: bad id for {token:?}"))?;
            vocab.insert(token.clone(), id);
        }
        let unk = str_field(model, &["unk_token"]).unwrap_or("[UNK]");
        let normalizer = root.get("normalizer");
        let lowercase = normalizer
            .and_then(|n| n.get("lowercase"))
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        // BERT: strip_accents = null means "follow lowercase".
        let strip_accents = normalizer
            .and_then(|n| n.get("strip_accents"))
            .and_then(|v| v.as_bool())
            .unwrap_or(lowercase);
        Ok(Self {
            unk_id: vocab.get(unk).copied(),
            vocab,
            prefix: str_field(model, &["continuing_subword_prefix"])
                .unwrap_or("##")
                .to_owned(),
            max_chars_per_word: model
                .get("max_input_chars_per_word")
                .and_then(|v| v.as_u64())
                .unwrap_or(100) as usize,
            lowercase,
            strip_accents,
        })
    }

    /// Id of the unknown token, if the vocabulary has one.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Id of a token, if in the vocabulary.
    #[cfg(feature = "minilm")]
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Number of entries in the vocabulary.
    pub fn vocab_len(&self) -> usize {
        self.vocab.len()
    }

    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
                continue;
            }
            if c.is_whitespace() {
                out.push(' ');
            } else if is_cjk(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        let out = if self.lowercase {
            out.to_lowercase()
        } else {
            out
        };
        if self.strip_accents {
            out.nfd()
                .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
                .collect()
        } else {
            out
        }
    }

    /// Token ids of `text` (no special tokens).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let mut ids = Vec::new();
        for word in pre_tokenize(&normalized) {
            self.word_piece(word, &mut ids);
        }
        ids
    }

    fn word_piece(&self, word: &str, ids: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > self.max_chars_per_word {
            ids.extend(self.unk_id);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                let from = chars[start].0;
                let to = chars.get(end).map_or(word.len(), |c| c.0);
                let piece = if start > 0 {
                    format!("{}{}", self.prefix, &word[from..to])
                } else {
                    word[from..to].to_owned()
                };
                if let Some(id) = self.vocab.get(&piece) {
                    found = Some(*id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => pieces.push(id),
                None => {
                    ids.extend(self.unk_id);
                    return;
                }
            }
            start = end;
        }
        ids.extend(pieces);
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

fn is_punctuation(c: char) -> bool {
    let cp = c as u32;
    // BERT treats every non-alphanumeric ASCII symbol as punctuation, plus Unicode P*.
    (33..=47).contains(&cp)
        || (58..=64).contains(&cp)
        || (91..=96).contains(&cp)
        || (123..=126).contains(&cp)
        || matches!(cp, 0x2000..=0x206F | 0x3000..=0x303F | 0xFF00..=0xFF0F | 0xFF1A..=0xFF20)
        || matches!(c, '¡' | '§' | '«' | '¶' | '·' | '»' | '¿')
}

/// Splits on whitespace, and makes every punctuation character its own word.
fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for chunk in text.split_whitespace() {
        let mut start = 0;
        for (i, c) in chunk.char_indices() {
            if is_punctuation(c) {
                if start < i {
                    words.push(&chunk[start..i]);
                }
                words.push(&chunk[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < chunk.len() {
            words.push(&chunk[start..]);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WordPiece {
        let json =
            br###"{"normalizer":{"type":"BertNormalizer","lowercase":true,"strip_accents":null},
            "model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##",
            "max_input_chars_per_word":100,
            "vocab":{"[UNK]":0,"un":1,"##aff":2,"##able":3,"cafe":4,",":5,"hello":6}}}"###;
        WordPiece::from_json(json).unwrap()
    }

    #[test]
    fn greedy_longest_match_with_continuations_accents_and_punctuation() {
        let wp = tiny();
        assert_eq!(wp.encode("Unaffable, HELLO"), vec![1, 2, 3, 5, 6]);
        assert_eq!(wp.encode("Café"), vec![4]);
        assert_eq!(wp.encode("zzz hello"), vec![0, 6]);
    }
}
