//! The object map object (`rbd_object_map.<image id>` for HEAD,
//! `rbd_object_map.<image id>.<snap id %016x>` for a snapshot): a Ceph `BitVector<2>`, one
//! two-bit state per data object.
//!
//! Layout as `BitVector::encode` writes it (src/common/bit_vector.hpp; cls_rbd's
//! `object_map_save`/`object_map_update` store it with CRCs enabled, `object_map_load`
//! replies with them disabled):
//!
//! | part   | encoding |
//! |--------|----------|
//! | header | `bufferlist` (u32 length + bytes) holding `ENCODE_START(1, 1)` { u64 element count } |
//! | data   | `ceil(count / 4)` raw bytes; element `i` in byte `i / 4` at bit shift `(3 - i % 4) * 2` |
//! | footer | `bufferlist`: empty when CRCs are disabled, else u32 header CRC, u32 block count, one u32 CRC per 4096-byte data block |
//!
//! The header CRC is `ceph_crc32c(0)` over the header bufferlist's content (not its length
//! prefix); each block CRC is `ceph_crc32c(0)` over that block of data bytes. A mismatch makes
//! librbd treat the map as invalid, and so does [`ObjectMap::decode`].

use crate::crc::ceph_crc32c;
use crate::encoding::{DecodeError, Decoder};
use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of data covered by one block CRC (`BitVector::BLOCK_SIZE`).
pub const CRC_BLOCK_SIZE: usize = 4096;

/// The state of one object in an object map (include/rbd/object_map_types.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectState {
    /// `OBJECT_NONEXISTENT` (0): the object does not exist.
    Nonexistent = 0,
    /// `OBJECT_EXISTS` (1): the object exists and was written since the last snapshot.
    Exists = 1,
    /// `OBJECT_PENDING` (2): an operation (removal) on the object is in flight.
    Pending = 2,
    /// `OBJECT_EXISTS_CLEAN` (3): the object exists, unchanged since the last snapshot.
    ExistsClean = 3,
}

impl ObjectState {
    /// The state of a two-bit value (only the low two bits count).
    pub fn from_bits(bits: u8) -> ObjectState {
        match bits & 0x3 {
            0 => ObjectState::Nonexistent,
            1 => ObjectState::Exists,
            2 => ObjectState::Pending,
            _ => ObjectState::ExistsClean,
        }
    }

    /// The two-bit value.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

/// Why an object map did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectMapError {
    /// The header, data or footer is truncated or malformed.
    #[error("object map {part}: {source}")]
    Malformed {
        /// Which part of the bit vector.
        part: &'static str,
        /// The decoding error, with its offset.
        #[source]
        source: DecodeError,
    },
    /// The element count needs more data bytes than the object holds.
    #[error(
        "object map of {count} objects needs {needed} data bytes at offset {offset}, only {remaining} remain"
    )]
    DataTruncated {
        /// Element count from the header.
        count: u64,
        /// Data bytes it needs.
        needed: u64,
        /// Offset of the data.
        offset: usize,
        /// Bytes left after the header.
        remaining: usize,
    },
    /// The header CRC in the footer does not match the header.
    #[error("object map header CRC {stored:#010x} does not match the computed {computed:#010x}")]
    HeaderCrc {
        /// CRC in the footer.
        stored: u32,
        /// CRC of the header as read.
        computed: u32,
    },
    /// The footer does not hold one CRC per 4 KiB data block.
    #[error(
        "object map footer holds {found} block CRCs (declared {declared}), the data has {expected} blocks"
    )]
    CrcCount {
        /// CRCs present.
        found: u64,
        /// The count the footer declares.
        declared: u32,
        /// Blocks in the data.
        expected: u64,
    },
    /// A data block's CRC does not match.
    #[error("object map data block {block} CRC {stored:#010x} does not match the computed {computed:#010x}")]
    DataCrc {
        /// Block index (4 KiB of data bytes each).
        block: u64,
        /// CRC in the footer.
        stored: u32,
        /// CRC of the block as read.
        computed: u32,
    },
}

