//! The pool replayer (stock `PoolReplayer`): one pool against one peer. It connects to the
//! peer (retrying) and reads both pools' mirror uuids (their default namespace's, which
//! every namespace uses, as stock), pings the peer pool, owns the pool's sync slots, and
//! runs one namespace replayer per namespace with mirroring enabled on this site (the
//! default one always), started and stopped as namespaces are created, removed, or have
//! their mirroring enabled or disabled (looked at every `rbd_mirror_rs_pool_refresh_interval`).
//! It takes part in the pool's leader election (§5.5, [`crate::leader`]) before any
//! namespace replayer starts; they map images while it leads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::cls;
use image_replayer::{ConfigWatch, LeaderState, Registry, Throttle};
use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::Rados;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::discovery::connect_peer;
use crate::leader::LeaderWatcher;
use crate::namespace_replayer::{mirroring_namespaces, NamespaceReplayer, PoolContext};
use crate::tasks::Tasks;

/// How long the peer pool may take to answer `mirror_peer_ping` before the pool's health
/// says it does not answer (and how often it is pinged again until it does).
const PEER_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// One pool and one peer it receives from.
#[derive(Debug)]
pub(crate) struct PoolReplayer {
    pub(crate) local: Rados,
    pub(crate) pool: String,
    pub(crate) peer: MirrorPeerSite,
    pub(crate) site_name: String,
    pub(crate) config: ConfigWatch,
    pub(crate) connect_timeout: Duration,
    pub(crate) registry: Registry,
    /// The pool has several receiving peers. Stock runs one pool replayer per peer, each
    /// with its own RADOS client, all competing on the one `rbd_mirror_leader`; ours share one
    /// client (one instance id), so they would break each other's lock. Such a pool is served
    /// without leader election: each pool replayer replays every image of its peer (the one
    /// whose peer is not primary stands aside), as this daemon did before election.
    pub(crate) solo: bool,
    /// The peer's bandwidth cap, following `rbd_mirror_rs_peer_bandwidth_limit` (also in
    /// the registry, for `/metrics`).
    pub(crate) bandwidth: Arc<image_replayer::Bandwidth>,
}

