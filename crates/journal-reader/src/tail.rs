//! The live tail of one journal for one journal client: the only part of this crate that
//! does I/O (through `rados-ffi`, behind the default `live` feature).
//!
//! [`JournalTail::open`] reads the header `journal.<image id>`, finds our journal client and
//! starts after its commit position. [`JournalTail::next`] hands out entries in the order the
//! journal player uses (ceph-formats.md §2.7), doing the reads a [`JournalFollower`] asks for
//! (only the bytes appended to each data object since the last look; the reads of one look
//! at once); it is woken by watch notifications on the header and otherwise looks again
//! soon after a look that found entries: [`TailOptions::min_poll_interval`], doubling with
//! every look in a row that finds nothing up to [`TailOptions::poll_interval`] (a steady
//! writer's entries are replayed within milliseconds of their append, which no notification
//! announces), and, once the journal stayed quiet for [`TailOptions::idle_after`] poll
//! intervals, after [`TailOptions::idle_poll_interval`]: an idle journal costs almost
//! nothing, and the writer's next entries still wake the tail within the writer's commit
//! interval, because `journal::JournalMetadata` notifies the header when it commits its own
//! position (librbd: every `rbd_journal_commit_age`, 5 s, while it writes). The time of the
//! next look is the tail's, not the waiting future's: a caller that drops [`JournalTail::next`]
//! and calls it again does not look sooner. The header is read again only after a
//! notification, or when a look found nothing new: `journal::JournalMetadata` notifies after
//! it changes the object sets or a client, and itself refreshes only on notifications; a new
//! tag may come without one, but a follower only needs it once playback is stuck, and a look
//! that finds nothing reads the header. An older header only ever makes the follower wait
//! ([`JournalFollower::header_unchanged`]). Reads in flight belong to the tail, not to the
//! caller's future, so a caller that drops [`JournalTail::next`] (a `select!` whose other
//! branch won) loses nothing: the next call waits for the same reads. [`JournalTail::commit`]
//! writes a commit position with cls `journal.client_commit` and notifies the header, as
//! the `journal::` library does (§2.3, §2.8). Framing errors (bad CRC, bad preamble) end the
//! tail with an error naming the object and offset; event decoding is the caller's.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use rados_ffi::{IoCtx, Rados, RadosError, Watch, WatchEvent};

pub use crate::follower::DEFAULT_FETCH_BYTES;
use crate::follower::{FollowError, JournalFollower, Want};
use crate::player::PlayedEntry;
use rbd_types::cls_journal::{args, header_object_name, HeaderError, JournalHeader, ObjectSetPosition};

/// Default [`TailOptions::idle_poll_interval`]: the safety net behind header notifications.
pub const DEFAULT_IDLE_POLL_INTERVAL: Duration = Duration::from_secs(120);

/// Default [`TailOptions::idle_after`].
pub const DEFAULT_IDLE_AFTER: u32 = 3;

/// Default [`TailOptions::min_poll_interval`].
pub const DEFAULT_MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How the tail reads.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Longest wait between two looks at the data objects when no notification arrives
    /// (Ceph's `rbd_mirror_journal_poll_age` is 5 s).
    pub poll_interval: Duration,
    /// Wait after the first look that finds nothing once entries came; each further empty
    /// look doubles it, up to `poll_interval`.
    pub min_poll_interval: Duration,
    /// Longest wait between two looks once the journal is idle (see `idle_after`); a header
    /// notification still wakes the tail at once.
    pub idle_poll_interval: Duration,
    /// Poll intervals without an entry (or a notification) after which the journal is
    /// idle (0: never idle).
    pub idle_after: u32,
    /// Bytes read per data-object read (default [`DEFAULT_FETCH_BYTES`]); what is read but
    /// not yet replayed is what the tail holds in memory, at most two object sets' worth of
    /// reads.
    pub fetch_bytes: Option<usize>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            poll_interval: Duration::from_secs(1),
            min_poll_interval: DEFAULT_MIN_POLL_INTERVAL,
            idle_poll_interval: DEFAULT_IDLE_POLL_INTERVAL,
            idle_after: DEFAULT_IDLE_AFTER,
            fetch_bytes: None,
        }
    }
}

