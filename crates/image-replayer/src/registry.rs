//! The one per-image state registry of the daemon: what every image replayer last reported,
//! keyed by pool, RADOS namespace and global image id, and what every pool replayer reports
//! of its pool and peer.
//!
//! Writers: the image replayer (through its [`ImageHandle`]: the status publisher sets the
//! state and description, replay its counters, position and lag) and the pool replayer
//! (registers and removes images, sets pool errors). Readers take a [`Registry::snapshot`]:
//! the mgr service-map status, `/metrics` (gauges computed at scrape time, so an image that
//! stops has no series left behind) and the admin socket. No I/O here; every lock is held
//! for a copy or an assignment only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageStatusState};
use tokio::sync::watch;

use crate::error::ErrorKind;

/// An image as the registry knows it: `pool/namespace` and its global image id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageKey {
    /// Pool name (the same on both sites).
    pub pool: String,
    /// RADOS namespace ("" for the default).
    pub namespace: String,
    /// Global image id.
    pub global_id: String,
}

impl ImageKey {
    /// The key of `global_id` in `pool`/`namespace`.
    pub fn new(pool: &str, namespace: &str, global_id: &str) -> Self {
        ImageKey { pool: pool.to_owned(), namespace: namespace.to_owned(), global_id: global_id.to_owned() }
    }
}

/// How far behind the primary an image's copy is (`rbd_mirror_rs_image_lag_seconds`). Kept
/// as a time, not a number of seconds: read at any moment, the lag is current, also while
/// the replayer waits for a cluster that does not answer and updates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Lag {
    /// Not known yet.
    #[default]
    Unknown,
    /// Nothing the primary wrote is missing from the copy.
    CaughtUp,
    /// The copy lacks what the primary wrote at this time (and after).
    Since(SystemTime),
}

impl Lag {
    /// Seconds behind at `now`; none while unknown.
    pub fn seconds(self, now: SystemTime) -> Option<f64> {
        match self {
            Lag::Unknown => None,
            Lag::CaughtUp => Some(0.0),
            Lag::Since(t) => Some(now.duration_since(t).map_or(0.0, |d| d.as_secs_f64())),
        }
    }

    /// This lag, at least as long as one since `t` (what the primary wrote since `t` may be
    /// missing: it has not answered since). An unknown lag stays unknown.
    pub fn at_least_since(self, t: SystemTime) -> Lag {
        match self {
            Lag::Unknown => Lag::Unknown,
            Lag::CaughtUp => Lag::Since(t),
            Lag::Since(s) => Lag::Since(s.min(t)),
        }
    }
}

/// What one image replayer last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageState {
    /// Image name, once known ("" before).
    pub name: String,
    /// Mirroring mode, once known.
    pub mode: Option<MirrorImageMode>,
    /// The state of `rbd mirror image status` (`replaying`, `error`, ...).
    pub state: MirrorImageStatusState,
    /// Its description, as written to the mirror status.
    pub description: String,
    /// The kind of the last error, while the image is in error.
    pub last_error: Option<ErrorKind>,
    /// Journal entries replayed since the daemon started.
    pub entries_replayed: u64,
    /// Bytes replayed (journal) or synced (snapshot) since the daemon started.
    pub bytes_replayed: u64,
    /// Mirror snapshots synced since the daemon started (snapshot mode).
    pub snapshots_synced: u64,
    /// Time spent syncing them.
    pub snapshots_time: std::time::Duration,
    /// Journal entries applied in windows since the attempt started and the sum of their
    /// replay latencies (stock's `replay_latency`; journal mode).
    pub replay_latency: (u64, std::time::Duration),
    /// Journal entries of the primary not yet replayed (journal mode).
    pub entries_behind_primary: u64,
    /// When a commit position was last written to the primary's journal.
    pub last_commit: Option<SystemTime>,
    /// How far behind the primary the secondary is (journal mode: since the entry taken
    /// last while entries wait; snapshot mode: since the primary snapshot synced last while
    /// a newer one waits); see [`ImageState::lag_seconds`].
    pub lag: Lag,
    /// When the last mirror snapshot sync finished, and the bytes it copied (snapshot mode).
    pub last_snapshot_sync: Option<(SystemTime, u64)>,
    /// The last of the operator's flushes ([`Control::flushes`]) that replay has served.
    pub flushed: u64,
    /// When any of this last changed.
    pub updated: SystemTime,
}

