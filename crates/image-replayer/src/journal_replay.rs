//! Journal-mode replay: entries from the primary's journal applied to the local image
//! (ceph-formats.md §3.5, §3.7).
//!
//! IO events are applied as they arrive; maintenance operations wait for their `OpFinish`
//! and run only if the primary's operation succeeded. A new remote tag is mirrored as a
//! local tag with its owner mapped (`""` → the remote pool's mirror uuid); a demotion tag
//! (`"<orphan>"`) ends replay once its entries are applied.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use journal_reader::cls_journal::{
    args as journal_args, header_object_name as journal_header, ObjectPosition, ObjectSetPosition, Tag,
};
use journal_reader::event::{Event, EventEntry, ORPHAN_MIRROR_UUID};
use journal_reader::tail::JournalTail;
use journal_reader::{Decode, TagData};
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{local_tag_create, map_mirror_uuid};
use crate::cls_rbd::MirrorImageStatusState;
use crate::error::{ReplayError, Result};
use crate::image_metrics::ImageMetrics;
use crate::local_image::LocalImage;
use crate::status::{ReplayProgress, StatusPublisher};
use crate::PeerContext;

/// Why replay returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayEnd {
    /// Shutdown was requested; the position is committed.
    Cancelled,
    /// The primary was demoted: every entry of its epoch is replayed and committed.
    RemoteDemoted,
    /// `rbd mirror image resync` was requested on the local image.
    ResyncRequested,
}

/// Counters a replayer exposes (status, metrics).
#[derive(Debug, Default, Clone)]
pub struct ReplayCounters {
    /// Entries replayed since start.
    pub entries: u64,
    /// Payload bytes replayed since start.
    pub bytes: u64,
    /// Commit positions written.
    pub commits: u64,
}

/// Most IO events applied concurrently (entries read ahead but not yet durable).
pub const MAX_IN_FLIGHT: usize = 128;

type IoFuture = Pin<Box<dyn Future<Output = (u64, Result<u64>)> + Send>>;

/// An IO event being applied: its image extent, to order overlapping ones.
#[derive(Debug, Clone, Copy)]
struct Extent {
    seq: u64,
    start: u64,
    end: u64,
}

/// Replays the primary's journal into `local` until cancelled or demoted.
///
/// IO events run concurrently (up to [`MAX_IN_FLIGHT`]); an event waits only for in-flight
/// events whose image extents overlap its own, so the image ends up as if applied in journal
/// order. Everything else (operations, tag changes, compare-and-write) waits for all IO in
/// flight. The commit position advances over the longest prefix of entries whose effects are
/// durable, so a crash never commits an entry that was not applied.
pub struct JournalReplayer<'a> {
    ctx: &'a PeerContext,
    remote_image_id: String,
    local: Arc<LocalImage>,
    tail: JournalTail,
    /// Operation events waiting for their `OpFinish`, by op tid.
    pending_ops: HashMap<u64, Event>,
    /// The remote tag whose entries we are replaying.
    current_tag: Option<u64>,
    /// Whether the current remote tag is a demotion.
    current_tag_demoted: bool,
    /// IO events in flight.
    in_flight: FuturesUnordered<IoFuture>,
    extents: Vec<Extent>,
    /// Entries handed out, in journal order, with whether they are done.
    order: VecDeque<(u64, ObjectPosition, bool)>,
    next_seq: u64,
    /// Position after the last entry of the done prefix: what may be committed.
    committable: ObjectSetPosition,
    /// Whether `committable` moved since the last commit.
    uncommitted: bool,
    /// Counters.
    pub counters: ReplayCounters,
    /// Exported metrics of the image, when the caller labels them.
    pub metrics: Option<ImageMetrics>,
}

