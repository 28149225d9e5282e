//! The order in which the journal player consumes entries (a pure planner).
//!
//! Reproduces the ordering rules of `journal::JournalPlayer` over a static
//! snapshot of data objects (verified against src/journal/JournalPlayer.cc,
//! Pacific; the live tail that refetches objects lives elsewhere):
//!
//! * Start: with a non-empty commit position, the active tag is the front
//!   position's tag tid, and each splay offset starts at the object named by
//!   its committed position (other offsets at object `offset`, i.e. set 0).
//!   Without one, every offset starts at set 0 and the first entry seen sets
//!   the active tag.
//! * In each starting object, entries up to and including the committed
//!   `(tag tid, entry tid)` of that splay offset are skipped (if it is not
//!   found, the whole object is skipped, as Ceph does).
//! * An empty object in a set older than the active set is replaced by the
//!   next object of the same splay offset (`object_number + splay_width`).
//! * Playback starts at the splay offset after the front commit position's
//!   (Ceph stays on the front's offset when that object goes on with a newer
//!   tag, which prunes the entries of the committed tag at the following
//!   offsets; we do not).
//! * Round-robin: after each entry the splay offset advances by one.
//! * Tags: entries older than the active tag are pruned; a newer tag becomes
//!   active only at its `entry_tid == 0` (the splay offset then restarts at
//!   0); when the current object runs dry the active tag is considered done
//!   and its remaining entries are pruned.
//! * Duplicate `(tag tid, entry tid)` pairs within an object (a retried
//!   append) replace the earlier copy in place (src/journal/ObjectPlayer.cc).
//! * Within a tag, entry tids must be consecutive, else playback fails
//!   ("missing prior journal entry", `-ENOMSG` in Ceph).
//!
//! Assumptions (UNVERIFIED against src/journal/JournalMetadata.cc):
//! `reserve_entry_tid` keeps the highest entry tid seen per tag, and
//! "last allocated" is that value.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::entry::Entry;
use rbd_types::cls_journal::{ObjectPosition, ObjectSetPosition};

/// One entry in playback order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayedEntry {
    /// Object the entry was read from.
    pub object_number: u64,
    /// The entry.
    pub entry: Entry,
}

impl PlayedEntry {
    /// The position to commit once this entry is applied.
    pub fn position(&self) -> ObjectPosition {
        ObjectPosition {
            object_number: self.object_number,
            tag_tid: self.entry.tag_tid,
            entry_tid: self.entry.entry_tid,
        }
    }
}

/// Why playback of the snapshot stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackEnd {
    /// No (further) replayable entries in the given objects; a live player
    /// would poll `object_number` again.
    NoMoreEntries {
        /// Object the player is positioned on.
        object_number: u64,
    },
    /// Entries of a newer tag exist but its first entry (`entry_tid == 0`)
    /// is not at the playback position; a live player would wait.
    TagSequenceIncomplete {
        /// Object the player is positioned on.
        object_number: u64,
    },
}

/// Playback failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerError {
    /// An entry tid was skipped within a tag.
    #[error(
        "missing prior journal entry in object {object_number}: tag tid {tag_tid}, \
         expected entry tid {expected}, found {found}"
    )]
    MissingPriorEntry {
        /// Object the out-of-sequence entry was read from.
        object_number: u64,
        /// Its tag tid.
        tag_tid: u64,
        /// The entry tid that should have come next.
        expected: u64,
        /// The entry tid found.
        found: u64,
    },
    /// Splay width 0 is invalid.
    #[error("invalid splay width 0")]
    InvalidSplayWidth,
}

/// Result of [`plan_playback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playback {
    /// Entries in the order the journal player hands them out.
    pub entries: Vec<PlayedEntry>,
    /// Why it stopped.
    pub end: PlaybackEnd,
    /// The active tag at the end, if any.
    pub active_tag_tid: Option<u64>,
}

/// The decoded entries of data objects, by object number, as the planner reads them (a
/// missing object has none): a map of entry vectors, or the live follower's cache as it is.
pub trait ObjectEntries: std::fmt::Debug {
    /// The entries of data object `object_number`, in object order.
    fn entries(&self, object_number: u64) -> &[Entry];
}

