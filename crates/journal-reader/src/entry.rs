//! Entry framing inside journal data objects, and CRC32C as Ceph computes it.
//!
//! Layout of one entry (verified against src/journal/Entry.cc, Pacific):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | preamble `u64 = 0x3141592653589793` |
//! | 8 | 1 | version `u8 = 1` |
//! | 9 | 8 | entry tid |
//! | 17 | 8 | tag tid |
//! | 25 | 4 | payload length |
//! | 29 | len | payload |
//! | 29+len | 4 | `crc32c(0)` over bytes `0 .. 29+len` |
//!
//! `Entry::encode` computes `data_bl.crc32c(0)` over everything it encoded
//! before the CRC (preamble through payload), and `Entry::decode` checks the
//! same range. Entries are appended back to back; a partially written entry
//! at the end of an object means "more bytes may come" and ends iteration
//! cleanly. As in src/journal/ObjectPlayer.cc, zero bytes up to the next
//! 8-byte boundary are skipped as padding where an entry should start; any
//! other non-preamble bytes are corruption.

use bytes::{BufMut, Bytes, BytesMut};
use rbd_types::ceph_crc32c;

/// Entry preamble (`journal::Entry::preamble`).
pub const PREAMBLE: u64 = 0x3141_5926_5358_9793;
/// The only entry version.
pub const ENTRY_VERSION: u8 = 1;
/// Preamble, version, entry tid, tag tid.
pub const HEADER_FIXED_SIZE: usize = 25;
/// Payload length and CRC.
pub const REMAINDER_FIXED_SIZE: usize = 8;
/// Framing overhead of one entry (33 bytes).
pub const ENTRY_OVERHEAD: usize = HEADER_FIXED_SIZE + REMAINDER_FIXED_SIZE;
/// Largest payload length accepted: data objects are at most `1 << 26`
/// bytes (journal order 12..=26), so a longer payload is corruption.
pub const MAX_PAYLOAD_LEN: u32 = 1 << 26;

const PAYLOAD_OFFSET: usize = HEADER_FIXED_SIZE + 4;

/// One decoded journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry tid (per tag).
    pub entry_tid: u64,
    /// Tag tid.
    pub tag_tid: u64,
    /// Payload (for RBD an encoded `EventEntry`), a zero-copy slice of the
    /// object's buffer.
    pub payload: Bytes,
    /// Byte offset of the entry's preamble within its object.
    pub offset: usize,
}

impl Entry {
    /// Total encoded size of this entry.
    pub fn encoded_len(&self) -> usize {
        ENTRY_OVERHEAD + self.payload.len()
    }
}

/// Appends one framed entry to `buf` (as `journal::Entry::encode`).
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes.
pub fn encode_entry(buf: &mut BytesMut, tag_tid: u64, entry_tid: u64, payload: &[u8]) {
    let start = buf.len();
    buf.reserve(ENTRY_OVERHEAD + payload.len());
    buf.put_u64_le(PREAMBLE);
    buf.put_u8(ENTRY_VERSION);
    buf.put_u64_le(entry_tid);
    buf.put_u64_le(tag_tid);
    buf.put_u32_le(u32::try_from(payload.len()).expect("entry payload exceeds u32::MAX"));
    buf.put_slice(payload);
    let crc = ceph_crc32c(0, buf.get(start..).unwrap_or_default());
    buf.put_u32_le(crc);
}

/// Errors decoding the entries of one data object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// No preamble where an entry must start.
    #[error("{object}: bad entry preamble at offset {offset}: found {found:#018x}")]
    BadPreamble {
        /// Data object name.
        object: String,
        /// Offset of the entry.
        offset: usize,
        /// The `u64` found instead.
        found: u64,
    },
    /// Unknown entry version.
    #[error("{object}: unsupported entry version {found} at offset {offset} (expected 1)")]
    BadVersion {
        /// Data object name.
        object: String,
        /// Offset of the entry.
        offset: usize,
        /// The version byte found.
        found: u8,
    },
    /// A payload length no journal can contain.
    #[error("{object}: absurd entry payload length {len} at offset {offset} (max {max})")]
    AbsurdLength {
        /// Data object name.
        object: String,
        /// Offset of the entry.
        offset: usize,
        /// The decoded length.
        len: u32,
        /// The largest accepted length.
        max: u32,
    },
    /// The stored CRC does not match the entry's bytes.
    #[error(
        "{object}: entry CRC mismatch at offset {offset} (tag tid {tag_tid}, entry tid \
         {entry_tid}): stored {stored:#010x}, computed {computed:#010x}"
    )]
    BadCrc {
        /// Data object name.
        object: String,
        /// Offset of the entry.
        offset: usize,
        /// Tag tid from the (unverified) header.
        tag_tid: u64,
        /// Entry tid from the (unverified) header.
        entry_tid: u64,
        /// CRC stored after the payload.
        stored: u32,
        /// CRC computed over the entry.
        computed: u32,
    },
}

