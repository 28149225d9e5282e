//! Types and method argument/reply encodings of the cls class `rbd` that the
//! daemon calls with `rados exec` (pure: bytes in, bytes out).
//!
//! Verified against (ceph/ceph, Octopus/Pacific-era and newer revisions):
//!
//! * src/cls/rbd/cls_rbd_types.h — enum values of `MirrorImageMode`,
//!   `MirrorImageState` (CREATING = 3), `MirrorImageStatusState`,
//!   `MirrorPeerDirection`; `SnapshotInfo` fields (`u32 child_count`).
//! * src/cls/rbd/cls_rbd_types.cc — `MirrorImage` = `ENCODE_START(2, 1)`
//!   { string global_image_id, u8 state, u8 mode }, mode only when
//!   `struct_v >= 2`; `MirrorImageSiteStatus` = `ENCODE_START(v, v)` with
//!   v = 1 for the local (empty) mirror uuid, else 2, body
//!   { [string mirror_uuid if v >= 2], u8 state, string description,
//!   utime_t last_update, bool up }; `SnapshotInfo` = `ENCODE_START(1, 1)`
//!   { u64 id, SnapshotNamespace, string name, u64 image_size,
//!   utime_t timestamp, u32 child_count }.
//! * src/cls/rbd/cls_rbd_client.cc — every argument list and reply layout in
//!   [`args`] (field order as the librbd client encodes/decodes them).
//! * src/cls/rbd/cls_rbd.cc — `mirror_uuid_get` replies with an *encoded*
//!   `std::string` (u32 length + bytes), even though the omap value is raw;
//!   `get_snapcontext` replies `u64 snap_seq, vector<u64> snap_ids`;
//!   `object_map_load` replies a `BitVector<2>` with CRCs disabled.
//! * src/common/bit_vector.hpp — `BitVector` layout (decoded by `snapshot_differ::object_map`).
//! * src/librbd/ObjectMap.cc — object map object names.
//! * src/include/rbd_types.h — object name prefixes; OBJECT_* states as
//!   mirrored in the kernel's drivers/block/rbd_types.h (same values as
//!   Ceph's include/rbd/object_map_types.h).
//! * src/include/rados.h — `CEPH_NOSNAP = (__u64)(-2)`.
//!
//! `SnapshotNamespace` is in [`crate::snap_namespace`], feature bits and flags in
//! [`crate::features`].

use std::collections::BTreeMap;

use crate::encoding::{Decode, DecodeError, Decoder, Encode, Encoder, UTime};
use crate::features::ProtectionStatus;
use crate::object_map::{ObjectMap, ObjectMapError, ObjectState};
use crate::snap_namespace::SnapshotNamespace;
use bytes::Bytes;

type Result<T> = std::result::Result<T, DecodeError>;

/// The "head" snapshot id (`CEPH_NOSNAP`, `(__u64)(-2)`).
pub const CEPH_NOSNAP: u64 = u64::MAX - 1;
/// Pool object holding the mirroring metadata.
pub const RBD_MIRRORING: &str = "rbd_mirroring";
/// The per-pool (per-namespace) object of the daemons' leader election: leader lock, heartbeat
/// notifications, and in its omap the instance registry and the image map (§5.5).
pub const RBD_MIRROR_LEADER: &str = "rbd_mirror_leader";
/// Prefix of one daemon instance's notification object: `rbd_mirror_instance.<instance id>`.
pub const RBD_MIRROR_INSTANCE_PREFIX: &str = "rbd_mirror_instance.";
/// Object map state: object does not exist.
pub const OBJECT_NONEXISTENT: u8 = 0;
/// Object map state: object exists.
pub const OBJECT_EXISTS: u8 = 1;
/// Object map state: an operation on the object is pending.
pub const OBJECT_PENDING: u8 = 2;
/// Object map state: object exists and is unchanged since the last snapshot.
pub const OBJECT_EXISTS_CLEAN: u8 = 3;

/// The pool's (namespace's) image directory: names to ids (`RBD_DIRECTORY`).
pub const RBD_DIRECTORY: &str = "rbd_directory";
/// Clone v1's children index of a pool (`RBD_CHILDREN`): which images are cloned from which
/// parent snapshot.
pub const RBD_CHILDREN: &str = "rbd_children";
/// The pool's (namespace's) trash: image ids to [`TrashImageSpec`]s in its omap (`RBD_TRASH`).
pub const RBD_TRASH: &str = "rbd_trash";

/// `RBD_HEADER_PREFIX`.
pub const RBD_HEADER_PREFIX: &str = "rbd_header.";
/// `RBD_ID_PREFIX`.
pub const RBD_ID_PREFIX: &str = "rbd_id.";
/// `RBD_DATA_PREFIX`.
pub const RBD_DATA_PREFIX: &str = "rbd_data.";
/// `RBD_OBJECT_MAP_PREFIX`.
pub const RBD_OBJECT_MAP_PREFIX: &str = "rbd_object_map.";

/// Name of data object `object_no` of an image whose `object_prefix` is
/// `block_name_prefix` (`RBD_V2_DATA_FORMAT` = `"%s.%016llx"`).
pub fn image_data_object_name(block_name_prefix: &str, object_no: u64) -> String {
    format!("{block_name_prefix}.{object_no:016x}")
}

/// `rbd_header.<image id>`.
pub fn header_object_name(image_id: &str) -> String {
    format!("{RBD_HEADER_PREFIX}{image_id}")
}

/// `RBD_INFO`: the pool's object whose metadata holds the pool's configuration overrides
/// (`rbd config pool set`).
pub const RBD_INFO: &str = "rbd_info";
/// The omap key prefix of image (header) and pool (`rbd_info`) metadata (cls `rbd`'s
/// `metadata_set`).
pub const METADATA_KEY_PREFIX: &str = "metadata_";
/// The metadata key prefix of configuration overrides (`rbd config image|pool set <name>`
/// stores `conf_<name>`).
pub const CONFIG_METADATA_PREFIX: &str = "conf_";

/// `rbd_id.<image name>`.
pub fn id_object_name(image_name: &str) -> String {
    format!("{RBD_ID_PREFIX}{image_name}")
}

/// `rbd_object_map.<image id>` for the head (`None` or `CEPH_NOSNAP`), else
/// `rbd_object_map.<image id>.<snap id %016x>` (librbd `ObjectMap::object_map_name`).
pub fn object_map_name(image_id: &str, snap_id: Option<u64>) -> String {
    match snap_id {
        Some(s) if s != CEPH_NOSNAP => format!("{RBD_OBJECT_MAP_PREFIX}{image_id}.{s:016x}"),
        _ => format!("{RBD_OBJECT_MAP_PREFIX}{image_id}"),
    }
}

fn invalid(field: &'static str, offset: usize, value: u8) -> DecodeError {
    DecodeError::InvalidValue { field, offset, value: u64::from(value) }
}

/// `cls::rbd::MirrorImageState` (`u8` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MirrorImageState {
    /// 0
    Disabling,
    /// 1
    Enabled,
    /// 2
    Disabled,
    /// 3
    Creating,
}