impl Default for ImageState {
    fn default() -> Self {
        ImageState {
            name: String::new(),
            mode: None,
            state: MirrorImageStatusState::Unknown,
            description: String::new(),
            last_error: None,
            entries_replayed: 0,
            bytes_replayed: 0,
            snapshots_synced: 0,
            snapshots_time: std::time::Duration::ZERO,
            replay_latency: (0, std::time::Duration::ZERO),
            entries_behind_primary: 0,
            last_commit: None,
            lag: Lag::Unknown,
            last_snapshot_sync: None,
            flushed: 0,
            updated: SystemTime::UNIX_EPOCH,
        }
    }
}

impl ImageState {
    /// The lag now, in seconds, when known.
    pub fn lag_seconds(&self) -> Option<f64> {
        self.lag.seconds(SystemTime::now())
    }
}

/// What one pool replayer (one pool, one peer) reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Local pool id.
    pub pool_id: i64,
    /// Peer site name.
    pub peer_site: String,
    /// The peer record's uuid in the local pool.
    pub peer_uuid: String,
    /// The client the daemon is at the peer (`client.rbd-mirror-peer`).
    pub peer_client: String,
    /// A pool-level problem (peer unreachable, leader election or a namespace failing: what
    /// `error_sources` hold, joined), if any.
    pub error: Option<String>,
    /// The pool-level problems by where they arose (`peer`, `leader`, `namespace <ns>`):
    /// each part sets and clears its own.
    pub error_sources: BTreeMap<String, String>,
    /// The image deleters' queues, per RADOS namespace ("" for the default) served
    /// (`rbd mirror deletion status <pool>`).
    pub deletions: BTreeMap<String, Deletions>,
    /// Who leads the pool's daemon instances (§5.5).
    pub leader: LeaderState,
    /// The pool replayer's bandwidth cap (its limit and what it made readers wait).
    pub bandwidth: Option<std::sync::Arc<crate::Bandwidth>>,
}

/// Who leads a pool's rbd-mirror instances, as this instance sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// This instance holds the leader lock.
    pub leader: bool,
    /// The leader's instance id, when known.
    pub leader_instance_id: Option<String>,
    /// While leading: the live instances (this one included), sorted.
    pub instances: Vec<String>,
}

/// What the pool's image deleter has to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletions {
    /// Local copies queued or being deleted.
    pub queued: Vec<Deletion>,
    /// Deletions that failed, waiting for their retry.
    pub failed: Vec<Deletion>,
}

/// One local copy to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletion {
    /// Global image id.
    pub global_id: String,
    /// The local image id, once known.
    pub image_id: Option<String>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Failed attempts so far.
    pub retries: u32,
    /// In the RBD trash: from when it may be removed (the move plus
    /// `rbd_mirroring_delete_delay`).
    pub deferment_end_time: Option<std::time::SystemTime>,
}

/// A pool as the registry knows it: pool name and peer site.
pub type PoolKey = (String, String);

/// Counters of images no longer registered, so that daemon-wide totals survive them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Journal entries replayed.
    pub entries_replayed: u64,
    /// Journal bytes replayed.
    pub journal_bytes: u64,
    /// Snapshot bytes synced.
    pub snapshot_bytes: u64,
    /// Mirror snapshots synced.
    pub snapshots_synced: u64,
    /// Time spent syncing them.
    pub snapshots_time: std::time::Duration,
    /// Journal entries and the sum of their replay latencies.
    pub replay_latency: (u64, std::time::Duration),
}

impl Retired {
    fn add(&mut self, s: &ImageState) {
        self.entries_replayed += s.entries_replayed;
        self.replay_latency.0 += s.replay_latency.0;
        self.replay_latency.1 += s.replay_latency.1;
        if s.mode == Some(MirrorImageMode::Snapshot) {
            self.snapshot_bytes += s.bytes_replayed;
        } else {
            self.journal_bytes += s.bytes_replayed;
        }
        self.snapshots_synced += s.snapshots_synced;
        self.snapshots_time += s.snapshots_time;
    }
}

