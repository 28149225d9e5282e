//! What the snapshot-mode replayer does next, decided from the two images' snapshot lists
//! (ceph-formats.md §4.5 steps 2–3, the stock daemon's
//! `image_replayer/snapshot/Replayer.cc` `scan_local_mirror_snapshots` /
//! `scan_remote_mirror_snapshots`). Pure: the caller lists the snapshots (ascending snap
//! id), calls [`plan`], performs the one step it returns, and plans again.

use std::collections::{BTreeMap, BTreeSet};

use rbd_types::{MirrorSnapshotNamespace, MirrorSnapshotState};

/// Which mirror snapshot states count as what (`cls::rbd::MirrorSnapshotNamespace`).
pub trait MirrorStateKind {
    /// PRIMARY or PRIMARY_DEMOTED.
    fn is_primary(&self) -> bool;
    /// NON_PRIMARY or NON_PRIMARY_DEMOTED.
    fn is_non_primary(&self) -> bool;
    /// Either demoted state.
    fn is_demoted(&self) -> bool;
}

impl MirrorStateKind for MirrorSnapshotState {
    fn is_primary(&self) -> bool {
        matches!(*self, MirrorSnapshotState::Primary | MirrorSnapshotState::PrimaryDemoted)
    }
    fn is_non_primary(&self) -> bool {
        matches!(*self, MirrorSnapshotState::NonPrimary | MirrorSnapshotState::NonPrimaryDemoted)
    }
    fn is_demoted(&self) -> bool {
        matches!(*self, MirrorSnapshotState::PrimaryDemoted | MirrorSnapshotState::NonPrimaryDemoted)
    }
}

/// The namespace of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapKind {
    /// A user snapshot.
    User,
    /// A mirror snapshot.
    Mirror(MirrorSnapshotNamespace),
    /// Group, trash or unknown: ignored by mirroring.
    Other,
}

/// One snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    /// Snap id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Namespace.
    pub kind: SnapKind,
}

impl Snap {
    /// The mirror namespace, if a mirror snapshot.
    pub fn mirror(&self) -> Option<&MirrorSnapshotNamespace> {
        match &self.kind {
            SnapKind::Mirror(m) => Some(m),
            _ => None,
        }
    }
}

/// Who we are on both sides.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// The local pool's mirror uuid.
    pub local_mirror_uuid: &'a str,
    /// The remote (primary) pool's mirror uuid.
    pub remote_mirror_uuid: &'a str,
    /// Our peer uuid in the remote pool (remote snapshots linked to it are ours to sync).
    pub remote_peer_uuid: &'a str,
}

/// An interrupted sync to resume: the incomplete local non-primary snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The incomplete local non-primary snapshot.
    pub local_snap_id: u64,
    /// Objects below this number are already copied.
    pub last_copied_object_number: u64,
    /// Its recorded user snapshot mapping.
    pub snap_seqs: BTreeMap<u64, u64>,
}

/// One sync to perform: copy remote `(remote_start, remote_end]` into the local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Remote snapshot already on the local image (`None`: copy from nothing).
    pub remote_start: Option<u64>,
    /// Remote primary mirror snapshot to copy.
    pub remote_end: u64,
    /// Local snapshot matching `remote_start` (the last complete local mirror snapshot).
    pub local_start: Option<u64>,
    /// The in-progress local snapshot to resume, when there is one for `remote_end`.
    pub resume: Option<Resume>,
    /// The remote end snapshot is a demotion: the local one is NON_PRIMARY_DEMOTED.
    pub end_demoted: bool,
    /// The remote end's `clean_since_snap_id` equals the start: no data to copy.
    pub clean: bool,
    /// Remote user snapshots between start and end (ascending ids), to reproduce locally.
    pub user_snaps: Vec<u64>,
    /// Remote primary snapshots linked to us not yet synced, including the end.
    pub pending: u64,
    /// Remote user snap id → local snap id mappings inherited from the start snapshot.
    pub snap_seqs: BTreeMap<u64, u64>,
}

