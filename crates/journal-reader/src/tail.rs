//! The live tail of one journal for one journal client: the only part of this crate that
//! does I/O (through `rados-ffi`, behind the default `live` feature).
//!
//! [`JournalTail::open`] reads the header `journal.<image id>`, finds our journal client and
//! starts after its commit position. [`JournalTail::next`] hands out entries in the order the
//! journal player uses (ceph-formats.md §2.7), fetching only the bytes appended to each data
//! object since the last look; it is woken by watch notifications on the header and
//! otherwise polls at most every [`TailOptions::poll_interval`]. [`JournalTail::commit`]
//! writes a commit position with cls `journal.client_commit` and notifies the header, as
//! the `journal::` library does (§2.3, §2.8). Framing errors (bad CRC, bad preamble) end the
//! tail with an error naming the object and offset; event decoding is the caller's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rados_ffi::{IoCtx, Rados, RadosError, Watch, WatchEvent};

use crate::cls_journal::{
    args, data_object_name, header_object_name, HeaderError, JournalHeader, ObjectSetPosition,
};
use crate::entry::{decode_object, Entry, EntryError};
use crate::player::{plan_playback_partial, PlaybackEnd, PlayedEntry, PlayerError};

/// Bytes read from one data object at a time unless [`TailOptions::fetch_bytes`] says.
pub const DEFAULT_FETCH_BYTES: usize = 1 << 20;

/// How the tail reads.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Longest wait between two looks at the data objects when no notification arrives
    /// (Ceph's `rbd_mirror_journal_poll_age` is 5 s).
    pub poll_interval: Duration,
    /// Bytes read per data-object read (default [`DEFAULT_FETCH_BYTES`]); what is read but
    /// not yet replayed is what the tail holds in memory, at most two object sets' worth of
    /// reads.
    pub fetch_bytes: Option<usize>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions { poll_interval: Duration::from_secs(1), fetch_bytes: None }
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
    /// Our journal client is not registered (or was unregistered under us).
    #[error("journal client '{client_id}' is not registered in {object}")]
    ClientNotRegistered {
        /// `journal.<image id>`.
        object: String,
        /// The client id.
        client_id: String,
    },
    /// A data object holds a corrupt entry.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// Entries are missing from the sequence.
    #[error("journal {object}: {source}")]
    Player {
        /// `journal.<image id>`.
        object: String,
        /// What the player found.
        #[source]
        source: PlayerError,
    },
}

/// What a refresh found.
#[derive(Debug, Clone, Copy)]
struct Refreshed {
    /// Some object may hold bytes not read yet.
    more: bool,
    /// Playback is stuck on the active tag while the header lists a newer one.
    newer_tag: bool,
}

/// Bytes of one data object seen so far.
#[derive(Debug, Default)]
struct CachedObject {
    /// Complete entries, in object order.
    entries: Vec<Entry>,
    /// Bytes of the object read so far (complete entries + `partial`).
    read: u64,
    /// A partial entry at the tail, completed by the next read.
    partial: Bytes,
    /// The last read came back full: the object may hold more.
    more: bool,
    /// The last read happened after the object's set was closed (older than the active
    /// set): a short read then means the object is complete. Before that, the writer may
    /// still have been appending.
    read_closed: bool,
}

