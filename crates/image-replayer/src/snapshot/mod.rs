//! Snapshot-mode replay (ceph-formats.md §4.5, §4.6, §6.3, §6.4): the local non-primary
//! image follows the primary's mirror snapshots. Each pass lists both images' snapshots,
//! asks [`snapshot_differ::planner`] for the next step (prune a local non-primary snapshot,
//! unlink our peer from a remote snapshot, sync one snapshot, idle, stop) and performs it.
//!
//! A sync reproduces the remote user snapshots between the start and end mirror snapshots
//! (data copied up to each, then the local snapshot taken), creates the local non-primary
//! mirror snapshot (incomplete), copies the data changed up to the end snapshot into HEAD
//! with a snapshot context that leaves the new snapshot out (so it ends up holding the
//! copied data), persisting the copy progress in the snapshot as it goes (a restart resumes
//! from there), then completes the snapshot and unlinks our peer from the remote start
//! snapshot. While idle, watches on both image headers wake the replayer within
//! milliseconds of a new snapshot.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rados_ffi::Watch;
use rbd_types::{
    features, MirrorSnapshotNamespace, MirrorSnapshotState, ProtectionStatus, SnapshotNamespace,
};
use serde_json::json;
use snapshot_differ::planner::{self, Identity, MirrorStateKind, Snap, SnapKind, Step, Stop, SyncPlan};
use tokio_util::sync::CancellationToken;

use crate::cls;
use crate::copy::{copy_image, CopyProgress, CopyRange, CopyStats, LocalSnapContext, SYNC_CONCURRENCY};
use crate::error::{ReplayError, Result};
use crate::local::image::LocalImage;
use crate::local::{CloneSource, Found, RemoteImage, IMAGE_META_PREFIX};
use crate::registry::Lag;
use crate::status::{bootstrap_step, primary_silent_for, publish, SilentStatus, StatusPublisher};
use crate::{Attempt, PeerContext};
use rbd_types::cls_rbd::{
    args, header_object_name, MirrorImageMode, MirrorImageStatusState as State, SnapshotInfo,
};

/// Longest wait between two scans without a notification: only a safety net, since both
/// headers are watched (a lost watch wakes the replayer at once) and every change that
/// matters notifies one (a new or removed snapshot, a promotion or demotion, a resync
/// request). A scan reads both images' snapshots (several RADOS operations): at 30 s, 500
/// idle images cost about 130 operations a second (issue 16's idle goal).
const IDLE_POLL: Duration = Duration::from_secs(120);
/// Wait before rescanning a remote snapshot that is still being created.
const INCOMPLETE_POLL: Duration = Duration::from_millis(500);
/// Longest time between two persisted copy-progress updates.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Runs one attempt of snapshot-mode replay of the primary `found`.
pub(crate) async fn attempt(
    ctx: &PeerContext,
    found: Found,
    cancel: &CancellationToken,
    status: &mut StatusPublisher,
) -> Result<Attempt> {
    let Found { remote, remote_primary, local_id: existing, clone } = found;
    let global_id = remote.global_id.clone();
    // A remote that is not primary has nothing for a new image, nor for one that was
    // primary here and demoted (both sides demoted, between a demotion and a promotion:
    // planning now would report a split-brain the promotion is about to resolve). A
    // non-primary local image still syncs the remote's demotion snapshot.
    if !remote_primary {
        let demoted_here = match &existing {
            None => true,
            Some(id) => {
                cls::snapshots(&ctx.local_io, id).await?.iter().rev().find_map(|s| {
                    match &s.snapshot_namespace {
                        SnapshotNamespace::Mirror(m) => Some(m.state == MirrorSnapshotState::PrimaryDemoted),
                        _ => None,
                    }
                }) == Some(true)
            }
        };
        if demoted_here {
            publish(ctx, status, State::Unknown, "remote image is non-primary").await;
            return Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval));
        }
    }
    let (local_id, created) =
        bootstrap_step(ctx, status, ensure_local_image(ctx, &remote, clone.as_ref())).await?;
    if !created && crate::local::resync_requested(&ctx.local_io, &local_id, MirrorImageMode::Snapshot).await?
    {
        return crate::local::resync(ctx, &local_id, status).await;
    }
    let peer_uuid = bootstrap_step(ctx, status, remote_peer_uuid(ctx)).await?;
    let local = LocalImage::open(&ctx.local, &ctx.pool, &ctx.namespace, &local_id).await?;
    publish(ctx, status, State::StartingReplay, "starting replay").await;
    let mut replayer = SnapshotReplayer {
        ctx,
        remote,
        local,
        peer_uuid,
        global_id,
        rates: Rates::default(),
        watches: None,
        last_status: None,
    };
    replayer.run(cancel, status).await
}

/// The local image of `remote` in snapshot mode (`local::ensure_local_image`): marked
/// with the non-primary feature bit before its mirror record says snapshot mode.
/// A clone is cloned from `clone`, the local copy of its parent snapshot.
pub(crate) async fn ensure_local_image(
    ctx: &PeerContext,
    remote: &RemoteImage,
    clone: Option<&CloneSource>,
) -> Result<(String, bool)> {
    let io = &ctx.local_io;
    crate::local::ensure_local_image(
        ctx,
        remote,
        MirrorImageMode::Snapshot,
        Default::default(),
        clone,
        |id| async move {
            let header = header_object_name(&id);
            let arg = args::set_features(features::NON_PRIMARY, features::NON_PRIMARY);
            io.exec_write(&header, "rbd", "set_features", &arg).await?;
            Ok(())
        },
    )
    .await
}

