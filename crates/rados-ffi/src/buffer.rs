//! Object bytes in librados' own memory, and writes that send them on without a copy.
//!
//! A read through the C API lands in librados' receive buffer and is then copied into the
//! caller's; a write through the C API copies the caller's bytes again. [`ObjectBuffer`]
//! keeps the receive buffer (a `ceph::bufferlist`, through our C++ shim), and
//! [`crate::WriteOp::write_buffer`] / [`crate::WriteOp::write_bytes`] add parts of it to a
//! write op by reference: librados counts the references, so the bytes live as long as any
//! read result or write needs them, whatever Rust drops meanwhile.
//!
//! [`IoCtx::read_shared`](crate::IoCtx::read_shared) hands such a buffer out as plain
//! [`Bytes`] (for decoders that slice it), and remembers which memory belongs to which
//! buffer, so that a write given a slice of it ([`crate::WriteOp::write_bytes`]) can share it
//! again instead of copying. Bytes from anywhere else are copied, as before.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::error::{RadosError, Result};
use crate::sys::shim;

/// Bytes of an object as librados received them ([`crate::IoCtx::read_buffer`]): no copy
/// into our memory, and [`crate::WriteOp::write_buffer`] sends parts of them on without
/// copying either.
pub struct ObjectBuffer {
    pub(crate) raw: *mut shim::rmrs_buffer,
    data: *const u8,
    len: usize,
}

// SAFETY: owns its bufferlist, which no other thread touches once the read that filled it
// completed; its bytes are never written again, and the shim only reads its structure.
unsafe impl Send for ObjectBuffer {}
// SAFETY: as above: `&ObjectBuffer` only reads.
unsafe impl Sync for ObjectBuffer {}

impl std::fmt::Debug for ObjectBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBuffer").field("len", &self.len).finish()
    }
}

impl Drop for ObjectBuffer {
    fn drop(&mut self) {
        // SAFETY: owned; no read into it is in flight (the payload of a read is dropped only
        // after its callback ran); null-safe. Writes hold their own references.
        unsafe { shim::rmrs_buffer_free(self.raw) };
    }
}

impl AsRef<[u8]> for ObjectBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl ObjectBuffer {
    pub(crate) fn new() -> Result<ObjectBuffer> {
        // SAFETY: allocation only; null on failure.
        let raw = unsafe { shim::rmrs_buffer_new() };
        if raw.is_null() {
            return Err(RadosError::Call {
                op: "rmrs_buffer_new",
                target: String::new(),
                errno: libc::ENOMEM,
            });
        }
        Ok(ObjectBuffer { raw, data: std::ptr::null(), len: 0 })
    }

    /// Takes the bytes librados put in the bufferlist (joined into one piece if they came
    /// in several). Call once, after the read completed and before the buffer is shared.
    /// Returns the errno when that fails (`ENOMEM`) or there are more than `max` bytes.
    pub(crate) fn settle(&mut self, max: usize) -> std::result::Result<(), i32> {
        // SAFETY: the read completed: the bufferlist is ours alone.
        let data = unsafe { shim::rmrs_buffer_data(self.raw) };
        // SAFETY: as above.
        let len = unsafe { shim::rmrs_buffer_length(self.raw) };
        if data.is_null() {
            return Err(libc::ENOMEM);
        }
        if len > max {
            return Err(libc::ERANGE);
        }
        self.data = data.cast();
        self.len = len;
        Ok(())
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `data`/`len` were taken from the bufferlist after its read completed, and
        // it is not changed again while `self` lives.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    /// Hands the buffer out as [`Bytes`], remembered so that writes of slices of it share it.
    pub(crate) fn into_shared_bytes(self) -> Bytes {
        if self.len == 0 {
            return Bytes::new();
        }
        let shared = Arc::new(self);
        SHARED.remember(&shared);
        Bytes::from_owner(SharedBuffer(shared))
    }
}

/// The owner behind [`Bytes`] made by [`ObjectBuffer::into_shared_bytes`]; forgets the
/// buffer's memory range when the last slice goes.
struct SharedBuffer(Arc<ObjectBuffer>);

impl AsRef<[u8]> for SharedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl Drop for SharedBuffer {
    fn drop(&mut self) {
        SHARED.forget(&self.0);
    }
}

/// Shared buffers by the address of their first byte.
struct Registry(Mutex<BTreeMap<usize, Weak<ObjectBuffer>>>);

static SHARED: Registry = Registry(Mutex::new(BTreeMap::new()));

impl Registry {
    fn remember(&self, buffer: &Arc<ObjectBuffer>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(buffer.data as usize, Arc::downgrade(buffer));
    }

    fn forget(&self, buffer: &Arc<ObjectBuffer>) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&(buffer.data as usize)).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(buffer))) {
            map.remove(&(buffer.data as usize));
        }
    }

    /// The shared buffer `bytes` lies in, and its range there.
    fn find(&self, bytes: &[u8]) -> Option<(Arc<ObjectBuffer>, Range<usize>)> {
        if bytes.is_empty() {
            return None;
        }
        let start = bytes.as_ptr() as usize;
        let buffer = {
            let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (_, weak) = map.range(..=start).next_back()?;
            weak.upgrade()?
        };
        let base = buffer.data as usize;
        let from = start - base;
        let to = from.checked_add(bytes.len())?;
        (to <= buffer.len).then_some((buffer, from..to))
    }
}

/// Where the bytes of a write come from.
pub(crate) enum Part<'a> {
    /// Shared with a buffer librados already holds (found behind a [`Bytes`] slice).
    Shared(Arc<ObjectBuffer>, Range<usize>),
    /// Shared with a buffer the caller holds.
    Buffer(&'a ObjectBuffer, Range<usize>),
    /// Copied.
    Copy(&'a [u8]),
}

/// How [`crate::WriteOp::write_bytes`] adds `bytes`: shared if they are a slice of a buffer
/// from [`crate::IoCtx::read_shared`] (still alive: `bytes` holds it), else copied.
pub(crate) fn part_of(bytes: &Bytes) -> Part<'_> {
    match SHARED.find(bytes) {
        Some((buffer, range)) => Part::Shared(buffer, range),
        None => Part::Copy(bytes),
    }
}

/// Whether `bytes` lie in a live buffer from [`crate::IoCtx::read_shared`], so that
/// [`crate::WriteOp::write_bytes`] sends them without a copy.
pub fn is_shared(bytes: &[u8]) -> bool {
    SHARED.find(bytes).is_some()
}
