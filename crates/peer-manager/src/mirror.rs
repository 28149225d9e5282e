//! The top of replication (stock `Mirror`): every mirrored pool of the local cluster and
//! every peer it receives from, one pool replayer each.

use std::time::Duration;

use image_replayer::{ConfigWatch, PoolState, Registry};
use rados_ffi::Rados;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::discovery::mirrored_pools;
use crate::pool_replayer::PoolReplayer;

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
    let mut pools = JoinSet::new();
    // Until a pool has mirroring and a receiving peer (a daemon installed before mirroring is
    // set up), look again every `rbd_mirror_pool_replayers_refresh_interval`, as the stock
    // daemon does, rather than exit (systemd would give up on it).
    loop {
        for pool in mirrored_pools(&local).await? {
            for peer in pool.receiving_peers {
                let state = PoolState {
                    pool_id: pool.id,
                    peer_site: peer.site_name.clone(),
                    peer_uuid: peer.uuid.clone(),
                    peer_client: peer.client_name.clone(),
                    error: None,
                    deletions: Default::default(),
                    leader: Default::default(),
                };
                registry.add_pool(&pool.name, state);
                let span = tracing::info_span!("pool", pool = %pool.name, peer = %peer.site_name);
                let replayer = PoolReplayer {
                    local: local.clone(),
                    pool: pool.name.clone(),
                    peer,
                    site_name: site_name.clone(),
                    config: config.clone(),
                    connect_timeout,
                    registry: registry.clone(),
                };
                pools.spawn(replayer.run(cancel.clone()).instrument(span));
            }
        }
        if !pools.is_empty() {
            break;
        }
        let interval = config.borrow().rbd_mirror_pool_replayers_refresh_interval;
        tracing::warn!(
            "no mirrored pool with a receiving peer: nothing to replay; looking again in {}s",
            interval.as_secs()
        );
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
    while pools.join_next().await.is_some() {}
    Ok(())
}
