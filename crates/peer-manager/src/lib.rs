//! Pools, peers and image discovery: which images this daemon replays, from where.
//!
//! [`peers`] turns a pool's peer record into a cluster connection the way the stock daemon
//! does (bootstrap-token peers by `mon_host` + key from the config-key store, others by
//! their own conf; ceph-formats.md §5.1). [`pool_replayer`] runs one pool against one peer:
//! both `rbd_mirroring` watches (which make statuses `up`), periodic and notified rescans of
//! the peer's mirrored images, one `image-replayer` task per journal- or snapshot-mode image,
//! the peer ping, the semaphore that bounds initial syncs, and the deletion of local
//! non-primary copies of images the peer stops mirroring (`image_deleter`, §6.4). [`run`]
//! finds every mirrored pool and receiving peer of the local cluster. Not yet here: the
//! leader / instances protocol (§5.5; this daemon acts as the only instance), and reacting to
//! pools and peers added while running.
#![forbid(unsafe_code)]

mod image_deleter;
pub mod peers;
pub mod pool_replayer;

pub use pool_replayer::run;
