//! Following a live journal without doing I/O: which bytes to read next, what they hold,
//! and the entries playback hands out from them.
//!
//! A [`JournalFollower`] is the bookkeeping of one journal client reading a journal that
//! is still being written: the data objects read so far (a chunk at a time, so a backlog is
//! never pulled whole into memory), the position playback has reached, and the entries
//! planned by [`crate::player`] but not yet handed out. It asks for what it needs with
//! [`JournalFollower::want`] ([`Want::Header`], [`Want::Read`]) and is given the answers
//! ([`JournalFollower::header_read`], [`JournalFollower::object_read`]); the live tail
//! (`tail`, feature `live`) answers them from RADOS, tests from a journal in memory. Being
//! a state machine, it keeps its place when the caller's future is dropped between steps.
//!
//! One look at the journal ("pass") reads the header, then the next chunk of the data
//! objects of the (at most two) object sets that can hold entries after the position: those
//! with nothing left to play, the one playback stopped on, and those that may grow (behind
//! the writer, or in the active set) with less than half a chunk left (the objects of a set
//! are then read together, one round trip for all). Then it plans playback
//! ([`crate::player::plan_playback_partial`]): an object read while its set was active, or
//! whose last read came back full, may grow, so playback waits there. The active tag ends
//! where its next entry would be in an object read to its end after a newer tag was
//! allocated: librbd allocates a tag only once the previous owner's appends are all written.
//! When playback is stuck and the header lists a newer tag, a second pass follows at once to
//! read that object again.
//!
//! `tests/follower_sim.rs` checks this against a simulated writer (appends landing out of
//! order across objects, object sets filling up, tag changes, restarts from a position).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::entry::{decode_object_at, first_entry_end, Entry, EntryError};
use crate::player::{plan_playback_partial, ObjectEntries, PlaybackEnd, PlayedEntry, PlayerError};
use rbd_types::cls_journal::{data_object_name, JournalHeader, ObjectSetPosition};

/// Bytes read from one data object at a time unless the follower is told otherwise.
pub const DEFAULT_FETCH_BYTES: usize = 1 << 20;

/// What the follower needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The journal header (`journal.<image id>`), read anew, or the one read last if it
    /// cannot have changed ([`JournalFollower::header_unchanged`]).
    Header,
    /// The next read of the pass ([`JournalFollower::pass_reads`] lists them all).
    Read(DataRead),
    /// The next entry in playback order (the position has moved past it).
    Entry(PlayedEntry),
    /// Nothing more is written yet: wait for a notification or the poll interval.
    Wait,
}

/// Up to `len` bytes of a data object from `offset` (an absent object reads as empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRead {
    /// Data object number.
    pub object_number: u64,
    /// Its name, `journal_data.<pool id>.<image id>.<object number>`.
    pub object: String,
    /// Byte offset to read from.
    pub offset: u64,
    /// Bytes to read.
    pub len: usize,
}

/// Why following stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// Our journal client is not (or no longer) registered.
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
    /// A data object ends in the middle of an entry. librbd appends whole entries, one
    /// RADOS append each, so the object was cut short (truncated) after it was written.
    #[error(
        "{object}: truncated journal object: it ends in a partial entry at offset {offset} \
         ({bytes} bytes)"
    )]
    Truncated {
        /// Data object name.
        object: String,
        /// Offset of the partial entry.
        offset: u64,
        /// Its bytes in the object.
        bytes: usize,
    },
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

/// Bytes of one data object seen so far.
#[derive(Debug, Default)]
struct CachedObject {
    /// Complete entries not yet played, in object order, from the one at the planned
    /// position of the object's splay offset (kept: the player finds its place there).
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
    /// Every entry of the tags below this one is read: the last read was short and came
    /// after the header listed this tag (whose allocation ended every older tag's writes).
    tags_read_below: u64,
}

impl ObjectEntries for BTreeMap<u64, CachedObject> {
    fn entries(&self, object_number: u64) -> &[Entry] {
        self.get(&object_number).map_or(&[], |o| o.entries.as_slice())
    }
}

impl CachedObject {
    /// Whether reading again may find entries not seen yet.
    fn may_grow(&self) -> bool {
        self.more || !self.read_closed
    }
}

/// One look at the journal in progress.
#[derive(Debug)]
struct Pass {
    /// A pass made at once because the header lists a tag newer than the active one.
    for_newer_tag: bool,
    /// Objects still to read in this pass; `None` until the header is read.
    reads: Option<VecDeque<u64>>,
}

