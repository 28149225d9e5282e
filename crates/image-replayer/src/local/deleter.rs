//! Deleting local non-primary images (ceph-formats.md §6.4): for a resync, and when the
//! primary image is deleted on the peer or its mirroring disabled there (the stock daemon's
//! ImageDeleter serves both). A local image is deleted only when it is non-primary and
//! still follows that peer; a primary image (promoted here) or one demoted / following
//! another peer is kept, as the stock `TrashMoveRequest` refuses primary and orphaned images.
//!
//! As the stock daemon's, a deleted image goes to the RBD trash first ([`trash_move`],
//! source `MIRRORING`, kept `rbd_mirroring_delete_delay`), and is removed from there once
//! that delay has passed ([`trash_purge`]).

use std::collections::BTreeMap;

use rbd_types::cls_rbd::{
    id_object_name, MirrorImageState, TrashImageSource, TrashImageSpec, TrashImageState,
};
use rbd_types::encoding::UTime;
use rbd_types::{MirrorSnapshotState, ProtectionStatus, SnapshotNamespace};

use crate::cls;
use crate::error::Result;
use crate::local::image::LocalImage;
use crate::PeerContext;
use rbd_types::cls_rbd::{MirrorImageMode, SnapshotInfo};

/// What the local copy of an image that stopped being mirrored from a peer looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRole {
    /// The local image id.
    pub image_id: String,
    /// Whether librbd reports the local image primary (`rbd_mirror_image_get_info`).
    pub primary: bool,
    /// The mirror uuid of the primary the local image follows, when it follows one: the
    /// newest journal tag's owner (journal mode) or the newest mirror snapshot's
    /// `primary_mirror_uuid` when that snapshot is non-primary and not demoted (snapshot
    /// mode).
    pub following: Option<String>,
}

/// What to do with the local copy of an image the peer no longer mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// There is no local image with that global id: nothing to do.
    Absent,
    /// The local image is primary (promoted here): never deleted.
    KeepPrimary,
    /// The local image is non-primary but does not follow this peer (demoted, orphaned,
    /// linked to another peer, or not synced yet): not ours to delete.
    KeepNotLinked {
        /// Whom it follows, if anyone.
        following: Option<String>,
    },
    /// Non-primary and linked to this peer: delete it.
    Delete,
}

/// The decision, from the local image's role (`None`: no local image) and the mirror uuid of
/// the peer that stopped mirroring the image.
pub fn decide(local: Option<&LocalRole>, remote_mirror_uuid: &str) -> Disposition {
    match local {
        None => Disposition::Absent,
        Some(l) if l.primary => Disposition::KeepPrimary,
        Some(l) if !remote_mirror_uuid.is_empty() && l.following.as_deref() == Some(remote_mirror_uuid) => {
            Disposition::Delete
        }
        Some(l) => Disposition::KeepNotLinked { following: l.following.clone() },
    }
}

/// Whom a snapshot-mode image follows: the newest mirror snapshot, when it is non-primary and
/// not demoted, names the primary's mirror uuid.
pub fn snapshot_follows(snaps: &[SnapshotInfo]) -> Option<String> {
    snaps
        .iter()
        .rev()
        .find_map(|s| match &s.snapshot_namespace {
            SnapshotNamespace::Mirror(m) => Some(m),
            _ => None,
        })
        .filter(|m| m.state == MirrorSnapshotState::NonPrimary)
        .map(|m| m.primary_mirror_uuid.clone())
}

