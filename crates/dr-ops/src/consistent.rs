//! A consistent point of one mirrored image: a snapshot holding the same data on both sites,
//! which `verify` compares at and `drill` copies from, without pausing replication.
//!
//! * snapshot mode: the newest complete non-primary mirror snapshot here and the primary
//!   mirror snapshot of the peer it copies (`primary_snap_id`); nothing is created;
//! * journal mode: a user snapshot `rbd-mirror-rs.<purpose>.<unix nanos>` created on the
//!   primary, whose `SnapCreate` event the replay here turns into the same snapshot
//!   (ceph-formats.md §3); it is removed on the primary after use and waited for until the
//!   replay removed it here. Leftovers of an interrupted run (`rbd-mirror-rs.<purpose>.*`
//!   on the primary) are removed first, so a re-run cleans up after the last one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rados_ffi::rbd::{Image, ImageRw, SnapInfo};
use rbd_types::cls_rbd::MirrorImageMode;
use rbd_types::snap_namespace::{MirrorSnapshotState, SnapshotNamespace};

use crate::error::{DrError, Result};
use crate::progress::Progress;
use crate::sites::{self, MirroredImage, PoolPair, Role};

/// A snapshot with the same data on both sites.
#[derive(Debug, Clone)]
pub(crate) struct ConsistentPoint {
    /// Snapshot id here.
    pub local_snap_id: u64,
    /// Snapshot id on the peer.
    pub remote_snap_id: u64,
    /// What it is, for reports (`mirror snapshot 12 (primary snapshot 34)`).
    pub what: String,
    /// When the primary's data was taken.
    pub time: Option<SystemTime>,
    /// Journal mode: the user snapshot we created on the primary (to remove after use).
    temporary: Option<String>,
}

/// Unix seconds of `t`.
pub(crate) fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The prefix of the user snapshots `purpose` creates on a journaling primary.
fn snap_prefix(purpose: &str) -> String {
    format!("rbd-mirror-rs.{purpose}.")
}

/// The ids of both sites, failing unless this site holds a non-primary copy of a primary
/// on the peer.
pub(crate) async fn secondary_ids<'a>(
    pair: &PoolPair,
    image: &'a MirroredImage,
) -> Result<(&'a str, &'a str)> {
    let spec = format!("{}/{}", pair.pool, image.name);
    let fail = |reason: String| DrError::Image { image: spec.clone(), reason };
    let local_role = sites::role(&pair.conn.local_io, image.local_id.as_deref()).await?;
    let peer_role = sites::role(&pair.conn.remote_io, image.remote_id.as_deref()).await?;
    match (local_role, peer_role, image.local_id.as_deref(), image.remote_id.as_deref()) {
        (Role::NonPrimary, Role::Primary, Some(l), Some(r)) => Ok((l, r)),
        (l, p, _, _) => Err(fail(format!(
            "{} here and {} on {}: run this at the site holding the non-primary copy",
            l.as_str(),
            p.as_str(),
            pair.peer_site
        ))),
    }
}

