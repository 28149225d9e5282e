//! Image administration through public librbd: create (with options), remove, id/name
//! lookups, and [`ImageRw`], a read-write handle on a *primary* image for snapshots, resize,
//! metadata, features and data writes.
//!
//! This is for tests and DR tooling acting as an ordinary librbd client on a primary image;
//! replayers never write through librbd (it refuses writes to non-primary images).
//! Data writes, discards and flushes are `rbd_aio_*` completions turned into futures; every
//! other call is synchronous in librbd and runs on the blocking pool.

use std::ffi::{c_int, CString};
use std::sync::{Arc, Mutex};

use crate::cluster::SendPtr;
use crate::completion::{blocking, submit, RbdCompletion};
use crate::error::{check, cstring, RadosError, Result};
use crate::rbd::image::{image_target, sized_string, ImageHandle};
use crate::rbd::Image;
use crate::sys::librbd;
use crate::IoCtx;

/// Options of [`IoCtx::create_image`]; `None` leaves librbd's (configured) default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCreateOptions {
    /// Object size as a power of two (12..=26; 22 = 4 MiB).
    pub order: Option<u8>,
    /// Feature bits (`RBD_FEATURE_*`, see [`features`]); default `rbd_default_features`.
    pub features: Option<u64>,
    /// Stripe unit in bytes (a non-default one needs the striping-v2 feature).
    pub stripe_unit: Option<u64>,
    /// Stripe count.
    pub stripe_count: Option<u64>,
    /// Separate pool for the data objects.
    pub data_pool: Option<String>,
    /// Journal object size as a power of two (journaling images).
    pub journal_order: Option<u8>,
    /// Number of journal objects written in parallel (journaling images).
    pub journal_splay_width: Option<u8>,
    /// Separate pool for the journal objects (journaling images).
    pub journal_pool: Option<String>,
    /// Clone format (1: the parent snapshot must be protected; 2: no protection needed), for
    /// [`IoCtx::clone_image`].
    pub clone_format: Option<u8>,
}

/// RBD feature bits, for [`ImageCreateOptions::features`] and [`ImageRw::update_features`].
pub use rbd_types::features;

/// An `rbd_image_options_t`, destroyed on drop.
struct Options(librbd::rbd_image_options_t);

impl Options {
    fn new() -> Options {
        let mut raw: librbd::rbd_image_options_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer; allocation only.
        unsafe { librbd::rbd_image_options_create(&mut raw) };
        Options(raw)
    }

    fn set_u64(&mut self, opt: u32, value: u64, target: &str) -> Result<()> {
        // SAFETY: live options handle; librbd validates the option number and type.
        let ret = unsafe { librbd::rbd_image_options_set_uint64(self.0, opt as c_int, value) };
        check(ret, "rbd_image_options_set_uint64", || format!("{target} option {opt}")).map(drop)
    }

    fn set_str(&mut self, opt: u32, value: &CString, target: &str) -> Result<()> {
        // SAFETY: live options handle; valid C string, copied by librbd.
        let ret = unsafe { librbd::rbd_image_options_set_string(self.0, opt as c_int, value.as_ptr()) };
        check(ret, "rbd_image_options_set_string", || format!("{target} option {opt}")).map(drop)
    }
}

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by `Options::new`, destroyed once.
        unsafe { librbd::rbd_image_options_destroy(self.0) };
    }
}

impl Options {
    /// The librbd options of `opts` (C strings checked first, so this can run off the
    /// runtime threads).
    fn of(opts: &ImageCreateOptions) -> Result<impl FnOnce(&str) -> Result<Options> + Send + 'static> {
        let data_pool = opts.data_pool.as_deref().map(|p| cstring("data pool", p)).transpose()?;
        let journal_pool = opts.journal_pool.as_deref().map(|p| cstring("journal pool", p)).transpose()?;
        let opts = opts.clone();
        Ok(move |target: &str| {
            let mut o = Options::new();
            let uints = [
                (librbd::RBD_IMAGE_OPTION_ORDER, opts.order.map(u64::from)),
                (librbd::RBD_IMAGE_OPTION_FEATURES, opts.features),
                (librbd::RBD_IMAGE_OPTION_STRIPE_UNIT, opts.stripe_unit),
                (librbd::RBD_IMAGE_OPTION_STRIPE_COUNT, opts.stripe_count),
                (librbd::RBD_IMAGE_OPTION_JOURNAL_ORDER, opts.journal_order.map(u64::from)),
                (librbd::RBD_IMAGE_OPTION_JOURNAL_SPLAY_WIDTH, opts.journal_splay_width.map(u64::from)),
                (librbd::RBD_IMAGE_OPTION_CLONE_FORMAT, opts.clone_format.map(u64::from)),
            ];
            for (opt, value) in uints {
                if let Some(v) = value {
                    o.set_u64(opt, v, target)?;
                }
            }
            if let Some(p) = &data_pool {
                o.set_str(librbd::RBD_IMAGE_OPTION_DATA_POOL, p, target)?;
            }
            if let Some(p) = &journal_pool {
                o.set_str(librbd::RBD_IMAGE_OPTION_JOURNAL_POOL, p, target)?;
            }
            Ok(o)
        })
    }
}

