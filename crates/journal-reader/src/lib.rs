//! Pure decoding of Ceph RBD journals.
//!
//! This crate owns the byte-level formats of a journal's data and librbd's payloads; Ceph's
//! encoding primitives, CRC32C and the cls `journal` types (header, clients, commit
//! positions, tags) it builds on are `rbd-types`' ([`rbd_types::encoding`],
//! [`rbd_types::cls_journal`]):
//!
//! * [`entry`]: entry framing inside `journal_data.*` objects with CRC32C as
//!   Ceph computes it;
//! * [`player`]: the order in which the journal player consumes entries
//!   across the splay objects of an object set, starting after a commit
//!   position;
//! * [`follower`]: a journal client's place in a journal still being written: which
//!   bytes to read next and the entries played from them (no I/O: told what was read);
//! * [`event`]: librbd's journal payloads — `EventEntry` (every event type,
//!   with its timestamp trailer), `TagData` and `ClientData`.
//!
//! Its decoding core does no I/O: bytes in, entries out. Payloads are zero-copy slices of
//! the input [`bytes::Bytes`]; decoders never panic on input and never
//! allocate based on an unchecked length field. The live tail that joins
//! this crate to `rados-ffi` (fetching objects, polling, committing) lives
//! in [`tail`] (default feature `live`), the one module that does I/O; without that feature
//! the crate builds with no native library at all.
#![forbid(unsafe_code)]

pub mod entry;
pub mod event;
pub mod follower;
pub mod player;
#[cfg(feature = "live")]
pub mod tail;

pub use entry::{decode_object, decode_object_at, DecodedObject, Entry, EntryError, EntryIter};
pub use event::{ClientData, ClientMeta, Event, EventEntry, TagData};