impl EntryError {
    /// The same error with its offset moved by `base`: for decoders fed a buffer that
    /// starts `base` bytes into the object (the live tail reads objects piecewise).
    pub fn at_base(mut self, base: u64) -> Self {
        let base = usize::try_from(base).unwrap_or(usize::MAX);
        match &mut self {
            EntryError::BadPreamble { offset, .. }
            | EntryError::BadVersion { offset, .. }
            | EntryError::AbsurdLength { offset, .. }
            | EntryError::BadCrc { offset, .. } => *offset = offset.saturating_add(base),
        }
        self
    }

    /// Byte offset of the bad entry within its object.
    pub fn offset(&self) -> usize {
        match self {
            EntryError::BadPreamble { offset, .. }
            | EntryError::BadVersion { offset, .. }
            | EntryError::AbsurdLength { offset, .. }
            | EntryError::BadCrc { offset, .. } => *offset,
        }
    }
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

/// Iterates over the entries of one data object in order.
///
/// Yields `Ok(entry)` per complete, CRC-verified entry. A partial entry at
/// the tail ends iteration without an error; [`EntryIter::offset`] then says
/// where it starts and [`EntryIter::remaining`] how many bytes are left. The
/// first error ends iteration.
#[derive(Debug, Clone)]
pub struct EntryIter<'a> {
    object: &'a str,
    data: &'a Bytes,
    pos: usize,
    /// Offset of `data` within its object: padding is to the object's 8-byte boundaries.
    base: usize,
    done: bool,
    verify_crc: bool,
}

impl<'a> EntryIter<'a> {
    /// Iterates over `data`, the contents of data object `object`
    /// (the name is only used in errors).
    pub fn new(object: &'a str, data: &'a Bytes) -> Self {
        EntryIter { object, data, pos: 0, base: 0, done: false, verify_crc: true }
    }

    /// Starts at `offset` instead of 0 (e.g. after a previous partial read).
    pub fn starting_at(mut self, offset: usize) -> Self {
        self.pos = offset.min(self.data.len());
        self
    }

    /// `data` starts `base` bytes into its object (a piecewise read): zero padding is skipped
    /// up to the object's 8-byte boundaries, as Ceph's player computes them. Offsets in
    /// entries and errors stay relative to `data`.
    pub fn at_object_offset(mut self, base: usize) -> Self {
        self.base = base;
        self
    }

    /// Disables CRC verification (for tooling; the player always verifies).
    pub fn without_crc_check(mut self) -> Self {
        self.verify_crc = false;
        self
    }

