//! Property tests of the cls `rbd` encodings: round trips and no panics on
//! arbitrary input bytes.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use rbd_types::cls_rbd::args::*;
use rbd_types::cls_rbd::*;
use rbd_types::encoding::{Decode, Encode, UTime};
use rbd_types::SnapshotNamespace;

fn utime() -> impl Strategy<Value = UTime> {
    (any::<u32>(), any::<u32>()).prop_map(|(sec, nsec)| UTime { sec, nsec })
}

fn image_state() -> impl Strategy<Value = MirrorImageState> {
    (0u8..4).prop_map(|v| MirrorImageState::from_u8(v).unwrap())
}

fn status_state() -> impl Strategy<Value = MirrorImageStatusState> {
    (0u8..7).prop_map(|v| MirrorImageStatusState::from_u8(v).unwrap())
}

fn site_status() -> impl Strategy<Value = MirrorImageSiteStatus> {
    ("[a-z0-9-]{0,12}", status_state(), ".{0,20}", utime(), any::<bool>()).prop_map(
        |(mirror_uuid, state, description, last_update, up)| MirrorImageSiteStatus {
            mirror_uuid,
            state,
            description,
            last_update,
            up,
        },
    )
}

proptest! {
    #[test]
    fn mirror_image_round_trip(gid in ".{0,40}", state in image_state(), snap in any::<bool>()) {
        let mode = if snap { MirrorImageMode::Snapshot } else { MirrorImageMode::Journal };
        let m = MirrorImage { global_image_id: gid, state, mode };
        prop_assert_eq!(MirrorImage::decode_all(&m.to_bytes()).unwrap(), m.clone());
        prop_assert_eq!(mirror_image_get_reply(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn site_status_round_trip(s in site_status()) {
        let b = s.to_bytes();
        // version byte == compat byte == 1 for the local site, 2 otherwise
        let v = if s.mirror_uuid.is_empty() { 1 } else { 2 };
        prop_assert_eq!(&b[..2], &[v, v][..]);
        prop_assert_eq!(MirrorImageSiteStatus::decode_all(&b).unwrap(), s);
    }

    #[test]
    fn image_status_round_trip(local in proptest::option::of(site_status()), remotes in proptest::collection::vec(site_status(), 0..4)) {
        let mut site_statuses = Vec::new();
        if let Some(mut l) = local {
            l.mirror_uuid.clear();
            site_statuses.push(l);
        }
        for mut r in remotes {
            if r.mirror_uuid.is_empty() {
                r.mirror_uuid.push('x');
            }
            site_statuses.push(r);
        }
        let s = MirrorImageStatus { site_statuses };
        prop_assert_eq!(MirrorImageStatus::decode_all(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn snap_context_round_trip(seq in any::<u64>(), snaps in proptest::collection::vec(any::<u64>(), 0..10)) {
        let sc = SnapContext { seq, snaps };
        prop_assert_eq!(get_snapcontext_reply(&sc.to_bytes()).unwrap(), sc);
    }

    #[test]
    fn snapshot_info_round_trip(id in any::<u64>(), name in ".{0,20}", size in any::<u64>(), ts in utime(), cc in any::<u32>()) {
        let si = SnapshotInfo { id, snapshot_namespace: SnapshotNamespace::User, name, image_size: size, timestamp: ts, child_count: cc };
        prop_assert_eq!(SnapshotInfo::decode_all(&si.to_bytes()).unwrap(), si);
    }

    #[test]
    fn object_map_round_trip(states in proptest::collection::vec(0u8..4, 0..300)) {
        prop_assert_eq!(object_map_load_reply(&object_map_save(&states)).unwrap(), states);
    }

    #[test]
    fn metadata_round_trip(m in proptest::collection::btree_map(".{0,8}", proptest::collection::vec(any::<u8>(), 0..8), 0..5)) {
        let m: BTreeMap<String, Bytes> = m.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
        prop_assert_eq!(metadata_list_reply(&metadata_set(&m)).unwrap(), m);
    }

    #[test]
    fn decoders_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let b = Bytes::from(raw);
        let _ = MirrorImage::decode_all(&b);
        let _ = MirrorImageSiteStatus::decode_all(&b);
        let _ = mirror_image_get_reply(&b);
        let _ = mirror_image_status_get_reply(&b);
        let _ = mirror_image_list_reply(&b);
        let _ = mirror_uuid_get_reply(&b);
        let _ = mirror_mode_get_reply(&b);
        let _ = mirror_image_get_image_id_reply(&b);
        let _ = get_size_reply(&b);
        let _ = get_features_reply(&b);
        let _ = get_stripe_unit_count_reply(&b);
        let _ = get_snapcontext_reply(&b);
        let _ = get_object_prefix_reply(&b);
        let _ = get_id_reply(&b);
        let _ = snapshot_get_reply(&b);
        let _ = metadata_list_reply(&b);
        let _ = object_map_load_reply(&b);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_input(s in site_status(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let si = SnapshotInfo { name: s.description.clone(), ..Default::default() };
        for valid in [s.to_bytes(), MirrorImageStatus { site_statuses: vec![s.clone()] }.to_bytes(), si.to_bytes(), object_map_save(&[1, 2, 3])] {
            let mut v = valid.to_vec();
            let i = pos.index(v.len());
            v[i] = byte;
            let b = Bytes::from(v);
            let _ = MirrorImageSiteStatus::decode_all(&b);
            let _ = mirror_image_status_get_reply(&b);
            let _ = snapshot_get_reply(&b);
            let _ = object_map_load_reply(&b);
        }
    }
}
