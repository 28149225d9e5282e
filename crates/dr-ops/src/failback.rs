//! `failback`: after a forced failover to the peer and this site's return, make this site
//! the primary again with the peer's data. Run at the old primary's site (this one), with
//! the replication daemon running here: it is the daemon that resyncs the copies here.
//!
//! Per image, each step is decided from what is found, so a re-run continues where the last
//! one stopped:
//!
//! | here | peer | step |
//! |---|---|---|
//! | primary | primary | split brain: demote here, request a resync here (`rbd mirror image resync`), wait until resynced, then switch |
//! | non-primary (or none yet) | primary | wait until the copy here is replaying; when its status says split-brain, request the resync first; then switch |
//! | non-primary | non-primary | (switch interrupted after the peer's demotion) switch |
//! | primary | non-primary | done already |
//!
//! "Switch" is [`failover_planned`] of the images that got there: demote on the peer, wait
//! until replayed up to the demotion, promote here. Images run in parallel up to a bound;
//! after the first failure no further image is started and the switch is not started.
//!
//! In snapshot mode, a split brain needs no resync when the peer was promoted by
//! `failover --force`, which recorded the snapshot of this site its promotion started from
//! ([`crate::promotion`]), and that snapshot is still here and still linked to the peer (the
//! peer's daemon had synced nothing newer). After the demotion here, the image here is
//! rolled back to that snapshot (object by object, as `rbd snap rollback`) and linked to the
//! peer's promotion snapshot (same content) by a complete non-primary mirror snapshot, as if
//! synced from there; the daemon here then syncs only what changed on the peer since. Bytes
//! copied are then those that sync reads: the objects the peer's fast-diff marks written
//! between its promotion snapshot and the snapshot synced.
//!
//! Otherwise (journal mode, or no common snapshot) a resync copies the whole image from the
//! peer (the daemon deletes the copy here and syncs a new one). Bytes copied are those the
//! resynced copy holds once its sync completed: the allocated extents of the new image here
//! (`rbd diff` of the whole image), for every copy replaced while this run waited.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use image_replayer::LocalImage;
use rados_ffi::rbd::{Image, SnapInfo};
use rados_ffi::Rados;
use rbd_types::cls_rbd::MirrorImageMode;
use rbd_types::{MirrorSnapshotNamespace, MirrorSnapshotState, SnapshotNamespace};
use serde::Serialize;

use crate::consistent::{self, newest_complete_copy};
use crate::error::{DrError, Result};
use crate::failover::{failover_planned, FailoverOptions, Outcome};
use crate::progress::{self, Progress};
use crate::promotion::{self, PromotionRecord};
use crate::sites::{self, MirroredImage, PoolPair, Role};

/// What `failback` works on (`sync_timeout`: the wait for one image's resync, and then for
/// its replay up to the peer's demotion).
pub type FailbackOptions = crate::sites::Scope;

/// How one image's failback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailbackOutcome {
    /// Resynced (if it had to be) and switched back: primary here now.
    FailedBack,
    /// Already primary here and non-primary on the peer.
    AlreadyFailedBack,
    /// `--dry-run`: the steps it would take are listed.
    WouldFailBack,
    /// A step failed (see the error).
    Failed,
    /// Not started, or stopped before the switch: another image failed.
    NotStarted,
}

/// One image's failback.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFailback {
    /// Image name.
    pub image: String,
    /// Global image id.
    pub global_id: String,
    /// `journal` or `snapshot`.
    pub mode: &'static str,
    /// What happened.
    pub outcome: FailbackOutcome,
    /// Both sites were primary when found.
    pub split_brain: bool,
    /// The steps taken (or, with `--dry-run`, that would be).
    pub steps: Vec<String>,
    /// Bytes the resync copied here (allocated bytes of the resynced copy); `None` when no
    /// resync was waited for by this run.
    pub bytes_copied: Option<u64>,
    /// Seconds this image took.
    pub seconds: f64,
    /// Role here at the end.
    pub local_role: Role,
    /// Role on the peer at the end.
    pub peer_role: Role,
    /// Local `rbd mirror image status` at the end.
    pub local_status: Option<String>,
    /// What failed.
    pub error: Option<String>,
}

