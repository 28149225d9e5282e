//! The image-copy engine: copies what changed in the remote (primary) image between two of
//! its snapshots into the local image's HEAD, object by object (the role of librbd's
//! `deep_copy::ImageCopyRequest` in the stock daemon's image sync and snapshot replayer).
//!
//! Changed objects come from the remote object maps through `snapshot_differ`'s fast-diff
//! when the image has fast-diff and every map of the walk is valid (`RBD_FLAG_*_INVALID`
//! clear, CRCs right); otherwise each object is read at both snapshots and compared. A
//! changed object is read whole at the end snapshot: absent or all zeros, the local object
//! is removed; otherwise it is rewritten so that 4 KiB zero runs stay holes, cut to the
//! remote object's length. Writes carry the caller's local snapshot context. Objects are
//! processed in order with bounded concurrency, and progress is a contiguous prefix, so a
//! copy resumes from `start_object` after a crash. Used by the journal-mode initial sync and
//! by snapshot-mode syncs.

use futures::stream::{self, StreamExt};
use rados_ffi::{IoCtx, ObjectBuffer};
use rbd_types::features::{self, FLAG_FAST_DIFF_INVALID, FLAG_OBJECT_MAP_INVALID};
use rbd_types::ObjectMap;
use snapshot_differ::{data_runs, diff_object_maps, DiffState, SnapshotMap, ZERO_GRANULARITY};
use tokio_util::sync::CancellationToken;

use crate::bandwidth::ImageBandwidth;
use crate::cls;
use crate::error::{ReplayError, Result};
use crate::local::image::{ImageGeometry, LocalImage, ObjectWriter};
use rbd_types::cls_rbd::{image_data_object_name, object_map_name, CEPH_NOSNAP};
use rbd_types::striping::Layout;

/// Objects in flight during a sync, initial or snapshot (stock: `rbd_concurrent_management_ops`
/// = 10). Each holds its object in librados' receive buffer, so memory grows by about an
/// object per object in flight: 3 is the most within the memory goal
/// (benches/results/TUNING.md).
pub const SYNC_CONCURRENCY: usize = 3;

/// What to copy from the remote (primary) image into the local image HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRange {
    /// Remote snapshot id whose content is already on the local image (exclusive start);
    /// `None` = copy from nothing (a full/initial sync).
    pub remote_snap_id_start: Option<u64>,
    /// Remote snapshot id whose content is copied (the remote objects are read AT this
    /// snap id; `CEPH_NOSNAP` reads HEAD).
    pub remote_snap_id_end: u64,
    /// Resume point: objects with a lower object number are already copied (0 = from the
    /// start).
    pub start_object: u64,
}

/// The snapshot context that the local writes carry (so that an already created but
/// incomplete local non-primary snapshot is NOT in it and receives the copied data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalSnapContext {
    /// Highest snapshot id allocated for the image.
    pub seq: u64,
    /// Snapshot ids, newest first (descending), like librados.
    pub snaps: Vec<u64>,
}

/// Progress of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyProgress {
    /// A contiguous prefix: every object below it is copied. Safe to persist as
    /// `last_copied_object_number` and to pass back as `start_object` after a crash.
    pub objects_done: u64,
    /// Objects of the copy (at the larger of the start and end sizes).
    pub object_count: u64,
    /// Bytes written so far.
    pub bytes_written: u64,
}

/// What a finished copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyStats {
    /// Objects of the copy (at the larger of the start and end sizes).
    pub object_count: u64,
    /// Objects written.
    pub objects_copied: u64,
    /// Objects removed (absent or all zeros at the end snapshot, or past its size).
    pub objects_removed: u64,
    /// Bytes read from the remote image.
    pub bytes_read: u64,
    /// Bytes written to the local image.
    pub bytes_written: u64,
}

