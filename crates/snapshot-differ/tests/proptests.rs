//! Property tests: the object-map decoder never panics and round-trips; fast-diff over a
//! simulated image history reports every changed object and nothing untouched.
#![allow(clippy::needless_range_loop)]

use bytes::Bytes;
use proptest::prelude::*;
use rbd_types::{ObjectMap, ObjectState};
use snapshot_differ::{data_runs, diff_object_maps, is_zero, DiffState, SnapshotMap};

fn state() -> impl Strategy<Value = ObjectState> {
    (0u8..4).prop_map(ObjectState::from_bits)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ObjectMap::decode(&Bytes::from(bytes));
    }

    #[test]
    fn round_trip_with_and_without_crcs(states in proptest::collection::vec(state(), 0..20_000), crcs: bool) {
        let m = ObjectMap::from_states(states.iter().copied());
        let back = ObjectMap::decode(&m.encode(crcs)).unwrap();
        prop_assert_eq!(back.len(), states.len() as u64);
        prop_assert_eq!(back.iter().collect::<Vec<_>>(), states);
    }

    #[test]
    fn mutated_maps_never_panic_and_crcs_catch_flips(
        states in proptest::collection::vec(state(), 1..5_000),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let enc = ObjectMap::from_states(states.iter().copied()).encode(true);
        let mut bad = enc.to_vec();
        let i = pos.index(bad.len());
        bad[i] ^= 1 << bit;
        let decoded = ObjectMap::decode(&Bytes::from(bad));
        // Any single bit flip in the header, data or CRCs is detected (or, in the length
        // prefixes and counts, makes the object malformed).
        prop_assert!(decoded.is_err(), "flip at byte {} bit {} went unnoticed", i, bit);
        let _ = ObjectMap::decode(&enc.slice(..cut.index(enc.len())));
    }

    #[test]
    fn data_runs_cover_exactly_the_non_zero_blocks(
        blocks in proptest::collection::vec(proptest::option::of((0usize..64, 1u8..=255)), 0..40),
        tail in 0usize..64,
    ) {
        let g = 64;
        let mut buf = vec![0u8; blocks.len() * g + tail];
        for (i, b) in blocks.iter().enumerate() {
            if let Some((off, v)) = b { buf[i * g + off] = *v; }
        }
        let runs = data_runs(&buf, g);
        let mut covered = vec![false; buf.len()];
        for r in &runs {
            prop_assert!(r.start % g == 0 && (r.end % g == 0 || r.end == buf.len()));
            prop_assert!(!is_zero(&buf[r.clone()]));
            covered[r.clone()].iter_mut().for_each(|c| *c = true);
        }
        for (i, &b) in buf.iter().enumerate() {
            prop_assert!(b == 0 || covered[i]);
        }
        for w in runs.windows(2) { prop_assert!(w[0].end < w[1].start); }
    }
}

/// One step of a simulated image history.
#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Remove(usize),
    Snap,
}

fn op(objects: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..objects).prop_map(Op::Write),
        2 => (0..objects).prop_map(Op::Remove),
        1 => Just(Op::Snap),
    ]
}

/// What a snapshot saw: its object map (as librbd keeps it) and each object's content
/// (`None` = absent, else the version last written).
struct Snap {
    map: ObjectMap,
    content: Vec<Option<u32>>,
}

fn simulate(objects: usize, ops: &[Op]) -> Vec<Snap> {
    let mut head = vec![ObjectState::Nonexistent; objects];
    let mut content: Vec<Option<u32>> = vec![None; objects];
    let mut version = 0u32;
    let mut snaps = Vec::new();
    for op in ops.iter().cloned().chain([Op::Snap]) {
        match op {
            Op::Write(o) => {
                version += 1;
                content[o] = Some(version);
                head[o] = ObjectState::Exists;
            }
            Op::Remove(o) => {
                content[o] = None;
                head[o] = ObjectState::Nonexistent;
            }
            Op::Snap => {
                snaps.push(Snap {
                    map: ObjectMap::from_states(head.iter().copied()),
                    content: content.clone(),
                });
                // librbd's snapshot create: HEAD objects EXISTS -> EXISTS_CLEAN.
                for s in &mut head {
                    if *s == ObjectState::Exists {
                        *s = ObjectState::ExistsClean;
                    }
                }
            }
        }
    }
    snaps
}

proptest! {
    #[test]
    fn fast_diff_reports_exactly_what_changed(
        ops in proptest::collection::vec(op(24), 0..120),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let snaps = simulate(24, &ops);
        let (i, j) = {
            let (x, y) = (a.index(snaps.len()), b.index(snaps.len()));
            (x.min(y), x.max(y))
        };
        let walk: Vec<_> = snaps[i..=j].iter().map(|s| SnapshotMap { map: &s.map, object_count: 24 }).collect();
        let diff = diff_object_maps(&walk, false).unwrap();
        // Objects touched by any op between snapshot i and j.
        let touched: Vec<bool> = (0..24).map(|o| {
            snaps[i..=j].windows(2).any(|w| w[0].content[o] != w[1].content[o])
        }).collect();
        for o in 0..24 {
            let (before, after) = (snaps[i].content[o], snaps[j].content[o]);
            let st = diff.get(o as u64);
            if before != after {
                prop_assert_ne!(st, DiffState::None, "object {} changed {:?} -> {:?}", o, before, after);
            }
            match st {
                DiffState::Updated => prop_assert!(after.is_some()),
                DiffState::Hole => prop_assert!(after.is_none()),
                DiffState::None => {}
            }
            // Untouched objects are never reported... except that an object rewritten in
            // one snapshot interval stays EXISTS in HEAD only; maps are exact here.
            if !touched[o] {
                prop_assert_eq!(st, DiffState::None, "object {} untouched", o);
            }
        }
        // From the start: everything that exists at j is updated.
        let walk: Vec<_> = snaps[..=j].iter().map(|s| SnapshotMap { map: &s.map, object_count: 24 }).collect();
        let full = diff_object_maps(&walk, true).unwrap();
        for o in 0..24 {
            prop_assert_eq!(full.get(o as u64) == DiffState::Updated, snaps[j].content[o].is_some());
        }
    }
}
