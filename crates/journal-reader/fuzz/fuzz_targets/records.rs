//! Fuzz the records the daemon reads from omap values, cls replies and watch notifications
//! that the other targets do not reach: leader / instance notifications and their acks, the
//! image map, trash specs, snapshot contexts, mirror image statuses, the journal's client and
//! tag lists, and the journal header's omap as a whole. Whatever decodes must re-encode to
//! something that decodes to the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rbd_types::cls_journal::{args, JournalHeader};
use rbd_types::cls_rbd::{MirrorImageMap, MirrorImageStatus, SnapContext, TrashImageSpec};
use rbd_types::encoding::{Decode, Encode};
use rbd_types::mirror_notify::{InstanceNotify, LeaderNotify, NotifyAck};

fn round_trips<T: Decode + Encode + PartialEq + std::fmt::Debug>(b: &Bytes) {
    if let Ok(v) = T::decode_all(b) {
        assert_eq!(T::decode_all(&v.to_bytes()).expect("re-decode"), v);
    }
}

/// The header keys `JournalHeader::from_omap` knows, and one it must ignore.
const HEADER_KEYS: [&str; 10] = [
    "order",
    "splay_width",
    "pool_id",
    "minimum_set",
    "active_set",
    "next_tag_tid",
    "next_tag_class",
    "client_fuzz",
    "tag_0000000000000001",
    "unknown_key",
];

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    round_trips::<LeaderNotify>(&b);
    round_trips::<InstanceNotify>(&b);
    round_trips::<NotifyAck>(&b);
    round_trips::<MirrorImageMap>(&b);
    round_trips::<TrashImageSpec>(&b);
    round_trips::<SnapContext>(&b);
    let _ = MirrorImageStatus::decode_all(&b);
    let _ = args::decode_client_list(&b);
    let _ = args::decode_tag_list(&b);
    // The header's omap: values split at 0xff bytes, given the keys in turn.
    let values: Vec<Bytes> = data.split(|c| *c == 0xff).map(Bytes::copy_from_slice).collect();
    let omap = values.iter().enumerate().map(|(i, v)| (HEADER_KEYS[i % HEADER_KEYS.len()], v));
    let _ = JournalHeader::from_omap(omap);
});
