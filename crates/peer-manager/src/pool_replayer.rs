//! The pool replayer (stock `PoolReplayer`): one pool against one peer. It connects to the
//! peer (retrying), holds both `rbd_mirroring` watches (which make statuses `up`), pings
//! the peer pool, and on every change the pool watcher reports starts and stops image
//! replayers (the instance replayer) and hands the images the peer stopped mirroring to the
//! image deleter.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::cls;
use image_replayer::{ConfigWatch, PeerContext, Registry, Throttle};
use rados_ffi::rbd::MirrorPeerSite;
use rados_ffi::Rados;
use rbd_types::cls_rbd::RBD_MIRRORING;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::discovery::connect_peer;
use crate::image_deleter::{self, Request};
use crate::instance_replayer::InstanceReplayer;
use crate::pool_watcher::PoolWatcher;

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
}

impl PoolReplayer {
    /// Connects to the peer (retrying), then serves the pool until cancelled.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        loop {
            match self.serve(&cancel).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "pool replayer failed; retrying later");
                    self.registry.set_pool_error(&self.pool, &self.peer.site_name, Some(e.to_string()));
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
        let peer = connect_peer(&self.local, &self.pool, "", &self.peer, self.connect_timeout).await?;
        tracing::info!(
            remote_fsid = %peer.remote.fsid(),
            local_mirror_uuid = %peer.local_mirror_uuid,
            remote_mirror_uuid = %peer.remote_mirror_uuid,
            "connected to the peer"
        );
        self.registry.set_pool_error(&self.pool, &self.peer.site_name, None);

        // Statuses are `up` while their writer watches `rbd_mirroring`: drop stale ones,
        // then watch with the same connections that write them.
        for io in [&peer.local_io, &peer.remote_io] {
            if let Err(e) = cls::mirror_image_status_remove_down(io).await {
                tracing::debug!(pool = %io.pool_name(), error = %e, "status_remove_down failed");
            }
        }
        let _local_watch = peer.local_io.watch(RBD_MIRRORING).await?;
        // The sync slots follow `rbd_mirror_concurrent_image_syncs` while running, as stock.
        let mut config_changes = self.config.clone();
        let syncs = config_changes.borrow_and_update().rbd_mirror_concurrent_image_syncs;
        let syncs = usize::try_from(syncs).unwrap_or(usize::MAX);
        let ctx = Arc::new(PeerContext {
            local: self.local.clone(),
            remote: peer.remote,
            pool: self.pool.clone(),
            namespace: String::new(),
            local_io: peer.local_io,
            remote_io: peer.remote_io,
            local_mirror_uuid: peer.local_mirror_uuid,
            remote_mirror_uuid: peer.remote_mirror_uuid,
            config_watch: self.config.clone(),
            sync_slots: Arc::new(Throttle::new(syncs)),
        });
        let mut watcher = PoolWatcher::new(&ctx).await?;
        let mut images = InstanceReplayer::new(ctx.clone(), self.registry.clone());
        // Local copies of images the peer stopped mirroring are deleted by their own task.
        let (deletions, requests) = mpsc::unbounded_channel();
        let deleting = image_deleter::Pending::default();
        let deleter = tokio::spawn(
            image_deleter::run(
                ctx.clone(),
                requests,
                deleting.clone(),
                image_deleter::Report {
                    registry: self.registry.clone(),
                    pool: self.pool.clone(),
                    peer_site: self.peer.site_name.clone(),
                },
                cancel.child_token(),
            )
            .instrument(tracing::Span::current()),
        );
        let mut swept = false;
        let mut last_ping: Option<Instant> = None;
        loop {
            let config = ctx.config();
            if last_ping.is_none_or(|t| t.elapsed() >= config.rbd_mirror_rs_peer_ping_interval) {
                if let Err(e) =
                    cls::mirror_peer_ping(&ctx.remote_io, &self.site_name, &ctx.local_mirror_uuid).await
                {
                    tracing::debug!(error = %e, "mirror_peer_ping failed");
                }
                last_ping = Some(Instant::now());
            }
            match watcher.mirrored_images(&ctx).await {
                Ok(wanted) => {
                    // Stop replayers of images no longer mirrored; their local copies go to
                    // the deleter, which waits for the replayer to finish.
                    let gone: Vec<String> =
                        images.global_ids().filter(|g| !wanted.contains_key(*g)).cloned().collect();
                    for global_id in gone {
                        let Some(task) = images.stop(&global_id) else { continue };
                        tracing::info!(%global_id, "image no longer mirrored from the peer: stopping its replayer");
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
                        if images.contains(&global_id) || deleting.lock().contains(&global_id) {
                            continue;
                        }
                        images.start(&global_id, remote_id, cancel);
                    }
                    tracing::trace!(images = images.len(), "pool scanned");
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the peer's mirrored images"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = watcher.changed(config.rbd_mirror_rs_pool_rescan_interval) => {}
                Ok(()) = config_changes.changed() => {
                    let syncs = config_changes.borrow_and_update().rbd_mirror_concurrent_image_syncs;
                    ctx.sync_slots.resize(usize::try_from(syncs).unwrap_or(usize::MAX));
                }
            }
        }
        // Shutdown: every replayer commits its position, then returns; the deleter stops
        // (a deletion in flight is retried by the next run).
        images.shut_down().await;
        drop(deletions);
        let _ = deleter.await;
        Ok(())
    }
}