    /// Offset of the next entry (after iteration ended cleanly: of the
    /// partial entry, or the object length).
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes after [`offset`](Self::offset) (a partial entry's bytes).
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn next_entry(&mut self) -> Result<Option<Entry>, EntryError> {
        let data: &[u8] = self.data;
        match entry_start(data, self.base, self.pos) {
            Ok(Some(start)) => self.pos = start,
            Ok(None) => return Ok(None),
            Err((offset, found)) => {
                return Err(EntryError::BadPreamble { object: self.object.to_owned(), offset, found })
            }
        }
        let rest = data.get(self.pos..).unwrap_or_default();
        let offset = self.pos;
        let Some(&version) = rest.get(8) else {
            return Ok(None);
        };
        if version != ENTRY_VERSION {
            return Err(EntryError::BadVersion { object: self.object.to_owned(), offset, found: version });
        }
        let (Some(entry_tid), Some(tag_tid), Some(len)) =
            (le_u64(rest, 9), le_u64(rest, 17), le_u32(rest, 25))
        else {
            return Ok(None);
        };
        if len > MAX_PAYLOAD_LEN {
            return Err(EntryError::AbsurdLength {
                object: self.object.to_owned(),
                offset,
                len,
                max: MAX_PAYLOAD_LEN,
            });
        }
        // len <= 2^26 so this cannot overflow usize.
        let crc_at = PAYLOAD_OFFSET + len as usize;
        let Some(stored) = le_u32(rest, crc_at) else {
            return Ok(None);
        };
        if self.verify_crc {
            let covered = rest.get(..crc_at).unwrap_or_default();
            let computed = ceph_crc32c(0, covered);
            if computed != stored {
                return Err(EntryError::BadCrc {
                    object: self.object.to_owned(),
                    offset,
                    tag_tid,
                    entry_tid,
                    stored,
                    computed,
                });
            }
        }
        let payload = self.data.slice(offset + PAYLOAD_OFFSET..offset + crc_at);
        self.pos = offset + crc_at + 4;
        Ok(Some(Entry { entry_tid, tag_tid, payload, offset }))
    }
}

impl Iterator for EntryIter<'_> {
    type Item = Result<Entry, EntryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for EntryIter<'_> {}

/// All complete entries of one data object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedObject {
    /// Entries in object order.
    pub entries: Vec<Entry>,
    /// Bytes consumed by complete entries.
    pub consumed: usize,
    /// Bytes of a partial entry at the tail (0 if the object ends cleanly).
    pub partial_tail: usize,
}

/// Decodes every complete entry of data object `object` (name used in
/// errors). A partial entry at the tail is reported in
/// [`DecodedObject::partial_tail`], not as an error.
pub fn decode_object(object: &str, data: &Bytes) -> Result<DecodedObject, EntryError> {
    let mut it = EntryIter::new(object, data);
    let mut entries = Vec::new();
    for e in it.by_ref() {
        entries.push(e?);
    }
    Ok(DecodedObject { entries, consumed: it.offset(), partial_tail: it.remaining() })
}

/// Where the first entry of `data` (bytes that start `base` bytes into their object) ends,
/// after the zero padding [`EntryIter`] skips: `None` while its header is incomplete, or when
/// `data` does not start like an entry (decoding says why). Lets a reader join only the
/// entry that straddles two reads instead of the whole second read.
pub fn first_entry_end(data: &[u8], base: u64) -> Option<usize> {
    let pos = entry_start(data, usize::try_from(base).ok()?, 0).ok()??;
    let len = le_u32(data, pos + HEADER_FIXED_SIZE)?;
    (len <= MAX_PAYLOAD_LEN).then(|| pos + PAYLOAD_OFFSET + len as usize + 4)
}

/// Where the entry at or after `pos` of `data` (bytes that start `base` bytes into their
/// object) starts, past the zero padding ObjectPlayer tolerates up to the object's next
/// 8-byte boundary (src/journal/ObjectPlayer.cc, advance_to_last_pad_byte). `Ok(None)`: fewer
/// than the fixed header bytes remain, a partial entry whatever they contain (like
/// Entry::is_readable). `Err((offset, found))`: neither an entry nor padding there.
fn entry_start(data: &[u8], base: usize, mut pos: usize) -> Result<Option<usize>, (usize, u64)> {
    loop {
        let rest = data.get(pos..).unwrap_or_default();
        if rest.len() < HEADER_FIXED_SIZE {
            return Ok(None);
        }
        let preamble = le_u64(rest, 0).unwrap_or_default();
        if preamble == PREAMBLE {
            return Ok(Some(pos));
        }
        let pad = 8 - base.wrapping_add(pos) % 8;
        match rest.get(..pad) {
            Some(p) if p.iter().all(|&b| b == 0) => pos += pad,
            _ => return Err((pos, preamble)),
        }
    }
}