/// Whether local image `local_id`, non-primary, follows another peer of the local pool than
/// this replayer's: its newest mirror snapshot was synced from a pool whose mirror uuid a
/// peer record of the local pool carries (a peer's daemon records it there with its
/// `mirror_peer_ping`). A pool that receives from several peers runs one pool replayer per
/// peer, as stock (`Mirror::update_pool_replayers`), hence one image replayer per peer for
/// each image: only the primary's replays the image and reports its status. A mirror uuid no
/// peer record carries is not another peer's (the planner reports the unknown peer).
pub(crate) async fn follows_another_peer(ctx: &PeerContext, local_id: &str) -> Result<bool> {
    let snaps = cls::snapshots(&ctx.local_io, local_id).await?;
    let newest = snaps.into_iter().rev().find_map(|s| match s.snapshot_namespace {
        SnapshotNamespace::Mirror(m) => Some(m),
        _ => None,
    });
    let Some(primary) = newest.filter(|m| m.state.is_non_primary()).map(|m| m.primary_mirror_uuid) else {
        return Ok(false);
    };
    if primary.is_empty() || primary == ctx.remote_mirror_uuid {
        return Ok(false);
    }
    let peers = ctx.local_io.mirror_peer_sites().await?;
    Ok(peers.iter().any(|p| p.mirror_uuid == primary))
}

/// Our peer uuid in the remote pool (ceph-formats.md §4.5 "Peer identity"): the remote
/// peer record whose mirror uuid is the local pool's, else the one named after our site.
pub async fn remote_peer_uuid(ctx: &PeerContext) -> Result<String> {
    let peers = ctx.remote_peer_sites().await?;
    if let Some(p) = peers.iter().find(|p| p.mirror_uuid == ctx.local_mirror_uuid) {
        return Ok(p.uuid.clone());
    }
    let site = ctx.local.mirror_site_name().await.unwrap_or_default();
    peers.iter().find(|p| !site.is_empty() && p.site_name == site).map(|p| p.uuid.clone()).ok_or_else(|| {
        ReplayError::Peer(format!(
            "no peer of pool {} on the remote site has mirror uuid {} or site name {site:?}",
            ctx.pool, ctx.local_mirror_uuid
        ))
    })
}

/// `librbd::watch_notify::NotifyMessage{HeaderUpdatePayload}`: `ENCODE_START(2, 1)`
/// { u32 notify_op = 3 }.
fn header_update_payload() -> [u8; 10] {
    [2, 1, 4, 0, 0, 0, 3, 0, 0, 0]
}

/// Converts a cls snapshot record for the planner.
pub fn planner_snap(info: &SnapshotInfo) -> Snap {
    let kind = match &info.snapshot_namespace {
        SnapshotNamespace::User => SnapKind::User,
        SnapshotNamespace::Mirror(m) => SnapKind::Mirror(m.clone()),
        _ => SnapKind::Other,
    };
    Snap { id: info.id, name: info.name.clone(), kind }
}

/// Byte rates for the status description.
#[derive(Debug, Default)]
struct Rates {
    /// Recent (time, bytes) samples.
    samples: VecDeque<(Instant, u64)>,
    /// Bytes of the last synced snapshots (newest last).
    per_snapshot: VecDeque<u64>,
    /// Duration and bytes of the last snapshot sync.
    last_sync: Option<(u64, u64)>,
}

impl Rates {
    const WINDOW: Duration = Duration::from_secs(30);

    fn add(&mut self, bytes: u64) {
        let now = Instant::now();
        self.samples.push_back((now, bytes));
        while self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW) {
            self.samples.pop_front();
        }
    }

    fn bytes_per_second(&self) -> f64 {
        let now = Instant::now();
        let sum: u64 =
            self.samples.iter().filter(|(t, _)| now.duration_since(*t) <= Self::WINDOW).map(|(_, b)| b).sum();
        sum as f64 / Self::WINDOW.as_secs_f64()
    }

    fn bytes_per_snapshot(&self) -> f64 {
        if self.per_snapshot.is_empty() {
            return 0.0;
        }
        self.per_snapshot.iter().sum::<u64>() as f64 / self.per_snapshot.len() as f64
    }

    fn snapshot_synced(&mut self, seconds: u64, bytes: u64) {
        self.per_snapshot.push_back(bytes);
        if self.per_snapshot.len() > 5 {
            self.per_snapshot.pop_front();
        }
        self.last_sync = Some((seconds, bytes));
    }
}