/// What to do with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Changed: read at the end snapshot; write or remove.
    Copy,
    /// Unknown: read at both snapshots, copy if they differ.
    Compare,
    /// Past the end size: remove.
    Remove,
}

/// Outcome of one object.
#[derive(Debug, Clone, Copy, Default)]
struct ObjectResult {
    copied: bool,
    removed: bool,
    read: u64,
    written: u64,
}

/// Copies `range` of remote image `remote_image_id` (in the pool of `remote_io`) into
/// `local`'s HEAD, `concurrency` objects at a time, calling `on_progress` as the contiguous
/// prefix of done objects grows (and once at the end). Every object read from the remote
/// image is charged to `bandwidth` (the caps wait before the next read). Cancelling `cancel`
/// stops it with an error after the objects in flight; the progress reported until then
/// stays valid.
#[allow(clippy::too_many_arguments)]
pub async fn copy_image(
    remote_io: &IoCtx,
    remote_image_id: &str,
    local: &LocalImage,
    range: &CopyRange,
    local_snapc: &LocalSnapContext,
    concurrency: usize,
    bandwidth: &ImageBandwidth,
    on_progress: &mut (dyn FnMut(CopyProgress) + Send),
    cancel: &CancellationToken,
) -> Result<CopyStats> {
    let remote = ImageGeometry::read(remote_io, remote_image_id).await?;
    let layout = check_layouts(&remote, local)?;
    let end = range.remote_snap_id_end;
    let end_size = cls::get_size(remote_io, remote_image_id, end).await?;
    let start_size = match range.remote_snap_id_start {
        Some(s) => cls::get_size(remote_io, remote_image_id, s).await?,
        None => 0,
    };
    let end_objects = layout.object_count(end_size);
    // Local objects past the end size (a shrink, or a larger local image) go too.
    let object_count =
        end_objects.max(layout.object_count(start_size)).max(layout.object_count(local.size()));

    check_snap_context(local, local_snapc).await?;
    let plan = plan(remote_io, remote_image_id, &remote, &layout, range, end_objects).await?;
    tracing::debug!(
        remote_image_id,
        start = ?range.remote_snap_id_start,
        end,
        object_count,
        fast_diff = plan.is_some(),
        "image copy"
    );

    // Grow the local image first so the object map covers the new objects.
    if end_size > local.size() {
        local.set_size(end_size).await?;
    }
    // Data objects are read from the remote image's data pool (its own or a separate one).
    let mut end_io = remote_io.in_pool(remote.data_pool_id).await?;
    end_io.set_snap_read(end);
    let start_io = match (range.remote_snap_id_start, &plan) {
        (Some(s), None) => {
            let mut io = remote_io.in_pool(remote.data_pool_id).await?;
            io.set_snap_read(s);
            Some(io)
        }
        _ => None,
    };
    let writer = local.object_writer(local_snapc.seq, &local_snapc.snaps).await?;
    let parent_objects = layout.object_count(local.parent_overlap().await?);
    let ctx = ObjectCopier {
        parent_objects,
        end_io: &end_io,
        start_io: start_io.as_ref(),
        remote_prefix: &remote.block_name_prefix,
        object_size: layout.object_size,
        writer: &writer,
        full_sync: range.remote_snap_id_start.is_none(),
        bandwidth,
    };

    let actions = (range.start_object..object_count).filter_map(|o| {
        let action = if o >= end_objects {
            Some(Action::Remove)
        } else {
            match &plan {
                Some(diff) => match diff.get(o) {
                    DiffState::None => None,
                    DiffState::Updated | DiffState::Hole => Some(Action::Copy),
                },
                None if range.remote_snap_id_start.is_none() => Some(Action::Copy),
                None => Some(Action::Compare),
            }
        };
        action.map(|a| (o, a))
    });
    let mut results = stream::iter(actions)
        .map(|(o, a)| {
            let ctx = &ctx;
            async move { ctx.run(o, a).await.map(|r| (o, r)) }
        })
        .buffered(concurrency.max(1));

    let mut stats = CopyStats { object_count, ..Default::default() };
    let mut last_report = std::time::Instant::now();
    let mut since_report = 0u32;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                return Err(ReplayError::Stopped(format!("copy of image {remote_image_id} cancelled")));
            }
            next = results.next() => next,
        };
        let Some(result) = next else { break };
        let (object_no, r) = result?;
        stats.objects_copied += u64::from(r.copied);
        stats.objects_removed += u64::from(r.removed);
        stats.bytes_read += r.read;
        stats.bytes_written += r.written;
        since_report += 1;
        if since_report >= 64 || last_report.elapsed() >= std::time::Duration::from_secs(1) {
            on_progress(CopyProgress {
                objects_done: object_no + 1,
                object_count,
                bytes_written: stats.bytes_written,
            });
            since_report = 0;
            last_report = std::time::Instant::now();
        }
    }
    drop(results);
    if end_size < local.size() {
        local.set_size(end_size).await?;
    }
    on_progress(CopyProgress {
        objects_done: object_count,
        object_count,
        bytes_written: stats.bytes_written,
    });
    tracing::debug!(remote_image_id, ?stats, "image copy done");
    Ok(stats)
}

