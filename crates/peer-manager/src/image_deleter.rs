//! The namespace replayer's image deleter: when the peer stops mirroring an image (its primary
//! deleted, or its mirroring disabled), the local non-primary copy linked to that peer is
//! moved to the RBD trash and removed from there `rbd_mirroring_delete_delay` later, as the
//! stock daemon's ImageDeleter does (ceph-formats.md §6.4). One task per namespace replayer,
//! fed through a channel, handles one image at a time (stock
//! `rbd_mirror_concurrent_image_deletions` = 1) so that neither the scan loop nor the other
//! images wait for it. It first waits for the image's replayer to finish (it holds the local
//! image open). A failed move is retried by the first successful scan that still does not
//! list the image `rbd_mirror_delete_retry_interval` (30 s) after the failure; a scan that
//! fails never reaches this task.
//!
//! The trash itself is scanned as stock's `TrashWatcher` lists it (at start, then every
//! [`TRASH_SCAN_INTERVAL`] here rather than on its notifications): every entry of source
//! `MIRRORING`, also those a resync or an earlier run left, is removed once its deferment
//! has ended; a failed removal is retried `rbd_mirror_delete_retry_interval` later; an entry
//! restored (`rbd trash restore`) or removed by someone else is forgotten.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use image_replayer::{decide, local_role, trash_move, trash_purge, trashed_images, Disposition, Trashed};
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
    /// Publishes the queues: what is pending and has not failed is queued, and so is what
    /// waits in the trash for its deferment to end.
    fn publish(&self, pending: &Pending, failed: &Retries, trash: &TrashQueue) {
        let mut queued: Vec<Deletion> = pending
            .lock()
            .iter()
            .filter(|g| !failed.0.contains_key(*g))
            .map(|g| Deletion { global_id: g.clone(), ..Default::default() })
            .collect();
        queued.sort_by(|a, b| a.global_id.cmp(&b.global_id));
        let mut failed: Vec<Deletion> = failed
            .0
            .iter()
            .map(|(g, f)| Deletion {
                global_id: g.clone(),
                image_id: f.local_image_id.clone(),
                error: Some(f.error.clone()),
                retries: f.retries,
                deferment_end_time: None,
            })
            .collect();
        for (id, t) in &trash.0 {
            let d = Deletion {
                global_id: t.global_id.clone().unwrap_or_default(),
                image_id: Some(id.clone()),
                error: t.failure.as_ref().map(|f| f.error.clone()),
                retries: t.failure.as_ref().map_or(0, |f| f.retries),
                deferment_end_time: Some(t.due),
            };
            if t.failure.is_some() {
                failed.push(d);
            } else {
                queued.push(d);
            }
        }
        self.registry.set_pool_deletions(
            &self.pool,
            &self.peer_site,
            &self.namespace,
            Deletions { queued, failed },
        );
    }
}

/// How often the trash is listed for entries of source `MIRRORING` (stock lists it at start
/// and on the trash's notifications).
pub(crate) const TRASH_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// Handles requests until `cancel` fires or the namespace replayer drops its sender.
pub(crate) async fn run(
    ctx: Arc<PeerContext>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    pending: Pending,
    report: Report,
    cancel: CancellationToken,
) {
    let mut failed = Retries::default();
    let mut trash = TrashQueue::default();
    // The trash is listed at once: entries an earlier run left are resumed.
    let mut next_scan = tokio::time::Instant::now();
    loop {
        report.publish(&pending, &failed, &trash);
        let wake = trash
            .next_due(SystemTime::now(), Instant::now())
            .map_or(next_scan, |d| next_scan.min(tokio::time::Instant::now() + d));
        let request = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= next_scan {
                    next_scan = tokio::time::Instant::now() + TRASH_SCAN_INTERVAL;
                    match trashed_images(&ctx).await {
                        Ok(listed) => trash.merge_scan(listed),
                        Err(error) => tracing::warn!(%error, "cannot list the trash"),
                    }
                }
                let retry = ctx.config().rbd_mirror_delete_retry_interval;
                for image_id in trash.due(SystemTime::now(), Instant::now()) {
                    report.publish(&pending, &failed, &trash);
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = trash_purge(&ctx, &image_id)
                            .instrument(tracing::info_span!("image", %image_id)) => r,
                    };
                    match outcome {
                        Ok(()) => trash.remove(&image_id),
                        Err(error) => {
                            tracing::warn!(%image_id, %error,
                                "cannot remove the trashed local image; retrying in {} s", retry.as_secs());
                            trash.record_failure(&image_id, error.to_string(), Instant::now() + retry);
                        }
                    }
                }
                continue;
            }
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
                report.publish(&pending, &failed, &trash);
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = delete_unmirrored(&ctx, &global_id, known, replayed).instrument(span(&global_id)) => r,
                };
                settle(&pending, &mut failed, &mut trash, global_id, outcome, retries, &ctx);
            }
            Request::Scanned(wanted) => {
                let retry = ctx.config().rbd_mirror_delete_retry_interval;
                let (mirrored_again, due) = failed.after_scan(&wanted, Instant::now(), retry);
                for global_id in mirrored_again {
                    pending.lock().remove(&global_id);
                }
                report.publish(&pending, &failed, &trash);
                for (global_id, (known, retries)) in due {
                    let outcome = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = delete_unmirrored(&ctx, &global_id, known, true).instrument(span(&global_id)) => r,
                    };
                    settle(&pending, &mut failed, &mut trash, global_id, outcome, retries, &ctx);
                }
            }
        }
    }
}

