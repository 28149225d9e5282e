//! Journal-mode replay: entries from the primary's journal applied to the local image
//! (ceph-formats.md §3.5, §3.7).
//!
//! IO events are applied in windows of consecutive entries, planned per RADOS object by
//! [`crate::local::write_batch`] (one compound write operation per object and window); maintenance
//! operations wait for their `OpFinish` and run only if the primary's operation succeeded. A new remote tag is mirrored as a
//! local tag with its owner mapped (`""` → the remote pool's mirror uuid); a demotion tag
//! (`"<orphan>"`) ends replay once its entries are applied.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{FuturesUnordered, StreamExt};

use journal_reader::event::{Event, EventEntry, ORPHAN_MIRROR_UUID};
use journal_reader::tail::JournalTail;
use journal_reader::TagData;
use rbd_types::cls_journal::{
    args as journal_args, header_object_name as journal_header, ObjectPosition, Tag,
};
use rbd_types::{Decode, ProtectionStatus, UTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::bootstrap::{local_tag_create, map_mirror_uuid};
use super::commit_tracker::{CommitTracker, Durable};
use super::wake_batch::{Batched, WakeBatch};
use crate::bandwidth::ImageBandwidth;
use crate::error::{ReplayError, Result};
use crate::local::image::{LocalImage, PreparedObjectOps};
use crate::local::write_batch::{IoEvent, ObjectGroup, WindowPlanner};
use crate::metrics::ImageMetrics;
use crate::registry::{Control, Lag};
use crate::status::{ReplayProgress, StatusPublisher};
use crate::PeerContext;
use rbd_types::cls_rbd::MirrorImageStatusState;

/// Why replay returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayEnd {
    /// Shutdown was requested; the position is committed.
    Cancelled,
    /// The primary was demoted: every entry of its epoch is replayed and committed.
    RemoteDemoted,
    /// `rbd mirror image resync` was requested on the local image.
    ResyncRequested,
    /// The primary flagged our journal client disconnected.
    Disconnected,
    /// The local image was promoted (`rbd mirror image promote --force`).
    ForcePromoted,
}

/// Counters a replayer exposes (status, metrics).
#[derive(Debug, Default, Clone)]
pub struct ReplayCounters {
    /// Entries replayed since start.
    pub entries: u64,
    /// Payload bytes replayed since start.
    pub bytes: u64,
    /// Commit positions written.
    pub commits: u64,
    /// Entries applied in windows, and the sum of their latencies (from the window taking
    /// its first entry to all its writes durable): stock's `replay_latency`.
    pub latency: (u64, Duration),
}

/// Most entries in one replay window.
pub const WINDOW_ENTRIES: usize = 4096;
/// Most bytes one window's writes hold while they are in flight (their data, in the
/// journal's read buffers, which the write ops reference); the window being filled meanwhile
/// holds as much. Memory for CPU: bigger windows put more writes in each object's compound
/// operation; 3.5 MiB keeps peak RSS within the goal (benches/results/TUNING.md).
pub const WINDOW_HELD_BYTES: u64 = 7 << 19;
/// Bytes the journal tail reads from a data object at a time: each entry handed out keeps
/// its read buffer alive until replayed, so smaller reads hold less memory per window
/// (benches/results/TUNING.md).
pub const TAIL_FETCH_BYTES: usize = 128 << 10;
/// Most windows whose writes are in flight; one more is filled meanwhile. A second one
/// gained no throughput and holds one more window of read buffers (benches/results/TUNING.md).
pub const WINDOWS_IN_FLIGHT: usize = 1;

/// The planned operations of one object in one window, running: (window, object, result).
type ObjectFuture = Pin<Box<dyn Future<Output = (u64, u64, Result<()>)> + Send>>;

/// The window being filled: its planner and first entry.
#[derive(Debug)]
struct OpenWindow {
    planner: WindowPlanner,
    first_seq: u64,
    /// When its first entry was taken (replay latency).
    opened: Instant,
}

impl OpenWindow {
    /// Whether the window holds [`WINDOW_ENTRIES`] entries or [`WINDOW_HELD_BYTES`] of data.
    fn is_full(&self) -> bool {
        self.planner.events() >= WINDOW_ENTRIES || self.planner.held_bytes() >= WINDOW_HELD_BYTES
    }
}