impl MirrorImageState {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Disabling => 0,
            Self::Enabled => 1,
            Self::Disabled => 2,
            Self::Creating => 3,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Disabling,
            1 => Self::Enabled,
            2 => Self::Disabled,
            3 => Self::Creating,
            _ => return None,
        })
    }
    /// How `rbd mirror image status` and `rbd info` name the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabling => "disabling",
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Creating => "creating",
        }
    }
}

/// `cls::rbd::MirrorImageMode` (`u8` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MirrorImageMode {
    /// 0
    #[default]
    Journal,
    /// 1
    Snapshot,
}

impl MirrorImageMode {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Journal => 0,
            Self::Snapshot => 1,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Journal),
            1 => Some(Self::Snapshot),
            _ => None,
        }
    }
    /// How `rbd info` names the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::Snapshot => "snapshot",
        }
    }
}

/// `cls::rbd::MirrorMode`, the pool's mirroring mode (`u32` reply of `mirror_mode_get`;
/// librbd's `rbd_mirror_mode_t` has the same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MirrorMode {
    /// 0: mirroring disabled.
    #[default]
    Disabled,
    /// 1: images are mirrored when enabled one by one.
    Image,
    /// 2: every journaled image of the pool is mirrored.
    Pool,
}

impl MirrorMode {
    /// Wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::Disabled => 0,
            Self::Image => 1,
            Self::Pool => 2,
        }
    }
    /// From the wire value.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Disabled),
            1 => Some(Self::Image),
            2 => Some(Self::Pool),
            _ => None,
        }
    }
    /// How `rbd mirror pool info` names the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Image => "image",
            Self::Pool => "pool",
        }
    }
}

/// `cls::rbd::MirrorImage`: `ENCODE_START(2, 1)` { string global_image_id,
/// u8 state, u8 mode (v2) }. A v1 record decodes with mode `Journal`;
/// tails of newer versions (v3 group spec) are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MirrorImage {
    /// Global image id (shared by all sites).
    pub global_image_id: String,
    /// Mirroring state.
    pub state: MirrorImageState,
    /// Journal or snapshot mirroring.
    pub mode: MirrorImageMode,
}

impl Decode for MirrorImage {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        d.envelope("MirrorImage", 2, |d, v| {
            let global_image_id = d.string("global_image_id")?;
            let off = d.offset();
            let s = d.u8("mirror_image_state")?;
            let state = MirrorImageState::from_u8(s).ok_or_else(|| invalid("mirror_image_state", off, s))?;
            let mode = if v >= 2 {
                let off = d.offset();
                let m = d.u8("mirror_image_mode")?;
                MirrorImageMode::from_u8(m).ok_or_else(|| invalid("mirror_image_mode", off, m))?
            } else {
                MirrorImageMode::Journal
            };
            Ok(MirrorImage { global_image_id, state, mode })
        })
    }
}

impl Encode for MirrorImage {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(2, 1, |e| {
            e.string(&self.global_image_id);
            e.u8(self.state.to_u8());
            e.u8(self.mode.to_u8());
        });
    }
}

/// `cls::rbd::TrashImageSource` (`u8` on the wire): who moved an image to the trash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrashImageSource {
    /// 0: `rbd trash mv` (`rbd trash ls` lists only these without `--all`).
    User,
    /// 1: the rbd-mirror daemon's image deleter (`rbd trash ls --all`: `MIRRORING`).
    Mirroring,
    /// 2: an image migration.
    Migration,
    /// 3: `rbd rm` under way.
    Removing,
    /// 4: a parent of clones, moved by `rbd_move_parent_to_trash_on_remove`.
    UserParent,
}

impl TrashImageSource {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::User => 0,
            Self::Mirroring => 1,
            Self::Migration => 2,
            Self::Removing => 3,
            Self::UserParent => 4,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::User,
            1 => Self::Mirroring,
            2 => Self::Migration,
            3 => Self::Removing,
            4 => Self::UserParent,
            _ => return None,
        })
    }
}

/// `cls::rbd::TrashImageState` (`u8` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrashImageState {
    /// 0: in the trash.
    Normal,
    /// 1: being moved there.
    Moving,
    /// 2: being removed.
    Removing,
    /// 3: being restored.
    Restoring,
}

impl TrashImageState {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::Moving => 1,
            Self::Removing => 2,
            Self::Restoring => 3,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Normal,
            1 => Self::Moving,
            2 => Self::Removing,
            3 => Self::Restoring,
            _ => return None,
        })
    }
}

/// `cls::rbd::TrashImageSpec`, the value of `id_<image id>` in `rbd_trash`'s omap:
/// `ENCODE_START(2, 1)` { u8 source, string name, utime_t deletion_time,
/// utime_t deferment_end_time, u8 state (v2) } (cls_rbd_types.cc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashImageSpec {
    /// Who moved it.
    pub source: TrashImageSource,
    /// The image's name before the move.
    pub name: String,
    /// When it was moved.
    pub deletion_time: UTime,
    /// Before this time `rbd trash rm` refuses it without `--force`; the rbd-mirror image
    /// deleter removes a `Mirroring` entry from then on.
    pub deferment_end_time: UTime,
    /// Its state (`Normal` for a v1 record).
    pub state: TrashImageState,
}

impl Decode for TrashImageSpec {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        d.envelope("TrashImageSpec", 2, |d, v| {
            let off = d.offset();
            let s = d.u8("trash_image_source")?;
            let source = TrashImageSource::from_u8(s).ok_or_else(|| invalid("trash_image_source", off, s))?;
            let name = d.string("name")?;
            let deletion_time = d.utime("deletion_time")?;
            let deferment_end_time = d.utime("deferment_end_time")?;
            let state = if v >= 2 {
                let off = d.offset();
                let s = d.u8("trash_image_state")?;
                TrashImageState::from_u8(s).ok_or_else(|| invalid("trash_image_state", off, s))?
            } else {
                TrashImageState::Normal
            };
            Ok(TrashImageSpec { source, name, deletion_time, deferment_end_time, state })
        })
    }
}

impl Encode for TrashImageSpec {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(2, 1, |e| {
            e.u8(self.source.to_u8());
            e.string(&self.name);
            e.utime(self.deletion_time);
            e.utime(self.deferment_end_time);
            e.u8(self.state.to_u8());
        });
    }
}

/// `cls::rbd::MirrorImageMap`: which daemon instance replays an image (the value of
/// `image_map_<global image id>` in `rbd_mirror_leader`'s omap, written by the leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorImageMap {
    /// The instance id (the daemon's RADOS global id, decimal).
    pub instance_id: String,
    /// When the leader mapped it.
    pub mapped_time: UTime,
    /// The policy's data for the image: an encoded `PolicyData` (§5.3).
    pub data: Bytes,
}

impl Decode for MirrorImageMap {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        d.envelope("MirrorImageMap", 1, |d, _| {
            Ok(MirrorImageMap {
                instance_id: d.string("instance_id")?,
                mapped_time: d.utime("mapped_time")?,
                data: d.bytes("data")?,
            })
        })
    }
}

impl Encode for MirrorImageMap {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.string(&self.instance_id);
            e.utime(self.mapped_time);
            e.bytes(&self.data);
        });
    }
}

/// `cls::rbd::MirrorImageStatusState` (`u8` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum MirrorImageStatusState {
    /// 0
    #[default]
    Unknown,
    /// 1
    Error,
    /// 2
    Syncing,
    /// 3
    StartingReplay,
    /// 4
    Replaying,
    /// 5
    StoppingReplay,
    /// 6
    Stopped,
}

