//! The secondary (non-primary) image as the replayer writes it.
//!
//! librbd refuses writes to a non-primary image through its public API (ceph-formats.md
//! §8.2), so data goes straight to the image's `rbd_data.<id>.<object>` objects through
//! librados, with the image's snapshot context, after marking the objects as existing in the
//! HEAD object map (what librbd's object-map pre-update does) when the image has one.
//! Metadata changes (size, image-meta) are cls `rbd` calls on its header. A clone's object
//! that still reads through to its parent gets the parent's data first (librbd's copy-up),
//! so a write to part of it keeps the rest as the clone reads it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::try_join_all;
use parking_lot::Mutex;
use rados_ffi::rbd::{Image, ParentSpec};
use rados_ffi::{IoCtx, ObjectBuffer, Rados, WriteOp};

use crate::cls;
use crate::error::{ReplayError, Result};
use crate::local::write_batch::{pattern_fill, ObjectGroup, ObjectStep};
use rbd_types::cls_rbd::{
    args, header_object_name, id_object_name, image_data_object_name, object_map_name, SnapshotInfo,
    OBJECT_EXISTS, OBJECT_EXISTS_CLEAN, OBJECT_NONEXISTENT, RBD_CHILDREN, RBD_DIRECTORY,
};
use rbd_types::striping::{image_to_object_extents, object_to_image_extents, Layout, ObjectExtent};
use rbd_types::{features, ProtectionStatus, SnapshotNamespace};
use snapshot_differ::{data_runs, ZERO_GRANULARITY};

/// What is fixed about an image for the life of a replayer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGeometry {
    /// Image size in bytes.
    pub size: u64,
    /// log2 of the object size.
    pub order: u8,
    /// Stripe unit in bytes.
    pub stripe_unit: u64,
    /// Stripe count.
    pub stripe_count: u64,
    /// Feature bits.
    pub features: u64,
    /// `rbd_data.<id>`.
    pub block_name_prefix: String,
    /// The pool of its data objects: the image's own, or a separate data pool
    /// (`rbd create --data-pool`).
    pub data_pool_id: i64,
}

impl ImageGeometry {
    /// Reads an image's geometry through librbd (works read-only on non-primary images).
    pub async fn read(io: &IoCtx, image_id: &str) -> Result<ImageGeometry> {
        Self::of(&Image::open_by_id(io, image_id, None).await?).await
    }

    /// The geometry of an image already open.
    pub async fn of(image: &Image) -> Result<ImageGeometry> {
        let info = image.stat().await?;
        let (stripe_unit, stripe_count) = image.stripe().await?;
        let features = image.features().await?;
        let data_pool_id = image.data_pool_id().await?;
        let order = u8::try_from(info.order).map_err(|_| {
            ReplayError::Invalid(format!("{}: object order {} out of range", image.target(), info.order))
        })?;
        Ok(ImageGeometry {
            size: info.size,
            order,
            stripe_unit,
            stripe_count,
            features,
            block_name_prefix: info.block_name_prefix,
            data_pool_id,
        })
    }

    /// The striping layout.
    pub fn layout(&self) -> Result<Layout> {
        Layout::new(self.order, self.stripe_unit, self.stripe_count)
            .map_err(|e| ReplayError::Invalid(format!("image layout: {e}")))
    }
}

/// Whole-object writes and removals with an explicit snapshot context (the image copy's):
/// its own handle on the local pool, so the image's shared handle and its snapshot context
/// are left alone.
#[derive(Debug)]
pub struct ObjectWriter<'a> {
    image: &'a LocalImage,
    io: IoCtx,
}

impl LocalImage {
    /// The image's snapshot context from its header: `(seq, snap ids newest first)`.
    pub async fn snap_context(&self) -> Result<(u64, Vec<u64>)> {
        cls::get_snapcontext(&*self.io.read().await, &self.image_id).await
    }