impl IoCtx {
    /// Creates image `name` of `size` bytes (`rbd_create4`, i.e. `rbd create` with options).
    pub async fn create_image(&self, name: &str, size: u64, opts: &ImageCreateOptions) -> Result<()> {
        let c_name = cstring("image name", name)?;
        let options = Options::of(opts)?;
        let h = self.handle.clone();
        let target = image_target(self, name, None);
        blocking(move || {
            let o = options(&target)?;
            // SAFETY: live ioctx (Arc held); valid C string; live options handle.
            let ret = unsafe { librbd::rbd_create4(h.raw, c_name.as_ptr(), size, o.0) };
            check(ret, "rbd_create4", || target.clone()).map(drop)
        })
        .await
    }

    /// Creates image `name` in this pool as a clone of snapshot `snap_name` of image
    /// `parent_name` in `parent_io`'s pool (`rbd_clone3`, i.e. `rbd clone` with options).
    pub async fn clone_image(
        &self,
        parent_io: &IoCtx,
        parent_name: &str,
        snap_name: &str,
        name: &str,
        opts: &ImageCreateOptions,
    ) -> Result<()> {
        let (c_parent, c_snap) = (cstring("image name", parent_name)?, cstring("snapshot name", snap_name)?);
        let c_name = cstring("image name", name)?;
        let options = Options::of(opts)?;
        let (h, ph) = (self.handle.clone(), parent_io.handle.clone());
        let target = format!(
            "{} (clone of {}@{snap_name})",
            image_target(self, name, None),
            image_target(parent_io, parent_name, None)
        );
        blocking(move || {
            let o = options(&target)?;
            // SAFETY: live ioctxs (Arcs held); valid C strings; live options handle.
            let ret = unsafe {
                librbd::rbd_clone3(ph.raw, c_parent.as_ptr(), c_snap.as_ptr(), h.raw, c_name.as_ptr(), o.0)
            };
            check(ret, "rbd_clone3", || target.clone()).map(drop)
        })
        .await
    }

    /// Removes image `name` and its data (`rbd_remove`). Fails with `ENOTEMPTY` while it has
    /// snapshots and `EBUSY` while another client has it open (watchers).
    pub async fn remove_image(&self, name: &str) -> Result<()> {
        let c_name = cstring("image name", name)?;
        let h = self.handle.clone();
        let target = image_target(self, name, None);
        blocking(move || {
            // SAFETY: live ioctx (Arc held); valid C string.
            let ret = unsafe { librbd::rbd_remove(h.raw, c_name.as_ptr()) };
            check(ret, "rbd_remove", || target).map(drop)
        })
        .await
    }

    /// Removes the image with id `id` from the RBD trash, and its data (`rbd_trash_remove`;
    /// `force`: even before its deferment end time). Fails with `ENOTEMPTY` while it has
    /// snapshots and `EBUSY` while another client has it open (watchers).
    pub async fn trash_remove(&self, id: &str, force: bool) -> Result<()> {
        let c_id = cstring("image id", id)?;
        let h = self.handle.clone();
        let target = format!("trashed {}", image_target(self, id, None));
        blocking(move || {
            // SAFETY: live ioctx (Arc held); valid C string.
            let ret = unsafe { librbd::rbd_trash_remove(h.raw, c_id.as_ptr(), force) };
            check(ret, "rbd_trash_remove", || target).map(drop)
        })
        .await
    }

    /// The id of image `name` (opens it read-only and asks `rbd_get_id`).
    pub async fn image_id(&self, name: &str) -> Result<String> {
        Image::open(self, name, None).await?.id().await
    }

    /// The name of the image with id `id` (opens it read-only and asks `rbd_get_name`).
    pub async fn image_name(&self, id: &str) -> Result<String> {
        Image::open_by_id(self, id, None).await?.name().await
    }
}

/// An RBD image opened read-write (`rbd_open`) at its head: for operations on a *primary*
/// image. Cheap to clone; closed (off the runtime threads) when the last clone is dropped.
#[derive(Clone)]
pub struct ImageRw {
    handle: Arc<ImageHandle>,
    /// `image pool[/namespace]/name`, for errors.
    target: String,
}

impl std::fmt::Debug for ImageRw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageRw").field("target", &self.target).finish()
    }
}

