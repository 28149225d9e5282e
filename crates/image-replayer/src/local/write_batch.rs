//! Replay windows: the IO events of many journal entries planned as a short sequence of
//! librados write operations per RADOS object (pure arithmetic, no I/O).
//!
//! Journal replay applies a window of consecutive IO events (writes, discards, write-sames)
//! with one compound write operation per object and group instead of one operation per
//! event extent. The steps of one compound operation run in order on the OSD, and the
//! replayer runs the groups of one object one after the other, so the object ends up as if
//! the events were applied one by one in journal order. Inside a run of plain writes
//! (no discard between them) a write drops the earlier writes it fully covers and merges
//! with the write just before it when the two are adjacent.
//!
//! Discards map to object operations as [`crate::local::image::LocalImage::discard`] does:
//! a whole object is removed, an object tail truncated, anything else zeroed, and an object
//! that does not exist is left alone. A discard that follows a write of the same object in
//! the window needs no existence check (the write created the object); otherwise it runs
//! under `assert_exists`, alone with other discards, as `ENOENT` there means "nothing to do".
//! A removal makes every earlier step of its object in the window moot: they are dropped.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

use rbd_types::striping::{image_to_object_extents, Layout};

/// An IO event of the journal, as replay applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoEvent {
    /// `AioWrite`.
    Write {
        /// Image offset.
        offset: u64,
        /// The bytes written.
        data: Bytes,
    },
    /// `AioDiscard`.
    Discard {
        /// Image offset.
        offset: u64,
        /// Bytes discarded.
        length: u64,
    },
    /// `AioWriteSame`: `pattern` repeated over the extent.
    WriteSame {
        /// Image offset.
        offset: u64,
        /// Bytes written.
        length: u64,
        /// The repeated pattern (not empty).
        pattern: Bytes,
    },
}

impl IoEvent {
    /// Data bytes the event writes (0 for a discard).
    pub fn data_bytes(&self) -> u64 {
        match self {
            IoEvent::Write { data, .. } => data.len() as u64,
            IoEvent::Discard { .. } => 0,
            IoEvent::WriteSame { length, .. } => *length,
        }
    }
}

/// Header of each write buffer (Ceph's `buffer::raw_combined` or `raw_posix_aligned`, and
/// the allocator's own, rounded up).
const LIBRADOS_BUFFER_HEADER: u64 = 128;

/// About the memory a write of `len` bytes holds while its operation is in flight: its bytes
/// (a slice of a journal read buffer, which librados sends as it is; or, for a generated
/// write-same pattern, one copy of exactly that size, [`rados_ffi::WriteOp`]) and a small
/// header.
pub fn librados_held_bytes(len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    len.saturating_add(LIBRADOS_BUFFER_HEADER)
}

/// Why an event cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A write-same with an empty pattern.
    #[error("write-same at {0} with an empty pattern")]
    EmptyPattern(u64),
}

/// One step of a compound operation on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStep {
    /// Writes the concatenation of `pieces` at `offset`.
    Write {
        /// Object offset.
        offset: u64,
        /// Adjacent buffers, in order (more than one after merging).
        pieces: Vec<Bytes>,
    },
    /// Zeroes `length` bytes at `offset`.
    Zero {
        /// Object offset.
        offset: u64,
        /// Bytes zeroed.
        length: u64,
    },
    /// Truncates the object to `size`.
    Truncate {
        /// New object size.
        size: u64,
    },
}

impl ObjectStep {
    fn write_range(&self) -> Option<(u64, u64)> {
        match self {
            ObjectStep::Write { offset, pieces } => {
                let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
                Some((*offset, offset.saturating_add(len)))
            }
            _ => None,
        }
    }
}

/// One compound operation on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectGroup {
    /// Starts with a write (the object exists after it): the object is marked existing in
    /// the object map before, and no step checks existence.
    Data {
        /// The steps, in order.
        steps: Vec<ObjectStep>,
        /// Index of the first step of the trailing run of plain writes (the only steps a
        /// new write may drop or merge with).
        run_start: usize,
    },
    /// Zeroes and truncates under `assert_exists`: `ENOENT` means nothing to discard.
    IfExists(Vec<ObjectStep>),
    /// The whole object is discarded: removed if it exists (`ENOENT` is fine), then marked
    /// nonexistent in the object map.
    Remove,
}

