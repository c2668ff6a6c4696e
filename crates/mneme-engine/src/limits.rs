//! Every size, count and dimension the engine accepts, as named constants, and the checks
//! that enforce them with errors naming field, limit and value.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Longest agent id.
pub const AGENT_ID_BYTES_MAX: usize = 128;
/// Longest session id.
pub const SESSION_ID_BYTES_MAX: usize = 128;
/// Largest memory content.
pub const CONTENT_BYTES_MAX: usize = 64 * 1024;
/// Largest recall query text.
pub const QUERY_BYTES_MAX: usize = 16 * 1024;
/// Most metadata entries on one memory (or in one filter).
pub const METADATA_ENTRIES_MAX: usize = 64;
/// Longest metadata key.
pub const METADATA_KEY_BYTES_MAX: usize = 128;
/// Longest metadata value.
pub const METADATA_VALUE_BYTES_MAX: usize = 1024;
/// Most results a recall may ask for.
pub const TOP_K_MAX: usize = 1_000;
/// Results when a recall asks for 0.
pub const TOP_K_DEFAULT: usize = 5;
/// Most items in one batch remember.
pub const BATCH_ITEMS_MAX: usize = 1_000;
/// Most ids in one forget.
pub const FORGET_IDS_MAX: usize = 10_000;

/// Ids in one mark-used call.
pub const MARK_USED_IDS_MAX: usize = 1_000;
/// Largest vector dimension.
pub const DIMENSIONS_MAX: usize = mneme_index::DIMENSIONS_MAX;
/// Longest time-to-live (100 years).
pub const TTL_SECONDS_MAX: u64 = 100 * 365 * 24 * 3600;
/// Largest context budget.
pub const MAX_TOKENS_MAX: usize = 100_000;
/// Context budget when a request asks for 0.
pub const MAX_TOKENS_DEFAULT: usize = 1_024;
/// Largest list page.
pub const PAGE_SIZE_MAX: usize = 1_000;
/// List page when a request asks for 0.
pub const PAGE_SIZE_DEFAULT: usize = 50;
/// Most memory types named in a filter.
pub const MEMORY_TYPES_MAX: usize = 3;
/// Most memories one agent holds (the native graph addresses points with `u32`).
pub const MEMORIES_PER_AGENT_MAX: usize = 1 << 31;
/// Length of a memory id (a ULID).
pub const MEMORY_ID_BYTES: usize = 26;
/// Most bytes of a client value echoed back in an error message.
pub const ECHO_BYTES_MAX: usize = 64;
/// A client request id (Remember's `request_id`).
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// Request ids an agent remembers (a retry with an older one stores again).
pub const REQUEST_IDS_PER_AGENT_MAX: usize = 10_000;

const _: () = assert!(TOP_K_DEFAULT <= TOP_K_MAX);
const _: () = assert!(PAGE_SIZE_DEFAULT <= PAGE_SIZE_MAX);
const _: () = assert!(MAX_TOKENS_DEFAULT <= MAX_TOKENS_MAX);

fn too_long(field: &str, actual: usize, limit: usize) -> Error {
    Error::invalid(
        field,
        format!("is {actual} bytes, the limit is {limit} bytes"),
    )
}

