//! The objects that changed between two snapshots, from their object maps, computed as
//! librbd's fast-diff does (src/librbd/object_map/DiffRequest.cc).
//!
//! librbd loads the object map of the start snapshot, then of every snapshot after it (in
//! snapshot-id order, whatever their namespace) up to the end snapshot (or HEAD), each cut to
//! the object count of that snapshot's image size. Comparing each map with the previous one,
//! object `i` becomes:
//!
//! * [`DiffState::Hole`] when it is `NONEXISTENT` now and was not before;
//! * [`DiffState::Updated`] when it is `EXISTS` (written since the previous snapshot), or its
//!   state changed other than `EXISTS` → `EXISTS_CLEAN` (what a snapshot does to HEAD);
//! * unchanged otherwise (a later map can still mark it).
//!
//! Objects beyond the previous map (the image grew) are `Updated` when they exist, when
//! diffing from the start of the image or after a first map. A shrunk map is extended with
//! `NONEXISTENT` so that its tail compares as holes. A diff "from the start" has no start map:
//! every object existing in the first map is `Updated`.

use rbd_types::object_map::{ObjectMap, ObjectState};

/// What fast-diff says about one object (`DIFF_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DiffState {
    /// Unchanged (`DIFF_STATE_NONE`).
    #[default]
    None,
    /// Written or created (`DIFF_STATE_UPDATED`).
    Updated,
    /// Removed (`DIFF_STATE_HOLE`).
    Hole,
}

/// The object map of one snapshot (or HEAD) in a diff walk.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotMap<'a> {
    /// Its object map.
    pub map: &'a ObjectMap,
    /// Objects at that snapshot's image size (`Striper::get_num_objects`).
    pub object_count: u64,
}

/// Why a diff cannot be computed from the maps (librbd then falls back to a slow diff).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// A map covers fewer objects than its snapshot's image size needs.
    #[error("object map {index} of the walk covers {len} objects, the image size needs {needed}")]
    MapTooSmall {
        /// Position of the map in the walk.
        index: usize,
        /// Objects in the map.
        len: u64,
        /// Objects needed.
        needed: u64,
    },
    /// No map given.
    #[error("a diff needs at least one object map")]
    NoMaps,
    /// A map is too large to hold in memory on this platform.
    #[error("object count {0} does not fit in memory")]
    TooLarge(u64),
}

/// Per-object diff states, in object order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectDiff {
    states: Vec<DiffState>,
}

impl ObjectDiff {
    /// Objects covered (the largest object count of the walk).
    pub fn len(&self) -> u64 {
        self.states.len() as u64
    }

    /// Whether no object is covered.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The state of one object (`None` = unchanged, also past the end).
    pub fn get(&self, object_no: u64) -> DiffState {
        usize::try_from(object_no).ok().and_then(|i| self.states.get(i)).copied().unwrap_or_default()
    }

    /// The changed objects (`Updated` or `Hole`), in object order.
    pub fn changed(&self) -> impl Iterator<Item = (u64, DiffState)> + '_ {
        self.states.iter().enumerate().filter(|(_, s)| **s != DiffState::None).map(|(i, s)| (i as u64, *s))
    }

    /// The states as a slice.
    pub fn states(&self) -> &[DiffState] {
        &self.states
    }
}