/// What a pass's plan found.
#[derive(Debug, Clone, Copy)]
struct Planned {
    /// Some object may hold bytes not read yet that the next pass would read.
    more: bool,
    /// Playback is stuck on the active tag while the header lists a newer one: the object
    /// it stopped on, read again, tells whether the active tag is over.
    newer_tag: bool,
}

/// A journal client's place in a live journal; see the module documentation.
#[derive(Debug)]
pub struct JournalFollower {
    image_id: String,
    client_id: String,
    header_object: String,
    /// Pool id embedded in data object names (the header's pool).
    header_pool_id: i64,
    header: JournalHeader,
    fetch_bytes: usize,
    /// Position after the last entry planned into `ready` (what playback continues from).
    planned: ObjectSetPosition,
    /// Position after the last entry handed out (starts at the commit position).
    position: ObjectSetPosition,
    objects: BTreeMap<u64, CachedObject>,
    ready: VecDeque<PlayedEntry>,
    /// The object playback stopped on at the last plan: reading it further is what lets
    /// playback go on.
    stuck_on: Option<u64>,
    pass: Option<Pass>,
}

impl JournalFollower {
    /// Follows the journal of `image_id` (header `header`, in the pool with id
    /// `header_pool_id`) for `client_id` from `position` (its commit position), reading
    /// `fetch_bytes` of a data object at a time.
    pub fn new(
        image_id: &str,
        client_id: &str,
        header_pool_id: i64,
        header: JournalHeader,
        position: ObjectSetPosition,
        fetch_bytes: usize,
    ) -> Self {
        JournalFollower {
            image_id: image_id.to_owned(),
            client_id: client_id.to_owned(),
            header_object: rbd_types::cls_journal::header_object_name(image_id),
            header_pool_id,
            header,
            fetch_bytes: fetch_bytes.max(4096),
            planned: position.clone(),
            position,
            objects: BTreeMap::new(),
            ready: VecDeque::new(),
            stuck_on: None,
            pass: None,
        }
    }

    /// The header as last read.
    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    /// The journal client this follower reads for.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The position after the last entry handed out.
    pub fn position(&self) -> &ObjectSetPosition {
        &self.position
    }

    /// What the follower needs next. After [`Want::Wait`], the next call starts a new look
    /// at the journal.
    pub fn want(&mut self) -> Result<Want, FollowError> {
        loop {
            let Some(pass) = &mut self.pass else {
                if let Some(e) = self.ready.pop_front() {
                    self.position.advance(e.position(), self.header.splay_width);
                    return Ok(Want::Entry(e));
                }
                self.pass = Some(Pass { for_newer_tag: false, reads: None });
                continue;
            };
            let Some(reads) = &pass.reads else {
                return Ok(Want::Header);
            };
            if let Some(&object_number) = reads.front() {
                return Ok(Want::Read(self.data_read(object_number)));
            }
            let for_newer_tag = pass.for_newer_tag;
            let planned = match self.plan() {
                Ok(p) => p,
                Err(e) => {
                    self.pass = None;
                    return Err(e);
                }
            };
            if !self.ready.is_empty() {
                self.pass = None;
            } else if planned.newer_tag && !for_newer_tag {
                // The writer moved to a newer tag, so every entry of the active tag is
                // written: read the object playback stopped on again, to its end, and the
                // active tag ends there if it has no more entries.
                self.pass = Some(Pass { for_newer_tag: true, reads: None });
            } else if planned.more {
                self.pass = Some(Pass { for_newer_tag, reads: None });
            } else {
                self.pass = None;
                return Ok(Want::Wait);
            }
        }
    }

    /// The header, read as [`Want::Header`] asked.
    pub fn header_read(&mut self, header: JournalHeader) -> Result<(), FollowError> {
        if !header.clients.contains_key(&self.client_id) {
            self.pass = None;
            return Err(FollowError::ClientNotRegistered {
                object: self.header_object.clone(),
                client_id: self.client_id.clone(),
            });
        }
        self.header = header;
        self.plan_reads();
        Ok(())
    }

    /// The answer to [`Want::Header`] when the header is taken as unchanged since it was last
    /// read (the live tail: no notification from its watch since, and the last pass found
    /// entries): the pass goes on with it. An older header is always safe, never wrong: the
    /// follower only takes from it what was true before its reads (the set that was active,
    /// the tags that existed), so it may wait for more bytes, but never skips any.
    pub fn header_unchanged(&mut self) {
        self.plan_reads();
    }

