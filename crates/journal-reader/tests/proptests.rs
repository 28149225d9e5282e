//! Property tests: decoders never panic on arbitrary or mutated input, and
//! encoders round-trip.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use journal_reader::entry::{decode_object, encode_entry, EntryIter};
use journal_reader::event::{
    ClientData, ClientMeta, Event, EventEntry, ImageClientMeta, MirrorPeerClientMeta, MirrorPeerState,
    MirrorPeerSyncPoint, SnapEvent, TagData, TagPredecessor,
};
use journal_reader::player::plan_playback;
use rbd_types::cls_journal::{Client, ClientState, JournalHeader, ObjectPosition, ObjectSetPosition, Tag};
use rbd_types::encoding::{Decode, Encode, UTime};
use rbd_types::SnapshotNamespace;

fn any_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn small_string() -> impl Strategy<Value = String> {
    "[a-z0-9 ._-]{0,12}"
}

fn object_position() -> impl Strategy<Value = ObjectPosition> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(o, t, e)| ObjectPosition {
        object_number: o,
        tag_tid: t,
        entry_tid: e,
    })
}

fn object_set_position() -> impl Strategy<Value = ObjectSetPosition> {
    proptest::collection::vec(object_position(), 0..5)
        .prop_map(|object_positions| ObjectSetPosition { object_positions })
}

fn client() -> impl Strategy<Value = Client> {
    (small_string(), any_bytes(), object_set_position(), any::<u8>()).prop_map(
        |(id, data, commit_position, s)| Client { id, data, commit_position, state: ClientState::from_u8(s) },
    )
}

fn tag() -> impl Strategy<Value = Tag> {
    (any::<u64>(), any::<u64>(), any_bytes()).prop_map(|(tid, tag_class, data)| Tag { tid, tag_class, data })
}

fn tag_data() -> impl Strategy<Value = TagData> {
    (small_string(), small_string(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
        |(m, pm, cv, t, e)| TagData {
            mirror_uuid: m,
            predecessor: TagPredecessor { mirror_uuid: pm, commit_valid: cv, tag_tid: t, entry_tid: e },
        },
    )
}

fn namespace() -> impl Strategy<Value = SnapshotNamespace> {
    prop_oneof![
        Just(SnapshotNamespace::User),
        (any::<i64>(), small_string(), small_string()).prop_map(|(p, g, s)| {
            SnapshotNamespace::Group { group_pool: p, group_id: g, group_snapshot_id: s }
        }),
        (small_string(), any::<u32>()).prop_map(|(n, t)| SnapshotNamespace::Trash {
            original_name: n,
            original_snapshot_namespace_type: t,
        }),
    ]
}

fn client_data() -> impl Strategy<Value = ClientData> {
    let sync_point =
        (namespace(), small_string(), small_string(), any::<Option<u64>>()).prop_map(|(ns, s, f, o)| {
            MirrorPeerSyncPoint { snap_namespace: ns, snap_name: s, from_snap_name: f, object_number: o }
        });
    let meta = prop_oneof![
        (any::<u64>(), any::<bool>())
            .prop_map(|(t, r)| ClientMeta::Image(ImageClientMeta { tag_class: t, resync_requested: r })),
        (
            small_string(),
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(sync_point, 0..3),
            proptest::collection::btree_map(any::<u64>(), any::<u64>(), 0..4),
        )
            .prop_map(|(i, s, c, sp, seqs)| ClientMeta::MirrorPeer(MirrorPeerClientMeta {
                image_id: i,
                state: MirrorPeerState::from_u32(s),
                sync_object_count: c,
                sync_points: sp,
                snap_seqs: seqs,
            })),
        Just(ClientMeta::Cli),
    ];
    meta.prop_map(|client_meta| ClientData { client_meta })
}

fn snap() -> impl Strategy<Value = SnapEvent> {
    (any::<u64>(), small_string(), namespace()).prop_map(|(o, n, ns)| SnapEvent {
        op_tid: o,
        snap_name: n,
        snap_namespace: ns,
    })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(o, l, g)| Event::AioDiscard {
            offset: o,
            length: l,
            discard_granularity_bytes: g
        }),
        (any::<u64>(), any::<u64>(), any_bytes()).prop_map(|(o, l, d)| Event::AioWrite {
            offset: o,
            length: l,
            data: d
        }),
        Just(Event::AioFlush),
        (any::<u64>(), any::<i32>()).prop_map(|(o, r)| Event::OpFinish { op_tid: o, r }),
        snap().prop_map(Event::SnapCreate),
        snap().prop_map(Event::SnapRemove),
        snap().prop_map(Event::SnapProtect),
        snap().prop_map(Event::SnapUnprotect),
        snap().prop_map(Event::SnapRollback),
        (any::<u64>(), small_string(), any::<u64>(), small_string()).prop_map(|(o, d, i, s)| {
            Event::SnapRename { op_tid: o, dst_snap_name: d, snap_id: i, src_snap_name: s }
        }),
        (any::<u64>(), small_string()).prop_map(|(o, n)| Event::Rename { op_tid: o, image_name: n }),
        (any::<u64>(), any::<u64>()).prop_map(|(o, s)| Event::Resize { op_tid: o, size: s }),
        any::<u64>().prop_map(|o| Event::Flatten { op_tid: o }),
        Just(Event::DemotePromote),
        (any::<u64>(), any::<u64>()).prop_map(|(o, l)| Event::SnapLimit { op_tid: o, limit: l }),
        (any::<u64>(), any::<u64>(), any::<bool>())
            .prop_map(|(o, f, e)| { Event::UpdateFeatures { op_tid: o, features: f, enabled: e } }),
        (any::<u64>(), small_string(), small_string())
            .prop_map(|(o, k, v)| { Event::MetadataSet { op_tid: o, key: k, value: v } }),
        (any::<u64>(), small_string()).prop_map(|(o, k)| Event::MetadataRemove { op_tid: o, key: k }),
        (any::<u64>(), any::<u64>(), any_bytes()).prop_map(|(o, l, d)| Event::AioWriteSame {
            offset: o,
            length: l,
            data: d
        }),
        (any::<u64>(), any::<u64>(), any_bytes(), any_bytes()).prop_map(|(o, l, c, w)| {
            Event::AioCompareAndWrite { offset: o, length: l, cmp_data: c, write_data: w }
        }),
    ]
}

