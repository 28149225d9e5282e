//! One tokio task per mirrored image: bootstrap, initial sync, journal or snapshot replay,
//! commit-position checkpointing and the image's mirror status (ceph-formats.md §3–§5.6).
//!
//! Entry point: [`run`], given a [`PeerContext`] (both clusters, the pool, both mirror
//! uuids, the sync semaphore) shared by every image of a pool and peer. It does not discover
//! images or peers (that is `peer-manager`) and does not build a runtime. Its folders name
//! its concerns:
//!
//! * `replayer`: the task: a retry loop around one attempt of the image's mode;
//! * `journal/`: journal mode: bootstrap (our journal client, the initial sync), replay in
//!   windows (`replay`), the durable-prefix bookkeeping, the batched wake-ups;
//! * `snapshot/`: snapshot mode: the planner's steps performed (sync, prune, unlink);
//! * `local/`: the secondary image: found or created for either mode, written through
//!   librados (`image`, because librbd refuses writes to non-primary images; per-object
//!   write plans in `write_batch`), deleted (`deleter`), its resync flag;
//! * `copy`: the object-by-object copy engine of initial and snapshot syncs;
//! * `status`: the mirror status written on both sites; [`metrics`]: the exported series;
//!   [`cls`]: the cls `rbd` calls (encodings are `rbd_types::cls_rbd`).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use rados_ffi::{IoCtx, Rados};

pub mod bandwidth;
pub mod cls;
pub mod config;
mod copy;
mod error;
mod journal;
mod local;
pub mod metrics;
pub mod registry;
mod replayer;
mod snapshot;
mod status;
mod throttle;

pub use bandwidth::{Bandwidth, ImageBandwidth};
pub use config::{ConfigHandle, ConfigWatch, MirrorConfig};
pub use copy::{bytes_to_copy, copy_image, CopyProgress, CopyRange, CopyStats, LocalSnapContext};
pub use error::{ErrorKind, ReplayError, Result};
pub use local::deleter::{
    decide, local_role, trash_move, trash_purge, trashed_images, Disposition, LocalRole, Trashed,
};
pub use local::image::LocalImage;
pub use local::{is_primary, non_primary_snapshot_name};
pub use registry::{
    Deletion, Deletions, ImageHandle, ImageKey, ImageState, Lag, LeaderState, PoolState, Registry,
};
pub use replayer::spawn;
pub use status::StatusBook;
pub use throttle::Throttle;

/// How one attempt of an image's replay ended (an error ends it too).
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Stopped by cancellation.
    Cancelled,
    /// Retry after this long (the status says why).
    RetryAfter(Duration),
}

/// Everything the replayers of one pool and one peer share.
#[derive(Debug)]
pub struct PeerContext {
    /// The local (secondary) cluster.
    pub local: Rados,
    /// The peer (primary) cluster.
    pub remote: Rados,
    /// Pool name (the same on both sites).
    pub pool: String,
    /// RADOS namespace ("" for the default).
    pub namespace: String,
    /// The local pool, for cls calls and statuses.
    pub local_io: IoCtx,
    /// The remote pool, for cls calls and statuses.
    pub remote_io: IoCtx,
    /// The local pool's mirror uuid (our journal client id on the primary).
    pub local_mirror_uuid: String,
    /// The remote pool's mirror uuid (owner of the local images' journal tags).
    pub remote_mirror_uuid: String,
    /// The daemon's configuration, as it changes.
    pub config_watch: ConfigWatch,
    /// Bounds concurrent image syncs (`rbd_mirror_concurrent_image_syncs`).
    pub sync_slots: Arc<Throttle>,
    /// The peer connection's bandwidth cap (`rbd_mirror_rs_peer_bandwidth_limit`), shared
    /// by its image replayers.
    pub bandwidth: Arc<Bandwidth>,
    /// The statuses written for this namespace's images, refreshed in batches
    /// ([`StatusBook::run`], started by whoever serves the namespace).
    pub statuses: Arc<StatusBook>,
    /// Since when the primary's cluster has not answered the pool's `mirror_peer_ping`
    /// (none while it answers; the pool replayer pings it): snapshot replay says so in the
    /// image's status while it waits for the primary.
    pub primary_silent: tokio::sync::watch::Receiver<Option<std::time::Instant>>,
}

impl PeerContext {
    /// The configuration now (read it where it is used: it may change at runtime).
    pub fn config(&self) -> Arc<MirrorConfig> {
        self.config_watch.borrow().clone()
    }

    /// The peer sites of the remote pool.
    pub async fn remote_peer_sites(&self) -> rados_ffi::Result<Vec<rados_ffi::rbd::MirrorPeerSite>> {
        peer_sites(&self.remote, &self.remote_io, &self.pool, &self.namespace).await
    }

    /// The peer sites of the local pool.
    pub async fn local_peer_sites(&self) -> rados_ffi::Result<Vec<rados_ffi::rbd::MirrorPeerSite>> {
        peer_sites(&self.local, &self.local_io, &self.pool, &self.namespace).await
    }
}

/// A pool's peers are recorded in its default namespace's `rbd_mirroring` only (a
/// namespace's has none; librbd reads them there for an image of any namespace, e.g. for
/// a mirror snapshot's peer uuids).
async fn peer_sites(
    cluster: &Rados,
    io: &IoCtx,
    pool: &str,
    namespace: &str,
) -> rados_ffi::Result<Vec<rados_ffi::rbd::MirrorPeerSite>> {
    if namespace.is_empty() {
        io.mirror_peer_sites().await
    } else {
        cluster.ioctx(pool, "").await?.mirror_peer_sites().await
    }
}