    /// A writer of whole objects whose writes carry the snapshot context `(seq, snaps)`
    /// (`snaps` newest first, as librados wants them).
    pub async fn object_writer(&self, seq: u64, snaps: &[u64]) -> Result<ObjectWriter<'_>> {
        let mut io = self.io.read().await.data().duplicate().await?;
        io.set_selfmanaged_snap_write_context(seq, snaps)?;
        Ok(ObjectWriter { image: self, io })
    }

    /// Sets the image size in the header and resizes the HEAD object map (new objects
    /// `NONEXISTENT`), without touching data: for copies, which remove objects past a smaller
    /// size themselves, with their own snapshot context.
    pub async fn set_size(&self, size: u64) -> Result<()> {
        if size == self.size() {
            return Ok(());
        }
        let io = self.io.read().await;
        cls::set_size(&io, &self.image_id, size).await?;
        if self.has_object_map() {
            let objects = self.layout.object_count(size);
            cls::object_map_resize(&io, &self.image_id, objects, OBJECT_NONEXISTENT).await?;
            self.marked.lock().retain(|&o| o < objects);
        }
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    /// After a copy into HEAD for snapshot `snap_id` (created before the copy, and left out of
    /// the copy's snapshot context), makes that snapshot's object map equal HEAD's and marks
    /// HEAD's `EXISTS` objects `EXISTS_CLEAN`, as librbd does when it creates a snapshot.
    /// Nothing to do without the object-map feature.
    pub async fn finish_snapshot_object_map(&self, snap_id: u64) -> Result<()> {
        self.freeze_object_map(&*self.io.read().await, snap_id).await
    }

    /// Snapshot `snap_id`'s object map := HEAD's; HEAD `EXISTS` -> `EXISTS_CLEAN` with
    /// fast-diff (librbd's snapshot create).
    async fn freeze_object_map(&self, io: &IoCtx, snap_id: u64) -> Result<()> {
        if !self.has_object_map() {
            return Ok(());
        }
        let head = object_map_name(&self.image_id, None);
        let map = io.read_full(&head).await?;
        io.write_full(&object_map_name(&self.image_id, Some(snap_id)), &map).await?;
        if self.features.load(Ordering::Acquire) & features::FAST_DIFF != 0 {
            let objects = self.layout.object_count(self.size());
            let arg = args::object_map_update(0, objects, OBJECT_EXISTS_CLEAN, Some(OBJECT_EXISTS));
            io.exec_write(&head, "rbd", "object_map_update", &arg).await?;
        }
        // Objects written from now on must be marked EXISTS again.
        self.marked.lock().clear();
        Ok(())
    }
}

/// The replacement of one data object, built by [`ObjectWriter::prepare_object`] and sent by
/// [`ObjectWriter::write_object`].
#[derive(Debug)]
pub struct ObjectWrite {
    object_no: u64,
    op: WriteOp,
    written: u64,
}

impl ObjectWriter<'_> {
    /// Builds the replacement of data object `object_no` with `len` bytes: the data `runs`
    /// are written, each `(object offset, buffer, byte range of the buffer)`, everything else
    /// is left a hole (never written zeros). The writes share the buffers' memory (librados
    /// holds it until they are done), so nothing is copied.
    pub fn prepare_object<'b>(
        &self,
        object_no: u64,
        runs: impl IntoIterator<Item = (u64, &'b ObjectBuffer, std::ops::Range<usize>)>,
        len: u64,
    ) -> ObjectWrite {
        let mut op = WriteOp::new();
        // One atomic op: the old content goes (a clone keeps it for older snapshots), the
        // data runs come, and the length is the source object's.
        op.create(false).truncate(0);
        let mut written = 0u64;
        for (offset, buffer, range) in runs {
            written += range.len() as u64;
            op.write_buffer(offset, buffer, range);
        }
        op.truncate(len);
        ObjectWrite { object_no, op, written }
    }

    /// Sends a replacement built by [`ObjectWriter::prepare_object`]; the HEAD object map
    /// marks the object existing first. Returns the bytes written.
    pub async fn write_object(&self, write: ObjectWrite) -> Result<u64> {
        let ObjectWrite { object_no, op, written } = write;
        self.image.mark_exists(object_no).await?;
        self.io.operate(&self.image.object_name(object_no), op).await?;
        Ok(written)
    }

    /// Removes data object `object_no` (absent is fine), then marks it `NONEXISTENT` in the
    /// HEAD object map. Returns whether it existed.
    pub async fn remove_object(&self, object_no: u64) -> Result<bool> {
        let existed = match self.io.remove(&self.image.object_name(object_no)).await {
            Ok(()) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        self.image.mark_removed(object_no).await?;
        Ok(existed)
    }
}

/// The handles of an image: its pool (header, object maps; what it dereferences to) and, when
/// the image keeps its data objects in a separate data pool, that pool. Both carry the image's
/// snapshot context for writes.
#[derive(Debug)]
struct ImageIo {
    meta: IoCtx,
    data: Option<IoCtx>,
}

impl ImageIo {
    /// The handle of the data objects.
    fn data(&self) -> &IoCtx {
        self.data.as_ref().unwrap_or(&self.meta)
    }

    /// Sets the snapshot context for writes on both handles.
    fn set_snap_write_context(&mut self, seq: u64, snaps: &[u64]) -> Result<()> {
        self.meta.set_selfmanaged_snap_write_context(seq, snaps)?;
        if let Some(data) = &mut self.data {
            data.set_selfmanaged_snap_write_context(seq, snaps)?;
        }
        Ok(())
    }
}