/// The fields of the snapshot-mode status description (ceph-formats.md §4.6; stock
/// `image_replayer/snapshot/Replayer.cc` `get_replay_status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotReplayStatus {
    /// A sync is in progress.
    pub syncing: bool,
    /// Newest remote mirror snapshot's timestamp (seconds).
    pub remote_snapshot_timestamp: u64,
    /// Timestamp of the remote snapshot matching the newest local mirror snapshot.
    pub local_snapshot_timestamp: Option<u64>,
    /// While syncing: percent of objects copied.
    pub syncing_percent: Option<u64>,
    /// Recent copy rate.
    pub bytes_per_second: f64,
    /// Mean bytes copied per snapshot.
    pub bytes_per_snapshot: f64,
    /// Remote snapshots still to sync.
    pub pending_snapshots: u64,
    /// Duration and bytes of the last snapshot sync.
    pub last_sync: Option<(u64, u64)>,
    /// Seconds the primary's cluster has not answered (see [`PeerContext::primary_silent`]):
    /// `primary_unreachable_seconds` in the description, and the least lag.
    pub primary_unreachable: Option<u64>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl SnapshotReplayStatus {
    /// How far the secondary is behind, at `now`: while a newer primary snapshot waits or
    /// syncs, since the primary snapshot last synced (unknown before the first sync); caught
    /// up otherwise. While the primary does not answer, at least since it stopped (what it
    /// wrote meanwhile is unknown).
    pub fn lag(&self, now: SystemTime) -> Lag {
        let lag = match self.local_snapshot_timestamp {
            _ if !self.syncing && self.pending_snapshots == 0 => Lag::CaughtUp,
            Some(synced) => Lag::Since(UNIX_EPOCH + Duration::from_secs(synced)),
            None => Lag::Unknown,
        };
        match self.primary_unreachable {
            Some(silent) => lag.at_least_since(now - Duration::from_secs(silent)),
            None => lag,
        }
    }

    /// `"replaying, {json}"` as the stock daemon writes it (keys sorted, as json_spirit's
    /// map writes them).
    pub fn description(&self) -> String {
        let mut v = json!({
            "replay_state": if self.syncing { "syncing" } else { "idle" },
            "remote_snapshot_timestamp": self.remote_snapshot_timestamp,
            "bytes_per_second": round2(self.bytes_per_second),
            "bytes_per_snapshot": round2(self.bytes_per_snapshot),
        });
        if let Some(t) = self.local_snapshot_timestamp {
            v["local_snapshot_timestamp"] = json!(t);
        }
        if let Some(p) = self.syncing_percent {
            v["syncing_snapshot_timestamp"] = json!(self.remote_snapshot_timestamp);
            v["syncing_percent"] = json!(p);
        }
        if let Some((seconds, bytes)) = self.last_sync {
            v["last_snapshot_sync_seconds"] = json!(seconds);
            v["last_snapshot_bytes"] = json!(bytes);
        }
        if let Some(silent) = self.primary_unreachable {
            v["primary_unreachable_seconds"] = json!(silent);
        }
        if self.bytes_per_second > 0.0 && self.pending_snapshots > 0 {
            let pending = self.bytes_per_snapshot * self.pending_snapshots as f64;
            v["seconds_until_synced"] = json!((pending / self.bytes_per_second) as u64);
        }
        format!("replaying, {v}")
    }

    /// This status, saying that the primary has not answered for `silent` seconds (in the
    /// description and the lag).
    fn silent(&self, silent: u64) -> SilentStatus {
        let s = SnapshotReplayStatus { primary_unreachable: Some(silent), ..self.clone() };
        SilentStatus {
            state: State::Replaying,
            description: s.description(),
            lag: Some(s.lag(SystemTime::now())),
        }
    }
}

/// Awaits `request`, a call to the primary; while the primary's cluster does not answer,
/// the image's status (`last`, the one published last) says so ([`status::from_primary`]).
async fn from_primary<T>(
    ctx: &PeerContext,
    last: Option<&SnapshotReplayStatus>,
    status: &mut StatusPublisher,
    request: impl std::future::Future<Output = T>,
) -> T {
    crate::status::from_primary(ctx, status, |silent| last.map(|l| l.silent(silent)), request).await
}

fn secs(t: rbd_types::UTime) -> u64 {
    u64::from(t.sec)
}

/// Header watches on both images, held only while replay runs (a header watch of ours on
/// the local image holds off `rbd mirror image promote`, §6.3).
struct Watches {
    remote: Watch,
    local: Watch,
}

struct SnapshotReplayer<'a> {
    ctx: &'a PeerContext,
    remote: RemoteImage,
    local: LocalImage,
    peer_uuid: String,
    global_id: String,
    rates: Rates,
    watches: Option<Watches>,
    /// The status last published, for saying meanwhile that the primary does not answer.
    last_status: Option<SnapshotReplayStatus>,
}

