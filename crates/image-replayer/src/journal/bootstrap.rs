//! Journal-mode bootstrap (ceph-formats.md §3.6): the local non-primary image, our journal
//! client on the primary's journal, and the initial sync at a sync-point snapshot.

use journal_reader::event::{ClientMeta, MirrorPeerClientMeta, MirrorPeerState, MirrorPeerSyncPoint};
use journal_reader::event::{LOCAL_MIRROR_UUID, ORPHAN_MIRROR_UUID};
use journal_reader::tail::{read_header, register_client, unregister_client};
use journal_reader::{ClientData, TagData};
use rados_ffi::rbd::{ImageCreateOptions, ImageRw};
use rados_ffi::IoCtx;
use rbd_types::cls_journal::{
    args as journal_args, header_object_name as journal_header, ClientState, JournalHeader,
};
use rbd_types::{Decode, Encode, ProtectionStatus, SnapshotNamespace};
use tokio_util::sync::CancellationToken;

use crate::cls;
use crate::copy::{copy_image, CopyProgress, CopyRange, CopyStats, LocalSnapContext, SYNC_CONCURRENCY};
use crate::error::{ReplayError, Result};
use crate::local::image::LocalImage;
use crate::local::{newest_image_tag, random_uuid, RemoteImage};
use crate::status::{bootstrap_step, primary_silent_for, with_silence, StatusPublisher};
use crate::PeerContext;
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageStatusState};

/// Maps a remote tag owner to the local journal's view (ceph-formats.md §3.7 step 4).
pub fn map_mirror_uuid(uuid: &str, local_mirror_uuid: &str, remote_mirror_uuid: &str) -> String {
    if uuid.is_empty() {
        remote_mirror_uuid.to_owned()
    } else if uuid == local_mirror_uuid {
        String::new()
    } else {
        uuid.to_owned()
    }
}

/// How the local image's newest journal epoch links to the primary's tag chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochLink {
    /// The local image follows the primary's epoch: replay continues.
    Clean,
    /// The local image was demoted and the primary's promotion follows that demotion (an
    /// orderly failback): replay continues.
    Reconnect,
    /// Neither: both sites wrote on their own (a forced promotion here, then a demotion).
    SplitBrain,
}

/// Links the local image's newest tag `local` to the primary's image tags `remote` (tid
/// order), as stock's `PrepareReplayRequest::handle_get_remote_tags` does: tags owned by
/// [`LOCAL_MIRROR_UUID`] are the primary's own epochs, [`ORPHAN_MIRROR_UUID`] marks a
/// demotion; `local_mirror_uuid` / `remote_mirror_uuid` are the two pools' mirror uuids.
pub fn link_local_epoch(
    local: &TagData,
    remote: &[(u64, TagData)],
    local_mirror_uuid: &str,
    remote_mirror_uuid: &str,
) -> EpochLink {
    let pred = &local.predecessor;
    let mut decoded_any = false;
    let mut orphan_tid: Option<u64> = None;
    let mut reconnect = false;
    for (tid, tag) in remote {
        if pred.commit_valid && pred.mirror_uuid == remote_mirror_uuid && pred.tag_tid > *tid {
            // An epoch the local image replayed already.
            continue;
        }
        decoded_any = true;
        if !pred.commit_valid {
            // A newly synced local image replays from the primary's first own epoch.
            if tag.mirror_uuid != LOCAL_MIRROR_UUID {
                continue;
            }
            break;
        }
        if local.mirror_uuid == ORPHAN_MIRROR_UUID {
            // The local image's last epoch is a demotion: find it in the primary's chain.
            if tag.mirror_uuid == local.mirror_uuid
                && tag.predecessor.commit_valid
                && tag.predecessor.tag_tid == pred.tag_tid
            {
                let local_demoted =
                    tag.predecessor.mirror_uuid == local_mirror_uuid && pred.mirror_uuid == LOCAL_MIRROR_UUID;
                let remote_demoted = pred.mirror_uuid == remote_mirror_uuid
                    && tag.predecessor.mirror_uuid == LOCAL_MIRROR_UUID;
                if local_demoted || remote_demoted {
                    orphan_tid = Some(*tid);
                    continue;
                }
            }
            if tag.mirror_uuid == LOCAL_MIRROR_UUID
                && tag.predecessor.mirror_uuid == ORPHAN_MIRROR_UUID
                && tag.predecessor.commit_valid
                && orphan_tid == Some(tag.predecessor.tag_tid)
            {
                // The primary's promotion follows that demotion.
                reconnect = true;
                break;
            }
            // A promotion must follow the demotion.
            orphan_tid = None;
        }
    }
    if decoded_any && local.mirror_uuid == remote_mirror_uuid {
        EpochLink::Clean
    } else if reconnect {
        EpochLink::Reconnect
    } else {
        EpochLink::SplitBrain
    }
}