/// A request id: empty (none) or at most [`REQUEST_ID_BYTES_MAX`] bytes of printable ASCII.
pub fn check_request_id(request_id: &str) -> Result<()> {
    if request_id.len() > REQUEST_ID_BYTES_MAX {
        return Err(too_long(
            "request_id",
            request_id.len(),
            REQUEST_ID_BYTES_MAX,
        ));
    }
    if request_id.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(Error::invalid(
            "request_id",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Agent ids: 1..=128 bytes of `[A-Za-z0-9._:@-]` (they are part of storage keys).
pub fn check_agent_id(agent_id: &str) -> Result<()> {
    if agent_id.is_empty() {
        return Err(Error::invalid("agent_id", "must not be empty"));
    }
    if agent_id.len() > AGENT_ID_BYTES_MAX {
        return Err(too_long("agent_id", agent_id.len(), AGENT_ID_BYTES_MAX));
    }
    if let Some(c) = agent_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:@-".contains(*c)))
    {
        return Err(Error::invalid(
            "agent_id",
            format!("contains {c:?}; allowed are ASCII letters, digits and . _ : @ -"),
        ));
    }
    Ok(())
}

/// A short, printable prefix of a client-supplied value, for error messages (never the
/// whole value: a 1 MB id must not become a 1 MB response header).
pub fn echo(value: &str) -> String {
    let mut end = value.len().min(ECHO_BYTES_MAX);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let shown: String = value[..end]
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if end < value.len() {
        format!("{shown:?}… ({} bytes)", value.len())
    } else {
        format!("{shown:?}")
    }
}

/// Memory ids: the 26-character ULIDs the engine assigns.
pub fn check_memory_id(field: &str, id: &str) -> Result<()> {
    if crate::ids::is_memory_id(id) {
        return Ok(());
    }
    Err(Error::invalid(
        field,
        format!(
            "{} is not a memory id (26 characters of Crockford base32)",
            echo(id)
        ),
    ))
}

/// Session ids: up to 128 bytes of printable text (empty = agent-wide).
pub fn check_session_id(field: &str, session_id: &str) -> Result<()> {
    if session_id.len() > SESSION_ID_BYTES_MAX {
        return Err(too_long(field, session_id.len(), SESSION_ID_BYTES_MAX));
    }
    if session_id.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Memory content: non-empty (after trimming), at most 64 KiB.
pub fn check_content(content: &str) -> Result<()> {
    if content.trim().is_empty() {
        return Err(Error::invalid("content", "must not be empty"));
    }
    if content.len() > CONTENT_BYTES_MAX {
        return Err(too_long("content", content.len(), CONTENT_BYTES_MAX));
    }
    Ok(())
}

/// Metadata maps: entry count and key/value sizes.
pub fn check_metadata(field: &str, metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > METADATA_ENTRIES_MAX {
        return Err(Error::invalid(
            field,
            format!(
                "has {} entries, the limit is {METADATA_ENTRIES_MAX}",
                metadata.len()
            ),
        ));
    }
    for (k, v) in metadata {
        if k.is_empty() {
            return Err(Error::invalid(field, "has an empty key"));
        }
        if k.len() > METADATA_KEY_BYTES_MAX {
            return Err(too_long(
                &format!("{field} key"),
                k.len(),
                METADATA_KEY_BYTES_MAX,
            ));
        }
        if v.len() > METADATA_VALUE_BYTES_MAX {
            return Err(too_long(
                &format!("{field}[{k:?}]"),
                v.len(),
                METADATA_VALUE_BYTES_MAX,
            ));
        }
    }
    Ok(())
}

/// Importance in [0, 1] (NaN refused).
pub fn check_importance(importance: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&importance) {
        return Err(Error::invalid(
            "importance",
            format!("is {importance}, must be in [0, 1]"),
        ));
    }
    Ok(())
}

/// Time to live in seconds.
pub fn check_ttl(ttl_seconds: u64) -> Result<()> {
    if ttl_seconds > TTL_SECONDS_MAX {
        return Err(Error::invalid(
            "ttl_seconds",
            format!("is {ttl_seconds}, the limit is {TTL_SECONDS_MAX} (100 years)"),
        ));
    }
    Ok(())
}

/// A client-supplied vector: 1..=4096 finite components, not all zero.
pub fn check_vector(field: &str, vector: &[f32]) -> Result<()> {
    if vector.len() > DIMENSIONS_MAX {
        return Err(Error::invalid(
            field,
            format!(
                "has {} dimensions, the limit is {DIMENSIONS_MAX}",
                vector.len()
            ),
        ));
    }
    if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            field,
            format!(
                "component {i} is {}; NaN and infinity are not allowed",
                vector[i]
            ),
        ));
    }
    if vector.iter().all(|x| *x == 0.0) {
        return Err(Error::invalid(field, "is all zeros"));
    }
    Ok(())
}

/// A count with a default for 0 and a maximum.
pub fn count_or_default(field: &str, value: u64, default: usize, max: usize) -> Result<usize> {
    match value {
        0 => Ok(default),
        v if v > max as u64 => Err(Error::invalid(field, format!("is {v}, the limit is {max}"))),
        v => Ok(v as usize),
    }
}
