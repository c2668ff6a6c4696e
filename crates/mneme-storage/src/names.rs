//! File names derived from client-chosen identifiers.
//!
//! An identifier (an agent id, say) is never used as a path component as it is: `..` would
//! name the parent directory, `a.b` and `a.c` would share `a.tmp` through extension
//! handling, and `Bot`/`bot` would collide on a case-insensitive file system. Instead the
//! bytes are written in lowercase base32hex (RFC 4648 §7, no padding): an injective
//! encoding whose alphabet is `0-9a-v`, so a name never contains a dot, a separator or an
//! upper-case letter, is never empty, and decodes back to exactly one identifier. A
//! 128-byte identifier becomes 205 characters, within the 255 bytes every common file
//! system allows for a name.

/// Longest identifier [`encode_name`] accepts (its name is 205 characters).
pub const NAME_SOURCE_BYTES_MAX: usize = 128;

/// The file-name form of `id`, with `prefix` (which must itself be a safe name part, such
/// as `"a-"`) in front. `None` for an empty identifier or one over
/// [`NAME_SOURCE_BYTES_MAX`] bytes.
pub fn encode_name(prefix: &str, id: &[u8]) -> Option<String> {
    if id.is_empty() || id.len() > NAME_SOURCE_BYTES_MAX {
        return None;
    }
    let mut name = String::with_capacity(prefix.len() + (id.len() * 8).div_ceil(5));
    name.push_str(prefix);
    name.push_str(
        &data_encoding::BASE32HEX_NOPAD
            .encode(id)
            .to_ascii_lowercase(),
    );
    Some(name)
}

/// The identifier whose [`encode_name`] with `prefix` is `name`; `None` when `name` is not
/// such a name (so it was not written by this module).
pub fn decode_name(prefix: &str, name: &str) -> Option<Vec<u8>> {
    let encoded = name.strip_prefix(prefix)?;
    if encoded.is_empty() || encoded.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let id = data_encoding::BASE32HEX_NOPAD
        .decode(encoded.to_ascii_uppercase().as_bytes())
        .ok()?;
    // Only the canonical encoding counts, so that one identifier has exactly one name.
    (encode_name(prefix, &id).as_deref() == Some(name)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_distinct_and_reversible() {
        let long = vec![b'L'; NAME_SOURCE_BYTES_MAX];
        let ids: [&[u8]; 8] = [
            b"..", b".", b"a.b", b"a.c", b"Bot", b"bot", b"x/../y", &long,
        ];
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            let name = encode_name("a-", id).unwrap();
            assert!(name.len() <= 255, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b) || b == b'-'),
                "{name}"
            );
            // Distinct even on a case-insensitive file system.
            assert!(seen.insert(name.to_ascii_lowercase()), "{name} collides");
            assert_eq!(decode_name("a-", &name).as_deref(), Some(id));
        }
        assert_eq!(encode_name("a-", b""), None);
        assert_eq!(encode_name("a-", &[0; NAME_SOURCE_BYTES_MAX + 1]), None);
        for bad in [
            "a-", "b-00", "a-..", "a-0W", "a-A0", "a-0", "MANIFEST", "a-01.tmp",
        ] {
            assert_eq!(decode_name("a-", bad), None, "{bad}");
        }
    }
}
