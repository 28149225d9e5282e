//! The image map (stock `ImageMap` with its `simple` policy, ceph-formats.md §5.5): while
//! this instance leads, which instance replays each image of a pool namespace. The map is
//! persisted in `rbd_mirror_leader`'s omap (`image_map_<global id>`) *before* an instance is
//! told to acquire an image, so a new leader (ours or stock) finds every assignment and no
//! image is replayed twice.
//!
//! [`plan`] is the policy, pure: images no longer mirrored are released; images unmapped or
//! mapped to an instance that is gone go to the least-loaded live instance; and with the
//! `simple` policy, an instance above its share (`images / instances`, at least 1) gives its
//! excess to the others once its images' `rbd_mirror_image_policy_migration_throttle` has
//! passed since they were mapped (what `SimplePolicy::do_shuffle_add_instances` does when
//! instances join). The `none` policy never moves a mapped image.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt};
use image_replayer::{cls, ConfigWatch, LeaderState};
use rados_ffi::IoCtx;
use rbd_types::cls_rbd::MirrorImageMap;
use rbd_types::mirror_notify::{InstanceNotify, PolicyData};
use rbd_types::UTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::instance_watcher::{next_request_id, notify_instance};

/// The image map of the pool namespace `io` is on. When the cls `mirror_image_map_list`
/// fails (it fails as a whole if one record does not decode), the records are read one by
/// one: one that does not decode is logged and removed, so that its image is mapped again,
/// and the map is readable again for every instance, stock ones included.
pub(crate) async fn read_image_map(io: &IoCtx) -> image_replayer::Result<BTreeMap<String, MirrorImageMap>> {
    let listed = match cls::mirror_image_map_list(io).await {
        Ok(map) => return Ok(map),
        Err(e) => e,
    };
    let (map, bad) = cls::mirror_image_map_records(io).await?;
    if bad.is_empty() {
        return Err(listed);
    }
    for (key, error) in &bad {
        tracing::error!(%key, %error, "image map record of rbd_mirror_leader does not decode: removing it (its image is mapped again)");
    }
    let keys: Vec<&str> = bad.iter().map(|(k, _)| k.as_str()).collect();
    if let Err(e) = cls::mirror_image_map_remove_keys(io, &keys).await {
        tracing::warn!(error = %e, "cannot remove the image map records that do not decode");
    }
    Ok(map)
}

/// The policy (`rbd_mirror_image_policy_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Balance by image count.
    Simple,
    /// Map new images to the least-loaded instance; never move one.
    None,
}

impl Policy {
    pub(crate) fn from_config(name: &str) -> Policy {
        if name == "none" {
            Policy::None
        } else {
            Policy::Simple
        }
    }
}

/// One image's current assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) instance_id: String,
    pub(crate) mapped_time: SystemTime,
}

/// What the leader does next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// (image, instance): tell the instance to stop it, then unmap it.
    pub(crate) release: Vec<(String, String)>,
    /// (image, from, to): release from `from` (if alive), map to `to`, acquire there.
    pub(crate) moves: Vec<(String, Option<String>, String)>,
}

