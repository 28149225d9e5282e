//! The namespace replayer (stock `NamespaceReplayer`): one RADOS namespace of a pool against
//! the same namespace of the peer's pool (Pacific mirrors `pool/ns` to `pool/ns`), the
//! default one ("") included. It holds both namespaces' `rbd_mirroring` watches (which make
//! the statuses `up`) and registers this daemon as an instance of the namespace
//! ([`crate::instance_watcher`]): it starts and stops image replayers (the instance
//! replayer) as the leader asks, whichever instance leads, ours or stock. While this
//! instance leads the pool, it also scans the peer's mirrored images (the pool watcher) for
//! the image map ([`crate::image_map`]), which spreads them over the live instances, and
//! hands the images the peer stopped mirroring, once released, to the image deleter; once
//! per leadership it sweeps the local mirrored images the peer does not list. Until the peer's namespace has mirroring enabled it waits (looking every
//! `rbd_mirror_rs_pool_refresh_interval`). The pool replayer starts and stops it; stopping
//! stops its image replayers (each commits its position) and takes its images and deletion
//! queues out of the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::cls;
use image_replayer::{ConfigWatch, LeaderState, PeerContext, Registry, Throttle};
use rados_ffi::Rados;
use rbd_types::MirrorMode;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::image_deleter::{self, Request};
use crate::image_map::Mapper;
use crate::instance_replayer::InstanceReplayer;
use crate::instance_watcher::{ImageRequest, InstanceWatcher};
use crate::pool_watcher::{MirroringWatch, PoolWatcher, Side};