/// Plans the IO events of one window, in journal order, event by event.
#[derive(Debug, Clone)]
pub struct WindowPlanner {
    layout: Layout,
    objects: BTreeMap<u64, Vec<ObjectGroup>>,
    events: usize,
    bytes: u64,
    held: u64,
}

impl WindowPlanner {
    /// An empty window for images of `layout`.
    pub fn new(layout: Layout) -> WindowPlanner {
        WindowPlanner { layout, objects: BTreeMap::new(), events: 0, bytes: 0, held: 0 }
    }

    /// Events added so far.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Data bytes of the events added so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What librados will hold for the writes of the events added so far while they are in
    /// flight ([`librados_held_bytes`] of each object extent written; merging adjacent
    /// writes only lowers it).
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// Adds the next event of the window.
    pub fn push(&mut self, event: &IoEvent) -> Result<(), PlanError> {
        match event {
            IoEvent::Write { offset, data } => {
                for x in image_to_object_extents(&self.layout, *offset, data.len() as u64) {
                    let piece = slice(data, x.buffer_offset, x.length);
                    self.write(x.object_no, x.offset, piece);
                }
            }
            IoEvent::WriteSame { offset, length, pattern } => {
                if pattern.is_empty() {
                    return Err(PlanError::EmptyPattern(*offset));
                }
                for x in image_to_object_extents(&self.layout, *offset, *length) {
                    let piece = pattern_fill(pattern, x.buffer_offset, x.length);
                    self.write(x.object_no, x.offset, piece);
                }
            }
            IoEvent::Discard { offset, length } => {
                let object_size = self.layout.object_size;
                for x in image_to_object_extents(&self.layout, *offset, *length) {
                    if x.offset == 0 && x.length >= object_size {
                        self.remove(x.object_no);
                    } else if x.offset.saturating_add(x.length) >= object_size {
                        self.discard(x.object_no, ObjectStep::Truncate { size: x.offset });
                    } else {
                        self.discard(x.object_no, ObjectStep::Zero { offset: x.offset, length: x.length });
                    }
                }
            }
        }
        self.events += 1;
        self.bytes = self.bytes.saturating_add(event.data_bytes());
        Ok(())
    }

    /// The operations of the window, by object number.
    pub fn finish(self) -> BTreeMap<u64, Vec<ObjectGroup>> {
        self.objects
    }

    fn write(&mut self, object_no: u64, offset: u64, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.held = self.held.saturating_add(librados_held_bytes(data.len() as u64));
        let groups = self.objects.entry(object_no).or_default();
        let end = offset.saturating_add(data.len() as u64);
        let step = ObjectStep::Write { offset, pieces: vec![data] };
        let Some(ObjectGroup::Data { steps, run_start }) = groups.last_mut() else {
            groups.push(ObjectGroup::Data { steps: vec![step], run_start: 0 });
            return;
        };
        // Earlier plain writes this one fully covers are overwritten: drop them.
        let run = *run_start;
        let mut i = run;
        while i < steps.len() {
            match steps.get(i).and_then(ObjectStep::write_range) {
                Some((a, b)) if offset <= a && b <= end => {
                    steps.remove(i);
                }
                _ => i += 1,
            }
        }
        // Adjacent to the write just before (nothing runs between them): merge.
        if steps.len() > run {
            if let Some(ObjectStep::Write { offset: last_offset, pieces }) = steps.last_mut() {
                let last_end = last_offset.saturating_add(pieces.iter().map(|p| p.len() as u64).sum());
                if last_end == offset {
                    if let ObjectStep::Write { pieces: new, .. } = step {
                        pieces.extend(new);
                    }
                    return;
                }
                if end == *last_offset {
                    if let ObjectStep::Write { pieces: new, .. } = step {
                        let mut merged = new;
                        merged.append(pieces);
                        *pieces = merged;
                        *last_offset = offset;
                    }
                    return;
                }
            }
        }
        steps.push(step);
    }