/// The next steps for `map`, given the live `instances` and the images that should be
/// replayed (`wanted`), at time `now`.
pub(crate) fn plan(
    map: &BTreeMap<String, Mapping>,
    instances: &BTreeSet<String>,
    wanted: &BTreeSet<String>,
    policy: Policy,
    migration_throttle: Duration,
    now: SystemTime,
) -> Plan {
    let mut out = Plan::default();
    if instances.is_empty() {
        return out;
    }
    let mut load: BTreeMap<&str, Vec<&str>> = instances.iter().map(|i| (i.as_str(), Vec::new())).collect();
    let mut unmapped: Vec<(&str, Option<String>)> = Vec::new();
    for (image, m) in map {
        if !wanted.contains(image) {
            out.release.push((image.clone(), m.instance_id.clone()));
        } else if let Some(images) = load.get_mut(m.instance_id.as_str()) {
            images.push(image);
        } else {
            unmapped.push((image, None));
        }
    }
    unmapped.extend(wanted.iter().filter(|g| !map.contains_key(*g)).map(|g| (g.as_str(), None)));
    let least_loaded = |load: &BTreeMap<&str, Vec<&str>>| -> String {
        load.iter()
            .min_by_key(|(id, images)| (images.len(), *id))
            .map(|(id, _)| id.to_string())
            .unwrap_or_default()
    };
    for (image, from) in unmapped {
        let to = least_loaded(&load);
        if let Some(images) = load.get_mut(to.as_str()) {
            images.push(image);
        }
        out.moves.push((image.to_owned(), from, to));
    }
    if policy == Policy::Simple {
        let total: usize = load.values().map(Vec::len).sum();
        let share = (total / instances.len()).max(1);
        let movable = |image: &str| {
            map.get(image)
                .is_none_or(|m| now.duration_since(m.mapped_time).unwrap_or_default() >= migration_throttle)
        };
        let over: Vec<(String, Vec<String>)> = load
            .iter()
            .filter(|(_, images)| images.len() > share)
            .map(|(id, images)| {
                let excess = images.len() - share;
                let picked =
                    images.iter().filter(|g| movable(g)).take(excess).map(|g| g.to_string()).collect();
                (id.to_string(), picked)
            })
            .collect();
        for (from, images) in over {
            for image in images {
                let to = least_loaded(&load);
                let to_len = load.get(to.as_str()).map_or(0, Vec::len);
                if to_len + 1 >= load.get(from.as_str()).map_or(0, Vec::len) {
                    break; // moving it would not even the load
                }
                if let Some(v) = load.get_mut(from.as_str()) {
                    v.retain(|g| *g != image);
                }
                let moved = image.clone();
                if let Some(v) = load.get_mut(to.as_str()) {
                    // `image` must outlive `load`: find the wanted entry it came from.
                    if let Some(g) = wanted.get(&moved) {
                        v.push(g.as_str());
                    }
                }
                out.moves.push((moved, Some(from.clone()), to));
            }
        }
    }
    out
}

/// How often the leader looks at the map again without a change (a move waiting for its
/// migration throttle, an instance that did not answer).
const REVIEW_INTERVAL: Duration = Duration::from_secs(5);

/// Notification attempts (of 5 s each) before an instance counts as not answering.
const ATTEMPTS: u32 = 6;

/// Images handled at once (each a few RADOS round trips; an instance that does not answer
/// holds only its own images back).
const PARALLEL: usize = 32;

/// The leader's side of one namespace's image map: runs while this instance leads (as
/// `leader` says), from the persisted map; `wanted` carries the images to replay (from the
/// namespace replayer's pool watcher; `None` until its first scan); each image released
/// because it is no longer wanted is sent on `released` once unmapped (its local copy may
/// then be deleted).
pub(crate) struct Mapper {
    pub(crate) io: Arc<IoCtx>,
    pub(crate) my_instance_id: u64,
    pub(crate) config: ConfigWatch,
    pub(crate) leader: watch::Receiver<LeaderState>,
    pub(crate) wanted: watch::Receiver<Option<BTreeSet<String>>>,
    pub(crate) released: mpsc::UnboundedSender<String>,
}