/// The role of the local image with global id `global_id`, `None` when the local pool has
/// none.
pub async fn local_role(ctx: &PeerContext, global_id: &str) -> Result<Option<LocalRole>> {
    let io = &ctx.local_io;
    let Some(image_id) = cls::mirror_image_get_image_id(io, global_id).await? else {
        return Ok(None);
    };
    let mode = cls::mirror_image_get(io, &image_id).await?.map(|m| m.mode);
    let primary = match crate::local::is_primary(io, &image_id).await {
        Ok(p) => p,
        // Listed in the mirroring directory but the image itself is gone.
        Err(crate::ReplayError::Rados(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let following = match mode {
        Some(MirrorImageMode::Snapshot) => snapshot_follows(&cls::snapshots(io, &image_id).await?),
        Some(MirrorImageMode::Journal) => crate::local::local_tag_owner(io, &image_id).await?,
        _ => None,
    };
    Ok(Some(LocalRole { image_id, primary, following }))
}

/// A local image the image deleter moved to the RBD trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trashed {
    /// Its image id (its key in the trash).
    pub image_id: String,
    /// From when it may be removed for good: the move plus `rbd_mirroring_delete_delay`.
    pub deferment_end_time: std::time::SystemTime,
}

/// Moves local image `local_image_id` (non-primary: the caller checked) to the RBD trash and
/// logs `reason`, as the stock daemon's image deleter does (`TrashMoveRequest`): its
/// mirroring record marked disabling, a trash entry of source `MIRRORING` whose deferment
/// ends `rbd_mirroring_delete_delay` (global, pool or image option) from now, its name
/// released (`rbd_id.<name>`, the directory entry), then its mirroring record removed. Its
/// data and snapshots stay until [`trash_purge`]. Each step tolerates having been done
/// before, so a move interrupted by a restart is finished by the next one. `None`: the image
/// is gone (not found, not in the trash either).
pub async fn trash_move(ctx: &PeerContext, local_image_id: &str, reason: &str) -> Result<Option<Trashed>> {
    let io = &ctx.local_io;
    // librbd finds the name of an image already in the trash too.
    let name = match io.image_name(local_image_id).await {
        Ok(name) => name,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if let Some(mut record) = cls::mirror_image_get(io, local_image_id).await? {
        if record.state != MirrorImageState::Disabling {
            record.state = MirrorImageState::Disabling;
            cls::mirror_image_set(io, local_image_id, &record).await?;
        }
    }
    let delay = crate::local::image_config(ctx, local_image_id).await?.rbd_mirroring_delete_delay;
    let now = std::time::SystemTime::now();
    let spec = TrashImageSpec {
        source: TrashImageSource::Mirroring,
        name: name.clone(),
        deletion_time: UTime::from_system_time(now),
        deferment_end_time: UTime::from_system_time(now + delay),
        state: TrashImageState::Normal,
    };
    tracing::info!(image = %name, %local_image_id, reason, delete_delay_s = delay.as_secs(),
        "moving the local image to the trash");
    let added = cls::trash_add(io, local_image_id, &spec).await?;
    if !added {
        tracing::info!(image = %name, %local_image_id, "already in the trash: finishing an earlier move");
    }
    match io.remove(&id_object_name(&name)).await {
        Err(e) if !e.is_not_found() => return Err(e.into()),
        _ => {}
    }
    cls::dir_remove_image(io, &name, local_image_id).await?;
    cls::mirror_image_remove(io, local_image_id).await?;
    let deferment_end_time = match cls::trash_list(io).await?.remove(local_image_id) {
        Some(spec) => spec.deferment_end_time.to_system_time(),
        None => return Ok(None),
    };
    tracing::info!(image = %name, %local_image_id, "local image moved to the trash");
    Ok(Some(Trashed { image_id: local_image_id.to_owned(), deferment_end_time }))
}

/// The images the image deleter moved to the trash (source `MIRRORING`) and that are neither
/// being moved nor restored: image id → the end of their deferment.
pub async fn trashed_images(ctx: &PeerContext) -> Result<BTreeMap<String, std::time::SystemTime>> {
    Ok(cls::trash_list(&ctx.local_io)
        .await?
        .into_iter()
        .filter(|(_, spec)| {
            spec.source == TrashImageSource::Mirroring
                && matches!(spec.state, TrashImageState::Normal | TrashImageState::Removing)
        })
        .map(|(id, spec)| (id, spec.deferment_end_time.to_system_time()))
        .collect())
}

/// Removes trashed image `image_id` for good, as the stock daemon's `TrashRemoveRequest`
/// does: its snapshots (user ones unprotected first), then the image and its trash entry
/// (`rbd_trash_remove`). An image no longer in the trash counts as removed.
pub async fn trash_purge(ctx: &PeerContext, image_id: &str) -> Result<()> {
    let io = &ctx.local_io;
    tracing::info!(%image_id, "removing the trashed local image");
    // librbd removes no image that still has snapshots.
    match LocalImage::open(&ctx.local, &ctx.pool, &ctx.namespace, image_id).await {
        Ok(local) => {
            for snap in local.snapshots().await? {
                if snap.snapshot_namespace == SnapshotNamespace::User {
                    let _ = local.snap_set_protection(&snap.name, ProtectionStatus::Unprotected).await;
                }
                local.snap_remove(&snap.name).await?;
            }
        }
        Err(crate::ReplayError::Rados(e)) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    // Watchers of the header (a closing librbd handle) can hold the removal off briefly.
    let mut attempts = 0;
    loop {
        match io.trash_remove(image_id, true).await {
            Ok(()) => break,
            Err(e) if e.is_not_found() => break,
            Err(e) if e.errno() == Some(libc::EBUSY) && attempts < 10 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(%image_id, "trashed local image removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use rbd_types::MirrorSnapshotNamespace;

    use super::*;

    fn role(primary: bool, following: Option<&str>) -> LocalRole {
        LocalRole { image_id: "1234".into(), primary, following: following.map(str::to_owned) }
    }

    #[test]
    fn only_non_primary_images_linked_to_the_peer_are_deleted() {
        assert_eq!(decide(None, "UR"), Disposition::Absent);
        assert_eq!(decide(Some(&role(false, Some("UR"))), "UR"), Disposition::Delete);
        // Promoted here: kept, whatever its journal says.
        assert_eq!(decide(Some(&role(true, Some("UR"))), "UR"), Disposition::KeepPrimary);
        assert_eq!(decide(Some(&role(true, Some(""))), "UR"), Disposition::KeepPrimary);
        // Demoted, following another peer, or not synced yet: not ours.
        for following in [Some("<orphan>"), Some("other"), Some(""), None] {
            assert_eq!(
                decide(Some(&role(false, following)), "UR"),
                Disposition::KeepNotLinked { following: following.map(str::to_owned) }
            );
        }
        // An unknown peer uuid links nothing.
        assert_eq!(
            decide(Some(&role(false, Some(""))), ""),
            Disposition::KeepNotLinked { following: Some(String::new()) }
        );
    }

    fn snap(id: u64, namespace: SnapshotNamespace) -> SnapshotInfo {
        SnapshotInfo { id, snapshot_namespace: namespace, name: format!("s{id}"), ..Default::default() }
    }

    fn mirror(state: MirrorSnapshotState, primary_mirror_uuid: &str) -> SnapshotNamespace {
        SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
            state,
            primary_mirror_uuid: primary_mirror_uuid.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_snapshot_image_follows_its_newest_non_primary_snapshot() {
        use MirrorSnapshotState::*;
        assert_eq!(snapshot_follows(&[]), None);
        assert_eq!(snapshot_follows(&[snap(1, SnapshotNamespace::User)]), None);
        let synced = [snap(1, mirror(NonPrimary, "UR")), snap(2, SnapshotNamespace::User)];
        assert_eq!(snapshot_follows(&synced).as_deref(), Some("UR"));
        // Demoted (on either side) or promoted later: follows nobody.
        for newest in [NonPrimaryDemoted, Primary, PrimaryDemoted] {
            let snaps = [snap(1, mirror(NonPrimary, "UR")), snap(2, mirror(newest, "UR"))];
            assert_eq!(snapshot_follows(&snaps), None, "{newest:?}");
        }
        // The orphan snapshot of a forced promotion names no primary.
        assert_eq!(snapshot_follows(&[snap(1, mirror(NonPrimary, ""))]).as_deref(), Some(""));
    }
}
