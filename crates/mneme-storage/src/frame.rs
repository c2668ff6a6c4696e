//! Byte layouts shared by WAL segments and append-log segments (documented in `docs/design.md`).
//!
//! A segment file is a 32-byte header followed by frames. Every frame carries a CRC32 that
//! also covers the segment's random seed, so bytes left over from another file (or another
//! incarnation of this name) never validate here. All integers are little-endian.

/// Length of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Length of a frame header.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Current on-disk format version of segments.
pub const FORMAT_VERSION: u32 = 1;
/// Largest key accepted.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value accepted.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest frame body (key + value) a reader will believe.
pub const FRAME_BODY_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(FRAME_BODY_BYTES_MAX < u32::MAX as usize);

/// Magic of a WAL segment.
pub const WAL_MAGIC: [u8; 8] = *b"MNMWAL\0\x01";
/// Magic of an append-log segment.
pub const LOG_MAGIC: [u8; 8] = *b"MNMLOG\0\x01";

/// Bit of the kind byte that says "the next frame belongs to the same atomic batch".
const KIND_CONTINUES: u8 = 0x80;

/// What a frame does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Set `key` to `value`.
    Put = 1,
    /// Remove `key`.
    Delete = 2,
    /// Remove every key that starts with `key`.
    DeletePrefix = 3,
}

impl OpKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::DeletePrefix),
            _ => None,
        }
    }
}

/// Parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random per-file seed mixed into every frame CRC.
    pub seed: u64,
    /// The file id (the number in its name).
    pub file_id: u64,
}

/// Encodes a segment header.
pub fn encode_segment_header(magic: [u8; 8], header: SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[0..8].copy_from_slice(&magic);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&header.seed.to_le_bytes());
    out[24..32].copy_from_slice(&header.file_id.to_le_bytes());
    let crc = header_crc(&out);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

fn header_crc(out: &[u8; SEGMENT_HEADER_BYTES]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&out[0..12]);
    h.update(&out[16..32]);
    h.finalize()
}

/// Decodes a segment header, or says why it is not one.
pub fn decode_segment_header(magic: [u8; 8], buf: &[u8]) -> Result<SegmentHeader, String> {
    let Some(bytes) = buf.get(..SEGMENT_HEADER_BYTES) else {
        return Err(format!(
            "segment header needs {SEGMENT_HEADER_BYTES} bytes, file has {}",
            buf.len()
        ));
    };
    let mut arr = [0u8; SEGMENT_HEADER_BYTES];
    arr.copy_from_slice(bytes);
    if arr[0..8] != magic {
        return Err("bad magic".to_owned());
    }
    let version = read_u32(&arr, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "unsupported format version {version} (this build reads {FORMAT_VERSION})"
        ));
    }
    if read_u32(&arr, 12) != header_crc(&arr) {
        return Err("segment header checksum mismatch".to_owned());
    }
    Ok(SegmentHeader {
        seed: read_u64(&arr, 16),
        file_id: read_u64(&arr, 24),
    })
}

/// One decoded frame, borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Log sequence number; strictly increasing within a segment.
    pub lsn: u64,
    /// Operation.
    pub kind: OpKind,
    /// True when the next frame is part of the same atomic batch.
    pub continues: bool,
    /// Key (or key prefix for [`OpKind::DeletePrefix`]).
    pub key: &'a [u8],
    /// Value (empty unless `Put`).
    pub value: &'a [u8],
    /// Offset of `value` within the buffer.
    pub value_offset: usize,
}

/// Appends one encoded frame to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    seed: u64,
    lsn: u64,
    kind: OpKind,
    continues: bool,
    key: &[u8],
    value: &[u8],
) {
    let body_len = key.len() + value.len();
    debug_assert!(body_len <= FRAME_BODY_BYTES_MAX);
    let start = out.len();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16] = kind as u8 | if continues { KIND_CONTINUES } else { 0 };
    header[20..24].copy_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = frame_crc(
        seed,
        &out[start + 4..start + FRAME_HEADER_BYTES],
        key,
        value,
    );
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