impl PoolReplayer {
    /// Connects to the peer (retrying), then serves the pool until cancelled.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        loop {
            match self.serve(&cancel).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "pool replayer failed; retrying later");
                    let error = format!("peer {}: {e}", self.peer.site_name);
                    self.registry.set_pool_error(&self.pool, &self.peer.site_name, "peer", Some(error));
                }
            }
            let retry = self.config.borrow().rbd_mirror_rs_pool_retry_interval;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    async fn serve(&self, cancel: &CancellationToken) -> rados_ffi::Result<()> {
        // A peer whose monitors do not answer takes the whole connect timeout: a shutdown
        // meanwhile does not wait for it (the connection is given up).
        let connect = connect_peer(&self.local, &self.pool, "", &self.peer, self.connect_timeout);
        let peer = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            peer = connect => peer?,
        };
        tracing::info!(
            remote_fsid = %peer.remote.fsid(),
            local_mirror_uuid = %peer.local_mirror_uuid,
            remote_mirror_uuid = %peer.remote_mirror_uuid,
            "connected to the peer"
        );
        self.registry.set_pool_error(&self.pool, &self.peer.site_name, "peer", None);

        // Leader election (§5.5): this instance competes for the pool's leader lock on
        // `rbd_mirror_leader` (default namespace) for as long as it serves the pool; the
        // namespace replayers follow its state. Stopped after them, so a leader releases
        // the lock (and says so) only once its images are stopped.
        let (leader_tx, leader_rx) = watch::channel(LeaderState::default());
        let leader_cancel = CancellationToken::new();
        let _leader_guard = leader_cancel.clone().drop_guard();
        let leader = if self.solo {
            tracing::info!("several receiving peers on this pool: no leader election, replaying every image of this peer");
            let me = self.local.instance_id().to_string();
            let solo =
                LeaderState { leader: true, leader_instance_id: Some(me.clone()), instances: vec![me] };
            self.registry.set_pool_leader(&self.pool, &self.peer.site_name, solo);
            drop(leader_tx);
            None
        } else {
            Some(tokio::spawn(
                LeaderWatcher {
                    local: self.local.clone(),
                    io: Arc::new(self.local.ioctx(&self.pool, "").await?),
                    config: self.config.clone(),
                    registry: self.registry.clone(),
                    pool: self.pool.clone(),
                    peer_site: self.peer.site_name.clone(),
                    status: leader_tx,
                }
                .run(self.registry.leader_releases(&self.pool, &self.peer.site_name), leader_cancel.clone())
                .instrument(tracing::Span::current()),
            ))
        };

        // The sync slots follow `rbd_mirror_concurrent_image_syncs` while running, as stock;
        // the bandwidth cap `rbd_mirror_rs_peer_bandwidth_limit`.
        let mut config_changes = self.config.clone();
        self.bandwidth.set_limit(config_changes.borrow().rbd_mirror_rs_peer_bandwidth_limit.0);
        let syncs = config_changes.borrow_and_update().rbd_mirror_concurrent_image_syncs;
        let syncs = usize::try_from(syncs).unwrap_or(usize::MAX);
        let (silent_tx, silent_rx) = watch::channel(None);
        let pool = Arc::new(PoolContext {
            local: self.local.clone(),
            remote: peer.remote,
            pool: self.pool.clone(),
            peer_site: self.peer.site_name.clone(),
            local_mirror_uuid: peer.local_mirror_uuid,
            remote_mirror_uuid: peer.remote_mirror_uuid,
            config: self.config.clone(),
            sync_slots: Arc::new(Throttle::new(syncs)),
            bandwidth: self.bandwidth.clone(),
            registry: self.registry.clone(),
            leader: leader_rx,
            solo: self.solo,
            peer_silent: silent_rx,
        });
        let mut namespaces: Tasks<String> = Tasks::new();
        let mut last_ping: Option<Instant> = None;
        loop {
            // Since when the peer has not answered (the first unanswered ping), if it does not.
            let peer_silent = silent_tx.borrow().is_some();
            let config = self.config.borrow().clone();
            // While the peer does not answer, pinged again every PEER_PING_TIMEOUT.
            let ping_every =
                if peer_silent { PEER_PING_TIMEOUT } else { config.rbd_mirror_rs_peer_ping_interval };
            if last_ping.is_none_or(|t| t.elapsed() >= ping_every) {
                let pinged = Instant::now();
                let ping = cls::mirror_peer_ping(&peer.remote_io, &self.site_name, &pool.local_mirror_uuid);
                match tokio::time::timeout(PEER_PING_TIMEOUT, ping).await {
                    Ok(answered) => {
                        if let Err(e) = answered {
                            tracing::debug!(error = %e, "mirror_peer_ping failed");
                        }
                        if peer_silent {
                            silent_tx.send_replace(None);
                            tracing::info!("the peer answers again");
                            self.registry.set_pool_error(&self.pool, &self.peer.site_name, "peer ping", None);
                        }
                    }
                    // Its OSD or the network does not answer (librados waits for ever): said
                    // in the pool's health (the service map), as stock says nothing.
                    Err(_) => {
                        if !peer_silent {
                            tracing::warn!(
                                timeout = ?PEER_PING_TIMEOUT,
                                "the peer does not answer mirror_peer_ping: unreachable? (replay waits for it)"
                            );
                            silent_tx.send_replace(Some(pinged));
                        }
                        let error = format!(
                            "peer {}: no answer to mirror_peer_ping within {}s (unreachable?)",
                            self.peer.site_name,
                            PEER_PING_TIMEOUT.as_secs()
                        );
                        self.registry.set_pool_error(
                            &self.pool,
                            &self.peer.site_name,
                            "peer ping",
                            Some(error),
                        );
                    }
                }
                last_ping = Some(Instant::now());
            }
            match mirroring_namespaces(&self.local, &peer.local_io, |ns| namespaces.contains(&ns.to_owned()))
                .await
            {
                Ok(wanted) => self.update_namespace_replayers(&mut namespaces, &wanted, &pool, cancel),
                Err(e) => tracing::debug!(error = %e, "cannot list the pool's namespaces"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(config.rbd_mirror_rs_pool_refresh_interval) => {}
                Ok(()) = config_changes.changed() => {
                    let config = config_changes.borrow_and_update().clone();
                    pool.sync_slots.resize(usize::try_from(config.rbd_mirror_concurrent_image_syncs).unwrap_or(usize::MAX));
                    let limit = config.rbd_mirror_rs_peer_bandwidth_limit.0;
                    if limit != self.bandwidth.limit() {
                        tracing::info!(limit_bytes_per_s = limit, "peer bandwidth cap changed");
                        self.bandwidth.set_limit(limit);
                    }
                }
            }
        }
        // Shutdown: each namespace replayer stops its image replayers (each commits its
        // position) and leaves the registry.
        namespaces.shut_down().await;
        leader_cancel.cancel();
        if let Some(leader) = leader {
            let _ = leader.await;
        }
        Ok(())
    }

    /// Stops the namespace replayers of namespaces no longer `wanted` and starts those
    /// missing (a namespace removed and created again waits for its old replayer to end).
    fn update_namespace_replayers(
        &self,
        namespaces: &mut Tasks<String>,
        wanted: &BTreeSet<String>,
        pool: &Arc<PoolContext>,
        cancel: &CancellationToken,
    ) {
        let gone: Vec<String> = namespaces.keys().filter(|ns| !wanted.contains(*ns)).cloned().collect();
        for ns in gone {
            tracing::info!(namespace = %ns, "namespace removed or its mirroring disabled: stopping its replayer");
            namespaces.stop(&ns);
        }
        for ns in wanted {
            if namespaces.contains(ns) || namespaces.is_stopping(|k| k == ns) {
                continue;
            }
            // The default namespace logs under the pool's span alone.
            let span = if ns.is_empty() {
                tracing::Span::current()
            } else {
                tracing::info_span!("namespace", namespace = %ns)
            };
            span.in_scope(|| tracing::info!("starting the namespace replayer"));
            let replayer = NamespaceReplayer { pool: pool.clone(), namespace: ns.clone() };
            let token = cancel.child_token();
            namespaces.start(ns.clone(), token.clone(), replayer.run(token).instrument(span));
        }
    }
}
