//! The top of replication (stock `Mirror`): one pool replayer per mirrored pool of the local
//! cluster and peer it receives from, kept in step with the cluster while the daemon runs.
//! Every `rbd_mirror_rs_pool_refresh_interval` (1 s; stock looks every
//! `rbd_mirror_pool_replayers_refresh_interval`, 30 s, and on notifications) it lists the
//! pools, their mirror modes and peers again: a pool whose mirroring is enabled or a peer
//! added starts a pool replayer; a pool removed, its mirroring disabled, or its peer removed
//! stops it (its image replayers checkpoint, its registry entries go). A pool recreated
//! under the same name has a new pool id, a peer imported again a new uuid: either is a new
//! pool replayer, started once the old one has finished.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use image_replayer::{ConfigWatch, PoolState, Registry};
use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::Rados;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::discovery::{mirrored_pools, MirroredPool};
use crate::pool_replayer::PoolReplayer;
use crate::tasks::Tasks;

/// What identifies a pool replayer: a change of any part is another pool replayer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PoolReplayerKey {
    /// Pool name (the registry's key, with the peer site).
    pool: String,
    /// Local pool id (a pool recreated under the same name has another).
    pool_id: i64,
    /// The peer record's uuid (a peer removed and added again has another).
    peer_uuid: String,
    /// The peer's site name (the registry's key, with the pool).
    peer_site: String,
    /// The client we are at the peer.
    peer_client: String,
    /// The pool has several receiving peers: no leader election (see `PoolReplayer::solo`).
    solo: bool,
}

impl PoolReplayerKey {
    fn new(pool: &MirroredPool, peer: &MirrorPeerSite) -> Self {
        PoolReplayerKey {
            pool: pool.name.clone(),
            pool_id: pool.id,
            peer_uuid: peer.uuid.clone(),
            peer_site: peer.site_name.clone(),
            peer_client: peer.client_name.clone(),
            solo: pool.receiving_peers.len() > 1,
        }
    }
}

/// Runs replication for every mirrored pool of `local` and every peer it receives from,
/// until `cancel` fires; then stops every image replayer (each commits its position).
/// Every part reads `config` where it uses it (it may change at runtime). Pools and images
/// report in `registry`.
pub async fn run(
    local: Rados,
    config: ConfigWatch,
    connect_timeout: Duration,
    registry: Registry,
    cancel: CancellationToken,
) -> rados_ffi::Result<()> {
    let site_name = local.mirror_site_name().await.unwrap_or_default();
    let mut replayers: Tasks<PoolReplayerKey> = Tasks::new();
    let mut idle_reported = false;
    let mut last_unreadable = BTreeSet::new();
    loop {
        match mirrored_pools(&local).await {
            Ok(scan) => {
                // A pool that could not be read keeps its pool replayers: only what is known
                // to be gone stops.
                let unreadable: BTreeSet<String> = scan.unreadable.iter().map(|(p, _)| p.clone()).collect();
                if unreadable != last_unreadable {
                    for (pool, error) in scan.unreadable.iter().filter(|(p, _)| !last_unreadable.contains(p))
                    {
                        tracing::warn!(%pool, %error, "cannot read the pool's mirroring; looking again");
                    }
                    last_unreadable = unreadable;
                }
                let wanted: Vec<(PoolReplayerKey, &MirroredPool, &MirrorPeerSite)> = scan
                    .mirrored
                    .iter()
                    .flat_map(|pool| pool.receiving_peers.iter().map(move |peer| (pool, peer)))
                    .map(|(pool, peer)| (PoolReplayerKey::new(pool, peer), pool, peer))
                    .collect();
                let gone: Vec<PoolReplayerKey> = replayers
                    .keys()
                    .filter(|k| !last_unreadable.contains(&k.pool) && !wanted.iter().any(|(w, ..)| w == *k))
                    .cloned()
                    .collect();
                for key in gone {
                    tracing::info!(pool = %key.pool, pool_id = key.pool_id, peer = %key.peer_site,
                        peer_uuid = %key.peer_uuid,
                        "pool no longer mirrored from this peer (pool removed, mirroring disabled or peer removed): stopping its pool replayer");
                    replayers.stop(&key);
                }
                for (key, pool, peer) in wanted {
                    if replayers.contains(&key)
                        || replayers.is_stopping(|k| k.pool == key.pool && k.peer_site == key.peer_site)
                    {
                        continue;
                    }
                    let to = Target {
                        local: &local,
                        site_name: &site_name,
                        config: &config,
                        connect_timeout,
                        registry: &registry,
                        cancel: &cancel,
                    };
                    start(&mut replayers, key, pool, peer, &to);
                }
                // Until a pool has mirroring and a receiving peer (a daemon installed before
                // mirroring is set up) there is nothing to do but look again; say so once.
                if replayers.len() == 0 && !idle_reported {
                    tracing::warn!(
                        "no mirrored pool with a receiving peer: nothing to replay; looking again every {}s",
                        config.borrow().rbd_mirror_rs_pool_refresh_interval.as_secs_f64()
                    );
                }
                idle_reported = replayers.len() == 0;
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the pools; looking again"),
        }
        let refresh = config.borrow().rbd_mirror_rs_pool_refresh_interval;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(refresh) => {}
        }
    }
    replayers.shut_down().await;
    Ok(())
}

/// What every pool replayer is handed.
struct Target<'a> {
    local: &'a Rados,
    site_name: &'a str,
    config: &'a ConfigWatch,
    connect_timeout: Duration,
    registry: &'a Registry,
    cancel: &'a CancellationToken,
}

/// Registers and spawns the pool replayer of `pool` and `peer`; as it ends, it leaves the
/// registry.
fn start(
    replayers: &mut Tasks<PoolReplayerKey>,
    key: PoolReplayerKey,
    pool: &MirroredPool,
    peer: &MirrorPeerSite,
    to: &Target<'_>,
) {
    let limit = to.config.borrow().rbd_mirror_rs_peer_bandwidth_limit.0;
    let bandwidth = Arc::new(image_replayer::Bandwidth::new(limit));
    let state = PoolState {
        pool_id: pool.id,
        peer_site: peer.site_name.clone(),
        peer_uuid: peer.uuid.clone(),
        peer_client: peer.client_name.clone(),
        error: None,
        error_sources: Default::default(),
        deletions: Default::default(),
        leader: Default::default(),
        bandwidth: Some(bandwidth.clone()),
    };
    to.registry.add_pool(&pool.name, state);
    let span = tracing::info_span!("pool", pool = %pool.name, peer = %peer.site_name);
    span.in_scope(|| tracing::info!(pool_id = pool.id, peer_uuid = %peer.uuid, "starting the pool replayer"));
    let replayer = PoolReplayer {
        local: to.local.clone(),
        pool: pool.name.clone(),
        peer: peer.clone(),
        site_name: to.site_name.to_owned(),
        config: to.config.clone(),
        connect_timeout: to.connect_timeout,
        registry: to.registry.clone(),
        solo: key.solo,
        bandwidth,
    };
    let token = to.cancel.child_token();
    let registry = to.registry.clone();
    let (pool, peer_site) = (pool.name.clone(), peer.site_name.clone());
    let task = {
        let token = token.clone();
        async move {
            replayer.run(token).await;
            registry.remove_pool(&pool, &peer_site);
            tracing::info!("pool replayer stopped");
        }
        .instrument(span)
    };
    replayers.start(key, token, task);
}
