//! Pools, peers and image discovery: which images this daemon replays, from where. Its
//! modules follow the stock daemon's seams:
//!
//! * [`discovery`]: the mirrored pools of the local cluster, their receiving peers, and
//!   how a peer is reached (bootstrap-token peers by `mon_host` + key from the config-key
//!   store, others by their own conf; ceph-formats.md §5.1); shared with `check` and the DR
//!   commands;
//! * `mirror` ([`run`]): one pool replayer per mirrored pool and receiving peer, kept in
//!   step with the cluster every `rbd_mirror_rs_pool_refresh_interval` (1 s): pools whose
//!   mirroring is enabled or disabled, pools created or removed, peers added or removed;
//! * `pool_replayer`: one pool against one peer: connection, both mirror uuids, the peer
//!   ping, the sync slots, and one namespace replayer per namespace with mirroring enabled
//!   (the default one included), started and stopped as namespaces come and go; the place
//!   of the leader lock to come;
//! * `namespace_replayer`: one namespace (`pool/ns` to `pool/ns` on the peer):
//!   `rbd_mirroring` watches on both sites (which make statuses `up`), the pool watcher, the
//!   instance replayer, the image deleter and the start-up sweep;
//! * `pool_watcher`: the peer's mirrored images of a namespace, rescanned on notification or
//!   every 5 s;
//! * `instance_replayer`: the image replayer tasks, started and stopped;
//! * `image_deleter`: the local non-primary copies of images the peer stops mirroring
//!   (§6.4);
//! * `tasks`: the keyed task sets of `mirror` and `pool_replayer`.
//!
//! Not yet here, and where they go: the leader / instances / image-map protocol (§5.5) as
//! `leader`, `instances` and `image_map` modules beside `pool_replayer` (today this daemon
//! acts as the only instance of its site); the leader lock is taken in `pool_replayer`,
//! the image map consulted where `namespace_replayer` starts an image replayer.
#![forbid(unsafe_code)]

pub mod discovery;
mod image_deleter;
mod image_map;
mod instance_replayer;
mod instance_watcher;
mod leader;
mod managed_lock;
mod mirror;
mod namespace_replayer;
mod pool_replayer;
mod pool_watcher;
mod tasks;

pub use mirror::run;