/// Why replay stops (the stock daemon's `handle_replay_complete` descriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The newest local mirror snapshot is PRIMARY: "force promoted" (r = 0).
    ForcePromoted,
    /// Nothing left to sync and the remote's newest mirror snapshot is a demotion:
    /// "remote image demoted" (`EREMOTEIO`).
    RemoteDemoted,
    /// The local image was demoted but the remote has no matching demotion snapshot:
    /// "split-brain" (`EEXIST`).
    SplitBrain,
    /// The newest local non-primary snapshot names another primary pool:
    /// "local image linked to unknown peer" (`EEXIST`).
    UnknownPeer,
    /// "incomplete local primary snapshot" (`EINVAL`).
    IncompleteLocalPrimary,
    /// "invalid local mirror snapshot state" (`EINVAL`).
    InvalidLocalState,
    /// "invalid remote mirror snapshot state" (`EINVAL`).
    InvalidRemoteState,
}

impl Stop {
    /// The description the stock daemon reports.
    pub fn description(self) -> &'static str {
        match self {
            Stop::ForcePromoted => "force promoted",
            Stop::RemoteDemoted => "remote image demoted",
            Stop::SplitBrain => "split-brain",
            Stop::UnknownPeer => "local image linked to unknown peer",
            Stop::IncompleteLocalPrimary => "incomplete local primary snapshot",
            Stop::InvalidLocalState => "invalid local mirror snapshot state",
            Stop::InvalidRemoteState => "invalid remote mirror snapshot state",
        }
    }

    /// The (positive) errno the stock daemon completes with, 0 for none.
    pub fn errno(self) -> i32 {
        match self {
            Stop::ForcePromoted => 0,
            Stop::RemoteDemoted => 121,                 // EREMOTEIO
            Stop::SplitBrain | Stop::UnknownPeer => 17, // EEXIST
            Stop::IncompleteLocalPrimary | Stop::InvalidLocalState | Stop::InvalidRemoteState => 22,
        }
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Remove this local non-primary snapshot, then plan again.
    PruneLocal(u64),
    /// Unlink our peer from this remote snapshot, then plan again.
    UnlinkRemote(u64),
    /// Sync one snapshot.
    Sync(SyncPlan),
    /// The next remote snapshot exists but is not complete yet: wait for an update.
    WaitRemoteComplete,
    /// Everything is synced: wait for an update (`idle`).
    Idle,
    /// Replay cannot continue.
    Stop(Stop),
}

/// Where the local scan left things (`scan_local_mirror_snapshots`).
#[derive(Debug, Clone, Default)]
struct LocalScan {
    /// Last complete mirror snapshot (non-primary, or primary after a demotion).
    start: Option<u64>,
    /// Incomplete non-primary snapshot after the start.
    end: Option<u64>,
    /// The newest local mirror snapshot.
    latest: Option<MirrorSnapshotNamespace>,
}