impl Mapper {
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        loop {
            // Wait to lead.
            while !self.leader.borrow_and_update().leader {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = self.leader.changed() => if r.is_err() { return },
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = self.lead() => {}
            }
        }
    }

    /// Maps images while leading; returns when leadership ends.
    async fn lead(&mut self) {
        let mut map = loop {
            match read_image_map(&self.io).await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the image map; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if !self.leader.borrow().leader {
                        return;
                    }
                }
            }
        };
        let mut map: BTreeMap<String, Mapping> = std::mem::take(&mut map)
            .into_iter()
            .map(|(g, m)| {
                (g, Mapping { instance_id: m.instance_id, mapped_time: m.mapped_time.to_system_time() })
            })
            .collect();
        tracing::info!(images = map.len(), "leading: image map loaded");
        // A new leader tells every live instance again what it replays (harmless when it
        // already does; needed when the old leader died between map update and acquire).
        let mut confirmed = false;
        loop {
            let state = self.leader.borrow_and_update().clone();
            if !state.leader {
                return;
            }
            let instances: BTreeSet<String> = state.instances.iter().cloned().collect();
            let wanted = self.wanted.borrow_and_update().clone();
            if let Some(wanted) = wanted {
                if !confirmed {
                    let this = &*self;
                    let confirm =
                        map.iter().filter(|(g, m)| instances.contains(&m.instance_id) && wanted.contains(*g));
                    stream::iter(confirm)
                        .for_each_concurrent(PARALLEL, |(g, m)| async move {
                            this.acquire(g, &m.instance_id).await;
                        })
                        .await;
                    confirmed = true;
                }
                let (policy, throttle) = {
                    let c = self.config.borrow();
                    (
                        Policy::from_config(&c.rbd_mirror_image_policy_type),
                        c.rbd_mirror_image_policy_migration_throttle,
                    )
                };
                let p = plan(&map, &instances, &wanted, policy, throttle, SystemTime::now());
                self.execute(&mut map, &instances, p).await;
            }
            tokio::select! {
                r = self.leader.changed() => if r.is_err() { return },
                r = self.wanted.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(REVIEW_INTERVAL) => {}
            }
        }
    }

    async fn execute(&self, map: &mut BTreeMap<String, Mapping>, instances: &BTreeSet<String>, p: Plan) {
        let released: Vec<String> = stream::iter(p.release)
            .map(|(global_id, instance_id)| async move {
                if instances.contains(&instance_id) && !self.release(&global_id, &instance_id).await {
                    return None;
                }
                if let Err(e) = cls::mirror_image_map_remove(&self.io, &global_id).await {
                    tracing::warn!(%global_id, error = %e, "cannot remove the image from the image map");
                    return None;
                }
                tracing::info!(%global_id, %instance_id, "image no longer mirrored: released and unmapped");
                Some(global_id)
            })
            .buffer_unordered(PARALLEL)
            .filter_map(std::future::ready)
            .collect()
            .await;
        for global_id in released {
            map.remove(&global_id);
            let _ = self.released.send(global_id);
        }
        let mapped: Vec<(String, Mapping)> = stream::iter(p.moves)
            .map(|(global_id, from, to)| async move {
                if let Some(from) = from.as_ref().filter(|f| instances.contains(*f)) {
                    if !self.release(&global_id, from).await {
                        return None;
                    }
                }
                let now = SystemTime::now();
                let entry = MirrorImageMap {
                    instance_id: to.clone(),
                    mapped_time: UTime::from_system_time(now),
                    data: PolicyData::none(),
                };
                if let Err(e) = cls::mirror_image_map_update(&self.io, &global_id, &entry).await {
                    tracing::warn!(%global_id, error = %e, "cannot update the image map");
                    return None;
                }
                tracing::info!(%global_id, from = ?from, to = %to, "image mapped");
                // Mapped even when the instance does not answer: the acquire is sent again
                // by the next leader, and the instance is removed (its images remapped) if
                // it is gone.
                self.acquire(&global_id, &to).await;
                Some((global_id, Mapping { instance_id: to, mapped_time: now }))
            })
            .buffer_unordered(PARALLEL)
            .filter_map(std::future::ready)
            .collect()
            .await;
        map.extend(mapped);
    }

    async fn acquire(&self, global_id: &str, instance_id: &str) -> bool {
        let n = InstanceNotify::ImageAcquire {
            request_id: next_request_id(),
            global_image_id: global_id.to_owned(),
        };
        self.ask(global_id, instance_id, &n).await
    }

    async fn release(&self, global_id: &str, instance_id: &str) -> bool {
        let n = InstanceNotify::ImageRelease {
            request_id: next_request_id(),
            global_image_id: global_id.to_owned(),
        };
        self.ask(global_id, instance_id, &n).await
    }

    async fn ask(&self, global_id: &str, instance_id: &str, n: &InstanceNotify) -> bool {
        match notify_instance(&self.io, self.my_instance_id, instance_id, n, ATTEMPTS).await {
            Ok(0) => true,
            Ok(r) => {
                tracing::warn!(%global_id, %instance_id, ret = r, ?n, "instance refused the request");
                false
            }
            Err(e) => {
                tracing::warn!(%global_id, %instance_id, error = %e, "instance did not answer");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn mapped(v: &[(&str, &str)], at: SystemTime) -> BTreeMap<String, Mapping> {
        v.iter()
            .map(|(g, i)| (g.to_string(), Mapping { instance_id: i.to_string(), mapped_time: at }))
            .collect()
    }

    fn apply(map: &mut BTreeMap<String, Mapping>, p: &Plan, now: SystemTime) {
        for (g, _) in &p.release {
            map.remove(g);
        }
        for (g, _, to) in &p.moves {
            map.insert(g.clone(), Mapping { instance_id: to.clone(), mapped_time: now });
        }
    }

    #[test]
    fn new_images_spread_over_instances() {
        let now = SystemTime::now();
        let wanted = set(&["a", "b", "c", "d", "e"]);
        let p = plan(&BTreeMap::new(), &set(&["1", "2"]), &wanted, Policy::Simple, Duration::ZERO, now);
        assert!(p.release.is_empty());
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for (_, from, to) in &p.moves {
            assert!(from.is_none());
            *per.entry(to.clone()).or_default() += 1;
        }
        assert_eq!(per.values().copied().collect::<Vec<_>>(), [3, 2]);
        let mut map = BTreeMap::new();
        apply(&mut map, &p, now);
        // Stable: planning again changes nothing.
        assert_eq!(
            plan(&map, &set(&["1", "2"]), &wanted, Policy::Simple, Duration::ZERO, now),
            Plan::default()
        );
    }

    #[test]
    fn gone_images_are_released_and_dead_instances_lose_theirs() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let map = mapped(&[("a", "1"), ("b", "2"), ("c", "2"), ("x", "1")], t0);
        let p =
            plan(&map, &set(&["1"]), &set(&["a", "b", "c"]), Policy::Simple, Duration::from_secs(300), t0);
        assert_eq!(p.release, [("x".to_string(), "1".to_string())]);
        let moved: BTreeSet<_> =
            p.moves.iter().map(|(g, from, to)| (g.as_str(), from.clone(), to.as_str())).collect();
        assert_eq!(moved, [("b", None, "1"), ("c", None, "1")].into_iter().collect());
    }

    #[test]
    fn a_new_instance_takes_its_share_after_the_migration_throttle() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let map = mapped(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")], t0);
        let wanted = set(&["a", "b", "c", "d"]);
        let two = set(&["1", "2"]);
        let throttle = Duration::from_secs(300);
        // Mapped 10 s ago: not yet.
        assert_eq!(
            plan(&map, &two, &wanted, Policy::Simple, throttle, t0 + Duration::from_secs(10)),
            Plan::default()
        );
        let later = t0 + Duration::from_secs(301);
        let p = plan(&map, &two, &wanted, Policy::Simple, throttle, later);
        assert_eq!(p.moves.len(), 2);
        assert!(p.moves.iter().all(|(_, from, to)| from.as_deref() == Some("1") && to == "2"));
        // The none policy never moves.
        assert_eq!(plan(&map, &two, &wanted, Policy::None, throttle, later), Plan::default());
        // Three images over two instances: 2 + 1, no ping-pong.
        let map3 = mapped(&[("a", "1"), ("b", "1"), ("c", "2")], t0);
        assert_eq!(
            plan(&map3, &two, &set(&["a", "b", "c"]), Policy::Simple, Duration::ZERO, later),
            Plan::default()
        );
    }

    #[test]
    fn no_instance_no_plan() {
        let now = SystemTime::now();
        assert_eq!(
            plan(&BTreeMap::new(), &BTreeSet::new(), &set(&["a"]), Policy::Simple, Duration::ZERO, now),
            Plan::default()
        );
    }
}