impl MirrorImageStatusState {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Error => 1,
            Self::Syncing => 2,
            Self::StartingReplay => 3,
            Self::Replaying => 4,
            Self::StoppingReplay => 5,
            Self::Stopped => 6,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Unknown,
            1 => Self::Error,
            2 => Self::Syncing,
            3 => Self::StartingReplay,
            4 => Self::Replaying,
            5 => Self::StoppingReplay,
            6 => Self::Stopped,
            _ => return None,
        })
    }
    /// The CLI spelling (`operator<<` in cls_rbd_types.cc).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Error => "error",
            Self::Syncing => "syncing",
            Self::StartingReplay => "starting_replay",
            Self::Replaying => "replaying",
            Self::StoppingReplay => "stopping_replay",
            Self::Stopped => "stopped",
        }
    }
}

/// `cls::rbd::MirrorImageSiteStatus`: `ENCODE_START(v, v)`, v = 1 when
/// `mirror_uuid` is empty (local site; no mirror_uuid field) else 2.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MirrorImageSiteStatus {
    /// Site the status describes; empty = the local site.
    pub mirror_uuid: String,
    /// Replay state.
    pub state: MirrorImageStatusState,
    /// Free-form description (JSON for replaying states).
    pub description: String,
    /// Last update (the class overwrites it on `status_set`).
    pub last_update: UTime,
    /// Whether the writer is alive (the class overwrites it).
    pub up: bool,
}

impl MirrorImageSiteStatus {
    /// `up+replaying`, `down+stopped`, ... as `rbd mirror image status` prints the state.
    pub fn state_string(&self) -> String {
        format!("{}+{}", if self.up { "up" } else { "down" }, self.state.as_str())
    }

    fn encode_meta(&self, e: &mut Encoder, version: u8) {
        if version >= 2 {
            e.string(&self.mirror_uuid);
        }
        e.u8(self.state.to_u8());
        e.string(&self.description);
        e.utime(self.last_update);
        e.bool(self.up);
    }

    fn decode_meta(d: &mut Decoder<'_>, version: u8) -> Result<Self> {
        let mirror_uuid = if version >= 2 { d.string("mirror_uuid")? } else { String::new() };
        let off = d.offset();
        let s = d.u8("mirror_image_status_state")?;
        let state =
            MirrorImageStatusState::from_u8(s).ok_or_else(|| invalid("mirror_image_status_state", off, s))?;
        Ok(MirrorImageSiteStatus {
            mirror_uuid,
            state,
            description: d.string("description")?,
            last_update: d.utime("last_update")?,
            up: d.bool("up")?,
        })
    }
}

impl Encode for MirrorImageSiteStatus {
    fn encode(&self, e: &mut Encoder) {
        let v = if self.mirror_uuid.is_empty() { 1 } else { 2 };
        e.envelope(v, v, |e| self.encode_meta(e, v));
    }
}

impl Decode for MirrorImageSiteStatus {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        d.envelope("MirrorImageSiteStatus", 2, |d, v| Self::decode_meta(d, v))
    }
}

/// `cls::rbd::MirrorImageStatus` (reply of `mirror_image_status_get`):
/// `ENCODE_START(2, 1)` { local status in v1 layout, bool local_status_valid,
/// u32 n, n × remote status in v2 layout }; a v1 record holds only the
/// local status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MirrorImageStatus {
    /// Site statuses; the local one (if valid) has an empty mirror uuid.
    pub site_statuses: Vec<MirrorImageSiteStatus>,
}

impl Decode for MirrorImageStatus {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        d.envelope("MirrorImageStatus", 2, |d, v| {
            let local = MirrorImageSiteStatus::decode_meta(d, 1)?;
            if v < 2 {
                return Ok(MirrorImageStatus { site_statuses: vec![local] });
            }
            let valid = d.bool("local_status_valid")?;
            let mut site_statuses = if valid { vec![local] } else { Vec::new() };
            let n = d.count("remote_statuses")?;
            for _ in 0..n {
                site_statuses.push(MirrorImageSiteStatus::decode_meta(d, v)?);
            }
            Ok(MirrorImageStatus { site_statuses })
        })
    }
}

impl Encode for MirrorImageStatus {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(2, 1, |e| {
            let local = self.site_statuses.iter().find(|s| s.mirror_uuid.is_empty());
            local.cloned().unwrap_or_default().encode_meta(e, 1);
            e.bool(local.is_some());
            let remotes: Vec<_> = self.site_statuses.iter().filter(|s| !s.mirror_uuid.is_empty()).collect();
            e.vec(&remotes, |e, s| s.encode_meta(e, 2));
        });
    }
}

/// `cls::rbd::MirrorPeerDirection` (`u8` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MirrorPeerDirection {
    /// 0
    Rx,
    /// 1
    Tx,
    /// 2
    RxTx,
}

impl MirrorPeerDirection {
    /// Wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Rx => 0,
            Self::Tx => 1,
            Self::RxTx => 2,
        }
    }
    /// From the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Rx),
            1 => Some(Self::Tx),
            2 => Some(Self::RxTx),
            _ => None,
        }
    }
    /// How `rbd mirror pool info` names the direction.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rx => "rx-only",
            Self::Tx => "tx-only",
            Self::RxTx => "rx-tx",
        }
    }
    /// Whether this site receives images from the peer (rx-only or rx-tx).
    pub fn receives(self) -> bool {
        matches!(self, Self::Rx | Self::RxTx)
    }
}

/// Reply of `get_snapcontext`: `u64 seq`, `vector<u64> snaps` (descending).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SnapContext {
    /// Highest snapshot id ever allocated for the image.
    pub seq: u64,
    /// Existing snapshot ids, newest first.
    pub snaps: Vec<u64>,
}

impl Decode for SnapContext {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        Ok(SnapContext { seq: d.u64("snap_seq")?, snaps: d.vec("snap_ids", |d| d.u64("snap_id"))? })
    }
}

impl Encode for SnapContext {
    fn encode(&self, e: &mut Encoder) {
        e.u64(self.seq);
        e.vec(&self.snaps, |e, s| e.u64(*s));
    }
}

/// `cls::rbd::SnapshotInfo` (reply of `snapshot_get`): `ENCODE_START(1, 1)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: u64,
    /// Namespace (user, group, trash, mirror).
    pub snapshot_namespace: SnapshotNamespace,
    /// Snapshot name.
    pub name: String,
    /// Image size at the snapshot.
    pub image_size: u64,
    /// Creation time.
    pub timestamp: UTime,
    /// Number of clones.
    pub child_count: u32,
}

impl Decode for SnapshotInfo {
    fn decode(d: &mut Decoder<'_>) -> Result<Self> {
        d.envelope("SnapshotInfo", 1, |d, _| {
            Ok(SnapshotInfo {
                id: d.u64("snap_id")?,
                snapshot_namespace: SnapshotNamespace::decode(d)?,
                name: d.string("snap_name")?,
                image_size: d.u64("image_size")?,
                timestamp: d.utime("timestamp")?,
                child_count: d.u32("child_count")?,
            })
        })
    }
}

impl Encode for SnapshotInfo {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.u64(self.id);
            self.snapshot_namespace.encode(e);
            e.string(&self.name);
            e.u64(self.image_size);
            e.utime(self.timestamp);
            e.u32(self.child_count);
        });
    }
}