fn event_entry() -> impl Strategy<Value = EventEntry> {
    (event(), any::<u32>(), any::<u32>())
        .prop_map(|(event, sec, nsec)| EventEntry { event, timestamp: UTime { sec, nsec } })
}

/// Feeds `b` to every decoder; only checks that nothing panics.
fn decode_everything(b: &Bytes) {
    let _ = ObjectPosition::decode_all(b);
    let _ = ObjectSetPosition::decode_all(b);
    let _ = Client::decode_all(b);
    let _ = Tag::decode_all(b);
    let _ = TagData::decode_all(b);
    let _ = ClientData::decode_all(b);
    let _ = SnapshotNamespace::decode_all(b);
    let _ = EventEntry::decode_payload(b);
    let _ = rbd_types::cls_journal::args::decode_client_list(b);
    let _ = rbd_types::cls_journal::args::decode_tag_list(b);
    let _ = JournalHeader::from_omap([("order", b), ("client_x", b), ("tag_0000000000000001", b)]);
    if let Ok(obj) = decode_object("o", b) {
        for e in &obj.entries {
            let _ = EventEntry::decode_payload(&e.payload);
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    SetLen(usize, u32),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
            (any::<usize>(), prop_oneof![Just(u32::MAX), Just(0x8000_0000), 0..100u32])
                .prop_map(|(i, x)| Mutation::SetLen(i, x)),
        ],
        1..4,
    )
}

