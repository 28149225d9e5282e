//! The pool watcher (stock `PoolWatcher`): which images the peer mirrors in this pool,
//! rescanned when the peer's `rbd_mirroring` object is notified (image enabled, disabled,
//! removed), a second after the first of a burst of notifications, and at least every
//! `rbd_mirror_rs_pool_rescan_interval` (30 s, as stock) without one.

use std::collections::BTreeMap;

use image_replayer::{cls, PeerContext};
use rados_ffi::Watch;
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageState, RBD_MIRRORING};

/// Watches the peer pool's mirroring directory.
pub(crate) struct PoolWatcher {
    watch: Watch,
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
        Ok(PoolWatcher { watch: ctx.remote_io.watch(RBD_MIRRORING).await? })
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
    /// removed); a closed watch never resolves (the rescan timer still runs). Cancel-safe.
    pub(crate) async fn notified(&mut self) {
        if self.watch.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}
