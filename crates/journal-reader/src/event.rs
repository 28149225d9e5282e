//! librbd journal payloads: `EventEntry` (every entry's payload), `TagData`
//! (tag data) and `ClientData` (client data).
//!
//! Verified against src/librbd/journal/Types.cc (Pacific) and
//! src/cls/rbd/cls_rbd_types.cc (Pacific) for `SnapshotNamespace`:
//!
//! * `EventEntry` = `ENCODE_START(5, 1)` { `u32 event_type`, fields } followed
//!   by a separate `ENCODE_START(1, 1)` { `utime_t timestamp` } trailer that
//!   is read only when the first envelope's `struct_v >= 4`. Decoding uses
//!   `DECODE_START(1)`, so any compat above 1 is rejected.
//! * Per-event fields are guarded by the *outer* `struct_v`: the discard's
//!   `skip_partial_discard` needs v4, `discard_granularity_bytes` v5; the
//!   snapshot namespace of snap events needs v4 (SnapCreate also at v3);
//!   `SnapRename.src_snap_name` needs v2.
//! * `OpFinish` writes its op tid twice (base class and own field).
//! * `ClientData` = `ENCODE_START(2, 1)` { `u32 client_meta_type`, meta };
//!   sync points carry a snapshot namespace only when `struct_v >= 2`.
//! * `TagData` has no envelope.

use std::collections::BTreeMap;

use bytes::Bytes;

use rbd_types::encoding::{Decode, DecodeResult, Decoder, Encode, Encoder, UTime};
use rbd_types::SnapshotNamespace;

// ---------------------------------------------------------------------------
// Events

/// Fields shared by SnapCreate/SnapRemove/SnapProtect/SnapUnprotect/SnapRollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SnapEvent {
    /// Operation tid (paired with an `OpFinish`).
    pub op_tid: u64,
    /// Snapshot name.
    pub snap_name: String,
    /// Snapshot namespace (user namespace when the writer was older than v4).
    pub snap_namespace: SnapshotNamespace,
}

/// A librbd journal event (`librbd::journal::Event` variants).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// Type 0. (`skip_partial_discard` on the wire is
    /// `discard_granularity_bytes > 0`.)
    AioDiscard {
        /// Image offset.
        offset: u64,
        /// Length.
        length: u64,
        /// Discard granularity; from a pre-v5 writer, `u32::MAX` if it set
        /// `skip_partial_discard`, else 0 (as librbd maps it).
        discard_granularity_bytes: u32,
    },
    /// Type 1.
    AioWrite {
        /// Image offset.
        offset: u64,
        /// Length.
        length: u64,
        /// Data, a zero-copy slice of the entry payload.
        data: Bytes,
    },
    /// Type 2.
    AioFlush,
    /// Type 3.
    OpFinish {
        /// Operation tid.
        op_tid: u64,
        /// Result (`0` or a negative errno).
        r: i32,
    },
    /// Type 4.
    SnapCreate(SnapEvent),
    /// Type 5.
    SnapRemove(SnapEvent),
    /// Type 6.
    SnapRename {
        /// Operation tid.
        op_tid: u64,
        /// New name.
        dst_snap_name: String,
        /// Snap id (of the primary image).
        snap_id: u64,
        /// Old name (empty from v1 writers).
        src_snap_name: String,
    },
    /// Type 7.
    SnapProtect(SnapEvent),
    /// Type 8.
    SnapUnprotect(SnapEvent),
    /// Type 9.
    SnapRollback(SnapEvent),
    /// Type 10.
    Rename {
        /// Operation tid.
        op_tid: u64,
        /// New image name.
        image_name: String,
    },
    /// Type 11.
    Resize {
        /// Operation tid.
        op_tid: u64,
        /// New size.
        size: u64,
    },
    /// Type 12.
    Flatten {
        /// Operation tid.
        op_tid: u64,
    },
    /// Type 13.
    DemotePromote,
    /// Type 14.
    SnapLimit {
        /// Operation tid.
        op_tid: u64,
        /// Snapshot limit.
        limit: u64,
    },
    /// Type 15.
    UpdateFeatures {
        /// Operation tid.
        op_tid: u64,
        /// Feature bits.
        features: u64,
        /// Enable or disable.
        enabled: bool,
    },
    /// Type 16.
    MetadataSet {
        /// Operation tid.
        op_tid: u64,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Type 17.
    MetadataRemove {
        /// Operation tid.
        op_tid: u64,
        /// Key.
        key: String,
    },
    /// Type 18.
    AioWriteSame {
        /// Image offset.
        offset: u64,
        /// Length.
        length: u64,
        /// Pattern, a zero-copy slice.
        data: Bytes,
    },
    /// Type 19.
    AioCompareAndWrite {
        /// Image offset.
        offset: u64,
        /// Length.
        length: u64,
        /// Data to compare, a zero-copy slice.
        cmp_data: Bytes,
        /// Data to write, a zero-copy slice.
        write_data: Bytes,
    },
    /// An event type this decoder does not know (librbd's `UnknownEvent`: its body skipped,
    /// and its replay does nothing, so that an entry of a newer writer does not stop replay).
    Unknown {
        /// The `u32` event type found.
        event_type: u32,
    },
}

