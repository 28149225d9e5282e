//! One tokio task per mirrored image: bootstrap, full sync, journal or snapshot replay,
//! commit-position checkpointing and the image's mirror status.
//!
//! **Status: to come** (issues "Journal-mode mirroring end to end" and "Snapshot-mode
//! mirroring end to end"). It will reach both clusters through a trait implemented over
//! `rados-ffi`, so an in-memory fake can drive it in unit tests, and it will keep the whole
//! replay state of an image in one place that status, metrics and the admin socket read.
#![forbid(unsafe_code)]
