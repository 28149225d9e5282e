//! Snapshot-mode mirroring, the pure part: what changed between two snapshots of an image.
//!
//! * [`fast_diff`] computes the objects changed between two snapshots from the object maps
//!   of every snapshot between them (decoded by `rbd_types::object_map`), exactly as librbd's fast-diff
//!   (`object_map::DiffRequest`) does.
//! * [`planner`] decides the snapshot-mode replayer's next step (prune, unlink, sync, idle,
//!   stop) from the local and remote snapshot lists (ceph-formats.md §4.5 steps 2-3).
//! * [`zero`] finds the data runs and zero runs of an object buffer, so that copies keep
//!   holes as holes.
//!
//! It does no I/O of its own: callers (`image-replayer`'s image copy) hand it the bytes they
//! read through `rados-ffi`. Nothing here panics on bytes from the cluster.
#![forbid(unsafe_code)]

pub mod fast_diff;
pub mod planner;
pub mod zero;

pub use fast_diff::{diff_object_maps, DiffError, DiffState, ObjectDiff, SnapshotMap};
pub use zero::{data_runs, is_zero, ZERO_GRANULARITY};