fn frame_crc(seed: u64, header_rest: &[u8], key: &[u8], value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(header_rest);
    h.update(key);
    h.update(value);
    h.finalize()
}

/// Outcome of trying to read a frame at some offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame, and the offset just past it.
    Frame(Frame<'a>, usize),
    /// The buffer ends exactly here: a clean end of segment.
    End,
    /// The bytes here are not a valid frame (torn write, or corruption).
    Invalid(String),
}

/// Reads the frame that starts at `offset` of `buf`.
pub fn decode_frame(buf: &[u8], offset: usize, seed: u64) -> Decoded<'_> {
    if offset == buf.len() {
        return Decoded::End;
    }
    let Some(header) = buf.get(offset..offset + FRAME_HEADER_BYTES) else {
        return Decoded::Invalid(format!(
            "{} trailing bytes, too few for a frame header",
            buf.len() - offset
        ));
    };
    let body_len = read_u32(header, 4) as usize;
    let key_len = read_u32(header, 20) as usize;
    if body_len > FRAME_BODY_BYTES_MAX || key_len > body_len || key_len > KEY_BYTES_MAX {
        return Decoded::Invalid(format!(
            "implausible frame lengths (body {body_len}, key {key_len})"
        ));
    }
    let body_start = offset + FRAME_HEADER_BYTES;
    let Some(body) = buf.get(body_start..body_start + body_len) else {
        return Decoded::Invalid(format!(
            "frame body of {body_len} bytes runs past the end of the file"
        ));
    };
    let (key, value) = body.split_at(key_len);
    if read_u32(header, 0) != frame_crc(seed, &header[4..], key, value) {
        return Decoded::Invalid("frame checksum mismatch".to_owned());
    }
    let kind_byte = header[16];
    let Some(kind) = OpKind::from_byte(kind_byte & !KIND_CONTINUES) else {
        return Decoded::Invalid(format!("unknown frame kind {kind_byte}"));
    };
    if kind != OpKind::Put && !value.is_empty() {
        return Decoded::Invalid("tombstone frame carries a value".to_owned());
    }
    let frame = Frame {
        lsn: read_u64(header, 8),
        kind,
        continues: kind_byte & KIND_CONTINUES != 0,
        key,
        value,
        value_offset: body_start + key_len,
    };
    Decoded::Frame(frame, body_start + body_len)
}

/// Size on disk of a frame with this key and value.
pub fn frame_bytes(key_len: usize, value_len: usize) -> usize {
    FRAME_HEADER_BYTES + key_len + value_len
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_detects_every_single_bit_flip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, 42, OpKind::Put, true, b"key", b"value");
        match decode_frame(&buf, 0, 7) {
            Decoded::Frame(f, next) => {
                assert_eq!((f.lsn, f.kind, f.continues), (42, OpKind::Put, true));
                assert_eq!(
                    (f.key, f.value, next),
                    (&b"key"[..], &b"value"[..], buf.len())
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_frame(&bad, 0, 7), Decoded::Invalid(_)),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn frame_from_another_segment_seed_does_not_validate() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 1, OpKind::Delete, false, b"k", b"");
        assert!(matches!(decode_frame(&buf, 0, 2), Decoded::Invalid(_)));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_garbage() {
        let h = SegmentHeader {
            seed: 99,
            file_id: 5,
        };
        let bytes = encode_segment_header(WAL_MAGIC, h);
        assert_eq!(decode_segment_header(WAL_MAGIC, &bytes), Ok(h));
        assert!(decode_segment_header(LOG_MAGIC, &bytes).is_err());
        assert!(decode_segment_header(WAL_MAGIC, &bytes[..20]).is_err());
        let mut bad = bytes;
        bad[20] ^= 1;
        assert!(decode_segment_header(WAL_MAGIC, &bad).is_err());
    }
}
