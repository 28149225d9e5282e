//! `IoCtx`: object I/O in one pool and RADOS namespace, all through aio completions.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::buffer::{ObjectBuffer, Part};
use crate::cluster::{take_buffer, ClusterHandle, SendPtr};
use crate::completion::{blocking, submit, teardown, RadosCompletion};
use crate::error::{check, cstring, RadosError, Result};
use crate::sys::{librados, shim};

/// Owns the `rados_ioctx_t`; holds the cluster handle so the cluster outlives it.
pub(crate) struct IoCtxHandle {
    pub(crate) raw: librados::rados_ioctx_t,
    pub(crate) cluster: Arc<ClusterHandle>,
    pub(crate) pool: String,
    pub(crate) namespace: String,
    /// `read_into` / `read_buffer` calls with reads still in flight (see [`ReadsInFlight`]).
    pub(crate) reads: Arc<AtomicUsize>,
}

// SAFETY: librados allows I/O on one `rados_ioctx_t` from many threads concurrently; what is
// not thread-safe is changing its settings (namespace, locator, snapshot contexts). Those are
// set once in `IoCtx::open` or through `&mut IoCtx` (see `set_selfmanaged_snap_write_context`).
unsafe impl Send for IoCtxHandle {}
// SAFETY: as above: shared references only reach thread-safe I/O calls.
unsafe impl Sync for IoCtxHandle {}

impl Drop for IoCtxHandle {
    fn drop(&mut self) {
        let raw = SendPtr(self.raw);
        let cluster = self.cluster.clone();
        let reads = self.reads.clone();
        // Wait for in-flight aio (whose callbacks own their buffers) before destroying the
        // context, then let the cluster handle go: on the blocking pool, never a runtime thread.
        // `rados_aio_flush` waits for writes only: reads whose futures were dropped (a
        // cancelled copy) are waited for through their count.
        teardown(move || {
            let raw = raw;
            let deadline = std::time::Instant::now() + READS_DRAIN_LIMIT;
            while reads.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            // SAFETY: last owner of the ioctx; flush waits for every pending write on it and
            // no read of ours is in flight (or one outlived READS_DRAIN_LIMIT, an OSD op
            // timeout's worth).
            unsafe {
                librados::rados_aio_flush(raw.0.cast());
                librados::rados_ioctx_destroy(raw.0.cast());
            }
            drop(cluster);
        });
    }
}

/// An I/O context: one pool, one RADOS namespace.
///
/// Object operations are aio futures; operations with no aio variant run on the blocking
/// pool. Dropping an in-flight future is safe: the operation finishes in the background and
/// its buffers are freed by its completion callback.
pub struct IoCtx {
    pub(crate) handle: Arc<IoCtxHandle>,
}

impl std::fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoCtx")
            .field("cluster", &self.handle.cluster.name)
            .field("pool", &self.handle.pool)
            .field("namespace", &self.handle.namespace)
            .finish()
    }
}

/// Size and modification time of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub mtime: SystemTime,
}

/// One event delivered to a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A notification (already acknowledged with an empty reply).
    Notify {
        /// Id of this notification.
        notify_id: u64,
        /// Global id of the notifying client.
        notifier_id: u64,
        /// Its payload.
        payload: Bytes,
    },
    /// The watch broke (e.g. `ENOTCONN` after a timeout): events may have been missed and the
    /// watcher must re-read the object's state and watch again.
    Error {
        /// Positive errno.
        errno: i32,
    },
}

/// Acknowledgements and timeouts gathered by a notify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyReply {
    /// `(notifier global id, watch cookie, reply payload)` of each watcher that acked.
    pub acks: Vec<(u64, u64, Bytes)>,
    /// `(global id, watch cookie)` of each watcher that did not answer in time.
    pub timeouts: Vec<(u64, u64)>,
}

impl IoCtx {
    pub(crate) async fn open(cluster: Arc<ClusterHandle>, pool: &str, namespace: &str) -> Result<IoCtx> {
        let c_pool = cstring("pool name", pool)?;
        let c_ns = cstring("namespace", namespace)?;
        let (pool, namespace) = (pool.to_owned(), namespace.to_owned());
        blocking(move || {
            let mut raw: librados::rados_ioctx_t = std::ptr::null_mut();
            // SAFETY: connected cluster (kept alive by the Arc); valid strings and out-pointer.
            let ret = unsafe { librados::rados_ioctx_create(cluster.raw, c_pool.as_ptr(), &mut raw) };
            check(ret, "rados_ioctx_create", || format!("pool {pool} in cluster {}", cluster.name))?;
            // SAFETY: freshly created ioctx, not shared yet: setting the namespace is safe.
            unsafe { librados::rados_ioctx_set_namespace(raw, c_ns.as_ptr()) };
            // Writes to a full pool (`ceph osd pool set-quota`, or a full cluster) fail with
            // EDQUOT / ENOSPC instead of waiting, unsent, until it is no longer full: the
            // caller says why it stopped and retries. Writes that add no data (omap: mirror
            // statuses, journal commit positions; watches) still succeed there.
            // SAFETY: freshly created ioctx, not shared yet: setting its op flags is safe.
            unsafe { librados::rados_set_pool_full_try(raw) };
            Ok(IoCtx {
                handle: Arc::new(IoCtxHandle { raw, cluster, pool, namespace, reads: Arc::default() }),
            })
        })
        .await
    }

    /// Pool name.
    pub fn pool_name(&self) -> &str {
        &self.handle.pool
    }

    /// RADOS namespace ("" for the default).
    pub fn namespace(&self) -> &str {
        &self.handle.namespace
    }