/// Replays the primary's journal into `local` until cancelled or demoted.
///
/// Consecutive IO events form a window (up to [`WINDOW_ENTRIES`] entries or
/// [`WINDOW_HELD_BYTES`] of data), planned as one compound write operation per object
/// ([`crate::local::write_batch`]); a window is submitted when full, or at once when no window is in
/// flight, and up to [`WINDOWS_IN_FLIGHT`] run at a time. The operations of one object run one
/// after the other across windows, so the image ends up as if the events were applied in
/// journal order. Everything else (operations, tag changes, compare-and-write) waits for all
/// IO. The commit position advances over the longest prefix of entries whose effects are
/// durable (a window's entries are durable when all its object operations are), so a crash
/// never commits an entry that was not applied.
pub struct JournalReplayer<'a> {
    ctx: &'a PeerContext,
    remote_image_id: String,
    local: Arc<LocalImage>,
    tail: JournalTail,
    /// Operation events waiting for their `OpFinish`, by op tid.
    pending_ops: HashMap<u64, Event>,
    /// The remote tag whose entries we are replaying.
    current_tag: Option<u64>,
    /// Whether the current remote tag is a demotion.
    current_tag_demoted: bool,
    /// The window being filled.
    open: Option<OpenWindow>,
    /// Object operations in flight. They wake the task together ([`WakeBatch`]): it has
    /// nothing to do with one before the others (a window is done when all its operations
    /// are): far fewer context switches of the runtime thread (benches/results/TUNING.md).
    in_flight: FuturesUnordered<Batched<ObjectFuture>>,
    wake_batch: WakeBatch,
    /// Objects with an operation in flight, and the operations of later windows queued
    /// behind it.
    busy: HashMap<u64, VecDeque<(u64, Vec<ObjectGroup>)>>,
    /// Entries handed out, windows submitted, and the durable prefix: what may be committed.
    commits: CommitTracker,
    /// When each window in flight took its first entry.
    window_opened: HashMap<u64, Instant>,
    /// When the primary wrote the newest entry taken (its event timestamp).
    newest_entry_time: Option<UTime>,
    /// The same, of the entry being handled: taken, not yet in a window or applied (the
    /// calls before that may wait for site-b).
    handling: Option<UTime>,
    /// When a commit position was last written.
    last_commit: Option<SystemTime>,
    /// Counters.
    pub counters: ReplayCounters,
    /// The counters as last added to the image's registry entry.
    accounted: ReplayCounters,
    /// Exported metrics of the image, when the caller labels them.
    pub metrics: Option<ImageMetrics>,
    /// The operator's requests (`rbd mirror flush`), when the caller follows them.
    pub operator: Option<watch::Receiver<Control>>,
    /// `rbd_mirroring_replay_delay` of the image: an entry is applied no sooner than this
    /// long after the primary wrote it (zero: at once).
    pub replay_delay: Duration,
    /// The bandwidth caps the entries taken from the tail are charged to (their payload).
    pub bandwidth: ImageBandwidth,
    /// Until when the caps hold the next entry back.
    held_until: Option<tokio::time::Instant>,
    /// The image's registry entry (from [`Self::run`]'s publisher), where its lag is kept.
    registry: Option<crate::registry::ImageHandle>,
    /// The lag as last set in the registry.
    published_lag: Lag,
}

/// Longest wait between two reads of the local journal header's state (resync requested,
/// promoted here) while it is watched: `rbd mirror image resync` and a promotion notify the
/// watch, so this is only the safety net (as the idle journal poll and snapshot mode's).
const LOCAL_STATE_CHECK: Duration = Duration::from_secs(120);

/// A read of the primary's journal unanswered for this long means the primary does not
/// answer (librados waits for ever for an OSD it cannot reach): the status says so
/// (`primary_unreachable_seconds`) and the lag is at least that long.
const PRIMARY_SILENT: Duration = Duration::from_secs(10);

