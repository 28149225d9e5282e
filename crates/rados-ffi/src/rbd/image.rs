//! Images opened read-only through public librbd: stat, features, aio reads, snapshots of
//! every namespace, diffs and per-image mirroring state; plus the pool-level image listing
//! and the operator actions (enable/promote/demote/resync/mirror snapshot) that tests and DR
//! tooling use.
//!
//! Reads are `rbd_aio_read` completions turned into futures; every other call is synchronous
//! in librbd and runs on the blocking pool (see `completion::blocking`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::cluster::SendPtr;
use crate::completion::{blocking, submit, teardown, RbdCompletion};
use crate::error::{check, cstring, RadosError, Result};
use crate::ioctx::IoCtxHandle;
use crate::rbd::c_values;
use crate::sys::librbd;
use crate::IoCtx;
use rbd_types::cls_rbd::MirrorImageSiteStatus;
use rbd_types::{MirrorImageMode, MirrorImageState, MirrorSnapshotNamespace, SnapshotNamespace, UTime};

/// Owns the `rbd_image_t`; holds the ioctx handle (and through it the cluster) so that the
/// cluster connection outlives the image (librbd duplicates the ioctx but not the cluster).
pub(crate) struct ImageHandle {
    pub(crate) raw: librbd::rbd_image_t,
    /// Serializes librbd's synchronous (non-aio) calls on this image; see the `Sync` impl.
    pub(crate) sync_calls: Mutex<()>,
    pub(crate) ioctx: Arc<IoCtxHandle>,
}

// SAFETY: an `rbd_image_t` is a pointer to a heap `librbd::ImageCtx` not tied to the thread
// that opened it; librbd itself calls into it from its own threads (finishers, watchers).
unsafe impl Send for ImageHandle {}
// SAFETY: shared references reach (a) `rbd_aio_read`, which librbd documents as safe to issue
// concurrently on one image (the image request queue and ImageCtx state are behind librbd's
// own locks: `owner_lock`, `image_lock`), and (b) synchronous calls (stat, snapshots, diff,
// mirroring), which we serialize with `sync_calls` out of caution rather than rely on every
// one of them being internally locked. The image is opened read-only and its snapshot is only
// chosen before the handle is shared (`open_by_id_at_snap_id`), so nothing mutates it.
// `admin::ImageRw` also uses this handle read-write: its aio writes/discards/flushes are as
// concurrency-safe in librbd as `rbd_aio_read`, and its mutating synchronous calls (snapshots,
// resize, metadata, features) go through the same `sync_calls` mutex.
unsafe impl Sync for ImageHandle {}

impl ImageHandle {
    /// Runs a synchronous librbd call on the blocking pool, serialized with the image's other
    /// synchronous calls; `target` names the image in errors.
    pub(crate) async fn sync_call<T: Send + 'static>(
        handle: &Arc<ImageHandle>,
        target: &str,
        f: impl FnOnce(librbd::rbd_image_t, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let h = handle.clone();
        let target = target.to_owned();
        blocking(move || {
            let _guard = h.sync_calls.lock().unwrap_or_else(|e| e.into_inner());
            f(h.raw, &target)
        })
        .await
    }

    /// Feature bits (`rbd_get_features`).
    pub(crate) async fn features(handle: &Arc<ImageHandle>, target: &str) -> Result<u64> {
        Self::sync_call(handle, target, |raw, target| {
            let mut f: u64 = 0;
            // SAFETY: live image; valid out-pointer.
            let ret = unsafe { librbd::rbd_get_features(raw, &mut f) };
            check(ret, "rbd_get_features", || target.to_owned())?;
            Ok(f)
        })
        .await
    }
}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        let raw = SendPtr(self.raw);
        let ioctx = self.ioctx.clone();
        // rbd_close shuts down the image's I/O queue (waiting for in-flight requests) and its
        // watchers: blocking, so on the blocking pool, never a runtime thread. The buffers of
        // any aio read still in flight are owned by their completions, not by us.
        teardown(move || {
            let raw = raw;
            // SAFETY: last owner of the image handle; closed exactly once.
            unsafe { librbd::rbd_close(raw.0) };
            drop(ioctx);
        });
    }
}

/// An RBD image opened read-only (at its head or at one snapshot). Cheap to clone; closed
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Image {
    handle: Arc<ImageHandle>,
    /// `image pool[/namespace]/name[@snap]`, for errors.
    target: String,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("target", &self.target).finish()
    }
}

/// What `rbd_stat` reports about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes (of the snapshot when opened at one).
    pub size: u64,
    /// Object size in bytes (`1 << order`).
    pub obj_size: u64,
    /// Number of data objects the size spans.
    pub num_objs: u64,
    /// Object size as a power of two.
    pub order: i32,
    /// Prefix of the data objects' names (`rbd_data.<id>`).
    pub block_name_prefix: String,
    /// Parent pool id of a clone (`rbd_stat`'s legacy field), `None` when not a clone.
    pub parent_pool: Option<i64>,
    /// Parent image name of a clone (legacy field), `None` when not a clone or unknown.
    pub parent_name: Option<String>,
}

/// One snapshot of an image, of any namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot id.
    pub id: u64,
    /// Name (mirror snapshots are named `.mirror.<state>.<global id>.<uuid>`).
    pub name: String,
    /// Image size at the snapshot.
    pub size: u64,
    /// Its namespace.
    pub namespace: SnapshotNamespace,
    /// Creation time, when librbd knows it.
    pub timestamp: Option<SystemTime>,
}

