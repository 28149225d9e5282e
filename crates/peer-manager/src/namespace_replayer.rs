//! The namespace replayer (stock `NamespaceReplayer`): one RADOS namespace of a pool against
//! the same namespace of the peer's pool (Pacific mirrors `pool/ns` to `pool/ns`), the
//! default one ("") included. It holds both namespaces' `rbd_mirroring` watches (which make
//! the statuses `up`), and on every change the pool watcher reports it starts and stops
//! image replayers (the instance replayer) and hands the images the peer stopped mirroring
//! to the image deleter; once per start it sweeps the local mirrored images the peer does
//! not list. Until the peer's namespace has mirroring enabled it waits (looking every
//! `rbd_mirror_rs_pool_refresh_interval`). The pool replayer starts and stops it; stopping
//! stops its image replayers (each commits its position) and takes its images and deletion
//! queues out of the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use image_replayer::cls;
use image_replayer::{ConfigWatch, PeerContext, Registry, Throttle};
use rados_ffi::Rados;
use rbd_types::cls_rbd::RBD_MIRRORING;
use rbd_types::MirrorMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::image_deleter::{self, Request};
use crate::instance_replayer::InstanceReplayer;
use crate::pool_watcher::PoolWatcher;

/// What a pool replayer shares with its namespace replayers.
#[derive(Debug)]
pub(crate) struct PoolContext {
    /// The local cluster.
    pub(crate) local: Rados,
    /// The peer cluster.
    pub(crate) remote: Rados,
    /// Pool name (the same on both sites).
    pub(crate) pool: String,
    /// The peer's site name (the registry's pool key, with the pool).
    pub(crate) peer_site: String,
    /// The local pool's mirror uuid: that of its default namespace, which every namespace
    /// uses as stock does (our journal client id, our remote statuses' key).
    pub(crate) local_mirror_uuid: String,
    /// The peer pool's mirror uuid (default namespace, likewise).
    pub(crate) remote_mirror_uuid: String,
    /// The daemon's configuration, as it changes.
    pub(crate) config: ConfigWatch,
    /// The pool's sync slots, shared by its namespaces (`rbd_mirror_concurrent_image_syncs`
    /// per pool replayer, as stock's throttler).
    pub(crate) sync_slots: Arc<Throttle>,
    /// The state registry.
    pub(crate) registry: Registry,
}

/// One namespace of a pool replayer.
#[derive(Debug)]
pub(crate) struct NamespaceReplayer {
    pub(crate) pool: Arc<PoolContext>,
    /// RADOS namespace ("" for the default).
    pub(crate) namespace: String,
}

/// Why serving a namespace ended.
enum Ended {
    /// Cancelled: the namespace replayer stops.
    Cancelled,
    /// The peer's namespace has no mirroring (yet): look again soon.
    PeerNotMirrored,
}

