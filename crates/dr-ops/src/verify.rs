//! `verify`: compare this site's copy of each image with its primary at a consistent point
//! ([`crate::consistent`]), object by object, while replication goes on.
//!
//! Both images are opened read-only at the point's snapshot; for each data object of the
//! image (`[n × object size, (n + 1) × object size)` of the image, in chunks of at most
//! 4 MiB) both sides are read and compared byte for byte: this process holds both ranges, so
//! no checksum is needed, and a mismatch is named exactly (offset and length of each run of
//! differing bytes, adjacent runs merged). Objects are compared in parallel up to a bound,
//! images too. A size that differs is a mismatch of the tail.

use std::time::Instant;

use futures::stream::{self, StreamExt, TryStreamExt};
use rados_ffi::rbd::Image;
use rados_ffi::Rados;
use serde::Serialize;

use crate::consistent::{self, unix_secs};
use crate::error::{DrError, Result};
use crate::progress::{self, Progress};
use crate::sites::{self, MirroredImage, PoolPair};

/// The largest read of one side at once.
pub(crate) const CHUNK: u64 = 4 << 20;
/// Objects of one image compared at once.
pub(crate) const OBJECTS_AT_ONCE: usize = 8;
/// Mismatching extents listed per image (the count is always exact).
const MAX_LISTED: usize = 1000;

/// What `verify` compares (`dry_run`: say how each image would be compared, create nothing;
/// `sync_timeout`: the wait for the replay of a journal-mode snapshot, created and removed).
pub type VerifyOptions = crate::sites::Scope;

/// A byte range of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Image offset in bytes.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// How one image's comparison ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyOutcome {
    /// Identical at the point.
    Clean,
    /// Some bytes differ.
    Mismatch,
    /// `--dry-run`.
    WouldVerify,
    /// Could not be compared (see the error).
    Failed,
}

/// One image's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ImageVerify {
    /// Image name.
    pub image: String,
    /// Global image id.
    pub global_id: String,
    /// `journal` or `snapshot`.
    pub mode: &'static str,
    /// What happened.
    pub outcome: VerifyOutcome,
    /// The snapshot compared at.
    pub point: Option<String>,
    /// Unix time of the primary's data at that point.
    pub point_time: Option<f64>,
    /// Image size at the point (the primary's).
    pub size: Option<u64>,
    /// Data objects compared.
    pub objects: u64,
    /// Objects with a difference.
    pub mismatched_objects: u64,
    /// Bytes that differ.
    pub mismatched_bytes: u64,
    /// Runs of differing bytes, by image offset (at most 1000 listed).
    pub mismatches: Vec<Extent>,
    /// Seconds this image took.
    pub seconds: f64,
    /// What failed.
    pub error: Option<String>,
}

/// Everything `verify` found.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// The pool.
    pub pool: String,
    /// The peer holding the primaries.
    pub peer_site: String,
    /// `--dry-run`.
    pub dry_run: bool,
    /// One entry per image.
    pub images: Vec<ImageVerify>,
    /// Images with a mismatch.
    pub mismatched: usize,
    /// Images that could not be compared.
    pub failed: usize,
    /// Total seconds.
    pub seconds: f64,
}

/// Verifies the selected images of `opts.pool`.
pub async fn verify(local: &Rados, opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    let start = Instant::now();
    let pair = sites::connect_pool(local, &opts.pool, opts.connect_timeout).await?;
    let images = sites::mirrored_images(&pair, &opts.images).await?;
    let mut results: Vec<ImageVerify> = progress::each(
        images,
        opts.concurrency,
        progress,
        |i| i.name.clone(),
        |image| one_image(&pair, image, opts, progress),
    )
    .await;
    results.sort_by(|a, b| a.image.cmp(&b.image));
    let count = |o: VerifyOutcome| results.iter().filter(|r| r.outcome == o).count();
    Ok(VerifyReport {
        pool: pair.pool.clone(),
        peer_site: pair.peer_site.clone(),
        dry_run: opts.dry_run,
        mismatched: count(VerifyOutcome::Mismatch),
        failed: count(VerifyOutcome::Failed),
        images: results,
        seconds: start.elapsed().as_secs_f64(),
    })
}

