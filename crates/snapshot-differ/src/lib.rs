//! Snapshot-mode mirroring: mirror snapshots and the extents that changed between them.
//!
//! **Status: to come** (issue "Snapshot-mode mirroring end to end"). This crate will own
//! decoding of cls_rbd snapshot namespaces (ceph-formats.md §4.1), the selection of the
//! next primary mirror snapshot to sync (§4.5) and the computation of changed extents
//! from object maps / fast-diff or whole-object comparison. It does no I/O of its own:
//! callers hand it the bytes they read through `rados-ffi`.
#![forbid(unsafe_code)]

pub mod planner;