/// Why the tail stopped.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A RADOS call failed.
    #[error(transparent)]
    Rados(#[from] RadosError),
    /// The header could not be decoded.
    #[error("journal header {object}: {source}")]
    Header {
        /// `journal.<image id>`.
        object: String,
        /// What was wrong.
        #[source]
        source: HeaderError,
    },
    /// Following the journal failed: our client is gone, an entry is corrupt or missing.
    #[error(transparent)]
    Follow(#[from] FollowError),
}

/// Registers `client_id` on the journal of `image_id` with `data` (a `ClientData`).
/// `EEXIST` (already registered) is returned as an error for the caller to judge.
pub async fn register_client(
    io: &IoCtx,
    image_id: &str,
    client_id: &str,
    data: &[u8],
) -> Result<(), TailError> {
    let header = header_object_name(image_id);
    io.exec_write(&header, "journal", "client_register", &args::client_register(client_id, data)).await?;
    notify_header(io, &header).await;
    Ok(())
}

/// Unregisters `client_id` from the journal of `image_id`.
pub async fn unregister_client(io: &IoCtx, image_id: &str, client_id: &str) -> Result<(), TailError> {
    let header = header_object_name(image_id);
    io.exec_write(&header, "journal", "client_unregister", &args::client_id(client_id)).await?;
    notify_header(io, &header).await;
    Ok(())
}

/// Reads and decodes the header of the journal of `image_id`.
pub async fn read_header(io: &IoCtx, image_id: &str) -> Result<JournalHeader, TailError> {
    let object = header_object_name(image_id);
    let omap = io.omap_get_all(&object, "").await?;
    JournalHeader::from_omap(omap.iter().map(|(k, v)| (k.as_str(), v)))
        .map_err(|source| TailError::Header { object, source })
}

/// Tells the header's other watchers (librbd, other daemons) that metadata changed, as the
/// `journal::` library does after every update. Best effort: a failure only delays them.
async fn notify_header(io: &IoCtx, header: &str) {
    if let Err(e) = io.notify(header, &[], Duration::from_secs(5)).await {
        tracing::debug!(object = header, error = %e, "journal header notify failed");
    }
}

/// A journal client's view of a live journal.
#[derive(Debug)]
pub struct JournalTail {
    header_io: Arc<IoCtx>,
    data_io: Arc<IoCtx>,
    image_id: String,
    header_object: String,
    follower: JournalFollower,
    watch: Option<Watch>,
    options: TailOptions,
    /// The read under way, if any. Only ever reached through `&mut self` (`Mutex::get_mut`,
    /// no locking): the mutex is there to keep the tail `Sync` with a future inside.
    reading: Mutex<Option<Reading>>,
    /// A notification came since the header was last read.
    header_notified: bool,
    /// Entries were handed out since the follower last asked for the header.
    progressed: bool,
    /// When to try watching the header again, after a failed attempt.
    rewatch_at: Option<Instant>,
    /// When the next look is due (set when a look found nothing; a notification brings it
    /// forward).
    next_look: Option<Instant>,
    /// Looks in a row that found nothing.
    empty_looks: u32,
    /// Since when a request to the primary (the read under way, or watching the header
    /// again) has waited for its answer; none while nothing waits.
    waiting_since: Option<Instant>,
    /// Since when looks found nothing (`None` after an entry or a notification).
    quiet_since: Option<Instant>,
    /// Watching the header again, as a task of its own: a caller that drops [`Self::next`]
    /// while the OSD has not answered yet does not abandon a registration that would then
    /// never be removed; the next wait takes the task's result.
    rewatching: Option<tokio::task::JoinHandle<Result<Watch, RadosError>>>,
}

/// A read of the journal under way, owned by the tail (see the module documentation).
struct Reading(BoxFuture<'static, Read>);

impl std::fmt::Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reading")
    }
}

/// What a [`Reading`] brings back.
enum Read {
    Header(Result<JournalHeader, TailError>),
    /// The data reads of one look, in the follower's order: (object number, bytes).
    Data(Vec<(u64, Result<Bytes, RadosError>)>),
}

