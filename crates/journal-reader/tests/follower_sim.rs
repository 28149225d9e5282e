//! The journal follower against a journal written while it reads, in memory.
//!
//! A simulated librbd writer appends entries of successive tags to the splay objects of the
//! active object set, with appends to different objects landing out of order (as the
//! `journal::` recorder sends them in parallel), every entry of a tag on disk before the next
//! tag is allocated, and the active set advancing when an object fills. The follower reads a
//! chunk at a time, the writer going on between its reads. Whatever the interleaving, the
//! follower must hand out every entry exactly once, in write order, and never stall once
//! everything is written; a follower restarted at a position it reached must hand out the
//! rest.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use journal_reader::entry::encode_entry;
use journal_reader::follower::{JournalFollower, Want};
use proptest::prelude::*;
use rbd_types::cls_journal::{Client, JournalHeader, ObjectSetPosition, Tag};

const CLIENT: &str = "mirror-peer";

/// xorshift64*: the interleaving comes from the proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The writer's plan: entries `(tag tid, payload length)` in write order.
type Script = VecDeque<(u64, usize)>;

/// Appends sent to one object, not yet on disk: `((tag tid, entry tid), bytes)`.
type Appends = VecDeque<((u64, u64), Bytes)>;

struct Writer {
    rng: Rng,
    width: u64,
    /// Bytes after which an object counts as full and the active set advances.
    object_cap: usize,
    header: JournalHeader,
    objects: BTreeMap<u64, BytesMut>,
    /// Entries sent to an object but not yet on disk.
    in_flight: BTreeMap<u64, Appends>,
    script: Script,
    next_entry_tid: BTreeMap<u64, u64>,
    /// `(tag tid, entry tid)` of every entry sent, in order.
    sent: Vec<(u64, u64)>,
}