/// How long a scan waits after a notification of the peer's `rbd_mirroring`, for the
/// notifications that follow it.
const NOTIFY_DEBOUNCE: Duration = Duration::from_secs(1);

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
    /// The peer connection's bandwidth cap, shared by its namespaces' image replayers.
    pub(crate) bandwidth: Arc<image_replayer::Bandwidth>,
    /// The state registry.
    pub(crate) registry: Registry,
    /// Who leads the pool's instances (this one maps images while it does).
    pub(crate) leader: watch::Receiver<LeaderState>,
    /// No leader election (a pool with several receiving peers, see `PoolReplayer::solo`):
    /// every image of the peer is replayed here, without instance registration or image map.
    pub(crate) solo: bool,
    /// Since when the peer has not answered the pool replayer's `mirror_peer_ping` (none
    /// while it answers): the image replayers say so in their statuses.
    pub(crate) peer_silent: watch::Receiver<Option<Instant>>,
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
                    self.report_error(Some(if self.namespace.is_empty() {
                        e.to_string()
                    } else {
                        format!("namespace {}: {e}", self.namespace)
                    }));
                    self.pool.config.borrow().rbd_mirror_rs_pool_retry_interval
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.report_error(None);
        self.pool.registry.remove_namespace(&self.pool.pool, &self.pool.peer_site, &self.namespace);
    }

    /// Sets or clears this namespace's part of the pool's error (the service map's callout).
    fn report_error(&self, error: Option<String>) {
        let source = format!("namespace {}", self.namespace);
        self.pool.registry.set_pool_error(&self.pool.pool, &self.pool.peer_site, &source, error);
    }

    async fn serve(&self, cancel: &CancellationToken) -> image_replayer::Result<Ended> {
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
            bandwidth: pool.bandwidth.clone(),
            statuses: Arc::new(image_replayer::StatusBook::default()),
            primary_silent: pool.peer_silent.clone(),
        });
        let mut local_watch = MirroringWatch::new(&ctx, Side::Local).await?;
        let mut watcher = PoolWatcher::new(&ctx).await?;
        // This daemon as an instance of the namespace: the leader's requests arrive here.
        let (request_tx, mut requests) = mpsc::unbounded_channel();
        let instance_cancel = CancellationToken::new();
        let _instance_guard = instance_cancel.clone().drop_guard();
        let (wanted_tx, wanted_rx) = watch::channel(None);
        let (released_tx, mut released) = mpsc::unbounded_channel();
        let mut helpers = Vec::new();
        // Unchanged statuses are refreshed in batches (stock's MirrorStatusUpdater).
        helpers.push(tokio::spawn({
            let (ctx, cancel) = (ctx.clone(), instance_cancel.clone());
            async move {
                ctx.statuses.clone().run(&ctx.local_io, &ctx.remote_io, &ctx.local_mirror_uuid, cancel).await
            }
            .instrument(tracing::Span::current())
        }));
        if !pool.solo {
            let instance_io = Arc::new(pool.local.ioctx(&pool.pool, &self.namespace).await?);
            let instance = InstanceWatcher::register(pool.local.clone(), instance_io.clone()).await?;
            helpers.push(tokio::spawn(
                instance
                    .run(request_tx, pool.leader.clone(), instance_cancel.clone())
                    .instrument(tracing::Span::current()),
            ));
            // The image map, run while this instance leads.
            helpers.push(tokio::spawn(
                Mapper {
                    io: instance_io,
                    my_instance_id: pool.local.instance_id(),
                    config: pool.config.clone(),
                    leader: pool.leader.clone(),
                    wanted: wanted_rx,
                    released: released_tx,
                }
                .run(cancel.child_token())
                .instrument(tracing::Span::current()),
            ));
        }
        tracing::info!("serving the namespace");
        self.report_error(None);
        let mut images = InstanceReplayer::new(ctx.clone(), pool.registry.clone());
        // Local copies of images the peer stopped mirroring are deleted by their own task.
        let (deletions, deleter_requests) = mpsc::unbounded_channel();
        let deleting = image_deleter::Pending::default();
        let deleter = tokio::spawn(
            image_deleter::run(
                ctx.clone(),
                deleter_requests,
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
        let mut leader = pool.leader.clone();
        let mut swept = false;
        // When the peer's images are listed next: at once, then every rescan interval, and
        // NOTIFY_DEBOUNCE after a notification (which comes in bursts: one per image when a
        // pool's images are enabled one by one, as stock's PoolWatcher waits too).
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                self.scan(
                    &ctx,
                    &watcher,
                    &mut leader,
                    &mut images,
                    &deleting,
                    &deletions,
                    &wanted_tx,
                    &mut swept,
                    cancel,
                )
                .await;
                next_scan = Instant::now() + ctx.config().rbd_mirror_rs_pool_rescan_interval;
            }
            // The leader's requests first: an instance answers them while a scan waits.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(request) = requests.recv() => {
                    self.handle(&ctx, request, &mut images, &deleting, &deletions, cancel).await;
                }
                Some(global_id) = released.recv() => {
                    if deleting.lock().insert(global_id.clone()) {
                        let _ = deletions.send(Request::Delete { global_id, replayer: None, replayed: true });
                    }
                }
                Ok(()) = leader.changed() => next_scan = Instant::now(),
                () = watcher.notified(&ctx) => next_scan = next_scan.min(Instant::now() + NOTIFY_DEBOUNCE),
                // Kept up so that this daemon's statuses stay `up`; its notifications need nothing.
                () = local_watch.notified(&ctx) => {}
                _ = tokio::time::sleep_until(next_scan.into()) => {}
            }
        }
        // Shutdown: every replayer commits its position, then returns; this instance
        // unregisters (nothing left for a leader to break); the deleter stops (a deletion in
        // flight is retried by the next run).
        images.shut_down().await;
        instance_cancel.cancel();
        for task in helpers {
            let _ = task.await;
        }
        drop(deletions);
        let _ = deleter.await;
        Ok(Ended::Cancelled)
    }

    /// Lists the peer's mirrored images: without leader election, replays them all
    /// ([`Self::solo_pass`]); as the leader, hands them to the image map and the deleter.
    #[allow(clippy::too_many_arguments)]
    async fn scan(
        &self,
        ctx: &Arc<PeerContext>,
        watcher: &PoolWatcher,
        leader: &mut watch::Receiver<LeaderState>,
        images: &mut InstanceReplayer,
        deleting: &image_deleter::Pending,
        deletions: &mpsc::UnboundedSender<Request>,
        wanted_tx: &watch::Sender<Option<BTreeSet<String>>>,
        swept: &mut bool,
        cancel: &CancellationToken,
    ) {
        let leads = leader.borrow_and_update().leader;
        if !self.pool.solo && !leads {
            *swept = false;
            return;
        }
        let wanted = match watcher.mirrored_images(ctx).await {
            Ok(wanted) => wanted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the peer's mirrored images");
                return;
            }
        };
        if self.pool.solo {
            self.solo_pass(ctx, wanted, images, deleting, deletions, swept, cancel).await;
            return;
        }
        // Once per leadership: local images of this peer whose primary went away while no
        // daemon ran (the deleter keeps primary and unlinked ones), unless the image map
        // still holds them (released first).
        if !*swept {
            *swept = self.sweep(ctx, &wanted, deleting, deletions).await;
        }
        let now: BTreeSet<String> = wanted.keys().cloned().collect();
        let _ = deletions.send(Request::Scanned(now.clone()));
        wanted_tx.send_if_modified(|w| {
            let changed = w.as_ref() != Some(&now);
            *w = Some(now);
            changed
        });
        tracing::trace!(images = images.len(), "namespace scanned");
    }

    /// One pass without leader election: stops the replayers of images the peer no longer
    /// mirrors (their local copies go to the deleter), sweeps once, starts the missing ones.
    #[allow(clippy::too_many_arguments)]
    async fn solo_pass(
        &self,
        ctx: &Arc<PeerContext>,
        wanted: BTreeMap<String, String>,
        images: &mut InstanceReplayer,
        deleting: &image_deleter::Pending,
        deletions: &mpsc::UnboundedSender<Request>,
        swept: &mut bool,
        cancel: &CancellationToken,
    ) {
        let gone: Vec<String> = images.global_ids().filter(|g| !wanted.contains_key(*g)).cloned().collect();
        for global_id in gone {
            let Some(task) = images.stop(&global_id) else { continue };
            tracing::info!(%global_id, "image no longer mirrored from the peer: stopping its replayer");
            deleting.lock().insert(global_id.clone());
            let _ = deletions.send(Request::Delete { global_id, replayer: Some(task), replayed: true });
        }
        if !*swept {
            *swept = self.sweep(ctx, &wanted, deleting, deletions).await;
        }
        let _ = deletions.send(Request::Scanned(wanted.keys().cloned().collect::<BTreeSet<_>>()));
        for (global_id, remote_id) in wanted {
            if images.contains(&global_id) || deleting.lock().contains(&global_id) {
                continue;
            }
            images.start(&global_id, remote_id, cancel);
        }
    }

    /// Queues for deletion the local mirrored images the peer does not list; `false` when
    /// the local list could not be read (tried again at the next scan).
    async fn sweep(
        &self,
        ctx: &PeerContext,
        wanted: &BTreeMap<String, String>,
        deleting: &image_deleter::Pending,
        deletions: &mpsc::UnboundedSender<Request>,
    ) -> bool {
        let mapped = match crate::image_map::read_image_map(&ctx.local_io).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the image map");
                return false;
            }
        };
        match cls::mirror_image_list(&ctx.local_io).await {
            Ok(local) => {
                for global_id in local.into_values() {
                    if !wanted.contains_key(&global_id)
                        && !mapped.contains_key(&global_id)
                        && deleting.lock().insert(global_id.clone())
                    {
                        let _ =
                            deletions.send(Request::Delete { global_id, replayer: None, replayed: false });
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the local mirrored images");
                false
            }
        }
    }

    /// Does what the leader asks of this instance, and answers it. The one place an image
    /// replayer is started: when the leader maps the image here.
    async fn handle(
        &self,
        ctx: &PeerContext,
        request: crate::instance_watcher::Request,
        images: &mut InstanceReplayer,
        deleting: &image_deleter::Pending,
        deletions: &mpsc::UnboundedSender<Request>,
        cancel: &CancellationToken,
    ) {
        match request.what.clone() {
            ImageRequest::Acquire(global_id) => {
                if images.contains(&global_id) || deleting.lock().contains(&global_id) {
                    request.complete(0);
                    return;
                }
                match cls::mirror_image_get_image_id(&ctx.remote_io, &global_id).await {
                    Ok(Some(remote_id)) => {
                        tracing::info!(%global_id, "image acquired: starting its replayer");
                        images.start(&global_id, remote_id, cancel);
                        request.complete(0);
                    }
                    Ok(None) => {
                        tracing::info!(%global_id, "image acquired but the peer has no such image: not replayed");
                        request.complete(0);
                    }
                    Err(e) => {
                        tracing::warn!(%global_id, error = %e, "cannot look the image up on the peer");
                        request.complete(-libc::EIO);
                    }
                }
            }
            ImageRequest::Release(global_id) => match images.stop(&global_id) {
                Some(task) => {
                    tracing::info!(%global_id, "image released: stopping its replayer");
                    // Answered once the replayer has committed its position and returned.
                    tokio::spawn(async move {
                        let _ = task.await;
                        request.complete(0);
                    });
                }
                None => request.complete(0),
            },
            ImageRequest::PeerImageRemoved(global_id) => {
                tracing::info!(%global_id, "the peer removed the image: stopping its replayer, deleting the local copy");
                let replayer = images.stop(&global_id);
                if deleting.lock().insert(global_id.clone()) {
                    let _ = deletions.send(Request::Delete { global_id, replayer, replayed: true });
                }
                request.complete(0);
            }
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