impl SnapshotReplayer<'_> {
    fn who(&self) -> Identity<'_> {
        Identity {
            local_mirror_uuid: &self.ctx.local_mirror_uuid,
            remote_mirror_uuid: &self.ctx.remote_mirror_uuid,
            remote_peer_uuid: &self.peer_uuid,
        }
    }

    async fn run(&mut self, cancel: &CancellationToken, status: &mut StatusPublisher) -> Result<Attempt> {
        let ctx = self.ctx;
        let mut last_status = None::<Instant>;
        loop {
            if cancel.is_cancelled() {
                return Ok(Attempt::Cancelled);
            }
            if crate::local::resync_requested(&ctx.local_io, self.local.image_id(), MirrorImageMode::Snapshot)
                .await?
            {
                self.watches = None;
                let id = self.local.image_id().to_owned();
                return crate::local::resync(ctx, &id, status).await;
            }
            let local_snaps = cls::snapshots(&ctx.local_io, self.local.image_id()).await?;
            let listed = cls::snapshots(&ctx.remote_io, &self.remote.image_id);
            let remote_snaps = from_primary(ctx, self.last_status.as_ref(), status, listed).await?;
            let l: Vec<Snap> = local_snaps.iter().map(planner_snap).collect();
            let r: Vec<Snap> = remote_snaps.iter().map(planner_snap).collect();
            let step = planner::plan(&l, &r, self.who());
            tracing::debug!(?step, "planned");
            match step {
                Step::PruneLocal(id) => {
                    let name = local_snaps.iter().find(|s| s.id == id).map(|s| s.name.clone());
                    if let Some(name) = name {
                        tracing::info!(snap_id = id, "pruning non-primary snapshot");
                        self.local.snap_remove(&name).await?;
                    }
                }
                Step::UnlinkRemote(id) => {
                    tracing::info!(remote_snap_id = id, "unlinking from remote snapshot");
                    cls::mirror_image_snapshot_unlink_peer(
                        &ctx.remote_io,
                        &self.remote.image_id,
                        id,
                        &self.peer_uuid,
                    )
                    .await?;
                }
                Step::Sync(plan) => {
                    if !self.sync(plan, &local_snaps, &remote_snaps, cancel, status).await? {
                        return Ok(Attempt::Cancelled);
                    }
                    last_status = None;
                }
                Step::WaitRemoteComplete | Step::Idle => {
                    if self.watches.is_none() {
                        let watched =
                            from_primary(ctx, self.last_status.as_ref(), status, self.watch()).await?;
                        self.watches = Some(watched);
                        continue; // re-plan: a snapshot may have come before the watch
                    }
                    if last_status.is_none_or(|t| t.elapsed() >= ctx.config().rbd_mirror_rs_status_interval) {
                        let s = self.status(&local_snaps, &remote_snaps, None, 0);
                        let lag = s.lag(SystemTime::now());
                        status.image().update(|i| i.lag = lag);
                        publish(ctx, status, State::Replaying, &s.description()).await;
                        self.last_status = Some(s);
                        last_status = Some(Instant::now());
                    }
                    // Idle: both headers are watched (a new remote snapshot, a resync request
                    // here notify them), so the poll is only the safety net.
                    let poll = if step == Step::Idle { IDLE_POLL } else { INCOMPLETE_POLL };
                    if !self.wait(cancel, poll).await {
                        return Ok(Attempt::Cancelled);
                    }
                }
                Step::Stop(stop) => {
                    self.watches = None;
                    tracing::info!(reason = stop.description(), "snapshot replay stopped");
                    return match stop {
                        Stop::ForcePromoted => {
                            publish(ctx, status, State::Stopped, stop.description()).await;
                            Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval))
                        }
                        Stop::RemoteDemoted => {
                            publish(ctx, status, State::Unknown, stop.description()).await;
                            Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval))
                        }
                        // Usually a forced promotion here in progress (its orphan snapshot):
                        // look again soon, the next attempt reports the new role.
                        Stop::UnknownPeer => {
                            tracing::error!(error = stop.description(), "image replay failed");
                            publish(ctx, status, State::Error, stop.description()).await;
                            Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval))
                        }
                        other => Err(ReplayError::Conflict(other.description().to_owned())),
                    };
                }
            }
        }
    }

    async fn watch(&self) -> Result<Watches> {
        let remote = self.ctx.remote_io.watch(&header_object_name(&self.remote.image_id)).await?;
        let local = self.ctx.local_io.watch(&header_object_name(self.local.image_id())).await?;
        Ok(Watches { remote, local })
    }

    /// Waits for a header notification on either image, at most `poll`. False when
    /// cancelled.
    async fn wait(&mut self, cancel: &CancellationToken, poll: Duration) -> bool {
        let Some(w) = self.watches.as_mut() else { return !cancel.is_cancelled() };
        // The primary's cluster going silent (or answering again) is said at once, and
        // while it is silent the status is refreshed every status interval.
        let mut silent = self.ctx.primary_silent.clone();
        let poll = match *silent.borrow_and_update() {
            Some(_) => poll.min(self.ctx.config().rbd_mirror_rs_status_interval),
            None => poll,
        };
        let broken = tokio::select! {
            _ = cancel.cancelled() => return false,
            e = w.remote.next() => e.is_none(),
            e = w.local.next() => e.is_none(),
            _ = tokio::time::sleep(poll) => false,
            Ok(()) = silent.changed() => false,
        };
        if broken || w.remote.check().is_err() || w.local.check().is_err() {
            self.watches = None; // re-watched on the next idle pass
        }
        true
    }

    fn status(
        &self,
        local_snaps: &[SnapshotInfo],
        remote_snaps: &[SnapshotInfo],
        syncing_percent: Option<u64>,
        pending: u64,
    ) -> SnapshotReplayStatus {
        let remote_ts = remote_snaps
            .iter()
            .rfind(|s| matches!(s.snapshot_namespace, SnapshotNamespace::Mirror(_)))
            .map(|s| secs(s.timestamp))
            .unwrap_or(0);
        let local_ts = local_snaps
            .iter()
            .rev()
            .find_map(|s| match &s.snapshot_namespace {
                SnapshotNamespace::Mirror(m) => Some(m),
                _ => None,
            })
            .filter(|m| m.primary_mirror_uuid == self.ctx.remote_mirror_uuid)
            .and_then(|m| remote_snaps.iter().find(|r| r.id == m.primary_snap_id))
            .map(|r| secs(r.timestamp));
        SnapshotReplayStatus {
            syncing: syncing_percent.is_some(),
            remote_snapshot_timestamp: remote_ts,
            local_snapshot_timestamp: local_ts,
            syncing_percent,
            bytes_per_second: self.rates.bytes_per_second(),
            bytes_per_snapshot: self.rates.bytes_per_snapshot(),
            pending_snapshots: pending,
            last_sync: self.rates.last_sync,
            primary_unreachable: primary_silent_for(self.ctx),
        }
    }

    /// The local snap context as it was before snapshot `exclude` was created (the
    /// snapshot being filled is left out and the sequence is the newest remaining one):
    /// writes under it do not preserve data for `exclude`, which then holds what is written.
    async fn snapc_without(&self, exclude: Option<u64>) -> Result<LocalSnapContext> {
        let (seq, snaps) = self.local.snap_context().await?;
        let Some(x) = exclude else { return Ok(LocalSnapContext { seq, snaps }) };
        let snaps: Vec<u64> = snaps.into_iter().filter(|&s| s != x).collect();
        let seq = snaps.iter().copied().max().unwrap_or(0);
        Ok(LocalSnapContext { seq, snaps })
    }

    async fn local_snap_id(&self, name: &str) -> Result<u64> {
        cls::snapshots(&self.ctx.local_io, self.local.image_id())
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.id)
            .ok_or_else(|| {
                ReplayError::NotFound(format!("local snapshot {name} vanished after its creation"))
            })
    }

    async fn resize_to(&self, size: u64) -> Result<()> {
        if self.local.size() != size {
            tracing::info!(from = self.local.size(), to = size, "resizing the local image");
            self.local.resize(size).await?;
        }
        Ok(())
    }

    /// Performs one sync. False when cancelled.
    async fn sync(
        &mut self,
        plan: SyncPlan,
        local_snaps: &[SnapshotInfo],
        remote_snaps: &[SnapshotInfo],
        cancel: &CancellationToken,
        status: &mut StatusPublisher,
    ) -> Result<bool> {
        let ctx = self.ctx;
        let started = Instant::now();
        let remote_info = |id: u64| {
            remote_snaps
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| ReplayError::NotFound(format!("remote snapshot {id} vanished")))
        };
        let end = remote_info(plan.remote_end)?.clone();
        tracing::info!(
            remote_snap_id_start = ?plan.remote_start,
            remote_snap_id_end = plan.remote_end,
            local_snap_id_start = ?plan.local_start,
            user_snapshots = plan.user_snaps.len(),
            resume = ?plan.resume.as_ref().map(|r| r.last_copied_object_number),
            "syncing snapshot"
        );
        let permit = tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            p = ctx.sync_slots.acquire() =>
                p.map_err(|_| ReplayError::Stopped("sync slots closed".into()))?,
        };
        let mut bytes = 0u64;
        let mut snap_seqs = plan.snap_seqs.clone();
        let mut prev = plan.remote_start;
        if plan.resume.is_none() {
            for &u in &plan.user_snaps {
                let info = remote_info(u)?;
                if let Some(l) = local_snaps
                    .iter()
                    .find(|s| s.name == info.name && s.snapshot_namespace == SnapshotNamespace::User)
                {
                    snap_seqs.insert(u, l.id);
                    prev = Some(u);
                    continue;
                }
                self.resize_to(info.image_size).await?;
                let snapc = self.snapc_without(None).await?;
                let range = CopyRange { remote_snap_id_start: prev, remote_snap_id_end: u, start_object: 0 };
                let Some(stats) =
                    self.copy(&range, snapc, None, local_snaps, remote_snaps, cancel, status).await?
                else {
                    return Ok(false);
                };
                bytes += stats.bytes_read;
                self.local.snap_create(&info.name, &SnapshotNamespace::User).await?;
                let id = self.local_snap_id(&info.name).await?;
                tracing::info!(snap = %info.name, remote_snap_id = u, local_snap_id = id, "user snapshot mirrored");
                snap_seqs.insert(u, id);
                prev = Some(u);
            }
            self.apply_user_snapshots(&mut snap_seqs, remote_snaps).await?;
        } else {
            prev = plan.user_snaps.last().copied().or(plan.remote_start);
        }

        let (local_end, start_object) = match &plan.resume {
            Some(r) => {
                tracing::info!(
                    local_snap_id = r.local_snap_id,
                    start_object = r.last_copied_object_number,
                    "resuming the interrupted snapshot sync from its recorded progress"
                );
                (r.local_snap_id, r.last_copied_object_number)
            }
            None => {
                self.resize_to(end.image_size).await?;
                // A demotion copy is linked to this pool's sending peers, so that the
                // other site's daemon finds it when the image fails back
                // (librbd `CreateNonPrimaryRequest`).
                let mut peers = BTreeSet::new();
                if plan.end_demoted {
                    for p in ctx.local_peer_sites().await? {
                        if p.direction != rbd_types::MirrorPeerDirection::Rx {
                            peers.insert(p.uuid);
                        }
                    }
                }
                let name = crate::local::non_primary_snapshot_name(&self.global_id);
                let ns = SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
                    state: if plan.end_demoted {
                        MirrorSnapshotState::NonPrimaryDemoted
                    } else {
                        MirrorSnapshotState::NonPrimary
                    },
                    complete: false,
                    mirror_peer_uuids: peers,
                    primary_mirror_uuid: ctx.remote_mirror_uuid.clone(),
                    primary_snap_id: plan.remote_end,
                    last_copied_object_number: 0,
                    snap_seqs: snap_seqs.clone(),
                });
                self.local.snap_create(&name, &ns).await?;
                (self.local_snap_id(&name).await?, 0)
            }
        };

        let object_count = self.remote.geometry.layout()?.object_count(end.image_size);
        if plan.clean && plan.user_snaps.is_empty() {
            tracing::info!("remote snapshot clean since the start: no data to copy");
        } else {
            let snapc = self.snapc_without(Some(local_end)).await?;
            let range =
                CopyRange { remote_snap_id_start: prev, remote_snap_id_end: plan.remote_end, start_object };
            let Some(stats) =
                self.copy(&range, snapc, Some(local_end), local_snaps, remote_snaps, cancel, status).await?
            else {
                return Ok(false);
            };
            bytes += stats.bytes_read;
            tracing::info!(
                start_object,
                objects_copied = stats.objects_copied,
                objects_removed = stats.objects_removed,
                bytes_copied = stats.bytes_read,
                "image copy done"
            );
            self.local.finish_snapshot_object_map(local_end).await?;
        }
        self.follow_flatten(plan.remote_end).await?;
        self.follow_features().await?;
        cls::mirror_image_snapshot_set_copy_progress(
            &ctx.local_io,
            self.local.image_id(),
            local_end,
            true,
            object_count,
        )
        .await?;
        let header = header_object_name(self.local.image_id());
        if let Err(e) = ctx.local_io.notify(&header, &header_update_payload(), Duration::from_secs(5)).await {
            tracing::debug!(error = %e, "header update notify failed");
        }
        drop(permit);
        if let Some(start) = plan.remote_start {
            cls::mirror_image_snapshot_unlink_peer(
                &ctx.remote_io,
                &self.remote.image_id,
                start,
                &self.peer_uuid,
            )
            .await?;
        }
        let took = started.elapsed();
        self.rates.snapshot_synced(took.as_secs(), bytes);
        status.image().update(|i| {
            i.bytes_replayed += bytes;
            i.snapshots_synced += 1;
            i.snapshots_time += took;
            i.last_snapshot_sync = Some((std::time::SystemTime::now(), bytes));
        });
        crate::metrics::snapshot_synced(
            &ctx.pool,
            &ctx.namespace,
            &self.remote.name,
            bytes,
            took,
            plan.remote_start.is_none(),
        );
        tracing::info!(
            remote_snap_id = plan.remote_end,
            local_snap_id = local_end,
            bytes_copied = bytes,
            seconds = took.as_secs(),
            "snapshot sync complete"
        );
        Ok(true)
    }

    /// A flatten on the primary: once the primary has no parent at the synced snapshot
    /// `remote_end` (every object its own, and copied), the local clone's HEAD is detached
    /// from its parent too, as stock's deep copy sets the head's parent to the primary's.
    async fn follow_flatten(&self, remote_end: u64) -> Result<()> {
        if !self.local.has_parent().await? {
            return Ok(());
        }
        let remote = rados_ffi::rbd::Image::open_by_id_at_snap_id(
            &self.ctx.remote_io,
            &self.remote.image_id,
            remote_end,
        )
        .await?;
        if remote.has_parent().await? {
            return Ok(());
        }
        self.local.detach_parent().await?;
        tracing::info!(
            remote_snap_id = remote_end,
            "the primary was flattened: detached the local image from its parent"
        );
        Ok(())
    }

    /// Feature changes on the primary (`rbd feature enable|disable`): the local image takes
    /// the mutable ones (exclusive-lock, object-map, fast-diff; deep-flatten can only go),
    /// as stock's image state applies the primary's features to its non-primary image.
    async fn follow_features(&self) -> Result<()> {
        use rbd_types::features::{DEEP_FLATTEN, EXCLUSIVE_LOCK, FAST_DIFF, OBJECT_MAP};
        const FOLLOWED: u64 = EXCLUSIVE_LOCK | OBJECT_MAP | FAST_DIFF | DEEP_FLATTEN;
        let remote = cls::get_features(&self.ctx.remote_io, &self.remote.image_id).await?;
        let local = self.local.features();
        let disable = local & !remote & FOLLOWED;
        let enable = remote & !local & FOLLOWED & !DEEP_FLATTEN;
        if disable != 0 {
            tracing::info!(features = disable, "features disabled on the primary: disabling them here");
            self.local.update_features(disable, false).await?;
        }
        if enable != 0 {
            tracing::info!(features = enable, "features enabled on the primary: enabling them here");
            self.local.update_features(enable, true).await?;
        }
        Ok(())
    }

    /// Makes the image and its mirrored user snapshots follow the primary (what the stock
    /// daemon's snapshot copy and image state do): the image name and image-meta; through
    /// the remote → local mapping, a snapshot removed on the remote is removed, a renamed one
    /// renamed, protection copied.
    async fn apply_user_snapshots(
        &self,
        snap_seqs: &mut std::collections::BTreeMap<u64, u64>,
        remote_snaps: &[SnapshotInfo],
    ) -> Result<()> {
        let ctx = self.ctx;
        self.local.rename(&self.remote.name).await?;
        // Image-meta as on the primary now (the per-peer `.rbd_mirror.*` keys stay local).
        let remote_meta = cls::metadata_list(&ctx.remote_io, &self.remote.image_id).await?;
        let local_meta = cls::metadata_list(&ctx.local_io, self.local.image_id()).await?;
        let mirrored = |k: &String| !k.starts_with(IMAGE_META_PREFIX);
        for (k, v) in remote_meta.iter().filter(|(k, _)| mirrored(k)) {
            if local_meta.get(k) != Some(v) {
                let value = String::from_utf8_lossy(v);
                self.local.metadata_set(k, &value).await?;
            }
        }
        for k in local_meta.keys().filter(|k| mirrored(k) && !remote_meta.contains_key(*k)) {
            self.local.metadata_remove(k).await?;
        }
        let local_snaps = cls::snapshots(&ctx.local_io, self.local.image_id()).await?;
        let mut gone = Vec::new();
        for (&remote_id, &local_id) in snap_seqs.iter() {
            let Some(local) = local_snaps.iter().find(|s| s.id == local_id) else {
                gone.push(remote_id);
                continue;
            };
            if local.snapshot_namespace != SnapshotNamespace::User {
                continue;
            }
            match remote_snaps.iter().find(|s| s.id == remote_id) {
                None => {
                    tracing::info!(snap = %local.name, "user snapshot removed on the primary: removing it");
                    let _ = self.local.snap_set_protection(&local.name, ProtectionStatus::Unprotected).await;
                    self.local.snap_remove(&local.name).await?;
                    gone.push(remote_id);
                }
                Some(remote) => {
                    if remote.name != local.name {
                        tracing::info!(from = %local.name, to = %remote.name, "user snapshot renamed on the primary");
                        self.local.snap_rename(&local.name, &remote.name).await?;
                    }
                    let want =
                        cls::get_protection_status(&ctx.remote_io, &self.remote.image_id, remote_id).await?;
                    let have =
                        cls::get_protection_status(&ctx.local_io, self.local.image_id(), local_id).await?;
                    // Unprotecting counts as protected (as the primary's state settles).
                    let want = if want == ProtectionStatus::Unprotected {
                        ProtectionStatus::Unprotected
                    } else {
                        ProtectionStatus::Protected
                    };
                    if (have == ProtectionStatus::Unprotected) != (want == ProtectionStatus::Unprotected) {
                        self.local.snap_set_protection(&remote.name, want).await?;
                    }
                }
            }
        }
        for r in gone {
            snap_seqs.remove(&r);
        }
        Ok(())
    }

    /// Copies one range, persisting progress in `progress_snap` (when given) and
    /// publishing the syncing status. `None` when cancelled.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &mut self,
        range: &CopyRange,
        snapc: LocalSnapContext,
        progress_snap: Option<u64>,
        local_snaps: &[SnapshotInfo],
        remote_snaps: &[SnapshotInfo],
        cancel: &CancellationToken,
        status: &mut StatusPublisher,
    ) -> Result<Option<CopyStats>> {
        let ctx = self.ctx;
        let (tx, mut rx) = tokio::sync::watch::channel(None::<CopyProgress>);
        let mut on_progress = move |p: CopyProgress| {
            let _ = tx.send(Some(p));
        };
        let base = self.status(local_snaps, remote_snaps, Some(0), 1);
        let local_id = self.local.image_id().to_owned();
        let bandwidth = crate::bandwidth::for_image(ctx, &self.remote.image_id).await?;
        let copy = copy_image(
            &ctx.remote_io,
            &self.remote.image_id,
            &self.local,
            range,
            &snapc,
            SYNC_CONCURRENCY,
            &bandwidth,
            &mut on_progress,
            cancel,
        );
        let rates = &mut self.rates;
        let persist = async {
            let mut last_bytes = 0u64;
            let mut last_pct = None;
            loop {
                // The copy waits for the primary while its cluster does not answer: said in
                // the status, as the other waits for it (`from_primary`).
                let progressed = {
                    let mut s = base.clone();
                    s.syncing_percent = last_pct.or(Some(0));
                    from_primary(ctx, Some(&s), status, rx.changed()).await
                };
                if progressed.is_err() {
                    // The copy ended: this arm never completes.
                    return std::future::pending::<std::convert::Infallible>().await;
                }
                let Some(p) = *rx.borrow_and_update() else { continue };
                rates.add(p.bytes_written.saturating_sub(last_bytes));
                last_bytes = p.bytes_written;
                if let Some(snap) = progress_snap {
                    if let Err(e) = cls::mirror_image_snapshot_set_copy_progress(
                        &ctx.local_io,
                        &local_id,
                        snap,
                        false,
                        p.objects_done,
                    )
                    .await
                    {
                        tracing::warn!(error = %e, "cannot record the copy progress");
                    }
                }
                let pct = (p.objects_done * 100).checked_div(p.object_count.max(1)).unwrap_or(100);
                if last_pct != Some(pct) {
                    let mut s = base.clone();
                    s.syncing_percent = Some(pct);
                    s.bytes_per_second = rates.bytes_per_second();
                    let lag = s.lag(SystemTime::now());
                    status.image().update(|i| i.lag = lag);
                    publish(ctx, status, State::Replaying, &s.description()).await;
                    last_pct = Some(pct);
                }
                tokio::time::sleep(PROGRESS_INTERVAL).await;
            }
        };
        let result = tokio::select! {
            r = copy => r,
            never = persist => match never {},
        };
        match result {
            Ok(stats) => Ok(Some(stats)),
            Err(_) if cancel.is_cancelled() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_matches_the_stock_keys() {
        let s = SnapshotReplayStatus {
            syncing: false,
            remote_snapshot_timestamp: 1700000000,
            local_snapshot_timestamp: Some(1700000000),
            last_sync: Some((3, 4096)),
            ..Default::default()
        };
        assert_eq!(
            s.description(),
            "replaying, {\"bytes_per_second\":0.0,\"bytes_per_snapshot\":0.0,\"last_snapshot_bytes\":4096,\
             \"last_snapshot_sync_seconds\":3,\"local_snapshot_timestamp\":1700000000,\
             \"remote_snapshot_timestamp\":1700000000,\"replay_state\":\"idle\"}"
        );
        let syncing = SnapshotReplayStatus {
            syncing: true,
            syncing_percent: Some(42),
            remote_snapshot_timestamp: 5,
            bytes_per_second: 10.0,
            bytes_per_snapshot: 100.0,
            pending_snapshots: 2,
            ..Default::default()
        };
        let d = syncing.description();
        let j: serde_json::Value =
            serde_json::from_str(d.strip_prefix("replaying, ").expect("prefix")).expect("json");
        assert_eq!(j["replay_state"], "syncing");
        assert_eq!(j["syncing_percent"], 42);
        assert_eq!(j["syncing_snapshot_timestamp"], 5);
        assert_eq!(j["seconds_until_synced"], 20);
        assert!(j.get("local_snapshot_timestamp").is_none());
    }

    #[test]
    fn a_silent_primary_is_in_the_status_and_the_lag() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let idle = SnapshotReplayStatus {
            remote_snapshot_timestamp: 1_700_000_000,
            local_snapshot_timestamp: Some(1_700_000_000),
            ..Default::default()
        };
        assert_eq!(idle.lag(now), Lag::CaughtUp);
        assert!(!idle.description().contains("primary_unreachable_seconds"));
        let silent = SnapshotReplayStatus { primary_unreachable: Some(35), ..idle.clone() };
        assert_eq!(silent.lag(now).seconds(now), Some(35.0));
        assert!(
            silent.description().contains("\"primary_unreachable_seconds\":35"),
            "{}",
            silent.description()
        );
        // Syncing since a snapshot 100 s old: the larger of the two.
        let syncing = SnapshotReplayStatus { syncing: true, syncing_percent: Some(10), ..silent };
        assert_eq!(syncing.lag(now).seconds(now), Some(100.0));
        // It grows while nothing updates it (a sync waiting for site-b).
        assert_eq!(syncing.lag(now).seconds(now + Duration::from_secs(60)), Some(160.0));
        // Unknown before the first sync, silent or not.
        let first = SnapshotReplayStatus { local_snapshot_timestamp: None, ..syncing };
        assert_eq!(first.lag(now), Lag::Unknown);
    }

    #[test]
    fn header_update_is_op_3() {
        assert_eq!(header_update_payload()[6], 3);
    }

    #[test]
    fn mirror_namespaces_convert() {
        let info = SnapshotInfo {
            id: 7,
            snapshot_namespace: SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
                state: MirrorSnapshotState::PrimaryDemoted,
                complete: true,
                mirror_peer_uuids: ["p".to_string()].into(),
                primary_snap_id: 3,
                ..Default::default()
            }),
            name: "m".into(),
            ..Default::default()
        };
        let s = planner_snap(&info);
        let m = s.mirror().expect("mirror");
        assert_eq!(m.state, MirrorSnapshotState::PrimaryDemoted);
        assert!(m.mirror_peer_uuids.contains("p"));
        assert_eq!(planner_snap(&SnapshotInfo::default()).kind, SnapKind::User);
    }
}
