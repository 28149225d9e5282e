//! `failover --planned`: move the primary of a pool's images from the peer to this site
//! with nothing lost (ceph-formats.md §6).
//!
//! Per image, each step is decided from the roles found, so a re-run after an
//! interruption continues where it stopped:
//!
//! | here | peer | step |
//! |---|---|---|
//! | non-primary | primary | demote on the peer, then as below |
//! | non-primary | non-primary | wait until replayed (journal: our commit position at the primary's demotion entry, in its `<orphan>` tag; snapshot: a complete non-primary snapshot here of the peer's demotion snapshot), promote here |
//! | primary | non-primary | done already |
//! | primary | primary | split brain: stop |
//!
//! After the promotion both roles are read again. Images run in parallel up to a bound;
//! after the first failure no further image is started, and the report gives every image's
//! roles as found at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rados_ffi::rbd::Image;
use rados_ffi::Rados;
use rbd_types::cls_rbd::MirrorImageMode;
use rbd_types::snap_namespace::{MirrorSnapshotState, SnapshotNamespace};
use serde::Serialize;

use crate::consistent;
use crate::error::{DrError, Result};
use crate::journal;
use crate::progress::{self, Progress};
use crate::sites::{self, MirroredImage, PoolPair, Role};

/// What `failover --planned` works on (`sync_timeout`: the wait for one image's replay up
/// to its demotion).
pub type FailoverOptions = crate::sites::Scope;

/// How one image's failover ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Demoted there, replayed, promoted here: done now.
    FailedOver,
    /// Already primary here and non-primary there.
    AlreadyFailedOver,
    /// `--dry-run`: the steps it would take are listed.
    WouldFailOver,
    /// A step failed (see the error).
    Failed,
    /// Not started: an earlier image failed.
    NotStarted,
}

/// One image's failover.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFailover {
    /// Image name.
    pub image: String,
    /// Global image id.
    pub global_id: String,
    /// `journal` or `snapshot`.
    pub mode: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// The steps taken (or, with `--dry-run`, that would be).
    pub steps: Vec<String>,
    /// Seconds this image took.
    pub seconds: f64,
    /// Data lost: 0 for a planned failover that completed.
    pub rpo_seconds: Option<f64>,
    /// Role here at the end.
    pub local_role: Role,
    /// Role on the peer at the end.
    pub peer_role: Role,
    /// Local `rbd mirror image status` at the end.
    pub local_status: Option<String>,
    /// What failed.
    pub error: Option<String>,
}

/// Everything `failover` did.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// The pool.
    pub pool: String,
    /// The peer that was primary.
    pub peer_site: String,
    /// `--dry-run`.
    pub dry_run: bool,
    /// One entry per image.
    pub images: Vec<ImageFailover>,
    /// Images failed or not started.
    pub failed: usize,
    /// Total seconds.
    pub seconds: f64,
    /// How to go on after a failure.
    pub next_step: Option<String>,
}

/// Fails the selected images of `opts.pool` over from the pool's peer to `local`.
/// `progress.step(image, message)` is told of each step and, while waiting, every few seconds.
pub async fn failover_planned(
    local: &Rados,
    opts: &FailoverOptions,
    progress: &dyn Progress,
) -> Result<FailoverReport> {
    let start = Instant::now();
    let pair = sites::connect_pool(local, &opts.pool, opts.connect_timeout).await?;
    let images = sites::mirrored_images(&pair, &opts.images).await?;
    let stop = AtomicBool::new(false);
    let mut results: Vec<ImageFailover> = progress::each(
        images,
        opts.concurrency,
        progress,
        |i| i.name.clone(),
        |image| one_image(&pair, image, opts, &stop, progress),
    )
    .await;
    results.sort_by(|a, b| a.image.cmp(&b.image));
    let failed =
        results.iter().filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::NotStarted)).count();
    let next_step = (failed > 0).then(|| {
        format!(
            "fix the error, then run the same failover command again: images already primary here are \
             skipped, demoted ones are waited for and promoted (or fail back the images primary here with \
             `rbd mirror image demote` here and `rbd mirror image promote` on {})",
            pair.peer_site
        )
    });
    Ok(FailoverReport {
        pool: pair.pool.clone(),
        peer_site: pair.peer_site.clone(),
        dry_run: opts.dry_run,
        images: results,
        failed,
        seconds: start.elapsed().as_secs_f64(),
        next_step,
    })
}

async fn one_image(
    pair: &PoolPair,
    image: MirroredImage,
    opts: &FailoverOptions,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> ImageFailover {
    let start = Instant::now();
    let mut out = ImageFailover {
        image: image.name.clone(),
        global_id: image.global_id.clone(),
        mode: image.mode.as_str(),
        outcome: Outcome::NotStarted,
        steps: Vec::new(),
        seconds: 0.0,
        rpo_seconds: None,
        local_role: Role::Missing,
        peer_role: Role::Missing,
        local_status: None,
        error: None,
    };
    if !stop.load(Ordering::SeqCst) {
        match steps(pair, &image, opts, &mut out, progress).await {
            Ok(outcome) => out.outcome = outcome,
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                progress.step(&image.name, &format!("FAILED: {e}"));
                out.outcome = Outcome::Failed;
                out.error = Some(e.to_string());
            }
        }
    }
    // The roles as they are now, whatever happened.
    (out.local_role, out.peer_role, out.local_status) =
        sites::roles_now(pair, image.local_id.as_deref(), image.remote_id.as_deref()).await;
    out.seconds = start.elapsed().as_secs_f64();
    out
}

