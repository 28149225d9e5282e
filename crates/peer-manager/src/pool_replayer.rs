//! The daemon's replication work: every mirrored pool of the local cluster, every peer it
//! receives from, every image of that peer mirrored in journal or snapshot mode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::cls;
use image_replayer::{ImageKey, PeerContext, Registry, ReplayerConfig};
use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::{Rados, Watch};
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageState, RBD_MIRRORING};
use rbd_types::MirrorMode;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::image_deleter::{self, Request};
use crate::peers::peer_cluster_config;

/// How often the peer's image list is rescanned without a notification.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// How often the primary pool is told we pull from it (`mirror_peer_ping`).
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Runs replication for every mirrored pool of `local` and every peer it receives from,
/// until `cancel` fires; then stops every image replayer (each commits its position).
/// `concurrent_image_syncs` bounds initial syncs per pool. Pools and images report in
/// `registry`.
pub async fn run(
    local: Rados,
    config: ReplayerConfig,
    connect_timeout: Duration,
    concurrent_image_syncs: usize,
    registry: Registry,
    cancel: CancellationToken,
) -> rados_ffi::Result<()> {
    let site_name = local.mirror_site_name().await.unwrap_or_default();
    let mut pools = JoinSet::new();
    for pool in local.pool_list().await? {
        let io = match local.ioctx(&pool, "").await {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "cannot open pool");
                continue;
            }
        };
        match io.mirror_mode().await {
            Ok(MirrorMode::Disabled) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(pool = %pool, error = %e, "not a mirrored pool");
                continue;
            }
        }
        let peers = match io.mirror_peer_sites().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pool = %pool, error = %e, "cannot list the pool's peers");
                continue;
            }
        };
        for peer in peers.into_iter().filter(|p| p.direction.receives()) {
            registry.add_pool(&pool, &peer.site_name, io.pool_id());
            let span = tracing::info_span!("pool", pool = %pool, peer = %peer.site_name);
            let task = PoolTask {
                local: local.clone(),
                pool: pool.clone(),
                peer,
                site_name: site_name.clone(),
                config: config.clone(),
                connect_timeout,
                syncs: concurrent_image_syncs,
                registry: registry.clone(),
            };
            pools.spawn(task.run(cancel.clone()).instrument(span));
        }
    }
    if pools.is_empty() {
        tracing::warn!("no mirrored pool with a receiving peer: nothing to replay");
    }
    while pools.join_next().await.is_some() {}
    Ok(())
}

struct PoolTask {
    local: Rados,
    pool: String,
    peer: MirrorPeerSite,
    site_name: String,
    config: ReplayerConfig,
    connect_timeout: Duration,
    syncs: usize,
    registry: Registry,
}

