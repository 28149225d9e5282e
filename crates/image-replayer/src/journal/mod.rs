//! Journal-mode mirroring (ceph-formats.md §3): bootstrap of the local image and of our
//! journal client on the primary's journal ([`bootstrap`]), the initial sync, then replay of
//! the primary's journal ([`replay`]) in windows planned per RADOS object ([`crate::local::write_batch`]),
//! woken together ([`wake_batch`]), committing only the durable prefix.

pub(crate) mod bootstrap;
pub(crate) mod commit_tracker;
pub(crate) mod replay;
pub(crate) mod wake_batch;

use std::time::Duration;

use journal_reader::event::MirrorPeerState;
use journal_reader::tail::{read_header, JournalTail, TailOptions};
use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageStatusState as State};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::local::image::LocalImage;
use crate::local::Found;
use crate::metrics::ImageMetrics;
use crate::status::{bootstrap_step, publish, StatusPublisher};
use crate::{Attempt, PeerContext};
use bootstrap::{check_epoch_link, ensure_local_image, ensure_remote_client, initial_sync, EpochLink};
use replay::{JournalReplayer, ReplayEnd};

/// One attempt of journal-mode replay of the primary `found`: a remote that is not primary
/// leaves the image `unknown`; else bootstrap, the initial sync
/// under the pool's sync slots when our client is new, then replay until cancelled, demoted
/// or a resync is requested.
pub(crate) async fn attempt(
    ctx: &PeerContext,
    found: Found,
    cancel: &CancellationToken,
    status: &mut StatusPublisher,
) -> Result<Attempt> {
    let Found { remote, remote_primary, clone, .. } = found;
    let remote_image_id = remote.image_id.as_str();
    if !remote_primary {
        publish(ctx, status, State::Unknown, "remote image is non-primary").await;
        return Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval));
    }
    let metrics = ImageMetrics::new(&ctx.pool, &ctx.namespace, &remote.name);
    // The primary's journal header, as the bootstrap steps below need it (the tail reads
    // it again when it opens, after our client is registered).
    // (Each step that calls the primary says so in the status while its cluster is silent.)
    let remote_journal = bootstrap_step(ctx, status, read_header(&ctx.remote_io, remote_image_id)).await?;
    let (local_id, created) =
        bootstrap_step(ctx, status, ensure_local_image(ctx, &remote, &remote_journal, clone.as_ref()))
            .await?;
    if !created && crate::local::resync_requested(&ctx.local_io, &local_id, MirrorImageMode::Journal).await? {
        return crate::local::resync(ctx, &local_id, status).await;
    }
    let client =
        bootstrap_step(ctx, status, ensure_remote_client(ctx, &remote, &remote_journal, &local_id, created))
            .await?;
    if client.disconnected {
        return disconnected(ctx, &local_id, status).await;
    }
    if !created
        && bootstrap_step(ctx, status, check_epoch_link(ctx, &remote, &remote_journal, &local_id)).await?
            == EpochLink::SplitBrain
    {
        // As stock: nothing is written until `rbd mirror image resync` (checked first above).
        tracing::error!("split-brain detected -- skipping image replay");
        return Err(crate::ReplayError::Conflict("split-brain detected".into()));
    }
    let local = LocalImage::open(&ctx.local, &ctx.pool, &ctx.namespace, &local_id).await?;

    let resumed = client.state != MirrorPeerState::Syncing;
    if !resumed {
        publish(ctx, status, State::Syncing, "bootstrapping, IMAGE_SYNC/WAIT_FOR_SLOT").await;
        let permit = tokio::select! {
            _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
            p = ctx.sync_slots.acquire() => p.map_err(|_| crate::ReplayError::Stopped("sync slots closed".into()))?,
        };
        publish(ctx, status, State::Syncing, "bootstrapping, IMAGE_SYNC/COPY_IMAGE 0%").await;
        let sync = initial_sync(ctx, &remote, &local, status, cancel);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(Attempt::Cancelled),
            r = sync => r?,
        }
        drop(permit);
        metrics.full_syncs.increment(1);
    }

    publish(ctx, status, State::StartingReplay, "starting replay").await;
    let config = ctx.config();
    let options = TailOptions {
        poll_interval: config.rbd_mirror_journal_poll_age,
        idle_poll_interval: config.rbd_mirror_rs_journal_idle_poll_age,
        fetch_bytes: Some(replay::TAIL_FETCH_BYTES),
        ..TailOptions::default()
    };
    let tail = JournalTail::open(
        &ctx.remote,
        &ctx.pool,
        &ctx.namespace,
        remote_image_id,
        &ctx.local_mirror_uuid,
        options,
    );
    let tail = bootstrap_step(ctx, status, tail).await?;
    tracing::info!(position = ?tail.position(), resumed, "replaying from the committed position");
    if resumed {
        metrics.replay_resumed.increment(1);
    }
    let mut replayer = JournalReplayer::new(ctx, remote_image_id, local, tail);
    replayer.metrics = Some(metrics);
    replayer.operator = Some(status.image().control());
    replayer.replay_delay = crate::local::image_config(ctx, &local_id).await?.rbd_mirroring_replay_delay;
    replayer.bandwidth = crate::bandwidth::for_image(ctx, remote_image_id).await?;
    if !replayer.replay_delay.is_zero() {
        tracing::info!(
            delay_s = replayer.replay_delay.as_secs(),
            "delayed replay (rbd_mirroring_replay_delay)"
        );
    }
    let end = replayer.run(cancel, ctx.config().rbd_mirror_rs_status_interval, status).await;
    match end? {
        ReplayEnd::Cancelled => Ok(Attempt::Cancelled),
        ReplayEnd::ResyncRequested => Ok(Attempt::RetryAfter(Duration::from_secs(0))),
        ReplayEnd::Disconnected => disconnected(ctx, &local_id, status).await,
        ReplayEnd::ForcePromoted => {
            tracing::warn!("the local image was promoted: replay stopped");
            publish(ctx, status, State::Stopped, "force promoted").await;
            Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval))
        }
        ReplayEnd::RemoteDemoted => {
            tracing::info!("the primary was demoted: replay stopped after its last entry");
            publish(ctx, status, State::Unknown, "remote image is non-primary").await;
            Ok(Attempt::RetryAfter(ctx.config().rbd_mirror_rs_role_check_interval))
        }
    }
}

/// The primary flagged our journal client disconnected: the entries we have not replayed
/// may be trimmed already. As stock: `up+error disconnected` until `rbd mirror image resync`,
/// or with `rbd_mirroring_resync_after_disconnect` (the local image's view: global, pool,
/// image) a resync at once.
async fn disconnected(ctx: &PeerContext, local_id: &str, status: &mut StatusPublisher) -> Result<Attempt> {
    tracing::warn!("client flagged disconnected, stopping image replay");
    if crate::local::image_config(ctx, local_id).await?.rbd_mirroring_resync_after_disconnect {
        publish(ctx, status, State::Error, "disconnected: automatic resync").await;
        return crate::local::resync(ctx, local_id, status).await;
    }
    Err(crate::ReplayError::Conflict("disconnected".into()))
}
