//! Per-image metrics under the names Ceph's mgr `prometheus` module gives the stock
//! daemon's perf counters (`ceph_rbd_mirror_image_replay{pool,namespace,image}`,
//! `ceph_rbd_mirror_replay`, ... as the mgr exports them for the stock daemon), plus
//! counters of our own under `rbd_mirror_rs_*` that an operator needs to tell a resume from
//! a full resync. The handles are resolved once per image replay attempt, so counting an
//! entry is one atomic add, not a registry lookup. Gauges of the images' state (entries
//! behind, lag, state) are not kept here: the daemon computes them from the state registry
//! at scrape time ([`crate::registry`]), so a stopped image leaves no series behind.
//! Exporting is the daemon's job.

use std::time::Duration;

use metrics::{Counter, Label};

/// Daemon-wide: entries replayed (stock `rbd_mirror` perf counter `replay`).
pub const REPLAY: &str = "ceph_rbd_mirror_replay";
/// Daemon-wide: bytes replayed (stock `replay_bytes`).
pub const REPLAY_BYTES: &str = "ceph_rbd_mirror_replay_bytes";
/// Per image: entries replayed (stock `rbd_mirror_image_<pool>/<image>` counter `replay`).
pub const IMAGE_REPLAY: &str = "ceph_rbd_mirror_image_replay";
/// Per image: bytes replayed.
pub const IMAGE_REPLAY_BYTES: &str = "ceph_rbd_mirror_image_replay_bytes";
/// Per image, computed at scrape time: entries of the primary's journal not yet replayed.
pub const IMAGE_ENTRIES_BEHIND_PRIMARY: &str = "rbd_mirror_rs_image_entries_behind_primary";
/// Per image, computed at scrape time: seconds behind the primary, when known.
pub const IMAGE_LAG_SECONDS: &str = "rbd_mirror_rs_image_lag_seconds";
/// Per image and state, computed at scrape time: 1 for the image's current mirror state.
pub const IMAGE_STATE: &str = "rbd_mirror_rs_image_state";
/// Per image, computed at scrape time: when the secondary last caught up with a point of the
/// primary (journal mode: a commit position written; snapshot mode: a mirror snapshot
/// synced), in seconds since the epoch.
pub const IMAGE_LAST_SYNC_TIMESTAMP: &str = "rbd_mirror_rs_image_last_sync_timestamp_seconds";
/// Per image, computed at scrape time (snapshot mode): bytes copied by the last snapshot sync.
pub const IMAGE_LAST_SYNC_BYTES: &str = "rbd_mirror_rs_image_last_sync_bytes";
/// Per pool, computed at scrape time: images this daemon replays.
pub const POOL_IMAGES: &str = "rbd_mirror_rs_pool_images";
/// Per image: commit positions written to the primary's journal.
pub const IMAGE_JOURNAL_COMMITS: &str = "rbd_mirror_rs_image_journal_commits";
/// Per image: full (initial) syncs completed.
pub const IMAGE_FULL_SYNCS: &str = "rbd_mirror_rs_image_full_syncs";
/// Per image: replays started from a committed position, without a sync.
pub const IMAGE_REPLAY_RESUMED: &str = "rbd_mirror_rs_image_replay_resumed";
/// Per image: replay attempts that ended in an error.
pub const IMAGE_ERRORS: &str = "rbd_mirror_rs_image_errors";

/// Daemon-wide: bytes synced by snapshot replay (stock `rbd_mirror_snapshot` perf counter
/// `replay_bytes`, exported by the mgr as this name).
pub const SNAPSHOT_REPLAY_BYTES: &str = "ceph_rbd_mirror_snapshot_replay_bytes";
/// Daemon-wide: snapshots synced (stock `snapshots`).
pub const SNAPSHOT_SNAPSHOTS: &str = "ceph_rbd_mirror_snapshot_snapshots";
/// Daemon-wide: seconds per snapshot sync (stock `snapshots_time`; the exporter adds the
/// `_sum` and `_count` series the mgr exports).
pub const SNAPSHOT_SNAPSHOTS_TIME: &str = "ceph_rbd_mirror_snapshot_snapshots_time";
/// Per image: bytes synced by snapshot replay.
pub const SNAPSHOT_IMAGE_REPLAY_BYTES: &str = "ceph_rbd_mirror_snapshot_image_replay_bytes";
/// Per image: snapshots synced.
pub const SNAPSHOT_IMAGE_SNAPSHOTS: &str = "ceph_rbd_mirror_snapshot_image_snapshots";

/// Per peer connection (`pool`, `peer` labels), computed at scrape time: the bandwidth cap
/// `rbd_mirror_rs_peer_bandwidth_limit` in bytes/s (0: none).
pub const PEER_BANDWIDTH_LIMIT: &str = "rbd_mirror_rs_peer_bandwidth_limit_bytes";
/// Per peer connection, computed at scrape time: seconds its image replayers waited on a
/// bandwidth cap (the peer's or an image's), summed over the replayers.
pub const PEER_BANDWIDTH_WAIT: &str = "rbd_mirror_rs_peer_bandwidth_wait_seconds";
/// Per peer connection, computed at scrape time: bytes read from the primary whose reader
/// then waited on a bandwidth cap.
pub const PEER_BANDWIDTH_THROTTLED_BYTES: &str = "rbd_mirror_rs_peer_bandwidth_throttled_bytes";

