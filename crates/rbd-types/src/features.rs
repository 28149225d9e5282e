//! RBD image feature bits (`RBD_FEATURE_*`, src/include/rbd/features.h), image and snapshot
//! flags (`RBD_FLAG_*`, src/include/rbd/object_map_types.h) and snapshot protection status
//! (`cls::rbd::SnapshotProtectionStatus`). `rados-ffi` checks in a unit test that librbd's
//! C header has the same values.

/// `layering`.
pub const LAYERING: u64 = 1 << 0;
/// `striping` (striping v2).
pub const STRIPINGV2: u64 = 1 << 1;
/// `exclusive-lock`.
pub const EXCLUSIVE_LOCK: u64 = 1 << 2;
/// `object-map` (needs exclusive-lock).
pub const OBJECT_MAP: u64 = 1 << 3;
/// `fast-diff` (needs object-map).
pub const FAST_DIFF: u64 = 1 << 4;
/// `deep-flatten`.
pub const DEEP_FLATTEN: u64 = 1 << 5;
/// `journaling` (needs exclusive-lock).
pub const JOURNALING: u64 = 1 << 6;
/// `data-pool` (set by librbd when a data pool is given).
pub const DATA_POOL: u64 = 1 << 7;
/// `operations`.
pub const OPERATIONS: u64 = 1 << 8;
/// `migrating`.
pub const MIGRATING: u64 = 1 << 9;
/// `non-primary`: set on snapshot-mode secondary images.
pub const NON_PRIMARY: u64 = 1 << 10;
/// `dirty-cache`.
pub const DIRTY_CACHE: u64 = 1 << 11;

/// `RBD_OPERATION_FEATURE_CLONE_CHILD`: the image is a clone of format 2 (its parent
/// snapshot needs no protection).
pub const OPERATION_CLONE_CHILD: u64 = 1 << 1;

/// `RBD_FLAG_OBJECT_MAP_INVALID`: the image's (or snapshot's) object map cannot be trusted.
pub const FLAG_OBJECT_MAP_INVALID: u64 = 1 << 0;
/// `RBD_FLAG_FAST_DIFF_INVALID`: fast-diff cannot use the object map.
pub const FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;

/// `cls::rbd::SnapshotProtectionStatus` (`u8` on the wire; `RBD_PROTECTION_STATUS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtectionStatus {
    /// 0: clones may not be made of the snapshot.
    #[default]
    Unprotected,
    /// 1: being unprotected (children are being checked).
    Unprotecting,
    /// 2: clones may be made of the snapshot; it cannot be removed.
    Protected,
}

impl ProtectionStatus {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Unprotected => 0,
            Self::Unprotecting => 1,
            Self::Protected => 2,
        }
    }

    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Unprotected),
            1 => Some(Self::Unprotecting),
            2 => Some(Self::Protected),
            _ => None,
        }
    }
}