/// A local snapshot left out of the write context must be newer than its `seq`: RADOS names
/// the clone a write makes after `seq` and lets it cover every snapshot up to that id, so a
/// snapshot at or below `seq` but not in `snaps` would read the clone (the old data), not the
/// copied data.
async fn check_snap_context(local: &LocalImage, snapc: &LocalSnapContext) -> Result<()> {
    let (_, existing) = local.snap_context().await?;
    if let Some(s) = existing.iter().find(|s| **s <= snapc.seq && !snapc.snaps.contains(s)) {
        return Err(ReplayError::Internal(format!(
            "local snapshot context (seq {}, snaps {:?}) leaves out snapshot {s} of image {} but its \
             seq covers it: the excluded snapshot would keep the old data",
            snapc.seq,
            snapc.snaps,
            local.image_id()
        )));
    }
    Ok(())
}

/// Both images must map image offsets to the same object numbers.
fn check_layouts(remote: &ImageGeometry, local: &LocalImage) -> Result<Layout> {
    let l = local.geometry();
    if (remote.order, remote.stripe_unit, remote.stripe_count) != (l.order, l.stripe_unit, l.stripe_count) {
        return Err(ReplayError::Unsupported(format!(
            "image copy needs the same layout on both sites: remote order {} stripe {}x{}, local order {} \
             stripe {}x{}",
            remote.order, remote.stripe_unit, remote.stripe_count, l.order, l.stripe_unit, l.stripe_count
        )));
    }
    remote.layout()
}