impl std::fmt::Debug for JournalReplayer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReplayer")
            .field("remote_image_id", &self.remote_image_id)
            .field("current_tag", &self.current_tag)
            .field("committable", &self.committable)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl<'a> JournalReplayer<'a> {
    /// A replayer of `tail` (opened for our client) into `local`.
    pub fn new(ctx: &'a PeerContext, remote_image_id: &str, local: LocalImage, tail: JournalTail) -> Self {
        let committable = tail.position().clone();
        JournalReplayer {
            ctx,
            remote_image_id: remote_image_id.to_owned(),
            local: Arc::new(local),
            tail,
            pending_ops: HashMap::new(),
            current_tag: None,
            current_tag_demoted: false,
            in_flight: FuturesUnordered::new(),
            extents: Vec::new(),
            order: VecDeque::new(),
            next_seq: 0,
            committable,
            uncommitted: false,
            counters: ReplayCounters::default(),
            metrics: None,
        }
    }

    /// Progress for the status description.
    pub fn progress(&self, entries_per_second: f64, bytes_per_second: f64) -> ReplayProgress {
        let primary = self.tail.header().clients.get("").and_then(|c| c.commit_position.front().copied());
        ReplayProgress {
            primary_position: primary,
            non_primary_position: self.committable.front().copied(),
            entries_per_second,
            bytes_per_second,
        }
    }

    /// Runs until `cancel` fires or the primary is demoted, publishing `replaying` with
    /// its progress at least every `status_interval`.
    pub async fn run(
        &mut self,
        cancel: &CancellationToken,
        status_interval: Duration,
        status: &mut StatusPublisher,
    ) -> Result<ReplayEnd> {
        let result = self.replay(cancel, status_interval, status).await;
        // Whatever happened, what is durable gets committed (a failed IO stops the prefix).
        let drained = self.drain().await;
        self.commit().await?;
        match (result, drained) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(end), Ok(())) => Ok(end),
        }
    }

    async fn replay(
        &mut self,
        cancel: &CancellationToken,
        status_interval: Duration,
        status: &mut StatusPublisher,
    ) -> Result<ReplayEnd> {
        let commit_interval = self.ctx.config.commit_interval;
        let mut last_commit = Instant::now();
        let mut last_status = Instant::now();
        let mut rate_mark = (Instant::now(), 0u64, 0u64);
        let mut tick = tokio::time::interval(commit_interval.min(status_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.report(status, 0.0, 0.0).await;
        loop {
            let room = self.in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(ReplayEnd::Cancelled),
                Some((seq, r)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.complete(seq, r)?;
                }
                entry = self.tail.next(), if room => {
                    let entry = entry?;
                    if self.handle(entry.position(), &entry.entry.payload).await? {
                        return Ok(ReplayEnd::RemoteDemoted);
                    }
                }
                _ = tick.tick() => {}
            }
            if self.uncommitted && last_commit.elapsed() >= commit_interval {
                self.commit().await?;
                last_commit = Instant::now();
            }
            if last_status.elapsed() >= status_interval {
                let (t0, e0, b0) = rate_mark;
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                let rates =
                    ((self.counters.entries - e0) as f64 / secs, (self.counters.bytes - b0) as f64 / secs);
                rate_mark = (Instant::now(), self.counters.entries, self.counters.bytes);
                self.report(status, rates.0, rates.1).await;
                last_status = Instant::now();
                if crate::bootstrap::resync_requested(&self.ctx.local_io, self.local.image_id()).await? {
                    return Ok(ReplayEnd::ResyncRequested);
                }
            }
        }
    }

    async fn report(&mut self, status: &mut StatusPublisher, entries_per_second: f64, bytes_per_second: f64) {
        let progress = self.progress(entries_per_second, bytes_per_second);
        if let Some(m) = &self.metrics {
            m.entries_behind_primary.set(progress.entries_behind_primary() as f64);
        }
        let (local, remote) = (&self.ctx.local_io, &self.ctx.remote_io);
        status.publish(local, remote, MirrorImageStatusState::Replaying, &progress.description()).await;
    }

    /// Writes the committable position to the primary's journal.
    pub async fn commit(&mut self) -> Result<()> {
        if !self.uncommitted {
            return Ok(());
        }
        let position = self.committable.clone();
        self.tail.commit(&position).await?;
        self.uncommitted = false;
        self.counters.commits += 1;
        if let Some(m) = &self.metrics {
            m.journal_commits.increment(1);
        }
        Ok(())
    }

    /// Records a finished IO event.
    fn complete(&mut self, seq: u64, result: Result<u64>) -> Result<()> {
        self.extents.retain(|x| x.seq != seq);
        let bytes = result?;
        self.counters.bytes += bytes;
        if let Some(m) = &self.metrics {
            m.bytes_replayed(bytes);
        }
        self.mark_done(seq);
        Ok(())
    }

    /// Marks entry `seq` done and advances the committable position over the done prefix.
    fn mark_done(&mut self, seq: u64) {
        // Sequence numbers in `order` are consecutive: the slot is found by offset.
        let index =
            self.order.front().and_then(|&(first, _, _)| usize::try_from(seq.checked_sub(first)?).ok());
        if let Some(slot) = index.and_then(|i| self.order.get_mut(i)) {
            slot.2 = true;
        }
        let width = self.tail.header().splay_width;
        while let Some(&(_, position, true)) = self.order.front() {
            self.order.pop_front();
            self.committable.advance(position, width);
            self.uncommitted = true;
            self.counters.entries += 1;
            if let Some(m) = &self.metrics {
                m.entries_replayed(1);
            }
        }
    }

    /// Waits for every IO event in flight.
    async fn drain(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some((seq, r)) = self.in_flight.next().await {
            if let Err(e) = self.complete(seq, r) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Waits until no IO in flight overlaps `[start, end)`.
    async fn wait_for_overlaps(&mut self, start: u64, end: u64) -> Result<()> {
        while self.extents.iter().any(|x| x.start < end && start < x.end) {
            match self.in_flight.next().await {
                Some((seq, r)) => self.complete(seq, r)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Takes one entry. Returns true when it completed a demotion epoch.
    async fn handle(&mut self, position: ObjectPosition, payload: &bytes::Bytes) -> Result<bool> {
        if self.current_tag != Some(position.tag_tid) {
            self.drain().await?;
            self.enter_tag(position.tag_tid).await?;
        }
        // Error context is formatted on the error path only: this runs for every entry.
        let entry = EventEntry::decode_payload(payload)
            .map_err(|e| ReplayError::decode(event_context(&self.remote_image_id, position), e))?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, position, false));
        let local = self.local.clone();
        let io: Option<(u64, u64, IoFuture)> = match entry.event {
            Event::AioWrite { offset, data, .. } => {
                let len = data.len() as u64;
                Some((
                    offset,
                    len,
                    Box::pin(async move { (seq, local.write(offset, &data).await.map(|()| len)) }),
                ))
            }
            Event::AioDiscard { offset, length, .. } => Some((
                offset,
                length,
                Box::pin(async move { (seq, local.discard(offset, length).await.map(|()| 0)) }),
            )),
            Event::AioWriteSame { offset, length, data } => Some((
                offset,
                length,
                Box::pin(
                    async move { (seq, local.write_same(offset, length, &data).await.map(|()| length)) },
                ),
            )),
            event => {
                // Everything else sees all earlier IO applied.
                self.drain().await?;
                let bytes = self.apply_inline(event).await.map_err(|e| match e {
                    ReplayError::Unsupported(m) => ReplayError::Unsupported(format!(
                        "{m} ({})",
                        event_context(&self.remote_image_id, position)
                    )),
                    other => other,
                })?;
                self.counters.bytes += bytes;
                self.mark_done(seq);
                None
            }
        };
        if let Some((start, len, fut)) = io {
            let end = start.saturating_add(len);
            self.wait_for_overlaps(start, end).await?;
            self.extents.push(Extent { seq, start, end });
            self.in_flight.push(fut);
        }
        // A demotion epoch holds only its DemotePromote marker: replay ends after it.
        if self.current_tag_demoted {
            self.drain().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A new remote epoch: mirror its tag into the local journal.
    async fn enter_tag(&mut self, tag_tid: u64) -> Result<()> {
        let object = journal_header(&self.remote_image_id);
        let reply =
            self.ctx.remote_io.exec(&object, "journal", "get_tag", &journal_args::get_tag(tag_tid)).await?;
        let tag = Tag::decode_all(&reply)
            .map_err(|e| ReplayError::decode(format!("tag {tag_tid} of {object}"), e))?;
        let data = TagData::decode_all(&tag.data)
            .map_err(|e| ReplayError::decode(format!("tag {tag_tid} data of {object}"), e))?;
        let (ul, ur) = (&self.ctx.local_mirror_uuid, &self.ctx.remote_mirror_uuid);
        let mut local = data.clone();
        local.mirror_uuid = map_mirror_uuid(&data.mirror_uuid, ul, ur);
        local.predecessor.mirror_uuid = map_mirror_uuid(&data.predecessor.mirror_uuid, ul, ur);
        local_tag_create(&self.ctx.local_io, self.local.image_id(), &local).await?;
        tracing::info!(tag_tid, owner = %data.mirror_uuid, "replaying a new primary epoch");
        self.current_tag = Some(tag_tid);
        self.current_tag_demoted = data.mirror_uuid == ORPHAN_MIRROR_UUID;
        Ok(())
    }

    /// Applies an event that is not a plain IO (all earlier IO is done); returns the data
    /// bytes it wrote.
    async fn apply_inline(&mut self, event: Event) -> Result<u64> {
        match event {
            Event::AioCompareAndWrite { offset, cmp_data, write_data, .. } => {
                let wrote = self.local.compare_and_write(offset, &cmp_data, &write_data).await?;
                Ok(if wrote { write_data.len() as u64 } else { 0 })
            }
            // IO events are durable when they complete; nothing more to flush.
            Event::AioFlush | Event::DemotePromote => Ok(0),
            Event::OpFinish { op_tid, r } => {
                match self.pending_ops.remove(&op_tid) {
                    Some(op) if r >= 0 => self.apply_op(op).await?,
                    Some(op) => {
                        tracing::info!(op_tid, r, ?op, "skipping an operation that failed on the primary")
                    }
                    None => {} // its start was committed before: already applied
                }
                Ok(0)
            }
            Event::AioWrite { .. } | Event::AioDiscard { .. } | Event::AioWriteSame { .. } => {
                Err(ReplayError::State("IO event applied inline".into()))
            }
            op => {
                let op_tid = op.op_tid().unwrap_or_default();
                self.pending_ops.insert(op_tid, op);
                Ok(0)
            }
        }
    }

    /// Executes a maintenance operation whose `OpFinish` reported success.
    async fn apply_op(&mut self, op: Event) -> Result<()> {
        match op {
            Event::Resize { size, .. } => self.local.resize(size).await,
            Event::MetadataSet { key, value, .. } => self.local.metadata_set(&key, &value).await,
            Event::MetadataRemove { key, .. } => self.local.metadata_remove(&key).await,
            // A snapshot count limit does not change what is replicated.
            Event::SnapLimit { .. } => Ok(()),
            // Sync points (ours or another daemon's) exist only for the initial copy.
            Event::SnapCreate(e) | Event::SnapRemove(e) if is_sync_point(&e.snap_name) => {
                tracing::debug!(snap = %e.snap_name, "sync point snapshot: nothing to replay");
                Ok(())
            }
            Event::SnapCreate(e) => {
                tracing::info!(snap = %e.snap_name, "creating snapshot");
                self.local.snap_create(&e.snap_name, &e.snap_namespace).await
            }
            Event::SnapRemove(e) => {
                tracing::info!(snap = %e.snap_name, "removing snapshot");
                self.local.snap_remove(&e.snap_name).await
            }
            Event::SnapRename { src_snap_name, dst_snap_name, .. } if !src_snap_name.is_empty() => {
                self.local.snap_rename(&src_snap_name, &dst_snap_name).await
            }
            Event::Rename { image_name, .. } => self.local.rename(&image_name).await,
            Event::SnapRollback(e) => self.local.snap_rollback(&e.snap_name).await,
            Event::UpdateFeatures { features, enabled, .. } => {
                self.local.update_features(features, enabled).await
            }
            // The local copy of a clone is created flat (the initial sync reads through the
            // parent): flattening the primary changes nothing here.
            Event::Flatten { .. } => Ok(()),
            Event::SnapProtect(e) => self.local.snap_set_protection(&e.snap_name, PROTECTED).await,
            Event::SnapUnprotect(e) => self.local.snap_set_protection(&e.snap_name, UNPROTECTED).await,
            other => Err(ReplayError::Unsupported(format!(
                "replay of {} is not implemented yet",
                event_name(&other)
            ))),
        }
    }
}

/// "event at <position> of journal <header object>", for errors.
fn event_context(remote_image_id: &str, position: ObjectPosition) -> String {
    format!("event at {position:?} of journal {}", journal_header(remote_image_id))
}

/// `RBD_PROTECTION_STATUS_PROTECTED`.
const PROTECTED: u8 = 2;
/// `RBD_PROTECTION_STATUS_UNPROTECTED`.
const UNPROTECTED: u8 = 0;

/// Whether a snapshot is an rbd-mirror sync point (`.rbd-mirror.<mirror uuid>.<id>`).
pub fn is_sync_point(snap_name: &str) -> bool {
    snap_name.starts_with(".rbd-mirror.")
}

/// The event's name as `rbd journal inspect` prints it.
pub fn event_name(e: &Event) -> &'static str {
    match e {
        Event::AioDiscard { .. } => "AioDiscard",
        Event::AioWrite { .. } => "AioWrite",
        Event::AioFlush => "AioFlush",
        Event::OpFinish { .. } => "OpFinish",
        Event::SnapCreate(_) => "SnapCreate",
        Event::SnapRemove(_) => "SnapRemove",
        Event::SnapRename { .. } => "SnapRename",
        Event::SnapProtect(_) => "SnapProtect",
        Event::SnapUnprotect(_) => "SnapUnprotect",
        Event::SnapRollback(_) => "SnapRollback",
        Event::Rename { .. } => "Rename",
        Event::Resize { .. } => "Resize",
        Event::Flatten { .. } => "Flatten",
        Event::DemotePromote => "Demote/Promote",
        Event::SnapLimit { .. } => "SnapLimit",
        Event::UpdateFeatures { .. } => "UpdateFeatures",
        Event::MetadataSet { .. } => "MetadataSet",
        Event::MetadataRemove { .. } => "MetadataRemove",
        Event::AioWriteSame { .. } => "AioWriteSame",
        Event::AioCompareAndWrite { .. } => "AioCompareAndWrite",
    }
}