/// Everything `failback` did.
#[derive(Debug, Serialize)]
pub struct FailbackReport {
    /// The pool.
    pub pool: String,
    /// The peer that is primary now (from the pool's peer record).
    pub peer_site: String,
    /// `--dry-run`.
    pub dry_run: bool,
    /// One entry per image.
    pub images: Vec<ImageFailback>,
    /// Images failed or not finished.
    pub failed: usize,
    /// Sum of the images' `bytes_copied`.
    pub bytes_copied: u64,
    /// Total seconds.
    pub seconds: f64,
    /// How to go on after a failure.
    pub next_step: Option<String>,
}

/// Fails the selected images of `opts.pool` back from the pool's peer to `local` (see the
/// module documentation). `progress.step(image, message)` is told of each step and of waits.
pub async fn failback(
    local: &Rados,
    opts: &FailbackOptions,
    progress: &dyn Progress,
) -> Result<FailbackReport> {
    let start = Instant::now();
    let pair = sites::connect_pool(local, &opts.pool, opts.connect_timeout).await?;
    let images = sites::mirrored_images(&pair, &opts.images).await?;
    let stop = AtomicBool::new(false);
    let mut results: Vec<ImageFailback> = progress::each(
        images,
        opts.concurrency,
        progress,
        |i| i.name.clone(),
        |image| prepare_image(local, &pair, image, opts, &stop, progress),
    )
    .await;
    results.sort_by(|a, b| a.image.cmp(&b.image));
    let to_switch: Vec<String> = results
        .iter()
        .filter(|r| r.outcome == FailbackOutcome::NotStarted && r.error.is_none() && !r.steps.is_empty())
        .map(|r| r.image.clone())
        .collect();
    if !stop.load(Ordering::SeqCst) && !to_switch.is_empty() && !opts.dry_run {
        let switch = FailoverOptions { images: to_switch, dry_run: false, ..opts.clone() };
        match failover_planned(local, &switch, progress).await {
            Ok(report) => {
                for f in report.images {
                    let Some(r) = results.iter_mut().find(|r| r.image == f.image) else { continue };
                    r.outcome = match f.outcome {
                        Outcome::FailedOver | Outcome::AlreadyFailedOver => FailbackOutcome::FailedBack,
                        Outcome::WouldFailOver | Outcome::NotStarted => FailbackOutcome::NotStarted,
                        Outcome::Failed => FailbackOutcome::Failed,
                    };
                    r.error = f.error;
                    r.seconds += f.seconds;
                    (r.local_role, r.peer_role, r.local_status) = (f.local_role, f.peer_role, f.local_status);
                }
            }
            Err(e) => {
                for r in results.iter_mut().filter(|r| r.outcome == FailbackOutcome::NotStarted) {
                    r.outcome = FailbackOutcome::Failed;
                    r.error = Some(format!("planned switch: {e}"));
                }
            }
        }
    }
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, FailbackOutcome::Failed | FailbackOutcome::NotStarted))
        .count();
    let next_step = (failed > 0).then(|| {
        format!(
            "fix the error, then run the same failback command again here: images primary here are \
             skipped, those being resynced are waited for (the replication daemon must run here), \
             demoted ones on {} are waited for and promoted",
            pair.peer_site
        )
    });
    Ok(FailbackReport {
        pool: pair.pool.clone(),
        peer_site: pair.peer_site.clone(),
        dry_run: opts.dry_run,
        bytes_copied: results.iter().filter_map(|r| r.bytes_copied).sum(),
        images: results,
        failed,
        seconds: start.elapsed().as_secs_f64(),
        next_step,
    })
}