/// Input encoders (`-> Bytes`) and reply decoders (`*_reply`) of the cls
/// `rbd` methods, in the order `cls_rbd_client.cc` encodes/decodes them.
/// Reply decoders ignore trailing bytes, as the C++ client does.
pub mod args {
    use super::*;

    pub(crate) fn build(f: impl FnOnce(&mut Encoder)) -> Bytes {
        let mut e = Encoder::new();
        f(&mut e);
        e.into_bytes()
    }

    fn string_reply(out: &Bytes, field: &'static str) -> Result<String> {
        Decoder::new(out).string(field)
    }

    fn string_arg(s: &str) -> Bytes {
        build(|e| e.string(s))
    }

    fn start_max(start: &str, max_return: u64) -> Bytes {
        build(|e| {
            e.string(start);
            e.u64(max_return);
        })
    }

    // ---- rbd_mirror_leader ----------------------------------------------

    /// `mirror_instances_list` reply: `vector<string>` instance ids, each as the bytes of its
    /// omap key after `instance_` (cls `rbd` does not check them: a record no instance
    /// wrote may not be UTF-8, and is removed by these bytes).
    pub fn mirror_instances_list_reply(out: &Bytes) -> Result<Vec<Bytes>> {
        Decoder::new(out).vec("instance_ids", |d| d.bytes("instance_id"))
    }

    /// `mirror_instances_add` / `mirror_instances_remove` input: `string instance_id` (its
    /// bytes: see [`mirror_instances_list_reply`]).
    pub fn mirror_instance_id(instance_id: &[u8]) -> Bytes {
        build(|e| e.bytes(instance_id))
    }

    /// `mirror_image_map_list` input: `string start_after, u64 max_return`.
    pub fn mirror_image_map_list(start_after: &str, max_return: u64) -> Bytes {
        start_max(start_after, max_return)
    }

    /// `mirror_image_map_list` reply: `map<global_image_id, MirrorImageMap>`.
    pub fn mirror_image_map_list_reply(out: &Bytes) -> Result<BTreeMap<String, MirrorImageMap>> {
        Decoder::new(out).map("image_map", |d| d.string("global_image_id"), MirrorImageMap::decode)
    }

    /// `mirror_image_map_update` input: `string global_image_id, MirrorImageMap`.
    pub fn mirror_image_map_update(global_image_id: &str, map: &MirrorImageMap) -> Bytes {
        build(|e| {
            e.string(global_image_id);
            map.encode(e);
        })
    }

    /// `mirror_image_map_remove` input: `string global_image_id`.
    pub fn mirror_image_map_remove(global_image_id: &str) -> Bytes {
        string_arg(global_image_id)
    }

    // ---- rbd_mirroring --------------------------------------------------

    /// `mirror_uuid_get` reply: an encoded string (cls_rbd.cc encodes the
    /// raw omap value as `std::string`).
    pub fn mirror_uuid_get_reply(out: &Bytes) -> Result<String> {
        string_reply(out, "mirror_uuid")
    }

    /// `mirror_mode_get` reply: `u32` MirrorMode (0 disabled, 1 image, 2 pool).
    pub fn mirror_mode_get_reply(out: &Bytes) -> Result<u32> {
        Decoder::new(out).u32("mirror_mode")
    }

    /// `mirror_image_get_image_id` input: `string global_image_id`.
    pub fn mirror_image_get_image_id(global_image_id: &str) -> Bytes {
        string_arg(global_image_id)
    }

    /// `mirror_image_get_image_id` reply: `string image_id`.
    pub fn mirror_image_get_image_id_reply(out: &Bytes) -> Result<String> {
        string_reply(out, "image_id")
    }

    /// `mirror_image_get` input: `string image_id`.
    pub fn mirror_image_get(image_id: &str) -> Bytes {
        string_arg(image_id)
    }

    /// `mirror_image_get` reply: `MirrorImage`.
    pub fn mirror_image_get_reply(out: &Bytes) -> Result<MirrorImage> {
        MirrorImage::decode(&mut Decoder::new(out))
    }

    /// `mirror_image_set` input: `string image_id, MirrorImage`.
    pub fn mirror_image_set(image_id: &str, image: &MirrorImage) -> Bytes {
        build(|e| {
            e.string(image_id);
            image.encode(e);
        })
    }

    /// `mirror_image_remove` input: `string image_id`.
    pub fn mirror_image_remove(image_id: &str) -> Bytes {
        string_arg(image_id)
    }

    /// `mirror_image_list` input: `string start_after, u64 max_return`.
    pub fn mirror_image_list(start_after: &str, max_return: u64) -> Bytes {
        start_max(start_after, max_return)
    }

    /// `mirror_image_list` reply: `map<image_id, global_image_id>`.
    pub fn mirror_image_list_reply(out: &Bytes) -> Result<BTreeMap<String, String>> {
        Decoder::new(out).map("mirror_images", |d| d.string("image_id"), |d| d.string("global_image_id"))
    }

    /// `mirror_image_status_list` input: `string start_after, u64 max_return`.
    pub fn mirror_image_status_list(start_after: &str, max_return: u64) -> Bytes {
        start_max(start_after, max_return)
    }

    /// `mirror_image_status_list` reply, its first map: `map<image_id, MirrorImage>` (every
    /// mirrored image's record in one call; the statuses that follow are not read).
    pub fn mirror_image_status_list_images(out: &Bytes) -> Result<BTreeMap<String, MirrorImage>> {
        Decoder::new(out).map("mirror_images", |d| d.string("image_id"), MirrorImage::decode)
    }

    /// `mirror_image_status_set` input: `string global_image_id, MirrorImageSiteStatus`.
    pub fn mirror_image_status_set(global_image_id: &str, status: &MirrorImageSiteStatus) -> Bytes {
        build(|e| {
            e.string(global_image_id);
            status.encode(e);
        })
    }

    /// `mirror_image_status_remove` input: `string global_image_id`.
    pub fn mirror_image_status_remove(global_image_id: &str) -> Bytes {
        string_arg(global_image_id)
    }

    /// `mirror_image_status_get` input: `string global_image_id`.
    pub fn mirror_image_status_get(global_image_id: &str) -> Bytes {
        string_arg(global_image_id)
    }

    /// `mirror_image_status_get` reply: `MirrorImageStatus`.
    pub fn mirror_image_status_get_reply(out: &Bytes) -> Result<MirrorImageStatus> {
        MirrorImageStatus::decode(&mut Decoder::new(out))
    }

    /// `mirror_image_status_remove_down` input: empty.
    pub fn mirror_image_status_remove_down() -> Bytes {
        Bytes::new()
    }

    /// `mirror_peer_ping` input: `string site_name, string mirror_uuid, u8 direction`
    /// (librbd always sends TX).
    pub fn mirror_peer_ping(site_name: &str, mirror_uuid: &str, direction: MirrorPeerDirection) -> Bytes {
        build(|e| {
            e.string(site_name);
            e.string(mirror_uuid);
            e.u8(direction.to_u8());
        })
    }

    // ---- image header -----------------------------------------------------

    /// `get_size` input: `u64 snap_id` ([`CEPH_NOSNAP`] for the head).
    pub fn get_size(snap_id: u64) -> Bytes {
        build(|e| e.u64(snap_id))
    }

