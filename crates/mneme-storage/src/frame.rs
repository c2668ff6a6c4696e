//! Byte layouts of WAL segments (documented in `docs/design.md`).
//!
//! A segment file is a 32-byte header followed by frames. An entry (one logged mutation) is
//! one frame, or several chained by the continuation bit when it is larger than
//! [`FRAME_BODY_BYTES_MAX`]. Every frame carries a CRC32 that also covers the segment's
//! random seed, so bytes left over from another file (or another incarnation of this name)
//! never validate here. All integers are little-endian.

/// Length of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Length of a frame header.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Current on-disk format version of segments.
pub const FORMAT_VERSION: u32 = 2;
/// Largest frame body; larger entries are split into chained frames.
pub const FRAME_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(8));

/// Magic of a WAL segment.
pub const WAL_MAGIC: [u8; 8] = *b"MNMWAL\0\x01";

/// Bit of the flags byte that says "the next frame belongs to the same entry".
const FLAG_CONTINUES: u8 = 0x80;
/// Every other flag bit is reserved and must be zero.
const FLAGS_KNOWN: u8 = FLAG_CONTINUES;

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

/// Why a segment header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Too short, wrong magic or checksum: damage (or a torn creation).
    Invalid(String),
    /// A valid header of another format version.
    Version(u32),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(reason) => f.write_str(reason),
            Self::Version(v) => write!(
                f,
                "segment format version {v}; this build reads version {FORMAT_VERSION}"
            ),
        }
    }
}

/// Decodes a segment header, or says why it is not one.
pub fn decode_segment_header(magic: [u8; 8], buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let Some(bytes) = buf.get(..SEGMENT_HEADER_BYTES) else {
        return Err(HeaderError::Invalid(format!(
            "segment header needs {SEGMENT_HEADER_BYTES} bytes, file has {}",
            buf.len()
        )));
    };
    let mut arr = [0u8; SEGMENT_HEADER_BYTES];
    arr.copy_from_slice(bytes);
    if arr[0..8] != magic {
        return Err(HeaderError::Invalid("bad magic".to_owned()));
    }
    if read_u32(&arr, 12) != header_crc(&arr) {
        return Err(HeaderError::Invalid(
            "segment header checksum mismatch".to_owned(),
        ));
    }
    let version = read_u32(&arr, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok(SegmentHeader {
        seed: read_u64(&arr, 16),
        file_id: read_u64(&arr, 24),
    })
}

/// One decoded frame, borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Log sequence number; strictly increasing within the log.
    pub lsn: u64,
    /// True when the next frame continues the same entry.
    pub continues: bool,
    /// This frame's part of the entry.
    pub body: &'a [u8],
}

/// Appends one encoded frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, seed: u64, lsn: u64, continues: bool, body: &[u8]) {
    debug_assert!(body.len() <= FRAME_BODY_BYTES_MAX);
    let start = out.len();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16] = if continues { FLAG_CONTINUES } else { 0 };
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    let crc = frame_crc(seed, &out[start + 4..start + FRAME_HEADER_BYTES], body);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

fn frame_crc(seed: u64, header_rest: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(header_rest);
    h.update(body);
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
    let Some(header) = buf.get(offset..offset.saturating_add(FRAME_HEADER_BYTES)) else {
        return Decoded::Invalid(format!(
            "{} trailing bytes, too few for a frame header",
            buf.len().saturating_sub(offset)
        ));
    };
    let body_len = read_u32(header, 4) as usize;
    if body_len > FRAME_BODY_BYTES_MAX {
        return Decoded::Invalid(format!("implausible frame length {body_len}"));
    }
    let body_start = offset + FRAME_HEADER_BYTES;
    let Some(body) = buf.get(body_start..body_start + body_len) else {
        return Decoded::Invalid(format!(
            "frame body of {body_len} bytes runs past the end of the file"
        ));
    };
    if read_u32(header, 0) != frame_crc(seed, &header[4..], body) {
        return Decoded::Invalid("frame checksum mismatch".to_owned());
    }
    let flags = header[16];
    if flags & !FLAGS_KNOWN != 0 || header[17..24].iter().any(|b| *b != 0) {
        return Decoded::Invalid(format!("unknown frame flags {flags:#04x}"));
    }
    let frame = Frame {
        lsn: read_u64(header, 8),
        continues: flags & FLAG_CONTINUES != 0,
        body,
    };
    Decoded::Frame(frame, body_start + body_len)
}

/// Size on disk of an entry of `len` bytes (its frames and their headers).
pub fn entry_bytes(len: usize) -> usize {
    let frames = len.div_ceil(FRAME_BODY_BYTES_MAX).max(1);
    frames * FRAME_HEADER_BYTES + len
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
        encode_frame(&mut buf, 7, 42, true, b"payload");
        match decode_frame(&buf, 0, 7) {
            Decoded::Frame(f, next) => {
                assert_eq!((f.lsn, f.continues, f.body), (42, true, &b"payload"[..]));
                assert_eq!(next, buf.len());
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
        encode_frame(&mut buf, 1, 1, false, b"k");
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
        assert!(decode_segment_header(*b"MNMLOG\0\x01", &bytes).is_err());
        assert!(decode_segment_header(WAL_MAGIC, &bytes[..20]).is_err());
        let mut bad = bytes;
        bad[20] ^= 1;
        assert!(decode_segment_header(WAL_MAGIC, &bad).is_err());
    }

    #[test]
    fn entry_sizes_count_every_frame_header() {
        assert_eq!(entry_bytes(0), FRAME_HEADER_BYTES);
        assert_eq!(entry_bytes(10), FRAME_HEADER_BYTES + 10);
        assert_eq!(
            entry_bytes(FRAME_BODY_BYTES_MAX + 1),
            2 * FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX + 1
        );
    }
}
