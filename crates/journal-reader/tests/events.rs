//! Round trips and layout checks for librbd journal payloads.

use std::collections::BTreeMap;

use bytes::Bytes;
use journal_reader::event::{
    ClientData, ClientMeta, Event, EventEntry, ImageClientMeta, MirrorPeerClientMeta, MirrorPeerState,
    MirrorPeerSyncPoint, SnapEvent, TagData, TagPredecessor,
};
use rbd_types::encoding::{Decode, DecodeError, Decoder, Encode, Encoder, UTime};
use rbd_types::{MirrorSnapshotNamespace, MirrorSnapshotState, SnapshotNamespace};

fn namespaces() -> Vec<SnapshotNamespace> {
    vec![
        SnapshotNamespace::User,
        SnapshotNamespace::Group { group_pool: -1, group_id: "g".into(), group_snapshot_id: "gs".into() },
        SnapshotNamespace::Trash { original_name: "old".into(), original_snapshot_namespace_type: 0 },
        SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
            state: MirrorSnapshotState::NonPrimary,
            complete: true,
            mirror_peer_uuids: ["a".to_string(), "b".to_string()].into_iter().collect(),
            primary_mirror_uuid: "p".into(),
            primary_snap_id: 4,
            last_copied_object_number: 9,
            snap_seqs: [(1, 2)].into_iter().collect(),
        }),
        SnapshotNamespace::Unknown { namespace_type: 77 },
    ]
}

pub fn all_events() -> Vec<Event> {
    let snap = |ns: SnapshotNamespace| SnapEvent { op_tid: 3, snap_name: "snap".into(), snap_namespace: ns };
    let mut v = vec![
        Event::AioDiscard { offset: 1, length: 2, discard_granularity_bytes: 4096 },
        Event::AioDiscard { offset: 1, length: 2, discard_granularity_bytes: 0 },
        Event::AioWrite { offset: 4096, length: 3, data: Bytes::from_static(b"abc") },
        Event::AioFlush,
        Event::OpFinish { op_tid: 9, r: -17 },
        Event::SnapRemove(snap(SnapshotNamespace::User)),
        Event::SnapRename {
            op_tid: 1,
            dst_snap_name: "dst".into(),
            snap_id: 12,
            src_snap_name: "src".into(),
        },
        Event::SnapProtect(snap(SnapshotNamespace::User)),
        Event::SnapUnprotect(snap(SnapshotNamespace::User)),
        Event::SnapRollback(snap(SnapshotNamespace::User)),
        Event::Rename { op_tid: 1, image_name: "img".into() },
        Event::Resize { op_tid: 1, size: 1 << 30 },
        Event::Flatten { op_tid: 5 },
        Event::DemotePromote,
        Event::SnapLimit { op_tid: 1, limit: 10 },
        Event::UpdateFeatures { op_tid: 1, features: 127, enabled: true },
        Event::MetadataSet { op_tid: 1, key: "k".into(), value: "v".into() },
        Event::MetadataRemove { op_tid: 1, key: "k".into() },
        Event::AioWriteSame { offset: 0, length: 8192, data: Bytes::from_static(&[0u8; 512]) },
        Event::AioCompareAndWrite {
            offset: 0,
            length: 2,
            cmp_data: Bytes::from_static(b"xy"),
            write_data: Bytes::from_static(b"zw"),
        },
    ];
    for ns in namespaces() {
        v.push(Event::SnapCreate(snap(ns)));
    }
    v
}

#[test]
fn every_event_round_trips() {
    let mut seen = std::collections::BTreeSet::new();
    for ev in all_events() {
        seen.insert(ev.event_type());
        let entry = EventEntry { event: ev, timestamp: UTime { sec: 1, nsec: 1 } };
        let b = entry.encode_payload();
        assert_eq!(b[0], 5, "struct_v");
        assert_eq!(b[1], 1, "struct_compat");
        let back = EventEntry::decode_payload(&b).unwrap();
        assert_eq!(back, entry);
        // Re-encoding is byte-identical.
        assert_eq!(back.encode_payload(), b);
    }
    assert_eq!(seen, (0..=19).collect());
}