/// One extent reported by a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffExtent {
    /// Image offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// False when the extent was discarded (reads as zeros).
    pub exists: bool,
}

/// An image's mirroring identity (`rbd_mirror_image_get_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorImageInfo {
    /// The global image id shared by every site ("" when mirroring is disabled).
    pub global_id: String,
    /// Enabled / disabled / disabling.
    pub state: MirrorImageState,
    /// Whether this site holds the primary.
    pub primary: bool,
}

impl MirrorImageInfo {
    fn from_raw(info: &librbd::rbd_mirror_image_info_t, op: &'static str, target: &str) -> Result<Self> {
        Ok(MirrorImageInfo {
            // SAFETY: librbd filled `global_id` with a NUL-terminated string (or left it
            // null); it stays valid until the caller's cleanup call.
            global_id: unsafe { owned_string(info.global_id) },
            state: c_values::mirror_image_state(info.state, op, target)?,
            primary: info.primary,
        })
    }
}

/// An image's mirroring status as seen from every site (`rbd mirror image status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorImageGlobalStatus {
    /// Image name.
    pub name: String,
    /// Mirroring identity.
    pub info: MirrorImageInfo,
    /// One entry per reporting site.
    pub sites: Vec<MirrorImageSiteStatus>,
}

impl MirrorImageGlobalStatus {
    /// The local site's entry (empty mirror uuid), if any.
    pub fn local(&self) -> Option<&MirrorImageSiteStatus> {
        self.sites.iter().find(|s| s.mirror_uuid.is_empty())
    }
}

/// The parent of a clone: the image and snapshot it was cloned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    /// The parent's pool id (in the clone's cluster).
    pub pool_id: i64,
    /// The parent's pool name.
    pub pool_name: String,
    /// The parent's RADOS namespace ("" for the default).
    pub pool_namespace: String,
    /// The parent image's id.
    pub image_id: String,
    /// The parent image's name.
    pub image_name: String,
    /// The parent snapshot's id.
    pub snap_id: u64,
    /// The parent snapshot's name.
    pub snap_name: String,
}

/// `CEPH_NOSNAP` (`(uint64_t)-2`): "no snapshot" in librbd's snapshot id fields.
/// A C string librbd owns, copied (lossily) into a `String`; null gives "".
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the duration of the call.
unsafe fn owned_string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A fixed-size, NUL-padded C array as a `String` (stops at the first NUL or the end).
fn array_string(a: &[c_char]) -> String {
    let bytes: Vec<u8> = a.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `count` consecutive NUL-terminated strings starting at `p` (librbd's packed lists).
///
/// # Safety
/// `p` must be null, or point to at least `count` consecutive NUL-terminated strings.
unsafe fn packed_strings(p: *const c_char, count: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(count.min(64));
    if p.is_null() {
        return out;
    }
    let mut cur = p;
    for _ in 0..count {
        // SAFETY: per the contract, `cur` points at the next of `count` NUL-terminated strings.
        let s = unsafe { CStr::from_ptr(cur) };
        let n = s.to_bytes().len();
        out.push(s.to_string_lossy().into_owned());
        // SAFETY: stepping over the string and its NUL stays within (or one past) the buffer.
        cur = unsafe { cur.add(n + 1) };
    }
    out
}

/// Calls a librbd getter that fills a caller-sized buffer and answers `-ERANGE` when it is
/// too small (updating `*len` to the size needed when the call supports it), until it fits.
pub(crate) fn sized_string(
    op: &'static str,
    target: &str,
    mut call: impl FnMut(*mut c_char, *mut usize) -> c_int,
) -> Result<String> {
    let mut len: usize = 128;
    for _ in 0..10 {
        let mut buf = vec![0 as c_char; len.max(1)];
        let mut want = buf.len();
        let ret = call(buf.as_mut_ptr(), &mut want);
        if ret == -libc::ERANGE {
            len = want.max(len * 2);
            continue;
        }
        check(ret, op, || target.to_owned())?;
        return Ok(array_string(&buf));
    }
    Err(RadosError::BadReply { op, target: target.to_owned(), detail: "buffer size kept growing".into() })
}

fn time_from_secs(secs: i64) -> Option<SystemTime> {
    (secs > 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64))
}

pub(crate) fn image_target(io: &IoCtx, key: &str, snap: Option<&str>) -> String {
    let mut t = if io.namespace().is_empty() {
        format!("image {}/{key}", io.pool_name())
    } else {
        format!("image {}/{}/{key}", io.pool_name(), io.namespace())
    };
    if let Some(s) = snap {
        t.push('@');
        t.push_str(s);
    }
    t
}

/// How an image is looked up when opened.
#[derive(Clone, Copy)]
enum OpenBy {
    Name,
    Id,
}

/// C callback of `rbd_diff_iterate2`: appends one extent to the `Mutex<Vec<DiffExtent>>`
/// behind `arg`. Never unwinds into C: a panic (allocation failure) becomes `-ENOMEM`, which
/// makes librbd stop iterating and return the error.
unsafe extern "C" fn diff_callback(offset: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int {
    let res = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `&Mutex<Vec<DiffExtent>>` that `diff_iterate` passed and keeps
        // alive until `rbd_diff_iterate2` returns (after its last callback). Shared access only.
        let out = unsafe { &*arg.cast::<Mutex<Vec<DiffExtent>>>() };
        let mut v = out.lock().unwrap_or_else(|e| e.into_inner());
        v.push(DiffExtent { offset, len: len as u64, exists: exists != 0 });
    }));
    match res {
        Ok(()) => 0,
        Err(_) => -libc::ENOMEM,
    }
}

