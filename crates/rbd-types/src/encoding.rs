//! Ceph encoding primitives (`include/encoding.h`, `include/denc.h`).
//!
//! Everything is little-endian, unaligned and unpadded:
//!
//! * fixed-width integers in their natural width, `bool` as one byte,
//! * `string` / `bufferlist` as `u32 length` + bytes,
//! * `vector`/`list`/`set` as `u32 count` + elements, `map` as `u32 count` +
//!   key/value pairs (ascending key order),
//! * `optional<T>` as `u8 present` + `T`,
//! * `utime_t` as `u32 sec` + `u32 nsec`,
//! * versioned envelopes (`ENCODE_START(v, compat, bl)`): `u8 struct_v`,
//!   `u8 struct_compat`, `u32 struct_len`, then `struct_len` body bytes.
//!
//! `utime_t` verified against src/include/utime.h (Pacific: `u32 tv_sec`,
//! `u32 tv_nsec`). Envelope rules follow ceph-formats.md §1.2 (the
//! `DECODE_START`/`DECODE_FINISH` macro text in src/include/encoding.h was not
//! re-read here): a decoder supporting version `v` rejects
//! `struct_compat > v`, and decoding ends at the end of the body, skipping
//! fields added by newer writers.
//!
//! The [`Decoder`] never panics on input bytes and never allocates more than
//! the remaining input can justify: every count is checked against the
//! remaining bytes before anything is reserved. Blobs (`bufferlist`) are
//! returned as zero-copy [`Bytes`] slices of the input buffer.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

/// Errors from decoding a Ceph encoding. Offsets are byte offsets into the
/// buffer handed to the outermost [`Decoder`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("truncated {field} at offset {offset}: need {needed} bytes, {remaining} remain")]
    Truncated {
        /// Which field was being read.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A versioned envelope requires a newer decoder than this one.
    #[error(
        "unsupported {type_name} encoding at offset {offset}: struct_v {struct_v}, \
         struct_compat {compat} > supported version {supported}"
    )]
    UnsupportedVersion {
        /// The Ceph type being decoded.
        type_name: &'static str,
        /// Offset of the envelope header.
        offset: usize,
        /// The writer's version.
        struct_v: u8,
        /// The oldest decoder version able to read it.
        compat: u8,
        /// The highest version this decoder understands.
        supported: u8,
    },
    /// An envelope or count claims more bytes/elements than remain.
    #[error("{field} at offset {offset} claims {claimed} but only {remaining} bytes remain")]
    LengthOutOfBounds {
        /// Which length or count field.
        field: &'static str,
        /// Offset of the length field.
        offset: usize,
        /// The decoded length / count.
        claimed: u64,
        /// Bytes left in the enclosing buffer.
        remaining: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("{field} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
        /// Offset of the string's length prefix.
        offset: usize,
    },
    /// An enum field holds a value outside the known range.
    #[error("invalid {field} value {value} at offset {offset}")]
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// The decoded value.
        value: u64,
    },
    /// Bytes were left over after decoding a top-level value that must
    /// consume its whole buffer.
    #[error("{remaining} trailing bytes after {type_name} at offset {offset}")]
    TrailingBytes {
        /// The type decoded.
        type_name: &'static str,
        /// Offset of the first unconsumed byte.
        offset: usize,
        /// How many bytes were left.
        remaining: usize,
    },
}

