//! The leader watcher (stock `LeaderWatcher` and `Instances`, ceph-formats.md §5.5): which
//! daemon instance leads a pool, and, while this one does, which instances are alive.
//!
//! Every instance watches `rbd_mirror_leader` and tries to take its `ManagedLock`. The holder
//! is the leader: it notifies a heartbeat every `rbd_mirror_leader_heartbeat_interval` (5 s),
//! and every watcher's ack proves that instance alive; an instance not heard from for
//! `interval * (1 + max_missed_heartbeats + max_acquire_attempts_before_break)` (30 s) is
//! removed (its instance lock broken, its object and registration deleted). The others
//! retry the lock every `interval * max_missed_heartbeats` (10 s); each heartbeat resets
//! their attempt count, and after `rbd_mirror_leader_max_acquire_attempts_before_break` (3)
//! failed attempts without one they blocklist the silent leader and break its lock.
//! Stock and our instances run the same protocol, so any mix of them shares a pool.
//!
//! What it does not do: map images (`image_map`, run by the namespace replayers while this
//! instance leads) or receive image requests (`instance_watcher`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::{cls, ConfigWatch, LeaderState, Registry};
use rados_ffi::{IoCtx, Rados, WatchEvent, WriteOp};
use rbd_types::cls_rbd::{RBD_MIRROR_INSTANCE_PREFIX, RBD_MIRROR_LEADER};
use rbd_types::mirror_notify::LeaderNotify;
use rbd_types::{Decode, Encode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::managed_lock::{Holder, ManagedLock};

/// How long a notification waits for acks (librbd's `Notifier::NOTIFY_TIMEOUT`).
pub(crate) const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// A leader watcher failing the same way again is warned of once a minute at most.
const WARN_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// The leader watcher of one pool (default namespace of the local cluster).
pub(crate) struct LeaderWatcher {
    pub(crate) local: Rados,
    pub(crate) io: Arc<IoCtx>,
    pub(crate) config: ConfigWatch,
    pub(crate) registry: Registry,
    pub(crate) pool: String,
    pub(crate) peer_site: String,
    /// Published for the namespace replayers (who map images while we lead).
    pub(crate) status: watch::Sender<LeaderState>,
}

/// The leader timings, from the configuration.
#[derive(Debug, Clone, Copy)]
struct Timings {
    heartbeat: Duration,
    /// Between two lock attempts of a non-leader.
    acquire: Duration,
    max_attempts: u64,
    /// Silence after which the leader removes an instance.
    instance_timeout: Duration,
    blocklist_expire: u32,
}

impl Timings {
    fn of(config: &ConfigWatch) -> Timings {
        let c = config.borrow();
        let heartbeat = c.rbd_mirror_leader_heartbeat_interval.max(Duration::from_secs(1));
        let missed = c.rbd_mirror_leader_max_missed_heartbeats.max(1);
        let max_attempts = c.rbd_mirror_leader_max_acquire_attempts_before_break.max(1);
        Timings {
            heartbeat,
            acquire: heartbeat * u32::try_from(missed).unwrap_or(u32::MAX),
            max_attempts,
            instance_timeout: heartbeat * u32::try_from(1 + missed + max_attempts).unwrap_or(u32::MAX),
            blocklist_expire: u32::try_from(c.rbd_blocklist_expire_seconds).unwrap_or(u32::MAX),
        }
    }
}

/// A non-leader's view of the lock.
#[derive(Debug, Default)]
struct Follower {
    attempts: u64,
    /// The holder seen last (its client and cookie).
    holder: Option<(String, String)>,
    next_attempt: Option<Instant>,
}

impl LeaderWatcher {
    /// Takes part in the election until `cancel`; as leader at shutdown, releases the lock and
    /// says so (another instance takes over at once, no blocklist).
    pub(crate) async fn run(self, mut release: watch::Receiver<u64>, cancel: CancellationToken) {
        // The last failure warned of, and when: the same failure again within a minute (it
        // is retried every second) is logged at debug level only.
        let mut warned: Option<(String, Instant)> = None;
        loop {
            match self.serve(&mut release, &cancel).await {
                Ok(()) => return,
                Err(e) => {
                    let error = format!("leader election: {e}");
                    let repeated =
                        warned.as_ref().is_some_and(|(w, at)| *w == error && at.elapsed() < WARN_AGAIN_AFTER);
                    if repeated {
                        tracing::debug!(error = %e, "leader watcher failed again");
                    } else {
                        tracing::warn!(error = %e, "leader watcher failed; watching rbd_mirror_leader again every 1s");
                        warned = Some((error.clone(), Instant::now()));
                    }
                    self.registry.set_pool_error(&self.pool, &self.peer_site, "leader", Some(error));
                }
            }
            self.publish(false, None, Vec::new());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn instance_id(&self) -> String {
        self.local.instance_id().to_string()
    }

    fn publish(&self, leader: bool, leader_instance_id: Option<String>, instances: Vec<String>) {
        let state = LeaderState { leader, leader_instance_id, instances };
        self.registry.set_pool_leader(&self.pool, &self.peer_site, state.clone());
        self.status.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
    }

    async fn serve(
        &self,
        release: &mut watch::Receiver<u64>,
        cancel: &CancellationToken,
    ) -> rados_ffi::Result<()> {
        let mut create = WriteOp::new();
        create.create(false);
        self.io.operate(RBD_MIRROR_LEADER, create).await?;
        let mut watch = self.io.watch(RBD_MIRROR_LEADER).await?;
        self.registry.set_pool_error(&self.pool, &self.peer_site, "leader", None);
        let lock = ManagedLock::new(self.io.clone(), RBD_MIRROR_LEADER);
        let me = self.instance_id();
        let mut follower = Follower::default();
        release.borrow_and_update();
        loop {
            let t = Timings::of(&self.config);
            // ---- not the leader: wait for the next attempt, or a notification ----
            let now = Instant::now();
            let at = *follower.next_attempt.get_or_insert(now);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                notification = self.next_notification(&mut watch) => {
                    match notification? {
                        None => return Ok(()),
                        Some(LeaderNotify::Heartbeat) => {
                            if follower.holder.is_some() {
                                follower.attempts = 0;
                                follower.next_attempt = Some(Instant::now() + t.acquire);
                            }
                        }
                        Some(LeaderNotify::LockAcquired | LeaderNotify::LockReleased) => {
                            follower.attempts = 0;
                            follower.holder = None;
                            follower.next_attempt = Some(Instant::now());
                        }
                        Some(LeaderNotify::Unknown(op)) => tracing::debug!(op, "unknown leader notification"),
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            follower.next_attempt = None;
            follower.attempts += 1;
            if lock.try_acquire(watch.handle()).await? {
                tracing::info!(instance_id = %me, "acquired the leader lock");
                follower = Follower::default();
                let outcome = self.lead(&lock, &mut watch, release, cancel).await;
                // Leadership ends: release the lock and say so (also after an error: the
                // lock may still be ours).
                self.publish(false, None, Vec::new());
                if let Err(e) = lock.release(watch.handle()).await {
                    tracing::warn!(error = %e, "releasing the leader lock failed");
                }
                let bytes = LeaderNotify::LockReleased.to_bytes();
                if let Err(e) = self.io.notify(RBD_MIRROR_LEADER, &bytes, NOTIFY_TIMEOUT).await {
                    tracing::debug!(error = %e, "lock released notification failed");
                }
                tracing::info!(instance_id = %me, "released the leader lock");
                outcome?;
                if cancel.is_cancelled() {
                    return Ok(());
                }
                // As stock after a release: let another instance take it first.
                follower.next_attempt = Some(Instant::now() + Timings::of(&self.config).acquire);
                continue;
            }
            match lock.holder().await? {
                Holder::Nobody => follower.next_attempt = Some(Instant::now()),
                Holder::External(l) => {
                    tracing::warn!(client = %l.client, cookie = %l.cookie,
                        "rbd_mirror_leader is locked by something that is not an rbd-mirror instance");
                    follower.next_attempt = Some(Instant::now() + t.acquire);
                }
                Holder::Managed(l) => {
                    let key = (l.client.clone(), l.cookie.clone());
                    if follower.holder.as_ref() != Some(&key) {
                        if follower.attempts > 1 {
                            follower.attempts = 0;
                        }
                        follower.holder = Some(key);
                        let leader_id = l.global_id().map(|g| g.to_string());
                        tracing::info!(leader = ?leader_id, "leader instance");
                        self.publish(false, leader_id, Vec::new());
                    }
                    if follower.attempts >= t.max_attempts {
                        tracing::warn!(attempts = follower.attempts, leader = %l.client,
                            "no heartbeat from the leader: breaking its lock");
                        let broken = lock.break_lock(&self.local, &l, t.blocklist_expire).await;
                        if let Err(e) = broken {
                            tracing::error!(error = %e, "breaking the leader lock failed");
                            follower.next_attempt = Some(Instant::now() + t.acquire);
                        } else {
                            follower = Follower { next_attempt: Some(Instant::now()), ..Follower::default() };
                        }
                    } else {
                        follower.next_attempt = Some(Instant::now() + t.acquire);
                    }
                }
            }
        }
    }

    /// The next leader notification of another instance (`None`: the watch ended). One that
    /// does not decode is logged and skipped. Cancel-safe (as `Watch::next`).
    async fn next_notification(
        &self,
        watch: &mut rados_ffi::Watch,
    ) -> rados_ffi::Result<Option<LeaderNotify>> {
        loop {
            match watch.next().await {
                Some(WatchEvent::Notify { notifier_id, payload, .. })
                    if notifier_id != self.local.instance_id() =>
                {
                    match LeaderNotify::decode_all(&payload) {
                        Ok(n) => return Ok(Some(n)),
                        Err(e) => {
                            tracing::warn!(error = %e, notifier_id, "leader notification does not decode; ignored")
                        }
                    }
                }
                Some(WatchEvent::Notify { .. }) => {}
                Some(WatchEvent::Error { errno }) => {
                    return Err(rados_ffi::RadosError::Call {
                        op: "watch rbd_mirror_leader",
                        target: self.pool.clone(),
                        errno,
                    })
                }
                None => return Ok(None),
            }
        }
    }

    /// Leads until cancelled, asked to release, or the lock is lost.
    async fn lead(
        &self,
        lock: &ManagedLock,
        watch: &mut rados_ffi::Watch,
        release: &mut watch::Receiver<u64>,
        cancel: &CancellationToken,
    ) -> rados_ffi::Result<()> {
        let me = self.instance_id();
        let bytes = LeaderNotify::LockAcquired.to_bytes();
        if let Err(e) = self.io.notify(RBD_MIRROR_LEADER, &bytes, NOTIFY_TIMEOUT).await {
            tracing::debug!(error = %e, "lock acquired notification failed");
        }
        // The registered instances are alive until they miss the timeout.
        let mut alive: BTreeMap<String, Instant> = BTreeMap::new();
        let listed = cls::mirror_instances_list(&self.io).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list the registered instances");
            Vec::new()
        });
        for id in listed {
            if id != me {
                alive.insert(id, Instant::now());
            }
        }
        let list = |alive: &BTreeMap<String, Instant>| {
            let mut v: Vec<String> = alive.keys().cloned().collect();
            v.push(me.clone());
            v.sort();
            v
        };
        self.publish(true, Some(me.clone()), list(&alive));
        let mut next_heartbeat = Instant::now();
        loop {
            let t = Timings::of(&self.config);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                Ok(()) = release.changed() => {
                    tracing::info!("leader release asked (admin socket)");
                    return Ok(());
                }
                notification = self.next_notification(watch) => match notification? {
                    None => return Ok(()),
                    Some(n) => {
                        tracing::debug!(?n, "another instance notified while we lead; ignored");
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(next_heartbeat.into()) => {}
            }
            next_heartbeat = Instant::now() + t.heartbeat;
            // Still ours? (A leader that was blocklisted or whose lock was broken steps down.)
            match lock.holder().await? {
                Holder::Managed(l) if l.global_id() == Some(self.local.instance_id()) => {}
                other => {
                    tracing::warn!(holder = ?other, "the leader lock is no longer ours: stepping down");
                    return Ok(());
                }
            }
            let reply = self
                .io
                .notify(RBD_MIRROR_LEADER, &LeaderNotify::Heartbeat.to_bytes(), NOTIFY_TIMEOUT)
                .await?;
            tracing::debug!(acks = reply.acks.len(), timeouts = reply.timeouts.len(), "leader heartbeat");
            for (gid, _cookie, _) in &reply.acks {
                if *gid != self.local.instance_id() {
                    let id = gid.to_string();
                    if !alive.contains_key(&id) {
                        tracing::info!(instance_id = %id, "instance added");
                    }
                    alive.insert(id, Instant::now());
                }
            }
            let dead: Vec<String> = alive
                .iter()
                .filter(|(_, seen)| seen.elapsed() > t.instance_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in dead {
                alive.remove(&id);
                tracing::warn!(instance_id = %id, "instance not heard from: removing it");
                tokio::spawn(remove_instance(self.local.clone(), self.io.clone(), id, t.blocklist_expire));
            }
            self.publish(true, Some(me.clone()), list(&alive));
        }
    }
}

/// Removes a dead instance as stock's `InstanceWatcher::remove` does: breaks its instance
/// lock (blocklisting it), removes its object and its registration.
async fn remove_instance(local: Rados, io: Arc<IoCtx>, instance_id: String, blocklist_expire: u32) {
    let oid = format!("{RBD_MIRROR_INSTANCE_PREFIX}{instance_id}");
    let lock = ManagedLock::new(io.clone(), oid.clone());
    match lock.holder().await {
        Ok(Holder::Managed(l) | Holder::External(l)) => {
            if let Err(e) = lock.break_lock(&local, &l, blocklist_expire).await {
                tracing::warn!(%instance_id, error = %e, "breaking the instance lock failed");
            }
        }
        Ok(Holder::Nobody) => {}
        Err(e) => tracing::debug!(%instance_id, error = %e, "reading the instance lock failed"),
    }
    if let Err(e) = io.remove(&oid).await {
        if !e.is_not_found() {
            tracing::warn!(%instance_id, error = %e, "removing the instance object failed");
        }
    }
    if let Err(e) = cls::mirror_instances_remove(&io, &instance_id).await {
        tracing::warn!(%instance_id, error = %e, "unregistering the instance failed");
    }
}