fn malformed(part: &'static str) -> impl FnOnce(DecodeError) -> ObjectMapError {
    move |source| ObjectMapError::Malformed { part, source }
}

/// A decoded object map: the packed data bytes (a zero-copy slice of the object) and the
/// element count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMap {
    data: Bytes,
    len: u64,
}

impl ObjectMap {
    /// Decodes an object map object (CRCs are verified when the footer carries them).
    /// Bytes after the footer are ignored, as Ceph does.
    pub fn decode(buf: &Bytes) -> Result<ObjectMap, ObjectMapError> {
        let mut d = Decoder::new(buf);
        let header = d.bytes("bit_vector_header").map_err(malformed("header"))?;
        let len = Decoder::new(&header)
            .envelope("BitVector", 1, |h, _| h.u64("bit_vector_size"))
            .map_err(malformed("header"))?;
        let offset = d.offset();
        let needed = len.div_ceil(4);
        let remaining = d.remaining();
        let nbytes = match usize::try_from(needed) {
            Ok(n) if n <= remaining => n,
            _ => return Err(ObjectMapError::DataTruncated { count: len, needed, offset, remaining }),
        };
        let data = buf.slice(offset..offset + nbytes);
        d.skip(nbytes, "bit_vector_data").map_err(malformed("data"))?;
        let footer = d.bytes("bit_vector_footer").map_err(malformed("footer"))?;
        if !footer.is_empty() {
            verify_crcs(&header, &data, &footer)?;
        }
        Ok(ObjectMap { data, len })
    }

    /// A map of these states.
    pub fn from_states(states: impl IntoIterator<Item = ObjectState>) -> ObjectMap {
        let mut data = BytesMut::new();
        let mut len = 0u64;
        for s in states {
            let shift = (3 - (len % 4) as u8) * 2;
            if len.is_multiple_of(4) {
                data.put_u8(0);
            }
            if let Some(last) = data.last_mut() {
                *last |= s.bits() << shift;
            }
            len += 1;
        }
        ObjectMap { data: data.freeze(), len }
    }

    /// Encodes the map as `BitVector::encode` does, with or without CRCs.
    pub fn encode(&self, with_crcs: bool) -> Bytes {
        let mut header = BytesMut::with_capacity(14);
        header.put_u8(1);
        header.put_u8(1);
        header.put_u32_le(8);
        header.put_u64_le(self.len);
        let mut out = BytesMut::with_capacity(4 + header.len() + self.data.len() + 16);
        out.put_u32_le(header.len() as u32);
        out.put_slice(&header);
        out.put_slice(&self.data);
        if with_crcs {
            let blocks: Vec<&[u8]> = self.data.chunks(CRC_BLOCK_SIZE).collect();
            out.put_u32_le(8 + 4 * blocks.len() as u32);
            out.put_u32_le(ceph_crc32c(0, &header));
            out.put_u32_le(blocks.len() as u32);
            for b in blocks {
                out.put_u32_le(ceph_crc32c(0, b));
            }
        } else {
            out.put_u32_le(0);
        }
        out.freeze()
    }

    /// Number of objects the map covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the map covers no object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The state of object `object_no`; `None` past the end of the map.
    pub fn get(&self, object_no: u64) -> Option<ObjectState> {
        if object_no >= self.len {
            return None;
        }
        let byte = *self.data.get(usize::try_from(object_no / 4).ok()?)?;
        Some(ObjectState::from_bits(byte >> ((3 - (object_no % 4) as u8) * 2)))
    }

    /// The state of object `object_no`, `Nonexistent` past the end of the map (what librbd
    /// assumes when it grows a map).
    pub fn state(&self, object_no: u64) -> ObjectState {
        self.get(object_no).unwrap_or(ObjectState::Nonexistent)
    }

    /// Every state, in object order.
    pub fn iter(&self) -> impl Iterator<Item = ObjectState> + '_ {
        (0..self.len).map(|i| self.state(i))
    }
}