/// Result alias for decoding.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// A cursor over a [`Bytes`] buffer that decodes Ceph encodings.
///
/// The cursor may be bounded to a sub-range (an envelope body); offsets in
/// errors are always relative to the start of the underlying buffer.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over the whole buffer.
    pub fn new(buf: &'a Bytes) -> Self {
        Decoder { buf, pos: 0, end: buf.len() }
    }

    /// Current offset into the underlying buffer.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes left before the end of the current bound.
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// Whether the cursor is at the end of its bound.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless everything was consumed.
    pub fn finish(&self, type_name: &'static str) -> DecodeResult<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { type_name, offset: self.pos, remaining: self.remaining() })
        }
    }

    /// Takes `n` raw bytes as a borrowed slice.
    fn take(&mut self, n: usize, field: &'static str) -> DecodeResult<&'a [u8]> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(DecodeError::Truncated { field, offset: self.pos, needed: n, remaining });
        }
        let start = self.pos;
        self.pos += n;
        let buf: &'a Bytes = self.buf;
        buf.get(start..start + n).ok_or(DecodeError::Truncated { field, offset: start, needed: n, remaining })
    }

    fn take_array<const N: usize>(&mut self, field: &'static str) -> DecodeResult<[u8; N]> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, field: &'static str) -> DecodeResult<()> {
        self.take(n, field).map(|_| ())
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, field: &'static str) -> DecodeResult<u8> {
        Ok(self.take_array::<1>(field)?[0])
    }
    /// Reads a little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `i32`.
    pub fn i32(&mut self, field: &'static str) -> DecodeResult<i32> {
        Ok(i32::from_le_bytes(self.take_array(field)?))
    }
    /// Reads a little-endian `i64`.
    pub fn i64(&mut self, field: &'static str) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.take_array(field)?))
    }

    /// Reads a `bool` (one byte; like Ceph, any non-zero value is `true`).
    pub fn bool(&mut self, field: &'static str) -> DecodeResult<bool> {
        Ok(self.u8(field)? != 0)
    }

    /// Reads a `u32` length and checks it against the remaining bytes.
    fn len_prefix(&mut self, field: &'static str) -> DecodeResult<usize> {
        let offset = self.pos;
        let len = self.u32(field)?;
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= remaining => Ok(n),
            _ => Err(DecodeError::LengthOutOfBounds { field, offset, claimed: u64::from(len), remaining }),
        }
    }

    /// Reads a length-prefixed blob (`bufferlist`) as a zero-copy slice.
    pub fn bytes(&mut self, field: &'static str) -> DecodeResult<Bytes> {
        let n = self.len_prefix(field)?;
        let start = self.pos;
        self.skip(n, field)?;
        Ok(self.buf.slice(start..start + n))
    }

    /// Reads a length-prefixed blob as a borrowed slice.
    pub fn byte_slice(&mut self, field: &'static str) -> DecodeResult<&'a [u8]> {
        let n = self.len_prefix(field)?;
        self.take(n, field)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn string(&mut self, field: &'static str) -> DecodeResult<String> {
        let offset = self.pos;
        let raw = self.byte_slice(field)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { field, offset })
    }

    /// Reads a `utime_t`.
    pub fn utime(&mut self, field: &'static str) -> DecodeResult<UTime> {
        let sec = self.u32(field)?;
        let nsec = self.u32(field)?;
        Ok(UTime { sec, nsec })
    }

    /// Reads an `optional<T>`: `u8 present` then `T`.
    pub fn optional<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&mut Self) -> DecodeResult<T>,
    ) -> DecodeResult<Option<T>> {
        if self.bool(field)? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads a `u32` element count, rejecting counts larger than the
    /// remaining bytes (every element needs at least one byte).
    pub fn count(&mut self, field: &'static str) -> DecodeResult<usize> {
        self.len_prefix(field)
    }

    /// Reads a `vector`/`list`/`set`: `u32 count` then elements.
    pub fn vec<T>(
        &mut self,
        field: &'static str,
        mut f: impl FnMut(&mut Self) -> DecodeResult<T>,
    ) -> DecodeResult<Vec<T>> {
        let n = self.count(field)?;
        // Cap the up-front reservation; the Vec grows as elements decode.
        let mut out = Vec::with_capacity(n.min(256));
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }

    /// Reads a `map<K, V>`: `u32 count` then key/value pairs.
    pub fn map<K: Ord, V>(
        &mut self,
        field: &'static str,
        mut fk: impl FnMut(&mut Self) -> DecodeResult<K>,
        mut fv: impl FnMut(&mut Self) -> DecodeResult<V>,
    ) -> DecodeResult<BTreeMap<K, V>> {
        let n = self.count(field)?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = fk(self)?;
            let v = fv(self)?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Decodes a versioned envelope (`DECODE_START(supported, ...)`).
    ///
    /// Fails with [`DecodeError::UnsupportedVersion`] if `struct_compat >
    /// supported`; bounds `f` to the body; afterwards skips whatever `f` did
    /// not consume (fields appended by newer writers). `f` receives the
    /// writer's `struct_v`.
    pub fn envelope<T>(
        &mut self,
        type_name: &'static str,
        supported: u8,
        f: impl FnOnce(&mut Decoder<'a>, u8) -> DecodeResult<T>,
    ) -> DecodeResult<T> {
        let offset = self.pos;
        let struct_v = self.u8(type_name)?;
        let compat = self.u8(type_name)?;
        if compat > supported {
            return Err(DecodeError::UnsupportedVersion { type_name, offset, struct_v, compat, supported });
        }
        let len = self.len_prefix(type_name)?;
        let mut inner = Decoder { buf: self.buf, pos: self.pos, end: self.pos + len };
        let value = f(&mut inner, struct_v)?;
        self.pos += len;
        Ok(value)
    }
}

/// Ceph `utime_t`: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UTime {
    /// Seconds.
    pub sec: u32,
    /// Nanoseconds.
    pub nsec: u32,
}

impl UTime {
    /// Converts to a [`std::time::SystemTime`].
    pub fn to_system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH
            + std::time::Duration::new(u64::from(self.sec), 0)
            + std::time::Duration::from_nanos(u64::from(self.nsec))
    }

    /// The `utime_t` of `t` (times before the epoch or after 2106 are clamped).
    pub fn from_system_time(t: std::time::SystemTime) -> UTime {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        UTime { sec: u32::try_from(d.as_secs()).unwrap_or(u32::MAX), nsec: d.subsec_nanos() }
    }

    /// `YYYY-MM-DD HH:MM:SS` in UTC (whole seconds), as `rbd` prints times in a UTC locale.
    pub fn utc_string(self) -> String {
        let secs = i64::from(self.sec);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60)
    }
}

