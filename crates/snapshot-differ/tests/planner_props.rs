//! Properties of the snapshot-mode planner over arbitrary snapshot lists.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rbd_types::{MirrorSnapshotNamespace, MirrorSnapshotState};
use snapshot_differ::planner::{plan, Identity, MirrorStateKind, Snap, SnapKind, Step};

const LOCAL: &str = "L";
const REMOTE: &str = "R";
const PEER: &str = "P";

fn who() -> Identity<'static> {
    Identity { local_mirror_uuid: LOCAL, remote_mirror_uuid: REMOTE, remote_peer_uuid: PEER }
}

fn mirror_snap() -> impl Strategy<Value = MirrorSnapshotNamespace> {
    (
        0u8..5,
        any::<bool>(),
        prop_oneof![Just(vec![]), Just(vec![PEER.to_string()]), Just(vec!["X".to_string()])],
        prop_oneof![Just(REMOTE.to_string()), Just(LOCAL.to_string()), Just(String::new())],
        0u64..40,
        0u64..100,
    )
        .prop_map(|(state, complete, peers, uuid, psid, copied)| MirrorSnapshotNamespace {
            state: MirrorSnapshotState::from_u8(state),
            complete,
            mirror_peer_uuids: peers.into_iter().collect::<BTreeSet<_>>(),
            primary_mirror_uuid: uuid,
            primary_snap_id: psid,
            last_copied_object_number: copied,
            snap_seqs: BTreeMap::new(),
        })
}

fn snaps() -> impl Strategy<Value = Vec<Snap>> {
    proptest::collection::btree_map(
        1u64..40,
        prop_oneof![
            1 => Just(SnapKind::User),
            4 => mirror_snap().prop_map(SnapKind::Mirror),
        ],
        0..8,
    )
    .prop_map(|m| m.into_iter().map(|(id, kind)| Snap { id, name: format!("s{id}"), kind }).collect())
}

fn find(list: &[Snap], id: u64) -> Option<&Snap> {
    list.iter().find(|s| s.id == id)
}

proptest! {
    #[test]
    fn steps_are_consistent(local in snaps(), remote in snaps()) {
        match plan(&local, &remote, who()) {
            Step::PruneLocal(id) => {
                let s = find(&local, id).expect("pruned snapshot exists");
                let m = s.mirror().expect("only mirror snapshots are pruned");
                prop_assert!(m.state.is_non_primary());
            }
            Step::UnlinkRemote(id) => {
                let s = find(&remote, id).expect("unlinked snapshot exists");
                let m = s.mirror().expect("only mirror snapshots are unlinked");
                prop_assert!(m.mirror_peer_uuids.contains(PEER));
            }
            Step::Sync(p) => {
                let end = find(&remote, p.remote_end).expect("end exists");
                let m = end.mirror().expect("end is a mirror snapshot");
                prop_assert!(m.complete);
                prop_assert!(m.mirror_peer_uuids.contains(PEER));
                if let Some(start) = p.remote_start {
                    prop_assert!(start < p.remote_end);
                }
                for u in &p.user_snaps {
                    prop_assert!(*u < p.remote_end);
                    prop_assert!(p.remote_start.is_none_or(|s| *u > s));
                    prop_assert_eq!(&find(&remote, *u).expect("user snap").kind, &SnapKind::User);
                }
                if let Some(r) = &p.resume {
                    prop_assert!(r.last_copied_object_number > 0);
                    let l = find(&local, r.local_snap_id).and_then(Snap::mirror).expect("resumed snapshot");
                    prop_assert!(!l.complete);
                    prop_assert_eq!(l.primary_snap_id, p.remote_end);
                }
                prop_assert!(p.pending >= 1);
            }
            Step::WaitRemoteComplete | Step::Idle | Step::Stop(_) => {}
        }
    }

    /// Performing the planned prunes and unlinks always reaches a sync, idle, wait or stop.
    #[test]
    fn prunes_and_unlinks_terminate(mut local in snaps(), mut remote in snaps()) {
        for _ in 0..40 {
            match plan(&local, &remote, who()) {
                Step::PruneLocal(id) => local.retain(|s| s.id != id),
                Step::UnlinkRemote(id) => {
                    for s in remote.iter_mut().filter(|s| s.id == id) {
                        if let SnapKind::Mirror(m) = &mut s.kind {
                            m.mirror_peer_uuids.remove(PEER);
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
        prop_assert!(false, "planning did not settle");
    }
}