/// The bytes a copy of image `image_id` from snapshot `start` (`None`: a full sync) to
/// snapshot `end` reads: the sizes at `end` of the objects its fast-diff marks written.
/// `None` when the object maps cannot say (the copy then reads every object).
pub async fn bytes_to_copy(io: &IoCtx, image_id: &str, start: Option<u64>, end: u64) -> Result<Option<u64>> {
    let remote = ImageGeometry::read(io, image_id).await?;
    let layout = remote.layout()?;
    let end_objects = layout.object_count(cls::get_size(io, image_id, end).await?);
    let range = CopyRange { remote_snap_id_start: start, remote_snap_id_end: end, start_object: 0 };
    let Some(diff) = plan(io, image_id, &remote, &layout, &range, end_objects).await? else {
        return Ok(None);
    };
    let mut data = io.in_pool(remote.data_pool_id).await?;
    data.set_snap_read(end);
    let mut bytes = 0;
    for (object_no, _) in diff.changed().filter(|(_, state)| *state == DiffState::Updated) {
        match data.stat(&image_data_object_name(&remote.block_name_prefix, object_no)).await {
            Ok(stat) => bytes += stat.size,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(bytes))
}

/// The fast-diff of the copy, or `None` when object maps cannot be used (then every object
/// is compared, or, for a full sync, copied).
async fn plan(
    io: &IoCtx,
    image_id: &str,
    remote: &ImageGeometry,
    layout: &Layout,
    range: &CopyRange,
    end_objects: u64,
) -> Result<Option<snapshot_differ::ObjectDiff>> {
    // A full sync needs only which objects exist at the end, which the object map alone
    // says (without fast-diff too): absent objects are not read.
    let full = range.remote_snap_id_start.is_none();
    let (needed, invalid) = if full {
        (features::OBJECT_MAP, FLAG_OBJECT_MAP_INVALID)
    } else {
        (features::OBJECT_MAP | features::FAST_DIFF, FLAG_OBJECT_MAP_INVALID | FLAG_FAST_DIFF_INVALID)
    };
    if remote.features & needed != needed {
        return Ok(None);
    }
    let end = range.remote_snap_id_end;
    // The walk: the start snapshot, every snapshot after it, up to the end (or HEAD).
    let walk: Vec<u64> = match range.remote_snap_id_start {
        None => vec![end],
        Some(start) => {
            let (_, mut snaps) = cls::get_snapcontext(io, image_id).await?;
            snaps.sort_unstable();
            let mut w: Vec<u64> = snaps.into_iter().filter(|&s| s >= start && s <= end).collect();
            if w.first() != Some(&start) {
                return Err(ReplayError::NotFound(format!(
                    "remote snapshot {start} of image {image_id} does not exist"
                )));
            }
            if end == CEPH_NOSNAP {
                w.push(CEPH_NOSNAP);
            } else if w.last() != Some(&end) {
                return Err(ReplayError::NotFound(format!(
                    "remote snapshot {end} of image {image_id} does not exist"
                )));
            }
            w
        }
    };
    let mut maps = Vec::with_capacity(walk.len());
    for &snap in &walk {
        let flags = cls::get_flags(io, image_id, snap).await?;
        if flags & invalid != 0 {
            tracing::info!(image_id, snap, flags, "object map invalid: comparing whole objects");
            return Ok(None);
        }
        let object_count = if snap == end {
            end_objects
        } else {
            layout.object_count(cls::get_size(io, image_id, snap).await?)
        };
        let name = object_map_name(image_id, Some(snap));
        let raw = match io.read_full(&name).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                tracing::info!(image_id, snap, "no object map: comparing whole objects");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        match ObjectMap::decode(&raw) {
            Ok(map) => maps.push((map, object_count)),
            Err(e) => {
                tracing::warn!(image_id, snap, error = %e, "corrupt object map {name}: comparing whole objects");
                return Ok(None);
            }
        }
    }
    let walk: Vec<SnapshotMap<'_>> =
        maps.iter().map(|(map, object_count)| SnapshotMap { map, object_count: *object_count }).collect();
    match diff_object_maps(&walk, range.remote_snap_id_start.is_none()) {
        Ok(diff) => Ok(Some(diff)),
        Err(e) => {
            tracing::info!(image_id, error = %e, "fast-diff unusable: comparing whole objects");
            Ok(None)
        }
    }
}

/// Objects are read in pieces of at most this size: a 4 MiB object (the default order) in
/// one read. librados receives each piece into a buffer of its own, freed when the write sent
/// from it is done; jemalloc reuses those extents, so memory follows the objects in flight
/// (see [`rados_ffi::process::JEMALLOC_OPTIONS`] for the figures).
const READ_PIECE: usize = 4 << 20;

/// An object's bytes as librados received them: consecutive pieces of [`READ_PIECE`] bytes
/// (the last one may be shorter), never copied into our memory; the write sends them on.
struct ObjectData(Vec<ObjectBuffer>);

impl ObjectData {
    fn len(&self) -> u64 {
        self.0.iter().map(|b| b.len() as u64).sum()
    }

    /// Same bytes (pieces of two reads of the same size line up).
    fn same_as(&self, other: &ObjectData) -> bool {
        self.len() == other.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.as_slice() == b.as_slice())
    }

    /// The one zero scan of the object: its data runs as (object offset, piece, range).
    fn runs(&self) -> Vec<(u64, &ObjectBuffer, std::ops::Range<usize>)> {
        let mut at = 0u64;
        let mut runs = Vec::new();
        for piece in &self.0 {
            runs.extend(
                data_runs(piece.as_slice(), ZERO_GRANULARITY)
                    .into_iter()
                    .map(|r| (at + r.start as u64, piece, r)),
            );
            at += piece.len() as u64;
        }
        runs
    }
}

