//! Golden fixtures: a journal written by librbd on a real Ceph Pacific 16.2.15 cluster
//! (`tests/fixtures/journal/capture.py`, provenance in its README), decoded by us and compared
//! field by field with what Ceph's own decoder printed (`rbd journal inspect --verbose`) and
//! with what the workload wrote (`ops.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use journal_reader::entry::decode_object;
use journal_reader::event::{ClientMeta, Event, EventEntry, TagData};
use journal_reader::player::plan_playback;
use journal_reader::ClientData;
use rbd_types::cls_journal::JournalHeader;
use rbd_types::cls_journal::ObjectSetPosition;
use rbd_types::{Decode, SnapshotNamespace, UTime};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/journal/pacific-16.2.15")
}

fn read_json(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(s: &str) -> Bytes {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect::<Vec<_>>()
        .into()
}

fn header() -> (JournalHeader, Value) {
    let h = read_json("header.json");
    let omap: BTreeMap<String, Bytes> = h["omap"]
        .as_object()
        .expect("omap")
        .iter()
        .map(|(k, v)| (k.clone(), hex(v.as_str().expect("hex"))))
        .collect();
    let header = JournalHeader::from_omap(omap.iter().map(|(k, v)| (k.as_str(), v))).expect("header decodes");
    (header, h)
}

/// One `Entry: tag_id=.., commit_tid=..` block of `rbd journal inspect --verbose`.
#[derive(Debug)]
struct Inspected {
    tag_tid: u64,
    fields: serde_json::Map<String, Value>,
}

fn inspected() -> Vec<Inspected> {
    let text = std::fs::read_to_string(fixture_dir().join("inspect.txt")).expect("inspect.txt");
    let mut out = Vec::new();
    let mut blocks = text.split("Entry: ").skip(1);
    for block in blocks.by_ref() {
        let (head, rest) = block.split_once('\n').expect("entry header line");
        let tag = head.split(',').next().and_then(|t| t.strip_prefix("tag_id=")).expect("tag_id");
        let json_end = rest.find("\n}").expect("end of the event JSON") + 2;
        let fields: serde_json::Map<String, Value> =
            serde_json::from_str(&rest[..json_end]).unwrap_or_else(|e| panic!("inspect JSON ({e}): {rest}"));
        out.push(Inspected { tag_tid: tag.parse().expect("tag id"), fields });
    }
    assert!(text.contains(&format!("{} entries inspected, 0 errors", out.len())), "inspect summary");
    out
}

/// Ceph prints `utime_t` as local time with microseconds; the lab runs in UTC.
fn ceph_time(t: UTime) -> String {
    if t.sec == 0 && t.nsec == 0 {
        return "0.000000".into();
    }
    format!("{}.{:06}+0000", t.utc_string().replace(' ', "T"), t.nsec / 1000)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 7) as u8).wrapping_add(seed)).collect()
}