/// Decides the next step from the local and remote snapshot lists (any order; they are
/// sorted by id here).
pub fn plan(local: &[Snap], remote: &[Snap], who: Identity<'_>) -> Step {
    let mut local: Vec<&Snap> = local.iter().collect();
    local.sort_by_key(|s| s.id);
    let mut remote: Vec<&Snap> = remote.iter().collect();
    remote.sort_by_key(|s| s.id);

    // ---- step 2: local mirror snapshots
    let mut scan = LocalScan::default();
    let mut prune: BTreeSet<u64> = BTreeSet::new();
    for snap in &local {
        let Some(ns) = snap.mirror() else { continue };
        scan.latest = Some(ns.clone());
        if ns.state.is_non_primary() {
            if ns.complete {
                scan.start = Some(snap.id);
                scan.end = None;
                if ns.mirror_peer_uuids.is_empty() {
                    prune.insert(snap.id);
                }
            } else if ns.last_copied_object_number == 0 && scan.start.is_some() {
                // May lack its image state or object map: recreate it, and prune only it,
                // since the sync needs the complete snapshot before it (stock's rule; the
                // first non-primary snapshot is well-formed and resumed instead). Pruning
                // that one too made the restart a full sync.
                prune.clear();
                prune.insert(snap.id);
                break;
            } else {
                scan.end = Some(snap.id);
                break;
            }
        } else if ns.state.is_primary() {
            if !ns.complete {
                return Step::Stop(Stop::IncompleteLocalPrimary);
            }
            scan.start = Some(snap.id);
            scan.end = None;
        } else {
            return Step::Stop(Stop::InvalidLocalState);
        }
    }
    // The start is needed by a delta sync, an interrupted one too.
    if let Some(start) = scan.start {
        prune.remove(&start);
    }
    if let Some(&id) = prune.iter().next() {
        return Step::PruneLocal(id);
    }

    let mut remote_start: Option<u64> = None;
    let has_local = scan.start.is_some() || scan.end.is_some();
    if has_local {
        if let Some(latest) = &scan.latest {
            if latest.state.is_non_primary() && latest.primary_mirror_uuid != who.remote_mirror_uuid {
                return Step::Stop(Stop::UnknownPeer);
            }
            if latest.state == MirrorSnapshotState::Primary {
                return Step::Stop(Stop::ForcePromoted);
            }
            if latest.state.is_non_primary() && latest.complete {
                remote_start = Some(latest.primary_snap_id);
            }
        }
    }
    let latest = scan.latest.clone().unwrap_or_else(|| MirrorSnapshotNamespace {
        state: MirrorSnapshotState::Unknown(u8::MAX),
        complete: false,
        mirror_peer_uuids: BTreeSet::new(),
        primary_mirror_uuid: String::new(),
        primary_snap_id: 0,
        last_copied_object_number: 0,
        snap_seqs: BTreeMap::new(),
    });

    // ---- step 3: remote mirror snapshots linked to our peer
    let mut unlink: BTreeSet<u64> = BTreeSet::new();
    let mut split_brain = false;
    let mut remote_demoted = false;
    let mut end: Option<(&Snap, &MirrorSnapshotNamespace)> = None;
    let mut pending = 0u64;
    for snap in &remote {
        let Some(ns) = snap.mirror() else { continue };
        remote_demoted = ns.state.is_demoted();
        if !ns.state.is_primary() && !ns.state.is_non_primary() {
            return Step::Stop(Stop::InvalidRemoteState);
        }
        if !ns.mirror_peer_uuids.contains(who.remote_peer_uuid) {
            continue;
        }
        if has_local {
            if latest.state.is_non_primary() {
                if end.is_none() {
                    unlink.insert(snap.id);
                }
                // Synced already, or before the one an interrupted sync is copying.
                let synced = if latest.complete {
                    latest.primary_snap_id >= snap.id
                } else {
                    latest.primary_snap_id > snap.id
                };
                if synced {
                    remote_start = Some(snap.id);
                    continue;
                }
            } else if latest.state == MirrorSnapshotState::PrimaryDemoted {
                if ns.state == MirrorSnapshotState::NonPrimaryDemoted
                    && ns.primary_mirror_uuid == who.local_mirror_uuid
                    && Some(ns.primary_snap_id) == scan.start
                {
                    remote_start = Some(snap.id);
                    split_brain = false;
                    continue;
                } else if remote_start.is_none() {
                    split_brain = true;
                    continue;
                }
            }
        } else if !ns.state.is_primary() {
            continue;
        }
        pending += 1;
        if end.is_none() {
            end = Some((snap, ns));
        }
    }
    // Only snapshots strictly older than the start are no longer needed (never the start
    // or the end, nor pending ones after the end).
    if let Some(start) = remote_start {
        unlink.retain(|&id| id < start);
    } else {
        unlink.clear();
    }
    if let Some(&id) = unlink.iter().next() {
        return Step::UnlinkRemote(id);
    }

    if let Some((end_snap, end_ns)) = end {
        if !end_ns.complete {
            return Step::WaitRemoteComplete;
        }
        let resume = match (scan.end, &scan.latest) {
            (Some(local_end), Some(ns))
                if !ns.complete && ns.state.is_non_primary() && ns.primary_snap_id == end_snap.id =>
            {
                Some(Resume {
                    local_snap_id: local_end,
                    last_copied_object_number: ns.last_copied_object_number,
                    snap_seqs: ns.snap_seqs.clone(),
                })
            }
            _ => None,
        };
        // An incomplete local snapshot for another remote snapshot is stale.
        if resume.is_none() {
            if let Some(local_end) = scan.end {
                return Step::PruneLocal(local_end);
            }
        }
        let lower = remote_start.unwrap_or(0);
        let user_snaps = remote
            .iter()
            .filter(|s| s.kind == SnapKind::User && s.id > lower && s.id < end_snap.id)
            .map(|s| s.id)
            .collect();
        let snap_seqs = scan
            .start
            .and_then(|id| local.iter().find(|s| s.id == id))
            .and_then(|s| s.mirror())
            .map(|m| m.snap_seqs.clone())
            .unwrap_or_default();
        return Step::Sync(SyncPlan {
            remote_start,
            remote_end: end_snap.id,
            local_start: scan.start,
            resume,
            end_demoted: end_ns.state.is_demoted(),
            clean: remote_start.is_some() && Some(end_ns.primary_snap_id) == remote_start,
            user_snaps,
            pending,
            snap_seqs,
        });
    }
    if split_brain {
        return Step::Stop(Stop::SplitBrain);
    }
    if remote_demoted {
        return Step::Stop(Stop::RemoteDemoted);
    }
    Step::Idle
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "local-mirror-uuid";
    const REMOTE: &str = "remote-mirror-uuid";
    const PEER: &str = "peer-uuid";

    fn who() -> Identity<'static> {
        Identity { local_mirror_uuid: LOCAL, remote_mirror_uuid: REMOTE, remote_peer_uuid: PEER }
    }

    fn ns(state: MirrorSnapshotState) -> MirrorSnapshotNamespace {
        MirrorSnapshotNamespace {
            state,
            complete: true,
            mirror_peer_uuids: BTreeSet::new(),
            primary_mirror_uuid: String::new(),
            primary_snap_id: 0,
            last_copied_object_number: 0,
            snap_seqs: BTreeMap::new(),
        }
    }

    fn primary(id: u64) -> Snap {
        let mut m = ns(MirrorSnapshotState::Primary);
        m.mirror_peer_uuids.insert(PEER.into());
        Snap { id, name: format!(".mirror.primary.{id}"), kind: SnapKind::Mirror(m) }
    }

    fn with(mut s: Snap, f: impl FnOnce(&mut MirrorSnapshotNamespace)) -> Snap {
        if let SnapKind::Mirror(m) = &mut s.kind {
            f(m);
        }
        s
    }

    fn user(id: u64, name: &str) -> Snap {
        Snap { id, name: name.into(), kind: SnapKind::User }
    }

    fn non_primary(id: u64, primary_snap_id: u64, complete: bool, copied: u64) -> Snap {
        let mut m = ns(MirrorSnapshotState::NonPrimary);
        m.primary_mirror_uuid = REMOTE.into();
        m.primary_snap_id = primary_snap_id;
        m.complete = complete;
        m.last_copied_object_number = copied;
        Snap { id, name: format!(".mirror.non_primary.{id}"), kind: SnapKind::Mirror(m) }
    }

    fn sync(step: Step) -> SyncPlan {
        match step {
            Step::Sync(p) => p,
            other => panic!("expected a sync, got {other:?}"),
        }
    }

    #[test]
    fn nothing_anywhere_is_idle() {
        assert_eq!(plan(&[], &[], who()), Step::Idle);
    }

    #[test]
    fn first_snapshot_is_a_full_sync() {
        let p = sync(plan(&[], &[user(2, "u"), primary(4), primary(7)], who()));
        assert_eq!(p.remote_start, None);
        assert_eq!(p.remote_end, 4);
        assert_eq!(p.local_start, None);
        assert_eq!(p.resume, None);
        assert_eq!(p.user_snaps, vec![2]);
        assert_eq!(p.pending, 2);
        assert!(!p.clean);
    }

    #[test]
    fn snapshots_not_linked_to_us_are_ignored() {
        let other = with(primary(4), |m| {
            m.mirror_peer_uuids = ["someone-else".to_string()].into();
        });
        assert_eq!(plan(&[], &[other], who()), Step::Idle);
    }

    #[test]
    fn delta_sync_after_a_complete_snapshot() {
        let local = [non_primary(10, 4, true, 256)];
        let remote = [primary(4), user(5, "a"), user(6, "b"), primary(7)];
        let p = sync(plan(&local, &remote, who()));
        assert_eq!((p.remote_start, p.remote_end, p.local_start), (Some(4), 7, Some(10)));
        assert_eq!(p.user_snaps, vec![5, 6]);
        assert_eq!(p.pending, 1);
    }

    #[test]
    fn synced_to_the_newest_is_idle() {
        let local = [non_primary(10, 7, true, 256)];
        assert_eq!(plan(&local, &[primary(7)], who()), Step::Idle);
    }

    #[test]
    fn older_synced_snapshots_are_unlinked_one_at_a_time() {
        let local = [non_primary(10, 7, true, 256)];
        let remote = [primary(3), primary(4), primary(7)];
        assert_eq!(plan(&local, &remote, who()), Step::UnlinkRemote(3));
        // Never the start, nor the end or pending ones.
        let remote = [primary(7), primary(9), primary(11)];
        assert_eq!(sync(plan(&local, &remote, who())).remote_end, 9);
    }

    #[test]
    fn old_complete_local_snapshots_are_pruned_but_not_the_start() {
        let local = [non_primary(10, 4, true, 9), non_primary(12, 7, true, 9)];
        assert_eq!(plan(&local, &[primary(7)], who()), Step::PruneLocal(10));
        let local = [non_primary(12, 7, true, 9)];
        assert_eq!(plan(&local, &[primary(7)], who()), Step::Idle);
    }

    #[test]
    fn an_interrupted_sync_resumes_from_its_progress() {
        // The complete snapshot it started from is kept (stock).
        let local = [non_primary(10, 4, true, 9), non_primary(12, 7, false, 33)];
        let p = sync(plan(&local, &[primary(4), primary(7)], who()));
        assert_eq!((p.remote_start, p.local_start), (Some(4), Some(10)));
        assert_eq!(p.resume.map(|r| (r.local_snap_id, r.last_copied_object_number)), Some((12, 33)));
        let local = [non_primary(12, 7, false, 33)];
        let p = sync(plan(&local, &[primary(4), primary(7)], who()));
        assert_eq!(p.remote_start, Some(4));
        assert_eq!(p.remote_end, 7);
        let r = p.resume.expect("resume");
        assert_eq!((r.local_snap_id, r.last_copied_object_number), (12, 33));
        // A full sync resumes too.
        let local = [non_primary(12, 7, false, 33)];
        let p = sync(plan(&local, &[primary(7)], who()));
        assert_eq!(p.remote_start, None);
        assert_eq!(p.resume.map(|r| r.last_copied_object_number), Some(33));
    }

    #[test]
    fn an_interrupted_sync_without_progress_is_recreated() {
        // Only it is pruned, never the complete snapshot the sync starts from: pruning both
        // (one at a time) left no local snapshot, and the restart was a full sync (found by
        // fault_storms.rs's kill -9 storm).
        let local = [non_primary(10, 4, true, 9), non_primary(12, 7, false, 0)];
        assert_eq!(plan(&local, &[primary(4), primary(7)], who()), Step::PruneLocal(12));
        let local = [non_primary(10, 4, true, 9)];
        let p = sync(plan(&local, &[primary(4), primary(7)], who()));
        assert_eq!((p.remote_start, p.local_start, p.resume), (Some(4), Some(10), None));
        // The first non-primary snapshot is resumed from object 0 (stock: it is well-formed).
        let local = [non_primary(12, 7, false, 0)];
        let p = sync(plan(&local, &[primary(4), primary(7)], who()));
        assert_eq!(p.resume.map(|r| (r.local_snap_id, r.last_copied_object_number)), Some((12, 0)));
    }

    #[test]
    fn an_incomplete_sync_of_a_vanished_snapshot_is_pruned() {
        let local = [non_primary(12, 6, false, 5)];
        assert_eq!(plan(&local, &[primary(4), primary(7)], who()), Step::PruneLocal(12));
    }

    #[test]
    fn an_incomplete_remote_snapshot_is_waited_for() {
        let local = [non_primary(10, 4, true, 9)];
        let remote = [primary(4), with(primary(7), |m| m.complete = false)];
        assert_eq!(plan(&local, &remote, who()), Step::WaitRemoteComplete);
    }

    #[test]
    fn clean_since_the_start_needs_no_copy() {
        let local = [non_primary(10, 4, true, 9)];
        let remote = [primary(4), with(primary(7), |m| m.primary_snap_id = 4)];
        assert!(sync(plan(&local, &remote, who())).clean);
    }

    #[test]
    fn roles_and_errors() {
        let promoted =
            Snap { id: 20, name: "p".into(), kind: SnapKind::Mirror(ns(MirrorSnapshotState::Primary)) };
        let local = [promoted];
        assert_eq!(plan(&local, &[primary(4)], who()), Step::Stop(Stop::ForcePromoted));

        let orphan = with(non_primary(20, u64::MAX - 1, true, 0), |m| m.primary_mirror_uuid.clear());
        let local = [non_primary(10, 4, true, 9), orphan];
        assert_eq!(plan(&local, &[primary(4)], who()), Step::PruneLocal(10));
        assert_eq!(plan(&local[1..], &[primary(4)], who()), Step::Stop(Stop::UnknownPeer));

        let incomplete = Snap {
            id: 20,
            name: "p".into(),
            kind: SnapKind::Mirror(MirrorSnapshotNamespace {
                complete: false,
                ..ns(MirrorSnapshotState::Primary)
            }),
        };
        assert_eq!(plan(&[incomplete], &[], who()), Step::Stop(Stop::IncompleteLocalPrimary));

        let bad =
            Snap { id: 3, name: "x".into(), kind: SnapKind::Mirror(ns(MirrorSnapshotState::Unknown(9))) };
        assert_eq!(plan(&[], std::slice::from_ref(&bad), who()), Step::Stop(Stop::InvalidRemoteState));
        assert_eq!(plan(&[bad], &[], who()), Step::Stop(Stop::InvalidLocalState));
    }

    #[test]
    fn a_synced_demotion_stops_replay() {
        let local = [with(non_primary(10, 7, true, 9), |m| m.state = MirrorSnapshotState::NonPrimaryDemoted)];
        let remote = [with(primary(7), |m| m.state = MirrorSnapshotState::PrimaryDemoted)];
        assert_eq!(plan(&local, &remote, who()), Step::Stop(Stop::RemoteDemoted));
        // Not yet synced: it is synced first, as a demoted non-primary snapshot.
        let local = [non_primary(10, 4, true, 9)];
        let remote = [primary(4), with(primary(7), |m| m.state = MirrorSnapshotState::PrimaryDemoted)];
        assert!(sync(plan(&local, &remote, who())).end_demoted);
    }

    fn demoted_here(id: u64) -> Snap {
        Snap { id, name: "d".into(), kind: SnapKind::Mirror(ns(MirrorSnapshotState::PrimaryDemoted)) }
    }

    fn demotion_copy(id: u64, of_local: u64) -> Snap {
        let mut m = ns(MirrorSnapshotState::NonPrimaryDemoted);
        m.primary_mirror_uuid = LOCAL.into();
        m.primary_snap_id = of_local;
        m.mirror_peer_uuids.insert(PEER.into());
        Snap { id, name: "nd".into(), kind: SnapKind::Mirror(m) }
    }

    #[test]
    fn failback_after_an_orderly_demotion_syncs_the_delta() {
        let local = [demoted_here(30)];
        let remote = [demotion_copy(40, 30), primary(41)];
        let p = sync(plan(&local, &remote, who()));
        assert_eq!((p.remote_start, p.remote_end, p.local_start), (Some(40), 41, Some(30)));
    }

    #[test]
    fn failback_without_the_matching_demotion_is_split_brain() {
        let local = [demoted_here(30)];
        let remote = [demotion_copy(40, 29), primary(41)];
        assert_eq!(plan(&local, &remote, who()), Step::Stop(Stop::SplitBrain));
    }

    #[test]
    fn stop_descriptions_are_the_stock_ones() {
        assert_eq!(Stop::SplitBrain.description(), "split-brain");
        assert_eq!(Stop::RemoteDemoted.errno(), 121);
        assert_eq!(Stop::ForcePromoted.errno(), 0);
    }
}
