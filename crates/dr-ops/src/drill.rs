//! `drill`: prove this site's copies are usable, without touching replication.
//!
//! Per image: take its consistent point ([`crate::consistent`]); copy the image here at
//! that snapshot into a scratch image `rbd-mirror-rs-drill.<image>` (in the same pool or a
//! scratch pool of this site; features `layering,exclusive-lock`, so never mirrored: the
//! lab's and cephadm's pools mirror per image and pool-mode mirroring takes only journaling
//! images), chunks of zeros left unwritten; release the point; optionally run a command
//! (`sh -c`) with the scratch image's spec in the environment; remove the scratch image,
//! whatever happened. A scratch image left by an interrupted run is removed first, so a
//! re-run cleans up. Pacific cannot clone from a mirror snapshot nor snapshot a
//! non-primary image, hence a copy rather than a clone.

use std::time::Instant;

use futures::stream::{self, StreamExt, TryStreamExt};
use rados_ffi::rbd::{features, Image, ImageCreateOptions, ImageRw};
use rados_ffi::{IoCtx, Rados};
use serde::Serialize;

use crate::consistent::{self, unix_secs};
use crate::error::{DrError, Result};
use crate::progress::{self, Progress};
use crate::sites::{self, MirroredImage, PoolPair};
use crate::verify::{CHUNK, OBJECTS_AT_ONCE};

/// What `drill` does.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The pool, its images, `--dry-run` (say what would be done, create nothing), the wait
    /// for the replay of a journal-mode snapshot (created and removed), images drilled at once.
    pub scope: crate::sites::Scope,
    /// Pool of this site for the scratch images (default: the scope's pool).
    pub scratch_pool: Option<String>,
    /// Shell command run against each scratch image (`sh -c`), with
    /// `RBD_MIRROR_DRILL_SPEC=<scratch pool>/<scratch image>`, `RBD_MIRROR_DRILL_IMAGE=<pool>/<image>`
    /// and `exec_env` in its environment.
    pub exec: Option<String>,
    /// More environment for `exec` (the binary passes how to reach this cluster).
    pub exec_env: Vec<(String, String)>,
}

/// How one image's drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillOutcome {
    /// Copied (and the command, if any, exited 0).
    Passed,
    /// The command exited non-zero.
    CommandFailed,
    /// `--dry-run`.
    WouldDrill,
    /// A step failed (see the error).
    Failed,
}

/// One image's drill.
#[derive(Debug, Clone, Serialize)]
pub struct ImageDrill {
    /// Image name.
    pub image: String,
    /// Global image id.
    pub global_id: String,
    /// `journal` or `snapshot`.
    pub mode: &'static str,
    /// What happened.
    pub outcome: DrillOutcome,
    /// The snapshot copied from.
    pub point: Option<String>,
    /// Unix time of the primary's data at that point.
    pub point_time: Option<f64>,
    /// `pool/image` of the scratch image.
    pub scratch: String,
    /// Image size.
    pub size: Option<u64>,
    /// Bytes written to the scratch image (chunks of zeros are skipped).
    pub bytes_copied: u64,
    /// The command's exit code (`None`: no command, or killed by a signal).
    pub exec_status: Option<i32>,
    /// The last lines of the command's stdout and stderr.
    pub exec_output: Option<String>,
    /// Whether the scratch image was removed (or never created).
    pub removed: bool,
    /// Seconds this image took.
    pub seconds: f64,
    /// What failed.
    pub error: Option<String>,
}

/// Everything `drill` did.
#[derive(Debug, Serialize)]
pub struct DrillReport {
    /// The pool.
    pub pool: String,
    /// The peer holding the primaries.
    pub peer_site: String,
    /// `--dry-run`.
    pub dry_run: bool,
    /// One entry per image.
    pub images: Vec<ImageDrill>,
    /// Images whose drill failed (a step or the command).
    pub failed: usize,
    /// Total seconds.
    pub seconds: f64,
}