/// Builds Ceph encodings into a [`BytesMut`].
#[derive(Debug, Default)]
pub struct Encoder {
    buf: BytesMut,
}

/// Converts a length to the `u32` Ceph puts on the wire.
///
/// Ceph itself cannot represent longer blobs; lengths above `u32::MAX` are an
/// encoder precondition violation. Never reached from cluster bytes: everything the daemon
/// encodes is either its own (ids, names, positions) or a value decoded from a `u32` length
/// field, so it fits by construction. Decoders never call this.
fn wire_len(n: usize) -> u32 {
    u32::try_from(n).expect("Ceph encodings cannot hold lengths above u32::MAX")
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty encoder with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Encoder { buf: BytesMut::with_capacity(cap) }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Finishes and returns the encoded bytes.
    pub fn into_bytes(self) -> Bytes {
        self.buf.freeze()
    }

    /// Writes a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }
    /// Writes a `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16_le(v);
    }
    /// Writes a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32_le(v);
    }
    /// Writes a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64_le(v);
    }
    /// Writes an `i32`.
    pub fn i32(&mut self, v: i32) {
        self.buf.put_i32_le(v);
    }
    /// Writes an `i64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64_le(v);
    }
    /// Writes a `bool` as 0/1.
    pub fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }
    /// Writes raw bytes with no length prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }
    /// Writes a length-prefixed blob (`bufferlist`).
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(wire_len(v.len()));
        self.raw(v);
    }
    /// Writes a length-prefixed string.
    pub fn string(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// Writes a `utime_t`.
    pub fn utime(&mut self, v: UTime) {
        self.u32(v.sec);
        self.u32(v.nsec);
    }
    /// Writes an `optional<T>`.
    pub fn optional<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(x) => {
                self.bool(true);
                f(self, x);
            }
            None => self.bool(false),
        }
    }
    /// Writes a `vector`/`list`: `u32 count` + elements.
    pub fn vec<T>(&mut self, v: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.u32(wire_len(v.len()));
        for x in v {
            f(self, x);
        }
    }
    /// Writes a `map<K, V>` in ascending key order.
    pub fn map<K, V>(
        &mut self,
        v: &BTreeMap<K, V>,
        mut fk: impl FnMut(&mut Self, &K),
        mut fv: impl FnMut(&mut Self, &V),
    ) {
        self.u32(wire_len(v.len()));
        for (k, val) in v {
            fk(self, k);
            fv(self, val);
        }
    }
    /// Writes a versioned envelope (`ENCODE_START(v, compat)` ..
    /// `ENCODE_FINISH`) whose body is produced by `f`.
    pub fn envelope(&mut self, struct_v: u8, compat: u8, f: impl FnOnce(&mut Self)) {
        self.u8(struct_v);
        self.u8(compat);
        let len_at = self.buf.len();
        self.u32(0);
        let body_start = self.buf.len();
        f(self);
        let body_len = wire_len(self.buf.len() - body_start).to_le_bytes();
        if let Some(slot) = self.buf.get_mut(len_at..len_at + 4) {
            slot.copy_from_slice(&body_len);
        }
    }
}

/// A type with a Ceph wire encoding that can be decoded.
pub trait Decode: Sized {
    /// Decodes one value from the cursor.
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self>;

    /// Decodes a value that must occupy all of `buf`.
    fn decode_all(buf: &Bytes) -> DecodeResult<Self> {
        let mut d = Decoder::new(buf);
        let v = Self::decode(&mut d)?;
        d.finish(std::any::type_name::<Self>())?;
        Ok(v)
    }
}

/// A type with a Ceph wire encoding that can be encoded.
pub trait Encode {
    /// Appends the encoding to `e`.
    fn encode(&self, e: &mut Encoder);

