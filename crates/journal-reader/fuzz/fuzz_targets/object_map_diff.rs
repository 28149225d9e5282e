//! Fuzz object maps as read from `rbd_object_map.*` (the bit vector with its CRCs) and the
//! fast-diff walk over several of them that snapshot mode's sync plans from. Up to three
//! maps, separated by 0xfe bytes; each snapshot's object count is its map's length or one
//! more (a map too short for its image).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rbd_types::ObjectMap;
use snapshot_differ::{diff_object_maps, SnapshotMap};

fuzz_target!(|data: &[u8]| {
    let maps: Vec<ObjectMap> = data
        .split(|b| *b == 0xfe)
        .filter(|p| !p.is_empty())
        .take(3)
        .filter_map(|p| ObjectMap::decode(&Bytes::copy_from_slice(p)).ok())
        .collect();
    let walk: Vec<SnapshotMap<'_>> = maps
        .iter()
        .enumerate()
        .map(|(i, map)| SnapshotMap { map, object_count: map.len() + (i as u64 % 2) })
        .collect();
    for from_start in [false, true] {
        if let Ok(diff) = diff_object_maps(&walk, from_start) {
            assert!(diff.changed().all(|(n, _)| n < diff.len()));
        }
    }
});
