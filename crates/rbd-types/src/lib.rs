//! Ceph's RBD vocabulary as pure Rust types: one definition per concept for the whole
//! workspace, no I/O and no native library (so every decoder here can be fuzzed alone).
//!
//! * [`encoding`]: Ceph encoding primitives (little-endian integers, strings, blobs,
//!   vectors, maps, optionals, `utime_t`) and versioned envelopes (`ENCODE_START` /
//!   `DECODE_START`) that honour compat versions and skip unknown trailing fields;
//!   [`crc`]: Ceph's CRC32C.
//! * [`cls_rbd`]: the cls `rbd` types (mirror image, mirror image status and its states,
//!   pool mirror mode, peer direction, snapshot info, snap context) and the argument and
//!   reply encodings of every cls `rbd` method the daemon calls; object names
//!   (`rbd_header.`, `rbd_data.`, `rbd_object_map.`, `rbd_mirroring`) and `CEPH_NOSNAP`.
//! * [`mirror_notify`]: what rbd-mirror instances notify each other (leader heartbeats and
//!   lock changes, image acquire/release, sync throttling, their acks) and the image map's
//!   policy data; [`cls_lock`]: the `ManagedLock` lock librbd and rbd-mirror take.
//! * [`cls_journal`]: journal metadata (the `journal.<image id>` header omap, clients and
//!   their commit positions, tags) and the cls `journal` method arguments.
//! * [`snap_namespace`]: snapshot namespaces (user, group, trash, mirror).
//! * [`object_map`]: the object map objects (`BitVector<2>`, CRCs verified).
//! * [`features`]: feature bits, image flags, snapshot protection status.
//! * [`striping`]: image extents ↔ RADOS object extents.
//!
//! What it does not own: librbd's journal events (`journal-reader`), what changed between
//! snapshots (`snapshot-differ`), and any call to a cluster (`rados-ffi` maps librbd's C
//! values onto these types). Decoders never panic on input and never allocate by an
//! unchecked length; payloads are slices of the input [`bytes::Bytes`].
#![forbid(unsafe_code)]

pub mod cls_journal;
pub mod cls_lock;
pub mod cls_rbd;
pub mod crc;
pub mod encoding;
pub mod features;
pub mod mirror_notify;
pub mod object_map;
pub mod snap_namespace;
pub mod striping;

pub use cls_rbd::{
    MirrorImageMode, MirrorImageState, MirrorImageStatusState, MirrorMode, MirrorPeerDirection, CEPH_NOSNAP,
};
pub use crc::ceph_crc32c;
pub use encoding::{Decode, DecodeError, DecodeResult, Decoder, Encode, Encoder, UTime};
pub use features::ProtectionStatus;
pub use object_map::{ObjectMap, ObjectMapError, ObjectState};
pub use snap_namespace::{MirrorSnapshotNamespace, MirrorSnapshotState, SnapshotNamespace};