#[test]
fn aio_write_data_is_zero_copy() {
    let entry = EventEntry {
        event: Event::AioWrite { offset: 0, length: 4096, data: Bytes::from(vec![7u8; 4096]) },
        timestamp: UTime::default(),
    };
    let b = entry.encode_payload();
    let back = EventEntry::decode_payload(&b).unwrap();
    let Event::AioWrite { data, .. } = back.event else { panic!("not a write") };
    let base = b.as_ptr() as usize;
    let p = data.as_ptr() as usize;
    assert!(p > base && p + data.len() <= base + b.len());
}

#[test]
fn aio_flush_layout() {
    let entry = EventEntry { event: Event::AioFlush, timestamp: UTime { sec: 1_700_000_000, nsec: 0 } };
    let b = entry.encode_payload();
    assert_eq!(&b[..], &[5, 1, 4, 0, 0, 0, 2, 0, 0, 0, 1, 1, 8, 0, 0, 0, 0x00, 0xf1, 0x53, 0x65, 0, 0, 0, 0]);
}

/// Builds an EventEntry as an older librbd would have (struct_v < 5).
fn old_entry(v: u8, event_type: u32, body: impl FnOnce(&mut Encoder), ts: bool) -> Bytes {
    let mut e = Encoder::new();
    e.envelope(v, 1, |e| {
        e.u32(event_type);
        body(e);
    });
    if ts {
        e.envelope(1, 1, |e| e.utime(UTime { sec: 3, nsec: 4 }));
    }
    e.into_bytes()
}

#[test]
fn discard_versions() {
    // v3: no skip_partial_discard, no trailer.
    let b = old_entry(
        3,
        0,
        |e| {
            e.u64(1);
            e.u64(2);
        },
        false,
    );
    let ev = EventEntry::decode_payload(&b).unwrap();
    assert_eq!(ev.event, Event::AioDiscard { offset: 1, length: 2, discard_granularity_bytes: 0 });
    assert_eq!(ev.timestamp, UTime::default());
    // v4: skip_partial_discard=true maps to u32::MAX granularity; trailer read.
    let b = old_entry(
        4,
        0,
        |e| {
            e.u64(1);
            e.u64(2);
            e.bool(true);
        },
        true,
    );
    let ev = EventEntry::decode_payload(&b).unwrap();
    assert_eq!(ev.event, Event::AioDiscard { offset: 1, length: 2, discard_granularity_bytes: u32::MAX });
    assert_eq!(ev.timestamp, UTime { sec: 3, nsec: 4 });
}

#[test]
fn snap_event_versions() {
    // v1 SnapRename without src name; v3 SnapCreate with namespace; v3
    // SnapRemove without namespace.
    let b = old_entry(
        1,
        6,
        |e| {
            e.u64(1);
            e.string("dst");
            e.u64(7);
        },
        false,
    );
    assert_eq!(
        EventEntry::decode_payload(&b).unwrap().event,
        Event::SnapRename {
            op_tid: 1,
            dst_snap_name: "dst".into(),
            snap_id: 7,
            src_snap_name: String::new()
        }
    );
    let group =
        SnapshotNamespace::Group { group_pool: 1, group_id: "g".into(), group_snapshot_id: "s".into() };
    let g2 = group.clone();
    let b = old_entry(
        3,
        4,
        move |e| {
            e.u64(1);
            e.string("s");
            g2.encode(e);
        },
        false,
    );
    assert_eq!(
        EventEntry::decode_payload(&b).unwrap().event,
        Event::SnapCreate(SnapEvent { op_tid: 1, snap_name: "s".into(), snap_namespace: group })
    );
    let b = old_entry(
        3,
        5,
        |e| {
            e.u64(1);
            e.string("s");
        },
        false,
    );
    assert_eq!(
        EventEntry::decode_payload(&b).unwrap().event,
        Event::SnapRemove(SnapEvent {
            op_tid: 1,
            snap_name: "s".into(),
            snap_namespace: SnapshotNamespace::User
        })
    );
}

#[test]
fn newer_writer_tail_is_skipped() {
    let b = old_entry(
        9,
        11,
        |e| {
            e.u64(1);
            e.u64(2);
            e.u64(0xdead); // unknown future field
        },
        true,
    );
    let ev = EventEntry::decode_payload(&b).unwrap();
    assert_eq!(ev.event, Event::Resize { op_tid: 1, size: 2 });
    assert_eq!(ev.timestamp, UTime { sec: 3, nsec: 4 });
}