impl NamespaceReplayer {
    /// Serves the namespace until cancelled; a failure is retried after
    /// `rbd_mirror_rs_pool_retry_interval`. On return its registry entries are gone.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut waiting_reported = false;
        loop {
            let wait = match self.serve(&cancel).await {
                Ok(Ended::Cancelled) => break,
                Ok(Ended::PeerNotMirrored) => {
                    if !waiting_reported {
                        tracing::info!("the peer's namespace has no mirroring enabled (yet): waiting for it");
                        waiting_reported = true;
                    }
                    self.pool.config.borrow().rbd_mirror_rs_pool_refresh_interval
                }
                Err(e) => {
                    tracing::error!(error = %e, "namespace replayer failed; retrying later");
                    self.pool.config.borrow().rbd_mirror_rs_pool_retry_interval
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.pool.registry.remove_namespace(&self.pool.pool, &self.pool.peer_site, &self.namespace);
    }

    async fn serve(&self, cancel: &CancellationToken) -> rados_ffi::Result<Ended> {
        let pool = &self.pool;
        let local_io = pool.local.ioctx(&pool.pool, &self.namespace).await?;
        let remote_io = pool.remote.ioctx(&pool.pool, &self.namespace).await?;
        // Pacific: the same namespace on both sites; with its mirroring disabled on the peer
        // (or not created yet) there is no `rbd_mirroring` to watch.
        if remote_io.mirror_mode().await? == MirrorMode::Disabled {
            return Ok(Ended::PeerNotMirrored);
        }
        // Statuses are `up` while their writer watches `rbd_mirroring`: drop stale ones,
        // then watch with the same connections that write them.
        for io in [&local_io, &remote_io] {
            if let Err(e) = cls::mirror_image_status_remove_down(io).await {
                tracing::debug!(pool = %io.pool_name(), error = %e, "status_remove_down failed");
            }
        }
        let _local_watch = local_io.watch(RBD_MIRRORING).await?;
        let ctx = Arc::new(PeerContext {
            local: pool.local.clone(),
            remote: pool.remote.clone(),
            pool: pool.pool.clone(),
            namespace: self.namespace.clone(),
            local_io,
            remote_io,
            local_mirror_uuid: pool.local_mirror_uuid.clone(),
            remote_mirror_uuid: pool.remote_mirror_uuid.clone(),
            config_watch: pool.config.clone(),
            sync_slots: pool.sync_slots.clone(),
        });
        let mut watcher = PoolWatcher::new(&ctx).await?;
        tracing::info!("serving the namespace");
        let mut images = InstanceReplayer::new(ctx.clone(), pool.registry.clone());
        // Local copies of images the peer stopped mirroring are deleted by their own task.
        let (deletions, requests) = mpsc::unbounded_channel();
        let deleting = image_deleter::Pending::default();
        let deleter = tokio::spawn(
            image_deleter::run(
                ctx.clone(),
                requests,
                deleting.clone(),
                image_deleter::Report {
                    registry: pool.registry.clone(),
                    pool: pool.pool.clone(),
                    peer_site: pool.peer_site.clone(),
                    namespace: self.namespace.clone(),
                },
                cancel.child_token(),
            )
            .instrument(tracing::Span::current()),
        );
        let mut swept = false;
        loop {
            let config = ctx.config();
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
                    // Once per start: local images of this peer whose primary went away
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
                    self.start_image_replayers(&mut images, wanted, &deleting, cancel);
                    tracing::trace!(images = images.len(), "namespace scanned");
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the peer's mirrored images"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = watcher.changed(config.rbd_mirror_rs_pool_rescan_interval) => {}
            }
        }
        // Shutdown: every replayer commits its position, then returns; the deleter stops
        // (a deletion in flight is retried by the next run).
        images.shut_down().await;
        drop(deletions);
        let _ = deleter.await;
        Ok(Ended::Cancelled)
    }

    /// Starts a replayer for every image in `wanted` (global id → the peer's image id) that
    /// has none and is not being deleted. The one place an image replayer is started: the
    /// image map (§5.5, to come) decides here whether an image is this instance's to replay.
    fn start_image_replayers(
        &self,
        images: &mut InstanceReplayer,
        wanted: BTreeMap<String, String>,
        deleting: &image_deleter::Pending,
        cancel: &CancellationToken,
    ) {
        for (global_id, remote_id) in wanted {
            if images.contains(&global_id) || deleting.lock().contains(&global_id) {
                continue;
            }
            images.start(&global_id, remote_id, cancel);
        }
    }
}

/// The namespaces of the pool `default_io` is on (default namespace) with mirroring enabled
/// on this site, the default one always (its pool replayer runs because the pool's mirroring
/// is enabled). A namespace whose mode cannot be read stays served if `serving` says it is,
/// as stock.
pub(crate) async fn mirroring_namespaces(
    local: &Rados,
    default_io: &rados_ffi::IoCtx,
    serving: impl Fn(&str) -> bool,
) -> rados_ffi::Result<BTreeSet<String>> {
    let mut out = BTreeSet::from([String::new()]);
    for name in default_io.rbd_namespaces().await? {
        let mode = match local.ioctx(default_io.pool_name(), &name).await {
            Ok(io) => io.mirror_mode().await,
            Err(e) => Err(e),
        };
        match mode {
            Ok(MirrorMode::Disabled) => {}
            Ok(_) => {
                out.insert(name);
            }
            Err(e) => {
                tracing::debug!(namespace = %name, error = %e, "cannot read the namespace's mirror mode");
                if serving(&name) {
                    out.insert(name);
                }
            }
        }
    }
    Ok(out)
}