fn verify_crcs(header: &Bytes, data: &Bytes, footer: &Bytes) -> Result<(), ObjectMapError> {
    let mut f = Decoder::new(footer);
    // `decode_header_crc` only checks a CRC that is there.
    if f.remaining() > 0 {
        let stored = f.u32("header_crc").map_err(malformed("footer"))?;
        let computed = ceph_crc32c(0, header);
        if stored != computed {
            return Err(ObjectMapError::HeaderCrc { stored, computed });
        }
    }
    let expected = data.len().div_ceil(CRC_BLOCK_SIZE) as u64;
    let declared = if f.remaining() > 0 { f.u32("data_crc_count").map_err(malformed("footer"))? } else { 0 };
    let found = (f.remaining() / 4) as u64;
    if found != expected || u64::from(declared) != expected || !f.remaining().is_multiple_of(4) {
        return Err(ObjectMapError::CrcCount { found, declared, expected });
    }
    for (block, chunk) in data.chunks(CRC_BLOCK_SIZE).enumerate() {
        let stored = f.u32("data_crc").map_err(malformed("footer"))?;
        let computed = ceph_crc32c(0, chunk);
        if stored != computed {
            return Err(ObjectMapError::DataCrc { block: block as u64, stored, computed });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObjectState::*;

    #[test]
    fn packs_first_element_in_high_bits() {
        let m = ObjectMap::from_states([Exists, Nonexistent, Pending, ExistsClean, Exists]);
        let enc = m.encode(false);
        // u32 header len 14, header (1,1,len 8, count 5), 2 data bytes, empty footer
        assert_eq!(&enc[..4], &14u32.to_le_bytes());
        assert_eq!(&enc[4..6], &[1, 1]);
        assert_eq!(&enc[10..18], &5u64.to_le_bytes());
        assert_eq!(&enc[18..20], &[0b01_00_10_11, 0b01_00_00_00]);
        assert_eq!(&enc[20..], &0u32.to_le_bytes());
        assert_eq!(ObjectMap::decode(&enc).unwrap(), m);
        assert_eq!(m.get(3), Some(ExistsClean));
        assert_eq!(m.get(5), None);
        assert_eq!(m.state(9), Nonexistent);
    }

    #[test]
    fn crcs_round_trip_and_are_checked() {
        let states: Vec<_> = (0..40_000u32).map(|i| ObjectState::from_bits((i % 7) as u8)).collect();
        let m = ObjectMap::from_states(states.iter().copied());
        let enc = m.encode(true);
        let back = ObjectMap::decode(&enc).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), states);

        // A flipped data bit is caught by its block CRC (10 000 data bytes = 3 blocks).
        let mut bad = enc.to_vec();
        bad[18 + 5000] ^= 0x10;
        assert!(matches!(
            ObjectMap::decode(&Bytes::from(bad)),
            Err(ObjectMapError::DataCrc { block: 1, .. })
        ));
        // A changed count is caught by the header CRC (or a data/CRC count mismatch).
        let mut bad = enc.to_vec();
        bad[10] = 0x3f; // 40_000 -> 39_999 elements: same data length
        assert!(matches!(ObjectMap::decode(&Bytes::from(bad)), Err(ObjectMapError::HeaderCrc { .. })));
    }

    #[test]
    fn the_header_crc_is_over_the_encoded_header() {
        // Header of an empty map: struct_v 1, compat 1, len 8, count 0.
        let header = [1u8, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let enc = ObjectMap::default().encode(true);
        assert_eq!(&enc[22..26], &ceph_crc32c(0, &header).to_le_bytes());
        assert_eq!(&enc[26..30], &0u32.to_le_bytes());
        assert_eq!(enc.len(), 30);
    }

    #[test]
    fn truncated_and_oversized_maps_are_errors() {
        let enc = ObjectMap::from_states([Exists; 9]).encode(true);
        for cut in 0..enc.len() {
            assert!(ObjectMap::decode(&enc.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut huge = enc.to_vec();
        huge[10..18].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(ObjectMap::decode(&Bytes::from(huge)), Err(ObjectMapError::DataTruncated { .. })));
    }
}