impl Image {
    /// Opens image `name` read-only, at its head or at user snapshot `snap`.
    pub async fn open(io: &IoCtx, name: &str, snap: Option<&str>) -> Result<Image> {
        Self::open_ro(io, OpenBy::Name, name, snap, None).await
    }

    /// Opens the image with id `id` read-only, at its head or at user snapshot `snap`.
    pub async fn open_by_id(io: &IoCtx, id: &str, snap: Option<&str>) -> Result<Image> {
        Self::open_ro(io, OpenBy::Id, id, snap, None).await
    }

    /// Opens the image with id `id` read-only at the snapshot with id `snap_id`, which may be
    /// in any namespace (e.g. a mirror snapshot, which cannot be opened by name).
    pub async fn open_by_id_at_snap_id(io: &IoCtx, id: &str, snap_id: u64) -> Result<Image> {
        Self::open_ro(io, OpenBy::Id, id, None, Some(snap_id)).await
    }

    async fn open_ro(
        io: &IoCtx,
        by: OpenBy,
        key: &str,
        snap: Option<&str>,
        snap_id: Option<u64>,
    ) -> Result<Image> {
        let c_key = cstring(
            match by {
                OpenBy::Name => "image name",
                OpenBy::Id => "image id",
            },
            key,
        )?;
        let c_snap = snap.map(|s| cstring("snapshot name", s)).transpose()?;
        let snap_label = snap.map(str::to_owned).or_else(|| snap_id.map(|id| format!("(snap id {id})")));
        let target = image_target(io, key, snap_label.as_deref());
        let ioctx = io.handle.clone();
        blocking(move || {
            let mut raw: librbd::rbd_image_t = std::ptr::null_mut();
            let snap_ptr = c_snap.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
            let (op, ret) = match by {
                // SAFETY: live ioctx (Arc held); valid C strings (or null snap) and out-pointer.
                OpenBy::Name => ("rbd_open_read_only", unsafe {
                    librbd::rbd_open_read_only(ioctx.raw, c_key.as_ptr(), &mut raw, snap_ptr)
                }),
                // SAFETY: as above.
                OpenBy::Id => ("rbd_open_by_id_read_only", unsafe {
                    librbd::rbd_open_by_id_read_only(ioctx.raw, c_key.as_ptr(), &mut raw, snap_ptr)
                }),
            };
            check(ret, op, || target.clone())?;
            let image =
                Image { handle: Arc::new(ImageHandle { raw, sync_calls: Mutex::new(()), ioctx }), target };
            if let Some(id) = snap_id {
                // SAFETY: freshly opened image not shared with anyone yet: selecting its
                // snapshot cannot race with other calls. On error `image` closes it.
                let ret = unsafe { librbd::rbd_snap_set_by_id(image.handle.raw, id) };
                check(ret, "rbd_snap_set_by_id", || image.target.clone())?;
            }
            Ok(image)
        })
        .await
    }

    /// Runs a synchronous librbd call on this image on the blocking pool, serialized with the
    /// image's other synchronous calls.
    async fn sync_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(librbd::rbd_image_t, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        ImageHandle::sync_call(&self.handle, &self.target, f).await
    }

    /// `image pool/name[@snap]`, as used in errors.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Size, object size and count, order, block name prefix (`rbd_stat`).
    pub async fn stat(&self) -> Result<ImageInfo> {
        self.sync_call(|raw, target| {
            // SAFETY: all-zero is a valid `rbd_image_info_t` (integers and char arrays).
            let mut info: librbd::rbd_image_info_t = unsafe { std::mem::zeroed() };
            // SAFETY: live image; `info` is a valid out-parameter of the stated size.
            let ret =
                unsafe { librbd::rbd_stat(raw, &mut info, std::mem::size_of::<librbd::rbd_image_info_t>()) };
            check(ret, "rbd_stat", || target.to_owned())?;
            let parent_name = array_string(&info.parent_name);
            Ok(ImageInfo {
                size: info.size,
                obj_size: info.obj_size,
                num_objs: info.num_objs,
                order: info.order,
                block_name_prefix: array_string(&info.block_name_prefix),
                parent_pool: (info.parent_pool >= 0).then_some(info.parent_pool),
                parent_name: (!parent_name.is_empty()).then_some(parent_name),
            })
        })
        .await
    }

    /// Feature bits (`RBD_FEATURE_*`: layering, exclusive-lock, journaling, ...).
    pub async fn features(&self) -> Result<u64> {
        ImageHandle::features(&self.handle, &self.target).await
    }

    /// The image id (`rbd_get_id`).
    pub async fn id(&self) -> Result<String> {
        self.sync_call(|raw, target| {
            sized_string("rbd_get_id", target, |buf, len| {
                // SAFETY: live image; `buf` has `*len` bytes.
                unsafe { librbd::rbd_get_id(raw, buf, *len) }
            })
        })
        .await
    }

    /// The image name (`rbd_get_name`).
    pub async fn name(&self) -> Result<String> {
        self.sync_call(|raw, target| {
            sized_string("rbd_get_name", target, |buf, len| {
                // SAFETY: live image; `buf` has `*len` bytes; librbd updates `*len` on ERANGE.
                unsafe { librbd::rbd_get_name(raw, buf, len) }
            })
        })
        .await
    }

