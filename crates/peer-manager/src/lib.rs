//! Pools, peers and image discovery: which images this daemon replays, from where. Its
//! modules follow the stock daemon's seams:
//!
//! * [`discovery`]: the mirrored pools of the local cluster, their receiving peers, and
//!   how a peer is reached (bootstrap-token peers by `mon_host` + key from the config-key
//!   store, others by their own conf; ceph-formats.md §5.1); shared with `check` and the DR
//!   commands;
//! * `mirror` ([`run`]): one pool replayer per mirrored pool and receiving peer;
//! * `pool_replayer`: one pool against one peer: connection, `rbd_mirroring` watches (which
//!   make statuses `up`), the peer ping, the sync semaphore;
//! * `pool_watcher`: the peer's mirrored images, rescanned on notification or every 5 s;
//! * `instance_replayer`: the image replayer tasks, started and stopped;
//! * `image_deleter`: the local non-primary copies of images the peer stops mirroring
//!   (§6.4).
//!
//! Not yet here, and where they go: the leader / instances / image-map protocol (§5.5) as
//! `leader`, `instances` and `image_map` modules beside `pool_replayer` (today this daemon
//! acts as the only instance of its site), and reacting to pools and peers added while
//! running (in `mirror`).
#![forbid(unsafe_code)]

pub mod discovery;
mod image_deleter;
mod image_map;
mod instance_replayer;
mod instance_watcher;
mod leader;
mod managed_lock;
mod mirror;
mod pool_replayer;
mod pool_watcher;

pub use mirror::run;