/// Copies single objects.
struct ObjectCopier<'a> {
    end_io: &'a IoCtx,
    start_io: Option<&'a IoCtx>,
    remote_prefix: &'a str,
    object_size: u64,
    writer: &'a ObjectWriter<'a>,
    /// Nothing is on the local image yet: absent remote objects need no removal.
    full_sync: bool,
    /// Objects below this number of a clone read through to its parent when absent: an
    /// existing one stays, zeros and all (removed, the parent's data would show).
    parent_objects: u64,
    /// The caps the remote reads are charged to.
    bandwidth: &'a ImageBandwidth,
}

impl ObjectCopier<'_> {
    /// Reads object `object_no` whole; `None` when it does not exist. Every piece's read is
    /// waited for, also after an error. The bytes read are charged to the bandwidth caps,
    /// which may wait.
    async fn read(&self, io: &IoCtx, object_no: u64) -> Result<Option<ObjectData>> {
        let name = image_data_object_name(self.remote_prefix, object_no);
        let len = usize::try_from(self.object_size).unwrap_or(usize::MAX);
        let reads = (0..len)
            .step_by(READ_PIECE)
            .map(|start| io.read_buffer(&name, start as u64, READ_PIECE.min(len - start)));
        let mut pieces = Vec::new();
        let mut ended = false;
        for (i, read) in futures::future::join_all(reads).await.into_iter().enumerate() {
            match read {
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
                Ok(piece) if !ended => {
                    ended = piece.len() < READ_PIECE.min(len - i * READ_PIECE);
                    if !piece.is_empty() {
                        pieces.push(piece);
                    }
                }
                Ok(_) => {}
            }
        }
        let data = ObjectData(pieces);
        self.bandwidth.charge(data.len()).await;
        Ok(Some(data))
    }

    async fn run(&self, object_no: u64, action: Action) -> Result<ObjectResult> {
        let mut r = ObjectResult::default();
        let data = match action {
            Action::Remove => None,
            Action::Copy => self.read(self.end_io, object_no).await?,
            Action::Compare => {
                let after = self.read(self.end_io, object_no).await?;
                let before = match self.start_io {
                    Some(io) => self.read(io, object_no).await?,
                    None => None,
                };
                r.read += before.as_ref().map_or(0, ObjectData::len);
                let same = match (&before, &after) {
                    (None, None) => true,
                    (Some(b), Some(a)) => a.same_as(b),
                    _ => false,
                };
                if same {
                    r.read += after.as_ref().map_or(0, ObjectData::len);
                    return Ok(r);
                }
                after
            }
        };
        let exists = data.is_some();
        if let Some(data) = &data {
            r.read += data.len();
            let runs = data.runs();
            if !runs.is_empty() || object_no < self.parent_objects {
                let write = self.writer.prepare_object(object_no, runs, data.len());
                r.written = self.writer.write_object(write).await?;
                r.copied = true;
                return Ok(r);
            }
        }
        drop(data);
        if !(self.full_sync && action == Action::Copy && !exists) {
            self.writer.remove_object(object_no).await?;
            r.removed = true;
        }
        Ok(r)
    }
}