    /// Id of the pool holding the data objects (the image's own pool without a data pool).
    pub async fn data_pool_id(&self) -> Result<i64> {
        self.sync_call(|raw, target| {
            // SAFETY: live image; a getter returning the id or a negative errno.
            let id = unsafe { librbd::rbd_get_data_pool_id(raw) };
            if id < 0 {
                return Err(RadosError::Call {
                    op: "rbd_get_data_pool_id",
                    target: target.to_owned(),
                    errno: (-id) as i32,
                });
            }
            Ok(id)
        })
        .await
    }

    /// The parent of a clone (`rbd_get_parent`); `None` for an image without one.
    pub async fn parent(&self) -> Result<Option<ParentSpec>> {
        self.sync_call(|raw, target| {
            // SAFETY: plain C structs of pointers and integers; all-zero is their empty state.
            let mut image: librbd::rbd_linked_image_spec_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut snap: librbd::rbd_snap_spec_t = unsafe { std::mem::zeroed() };
            // SAFETY: live image; valid out-pointers, filled with strings librbd allocates.
            let ret = unsafe { librbd::rbd_get_parent(raw, &mut image, &mut snap) };
            if ret == -libc::ENOENT {
                return Ok(None);
            }
            check(ret, "rbd_get_parent", || target.to_owned())?;
            // SAFETY: filled by the successful call above: NUL-terminated strings or null.
            let spec = unsafe {
                ParentSpec {
                    pool_id: image.pool_id,
                    pool_name: owned_string(image.pool_name),
                    pool_namespace: owned_string(image.pool_namespace),
                    image_id: owned_string(image.image_id),
                    image_name: owned_string(image.image_name),
                    snap_id: snap.id,
                    snap_name: owned_string(snap.name),
                }
            };
            // SAFETY: filled by librbd above, freed once.
            unsafe {
                librbd::rbd_linked_image_spec_cleanup(&mut image);
                librbd::rbd_snap_spec_cleanup(&mut snap);
            }
            Ok(Some(spec))
        })
        .await
    }

    /// The bytes of the image that read through to its parent (`rbd_get_overlap`); 0 for an
    /// image without a parent.
    pub async fn overlap(&self) -> Result<u64> {
        self.sync_call(|raw, target| {
            let mut overlap = 0u64;
            // SAFETY: live image; valid out-pointer.
            let ret = unsafe { librbd::rbd_get_overlap(raw, &mut overlap) };
            if ret == -libc::ENOENT {
                return Ok(0);
            }
            check(ret, "rbd_get_overlap", || target.to_owned())?;
            Ok(overlap)
        })
        .await
    }

    /// The image's operation features (`rbd_get_op_features`: `RBD_OPERATION_FEATURE_*`).
    pub async fn op_features(&self) -> Result<u64> {
        self.sync_call(|raw, target| {
            let mut features = 0u64;
            // SAFETY: live image; valid out-pointer.
            let ret = unsafe { librbd::rbd_get_op_features(raw, &mut features) };
            check(ret, "rbd_get_op_features", || target.to_owned())?;
            Ok(features)
        })
        .await
    }

    /// Whether the image is a clone with a parent (not flattened).
    pub async fn has_parent(&self) -> Result<bool> {
        self.sync_call(|raw, target| {
            // With no room for any name, librbd answers -ENOENT without a parent and
            // -ERANGE with one: nothing is written to the (null, zero-length) buffers.
            // SAFETY: live image; every buffer pointer is null with a length of 0.
            let r = unsafe {
                librbd::rbd_get_parent_info2(
                    raw,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    0,
                )
            };
            match -r {
                libc::ENOENT => Ok(false),
                0 | libc::ERANGE => Ok(true),
                errno => {
                    Err(RadosError::Call { op: "rbd_get_parent_info2", target: target.to_owned(), errno })
                }
            }
        })
        .await
    }

    /// Stripe unit and stripe count (object size and 1 without fancy striping).
    pub async fn stripe(&self) -> Result<(u64, u64)> {
        self.sync_call(|raw, target| {
            let (mut unit, mut count) = (0u64, 0u64);
            // SAFETY: live image; valid out-pointers.
            let ret = unsafe { librbd::rbd_get_stripe_unit(raw, &mut unit) };
            check(ret, "rbd_get_stripe_unit", || target.to_owned())?;
            // SAFETY: as above.
            let ret = unsafe { librbd::rbd_get_stripe_count(raw, &mut count) };
            check(ret, "rbd_get_stripe_count", || target.to_owned())?;
            Ok((unit, count))
        })
        .await
    }