impl PoolTask {
    /// Connects to the peer (retrying), then serves the pool until cancelled.
    async fn run(self, cancel: CancellationToken) {
        loop {
            match self.serve(&cancel).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "pool replayer failed; retrying in 30 s");
                    self.registry.set_pool_error(&self.pool, &self.peer.site_name, Some(e.to_string()));
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    async fn serve(&self, cancel: &CancellationToken) -> rados_ffi::Result<()> {
        let local_io = self.local.ioctx(&self.pool, "").await?;
        let cfg = peer_cluster_config(&local_io, &self.peer, self.connect_timeout).await?;
        let remote = Rados::connect(&cfg).await?;
        let remote_io = remote.ioctx(&self.pool, "").await?;
        let local_mirror_uuid = local_io.mirror_uuid().await?;
        let remote_mirror_uuid = remote_io.mirror_uuid().await?;
        tracing::info!(remote_fsid = %remote.fsid(), %local_mirror_uuid, %remote_mirror_uuid, "connected to the peer");
        self.registry.set_pool_error(&self.pool, &self.peer.site_name, None);

        // Statuses are `up` while their writer watches `rbd_mirroring`: drop stale ones,
        // then watch with the same connections that write them.
        for io in [&local_io, &remote_io] {
            if let Err(e) = cls::mirror_image_status_remove_down(io).await {
                tracing::debug!(pool = %io.pool_name(), error = %e, "status_remove_down failed");
            }
        }
        let _local_watch = local_io.watch(RBD_MIRRORING).await?;
        let mut remote_watch = remote_io.watch(RBD_MIRRORING).await?;

        let ctx = Arc::new(PeerContext {
            local: self.local.clone(),
            remote,
            pool: self.pool.clone(),
            namespace: String::new(),
            local_io,
            remote_io,
            local_mirror_uuid,
            remote_mirror_uuid,
            config: self.config.clone(),
            sync_slots: Arc::new(Semaphore::new(self.syncs.max(1))),
        });
        // Per image (global id): its replayer's cancellation token and task.
        let mut images: HashMap<String, (CancellationToken, JoinHandle<()>)> = HashMap::new();
        // Local copies of images the peer stopped mirroring are deleted by their own task.
        let (deletions, requests) = mpsc::unbounded_channel();
        let deleting = image_deleter::Pending::default();
        let deleter = tokio::spawn(
            image_deleter::run(ctx.clone(), requests, deleting.clone(), cancel.child_token())
                .instrument(tracing::Span::current()),
        );
        let mut swept = false;
        let mut last_ping: Option<Instant> = None;
        loop {
            if last_ping.is_none_or(|t| t.elapsed() >= PING_INTERVAL) {
                if let Err(e) =
                    cls::mirror_peer_ping(&ctx.remote_io, &self.site_name, &ctx.local_mirror_uuid).await
                {
                    tracing::debug!(error = %e, "mirror_peer_ping failed");
                }
                last_ping = Some(Instant::now());
            }
            match self.scan(&ctx).await {
                Ok(wanted) => {
                    // Stop replayers of images no longer mirrored; their local copies go to
                    // the deleter, which waits for the replayer to finish.
                    let gone: Vec<String> =
                        images.keys().filter(|g| !wanted.contains_key(*g)).cloned().collect();
                    for global_id in gone {
                        let Some((token, task)) = images.remove(&global_id) else { continue };
                        tracing::info!(%global_id, "image no longer mirrored from the peer: stopping its replayer");
                        token.cancel();
                        self.registry.remove_image(&ImageKey::new(&self.pool, &ctx.namespace, &global_id));
                        deleting.lock().insert(global_id.clone());
                        let _ = deletions.send(Request::Delete { global_id, replayer: Some(task) });
                    }
                    // Once per connection: local images of this peer whose primary went away
                    // while no daemon ran (the deleter keeps primary and unlinked ones).
                    if !swept {
                        match cls::mirror_image_list(&ctx.local_io).await {
                            Ok(local) => {
                                swept = true;
                                for global_id in local.into_values() {
                                    if !wanted.contains_key(&global_id)
                                        && deleting.lock().insert(global_id.clone())
                                    {
                                        let _ = deletions.send(Request::Delete { global_id, replayer: None });
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot list the local mirrored images"),
                        }
                    }
                    let _ = deletions.send(Request::Scanned(wanted.keys().cloned().collect::<BTreeSet<_>>()));
                    for (global_id, remote_id) in wanted {
                        if images.contains_key(&global_id) || deleting.lock().contains(&global_id) {
                            continue;
                        }
                        let token = cancel.child_token();
                        let image =
                            self.registry.image(ImageKey::new(&self.pool, &ctx.namespace, &global_id));
                        let task =
                            tokio::spawn(image_replayer::run(ctx.clone(), remote_id, image, token.clone()));
                        images.insert(global_id, (token, task));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the peer's mirrored images"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = next_notification(&mut remote_watch) => {}
                _ = tokio::time::sleep(RESCAN_INTERVAL) => {}
            }
        }
        // Shutdown: every replayer commits its position, then returns; the deleter stops
        // (a deletion in flight is retried by the next run).
        for (global_id, (_, task)) in images {
            let _ = task.await;
            self.registry.remove_image(&ImageKey::new(&self.pool, &ctx.namespace, &global_id));
        }
        drop(deletions);
        let _ = deleter.await;
        Ok(())
    }

    /// The peer's images to replay: mirroring enabled, in journal or snapshot mode (global id →
    /// image id).
    async fn scan(&self, ctx: &PeerContext) -> image_replayer::Result<BTreeMap<String, String>> {
        let mut wanted = BTreeMap::new();
        for (image_id, global_id) in cls::mirror_image_list(&ctx.remote_io).await? {
            match cls::mirror_image_get(&ctx.remote_io, &image_id).await? {
                Some(m)
                    if m.state == MirrorImageState::Enabled
                        && matches!(m.mode, MirrorImageMode::Journal | MirrorImageMode::Snapshot) =>
                {
                    wanted.insert(global_id, image_id);
                }
                _ => {}
            }
        }
        Ok(wanted)
    }
}

/// Waits for a notification on the watch (a closed watch waits forever: the rescan timer
/// still runs).
async fn next_notification(watch: &mut Watch) {
    if watch.next().await.is_none() {
        std::future::pending::<()>().await;
    }
}