impl std::ops::Deref for ImageIo {
    type Target = IoCtx;

    fn deref(&self) -> &IoCtx {
        &self.meta
    }
}

/// A non-primary image being written by replay.
#[derive(Debug)]
pub struct LocalImage {
    /// Data writes hold it shared; snapshot operations, which change the write snapshot
    /// context (not thread-safe in librados), hold it exclusively.
    io: tokio::sync::RwLock<ImageIo>,
    image_id: String,
    geometry: ImageGeometry,
    layout: Layout,
    /// Current size (the geometry's is the size at open).
    size: AtomicU64,
    /// Current feature bits (the geometry's are those at open).
    features: AtomicU64,
    /// Objects already marked `EXISTS` in the HEAD object map by us.
    marked: Mutex<BTreeSet<u64>>,
    /// A clone's parent, when the image was one at open.
    copy_up: Option<CopyUp>,
}

/// A clone's parent as copy-up reads it (librbd's `CopyupRequest`): the local parent image,
/// open read-only at the parent snapshot. Journal replay writes objects directly, so before
/// the first change to an object of a clone that still reads through to the parent, the
/// parent's data of that object is written into it, as librbd did on the primary.
#[derive(Debug)]
struct CopyUp {
    /// The parent at the parent snapshot.
    parent: Image,
    /// The parent's pool (and namespace).
    parent_io: IoCtx,
    /// Which parent snapshot (for detaching the clone from it).
    spec: ParentSpec,
    /// HEAD's parent overlap: image bytes below it read through to the parent when their
    /// object does not exist (0 once flattened).
    overlap: AtomicU64,
    /// Objects known to be the clone's own (they exist, or were copied up here).
    own: Mutex<BTreeSet<u64>>,
}

impl LocalImage {
    /// Opens image `image_id` of `pool`/`namespace` for raw writes.
    pub async fn open(rados: &Rados, pool: &str, namespace: &str, image_id: &str) -> Result<LocalImage> {
        let meta = rados.ioctx(pool, namespace).await?;
        let image = Image::open_by_id(&meta, image_id, None).await?;
        let geometry = ImageGeometry::of(&image).await?;
        let layout = geometry.layout()?;
        let copy_up = match image.parent().await? {
            Some(spec) => {
                let overlap = image.overlap().await?;
                let parent_io = rados.ioctx(&spec.pool_name, &spec.pool_namespace).await?;
                let parent = Image::open_by_id_at_snap_id(&parent_io, &spec.image_id, spec.snap_id).await?;
                tracing::debug!(parent = %spec.image_name, snap = %spec.snap_name, overlap, "the local image is a clone");
                let own = Mutex::new(BTreeSet::new());
                Some(CopyUp { parent, parent_io, spec, overlap: AtomicU64::new(overlap), own })
            }
            None => None,
        };
        drop(image);
        let data = match geometry.data_pool_id {
            id if id == meta.pool_id() => None,
            id => Some(meta.in_pool(id).await?),
        };
        let mut io = ImageIo { meta, data };
        let (seq, snaps) = cls::get_snapcontext(&io, image_id).await?;
        io.set_snap_write_context(seq, &snaps)?;
        Ok(LocalImage {
            io: tokio::sync::RwLock::new(io),
            image_id: image_id.to_owned(),
            size: AtomicU64::new(geometry.size),
            features: AtomicU64::new(geometry.features),
            geometry,
            layout,
            marked: Mutex::new(BTreeSet::new()),
            copy_up,
        })
    }

    /// The bytes of a clone that read through to its parent (0 for an image without one).
    pub async fn parent_overlap(&self) -> Result<u64> {
        let io = self.io.read().await;
        Ok(Image::open_by_id(&io, &self.image_id, None).await?.overlap().await?)
    }

    /// Whether the image (its HEAD) has a parent.
    pub async fn has_parent(&self) -> Result<bool> {
        let io = self.io.read().await;
        Ok(Image::open_by_id(&io, &self.image_id, None).await?.has_parent().await?)
    }