impl JournalTail {
    /// Opens the journal of `image_id` in `pool`/`namespace` for `client_id`, starting
    /// after the client's commit position.
    pub async fn open(
        rados: &Rados,
        pool: &str,
        namespace: &str,
        image_id: &str,
        client_id: &str,
        options: TailOptions,
    ) -> Result<JournalTail, TailError> {
        let header_io = rados.ioctx(pool, namespace).await?;
        let header_object = header_object_name(image_id);
        let header = read_header(&header_io, image_id).await?;
        let client = header.clients.get(client_id).ok_or_else(|| FollowError::ClientNotRegistered {
            object: header_object.clone(),
            client_id: client_id.to_owned(),
        })?;
        let position = client.commit_position.clone();
        let header_pool_id = header_io.pool_id();
        // Data objects live in the header's pool unless the journal was created with a
        // journal pool (`rbd_journal_pool`); their names embed the header's pool id either way.
        let data_io = if header.pool_id < 0 || header.pool_id == header_pool_id {
            rados.ioctx(pool, namespace).await?
        } else {
            let data_pool = rados.pool_reverse_lookup(header.pool_id).await?;
            rados.ioctx(&data_pool, namespace).await?
        };
        let watch = match header_io.watch(&header_object).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(object = %header_object, error = %e, "cannot watch the journal header; polling until it can");
                None
            }
        };
        let fetch_bytes = options.fetch_bytes.unwrap_or(DEFAULT_FETCH_BYTES);
        let follower =
            JournalFollower::new(image_id, client_id, header_pool_id, header, position, fetch_bytes);
        Ok(JournalTail {
            header_io: Arc::new(header_io),
            data_io: Arc::new(data_io),
            image_id: image_id.to_owned(),
            header_object,
            follower,
            watch,
            options,
            reading: Mutex::new(None),
            header_notified: false,
            progressed: false,
            rewatch_at: None,
            next_look: None,
            empty_looks: 0,
            waiting_since: None,
            quiet_since: None,
            rewatching: None,
        })
    }

    /// The header as last read.
    pub fn header(&self) -> &JournalHeader {
        self.follower.header()
    }

    /// The position after the last entry returned by [`Self::next`] / [`Self::try_next`].
    pub fn position(&self) -> &ObjectSetPosition {
        self.follower.position()
    }

    /// The next entry; waits (watch notification or poll) until one is there. Cancel-safe.
    pub async fn next(&mut self) -> Result<PlayedEntry, TailError> {
        loop {
            if self.next_look.is_some() {
                self.wait().await;
            }
            if let Some(e) = self.try_next().await? {
                return Ok(e);
            }
            self.empty_looks = self.empty_looks.saturating_add(1);
            let now = Instant::now();
            self.quiet_since.get_or_insert(now);
            let interval = if self.is_idle() {
                self.options.idle_poll_interval.max(self.options.poll_interval)
            } else {
                let doublings = self.empty_looks.saturating_sub(1).min(16);
                self.options.min_poll_interval.saturating_mul(1 << doublings).min(self.options.poll_interval)
            };
            self.next_look = Some(now + interval);
        }
    }

    /// Whether the journal is idle: looks found nothing for [`TailOptions::idle_after`] poll
    /// intervals.
    pub fn is_idle(&self) -> bool {
        let quiet_for = self.options.poll_interval.saturating_mul(self.options.idle_after);
        self.options.idle_after > 0 && self.quiet_since.is_some_and(|t| t.elapsed() >= quiet_for)
    }

    /// The next entry if one is already written, without waiting. Cancel-safe: dropped
    /// while reading, the next call waits for the same reads.
    pub async fn try_next(&mut self) -> Result<Option<PlayedEntry>, TailError> {
        loop {
            let slot = self.reading.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(Reading(reading)) = slot.as_mut() {
                let read = reading.await;
                *slot = None;
                self.waiting_since = None;
                match read {
                    Read::Header(header) => self.follower.header_read(header?)?,
                    Read::Data(reads) => {
                        for (object_number, bytes) in reads {
                            let bytes = match bytes {
                                Ok(b) => b,
                                Err(e) if e.is_not_found() => Bytes::new(),
                                Err(e) => return Err(e.into()),
                            };
                            self.follower.object_read(object_number, bytes)?;
                        }
                    }
                }
                continue;
            }
            match self.follower.want()? {
                Want::Entry(e) => {
                    self.progressed = true;
                    self.empty_looks = 0;
                    self.quiet_since = None;
                    return Ok(Some(e));
                }
                Want::Wait => return Ok(None),
                Want::Header => {
                    if self.header_current() {
                        self.follower.header_unchanged();
                    } else {
                        // A notification from now on is about a newer header than this one.
                        self.header_notified = false;
                        let (io, image_id) = (self.header_io.clone(), self.image_id.clone());
                        self.start(async move { Read::Header(read_header(&io, &image_id).await) });
                    }
                    self.progressed = false;
                }
                Want::Read(_) => {
                    // Into buffers librados holds: replay writes share them instead of copying.
                    let reads = self.follower.pass_reads().into_iter().map(|r| {
                        let io = self.data_io.clone();
                        async move { (r.object_number, io.read_shared(&r.object, r.offset, r.len).await) }
                    });
                    let reads = join_all(reads);
                    self.start(async move { Read::Data(reads.await) });
                }
            }
        }
    }

    /// How long a request to the primary (a read of its journal, or watching its header
    /// again) has waited for its answer; none while nothing waits. librados waits for ever
    /// for an OSD it cannot reach: a long wait means the primary does not answer.
    pub fn primary_waiting_for(&self) -> Option<Duration> {
        self.waiting_since.map(|t| t.elapsed())
    }

    /// Makes `read` the read under way.
    fn start(&mut self, read: impl Future<Output = Read> + Send + 'static) {
        self.waiting_since = Some(Instant::now());
        *self.reading.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(Reading(Box::pin(read)));
    }

    /// Whether the header last read is still the journal's: the watch is up, no
    /// notification came since, and the last look found entries (a look that found none
    /// reads the header again, which also covers an update whose notification is late).
    fn header_current(&mut self) -> bool {
        while let Some(watch) = self.watch.as_mut() {
            match watch.try_next() {
                Poll::Pending => break,
                Poll::Ready(Some(WatchEvent::Notify { .. })) => self.header_notified = true,
                Poll::Ready(event) => self.watch_lost(event),
            }
        }
        self.watch.is_some() && !self.header_notified && self.progressed
    }

    /// The watch failed or closed: until it is back ([`Self::wait`] watches again), the tail
    /// polls, reading the header each time.
    fn watch_lost(&mut self, event: Option<WatchEvent>) {
        if let Some(WatchEvent::Error { errno }) = event {
            tracing::warn!(object = %self.header_object, errno, "journal header watch failed; polling until it is back");
        }
        self.watch = None;
        self.rewatch_at = None;
    }

    /// Waits until the next look is due or a header notification comes, whichever is first;
    /// then no look is pending. Without a watch, first tries to watch the header again, at
    /// most once per poll interval (as `journal::JournalMetadata` does after a watch error).
    /// The caller may drop this future at any point (the replayer's `select!` does, every
    /// second): nothing is lost, and the look stays due when it was.
    async fn wait(&mut self) {
        let interval = self.options.poll_interval;
        let rewatch_due = self.rewatch_at.is_none_or(|at| Instant::now() >= at);
        if self.watch.is_none() && (self.rewatching.is_some() || rewatch_due) {
            // Since the first of the attempts cancelled while waiting (no read is under way
            // while the tail waits).
            self.waiting_since.get_or_insert_with(Instant::now);
            let task = self.rewatching.get_or_insert_with(|| {
                let (io, object) = (self.header_io.clone(), self.header_object.clone());
                tokio::spawn(async move { io.watch(&object).await })
            });
            let watched = task.await;
            self.rewatching = None;
            self.rewatch_at = Some(Instant::now() + interval);
            self.waiting_since = None;
            match watched {
                Ok(Ok(watch)) => {
                    tracing::info!(object = %self.header_object, "journal header watched again");
                    self.watch = Some(watch);
                    // Updates may have gone unnoticed meanwhile.
                    self.header_notified = true;
                    self.next_look = None;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(object = %self.header_object, error = %e, "cannot watch the journal header yet")
                }
                Err(e) => {
                    tracing::debug!(object = %self.header_object, error = %e, "the task watching the journal header ended")
                }
            }
        }
        let due = self.next_look.unwrap_or_else(Instant::now);
        // Without a watch, the next attempt to watch again bounds the wait.
        let due = match (&self.watch, self.rewatch_at) {
            (None, Some(at)) => due.min(at),
            _ => due,
        };
        match self.watch.as_mut() {
            Some(watch) => match tokio::time::timeout_at(due.into(), watch.next()).await {
                Ok(Some(WatchEvent::Notify { .. })) => {
                    self.header_notified = true;
                    self.empty_looks = 0;
                    self.quiet_since = None;
                }
                Ok(event) => self.watch_lost(event),
                Err(_) => {}
            },
            None => tokio::time::sleep_until(due.into()).await,
        }
        self.next_look = None;
    }

    /// Commits `position` for our client on the primary's journal (cls
    /// `journal.client_commit`) and notifies the header's watchers.
    pub async fn commit(&self, position: &ObjectSetPosition) -> Result<(), TailError> {
        let arg = args::client_commit(self.follower.client_id(), position);
        self.header_io.exec_write(&self.header_object, "journal", "client_commit", &arg).await?;
        notify_header(&self.header_io, &self.header_object).await;
        Ok(())
    }
}
