//! `failover --force`: the primary site is unreachable. Every non-primary image of the pool
//! here is promoted with force (`rbd mirror image promote --force`), and what it holds is
//! reported from this site alone (the peer is not contacted):
//!
//! * snapshot mode: the newest complete non-primary mirror snapshot here, the primary
//!   snapshot it copies and its creation time here: the data is that of the primary at
//!   that snapshot, taken shortly before; writes after it are lost;
//! * journal mode: the replay position (`non_primary_position`) and entries behind as the
//!   daemon last recorded them in this site's `rbd mirror image status`, at its
//!   `last_update`: when nothing was behind then, the data is the primary's as of that time
//!   (writes after it are lost); otherwise some earlier time, unknown here.
//!
//! `rpo_seconds` is the age of that time when promoted. Re-runs skip images primary here.

use std::time::{Instant, SystemTime};

use rados_ffi::rbd::Image;
use rados_ffi::Rados;
use rbd_types::cls_rbd::MirrorImageMode;
use serde::Serialize;

use crate::consistent::{newest_complete_copy, unix_secs};
use crate::error::{DrError, Result};
use crate::failover::Outcome;
use crate::progress::{self, Progress};
use crate::promotion::{self, PromotionRecord};
use crate::sites::{self, Role};

/// What `failover --force` works on.
#[derive(Debug, Clone)]
pub struct ForcedOptions {
    /// The pool.
    pub pool: String,
    /// Image names (empty: every mirrored image of the pool here).
    pub images: Vec<String>,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
    /// Images promoted at once.
    pub concurrency: usize,
}

/// One image's forced failover.
#[derive(Debug, Clone, Serialize)]
pub struct ImageForced {
    /// Image name.
    pub image: String,
    /// Global image id.
    pub global_id: String,
    /// `journal` or `snapshot`.
    pub mode: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// The last data this site holds (see the module documentation).
    pub last_replayed: Option<String>,
    /// Journal mode: entries behind the primary at that report.
    pub entries_behind: Option<u64>,
    /// Unix time up to which the primary's writes are here (`None`: unknown).
    pub synced_as_of: Option<f64>,
    /// Now minus `synced_as_of`: the writes of at most that many seconds are lost.
    pub rpo_seconds: Option<f64>,
    /// Role here at the end.
    pub local_role: Role,
    /// Seconds this image took.
    pub seconds: f64,
    /// What failed.
    pub error: Option<String>,
}

/// Everything `failover --force` did.
#[derive(Debug, Serialize)]
pub struct ForcedReport {
    /// The pool.
    pub pool: String,
    /// The peer that was primary (from the pool's peer record).
    pub peer_site: String,
    /// `--dry-run`.
    pub dry_run: bool,
    /// One entry per image.
    pub images: Vec<ImageForced>,
    /// Images failed.
    pub failed: usize,
    /// Total seconds.
    pub seconds: f64,
}