/// Event type numbers (`librbd::journal::EventType`).
pub mod event_type {
    #![allow(missing_docs)]
    pub const AIO_DISCARD: u32 = 0;
    pub const AIO_WRITE: u32 = 1;
    pub const AIO_FLUSH: u32 = 2;
    pub const OP_FINISH: u32 = 3;
    pub const SNAP_CREATE: u32 = 4;
    pub const SNAP_REMOVE: u32 = 5;
    pub const SNAP_RENAME: u32 = 6;
    pub const SNAP_PROTECT: u32 = 7;
    pub const SNAP_UNPROTECT: u32 = 8;
    pub const SNAP_ROLLBACK: u32 = 9;
    pub const RENAME: u32 = 10;
    pub const RESIZE: u32 = 11;
    pub const FLATTEN: u32 = 12;
    pub const DEMOTE_PROMOTE: u32 = 13;
    pub const SNAP_LIMIT: u32 = 14;
    pub const UPDATE_FEATURES: u32 = 15;
    pub const METADATA_SET: u32 = 16;
    pub const METADATA_REMOVE: u32 = 17;
    pub const AIO_WRITESAME: u32 = 18;
    pub const AIO_COMPARE_AND_WRITE: u32 = 19;
}

impl Event {
    /// The wire event type.
    pub fn event_type(&self) -> u32 {
        use self::event_type as t;
        match self {
            Event::AioDiscard { .. } => t::AIO_DISCARD,
            Event::AioWrite { .. } => t::AIO_WRITE,
            Event::AioFlush => t::AIO_FLUSH,
            Event::OpFinish { .. } => t::OP_FINISH,
            Event::SnapCreate(_) => t::SNAP_CREATE,
            Event::SnapRemove(_) => t::SNAP_REMOVE,
            Event::SnapRename { .. } => t::SNAP_RENAME,
            Event::SnapProtect(_) => t::SNAP_PROTECT,
            Event::SnapUnprotect(_) => t::SNAP_UNPROTECT,
            Event::SnapRollback(_) => t::SNAP_ROLLBACK,
            Event::Rename { .. } => t::RENAME,
            Event::Resize { .. } => t::RESIZE,
            Event::Flatten { .. } => t::FLATTEN,
            Event::DemotePromote => t::DEMOTE_PROMOTE,
            Event::SnapLimit { .. } => t::SNAP_LIMIT,
            Event::UpdateFeatures { .. } => t::UPDATE_FEATURES,
            Event::MetadataSet { .. } => t::METADATA_SET,
            Event::MetadataRemove { .. } => t::METADATA_REMOVE,
            Event::AioWriteSame { .. } => t::AIO_WRITESAME,
            Event::AioCompareAndWrite { .. } => t::AIO_COMPARE_AND_WRITE,
            Event::Unknown { event_type } => *event_type,
        }
    }

