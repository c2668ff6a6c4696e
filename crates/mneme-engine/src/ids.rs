//! Memory ids: 26-character ULIDs (48-bit millisecond time + 80 random bits, Crockford
//! base32). Unique across agents and nodes without coordination, and time-ordered, so list
//! pages follow creation order.

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new id for a memory created at `now_ms`.
pub fn new_memory_id(now_ms: i64) -> String {
    let time = (now_ms.max(0) as u128) & ((1u128 << 48) - 1);
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    let mut value = (time << 80) | random;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    out.iter().map(|b| *b as char).collect()
}

/// True for strings shaped like ids this module makes (checked before using one as a key).
pub fn is_memory_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_unique_and_time_ordered() {
        let a = new_memory_id(1_000);
        let b = new_memory_id(2_000);
        assert!(is_memory_id(&a) && is_memory_id(&b));
        assert!(a < b);
        assert_ne!(new_memory_id(1_000), new_memory_id(1_000));
        assert!(!is_memory_id("../../etc/passwd"));
    }
}