/// Brings one image to "ready to switch" (outcome `NotStarted` with steps listed and no
/// error), or to its final outcome.
async fn prepare_image(
    local: &Rados,
    pair: &PoolPair,
    image: MirroredImage,
    opts: &FailbackOptions,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> ImageFailback {
    let start = Instant::now();
    let mut out = ImageFailback {
        image: image.name.clone(),
        global_id: image.global_id.clone(),
        mode: image.mode.as_str(),
        outcome: FailbackOutcome::NotStarted,
        split_brain: false,
        steps: Vec::new(),
        bytes_copied: None,
        seconds: 0.0,
        local_role: Role::Missing,
        peer_role: Role::Missing,
        local_status: None,
        error: None,
    };
    if !stop.load(Ordering::SeqCst) {
        match prepare(local, pair, &image, opts, &mut out, progress).await {
            Ok(Some(outcome)) => out.outcome = outcome,
            Ok(None) => {}
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                progress.step(&image.name, &format!("FAILED: {e}"));
                out.outcome = FailbackOutcome::Failed;
                out.error = Some(e.to_string());
            }
        }
    }
    // The roles as they are now, whatever happened (the local id may be a new one).
    let local_id = local_id(pair, &image.global_id).await.ok().flatten();
    (out.local_role, out.peer_role, out.local_status) =
        sites::roles_now(pair, local_id.as_deref(), image.remote_id.as_deref()).await;
    out.seconds = start.elapsed().as_secs_f64();
    out
}

/// The steps before the switch. `Some(outcome)`: final; `None`: ready to switch.
async fn prepare(
    local: &Rados,
    pair: &PoolPair,
    image: &MirroredImage,
    opts: &FailbackOptions,
    out: &mut ImageFailback,
    progress: &dyn Progress,
) -> Result<Option<FailbackOutcome>> {
    let spec = format!("{}/{}", pair.pool, image.name);
    let fail = |reason: String| DrError::Image { image: spec.clone(), reason };
    let local_role = sites::role(&pair.conn.local_io, image.local_id.as_deref()).await?;
    let peer_role = sites::role(&pair.conn.remote_io, image.remote_id.as_deref()).await?;
    const SWITCH: &str = "switch: demote on the peer, wait until replayed up to the demotion, promote here";
    let Some((demote, wait)) = plan(local_role, peer_role, &pair.peer_site).map_err(fail)? else {
        return Ok(Some(FailbackOutcome::AlreadyFailedBack));
    };
    out.split_brain = demote;
    // Snapshot mode: the snapshot both sites hold, to sync from instead of a full resync.
    let common = match (&image.mode, &image.local_id, &image.remote_id) {
        (MirrorImageMode::Snapshot, Some(here), Some(peer)) if wait => {
            match promotion::read(&pair.conn.remote_io, &image.global_id).await? {
                Some(record) => {
                    let here_snaps =
                        Image::open_by_id(&pair.conn.local_io, here, None).await?.snapshots().await?;
                    let peer_snaps =
                        Image::open_by_id(&pair.conn.remote_io, peer, None).await?.snapshots().await?;
                    let here_ids = (pair.conn.local_mirror_uuid.as_str(), pair.peer_uuid.as_str());
                    common_snapshot(&here_snaps, &peer_snaps, &record, here_ids)
                }
                None => None,
            }
        }
        _ => None,
    };
    if demote {
        out.steps.push("split brain: demote here".into());
    }
    match &common {
        Some(c) => {
            out.steps.push(format!(
                "roll back here to mirror snapshot {} (id {}), which {}'s promotion snapshot {} holds",
                c.local_name, c.local_id, pair.peer_site, c.peer_id
            ));
            out.steps.push(format!(
                "link here to {}'s snapshot {}: the daemon here syncs only what changed since",
                pair.peer_site, c.peer_id
            ));
        }
        None if demote => out.steps.push("request a resync here".into()),
        None => {}
    }
    if common.is_some() {
        out.steps.push(format!("wait until synced from {} past that snapshot and replaying", pair.peer_site));
    } else if wait {
        out.steps.push(format!("wait until resynced from {} and replaying", pair.peer_site));
    }
    out.steps.push(SWITCH.replace("the peer", &pair.peer_site));
    if opts.dry_run {
        return Ok(Some(FailbackOutcome::WouldFailBack));
    }
    let mut resync_from = None;
    if demote {
        let local_name = pair.conn.local_io.image_name(image.local_id.as_deref().unwrap_or_default()).await?;
        progress.step(&image.name, "both sites primary (split brain): demoting here");
        pair.conn.local_io.mirror_image_demote(&local_name).await?;
        if common.is_none() {
            progress.step(&image.name, &format!("requesting a resync from {}", pair.peer_site));
            pair.conn.local_io.mirror_image_resync(&local_name).await?;
            resync_from = image.local_id.clone();
        }
    }
    if let (Some(c), Some(here)) = (&common, &image.local_id) {
        progress.step(&image.name, &format!("rolling back to the common snapshot {}", c.local_id));
        link_to_common(local, pair, here, &image.global_id, c).await?;
        promotion::remove(&pair.conn.remote_io, &image.global_id).await?;
        out.bytes_copied = Some(wait_synced_past(pair, image, here, c, opts.sync_timeout, progress).await?);
    } else if wait {
        out.bytes_copied = wait_resynced(pair, image, resync_from, opts.sync_timeout, progress).await?;
    }
    Ok(None)
}