async fn one_image(
    pair: &PoolPair,
    image: MirroredImage,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> ImageVerify {
    let start = Instant::now();
    let mut out = ImageVerify {
        image: image.name.clone(),
        global_id: image.global_id.clone(),
        mode: image.mode.as_str(),
        outcome: VerifyOutcome::Failed,
        point: None,
        point_time: None,
        size: None,
        objects: 0,
        mismatched_objects: 0,
        mismatched_bytes: 0,
        mismatches: Vec::new(),
        seconds: 0.0,
        error: None,
    };
    if let Err(e) = compare_image(pair, &image, opts, &mut out, progress).await {
        progress.step(&image.name, &format!("FAILED: {e}"));
        out.outcome = VerifyOutcome::Failed;
        out.error = Some(e.to_string());
    }
    out.seconds = start.elapsed().as_secs_f64();
    out
}

async fn compare_image(
    pair: &PoolPair,
    image: &MirroredImage,
    opts: &VerifyOptions,
    out: &mut ImageVerify,
    progress: &dyn Progress,
) -> Result<()> {
    if opts.dry_run {
        consistent::secondary_ids(pair, image).await?;
        out.outcome = VerifyOutcome::WouldVerify;
        return Ok(());
    }
    let point = consistent::acquire(pair, image, "verify", opts.sync_timeout, progress).await?;
    out.point = Some(point.what.clone());
    out.point_time = point.time.map(unix_secs);
    progress.step(&image.name, &format!("comparing at {}", point.what));
    let compared = compare_at(pair, image, point.local_snap_id, point.remote_snap_id, out).await;
    let released = consistent::release(pair, image, &point, opts.sync_timeout, progress).await;
    compared?;
    released?;
    out.outcome = if out.mismatched_bytes == 0 { VerifyOutcome::Clean } else { VerifyOutcome::Mismatch };
    progress.step(
        &image.name,
        &match out.outcome {
            VerifyOutcome::Clean => format!("clean ({} objects)", out.objects),
            _ => format!("MISMATCH: {} bytes in {} objects", out.mismatched_bytes, out.mismatched_objects),
        },
    );
    Ok(())
}

/// Compares the image here at `local_snap` with the primary at `remote_snap`.
async fn compare_at(
    pair: &PoolPair,
    image: &MirroredImage,
    local_snap: u64,
    remote_snap: u64,
    out: &mut ImageVerify,
) -> Result<()> {
    let (local_id, remote_id) = consistent::secondary_ids(pair, image).await?;
    let local = Image::open_by_id_at_snap_id(&pair.conn.local_io, local_id, local_snap).await?;
    let remote = Image::open_by_id_at_snap_id(&pair.conn.remote_io, remote_id, remote_snap).await?;
    let (li, ri) = (local.stat().await?, remote.stat().await?);
    out.size = Some(ri.size);
    let size = li.size.min(ri.size);
    let obj_size = ri.obj_size.max(1);
    let objects = size.div_ceil(obj_size);
    let per_object: Vec<Vec<Extent>> = stream::iter(0..objects)
        .map(|n| {
            let (local, remote) = (&local, &remote);
            async move {
                let start = n * obj_size;
                let end = (start + obj_size).min(size);
                let mut runs = Vec::new();
                let mut at = start;
                while at < end {
                    let len = usize::try_from((end - at).min(CHUNK)).unwrap_or(CHUNK as usize);
                    let (a, b) = futures::try_join!(local.read(at, len), remote.read(at, len))?;
                    runs.extend(diff_runs(&a, &b, at));
                    at += len as u64;
                }
                Ok::<_, DrError>(runs)
            }
        })
        .buffer_unordered(OBJECTS_AT_ONCE)
        .try_collect()
        .await?;
    out.objects = objects;
    out.mismatched_objects = per_object.iter().filter(|r| !r.is_empty()).count() as u64;
    let mut runs: Vec<Extent> = per_object.into_iter().flatten().collect();
    if li.size != ri.size {
        // The tail only one side has.
        runs.push(Extent { offset: size, length: li.size.max(ri.size) - size });
    }
    let runs = merge(runs);
    out.mismatched_bytes = runs.iter().map(|e| e.length).sum();
    out.mismatches = runs.into_iter().take(MAX_LISTED).collect();
    Ok(())
}

/// Runs of differing bytes of `a` and `b` (read at image offset `base`); a length
/// difference (a short read of one side) differs too.
pub(crate) fn diff_runs(a: &[u8], b: &[u8], base: u64) -> Vec<Extent> {
    let mut runs: Vec<Extent> = Vec::new();
    let common = a.len().min(b.len());
    let mut i = 0;
    while i < common {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let from = i;
        while i < common && a[i] != b[i] {
            i += 1;
        }
        runs.push(Extent { offset: base + from as u64, length: (i - from) as u64 });
    }
    let longer = a.len().max(b.len());
    if longer > common {
        runs.push(Extent { offset: base + common as u64, length: (longer - common) as u64 });
    }
    merge(runs)
}

/// Sorted, with touching or overlapping extents joined.
fn merge(mut runs: Vec<Extent>) -> Vec<Extent> {
    runs.sort_by_key(|e| e.offset);
    let mut out: Vec<Extent> = Vec::with_capacity(runs.len());
    for e in runs {
        match out.last_mut() {
            Some(last) if last.offset + last.length >= e.offset => {
                let end = (last.offset + last.length).max(e.offset + e.length);
                last.length = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, length: u64) -> Extent {
        Extent { offset, length }
    }

    #[test]
    fn diff_runs_names_each_run_of_differing_bytes() {
        let a = vec![0u8; 16];
        assert!(diff_runs(&a, &a, 100).is_empty());
        let mut b = a.clone();
        b[3] = 1;
        assert_eq!(diff_runs(&a, &b, 100), [ext(103, 1)]);
        b[4] = 1;
        b[10] = 9;
        b[15] = 9;
        assert_eq!(diff_runs(&a, &b, 0), [ext(3, 2), ext(10, 1), ext(15, 1)]);
        // One side shorter: its missing tail differs.
        assert_eq!(diff_runs(&a, &a[..12], 0), [ext(12, 4)]);
        b[11] = 5;
        assert_eq!(diff_runs(&a, &b[..12], 0), [ext(3, 2), ext(10, 6)]);
    }

    #[test]
    fn merge_joins_touching_and_overlapping_extents() {
        assert_eq!(merge(vec![ext(10, 5), ext(0, 10), ext(20, 1), ext(12, 2)]), [ext(0, 15), ext(20, 1)]);
        assert!(merge(vec![]).is_empty());
    }

    #[test]
    fn diff_runs_counts_exactly_the_differing_bytes() {
        // A small deterministic generator: every flipped byte is counted once.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let a: Vec<u8> = (0..257).map(|i| (i * 7) as u8).collect();
            let mut b = a.clone();
            let mut flipped = std::collections::BTreeSet::new();
            for _ in 0..(x % 20) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % 257) as usize;
                b[i] ^= 0xff;
                // Flipped twice: equal again.
                if !flipped.insert(i as u64) {
                    flipped.remove(&(i as u64));
                }
            }
            let runs = diff_runs(&a, &b, 0);
            let covered: std::collections::BTreeSet<u64> =
                runs.iter().flat_map(|e| e.offset..e.offset + e.length).collect();
            assert_eq!(covered, flipped);
            assert!(runs.windows(2).all(|w| w[0].offset + w[0].length < w[1].offset));
        }
    }
}
