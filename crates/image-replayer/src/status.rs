//! The image's mirror status as `rbd mirror image status` shows it (ceph-formats.md §5.6,
//! §3.8): written to the local pool (site status, empty mirror uuid) and to the remote pool
//! (tagged with the local pool's mirror uuid, what the primary site's `rbd mirror pool
//! status` reads). `up` is computed by the OSD from the watchers of `rbd_mirroring`, which
//! the pool replayer holds on the same cluster connections. A status is written when it
//! changes; the [`StatusBook`] of the namespace rewrites unchanged ones every
//! [`STATUS_REFRESH`], many per RADOS operation, as stock's `MirrorStatusUpdater` does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rados_ffi::{IoCtx, WriteOp};
use rbd_types::cls_journal::ObjectPosition;
use rbd_types::UTime;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cls;
use crate::registry::ImageHandle;
use crate::PeerContext;
use rbd_types::cls_rbd::{args, MirrorImageSiteStatus, MirrorImageStatusState, RBD_MIRRORING};

/// Where replay stands, for the status description.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayProgress {
    /// The primary's own committed position (its journal client `""`).
    pub primary_position: Option<ObjectPosition>,
    /// Our last replayed position.
    pub non_primary_position: Option<ObjectPosition>,
    /// Entries replayed per second (recent).
    pub entries_per_second: f64,
    /// Bytes replayed per second (recent).
    pub bytes_per_second: f64,
    /// How long the primary has not answered a read of its journal, once that is long
    /// (`journal/replay.rs`' `PRIMARY_SILENT`): `primary_unreachable_seconds` in
    /// the description (ours; stock says nothing while librados waits).
    pub primary_unreachable: Option<Duration>,
}

impl ReplayProgress {
    /// Entries between our position and the primary's, as the stock formatter counts them
    /// within one tag. Across tags it counts the primary tag's entries (the stock daemon
    /// walks the tag chain; an approximation until that is needed).
    pub fn entries_behind_primary(&self) -> u64 {
        match (&self.primary_position, &self.non_primary_position) {
            (Some(p), Some(n)) if p.tag_tid == n.tag_tid => p.entry_tid.saturating_sub(n.entry_tid),
            (Some(p), Some(n)) if p.tag_tid < n.tag_tid => 0,
            (Some(p), _) => p.entry_tid + 1,
            (None, _) => 0,
        }
    }

    /// `"replaying, {json}"` as the stock daemon writes it.
    pub fn description(&self) -> String {
        fn pos(p: &Option<ObjectPosition>) -> serde_json::Value {
            match p {
                Some(p) => {
                    json!({"object_number": p.object_number, "tag_tid": p.tag_tid, "entry_tid": p.entry_tid})
                }
                None => json!({}),
            }
        }
        let behind = self.entries_behind_primary();
        let mut v = json!({
            "primary_position": pos(&self.primary_position),
            "non_primary_position": pos(&self.non_primary_position),
            "entries_behind_primary": behind,
            "bytes_per_second": round2(self.bytes_per_second),
            "entries_per_second": round2(self.entries_per_second),
        });
        if behind > 0 && self.entries_per_second > 0.0 {
            v["seconds_until_synced"] = json!((behind as f64 / self.entries_per_second).ceil() as u64);
        }
        if let Some(silent) = self.primary_unreachable {
            v["primary_unreachable_seconds"] = json!(silent.as_secs());
        }
        format!("replaying, {v}")
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn now() -> UTime {
    UTime::from_system_time(SystemTime::now())
}

/// Publishes one image's status on both sites and in the state registry.
#[derive(Debug)]
pub struct StatusPublisher {
    local_mirror_uuid: String,
    image: ImageHandle,
    /// Where the namespace's statuses are kept for their refresh.
    book: Arc<StatusBook>,
    /// What was written last: an unchanged status is not written again (the book
    /// refreshes it).
    written: Option<(MirrorImageStatusState, String)>,
}

/// How often an unchanged status is written again: the stock daemon's `MirrorStatusUpdater`
/// writes every 30 s. (An idle site of 1,000 images would otherwise write 400 statuses a
/// second at a 5 s status interval.)
pub const STATUS_REFRESH: Duration = Duration::from_secs(30);

/// Statuses per RADOS operation of a refresh (stock: `MAX_UPDATES_PER_OP`, 100).
const REFRESH_BATCH: usize = 100;

/// How often the book looks for statuses to refresh.
const REFRESH_TICK: Duration = Duration::from_secs(5);

/// How long a status write may wait, to either pool: librados waits for ever for a cluster
/// it cannot reach, and a status is advisory (the next change or refresh writes it again).
/// Without the bound, one write to an unreachable cluster held the book's lock, and with it
/// every publisher of the namespace and their replay loops, until it answered.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The statuses this daemon wrote for the images of one pool namespace (as written to the
/// local pool), while their replayers run: [`StatusBook::run`] rewrites those older than
/// [`STATUS_REFRESH`] in batches. A replayer's publisher takes its image out when it is
/// dropped, so an image handed to another instance is no longer refreshed here.
#[derive(Debug, Default)]
pub struct StatusBook {
    entries: Mutex<HashMap<String, (MirrorImageSiteStatus, Instant)>>,
    /// Publishers write under the read lock, a refresh under the write lock: a refresh
    /// never lands after a newer status of the same image.
    order: tokio::sync::RwLock<()>,
}

impl StatusBook {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (MirrorImageSiteStatus, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rewrites, every [`REFRESH_TICK`], the statuses written more than [`STATUS_REFRESH`]
    /// ago, until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        local: &IoCtx,
        remote: &IoCtx,
        local_mirror_uuid: &str,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(REFRESH_TICK) => {}
            }
            self.refresh(local, remote, local_mirror_uuid).await;
        }
    }

