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
//!   (the default one included), started and stopped as namespaces come and go; it takes
//!   part in the pool's leader election before they start;
//! * `leader` (stock `LeaderWatcher` + `Instances`, §5.5): the `rbd_mirror_leader` lock
//!   (`managed_lock`: librbd's `ManagedLock`), heartbeats, breaking a silent leader's lock,
//!   and, while leading, the live instances;
//! * `namespace_replayer`: one namespace (`pool/ns` to `pool/ns` on the peer):
//!   `rbd_mirroring` watches on both sites (which make statuses `up`), this daemon registered
//!   as an instance (`instance_watcher`: the leader's acquire / release / peer-image-removed
//!   requests, acked when done), the instance replayer, the image deleter; while this
//!   instance leads, the pool watcher, the image map (`image_map`: the `simple` policy, the
//!   persisted map, requests to instances) and the sweep;
//! * `pool_watcher`: the peer's mirrored images of a namespace, rescanned on notification
//!   (debounced 1 s) or every 30 s;
//! * `instance_replayer`: the image replayer tasks, started and stopped;
//! * `image_deleter`: the local non-primary copies of images the peer stops mirroring
//!   (§6.4);
//! * `tasks`: the keyed task sets of `mirror` and `pool_replayer`.
//!
//! Stock and our instances run the same protocol, so any mix of them shares a site.
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