    /// `get_size` reply: `(u8 order, u64 size)`.
    pub fn get_size_reply(out: &Bytes) -> Result<(u8, u64)> {
        let mut d = Decoder::new(out);
        Ok((d.u8("order")?, d.u64("size")?))
    }

    /// `get_flags` input: `u64 snap_id` ([`CEPH_NOSNAP`] for the head).
    pub fn get_flags(snap_id: u64) -> Bytes {
        build(|e| e.u64(snap_id))
    }

    /// `get_flags` reply: `u64 flags` (`RBD_FLAG_*`).
    pub fn get_flags_reply(out: &Bytes) -> Result<u64> {
        Decoder::new(out).u64("flags")
    }

    /// `get_protection_status` input: `u64 snap_id`.
    pub fn get_protection_status(snap_id: u64) -> Bytes {
        build(|e| e.u64(snap_id))
    }

    /// `get_protection_status` reply: `u8` (0 unprotected, 1 unprotecting, 2 protected).
    pub fn get_protection_status_reply(out: &Bytes) -> Result<ProtectionStatus> {
        let mut d = Decoder::new(out);
        let v = d.u8("protection_status")?;
        ProtectionStatus::from_u8(v).ok_or_else(|| invalid("protection_status", 0, v))
    }

    /// `set_size` input: `u64 size`.
    pub fn set_size(size: u64) -> Bytes {
        build(|e| e.u64(size))
    }

    /// `get_features` input: `u64 snap_id, bool read_only`.
    pub fn get_features(snap_id: u64, read_only: bool) -> Bytes {
        build(|e| {
            e.u64(snap_id);
            e.bool(read_only);
        })
    }

    /// `get_features` reply: `(u64 features, u64 incompatible_features)`.
    pub fn get_features_reply(out: &Bytes) -> Result<(u64, u64)> {
        let mut d = Decoder::new(out);
        Ok((d.u64("features")?, d.u64("incompatible_features")?))
    }

    /// `set_features` input: `u64 features, u64 mask`.
    pub fn set_features(features: u64, mask: u64) -> Bytes {
        build(|e| {
            e.u64(features);
            e.u64(mask);
        })
    }

    /// `get_stripe_unit_count` reply: `(u64 stripe_unit, u64 stripe_count)`.
    pub fn get_stripe_unit_count_reply(out: &Bytes) -> Result<(u64, u64)> {
        let mut d = Decoder::new(out);
        Ok((d.u64("stripe_unit")?, d.u64("stripe_count")?))
    }

    /// `get_snapcontext` input: empty.
    pub fn get_snapcontext() -> Bytes {
        Bytes::new()
    }

    /// `get_snapcontext` reply.
    pub fn get_snapcontext_reply(out: &Bytes) -> Result<SnapContext> {
        SnapContext::decode(&mut Decoder::new(out))
    }

    /// `get_object_prefix` input: empty.
    pub fn get_object_prefix() -> Bytes {
        Bytes::new()
    }

    /// `get_object_prefix` reply: `string object_prefix`.
    pub fn get_object_prefix_reply(out: &Bytes) -> Result<String> {
        string_reply(out, "object_prefix")
    }

    /// `get_id` input (on `rbd_id.<name>`): empty.
    pub fn get_id() -> Bytes {
        Bytes::new()
    }

    /// `get_id` reply: `string id`.
    pub fn get_id_reply(out: &Bytes) -> Result<String> {
        string_reply(out, "image_id")
    }

    /// `set_id` input: `string id`.
    pub fn set_id(id: &str) -> Bytes {
        string_arg(id)
    }

    /// `snapshot_get` input: `u64 snap_id`.
    pub fn snapshot_get(snap_id: u64) -> Bytes {
        build(|e| e.u64(snap_id))
    }

    /// `snapshot_get` reply: `SnapshotInfo`.
    pub fn snapshot_get_reply(out: &Bytes) -> Result<SnapshotInfo> {
        SnapshotInfo::decode(&mut Decoder::new(out))
    }

    /// `snapshot_add` input: `string snap_name, u64 snap_id, SnapshotNamespace`
    /// (name before id, as cls_rbd_client.cc encodes it).
    pub fn snapshot_add(snap_id: u64, snap_name: &str, ns: &SnapshotNamespace) -> Bytes {
        build(|e| {
            e.string(snap_name);
            e.u64(snap_id);
            ns.encode(e);
        })
    }

    /// `child_detach` input (clone v2, on the parent's header): `snapid_t snap_id,
    /// ChildImageSpec {int64 pool_id, string image_id, string pool_namespace}` (envelope 2, 1;
    /// cls_rbd_types.cc).
    pub fn child_detach(
        snap_id: u64,
        child_pool_id: i64,
        child_namespace: &str,
        child_image_id: &str,
    ) -> Bytes {
        build(|e| {
            e.u64(snap_id);
            e.envelope(2, 1, |e| {
                e.i64(child_pool_id);
                e.string(child_image_id);
                e.string(child_namespace);
            });
        })
    }

    /// `remove_child` input (clone v1, on the child pool's `rbd_children`): the parent as
    /// `int64 pool_id, string image_id, snapid_t snap_id`, then `string child_image_id`
    /// (cls_rbd_client.cc).
    pub fn remove_child(
        parent_pool_id: i64,
        parent_image_id: &str,
        parent_snap_id: u64,
        child_image_id: &str,
    ) -> Bytes {
        build(|e| {
            e.i64(parent_pool_id);
            e.string(parent_image_id);
            e.u64(parent_snap_id);
            e.string(child_image_id);
        })
    }

    /// `dir_rename_image` input (on `rbd_directory`): `string src, string dest, string id`
    /// (cls_rbd_client.cc).
    pub fn dir_rename_image(src: &str, dest: &str, id: &str) -> Bytes {
        build(|e| {
            e.string(src);
            e.string(dest);
            e.string(id);
        })
    }

    /// `dir_remove_image` input (on `rbd_directory`): `string name, string id`
    /// (cls_rbd_client.cc).
    pub fn dir_remove_image(name: &str, id: &str) -> Bytes {
        build(|e| {
            e.string(name);
            e.string(id);
        })
    }

    // ---- rbd_trash ------------------------------------------------------

    /// `trash_add` input: `string id, TrashImageSpec` (cls_rbd_client.cc).
    pub fn trash_add(id: &str, spec: &TrashImageSpec) -> Bytes {
        build(|e| {
            e.string(id);
            spec.encode(e);
        })
    }

    /// `trash_list` input: `string start_after, u64 max_return`.
    pub fn trash_list(start_after: &str, max_return: u64) -> Bytes {
        start_max(start_after, max_return)
    }

    /// `trash_list` reply: `map<image_id, TrashImageSpec>`.
    pub fn trash_list_reply(out: &Bytes) -> Result<BTreeMap<String, TrashImageSpec>> {
        Decoder::new(out).map("trash_images", |d| d.string("image_id"), TrashImageSpec::decode)
    }

    /// `snapshot_remove` input: `u64 snap_id` (verified against cls_rbd_client.cc).
    pub fn snapshot_remove(snap_id: u64) -> Bytes {
        build(|e| e.u64(snap_id))
    }