/// A mirror snapshot here whose content a snapshot of the peer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommonSnapshot {
    /// The primary mirror snapshot here: its name.
    local_name: String,
    /// Its id.
    local_id: u64,
    /// The peer's snapshot with the same content (its promotion snapshot).
    peer_id: u64,
}

/// For an image primary here, or demoted here without the peer having synced the demotion
/// (the two sides of a split brain), whose peer recorded its forced promotion: the snapshot
/// here it started from, when it is still here, complete, and still linked to the peer
/// (`here_ids`: this pool's mirror uuid and the peer's uuid here; a snapshot the peer synced
/// past is unlinked by its daemon, so a promotion from a newer one than recorded is caught),
/// and the peer still has its promotion snapshot. `None` otherwise.
fn common_snapshot(
    here: &[SnapInfo],
    peer: &[SnapInfo],
    record: &PromotionRecord,
    (local_mirror_uuid, peer_uuid): (&str, &str),
) -> Option<CommonSnapshot> {
    let mirror = |s: &SnapInfo| match &s.namespace {
        SnapshotNamespace::Mirror(m) => Some(m.clone()),
        _ => None,
    };
    let (newest_id, newest) =
        here.iter().filter_map(|s| Some((s.id, mirror(s)?))).max_by_key(|(id, _)| *id)?;
    let peer_synced = |id: u64| {
        peer.iter().filter_map(mirror).any(|m| {
            m.state == MirrorSnapshotState::NonPrimaryDemoted
                && m.complete
                && m.primary_mirror_uuid == local_mirror_uuid
                && m.primary_snap_id == id
        })
    };
    match newest.state {
        MirrorSnapshotState::Primary => {}
        // The peer synced the demotion: a planned failover, no split brain.
        MirrorSnapshotState::PrimaryDemoted if !peer_synced(newest_id) => {}
        _ => return None,
    }
    if record.primary_mirror_uuid != local_mirror_uuid {
        return None;
    }
    let snap = here.iter().find(|s| s.id == record.primary_snap_id)?;
    let m = mirror(snap)?;
    let usable = matches!(m.state, MirrorSnapshotState::Primary | MirrorSnapshotState::PrimaryDemoted)
        && m.complete
        && m.mirror_peer_uuids.contains(peer_uuid);
    let promoted = peer.iter().any(|s| {
        s.id == record.promoted_snap_id
            && matches!(&s.namespace, SnapshotNamespace::Mirror(p) if p.state == MirrorSnapshotState::Primary)
    });
    (usable && promoted).then(|| CommonSnapshot {
        local_name: snap.name.clone(),
        local_id: snap.id,
        peer_id: record.promoted_snap_id,
    })
}