/// How long writing the commit position to the primary, and reading the local journal's
/// state, may wait: unanswered, the position stays uncommitted for the next commit, the state
/// is read at the next check. (A cluster out of reach held the replay loop, and with it the
/// image's status and metrics, in the call until it answered.)
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The next event of `watch`; never resolves without one. Cancel-safe.
async fn next_watch_event(watch: &mut Option<rados_ffi::Watch>) -> Option<rados_ffi::WatchEvent> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `until`; never without one. Nothing is made until polled (no timer per
/// loop of replay while no cap holds entries back).
async fn held(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl std::fmt::Debug for JournalReplayer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReplayer")
            .field("remote_image_id", &self.remote_image_id)
            .field("current_tag", &self.current_tag)
            .field("committable", self.commits.committable())
            .field("windows_in_flight", &self.commits.windows_in_flight())
            .field("object_ops_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl<'a> JournalReplayer<'a> {
    /// A replayer of `tail` (opened for our client) into `local`.
    pub fn new(ctx: &'a PeerContext, remote_image_id: &str, local: LocalImage, tail: JournalTail) -> Self {
        let commits = CommitTracker::new(tail.position().clone());
        JournalReplayer {
            ctx,
            remote_image_id: remote_image_id.to_owned(),
            local: Arc::new(local),
            tail,
            pending_ops: HashMap::new(),
            current_tag: None,
            current_tag_demoted: false,
            open: None,
            in_flight: FuturesUnordered::new(),
            wake_batch: WakeBatch::new(),
            busy: HashMap::new(),
            commits,
            window_opened: HashMap::new(),
            newest_entry_time: None,
            handling: None,
            last_commit: None,
            counters: ReplayCounters::default(),
            bandwidth: ImageBandwidth::unlimited(),
            held_until: None,
            accounted: ReplayCounters::default(),
            metrics: None,
            operator: None,
            replay_delay: Duration::ZERO,
            registry: None,
            published_lag: Lag::Unknown,
        }
    }

    /// Progress for the status description.
    pub fn progress(&self, entries_per_second: f64, bytes_per_second: f64) -> ReplayProgress {
        let primary = self.tail.header().clients.get("").and_then(|c| c.commit_position.front().copied());
        ReplayProgress {
            primary_position: primary,
            non_primary_position: self.commits.committable().front().copied(),
            entries_per_second,
            bytes_per_second,
            primary_unreachable: self.primary_silent(),
        }
    }

    /// How long the primary has not answered a read of its journal, once that is
    /// [`PRIMARY_SILENT`] or longer.
    fn primary_silent(&self) -> Option<Duration> {
        self.tail.primary_waiting_for().filter(|waited| *waited >= PRIMARY_SILENT)
    }

    /// Runs until `cancel` fires or the primary is demoted, publishing `replaying` with
    /// its progress at least every `status_interval`.
    pub async fn run(
        &mut self,
        cancel: &CancellationToken,
        status_interval: Duration,
        status: &mut StatusPublisher,
    ) -> Result<ReplayEnd> {
        self.registry = Some(status.image().clone());
        let result = self.replay(cancel, status_interval, status).await;
        // Whatever happened, what is durable gets committed (a failed IO stops the prefix).
        let drained = self.drain().await;
        let committed = self.commit().await;
        self.account(status.image());
        committed?;
        if matches!(result, Ok(ReplayEnd::Cancelled)) && drained.is_ok() {
            // Stopped (shutdown, the operator): the status keeps the position replayed last,
            // not the one of the last periodic report, for whoever reads it while we are
            // gone (a forced failover reports it as the data the copy holds).
            self.report(status, 0.0, 0.0).await;
        }
        match (result, drained) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(end), Ok(())) => Ok(end),
        }
    }

    async fn replay(
        &mut self,
        cancel: &CancellationToken,
        status_interval: Duration,
        status: &mut StatusPublisher,
    ) -> Result<ReplayEnd> {
        let mut commit_interval = self.ctx.config().rbd_mirror_journal_commit_age;
        let mut last_commit = Instant::now();
        let mut last_status = Instant::now();
        let mut rate_mark = (Instant::now(), 0u64, 0u64);
        // At least every second while busy: the commit interval's changes and the operator's
        // flush are seen within it (an idle loop waits for them instead, see `idle` below).
        let mut tick =
            tokio::time::interval(commit_interval.min(status_interval).min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The local image's journal header: `rbd mirror image resync` and a forced promotion
        // here update it and notify; its state is read again on a notification, and at least
        // every LOCAL_STATE_CHECK (every status interval while it cannot be watched).
        let local_header = journal_header(self.local.image_id());
        let mut local_watch = match self.ctx.local_io.watch(&local_header).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!(object = %local_header, error = %e, "cannot watch the local journal header; polling it");
                None
            }
        };
        let mut local_checked = Instant::now();
        let mut local_notified = false;
        self.report(status, 0.0, 0.0).await;
        let mut reported_entries = self.counters.entries;
        loop {
            let room = self.open.as_ref().is_none_or(|w| !w.is_full()) && self.held_until.is_none();
            let check_every = if local_watch.is_some() { LOCAL_STATE_CHECK } else { status_interval };
            // Idle (nothing open, in flight, held back or to commit): no 1 s tick, which would
            // wake every idle image every second; the loop wakes for an entry, a notification,
            // the operator, or when the status or the local state is due.
            let idle = self.in_flight.is_empty()
                && self.open.is_none()
                && self.held_until.is_none()
                && self.commits.uncommitted().is_none();
            // Idle with nothing replayed since the last report, the journal quiet too: the
            // status would be the same (new entries wake the loop), so it is looked at again
            // only with the local state, not every status interval (issue 16's idle goal).
            let quiet = idle
                && self.counters.entries == reported_entries
                && self.tail.is_idle()
                && self.tail.primary_waiting_for().is_none();
            let status_due = last_status + if quiet { LOCAL_STATE_CHECK } else { status_interval };
            let idle_wake = status_due.min(local_checked + check_every);
            let mut control = None;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(ReplayEnd::Cancelled),
                Some((window, object, r)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.complete(window, object, r)?;
                }
                entry = self.tail.next(), if room => {
                    let entry = entry?;
                    // The bandwidth caps: the next entry waits (completions and commits go on).
                    let wait = self.bandwidth.reserve(entry.entry.payload.len() as u64);
                    if !wait.is_zero() {
                        self.held_until = Some(tokio::time::Instant::now() + wait);
                    }
                    if !self.replay_delay.is_zero() && self.wait_until_due(&entry.entry.payload, cancel, status).await? {
                        return Ok(ReplayEnd::Cancelled);
                    }
                    if self.handle(entry.position(), &entry.entry.payload).await? {
                        return Ok(ReplayEnd::RemoteDemoted);
                    }
                }
                _ = tick.tick(), if !idle => {
                    commit_interval = self.ctx.config().rbd_mirror_journal_commit_age;
                }
                _ = tokio::time::sleep_until(idle_wake.into()), if idle => {
                    commit_interval = self.ctx.config().rbd_mirror_journal_commit_age;
                }
                c = operator_changed(&mut self.operator), if idle => control = c,
                _ = held(self.held_until), if self.held_until.is_some() => {
                    self.held_until = None;
                }
                event = next_watch_event(&mut local_watch) => match event {
                    Some(rados_ffi::WatchEvent::Notify { .. }) => local_notified = true,
                    _ => {
                        tracing::debug!(object = %local_header, "local journal header watch lost; polling it");
                        local_watch = None;
                    }
                },
            }
            // The operator's flush: seen here, after whatever woke the loop (an atomic load,
            // not one more future per entry; the tick wakes a busy loop, the request itself
            // an idle one).
            if let Some(control) = control.or_else(|| operator_request(&mut self.operator)) {
                if control.flushes != status.image().get().flushed {
                    let demoted = self.operator_flush().await?;
                    last_commit = Instant::now();
                    status.image().update(|s| s.flushed = control.flushes);
                    tracing::info!(position = ?self.commits.committable(), "flushed for the operator");
                    if demoted {
                        return Ok(ReplayEnd::RemoteDemoted);
                    }
                }
            }
            // A full window goes as soon as a slot is free; a partial one when the pipeline
            // is idle (it keeps filling while earlier windows run).
            if let Some(w) = &self.open {
                let full = w.is_full();
                let in_flight = self.commits.windows_in_flight();
                if in_flight == 0 || (full && in_flight < WINDOWS_IN_FLIGHT) {
                    self.submit();
                }
            }
            if self.commits.uncommitted().is_some() && last_commit.elapsed() >= commit_interval {
                self.commit().await?;
                last_commit = Instant::now();
            }
            if last_status.elapsed() >= status_interval {
                let (t0, e0, b0) = rate_mark;
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                let rates =
                    ((self.counters.entries - e0) as f64 / secs, (self.counters.bytes - b0) as f64 / secs);
                rate_mark = (Instant::now(), self.counters.entries, self.counters.bytes);
                self.report(status, rates.0, rates.1).await;
                last_status = Instant::now();
                reported_entries = self.counters.entries;
                // The header as the tail last read it (the primary notifies a change).
                let ours = self.tail.header().clients.get(&self.ctx.local_mirror_uuid);
                if ours.is_some_and(|c| c.state == rbd_types::cls_journal::ClientState::Disconnected) {
                    return Ok(ReplayEnd::Disconnected);
                }
            }
            if local_notified || local_checked.elapsed() >= check_every {
                local_notified = false;
                local_checked = Instant::now();
                // Unanswered (site-b out of reach), looked at again at the next check.
                let state = crate::local::local_journal_state(&self.ctx.local_io, self.local.image_id());
                let Ok(state) = tokio::time::timeout(ANSWER_TIMEOUT, state).await else {
                    tracing::debug!("no answer to reading the local journal state; looking again later");
                    continue;
                };
                let (resync, owner) = state?;
                if resync {
                    return Ok(ReplayEnd::ResyncRequested);
                }
                if owner.as_deref() == Some(journal_reader::event::LOCAL_MIRROR_UUID) {
                    // `rbd mirror image promote --force` here: the image is no longer ours.
                    return Ok(ReplayEnd::ForcePromoted);
                }
            }
        }
    }

    async fn report(&mut self, status: &mut StatusPublisher, entries_per_second: f64, bytes_per_second: f64) {
        let progress = self.progress(entries_per_second, bytes_per_second);
        self.account(status.image());
        let last_commit = self.last_commit;
        status.image().update(|s| s.last_commit = last_commit);
        self.publish_lag(&progress);
        let (local, remote) = (&self.ctx.local_io, &self.ctx.remote_io);
        status.publish(local, remote, MirrorImageStatusState::Replaying, &progress.description()).await;
    }

    /// How far the copy is behind, given `progress`: while entries wait (behind the
    /// primary's commit position as last read, or taken and not applied yet), since the
    /// newest entry taken (the oldest waiting one is older); caught up otherwise; at least
    /// since the primary stopped answering (what it wrote meanwhile is unknown, the copy may
    /// be as old as the unanswered read: the most it can be behind, for the lag alerts).
    fn lag(&self, progress: &ReplayProgress) -> Lag {
        let waiting = progress.entries_behind_primary() > 0
            || !self.in_flight.is_empty()
            || self.open.is_some()
            || self.handling.is_some();
        let lag = match self.handling.or(self.newest_entry_time) {
            Some(t) if waiting => Lag::Since(t.to_system_time()),
            _ => Lag::CaughtUp,
        };
        match progress.primary_unreachable {
            Some(silent) => lag.at_least_since(SystemTime::now() - silent),
            None => lag,
        }
    }

    /// Sets the registry's lag (metrics, admin socket) and entries behind as they are now,
    /// without writing the status. (Stored as a time, the lag then grows by itself while
    /// the loop waits, e.g. for site-b to answer.)
    fn refresh_lag(&mut self) {
        let progress = self.progress(0.0, 0.0);
        self.publish_lag(&progress);
    }

    /// Sets the registry's lag and entries behind for `progress`.
    fn publish_lag(&mut self, progress: &ReplayProgress) {
        let Some(registry) = &self.registry else { return };
        let (behind, lag) = (progress.entries_behind_primary(), self.lag(progress));
        registry.update(|s| {
            s.entries_behind_primary = behind;
            s.lag = lag;
        });
        self.published_lag = lag;
    }

    /// Adds to the image's registry entry what was replayed since the last time: its counts
    /// run for as long as the daemon does, across this image's attempts.
    fn account(&mut self, image: &crate::registry::ImageHandle) {
        let (now, before) = (&self.counters, &self.accounted);
        let entries = now.entries - before.entries;
        let bytes = now.bytes - before.bytes;
        let latency = (now.latency.0 - before.latency.0, now.latency.1.saturating_sub(before.latency.1));
        self.accounted = self.counters.clone();
        image.update(|s| {
            s.entries_replayed += entries;
            s.bytes_replayed += bytes;
            s.replay_latency.0 += latency.0;
            s.replay_latency.1 += latency.1;
        });
    }

    /// Writes the committable position to the primary's journal; unanswered within
    /// [`ANSWER_TIMEOUT`], it stays uncommitted for the next commit.
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_within(Some(ANSWER_TIMEOUT)).await
    }

    /// Writes the committable position to the primary's journal, waiting at most `limit`
    /// for the answer (for ever without one: the operator's flush returns once written).
    async fn commit_within(&mut self, limit: Option<Duration>) -> Result<()> {
        let Some(position) = self.commits.uncommitted().cloned() else {
            return Ok(());
        };
        let commit = self.tail.commit(&position);
        match limit {
            None => commit.await?,
            Some(limit) => match tokio::time::timeout(limit, commit).await {
                Ok(committed) => committed?,
                Err(_) => {
                    tracing::debug!(
                        ?position,
                        "no answer to the commit from the primary; committing it later"
                    );
                    return Ok(());
                }
            },
        }
        self.commits.committed();
        self.last_commit = Some(SystemTime::now());
        self.counters.commits += 1;
        if let Some(m) = &self.metrics {
            m.journal_commits.increment(1);
        }
        Ok(())
    }

    /// Submits the open window: each object's operations start now, or behind the
    /// operations of earlier windows on the same object.
    fn submit(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let end_seq = open.first_seq + open.planner.events() as u64;
        let bytes = open.planner.bytes();
        let plan = open.planner.finish();
        let width = self.tail.header().splay_width;
        let (window, durable) = self.commits.submit_window(open.first_seq, end_seq, plan.len(), bytes, width);
        if durable.window_entries == 0 {
            self.window_opened.insert(window, open.opened);
        } else {
            self.add_latency(durable.window_entries, open.opened);
        }
        self.count(durable);
        for (object, groups) in plan {
            match self.busy.get_mut(&object) {
                Some(queue) => queue.push_back((window, groups)),
                None => {
                    self.busy.insert(object, VecDeque::new());
                    self.launch(window, object, groups);
                }
            }
        }
    }

    /// Starts an object's operations. They are built here, not at submit: a write op holds
    /// librados buffers (references to the journal's read buffers, or copies of generated
    /// write-same data), while queued groups only hold slices of the read buffers.
    fn launch(&mut self, window: u64, object: u64, groups: Vec<ObjectGroup>) {
        let ops = PreparedObjectOps::new(object, &groups);
        drop(groups);
        let local = self.local.clone();
        let op: ObjectFuture = Box::pin(async move { (window, object, local.apply_prepared(ops).await) });
        self.in_flight.push(self.wake_batch.wrap(op));
    }

    /// Records a finished object operation: the next one queued on the object starts, and
    /// its window is done when it was the last one.
    fn complete(&mut self, window: u64, object: u64, result: Result<()>) -> Result<()> {
        match self.busy.get_mut(&object).and_then(VecDeque::pop_front) {
            Some((next, groups)) => self.launch(next, object, groups),
            None => {
                self.busy.remove(&object);
            }
        }
        // A failed operation leaves its window outstanding: its entries are never committed.
        if let Err(e) = result {
            self.commits.object_op_failed(window);
            return Err(e);
        }
        let durable = self.commits.object_op_done(window, self.tail.header().splay_width);
        if durable.window_entries > 0 {
            if let Some(opened) = self.window_opened.remove(&window) {
                self.add_latency(durable.window_entries, opened);
            }
        }
        let window_durable = durable.window_entries > 0;
        self.count(durable);
        if window_durable {
            // The lag moves on (to caught up, once nothing waits) with each window applied.
            self.refresh_lag();
        }
        Ok(())
    }

    /// A window of `entries` taken from `opened` on is durable now.
    fn add_latency(&mut self, entries: u64, opened: Instant) {
        let (count, sum) = &mut self.counters.latency;
        *count += entries;
        *sum += opened.elapsed() * u32::try_from(entries).unwrap_or(u32::MAX);
    }

    /// Counts what became durable: window bytes, and entries within the committable prefix.
    fn count(&mut self, durable: Durable) {
        if durable.bytes > 0 {
            self.counters.bytes += durable.bytes;
            if let Some(m) = &self.metrics {
                m.bytes_replayed(durable.bytes);
            }
        }
        if durable.entries > 0 {
            self.counters.entries += durable.entries;
            if let Some(m) = &self.metrics {
                m.entries_replayed(durable.entries);
            }
        }
    }

    /// Waits for every object operation in flight or queued (the open window is not
    /// submitted: see [`Self::flush`]). (Site-b out of reach holds the loop here; the lag in
    /// the registry grows meanwhile.)
    async fn drain(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some((window, object, r)) = self.in_flight.next().await {
            if let Err(e) = self.complete(window, object, r) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Delayed replay (`rbd_mirroring_replay_delay`, as the stock journal replayer): an entry
    /// the primary wrote less than the delay ago waits until it is due, everything before it
    /// applied and committed meanwhile. An operator's flush while waiting is answered at once
    /// (all that is due is applied). Returns true when cancelled while waiting.
    async fn wait_until_due(
        &mut self,
        payload: &bytes::Bytes,
        cancel: &CancellationToken,
        status: &mut StatusPublisher,
    ) -> Result<bool> {
        // An entry that does not decode is not delayed: `handle` reports it.
        let Ok(entry) = EventEntry::decode_payload(payload) else { return Ok(false) };
        let due = entry.timestamp.to_system_time() + self.replay_delay;
        let Ok(wait) = due.duration_since(SystemTime::now()) else { return Ok(false) };
        self.flush().await?;
        self.commit().await?;
        tracing::debug!(wait_ms = wait.as_millis() as u64, "replay delay: the next entry waits");
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(true),
                _ = &mut sleep => return Ok(false),
                Some(control) = operator_changed(&mut self.operator) => {
                    status.image().update(|s| s.flushed = control.flushes);
                }
            }
        }
    }

    /// The operator's `rbd mirror flush`: every entry already written to the primary's
    /// journal is applied and the commit position written. Returns true when a demotion
    /// epoch completed meanwhile.
    async fn operator_flush(&mut self) -> Result<bool> {
        while let Some(entry) = self.tail.try_next().await? {
            if self.handle(entry.position(), &entry.entry.payload).await? {
                self.flush().await?;
                self.commit_within(None).await?;
                return Ok(true);
            }
            // Full windows are applied one at a time: this is the operator's path.
            if self.open.as_ref().is_some_and(OpenWindow::is_full) {
                self.flush().await?;
            }
        }
        self.flush().await?;
        self.commit_within(None).await?;
        Ok(false)
    }

    /// Submits the open window and waits for all IO.
    async fn flush(&mut self) -> Result<()> {
        self.submit();
        self.drain().await
    }

    /// Takes one entry. Returns true when it completed a demotion epoch.
    async fn handle(&mut self, position: ObjectPosition, payload: &bytes::Bytes) -> Result<bool> {
        // Error context is formatted on the error path only: this runs for every entry.
        let entry = EventEntry::decode_payload(payload)
            .map_err(|e| ReplayError::decode(event_context(&self.remote_image_id, position), e))?;
        self.handling = Some(entry.timestamp);
        if self.published_lag == Lag::CaughtUp {
            // The copy lacks this entry from now on: the registry's lag grows from it, also
            // while the calls below wait (site-b out of reach).
            self.refresh_lag();
        }
        if self.current_tag != Some(position.tag_tid) {
            self.flush().await?;
            self.enter_tag(position.tag_tid).await?;
        }
        self.newest_entry_time = Some(entry.timestamp);
        let seq = self.commits.next_seq();
        let io = match entry.event {
            Event::AioWrite { offset, data, .. } => Ok(IoEvent::Write { offset, data }),
            Event::AioDiscard { offset, length, .. } => Ok(IoEvent::Discard { offset, length }),
            Event::AioWriteSame { offset, length, data } => {
                Ok(IoEvent::WriteSame { offset, length, pattern: data })
            }
            event => Err(event),
        };
        match io {
            Ok(io) => {
                let layout = self.local.layout();
                let open = self.open.get_or_insert_with(|| OpenWindow {
                    planner: WindowPlanner::new(layout),
                    first_seq: seq,
                    opened: Instant::now(),
                });
                open.planner.push(&io).map_err(|e| {
                    ReplayError::Invalid(format!("{e} ({})", event_context(&self.remote_image_id, position)))
                })?;
                self.commits.push_entry(position);
                self.handling = None;
            }
            Err(event) => {
                if let Event::Unknown { event_type } = event {
                    tracing::warn!(
                        event_type,
                        tag_tid = position.tag_tid,
                        entry_tid = position.entry_tid,
                        object_number = position.object_number,
                        "skipping a journal event of an unknown type (as librbd replays an UnknownEvent)"
                    );
                }
                // Everything else sees all earlier IO applied.
                self.flush().await?;
                let seq = self.commits.push_entry(position);
                let bytes = self.apply_inline(event).await.map_err(|e| match e {
                    ReplayError::Unsupported(m) => ReplayError::Unsupported(format!(
                        "{m} ({})",
                        event_context(&self.remote_image_id, position)
                    )),
                    other => other,
                })?;
                let mut durable = self.commits.entry_done(seq, self.tail.header().splay_width);
                // Bytes written inline (compare-and-write) count as the windows' do.
                durable.bytes += bytes;
                self.count(durable);
                self.handling = None;
                self.refresh_lag();
            }
        }
        // A demotion epoch holds only its DemotePromote marker: replay ends after it.
        if self.current_tag_demoted {
            self.flush().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A new remote epoch: mirror its tag into the local journal.
    async fn enter_tag(&mut self, tag_tid: u64) -> Result<()> {
        let object = journal_header(&self.remote_image_id);
        let reply =
            self.ctx.remote_io.exec(&object, "journal", "get_tag", &journal_args::get_tag(tag_tid)).await?;
        let tag = Tag::decode_all(&reply)
            .map_err(|e| ReplayError::decode(format!("tag {tag_tid} of {object}"), e))?;
        let data = TagData::decode_all(&tag.data)
            .map_err(|e| ReplayError::decode(format!("tag {tag_tid} data of {object}"), e))?;
        let (ul, ur) = (&self.ctx.local_mirror_uuid, &self.ctx.remote_mirror_uuid);
        let mut local = data.clone();
        local.mirror_uuid = map_mirror_uuid(&data.mirror_uuid, ul, ur);
        local.predecessor.mirror_uuid = map_mirror_uuid(&data.predecessor.mirror_uuid, ul, ur);
        local_tag_create(&self.ctx.local_io, self.local.image_id(), &local).await?;
        tracing::info!(tag_tid, owner = %data.mirror_uuid, "replaying a new primary epoch");
        self.current_tag = Some(tag_tid);
        self.current_tag_demoted = data.mirror_uuid == ORPHAN_MIRROR_UUID;
        Ok(())
    }

    /// Applies an event that is not a plain IO (all earlier IO is done); returns the data
    /// bytes it wrote.
    async fn apply_inline(&mut self, event: Event) -> Result<u64> {
        match event {
            Event::AioCompareAndWrite { offset, cmp_data, write_data, .. } => {
                let wrote = self.local.compare_and_write(offset, &cmp_data, &write_data).await?;
                Ok(if wrote { write_data.len() as u64 } else { 0 })
            }
            // IO events are durable when they complete; nothing more to flush. An unknown
            // event does nothing, as in librbd's replay (`handle` logged it).
            Event::AioFlush | Event::DemotePromote | Event::Unknown { .. } => Ok(0),
            Event::OpFinish { op_tid, r } => {
                match self.pending_ops.remove(&op_tid) {
                    Some(op) if r >= 0 => self.apply_op(op).await?,
                    Some(op) => {
                        tracing::info!(op_tid, r, ?op, "skipping an operation that failed on the primary")
                    }
                    None => {} // its start was committed before: already applied
                }
                Ok(0)
            }
            Event::AioWrite { .. } | Event::AioDiscard { .. } | Event::AioWriteSame { .. } => {
                Err(ReplayError::Internal("IO event applied inline".into()))
            }
            op => {
                let op_tid = op.op_tid().unwrap_or_default();
                self.pending_ops.insert(op_tid, op);
                Ok(0)
            }
        }
    }

    /// Executes a maintenance operation whose `OpFinish` reported success.
    async fn apply_op(&mut self, op: Event) -> Result<()> {
        match op {
            Event::Resize { size, .. } => self.local.resize(size).await,
            Event::MetadataSet { key, value, .. } => self.local.metadata_set(&key, &value).await,
            Event::MetadataRemove { key, .. } => self.local.metadata_remove(&key).await,
            // A snapshot count limit does not change what is replicated.
            Event::SnapLimit { .. } => Ok(()),
            // Sync points (ours or another daemon's) exist only for the initial copy.
            Event::SnapCreate(e) | Event::SnapRemove(e) if is_sync_point(&e.snap_name) => {
                tracing::debug!(snap = %e.snap_name, "sync point snapshot: nothing to replay");
                Ok(())
            }
            Event::SnapCreate(e) => {
                tracing::info!(snap = %e.snap_name, "creating snapshot");
                self.local.snap_create(&e.snap_name, &e.snap_namespace).await
            }
            Event::SnapRemove(e) => {
                tracing::info!(snap = %e.snap_name, "removing snapshot");
                self.local.snap_remove(&e.snap_name).await
            }
            Event::SnapRename { src_snap_name, dst_snap_name, .. } if !src_snap_name.is_empty() => {
                self.local.snap_rename(&src_snap_name, &dst_snap_name).await
            }
            Event::Rename { image_name, .. } => self.local.rename(&image_name).await,
            Event::SnapRollback(e) => self.local.snap_rollback(&e.snap_name).await,
            Event::UpdateFeatures { features, enabled, .. } => {
                self.local.update_features(features, enabled).await
            }
            // The local copy of a clone is a clone of the local parent: flattened as librbd
            // does (every object copied up, then detached from the parent).
            Event::Flatten { .. } => self.local.flatten().await,
            Event::SnapProtect(e) => {
                self.local.snap_set_protection(&e.snap_name, ProtectionStatus::Protected).await
            }
            Event::SnapUnprotect(e) => {
                self.local.snap_set_protection(&e.snap_name, ProtectionStatus::Unprotected).await
            }
            other => Err(ReplayError::Unsupported(format!(
                "replay of {} is not implemented yet",
                event_name(&other)
            ))),
        }
    }
}

/// The operator's request if it changed since last seen (no waiting).
fn operator_request(operator: &mut Option<watch::Receiver<Control>>) -> Option<Control> {
    let rx = operator.as_mut()?;
    if rx.has_changed().unwrap_or(false) {
        Some(*rx.borrow_and_update())
    } else {
        None
    }
}

/// The operator's next request, when the replayer follows them; never resolves otherwise
/// (nor once the registry forgot the image).
async fn operator_changed(operator: &mut Option<watch::Receiver<Control>>) -> Option<Control> {
    if let Some(rx) = operator {
        if rx.changed().await.is_ok() {
            return Some(*rx.borrow_and_update());
        }
        *operator = None;
    }
    std::future::pending().await
}

/// "event at `<position>` of journal `<header object>`", for errors.
fn event_context(remote_image_id: &str, position: ObjectPosition) -> String {
    format!("event at {position:?} of journal {}", journal_header(remote_image_id))
}

/// Whether a snapshot is an rbd-mirror sync point (`.rbd-mirror.<mirror uuid>.<id>`).
pub fn is_sync_point(snap_name: &str) -> bool {
    snap_name.starts_with(".rbd-mirror.")
}

/// The event's name as `rbd journal inspect` prints it.
pub fn event_name(e: &Event) -> &'static str {
    match e {
        Event::AioDiscard { .. } => "AioDiscard",
        Event::AioWrite { .. } => "AioWrite",
        Event::AioFlush => "AioFlush",
        Event::OpFinish { .. } => "OpFinish",
        Event::SnapCreate(_) => "SnapCreate",
        Event::SnapRemove(_) => "SnapRemove",
        Event::SnapRename { .. } => "SnapRename",
        Event::SnapProtect(_) => "SnapProtect",
        Event::SnapUnprotect(_) => "SnapUnprotect",
        Event::SnapRollback(_) => "SnapRollback",
        Event::Rename { .. } => "Rename",
        Event::Resize { .. } => "Resize",
        Event::Flatten { .. } => "Flatten",
        Event::DemotePromote => "Demote/Promote",
        Event::SnapLimit { .. } => "SnapLimit",
        Event::UpdateFeatures { .. } => "UpdateFeatures",
        Event::MetadataSet { .. } => "MetadataSet",
        Event::MetadataRemove { .. } => "MetadataRemove",
        Event::AioWriteSame { .. } => "AioWriteSame",
        Event::AioCompareAndWrite { .. } => "AioCompareAndWrite",
        Event::Unknown { .. } => "Unknown",
    }
}