    /// One refresh pass: failures are logged (statuses are advisory) and tried again at the
    /// next pass.
    pub async fn refresh(&self, local: &IoCtx, remote: &IoCtx, local_mirror_uuid: &str) {
        let _order = self.order.write().await;
        let due: Vec<(String, MirrorImageSiteStatus)> = self
            .entries()
            .iter()
            .filter(|(_, (_, at))| at.elapsed() >= STATUS_REFRESH)
            .map(|(g, (st, _))| (g.clone(), st.clone()))
            .collect();
        for batch in due.chunks(REFRESH_BATCH) {
            let last_update = now();
            let written = async {
                for (io, mirror_uuid) in [(local, ""), (remote, local_mirror_uuid)] {
                    let mut op = WriteOp::new();
                    for (global_id, status) in batch {
                        let status = MirrorImageSiteStatus {
                            mirror_uuid: mirror_uuid.to_owned(),
                            last_update,
                            ..status.clone()
                        };
                        op.exec(
                            "rbd",
                            "mirror_image_status_set",
                            &args::mirror_image_status_set(global_id, &status),
                        )
                        .map_err(|e| e.to_string())?;
                    }
                    tokio::time::timeout(STATUS_WRITE_TIMEOUT, io.operate(RBD_MIRRORING, op))
                        .await
                        .map_err(|_| {
                            format!("no answer from pool {} within {STATUS_WRITE_TIMEOUT:?}", io.pool_name())
                        })?
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            };
            match written.await {
                Ok(()) => {
                    let at = Instant::now();
                    let mut entries = self.entries();
                    for (global_id, _) in batch {
                        if let Some(entry) = entries.get_mut(global_id) {
                            entry.1 = at;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(statuses = batch.len(), error = %e, "status refresh failed; trying again")
                }
            }
        }
    }
}

impl StatusPublisher {
    /// For the image of `image` (its key holds the global id); `local_mirror_uuid` tags the
    /// copy written to the remote pool; `book` refreshes what it writes.
    pub fn new(local_mirror_uuid: &str, image: ImageHandle, book: Arc<StatusBook>) -> Self {
        StatusPublisher { local_mirror_uuid: local_mirror_uuid.to_owned(), image, book, written: None }
    }

    /// The image's registry entry, which this publisher keeps current.
    pub fn image(&self) -> &ImageHandle {
        &self.image
    }

    /// Writes `state` + `description` to the local pool and (best effort) the remote pool,
    /// unless it is what was written last (the book refreshes that). Failures are logged,
    /// never fatal: status is advisory.
    pub async fn publish(
        &mut self,
        local: &IoCtx,
        remote: &IoCtx,
        state: MirrorImageStatusState,
        description: &str,
    ) {
        if self.written.as_ref().is_some_and(|(st, d)| *st == state && d == description) {
            return;
        }
        self.written = Some((state, description.to_owned()));
        let mut status = MirrorImageSiteStatus {
            mirror_uuid: String::new(),
            state,
            description: description.to_owned(),
            last_update: now(),
            up: true,
        };
        let global_id = &self.image.key().global_id;
        {
            let _order = self.book.order.read().await;
            if let Err(e) = write_status(local, global_id, &status).await {
                tracing::warn!(%global_id, error = %e, "cannot write the local mirror image status");
            }
            self.book.entries().insert(global_id.clone(), (status.clone(), Instant::now()));
            status.mirror_uuid = self.local_mirror_uuid.clone();
            if let Err(e) = write_status(remote, global_id, &status).await {
                tracing::debug!(%global_id, error = %e, "cannot write the remote mirror image status");
            }
        }
        self.image.update(|s| {
            s.state = state;
            s.description = description.to_owned();
            if state != MirrorImageStatusState::Error {
                s.last_error = None;
            }
        });
    }
}

/// One status write, given up after [`STATUS_WRITE_TIMEOUT`] (statuses are advisory: the
/// next change or refresh writes it again).
async fn write_status(io: &IoCtx, global_id: &str, status: &MirrorImageSiteStatus) -> Result<(), String> {
    match tokio::time::timeout(STATUS_WRITE_TIMEOUT, cls::mirror_image_status_set(io, global_id, status))
        .await
    {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {}s", STATUS_WRITE_TIMEOUT.as_secs())),
    }
}

impl Drop for StatusPublisher {
    /// The replayer ends: its image's status is no longer refreshed by this instance.
    fn drop(&mut self) {
        self.book.entries().remove(&self.image.key().global_id);
    }
}

/// How long (whole seconds) the primary's cluster has not answered the pool's pings, if it
/// does not ([`PeerContext::primary_silent`]).
pub(crate) fn primary_silent_for(ctx: &PeerContext) -> Option<u64> {
    ctx.primary_silent.borrow().map(|since| since.elapsed().as_secs())
}

/// What [`with_silence`] adds to a description.
const SILENCE_SUFFIX: &str = "; primary_unreachable_seconds: ";

/// A bootstrap step's description (`description`, without what an earlier silence added to
/// it), saying that the primary has not answered for `silent` seconds (replay's JSON
/// descriptions carry the key in the JSON).
pub(crate) fn with_silence(description: &str, silent: u64) -> String {
    let step = description.split(SILENCE_SUFFIX).next().unwrap_or(description);
    format!("{step}{SILENCE_SUFFIX}{silent}")
}

/// What an image's status says while a call to the primary waits and the primary's cluster
/// does not answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SilentStatus {
    pub state: MirrorImageStatusState,
    pub description: String,
    /// The image's lag, when the silence makes it known (left as it is otherwise).
    pub lag: Option<crate::registry::Lag>,
}

/// Awaits `request`, a call to the primary (librados waits for ever for a cluster it cannot
/// reach). While the primary's cluster does not answer the pool's pings, the image's status
/// is `silent(seconds)`, published at once and again every status interval.
pub(crate) async fn from_primary<T>(
    ctx: &PeerContext,
    status: &mut StatusPublisher,
    silent: impl Fn(u64) -> Option<SilentStatus>,
    request: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(request);
    // The request is sent first (a call to a cluster that answers is not held up by the
    // status writes below, which wait for the silent cluster up to their timeout).
    tokio::select! {
        biased;
        answer = &mut request => return answer,
        () = std::future::ready(()) => {}
    }
    let mut since = ctx.primary_silent.clone();
    let mut followed = true;
    loop {
        let silent_for = since.borrow_and_update().map(|at| at.elapsed().as_secs());
        if let Some(s) = silent_for.and_then(&silent) {
            if let Some(lag) = s.lag {
                status.image().update(|i| i.lag = lag);
            }
            publish(ctx, status, s.state, &s.description).await;
        }
        let every = ctx.config().rbd_mirror_rs_status_interval;
        tokio::select! {
            biased;
            answer = &mut request => return answer,
            changed = since.changed(), if followed => followed = changed.is_ok(),
            () = tokio::time::sleep(every), if silent_for.is_some() => {}
        }
    }
}

/// Awaits `request`, a bootstrap step that calls the primary ([`from_primary`]): while the
/// primary's cluster does not answer, the status written last (or `starting_replay,
/// bootstrapping`) says so ([`with_silence`]); once it answers, that status is written again.
pub(crate) async fn bootstrap_step<T>(
    ctx: &PeerContext,
    status: &mut StatusPublisher,
    request: impl std::future::Future<Output = T>,
) -> T {
    let (state, description) = status
        .written
        .clone()
        .unwrap_or((MirrorImageStatusState::StartingReplay, "bootstrapping".to_owned()));
    let said = std::sync::atomic::AtomicBool::new(false);
    let silent = |seconds| {
        said.store(true, std::sync::atomic::Ordering::Relaxed);
        Some(SilentStatus { state, description: with_silence(&description, seconds), lag: None })
    };
    let answer = from_primary(ctx, status, silent, request).await;
    if said.into_inner() {
        publish(ctx, status, state, &description).await;
    }
    answer
}

/// Publishes the image's status on the local pool (and the remote one, see
/// [`StatusPublisher::publish`]) through the pool's connections.
pub(crate) async fn publish(
    ctx: &PeerContext,
    status: &mut StatusPublisher,
    state: MirrorImageStatusState,
    description: &str,
) {
    status.publish(&ctx.local_io, &ctx.remote_io, state, description).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tag: u64, entry: u64) -> Option<ObjectPosition> {
        Some(ObjectPosition { object_number: 0, tag_tid: tag, entry_tid: entry })
    }

    #[test]
    fn description_is_the_stock_json() {
        let progress = ReplayProgress {
            primary_position: p(1, 10),
            non_primary_position: p(1, 4),
            entries_per_second: 2.0,
            bytes_per_second: 8192.0,
            primary_unreachable: None,
        };
        let d = progress.description();
        let json: serde_json::Value =
            serde_json::from_str(d.strip_prefix("replaying, ").expect("prefix")).expect("json");
        assert_eq!(json["entries_behind_primary"], 6);
        assert_eq!(json["seconds_until_synced"], 3);
        assert_eq!(json["primary_position"]["entry_tid"], 10);
        assert!(ReplayProgress::default().description().contains("\"primary_position\":{}"));
        assert!(!d.contains("primary_unreachable_seconds"), "{d}");
        let silent = ReplayProgress { primary_unreachable: Some(Duration::from_millis(35_400)), ..progress };
        let json: serde_json::Value =
            serde_json::from_str(silent.description().strip_prefix("replaying, ").expect("prefix"))
                .expect("json");
        assert_eq!(json["primary_unreachable_seconds"], 35);
    }

    #[test]
    fn a_silence_is_said_once_at_the_end_of_a_bootstrap_description() {
        let step = "bootstrapping, IMAGE_SYNC/COPY_IMAGE 40%";
        let said = with_silence(step, 20);
        assert_eq!(said, "bootstrapping, IMAGE_SYNC/COPY_IMAGE 40%; primary_unreachable_seconds: 20");
        // Said again (a later step began while the primary was silent): replaced, not added.
        assert_eq!(with_silence(&said, 30), format!("{step}; primary_unreachable_seconds: 30"));
    }

    #[test]
    fn behind_counts_within_and_across_tags() {
        let mut r = ReplayProgress {
            primary_position: p(2, 3),
            non_primary_position: p(1, 50),
            ..Default::default()
        };
        assert_eq!(r.entries_behind_primary(), 4);
        r.non_primary_position = p(2, 3);
        assert_eq!(r.entries_behind_primary(), 0);
        r.non_primary_position = p(3, 0);
        assert_eq!(r.entries_behind_primary(), 0);
    }
}