/// Promotes the selected non-primary images of `opts.pool` here with force.
pub async fn failover_forced(
    local: &Rados,
    opts: &ForcedOptions,
    progress: &dyn Progress,
) -> Result<ForcedReport> {
    let start = Instant::now();
    let scan = peer_manager::discovery::mirrored_pools(local).await?;
    let pool = scan.mirrored.iter().find(|p| p.name == opts.pool).ok_or_else(|| DrError::Pool {
        pool: opts.pool.clone(),
        reason: "mirroring is not enabled here".into(),
    })?;
    let peer_site =
        pool.receiving_peers.first().map_or_else(|| "the peer".to_owned(), |p| p.site_name.clone());
    let io = local.ioctx(&opts.pool, "").await?;
    let records = sites::image_records(&io).await?;
    let mut images: Vec<(String, String, String, MirrorImageMode)> = records
        .into_iter()
        .map(|(global_id, (id, name, mode))| (global_id, id, name, mode))
        .filter(|(_, _, name, _)| opts.images.is_empty() || opts.images.contains(name))
        .collect();
    for n in &opts.images {
        if !images.iter().any(|(_, _, name, _)| name == n) {
            return Err(DrError::Image {
                image: format!("{}/{n}", opts.pool),
                reason: "not a mirrored image of this pool here".into(),
            });
        }
    }
    images.sort_by(|a, b| a.2.cmp(&b.2));
    let io = &io;
    let mut results: Vec<ImageForced> = progress::each(
        images,
        opts.concurrency,
        progress,
        |i| i.2.clone(),
        |(global_id, id, name, mode)| async move {
            let t = Instant::now();
            let mut out = ImageForced {
                image: name.clone(),
                global_id,
                mode: mode.as_str(),
                outcome: Outcome::Failed,
                last_replayed: None,
                entries_behind: None,
                synced_as_of: None,
                rpo_seconds: None,
                local_role: Role::Missing,
                seconds: 0.0,
                error: None,
            };
            match promote(io, &id, &name, mode, opts.dry_run, &mut out, progress).await {
                Ok(o) => out.outcome = o,
                Err(e) => {
                    progress.step(&name, &format!("FAILED: {e}"));
                    out.error = Some(e.to_string());
                }
            }
            if let Ok(r) = sites::role(io, Some(&id)).await {
                out.local_role = r;
            }
            out.seconds = t.elapsed().as_secs_f64();
            out
        },
    )
    .await;
    results.sort_by(|a, b| a.image.cmp(&b.image));
    let failed = results.iter().filter(|r| r.outcome == Outcome::Failed).count();
    Ok(ForcedReport {
        pool: opts.pool.clone(),
        peer_site,
        dry_run: opts.dry_run,
        images: results,
        failed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

async fn promote(
    io: &rados_ffi::IoCtx,
    id: &str,
    name: &str,
    mode: MirrorImageMode,
    dry_run: bool,
    out: &mut ImageForced,
    progress: &dyn Progress,
) -> Result<Outcome> {
    if sites::role(io, Some(id)).await? == Role::Primary {
        return Ok(Outcome::AlreadyFailedOver);
    }
    let image = Image::open_by_id(io, id, None).await?;
    let mut promoted_from = None;
    match mode {
        MirrorImageMode::Snapshot => {
            let snaps = image.snapshots().await?;
            promoted_from = promotion::before_promotion(&snaps);
            if let Some((local_snap, primary_snap)) = newest_complete_copy(&snaps) {
                let time = snaps.iter().find(|s| s.id == local_snap).and_then(|s| s.timestamp);
                out.last_replayed = Some(format!(
                    "primary mirror snapshot {primary_snap}, synced here as snapshot {local_snap}"
                ));
                out.synced_as_of = time.map(unix_secs);
            }
        }
        MirrorImageMode::Journal => {
            let status = image.mirror_image_global_status().await?;
            if let Some(s) = status.local() {
                let (position, behind) = replay_position(&s.description);
                out.entries_behind = behind;
                out.last_replayed = Some(match position {
                    Some((tag, entry)) => format!(
                        "journal tag {tag} entry {entry} (as recorded at {} UTC, {})",
                        s.last_update.utc_string(),
                        behind.map_or_else(
                            || "entries behind unknown".to_owned(),
                            |b| format!("{b} entries behind")
                        )
                    ),
                    None => {
                        format!("unknown: status {:?} at {} UTC", s.description, s.last_update.utc_string())
                    }
                });
                if position.is_some() && behind == Some(0) {
                    out.synced_as_of = Some(f64::from(s.last_update.sec));
                }
            }
        }
    }
    out.rpo_seconds = out.synced_as_of.map(|t| (unix_secs(SystemTime::now()) - t).max(0.0));
    if dry_run {
        return Ok(Outcome::WouldFailOver);
    }
    progress.step(name, "promoting here with force");
    io.mirror_image_promote(name, true).await?;
    if sites::role(io, Some(id)).await? != Role::Primary {
        return Err(DrError::Image {
            image: name.to_owned(),
            reason: "not primary after the promotion".into(),
        });
    }
    progress.step(name, "promoted");
    // For the failback: the old primary's snapshot this one started from.
    if let Some((primary_mirror_uuid, primary_snap_id)) = promoted_from {
        let snaps = Image::open_by_id(io, id, None).await?.snapshots().await?;
        if let Some(promoted_snap_id) = promotion::promoted_snapshot(&snaps) {
            let record = PromotionRecord { primary_mirror_uuid, primary_snap_id, promoted_snap_id };
            if let Err(e) = promotion::write(io, &out.global_id, &record).await {
                progress.step(name, &format!("could not record the promotion for the failback: {e}"));
            }
        }
    }
    Ok(Outcome::FailedOver)
}

/// `(tag_tid, entry_tid)` of `non_primary_position` and `entries_behind_primary` in a
/// journal replay status description (`replaying, {json}`, as the stock daemon writes it).
fn replay_position(description: &str) -> (Option<(u64, u64)>, Option<u64>) {
    let Some(json) = description.find('{').map(|i| &description[i..]) else { return (None, None) };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return (None, None) };
    let p = &v["non_primary_position"];
    let position = p["tag_tid"].as_u64().zip(p["entry_tid"].as_u64());
    (position, v["entries_behind_primary"].as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_position_reads_the_stock_description() {
        let d = r#"replaying, {"bytes_per_second":0.0,"entries_behind_primary":3,"entries_per_second":0.0,"non_primary_position":{"entry_tid":17,"object_number":1,"tag_tid":2},"primary_position":{"entry_tid":20,"object_number":1,"tag_tid":2}}"#;
        assert_eq!(replay_position(d), (Some((2, 17)), Some(3)));
        assert_eq!(replay_position("replaying, {\"non_primary_position\":{}}"), (None, None));
        assert_eq!(replay_position("stopped"), (None, None));
        assert_eq!(replay_position("replaying, {not json"), (None, None));
    }
}
