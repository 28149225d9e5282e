//! The durable prefix of journal replay, as bookkeeping with no I/O.
//!
//! **Invariant:** the commit position never passes a journal entry whose effects are not
//! durable, nor one with an earlier entry whose effects are not. Replay hands entries out in
//! journal order ([`CommitTracker::push_entry`]); IO entries are applied in windows of
//! consecutive entries whose object operations complete in any order
//! ([`CommitTracker::submit_window`], [`CommitTracker::object_op_done`]); other entries are
//! applied inline, one at a time ([`CommitTracker::entry_done`]). A window's entries are done
//! when its last object operation completes; an operation that failed
//! ([`CommitTracker::object_op_failed`]) leaves its window outstanding for good, so neither
//! its entries nor any later one is ever committed. The committable position is the
//! journal's object set position after the longest prefix of done entries
//! (`ObjectSetPosition::advance`, one position per splay object); `JournalReplayer` writes
//! it to the primary's journal with `journal.client_commit` when it has moved.
//!
//! Property tests below check the invariant under random windows, completion orders and
//! failures against a model that recomputes the prefix from scratch.

use std::collections::{HashMap, VecDeque};

use rbd_types::cls_journal::{ObjectPosition, ObjectSetPosition};

/// A submitted window.
#[derive(Debug)]
struct Window {
    /// Its entries: `first_seq..end_seq`.
    first_seq: u64,
    end_seq: u64,
    /// Object operations not completed yet.
    outstanding: usize,
    /// Payload bytes its operations write.
    bytes: u64,
    /// An operation failed: the window never completes.
    failed: bool,
}

/// What a completion made durable: entries that joined the committable prefix and the bytes
/// of windows that completed (for counters and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Entries newly within the committable prefix.
    pub(crate) entries: u64,
    /// Bytes of the windows that completed.
    pub(crate) bytes: u64,
    /// Entries of the window that completed (for the replay latency).
    pub(crate) window_entries: u64,
}

/// Entries handed out, windows in flight, and the committable position.
#[derive(Debug)]
pub(crate) struct CommitTracker {
    /// Entries handed out and not yet within the prefix, in journal order: their position
    /// and whether their effects are durable. The first has sequence number `first_seq`.
    entries: VecDeque<(ObjectPosition, bool)>,
    first_seq: u64,
    windows: HashMap<u64, Window>,
    next_window: u64,
    committable: ObjectSetPosition,
    uncommitted: bool,
}

impl CommitTracker {
    /// Starts at `committed`, the client's commit position on the primary's journal.
    pub(crate) fn new(committed: ObjectSetPosition) -> Self {
        CommitTracker {
            entries: VecDeque::new(),
            first_seq: 0,
            windows: HashMap::new(),
            next_window: 0,
            committable: committed,
            uncommitted: false,
        }
    }

    /// The sequence number the next entry handed out gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    /// Hands out the next entry (at `position` in the journal); returns its sequence number.
    pub(crate) fn push_entry(&mut self, position: ObjectPosition) -> u64 {
        let seq = self.next_seq();
        self.entries.push_back((position, false));
        seq
    }

    /// Submits a window of entries `first_seq..end_seq` (handed out already) applied by
    /// `object_ops` object operations writing `bytes`; returns its id. A window with no
    /// operation is done at once.
    pub(crate) fn submit_window(
        &mut self,
        first_seq: u64,
        end_seq: u64,
        object_ops: usize,
        bytes: u64,
        splay_width: u8,
    ) -> (u64, Durable) {
        let id = self.next_window;
        self.next_window += 1;
        let window = Window { first_seq, end_seq, outstanding: object_ops, bytes, failed: false };
        if object_ops == 0 {
            return (id, self.window_done(&window, splay_width));
        }
        self.windows.insert(id, window);
        (id, Durable::default())
    }

    /// One object operation of window `window` completed; when it was the window's last, its
    /// entries are done.
    pub(crate) fn object_op_done(&mut self, window: u64, splay_width: u8) -> Durable {
        let Some(w) = self.windows.get_mut(&window) else {
            return Durable::default();
        };
        w.outstanding = w.outstanding.saturating_sub(1);
        if w.outstanding > 0 || w.failed {
            return Durable::default();
        }
        match self.windows.remove(&window) {
            Some(w) => self.window_done(&w, splay_width),
            None => Durable::default(),
        }
    }

    /// One object operation of window `window` failed: the window never completes, so the
    /// prefix stops before its first entry for good.
    pub(crate) fn object_op_failed(&mut self, window: u64) {
        if let Some(w) = self.windows.get_mut(&window) {
            w.failed = true;
        }
    }

    /// Entry `seq`, applied inline, is durable.
    pub(crate) fn entry_done(&mut self, seq: u64, splay_width: u8) -> Durable {
        self.mark(seq);
        Durable { entries: self.advance(splay_width), bytes: 0, window_entries: 0 }
    }

    /// Windows submitted and not completed (a failed one stays).
    pub(crate) fn windows_in_flight(&self) -> usize {
        self.windows.len()
    }