    /// Reads up to `len` bytes at `offset` (`rbd_aio_read`). The result is short only when
    /// the read crosses the end of the image; reading at or past the end is an error
    /// (`EINVAL`) from librbd. `len` is limited to `i32::MAX` (the completion's return value).
    pub async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        if len > i32::MAX as usize {
            return Err(RadosError::Call {
                op: "rbd_aio_read",
                target: self.target.clone(),
                errno: libc::EINVAL,
            });
        }
        let aio = {
            let raw = SendPtr(self.handle.raw);
            // SAFETY: the buffer lives in the payload until the completion callback hands it
            // back; the image stays open at least until librbd finished the request (rbd_close
            // waits for in-flight I/O).
            unsafe {
                submit::<Vec<u8>, RbdCompletion>(
                    "rbd_aio_read",
                    vec![0u8; len],
                    || self.target.clone(),
                    |buf, c| librbd::rbd_aio_read(raw.0, offset, len, (*buf).as_mut_ptr().cast(), c.0),
                )
            }?
        };
        let (ret, mut buf) = aio.await?;
        let n = check(ret, "rbd_aio_read", || self.target.clone())?;
        buf.truncate(n as usize);
        Ok(Bytes::from(buf))
    }

    /// Every snapshot of the image, of every namespace (user, group, trash, mirror).
    ///
    /// On Pacific `rbd_snap_list` returns the snapshots of *all* namespaces: it lists
    /// `ImageCtx::snap_info` unfiltered (`rbd snap ls` hides non-user snapshots on the CLI
    /// side unless `--all`). Each snapshot's namespace then comes from
    /// `rbd_snap_get_namespace_type` and, per type, `rbd_snap_get_group_namespace`,
    /// `rbd_snap_get_trash_namespace` or `rbd_snap_get_mirror_namespace`. A snapshot removed
    /// between the listing and those calls (`ENOENT`) is left out.
    pub async fn snapshots(&self) -> Result<Vec<SnapInfo>> {
        self.sync_call(|raw, target| {
            let listed = snap_list(raw, target)?;
            let mut out = Vec::with_capacity(listed.len());
            for (id, name, size) in listed {
                let namespace = match snap_namespace(raw, id, target) {
                    Ok(ns) => ns,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                };
                // SAFETY: all-zero is a valid `timespec`.
                let mut ts: librbd::timespec = unsafe { std::mem::zeroed() };
                // SAFETY: live image; valid out-pointer.
                let ret = unsafe { librbd::rbd_snap_get_timestamp(raw, id, &mut ts) };
                let timestamp = if ret < 0 { None } else { time_from_secs(ts.tv_sec) };
                out.push(SnapInfo { id, name, size, namespace, timestamp });
            }
            Ok(out)
        })
        .await
    }

    /// Extents that changed since `from_snap` (or every allocated extent when `None`) within
    /// `offset..offset + len` (`rbd_diff_iterate2`). With `whole_object`, extents are whole
    /// objects (fast when the object map is valid). With `include_parent`, a clone's extents
    /// inherited from its parent count too.
    pub async fn diff_iterate(
        &self,
        from_snap: Option<&str>,
        offset: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
    ) -> Result<Vec<DiffExtent>> {
        let c_from = from_snap.map(|s| cstring("snapshot name", s)).transpose()?;
        self.sync_call(move |raw, target| {
            let collected: Mutex<Vec<DiffExtent>> = Mutex::new(Vec::new());
            let from_ptr = c_from.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
            // SAFETY: live image; `from_ptr` is null or a valid C string; `collected` outlives
            // the call, which returns only after its last callback; the callback only takes a
            // shared reference and never unwinds.
            let ret = unsafe {
                librbd::rbd_diff_iterate2(
                    raw,
                    from_ptr,
                    offset,
                    len,
                    u8::from(include_parent),
                    u8::from(whole_object),
                    Some(diff_callback),
                    (&collected as *const Mutex<Vec<DiffExtent>>).cast_mut().cast(),
                )
            };
            check(ret, "rbd_diff_iterate2", || target.to_owned())?;
            Ok(collected.into_inner().unwrap_or_else(|e| e.into_inner()))
        })
        .await
    }

    /// The image's mirroring identity: global id, state, whether primary here.
    pub async fn mirror_image_info(&self) -> Result<MirrorImageInfo> {
        self.sync_call(|raw, target| {
            let mut info =
                librbd::rbd_mirror_image_info_t { global_id: std::ptr::null_mut(), state: 0, primary: false };
            // SAFETY: live image; `info` is a valid out-parameter of the stated size.
            let ret = unsafe {
                librbd::rbd_mirror_image_get_info(
                    raw,
                    &mut info,
                    std::mem::size_of::<librbd::rbd_mirror_image_info_t>(),
                )
            };
            check(ret, "rbd_mirror_image_get_info", || target.to_owned())?;
            let out = MirrorImageInfo::from_raw(&info, "rbd_mirror_image_get_info", target);
            // SAFETY: frees the string librbd allocated in `info`, once.
            unsafe { librbd::rbd_mirror_image_get_info_cleanup(&mut info) };
            out
        })
        .await
    }

    /// The image's mirroring mode (journal or snapshot). `EINVAL` when mirroring is disabled.
    pub async fn mirror_image_mode(&self) -> Result<MirrorImageMode> {
        self.sync_call(|raw, target| {
            let mut mode: librbd::rbd_mirror_image_mode_t = 0;
            // SAFETY: live image; valid out-pointer.
            let ret = unsafe { librbd::rbd_mirror_image_get_mode(raw, &mut mode) };
            check(ret, "rbd_mirror_image_get_mode", || target.to_owned())?;
            c_values::mirror_image_mode(mode, "rbd_mirror_image_get_mode", target)
        })
        .await
    }

    /// The image's mirroring status from every site (`rbd mirror image status`).
    pub async fn mirror_image_global_status(&self) -> Result<MirrorImageGlobalStatus> {
        self.sync_call(|raw, target| {
            let mut st = librbd::rbd_mirror_image_global_status_t {
                name: std::ptr::null_mut(),
                info: librbd::rbd_mirror_image_info_t {
                    global_id: std::ptr::null_mut(),
                    state: 0,
                    primary: false,
                },
                site_statuses_count: 0,
                site_statuses: std::ptr::null_mut(),
            };
            // SAFETY: live image; `st` is a valid out-parameter of the stated size.
            let ret = unsafe {
                librbd::rbd_mirror_image_get_global_status(
                    raw,
                    &mut st,
                    std::mem::size_of::<librbd::rbd_mirror_image_global_status_t>(),
                )
            };
            check(ret, "rbd_mirror_image_get_global_status", || target.to_owned())?;
            let sites: &[librbd::rbd_mirror_image_site_status_t] =
                if st.site_statuses.is_null() || st.site_statuses_count == 0 {
                    &[]
                } else {
                    // SAFETY: librbd allocated `site_statuses_count` entries, valid until cleanup.
                    unsafe { std::slice::from_raw_parts(st.site_statuses, st.site_statuses_count as usize) }
                };
            const OP: &str = "rbd_mirror_image_get_global_status";
            let sites = sites
                .iter()
                .map(|s| {
                    Ok(MirrorImageSiteStatus {
                        // SAFETY: strings allocated by librbd, valid until cleanup.
                        mirror_uuid: unsafe { owned_string(s.mirror_uuid) },
                        state: c_values::mirror_image_status_state(s.state, OP, target)?,
                        // SAFETY: as above.
                        description: unsafe { owned_string(s.description) },
                        last_update: UTime {
                            sec: u32::try_from(s.last_update.max(0)).unwrap_or(u32::MAX),
                            nsec: 0,
                        },
                        up: s.up,
                    })
                })
                .collect::<Result<Vec<_>>>();
            let info = MirrorImageInfo::from_raw(&st.info, OP, target);
            let out = match (sites, info) {
                (Ok(sites), Ok(info)) => Ok(MirrorImageGlobalStatus {
                    // SAFETY: as above.
                    name: unsafe { owned_string(st.name) },
                    info,
                    sites,
                }),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            // SAFETY: frees everything librbd allocated in `st`, once.
            unsafe { librbd::rbd_mirror_image_global_status_cleanup(&mut st) };
            out
        })
        .await
    }
}