    /// The operation tid of maintenance-operation events (`OpEventBase`).
    pub fn op_tid(&self) -> Option<u64> {
        match self {
            Event::OpFinish { op_tid, .. }
            | Event::SnapRename { op_tid, .. }
            | Event::Rename { op_tid, .. }
            | Event::Resize { op_tid, .. }
            | Event::Flatten { op_tid }
            | Event::SnapLimit { op_tid, .. }
            | Event::UpdateFeatures { op_tid, .. }
            | Event::MetadataSet { op_tid, .. }
            | Event::MetadataRemove { op_tid, .. } => Some(*op_tid),
            Event::SnapCreate(s)
            | Event::SnapRemove(s)
            | Event::SnapProtect(s)
            | Event::SnapUnprotect(s)
            | Event::SnapRollback(s) => Some(s.op_tid),
            _ => None,
        }
    }

    fn decode_body(d: &mut Decoder<'_>, v: u8, ty: u32) -> DecodeResult<Self> {
        use self::event_type as t;
        let snap = |d: &mut Decoder<'_>, v: u8, create: bool| -> DecodeResult<SnapEvent> {
            let op_tid = d.u64("op_tid")?;
            let snap_name = d.string("snap_name")?;
            // v4+: namespace after the name; a v3 SnapCreate also put it there.
            let snap_namespace = if v >= 4 || (create && v == 3) {
                SnapshotNamespace::decode(d)?
            } else {
                SnapshotNamespace::User
            };
            Ok(SnapEvent { op_tid, snap_name, snap_namespace })
        };
        Ok(match ty {
            t::AIO_DISCARD => {
                let offset = d.u64("offset")?;
                let length = d.u64("length")?;
                let skip_partial = if v >= 4 { d.bool("skip_partial_discard")? } else { false };
                let discard_granularity_bytes = if v >= 5 {
                    d.u32("discard_granularity_bytes")?
                } else if skip_partial {
                    u32::MAX
                } else {
                    0
                };
                Event::AioDiscard { offset, length, discard_granularity_bytes }
            }
            t::AIO_WRITE => {
                Event::AioWrite { offset: d.u64("offset")?, length: d.u64("length")?, data: d.bytes("data")? }
            }
            t::AIO_FLUSH => Event::AioFlush,
            t::OP_FINISH => {
                let _base_op_tid = d.u64("op_tid")?;
                Event::OpFinish { op_tid: d.u64("op_tid")?, r: d.i32("r")? }
            }
            t::SNAP_CREATE => Event::SnapCreate(snap(d, v, true)?),
            t::SNAP_REMOVE => Event::SnapRemove(snap(d, v, false)?),
            t::SNAP_RENAME => Event::SnapRename {
                op_tid: d.u64("op_tid")?,
                dst_snap_name: d.string("dst_snap_name")?,
                snap_id: d.u64("snap_id")?,
                src_snap_name: if v >= 2 { d.string("src_snap_name")? } else { String::new() },
            },
            t::SNAP_PROTECT => Event::SnapProtect(snap(d, v, false)?),
            t::SNAP_UNPROTECT => Event::SnapUnprotect(snap(d, v, false)?),
            t::SNAP_ROLLBACK => Event::SnapRollback(snap(d, v, false)?),
            t::RENAME => Event::Rename { op_tid: d.u64("op_tid")?, image_name: d.string("image_name")? },
            t::RESIZE => Event::Resize { op_tid: d.u64("op_tid")?, size: d.u64("size")? },
            t::FLATTEN => Event::Flatten { op_tid: d.u64("op_tid")? },
            t::DEMOTE_PROMOTE => Event::DemotePromote,
            t::SNAP_LIMIT => Event::SnapLimit { op_tid: d.u64("op_tid")?, limit: d.u64("limit")? },
            t::UPDATE_FEATURES => Event::UpdateFeatures {
                op_tid: d.u64("op_tid")?,
                features: d.u64("features")?,
                enabled: d.bool("enabled")?,
            },
            t::METADATA_SET => Event::MetadataSet {
                op_tid: d.u64("op_tid")?,
                key: d.string("key")?,
                value: d.string("value")?,
            },
            t::METADATA_REMOVE => Event::MetadataRemove { op_tid: d.u64("op_tid")?, key: d.string("key")? },
            t::AIO_WRITESAME => Event::AioWriteSame {
                offset: d.u64("offset")?,
                length: d.u64("length")?,
                data: d.bytes("data")?,
            },
            t::AIO_COMPARE_AND_WRITE => Event::AioCompareAndWrite {
                offset: d.u64("offset")?,
                length: d.u64("length")?,
                cmp_data: d.bytes("cmp_data")?,
                write_data: d.bytes("write_data")?,
            },
            // The envelope skips the body it does not know, as librbd's `DECODE_FINISH`.
            event_type => Event::Unknown { event_type },
        })
    }

    fn encode_body(&self, e: &mut Encoder) {
        let snap = |e: &mut Encoder, s: &SnapEvent| {
            e.u64(s.op_tid);
            e.string(&s.snap_name);
            s.snap_namespace.encode(e);
        };
        match self {
            Event::AioDiscard { offset, length, discard_granularity_bytes } => {
                e.u64(*offset);
                e.u64(*length);
                e.bool(*discard_granularity_bytes > 0);
                e.u32(*discard_granularity_bytes);
            }
            Event::AioWrite { offset, length, data } | Event::AioWriteSame { offset, length, data } => {
                e.u64(*offset);
                e.u64(*length);
                e.bytes(data);
            }
            // An unknown event's body is not known: none is written.
            Event::AioFlush | Event::DemotePromote | Event::Unknown { .. } => {}
            Event::OpFinish { op_tid, r } => {
                e.u64(*op_tid);
                e.u64(*op_tid);
                e.i32(*r);
            }
            Event::SnapCreate(s)
            | Event::SnapRemove(s)
            | Event::SnapProtect(s)
            | Event::SnapUnprotect(s)
            | Event::SnapRollback(s) => snap(e, s),
            Event::SnapRename { op_tid, dst_snap_name, snap_id, src_snap_name } => {
                e.u64(*op_tid);
                e.string(dst_snap_name);
                e.u64(*snap_id);
                e.string(src_snap_name);
            }
            Event::Rename { op_tid, image_name } => {
                e.u64(*op_tid);
                e.string(image_name);
            }
            Event::Resize { op_tid, size } => {
                e.u64(*op_tid);
                e.u64(*size);
            }
            Event::Flatten { op_tid } => e.u64(*op_tid),
            Event::SnapLimit { op_tid, limit } => {
                e.u64(*op_tid);
                e.u64(*limit);
            }
            Event::UpdateFeatures { op_tid, features, enabled } => {
                e.u64(*op_tid);
                e.u64(*features);
                e.bool(*enabled);
            }
            Event::MetadataSet { op_tid, key, value } => {
                e.u64(*op_tid);
                e.string(key);
                e.string(value);
            }
            Event::MetadataRemove { op_tid, key } => {
                e.u64(*op_tid);
                e.string(key);
            }
            Event::AioCompareAndWrite { offset, length, cmp_data, write_data } => {
                e.u64(*offset);
                e.u64(*length);
                e.bytes(cmp_data);
                e.bytes(write_data);
            }
        }
    }
}