/// What the operator asked of an image's replayer (admin socket `rbd mirror
/// stop|start|restart|flush`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// Stopped by the operator, until started again.
    pub stopped: bool,
    /// Restarts asked so far (a new value stops the current attempt and starts another).
    pub restarts: u64,
    /// Flushes asked so far: journal replay answers a new value by applying every entry
    /// already in the primary's journal and committing its position, then sets
    /// [`ImageState::flushed`] to it.
    pub flushes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    controls: BTreeMap<ImageKey, Arc<watch::Sender<Control>>>,
    images: BTreeMap<ImageKey, Arc<Mutex<ImageState>>>,
    pools: BTreeMap<PoolKey, PoolState>,
    /// Per pool replayer: `rbd mirror leader release` requests so far.
    leader_releases: BTreeMap<PoolKey, Arc<watch::Sender<u64>>>,
    retired: Retired,
}

/// The registry: cheap to clone (one shared map).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

/// A consistent copy of the registry, for readers.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every image, in key order.
    pub images: Vec<(ImageKey, ImageState)>,
    /// Every pool replayer, in key order.
    pub pools: Vec<(PoolKey, PoolState)>,
    /// What images no longer registered had counted.
    pub retired: Retired,
}

impl Snapshot {
    /// Daemon-wide totals: the registered images' counters and the retired ones.
    pub fn totals(&self) -> Retired {
        let mut t = self.retired;
        for (_, s) in &self.images {
            t.add(s);
        }
        t
    }
}

impl Snapshot {
    /// The images of pool `pool` (any namespace).
    pub fn images_of<'a>(&'a self, pool: &'a str) -> impl Iterator<Item = &'a (ImageKey, ImageState)> + 'a {
        self.images.iter().filter(move |(k, _)| k.pool == pool)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers image `key` (or finds it registered) and hands out its writer.
    pub fn image(&self, key: ImageKey) -> ImageHandle {
        let mut inner = self.inner.lock();
        let state = inner.images.entry(key.clone()).or_default().clone();
        let control = inner
            .controls
            .entry(key.clone())
            .or_insert_with(|| Arc::new(watch::channel(Control::default()).0))
            .clone();
        ImageHandle { key, state, control }
    }

    /// Applies `change` to the operator's control of every registered image that `select`
    /// picks; returns their keys and controls as changed.
    pub fn control(
        &self,
        select: impl Fn(&ImageKey, &ImageState) -> bool,
        change: impl Fn(&mut Control),
    ) -> Vec<(ImageKey, Control)> {
        let picked: Vec<(ImageKey, Arc<watch::Sender<Control>>)> = {
            let inner = self.inner.lock();
            inner
                .images
                .iter()
                .filter(|(k, s)| select(k, &s.lock()))
                .filter_map(|(k, _)| Some((k.clone(), inner.controls.get(k)?.clone())))
                .collect()
        };
        picked
            .into_iter()
            .map(|(key, c)| {
                c.send_modify(&change);
                let now = *c.borrow();
                (key, now)
            })
            .collect()
    }

    /// Forgets image `key` (its replayer stopped): readers no longer list it.
    pub fn remove_image(&self, key: &ImageKey) {
        let mut inner = self.inner.lock();
        inner.controls.remove(key);
        if let Some(state) = inner.images.remove(key) {
            let state = state.lock().clone();
            inner.retired.add(&state);
        }
    }

    /// Registers the pool replayer of `pool` and `state.peer_site`.
    pub fn add_pool(&self, pool: &str, state: PoolState) {
        let key = (pool.to_owned(), state.peer_site.clone());
        self.inner.lock().pools.insert(key, state);
    }

    /// Sets (or clears) the pool-level error that `source` (`peer`, `leader`, `namespace
    /// <ns>`) of the pool replayer of `pool` and `peer_site` reports; the pool's error is
    /// every source's, joined.
    pub fn set_pool_error(&self, pool: &str, peer_site: &str, source: &str, error: Option<String>) {
        let key = (pool.to_owned(), peer_site.to_owned());
        if let Some(p) = self.inner.lock().pools.get_mut(&key) {
            match error {
                Some(e) => p.error_sources.insert(source.to_owned(), e),
                None => p.error_sources.remove(source),
            };
            p.error = (!p.error_sources.is_empty())
                .then(|| p.error_sources.values().cloned().collect::<Vec<_>>().join("; "));
        }
    }

