//! One task per mirrored image: the retry loop around one attempt of the image's mirroring
//! mode ([`crate::journal`] or [`crate::snapshot`], dispatched on the primary's mirror
//! record). An error ends the attempt with an `error` status and a retry after
//! `retry_interval`; cancellation commits the replayed position and returns.

use std::sync::Arc;

use rbd_types::cls_rbd::{MirrorImageMode, MirrorImageStatusState as State};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::Result;
use crate::metrics::ImageMetrics;
use crate::registry::ImageHandle;
use crate::status::{publish, StatusPublisher};
use crate::{Attempt, PeerContext};

/// Runs the replayer of remote image `remote_image_id` until `cancel` fires, reporting in
/// `image` (whose key holds the pool, namespace and global image id).
pub async fn run(
    ctx: Arc<PeerContext>,
    remote_image_id: String,
    image: ImageHandle,
    cancel: CancellationToken,
) {
    let global_id = image.key().global_id.clone();
    let span = tracing::info_span!("image", global_id = %global_id, remote_image_id = %remote_image_id);
    async move {
        let mut status = StatusPublisher::new(&ctx.local_mirror_uuid, image);
        loop {
            let outcome = attempt(&ctx, &remote_image_id, &global_id, &cancel, &mut status).await;
            let wait = match outcome {
                Ok(Attempt::Cancelled) => return,
                Ok(Attempt::RetryAfter(d)) => d,
                Err(e) => {
                    tracing::error!(error = %e, "image replay failed");
                    let name = status.image().name();
                    ImageMetrics::new(&ctx.pool, &ctx.namespace, &name).errors.increment(1);
                    status.image().update(|s| s.last_error = Some(e.kind()));
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

/// One attempt in the mode the primary's mirror record names (journal when it has none).
async fn attempt(
    ctx: &PeerContext,
    remote_image_id: &str,
    global_id: &str,
    cancel: &CancellationToken,
    status: &mut StatusPublisher,
) -> Result<Attempt> {
    let mode = crate::cls::mirror_image_get(&ctx.remote_io, remote_image_id).await?.map(|m| m.mode);
    match mode {
        Some(MirrorImageMode::Snapshot) => {
            crate::snapshot::attempt(ctx, remote_image_id, global_id, cancel, status).await
        }
        Some(MirrorImageMode::Journal) | None => {
            crate::journal::attempt(ctx, remote_image_id, global_id, cancel, status).await
        }
    }
}