/// An image in the trash that the deleter will remove.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InTrash {
    /// Its global id, when this task moved it (the trash does not record it).
    global_id: Option<String>,
    /// The end of its deferment.
    due: SystemTime,
    /// Its last failed removal.
    failure: Option<TrashFailure>,
}

/// A failed removal from the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TrashFailure {
    error: String,
    retries: u32,
    retry_at: Instant,
}

/// The trash entries of source `MIRRORING`, by image id.
#[derive(Debug, Default)]
struct TrashQueue(BTreeMap<String, InTrash>);

impl TrashQueue {
    /// An image this task just moved to the trash.
    fn add(&mut self, trashed: Trashed, global_id: String) {
        let entry = self.0.entry(trashed.image_id).or_insert(InTrash {
            global_id: None,
            due: trashed.deferment_end_time,
            failure: None,
        });
        entry.global_id = Some(global_id);
        entry.due = trashed.deferment_end_time;
    }

    /// After listing the trash: new entries are added, entries gone (restored, or removed by
    /// someone else) forgotten.
    fn merge_scan(&mut self, listed: BTreeMap<String, SystemTime>) {
        self.0.retain(|id, _| listed.contains_key(id));
        for (id, due) in listed {
            self.0.entry(id).or_insert(InTrash { global_id: None, due, failure: None }).due = due;
        }
    }