/// Every entry of every data object, in player order from an empty commit position.
fn played() -> Vec<(u64, EventEntry)> {
    let (header, h) = header();
    let mut objects = BTreeMap::new();
    for entry in std::fs::read_dir(fixture_dir().join("data")).expect("data dir") {
        let path = entry.expect("dir entry").path();
        let n: u64 =
            path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).expect("object number");
        let bytes = Bytes::from(std::fs::read(&path).expect("object"));
        let name = format!("{}{n}", h["data_object_prefix"].as_str().expect("prefix"));
        let decoded = decode_object(&name, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.partial_tail, 0, "{name} ends cleanly");
        assert_eq!(decoded.consumed, bytes.len());
        objects.insert(n, decoded.entries);
    }
    let playback =
        plan_playback(header.splay_width, header.active_set, &ObjectSetPosition::default(), &objects)
            .expect("playback plan");
    playback
        .entries
        .iter()
        .map(|p| {
            let ev = EventEntry::decode_payload(&p.entry.payload)
                .unwrap_or_else(|e| panic!("{e} at {:?}", p.position()));
            (p.entry.tag_tid, ev)
        })
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn every_entry_matches_rbd_journal_inspect() {
    let ours = played();
    let theirs = inspected();
    assert_eq!(ours.len(), theirs.len(), "same number of entries as rbd journal inspect");
    for (i, ((tag_tid, ev), insp)) in ours.iter().zip(&theirs).enumerate() {
        let f = &insp.fields;
        let ctx = format!("entry {i}: ours {ev:?} / inspect {f:?}");
        assert_eq!(*tag_tid, insp.tag_tid, "{ctx}");
        assert_eq!(ceph_time(ev.timestamp), s(&f["timestamp"]), "{ctx}");
        let ty = s(&f["event_type"]);
        match &ev.event {
            Event::AioDiscard { offset, length, discard_granularity_bytes } => {
                assert_eq!(ty, "AioDiscard", "{ctx}");
                assert_eq!((*offset, *length), (u(&f["offset"]), u(&f["length"])), "{ctx}");
                assert_eq!(
                    u64::from(*discard_granularity_bytes),
                    u(&f["discard_granularity_bytes"]),
                    "{ctx}"
                );
            }
            Event::AioWrite { offset, length, data } => {
                assert_eq!(ty, "AioWrite", "{ctx}");
                assert_eq!((*offset, *length), (u(&f["offset"]), u(&f["length"])), "{ctx}");
                assert_eq!(data.len() as u64, *length, "{ctx}");
            }
            Event::AioFlush => assert_eq!(ty, "AioFlush", "{ctx}"),
            Event::Unknown { event_type } => panic!("{ctx}: unknown event type {event_type}"),
            Event::OpFinish { op_tid, r } => {
                assert_eq!(ty, "OpFinish", "{ctx}");
                assert_eq!(*op_tid, u(&f["op_tid"]), "{ctx}");
                assert_eq!(i64::from(*r), f["result"].as_i64().expect("result"), "{ctx}");
            }
            Event::SnapCreate(e)
            | Event::SnapRemove(e)
            | Event::SnapProtect(e)
            | Event::SnapUnprotect(e)
            | Event::SnapRollback(e) => {
                let name = match &ev.event {
                    Event::SnapCreate(_) => "SnapCreate",
                    Event::SnapRemove(_) => "SnapRemove",
                    Event::SnapProtect(_) => "SnapProtect",
                    Event::SnapUnprotect(_) => "SnapUnprotect",
                    _ => "SnapRollback",
                };
                assert_eq!(ty, name, "{ctx}");
                assert_eq!(e.op_tid, u(&f["op_tid"]), "{ctx}");
                assert_eq!(e.snap_name, s(&f["snap_name"]), "{ctx}");
                assert_eq!(e.snap_namespace, SnapshotNamespace::User, "{ctx}");
                if let Some(ns) = f.get("snapshot_namespace_type") {
                    assert_eq!(s(ns), "user", "{ctx}");
                }
            }
            Event::SnapRename { op_tid, dst_snap_name, snap_id, src_snap_name } => {
                assert_eq!(ty, "SnapRename", "{ctx}");
                assert_eq!(*op_tid, u(&f["op_tid"]), "{ctx}");
                assert_eq!(*snap_id, u(&f["src_snap_id"]), "{ctx}");
                assert_eq!(src_snap_name, s(&f["src_snap_name"]), "{ctx}");
                assert_eq!(dst_snap_name, s(&f["dest_snap_name"]), "{ctx}");
            }
            Event::Rename { op_tid, image_name } => {
                assert_eq!(ty, "Rename", "{ctx}");
                assert_eq!(*op_tid, u(&f["op_tid"]), "{ctx}");
                assert_eq!(image_name, s(&f["image_name"]), "{ctx}");
            }
            Event::Resize { op_tid, size } => {
                assert_eq!(ty, "Resize", "{ctx}");
                assert_eq!((*op_tid, *size), (u(&f["op_tid"]), u(&f["size"])), "{ctx}");
            }
            Event::Flatten { op_tid } => {
                assert_eq!(ty, "Flatten", "{ctx}");
                assert_eq!(*op_tid, u(&f["op_tid"]), "{ctx}");
            }
            Event::DemotePromote => assert_eq!(ty, "Demote/Promote", "{ctx}"),
            Event::SnapLimit { op_tid, limit } => {
                assert_eq!(ty, "SnapLimit", "{ctx}");
                assert_eq!((*op_tid, *limit), (u(&f["op_tid"]), u(&f["limit"])), "{ctx}");
            }
            Event::UpdateFeatures { op_tid, features, enabled } => {
                assert_eq!(ty, "UpdateFeatures", "{ctx}");
                assert_eq!((*op_tid, *features), (u(&f["op_tid"]), u(&f["features"])), "{ctx}");
                assert_eq!(Some(*enabled), f["enabled"].as_bool(), "{ctx}");
            }
            Event::MetadataSet { op_tid, key, value } => {
                assert_eq!(ty, "MetadataSet", "{ctx}");
                assert_eq!(*op_tid, u(&f["op_tid"]), "{ctx}");
                assert_eq!((key.as_str(), value.as_str()), (s(&f["key"]), s(&f["value"])), "{ctx}");
            }
            Event::MetadataRemove { op_tid, key } => {
                assert_eq!(ty, "MetadataRemove", "{ctx}");
                assert_eq!(*op_tid, u(&f["op_tid"]), "{ctx}");
                assert_eq!(key, s(&f["key"]), "{ctx}");
            }
            Event::AioWriteSame { offset, length, .. } => {
                assert_eq!(ty, "AioWriteSame", "{ctx}");
                assert_eq!((*offset, *length), (u(&f["offset"]), u(&f["length"])), "{ctx}");
            }
            Event::AioCompareAndWrite { offset, length, .. } => {
                assert_eq!(ty, "AioCompareAndWrite", "{ctx}");
                assert_eq!((*offset, *length), (u(&f["offset"]), u(&f["length"])), "{ctx}");
            }
        }
    }
}