    /// The position after the durable prefix.
    pub(crate) fn committable(&self) -> &ObjectSetPosition {
        &self.committable
    }

    /// The committable position when it moved since the last [`Self::committed`].
    pub(crate) fn uncommitted(&self) -> Option<&ObjectSetPosition> {
        self.uncommitted.then_some(&self.committable)
    }

    /// The committable position was written to the journal.
    pub(crate) fn committed(&mut self) {
        self.uncommitted = false;
    }

    fn window_done(&mut self, w: &Window, splay_width: u8) -> Durable {
        for seq in w.first_seq..w.end_seq {
            self.mark(seq);
        }
        Durable {
            entries: self.advance(splay_width),
            bytes: w.bytes,
            window_entries: w.end_seq - w.first_seq,
        }
    }

    fn mark(&mut self, seq: u64) {
        // Sequence numbers are consecutive from `first_seq`: the slot is found by offset.
        let slot = seq.checked_sub(self.first_seq).and_then(|i| usize::try_from(i).ok());
        if let Some(entry) = slot.and_then(|i| self.entries.get_mut(i)) {
            entry.1 = true;
        }
    }

    /// Moves the committable position over the done entries at the front.
    fn advance(&mut self, splay_width: u8) -> u64 {
        let mut n = 0;
        while let Some(&(position, true)) = self.entries.front() {
            self.entries.pop_front();
            self.first_seq += 1;
            self.committable.advance(position, splay_width);
            n += 1;
        }
        if n > 0 {
            self.uncommitted = true;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SPLAY: u8 = 4;

    fn pos(entry_tid: u64) -> ObjectPosition {
        ObjectPosition { object_number: entry_tid % u64::from(SPLAY), tag_tid: 1, entry_tid }
    }

    /// The entry tid of the last entry of the prefix (the front of the object set position).
    fn last_committed(t: &CommitTracker) -> Option<u64> {
        t.committable().front().map(|p| p.entry_tid)
    }

    fn push(t: &mut CommitTracker, n: u64) -> (u64, u64) {
        let first = t.next_seq();
        for _ in 0..n {
            let seq = t.next_seq();
            t.push_entry(pos(seq));
        }
        (first, t.next_seq())
    }

    #[test]
    fn windows_complete_out_of_order_and_commit_in_order() {
        let mut t = CommitTracker::new(ObjectSetPosition::default());
        let (a0, a1) = push(&mut t, 3);
        let (w1, d) = t.submit_window(a0, a1, 2, 300, SPLAY);
        assert_eq!(d, Durable::default());
        let (b0, b1) = push(&mut t, 2);
        let (w2, _) = t.submit_window(b0, b1, 1, 200, SPLAY);
        // The later window completes first: nothing is committable yet.
        assert_eq!(t.object_op_done(w2, SPLAY), Durable { entries: 0, bytes: 200, window_entries: 2 });
        assert!(t.uncommitted().is_none());
        assert_eq!(t.object_op_done(w1, SPLAY), Durable::default());
        assert_eq!(t.object_op_done(w1, SPLAY), Durable { entries: 5, bytes: 300, window_entries: 3 });
        assert_eq!(last_committed(&t), Some(4));
        assert!(t.uncommitted().is_some());
        t.committed();
        assert!(t.uncommitted().is_none());
        assert_eq!(t.windows_in_flight(), 0);
    }

    #[test]
    fn inline_entries_between_windows_and_empty_windows() {
        let mut t = CommitTracker::new(ObjectSetPosition::default());
        let (a0, a1) = push(&mut t, 2);
        let (w, _) = t.submit_window(a0, a1, 1, 10, SPLAY);
        let inline = t.push_entry(pos(2));
        // The inline entry is durable before the window: it waits for it.
        assert_eq!(t.entry_done(inline, SPLAY).entries, 0);
        assert_eq!(t.object_op_done(w, SPLAY).entries, 3);
        let (e0, e1) = push(&mut t, 2);
        let (_, d) = t.submit_window(e0, e1, 0, 0, SPLAY);
        assert_eq!(d.entries, 2);
        assert_eq!(last_committed(&t), Some(4));
    }

    #[test]
    fn a_failed_operation_blocks_the_prefix_for_good() {
        let mut t = CommitTracker::new(ObjectSetPosition::default());
        let (a0, a1) = push(&mut t, 2);
        let (w1, _) = t.submit_window(a0, a1, 1, 0, SPLAY);
        let (b0, b1) = push(&mut t, 2);
        let (w2, _) = t.submit_window(b0, b1, 2, 0, SPLAY);
        assert_eq!(t.object_op_done(w1, SPLAY).entries, 2);
        t.object_op_failed(w2);
        assert_eq!(t.object_op_done(w2, SPLAY).entries, 0);
        let later = t.push_entry(pos(4));
        assert_eq!(t.entry_done(later, SPLAY).entries, 0);
        assert_eq!(last_committed(&t), Some(1));
        assert_eq!(t.windows_in_flight(), 1);
    }

    #[test]
    fn starts_from_the_committed_position() {
        let mut start = ObjectSetPosition::default();
        start.advance(ObjectPosition { object_number: 1, tag_tid: 1, entry_tid: 41 }, SPLAY);
        let mut t = CommitTracker::new(start.clone());
        assert_eq!(t.committable(), &start);
        assert!(t.uncommitted().is_none());
        let seq = t.push_entry(ObjectPosition { object_number: 2, tag_tid: 1, entry_tid: 42 });
        t.entry_done(seq, SPLAY);
        assert_eq!(last_committed(&t), Some(42));
    }

    /// One unit of replay: a window of `entries` entries applied by `ops` object operations
    /// (some of which fail), or one inline entry.
    #[derive(Debug, Clone)]
    enum Unit {
        Window { entries: u64, ops: Vec<bool> },
        Inline,
    }

    fn unit() -> impl Strategy<Value = Unit> {
        prop_oneof![
            3 => (1u64..6, proptest::collection::vec(proptest::bool::weighted(0.05), 0..4))
                .prop_map(|(entries, ops)| Unit::Window { entries, ops }),
            1 => Just(Unit::Inline),
        ]
    }

    /// A completion to deliver: (unit index, operation index) or the inline entry.
    #[derive(Debug, Clone, Copy)]
    enum Completion {
        Op { unit: usize, op: usize },
        Inline { unit: usize },
    }

    /// A small deterministic generator (xorshift), seeded by proptest.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    proptest! {
        #[test]
        fn never_commits_past_what_is_durable(
            units in proptest::collection::vec(unit(), 1..30),
            seed in any::<u64>(),
            splay in 1u8..5,
        ) {
            let mut rng = Rng(seed | 1);
            let mut t = CommitTracker::new(ObjectSetPosition::default());
            let mut ranges = Vec::new();
            let mut window_ids: Vec<Option<u64>> = Vec::new();
            let mut pending: Vec<Completion> = Vec::new();
            let mut done_entries: Vec<bool> = Vec::new();
            let mut remaining: Vec<usize> = Vec::new();
            let mut failed = vec![false; units.len()];
            let mut last = last_committed(&t);
            // Entries are handed out in journal order, each unit's completions joining the
            // pending ones; between two units, and after the last, a random number of
            // pending completions is delivered in a random order.
            for i in 0..=units.len() {
                let deliver = if i == units.len() { pending.len() } else { rng.below(pending.len() + 1) };
                for _ in 0..deliver {
                    let c = pending.swap_remove(rng.below(pending.len()));
                    match c {
                        Completion::Op { unit, op } => {
                            let Unit::Window { ops, .. } = &units[unit] else { unreachable!() };
                            let id = window_ids[unit].expect("a window");
                            if ops[op] {
                                failed[unit] = true;
                                t.object_op_failed(id);
                            } else {
                                t.object_op_done(id, splay);
                            }
                            remaining[unit] -= 1;
                            if remaining[unit] == 0 && !failed[unit] {
                                let (first, end) = ranges[unit];
                                for s in first..end {
                                    done_entries[s as usize] = true;
                                }
                            }
                        }
                        Completion::Inline { unit } => {
                            let (seq, _) = ranges[unit];
                            t.entry_done(seq, splay);
                            done_entries[seq as usize] = true;
                        }
                    }
                    // Model: the prefix of durable entries, recomputed from scratch.
                    let prefix = done_entries.iter().take_while(|d| **d).count() as u64;
                    let now = last_committed(&t);
                    prop_assert_eq!(now, prefix.checked_sub(1), "committable prefix");
                    prop_assert!(now >= last, "the commit position moved backwards");
                    last = now;
                }
                let Some(u) = units.get(i) else { break };
                match u {
                    Unit::Window { entries, ops } => {
                        let (first, end) = push(&mut t, *entries);
                        let (id, _) = t.submit_window(first, end, ops.len(), 0, splay);
                        ranges.push((first, end));
                        window_ids.push(Some(id));
                        remaining.push(ops.len());
                        done_entries.extend(std::iter::repeat_n(ops.is_empty(), *entries as usize));
                        pending.extend((0..ops.len()).map(|op| Completion::Op { unit: i, op }));
                    }
                    Unit::Inline => {
                        let seq = t.push_entry(pos(t.next_seq()));
                        ranges.push((seq, seq + 1));
                        window_ids.push(None);
                        remaining.push(1);
                        done_entries.push(false);
                        pending.push(Completion::Inline { unit: i });
                    }
                }
                let prefix = done_entries.iter().take_while(|d| **d).count() as u64;
                prop_assert_eq!(last_committed(&t), prefix.checked_sub(1), "after handing out unit {}", i);
            }
            // Everything not blocked by a failure is durable: the prefix ends just before
            // the first failed window's first entry, or at the last entry.
            let first_failed = (0..units.len()).find(|&u| failed[u]).map(|u| ranges[u].0);
            let end = first_failed.unwrap_or(done_entries.len() as u64);
            prop_assert_eq!(last_committed(&t), end.checked_sub(1));
        }
    }
}