impl CachedObject {
    /// Whether reading again may find entries not seen yet.
    fn may_grow(&self) -> bool {
        self.more || !self.read_closed
    }
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
    header_io: IoCtx,
    data_io: IoCtx,
    image_id: String,
    client_id: String,
    header_object: String,
    header_pool_id: i64,
    header: JournalHeader,
    /// Position after the last entry planned into `ready` (what playback continues from).
    planned: ObjectSetPosition,
    /// Position after the last entry returned by `next` (starts at the commit position).
    position: ObjectSetPosition,
    objects: BTreeMap<u64, CachedObject>,
    ready: VecDeque<PlayedEntry>,
    /// The object playback stopped on at the last plan: reading it further is what lets
    /// playback go on.
    stuck_on: Option<u64>,
    /// The tag playback was on at the last plan.
    active_tag: Option<u64>,
    watch: Option<Watch>,
    options: TailOptions,
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
        let client = header.clients.get(client_id).ok_or_else(|| TailError::ClientNotRegistered {
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
                tracing::warn!(object = %header_object, error = %e, "cannot watch the journal header; polling only");
                None
            }
        };
        Ok(JournalTail {
            header_io,
            data_io,
            image_id: image_id.to_owned(),
            client_id: client_id.to_owned(),
            header_object,
            header_pool_id,
            header,
            planned: position.clone(),
            position,
            objects: BTreeMap::new(),
            ready: VecDeque::new(),
            stuck_on: None,
            active_tag: None,
            watch,
            options,
        })
    }

    /// The header as last read.
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// The position after the last entry returned by [`Self::next`] / [`Self::try_next`].
    pub fn position(&self) -> &ObjectSetPosition {
        &self.position
    }

    /// The next entry; waits (watch notification or poll) until one is there.
    pub async fn next(&mut self) -> Result<PlayedEntry, TailError> {
        loop {
            if let Some(e) = self.try_next().await? {
                return Ok(e);
            }
            self.wait().await;
        }
    }

    /// The next entry if one is already written, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<PlayedEntry>, TailError> {
        let mut read_all = false;
        let mut tag_closed = false;
        while self.ready.is_empty() {
            // Objects are read a chunk at a time: while playback is stuck on an object that
            // has more bytes, read the next chunk of every such object.
            let refreshed = self.refresh(read_all, tag_closed).await?;
            if refreshed.newer_tag && !tag_closed {
                // The writer moved to a newer tag, so every entry of the active tag is
                // written: read the objects to their end once more, then let playback
                // leave the active tag where its entries run out.
                tag_closed = true;
            } else if !refreshed.more {
                break;
            }
            read_all = true;
        }
        let next = self.ready.pop_front();
        if let Some(e) = &next {
            self.position.advance(e.position(), self.header.splay_width);
        }
        Ok(next)
    }

    /// Waits for a header notification or the poll interval, whichever comes first.
    async fn wait(&mut self) {
        let interval = self.options.poll_interval;
        match self.watch.as_mut() {
            Some(watch) => match tokio::time::timeout(interval, watch.next()).await {
                Ok(Some(WatchEvent::Error { errno })) => {
                    tracing::warn!(object = %self.header_object, errno, "journal header watch failed; polling only");
                    self.watch = None;
                }
                Ok(None) => self.watch = None,
                Ok(Some(WatchEvent::Notify { .. })) | Err(_) => {}
            },
            None => tokio::time::sleep(interval).await,
        }
    }

    /// Re-reads the header and the next bytes of the data objects of the (at most two)
    /// object sets that can hold entries after our position, then plans playback from the
    /// position. Objects with little left to play are read further, or all objects with
    /// `read_all`. Returns whether some object may hold bytes not read yet.
    async fn refresh(&mut self, read_all: bool, tag_closed: bool) -> Result<Refreshed, TailError> {
        self.header = read_header(&self.header_io, &self.image_id).await?;
        if !self.header.clients.contains_key(&self.client_id) {
            return Err(TailError::ClientNotRegistered {
                object: self.header_object.clone(),
                client_id: self.client_id.clone(),
            });
        }
        let width = u64::from(self.header.splay_width.max(1));
        let active_set = self.header.active_set;
        let first_set = self.first_set(width);
        self.objects.retain(|n, _| n / width >= first_set);
        let last_set = self.header.active_set.min(first_set.saturating_add(1)).max(first_set);
        self.forget_played();
        for set in first_set..=last_set {
            for object_number in set * width..(set + 1) * width {
                if self.wants_read(object_number, read_all, tag_closed) {
                    self.fetch(object_number).await?;
                }
            }
        }
        let view: BTreeMap<u64, Vec<Entry>> =
            self.objects.iter().map(|(n, o)| (*n, o.entries.clone())).collect();
        // Objects that may hold more than was read, and the set after the last one read,
        // which playback must not take for empty.
        let mut incomplete: BTreeSet<u64> = self
            .objects
            .iter()
            .filter(|(_, o)| if tag_closed { o.more } else { o.may_grow() })
            .map(|(n, _)| *n)
            .collect();
        let beyond = last_set.saturating_add(1);
        incomplete.extend(beyond.saturating_mul(width)..beyond.saturating_add(1).saturating_mul(width));
        // Leaving the active tag only once everything of it is read after a newer tag
        // appeared: an object holding an entry of a newer tag holds none of the active tag
        // after it (a tag's writer finished before the next tag was allocated).
        let allow_tag_switch =
            tag_closed && !self.objects.iter().any(|(&n, o)| o.more && !self.holds_newer_tag(n));
        let playback = plan_playback_partial(
            self.header.splay_width,
            self.header.active_set,
            &self.planned,
            &view,
            &incomplete,
            allow_tag_switch,
        )
        .map_err(|source| TailError::Player { object: self.header_object.clone(), source })?;
        // Stuck with a newer tag in the header: the active tag may be over.
        let newer_tag = playback.entries.is_empty()
            && matches!(playback.end, PlaybackEnd::NoMoreEntries { .. })
            && playback.active_tag_tid.is_some_and(|t| self.header.tags.keys().any(|&k| k > t));
        tracing::debug!(
            journal = %self.header_object,
            first_set,
            last_set,
            active_set,
            planned = playback.entries.len(),
            end = ?playback.end,
            incomplete = ?incomplete,
            "journal playback planned"
        );
        for played in playback.entries {
            tracing::trace!(
                object = played.object_number,
                tag = played.entry.tag_tid,
                entry = played.entry.entry_tid,
                "planned"
            );
            self.planned.advance(played.position(), self.header.splay_width);
            self.ready.push_back(played);
        }
        self.stuck_on = match playback.end {
            PlaybackEnd::NoMoreEntries { object_number }
            | PlaybackEnd::TagSequenceIncomplete { object_number } => Some(object_number),
        };
        self.active_tag = playback.active_tag_tid;
        // Worth another read now: an object the next reading pass would read that came back
        // full, or a closed set's object not yet read since it closed (objects of the active
        // set are waited for by polling).
        self.forget_played();
        let more = (first_set..=last_set).any(|set| {
            (set * width..(set + 1) * width).any(|n| {
                self.wants_read(n, true, tag_closed)
                    && self.objects.get(&n).is_some_and(|o| o.more || (set < active_set && !o.read_closed))
            })
        });
        Ok(Refreshed { more, newer_tag })
    }

    /// Whether a refresh reads the next chunk of `object_number`: always when nothing of it
    /// is left to play (read-ahead of about one read per object); in a reading pass
    /// (`read_all`, playback stuck) only the object playback stopped on and, once a newer tag
    /// exists, the objects that may still hold entries of the active tag. Reading every
    /// object instead would pull a whole backlog into memory.
    fn wants_read(&self, object_number: u64, read_all: bool, tag_closed: bool) -> bool {
        if self.unplayed(object_number) == 0 {
            return true;
        }
        if !read_all {
            return false;
        }
        self.stuck_on == Some(object_number) || (tag_closed && !self.holds_newer_tag(object_number))
    }

    /// Whether the object's unplayed entries include one of a tag newer than the active one.
    fn holds_newer_tag(&self, object_number: u64) -> bool {
        let Some(active) = self.active_tag else {
            return false;
        };
        // Entries of an object are in tag order: its last one has its newest tag.
        self.objects.get(&object_number).is_some_and(|o| o.entries.last().is_some_and(|e| e.tag_tid > active))
    }

    /// Drops the cached entries already handed out, except each object's last one: the
    /// player finds its position there. This bounds memory to the unread part.
    fn forget_played(&mut self) {
        for p in &self.planned.object_positions {
            if let Some(cached) = self.objects.get_mut(&p.object_number) {
                let at =
                    cached.entries.iter().position(|e| e.tag_tid == p.tag_tid && e.entry_tid == p.entry_tid);
                if let Some(i) = at {
                    cached.entries.drain(..i);
                }
            }
        }
    }

    /// Cached entries of an object after the planned position of its splay offset: what is
    /// left to play there. Entries at or before it (the position's own, or committed
    /// entries read again after a restart) do not count, so such an object is read further.
    fn unplayed(&self, object_number: u64) -> usize {
        let Some(cached) = self.objects.get(&object_number) else {
            return 0;
        };
        let width = u64::from(self.header.splay_width.max(1));
        let position =
            self.planned.object_positions.iter().find(|p| p.object_number % width == object_number % width);
        match position {
            None => cached.entries.len(),
            // Playback of this splay offset is past the object.
            Some(p) if p.object_number > object_number => 0,
            Some(p) if p.object_number < object_number => cached.entries.len(),
            Some(p) => {
                cached.entries.iter().filter(|e| (e.tag_tid, e.entry_tid) > (p.tag_tid, p.entry_tid)).count()
            }
        }
    }

    /// The oldest object set that can still hold entries after our position.
    fn first_set(&self, width: u64) -> u64 {
        let from_position = self.planned.object_positions.iter().map(|p| p.object_number / width).min();
        from_position.unwrap_or(self.header.minimum_set).max(self.header.minimum_set)
    }

    /// Reads the next chunk appended to one data object; `more` records whether it came
    /// back full.
    async fn fetch(&mut self, object_number: u64) -> Result<(), TailError> {
        let name = data_object_name(self.header_pool_id, &self.image_id, object_number);
        let chunk = self.options.fetch_bytes.unwrap_or(DEFAULT_FETCH_BYTES).max(4096);
        let width = u64::from(self.header.splay_width.max(1));
        let closed = object_number / width < self.header.active_set;
        let cached = self.objects.entry(object_number).or_default();
        let new = match self.data_io.read(&name, cached.read, chunk).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => Bytes::new(),
            Err(e) => return Err(e.into()),
        };
        cached.more = new.len() >= chunk;
        cached.read_closed = closed;
        if new.is_empty() {
            return Ok(());
        }
        let got = new.len();
        cached.read += got as u64;
        let base = cached.read - got as u64 - cached.partial.len() as u64;
        let buf = if cached.partial.is_empty() {
            new
        } else {
            let mut b = BytesMut::with_capacity(cached.partial.len() + got);
            b.extend_from_slice(&cached.partial);
            b.extend_from_slice(&new);
            b.freeze()
        };
        let decoded = decode_object(&name, &buf).map_err(|e| e.at_base(base))?;
        cached.entries.extend(decoded.entries.into_iter().map(|mut e| {
            e.offset += base as usize;
            e
        }));
        cached.partial = buf.slice(decoded.consumed..);
        Ok(())
    }

    /// Commits `position` for our client on the primary's journal (cls
    /// `journal.client_commit`) and notifies the header's watchers.
    pub async fn commit(&self, position: &ObjectSetPosition) -> Result<(), TailError> {
        let arg = args::client_commit(&self.client_id, position);
        self.header_io.exec_write(&self.header_object, "journal", "client_commit", &arg).await?;
        notify_header(&self.header_io, &self.header_object).await;
        Ok(())
    }
}