fn mutate(b: &Bytes, ms: &[Mutation]) -> Bytes {
    let mut v = b.to_vec();
    for m in ms {
        if v.is_empty() {
            break;
        }
        match *m {
            Mutation::Flip(i, x) => {
                let i = i % v.len();
                v[i] ^= x;
            }
            Mutation::Truncate(i) => v.truncate(i % v.len()),
            Mutation::Insert(i, x) => {
                let i = i % (v.len() + 1);
                v.insert(i, x);
            }
            Mutation::SetLen(i, x) => {
                let i = i % v.len();
                let end = (i + 4).min(v.len());
                let bytes = x.to_le_bytes();
                v[i..end].copy_from_slice(&bytes[..end - i]);
            }
        }
    }
    Bytes::from(v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&Bytes::from(v));
    }

    #[test]
    fn envelope_shaped_bytes_never_panic(
        v in any::<u8>(), c in 0..3u8, body in proptest::collection::vec(any::<u8>(), 0..128),
        extra in 0..8u32,
    ) {
        let mut b = vec![v, c];
        b.extend_from_slice(&(body.len() as u32 + extra).to_le_bytes());
        b.extend_from_slice(&body);
        decode_everything(&Bytes::from(b));
    }

    #[test]
    fn mutated_events_never_panic(e in event_entry(), ms in mutations()) {
        let b = e.encode_payload();
        decode_everything(&mutate(&b, &ms));
    }

    #[test]
    fn mutated_clients_never_panic(c in client(), cd in client_data(), ms in mutations()) {
        let c = Client { data: cd.to_bytes(), ..c };
        decode_everything(&mutate(&c.to_bytes(), &ms));
        decode_everything(&mutate(&cd.to_bytes(), &ms));
    }

    #[test]
    fn mutated_objects_never_panic(
        events in proptest::collection::vec(event_entry(), 1..6), ms in mutations(),
    ) {
        let mut buf = BytesMut::new();
        for (i, e) in events.iter().enumerate() {
            encode_entry(&mut buf, 1, i as u64, &e.encode_payload());
        }
        let b = mutate(&buf.freeze(), &ms);
        decode_everything(&b);
        let mut it = EntryIter::new("o", &b);
        for _ in it.by_ref() {}
        prop_assert!(it.offset() <= b.len());
    }

    #[test]
    fn event_entries_round_trip(e in event_entry()) {
        let b = e.encode_payload();
        prop_assert_eq!(EventEntry::decode_payload(&b).unwrap(), e);
    }

    #[test]
    fn cls_types_round_trip(c in client(), t in tag(), p in object_set_position()) {
        prop_assert_eq!(Client::decode_all(&c.to_bytes()).unwrap(), c);
        prop_assert_eq!(Tag::decode_all(&t.to_bytes()).unwrap(), t);
        prop_assert_eq!(ObjectSetPosition::decode_all(&p.to_bytes()).unwrap(), p);
    }

    #[test]
    fn tag_and_client_data_round_trip(t in tag_data(), c in client_data()) {
        prop_assert_eq!(TagData::decode_all(&t.to_bytes()).unwrap(), t);
        prop_assert_eq!(ClientData::decode_all(&c.to_bytes()).unwrap(), c);
    }

    #[test]
    fn entries_round_trip_and_tail_is_clean(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        cut in any::<usize>(),
    ) {
        let mut buf = BytesMut::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_entry(&mut buf, 3, i as u64, p);
        }
        let b = buf.freeze();
        let obj = decode_object("o", &b).unwrap();
        prop_assert_eq!(obj.entries.len(), payloads.len());
        for (e, p) in obj.entries.iter().zip(&payloads) {
            prop_assert_eq!(&e.payload[..], &p[..]);
        }
        let cut = if b.is_empty() { 0 } else { cut % (b.len() + 1) };
        let t = b.slice(..cut);
        let obj = decode_object("o", &t).unwrap();
        prop_assert_eq!(obj.consumed + obj.partial_tail, cut);
    }

    #[test]
    fn planner_never_panics(
        width in 1..5u8,
        active_set in 0..4u64,
        objs in proptest::collection::btree_map(
            0..16u64,
            proptest::collection::vec((0..3u64, 0..12u64), 0..6),
            0..8,
        ),
        cp in proptest::collection::vec((0..16u64, 0..3u64, 0..12u64), 0..4),
    ) {
        let objects: std::collections::BTreeMap<u64, Vec<_>> = objs
            .into_iter()
            .map(|(k, v)| {
                let entries: Vec<_> = v
                    .into_iter()
                    .map(|(tag, tid)| journal_reader::entry::Entry {
                        entry_tid: tid,
                        tag_tid: tag,
                        payload: Bytes::new(),
                        offset: 0,
                    })
                    .collect();
                (k, entries)
            })
            .collect();
        let commit = ObjectSetPosition {
            object_positions: cp
                .into_iter()
                .map(|(o, t, e)| ObjectPosition { object_number: o, tag_tid: t, entry_tid: e })
                .collect(),
        };
        let _ = plan_playback(width, active_set, &commit, &objects);
    }
}

/// Lays out entries `0..n` of one tag as the recorder does: splay offset =
/// entry tid % W, `per_object` entries per object before the set advances.
fn recorder_layout(
    w: u64,
    n: u64,
    per_object: u64,
) -> (std::collections::BTreeMap<u64, Vec<journal_reader::entry::Entry>>, Vec<u64>) {
    let mut m: std::collections::BTreeMap<u64, Vec<journal_reader::entry::Entry>> = Default::default();
    let mut object_of = Vec::new();
    for tid in 0..n {
        let set = tid / (w * per_object);
        let obj = set * w + tid % w;
        object_of.push(obj);
        m.entry(obj).or_default().push(journal_reader::entry::Entry {
            entry_tid: tid,
            tag_tid: 5,
            payload: Bytes::new(),
            offset: 0,
        });
    }
    (m, object_of)
}

proptest! {
    #[test]
    fn planner_replays_recorder_layout_in_order(
        w in 1..6u8, n in 1..80u64, per_object in 1..5u64, committed in any::<prop::sample::Index>(),
        with_commit in any::<bool>(),
    ) {
        let wu = u64::from(w);
        let (objects, object_of) = recorder_layout(wu, n, per_object);
        let active_set = (n - 1) / (wu * per_object);
        let mut commit = ObjectSetPosition::default();
        let start = if with_commit {
            let k = committed.index(n as usize) as u64;
            for tid in k.saturating_sub(wu - 1)..=k {
                commit.advance(
                    ObjectPosition { object_number: object_of[tid as usize], tag_tid: 5, entry_tid: tid },
                    w,
                );
            }
            k + 1
        } else {
            0
        };
        let p = plan_playback(w, active_set, &commit, &objects).unwrap();
        let got: Vec<u64> = p.entries.iter().map(|e| e.entry.entry_tid).collect();
        prop_assert_eq!(got, (start..n).collect::<Vec<_>>());
        for e in &p.entries {
            prop_assert_eq!(e.object_number, object_of[e.entry.entry_tid as usize]);
        }
    }
}
