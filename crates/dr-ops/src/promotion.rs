//! What a forced promotion of a snapshot-mode image started from, kept for its failback.
//!
//! librbd's forced promotion (`rbd mirror image promote --force`) rolls the image back to its
//! newest complete non-primary snapshot, creates a primary snapshot, and removes the
//! non-primary ones: afterwards nothing on the cluster says which of the old primary's
//! snapshots the promoted image started from. `failover --force` reads it before promoting
//! and records it in an object of the pool ([`RECORD_OBJECT`], one omap key per global image
//! id, a JSON value); `failback` reads it from there to sync the old primary from that
//! snapshot instead of from zero, and removes it once used.

use rados_ffi::rbd::SnapInfo;
use rados_ffi::IoCtx;
use rbd_types::{MirrorSnapshotState, SnapshotNamespace};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The pool object holding the records.
pub(crate) const RECORD_OBJECT: &str = "rbd_mirror_rs_forced_promotions";

/// One image's forced promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PromotionRecord {
    /// Mirror uuid of the pool the image was replicated from (the old primary's).
    pub primary_mirror_uuid: String,
    /// The old primary's mirror snapshot whose copy the image was promoted from.
    pub primary_snap_id: u64,
    /// The primary mirror snapshot the promotion created here (same content).
    pub promoted_snap_id: u64,
}

/// The record of a snapshot-mode image about to be force-promoted: its newest complete
/// non-primary snapshot (what librbd's promotion rolls back to). `None` without one.
pub(crate) fn before_promotion(snaps: &[SnapInfo]) -> Option<(String, u64)> {
    let (id, primary_snap_id) = crate::consistent::newest_complete_copy(snaps)?;
    match &snaps.iter().find(|s| s.id == id)?.namespace {
        SnapshotNamespace::Mirror(m) => Some((m.primary_mirror_uuid.clone(), primary_snap_id)),
        _ => None,
    }
}

/// The primary mirror snapshot a promotion just created: the newest primary one.
pub(crate) fn promoted_snapshot(snaps: &[SnapInfo]) -> Option<u64> {
    snaps
        .iter()
        .filter(|s| {
            matches!(&s.namespace, SnapshotNamespace::Mirror(m) if m.state == MirrorSnapshotState::Primary)
        })
        .map(|s| s.id)
        .max()
}

/// Records the promotion of image `global_id` in `io`'s pool.
pub(crate) async fn write(io: &IoCtx, global_id: &str, record: &PromotionRecord) -> Result<()> {
    let value = serde_json::to_vec(record).unwrap_or_default();
    io.omap_set(RECORD_OBJECT, &[(global_id, &value)]).await?;
    Ok(())
}

/// The recorded promotion of image `global_id` in `io`'s pool, if any (a record that does
/// not parse is none).
pub(crate) async fn read(io: &IoCtx, global_id: &str) -> Result<Option<PromotionRecord>> {
    let all = match io.omap_get_all(RECORD_OBJECT, global_id).await {
        Ok(all) => all,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(all.get(global_id).and_then(|v| serde_json::from_slice(v).ok()))
}

/// Forgets the promotion of image `global_id`.
pub(crate) async fn remove(io: &IoCtx, global_id: &str) -> Result<()> {
    match io.omap_remove(RECORD_OBJECT, &[global_id]).await {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbd_types::MirrorSnapshotNamespace;

    fn snap(id: u64, state: MirrorSnapshotState, complete: bool, primary_snap_id: u64) -> SnapInfo {
        SnapInfo {
            id,
            name: format!("s{id}"),
            size: 1 << 20,
            namespace: SnapshotNamespace::Mirror(MirrorSnapshotNamespace {
                state,
                complete,
                primary_mirror_uuid: "site-a".into(),
                primary_snap_id,
                ..Default::default()
            }),
            timestamp: None,
        }
    }

    #[test]
    fn a_promotion_starts_from_the_newest_complete_copy_and_creates_the_newest_primary() {
        use MirrorSnapshotState::{NonPrimary, Primary};
        // Copies of site-a's 4 and 6 complete, of 9 still syncing (librbd rolls it back).
        let before = vec![
            snap(20, NonPrimary, true, 4),
            snap(25, NonPrimary, true, 6),
            snap(28, NonPrimary, false, 9),
        ];
        assert_eq!(before_promotion(&before), Some(("site-a".to_owned(), 6)));
        assert_eq!(before_promotion(&before[2..]), None, "nothing complete: no record");
        let user = SnapInfo { namespace: SnapshotNamespace::User, ..snap(40, Primary, true, 0) };
        let after = vec![snap(31, Primary, true, 0), user];
        assert_eq!(promoted_snapshot(&after), Some(31));
        assert_eq!(promoted_snapshot(&before), None);
    }
}
