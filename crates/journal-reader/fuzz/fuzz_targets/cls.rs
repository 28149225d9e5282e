//! Fuzz rbd-types' decoders of what the cluster hands back: cls `rbd` replies, snapshot
//! namespaces, object maps. Whatever decodes must re-encode to something that decodes to
//! the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rbd_types::cls_rbd::{args, MirrorImage, MirrorImageSiteStatus, MirrorImageStatus, SnapshotInfo};
use rbd_types::encoding::{Decode, Encode};
use rbd_types::{ObjectMap, SnapshotNamespace};

fn round_trips<T: Decode + Encode + PartialEq + std::fmt::Debug>(b: &Bytes) {
    if let Ok(v) = T::decode_all(b) {
        assert_eq!(T::decode_all(&v.to_bytes()).expect("re-decode"), v);
    }
}

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    round_trips::<MirrorImage>(&b);
    round_trips::<MirrorImageSiteStatus>(&b);
    let _ = MirrorImageStatus::decode_all(&b);
    round_trips::<SnapshotInfo>(&b);
    round_trips::<SnapshotNamespace>(&b);
    let _ = ObjectMap::decode(&b);
    let _ = args::mirror_image_list_reply(&b);
    let _ = args::mirror_image_status_get_reply(&b);
    let _ = args::get_snapcontext_reply(&b);
    let _ = args::snapshot_get_reply(&b);
    let _ = args::metadata_list_reply(&b);
    let _ = args::object_map_load_reply(&b);
    let _ = args::get_protection_status_reply(&b);
});
