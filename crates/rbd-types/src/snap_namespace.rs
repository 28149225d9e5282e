//! Snapshot namespaces (`cls::rbd::SnapshotNamespace`): user, group, trash and mirror
//! snapshots, as cls `rbd` stores them in the image header, librbd's journal events carry
//! them, and librbd's C API reports them (`rados-ffi` maps those values onto these types).
//!
//! Verified against src/cls/rbd/cls_rbd_types.{h,cc} (Pacific): `SnapshotNamespace` =
//! `ENCODE_START(1, 1)` { `u32 type`, body }; the mirror body is { `u8 state`, `bool
//! complete`, `set<string> mirror_peer_uuids`, `string primary_mirror_uuid`, `u64
//! primary_snap_id`, `u64 last_copied_object_number`, `map<u64,u64> snap_seqs` }.

use std::collections::{BTreeMap, BTreeSet};

use crate::encoding::{Decode, DecodeResult, Decoder, Encode, Encoder};

/// Mirror snapshot state (`cls::rbd::MirrorSnapshotState`, `u8`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MirrorSnapshotState {
    /// 0
    #[default]
    Primary,
    /// 1
    PrimaryDemoted,
    /// 2
    NonPrimary,
    /// 3
    NonPrimaryDemoted,
    /// Anything else.
    Unknown(u8),
}

impl MirrorSnapshotState {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Primary => 0,
            Self::PrimaryDemoted => 1,
            Self::NonPrimary => 2,
            Self::NonPrimaryDemoted => 3,
            Self::Unknown(v) => v,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Primary,
            1 => Self::PrimaryDemoted,
            2 => Self::NonPrimary,
            3 => Self::NonPrimaryDemoted,
            v => Self::Unknown(v),
        }
    }
}

/// Body of a mirror snapshot namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MirrorSnapshotNamespace {
    /// Snapshot state.
    pub state: MirrorSnapshotState,
    /// Whether the (non-primary) copy is complete.
    pub complete: bool,
    /// Peers that still need this snapshot.
    pub mirror_peer_uuids: BTreeSet<String>,
    /// Mirror uuid of the primary pool (non-primary snapshots).
    pub primary_mirror_uuid: String,
    /// Primary snap id (non-primary) / clean-since snap id (primary).
    pub primary_snap_id: u64,
    /// Sync progress.
    pub last_copied_object_number: u64,
    /// Remote snap id -> local snap id.
    pub snap_seqs: BTreeMap<u64, u64>,
}

/// `cls::rbd::SnapshotNamespace`: `ENCODE_START(1, 1)` { `u32 type`, body }.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum SnapshotNamespace {
    /// Type 0.
    #[default]
    User,
    /// Type 1.
    Group {
        /// Pool of the group.
        group_pool: i64,
        /// Group id.
        group_id: String,
        /// Group snapshot id.
        group_snapshot_id: String,
    },
    /// Type 2.
    Trash {
        /// Name before the snapshot was trashed.
        original_name: String,
        /// Namespace type before trashing.
        original_snapshot_namespace_type: u32,
    },
    /// Type 3.
    Mirror(MirrorSnapshotNamespace),
    /// An unknown type; its body was skipped.
    Unknown {
        /// The type found.
        namespace_type: u32,
    },
}

impl Decode for SnapshotNamespace {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("SnapshotNamespace", 1, |d, _v| {
            let t = d.u32("snapshot_namespace_type")?;
            Ok(match t {
                0 => SnapshotNamespace::User,
                1 => SnapshotNamespace::Group {
                    group_pool: d.i64("group_pool")?,
                    group_id: d.string("group_id")?,
                    group_snapshot_id: d.string("group_snapshot_id")?,
                },
                2 => SnapshotNamespace::Trash {
                    original_name: d.string("original_name")?,
                    original_snapshot_namespace_type: d.u32("original_snapshot_namespace_type")?,
                },
                3 => SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
                    state: MirrorSnapshotState::from_u8(d.u8("mirror_snapshot_state")?),
                    complete: d.bool("complete")?,
                    mirror_peer_uuids: d
                        .vec("mirror_peer_uuids", |d| d.string("mirror_peer_uuid"))?
                        .into_iter()
                        .collect(),
                    primary_mirror_uuid: d.string("primary_mirror_uuid")?,
                    primary_snap_id: d.u64("primary_snap_id")?,
                    last_copied_object_number: d.u64("last_copied_object_number")?,
                    snap_seqs: d.map("snap_seqs", |d| d.u64("snap_id"), |d| d.u64("snap_id"))?,
                }),
                namespace_type => SnapshotNamespace::Unknown { namespace_type },
            })
        })
    }
}

impl Encode for SnapshotNamespace {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| match self {
            SnapshotNamespace::User => e.u32(0),
            SnapshotNamespace::Group { group_pool, group_id, group_snapshot_id } => {
                e.u32(1);
                e.i64(*group_pool);
                e.string(group_id);
                e.string(group_snapshot_id);
            }
            SnapshotNamespace::Trash { original_name, original_snapshot_namespace_type } => {
                e.u32(2);
                e.string(original_name);
                e.u32(*original_snapshot_namespace_type);
            }
            SnapshotNamespace::Mirror(m) => {
                e.u32(3);
                e.u8(m.state.to_u8());
                e.bool(m.complete);
                e.u32(u32::try_from(m.mirror_peer_uuids.len()).unwrap_or(u32::MAX));
                for p in &m.mirror_peer_uuids {
                    e.string(p);
                }
                e.string(&m.primary_mirror_uuid);
                e.u64(m.primary_snap_id);
                e.u64(m.last_copied_object_number);
                e.map(&m.snap_seqs, |e, k| e.u64(*k), |e, v| e.u64(*v));
            }
            SnapshotNamespace::Unknown { namespace_type } => e.u32(*namespace_type),
        });
    }
}

impl MirrorSnapshotState {
    /// How `rbd snap ls --all` names the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::PrimaryDemoted | Self::NonPrimaryDemoted => "demoted",
            Self::NonPrimary => "non-primary",
            Self::Unknown(_) => "unknown",
        }
    }

    /// Whether the snapshot was taken on the primary image (demoted or not).
    pub fn is_primary(self) -> bool {
        matches!(self, Self::Primary | Self::PrimaryDemoted)
    }
}

impl SnapshotNamespace {
    /// The namespace type as `rbd snap ls --all` prints it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group { .. } => "group",
            Self::Trash { .. } => "trash",
            Self::Mirror(_) => "mirror",
            Self::Unknown { .. } => "unknown",
        }
    }
}