/// Rolls image `local_id` here (demoted: non-primary) back to the common snapshot and links it
/// to the peer's copy with a complete non-primary mirror snapshot (librbd's name for one),
/// from which the daemon here syncs on. Re-running it is harmless.
async fn link_to_common(
    local: &Rados,
    pair: &PoolPair,
    local_id: &str,
    global_id: &str,
    common: &CommonSnapshot,
) -> Result<()> {
    let image = LocalImage::open(local, &pair.pool, "", local_id).await?;
    image.snap_rollback(&common.local_name).await?;
    let ns = SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
        state: MirrorSnapshotState::NonPrimary,
        complete: true,
        mirror_peer_uuids: BTreeSet::new(),
        primary_mirror_uuid: pair.conn.remote_mirror_uuid.clone(),
        primary_snap_id: common.peer_id,
        last_copied_object_number: image.layout().object_count(image.size()),
        snap_seqs: BTreeMap::new(),
    });
    image.snap_create(&image_replayer::non_primary_snapshot_name(global_id), &ns).await?;
    Ok(())
}

/// Waits until the image here (linked to the peer's snapshot `common.peer_id`) has synced a
/// newer peer snapshot and replays; returns the bytes that sync read.
async fn wait_synced_past(
    pair: &PoolPair,
    image: &MirroredImage,
    local_id: &str,
    common: &CommonSnapshot,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<u64> {
    let spec = format!("{}/{}", pair.pool, image.name);
    let io = &pair.conn.local_io;
    progress.step(
        &image.name,
        &format!("waiting until synced from {} past its snapshot {}", pair.peer_site, common.peer_id),
    );
    let synced = consistent::wait_until(&spec, timeout, progress, &image.name, || async move {
        let Some((state, description)) = sites::local_status(io, local_id).await? else {
            return Ok((None, "no status here (is the replication daemon running here?)".to_owned()));
        };
        let snaps = Image::open_by_id(io, local_id, None).await?.snapshots().await?;
        match newest_complete_copy(&snaps) {
            Some((_, peer_snap)) if peer_snap > common.peer_id && state == "up+replaying" => {
                Ok((Some(peer_snap), String::new()))
            }
            _ => Ok((None, format!("{state}, {description}"))),
        }
    })
    .await?;
    let peer_id = image.remote_id.as_deref().unwrap_or_default();
    // When the peer's maps cannot say (or its snapshots went meanwhile): the data the copy
    // here holds, at most what was read.
    let read =
        image_replayer::bytes_to_copy(&pair.conn.remote_io, peer_id, Some(common.peer_id), synced).await;
    let bytes = match read.ok().flatten() {
        Some(bytes) => bytes,
        None => allocated_bytes(io, local_id).await?,
    };
    progress.step(&image.name, &format!("synced from the common snapshot: {bytes} bytes copied"));
    Ok(bytes)
}

/// What the roles found call for (the module's table): `None` when already failed back,
/// else whether to demote here (and request the resync) and whether to wait for the copy
/// here to replay; an error when nothing can be done.
fn plan(here: Role, peer: Role, peer_site: &str) -> Result<Option<(bool, bool)>, String> {
    match (here, peer) {
        (Role::Primary, Role::NonPrimary) => Ok(None),
        (Role::Primary, Role::Primary) => Ok(Some((true, true))),
        (Role::NonPrimary | Role::Missing, Role::Primary) => Ok(Some((false, true))),
        (Role::NonPrimary, Role::NonPrimary) => Ok(Some((false, false))),
        (_, Role::Missing) => Err(format!("no image on {peer_site}")),
        (Role::Missing, Role::NonPrimary) => {
            Err(format!("no image here and not primary on {peer_site}: nothing to sync from"))
        }
    }
}

/// The id here of the image `global_id`, if there is one.
async fn local_id(pair: &PoolPair, global_id: &str) -> Result<Option<String>> {
    Ok(sites::image_records(&pair.conn.local_io).await?.remove(global_id).map(|(id, _, _)| id))
}

/// Waits until the copy here replays from the peer: its status is `up+replaying` (snapshot
/// mode: with a complete non-primary snapshot), on an image other than `resynced_id` (the
/// one a resync was requested on). A split-brain status on the way gets the resync
/// requested. Returns the allocated bytes of the copy when it was replaced while waiting
/// (a resync requested by this run or an earlier one).
async fn wait_resynced(
    pair: &PoolPair,
    image: &MirroredImage,
    resynced_id: Option<String>,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Option<u64>> {
    let spec = format!("{}/{}", pair.pool, image.name);
    progress.step(&image.name, &format!("waiting until resynced from {}", pair.peer_site));
    let io = &pair.conn.local_io;
    let found_id = local_id(pair, &image.global_id).await?;
    // The image the resync was requested on, once it was.
    let requested = std::sync::Mutex::new(resynced_id);
    let requested_on = || requested.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let id = consistent::wait_until(&spec, timeout, progress, &image.name, || {
        let (requested, resynced_id) = (&requested, requested_on());
        async move {
            let Some(id) = local_id(pair, &image.global_id).await? else {
                return Ok((None, "no image here yet (the daemon is creating it)".to_owned()));
            };
            if resynced_id.as_deref() == Some(id.as_str()) {
                return Ok((None, format!("image {id} here not replaced yet (resync requested)")));
            }
            let Some((state, description)) = sites::local_status(io, &id).await? else {
                return Ok((None, "no status here (is the replication daemon running here?)".to_owned()));
            };
            if description.contains("split-brain") && resynced_id.is_none() {
                let name = io.image_name(&id).await?;
                progress.step(&image.name, &format!("{state}, {description}: requesting a resync"));
                io.mirror_image_resync(&name).await?;
                *requested.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
                return Ok((None, "resync requested".to_owned()));
            }
            if state != "up+replaying" {
                return Ok((None, format!("{state}, {description}")));
            }
            if image.mode == MirrorImageMode::Snapshot {
                let snaps = Image::open_by_id(io, &id, None).await?.snapshots().await?;
                if newest_complete_copy(&snaps).is_none() {
                    return Ok((None, format!("{state}, no mirror snapshot synced yet")));
                }
            }
            Ok((Some(id), String::new()))
        }
    })
    .await?;
    if requested_on().is_none() && found_id.as_deref() == Some(id.as_str()) {
        progress.step(&image.name, "replaying");
        return Ok(None);
    }
    // Snapshot mode: what the full sync read from the peer (as for a sync from a common
    // snapshot); journal mode: the data the new copy holds.
    let synced = match image.mode {
        MirrorImageMode::Snapshot => {
            newest_complete_copy(&Image::open_by_id(io, &id, None).await?.snapshots().await?).map(|(_, s)| s)
        }
        MirrorImageMode::Journal => None,
    };
    let read = match (synced, image.remote_id.as_deref()) {
        (Some(end), Some(peer_id)) => {
            image_replayer::bytes_to_copy(&pair.conn.remote_io, peer_id, None, end).await.ok().flatten()
        }
        _ => None,
    };
    let bytes = match read {
        Some(bytes) => bytes,
        None => allocated_bytes(io, &id).await?,
    };
    progress.step(&image.name, &format!("resynced: {bytes} bytes copied"));
    Ok(Some(bytes))
}

/// Bytes of image `id` that are allocated (`rbd diff` of the whole image at its head).
async fn allocated_bytes(io: &rados_ffi::IoCtx, id: &str) -> Result<u64> {
    let image = Image::open_by_id(io, id, None).await?;
    let size = image.stat().await?.size;
    let extents = image.diff_iterate(None, 0, size, false, false).await?;
    Ok(extents.iter().filter(|e| e.exists).map(|e| e.len).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: &str = "uuid-of-site-a";
    const PEER: &str = "uuid-of-site-b-here";

    fn mirror(id: u64, state: MirrorSnapshotState, peers: &[&str], primary: (&str, u64)) -> SnapInfo {
        SnapInfo {
            id,
            name: format!(".mirror.{id}"),
            size: 64 << 20,
            namespace: SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
                state,
                complete: true,
                mirror_peer_uuids: peers.iter().map(|p| p.to_string()).collect(),
                primary_mirror_uuid: primary.0.to_owned(),
                primary_snap_id: primary.1,
                ..Default::default()
            }),
            timestamp: None,
        }
    }

    #[test]
    fn the_common_snapshot_is_the_recorded_one_while_still_linked_to_the_peer() {
        use MirrorSnapshotState::{NonPrimaryDemoted, Primary, PrimaryDemoted};
        // Site-a's primary snapshots 4 (synced by site-b, so unlinked), 6 (synced: still
        // linked as the next sync's start) and 9 (taken after site-b's promotion, 31).
        let mut here = vec![mirror(4, Primary, &[], ("", 0)), mirror(6, Primary, &[PEER], ("", 0))];
        here.push(mirror(9, Primary, &[PEER], ("", 0)));
        let peer = vec![mirror(31, Primary, &[HERE], ("", 0))];
        let record =
            PromotionRecord { primary_mirror_uuid: HERE.into(), primary_snap_id: 6, promoted_snap_id: 31 };
        let ids = (HERE, PEER);
        let c = common_snapshot(&here, &peer, &record, ids).expect("common");
        assert_eq!((c.local_id, c.peer_id, c.local_name.as_str()), (6, 31, ".mirror.6"));

        // Demoted here since (a split brain still: the peer never synced the demotion).
        here.push(mirror(12, PrimaryDemoted, &[PEER], ("", 0)));
        assert_eq!(common_snapshot(&here, &peer, &record, ids).map(|c| c.local_id), Some(6));
        // The peer synced the demotion: a planned failover, nothing to roll back.
        let mut synced = peer.clone();
        synced.push(mirror(33, NonPrimaryDemoted, &[], (HERE, 12)));
        assert_eq!(common_snapshot(&here, &synced, &record, ids), None);
        // The copy here is the peer's already (linked or resynced): nothing to do.
        let mut linked = here.clone();
        linked.push(mirror(13, MirrorSnapshotState::NonPrimary, &[], ("uuid-of-site-b", 31)));
        assert_eq!(common_snapshot(&linked, &peer, &record, ids), None);
        // Recorded from snapshot 4, which the peer had synced past (unlinked): not trusted.
        let older = PromotionRecord { primary_snap_id: 4, ..record.clone() };
        assert_eq!(common_snapshot(&here, &peer, &older, ids), None);
        // The snapshot here is gone, the promotion snapshot is gone, another site's record.
        let pruned: Vec<SnapInfo> = here.iter().filter(|s| s.id != 6).cloned().collect();
        assert_eq!(common_snapshot(&pruned, &peer, &record, ids), None);
        assert_eq!(common_snapshot(&here, &[], &record, ids), None);
        assert_eq!(common_snapshot(&here, &peer, &record, ("uuid-of-site-c", PEER)), None);
    }

    #[test]
    fn plan_follows_the_roles_found() {
        use Role::{Missing, NonPrimary, Primary};
        let p = |here, peer| plan(here, peer, "site-b");
        assert_eq!(p(Primary, NonPrimary), Ok(None));
        assert_eq!(p(Primary, Primary), Ok(Some((true, true))), "split brain: demote, resync, wait");
        assert_eq!(p(NonPrimary, Primary), Ok(Some((false, true))), "demoted earlier: wait");
        assert_eq!(p(Missing, Primary), Ok(Some((false, true))), "being resynced: wait");
        assert_eq!(p(NonPrimary, NonPrimary), Ok(Some((false, false))), "switch interrupted: switch");
        for (here, peer) in
            [(Primary, Missing), (NonPrimary, Missing), (Missing, Missing), (Missing, NonPrimary)]
        {
            let e = p(here, peer).expect_err("nothing to do");
            assert!(e.contains("site-b"), "{e}");
        }
    }
}