/// Per pool (`pool` label): local non-primary images deleted because the peer stopped
/// mirroring them.
pub const IMAGE_DELETIONS: &str = "rbd_mirror_rs_image_deletions";

/// Registers the help texts (the stock perf counters' descriptions where they exist); call
/// once after installing a recorder.
pub fn describe() {
    metrics::describe_counter!(SNAPSHOT_REPLAY_BYTES, "Replayed data");
    metrics::describe_counter!(SNAPSHOT_SNAPSHOTS, "Snapshots");
    metrics::describe_histogram!(SNAPSHOT_SNAPSHOTS_TIME, metrics::Unit::Seconds, "Snapshots time");
    metrics::describe_counter!(SNAPSHOT_IMAGE_REPLAY_BYTES, "Replayed data");
    metrics::describe_counter!(SNAPSHOT_IMAGE_SNAPSHOTS, "Snapshots");
    metrics::describe_counter!(REPLAY, "Replays");
    metrics::describe_counter!(REPLAY_BYTES, "Replayed data");
    metrics::describe_counter!(IMAGE_REPLAY, "Replays");
    metrics::describe_counter!(IMAGE_REPLAY_BYTES, "Replayed data");
    metrics::describe_counter!(IMAGE_JOURNAL_COMMITS, "Commit positions written to the primary's journal");
    metrics::describe_counter!(IMAGE_FULL_SYNCS, "Full image syncs completed");
    metrics::describe_counter!(IMAGE_REPLAY_RESUMED, "Replays resumed from a committed position");
    metrics::describe_counter!(IMAGE_ERRORS, "Replay attempts ended in error");
    metrics::describe_counter!(IMAGE_DELETIONS, "Local images deleted after the peer stopped mirroring them");
}

/// Metric handles of one image, labelled as the stock daemon's are.
#[derive(Debug, Clone)]
pub struct ImageMetrics {
    replay: Counter,
    replay_bytes: Counter,
    image_replay: Counter,
    image_replay_bytes: Counter,
    /// Commit positions written.
    pub journal_commits: Counter,
    /// Full syncs completed.
    pub full_syncs: Counter,
    /// Replays resumed from a committed position.
    pub replay_resumed: Counter,
    /// Attempts ended in error.
    pub errors: Counter,
}

/// The labels of a per-image series, as the mgr exports the stock daemon's.
fn image_labels(pool: &str, namespace: &str, image: &str) -> Vec<Label> {
    vec![
        Label::new("pool", pool.to_owned()),
        Label::new("namespace", namespace.to_owned()),
        Label::new("image", image.to_owned()),
    ]
}

/// Counts one snapshot-mode sync of image `image` of `pool`/`namespace`: `bytes` copied in
/// `elapsed`; `full` for an initial sync.
pub fn snapshot_synced(pool: &str, namespace: &str, image: &str, bytes: u64, elapsed: Duration, full: bool) {
    let labels = image_labels(pool, namespace, image);
    metrics::counter!(SNAPSHOT_REPLAY_BYTES).increment(bytes);
    metrics::counter!(SNAPSHOT_SNAPSHOTS).increment(1);
    metrics::histogram!(SNAPSHOT_SNAPSHOTS_TIME).record(elapsed.as_secs_f64());
    metrics::counter!(SNAPSHOT_IMAGE_REPLAY_BYTES, labels.clone()).increment(bytes);
    metrics::counter!(SNAPSHOT_IMAGE_SNAPSHOTS, labels.clone()).increment(1);
    if full {
        metrics::counter!(IMAGE_FULL_SYNCS, labels).increment(1);
    }
}

impl ImageMetrics {
    /// Handles for image `image` of `pool`/`namespace`.
    pub fn new(pool: &str, namespace: &str, image: &str) -> ImageMetrics {
        let labels = image_labels(pool, namespace, image);
        let l = || labels.clone();
        ImageMetrics {
            replay: metrics::counter!(REPLAY),
            replay_bytes: metrics::counter!(REPLAY_BYTES),
            image_replay: metrics::counter!(IMAGE_REPLAY, l()),
            image_replay_bytes: metrics::counter!(IMAGE_REPLAY_BYTES, l()),
            journal_commits: metrics::counter!(IMAGE_JOURNAL_COMMITS, l()),
            full_syncs: metrics::counter!(IMAGE_FULL_SYNCS, l()),
            replay_resumed: metrics::counter!(IMAGE_REPLAY_RESUMED, l()),
            errors: metrics::counter!(IMAGE_ERRORS, l()),
        }
    }

    /// Counts `entries` replayed entries.
    pub fn entries_replayed(&self, entries: u64) {
        self.replay.increment(entries);
        self.image_replay.increment(entries);
    }

    /// Counts `bytes` replayed bytes.
    pub fn bytes_replayed(&self, bytes: u64) {
        self.replay_bytes.increment(bytes);
        self.image_replay_bytes.increment(bytes);
    }
}