    /// `snapshot_rename` input: `u64 src_snap_id, string dst_name` (cls_rbd_client.cc).
    pub fn snapshot_rename(src_snap_id: u64, dst_name: &str) -> Bytes {
        build(|e| {
            e.u64(src_snap_id);
            e.string(dst_name);
        })
    }

    /// `set_protection_status` input: `u64 snap_id, u8 status` (0 unprotected,
    /// 1 unprotecting, 2 protected).
    pub fn set_protection_status(snap_id: u64, status: ProtectionStatus) -> Bytes {
        build(|e| {
            e.u64(snap_id);
            e.u8(status.to_u8());
        })
    }

    /// `mirror_image_snapshot_unlink_peer` input: `u64 snap_id, string mirror_peer_uuid`.
    pub fn mirror_image_snapshot_unlink_peer(snap_id: u64, mirror_peer_uuid: &str) -> Bytes {
        build(|e| {
            e.u64(snap_id);
            e.string(mirror_peer_uuid);
        })
    }

    /// `mirror_image_snapshot_set_copy_progress` input:
    /// `u64 snap_id, bool complete, u64 last_copied_object_number`.
    pub fn mirror_image_snapshot_set_copy_progress(
        snap_id: u64,
        complete: bool,
        copy_progress: u64,
    ) -> Bytes {
        build(|e| {
            e.u64(snap_id);
            e.bool(complete);
            e.u64(copy_progress);
        })
    }

    /// `metadata_set` input: `map<string, bufferlist>`.
    pub fn metadata_set(data: &BTreeMap<String, Bytes>) -> Bytes {
        build(|e| e.map(data, |e, k| e.string(k), |e, v| e.bytes(v)))
    }

    /// `metadata_remove` input: `string key`.
    pub fn metadata_remove(key: &str) -> Bytes {
        string_arg(key)
    }

    /// `metadata_list` input: `string start_after, u64 max_return`.
    pub fn metadata_list(start_after: &str, max_return: u64) -> Bytes {
        start_max(start_after, max_return)
    }

    /// `metadata_list` reply: `map<string, bufferlist>`.
    pub fn metadata_list_reply(out: &Bytes) -> Result<BTreeMap<String, Bytes>> {
        Decoder::new(out).map("metadata", |d| d.string("key"), |d| d.bytes("value"))
    }

    // ---- object map (on rbd_object_map.<id>[.<snap>]) -----------------

    /// `object_map_update` input: `u64 start_object_no, u64 end_object_no,
    /// u8 new_state, optional<u8> current_state`.
    pub fn object_map_update(
        start_object_no: u64,
        end_object_no: u64,
        new_state: u8,
        current_state: Option<u8>,
    ) -> Bytes {
        build(|e| {
            e.u64(start_object_no);
            e.u64(end_object_no);
            e.u8(new_state);
            e.optional(current_state.as_ref(), |e, s| e.u8(*s));
        })
    }

    /// `object_map_resize` input: `u64 object_count, u8 default_state`.
    pub fn object_map_resize(num_objects: u64, default_state: u8) -> Bytes {
        build(|e| {
            e.u64(num_objects);
            e.u8(default_state);
        })
    }

    /// `object_map_save` input: a `BitVector<2>` with CRCs disabled (as
    /// the librbd client sends it). Only the low two bits of each state count.
    /// The layout is `snapshot_differ::object_map`'s.
    pub fn object_map_save(states: &[u8]) -> Bytes {
        ObjectMap::from_states(states.iter().map(|s| ObjectState::from_bits(*s))).encode(false)
    }

