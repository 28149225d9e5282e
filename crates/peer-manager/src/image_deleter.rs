//! The pool replayer's image deleter: when the peer stops mirroring an image (its primary
//! deleted, or its mirroring disabled), the local non-primary copy linked to that peer is
//! deleted, as the stock daemon's ImageDeleter does (ceph-formats.md §6.4). One task per
//! pool replayer, fed through a channel, deletes one image at a time (stock
//! `rbd_mirror_concurrent_image_deletions` = 1) so that neither the scan loop nor the other
//! images wait for it. It first waits for the image's replayer to finish (it holds the local
//! image open). A failed deletion is retried after the next successful scan that still does
//! not list the image; a scan that fails never reaches this task.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use image_replayer::image_deleter::{decide, delete_local_image, local_role, Disposition};
use image_replayer::PeerContext;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the pool replayer tells the deleter.
pub(crate) enum Request {
    /// A successful scan does not list `global_id`; `replayer` is its (cancelled) replayer
    /// task when the image was replayed until now, `None` for a local mirrored image the
    /// peer did not list when the pool replayer started.
    Delete {
        /// Global image id.
        global_id: String,
        /// The image's replayer, finishing.
        replayer: Option<JoinHandle<()>>,
    },
    /// A successful scan listed these images: failed deletions of the others are retried.
    Scanned(BTreeSet<String>),
}

/// Images queued or being deleted (global ids): the pool replayer starts no replayer for them.
pub(crate) type Pending = Arc<Mutex<HashSet<String>>>;

/// Handles requests until `cancel` fires or the pool replayer drops its sender.
pub(crate) async fn run(
    ctx: Arc<PeerContext>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    pending: Pending,
    cancel: CancellationToken,
) {
    // Failed deletions: global id → the local image id once it was found deletable (the
    // mirroring record, which maps one to the other, may be gone after a partial deletion).
    let mut failed: BTreeMap<String, Option<String>> = BTreeMap::new();
    loop {
        let request = tokio::select! {
            _ = cancel.cancelled() => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        match request {
            Request::Delete { global_id, replayer } => {
                let replayed = replayer.is_some();
                if let Some(task) = replayer {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = task => {}
                    }
                }
                let known = failed.remove(&global_id).flatten();
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = delete_unmirrored(&ctx, &global_id, known, replayed).instrument(span(&global_id)) => r,
                };
                settle(&pending, &mut failed, global_id, outcome);
            }
            Request::Scanned(wanted) => {
                // Mirrored again (not expected: a new enable gets a new global id): let go.
                failed.retain(|global_id, _| {
                    let keep = !wanted.contains(global_id);
                    if !keep {
                        pending.lock().remove(global_id);
                    }
                    keep
                });
                for (global_id, known) in std::mem::take(&mut failed) {
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = delete_unmirrored(&ctx, &global_id, known, true).instrument(span(&global_id)) => r,
                    };
                    settle(&pending, &mut failed, global_id, outcome);
                }
            }
        }
    }
}

fn span(global_id: &str) -> tracing::Span {
    tracing::info_span!("image", %global_id)
}

/// Records the outcome of one deletion: done (or nothing to do), or failed and kept for a
/// retry.
fn settle(
    pending: &Pending,
    failed: &mut BTreeMap<String, Option<String>>,
    global_id: String,
    outcome: Result<(), (Option<String>, image_replayer::ReplayError)>,
) {
    match outcome {
        Ok(()) => {
            pending.lock().remove(&global_id);
        }
        Err((local_image_id, error)) => {
            tracing::warn!(%global_id, local_image_id = local_image_id.as_deref().unwrap_or(""), %error,
                "cannot delete the local image; retrying after the next scan");
            failed.insert(global_id, local_image_id);
        }
    }
}

/// Deletes the local copy of `global_id` if it is non-primary and linked to this peer.
/// `known`: the local image id an earlier, failed attempt found deletable. On failure,
/// returns the local image id when it was found deletable. `replayed`: the image was
/// replayed from this peer until now (images kept are then logged at info level).
async fn delete_unmirrored(
    ctx: &PeerContext,
    global_id: &str,
    known: Option<String>,
    replayed: bool,
) -> Result<(), (Option<String>, image_replayer::ReplayError)> {
    let role = local_role(ctx, global_id).await.map_err(|e| (known.clone(), e))?;
    let local_image_id = match (decide(role.as_ref(), &ctx.remote_mirror_uuid), role, known) {
        (Disposition::Delete, Some(role), _) => role.image_id,
        // A failed attempt got as far as disabling its mirroring: finish it, unless it was
        // promoted meanwhile.
        (Disposition::Absent, _, Some(known)) => {
            let primary = image_replayer::bootstrap::is_primary(&ctx.local_io, &known).await;
            match primary {
                Ok(false) => known,
                Ok(true) => {
                    tracing::info!(local_image_id = %known, "local image is primary now: keeping it");
                    return Ok(());
                }
                Err(image_replayer::ReplayError::Rados(e)) if e.is_not_found() => return Ok(()),
                Err(e) => return Err((Some(known), e)),
            }
        }
        (Disposition::Absent, ..) => {
            tracing::debug!("no local image to delete");
            return Ok(());
        }
        (Disposition::KeepPrimary, ..) => {
            if replayed {
                tracing::info!(
                    "image no longer mirrored from the peer, but the local image is primary: keeping it"
                );
            }
            return Ok(());
        }
        (Disposition::KeepNotLinked { following }, ..) => {
            let following = following.as_deref().unwrap_or("nobody");
            if replayed {
                tracing::info!(%following, "image no longer mirrored from the peer, but the local image does not follow it: keeping it");
            } else {
                tracing::debug!(%following, "local image not mirrored from the peer: keeping it");
            }
            return Ok(());
        }
        (Disposition::Delete, None, _) => return Ok(()),
    };
    let reason = "image no longer mirrored from the peer (primary deleted or mirroring disabled)";
    delete_local_image(ctx, &local_image_id, reason).await.map_err(|e| (Some(local_image_id), e))?;
    metrics::counter!("ceph_rbd_mirror_image_deletions", "pool" => ctx.pool.clone()).increment(1);
    Ok(())
}