/// `EventEntry`: an event plus its timestamp; the payload of every RBD
/// journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventEntry {
    /// The event.
    pub event: Event,
    /// When the event was journaled (zero from writers older than v4).
    pub timestamp: UTime,
}

/// `struct_v` written for `EventEntry` (Pacific..Reef).
pub const EVENT_ENTRY_VERSION: u8 = 5;
/// librbd's `EventEntry::get_fixed_size()` (28), used when splitting writes
/// into journal-sized pieces. Taken from ceph-formats.md §3.2; UNVERIFIED
/// against `src/librbd/journal/Types.h`.
pub const EVENT_ENTRY_FIXED_SIZE: usize = 28;

impl EventEntry {
    /// Decodes an entry payload. Blobs (`AioWrite` data, ...) are zero-copy
    /// slices of `payload`.
    pub fn decode_payload(payload: &Bytes) -> DecodeResult<Self> {
        let mut d = Decoder::new(payload);
        Self::decode(&mut d)
    }

    /// Encodes this entry as librbd does (`(5, 1)` + `(1, 1)` trailer).
    pub fn encode_payload(&self) -> Bytes {
        let mut e = Encoder::with_capacity(64 + self.blob_len());
        self.encode(&mut e);
        e.into_bytes()
    }

    fn blob_len(&self) -> usize {
        match &self.event {
            Event::AioWrite { data, .. } | Event::AioWriteSame { data, .. } => data.len(),
            Event::AioCompareAndWrite { cmp_data, write_data, .. } => cmp_data.len() + write_data.len(),
            _ => 0,
        }
    }
}