impl Writer {
    fn new(seed: u64, width: u8, object_cap: usize, script: Script) -> Self {
        let mut header = JournalHeader { order: 24, splay_width: width, pool_id: -1, ..Default::default() };
        header.clients.insert(CLIENT.into(), Client { id: CLIENT.into(), ..Default::default() });
        Writer {
            rng: Rng(seed | 1),
            width: u64::from(width),
            object_cap,
            header,
            objects: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            script,
            next_entry_tid: BTreeMap::new(),
            sent: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.script.is_empty() && self.in_flight.values().all(Appends::is_empty)
    }

    /// Lands every append in flight.
    fn flush(&mut self) {
        for (n, q) in &mut self.in_flight {
            let object = self.objects.entry(*n).or_default();
            for (_, b) in q.drain(..) {
                object.extend_from_slice(&b);
            }
        }
    }

    /// One step: send the next entry, or land one append in flight.
    fn step(&mut self) {
        let landing = self.in_flight.iter().filter(|(_, q)| !q.is_empty()).count() as u64;
        if landing > 0 && (self.script.is_empty() || self.rng.below(2) == 0) {
            let pick = self.rng.below(landing) as usize;
            let Some((&n, _)) = self.in_flight.iter().filter(|(_, q)| !q.is_empty()).nth(pick) else {
                return;
            };
            if let Some((_, b)) = self.in_flight.get_mut(&n).and_then(VecDeque::pop_front) {
                self.objects.entry(n).or_default().extend_from_slice(&b);
            }
            return;
        }
        let Some((tag, len)) = self.script.pop_front() else {
            return;
        };
        if !self.header.tags.contains_key(&tag) {
            // A new tag is allocated only after the previous owner's appends are all on disk.
            self.flush();
            self.header.tags.insert(tag, Tag { tid: tag, ..Default::default() });
        }
        let entry_tid = *self.next_entry_tid.entry(tag).or_default();
        self.next_entry_tid.insert(tag, entry_tid + 1);
        let mut object_number = self.header.active_set * self.width + entry_tid % self.width;
        let size = |w: &Writer, n: u64| {
            w.objects.get(&n).map_or(0, |o| o.len())
                + w.in_flight.get(&n).map_or(0, |q| q.iter().map(|(_, b)| b.len()).sum())
        };
        if size(self, object_number) >= self.object_cap {
            // The object is full: the set is closed once its appends land, then the next
            // set becomes active.
            self.flush();
            self.header.active_set += 1;
            object_number = self.header.active_set * self.width + entry_tid % self.width;
        }
        let payload = vec![(entry_tid % 251) as u8; len];
        let mut buf = BytesMut::new();
        encode_entry(&mut buf, tag, entry_tid, &payload);
        self.in_flight.entry(object_number).or_default().push_back(((tag, entry_tid), buf.freeze()));
        self.sent.push((tag, entry_tid));
    }

    /// Entries sent whose appends, and those of every entry sent before them, are on disk:
    /// what a follower that read every object now could hand out.
    fn landed_prefix(&self) -> usize {
        let in_flight: std::collections::BTreeSet<(u64, u64)> =
            self.in_flight.values().flatten().map(|(id, _)| *id).collect();
        self.sent.iter().take_while(|id| !in_flight.contains(id)).count()
    }

    fn steps(&mut self, max: u64) {
        for _ in 0..self.rng.below(max + 1) {
            self.step();
        }
    }

    fn read(&self, object_number: u64, offset: u64, len: usize) -> Bytes {
        let Some(o) = self.objects.get(&object_number) else {
            return Bytes::new();
        };
        let start = (offset as usize).min(o.len());
        let end = start.saturating_add(len).min(o.len());
        Bytes::copy_from_slice(&o[start..end])
    }
}

/// Drives `follower` until the writer is done and several looks find nothing, or until
/// `stop_after` entries were handed out. Returns the entries handed out. With `batch_reads`,
/// the reads of a look are all made before any is answered; with `reuse_header`, a look that
/// follows one which found entries may keep the old header, as the live tail does when no
/// notification came.
fn follow(
    w: &mut Writer,
    follower: &mut JournalFollower,
    stop_after: Option<usize>,
    batch_reads: bool,
    reuse_header: bool,
) -> Result<Vec<(u64, u64)>, String> {
    let mut got = Vec::new();
    let mut progressed = false;
    let mut idle = 0;
    for _ in 0..2_000_000 {
        match follower.want().map_err(|e| e.to_string())? {
            Want::Header => {
                w.steps(2);
                if reuse_header && progressed && w.rng.below(2) == 0 {
                    // No notification: the header last read is taken as current although
                    // the writer may have moved on (a notification in flight).
                    follower.header_unchanged();
                } else {
                    follower.header_read(w.header.clone()).map_err(|e| e.to_string())?;
                }
                progressed = false;
            }
            Want::Read(first) => {
                // The tail runs the reads of a look at once: each lands whenever, then all
                // are answered in order.
                let reads = if batch_reads { follower.pass_reads() } else { vec![first] };
                let mut answers = Vec::new();
                for r in reads {
                    w.steps(3);
                    answers.push((r.object_number, w.read(r.object_number, r.offset, r.len)));
                }
                for (object_number, bytes) in answers {
                    follower.object_read(object_number, bytes).map_err(|e| e.to_string())?;
                }
            }
            Want::Entry(e) => {
                progressed = true;
                got.push((e.entry.tag_tid, e.entry.entry_tid));
                if stop_after == Some(got.len()) {
                    return Ok(got);
                }
            }
            Want::Wait => {
                if w.done() {
                    idle += 1;
                    if idle > 3 {
                        return Ok(got);
                    }
                } else {
                    w.steps(20);
                }
            }
        }
    }
    Err(format!("no end after 2M steps; handed out {}", got.len()))
}

fn script() -> impl Strategy<Value = Script> {
    // Tags of 0..40 entries, payloads of 1 B to 3 KB (a 4 KiB read holds one to a few).
    prop::collection::vec(prop::collection::vec(1usize..3000, 0..40), 1..6).prop_map(|tags| {
        tags.into_iter()
            .enumerate()
            .flat_map(|(t, lens)| lens.into_iter().map(move |l| (t as u64 + 1, l)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_entry_once_in_order(
        seed in any::<u64>(),
        width in prop::sample::select(vec![1u8, 2, 4]),
        object_cap in prop::sample::select(vec![8usize << 10, 24 << 10, 1 << 20]),
        script in script(),
        batch_reads in any::<bool>(),
        reuse_header in any::<bool>(),
    ) {
        let mut w = Writer::new(seed, width, object_cap, script);
        let mut f = JournalFollower::new("img", CLIENT, 1, w.header.clone(), ObjectSetPosition::default(), 4096);
        let got = follow(&mut w, &mut f, None, batch_reads, reuse_header).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&got, &w.sent);
    }

    #[test]
    fn a_restart_goes_on_from_its_position(
        seed in any::<u64>(),
        width in prop::sample::select(vec![1u8, 2, 4]),
        object_cap in prop::sample::select(vec![8usize << 10, 1 << 20]),
        script in script(),
        stop in 1usize..100,
        batch_reads in any::<bool>(),
        reuse_header in any::<bool>(),
    ) {
        let mut w = Writer::new(seed, width, object_cap, script);
        let mut f = JournalFollower::new("img", CLIENT, 1, w.header.clone(), ObjectSetPosition::default(), 4096);
        let first = follow(&mut w, &mut f, Some(stop), batch_reads, reuse_header).map_err(TestCaseError::fail)?;
        let position = f.position().clone();
        let mut g = JournalFollower::new("img", CLIENT, 1, w.header.clone(), position, 4096);
        let rest = follow(&mut w, &mut g, None, batch_reads, reuse_header).map_err(TestCaseError::fail)?;
        let all: Vec<_> = first.into_iter().chain(rest).collect();
        prop_assert_eq!(&all, &w.sent);
    }
}

/// Behind the writer, the objects of a set are read together, one pass for all: read one
/// at a time as each ran dry, a follower took one object's read of entries per round trip to
/// the primary, and a writer that appends more than that between two passes left it further
/// behind with every pass.
#[test]
fn a_follower_behind_the_writer_reads_the_objects_of_a_set_together() {
    for seed in 1..=8 {
        // Between two passes, the writer appends 0 to 120 entries, 60 on average (one
        // object's 4 KiB read holds 31): more than a pass of one object takes, less than one
        // of four.
        let (passes, _) = follow_in_passes(seed, 6000, 4096, 240);
        // Keeping up: about one pass per 60 entries (104-111 passes; read one object at a
        // time as each ran dry, 159-207).
        assert!(passes <= 6000 / 50, "seed {seed}: {passes} passes for 6000 entries");
    }
}

/// Follows a writer of `total` entries of 130 bytes (31.5 in a 4 KiB read, so the objects run
/// dry at different entries), reading `fetch_bytes` at a time, while the writer sends 0 to
/// `max_steps / 2` entries between two passes and lands its appends out of order across the
/// objects. Returns the passes until every entry was handed out, and the entries that were on
/// disk when a pass read but not handed out after it, summed over the passes.
fn follow_in_passes(seed: u64, total: usize, fetch_bytes: usize, max_steps: u64) -> (usize, usize) {
    let script: Script = (0..total).map(|_| (1, 106)).collect();
    let mut w = Writer::new(seed, 4, 1 << 20, script);
    let mut f =
        JournalFollower::new("img", CLIENT, 1, w.header.clone(), ObjectSetPosition::default(), fetch_bytes);
    let (mut got, mut passes, mut waits, mut late) = (Vec::new(), 0, 0, 0);
    // The landed prefix when the last pass read.
    let mut readable = 0;
    while waits < 3 {
        match f.want().unwrap() {
            Want::Header => {
                late += readable - got.len();
                f.header_read(w.header.clone()).unwrap();
            }
            Want::Read(_) => {
                w.steps(max_steps);
                passes += 1;
                readable = w.landed_prefix();
                for r in f.pass_reads() {
                    f.object_read(r.object_number, w.read(r.object_number, r.offset, r.len)).unwrap();
                }
            }
            Want::Entry(e) => got.push((e.entry.tag_tid, e.entry.entry_tid)),
            Want::Wait if w.done() => waits += 1,
            Want::Wait => {
                late += readable - got.len();
                w.steps(max_steps);
            }
        }
    }
    assert_eq!(got, w.sent);
    (passes, late)
}

/// Level with the writer, a pass reads every object of the active set: it hands out every
/// entry on disk when its reads were made. Read only as each ran dry (or held playback up),
/// one or two objects a pass were read, and an entry whose object was not read waited for
/// later passes: about one round trip to the primary per object of the set.
#[test]
fn a_follower_level_with_the_writer_hands_out_what_its_pass_could_read() {
    for seed in 1..=8 {
        // Between two passes the writer sends 0 to 8 entries, 4 on average; a read of 1 MiB
        // takes whatever an object holds.
        let (passes, late) = follow_in_passes(seed, 3000, 1 << 20, 16);
        assert_eq!(late, 0, "seed {seed}: entries on disk at a pass's reads but not handed out after it, summed over {passes} passes");
    }
}
