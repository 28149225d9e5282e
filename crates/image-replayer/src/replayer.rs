//! One task per mirrored image: the retry loop around one attempt of the image's mirroring
//! mode ([`crate::journal`] or [`crate::snapshot`], dispatched on the primary's mirror
//! record). An error ends the attempt with an `error` status and a retry after
//! `retry_interval`; cancellation commits the replayed position and returns.

use std::sync::Arc;

use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageStatusState as State};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{ErrorKind, Result};
use crate::local::{Found, RemoteImage};
use crate::metrics::ImageMetrics;
use crate::registry::{Control, ImageHandle};
use crate::status::{bootstrap_step, publish, StatusPublisher};
use crate::{Attempt, PeerContext};

/// Starts the task of [`run`], in the caller's span. The task is spawned here, not by the
/// caller: an async fn's state machine is compiled in the crate that polls it, so the
/// replay path is compiled with this crate's optimisation (the crates that manage pools
/// are optimised for size, see the workspace's Cargo.toml).
pub fn spawn(
    ctx: Arc<PeerContext>,
    remote_image_id: String,
    image: ImageHandle,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx, remote_image_id, image, cancel).instrument(tracing::Span::current()))
}

/// Runs the replayer of remote image `remote_image_id` until `cancel` fires, reporting in
/// `image` (whose key holds the pool, namespace and global image id).
async fn run(ctx: Arc<PeerContext>, remote_image_id: String, image: ImageHandle, cancel: CancellationToken) {
    let global_id = image.key().global_id.clone();
    let span = tracing::info_span!("image", global_id = %global_id, remote_image_id = %remote_image_id);
    async move {
        let mut control = image.control();
        let mut status = StatusPublisher::new(&ctx.local_mirror_uuid, image, ctx.statuses.clone());
        let mut restarts = control.borrow().restarts;
        loop {
            // Stopped by the operator (`rbd mirror stop`): until started again.
            if control.borrow_and_update().stopped {
                tracing::info!("replay stopped by the operator");
                publish(&ctx, &mut status, State::Stopped, "stopped").await;
                while control.borrow_and_update().stopped {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = control.changed() => if r.is_err() { cancel.cancelled().await; return },
                    }
                }
                restarts = control.borrow().restarts;
                tracing::info!("replay started by the operator");
            }
            // One attempt, stopped early (its position committed) by the operator's stop or
            // restart: a watcher task cancels it, so that the attempt's own task polls
            // nothing more than the attempt (journal replay's hot loop).
            let attempt_token = cancel.child_token();
            let watcher = tokio::spawn({
                let (mut control, token, seen) = (control.clone(), attempt_token.clone(), restarts);
                async move {
                    let stop = stopped_or_restarted(&mut control, seen).await;
                    tracing::info!(stop, "the operator stops the current attempt");
                    token.cancel();
                }
                .instrument(tracing::Span::current())
            });
            let outcome = attempt(&ctx, &remote_image_id, &global_id, &attempt_token, &mut status).await;
            watcher.abort();
            restarts = control.borrow_and_update().restarts;
            if cancel.is_cancelled() {
                return;
            }
            let wait = match outcome {
                Ok(Attempt::Cancelled) => continue,
                Ok(Attempt::RetryAfter(d)) => d,
                Err(e) => {
                    tracing::error!(error = %e, "image replay failed");
                    let name = status.image().name();
                    ImageMetrics::new(&ctx.pool, &ctx.namespace, &name).errors.increment(1);
                    status.image().update(|s| s.last_error = Some(e.kind()));
                    let description = e.to_string();
                    publish(&ctx, &mut status, State::Error, &description).await;
                    // A conflict (split-brain, disconnected client) waits for an operator's
                    // resync, demotion or (`failback`) relinking: looked for as often as roles.
                    if e.kind() == ErrorKind::Conflict {
                        ctx.config().rbd_mirror_rs_role_check_interval
                    } else {
                        ctx.config().rbd_mirror_rs_image_retry_interval
                    }
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                // A stop or restart acts at once.
                _ = stopped_or_restarted(&mut control, restarts) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Resolves when the operator stops the image (true) or restarts it (a restart count
/// other than `seen`); other requests (flush) are journal replay's. Never resolves once the
/// registry forgot the image.
async fn stopped_or_restarted(control: &mut watch::Receiver<Control>, seen: u64) -> bool {
    while control.changed().await.is_ok() {
        let c = *control.borrow_and_update();
        if c.stopped || c.restarts != seen {
            return c.stopped;
        }
    }
    std::future::pending().await
}

/// One attempt in the mode the primary's mirror record names (journal when it has none):
/// the primary is read, and a local image promoted here (failover) is not replayed into,
/// whatever the remote is; the rest is the mode's.
async fn attempt(
    ctx: &PeerContext,
    remote_image_id: &str,
    global_id: &str,
    cancel: &CancellationToken,
    status: &mut StatusPublisher,
) -> Result<Attempt> {
    // As stock's bootstrap (PrepareRemoteImageRequest), the primary's image id is looked up
    // by global id at every attempt: a peer that resynced its copy (a new image) and then
    // promoted it has another id than when this replayer started.
    let prepared = async {
        let current_id = crate::cls::mirror_image_get_image_id(&ctx.remote_io, global_id).await?;
        let remote_image_id = current_id.as_deref().unwrap_or(remote_image_id);
        let record = crate::cls::mirror_image_get(&ctx.remote_io, remote_image_id).await?;
        let (remote, remote_primary) = RemoteImage::read(&ctx.remote_io, remote_image_id, global_id).await?;
        Ok::<_, crate::ReplayError>((
            record.map_or(MirrorImageMode::Journal, |m| m.mode),
            remote,
            remote_primary,
        ))
    };
    let (mode, remote, remote_primary) = bootstrap_step(ctx, status, prepared).await?;
    let step = match mode {
        MirrorImageMode::Journal => "bootstrapping, PREPARE_REMOTE_IMAGE",
        MirrorImageMode::Snapshot => "bootstrapping, PREPARE_LOCAL_IMAGE",
    };
    let local_id = crate::cls::mirror_image_get_image_id(&ctx.local_io, global_id).await?;
    // A pool with several peers: the image is its primary peer's replayer's (and so is its
    // status), not this one's, whose remote is not primary.
    if let (false, MirrorImageMode::Snapshot, Some(id)) = (remote_primary, mode, &local_id) {
        if crate::snapshot::follows_another_peer(ctx, id).await? {
            tracing::debug!("the local image follows another peer of the pool");
            return Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval));
        }
    }
    publish(ctx, status, State::StartingReplay, step).await;
    status.image().update(|s| {
        s.name = remote.name.clone();
        s.mode = Some(mode);
    });
    // A clone to create here: cloned from the local copy of its parent snapshot, once that
    // is there (until then the status says what it waits for).
    let clone = match (&remote.parent, &local_id) {
        (Some(parent), None) => match crate::local::clone_source(ctx, &remote, parent, mode).await? {
            Ok(source) => Some(source),
            Err(why) => {
                tracing::info!(%why, "the clone waits for its parent");
                publish(ctx, status, State::StartingReplay, &why).await;
                return Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_image_retry_interval));
            }
        },
        _ => None,
    };
    if let Some(id) = &local_id {
        if crate::local::is_primary(&ctx.local_io, id).await? {
            publish(ctx, status, State::Stopped, "local image is primary").await;
            return Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval));
        }
    }
    let found = Found { remote, remote_primary, local_id, clone };
    match mode {
        MirrorImageMode::Journal => crate::journal::attempt(ctx, found, cancel, status).await,
        MirrorImageMode::Snapshot => crate::snapshot::attempt(ctx, found, cancel, status).await,
    }
}