/// Drills the selected images of `opts.scope.pool`.
pub async fn drill(local: &Rados, opts: &DrillOptions, progress: &dyn Progress) -> Result<DrillReport> {
    let start = Instant::now();
    let pair = sites::connect_pool(local, &opts.scope.pool, opts.scope.connect_timeout).await?;
    let own_scratch = match &opts.scratch_pool {
        Some(p) => Some(local.ioctx(p, "").await?),
        None => None,
    };
    let scratch_io = own_scratch.as_ref().unwrap_or(&pair.conn.local_io);
    let images = sites::mirrored_images(&pair, &opts.scope.images).await?;
    let mut results: Vec<ImageDrill> = progress::each(
        images,
        opts.scope.concurrency,
        progress,
        |i| i.name.clone(),
        |image| one_image(&pair, scratch_io, image, opts, progress),
    )
    .await;
    results.sort_by(|a, b| a.image.cmp(&b.image));
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, DrillOutcome::Failed | DrillOutcome::CommandFailed))
        .count();
    Ok(DrillReport {
        pool: pair.pool.clone(),
        peer_site: pair.peer_site.clone(),
        dry_run: opts.scope.dry_run,
        images: results,
        failed,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The scratch image of `image`.
fn scratch_name(image: &str) -> String {
    format!("rbd-mirror-rs-drill.{image}")
}

async fn one_image(
    pair: &PoolPair,
    scratch_io: &IoCtx,
    image: MirroredImage,
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> ImageDrill {
    let start = Instant::now();
    let scratch = scratch_name(&image.name);
    let mut out = ImageDrill {
        image: image.name.clone(),
        global_id: image.global_id.clone(),
        mode: image.mode.as_str(),
        outcome: DrillOutcome::Failed,
        point: None,
        point_time: None,
        scratch: format!("{}/{scratch}", scratch_io.pool_name()),
        size: None,
        bytes_copied: 0,
        exec_status: None,
        exec_output: None,
        removed: false,
        seconds: 0.0,
        error: None,
    };
    let result = steps(pair, scratch_io, &scratch, &image, opts, &mut out, progress).await;
    if !opts.scope.dry_run {
        match remove_scratch(scratch_io, &scratch).await {
            Ok(()) => out.removed = true,
            Err(e) => {
                let e = format!("removing the scratch image {}: {e}", out.scratch);
                out.error = Some(out.error.take().map_or(e.clone(), |prev| format!("{prev}; {e}")));
                out.outcome = DrillOutcome::Failed;
            }
        }
    } else {
        out.removed = true;
    }
    match result {
        Ok(outcome) if out.error.is_none() => out.outcome = outcome,
        Ok(_) => {}
        Err(e) => {
            progress.step(&image.name, &format!("FAILED: {e}"));
            out.error = Some(out.error.take().map_or(e.to_string(), |later| format!("{e}; {later}")));
            out.outcome = DrillOutcome::Failed;
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    out
}

async fn steps(
    pair: &PoolPair,
    scratch_io: &IoCtx,
    scratch: &str,
    image: &MirroredImage,
    opts: &DrillOptions,
    out: &mut ImageDrill,
    progress: &dyn Progress,
) -> Result<DrillOutcome> {
    let (local_id, _) = consistent::secondary_ids(pair, image).await?;
    if opts.scope.dry_run {
        return Ok(DrillOutcome::WouldDrill);
    }
    remove_scratch(scratch_io, scratch).await?;
    let point = consistent::acquire(pair, image, "drill", opts.scope.sync_timeout, progress).await?;
    out.point = Some(point.what.clone());
    out.point_time = point.time.map(unix_secs);
    progress.step(&image.name, &format!("copying {} into {}", point.what, out.scratch));
    let copied = copy(&pair.conn.local_io, local_id, point.local_snap_id, scratch_io, scratch, out).await;
    let released = consistent::release(pair, image, &point, opts.scope.sync_timeout, progress).await;
    copied?;
    released?;
    progress.step(&image.name, &format!("copied {} bytes", out.bytes_copied));
    let Some(cmd) = &opts.exec else { return Ok(DrillOutcome::Passed) };
    progress.step(&image.name, &format!("running: {cmd}"));
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", cmd])
        .env("RBD_MIRROR_DRILL_SPEC", &out.scratch)
        .env("RBD_MIRROR_DRILL_IMAGE", format!("{}/{}", pair.pool, image.name))
        .envs(opts.exec_env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| DrError::Image {
            image: image.name.clone(),
            reason: format!("running the command: {e}"),
        })?
        .map_err(|e| DrError::Image { image: image.name.clone(), reason: format!("running `{cmd}`: {e}") })?;
    out.exec_status = output.status.code();
    out.exec_output = Some(tail(&output.stdout, &output.stderr));
    Ok(if output.status.success() { DrillOutcome::Passed } else { DrillOutcome::CommandFailed })
}

/// The last 20 lines of the command's output (stdout, then stderr).
fn tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(stdout), String::from_utf8_lossy(stderr));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Removes the scratch image if it exists.
async fn remove_scratch(io: &IoCtx, name: &str) -> Result<()> {
    match io.remove_image(name).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `scratch` and copies image `id` of `io` at snapshot `snap_id` into it.
async fn copy(
    io: &IoCtx,
    id: &str,
    snap_id: u64,
    scratch_io: &IoCtx,
    scratch: &str,
    out: &mut ImageDrill,
) -> Result<()> {
    let source = Image::open_by_id_at_snap_id(io, id, snap_id).await?;
    let info = source.stat().await?;
    out.size = Some(info.size);
    let opts = ImageCreateOptions {
        order: u8::try_from(info.order).ok(),
        features: Some(features::LAYERING | features::EXCLUSIVE_LOCK),
        ..ImageCreateOptions::default()
    };
    scratch_io.create_image(scratch, info.size, &opts).await?;
    let target = ImageRw::open(scratch_io, scratch).await?;
    let chunk = info.obj_size.clamp(1, CHUNK);
    let written: Vec<u64> = stream::iter((0..info.size.div_ceil(chunk)).map(|n| n * chunk))
        .map(|at| {
            let (source, target) = (&source, &target);
            async move {
                let len = usize::try_from((info.size - at).min(chunk)).unwrap_or(CHUNK as usize);
                let data = source.read(at, len).await?;
                if data.iter().all(|&b| b == 0) {
                    return Ok::<_, DrError>(0);
                }
                target.write(at, &data).await?;
                Ok(data.len() as u64)
            }
        })
        .buffer_unordered(OBJECTS_AT_ONCE)
        .try_collect()
        .await?;
    target.flush().await?;
    out.bytes_copied = written.iter().sum();
    Ok(())
}