/// Finds (snapshot mode) or makes (journal mode) a consistent point of `image`, waiting up
/// to `timeout` for the replay here. `progress` is told of waits.
pub(crate) async fn acquire(
    pair: &PoolPair,
    image: &MirroredImage,
    purpose: &str,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<ConsistentPoint> {
    let spec = format!("{}/{}", pair.pool, image.name);
    let (local_id, remote_id) = secondary_ids(pair, image).await?;
    match image.mode {
        MirrorImageMode::Snapshot => newest_synced(pair, &spec, local_id, remote_id).await,
        MirrorImageMode::Journal => {
            let remote_name = pair.conn.remote_io.image_name(remote_id).await?;
            let primary = ImageRw::open(&pair.conn.remote_io, &remote_name).await?;
            let prefix = snap_prefix(purpose);
            for s in Image::open_by_id(&pair.conn.remote_io, remote_id, None).await?.snapshots().await? {
                if is_user_snap(&s, &prefix) {
                    progress.step(&image.name, &format!("removing {} left by an earlier run", s.name));
                    primary.snap_remove(&s.name).await?;
                }
            }
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let name = format!("{prefix}{nanos}");
            progress.step(&image.name, &format!("creating snapshot {name} on {}", pair.peer_site));
            primary.snap_create(&name).await?;
            let remote_snap =
                find_user_snap(&pair.conn.remote_io, remote_id, &name).await?.ok_or_else(|| {
                    DrError::Image {
                        image: spec.clone(),
                        reason: format!("snapshot {name} vanished on the primary"),
                    }
                })?;
            let mut point = ConsistentPoint {
                local_snap_id: 0,
                remote_snap_id: remote_snap.id,
                what: format!("snapshot {name}"),
                time: remote_snap.timestamp,
                temporary: Some(name.clone()),
            };
            let waited = wait_until(&spec, timeout, progress, &image.name, || async {
                Ok(match find_user_snap(&pair.conn.local_io, local_id, &name).await? {
                    Some(s) => (Some(s.id), String::new()),
                    None => (None, format!("snapshot {name} not replayed here yet")),
                })
            })
            .await;
            match waited {
                Ok(id) => {
                    point.local_snap_id = id;
                    Ok(point)
                }
                Err(e) => {
                    // Not left behind on the primary.
                    let _ = release(pair, image, &point, Duration::ZERO, progress).await;
                    Err(e)
                }
            }
        }
    }
}

/// Removes what [`acquire`] created (journal mode: the snapshot on the primary) and waits
/// up to `timeout` until the replay removed it here too.
pub(crate) async fn release(
    pair: &PoolPair,
    image: &MirroredImage,
    point: &ConsistentPoint,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(name) = &point.temporary else { return Ok(()) };
    let spec = format!("{}/{}", pair.pool, image.name);
    let (Some(local_id), Some(remote_id)) = (image.local_id.as_deref(), image.remote_id.as_deref()) else {
        return Ok(());
    };
    let remote_name = pair.conn.remote_io.image_name(remote_id).await?;
    progress.step(&image.name, &format!("removing snapshot {name} on {}", pair.peer_site));
    match ImageRw::open(&pair.conn.remote_io, &remote_name).await?.snap_remove(name).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    if timeout.is_zero() {
        return Ok(());
    }
    wait_until(&spec, timeout, progress, &image.name, || async {
        Ok(match find_user_snap(&pair.conn.local_io, local_id, name).await? {
            Some(_) => (None, format!("snapshot {name} still here (removal not replayed yet)")),
            None => (Some(()), String::new()),
        })
    })
    .await
}

fn is_user_snap(s: &SnapInfo, prefix: &str) -> bool {
    matches!(s.namespace, SnapshotNamespace::User) && s.name.starts_with(prefix)
}

async fn find_user_snap(io: &rados_ffi::IoCtx, id: &str, name: &str) -> Result<Option<SnapInfo>> {
    let snaps = Image::open_by_id(io, id, None).await?.snapshots().await?;
    Ok(snaps.into_iter().find(|s| matches!(s.namespace, SnapshotNamespace::User) && s.name == name))
}

/// Polls `probe` every 500 ms until it yields a value or `timeout` passes; its text says
/// what it saw.
pub(crate) async fn wait_until<T, F, Fut>(
    spec: &str,
    timeout: Duration,
    progress: &dyn Progress,
    image: &str,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(Option<T>, String)>>,
{
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (done, what) = probe().await?;
        if let Some(v) = done {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(DrError::Timeout {
                image: spec.to_owned(),
                waited_secs: timeout.as_secs(),
                last: what,
            });
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            progress.step(image, &format!("waiting ({:.0} s): {what}", start.elapsed().as_secs_f64()));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Snapshot mode: the newest complete non-primary mirror snapshot here and its primary.
async fn newest_synced(
    pair: &PoolPair,
    spec: &str,
    local_id: &str,
    remote_id: &str,
) -> Result<ConsistentPoint> {
    let local = Image::open_by_id(&pair.conn.local_io, local_id, None).await?.snapshots().await?;
    let (local_snap_id, primary_snap_id) = newest_complete_copy(&local).ok_or_else(|| DrError::Image {
        image: spec.to_owned(),
        reason: "no mirror snapshot synced here yet".into(),
    })?;
    let remote = Image::open_by_id(&pair.conn.remote_io, remote_id, None).await?.snapshots().await?;
    let primary = remote.iter().find(|s| s.id == primary_snap_id).ok_or_else(|| DrError::Image {
        image: spec.to_owned(),
        reason: format!(
            "primary mirror snapshot {primary_snap_id} (synced here as {local_snap_id}) is gone on {}",
            pair.peer_site
        ),
    })?;
    Ok(ConsistentPoint {
        local_snap_id,
        remote_snap_id: primary_snap_id,
        what: format!("mirror snapshot {local_snap_id} (primary snapshot {primary_snap_id})"),
        time: primary.timestamp,
        temporary: None,
    })
}

/// (snapshot id, primary snapshot id) of the newest complete non-primary mirror snapshot.
pub(crate) fn newest_complete_copy(snaps: &[SnapInfo]) -> Option<(u64, u64)> {
    snaps
        .iter()
        .filter_map(|s| match &s.namespace {
            SnapshotNamespace::Mirror(m)
                if m.complete
                    && matches!(
                        m.state,
                        MirrorSnapshotState::NonPrimary | MirrorSnapshotState::NonPrimaryDemoted
                    ) =>
            {
                Some((s.id, m.primary_snap_id))
            }
            _ => None,
        })
        .max()
}
