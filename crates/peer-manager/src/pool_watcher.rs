//! The pool watcher (stock `PoolWatcher`): which images the peer mirrors in this pool,
//! rescanned when the peer's `rbd_mirroring` object is notified (image enabled, disabled,
//! removed), a second after the first of a burst of notifications, and at least every
//! `rbd_mirror_rs_pool_rescan_interval` (30 s, as stock) without one; and
//! [`MirroringWatch`], the watch of a pool's `rbd_mirroring` kept up on either site.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use image_replayer::{cls, PeerContext};
use rados_ffi::{IoCtx, Watch, WatchEvent};
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageState, RBD_MIRRORING};

/// How often a lost `rbd_mirroring` watch is tried again.
const REWATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A watch of a pool's `rbd_mirroring` object, made again when it is lost. The OSD counts
/// the watchers of that object: this daemon's image statuses in the pool read as `up` only
/// while it watches (cls `rbd` `mirror_image_status_get`). The OSD drops a watch whose
/// client was out of reach for longer than the watch timeout (30 s: a partition, an OSD
/// restart); librados then reports `ENOTCONN` and does not make it again itself.
pub(crate) struct MirroringWatch {
    watch: Option<Watch>,
    /// When a lost watch is tried again.
    rewatch_at: Instant,
    /// `local` or `peer`, for the log.
    site: &'static str,
}

impl std::fmt::Debug for MirroringWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroringWatch")
            .field("site", &self.site)
            .field("watching", &self.watch.is_some())
            .finish()
    }
}

impl MirroringWatch {
    /// Watches `rbd_mirroring` of `io`'s pool and namespace.
    pub(crate) async fn new(io: &IoCtx, site: &'static str) -> rados_ffi::Result<Self> {
        Ok(MirroringWatch { watch: Some(io.watch(RBD_MIRRORING).await?), rewatch_at: Instant::now(), site })
    }

    /// Waits for a notification of the object, or for the watch to be back after it was
    /// lost (notifications may have been missed meanwhile); a lost watch is tried again
    /// every [`REWATCH_INTERVAL`]. Cancel-safe but for a watch being made when cancelled,
    /// which is made again at the next call.
    pub(crate) async fn notified(&mut self, io: &IoCtx) {
        loop {
            let Some(watch) = &mut self.watch else {
                tokio::time::sleep_until(self.rewatch_at.into()).await;
                self.rewatch_at = Instant::now() + REWATCH_INTERVAL;
                match io.watch(RBD_MIRRORING).await {
                    Ok(watch) => {
                        tracing::info!(pool = %io.pool_name(), site = self.site, "rbd_mirroring watched again");
                        self.watch = Some(watch);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(pool = %io.pool_name(), site = self.site, error = %e, "cannot watch rbd_mirroring yet");
                        continue;
                    }
                }
            };
            match watch.next().await {
                Some(WatchEvent::Notify { .. }) => return,
                event => {
                    let errno = match event {
                        Some(WatchEvent::Error { errno }) => errno,
                        _ => 0,
                    };
                    tracing::warn!(
                        pool = %io.pool_name(),
                        site = self.site,
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
        Ok(PoolWatcher { watch: MirroringWatch::new(&ctx.remote_io, "peer").await? })
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
    pub(crate) async fn notified(&mut self, ctx: &PeerContext) {
        self.watch.notified(&ctx.remote_io).await;
    }
}