/// The librbd public API can produce every event type; the capture holds all twenty.
#[test]
fn the_capture_holds_every_event_type() {
    let mut seen: Vec<u32> = played().iter().map(|(_, e)| e.event.event_type()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..=19).collect::<Vec<u32>>());
}

/// Data payloads are exactly what the workload wrote (and zero-copy slices of the object).
#[test]
fn write_payloads_are_the_bytes_written() {
    let ops = read_json("ops.json");
    let played = played();
    // In journal order, each write of the workload is one or more consecutive AioWrite events
    // (librbd splits a write so each payload fits `rbd_journal_max_payload_bytes`).
    let mut events = played.iter().filter_map(|(_, e)| match &e.event {
        Event::AioWrite { offset, length, data } => Some((*offset, *length, data.clone())),
        _ => None,
    });
    for op in ops.as_array().expect("ops").iter().filter(|o| o["op"] == "write") {
        let (off, len) = (u(&op["offset"]), u(&op["length"]));
        let mut got = Vec::new();
        while (got.len() as u64) < len {
            let (offset, length, data) = events.next().expect("an AioWrite for every byte written");
            assert_eq!(offset, off + got.len() as u64, "pieces of a split write are contiguous");
            assert_eq!(length, data.len() as u64);
            got.extend_from_slice(&data);
        }
        assert_eq!(got, pattern(len as usize, u(&op["seed"]) as u8), "write at {off} of {len} bytes");
    }
    assert!(events.next().is_none(), "no AioWrite the workload did not make");
    let ws = played.iter().find_map(|(_, e)| match &e.event {
        Event::AioWriteSame { data, .. } => Some(data.clone()),
        _ => None,
    });
    let mut unit = vec![0xab; 256];
    unit.extend([0xcd; 256]);
    assert_eq!(ws.as_deref(), Some(&unit[..]), "write-same pattern");
    let cw = played.iter().find_map(|(_, e)| match &e.event {
        Event::AioCompareAndWrite { cmp_data, write_data, .. } => {
            Some((cmp_data.clone(), write_data.clone()))
        }
        _ => None,
    });
    let (cmp, write) = cw.expect("compare-and-write");
    assert_eq!(&cmp[..], &unit[..]);
    assert_eq!(&write[..], &pattern(512, 99)[..]);
}

/// Header, clients and tags as `rbd journal info` / `status` printed them.
#[test]
fn header_clients_and_tags_decode() {
    let (header, _) = header();
    let info = std::fs::read_to_string(fixture_dir().join("info.txt")).expect("info.txt");
    assert!(info.contains(&format!("order: {} ", header.order)), "{info}");
    assert!(info.contains(&format!("splay_width: {}", header.splay_width)), "{info}");
    assert!(info.contains(&format!("active_set: {}", header.active_set)), "{info}");
    assert!(info.contains(&format!("minimum_set: {}", header.minimum_set)), "{info}");
    assert_eq!(header.pool_id, -1);

    // The image's own client "" carries ImageClientMeta with the journal's tag class.
    let image_client = header.clients.get("").expect("image client");
    let data = ClientData::decode_all(&image_client.data).expect("image client data");
    let tag_class = match data.client_meta {
        ClientMeta::Image(m) => m.tag_class,
        other => panic!("image client meta: {other:?}"),
    };
    // Its commit position is printed by `rbd journal status`.
    let printed: Vec<String> = image_client
        .commit_position
        .object_positions
        .iter()
        .map(|p| {
            format!("[object_number={}, tag_tid={}, entry_tid={}]", p.object_number, p.tag_tid, p.entry_tid)
        })
        .collect();
    assert!(
        info.contains(&format!(
            "[id=, commit_position=[positions=[{}]], state=connected]",
            printed.join(", ")
        )),
        "{info}"
    );
    let capture = header.clients.get("fixture-capture").expect("capture client");
    assert!(matches!(ClientData::decode_all(&capture.data).expect("cli data").client_meta, ClientMeta::Cli));
    assert!(capture.commit_position.object_positions.is_empty());

    // Tags: one class; demotion hands the epoch to "<orphan>", promotion takes it back.
    let tags: Vec<TagData> = header
        .tags
        .values()
        .map(|t| {
            assert_eq!(t.tag_class, tag_class);
            TagData::decode_all(&t.data).expect("tag data")
        })
        .collect();
    assert!(!tags.is_empty());
    let orphan = tags.iter().position(|t| t.mirror_uuid == "<orphan>").expect("a demotion tag");
    let after = &tags[orphan + 1];
    assert_eq!(after.mirror_uuid, "", "promotion makes the local image primary again");
    assert_eq!(after.predecessor.mirror_uuid, "<orphan>");
    assert_eq!(tags.last().map(|t| t.mirror_uuid.as_str()), Some(""), "primary at the end");
}