    fn discard(&mut self, object_no: u64, step: ObjectStep) {
        let groups = self.objects.entry(object_no).or_default();
        match groups.last_mut() {
            // The object exists (a write in this group created it); the step ends the run
            // of plain writes.
            Some(ObjectGroup::Data { steps, run_start }) => {
                steps.push(step);
                *run_start = steps.len();
            }
            Some(ObjectGroup::IfExists(steps)) => steps.push(step),
            // Removed just before: there is nothing to discard.
            Some(ObjectGroup::Remove) => {}
            None => groups.push(ObjectGroup::IfExists(vec![step])),
        }
    }

    fn remove(&mut self, object_no: u64) {
        let groups = self.objects.entry(object_no).or_default();
        groups.clear();
        groups.push(ObjectGroup::Remove);
    }
}

/// `data[offset..offset + length]`, clamped to `data` (extents come from `data`'s length).
fn slice(data: &Bytes, offset: u64, length: u64) -> Bytes {
    let len = data.len();
    let start = usize::try_from(offset).unwrap_or(len).min(len);
    let end = start.saturating_add(usize::try_from(length).unwrap_or(len)).min(len);
    data.slice(start..end)
}

/// `length` bytes of `pattern` repeated, starting `phase` bytes into the repetition.
/// An empty pattern gives zeros.
pub fn pattern_fill(pattern: &[u8], phase: u64, length: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
    let plen = pattern.len() as u64;
    if plen == 0 {
        buf.resize(usize::try_from(length).unwrap_or(0), 0);
        return buf.freeze();
    }
    let mut pos = phase % plen;
    let mut left = length;
    while left > 0 {
        let take = (plen - pos).min(left);
        let (a, b) = (usize::try_from(pos).unwrap_or(0), usize::try_from(pos + take).unwrap_or(0));
        buf.extend_from_slice(pattern.get(a..b).unwrap_or_default());
        left -= take;
        pos = 0;
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A model object store: object number → content (`None`: absent).
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct Store(HashMap<u64, Vec<u8>>);

    #[derive(Debug, PartialEq, Eq)]
    struct NotFound;

    impl Store {
        fn write(obj: &mut Vec<u8>, offset: u64, data: &[u8]) {
            let (o, e) = (offset as usize, offset as usize + data.len());
            if obj.len() < e {
                obj.resize(e, 0);
            }
            obj[o..e].copy_from_slice(data);
        }

        /// Runs one compound operation atomically: all or nothing.
        fn operate(
            &mut self,
            object_no: u64,
            assert_exists: bool,
            steps: &[ObjectStep],
        ) -> Result<(), NotFound> {
            let existing = self.0.get(&object_no).cloned();
            if assert_exists && existing.is_none() {
                return Err(NotFound);
            }
            let mut obj = existing.unwrap_or_default();
            for s in steps {
                match s {
                    ObjectStep::Write { offset, pieces } => {
                        let data: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
                        Self::write(&mut obj, *offset, &data);
                    }
                    ObjectStep::Zero { offset, length } => {
                        let (o, e) = (*offset as usize, (*offset + *length) as usize);
                        let e = e.min(obj.len());
                        if o < e {
                            obj[o..e].fill(0);
                        }
                    }
                    ObjectStep::Truncate { size } => obj.resize(*size as usize, 0),
                }
            }
            self.0.insert(object_no, obj);
            Ok(())
        }

        fn remove(&mut self, object_no: u64) -> Result<(), NotFound> {
            self.0.remove(&object_no).map(|_| ()).ok_or(NotFound)
        }

        /// The event as `LocalImage` applies it alone: one operation per object extent.
        fn apply_event(&mut self, layout: &Layout, e: &IoEvent) {
            match e {
                IoEvent::Write { offset, data } => {
                    for x in image_to_object_extents(layout, *offset, data.len() as u64) {
                        let piece = slice(data, x.buffer_offset, x.length);
                        let step = ObjectStep::Write { offset: x.offset, pieces: vec![piece] };
                        self.operate(x.object_no, false, &[step]).unwrap();
                    }
                }
                IoEvent::WriteSame { offset, length, pattern } => {
                    let data = pattern_fill(pattern, 0, *length);
                    self.apply_event(layout, &IoEvent::Write { offset: *offset, data });
                }
                IoEvent::Discard { offset, length } => {
                    for x in image_to_object_extents(layout, *offset, *length) {
                        let r = if x.offset == 0 && x.length >= layout.object_size {
                            self.remove(x.object_no)
                        } else if x.offset + x.length >= layout.object_size {
                            self.operate(x.object_no, true, &[ObjectStep::Truncate { size: x.offset }])
                        } else {
                            let step = ObjectStep::Zero { offset: x.offset, length: x.length };
                            self.operate(x.object_no, true, &[step])
                        };
                        let _ = r; // ENOENT: nothing to discard
                    }
                }
            }
        }

        /// A plan as the replayer applies it (each group one operation, in order).
        fn apply_plan(&mut self, plan: &BTreeMap<u64, Vec<ObjectGroup>>) {
            for (&object_no, groups) in plan {
                for g in groups {
                    let _ = match g {
                        ObjectGroup::Data { steps, .. } => self.operate(object_no, false, steps),
                        ObjectGroup::IfExists(steps) => self.operate(object_no, true, steps),
                        ObjectGroup::Remove => self.remove(object_no),
                    };
                }
            }
        }
    }

    fn layout() -> Layout {
        Layout::new(12, 1024, 2).unwrap() // 4 KiB objects, 1 KiB units, 2 objects per set
    }

    fn w(offset: u64, len: usize, byte: u8) -> IoEvent {
        IoEvent::Write { offset, data: Bytes::from(vec![byte; len]) }
    }

    fn plan(layout: Layout, events: &[IoEvent]) -> BTreeMap<u64, Vec<ObjectGroup>> {
        let mut p = WindowPlanner::new(layout);
        for e in events {
            p.push(e).unwrap();
        }
        p.finish()
    }

    fn steps_of(plan: &BTreeMap<u64, Vec<ObjectGroup>>, object_no: u64) -> Vec<ObjectStep> {
        match plan.get(&object_no).map(Vec::as_slice) {
            Some([ObjectGroup::Data { steps, .. }]) => steps.clone(),
            other => panic!("expected one data group, got {other:?}"),
        }
    }

    #[test]
    fn many_writes_of_one_object_become_one_operation() {
        let l = Layout::new(22, 0, 0).unwrap();
        let p = plan(l, &[w(0, 4096, 1), w(65536, 4096, 2), w(8192, 4096, 3)]);
        assert_eq!(p.len(), 1);
        assert_eq!(steps_of(&p, 0).len(), 3);
    }

    #[test]
    fn the_window_counts_what_librados_holds_per_object_extent() {
        assert_eq!(librados_held_bytes(0), 0);
        assert_eq!(librados_held_bytes(512), 640);
        assert_eq!(librados_held_bytes(4096), 4224);
        assert_eq!(librados_held_bytes(65536), 65664);
        let mut planner = WindowPlanner::new(Layout::new(22, 0, 0).unwrap());
        // One write across two objects: two copies; a discard: none.
        planner.push(&w((1 << 22) - 2048, 4096, 1)).unwrap();
        planner.push(&IoEvent::Discard { offset: 0, length: 4096 }).unwrap();
        assert_eq!((planner.bytes(), planner.held_bytes()), (4096, 2 * (2048 + 128)));
    }

    #[test]
    fn a_covering_write_drops_the_earlier_one_and_adjacent_writes_merge() {
        let l = Layout::new(22, 0, 0).unwrap();
        let p = plan(l, &[w(4096, 4096, 1), w(0, 4096, 2), w(0, 8192, 3), w(8192, 4096, 4)]);
        let steps = steps_of(&p, 0);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0].write_range(), Some((0, 12288)));
    }

    #[test]
    fn a_discard_ends_the_write_run() {
        let l = Layout::new(22, 0, 0).unwrap();
        let p = plan(l, &[w(0, 4096, 1), IoEvent::Discard { offset: 0, length: 4096 }, w(0, 4096, 2)]);
        assert_eq!(steps_of(&p, 0).len(), 3);
    }

    #[test]
    fn a_discard_first_runs_under_an_existence_check_and_a_removal_drops_earlier_steps() {
        let l = Layout::new(22, 0, 0).unwrap();
        let object = 1u64 << 22;
        let p = plan(l, &[IoEvent::Discard { offset: 0, length: 4096 }, w(object, 4096, 1)]);
        assert!(matches!(p.get(&0).map(Vec::as_slice), Some([ObjectGroup::IfExists(_)])));
        let p = plan(l, &[w(0, 4096, 1), IoEvent::Discard { offset: 0, length: object }, w(0, 512, 2)]);
        assert!(matches!(
            p.get(&0).map(Vec::as_slice),
            Some([ObjectGroup::Remove, ObjectGroup::Data { .. }])
        ));
    }

    #[test]
    fn write_same_with_an_empty_pattern_is_an_error() {
        let mut p = WindowPlanner::new(layout());
        let e = IoEvent::WriteSame { offset: 7, length: 10, pattern: Bytes::new() };
        assert_eq!(p.push(&e), Err(PlanError::EmptyPattern(7)));
    }

    #[test]
    fn pattern_fill_keeps_the_phase() {
        assert_eq!(&pattern_fill(b"abc", 1, 7)[..], b"bcabcab");
        assert_eq!(&pattern_fill(b"", 0, 3)[..], &[0, 0, 0]);
    }

    fn event() -> impl Strategy<Value = IoEvent> {
        // Offsets in a 6-object image (4 KiB objects), lengths up to 1.5 objects, some
        // aligned to stripe units so that covering, adjacency and whole-object discards
        // happen often.
        let offset = prop_oneof![0u64..24576, (0u64..24).prop_map(|u| u * 1024)];
        let length = prop_oneof![1u64..6144, (1u64..6).prop_map(|u| u * 1024)];
        prop_oneof![
            4 => (offset.clone(), length.clone(), any::<u8>())
                .prop_map(|(o, l, b)| w(o, l as usize, b)),
            1 => (offset.clone(), length.clone()).prop_map(|(offset, length)| IoEvent::Discard { offset, length }),
            1 => (offset, length, proptest::collection::vec(any::<u8>(), 1..5)).prop_map(|(offset, length, p)| {
                IoEvent::WriteSame { offset, length, pattern: Bytes::from(p) }
            }),
        ]
    }

    fn initial() -> impl Strategy<Value = Store> {
        proptest::collection::hash_map(0u64..6, proptest::collection::vec(any::<u8>(), 0..4096), 0..6)
            .prop_map(Store)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Applying the window's plan gives the same objects (existence, size, bytes) as
        /// applying its events one by one.
        #[test]
        fn a_plan_applies_like_its_events(start in initial(), events in proptest::collection::vec(event(), 0..40)) {
            let l = layout();
            let mut one_by_one = start.clone();
            for e in &events {
                one_by_one.apply_event(&l, e);
            }
            let mut planned = start;
            planned.apply_plan(&plan(l, &events));
            prop_assert_eq!(planned, one_by_one);
        }

        /// Same with the default layout (one object per set).
        #[test]
        fn a_plan_applies_like_its_events_unstriped(events in proptest::collection::vec(event(), 0..40)) {
            let l = Layout::new(12, 0, 0).unwrap();
            let mut one_by_one = Store::default();
            for e in &events {
                one_by_one.apply_event(&l, e);
            }
            let mut planned = Store::default();
            planned.apply_plan(&plan(l, &events));
            prop_assert_eq!(planned, one_by_one);
        }
    }
}