    /// The reads the current pass still needs, in the order [`Self::object_read`] takes
    /// them (the first is the one [`Want::Read`] names). None depends on another's bytes:
    /// they may run at once.
    pub fn pass_reads(&self) -> Vec<DataRead> {
        let reads = self.pass.as_ref().and_then(|p| p.reads.as_ref());
        reads.into_iter().flatten().map(|&n| self.data_read(n)).collect()
    }

    fn data_read(&self, object_number: u64) -> DataRead {
        DataRead {
            object_number,
            object: self.object_name(object_number),
            offset: self.objects.get(&object_number).map_or(0, |o| o.read),
            len: self.fetch_bytes,
        }
    }

    /// Lists the objects the pass reads, from the header: the sets that can hold entries
    /// after the planned position.
    fn plan_reads(&mut self) {
        if self.pass.is_none() {
            return;
        }
        let width = self.width();
        let first_set = self.first_set();
        self.objects.retain(|n, _| n / width >= first_set);
        let last_set = self.last_set(first_set);
        let reads = (first_set..=last_set)
            .flat_map(|set| set * width..(set + 1) * width)
            .filter(|&n| self.wants_read(n))
            .collect();
        if let Some(pass) = &mut self.pass {
            pass.reads = Some(reads);
        }
    }

    /// The bytes of a data object, read as [`Want::Read`] asked (empty if the object does
    /// not exist).
    pub fn object_read(&mut self, object_number: u64, bytes: Bytes) -> Result<(), FollowError> {
        if let Some(reads) = self.pass.as_mut().and_then(|p| p.reads.as_mut()) {
            if reads.front() == Some(&object_number) {
                reads.pop_front();
            }
        }
        let name = self.object_name(object_number);
        let closed = object_number / self.width() < self.header.active_set;
        let newest_tag = self.header.tags.keys().next_back().copied().unwrap_or(0);
        let chunk = self.fetch_bytes;
        let cached = self.objects.entry(object_number).or_default();
        cached.more = bytes.len() >= chunk;
        cached.read_closed = closed;
        cached.tags_read_below = if cached.more { 0 } else { newest_tag };
        if bytes.is_empty() {
            return self.check_end(object_number, name);
        }
        let got = bytes.len() as u64;
        let base = cached.read - cached.partial.len() as u64;
        cached.read += got;
        // The entry that straddles the two reads is joined from both (a copy of it alone);
        // the rest of the read is decoded where it lies, so entries stay slices of the read
        // buffer (which replay writes share with librados instead of copying).
        let (first, rest) = split_straddling(&cached.partial, bytes, base);
        let mut at = base;
        let mut left = Bytes::new();
        for piece in [first, rest] {
            // `left` is empty unless the joined entry was not whole (not expected).
            let piece = if left.is_empty() { piece } else { join(&left, &piece) };
            let decoded = match decode_object_at(&name, &piece, at) {
                Ok(d) => d,
                Err(e) => {
                    self.pass = None;
                    return Err(e.into());
                }
            };
            cached.entries.extend(decoded.entries);
            at += decoded.consumed as u64;
            left = piece.slice(decoded.consumed..);
        }
        cached.partial = left;
        self.check_end(object_number, name)
    }

    /// After a short read (the object's end): a partial entry left there, beyond padding,
    /// is a truncated object, never one still being written (appends are whole entries).
    fn check_end(&mut self, object_number: u64, object: String) -> Result<(), FollowError> {
        let Some(cached) = self.objects.get(&object_number) else { return Ok(()) };
        if cached.more || cached.partial.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let bytes = cached.partial.len();
        self.pass = None;
        Err(FollowError::Truncated { object, offset: cached.read - bytes as u64, bytes })
    }

    fn width(&self) -> u64 {
        u64::from(self.header.splay_width.max(1))
    }

    fn object_name(&self, object_number: u64) -> String {
        data_object_name(self.header_pool_id, &self.image_id, object_number)
    }

    /// The oldest object set that can still hold entries after the planned position.
    fn first_set(&self) -> u64 {
        let width = self.width();
        let from_position = self.planned.object_positions.iter().map(|p| p.object_number / width).min();
        from_position.unwrap_or(self.header.minimum_set).max(self.header.minimum_set)
    }