    /// `object_map_load` reply: a `BitVector<2>` (CRCs disabled by cls_rbd), one state per
    /// object, decoded by `snapshot_differ::ObjectMap` (which checks CRCs when present).
    pub fn object_map_load_reply(out: &Bytes) -> Result<Vec<u8>> {
        let map = ObjectMap::decode(out).map_err(|e| match e {
            ObjectMapError::Malformed { source, .. } => source,
            ObjectMapError::DataTruncated { needed, offset, remaining, .. } => {
                DecodeError::LengthOutOfBounds {
                    field: "bit_vector_data",
                    offset,
                    claimed: needed,
                    remaining,
                }
            }
            ObjectMapError::HeaderCrc { computed, .. } | ObjectMapError::DataCrc { computed, .. } => {
                DecodeError::InvalidValue { field: "bit_vector_crc", offset: 0, value: u64::from(computed) }
            }
            ObjectMapError::CrcCount { found, .. } => {
                DecodeError::InvalidValue { field: "bit_vector_crc_count", offset: 0, value: found }
            }
        })?;
        Ok(map.iter().map(ObjectState::bits).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::args::*;
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn object_names() {
        assert_eq!(image_data_object_name("rbd_data.10ab", 0x1f), "rbd_data.10ab.000000000000001f");
        assert_eq!(header_object_name("10ab"), "rbd_header.10ab");
        assert_eq!(id_object_name("vm1"), "rbd_id.vm1");
        assert_eq!(object_map_name("10ab", None), "rbd_object_map.10ab");
        assert_eq!(object_map_name("10ab", Some(CEPH_NOSNAP)), "rbd_object_map.10ab");
        assert_eq!(object_map_name("10ab", Some(0x30)), "rbd_object_map.10ab.0000000000000030");
        assert_eq!(CEPH_NOSNAP, 0xffff_ffff_ffff_fffe);
    }

    #[test]
    fn mirror_image_status_list_reply_images() {
        let image = MirrorImage {
            global_image_id: "g".into(),
            state: MirrorImageState::Enabled,
            mode: MirrorImageMode::Snapshot,
        };
        let reply = build(|e| {
            e.u32(1);
            e.string("10ab");
            image.encode(e);
            e.u32(0); // the statuses
        });
        assert_eq!(mirror_image_status_list_images(&reply).unwrap().get("10ab"), Some(&image));
        assert_eq!(mirror_image_status_list("x", 7), mirror_image_list("x", 7));
    }

    #[test]
    fn trash_image_spec_bytes() {
        let spec = TrashImageSpec {
            source: TrashImageSource::Mirroring,
            name: "vm".into(),
            deletion_time: UTime { sec: 10, nsec: 1 },
            deferment_end_time: UTime { sec: 30, nsec: 1 },
            state: TrashImageState::Normal,
        };
        let b = spec.to_bytes();
        // ENCODE_START(2, 1) len 24 | u8 source 1 | string "vm" | utime 10,1 | utime 30,1 | u8 state 0
        let want = ["0201", "18000000", "01", "02000000766d", "0a00000001000000", "1e00000001000000", "00"];
        assert_eq!(hex(&b), want.concat());
        assert_eq!(TrashImageSpec::decode(&mut Decoder::new(&b)).unwrap(), spec);
        // A v1 record (no state) is in the normal state; unknown sources are errors.
        let v1 = build(|e| {
            e.envelope(1, 1, |e| {
                e.u8(0);
                e.string("old");
                e.utime(UTime::default());
                e.utime(UTime::default());
            })
        });
        let old = TrashImageSpec::decode(&mut Decoder::new(&v1)).unwrap();
        assert_eq!(
            (old.source, old.state, old.name.as_str()),
            (TrashImageSource::User, TrashImageState::Normal, "old")
        );
        let bad = build(|e| e.envelope(2, 1, |e| e.u8(9)));
        assert!(TrashImageSpec::decode(&mut Decoder::new(&bad)).is_err());
        for v in 0..=4 {
            assert_eq!(TrashImageSource::from_u8(v).map(TrashImageSource::to_u8), Some(v));
        }
        for v in 0..=3 {
            assert_eq!(TrashImageState::from_u8(v).map(TrashImageState::to_u8), Some(v));
        }
        // trash_add: string id, then the spec; trash_list's reply: a map of them.
        assert_eq!(
            trash_add("10ab", &spec),
            build(|e| {
                e.string("10ab");
                spec.encode(e);
            })
        );
        let reply = build(|e| {
            e.u32(1);
            e.string("10ab");
            spec.encode(e);
        });
        assert_eq!(trash_list_reply(&reply).unwrap().get("10ab"), Some(&spec));
        assert_eq!(hex(&dir_remove_image("a", "1")), "01000000610100000031");
    }

    #[test]
    fn mirror_image_map_bytes() {
        let map = MirrorImageMap {
            instance_id: "4123".into(),
            mapped_time: UTime { sec: 1, nsec: 2 },
            data: Bytes::from_static(&[1, 1, 4, 0, 0, 0, 0, 0, 0, 0]),
        };
        let b = map.to_bytes();
        // ENCODE_START(1,1) len; string "4123"; utime 1,2; bufferlist of 10 bytes.
        assert_eq!(hex(&b), "01011e000000040000003431323301000000020000000a00000001010400000000000000");
        assert_eq!(MirrorImageMap::decode_all(&b).unwrap(), map);
        let upd = mirror_image_map_update("gid", &map);
        assert_eq!(&upd[..7], b"\x03\0\0\0gid");
        let list = build(|e| {
            e.u32(1);
            e.string("gid");
            map.encode(e);
        });
        assert_eq!(mirror_image_map_list_reply(&list).unwrap().get("gid"), Some(&map));
        let ids = build(|e| {
            e.u32(2);
            e.string("1");
            e.string("22");
        });
        assert_eq!(mirror_instances_list_reply(&ids).unwrap(), [&b"1"[..], b"22"]);
        assert_eq!(mirror_instance_id(b"\xff1"), build(|e| e.bytes(b"\xff1")));
        assert_eq!(mirror_instance_id(b"1"), build(|e| e.string("1")));
    }

    #[test]
    fn mirror_image_bytes() {
        // ENCODE_START(2,1): 02 01 len=0c000000; string "gid-1": 05000000 "gid-1";
        // u8 state ENABLED=01; u8 mode SNAPSHOT=01. Body = 4+5+1+1 = 11 = 0x0b.
        let m = MirrorImage {
            global_image_id: "gid-1".into(),
            state: MirrorImageState::Enabled,
            mode: MirrorImageMode::Snapshot,
        };
        let b = m.to_bytes();
        assert_eq!(hex(&b), "02010b000000050000006769642d310101");
        assert_eq!(mirror_image_get_reply(&b).unwrap(), m);
        // mirror_image_set = string image_id "ab" + MirrorImage
        assert_eq!(hex(&mirror_image_set("ab", &m)), format!("020000006162{}", hex(&b)));
    }

    #[test]
    fn mirror_image_v1_and_v3() {
        // v1 (compat 1): no mode byte -> Journal
        let v1 = Bytes::from_static(&[1, 1, 6, 0, 0, 0, 1, 0, 0, 0, b'g', 0]);
        let m = mirror_image_get_reply(&v1).unwrap();
        assert_eq!(m.global_image_id, "g");
        assert_eq!(m.state, MirrorImageState::Disabling);
        assert_eq!(m.mode, MirrorImageMode::Journal);
        // v3 with a tail (group spec) is skipped; trailing data after it is left alone
        let v3 = Bytes::from_static(&[3, 1, 10, 0, 0, 0, 1, 0, 0, 0, b'g', 3, 1, 0xaa, 0xbb, 0xcc]);
        let m = mirror_image_get_reply(&v3).unwrap();
        assert_eq!((m.state, m.mode), (MirrorImageState::Creating, MirrorImageMode::Snapshot));
        // compat 3 is rejected
        let bad = Bytes::from_static(&[3, 3, 0, 0, 0, 0]);
        assert!(matches!(mirror_image_get_reply(&bad), Err(DecodeError::UnsupportedVersion { .. })));
        // unknown state value
        let bad = Bytes::from_static(&[2, 1, 6, 0, 0, 0, 0, 0, 0, 0, 9, 0]);
        assert!(matches!(mirror_image_get_reply(&bad), Err(DecodeError::InvalidValue { value: 9, .. })));
    }

    #[test]
    fn site_status_bytes() {
        // local: ENCODE_START(1,1), no mirror_uuid: 01 01 len;
        // u8 state REPLAYING=04; string "ok" 02000000 6f6b; utime 0a000000 14000000; bool up 01
        // body = 1 + 6 + 8 + 1 = 16 = 0x10
        let mut s = MirrorImageSiteStatus {
            mirror_uuid: String::new(),
            state: MirrorImageStatusState::Replaying,
            description: "ok".into(),
            last_update: UTime { sec: 10, nsec: 20 },
            up: true,
        };
        assert_eq!(hex(&s.to_bytes()), "0101100000000402000000".to_owned() + "6f6b0a0000001400000001");
        assert_eq!(MirrorImageSiteStatus::decode_all(&s.to_bytes()).unwrap(), s);
        // remote: ENCODE_START(2,2), string mirror_uuid "u" first; body = 5 + 16 = 21 = 0x15
        s.mirror_uuid = "u".into();
        assert_eq!(
            hex(&s.to_bytes()),
            "020215000000".to_owned() + "0100000075" + "0402000000" + "6f6b0a0000001400000001"
        );
        assert_eq!(MirrorImageSiteStatus::decode_all(&s.to_bytes()).unwrap(), s);
        // status_set = string global id + status
        let b = mirror_image_status_set("g", &s);
        assert_eq!(&b[..5], &[1, 0, 0, 0, b'g']);
        assert_eq!(MirrorImageStatusState::StartingReplay.as_str(), "starting_replay");
        for v in 0..=6 {
            assert_eq!(MirrorImageStatusState::from_u8(v).unwrap().to_u8(), v);
        }
    }

    #[test]
    fn image_status_round_trip() {
        let local = MirrorImageSiteStatus { state: MirrorImageStatusState::Stopped, ..Default::default() };
        let remote = MirrorImageSiteStatus {
            mirror_uuid: "site-b".into(),
            state: MirrorImageStatusState::Replaying,
            description: "d".into(),
            last_update: UTime { sec: 1, nsec: 2 },
            up: true,
        };
        for st in [vec![local.clone(), remote.clone()], vec![remote.clone()], vec![local.clone()], vec![]] {
            let s = MirrorImageStatus { site_statuses: st };
            assert_eq!(mirror_image_status_get_reply(&s.to_bytes()).unwrap(), s);
        }
        // v1 record: local only
        let mut e = Encoder::new();
        e.envelope(1, 1, |e| {
            e.u8(6);
            e.string("");
            e.utime(UTime::default());
            e.bool(false);
        });
        let s = mirror_image_status_get_reply(&e.into_bytes()).unwrap();
        assert_eq!(s.site_statuses, vec![local]);
    }

    #[test]
    fn argument_bytes() {
        assert_eq!(hex(&mirror_peer_ping("a", "b", MirrorPeerDirection::Tx)), "0100000061010000006201");
        assert_eq!(hex(&mirror_image_list("", 1024)), "000000000004000000000000");
        // object_map_update(1, 5, EXISTS, Some(PENDING)): u64 1, u64 5, u8 1, optional: 01 02
        assert_eq!(
            hex(&object_map_update(1, 5, OBJECT_EXISTS, Some(OBJECT_PENDING))),
            "0100000000000000050000000000000001".to_owned() + "0102"
        );
        assert_eq!(
            hex(&object_map_update(0, 1, 0, None)),
            "0000000000000000010000000000000000".to_owned() + "00"
        );
        assert_eq!(hex(&object_map_resize(3, OBJECT_NONEXISTENT)), "030000000000000000");
        assert_eq!(hex(&get_size(CEPH_NOSNAP)), "feffffffffffffff");
        assert_eq!(hex(&get_features(CEPH_NOSNAP, true)), "feffffffffffffff01");
        assert_eq!(hex(&set_size(0x1000)), "0010000000000000");
        assert_eq!(hex(&set_id("x")), "0100000078");
        assert!(mirror_image_status_remove_down().is_empty());
        assert!(get_snapcontext().is_empty());
        assert_eq!(
            hex(&snapshot_add(5, "s", &SnapshotNamespace::User)),
            "0100000073050000000000000001010400000000000000"
        );
        assert_eq!(hex(&mirror_image_snapshot_unlink_peer(2, "p")), "02000000000000000100000070");
        assert_eq!(
            hex(&mirror_image_snapshot_set_copy_progress(2, true, 7)),
            "0200000000000000010700000000000000"
        );
        let mut md = BTreeMap::new();
        md.insert("k".to_owned(), Bytes::from_static(b"v"));
        assert_eq!(hex(&metadata_set(&md)), "01000000010000006b0100000076");
        assert_eq!(metadata_list_reply(&metadata_set(&md)).unwrap(), md);
    }

    #[test]
    fn reply_decoders() {
        assert_eq!(mirror_uuid_get_reply(&Bytes::from_static(b"\x02\0\0\0ab")).unwrap(), "ab");
        assert_eq!(
            get_size_reply(&Bytes::from_static(&[22, 0, 0, 0, 64, 0, 0, 0, 0])).unwrap(),
            (22, 1 << 30)
        );
        let f = Bytes::from_static(&[0x3d, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get_features_reply(&f).unwrap(), (0x3d, 1));
        let sc = SnapContext { seq: 9, snaps: vec![9, 4] };
        assert_eq!(get_snapcontext_reply(&sc.to_bytes()).unwrap(), sc);
        assert_eq!(
            hex(&sc.to_bytes()),
            "0900000000000000020000000900000000000000".to_owned() + "0400000000000000"
        );
        let mut m = BTreeMap::new();
        m.insert("img1".to_owned(), "g1".to_owned());
        let mut e = Encoder::new();
        e.map(&m, |e, k| e.string(k), |e, v| e.string(v));
        assert_eq!(mirror_image_list_reply(&e.into_bytes()).unwrap(), m);
        assert_eq!(get_object_prefix_reply(&string_bytes("rbd_data.1")).unwrap(), "rbd_data.1");
        assert_eq!(get_id_reply(&string_bytes("1")).unwrap(), "1");
        assert_eq!(mirror_image_get_image_id_reply(&string_bytes("id")).unwrap(), "id");
        assert_eq!(mirror_mode_get_reply(&Bytes::from_static(&[2, 0, 0, 0])).unwrap(), 2);
        let su = Bytes::from_static(&[0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get_stripe_unit_count_reply(&su).unwrap(), (65536, 4));
    }

    fn string_bytes(s: &str) -> Bytes {
        let mut e = Encoder::new();
        e.string(s);
        e.into_bytes()
    }

    #[test]
    fn snapshot_info_round_trip() {
        let si = SnapshotInfo {
            id: 4,
            snapshot_namespace: SnapshotNamespace::User,
            name: "s".into(),
            image_size: 1 << 30,
            timestamp: UTime { sec: 5, nsec: 6 },
            child_count: 2,
        };
        let b = si.to_bytes();
        // 01 01 len | u64 4 | ns ENV(1,1){u32 0} (10 bytes) | string "s" (5) | u64 | utime | u32
        assert_eq!(&b[..2], &[1, 1]);
        assert_eq!(b.len(), 6 + 8 + 10 + 5 + 8 + 8 + 4);
        assert_eq!(snapshot_get_reply(&b).unwrap(), si);
        assert_eq!(hex(&snapshot_get(4)), "0400000000000000");
    }

    #[test]
    fn bit_vector_layout() {
        // 5 states: header bl = 0e000000 | 01 01 08000000 | u64 5;
        // data: [1,2,3,0] -> 01_10_11_00 = 0x6c, [3] -> 11_000000 = 0xc0; empty footer 00000000
        let states = [1u8, 2, 3, 0, 3];
        let b = object_map_save(&states);
        assert_eq!(hex(&b), "0e000000010108000000".to_owned() + "0500000000000000" + "6cc0" + "00000000");
        assert_eq!(object_map_load_reply(&b).unwrap(), states.to_vec());
        // a footer with CRCs (as the object stores it) is verified
        let with_crcs =
            ObjectMap::from_states(states.iter().map(|s| ObjectState::from_bits(*s))).encode(true);
        assert_eq!(object_map_load_reply(&with_crcs).unwrap(), states.to_vec());
        let mut e = Encoder::new();
        e.raw(&b[..b.len() - 4]);
        e.bytes(&[1, 2, 3, 4, 1, 0, 0, 0, 5, 6, 7, 8]);
        assert!(object_map_load_reply(&e.into_bytes()).is_err());
        assert_eq!(object_map_load_reply(&object_map_save(&[])).unwrap(), Vec::<u8>::new());
        // a huge count is rejected without allocating
        let mut e = Encoder::new();
        let mut h = Encoder::new();
        h.envelope(1, 1, |h| h.u64(u64::MAX));
        e.bytes(&h.into_bytes());
        assert!(matches!(object_map_load_reply(&e.into_bytes()), Err(DecodeError::LengthOutOfBounds { .. })));
    }
    #[test]
    fn child_detach_and_remove_child_inputs_as_cls_rbd_client_encodes_them() {
        let v2 = args::child_detach(5, 2, "", "abc");
        let mut want = 5u64.to_le_bytes().to_vec();
        want.extend([2, 1]);
        want.extend(19u32.to_le_bytes());
        want.extend(2i64.to_le_bytes());
        want.extend(3u32.to_le_bytes());
        want.extend(b"abc");
        want.extend(0u32.to_le_bytes());
        assert_eq!(&v2[..], &want[..]);

        let v1 = args::remove_child(2, "p1", 7, "c1");
        let mut want = 2i64.to_le_bytes().to_vec();
        want.extend(2u32.to_le_bytes());
        want.extend(b"p1");
        want.extend(7u64.to_le_bytes());
        want.extend(2u32.to_le_bytes());
        want.extend(b"c1");
        assert_eq!(&v1[..], &want[..]);
    }
}