/// The image tags (the `""` client's tag class) of a journal header, decoded, in tid order
/// (the newest last).
pub(crate) fn image_tags(header: &JournalHeader, object: &str) -> Result<Vec<(u64, TagData)>> {
    let (tag_class, _) = newest_image_tag(header, object)?;
    let mut tags = Vec::new();
    for t in header.tags.values().filter(|t| t.tag_class == tag_class) {
        let data = TagData::decode_all(&t.data)
            .map_err(|e| ReplayError::decode(format!("journal tag {} in {object}", t.tid), e))?;
        tags.push((t.tid, data));
    }
    Ok(tags)
}

/// Stock's split-brain check of a journal-mode image that existed before this attempt:
/// its newest local epoch must link to the primary's tag chain ([`link_local_epoch`]).
pub(crate) async fn check_epoch_link(
    ctx: &PeerContext,
    remote: &RemoteImage,
    remote_header: &JournalHeader,
    local_image_id: &str,
) -> Result<EpochLink> {
    let local_header = read_header(&ctx.local_io, local_image_id).await?;
    let Some((_, local)) = image_tags(&local_header, &journal_header(local_image_id))?.pop() else {
        // No epoch yet (never written): nothing to link.
        return Ok(EpochLink::Clean);
    };
    let remote_tags = image_tags(remote_header, &journal_header(&remote.image_id))?;
    let link = link_local_epoch(&local, &remote_tags, &ctx.local_mirror_uuid, &ctx.remote_mirror_uuid);
    if link != EpochLink::Clean {
        tracing::info!(?link, local_tag = ?local, "local epoch against the primary's tag chain");
    }
    Ok(link)
}

/// The local image of `remote` in journal mode (`local::ensure_local_image`): created with
/// the primary journal's order and splay width, and owned by the remote from the start (its
/// newest journal tag names the remote pool). A clone is cloned from `clone`, the local copy of
/// its parent snapshot.
pub(crate) async fn ensure_local_image(
    ctx: &PeerContext,
    remote: &RemoteImage,
    remote_journal: &JournalHeader,
    clone: Option<&crate::local::CloneSource>,
) -> Result<(String, bool)> {
    let options = ImageCreateOptions {
        journal_order: Some(remote_journal.order),
        journal_splay_width: Some(remote_journal.splay_width),
        ..Default::default()
    };
    let owner = TagData { mirror_uuid: ctx.remote_mirror_uuid.clone(), ..Default::default() };
    crate::local::ensure_local_image(ctx, remote, MirrorImageMode::Journal, options, clone, |id| async move {
        local_tag_create(&ctx.local_io, &id, &owner).await
    })
    .await
}