    /// The newest object set a pass reads: the one after `first_set` at most.
    fn last_set(&self, first_set: u64) -> u64 {
        self.header.active_set.min(first_set.saturating_add(1)).max(first_set)
    }

    /// Plans playback from the planned position over what is cached, queueing the entries
    /// found into `ready`.
    fn plan(&mut self) -> Result<Planned, FollowError> {
        let width = self.width();
        let active_set = self.header.active_set;
        let first_set = self.first_set();
        let last_set = self.last_set(first_set);
        // Objects that may hold more than was read, and the set after the last one read,
        // which playback must not take for empty.
        let mut incomplete: BTreeSet<u64> =
            self.objects.iter().filter(|(_, o)| o.may_grow()).map(|(n, _)| *n).collect();
        let tags_read_below: BTreeMap<u64, u64> =
            self.objects.iter().map(|(n, o)| (*n, o.tags_read_below)).collect();
        let beyond = last_set.saturating_add(1);
        incomplete.extend(beyond.saturating_mul(width)..beyond.saturating_add(1).saturating_mul(width));
        let playback = plan_playback_partial(
            self.header.splay_width,
            active_set,
            &self.planned,
            &self.objects,
            &incomplete,
            &tags_read_below,
        )
        .map_err(|source| FollowError::Player { object: self.header_object.clone(), source })?;
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
            position = ?self.planned.object_positions,
            "journal playback planned"
        );
        for played in playback.entries {
            self.planned.advance(played.position(), self.header.splay_width);
            self.ready.push_back(played);
        }
        self.stuck_on = match playback.end {
            PlaybackEnd::NoMoreEntries { object_number }
            | PlaybackEnd::TagSequenceIncomplete { object_number } => Some(object_number),
        };
        // The entries just planned are not needed again (once per pass: nothing else moves
        // the planned position).
        self.forget_played();
        // Worth another read now: an object the next pass would read that came back
        // full, or a closed set's object not yet read since it closed (objects of the active
        // set are waited for by polling).
        let more = (first_set..=last_set).any(|set| {
            (set * width..(set + 1) * width).any(|n| {
                self.wants_read(n)
                    && self.objects.get(&n).is_some_and(|o| o.more || (set < active_set && !o.read_closed))
            })
        });
        Ok(Planned { more, newer_tag })
    }

    /// Whether a pass reads the next chunk of `object_number`: the object playback stopped
    /// on, whose next bytes are what it waits for; an object with nothing left to play; and
    /// one that may grow (behind the writer, or in the active set) with less than half a
    /// read left, so that the objects of a set are read together, one pass for all. Each
    /// object read only once it ran dry, the objects of a set run dry at different entries:
    /// behind the writer, a backlog is read one object per pass (a quarter of the entries
    /// per round trip to the primary, which a busy primary's writer can outrun); level with
    /// it, an entry waits for about one pass per object of the set, as playback reaches
    /// each object's end in turn (benches/results/TUNING.md). Reading every object further
    /// instead would pull a whole backlog into memory.
    fn wants_read(&self, object_number: u64) -> bool {
        if self.stuck_on == Some(object_number) {
            return true;
        }
        let left = self.unplayed_bytes(object_number);
        let may_grow = self.objects.get(&object_number).is_some_and(CachedObject::may_grow);
        left == 0 || (may_grow && left < self.fetch_bytes / 2)
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

    /// Bytes of the cached entries of an object after the planned position of its splay
    /// offset: what is left to play there. Entries at or before it (the position's own, or
    /// committed entries read again after a restart) do not count, so such an object is
    /// read further.
    fn unplayed_bytes(&self, object_number: u64) -> usize {
        let Some(cached) = self.objects.get(&object_number) else {
            return 0;
        };
        let width = self.width();
        let position =
            self.planned.object_positions.iter().find(|p| p.object_number % width == object_number % width);
        let after = |e: &&Entry| match position {
            None => true,
            // Playback of this splay offset is past the object.
            Some(p) if p.object_number > object_number => false,
            Some(p) if p.object_number < object_number => true,
            Some(p) => (e.tag_tid, e.entry_tid) > (p.tag_tid, p.entry_tid),
        };
        cached.entries.iter().filter(after).map(Entry::encoded_len).sum()
    }
}

