//! Zero-run detection in an object buffer, so that copied objects keep their holes: blocks
//! of zeros are not written (as librbd's sparse copy does at `sparse_size` granularity,
//! 4 KiB by default).
//!
//! The scan ORs bytes a chunk at a time (which the compiler turns into vector instructions)
//! and stops at the first non-zero chunk, instead of comparing byte by byte with an early
//! exit on every byte, which does not vectorize.

use std::ops::Range;

/// Default granularity of holes: 4 KiB, librbd's default `sparse_size` for copies.
pub const ZERO_GRANULARITY: usize = 4096;

/// Bytes ORed together before each early-exit test.
const SCAN_CHUNK: usize = 128;

/// Whether every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(SCAN_CHUNK).all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// The data runs of `buf`: the blocks of `granularity` bytes (the last one may be shorter)
/// that hold a non-zero byte, adjacent blocks merged, in order. Blocks of zeros between runs
/// are the holes. A `granularity` of 0 is taken as 1.
pub fn data_runs(buf: &[u8], granularity: usize) -> Vec<Range<usize>> {
    let granularity = granularity.max(1);
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, block) in buf.chunks(granularity).enumerate() {
        if is_zero(block) {
            continue;
        }
        let start = i * granularity;
        let end = start + block.len();
        match runs.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => runs.push(start..end),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_runs_at_block_granularity() {
        let mut buf = vec![0u8; 5 * 4096 + 100];
        buf[10] = 1; // block 0
        buf[4096 + 4095] = 2; // block 1 (merged with 0)
        buf[3 * 4096] = 3; // block 3
        buf[5 * 4096 + 99] = 4; // short last block
        assert_eq!(data_runs(&buf, 4096), vec![0..8192, 3 * 4096..4 * 4096, 5 * 4096..5 * 4096 + 100]);
        assert!(!is_zero(&buf));
        assert!(is_zero(&buf[2 * 4096..3 * 4096]));
        assert!(data_runs(&vec![0u8; 4 << 20], 4096).is_empty());
        assert!(data_runs(&[], 4096).is_empty());
        assert_eq!(data_runs(&[0, 1, 0], 0), vec![1..2]);
    }
}
