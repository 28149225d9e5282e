//! The namespace replayer's image deleter: when the peer stops mirroring an image (its primary
//! deleted, or its mirroring disabled), the local non-primary copy linked to that peer is
//! deleted, as the stock daemon's ImageDeleter does (ceph-formats.md §6.4). One task per
//! namespace replayer, fed through a channel, deletes one image at a time (stock
//! `rbd_mirror_concurrent_image_deletions` = 1) so that neither the scan loop nor the other
//! images wait for it. It first waits for the image's replayer to finish (it holds the local
//! image open). A failed deletion is retried by the first successful scan that still does
//! not list the image `rbd_mirror_delete_retry_interval` (30 s) after the failure; a scan that fails never reaches
//! this task.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image_replayer::{decide, delete_local_image, local_role, Disposition};
use image_replayer::{Deletion, Deletions, PeerContext, Registry};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the namespace replayer tells the deleter.
pub(crate) enum Request {
    /// A successful scan does not list `global_id`; `replayer` is its (cancelled) replayer
    /// task when the image was replayed until now, `None` for a local mirrored image the
    /// peer did not list when the namespace replayer started.
    Delete {
        /// Global image id.
        global_id: String,
        /// The image's replayer, finishing.
        replayer: Option<JoinHandle<()>>,
        /// This daemon replayed it until now (its replayer stopped, here or by a release):
        /// a copy that is kept is logged at info level; one found by the sweep, at debug.
        replayed: bool,
    },
    /// A successful scan listed these images: failed deletions of the others are retried.
    Scanned(BTreeSet<String>),
}

/// Images queued or being deleted (global ids): the namespace replayer starts no replayer for them.
pub(crate) type Pending = Arc<Mutex<HashSet<String>>>;

/// Where the deleter reports its queues (`rbd mirror deletion status <pool>`).
pub(crate) struct Report {
    /// The state registry.
    pub(crate) registry: Registry,
    /// The pool.
    pub(crate) pool: String,
    /// And peer site.
    pub(crate) peer_site: String,
    /// The namespace replayer's namespace.
    pub(crate) namespace: String,
}

impl Report {
    /// Publishes the queues: what is pending and has not failed is queued.
    fn publish(&self, pending: &Pending, failed: &Retries) {
        let mut queued: Vec<Deletion> = pending
            .lock()
            .iter()
            .filter(|g| !failed.0.contains_key(*g))
            .map(|g| Deletion { global_id: g.clone(), ..Default::default() })
            .collect();
        queued.sort_by(|a, b| a.global_id.cmp(&b.global_id));
        let failed = failed
            .0
            .iter()
            .map(|(g, f)| Deletion {
                global_id: g.clone(),
                image_id: f.local_image_id.clone(),
                error: Some(f.error.clone()),
                retries: f.retries,
            })
            .collect();
        self.registry.set_pool_deletions(
            &self.pool,
            &self.peer_site,
            &self.namespace,
            Deletions { queued, failed },
        );
    }
}

/// Handles requests until `cancel` fires or the namespace replayer drops its sender.
pub(crate) async fn run(
    ctx: Arc<PeerContext>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    pending: Pending,
    report: Report,
    cancel: CancellationToken,
) {
    let mut failed = Retries::default();
    loop {
        report.publish(&pending, &failed);
        let request = tokio::select! {
            _ = cancel.cancelled() => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        match request {
            Request::Delete { global_id, replayer, replayed } => {
                if let Some(task) = replayer {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = task => {}
                    }
                }
                let (known, retries) = failed.take(&global_id);
                report.publish(&pending, &failed);
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = delete_unmirrored(&ctx, &global_id, known, replayed).instrument(span(&global_id)) => r,
                };
                settle(&pending, &mut failed, global_id, outcome, retries, &ctx);
            }
            Request::Scanned(wanted) => {
                let retry = ctx.config().rbd_mirror_delete_retry_interval;
                let (mirrored_again, due) = failed.after_scan(&wanted, Instant::now(), retry);
                for global_id in mirrored_again {
                    pending.lock().remove(&global_id);
                }
                report.publish(&pending, &failed);
                for (global_id, (known, retries)) in due {
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = delete_unmirrored(&ctx, &global_id, known, true).instrument(span(&global_id)) => r,
                    };
                    settle(&pending, &mut failed, global_id, outcome, retries, &ctx);
                }
            }
        }
    }
}

fn span(global_id: &str) -> tracing::Span {
    tracing::info_span!("image", %global_id)
}

