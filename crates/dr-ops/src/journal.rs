//! Journal mode, read on the primary's journal (ceph-formats.md §2, §3): where the primary
//! is (librbd's client `""`), where this site's replay is (the journal client named by the
//! local pool's mirror uuid), whether the demotion was replayed, and the timestamps of the
//! entries around our commit position.

use std::time::SystemTime;

use journal_reader::event::{EventEntry, TagData, ORPHAN_MIRROR_UUID};
use journal_reader::tail::{read_header, TailError};
use rados_ffi::IoCtx;
use rbd_types::cls_journal::{data_object_name, JournalHeader, ObjectPosition};
use rbd_types::encoding::Decode;

/// The two commit positions of one primary journal.
#[derive(Debug)]
pub(crate) struct JournalPositions {
    /// The header, as read.
    pub header: JournalHeader,
    /// librbd's own committed position (the newest entry written to the image).
    pub primary: Option<ObjectPosition>,
    /// This site's replay position (`None`: our client is not registered or never
    /// committed).
    pub replayed: Option<ObjectPosition>,
    /// Whether our journal client is registered at all.
    pub registered: bool,
}

/// Reads the positions of the journal of primary image `image_id`.
pub(crate) async fn positions(
    io: &IoCtx,
    image_id: &str,
    local_mirror_uuid: &str,
) -> Result<JournalPositions, TailError> {
    let header = read_header(io, image_id).await?;
    let primary = header.clients.get("").and_then(|c| c.commit_position.front().copied());
    let ours = header.clients.get(local_mirror_uuid);
    let replayed = ours.and_then(|c| c.commit_position.front().copied());
    Ok(JournalPositions { primary, replayed, registered: ours.is_some(), header })
}

impl JournalPositions {
    /// Entries the primary committed that we have not: exact within one tag; across a tag
    /// change, the primary's entries in its newest tag (a lower bound). `None` when either
    /// position is unknown.
    pub fn entries_behind(&self) -> Option<u64> {
        entries_behind(self.primary.as_ref(), self.replayed.as_ref())
    }

    /// The owner (`TagData::mirror_uuid`) of the primary's newest committed tag.
    pub fn primary_tag_owner(&self) -> Option<String> {
        let tag = self.header.tags.get(&self.primary?.tag_tid)?;
        TagData::decode_all(&tag.data).ok().map(|t| t.mirror_uuid)
    }

    /// The primary was demoted (its newest entry is in an `<orphan>` tag) and we replayed
    /// up to that entry: everything written before the demotion is here.
    pub fn demotion_replayed(&self) -> bool {
        self.primary_tag_owner().as_deref() == Some(ORPHAN_MIRROR_UUID)
            && self.primary.is_some()
            && self.primary == self.replayed
    }
}

fn entries_behind(primary: Option<&ObjectPosition>, replayed: Option<&ObjectPosition>) -> Option<u64> {
    let (p, r) = (primary?, replayed?);
    Some(match p.tag_tid.cmp(&r.tag_tid) {
        std::cmp::Ordering::Equal => p.entry_tid.saturating_sub(r.entry_tid),
        std::cmp::Ordering::Greater => p.entry_tid + 1,
        std::cmp::Ordering::Less => 0,
    })
}

/// Timestamps around our replay position `replayed` in the primary's journal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryTimes {
    /// The entry at `replayed`: the newest one this site has.
    pub last_replayed: Option<SystemTime>,
    /// The first entry after it: the oldest one this site lacks.
    pub oldest_unreplayed: Option<SystemTime>,
}

/// The most of one journal data object read (Ceph's largest journal order is 26: 64 MiB).
const MAX_OBJECT_READ: u64 = 64 << 20;

/// Reads the data objects of the object set holding `replayed` (and the next set, if the
/// following entry is not there) and returns the `EventEntry` timestamps of the entry at
/// `replayed` and of the first entry after it. Costs up to two object sets of reads (splay
/// width × object size each): callers ask only for images that are behind. A decoding
/// failure or a trimmed object leaves a time unknown.
pub(crate) async fn entry_times(
    io: &IoCtx,
    image_id: &str,
    header: &JournalHeader,
    replayed: ObjectPosition,
) -> Result<EntryTimes, TailError> {
    let mut out = EntryTimes::default();
    if header.pool_id != -1 && header.pool_id != io.pool_id() {
        // A journal in another data pool: not read here.
        return Ok(out);
    }
    let width = u64::from(header.splay_width.max(1));
    let first_set = replayed.object_number / width;
    let key = (replayed.tag_tid, replayed.entry_tid);
    // Journal objects are at most 2^order bytes (a bad order is bounded, not trusted).
    let read_len = usize::try_from(header.object_size().clamp(1 << 12, MAX_OBJECT_READ)).unwrap_or(1 << 12);
    let mut next: Option<((u64, u64), SystemTime)> = None;
    for set in first_set..=(first_set + 1).min(header.active_set.max(first_set)) {
        for n in set * width..(set + 1) * width {
            let oid = data_object_name(io.pool_id(), image_id, n);
            let data = match io.read(&oid, 0, read_len).await {
                Ok(d) => d,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(decoded) = journal_reader::decode_object(&oid, &data) else { continue };
            for entry in decoded.entries {
                let at = (entry.tag_tid, entry.entry_tid);
                if at < key {
                    continue;
                }
                let Ok(event) = EventEntry::decode_payload(&entry.payload) else { continue };
                let time = event.timestamp.to_system_time();
                if at == key {
                    out.last_replayed = Some(time);
                } else if next.is_none_or(|(k, _)| at < k) {
                    next = Some((at, time));
                }
            }
        }
        if next.is_some() {
            break;
        }
    }
    out.oldest_unreplayed = next.map(|(_, t)| t);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(tag_tid: u64, entry_tid: u64) -> ObjectPosition {
        ObjectPosition { object_number: 0, tag_tid, entry_tid }
    }

    #[test]
    fn entries_behind_within_and_across_tags() {
        assert_eq!(entries_behind(Some(&pos(3, 10)), Some(&pos(3, 4))), Some(6));
        assert_eq!(entries_behind(Some(&pos(3, 10)), Some(&pos(3, 10))), Some(0));
        // A newer tag on the primary: at least its entries.
        assert_eq!(entries_behind(Some(&pos(4, 2)), Some(&pos(3, 10))), Some(3));
        assert_eq!(entries_behind(Some(&pos(3, 2)), None), None);
        assert_eq!(entries_behind(None, Some(&pos(3, 2))), None);
    }
}
