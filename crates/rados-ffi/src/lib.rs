//! librados and librbd for rbd-mirror-rs: checked-in bindings and a safe async layer.
//!
//! This crate owns every line of `unsafe` in the workspace. `sys` is bindgen output for
//! Ceph Pacific 16.2's `librados.h` / `librbd.h` (regenerated only by `regen-bindings.sh`;
//! symbols of newer releases are to be resolved at run time, never linked); `sys::shim`
//! declares our small C++ shim (`cxx/rados_shim.cc`, librados' C++ API where the C API can
//! only copy data: exact-size write copies, read buffers sent on by reference, see
//! [`ObjectBuffer`]). On top of it:
//! [`Rados`] (a cluster connection: local by conf + client id, or a peer by `mon_host` + key),
//! [`IoCtx`] (object I/O, omap, xattrs, cls `exec`, self-managed snapshot contexts,
//! watch/notify, listing) and [`rbd`] (read-only images, snapshots, diffs, mirroring
//! configuration and status through the public librbd API).
//!
//! Data-path calls are aio completions turned into futures (see `completion`); calls with no
//! aio variant run on tokio's blocking pool behind a semaphore, never on runtime threads.
//! It deliberately knows nothing of journals, mirror snapshots or replay: it decodes no Ceph
//! structure beyond what a C API hands back (ceph-formats.md §8.1 lists what that covers).
//! Errors are one enum, [`RadosError`]: the operation, its target and the errno.
//! [`process`] holds what is process-wide: jemalloc as the allocator of the whole process
//! (librados included), the purge of free memory, the main thread's unused stack.

mod buffer;
pub mod cluster;
mod completion;
pub mod error;
pub mod ioctx;
mod lock;
pub mod process;
pub mod rbd;
pub mod service;
mod sys;
mod watch;

pub use buffer::{is_shared, ObjectBuffer};
pub use cluster::{ClusterConfig, Rados, DEFAULT_CONNECT_TIMEOUT};
pub use completion::{blocking_calls_in_flight, teardowns_in_flight, MAX_BLOCKING_CALLS};
pub use error::{RadosError, Result};
pub use ioctx::{IoCtx, NotifyReply, ObjectStat, WatchEvent, WriteOp};
pub use lock::{Locker, Lockers};
pub use watch::Watch;