impl ObjectEntries for BTreeMap<u64, Vec<Entry>> {
    fn entries(&self, object_number: u64) -> &[Entry] {
        self.get(&object_number).map_or(&[], Vec::as_slice)
    }
}

#[derive(Debug)]
struct ObjectCursor {
    object_number: u64,
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
struct Planner<'a> {
    width: u64,
    active_set: u64,
    objects: &'a dyn ObjectEntries,
    /// Objects that may hold more entries than given (only partly read): never skipped
    /// as empty.
    incomplete: &'a BTreeSet<u64>,
    /// For objects in `incomplete`: every entry of the tags below the value has been read
    /// (the object was read to its end after a newer tag was allocated).
    tags_read_below: &'a BTreeMap<u64, u64>,
    players: Vec<ObjectCursor>,
    splay_offset: usize,
    active_tag: Option<u64>,
    prune_tag: Option<u64>,
    last_entry_tid: BTreeMap<u64, u64>,
    commit_positions: BTreeMap<usize, ObjectPosition>,
}

impl Planner<'_> {
    /// Loads an object's entries; a duplicate `(tag tid, entry tid)` (a
    /// retried append) replaces the earlier copy in place, as ObjectPlayer
    /// does.
    fn load(&self, object_number: u64) -> ObjectCursor {
        let mut entries: VecDeque<Entry> = VecDeque::new();
        let mut index: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for e in self.objects.entries(object_number) {
            let key = (e.tag_tid, e.entry_tid);
            match index.get(&key).and_then(|&i| entries.get_mut(i)) {
                Some(slot) => *slot = e.clone(),
                None => {
                    index.insert(key, entries.len());
                    entries.push_back(e.clone());
                }
            }
        }
        ObjectCursor { object_number, entries }
    }

    fn reserve(&mut self, tag_tid: u64, entry_tid: u64) {
        let e = self.last_entry_tid.entry(tag_tid).or_insert(entry_tid);
        *e = (*e).max(entry_tid);
    }

    /// Skips committed entries in the object at `k` (process_prefetch).
    fn skip_committed(&mut self, k: usize) {
        let Some(pos) = self.commit_positions.get(&k).copied() else {
            return;
        };
        let Some(player) = self.players.get_mut(k) else {
            return;
        };
        if player.entries.is_empty() {
            return;
        }
        let mut found = false;
        let mut reserved = Vec::new();
        while let Some(e) = player.entries.front() {
            if e.tag_tid == pos.tag_tid && e.entry_tid == pos.entry_tid {
                found = true;
            } else if found {
                break;
            }
            reserved.push((e.tag_tid, e.entry_tid));
            player.entries.pop_front();
        }
        for (t, e) in reserved {
            self.reserve(t, e);
        }
        if found {
            self.commit_positions.remove(&k);
        }
    }

    /// Replaces an empty object older than the active set by the next
    /// object of its splay offset. Returns whether it advanced.
    fn remove_empty(&mut self, k: usize) -> bool {
        let Some(player) = self.players.get(k) else {
            return false;
        };
        if !player.entries.is_empty()
            || player.object_number / self.width >= self.active_set
            || self.incomplete.contains(&player.object_number)
        {
            return false;
        }
        let next = player.object_number + self.width;
        let cursor = self.load(next);
        if let Some(slot) = self.players.get_mut(k) {
            *slot = cursor;
        }
        true
    }

    fn current(&self) -> Option<&ObjectCursor> {
        self.players.get(self.splay_offset)
    }

    fn current_object(&self) -> u64 {
        self.current().map_or(0, |p| p.object_number)
    }

    fn advance_splay(&mut self) {
        self.splay_offset = (self.splay_offset + 1) % self.players.len().max(1);
    }

    /// Prunes leading entries of `tag_tid` from every object; returns
    /// whether anything changed.
    fn prune(&mut self, tag_tid: u64) -> bool {
        if self.prune_tag.is_none_or(|p| p < tag_tid) {
            self.prune_tag = Some(tag_tid);
        }
        let mut changed = false;
        for p in &mut self.players {
            while p.entries.front().is_some_and(|e| e.tag_tid == tag_tid) {
                p.entries.pop_front();
                changed = true;
            }
        }
        for k in 0..self.players.len() {
            while self.remove_empty(k) {
                changed = true;
            }
        }
        changed
    }

    fn prune_active(&mut self, new_tag: Option<u64>) -> bool {
        let Some(old) = self.active_tag else {
            return false;
        };
        if new_tag.is_some() {
            self.active_tag = new_tag;
        }
        let moved = self.splay_offset != 0;
        self.splay_offset = 0;
        self.prune(old) || moved
    }

    /// `verify_playback_ready` for a non-watching player.
    fn ready(&mut self) -> Result<(), PlaybackEnd> {
        loop {
            let object_number = self.current_object();
            let front = self.current().and_then(|p| p.entries.front()).map(|e| (e.tag_tid, e.entry_tid));
            match (front, self.active_tag) {
                (Some((tag, _)), None) => {
                    self.active_tag = Some(tag);
                    return Ok(());
                }
                (Some((tag, _)), Some(active))
                    if tag < active || self.prune_tag.is_some_and(|p| tag <= p) =>
                {
                    self.prune(tag);
                }
                (Some((tag, entry_tid)), Some(active)) if tag > active => {
                    if entry_tid == 0 {
                        self.prune_active(Some(tag));
                        return Ok(());
                    }
                    if !self.prune_active(None) {
                        return Err(PlaybackEnd::TagSequenceIncomplete { object_number });
                    }
                }
                (Some(_), Some(_)) => return Ok(()),
                (None, None) => return Err(PlaybackEnd::NoMoreEntries { object_number }),
                (None, Some(active)) => {
                    // The active tag's next entry would be here. An object that may still
                    // grow is waited for, unless every entry of the active tag in it is read:
                    // then the tag is over.
                    let tag_over = !self.incomplete.contains(&object_number)
                        || self.tags_read_below.get(&object_number).is_some_and(|&b| b > active);
                    if !tag_over || self.prune_tag == Some(active) || !self.prune_active(None) {
                        return Err(PlaybackEnd::NoMoreEntries { object_number });
                    }
                }
            }
        }
    }
}