/// Splits a new read `bytes` after the cached `partial` (whose first byte lies `base` bytes
/// into the object) into what to decode first and the rest: the partial entry completed by
/// as many bytes of the read as it needs, then the read's remaining bytes as they are. When
/// the needed length is unknown, or the read does not complete the entry, everything is
/// joined (as one copy).
fn split_straddling(partial: &Bytes, bytes: Bytes, base: u64) -> (Bytes, Bytes) {
    if partial.is_empty() {
        return (bytes, Bytes::new());
    }
    // The partial entry usually holds its header; if not, enough of the read for any padding
    // and the header is looked at with it.
    let end = first_entry_end(partial, base).or_else(|| {
        let head = bytes.len().min(64);
        first_entry_end(&join(partial, &bytes.slice(..head)), base)
    });
    match end {
        Some(end) if end > partial.len() && end - partial.len() <= bytes.len() => {
            let take = end - partial.len();
            (join(partial, &bytes.slice(..take)), bytes.slice(take..))
        }
        _ => (join(partial, &bytes), Bytes::new()),
    }
}

fn join(a: &Bytes, b: &Bytes) -> Bytes {
    let mut joined = BytesMut::with_capacity(a.len() + b.len());
    joined.extend_from_slice(a);
    joined.extend_from_slice(b);
    joined.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{decode_object, encode_entry};

    fn follower(fetch_bytes: usize) -> JournalFollower {
        let mut header = JournalHeader { order: 24, splay_width: 1, pool_id: -1, ..Default::default() };
        let client = rbd_types::cls_journal::Client { id: "c".into(), ..Default::default() };
        header.clients.insert("c".into(), client);
        JournalFollower::new("id", "c", 2, header, ObjectSetPosition::default(), fetch_bytes)
    }

    #[test]
    fn an_object_that_ends_in_a_partial_entry_is_truncated() {
        let mut object = BytesMut::new();
        for tid in 0..3 {
            encode_entry(&mut object, 1, tid, &[7; 3000]);
        }
        let object = object.freeze();
        let cut = object.len() - 100;
        // Read whole at once (a short read: the object's end).
        let err = follower(1 << 20).object_read(0, object.slice(..cut)).unwrap_err();
        let FollowError::Truncated { offset, bytes, .. } = &err else { panic!("{err:?}") };
        assert_eq!((*offset as usize + bytes, *bytes), (cut, cut - 2 * (object.len() / 3)));
        assert!(err.to_string().contains("truncated journal object"), "{err}");
        // Read in chunks: the partial entry is only an error once a read comes back short.
        let mut f = follower(4096);
        assert!(f.object_read(0, object.slice(..4096)).is_ok(), "a full read may end inside an entry");
        assert!(f.object_read(0, object.slice(4096..8192)).is_ok(), "a full read may end inside an entry");
        assert!(
            f.object_read(0, object.slice(8192..cut)).is_err(),
            "the short read after them ends the object"
        );
        assert!(follower(1 << 20).object_read(0, object.clone()).is_ok(), "whole entries");
        // Padding zeros after the last entry are not an entry.
        let mut padded = BytesMut::from(&object[..]);
        padded.extend_from_slice(&[0; 4]);
        assert!(follower(1 << 20).object_read(0, padded.freeze()).is_ok());
    }

    #[test]
    fn only_the_straddling_entry_is_joined() {
        let mut object = BytesMut::new();
        for tid in 0..4 {
            encode_entry(&mut object, 1, tid, &[tid as u8 + 1; 300]);
        }
        let object = object.freeze();
        // The first read ends inside entry 1; the second read is the rest of the object.
        let cut = 450;
        let first = decode_object("o", &object.slice(..cut)).unwrap();
        let partial = object.slice(first.consumed..cut);
        let second = object.slice(cut..);
        let (joined, rest) = split_straddling(&partial, second.clone(), first.consumed as u64);
        let d = decode_object_at("o", &joined, first.consumed as u64).unwrap();
        assert_eq!((d.entries.len(), d.consumed), (1, joined.len()), "entry 1, whole");
        let r = decode_object_at("o", &rest, (first.consumed + joined.len()) as u64).unwrap();
        assert_eq!(r.entries.iter().map(|e| e.entry_tid).collect::<Vec<_>>(), [2, 3]);
        let in_second = second.as_ptr_range();
        assert!(r.entries.iter().all(|e| in_second.contains(&e.payload.as_ptr())), "slices of the read");
        // Too few bytes to finish the entry: everything is joined.
        let (all, none) = split_straddling(&partial, second.slice(..10), first.consumed as u64);
        assert_eq!((all.len(), none.len()), (partial.len() + 10, 0));
    }
}