    /// Detaches a clone's HEAD from its parent, as librbd's flatten does: cls `parent_detach`
    /// on its header (snapshots taken before keep theirs without deep-flatten; the clone-child
    /// operation feature goes once none does), then, when no snapshot refers to the parent
    /// any more, the parent forgets the child (`child_detach` on the parent's header for a
    /// clone v2, `remove_child` from the pool's `rbd_children` for v1), so that the parent
    /// snapshot can be unprotected and removed. Every object must be the image's own by then.
    pub async fn detach_parent(&self) -> Result<()> {
        let io = self.io.read().await;
        let header = header_object_name(&self.image_id);
        let image = Image::open_by_id(&io, &self.image_id, None).await?;
        let parent = image.parent().await?;
        let v2 = image.op_features().await? & features::OPERATION_CLONE_CHILD != 0;
        drop(image);
        // After a restart between the two steps the header has no parent any more: the one
        // read at open is still detached from.
        let Some(c) = &self.copy_up else {
            if parent.is_some() {
                io.exec_write(&header, "rbd", "parent_detach", &[]).await?;
            }
            return Ok(());
        };
        let parent = parent.unwrap_or_else(|| c.spec.clone());
        match io.exec_write(&header, "rbd", "parent_detach", &[]).await {
            // Detached already (a replay of the same flatten after a restart).
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
        c.overlap.store(0, Ordering::Release);
        let image = Image::open_by_id(&io, &self.image_id, None).await?;
        let still_referenced = if v2 {
            image.op_features().await? & features::OPERATION_CLONE_CHILD != 0
        } else {
            !cls::get_snapcontext(&io, &self.image_id).await?.1.is_empty()
        };
        drop(image);
        if still_referenced {
            tracing::info!(parent = %parent.image_name, snap = %parent.snap_name, "detached from the parent; snapshots still refer to it");
            return Ok(());
        }
        let result = if v2 {
            let arg = args::child_detach(parent.snap_id, io.pool_id(), io.namespace(), &self.image_id);
            c.parent_io.exec_write(&header_object_name(&parent.image_id), "rbd", "child_detach", &arg).await
        } else {
            let arg = args::remove_child(parent.pool_id, &parent.image_id, parent.snap_id, &self.image_id);
            io.exec_write(RBD_CHILDREN, "rbd", "remove_child", &arg).await
        };
        match result {
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
        tracing::info!(parent = %parent.image_name, snap = %parent.snap_name, "detached from the parent");
        Ok(())
    }

    /// Whether object `object_no` reads through to the parent when it does not exist: the
    /// image is a clone and part of the object lies below the parent overlap.
    fn in_parent_overlap(&self, object_no: u64) -> bool {
        self.copy_up.as_ref().is_some_and(|c| !self.parent_extents(c, object_no).is_empty())
    }

    /// The parts of object `object_no` below the parent overlap, as `(object offset, image
    /// offset, length)`.
    fn parent_extents(&self, c: &CopyUp, object_no: u64) -> Vec<(u64, u64, u64)> {
        let overlap = c.overlap.load(Ordering::Acquire);
        if overlap == 0 {
            return Vec::new();
        }
        let mut at = 0u64;
        let mut out = Vec::new();
        for (image_offset, len) in
            object_to_image_extents(&self.layout, object_no, 0, self.layout.object_size)
        {
            let object_offset = at;
            at += len;
            if image_offset < overlap {
                out.push((object_offset, image_offset, len.min(overlap - image_offset)));
            }
        }
        out
    }

    /// Before a change to object `object_no` of a clone: when the object still reads
    /// through to the parent (below the overlap, not existing), writes the parent's data of
    /// it into it (zero runs left holes), so that the change applies to the object as the
    /// clone reads it (librbd's copy-up). Nothing to do for an image without a parent.
    async fn copy_up(&self, object_no: u64) -> Result<()> {
        let Some(c) = &self.copy_up else { return Ok(()) };
        let extents = self.parent_extents(c, object_no);
        if extents.is_empty() || c.own.lock().contains(&object_no) {
            return Ok(());
        }
        let name = self.object_name(object_no);
        let exists = match self.io.read().await.data().stat(&name).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        if !exists {
            let mut op = WriteOp::new();
            op.create(true);
            let mut bytes = 0usize;
            for (object_offset, image_offset, len) in extents {
                let data = c.parent.read(image_offset, usize::try_from(len).unwrap_or(usize::MAX)).await?;
                for run in data_runs(&data, ZERO_GRANULARITY) {
                    bytes += run.len();
                    op.write(object_offset + run.start as u64, &data[run]);
                }
            }
            self.mark_exists(object_no).await?;
            match self.io.read().await.data().operate(&name, op).await {
                // Created meanwhile: its own data stays.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                other => other?,
            }
            tracing::debug!(object_no, bytes, "copied up the parent's data");
        }
        c.own.lock().insert(object_no);
        Ok(())
    }

    /// An object of a clone emptied whole (a discard of all of it, or a removal below the
    /// parent overlap): it stays, empty, so that the parent's data no longer shows (librbd's
    /// discard truncates instead of removing there).
    async fn hide_parent_object(&self, object_no: u64) -> Result<()> {
        let mut op = WriteOp::new();
        op.create(false).truncate(0);
        self.mark_exists(object_no).await?;
        self.io.read().await.data().operate(&self.object_name(object_no), op).await?;
        if let Some(c) = &self.copy_up {
            c.own.lock().insert(object_no);
        }
        Ok(())
    }

    /// Flattens the clone as librbd's flatten does: every object still reading through to
    /// the parent is copied up, then the image is detached from its parent. Nothing to do
    /// for an image without a parent.
    pub async fn flatten(&self) -> Result<()> {
        let Some(c) = &self.copy_up else { return Ok(()) };
        let objects = self.layout.object_count(c.overlap.load(Ordering::Acquire));
        use futures::StreamExt;
        let mut copies = futures::stream::iter((0..objects).map(|n| self.copy_up(n))).buffer_unordered(8);
        while let Some(r) = copies.next().await {
            r?;
        }
        drop(copies);
        self.detach_parent().await?;
        tracing::info!(objects, "flattened the local image");
        Ok(())
    }

    /// The image id.
    pub fn image_id(&self) -> &str {
        &self.image_id
    }

    /// The geometry read at open (see [`Self::size`] for the current size).
    pub fn geometry(&self) -> &ImageGeometry {
        &self.geometry
    }

    /// The current feature bits.
    pub fn features(&self) -> u64 {
        self.features.load(Ordering::Acquire)
    }

    /// The current size.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The striping layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn object_name(&self, object_no: u64) -> String {
        image_data_object_name(&self.geometry.block_name_prefix, object_no)
    }

    fn has_object_map(&self) -> bool {
        self.features.load(Ordering::Acquire) & features::OBJECT_MAP != 0
    }

    /// Marks an object as existing in the object map before its first write.
    async fn mark_exists(&self, object_no: u64) -> Result<()> {
        if !self.has_object_map() || self.marked.lock().contains(&object_no) {
            return Ok(());
        }
        let io = self.io.read().await;
        cls::object_map_update(&io, &self.image_id, object_no, object_no + 1, OBJECT_EXISTS).await?;
        self.marked.lock().insert(object_no);
        Ok(())
    }

    async fn mark_removed(&self, object_no: u64) -> Result<()> {
        if !self.has_object_map() {
            return Ok(());
        }
        self.marked.lock().remove(&object_no);
        let io = self.io.read().await;
        cls::object_map_update(&io, &self.image_id, object_no, object_no + 1, OBJECT_NONEXISTENT).await
    }

    fn extents(&self, offset: u64, length: u64) -> Vec<ObjectExtent> {
        image_to_object_extents(&self.layout, offset, length)
    }

    /// Writes `data` at image offset `offset`.
    pub async fn write(&self, offset: u64, data: &Bytes) -> Result<()> {
        let extents = self.extents(offset, data.len() as u64);
        try_join_all(extents.into_iter().map(|x| async move {
            let start = usize::try_from(x.buffer_offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(x.length).unwrap_or(usize::MAX));
            let piece = data.get(start..end).ok_or_else(|| {
                ReplayError::Invalid(format!(
                    "write extent {start}..{end} outside a {} byte buffer",
                    data.len()
                ))
            })?;
            self.copy_up(x.object_no).await?;
            self.mark_exists(x.object_no).await?;
            self.io.read().await.data().write(&self.object_name(x.object_no), x.offset, piece).await?;
            Ok::<_, ReplayError>(())
        }))
        .await?;
        Ok(())
    }

    /// Discards `[offset, offset + length)`: whole objects are removed, object tails
    /// truncated, the rest zeroed; objects that do not exist are left alone.
    pub async fn discard(&self, offset: u64, length: u64) -> Result<()> {
        let object_size = self.layout.object_size;
        let extents = self.extents(offset, length);
        try_join_all(extents.into_iter().map(|x| async move {
            let name = self.object_name(x.object_no);
            let mut op = WriteOp::new();
            let whole = x.offset == 0 && x.length >= object_size;
            if self.in_parent_overlap(x.object_no) {
                if whole {
                    return self.hide_parent_object(x.object_no).await;
                }
                self.copy_up(x.object_no).await?;
            }
            if whole {
                op.remove();
            } else if x.offset + x.length >= object_size {
                op.assert_exists().truncate(x.offset);
            } else {
                op.assert_exists().zero(x.offset, x.length);
            }
            let result = self.io.read().await.data().operate(&name, op).await;
            match result {
                Ok(()) => {}
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            if whole {
                self.mark_removed(x.object_no).await?;
            }
            Ok::<_, ReplayError>(())
        }))
        .await?;
        Ok(())
    }

    /// Writes `pattern` repeated over `[offset, offset + length)`.
    pub async fn write_same(&self, offset: u64, length: u64, pattern: &Bytes) -> Result<()> {
        if pattern.is_empty() {
            return Err(ReplayError::Invalid(format!("write-same at {offset} with an empty pattern")));
        }
        let extents = self.extents(offset, length);
        try_join_all(extents.into_iter().map(|x| async move {
            // Phase of the pattern at this extent's first byte.
            let buf = pattern_fill(pattern, x.buffer_offset, x.length);
            self.copy_up(x.object_no).await?;
            self.mark_exists(x.object_no).await?;
            self.io.read().await.data().write(&self.object_name(x.object_no), x.offset, &buf).await?;
            Ok::<_, ReplayError>(())
        }))
        .await?;
        Ok(())
    }

    /// Applies the prepared operations of one object of a replay window, one compound
    /// operation per group, in order.
    pub async fn apply_prepared(&self, prepared: PreparedObjectOps) -> Result<()> {
        let object_no = prepared.object_no;
        let name = self.object_name(object_no);
        let clone_object = self.in_parent_overlap(object_no);
        for op in prepared.ops {
            if clone_object {
                if let PreparedOp::Remove(_) = op {
                    self.hide_parent_object(object_no).await?;
                    continue;
                }
                self.copy_up(object_no).await?;
            }
            match op {
                PreparedOp::Data(op) => {
                    self.mark_exists(object_no).await?;
                    self.io.read().await.data().operate(&name, op).await?;
                }
                PreparedOp::IfExists(op) => match self.io.read().await.data().operate(&name, op).await {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                },
                PreparedOp::Remove(op) => {
                    let result = self.io.read().await.data().operate(&name, op).await;
                    match result {
                        Ok(()) => self.mark_removed(object_no).await?,
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads `[offset, offset + length)` of the image HEAD (holes read as zeros).
    pub async fn read(&self, offset: u64, length: u64) -> Result<Bytes> {
        let mut out = vec![0u8; usize::try_from(length).unwrap_or(0)];
        for x in self.extents(offset, length) {
            // A clone's object that reads through to the parent is read as the clone reads it.
            self.copy_up(x.object_no).await?;
            let read = self
                .io
                .read()
                .await
                .data()
                .read(&self.object_name(x.object_no), x.offset, x.length as usize)
                .await;
            let got = match read {
                Ok(b) => b,
                Err(e) if e.is_not_found() => Bytes::new(),
                Err(e) => return Err(e.into()),
            };
            let start = x.buffer_offset as usize;
            if let Some(dst) = out.get_mut(start..start + got.len()) {
                dst.copy_from_slice(&got);
            }
        }
        Ok(out.into())
    }

    /// Compare-and-write as librbd replays it: writes only if the current bytes match.
    /// Returns whether it wrote.
    pub async fn compare_and_write(&self, offset: u64, cmp: &Bytes, data: &Bytes) -> Result<bool> {
        let current = self.read(offset, cmp.len() as u64).await?;
        if current != *cmp {
            return Ok(false);
        }
        self.write(offset, data).await?;
        Ok(true)
    }

    /// Resizes the image: trims data beyond a smaller size, then updates the header size
    /// and the object map.
    pub async fn resize(&self, size: u64) -> Result<()> {
        let old = self.size();
        if size < old {
            // A clone's overlap shrinks with it (cls `set_size` does the same to the header):
            // the objects past the new size are removed, not kept to hide the parent.
            if let Some(c) = &self.copy_up {
                c.overlap.fetch_min(size, Ordering::AcqRel);
            }
            self.discard(size, old - size).await?;
        }
        self.set_size(size).await
    }

    /// Sets an image-meta key.
    pub async fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        cls::metadata_set(&*self.io.read().await, &self.image_id, key, value).await
    }

    /// Removes an image-meta key.
    pub async fn metadata_remove(&self, key: &str) -> Result<()> {
        cls::metadata_remove(&*self.io.read().await, &self.image_id, key).await
    }

    /// The image's snapshots (all namespaces), from its header, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        cls::snapshots(&*self.io.read().await, &self.image_id).await
    }

    async fn snapshot_named(&self, name: &str) -> Result<Option<SnapshotInfo>> {
        Ok(self.snapshots().await?.into_iter().find(|s| s.name == name))
    }

    /// Re-reads the header's snapshot context into the write context (exclusive access).
    async fn refresh_snap_context(&self, io: &mut ImageIo) -> Result<()> {
        let (seq, snaps) = cls::get_snapcontext(io, &self.image_id).await?;
        io.set_snap_write_context(seq, &snaps)?;
        Ok(())
    }

    /// Creates a snapshot of the image as librbd does: a pool snapshot id, the header
    /// record, the object map frozen for it (HEAD objects then marked clean for fast-diff),
    /// and the new snapshot context for later writes. An existing snapshot of that name is
    /// success (replay is idempotent).
    pub async fn snap_create(&self, name: &str, namespace: &SnapshotNamespace) -> Result<()> {
        if self.snapshot_named(name).await?.is_some() {
            return Ok(());
        }
        let mut io = self.io.write().await;
        // Snapshot ids come from the data pool, where the data objects are cloned (librbd).
        let snap_id = io.data().selfmanaged_snap_create().await?;
        let header = header_object_name(&self.image_id);
        io.exec_write(&header, "rbd", "snapshot_add", &args::snapshot_add(snap_id, name, namespace)).await?;
        self.freeze_object_map(&io, snap_id).await?;
        self.refresh_snap_context(&mut io).await
    }

    /// Removes a snapshot: header record, pool snapshot, its object map.
    pub async fn snap_remove(&self, name: &str) -> Result<()> {
        let Some(snap) = self.snapshot_named(name).await? else {
            return Ok(());
        };
        let mut io = self.io.write().await;
        let header = header_object_name(&self.image_id);
        io.exec_write(&header, "rbd", "snapshot_remove", &args::snapshot_remove(snap.id)).await?;
        io.data().selfmanaged_snap_remove(snap.id).await?;
        if self.has_object_map() {
            match io.remove(&object_map_name(&self.image_id, Some(snap.id))).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        self.refresh_snap_context(&mut io).await
    }

    /// Renames a snapshot.
    pub async fn snap_rename(&self, from: &str, to: &str) -> Result<()> {
        let Some(snap) = self.snapshot_named(from).await? else {
            return if self.snapshot_named(to).await?.is_some() {
                Ok(()) // already renamed
            } else {
                Err(ReplayError::NotFound(format!("snapshot {from} of image {} not found", self.image_id)))
            };
        };
        let io = self.io.read().await;
        let header = header_object_name(&self.image_id);
        io.exec_write(&header, "rbd", "snapshot_rename", &args::snapshot_rename(snap.id, to)).await?;
        Ok(())
    }

    /// Renames the image as librbd does: the new `rbd_id.<name>` object, the directory
    /// entry, then the old id object removed. Renaming to the current name is a no-op.
    pub async fn rename(&self, to: &str) -> Result<()> {
        let io = self.io.read().await;
        let from = Image::open_by_id(&io, &self.image_id, None).await?.name().await?;
        if from == to {
            return Ok(());
        }
        let mut op = WriteOp::new();
        op.create(true).exec("rbd", "set_id", &args::set_id(&self.image_id))?;
        match io.operate(&id_object_name(to), op).await {
            Err(e) if e.errno() == Some(libc::EEXIST) => {
                return Err(ReplayError::Conflict(format!(
                    "cannot rename image {from} to {to}: the name is taken"
                )))
            }
            other => other?,
        }
        let arg = args::dir_rename_image(&from, to, &self.image_id);
        io.exec_write(RBD_DIRECTORY, "rbd", "dir_rename_image", &arg).await?;
        match io.remove(&id_object_name(&from)).await {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        tracing::info!(%from, %to, "renamed the local image");
        Ok(())
    }

    /// Rolls the image back to snapshot `name` as librbd does: every object rolled back to
    /// its content at the snapshot (objects absent then are removed), the size and the
    /// object map taken from the snapshot.
    pub async fn snap_rollback(&self, name: &str) -> Result<()> {
        let Some(snap) = self.snapshot_named(name).await? else {
            return Err(ReplayError::NotFound(format!(
                "snapshot {name} of image {} not found",
                self.image_id
            )));
        };
        let io = self.io.read().await;
        let current = self.size();
        let objects = self.layout.object_count(current.max(snap.image_size));
        let numbers: Vec<u64> = (0..objects).collect();
        for batch in numbers.chunks(32) {
            try_join_all(batch.iter().map(|&n| {
                let io = &io;
                async move {
                    match io.data().selfmanaged_snap_rollback(&self.object_name(n), snap.id).await {
                        Err(e) if !e.is_not_found() => Err(ReplayError::from(e)),
                        _ => Ok(()),
                    }
                }
            }))
            .await?;
        }
        if snap.image_size != current {
            cls::set_size(&io, &self.image_id, snap.image_size).await?;
            self.size.store(snap.image_size, Ordering::Release);
        }
        if let Some(c) = &self.copy_up {
            // Objects absent at the snapshot are gone again: they read through once more.
            c.own.lock().clear();
        }
        if self.has_object_map() {
            let map = io.read_full(&object_map_name(&self.image_id, Some(snap.id))).await?;
            io.write_full(&object_map_name(&self.image_id, None), &map).await?;
            self.marked.lock().clear();
        }
        tracing::info!(snap = %name, "rolled back to snapshot");
        Ok(())
    }

    /// Enables or disables feature bits as librbd's update_features does for the features
    /// that can change while an image is journal-mirrored: the object map (and fast-diff) is
    /// removed when disabled, and created with every object marked existing when enabled (a
    /// superset `rbd diff` reads correctly; `rbd object-map rebuild` can tighten it); other
    /// bits only change in the header.
    pub async fn update_features(&self, features: u64, enabled: bool) -> Result<()> {
        let io = self.io.read().await;
        let header = header_object_name(&self.image_id);
        let map_bits = features::OBJECT_MAP | features::FAST_DIFF;
        let before = self.features.load(Ordering::Acquire);
        if enabled && features & features::OBJECT_MAP != 0 && before & features::OBJECT_MAP == 0 {
            let objects = self.layout.object_count(self.size());
            cls::object_map_resize(&io, &self.image_id, objects, OBJECT_EXISTS).await?;
        }
        let value = if enabled { features } else { 0 };
        io.exec_write(&header, "rbd", "set_features", &args::set_features(value, features)).await?;
        if !enabled && features & features::OBJECT_MAP != 0 {
            for snap in self.snapshots_with(&io).await? {
                match io.remove(&object_map_name(&self.image_id, Some(snap))).await {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                }
            }
            match io.remove(&object_map_name(&self.image_id, None)).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
            self.marked.lock().clear();
        }
        let after = if enabled { before | features } else { before & !features };
        self.features.store(after, Ordering::Release);
        if (before ^ after) & map_bits != 0 {
            tracing::info!(features = after, "object map features changed");
        }
        Ok(())
    }

    async fn snapshots_with(&self, io: &IoCtx) -> Result<Vec<u64>> {
        Ok(cls::get_snapcontext(io, &self.image_id).await?.1)
    }

    /// Sets a snapshot's protection status.
    pub async fn snap_set_protection(&self, name: &str, status: ProtectionStatus) -> Result<()> {
        let Some(snap) = self.snapshot_named(name).await? else {
            return Err(ReplayError::NotFound(format!(
                "snapshot {name} of image {} not found",
                self.image_id
            )));
        };
        let io = self.io.read().await;
        let header = header_object_name(&self.image_id);
        io.exec_write(&header, "rbd", "set_protection_status", &args::set_protection_status(snap.id, status))
            .await?;
        Ok(())
    }
}

/// The operations of one object of a replay window ([`crate::local::write_batch`]), built: the
/// data is copied into librados operations, so the journal buffers the events sliced can be
/// freed before the operations run.
#[derive(Debug)]
pub struct PreparedObjectOps {
    object_no: u64,
    ops: Vec<PreparedOp>,
}

#[derive(Debug)]
enum PreparedOp {
    /// Object map `EXISTS` first.
    Data(WriteOp),
    /// `ENOENT` is success.
    IfExists(WriteOp),
    /// `ENOENT` is success; object map `NONEXISTENT` after.
    Remove(WriteOp),
}

impl PreparedObjectOps {
    /// Builds the operations of object `object_no` from its planned groups.
    pub fn new(object_no: u64, groups: &[ObjectGroup]) -> PreparedObjectOps {
        let ops = groups
            .iter()
            .map(|group| match group {
                ObjectGroup::Data { steps, .. } => PreparedOp::Data(object_write_op(steps, false)),
                ObjectGroup::IfExists(steps) => PreparedOp::IfExists(object_write_op(steps, true)),
                ObjectGroup::Remove => {
                    let mut op = WriteOp::new();
                    op.remove();
                    PreparedOp::Remove(op)
                }
            })
            .collect();
        PreparedObjectOps { object_no, ops }
    }
}

/// One compound operation of the steps of a replay window's object group.
fn object_write_op(steps: &[ObjectStep], assert_exists: bool) -> WriteOp {
    let mut op = WriteOp::new();
    if assert_exists {
        op.assert_exists();
    }
    for step in steps {
        match step {
            ObjectStep::Write { offset, pieces } => {
                // Merged adjacent writes: one OSD write. Pieces are slices of the journal's
                // read buffers, which librados already holds: sent from there, not copied.
                op.write_bytes(*offset, pieces);
            }
            ObjectStep::Zero { offset, length } => {
                op.zero(*offset, *length);
            }
            ObjectStep::Truncate { size } => {
                op.truncate(*size);
            }
        }
    }
    op
}
