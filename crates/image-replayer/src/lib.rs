//! One tokio task per mirrored image: bootstrap, initial sync, journal replay,
//! commit-position checkpointing and the image's mirror status (ceph-formats.md §3.5–3.8,
//! §5.6).
//!
//! Entry point: [`image_replayer::run`], given a [`PeerContext`] (both clusters, the pool,
//! both mirror uuids, the sync semaphore) shared by every image of a pool and peer. The
//! secondary image is written through librados ([`local_image`]) because librbd refuses
//! writes to non-primary images; cls `rbd` encodings are in [`cls_rbd`], image-to-object
//! mapping in [`striping`]. It does not discover images or peers (that is `peer-manager`)
//! and does not build a runtime. Snapshot-mode replay is in [`snapshot_replay`].
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use rados_ffi::{IoCtx, Rados};
use tokio::sync::Semaphore;

pub mod bootstrap;
pub mod cls;

pub mod error;
pub mod image_copy;
pub mod image_deleter;
pub mod image_metrics;
pub mod image_replayer;
pub mod journal_replay;
pub mod local_image;
pub mod snapshot_replay;
pub mod status;

pub mod wake_batch;
pub mod write_batch;

pub use error::{ReplayError, Result};
pub use status::ImageReplayerState;

/// Timings of the replayers (Ceph option in brackets where one exists).
#[derive(Debug, Clone)]
pub struct ReplayerConfig {
    /// Longest time between two commit-position writes while entries are replayed
    /// (`rbd_mirror_journal_commit_age`, stock default 5 s; ours 1 s).
    pub commit_interval: Duration,
    /// Longest wait between two looks at the primary's journal without a notification
    /// (`rbd_mirror_journal_poll_age`, stock default 5 s).
    pub poll_interval: Duration,
    /// Status refresh while replaying (stock: 10 s).
    pub status_interval: Duration,
    /// Wait before retrying an image whose replay failed.
    pub retry_interval: Duration,
    /// Wait before re-checking an image whose roles forbid replay (remote non-primary,
    /// local primary).
    pub role_check_interval: Duration,
}

impl Default for ReplayerConfig {
    fn default() -> Self {
        ReplayerConfig {
            commit_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            status_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(30),
            role_check_interval: Duration::from_secs(5),
        }
    }
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
    /// Timings.
    pub config: ReplayerConfig,
    /// Bounds concurrent initial syncs (`rbd_mirror_concurrent_image_syncs`, default 5).
    pub sync_slots: Arc<Semaphore>,
}