    /// Encodes into a fresh buffer.
    fn to_bytes(&self) -> Bytes {
        let mut e = Encoder::new();
        self.encode(&mut e);
        e.into_bytes()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn utime_as_utc_date_and_time() {
        assert_eq!(UTime { sec: 0, nsec: 0 }.utc_string(), "1970-01-01 00:00:00");
        assert_eq!(UTime { sec: 1_700_000_000, nsec: 5 }.utc_string(), "2023-11-14 22:13:20");
        assert_eq!(UTime { sec: 951_782_400, nsec: 0 }.utc_string(), "2000-02-29 00:00:00");
        assert_eq!(UTime { sec: u32::MAX, nsec: 0 }.utc_string(), "2106-02-07 06:28:15");
    }

    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut e = Encoder::new();
        e.u8(7);
        e.u16(0x1234);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.i32(-5);
        e.i64(-6);
        e.bool(true);
        e.string("héllo");
        e.bytes(b"\x00\x01");
        e.utime(UTime { sec: 1, nsec: 2 });
        e.optional(Some(&9u64), |e, v| e.u64(*v));
        e.optional::<u64>(None, |e, v| e.u64(*v));
        e.vec(&[1u32, 2, 3], |e, v| e.u32(*v));
        let m: BTreeMap<u64, u64> = [(1, 2), (3, 4)].into_iter().collect();
        e.map(&m, |e, k| e.u64(*k), |e, v| e.u64(*v));
        let b = e.into_bytes();
        let mut d = Decoder::new(&b);
        assert_eq!(d.u8("a").unwrap(), 7);
        assert_eq!(d.u16("a").unwrap(), 0x1234);
        assert_eq!(d.u32("a").unwrap(), 0xdead_beef);
        assert_eq!(d.u64("a").unwrap(), u64::MAX - 1);
        assert_eq!(d.i32("a").unwrap(), -5);
        assert_eq!(d.i64("a").unwrap(), -6);
        assert!(d.bool("a").unwrap());
        assert_eq!(d.string("a").unwrap(), "héllo");
        let blob = d.bytes("a").unwrap();
        assert_eq!(&blob[..], b"\x00\x01");
        // zero-copy: the blob points into the original buffer
        let base = b.as_ptr() as usize;
        let p = blob.as_ptr() as usize;
        assert!(p >= base && p < base + b.len());
        assert_eq!(d.utime("a").unwrap(), UTime { sec: 1, nsec: 2 });
        assert_eq!(d.optional("a", |d| d.u64("v")).unwrap(), Some(9));
        assert_eq!(d.optional("a", |d| d.u64("v")).unwrap(), None);
        assert_eq!(d.vec("a", |d| d.u32("v")).unwrap(), vec![1, 2, 3]);
        assert_eq!(d.map("a", |d| d.u64("k"), |d| d.u64("v")).unwrap(), m);
        d.finish("test").unwrap();
    }

    #[test]
    fn envelope_skips_unknown_tail_and_checks_compat() {
        let mut e = Encoder::new();
        e.envelope(3, 2, |e| {
            e.u32(42);
            e.u64(99); // field added by a "newer" writer
        });
        e.u8(0xaa);
        let b = e.into_bytes();
        assert_eq!(&b[..6], &[3, 2, 12, 0, 0, 0]);
        let mut d = Decoder::new(&b);
        let (v, x) = d.envelope("T", 2, |d, v| Ok((v, d.u32("x")?))).unwrap();
        assert_eq!((v, x), (3, 42));
        assert_eq!(d.u8("after").unwrap(), 0xaa);

        let mut d = Decoder::new(&b);
        let err = d.envelope("T", 1, |d, _| d.u32("x")).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion { compat: 2, supported: 1, .. }));
    }

    #[test]
    fn envelope_body_is_bounded() {
        let mut e = Encoder::new();
        e.envelope(1, 1, |e| e.u16(1));
        e.u64(5);
        let b = e.into_bytes();
        let mut d = Decoder::new(&b);
        let err = d.envelope("T", 1, |d, _| d.u64("x")).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { offset: 6, .. }));
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        let mut d = Decoder::new(&b);
        assert!(matches!(d.vec("v", |d| d.u64("x")), Err(DecodeError::LengthOutOfBounds { .. })));
        let mut d = Decoder::new(&b);
        assert!(matches!(d.bytes("b"), Err(DecodeError::LengthOutOfBounds { .. })));
        let mut d = Decoder::new(&b);
        assert!(d.envelope("T", 255, |_, _| Ok(())).is_err());
    }
}
