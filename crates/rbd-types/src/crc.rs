//! Ceph's CRC32C (`ceph_crc32c`, `bufferlist::crc32c`): journal entries and object-map
//! bit vectors are checked with it.

/// `ceph_crc32c(seed, data)`: the Castagnoli CRC without the initial and
/// final inversion (what `bufferlist::crc32c(seed)` returns).
///
/// The `crc32c` crate inverts on entry and exit, so undo both.
pub fn ceph_crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_crc32c_vectors() {
        // From Ceph's src/test/common/test_crc32c.cc.
        assert_eq!(ceph_crc32c(0, b"foo bar baz"), 4119623852);
        assert_eq!(ceph_crc32c(1234, b"foo bar baz"), 881700046);
        assert_eq!(ceph_crc32c(0, b"whiz bang boom"), 2360230088);
        assert_eq!(ceph_crc32c(5678, b"whiz bang boom"), 3743019208);
    }

    #[test]
    fn ceph_crc32c_matches_bitwise_reference() {
        fn reference(mut crc: u32, data: &[u8]) -> u32 {
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for seed in [0u32, 1, 0xffff_ffff, 12345] {
            assert_eq!(ceph_crc32c(seed, &data), reference(seed, &data));
        }
    }
}
