//! The pool watcher (stock `PoolWatcher`): which images the peer mirrors in this pool,
//! rescanned when the peer's `rbd_mirroring` object is notified (image enabled, disabled,
//! removed), a second after the first of a burst of notifications, and at least every
//! `rbd_mirror_rs_pool_rescan_interval` (30 s, as stock) without one; and
//! [`MirroringWatch`], the watch of a pool's `rbd_mirroring` kept up on either site.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::{cls, PeerContext};
use rados_ffi::{IoCtx, Watch, WatchEvent};
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageState, RBD_MIRRORING};
use tokio::task::JoinHandle;

/// How often a lost `rbd_mirroring` watch is tried again.
const REWATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Which cluster's `rbd_mirroring` a [`MirroringWatch`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Local,
    Peer,
}

impl Side {
    fn io(self, ctx: &PeerContext) -> &IoCtx {
        match self {
            Side::Local => &ctx.local_io,
            Side::Peer => &ctx.remote_io,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Peer => "peer",
        }
    }
}

/// A watch of a pool's `rbd_mirroring` object, made again when it is lost. The OSD counts
/// the watchers of that object: this daemon's image statuses in the pool read as `up` only
/// while it watches (cls `rbd` `mirror_image_status_get`). The OSD drops a watch whose
/// client was out of reach for longer than the watch timeout (30 s: a partition, an OSD
/// restart); librados then reports `ENOTCONN` and does not make it again itself.
pub(crate) struct MirroringWatch {
    watch: Option<Watch>,
    /// A watch being made again, as a task of its own: `rados_watch3` waits for ever for a
    /// cluster out of reach, and a cancelled [`Self::notified`] must not abandon it (the
    /// registration would be made and never removed). Dropped, the task goes on and drops
    /// (unregisters) the watch it makes.
    making: Option<JoinHandle<rados_ffi::Result<Watch>>>,
    /// When a lost watch is tried again.
    rewatch_at: Instant,
    side: Side,
}

impl std::fmt::Debug for MirroringWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroringWatch")
            .field("side", &self.side)
            .field("watching", &self.watch.is_some())
            .finish()
    }
}

impl MirroringWatch {
    /// Watches `rbd_mirroring` of the context's pool and namespace on `side`.
    pub(crate) async fn new(ctx: &PeerContext, side: Side) -> rados_ffi::Result<Self> {
        let watch = side.io(ctx).watch(RBD_MIRRORING).await?;
        Ok(MirroringWatch { watch: Some(watch), making: None, rewatch_at: Instant::now(), side })
    }

    /// Waits for a notification of the object, or for the watch to be back after it was
    /// lost (notifications may have been missed meanwhile); a lost watch is tried again
    /// every [`REWATCH_INTERVAL`]. Cancel-safe.
    pub(crate) async fn notified(&mut self, ctx: &Arc<PeerContext>) {
        let side = self.side;
        loop {
            if let Some(making) = &mut self.making {
                let made = making.await;
                self.making = None;
                match made {
                    Ok(Ok(watch)) => {
                        tracing::info!(pool = %side.io(ctx).pool_name(), site = side.name(), "rbd_mirroring watched again");
                        self.watch = Some(watch);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(pool = %side.io(ctx).pool_name(), site = side.name(), error = %e, "cannot watch rbd_mirroring yet");
                    }
                    Err(e) => tracing::debug!(error = %e, "the rbd_mirroring watch task failed"),
                }
                continue;
            }
            let Some(watch) = &mut self.watch else {
                tokio::time::sleep_until(self.rewatch_at.into()).await;
                self.rewatch_at = Instant::now() + REWATCH_INTERVAL;
                let ctx = ctx.clone();
                self.making = Some(tokio::spawn(async move { side.io(&ctx).watch(RBD_MIRRORING).await }));
                continue;
            };
            match watch.next().await {
                Some(WatchEvent::Notify { .. }) => return,
                event => {
                    let errno = match event {
                        Some(WatchEvent::Error { errno }) => errno,
                        _ => 0,
                    };
                    tracing::warn!(
                        pool = %side.io(ctx).pool_name(),
                        site = side.name(),
                        errno,
                        "rbd_mirroring watch lost (this daemon's statuses there read as down until it is back); watching it again"
                    );
                    // Dropped: unregistered on the blocking pool.
                    self.watch = None;
                    self.rewatch_at = Instant::now() + REWATCH_INTERVAL;
                }
            }
        }
    }
}

/// Watches the peer pool's mirroring directory.
pub(crate) struct PoolWatcher {
    watch: MirroringWatch,
}

impl std::fmt::Debug for PoolWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolWatcher").finish_non_exhaustive()
    }
}

impl PoolWatcher {
    /// Watches `rbd_mirroring` of the peer pool. (Watching it also makes our statuses `up`
    /// on the peer: the OSD counts the watchers of that object.)
    pub(crate) async fn new(ctx: &PeerContext) -> rados_ffi::Result<Self> {
        Ok(PoolWatcher { watch: MirroringWatch::new(ctx, Side::Peer).await? })
    }

    /// The peer's images to replay: mirroring enabled, in journal or snapshot mode (global
    /// id → image id).
    pub(crate) async fn mirrored_images(
        &self,
        ctx: &PeerContext,
    ) -> image_replayer::Result<BTreeMap<String, String>> {
        let mut wanted = BTreeMap::new();
        for (image_id, m) in cls::mirror_images(&ctx.remote_io).await? {
            if m.state == MirrorImageState::Enabled
                && matches!(m.mode, MirrorImageMode::Journal | MirrorImageMode::Snapshot)
            {
                wanted.insert(m.global_image_id, image_id);
            }
        }
        Ok(wanted)
    }

    /// Waits for a notification of the peer's `rbd_mirroring` (image enabled, disabled,
    /// removed), or for its watch to be back after it was lost ([`MirroringWatch`]).
    pub(crate) async fn notified(&mut self, ctx: &Arc<PeerContext>) {
        self.watch.notified(ctx).await;
    }
}