/// Allocates a tag in the local journal's tag class unless the newest tag already carries
/// `data` (replay restarts must not pile up identical epochs).
pub async fn local_tag_create(io: &IoCtx, image_id: &str, data: &TagData) -> Result<()> {
    let object = journal_header(image_id);
    for _ in 0..8 {
        let header = read_header(io, image_id).await?;
        let (tag_class, newest) = newest_image_tag(&header, &object)?;
        if let Some(t) = newest {
            if TagData::decode_all(&t.data).ok().as_ref() == Some(data) {
                return Ok(());
            }
        }
        let tid = header.next_tag_tid.unwrap_or(0);
        let arg = journal_args::tag_create(tid, tag_class, &data.to_bytes());
        match io.exec_write(&object, "journal", "tag_create", &arg).await {
            Ok(()) => {
                let _ = io.notify(&object, &[], std::time::Duration::from_secs(5)).await;
                return Ok(());
            }
            Err(e) if e.errno() == Some(libc::ESTALE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ReplayError::Busy(format!("{object}: tag allocation kept racing")))
}

/// Our journal client on the primary's journal, as [`ensure_remote_client`] leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteClient {
    /// `Syncing` (the initial copy is due) or `Replaying`.
    pub state: MirrorPeerState,
    /// The primary flagged the client disconnected (`rbd journal client disconnect`, or
    /// too far behind: `rbd_journal_max_concurrent_object_sets`): its entries may be gone.
    pub disconnected: bool,
}

/// Our journal client on the primary's journal (id = the local pool's mirror uuid).
/// Registers it when absent, pointing at `local_image_id` and in state `Syncing` when the
/// local image still needs its initial copy. For a local image just created (`needs_sync`)
/// a client left from an earlier one is registered afresh, as stock's
/// `CreateLocalImageRequest` does: connected again, its old commit position dropped.
pub async fn ensure_remote_client(
    ctx: &PeerContext,
    remote: &RemoteImage,
    header: &JournalHeader,
    local_image_id: &str,
    needs_sync: bool,
) -> Result<RemoteClient> {
    let client_id = &ctx.local_mirror_uuid;
    let object = journal_header(&remote.image_id);
    let existing = header.clients.get(client_id);
    if needs_sync && existing.is_some() {
        unregister_client(&ctx.remote_io, &remote.image_id, client_id).await?;
        tracing::info!(image = %remote.name, client_id = %client_id, "unregistered our earlier client from the primary's journal");
    }
    match existing.filter(|_| !needs_sync) {
        None => {
            let state = if needs_sync { MirrorPeerState::Syncing } else { MirrorPeerState::Replaying };
            let meta =
                MirrorPeerClientMeta { image_id: local_image_id.to_owned(), state, ..Default::default() };
            let data = ClientData { client_meta: ClientMeta::MirrorPeer(meta) }.to_bytes();
            register_client(&ctx.remote_io, &remote.image_id, client_id, &data).await?;
            tracing::info!(image = %remote.name, client_id = %client_id, ?state, "registered on the primary's journal");
            Ok(RemoteClient { state, disconnected: false })
        }
        Some(c) => {
            let data = ClientData::decode_all(&c.data)
                .map_err(|e| ReplayError::decode(format!("journal client {client_id} in {object}"), e))?;
            match data.client_meta {
                ClientMeta::MirrorPeer(mut meta) => {
                    if meta.image_id != local_image_id {
                        meta.image_id = local_image_id.to_owned();
                        update_remote_client(ctx, remote, &meta).await?;
                    }
                    Ok(RemoteClient { state: meta.state, disconnected: c.state == ClientState::Disconnected })
                }
                other => Err(ReplayError::Invalid(format!(
                    "journal client {client_id} in {object} is not a mirror peer client: {other:?}"
                ))),
            }
        }
    }
}

/// Replaces our client's `MirrorPeerClientMeta` on the primary's journal.
pub async fn update_remote_client(
    ctx: &PeerContext,
    remote: &RemoteImage,
    meta: &MirrorPeerClientMeta,
) -> Result<()> {
    let data = ClientData { client_meta: ClientMeta::MirrorPeer(meta.clone()) }.to_bytes();
    let object = journal_header(&remote.image_id);
    let arg = journal_args::client_update_data(&ctx.local_mirror_uuid, &data);
    ctx.remote_io.exec_write(&object, "journal", "client_update_data", &arg).await?;
    let _ = ctx.remote_io.notify(&object, &[], std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// Copies the primary at a fresh sync-point snapshot into the local image with the
/// image-copy engine: first, in snapshot-id order, each user snapshot the primary already has
/// (its changes since the previous one copied into HEAD, then the local snapshot created with
/// the same name and protection), then the changes up to the sync point. Records the remote →
/// local snapshot ids in our client's `snap_seqs`, marks it `Replaying` and removes the sync
/// point. Progress is published every few seconds.
pub async fn initial_sync(
    ctx: &PeerContext,
    remote: &RemoteImage,
    local: &LocalImage,
    status: &mut StatusPublisher,
    cancel: &CancellationToken,
) -> Result<()> {
    let snap_name = format!(".rbd-mirror.{}.{}", ctx.local_mirror_uuid, random_uuid());
    // The primary is open read-write (its exclusive lock possibly ours) only for the sync
    // point's creation and removal, not for the whole copy: a daemon killed meanwhile leaves
    // no lock for the primary's next writer to break (and our client blocklisted).
    let mut meta = MirrorPeerClientMeta {
        image_id: local.image_id().to_owned(),
        state: MirrorPeerState::Syncing,
        sync_object_count: remote.geometry.layout()?.object_count(remote.geometry.size),
        sync_points: vec![MirrorPeerSyncPoint {
            snap_namespace: SnapshotNamespace::User,
            snap_name: snap_name.clone(),
            from_snap_name: String::new(),
            object_number: None,
        }],
        snap_seqs: Default::default(),
    };
    // Each step that calls the primary says so in the status while its cluster is silent.
    let snaps = bootstrap_step(ctx, status, async {
        ImageRw::open(&ctx.remote_io, &remote.name).await?.snap_create(&snap_name).await?;
        update_remote_client(ctx, remote, &meta).await?;
        cls::snapshots(&ctx.remote_io, &remote.image_id).await
    })
    .await?;
    let sync_id = snaps.iter().find(|s| s.name == snap_name).map(|s| s.id).ok_or_else(|| {
        ReplayError::NotFound(format!("sync point {snap_name} of {} vanished", remote.name))
    })?;
    // User snapshots taken before the sync point (other peers' sync points excluded).
    let user: Vec<_> = snaps
        .into_iter()
        .filter(|s| {
            s.id < sync_id
                && s.snapshot_namespace == SnapshotNamespace::User
                && !s.name.starts_with(".rbd-mirror.")
        })
        .collect();
    let phases = user.len() as u64 + 1;
    let mut previous: Option<u64> = None;
    let mut bytes = 0u64;
    let existing = local.snapshots().await?;
    for (phase, snap) in user.iter().enumerate() {
        // A local snapshot of that name was created by an earlier attempt after its copy
        // completed: only what follows it is copied again.
        if !existing.iter().any(|s| s.name == snap.name) {
            let stats =
                sync_phase(ctx, remote, local, status, previous, snap.id, (phase as u64, phases), cancel)
                    .await?;
            bytes += stats.bytes_written;
        }
        local.snap_create(&snap.name, &SnapshotNamespace::User).await?;
        let protection = bootstrap_step(
            ctx,
            status,
            cls::get_protection_status(&ctx.remote_io, &remote.image_id, snap.id),
        )
        .await?;
        if protection == ProtectionStatus::Protected {
            local.snap_set_protection(&snap.name, ProtectionStatus::Protected).await?;
        }
        let local_id = local
            .snapshots()
            .await?
            .into_iter()
            .find(|s| s.name == snap.name)
            .map(|s| s.id)
            .ok_or_else(|| ReplayError::NotFound(format!("local snapshot {} vanished", snap.name)))?;
        meta.snap_seqs.insert(snap.id, local_id);
        tracing::info!(image = %remote.name, snap = %snap.name, remote_snap_id = snap.id, local_snap_id = local_id, "snapshot synced");
        previous = Some(snap.id);
    }
    let stats =
        sync_phase(ctx, remote, local, status, previous, sync_id, (phases - 1, phases), cancel).await?;
    bytes += stats.bytes_written;

    meta.state = MirrorPeerState::Replaying;
    meta.sync_points.clear();
    // (stock's step names)
    status
        .publish(
            &ctx.local_io,
            &ctx.remote_io,
            MirrorImageStatusState::Syncing,
            "bootstrapping, IMAGE_SYNC/PRUNE_SYNC_POINTS",
        )
        .await;
    bootstrap_step(ctx, status, update_remote_client(ctx, remote, &meta)).await?;
    let removed = bootstrap_step(ctx, status, async {
        ImageRw::open(&ctx.remote_io, &remote.name).await?.snap_remove(&snap_name).await
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(image = %remote.name, snap = %snap_name, error = %e, "cannot remove the sync point");
    }
    tracing::info!(image = %remote.name, bytes, snapshots = user.len(), "initial sync complete");
    Ok(())
}

/// One copy of the initial sync, `(start, end]` into the local HEAD, with the local image's
/// current snapshot context; publishes `IMAGE_SYNC/COPY_IMAGE` progress every 5 seconds.
#[allow(clippy::too_many_arguments)]
async fn sync_phase(
    ctx: &PeerContext,
    remote: &RemoteImage,
    local: &LocalImage,
    status: &mut StatusPublisher,
    start: Option<u64>,
    end: u64,
    (phase, phases): (u64, u64),
    cancel: &CancellationToken,
) -> Result<CopyStats> {
    let (seq, snaps) = local.snap_context().await?;
    let snapc = LocalSnapContext { seq, snaps };
    let range = CopyRange { remote_snap_id_start: start, remote_snap_id_end: end, start_object: 0 };
    let progress = parking_lot::Mutex::new(CopyProgress::default());
    let mut on_progress = |p: CopyProgress| *progress.lock() = p;
    let bandwidth = crate::bandwidth::for_image(ctx, &remote.image_id).await?;
    let copy = copy_image(
        &ctx.remote_io,
        &remote.image_id,
        local,
        &range,
        &snapc,
        SYNC_CONCURRENCY,
        &bandwidth,
        &mut on_progress,
        cancel,
    );
    tokio::pin!(copy);
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            result = &mut copy => return result,
            _ = ticker.tick() => {
                let p = *progress.lock();
                let within = (p.objects_done * 100).checked_div(p.object_count).unwrap_or(0);
                let pct = (phase * 100 + within) / phases.max(1);
                let mut description = format!("bootstrapping, IMAGE_SYNC/COPY_IMAGE {pct}%");
                // The copy waits for the primary while its cluster does not answer.
                if let Some(silent) = primary_silent_for(ctx) {
                    description = with_silence(&description, silent);
                }
                status
                    .publish(&ctx.local_io, &ctx.remote_io, MirrorImageStatusState::Syncing, &description)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(owner: &str, pred_owner: &str, pred_tid: Option<u64>) -> TagData {
        TagData {
            mirror_uuid: owner.to_owned(),
            predecessor: journal_reader::event::TagPredecessor {
                mirror_uuid: pred_owner.to_owned(),
                commit_valid: pred_tid.is_some(),
                tag_tid: pred_tid.unwrap_or(0),
                entry_tid: 0,
            },
        }
    }

    #[test]
    fn local_epochs_link_to_the_primarys_chain_or_are_a_split_brain() {
        let (ul, ur) = ("UL", "UR");
        // The primary's chain: its first epoch (tid 0).
        let primary = vec![(0, tag("", "", None))];
        // A newly synced local image follows the remote: clean.
        assert_eq!(link_local_epoch(&tag(ur, "", None), &primary, ul, ur), EpochLink::Clean);
        // Following a later primary epoch, earlier ones already replayed: clean.
        let chain = vec![(0, tag("", "", None)), (4, tag("", "", Some(0)))];
        assert_eq!(link_local_epoch(&tag(ur, ur, Some(4)), &chain, ul, ur), EpochLink::Clean);
        // Orderly failback: we (site-b) were primary (our epoch tid 7), demoted (orphan tag
        // whose predecessor is our tid 7); the primary replayed that demotion (orphan, its
        // predecessor our uuid, tid 7) then promoted itself after it.
        let local = tag(ORPHAN_MIRROR_UUID, "", Some(7));
        let remote =
            vec![(10, tag(ORPHAN_MIRROR_UUID, ul, Some(7))), (11, tag("", ORPHAN_MIRROR_UUID, Some(10)))];
        assert_eq!(link_local_epoch(&local, &remote, ul, ur), EpochLink::Reconnect);
        // Force-promoted here then demoted, while the primary went on with its own epochs
        // (no trace of our demotion in its chain): split brain.
        let remote = vec![(10, tag("", "", None)), (11, tag("", "", Some(10)))];
        assert_eq!(link_local_epoch(&local, &remote, ul, ur), EpochLink::SplitBrain);
        // A promotion that does not follow the demotion breaks the link.
        let remote = vec![
            (10, tag(ORPHAN_MIRROR_UUID, ul, Some(7))),
            (11, tag("", "", Some(3))),
            (12, tag("", ORPHAN_MIRROR_UUID, Some(10))),
        ];
        assert_eq!(link_local_epoch(&local, &remote, ul, ur), EpochLink::SplitBrain);
        // The local image primary here (its own epoch) against a primary remote: split brain.
        assert_eq!(link_local_epoch(&tag("", "", None), &primary, ul, ur), EpochLink::SplitBrain);
    }

    #[test]
    fn tag_owners_map_between_sites() {
        assert_eq!(map_mirror_uuid("", "UL", "UR"), "UR");
        assert_eq!(map_mirror_uuid("UL", "UL", "UR"), "");
        assert_eq!(map_mirror_uuid("<orphan>", "UL", "UR"), "<orphan>");
        assert_eq!(map_mirror_uuid("other", "UL", "UR"), "other");
    }
}