impl ImageRw {
    /// Opens image `name` read-write at its head.
    pub async fn open(io: &IoCtx, name: &str) -> Result<ImageRw> {
        let c_name = cstring("image name", name)?;
        let target = image_target(io, name, None);
        let ioctx = io.handle.clone();
        blocking(move || {
            let mut raw: librbd::rbd_image_t = std::ptr::null_mut();
            // SAFETY: live ioctx (Arc held); valid C string and out-pointer; head (null snap).
            let ret = unsafe { librbd::rbd_open(ioctx.raw, c_name.as_ptr(), &mut raw, std::ptr::null()) };
            check(ret, "rbd_open", || target.clone())?;
            Ok(ImageRw { handle: Arc::new(ImageHandle { raw, sync_calls: Mutex::new(()), ioctx }), target })
        })
        .await
    }

    /// `image pool/name`, as used in errors.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs a synchronous librbd call on the blocking pool, serialized with the image's
    /// other synchronous calls.
    async fn sync_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(librbd::rbd_image_t, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        ImageHandle::sync_call(&self.handle, &self.target, f).await
    }

    /// Runs a synchronous call taking one C string argument (a snapshot name, a key).
    async fn call_with_name(
        &self,
        what: &'static str,
        name: &str,
        op: &'static str,
        call: unsafe extern "C" fn(librbd::rbd_image_t, *const std::ffi::c_char) -> c_int,
    ) -> Result<()> {
        let c = cstring(what, name)?;
        let label = name.to_owned();
        self.sync_call(move |raw, target| {
            // SAFETY: live image opened read-write; valid C string; `call` is a librbd
            // function taking (image, C string) and not retaining the string.
            let ret = unsafe { call(raw, c.as_ptr()) };
            check(ret, op, || format!("{target} ({what} {label})")).map(drop)
        })
        .await
    }

    /// Creates user snapshot `name` (`rbd_snap_create`).
    pub async fn snap_create(&self, name: &str) -> Result<()> {
        self.call_with_name("snapshot name", name, "rbd_snap_create", librbd::rbd_snap_create).await
    }

    /// Removes user snapshot `name` (`rbd_snap_remove`); `EBUSY` while protected.
    pub async fn snap_remove(&self, name: &str) -> Result<()> {
        self.call_with_name("snapshot name", name, "rbd_snap_remove", librbd::rbd_snap_remove).await
    }

    /// Protects snapshot `name` from removal (`rbd_snap_protect`).
    pub async fn snap_protect(&self, name: &str) -> Result<()> {
        self.call_with_name("snapshot name", name, "rbd_snap_protect", librbd::rbd_snap_protect).await
    }

    /// Unprotects snapshot `name` (`rbd_snap_unprotect`); `EBUSY` while it has clones.
    pub async fn snap_unprotect(&self, name: &str) -> Result<()> {
        self.call_with_name("snapshot name", name, "rbd_snap_unprotect", librbd::rbd_snap_unprotect).await
    }

    /// Renames snapshot `src` to `dst` (`rbd_snap_rename`).
    pub async fn snap_rename(&self, src: &str, dst: &str) -> Result<()> {
        let c_src = cstring("snapshot name", src)?;
        let c_dst = cstring("snapshot name", dst)?;
        let label = format!("{src} -> {dst}");
        self.sync_call(move |raw, target| {
            // SAFETY: live image opened read-write; valid C strings.
            let ret = unsafe { librbd::rbd_snap_rename(raw, c_src.as_ptr(), c_dst.as_ptr()) };
            check(ret, "rbd_snap_rename", || format!("{target} (snapshot {label})")).map(drop)
        })
        .await
    }

    /// Resizes the image to `size` bytes (`rbd_resize`; shrinking discards the tail).
    pub async fn resize(&self, size: u64) -> Result<()> {
        self.sync_call(move |raw, target| {
            // SAFETY: live image opened read-write.
            let ret = unsafe { librbd::rbd_resize(raw, size) };
            check(ret, "rbd_resize", || format!("{target} (to {size} bytes)")).map(drop)
        })
        .await
    }