impl Decode for EventEntry {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        let (event, v) = d.envelope("EventEntry", 1, |d, v| {
            let t = d.u32("event_type")?;
            Ok((Event::decode_body(d, v, t)?, v))
        })?;
        let timestamp = if v >= 4 {
            d.envelope("EventEntry metadata", 1, |d, _| d.utime("timestamp"))?
        } else {
            UTime::default()
        };
        Ok(EventEntry { event, timestamp })
    }
}

impl Encode for EventEntry {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(EVENT_ENTRY_VERSION, 1, |e| {
            e.u32(self.event.event_type());
            self.event.encode_body(e);
        });
        e.envelope(1, 1, |e| e.utime(self.timestamp));
    }
}

// ---------------------------------------------------------------------------
// Tags

/// `TagData.mirror_uuid` meaning "this cluster's image owns the epoch".
pub const LOCAL_MIRROR_UUID: &str = "";
/// `TagData.mirror_uuid` meaning "closed by a demotion; nobody is primary".
pub const ORPHAN_MIRROR_UUID: &str = "<orphan>";

/// Link from a tag to the last committed entry of the previous epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TagPredecessor {
    /// Mirror uuid of the previous epoch's owner.
    pub mirror_uuid: String,
    /// Whether `tag_tid`/`entry_tid` are meaningful.
    pub commit_valid: bool,
    /// Tag tid of the predecessor entry.
    pub tag_tid: u64,
    /// Entry tid of the predecessor entry.
    pub entry_tid: u64,
}

/// librbd's `Tag.data` (no envelope).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TagData {
    /// Owner of this epoch ([`LOCAL_MIRROR_UUID`], [`ORPHAN_MIRROR_UUID`] or
    /// a remote pool's mirror uuid).
    pub mirror_uuid: String,
    /// Predecessor.
    pub predecessor: TagPredecessor,
}

impl Decode for TagData {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        Ok(TagData {
            mirror_uuid: d.string("mirror_uuid")?,
            predecessor: TagPredecessor {
                mirror_uuid: d.string("predecessor.mirror_uuid")?,
                commit_valid: d.bool("predecessor.commit_valid")?,
                tag_tid: d.u64("predecessor.tag_tid")?,
                entry_tid: d.u64("predecessor.entry_tid")?,
            },
        })
    }
}

impl Encode for TagData {
    fn encode(&self, e: &mut Encoder) {
        e.string(&self.mirror_uuid);
        e.string(&self.predecessor.mirror_uuid);
        e.bool(self.predecessor.commit_valid);
        e.u64(self.predecessor.tag_tid);
        e.u64(self.predecessor.entry_tid);
    }
}

// ---------------------------------------------------------------------------
// Clients

/// librbd's own client meta (client id `""`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImageClientMeta {
    /// Tag class of the image's tags.
    pub tag_class: u64,
    /// `rbd mirror image resync` was requested.
    pub resync_requested: bool,
}

/// Mirror peer client state (`MirrorPeerState`, `u32`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MirrorPeerState {
    /// 0: initial image sync in progress.
    #[default]
    Syncing,
    /// 1: replaying the journal.
    Replaying,
    /// Anything else.
    Unknown(u32),
}

impl MirrorPeerState {
    /// Wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::Syncing => 0,
            Self::Replaying => 1,
            Self::Unknown(v) => v,
        }
    }
    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Syncing,
            1 => Self::Replaying,
            v => Self::Unknown(v),
        }
    }
}