    /// Sets the image deleter's queues of namespace `namespace` of the pool replayer of
    /// `pool` and `peer_site`.
    pub fn set_pool_deletions(&self, pool: &str, peer_site: &str, namespace: &str, deletions: Deletions) {
        let key = (pool.to_owned(), peer_site.to_owned());
        if let Some(p) = self.inner.lock().pools.get_mut(&key) {
            p.deletions.insert(namespace.to_owned(), deletions);
        }
    }

    /// Forgets what namespace `namespace` of the pool replayer of `pool` and `peer_site`
    /// reported (its namespace replayer stopped).
    pub fn remove_namespace(&self, pool: &str, peer_site: &str, namespace: &str) {
        let key = (pool.to_owned(), peer_site.to_owned());
        if let Some(p) = self.inner.lock().pools.get_mut(&key) {
            p.deletions.remove(namespace);
        }
    }

    /// Forgets the pool replayer of `pool` and `peer_site` (its images are removed one by
    /// one as their replayers stop).
    pub fn remove_pool(&self, pool: &str, peer_site: &str) {
        let key = (pool.to_owned(), peer_site.to_owned());
        let mut inner = self.inner.lock();
        inner.pools.remove(&key);
        inner.leader_releases.remove(&key);
    }

    /// Sets who leads the pool replayer of `pool` and `peer_site`.
    pub fn set_pool_leader(&self, pool: &str, peer_site: &str, leader: LeaderState) {
        let key = (pool.to_owned(), peer_site.to_owned());
        if let Some(p) = self.inner.lock().pools.get_mut(&key) {
            p.leader = leader;
        }
    }

    /// The `rbd mirror leader release` requests of the pool replayer of `pool` and
    /// `peer_site` (a new value asks its leader watcher to release the lock).
    pub fn leader_releases(&self, pool: &str, peer_site: &str) -> watch::Receiver<u64> {
        let key = (pool.to_owned(), peer_site.to_owned());
        self.inner
            .lock()
            .leader_releases
            .entry(key)
            .or_insert_with(|| Arc::new(watch::channel(0).0))
            .subscribe()
    }

    /// Asks the leader of every pool replayer that `select` picks (by pool and peer site)
    /// to release the lock; returns how many were asked.
    pub fn release_leader(&self, select: impl Fn(&str, &str) -> bool) -> usize {
        let picked: Vec<Arc<watch::Sender<u64>>> = {
            let inner = self.inner.lock();
            inner
                .pools
                .iter()
                .filter(|((pool, peer), p)| p.leader.leader && select(pool, peer))
                .filter_map(|(k, _)| inner.leader_releases.get(k).cloned())
                .collect()
        };
        for sender in &picked {
            sender.send_modify(|n| *n += 1);
        }
        picked.len()
    }

    /// A copy of everything, for readers.
    pub fn snapshot(&self) -> Snapshot {
        let (images, pools, retired) = {
            let inner = self.inner.lock();
            let images: Vec<_> = inner.images.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
            (images, inner.pools.iter().map(|(k, p)| (k.clone(), p.clone())).collect(), inner.retired)
        };
        // Each image's own lock is taken outside the map's.
        let images = images.into_iter().map(|(k, s)| (k, s.lock().clone())).collect();
        Snapshot { images, pools, retired }
    }
}

/// The writer of one image's entry.
#[derive(Debug, Clone)]
pub struct ImageHandle {
    key: ImageKey,
    state: Arc<Mutex<ImageState>>,
    control: Arc<watch::Sender<Control>>,
}

impl ImageHandle {
    /// A handle outside any registry (tools and tests that publish a status by hand).
    pub fn detached(key: ImageKey) -> Self {
        ImageHandle { key, state: Arc::default(), control: Arc::new(watch::channel(Control::default()).0) }
    }

    /// What the operator asks of this image's replayer, as it changes.
    pub fn control(&self) -> watch::Receiver<Control> {
        self.control.subscribe()
    }

    /// The image's key.
    pub fn key(&self) -> &ImageKey {
        &self.key
    }

