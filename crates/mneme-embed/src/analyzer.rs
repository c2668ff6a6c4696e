//! Lexical analysis: a text becomes the terms a lexical (BM25) index stores.
//!
//! Words are split at Unicode word boundaries (UAX #29), case-folded, stripped of English
//! stop words and reduced by the Snowball English stemmer, so "Deployments", "deployed" and
//! "deploy" meet. A term is its 64-bit FNV-1a hash: the index never stores strings, and a
//! collision (one in ~10¹⁹ pairs) only merges two words' statistics.

use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

/// At most this many terms are taken from one text (the rest are ignored, never an error:
/// a memory's content is bounded by the engine's own limit).
pub const TERMS_MAX: usize = 4096;

/// Words longer than this (bytes) are dropped: hashes, base64 and URLs carry no meaning a
/// query repeats word for word, and they would bloat the vocabulary.
pub const TERM_BYTES_MAX: usize = 48;

/// English function words: frequent in both questions and memories, so they carry no
/// evidence of relevance and only lengthen the postings a query walks.
const STOP_WORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or",
    "our", "she", "should", "so", "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "to", "us", "was", "we", "were", "what", "when", "where", "which",
    "who", "why", "will", "with", "would", "you", "your",
];

fn stemmer() -> &'static Stemmer {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| Stemmer::create(Algorithm::English))
}

/// The stable 64-bit hash of a term.
pub fn term_hash(term: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in term.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The terms of `text` in order of appearance (repeats kept: they are term frequencies).
pub fn analyze(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut lower = String::new();
    for word in text.unicode_words() {
        if out.len() == TERMS_MAX {
            break;
        }
        if word.len() > TERM_BYTES_MAX {
            continue;
        }
        lower.clear();
        lower.extend(word.chars().flat_map(char::to_lowercase));
        // Possessives and contractions: "user's" → "user", "don't" stays one word.
        let word = lower.strip_suffix("'s").unwrap_or(&lower);
        let word = word.strip_suffix("’s").unwrap_or(word);
        if STOP_WORDS.binary_search(&word).is_ok() {
            continue;
        }
        out.push(term_hash(&stemmer().stem(word)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn inflections_and_case_meet_and_function_words_go() {
        assert_eq!(analyze("Deployments"), analyze("deploying"));
        assert_eq!(analyze("The user's PASSWORD"), analyze("user password"));
        assert!(analyze("how should I do it?").is_empty());
        assert_eq!(analyze("reset, reset; RESET!").len(), 3);
        assert_ne!(analyze("tone"), analyze("plan"));
    }

    #[test]
    fn non_latin_text_and_hostile_input_are_handled() {
        assert_eq!(analyze("東京 タワー").len(), analyze("東京 タワー").len());
        assert!(!analyze("Zürich café").is_empty());
        assert!(analyze(&"x".repeat(1000)).is_empty());
        let many = "word ".repeat(TERMS_MAX + 10);
        assert_eq!(analyze(&many).len(), TERMS_MAX);
        assert!(analyze("").is_empty());
    }
}
