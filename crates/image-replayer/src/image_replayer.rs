//! One task per mirrored image: check roles, bootstrap, initial sync (bounded by the pool's
//! sync semaphore), replay, and publish the status at every step. Errors end the attempt
//! with an `error` status and a retry after [`crate::ReplayerConfig::retry_interval`];
//! cancellation commits the replayed position and returns.

use std::sync::Arc;
use std::time::Duration;

use journal_reader::event::MirrorPeerState;
use journal_reader::tail::{JournalTail, TailOptions};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bootstrap::{ensure_local_image, ensure_remote_client, initial_sync, RemoteImage};
use crate::error::Result;
use crate::image_metrics::ImageMetrics;
use crate::journal_replay::{JournalReplayer, ReplayEnd};
use crate::local_image::LocalImage;
use crate::status::{ImageReplayerState, StatusPublisher};
use crate::PeerContext;
use rbd_types::cls_rbd::MirrorImageStatusState as State;

/// How one attempt ended.
pub(crate) enum Attempt {
    /// Stopped by cancellation.
    Cancelled,
    /// Retry after this long (the status says why).
    RetryAfter(Duration),
}

/// Runs the replayer of remote image `remote_image_id` (global id `global_id`) until
/// `cancel` fires.
pub async fn run(
    ctx: Arc<PeerContext>,
    remote_image_id: String,
    global_id: String,
    cancel: CancellationToken,
    shared: Arc<Mutex<ImageReplayerState>>,
) {
    let span = tracing::info_span!("image", global_id = %global_id, remote_image_id = %remote_image_id);
    async move {
        let mut status = StatusPublisher::new(&global_id, &ctx.local_mirror_uuid, shared);
        loop {
            let outcome = attempt(&ctx, &remote_image_id, &global_id, &cancel, &mut status).await;
            let wait = match outcome {
                Ok(Attempt::Cancelled) => return,
                Ok(Attempt::RetryAfter(d)) => d,
                Err(e) => {
                    tracing::error!(error = %e, "image replay failed");
                    let name = status.shared().lock().name.clone();
                    ImageMetrics::new(&ctx.pool, &ctx.namespace, &name).errors.increment(1);
                    let description = e.to_string();
                    publish(&ctx, &mut status, State::Error, &description).await;
                    ctx.config.retry_interval
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Publishes the image's status on the local pool (and the remote one, see
/// [`StatusPublisher::publish`]).
pub(crate) async fn publish(
    ctx: &PeerContext,
    status: &mut StatusPublisher,
    state: State,
    description: &str,
) {
    status.publish(&ctx.local_io, &ctx.remote_io, state, description).await;
}

async fn attempt(
    ctx: &PeerContext,
    remote_image_id: &str,
    global_id: &str,
    cancel: &CancellationToken,
    status: &mut StatusPublisher,
) -> Result<Attempt> {
    let mode = crate::cls::mirror_image_get(&ctx.remote_io, remote_image_id).await?.map(|m| m.mode);
    if mode == Some(rbd_types::cls_rbd::MirrorImageMode::Snapshot) {
        return crate::snapshot_replay::attempt(ctx, remote_image_id, global_id, cancel, status).await;
    }
    publish(ctx, status, State::StartingReplay, "bootstrapping, PREPARE_REMOTE_IMAGE").await;
    let (remote, remote_primary) = RemoteImage::read(&ctx.remote_io, remote_image_id, global_id).await?;
    status.shared().lock().name = remote.name.clone();
    tracing::Span::current().record("image", remote.name.as_str());

    // A local image promoted here (failover) is not replayed into, whatever the remote is.
    if let Some(local_id) = crate::cls::mirror_image_get_image_id(&ctx.local_io, global_id).await? {
        if crate::bootstrap::is_primary(&ctx.local_io, &local_id).await? {
            publish(ctx, status, State::Stopped, "local image is primary").await;
            return Ok(Attempt::RetryAfter(ctx.config.role_check_interval));
        }
    }
    if !remote_primary {
        publish(ctx, status, State::Unknown, "remote image is non-primary").await;
        return Ok(Attempt::RetryAfter(ctx.config.role_check_interval));
    }
    let metrics = ImageMetrics::new(&ctx.pool, &ctx.namespace, &remote.name);
    let (local_id, created) = ensure_local_image(ctx, &remote).await?;
    if !created && crate::bootstrap::resync_requested(&ctx.local_io, &local_id).await? {
        publish(ctx, status, State::StartingReplay, "resync requested").await;
        crate::image_deleter::delete_local_image(ctx, &local_id, "resync requested").await?;
        return Ok(Attempt::RetryAfter(Duration::from_secs(1)));
    }
    let client_state = ensure_remote_client(ctx, &remote, &local_id, created).await?;
    let local = LocalImage::open(&ctx.local, &ctx.pool, &ctx.namespace, &local_id).await?;

    let resumed = client_state != MirrorPeerState::Syncing;
    if !resumed {
        publish(ctx, status, State::Syncing, "bootstrapping, IMAGE_SYNC/WAIT_FOR_SLOT").await;
        let permit = tokio::select! {
            _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
            p = ctx.sync_slots.clone().acquire_owned() => p.map_err(|_| crate::ReplayError::State("sync slots closed".into()))?,
        };
        publish(ctx, status, State::Syncing, "bootstrapping, IMAGE_SYNC/COPY_IMAGE 0%").await;
        let sync = initial_sync(ctx, &remote, &local, status);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
            r = sync => r?,
        }
        drop(permit);
        metrics.full_syncs.increment(1);
    }

    publish(ctx, status, State::StartingReplay, "starting replay").await;
    let options = TailOptions {
        poll_interval: ctx.config.poll_interval,
        fetch_bytes: Some(crate::journal_replay::TAIL_FETCH_BYTES),
    };
    let tail = JournalTail::open(
        &ctx.remote,
        &ctx.pool,
        &ctx.namespace,
        remote_image_id,
        &ctx.local_mirror_uuid,
        options,
    )
    .await?;
    tracing::info!(position = ?tail.position(), resumed, "replaying from the committed position");
    if resumed {
        metrics.replay_resumed.increment(1);
    }
    let mut replayer = JournalReplayer::new(ctx, remote_image_id, local, tail);
    replayer.metrics = Some(metrics);
    let end = replayer.run(cancel, ctx.config.status_interval, status).await;
    match end? {
        ReplayEnd::Cancelled => Ok(Attempt::Cancelled),
        ReplayEnd::ResyncRequested => Ok(Attempt::RetryAfter(Duration::from_secs(0))),
        ReplayEnd::RemoteDemoted => {
            tracing::info!("the primary was demoted: replay stopped after its last entry");
            publish(ctx, status, State::Unknown, "remote image is non-primary").await;
            Ok(Attempt::RetryAfter(ctx.config.role_check_interval))
        }
    }
}