/// An image-sync point kept in the mirror peer client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MirrorPeerSyncPoint {
    /// Namespace of the sync-point snapshot (user when ClientData v1).
    pub snap_namespace: SnapshotNamespace,
    /// Sync-point snapshot on the remote image.
    pub snap_name: String,
    /// Previous sync point (`""` = from scratch).
    pub from_snap_name: String,
    /// Last copied object, for resuming.
    pub object_number: Option<u64>,
}

/// An rbd-mirror daemon's client meta (client id = local mirror uuid).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MirrorPeerClientMeta {
    /// Local (secondary) image id.
    pub image_id: String,
    /// Syncing / replaying.
    pub state: MirrorPeerState,
    /// Objects to copy during image sync.
    pub sync_object_count: u64,
    /// Sync points (at most 2).
    pub sync_points: Vec<MirrorPeerSyncPoint>,
    /// Remote snap id -> local snap id.
    pub snap_seqs: BTreeMap<u64, u64>,
}

/// The variant of a [`ClientData`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientMeta {
    /// Type 0.
    Image(ImageClientMeta),
    /// Type 1.
    MirrorPeer(MirrorPeerClientMeta),
    /// Type 2 (empty).
    Cli,
    /// Unknown type; body skipped (librbd's `UnknownClientMeta`).
    Unknown {
        /// The type found.
        client_meta_type: u32,
    },
}

/// librbd's `Client.data`: `ENCODE_START(2, 1)` { `u32 type`, meta }.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientData {
    /// The client meta.
    pub client_meta: ClientMeta,
}

impl Decode for ClientData {
    fn decode(d: &mut Decoder<'_>) -> DecodeResult<Self> {
        d.envelope("ClientData", 1, |d, v| {
            let t = d.u32("client_meta_type")?;
            let client_meta = match t {
                0 => ClientMeta::Image(ImageClientMeta {
                    tag_class: d.u64("tag_class")?,
                    resync_requested: d.bool("resync_requested")?,
                }),
                1 => {
                    let image_id = d.string("image_id")?;
                    let state = MirrorPeerState::from_u32(d.u32("state")?);
                    let sync_object_count = d.u64("sync_object_count")?;
                    let sync_points = d.vec("sync_points", |d| {
                        let snap_name = d.string("sync_point.snap_name")?;
                        let from_snap_name = d.string("sync_point.from_snap_name")?;
                        let object_number =
                            d.optional("sync_point.object_number", |d| d.u64("object_number"))?;
                        let snap_namespace =
                            if v >= 2 { SnapshotNamespace::decode(d)? } else { SnapshotNamespace::User };
                        Ok(MirrorPeerSyncPoint { snap_namespace, snap_name, from_snap_name, object_number })
                    })?;
                    let snap_seqs = d.map("snap_seqs", |d| d.u64("snap_id"), |d| d.u64("snap_id"))?;
                    ClientMeta::MirrorPeer(MirrorPeerClientMeta {
                        image_id,
                        state,
                        sync_object_count,
                        sync_points,
                        snap_seqs,
                    })
                }
                2 => ClientMeta::Cli,
                client_meta_type => ClientMeta::Unknown { client_meta_type },
            };
            Ok(ClientData { client_meta })
        })
    }
}

impl Encode for ClientData {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(2, 1, |e| match &self.client_meta {
            ClientMeta::Image(m) => {
                e.u32(0);
                e.u64(m.tag_class);
                e.bool(m.resync_requested);
            }
            ClientMeta::MirrorPeer(m) => {
                e.u32(1);
                e.string(&m.image_id);
                e.u32(m.state.to_u32());
                e.u64(m.sync_object_count);
                e.vec(&m.sync_points, |e, sp| {
                    e.string(&sp.snap_name);
                    e.string(&sp.from_snap_name);
                    e.optional(sp.object_number.as_ref(), |e, n| e.u64(*n));
                    sp.snap_namespace.encode(e);
                });
                e.map(&m.snap_seqs, |e, k| e.u64(*k), |e, v| e.u64(*v));
            }
            ClientMeta::Cli => e.u32(2),
            ClientMeta::Unknown { client_meta_type } => e.u32(*client_meta_type),
        });
    }
}