    /// Pool id.
    pub fn pool_id(&self) -> i64 {
        // SAFETY: live ioctx; a pure getter.
        unsafe { librados::rados_ioctx_get_id(self.handle.raw) }
    }

    pub(crate) fn raw(&self) -> librados::rados_ioctx_t {
        self.handle.raw
    }

    pub(crate) fn object_target(&self, oid: &str) -> String {
        if self.handle.namespace.is_empty() {
            format!("object {}/{oid}", self.handle.pool)
        } else {
            format!("object {}/{}/{oid}", self.handle.pool, self.handle.namespace)
        }
    }

    /// Reads up to `len` bytes at `offset`. A short result means the object ends there.
    pub async fn read(&self, oid: &str, offset: u64, len: usize) -> Result<Bytes> {
        let mut buf = Vec::new();
        self.read_into(oid, offset, len, 0, &mut buf).await?;
        Ok(Bytes::from(buf))
    }

    /// Reads up to `len` bytes at `offset` into `buf`, reusing its allocation (grown to `len`
    /// when smaller): on success `buf` holds the bytes read (a short result means the object
    /// ends there), so a caller that reads many objects keeps a few buffers instead of
    /// allocating (and page-faulting in) a fresh one per read. Its old content is dropped; on
    /// an error or a cancelled future it may come back empty.
    ///
    /// The range is read as concurrent reads of at most `piece` bytes (0: one read) straight
    /// into their places in `buf`: librados receives each reply into a buffer of its own
    /// and copies it into ours, so smaller pieces keep those buffers small.
    pub async fn read_into(
        &self,
        oid: &str,
        offset: u64,
        len: usize,
        piece: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let c_oid = cstring("object name", oid)?;
        let piece = if piece == 0 { len.max(1) } else { piece };
        let mut owned = std::mem::take(buf);
        owned.clear();
        owned.reserve(len);
        let base = SendPtr(owned.as_mut_ptr());
        // Every read holds a reference: the heap block lives until the last callback ran,
        // even if this future is dropped midway. Rust does not touch the bytes meanwhile.
        let shared = Arc::new(ReadBuffer(owned, ReadsInFlight::enter(&self.handle.reads)));
        let mut reads = Vec::with_capacity(len.div_ceil(piece));
        for start in (0..len).step_by(piece) {
            let n = piece.min(len - start);
            let at = offset + start as u64;
            // SAFETY: `base + start .. + n` lies within the `len` bytes of capacity reserved
            // above, and no two reads share a byte; the block does not move or get freed
            // while a read holds `shared` in its payload, which lives until its callback.
            let aio = unsafe {
                submit::<Arc<ReadBuffer>, RadosCompletion>(
                    "rados_aio_read",
                    shared.clone(),
                    || self.object_target(oid),
                    |_, c| {
                        librados::rados_aio_read(
                            self.raw(),
                            c_oid.as_ptr(),
                            c.0,
                            base.0.add(start).cast(),
                            n,
                            at,
                        )
                    },
                )
            }?;
            reads.push((n, aio));
        }
        drop(shared);
        // The bytes read: up to the first short piece (the object ends there). Every piece
        // is waited for, also after an error: no read of ours is left in flight on this
        // ioctx when we return (the caller may drop the ioctx next).
        let mut total = 0usize;
        let mut ended = false;
        let mut last = None;
        let mut first_error = None;
        for (n, aio) in reads {
            let (ret, payload) = match aio.await {
                Ok(done) => done,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            last = Some(payload);
            if let Err(e) = check(ret, "rados_aio_read", || self.object_target(oid)) {
                first_error.get_or_insert(e);
                continue;
            }
            let got = usize::try_from(ret).unwrap_or(usize::MAX);
            if got > n {
                first_error.get_or_insert(RadosError::Call {
                    op: "rados_aio_read",
                    target: self.object_target(oid),
                    errno: libc::ERANGE,
                });
                continue;
            }
            if !ended {
                total += got;
                ended = got < n;
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let owned = match last.map(Arc::try_unwrap) {
            Some(Ok(ReadBuffer(v, _in_flight))) => v,
            // Every payload came back and the others were dropped: the last is the only one.
            _ => {
                return Err(RadosError::Call {
                    op: "rados_aio_read",
                    target: self.object_target(oid),
                    errno: libc::EIO,
                })
            }
        };
        let mut owned = owned;
        // SAFETY: librados wrote the first `total` bytes (the pieces before the first short
        // one, and that one's prefix), all within the capacity; `u8` has no invalid values.
        unsafe { owned.set_len(total) };
        *buf = owned;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` into librados' own buffer, with no copy into ours:
    /// for data that is looked at and sent on ([`WriteOp::write_buffer`]). A short result
    /// means the object ends there.
    pub async fn read_buffer(&self, oid: &str, offset: u64, len: usize) -> Result<ObjectBuffer> {
        let c_oid = cstring("object name", oid)?;
        let buffer = ObjectBuffer::new()?;
        // SAFETY: the buffer is the payload: it lives, untouched by Rust, until the callback,
        // and the guard keeps the ioctx alive as long (see `ReadsInFlight`).
        let aio = unsafe {
            submit::<(ObjectBuffer, ReadsInFlight), RadosCompletion>(
                "rados_aio_read",
                (buffer, ReadsInFlight::enter(&self.handle.reads)),
                || self.object_target(oid),
                |b, c| shim::rmrs_aio_read(self.raw(), c.0, c_oid.as_ptr(), offset, len, (*b).0.raw),
            )
        }?;
        let (ret, (mut buffer, _in_flight)) = aio.await?;
        check(ret, "rados_aio_read", || self.object_target(oid))?;
        buffer.settle(len).map_err(|errno| RadosError::Call {
            op: "rados_aio_read",
            target: self.object_target(oid),
            errno,
        })?;
        Ok(buffer)
    }

    /// Reads up to `len` bytes at `offset`, like [`IoCtx::read`], into a buffer librados
    /// holds: a [`WriteOp::write_bytes`] of slices of the [`Bytes`] sends them on without a
    /// copy (see `crate::buffer`). The bytes stay in librados' page-aligned receive buffer,
    /// which jemalloc ([`crate::process`]) reuses well, so no copy into a buffer of exactly
    /// their size is needed (benches/results/TUNING.md).
    pub async fn read_shared(&self, oid: &str, offset: u64, len: usize) -> Result<Bytes> {
        Ok(self.read_buffer(oid, offset, len).await?.into_shared_bytes())
    }

    /// Reads a whole object (stat, then read).
    pub async fn read_full(&self, oid: &str) -> Result<Bytes> {
        let stat = self.stat(oid).await?;
        self.read(oid, 0, stat.size as usize).await
    }

    /// Size and mtime of an object.
    pub async fn stat(&self, oid: &str) -> Result<ObjectStat> {
        let c_oid = cstring("object name", oid)?;
        // SAFETY: out-parameters live in the payload until the callback returns it.
        let aio = unsafe {
            submit::<(u64, libc::time_t), RadosCompletion>(
                "rados_aio_stat",
                (0, 0),
                || self.object_target(oid),
                |out, c| {
                    librados::rados_aio_stat(self.raw(), c_oid.as_ptr(), c.0, &mut (*out).0, &mut (*out).1)
                },
            )
        }?;
        let (ret, (size, mtime)) = aio.await?;
        check(ret, "rados_aio_stat", || self.object_target(oid))?;
        Ok(ObjectStat { size, mtime: UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64) })
    }

    /// Writes `data` at `offset`.
    pub async fn write(&self, oid: &str, offset: u64, data: &[u8]) -> Result<()> {
        let mut op = WriteOp::new();
        op.write(offset, data);
        self.operate(oid, op).await
    }

    /// Replaces the whole object with `data`.
    pub async fn write_full(&self, oid: &str, data: &[u8]) -> Result<()> {
        let mut op = WriteOp::new();
        op.write_full(data);
        self.operate(oid, op).await
    }

    /// Appends `data`.
    pub async fn append(&self, oid: &str, data: &[u8]) -> Result<()> {
        let mut op = WriteOp::new();
        op.append(data);
        self.operate(oid, op).await
    }

    /// Removes an object.
    pub async fn remove(&self, oid: &str) -> Result<()> {
        let mut op = WriteOp::new();
        op.remove();
        self.operate(oid, op).await
    }

    /// Sets omap keys.
    pub async fn omap_set(&self, oid: &str, entries: &[(&str, &[u8])]) -> Result<()> {
        let mut op = WriteOp::new();
        op.omap_set(entries)?;
        self.operate(oid, op).await
    }

    /// Removes omap keys.
    pub async fn omap_remove(&self, oid: &str, keys: &[&str]) -> Result<()> {
        let mut op = WriteOp::new();
        op.omap_rm_keys(keys)?;
        self.operate(oid, op).await
    }

    /// Sets an extended attribute.
    pub async fn set_xattr(&self, oid: &str, name: &str, value: &[u8]) -> Result<()> {
        let mut op = WriteOp::new();
        op.set_xattr(name, value)?;
        self.operate(oid, op).await
    }

    /// Removes an extended attribute.
    pub async fn remove_xattr(&self, oid: &str, name: &str) -> Result<()> {
        let mut op = WriteOp::new();
        op.remove_xattr(name)?;
        self.operate(oid, op).await
    }

    /// Calls an object-class method that modifies the object (`rados_write_op_exec`).
    /// Write ops return no data; use [`IoCtx::exec`] for read-only methods.
    pub async fn exec_write(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> Result<()> {
        let mut op = WriteOp::new();
        op.exec(class, method, input)?;
        self.operate(oid, op).await
    }

    /// Runs a compound write operation atomically on one object.
    pub async fn operate(&self, oid: &str, op: WriteOp) -> Result<()> {
        let c_oid = cstring("object name", oid)?;
        let raw_op = SendPtr(op.raw);
        let what = op.first_step;
        // SAFETY: `op` (which owns the write op) lives in the payload until completion.
        let aio = unsafe {
            submit::<WriteOp, RadosCompletion>(
                "rados_aio_write_op_operate",
                op,
                || self.object_target(oid),
                |_op, c| shim::rmrs_aio_write_op_operate(self.raw(), c.0, c_oid.as_ptr(), raw_op.0),
            )
        }?;
        let (ret, _op) = aio.await?;
        if ret < 0 {
            return Err(RadosError::Call { op: what, target: self.object_target(oid), errno: -ret });
        }
        Ok(())
    }

    /// Calls a read-only object-class method and returns its output.
    pub async fn exec(&self, oid: &str, class: &str, method: &str, input: &[u8]) -> Result<Bytes> {
        let mut op = Box::new(ReadOp::new());
        let c_class = cstring("class name", class)?;
        let c_method = cstring("method name", method)?;
        // SAFETY: `op.raw` is live; out-parameters point into the boxed `ReadOp` which lives in
        // the payload until completion; the input is copied by librados.
        unsafe {
            librados::rados_read_op_exec(
                op.raw,
                c_class.as_ptr(),
                c_method.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                &mut op.out.exec_buf,
                &mut op.out.exec_len,
                &mut op.out.prval,
            )
        };
        let mut op = self.operate_read(oid, op, "exec").await?;
        let (ptr, len) = (std::mem::replace(&mut op.out.exec_buf, std::ptr::null_mut()), op.out.exec_len);
        // SAFETY: buffer allocated by librados for this op (or null), freed exactly once.
        Ok(unsafe { take_buffer(ptr, len) })
    }

    /// Up to `max` omap entries after `start_after` whose keys start with `prefix`, and
    /// whether more remain.
    pub async fn omap_get_vals(
        &self,
        oid: &str,
        start_after: &str,
        prefix: &str,
        max: u64,
    ) -> Result<(BTreeMap<String, Bytes>, bool)> {
        let mut op = Box::new(ReadOp::new());
        let c_start = cstring("omap start key", start_after)?;
        let c_prefix = cstring("omap prefix", prefix)?;
        // SAFETY: live op; out-parameters point into the boxed `ReadOp` kept alive until
        // completion; the strings are copied by librados.
        unsafe {
            librados::rados_read_op_omap_get_vals2(
                op.raw,
                c_start.as_ptr(),
                c_prefix.as_ptr(),
                max,
                &mut op.out.iter,
                &mut op.out.more,
                &mut op.out.prval,
            )
        };
        let mut op = self.operate_read(oid, op, "omap_get_vals").await?;
        let mut map = BTreeMap::new();
        loop {
            let (mut k, mut v): (*mut c_char, *mut c_char) = (std::ptr::null_mut(), std::ptr::null_mut());
            let (mut klen, mut vlen): (usize, usize) = (0, 0);
            // SAFETY: the iterator was filled by the completed op and is freed in ReadOp::drop.
            let ret =
                unsafe { librados::rados_omap_get_next2(op.out.iter, &mut k, &mut v, &mut klen, &mut vlen) };
            check(ret, "rados_omap_get_next2", || self.object_target(oid))?;
            if k.is_null() {
                break;
            }
            // SAFETY: librados returns `klen`/`vlen` readable bytes valid until the next call.
            let (key, val) = unsafe {
                (
                    std::slice::from_raw_parts(k.cast::<u8>(), klen),
                    if v.is_null() { &[][..] } else { std::slice::from_raw_parts(v.cast::<u8>(), vlen) },
                )
            };
            map.insert(String::from_utf8_lossy(key).into_owned(), Bytes::copy_from_slice(val));
        }
        let more = op.out.more != 0;
        op.out.free_iter();
        Ok((map, more))
    }

    /// Every omap entry (paged internally).
    pub async fn omap_get_all(&self, oid: &str, prefix: &str) -> Result<BTreeMap<String, Bytes>> {
        const PAGE: u64 = 1024;
        let mut all = BTreeMap::new();
        let mut after = String::new();
        loop {
            let (page, more) = self.omap_get_vals(oid, &after, prefix, PAGE).await?;
            if let Some(last) = page.keys().next_back() {
                after = last.clone();
            }
            let empty = page.is_empty();
            all.extend(page);
            if !more || empty {
                return Ok(all);
            }
        }
    }

    /// All extended attributes of an object.
    pub async fn xattrs(&self, oid: &str) -> Result<BTreeMap<String, Bytes>> {
        let mut op = Box::new(ReadOp::new());
        // SAFETY: live op; out-parameters in the boxed `ReadOp` kept alive until completion.
        unsafe { librados::rados_read_op_getxattrs(op.raw, &mut op.out.xattr_iter, &mut op.out.prval) };
        let mut op = self.operate_read(oid, op, "getxattrs").await?;
        let mut map = BTreeMap::new();
        loop {
            let (mut name, mut val): (*const c_char, *const c_char) = (std::ptr::null(), std::ptr::null());
            let mut len: usize = 0;
            // SAFETY: iterator filled by the completed op; freed in ReadOp::drop.
            let ret =
                unsafe { librados::rados_getxattrs_next(op.out.xattr_iter, &mut name, &mut val, &mut len) };
            check(ret, "rados_getxattrs_next", || self.object_target(oid))?;
            if name.is_null() {
                break;
            }
            // SAFETY: NUL-terminated name and `len` value bytes, valid until the next call.
            let (n, v) = unsafe {
                (
                    CStr::from_ptr(name).to_string_lossy().into_owned(),
                    if val.is_null() {
                        Bytes::new()
                    } else {
                        Bytes::copy_from_slice(std::slice::from_raw_parts(val.cast::<u8>(), len))
                    },
                )
            };
            map.insert(n, v);
        }
        op.out.free_iter();
        Ok(map)
    }

    /// One extended attribute.
    pub async fn xattr(&self, oid: &str, name: &str) -> Result<Bytes> {
        self.xattrs(oid).await?.remove(name).ok_or_else(|| RadosError::Call {
            op: "getxattr",
            target: format!("{} xattr {name}", self.object_target(oid)),
            errno: libc::ENODATA,
        })
    }

    /// Submits a read op. It is boxed *before* any step is added, so the out-parameter
    /// addresses handed to librados stay put.
    async fn operate_read(&self, oid: &str, op: Box<ReadOp>, what: &'static str) -> Result<Box<ReadOp>> {
        let c_oid = cstring("object name", oid)?;
        let raw_op = SendPtr(op.raw);
        // SAFETY: the boxed op and its out-parameters live in the payload until completion.
        let aio = unsafe {
            submit::<Box<ReadOp>, RadosCompletion>(
                "rados_aio_read_op_operate",
                op,
                || self.object_target(oid),
                |_op, c| librados::rados_aio_read_op_operate(raw_op.0, self.raw(), c.0, c_oid.as_ptr(), 0),
            )
        }?;
        let (ret, op) = aio.await?;
        let ret = if ret < 0 { ret } else { op.out.prval.min(0) };
        if ret < 0 {
            return Err(RadosError::Call { op: what, target: self.object_target(oid), errno: -ret });
        }
        Ok(op)
    }

    /// Names of every object in this pool and namespace.
    pub async fn list_objects(&self) -> Result<Vec<String>> {
        let handle = self.handle.clone();
        let target = format!("pool {}/{}", handle.pool, handle.namespace);
        blocking(move || {
            let mut ctx: librados::rados_list_ctx_t = std::ptr::null_mut();
            // SAFETY: live ioctx kept by `handle`; out-pointer valid.
            let ret = unsafe { librados::rados_nobjects_list_open(handle.raw, &mut ctx) };
            check(ret, "rados_nobjects_list_open", || target.clone())?;
            let mut names = Vec::new();
            let result = loop {
                let mut entry: *const c_char = std::ptr::null();
                let mut entry_len: usize = 0;
                // SAFETY: valid list context; the out strings stay valid until the next call.
                let ret = unsafe {
                    librados::rados_nobjects_list_next2(
                        ctx,
                        &mut entry,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        &mut entry_len,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                if ret == -libc::ENOENT {
                    break Ok(names);
                }
                if ret < 0 {
                    break Err(RadosError::Call {
                        op: "rados_nobjects_list_next2",
                        target: target.clone(),
                        errno: -ret,
                    });
                }
                // SAFETY: `entry_len` bytes at `entry`, valid until the next call.
                let name = unsafe { std::slice::from_raw_parts(entry.cast::<u8>(), entry_len) };
                names.push(String::from_utf8_lossy(name).into_owned());
            };
            // SAFETY: opened above, closed once.
            unsafe { librados::rados_nobjects_list_close(ctx) };
            result
        })
        .await
    }

    /// A new handle on the same cluster, pool and namespace, with default settings (reads at
    /// HEAD, the pool's snapshot context for writes): what callers that need their own read
    /// snapshot or write snapshot context use, since those settings are per handle.
    pub async fn duplicate(&self) -> Result<IoCtx> {
        IoCtx::open(self.handle.cluster.clone(), &self.handle.pool, &self.handle.namespace).await
    }

    /// A new handle on pool `pool_id` of the same cluster, in the same namespace (an RBD
    /// image's data pool, as librbd opens it beside the image's pool); a duplicate when it is
    /// this handle's pool.
    pub async fn in_pool(&self, pool_id: i64) -> Result<IoCtx> {
        if pool_id == self.pool_id() {
            return self.duplicate().await;
        }
        let pool = crate::cluster::pool_reverse_lookup(self.handle.cluster.clone(), pool_id).await?;
        IoCtx::open(self.handle.cluster.clone(), &pool, &self.handle.namespace).await
    }

    /// Makes subsequent reads through this handle read snapshot `snap` (`CEPH_NOSNAP`,
    /// `u64::MAX - 1`, for HEAD). Takes `&mut self`: librados does not make settings changes
    /// thread-safe.
    pub fn set_snap_read(&mut self, snap: u64) {
        // SAFETY: exclusive access to this handle's settings (`&mut self`); the call only
        // stores the snapshot id in the ioctx.
        unsafe { librados::rados_ioctx_snap_set_read(self.raw(), snap) };
    }

    /// Sets the self-managed snapshot context for subsequent writes through this handle.
    /// Takes `&mut self`: librados does not make settings changes thread-safe.
    pub fn set_selfmanaged_snap_write_context(&mut self, seq: u64, snaps: &[u64]) -> Result<()> {
        let mut snaps: Vec<librados::rados_snap_t> = snaps.to_vec();
        // SAFETY: exclusive access to this handle's settings (`&mut self`); librados copies
        // the snapshot list.
        let ret = unsafe {
            librados::rados_ioctx_selfmanaged_snap_set_write_ctx(
                self.raw(),
                seq,
                snaps.as_mut_ptr(),
                snaps.len() as c_int,
            )
        };
        check(ret, "rados_ioctx_selfmanaged_snap_set_write_ctx", || format!("pool {}", self.handle.pool))?;
        Ok(())
    }

    /// Allocates a new self-managed snapshot id in this pool.
    pub async fn selfmanaged_snap_create(&self) -> Result<u64> {
        // SAFETY: the out snap id lives in the payload until completion.
        let aio = unsafe {
            submit::<u64, RadosCompletion>(
                "rados_aio_ioctx_selfmanaged_snap_create",
                0,
                || format!("pool {}", self.handle.pool),
                |snap, c| {
                    librados::rados_aio_ioctx_selfmanaged_snap_create(self.raw(), snap, c.0);
                    0
                },
            )
        }?;
        let (ret, snap) = aio.await?;
        check(ret, "selfmanaged_snap_create", || format!("pool {}", self.handle.pool))?;
        Ok(snap)
    }

    /// Rolls one object back to its content at self-managed snapshot `snap` (an object that
    /// did not exist then is removed). No aio variant: runs on the blocking pool.
    pub async fn selfmanaged_snap_rollback(&self, oid: &str, snap: u64) -> Result<()> {
        let c_oid = cstring("object name", oid)?;
        let handle = self.handle.clone();
        let target = self.object_target(oid);
        blocking(move || {
            // SAFETY: `handle` keeps the ioctx alive for the call; `c_oid` is a valid C string.
            let ret =
                unsafe { librados::rados_ioctx_selfmanaged_snap_rollback(handle.raw, c_oid.as_ptr(), snap) };
            check(ret, "rados_ioctx_selfmanaged_snap_rollback", || target)?;
            Ok(())
        })
        .await
    }

    /// Releases a self-managed snapshot id.
    pub async fn selfmanaged_snap_remove(&self, snap: u64) -> Result<()> {
        // SAFETY: no out-parameters.
        let aio = unsafe {
            submit::<(), RadosCompletion>(
                "rados_aio_ioctx_selfmanaged_snap_remove",
                (),
                || format!("pool {}", self.handle.pool),
                |_, c| {
                    librados::rados_aio_ioctx_selfmanaged_snap_remove(self.raw(), snap, c.0);
                    0
                },
            )
        }?;
        let (ret, ()) = aio.await?;
        check(ret, "selfmanaged_snap_remove", || format!("pool {} snap {snap}", self.handle.pool))?;
        Ok(())
    }

    /// Sends a notification to the object's watchers and waits for their acks (or `timeout`).
    pub async fn notify(&self, oid: &str, payload: &[u8], timeout: Duration) -> Result<NotifyReply> {
        let c_oid = cstring("object name", oid)?;
        let timeout_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        // SAFETY: the reply out-parameters live in the payload until completion; the payload
        // bytes are copied by librados.
        let aio = unsafe {
            submit::<NotifyOut, RadosCompletion>(
                "rados_aio_notify",
                NotifyOut::default(),
                || self.object_target(oid),
                |out, c| {
                    librados::rados_aio_notify(
                        self.raw(),
                        c_oid.as_ptr(),
                        c.0,
                        payload.as_ptr().cast(),
                        payload.len() as c_int,
                        timeout_ms,
                        &mut (*out).buf,
                        &mut (*out).len,
                    )
                },
            )
        }?;
        let (ret, mut out) = aio.await?;
        // SAFETY: buffer allocated by librados for this notify (or null), freed once.
        let reply = unsafe { take_buffer(std::mem::replace(&mut out.buf, std::ptr::null_mut()), out.len) };
        // ETIMEDOUT still carries the acks that did arrive.
        if ret < 0 && ret != -libc::ETIMEDOUT {
            return Err(RadosError::Call {
                op: "rados_aio_notify",
                target: self.object_target(oid),
                errno: -ret,
            });
        }
        decode_notify_reply(&reply).ok_or_else(|| RadosError::BadReply {
            op: "rados_aio_notify",
            target: self.object_target(oid),
            detail: format!("{} bytes of notify reply do not decode", reply.len()),
        })
    }

    /// Watches an object: notifications arrive on the returned [`crate::Watch`].
    pub async fn watch(&self, oid: &str) -> Result<crate::Watch> {
        crate::watch::Watch::start(self.handle.clone(), oid, self.object_target(oid), false).await
    }

    /// Watches an object and leaves each notification's ack to the caller
    /// ([`crate::Watch::ack`], with a reply payload), as rbd-mirror's instance objects need.
    pub async fn watch_with_acks(&self, oid: &str) -> Result<crate::Watch> {
        crate::watch::Watch::start(self.handle.clone(), oid, self.object_target(oid), true).await
    }
}

/// Decodes the reply of `rados_notify2`: acks `map<(gid, cookie), bufferlist>` then timeouts
/// `set<(gid, cookie)>`.
fn decode_notify_reply(mut b: &[u8]) -> Option<NotifyReply> {
    fn u32_(b: &mut &[u8]) -> Option<u32> {
        let (h, t) = b.split_first_chunk::<4>()?;
        *b = t;
        Some(u32::from_le_bytes(*h))
    }
    fn u64_(b: &mut &[u8]) -> Option<u64> {
        let (h, t) = b.split_first_chunk::<8>()?;
        *b = t;
        Some(u64::from_le_bytes(*h))
    }
    if b.is_empty() {
        return Some(NotifyReply::default());
    }
    let mut reply = NotifyReply::default();
    let n = u32_(&mut b)?;
    for _ in 0..n {
        let (gid, cookie) = (u64_(&mut b)?, u64_(&mut b)?);
        let len = u32_(&mut b)? as usize;
        let data = b.get(..len)?;
        b = b.get(len..)?;
        reply.acks.push((gid, cookie, Bytes::copy_from_slice(data)));
    }
    let n = u32_(&mut b)?;
    for _ in 0..n {
        reply.timeouts.push((u64_(&mut b)?, u64_(&mut b)?));
    }
    Some(reply)
}

#[derive(Default)]
struct NotifyOut {
    buf: *mut c_char,
    len: usize,
}
// SAFETY: owns a librados buffer; moved only between the submitting thread and the callback.
unsafe impl Send for NotifyOut {}
impl Drop for NotifyOut {
    fn drop(&mut self) {
        // SAFETY: librados-allocated buffer (or null), freed once.
        drop(unsafe { take_buffer(std::mem::replace(&mut self.buf, std::ptr::null_mut()), self.len) });
    }
}

/// The destination of [`IoCtx::read_into`]'s reads, shared by their payloads. librados writes
/// into it through raw pointers taken before it was shared; Rust only owns it meanwhile.
struct ReadBuffer(Vec<u8>, ReadsInFlight);

/// Counts a `read_into` or `read_buffer` in its ioctx until the last of its reads' payloads is gone (possibly
/// in a librados callback after the future was dropped): the ioctx is not destroyed before.
struct ReadsInFlight(Arc<AtomicUsize>);

impl ReadsInFlight {
    fn enter(count: &Arc<AtomicUsize>) -> ReadsInFlight {
        count.fetch_add(1, Ordering::AcqRel);
        ReadsInFlight(count.clone())
    }
}

impl Drop for ReadsInFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Longest wait for reads in flight before an ioctx is destroyed anyway.
const READS_DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Out-parameters of a read op, at a stable (boxed) address while the op is in flight.
struct ReadOut {
    prval: c_int,
    iter: librados::rados_omap_iter_t,
    more: u8,
    xattr_iter: librados::rados_xattrs_iter_t,
    exec_buf: *mut c_char,
    exec_len: usize,
}

impl ReadOut {
    fn free_iter(&mut self) {
        if !self.iter.is_null() {
            // SAFETY: iterator from a completed op, freed once.
            unsafe { librados::rados_omap_get_end(self.iter) };
            self.iter = std::ptr::null_mut();
        }
        if !self.xattr_iter.is_null() {
            // SAFETY: iterator from a completed op, freed once.
            unsafe { librados::rados_getxattrs_end(self.xattr_iter) };
            self.xattr_iter = std::ptr::null_mut();
        }
    }
}

/// A read operation with its out-parameters; crate-internal (reads go through `IoCtx`).
struct ReadOp {
    raw: librados::rados_read_op_t,
    out: ReadOut,
}

// SAFETY: owns its op and out-parameters; moved between the submitting thread and the
// completion callback, never shared.
unsafe impl Send for ReadOp {}

impl ReadOp {
    fn new() -> ReadOp {
        ReadOp {
            // SAFETY: allocation only.
            raw: unsafe { librados::rados_create_read_op() },
            out: ReadOut {
                prval: 0,
                iter: std::ptr::null_mut(),
                more: 0,
                xattr_iter: std::ptr::null_mut(),
                exec_buf: std::ptr::null_mut(),
                exec_len: 0,
            },
        }
    }
}

impl Drop for ReadOp {
    fn drop(&mut self) {
        self.out.free_iter();
        // SAFETY: buffer allocated by librados (or null), freed once.
        drop(unsafe {
            take_buffer(std::mem::replace(&mut self.out.exec_buf, std::ptr::null_mut()), self.out.exec_len)
        });
        // SAFETY: only dropped once the op completed or was never submitted.
        unsafe { librados::rados_release_read_op(self.raw) };
    }
}

/// A compound write operation, applied atomically to one object by [`IoCtx::operate`].
///
/// Built on librados' C++ `ObjectWriteOperation` through our shim (`cxx/rados_shim.cc`):
/// every step copies its data into the operation at once, into a buffer of exactly its size
/// (the C API's `rados_write_op_write` rounds each copy up to a page plus a header: 8 KiB for
/// a 4 KiB write), so callers' buffers need not outlive the call; [`WriteOp::write_buffer`]
/// sends part of an [`ObjectBuffer`] without copying it. A step librados could not add
/// (memory) fails the whole operation when it is started.
pub struct WriteOp {
    raw: *mut shim::rmrs_write_op,
    first_step: &'static str,
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOp").field("first_step", &self.first_step).finish()
    }
}

// SAFETY: owns its op; moved between the submitting thread and the completion callback.
unsafe impl Send for WriteOp {}

impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: only dropped once the op completed or was never submitted; null-safe.
        unsafe { shim::rmrs_write_op_free(self.raw) };
    }
}

impl Default for WriteOp {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteOp {
    /// An empty operation.
    ///
    /// # Panics
    /// If the allocator cannot give the few bytes of an empty operation (as `Box::new`).
    pub fn new() -> WriteOp {
        // SAFETY: allocation only; null on failure.
        let raw = unsafe { shim::rmrs_write_op_new() };
        if raw.is_null() {
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u64; 8]>());
        }
        WriteOp { raw, first_step: "write_op" }
    }

    fn step(&mut self, name: &'static str) {
        if self.first_step == "write_op" {
            self.first_step = name;
        }
    }

    /// Creates the object; `exclusive` fails with `EEXIST` if it exists.
    pub fn create(&mut self, exclusive: bool) -> &mut Self {
        self.step("create");
        // SAFETY: live op.
        unsafe { shim::rmrs_write_op_create(self.raw, c_int::from(exclusive)) };
        self
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> &mut Self {
        self.write_parts(offset, &[Part::Copy(data)])
    }

    /// Writes the concatenation of `pieces` at `offset` (one OSD write). Pieces that are
    /// slices of a buffer from [`IoCtx::read_shared`] are sent from it without a copy;
    /// others are copied.
    pub fn write_bytes(&mut self, offset: u64, pieces: &[Bytes]) -> &mut Self {
        let parts: Vec<Part<'_>> = pieces.iter().map(crate::buffer::part_of).collect();
        self.write_parts(offset, &parts)
    }

    /// Writes bytes `range` of `buffer` at `offset`, sharing the buffer's memory (librados
    /// keeps it alive as long as the write needs it). A range outside the buffer fails the
    /// operation with `EINVAL` when it is started.
    pub fn write_buffer(
        &mut self,
        offset: u64,
        buffer: &ObjectBuffer,
        range: std::ops::Range<usize>,
    ) -> &mut Self {
        self.write_parts(offset, &[Part::Buffer(buffer, range)])
    }

    fn write_parts(&mut self, offset: u64, parts: &[Part<'_>]) -> &mut Self {
        self.step("write");
        let raw: Vec<shim::rmrs_part> = parts
            .iter()
            .map(|p| match p {
                Part::Shared(buffer, range) => shared_part(buffer, range),
                Part::Buffer(buffer, range) => shared_part(buffer, range),
                Part::Copy(bytes) => shim::rmrs_part {
                    buffer: std::ptr::null(),
                    data: bytes.as_ptr().cast(),
                    from: 0,
                    len: bytes.len(),
                },
            })
            .collect();
        // SAFETY: live op; every part names a live buffer (held by `parts`) or a live slice;
        // the shim copies or references them before returning and writes through none.
        unsafe { shim::rmrs_write_op_write_parts(self.raw, offset, raw.as_ptr(), raw.len()) };
        self
    }

    /// Replaces the object's content.
    pub fn write_full(&mut self, data: &[u8]) -> &mut Self {
        self.step("write_full");
        // SAFETY: live op; the shim copies `data`.
        unsafe { shim::rmrs_write_op_write_full(self.raw, data.as_ptr().cast(), data.len()) };
        self
    }

    /// Appends `data`.
    pub fn append(&mut self, data: &[u8]) -> &mut Self {
        self.step("append");
        // SAFETY: live op; the shim copies `data`.
        unsafe { shim::rmrs_write_op_append(self.raw, data.as_ptr().cast(), data.len()) };
        self
    }

    /// Zeroes `len` bytes at `offset`.
    pub fn zero(&mut self, offset: u64, len: u64) -> &mut Self {
        self.step("zero");
        // SAFETY: live op.
        unsafe { shim::rmrs_write_op_zero(self.raw, offset, len) };
        self
    }

    /// Truncates to `size`.
    pub fn truncate(&mut self, size: u64) -> &mut Self {
        self.step("truncate");
        // SAFETY: live op.
        unsafe { shim::rmrs_write_op_truncate(self.raw, size) };
        self
    }

    /// Removes the object.
    pub fn remove(&mut self) -> &mut Self {
        self.step("remove");
        // SAFETY: live op.
        unsafe { shim::rmrs_write_op_remove(self.raw) };
        self
    }

    /// Fails the whole op with `ENOENT` unless the object exists.
    pub fn assert_exists(&mut self) -> &mut Self {
        self.step("assert_exists");
        // SAFETY: live op.
        unsafe { shim::rmrs_write_op_assert_exists(self.raw) };
        self
    }

    /// Sets omap keys.
    pub fn omap_set(&mut self, entries: &[(&str, &[u8])]) -> Result<&mut Self> {
        self.step("omap_set");
        let keys = entries.iter().map(|(k, _)| cstring("omap key", k)).collect::<Result<Vec<_>>>()?;
        let key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let val_ptrs: Vec<*const c_char> = entries.iter().map(|(_, v)| v.as_ptr().cast()).collect();
        let lens: Vec<usize> = entries.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: live op; arrays of equal length; the shim copies keys and values.
        unsafe {
            shim::rmrs_write_op_omap_set(
                self.raw,
                key_ptrs.as_ptr(),
                val_ptrs.as_ptr(),
                lens.as_ptr(),
                entries.len(),
            )
        };
        Ok(self)
    }

    /// Removes omap keys.
    pub fn omap_rm_keys(&mut self, keys: &[&str]) -> Result<&mut Self> {
        self.step("omap_rm_keys");
        let keys = keys.iter().map(|k| cstring("omap key", k)).collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: live op; the shim copies the keys.
        unsafe { shim::rmrs_write_op_omap_rm_keys(self.raw, ptrs.as_ptr(), ptrs.len()) };
        Ok(self)
    }

    /// Removes every omap key.
    pub fn omap_clear(&mut self) -> &mut Self {
        self.step("omap_clear");
        // SAFETY: live op.
        unsafe { shim::rmrs_write_op_omap_clear(self.raw) };
        self
    }

    /// Sets an xattr.
    pub fn set_xattr(&mut self, name: &str, value: &[u8]) -> Result<&mut Self> {
        self.step("setxattr");
        let n = cstring("xattr name", name)?;
        // SAFETY: live op; the shim copies name and value.
        unsafe { shim::rmrs_write_op_setxattr(self.raw, n.as_ptr(), value.as_ptr().cast(), value.len()) };
        Ok(self)
    }

    /// Removes an xattr.
    pub fn remove_xattr(&mut self, name: &str) -> Result<&mut Self> {
        self.step("rmxattr");
        let n = cstring("xattr name", name)?;
        // SAFETY: live op; the shim copies the name.
        unsafe { shim::rmrs_write_op_rmxattr(self.raw, n.as_ptr()) };
        Ok(self)
    }

    /// Calls an object-class method as part of this write.
    pub fn exec(&mut self, class: &str, method: &str, input: &[u8]) -> Result<&mut Self> {
        self.step("exec");
        let c = cstring("class name", class)?;
        let m = cstring("method name", method)?;
        // SAFETY: live op; the shim copies the names and the input. Failure of the method
        // fails the whole op (its result is what `operate` reports).
        unsafe {
            shim::rmrs_write_op_exec(self.raw, c.as_ptr(), m.as_ptr(), input.as_ptr().cast(), input.len())
        };
        Ok(self)
    }
}

/// The shim's description of bytes `range` of `buffer`, shared (out-of-range lengths are the
/// shim's to refuse).
fn shared_part(buffer: &ObjectBuffer, range: &std::ops::Range<usize>) -> shim::rmrs_part {
    shim::rmrs_part {
        buffer: buffer.raw,
        data: std::ptr::null(),
        from: range.start,
        len: range.end.saturating_sub(range.start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reply_decodes_acks_and_timeouts() {
        let mut b = Vec::new();
        b.extend(1u32.to_le_bytes());
        b.extend(42u64.to_le_bytes());
        b.extend(7u64.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(b"abc");
        b.extend(1u32.to_le_bytes());
        b.extend(43u64.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        let r = decode_notify_reply(&b).unwrap();
        assert_eq!(r.acks, vec![(42, 7, Bytes::from_static(b"abc"))]);
        assert_eq!(r.timeouts, vec![(43, 8)]);
        assert!(decode_notify_reply(&b[..b.len() - 1]).is_none());
        assert_eq!(decode_notify_reply(&[]).unwrap(), NotifyReply::default());
    }
}