/// [`decode_object`] of bytes that start `base` bytes into the object (a piecewise read):
/// padding follows the object's 8-byte boundaries, and the offsets of the entries and of an
/// error are the object's.
pub fn decode_object_at(object: &str, data: &Bytes, base: u64) -> Result<DecodedObject, EntryError> {
    let start = usize::try_from(base).unwrap_or(usize::MAX);
    let mut it = EntryIter::new(object, data).at_object_offset(start);
    let mut entries = Vec::new();
    for e in it.by_ref() {
        let mut e = e.map_err(|e| e.at_base(base))?;
        e.offset = e.offset.saturating_add(start);
        entries.push(e);
    }
    Ok(DecodedObject { entries, consumed: it.offset(), partial_tail: it.remaining() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked AioFlush example of ceph-formats.md §2.5. Note: the
    /// document says the payload is 25 bytes (0x19) and the entry 58 bytes;
    /// the listed payload bytes are actually 24, and its CRC `0x126148af`
    /// matches the 24-byte payload with `data_len = 24` (entry = 57 bytes).
    #[test]
    fn worked_example() {
        let payload: [u8; 24] = [
            0x05, 0x01, 0x04, 0, 0, 0, 0x02, 0, 0, 0, 0x01, 0x01, 0x08, 0, 0, 0, 0x00, 0xf1, 0x53, 0x65, 0,
            0, 0, 0,
        ];
        let mut buf = BytesMut::new();
        encode_entry(&mut buf, 1, 0, &payload);
        assert_eq!(buf.len(), 57);
        assert_eq!(&buf[..9], &[0x93, 0x97, 0x58, 0x53, 0x26, 0x59, 0x41, 0x31, 0x01]);
        assert_eq!(&buf[25..29], &[24, 0, 0, 0]);
        assert_eq!(&buf[53..], &[0xaf, 0x48, 0x61, 0x12]);
        let b = buf.freeze();
        let obj = decode_object("o", &b).unwrap();
        assert_eq!(obj.entries.len(), 1);
        assert_eq!(obj.entries[0].tag_tid, 1);
        assert_eq!(obj.entries[0].entry_tid, 0);
        assert_eq!(&obj.entries[0].payload[..], &payload);
        let ev = crate::event::EventEntry::decode_payload(&obj.entries[0].payload).unwrap();
        assert_eq!(ev.event, crate::event::Event::AioFlush);
        assert_eq!(ev.timestamp.sec, 1_700_000_000);
    }

    fn object(n: u64) -> Bytes {
        let mut buf = BytesMut::new();
        for i in 0..n {
            encode_entry(&mut buf, 7, i, format!("payload {i}").as_bytes());
        }
        buf.freeze()
    }

    #[test]
    fn iterates_in_order_and_zero_copy() {
        let b = object(5);
        let obj = decode_object("o", &b).unwrap();
        assert_eq!(obj.partial_tail, 0);
        assert_eq!(obj.consumed, b.len());
        for (i, e) in obj.entries.iter().enumerate() {
            assert_eq!(e.entry_tid, i as u64);
            assert_eq!(e.payload, format!("payload {i}").as_bytes());
            let base = b.as_ptr() as usize;
            let p = e.payload.as_ptr() as usize;
            assert_eq!(p - base, e.offset + PAYLOAD_OFFSET);
        }
    }

    #[test]
    fn partial_tail_is_clean_end() {
        let b = object(3);
        let full = decode_object("o", &b).unwrap();
        let last = full.entries[2].offset;
        for cut in last..b.len() {
            let t = b.slice(..cut);
            let obj = decode_object("o", &t).unwrap();
            assert_eq!(obj.entries.len(), 2, "cut at {cut}");
            assert_eq!(obj.consumed, last);
            assert_eq!(obj.partial_tail, cut - last);
        }
    }

    #[test]
    fn corruption_is_reported_with_object_and_offset() {
        let b = object(3);
        let second = decode_object("o", &b).unwrap().entries[1].offset;

        let mut m = BytesMut::from(&b[..]);
        m[second + 30] ^= 1;
        let err = decode_object("obj.1", &m.freeze()).unwrap_err();
        assert!(
            matches!(err, EntryError::BadCrc { ref object, offset, entry_tid: 1, .. } if object == "obj.1" && offset == second),
            "{err:?}"
        );

        let mut m = BytesMut::from(&b[..]);
        m[second] ^= 1;
        let err = decode_object("o", &m.freeze()).unwrap_err();
        assert!(matches!(err, EntryError::BadPreamble { offset, .. } if offset == second));

        let mut m = BytesMut::from(&b[..]);
        m[second + 8] = 2;
        let err = decode_object("o", &m.freeze()).unwrap_err();
        assert!(matches!(err, EntryError::BadVersion { found: 2, .. }));

        let mut m = BytesMut::from(&b[..]);
        m[second + 28] = 0xff;
        let err = decode_object("o", &m.freeze()).unwrap_err();
        assert!(matches!(err, EntryError::AbsurdLength { .. }));
        assert!(err.to_string().contains(&format!("offset {second}")));
    }

    #[test]
    fn zero_padding_is_skipped() {
        let mut buf = BytesMut::new();
        encode_entry(&mut buf, 1, 0, b"abc"); // 36 bytes
        buf.extend_from_slice(&[0u8; 4]); // pad to 40
        buf.extend_from_slice(&[0u8; 8]); // a further aligned pad block
        encode_entry(&mut buf, 1, 1, b"defg");
        let b = buf.freeze();
        let obj = decode_object("o", &b).unwrap();
        assert_eq!(obj.entries.len(), 2);
        assert_eq!(obj.entries[1].offset, 48);
        assert_eq!(obj.partial_tail, 0);

        // Non-zero garbage is corruption.
        let mut m = BytesMut::from(&b[..]);
        m[37] = 1;
        let err = decode_object("o", &m.freeze()).unwrap_err();
        assert!(matches!(err, EntryError::BadPreamble { offset: 36, .. }));
    }

    #[test]
    fn padding_follows_the_objects_boundaries_in_a_piecewise_read() {
        // Entry at 0..36, one at 36..73 (37 bytes), zero padding 73..80, an entry at 80.
        let mut buf = BytesMut::new();
        encode_entry(&mut buf, 1, 0, b"abc");
        encode_entry(&mut buf, 1, 1, b"abcd");
        buf.extend_from_slice(&[0u8; 7]);
        encode_entry(&mut buf, 1, 2, b"x");
        let whole = buf.freeze();
        assert_eq!(decode_object("o", &whole).unwrap().entries.len(), 3);
        // Read from offset 36 on (after the first entry): the padding ends at object offset
        // 80, which is not an 8-byte boundary of the piece.
        let piece = whole.slice(36..);
        let obj = decode_object_at("o", &piece, 36).unwrap();
        let got: Vec<(u64, usize)> = obj.entries.iter().map(|e| (e.entry_tid, e.offset)).collect();
        assert_eq!(got, vec![(1, 36), (2, 80)]);
        // Taken relative to the piece, the padding would run to piece offset 40 (object 76)
        // and find zeros, not a preamble, at 76: corruption where there is none.
        assert!(decode_object("o", &piece).is_err());
        // Errors carry the object's offsets.
        let mut m = BytesMut::from(&whole[..]);
        m[80] ^= 0xff;
        let err = decode_object_at("o", &m.freeze().slice(36..), 36).unwrap_err();
        assert_eq!(err.offset(), 80, "{err}");
    }

    #[test]
    fn first_entry_end_skips_padding_and_waits_for_the_header() {
        let mut b = BytesMut::new();
        encode_entry(&mut b, 1, 2, &[7u8; 100]);
        let one = b.len();
        // Zero padding to the object's next 8-byte boundary (the bytes start at offset 4).
        let mut padded = vec![0u8; 4];
        padded.extend_from_slice(&b);
        assert_eq!(first_entry_end(&b, 0), Some(one));
        assert_eq!(first_entry_end(&padded, 4), Some(4 + one));
        assert_eq!(first_entry_end(&b[..HEADER_FIXED_SIZE + 3], 0), None, "length not there yet");
        assert_eq!(first_entry_end(&b[..HEADER_FIXED_SIZE + 4], 0), Some(one));
        assert_eq!(first_entry_end(&[1u8; 40], 0), None, "not an entry");
    }

    #[test]
    fn empty_object() {
        let obj = decode_object("o", &Bytes::new()).unwrap();
        assert!(obj.entries.is_empty());
        assert_eq!((obj.consumed, obj.partial_tail), (0, 0));
    }
}