/// A failed deletion waiting for a retry.
#[derive(Debug)]
struct Failed {
    /// The local image id once it was found deletable (the mirroring record, which maps
    /// one to the other, may be gone after a partial deletion).
    local_image_id: Option<String>,
    /// When it failed.
    at: Instant,
    /// Why.
    error: String,
    /// Failed attempts so far.
    retries: u32,
}

/// Failed deletions waiting for a retry, by global id.
#[derive(Debug, Default)]
struct Retries(BTreeMap<String, Failed>);

/// What an earlier failed attempt learnt: the local image id, and the attempts so far.
type Known = (Option<String>, u32);

impl Retries {
    fn record(
        &mut self,
        global_id: String,
        local_image_id: Option<String>,
        now: Instant,
        error: String,
        retries: u32,
    ) {
        self.0.insert(global_id, Failed { local_image_id, at: now, error, retries });
    }

    /// Forgets `global_id`; returns what an earlier failed attempt learnt.
    fn take(&mut self, global_id: &str) -> Known {
        self.0.remove(global_id).map_or((None, 0), |f| (f.local_image_id, f.retries))
    }

    /// After a successful scan that listed `wanted`: forgets and returns the images mirrored
    /// again (not expected: a new enable gets a new global id), and takes the deletions due
    /// for a retry at `now`.
    fn after_scan(
        &mut self,
        wanted: &BTreeSet<String>,
        now: Instant,
        retry_interval: Duration,
    ) -> (Vec<String>, Vec<(String, Known)>) {
        let again: Vec<String> = self.0.keys().filter(|g| wanted.contains(*g)).cloned().collect();
        for g in &again {
            self.0.remove(g);
        }
        let due: Vec<String> = self
            .0
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.at) >= retry_interval)
            .map(|(g, _)| g.clone())
            .collect();
        let due = due.into_iter().map(|g| (g.clone(), self.take(&g))).collect();
        (again, due)
    }
}

/// Records the outcome of one deletion: done (or nothing to do), or failed and kept for a
/// retry.
fn settle(
    pending: &Pending,
    failed: &mut Retries,
    global_id: String,
    outcome: Result<(), (Option<String>, image_replayer::ReplayError)>,
    retries: u32,
    ctx: &PeerContext,
) {
    match outcome {
        Ok(()) => {
            pending.lock().remove(&global_id);
        }
        Err((local_image_id, error)) => {
            tracing::warn!(%global_id, local_image_id = local_image_id.as_deref().unwrap_or(""), %error,
                "cannot delete the local image; retrying in {} s",
                ctx.config().rbd_mirror_delete_retry_interval.as_secs());
            failed.record(global_id, local_image_id, Instant::now(), error.to_string(), retries + 1);
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
            let primary = image_replayer::is_primary(&ctx.local_io, &known).await;
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
    metrics::counter!(image_replayer::metrics::IMAGE_DELETIONS, "pool" => ctx.pool.clone()).increment(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_deletions_are_retried_after_the_interval_unless_mirrored_again() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        let e = || "(2) No such file or directory".to_owned();
        r.record("g1".into(), Some("id1".into()), t0, e(), 1);
        r.record("g2".into(), None, t0, e(), 2);
        r.record("g3".into(), None, t0, e(), 1);
        let wanted: BTreeSet<String> = ["g3".to_owned()].into();
        // Too early: nothing due; g3 is mirrored again and forgotten.
        const RETRY_INTERVAL: Duration = Duration::from_secs(30);
        let (again, due) = r.after_scan(&wanted, t0 + Duration::from_secs(5), RETRY_INTERVAL);
        assert_eq!(again, ["g3"]);
        assert!(due.is_empty());
        // Due: both, with what the failed attempt learnt.
        let (again, due) = r.after_scan(&wanted, t0 + RETRY_INTERVAL, RETRY_INTERVAL);
        assert!(again.is_empty());
        assert_eq!(due, [("g1".to_owned(), (Some("id1".to_owned()), 1)), ("g2".to_owned(), (None, 2))]);
        // Taken: not retried twice.
        assert_eq!(r.after_scan(&wanted, t0 + 2 * RETRY_INTERVAL, RETRY_INTERVAL).1, []);
        // A new request for a failed image takes its record.
        r.record("g4".into(), Some("id4".into()), t0, e(), 3);
        assert_eq!(r.take("g4"), (Some("id4".to_owned()), 3));
        assert_eq!(r.take("g4"), (None, 0));
    }
}