/// Plans playback of a journal snapshot.
///
/// `objects` maps object numbers to their decoded entries (in object order);
/// a missing object is treated as empty (not yet written or trimmed).
/// `active_set` is the header's active object set and `commit_position` the
/// journal client's commit position.
pub fn plan_playback(
    splay_width: u8,
    active_set: u64,
    commit_position: &ObjectSetPosition,
    objects: &dyn ObjectEntries,
) -> Result<Playback, PlayerError> {
    plan_playback_partial(
        splay_width,
        active_set,
        commit_position,
        objects,
        &BTreeSet::new(),
        &BTreeMap::new(),
    )
}

/// [`plan_playback`] over objects read only in part: an object listed in `incomplete` may
/// hold entries after those given, so running out of its entries stops playback there
/// (`NoMoreEntries`) instead of moving on to the next object set or ending the active tag, as
/// Ceph's player waits for an object's fetch to complete. `tags_read_below` says, for such an
/// object, that every entry of the tags below the value has been read: a caller knows it once
/// it read the object to its end after a newer tag was allocated (a tag's writer finished
/// before the next tag was allocated), and the active tag then ends where its next entry
/// would be in that object.
pub fn plan_playback_partial(
    splay_width: u8,
    active_set: u64,
    commit_position: &ObjectSetPosition,
    objects: &dyn ObjectEntries,
    incomplete: &BTreeSet<u64>,
    tags_read_below: &BTreeMap<u64, u64>,
) -> Result<Playback, PlayerError> {
    if splay_width == 0 {
        return Err(PlayerError::InvalidSplayWidth);
    }
    let width = u64::from(splay_width);
    let mut commit_positions = BTreeMap::new();
    for p in &commit_position.object_positions {
        // p.object_number % width < 256, so the cast is lossless.
        commit_positions.insert((p.object_number % width) as usize, *p);
    }
    let front = commit_position.front().copied();
    let mut pl = Planner {
        width,
        active_set,
        objects,
        incomplete,
        tags_read_below,
        players: Vec::new(),
        splay_offset: front.map_or(0, |f| (f.object_number % width) as usize),
        active_tag: front.map(|f| f.tag_tid),
        prune_tag: None,
        last_entry_tid: BTreeMap::new(),
        commit_positions,
    };
    // Prefetch: one object per splay offset.
    for k in 0..usize::from(splay_width) {
        let start = pl.commit_positions.get(&k).map_or(k as u64, |p| p.object_number);
        let cursor = pl.load(start);
        pl.players.push(cursor);
        loop {
            pl.skip_committed(k);
            if !pl.remove_empty(k) {
                break;
            }
        }
    }
    // A commit position not found yet in an object that may hold more: the entries up to it
    // are not all read, and playing on would take the entries after it for missing ones.
    // Wait for that object (a reopened tail reads objects from their start).
    if let Some(p) = pl.commit_positions.values().find(|p| incomplete.contains(&p.object_number)) {
        return Ok(Playback {
            entries: Vec::new(),
            end: PlaybackEnd::NoMoreEntries { object_number: p.object_number },
            active_tag_tid: pl.active_tag,
        });
    }
    // The entry after the front commit position is at the next splay offset (round-robin).
    // Ceph's prefetch stays on the front's offset when its object goes on with a newer
    // tag; that is wrong when the active tag still has entries at the following offsets
    // (they would be pruned as the newer tag takes over), so playback always moves on.
    if front.is_some() {
        pl.advance_splay();
    }

    let mut out = Vec::new();
    let end = loop {
        if let Err(end) = pl.ready() {
            break end;
        }
        let k = pl.splay_offset;
        let Some(player) = pl.players.get_mut(k) else {
            break PlaybackEnd::NoMoreEntries { object_number: 0 };
        };
        let object_number = player.object_number;
        let Some(entry) = player.entries.pop_front() else {
            break PlaybackEnd::NoMoreEntries { object_number };
        };
        if let Some(&last) = pl.last_entry_tid.get(&entry.tag_tid) {
            if last.checked_add(1) != Some(entry.entry_tid) {
                return Err(PlayerError::MissingPriorEntry {
                    object_number,
                    tag_tid: entry.tag_tid,
                    expected: last.wrapping_add(1),
                    found: entry.entry_tid,
                });
            }
        }
        pl.advance_splay();
        pl.remove_empty(k);
        pl.reserve(entry.tag_tid, entry.entry_tid);
        out.push(PlayedEntry { object_number, entry });
    };
    Ok(Playback { entries: out, end, active_tag_tid: pl.active_tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(tag: u64, tid: u64) -> Entry {
        Entry { entry_tid: tid, tag_tid: tag, payload: Bytes::new(), offset: 0 }
    }

    /// Lays out `n` entries of `tag` the way the recorder does:
    /// object = set * W + entry_tid % W, `per_object` entries per object.
    fn layout(w: u64, tag: u64, n: u64, per_object: u64) -> BTreeMap<u64, Vec<Entry>> {
        let mut m: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        for tid in 0..n {
            let set = tid / (w * per_object);
            let obj = set * w + tid % w;
            m.entry(obj).or_default().push(e(tag, tid));
        }
        m
    }

    fn tids(p: &Playback) -> Vec<(u64, u64, u64)> {
        p.entries.iter().map(|x| (x.object_number, x.entry.tag_tid, x.entry.entry_tid)).collect()
    }

    #[test]
    fn a_partly_read_object_is_not_skipped() {
        // Set 0 holds tids 0..4 (two per object), set 1 tids 4..8; only the first entry of
        // object 1 has been read so far.
        let mut objs = layout(2, 1, 8, 2);
        objs.get_mut(&1).expect("object 1").truncate(1);
        let incomplete = BTreeSet::from([1]);
        let p =
            plan_playback_partial(2, 1, &ObjectSetPosition::default(), &objs, &incomplete, &BTreeMap::new())
                .unwrap();
        let got: Vec<u64> = p.entries.iter().map(|x| x.entry.entry_tid).collect();
        assert_eq!(got, vec![0, 1, 2], "stops where object 1 needs more bytes");
        assert!(matches!(p.end, PlaybackEnd::NoMoreEntries { .. }), "{:?}", p.end);
        // Treated as complete, the same object would wrongly be skipped into set 1.
        let p = plan_playback(2, 1, &ObjectSetPosition::default(), &objs).unwrap_err();
        assert!(matches!(p, PlayerError::MissingPriorEntry { .. }), "{p:?}");
    }

    #[test]
    fn a_commit_position_not_read_yet_holds_playback() {
        // Splay width 2, one set of four entries per object: tids 0..8. Committed up to
        // tid 4 (object 0, the newest position) and tid 3 (object 1); object 0 is read only
        // up to tid 2, object 1 to its end (a reopened tail reads objects from their start, a
        // chunk at a time).
        let mut objs = layout(2, 1, 8, 4);
        objs.get_mut(&0).expect("object 0").truncate(2);
        let commit = ObjectSetPosition {
            object_positions: vec![
                ObjectPosition { object_number: 0, tag_tid: 1, entry_tid: 4 },
                ObjectPosition { object_number: 1, tag_tid: 1, entry_tid: 3 },
            ],
        };
        let incomplete = BTreeSet::from([0]);
        let p = plan_playback_partial(2, 0, &commit, &objs, &incomplete, &BTreeMap::new()).unwrap();
        assert!(p.entries.is_empty(), "{:?}", tids(&p));
        assert_eq!(p.end, PlaybackEnd::NoMoreEntries { object_number: 0 });
        // Once object 0 is read past its position, playback resumes after tid 4.
        let objs = layout(2, 1, 8, 4);
        let p = plan_playback_partial(2, 0, &commit, &objs, &BTreeSet::new(), &BTreeMap::new()).unwrap();
        assert_eq!(tids(&p), vec![(1, 1, 5), (0, 1, 6), (1, 1, 7)]);
    }

    #[test]
    fn a_partly_read_object_holds_back_a_tag_switch() {
        // Tag 1 ends with tid 2 in object 0 and tid 3 in object 1; tag 2 starts at tid 0 in
        // object 0. Object 1 has been read only up to its tag-1 entry before tid 3.
        let mut objs: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        objs.insert(0, vec![e(1, 0), e(1, 2), e(2, 0)]);
        objs.insert(1, vec![e(1, 1)]);
        let incomplete = BTreeSet::from([1]);
        let p =
            plan_playback_partial(2, 0, &ObjectSetPosition::default(), &objs, &incomplete, &BTreeMap::new())
                .unwrap();
        let got: Vec<(u64, u64)> = p.entries.iter().map(|x| (x.entry.tag_tid, x.entry.entry_tid)).collect();
        assert_eq!(got, vec![(1, 0), (1, 1), (1, 2)], "waits for tag 1's tid 3 instead of switching");
        objs.get_mut(&1).expect("object 1").extend([e(1, 3), e(2, 1)]);
        let p = plan_playback_partial(
            2,
            0,
            &ObjectSetPosition::default(),
            &objs,
            &BTreeSet::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        let got: Vec<(u64, u64)> = p.entries.iter().map(|x| (x.entry.tag_tid, x.entry.entry_tid)).collect();
        assert_eq!(got, vec![(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1)]);
        // Tag 1 ended with tid 2; object 1, still growing (active set), was read to its end
        // after tag 2 was allocated: tag 1 ends where its tid 3 would be, and tag 2 is
        // followed as far as it is read.
        let mut objs: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        objs.insert(0, vec![e(1, 0), e(1, 2), e(2, 0)]);
        objs.insert(1, vec![e(1, 1)]);
        let incomplete = BTreeSet::from([0, 1]);
        let p =
            plan_playback_partial(2, 0, &ObjectSetPosition::default(), &objs, &incomplete, &BTreeMap::new())
                .unwrap();
        assert_eq!(tids(&p).len(), 3, "without knowing tag 1 is over, playback waits: {:?}", tids(&p));
        let read_below = BTreeMap::from([(0, 2), (1, 2)]);
        let p = plan_playback_partial(2, 0, &ObjectSetPosition::default(), &objs, &incomplete, &read_below)
            .unwrap();
        let got: Vec<(u64, u64)> = p.entries.iter().map(|x| (x.entry.tag_tid, x.entry.entry_tid)).collect();
        assert_eq!(got, vec![(1, 0), (1, 1), (1, 2), (2, 0)]);
        assert_eq!(p.end, PlaybackEnd::NoMoreEntries { object_number: 1 });
    }

    #[test]
    fn round_robin_from_scratch_across_sets() {
        let objs = layout(4, 1, 20, 2);
        let p = plan_playback(4, 2, &ObjectSetPosition::default(), &objs).unwrap();
        let got: Vec<u64> = p.entries.iter().map(|x| x.entry.entry_tid).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(p.entries[9].object_number, 5);
        assert_eq!(p.active_tag_tid, Some(1));
        assert!(matches!(p.end, PlaybackEnd::NoMoreEntries { .. }));
    }

    #[test]
    fn resumes_after_commit_position() {
        let objs = layout(4, 1, 20, 2);
        // committed through entry 10 (object 6); per-offset positions.
        let mut cp = ObjectSetPosition::default();
        for tid in 7..=10u64 {
            cp.advance(
                ObjectPosition { object_number: (tid / 8) * 4 + tid % 4, tag_tid: 1, entry_tid: tid },
                4,
            );
        }
        let p = plan_playback(4, 2, &cp, &objs).unwrap();
        let got: Vec<u64> = p.entries.iter().map(|x| x.entry.entry_tid).collect();
        assert_eq!(got, (11..20).collect::<Vec<_>>());
    }

    #[test]
    fn new_tag_starts_at_entry_zero_and_old_tag_is_pruned() {
        let mut objs: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        // tag 1: entries 0..3 on objects 0,1; tag 2 starts after.
        objs.insert(0, vec![e(1, 0), e(1, 2), e(2, 0)]);
        objs.insert(1, vec![e(1, 1), e(2, 1)]);
        let p = plan_playback(2, 0, &ObjectSetPosition::default(), &objs).unwrap();
        assert_eq!(tids(&p), vec![(0, 1, 0), (1, 1, 1), (0, 1, 2), (0, 2, 0), (1, 2, 1)]);
        assert_eq!(p.active_tag_tid, Some(2));
    }

    #[test]
    fn gap_is_an_error() {
        let mut objs: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        objs.insert(0, vec![e(1, 0), e(1, 3)]);
        objs.insert(1, vec![e(1, 1)]);
        let err = plan_playback(2, 0, &ObjectSetPosition::default(), &objs).unwrap_err();
        assert_eq!(
            err,
            PlayerError::MissingPriorEntry { object_number: 0, tag_tid: 1, expected: 2, found: 3 }
        );
    }

    #[test]
    fn newer_tag_without_start_waits() {
        let mut objs: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        objs.insert(0, vec![e(2, 1)]);
        let cp = ObjectSetPosition {
            object_positions: vec![ObjectPosition { object_number: 1, tag_tid: 1, entry_tid: 0 }],
        };
        let p = plan_playback(2, 0, &cp, &objs).unwrap();
        assert!(p.entries.is_empty());
        assert!(matches!(
            p.end,
            PlaybackEnd::TagSequenceIncomplete { .. } | PlaybackEnd::NoMoreEntries { .. }
        ));
    }

    #[test]
    fn duplicates_replace_in_place() {
        let mut objs: BTreeMap<u64, Vec<Entry>> = BTreeMap::new();
        let mut dup = e(1, 0);
        dup.offset = 99;
        objs.insert(0, vec![e(1, 0), e(1, 1), dup]);
        let p = plan_playback(1, 0, &ObjectSetPosition::default(), &objs).unwrap();
        assert_eq!(tids(&p), vec![(0, 1, 0), (0, 1, 1)]);
        assert_eq!(p.entries[0].entry.offset, 99);
    }

    #[test]
    fn zero_splay_width_is_rejected() {
        assert_eq!(
            plan_playback(0, 0, &ObjectSetPosition::default(), &BTreeMap::<u64, Vec<Entry>>::new()),
            Err(PlayerError::InvalidSplayWidth)
        );
    }
}