    /// Sets image metadata `key` to `value` (`rbd_metadata_set`, `rbd image-meta set`).
    pub async fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let c_key = cstring("metadata key", key)?;
        let c_value = cstring("metadata value", value)?;
        let label = key.to_owned();
        self.sync_call(move |raw, target| {
            // SAFETY: live image opened read-write; valid C strings.
            let ret = unsafe { librbd::rbd_metadata_set(raw, c_key.as_ptr(), c_value.as_ptr()) };
            check(ret, "rbd_metadata_set", || format!("{target} (metadata key {label})")).map(drop)
        })
        .await
    }

    /// Removes image metadata `key` (`rbd_metadata_remove`); `ENOENT` when absent.
    pub async fn metadata_remove(&self, key: &str) -> Result<()> {
        self.call_with_name("metadata key", key, "rbd_metadata_remove", librbd::rbd_metadata_remove).await
    }

    /// The value of image metadata `key`, `None` when it is not set (`rbd_metadata_get`).
    pub async fn metadata_get(&self, key: &str) -> Result<Option<String>> {
        let c_key = cstring("metadata key", key)?;
        let label = key.to_owned();
        self.sync_call(move |raw, target| {
            let res =
                sized_string("rbd_metadata_get", &format!("{target} (metadata key {label})"), |buf, len| {
                    // SAFETY: live image; `buf` has `*len` bytes; librbd sets `*len` to the size
                    // needed (value + NUL) and answers ERANGE when it does not fit.
                    unsafe { librbd::rbd_metadata_get(raw, c_key.as_ptr(), buf, len) }
                });
            match res {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Feature bits (`RBD_FEATURE_*`, see [`features`]).
    pub async fn features(&self) -> Result<u64> {
        ImageHandle::features(&self.handle, &self.target).await
    }

    /// Enables (`enabled`) or disables the dynamic features in `features`
    /// (`rbd_update_features`, `rbd feature enable|disable`).
    pub async fn update_features(&self, features: u64, enabled: bool) -> Result<()> {
        self.sync_call(move |raw, target| {
            // SAFETY: live image opened read-write.
            let ret = unsafe { librbd::rbd_update_features(raw, features, u8::from(enabled)) };
            check(ret, "rbd_update_features", || {
                format!("{target} ({} features {features:#x})", if enabled { "enable" } else { "disable" })
            })
            .map(drop)
        })
        .await
    }

    /// Writes `data` at `offset` (`rbd_aio_write`). `data` is copied first, so the future
    /// may be dropped at any time. At most `i32::MAX` bytes per call.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if data.len() > i32::MAX as usize {
            return Err(self.invalid("rbd_aio_write"));
        }
        let len = data.len();
        let raw = SendPtr(self.handle.raw);
        // SAFETY: the buffer lives in the payload until the completion callback hands it back
        // (librbd references, not copies, the caller's buffer); the image stays open at least
        // until librbd finished the request (rbd_close waits for in-flight I/O).
        let aio = unsafe {
            submit::<Vec<u8>, RbdCompletion>(
                "rbd_aio_write",
                data.to_vec(),
                || self.target.clone(),
                |buf, c| librbd::rbd_aio_write(raw.0, offset, len, (*buf).as_ptr().cast(), c.0),
            )
        }?;
        let (ret, _buf) = aio.await?;
        check(ret, "rbd_aio_write", || format!("{} ({len} bytes at {offset})", self.target)).map(drop)
    }

    /// Discards `len` bytes at `offset` (`rbd_aio_discard`; reads back as zeros).
    pub async fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let raw = SendPtr(self.handle.raw);
        // SAFETY: no buffers or out-parameters; the image stays open until the request is done.
        let aio = unsafe {
            submit::<(), RbdCompletion>(
                "rbd_aio_discard",
                (),
                || self.target.clone(),
                |_, c| librbd::rbd_aio_discard(raw.0, offset, len, c.0),
            )
        }?;
        let (ret, ()) = aio.await?;
        check(ret, "rbd_aio_discard", || format!("{} ({len} bytes at {offset})", self.target)).map(drop)
    }

    /// Waits until every write issued before is persisted (`rbd_aio_flush`).
    pub async fn flush(&self) -> Result<()> {
        let raw = SendPtr(self.handle.raw);
        // SAFETY: no buffers or out-parameters; the image stays open until the request is done.
        let aio = unsafe {
            submit::<(), RbdCompletion>(
                "rbd_aio_flush",
                (),
                || self.target.clone(),
                |_, c| librbd::rbd_aio_flush(raw.0, c.0),
            )
        }?;
        let (ret, ()) = aio.await?;
        check(ret, "rbd_aio_flush", || self.target.clone()).map(drop)
    }

    fn invalid(&self, op: &'static str) -> RadosError {
        RadosError::Call { op, target: self.target.clone(), errno: libc::EINVAL }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_bits_match_librbd() {
        assert_eq!(features::LAYERING, 1);
        assert_eq!(features::EXCLUSIVE_LOCK, 4);
        assert_eq!(features::JOURNALING, 64);
        assert_eq!(ImageCreateOptions::default().order, None);
    }

    #[test]
    fn options_accept_known_values() {
        let mut o = Options::new();
        o.set_u64(librbd::RBD_IMAGE_OPTION_ORDER, 22, "t").unwrap();
        o.set_str(librbd::RBD_IMAGE_OPTION_DATA_POOL, &CString::new("p").unwrap(), "t").unwrap();
        // A string option set as an integer is refused by librbd.
        assert!(o.set_u64(librbd::RBD_IMAGE_OPTION_DATA_POOL, 1, "t").is_err());
    }
}