    /// Changes the entry; `updated` is set to now.
    pub fn update(&self, f: impl FnOnce(&mut ImageState)) {
        let mut s = self.state.lock();
        f(&mut s);
        s.updated = SystemTime::now();
    }

    /// A copy of the entry.
    pub fn get(&self) -> ImageState {
        self.state.lock().clone()
    }

    /// The image name, once known.
    pub fn name(&self) -> String {
        self.state.lock().name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept as a time, the lag grows while nothing updates it (a replayer waiting for a
    /// cluster that does not answer), and a silence since `t` makes it at least that long.
    #[test]
    fn the_lag_is_current_when_read() {
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let behind = Lag::Since(at(0));
        assert_eq!(behind.seconds(at(5)), Some(5.0));
        assert_eq!(behind.seconds(at(65)), Some(65.0));
        assert_eq!(Lag::CaughtUp.seconds(at(65)), Some(0.0));
        assert_eq!(Lag::Unknown.seconds(at(65)), None);
        // A clock that went back: 0, never negative.
        assert_eq!(Lag::Since(at(10)).seconds(at(5)), Some(0.0));
        assert_eq!(Lag::CaughtUp.at_least_since(at(30)), Lag::Since(at(30)));
        assert_eq!(behind.at_least_since(at(30)), behind);
        assert_eq!(Lag::Since(at(40)).at_least_since(at(30)), Lag::Since(at(30)));
        assert_eq!(Lag::Unknown.at_least_since(at(30)), Lag::Unknown);
    }

    #[test]
    fn images_are_registered_updated_listed_and_removed() {
        let r = Registry::new();
        r.add_pool("mirror", PoolState { pool_id: 3, peer_site: "site-a".into(), ..Default::default() });
        let a = r.image(ImageKey::new("mirror", "", "g1"));
        let b = r.image(ImageKey::new("mirror", "ns", "g2"));
        let other = r.image(ImageKey::new("other", "", "g3"));
        a.update(|s| {
            s.name = "img".into();
            s.state = MirrorImageStatusState::Replaying;
            s.entries_replayed = 10;
        });
        b.update(|s| s.last_error = Some(ErrorKind::Decode));
        let snap = r.snapshot();
        assert_eq!(snap.images.len(), 3);
        assert_eq!(snap.images_of("mirror").count(), 2);
        let (_, sa) = snap.images.iter().find(|(k, _)| k.global_id == "g1").expect("g1 listed");
        assert_eq!(
            (sa.name.as_str(), sa.state, sa.entries_replayed),
            ("img", MirrorImageStatusState::Replaying, 10)
        );
        assert!(sa.updated > SystemTime::UNIX_EPOCH);
        // The same key hands out the same entry.
        assert_eq!(r.image(ImageKey::new("mirror", "", "g1")).name(), "img");
        r.remove_image(a.key());
        assert_eq!(r.snapshot().images.len(), 2);
        // Its counts stay in the daemon-wide totals.
        assert_eq!(r.snapshot().totals().entries_replayed, 10);
        // A stopped replayer's late update does not bring it back.
        a.update(|s| s.entries_replayed = 11);
        assert_eq!(r.snapshot().images.len(), 2);
        r.set_pool_error("mirror", "site-a", "peer", Some("peer unreachable".into()));
        assert_eq!(r.snapshot().pools[0].1.error.as_deref(), Some("peer unreachable"));
        r.set_pool_error("mirror", "site-a", "leader", Some("leader election: EPERM".into()));
        assert_eq!(
            r.snapshot().pools[0].1.error.as_deref(),
            Some("leader election: EPERM; peer unreachable")
        );
        r.set_pool_error("mirror", "site-a", "peer", None);
        assert_eq!(r.snapshot().pools[0].1.error.as_deref(), Some("leader election: EPERM"));
        r.set_pool_error("mirror", "site-a", "leader", None);
        assert_eq!(r.snapshot().pools[0].1.error, None);
        r.remove_pool("mirror", "site-a");
        let snap = r.snapshot();
        assert!(snap.pools.is_empty());
        assert_eq!(snap.images.len(), 2);
        assert!(snap.images.iter().any(|(k, _)| k == other.key()));
    }
}
