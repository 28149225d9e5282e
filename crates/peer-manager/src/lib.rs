//! Pools, peers and image discovery; leader / instances; bounded concurrency.
//!
//! **Status: to come.** Today the only pool-level logic the daemon needs (reading a pool's
//! mirroring configuration for `rbd-mirror-rs check`) lives in `rados-ffi`'s librbd
//! wrappers. This crate will own the per-pool replayers, peer connections (bootstrap-token
//! peers from the config-key store, ceph-formats.md §5.1), the leader lock and image
//! assignment (§5.5), and the semaphores that bound image syncs.
#![forbid(unsafe_code)]