/// `(id, name, size)` of every snapshot, through `rbd_snap_list` (all namespaces on Pacific).
fn snap_list(raw: librbd::rbd_image_t, target: &str) -> Result<Vec<(u64, String, u64)>> {
    let mut max: c_int = 16;
    for _ in 0..10 {
        let zeroed = librbd::rbd_snap_info_t { id: 0, size: 0, name: std::ptr::null() };
        let mut snaps = vec![zeroed; max.max(2) as usize];
        let mut n = snaps.len() as c_int;
        // SAFETY: live image; `snaps` has `n` entries (librbd needs one more than the count,
        // for its terminating entry, and answers ERANGE with the size it needs).
        let ret = unsafe { librbd::rbd_snap_list(raw, snaps.as_mut_ptr(), &mut n) };
        if ret == -libc::ERANGE {
            max = n.max(max * 2);
            continue;
        }
        let count = check(ret, "rbd_snap_list", || target.to_owned())? as usize;
        let out = snaps
            .iter()
            .take(count.min(snaps.len()))
            // SAFETY: names strdup'ed by librbd, valid until rbd_snap_list_end.
            .map(|s| (s.id, unsafe { owned_string(s.name) }, s.size))
            .collect();
        if count > 0 {
            // SAFETY: frees the names of the entries up to librbd's terminating (null-name)
            // entry, once.
            unsafe { librbd::rbd_snap_list_end(snaps.as_mut_ptr()) };
        }
        return Ok(out);
    }
    Err(RadosError::BadReply {
        op: "rbd_snap_list",
        target: target.to_owned(),
        detail: "snapshot count kept growing".into(),
    })
}