    /// The entries whose deferment has ended at `now` and that are not waiting for a retry.
    fn due(&self, now: SystemTime, now_instant: Instant) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, t)| t.due <= now && t.failure.as_ref().is_none_or(|f| f.retry_at <= now_instant))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How long until the next entry is due, if any.
    fn next_due(&self, now: SystemTime, now_instant: Instant) -> Option<Duration> {
        self.0
            .values()
            .map(|t| {
                let deferment = t.due.duration_since(now).unwrap_or_default();
                let retry = t
                    .failure
                    .as_ref()
                    .map_or(Duration::ZERO, |f| f.retry_at.saturating_duration_since(now_instant));
                deferment.max(retry)
            })
            .min()
    }

    fn remove(&mut self, image_id: &str) {
        self.0.remove(image_id);
    }

    fn record_failure(&mut self, image_id: &str, error: String, retry_at: Instant) {
        if let Some(t) = self.0.get_mut(image_id) {
            let retries = t.failure.as_ref().map_or(0, |f| f.retries) + 1;
            t.failure = Some(TrashFailure { error, retries, retry_at });
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

/// Records the outcome of one deletion: done (moved to the trash, or nothing to do), or failed
/// and kept for a retry.
fn settle(
    pending: &Pending,
    failed: &mut Retries,
    trash: &mut TrashQueue,
    global_id: String,
    outcome: Result<Option<Trashed>, (Option<String>, image_replayer::ReplayError)>,
    retries: u32,
    ctx: &PeerContext,
) {
    match outcome {
        Ok(trashed) => {
            pending.lock().remove(&global_id);
            if let Some(trashed) = trashed {
                trash.add(trashed, global_id);
            }
        }
        Err((local_image_id, error)) => {
            tracing::warn!(%global_id, local_image_id = local_image_id.as_deref().unwrap_or(""), %error,
                "cannot move the local image to the trash; retrying in {} s",
                ctx.config().rbd_mirror_delete_retry_interval.as_secs());
            failed.record(global_id, local_image_id, Instant::now(), error.to_string(), retries + 1);
        }
    }
}

/// Moves the local copy of `global_id` to the trash if it is non-primary and linked to this
/// peer; returns it then.
/// `known`: the local image id an earlier, failed attempt found deletable. On failure,
/// returns the local image id when it was found deletable. `replayed`: the image was
/// replayed from this peer until now (images kept are then logged at info level).
async fn delete_unmirrored(
    ctx: &PeerContext,
    global_id: &str,
    known: Option<String>,
    replayed: bool,
) -> Result<Option<Trashed>, (Option<String>, image_replayer::ReplayError)> {
    let role = local_role(ctx, global_id).await.map_err(|e| (known.clone(), e))?;
    let local_image_id = match (decide(role.as_ref(), &ctx.remote_mirror_uuid), role, known) {
        (Disposition::Delete, Some(role), _) => role.image_id,
        // A failed attempt got as far as removing its mirroring record: finish it, unless it
        // was promoted meanwhile.
        (Disposition::Absent, _, Some(known)) => {
            let primary = image_replayer::is_primary(&ctx.local_io, &known).await;
            match primary {
                Ok(false) => known,
                Ok(true) => {
                    tracing::info!(local_image_id = %known, "local image is primary now: keeping it");
                    return Ok(None);
                }
                Err(image_replayer::ReplayError::Rados(e)) if e.is_not_found() => return Ok(None),
                Err(e) => return Err((Some(known), e)),
            }
        }
        (Disposition::Absent, ..) => {
            tracing::debug!("no local image to delete");
            return Ok(None);
        }
        (Disposition::KeepPrimary, ..) => {
            if replayed {
                tracing::info!(
                    "image no longer mirrored from the peer, but the local image is primary: keeping it"
                );
            }
            return Ok(None);
        }
        (Disposition::KeepNotLinked { following }, ..) => {
            let following = following.as_deref().unwrap_or("nobody");
            if replayed {
                tracing::info!(%following, "image no longer mirrored from the peer, but the local image does not follow it: keeping it");
            } else {
                tracing::debug!(%following, "local image not mirrored from the peer: keeping it");
            }
            return Ok(None);
        }
        (Disposition::Delete, None, _) => return Ok(None),
    };
    let reason = "image no longer mirrored from the peer (primary deleted or mirroring disabled)";
    let trashed = trash_move(ctx, &local_image_id, reason).await.map_err(|e| (Some(local_image_id), e))?;
    metrics::counter!(image_replayer::metrics::IMAGE_DELETIONS, "pool" => ctx.pool.clone()).increment(1);
    Ok(trashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trashed_images_are_removed_once_due_and_failures_retried_later() {
        let (t0, i0) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1000), Instant::now());
        let s = Duration::from_secs;
        let mut q = TrashQueue::default();
        // Moved here with a 20 s delay; an entry an earlier run left is found by the scan.
        q.add(Trashed { image_id: "a".into(), deferment_end_time: t0 + s(20) }, "ga".into());
        q.merge_scan([("a".to_owned(), t0 + s(20)), ("old".to_owned(), t0 - s(5))].into());
        assert_eq!(q.0["a"].global_id.as_deref(), Some("ga"), "the scan keeps what the move knew");
        assert_eq!(q.0["old"].global_id, None);
        assert_eq!(q.due(t0, i0), ["old"]);
        assert_eq!(q.next_due(t0, i0), Some(Duration::ZERO));
        // Its removal fails: retried after the interval, not before.
        q.record_failure("old", "(16) Device or resource busy".into(), i0 + s(30));
        assert!(q.due(t0, i0).is_empty());
        assert_eq!(q.next_due(t0, i0), Some(s(20)));
        assert_eq!(q.due(t0 + s(20), i0 + s(20)), ["a"]);
        assert_eq!(q.due(t0 + s(30), i0 + s(30)), ["a", "old"]);
        q.record_failure("old", "again".into(), i0 + s(60));
        assert_eq!(q.0["old"].failure.as_ref().map(|f| f.retries), Some(2));
        // Restored (gone from the trash): forgotten; removed: gone.
        q.merge_scan([("old".to_owned(), t0 - s(5))].into());
        assert!(!q.0.contains_key("a"));
        q.remove("old");
        assert_eq!(q.next_due(t0, i0), None);
    }

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