/// Diffs a walk of object maps: `maps[0]` is the start snapshot's map (or, with
/// `from_start`, the first map to take whole), then every later snapshot's map up to the end.
pub fn diff_object_maps(maps: &[SnapshotMap<'_>], from_start: bool) -> Result<ObjectDiff, DiffError> {
    if maps.is_empty() {
        return Err(DiffError::NoMaps);
    }
    let mut states: Vec<DiffState> = Vec::new();
    // The previous map as librbd keeps it: cut to its snapshot's objects, extended with
    // NONEXISTENT to the largest size seen; `None` before the first map.
    let mut prev: Option<Vec<ObjectState>> = None;
    for (index, m) in maps.iter().enumerate() {
        if m.map.len() < m.object_count {
            return Err(DiffError::MapTooSmall { index, len: m.map.len(), needed: m.object_count });
        }
        let count = usize::try_from(m.object_count).map_err(|_| DiffError::TooLarge(m.object_count))?;
        if states.len() < count {
            states.try_reserve(count - states.len()).map_err(|_| DiffError::TooLarge(m.object_count))?;
            states.resize(count, DiffState::None);
        }
        let mut cur: Vec<ObjectState> = Vec::new();
        cur.try_reserve(states.len()).map_err(|_| DiffError::TooLarge(m.object_count))?;
        cur.extend(m.map.iter().take(count));
        cur.resize(states.len(), ObjectState::Nonexistent);

        let before: &[ObjectState] = prev.as_deref().unwrap_or(&[]);
        let overlap = cur.len().min(before.len());
        for ((slot, &now), &was) in states.iter_mut().zip(&cur).zip(before) {
            if now == ObjectState::Nonexistent {
                if was != ObjectState::Nonexistent {
                    *slot = DiffState::Hole;
                }
            } else if now == ObjectState::Exists
                || (was != now && !(was == ObjectState::Exists && now == ObjectState::ExistsClean))
            {
                *slot = DiffState::Updated;
            }
        }
        if cur.len() > before.len() && (from_start || prev.is_some()) {
            for (slot, &now) in states.iter_mut().zip(&cur).skip(overlap) {
                *slot = if now == ObjectState::Nonexistent { DiffState::None } else { DiffState::Updated };
            }
        }
        prev = Some(cur);
    }
    Ok(ObjectDiff { states })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObjectState::*;

    fn map(states: &[ObjectState]) -> ObjectMap {
        ObjectMap::from_states(states.iter().copied())
    }

    fn walk(maps: &[ObjectMap], from_start: bool) -> Vec<DiffState> {
        let walk: Vec<_> = maps.iter().map(|m| SnapshotMap { map: m, object_count: m.len() }).collect();
        diff_object_maps(&walk, from_start).unwrap().states().to_vec()
    }

    #[test]
    fn start_to_end_through_intermediate_snapshots() {
        // snap1 (start), snap2, HEAD (end).
        let s1 = map(&[ExistsClean, ExistsClean, Nonexistent, ExistsClean, Nonexistent]);
        let s2 = map(&[Exists, ExistsClean, Exists, Nonexistent, Nonexistent]);
        let head = map(&[ExistsClean, ExistsClean, ExistsClean, Nonexistent, Exists]);
        use DiffState::{Hole, None as Same, Updated};
        assert_eq!(walk(&[s1.clone(), s2.clone(), head], false), vec![Updated, Same, Updated, Hole, Updated]);
        // From the start: whatever exists in the first map counts as updated.
        assert_eq!(walk(std::slice::from_ref(&s1), true), vec![Updated, Updated, Same, Updated, Same]);
        // Start == end: nothing changed.
        assert_eq!(walk(&[s2], false), vec![Same; 5]);
    }

    #[test]
    fn exists_to_clean_is_not_a_change_but_clean_to_exists_is() {
        use DiffState::{None as Same, Updated};
        let a = map(&[Exists, ExistsClean, Pending]);
        let b = map(&[ExistsClean, Exists, ExistsClean]);
        assert_eq!(walk(&[a, b], false), vec![Same, Updated, Updated]);
    }

    #[test]
    fn growth_and_shrink() {
        use DiffState::{Hole, None as Same, Updated};
        let small = map(&[ExistsClean]);
        let big = map(&[ExistsClean, Exists, Nonexistent]);
        assert_eq!(walk(&[small.clone(), big.clone()], false), vec![Same, Updated, Same]);
        // Shrink: the tail compares as NONEXISTENT, so existing objects there are holes.
        assert_eq!(walk(&[big, small], false), vec![Same, Hole, Same]);
        // A map longer than its snapshot's objects is cut.
        let long = map(&[ExistsClean, Exists, Exists]);
        let w = [SnapshotMap { map: &long, object_count: 1 }, SnapshotMap { map: &long, object_count: 1 }];
        assert_eq!(diff_object_maps(&w, false).unwrap().states(), &[Same]);
    }

    #[test]
    fn too_small_maps_and_empty_walks_are_errors() {
        let m = map(&[Exists]);
        let w = [SnapshotMap { map: &m, object_count: 2 }];
        assert_eq!(diff_object_maps(&w, false), Err(DiffError::MapTooSmall { index: 0, len: 1, needed: 2 }));
        assert_eq!(diff_object_maps(&[], false), Err(DiffError::NoMaps));
    }
}