async fn steps(
    pair: &PoolPair,
    image: &MirroredImage,
    opts: &FailoverOptions,
    out: &mut ImageFailover,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let spec = format!("{}/{}", pair.pool, image.name);
    let fail = |reason: String| DrError::Image { image: spec.clone(), reason };
    let local_role = sites::role(&pair.conn.local_io, image.local_id.as_deref()).await?;
    let peer_role = sites::role(&pair.conn.remote_io, image.remote_id.as_deref()).await?;
    let (demote, wait_and_promote) = match (local_role, peer_role) {
        (Role::Primary, Role::NonPrimary) => {
            out.rpo_seconds = Some(0.0);
            return Ok(Outcome::AlreadyFailedOver);
        }
        (Role::NonPrimary, Role::Primary) => (true, true),
        (Role::NonPrimary, Role::NonPrimary) => (false, true),
        (Role::Primary, Role::Primary) => {
            return Err(fail(format!(
                "primary here and on {}: split brain, resolve it first",
                pair.peer_site
            )))
        }
        (Role::Missing, _) => return Err(fail("no local image (not replicated here yet)".into())),
        (_, Role::Missing) => return Err(fail(format!("no image on {}", pair.peer_site))),
    };
    let local_name = pair.conn.local_io.image_name(image.local_id.as_deref().unwrap_or_default()).await?;
    let remote_name = pair.conn.remote_io.image_name(image.remote_id.as_deref().unwrap_or_default()).await?;
    if demote {
        out.steps.push(format!("demote on {}", pair.peer_site));
    }
    if wait_and_promote {
        out.steps.push("wait until replayed up to the demotion".into());
        out.steps.push("promote here".into());
    }
    if opts.dry_run {
        return Ok(Outcome::WouldFailOver);
    }
    if demote {
        progress.step(&image.name, &format!("demoting on {}", pair.peer_site));
        pair.conn.remote_io.mirror_image_demote(&remote_name).await?;
    }
    progress.step(&image.name, "waiting until replayed up to the demotion");
    wait_replayed(pair, image, &spec, opts.sync_timeout, progress).await?;
    progress.step(&image.name, "promoting here");
    pair.conn.local_io.mirror_image_promote(&local_name, false).await?;
    let local_role = sites::role(&pair.conn.local_io, image.local_id.as_deref()).await?;
    let peer_role = sites::role(&pair.conn.remote_io, image.remote_id.as_deref()).await?;
    if (local_role, peer_role) != (Role::Primary, Role::NonPrimary) {
        return Err(fail(format!(
            "after the promotion: {} here, {} on {}",
            local_role.as_str(),
            peer_role.as_str(),
            pair.peer_site
        )));
    }
    out.rpo_seconds = Some(0.0);
    progress.step(&image.name, "failed over");
    Ok(Outcome::FailedOver)
}

/// Polls until this site holds everything the peer wrote before its demotion.
async fn wait_replayed(
    pair: &PoolPair,
    image: &MirroredImage,
    spec: &str,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<()> {
    consistent::wait_until(spec, timeout, progress, &image.name, || async {
        let (done, what) = replayed_state(pair, image, spec).await?;
        Ok((done.then_some(()), what))
    })
    .await
}

/// Whether the demotion was replayed here, and what was seen.
async fn replayed_state(pair: &PoolPair, image: &MirroredImage, spec: &str) -> Result<(bool, String)> {
    let missing = || DrError::Image { image: spec.to_owned(), reason: "image gone on one site".into() };
    let remote_id = image.remote_id.as_deref().ok_or_else(missing)?;
    let local_id = image.local_id.as_deref().ok_or_else(missing)?;
    match image.mode {
        MirrorImageMode::Journal => {
            let pos = journal::positions(&pair.conn.remote_io, remote_id, &pair.conn.local_mirror_uuid)
                .await
                .map_err(|source| DrError::Journal { image: spec.to_owned(), source })?;
            let what = format!(
                "primary at {:?} ({}), replayed {:?}, {} entries behind",
                pos.primary.map(|p| (p.tag_tid, p.entry_tid)),
                pos.primary_tag_owner().unwrap_or_default(),
                pos.replayed.map(|p| (p.tag_tid, p.entry_tid)),
                pos.entries_behind().map_or_else(|| "?".to_owned(), |n| n.to_string()),
            );
            Ok((pos.demotion_replayed(), what))
        }
        MirrorImageMode::Snapshot => {
            let remote = Image::open_by_id(&pair.conn.remote_io, remote_id, None).await?.snapshots().await?;
            let demoted = remote
                .iter()
                .filter(|s| {
                    matches!(&s.namespace, SnapshotNamespace::Mirror(m) if m.state == MirrorSnapshotState::PrimaryDemoted)
                })
                .map(|s| s.id)
                .max();
            let Some(demoted) = demoted else {
                return Ok((false, format!("no demotion snapshot on {} yet", pair.peer_site)));
            };
            let local = Image::open_by_id(&pair.conn.local_io, local_id, None).await?.snapshots().await?;
            let copy = local.iter().find_map(|s| match &s.namespace {
                SnapshotNamespace::Mirror(m) if !m.state.is_primary() && m.primary_snap_id == demoted => {
                    Some(m)
                }
                _ => None,
            });
            Ok(match copy {
                Some(m) if m.complete => (true, format!("demotion snapshot {demoted} synced")),
                Some(m) => (
                    false,
                    format!("demotion snapshot {demoted} syncing (object {})", m.last_copied_object_number),
                ),
                None => (false, format!("demotion snapshot {demoted} not synced yet")),
            })
        }
    }
}