#[test]
fn unknown_event_and_unsupported_compat() {
    // As librbd's `UnknownEvent`: its body skipped, the timestamp after it still read.
    let b = old_entry(5, 99, |e| e.u64(0xdead_beef), true);
    let ev = EventEntry::decode_payload(&b).unwrap();
    assert_eq!(ev.event, Event::Unknown { event_type: 99 });
    assert_eq!(ev.timestamp, UTime { sec: 3, nsec: 4 });
    let mut e = Encoder::new();
    e.envelope(6, 2, |e| e.u32(2));
    let err = EventEntry::decode_payload(&e.into_bytes()).unwrap_err();
    assert!(matches!(err, DecodeError::UnsupportedVersion { compat: 2, supported: 1, .. }));
}

#[test]
fn namespaces_round_trip_and_v2_tail() {
    for ns in namespaces() {
        let b = ns.to_bytes();
        assert_eq!(SnapshotNamespace::decode_all(&b).unwrap(), ns);
    }
    // A post-Squid writer (v2) appends group fields to the mirror body.
    let mut e = Encoder::new();
    e.envelope(2, 1, |e| {
        e.u32(3);
        e.u8(0);
        e.bool(false);
        e.u32(0);
        e.string("");
        e.u64(1);
        e.u64(0);
        e.u32(0);
        e.string("group-spec-tail");
        e.string("group-snap-id");
    });
    let ns = SnapshotNamespace::decode_all(&e.into_bytes()).unwrap();
    assert!(matches!(ns, SnapshotNamespace::Mirror(ref m) if m.primary_snap_id == 1));
}

#[test]
fn tag_data_round_trip_and_layout() {
    let t = TagData {
        mirror_uuid: "uuid".into(),
        predecessor: TagPredecessor { mirror_uuid: "".into(), commit_valid: true, tag_tid: 5, entry_tid: 6 },
    };
    let b = t.to_bytes();
    assert_eq!(b.len(), 4 + 4 + 4 + 1 + 8 + 8);
    assert_eq!(TagData::decode_all(&b).unwrap(), t);
    assert_eq!(TagData::decode_all(&TagData::default().to_bytes()).unwrap(), TagData::default());
}

fn client_datas() -> Vec<ClientData> {
    vec![
        ClientData {
            client_meta: ClientMeta::Image(ImageClientMeta { tag_class: 3, resync_requested: true }),
        },
        ClientData {
            client_meta: ClientMeta::MirrorPeer(MirrorPeerClientMeta {
                image_id: "local-id".into(),
                state: MirrorPeerState::Replaying,
                sync_object_count: 100,
                sync_points: vec![
                    MirrorPeerSyncPoint {
                        snap_namespace: SnapshotNamespace::User,
                        snap_name: "snap 2".into(),
                        from_snap_name: "snap 1".into(),
                        object_number: Some(123),
                    },
                    MirrorPeerSyncPoint::default(),
                ],
                snap_seqs: [(1, 2), (3, 4)].into_iter().collect::<BTreeMap<_, _>>(),
            }),
        },
        ClientData { client_meta: ClientMeta::MirrorPeer(MirrorPeerClientMeta::default()) },
        ClientData { client_meta: ClientMeta::Cli },
        ClientData { client_meta: ClientMeta::Unknown { client_meta_type: 42 } },
    ]
}

#[test]
fn client_data_round_trips() {
    for cd in client_datas() {
        let b = cd.to_bytes();
        assert_eq!(&b[..2], &[2, 1]);
        assert_eq!(ClientData::decode_all(&b).unwrap(), cd);
    }
}

#[test]
fn client_data_v1_sync_points_have_no_namespace() {
    let mut e = Encoder::new();
    e.envelope(1, 1, |e| {
        e.u32(1);
        e.string("id");
        e.u32(0);
        e.u64(5);
        e.u32(1);
        e.string("sp");
        e.string("");
        e.optional::<u64>(None, |e, v| e.u64(*v));
        e.u32(0);
    });
    let b = e.into_bytes();
    let cd = ClientData::decode_all(&b).unwrap();
    let ClientMeta::MirrorPeer(m) = cd.client_meta else { panic!() };
    assert_eq!(m.state, MirrorPeerState::Syncing);
    assert_eq!(m.sync_points.len(), 1);
    assert_eq!(m.sync_points[0].snap_name, "sp");
    assert_eq!(m.sync_points[0].snap_namespace, SnapshotNamespace::User);
    let mut d = Decoder::new(&b);
    ClientData::decode(&mut d).unwrap();
    assert!(d.is_empty());
}
