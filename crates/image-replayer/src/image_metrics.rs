//! Per-image metrics under the names Ceph's mgr `prometheus` module gives the stock
//! daemon's perf counters (`ceph_rbd_mirror_image_replay{pool,namespace,image}`,
//! `ceph_rbd_mirror_replay`, ... as in `../shared/ceph/reference/prometheus-rbd-mirror-metrics.txt`),
//! plus a few of our own under the same prefix that an operator needs to tell a resume
//! from a full resync. The handles are resolved once per image replay attempt, so counting
//! an entry is one atomic add, not a registry lookup. Exporting them is the daemon's job.

use metrics::{Counter, Gauge, Label};

/// Daemon-wide: entries replayed (stock `rbd_mirror` perf counter `replay`).
pub const REPLAY: &str = "ceph_rbd_mirror_replay";
/// Daemon-wide: bytes replayed (stock `replay_bytes`).
pub const REPLAY_BYTES: &str = "ceph_rbd_mirror_replay_bytes";
/// Per image: entries replayed (stock `rbd_mirror_image_<pool>/<image>` counter `replay`).
pub const IMAGE_REPLAY: &str = "ceph_rbd_mirror_image_replay";
/// Per image: bytes replayed.
pub const IMAGE_REPLAY_BYTES: &str = "ceph_rbd_mirror_image_replay_bytes";
/// Per image: entries of the primary's journal not yet replayed (ours).
pub const IMAGE_ENTRIES_BEHIND_PRIMARY: &str = "ceph_rbd_mirror_image_entries_behind_primary";
/// Per image: commit positions written to the primary's journal (ours).
pub const IMAGE_JOURNAL_COMMITS: &str = "ceph_rbd_mirror_image_journal_commits";
/// Per image: full (initial) syncs completed (ours).
pub const IMAGE_FULL_SYNCS: &str = "ceph_rbd_mirror_image_full_syncs";
/// Per image: replays started from a committed position, without a sync (ours).
pub const IMAGE_REPLAY_RESUMED: &str = "ceph_rbd_mirror_image_replay_resumed";
/// Per image: replay attempts that ended in an error (ours).
pub const IMAGE_ERRORS: &str = "ceph_rbd_mirror_image_errors";

/// Registers the help texts (the stock perf counters' descriptions where they exist); call
/// once after installing a recorder.
pub fn describe() {
    metrics::describe_counter!(REPLAY, "Replays");
    metrics::describe_counter!(REPLAY_BYTES, "Replayed data");
    metrics::describe_counter!(IMAGE_REPLAY, "Replays");
    metrics::describe_counter!(IMAGE_REPLAY_BYTES, "Replayed data");
    metrics::describe_gauge!(IMAGE_ENTRIES_BEHIND_PRIMARY, "Journal entries not yet replayed");
    metrics::describe_counter!(IMAGE_JOURNAL_COMMITS, "Commit positions written to the primary's journal");
    metrics::describe_counter!(IMAGE_FULL_SYNCS, "Full image syncs completed");
    metrics::describe_counter!(IMAGE_REPLAY_RESUMED, "Replays resumed from a committed position");
    metrics::describe_counter!(IMAGE_ERRORS, "Replay attempts ended in error");
}

/// Metric handles of one image, labelled as the stock daemon's are.
#[derive(Debug, Clone)]
pub struct ImageMetrics {
    replay: Counter,
    replay_bytes: Counter,
    image_replay: Counter,
    image_replay_bytes: Counter,
    /// Entries behind the primary, set at each status report.
    pub entries_behind_primary: Gauge,
    /// Commit positions written.
    pub journal_commits: Counter,
    /// Full syncs completed.
    pub full_syncs: Counter,
    /// Replays resumed from a committed position.
    pub replay_resumed: Counter,
    /// Attempts ended in error.
    pub errors: Counter,
}

impl ImageMetrics {
    /// Handles for image `image` of `pool`/`namespace`.
    pub fn new(pool: &str, namespace: &str, image: &str) -> ImageMetrics {
        let labels = [
            Label::new("pool", pool.to_owned()),
            Label::new("namespace", namespace.to_owned()),
            Label::new("image", image.to_owned()),
        ];
        let l = || labels.to_vec();
        ImageMetrics {
            replay: metrics::counter!(REPLAY),
            replay_bytes: metrics::counter!(REPLAY_BYTES),
            image_replay: metrics::counter!(IMAGE_REPLAY, l()),
            image_replay_bytes: metrics::counter!(IMAGE_REPLAY_BYTES, l()),
            entries_behind_primary: metrics::gauge!(IMAGE_ENTRIES_BEHIND_PRIMARY, l()),
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