/// The namespace of snapshot `id`.
fn snap_namespace(raw: librbd::rbd_image_t, id: u64, target: &str) -> Result<SnapshotNamespace> {
    let snap_target = || format!("{target} snap id {id}");
    let mut t: librbd::rbd_snap_namespace_type_t = 0;
    // SAFETY: live image; valid out-pointer.
    let ret = unsafe { librbd::rbd_snap_get_namespace_type(raw, id, &mut t) };
    check(ret, "rbd_snap_get_namespace_type", snap_target)?;
    match t {
        librbd::RBD_SNAP_NAMESPACE_TYPE_USER => Ok(SnapshotNamespace::User),
        librbd::RBD_SNAP_NAMESPACE_TYPE_GROUP => {
            let size = std::mem::size_of::<librbd::rbd_snap_group_namespace_t>();
            let mut g = librbd::rbd_snap_group_namespace_t {
                group_pool: -1,
                group_name: std::ptr::null_mut(),
                group_snap_name: std::ptr::null_mut(),
            };
            // SAFETY: live image; `g` is a valid out-parameter of the stated size.
            let ret = unsafe { librbd::rbd_snap_get_group_namespace(raw, id, &mut g, size) };
            check(ret, "rbd_snap_get_group_namespace", snap_target)?;
            // SAFETY: strings allocated by librbd, valid until cleanup.
            let (group_name, group_snap_name) =
                unsafe { (owned_string(g.group_name), owned_string(g.group_snap_name)) };
            // SAFETY: frees what librbd allocated in `g`, once.
            unsafe { librbd::rbd_snap_group_namespace_cleanup(&mut g, size) };
            // librbd's C API names the group; cls `rbd` stores ids (read with
            // `snapshot_get` where the ids are needed).
            Ok(SnapshotNamespace::Group {
                group_pool: g.group_pool,
                group_id: group_name,
                group_snapshot_id: group_snap_name,
            })
        }
        librbd::RBD_SNAP_NAMESPACE_TYPE_TRASH => {
            let original_name = sized_string("rbd_snap_get_trash_namespace", &snap_target(), |buf, len| {
                // SAFETY: live image; `buf` has `*len` bytes.
                unsafe { librbd::rbd_snap_get_trash_namespace(raw, id, buf, *len) }
            })?;
            // Pacific's C API gives the original name only; the original namespace type
            // is reported as user.
            Ok(SnapshotNamespace::Trash { original_name, original_snapshot_namespace_type: 0 })
        }
        librbd::RBD_SNAP_NAMESPACE_TYPE_MIRROR => {
            let size = std::mem::size_of::<librbd::rbd_snap_mirror_namespace_t>();
            let mut m = librbd::rbd_snap_mirror_namespace_t {
                state: 0,
                mirror_peer_uuids_count: 0,
                mirror_peer_uuids: std::ptr::null_mut(),
                complete: false,
                primary_mirror_uuid: std::ptr::null_mut(),
                primary_snap_id: 0,
                last_copied_object_number: 0,
            };
            // SAFETY: live image; `m` is a valid out-parameter of the stated size.
            let ret = unsafe { librbd::rbd_snap_get_mirror_namespace(raw, id, &mut m, size) };
            check(ret, "rbd_snap_get_mirror_namespace", snap_target)?;
            // The C API does not report `snap_seqs`: left empty.
            let ns = MirrorSnapshotNamespace {
                state: c_values::snap_mirror_state(m.state),
                complete: m.complete,
                // SAFETY: librbd packs `mirror_peer_uuids_count` NUL-terminated strings into
                // one allocation, valid until cleanup.
                mirror_peer_uuids: unsafe { packed_strings(m.mirror_peer_uuids, m.mirror_peer_uuids_count) }
                    .into_iter()
                    .collect(),
                // SAFETY: string allocated by librbd, valid until cleanup.
                primary_mirror_uuid: unsafe { owned_string(m.primary_mirror_uuid) },
                primary_snap_id: m.primary_snap_id,
                last_copied_object_number: m.last_copied_object_number,
                snap_seqs: Default::default(),
            };
            // SAFETY: frees what librbd allocated in `m`, once.
            unsafe { librbd::rbd_snap_mirror_namespace_cleanup(&mut m, size) };
            Ok(SnapshotNamespace::Mirror(ns))
        }
        namespace_type => Ok(SnapshotNamespace::Unknown { namespace_type }),
    }
}

/// Opens image `name` read-write, runs `f` on it and closes it (blocking; for operator
/// actions only: replayers never write through librbd).
fn with_image_rw<T>(
    ioctx: &IoCtxHandle,
    c_name: &std::ffi::CStr,
    target: &str,
    f: impl FnOnce(librbd::rbd_image_t) -> Result<T>,
) -> Result<T> {
    let mut raw: librbd::rbd_image_t = std::ptr::null_mut();
    // SAFETY: live ioctx; valid C string and out-pointer; head (null snapshot).
    let ret = unsafe { librbd::rbd_open(ioctx.raw, c_name.as_ptr(), &mut raw, std::ptr::null()) };
    check(ret, "rbd_open", || target.to_owned())?;
    let out = f(raw);
    // SAFETY: opened above, closed once; no other reference to it exists.
    let ret = unsafe { librbd::rbd_close(raw) };
    let out = out?;
    check(ret, "rbd_close", || target.to_owned())?;
    Ok(out)
}

impl IoCtx {
    /// `(id, name)` of every image in this pool and namespace (`rbd_list2`).
    pub async fn list_images(&self) -> Result<Vec<(String, String)>> {
        let h = self.handle.clone();
        let target = format!("pool {}", self.pool_name());
        blocking(move || {
            let mut max: usize = 64;
            for _ in 0..10 {
                let zeroed =
                    librbd::rbd_image_spec_t { id: std::ptr::null_mut(), name: std::ptr::null_mut() };
                let mut specs = vec![zeroed; max.max(1)];
                let mut n = specs.len();
                // SAFETY: live ioctx; `specs` has `n` entries.
                let ret = unsafe { librbd::rbd_list2(h.raw, specs.as_mut_ptr(), &mut n) };
                if ret == -libc::ERANGE {
                    max = n.max(max * 2);
                    continue;
                }
                check(ret, "rbd_list2", || target.clone())?;
                let n = n.min(specs.len());
                let out = specs
                    .iter()
                    .take(n)
                    // SAFETY: strings allocated by librbd for the `n` filled entries.
                    .map(|s| unsafe { (owned_string(s.id), owned_string(s.name)) })
                    .collect();
                // SAFETY: frees the strings of the `n` filled entries, once.
                unsafe { librbd::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
                return Ok(out);
            }
            Err(RadosError::BadReply { op: "rbd_list2", target, detail: "image count kept growing".into() })
        })
        .await
    }

    /// Runs an operator action on image `name` opened read-write, on the blocking pool.
    async fn image_action<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(librbd::rbd_image_t, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let h = self.handle.clone();
        let c_name = cstring("image name", name)?;
        let target = image_target(self, name, None);
        blocking(move || with_image_rw(&h, &c_name, &target, |raw| f(raw, &target))).await
    }

    /// Enables mirroring of image `name` in `mode` (`rbd mirror image enable`).
    pub async fn mirror_image_enable(&self, name: &str, mode: MirrorImageMode) -> Result<()> {
        self.image_action(name, move |raw, target| {
            // SAFETY: image opened read-write by `image_action`.
            let ret = unsafe { librbd::rbd_mirror_image_enable2(raw, c_values::mirror_image_mode_raw(mode)) };
            check(ret, "rbd_mirror_image_enable2", || target.to_owned()).map(drop)
        })
        .await
    }

    /// Disables mirroring of image `name` (`rbd mirror image disable [--force]`).
    pub async fn mirror_image_disable(&self, name: &str, force: bool) -> Result<()> {
        self.image_action(name, move |raw, target| {
            // SAFETY: image opened read-write by `image_action`.
            let ret = unsafe { librbd::rbd_mirror_image_disable(raw, force) };
            check(ret, "rbd_mirror_image_disable", || target.to_owned()).map(drop)
        })
        .await
    }

    /// Promotes image `name` to primary (`rbd mirror image promote [--force]`).
    pub async fn mirror_image_promote(&self, name: &str, force: bool) -> Result<()> {
        self.image_action(name, move |raw, target| {
            // SAFETY: image opened read-write by `image_action`.
            let ret = unsafe { librbd::rbd_mirror_image_promote(raw, force) };
            check(ret, "rbd_mirror_image_promote", || target.to_owned()).map(drop)
        })
        .await
    }

    /// Demotes image `name` to non-primary (`rbd mirror image demote`).
    pub async fn mirror_image_demote(&self, name: &str) -> Result<()> {
        self.image_action(name, |raw, target| {
            // SAFETY: image opened read-write by `image_action`.
            let ret = unsafe { librbd::rbd_mirror_image_demote(raw) };
            check(ret, "rbd_mirror_image_demote", || target.to_owned()).map(drop)
        })
        .await
    }

    /// Flags non-primary image `name` for a full resync (`rbd mirror image resync`).
    pub async fn mirror_image_resync(&self, name: &str) -> Result<()> {
        self.image_action(name, |raw, target| {
            // SAFETY: image opened read-write by `image_action`.
            let ret = unsafe { librbd::rbd_mirror_image_resync(raw) };
            check(ret, "rbd_mirror_image_resync", || target.to_owned()).map(drop)
        })
        .await
    }

    /// Takes a mirror snapshot of primary image `name` (`rbd mirror image snapshot`) and
    /// returns its snapshot id.
    pub async fn mirror_image_create_snapshot(&self, name: &str) -> Result<u64> {
        self.image_action(name, |raw, target| {
            let mut snap_id: u64 = 0;
            // SAFETY: image opened read-write by `image_action`; valid out-pointer.
            let ret = unsafe { librbd::rbd_mirror_image_create_snapshot(raw, &mut snap_id) };
            check(ret, "rbd_mirror_image_create_snapshot", || target.to_owned())?;
            Ok(snap_id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_and_fixed_strings() {
        let buf: Vec<c_char> = b"uuid-a\0uuid-b\0".iter().map(|&b| b as c_char).collect();
        // SAFETY: `buf` holds two NUL-terminated strings.
        let both = unsafe { packed_strings(buf.as_ptr(), 2) };
        assert_eq!(both, vec!["uuid-a", "uuid-b"]);
        // SAFETY: as above.
        assert_eq!(unsafe { packed_strings(buf.as_ptr(), 1) }, vec!["uuid-a"]);
        // SAFETY: null is allowed.
        assert!(unsafe { packed_strings(std::ptr::null(), 3) }.is_empty());
        let fixed: Vec<c_char> = b"rbd_data.1234\0\0\0".iter().map(|&b| b as c_char).collect();
        assert_eq!(array_string(&fixed), "rbd_data.1234");
        let full: Vec<c_char> = b"abc".iter().map(|&b| b as c_char).collect();
        assert_eq!(array_string(&full), "abc");
    }

    #[test]
    fn sized_string_grows_on_erange() {
        let mut calls = 0;
        let s = sized_string("rbd_get_id", "image p/x", |buf, len| {
            calls += 1;
            // SAFETY: `len` points at the buffer size the helper allocated.
            if unsafe { *len } < 300 {
                // SAFETY: as above.
                unsafe { *len = 300 };
                return -libc::ERANGE;
            }
            // SAFETY: the buffer has at least 300 bytes.
            unsafe { *buf = b'z' as c_char };
            0
        })
        .unwrap();
        assert_eq!(s, "z");
        assert_eq!(calls, 2);
        let e = sized_string("rbd_get_id", "image p/x", |_, _| -libc::ENOENT).unwrap_err();
        assert!(e.is_not_found());
    }

    #[test]
    fn diff_callback_collects_extents() {
        let collected: Mutex<Vec<DiffExtent>> = Mutex::new(Vec::new());
        let arg = (&collected as *const Mutex<Vec<DiffExtent>>).cast_mut().cast();
        // SAFETY: `arg` points at `collected`, alive for the calls.
        unsafe {
            assert_eq!(diff_callback(0, 4096, 1, arg), 0);
            assert_eq!(diff_callback(8192, 512, 0, arg), 0);
        }
        assert_eq!(
            collected.into_inner().unwrap(),
            vec![
                DiffExtent { offset: 0, len: 4096, exists: true },
                DiffExtent { offset: 8192, len: 512, exists: false }
            ]
        );
    }
}
