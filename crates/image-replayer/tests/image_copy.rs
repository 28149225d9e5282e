//! The image-copy engine against the project's Ceph lab (`tests/lab/lab.sh up`): a primary
//! image on site-a with data, holes, an all-zero object and two snapshots is copied into a
//! plain image on site-b (full copy to snap1, then an incremental snap1 -> snap2 that is
//! cancelled midway and resumed from its reported progress). Results are checked with the
//! stock CLIs: `rbd export | sha256sum` of every snapshot and HEAD on both sites, `rados stat`
//! for holes, `rbd object-map check` for the object maps we maintain.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::sync::Arc;

use image_replayer::LocalImage;
use image_replayer::{copy_image, CopyProgress, CopyRange, CopyStats, LocalSnapContext};
use rados_ffi::{IoCtx, Rados};
use rbd_types::{ProtectionStatus, SnapshotNamespace};
use tokio_util::sync::CancellationToken;

const OBJ: u64 = 64 << 10; // 64 KiB objects: 256 of them in 16 MiB, progress every 64

struct Cleanup(Vec<(lab::Site, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_IMAGES").is_some() {
            return;
        }
        for (site, spec) in &self.0 {
            for _ in 0..20 {
                let _ = site.rbd_ok(&["snap", "unprotect", &format!("{spec}@snap1")]);
                let _ = site.rbd_ok(&["snap", "purge", "--no-progress", spec]);
                if site.rbd_ok(&["rm", "--no-progress", spec]) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

fn info(site: &lab::Site, spec: &str) -> serde_json::Value {
    site.rbd_json(&["info", spec])
}

fn snap_id(site: &lab::Site, spec: &str, name: &str) -> u64 {
    let snaps = site.rbd_json(&["snap", "ls", spec]);
    snaps
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .and_then(|s| s["id"].as_u64())
        .unwrap_or_else(|| panic!("no snapshot {name} of {spec}: {snaps}"))
}

fn object_exists(site: &lab::Site, prefix: &str, object_no: u64) -> bool {
    site.command_output("rados", &["-p", lab::POOL, "stat", &format!("{prefix}.{object_no:016x}")]).is_ok()
}

/// `copy_image` of `range`, not cancelled: its stats and the last progress it reported.
async fn copy_to_the_end(
    remote_io: &IoCtx,
    src_id: &str,
    local: &LocalImage,
    range: &CopyRange,
    snapc: &LocalSnapContext,
    concurrency: usize,
) -> image_replayer::Result<(CopyStats, CopyProgress)> {
    let mut last = CopyProgress::default();
    let stats = copy_image(
        remote_io,
        src_id,
        local,
        range,
        snapc,
        concurrency,
        &image_replayer::ImageBandwidth::unlimited(),
        &mut |p| last = p,
        &CancellationToken::new(),
    )
    .await?;
    Ok((stats, last))
}

/// With object-map and fast-diff: changed objects come from the object maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_snapshots_incrementally_keeping_holes_and_resuming() {
    copy_scenario("layering,exclusive-lock,object-map,fast-diff").await;
}

/// Object map without fast-diff: the full copy reads only the objects the map has, the
/// incremental one compares whole objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_with_an_object_map_but_no_fast_diff() {
    copy_scenario("layering,exclusive-lock,object-map").await;
}

/// Without object maps: every object is read at both snapshots and compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_by_whole_object_comparison_without_object_maps() {
    copy_scenario("layering").await;
}

async fn copy_scenario(features: &str) {
    let object_map = features.contains("object-map");
    let (a, b) = (lab::site("site-a"), lab::site("site-b"));
    let src = format!("{}/{}", lab::POOL, lab::unique("copy-src"));
    let dst = format!("{}/{}", lab::POOL, lab::unique("copy-dst"));
    let _cleanup = Cleanup(vec![(a.clone(), src.clone()), (b.clone(), dst.clone())]);
    let obj = OBJ.to_string();

    // snap1: scattered 4 KiB writes, a partly written object with a hole inside, and an
    // existing object that holds only zeros.
    a.rbd(&["create", "--size", "16M", "--object-size", &obj, "--image-feature", features, &src]);
    a.bench(&src, "rand", "4K", "1M");
    let o = |n: u64| (n * OBJ).to_string();
    a.rbdio(&src, &["write", &o(200), "4096", "3"]);
    a.rbdio(&src, &["write", &(200 * OBJ + 60 * 1024).to_string(), "4096", "5"]);
    a.rbdio(&src, &["write", &o(210), "8192", "9"]);
    // Zeroed in two partial ranges (a whole-object zeroing would remove it), after the
    // random writes that may have hit it.
    a.rbdio(&src, &["write-zeroes", &o(210), &(OBJ - 4096).to_string()]);
    a.rbdio(&src, &["write-zeroes", &(211 * OBJ - 4096).to_string(), "4096"]);
    a.rbd(&["snap", "create", &format!("{src}@snap1")]);
    a.rbd(&["snap", "protect", &format!("{src}@snap1")]);
    // snap2: more writes, a discarded range (objects 100..110 removed), growth with new data.
    a.bench(&src, "rand", "4K", "512K");
    a.rbdio(&src, &["discard", &o(100), &(10 * OBJ).to_string()]);
    a.rbdio(&src, &["resize", &(20 << 20).to_string()]);
    a.rbdio(&src, &["write", &o(300), "65536", "11"]);
    a.rbd(&["snap", "create", &format!("{src}@snap2")]);
    // HEAD moves on: the copy must read at the snapshots, not HEAD.
    a.bench(&src, "rand", "4K", "256K");

    let src_info = info(&a, &src);
    let src_prefix = src_info["block_name_prefix"].as_str().expect("block_name_prefix").to_owned();
    assert!(object_exists(&a, &src_prefix, 210), "site-a object 210 should exist (all zeros)");
    let (s1, s2) = (snap_id(&a, &src, "snap1"), snap_id(&a, &src, "snap2"));

    b.rbd(&["create", "--size", "16M", "--object-size", &obj, "--image-feature", features, &dst]);
    let dst_info = info(&b, &dst);
    let dst_id = dst_info["id"].as_str().expect("id").to_owned();
    let dst_prefix = dst_info["block_name_prefix"].as_str().expect("block_name_prefix").to_owned();

    let remote = Rados::connect(&a.admin_config()).await.expect("connecting to site-a");
    let remote_io = remote.ioctx(lab::POOL, "").await.expect("site-a pool");
    let local_rados = Rados::connect(&b.admin_config()).await.expect("connecting to site-b");
    let local =
        LocalImage::open(&local_rados, lab::POOL, "", &dst_id).await.expect("opening the local image");
    let src_id = src_info["id"].as_str().expect("id").to_owned();

    // Full copy to snap1, then the local snapshot (journal bootstrap style).
    let range = CopyRange { remote_snap_id_start: None, remote_snap_id_end: s1, start_object: 0 };
    let (stats, last) = copy_to_the_end(&remote_io, &src_id, &local, &range, &LocalSnapContext::default(), 8)
        .await
        .expect("full copy to snap1");
    assert_eq!(last.objects_done, last.object_count);
    assert_eq!(stats.object_count, 256);
    assert!(stats.objects_copied > 0 && stats.bytes_written > 0, "{stats:?}");
    local.snap_create("snap1", &SnapshotNamespace::User).await.expect("local snap1");
    local.snap_set_protection("snap1", ProtectionStatus::Protected).await.expect("protect local snap1");
    assert_eq!(a.export_sha256(&format!("{src}@snap1")), b.export_sha256(&format!("{dst}@snap1")));
    assert!(!object_exists(&b, &dst_prefix, 210), "an all-zero object was written on site-b");

    // Incremental snap1 -> snap2 into a local snap2 created first and left out of the write
    // snapshot context (snapshot-mode style); cancelled at the first progress report.
    // As the snapshot replayer does: the image gets the primary snapshot's size first.
    local.set_size(20 << 20).await.expect("local resize");
    local.snap_create("snap2", &SnapshotNamespace::User).await.expect("local snap2");
    let (l1, l2) = (snap_id(&b, &dst, "snap1"), snap_id(&b, &dst, "snap2"));
    // The context as it was before snap2: seq l1 (a seq of l2 would make the clones cover
    // snap2, which would then keep the old data).
    assert!(l2 > l1);
    let snapc = LocalSnapContext { seq: l1, snaps: vec![l1] };
    let range = CopyRange { remote_snap_id_start: Some(s1), remote_snap_id_end: s2, start_object: 0 };
    let cancel = Arc::new(CancellationToken::new());
    let mut first: Option<CopyProgress> = None;
    let c2 = cancel.clone();
    let r = copy_image(
        &remote_io,
        &src_id,
        &local,
        &range,
        &snapc,
        1,
        &image_replayer::ImageBandwidth::unlimited(),
        &mut |p| {
            first.get_or_insert(p);
            c2.cancel();
        },
        &cancel,
    )
    .await;
    let first = first.expect("a progress report before the cancellation");
    assert!(r.is_err(), "the copy should stop when cancelled: {r:?}");
    assert!(first.objects_done > 0 && first.objects_done < first.object_count, "{first:?}");

    let range = CopyRange { start_object: first.objects_done, ..range };
    let (stats, last) =
        copy_to_the_end(&remote_io, &src_id, &local, &range, &snapc, 4).await.expect("resumed copy to snap2");
    assert_eq!(last.objects_done, stats.object_count);
    assert_eq!(stats.object_count, 320, "20 MiB of 64 KiB objects");
    assert!(stats.objects_copied < 256, "an incremental copy copies only changed objects: {stats:?}");
    if !object_map {
        assert!(stats.bytes_read > stats.bytes_written, "the comparison reads both snapshots: {stats:?}");
    }
    local.finish_snapshot_object_map(l2).await.expect("snap2 object map");

    for spec in ["@snap1", "", "@snap2"] {
        let want = a.export_sha256(&format!("{src}{}", if spec.is_empty() { "@snap2" } else { spec }));
        assert_eq!(want, b.export_sha256(&format!("{dst}{spec}")), "content of {dst}{spec}");
    }
    assert_eq!(info(&b, &dst)["size"].as_u64(), Some(20 << 20));
    for n in 100..110 {
        assert!(!object_exists(&b, &dst_prefix, n), "discarded object {n} still on site-b");
    }
    assert!(object_exists(&b, &dst_prefix, 300));
    // Holes inside an object stay holes: the same used extents on both sites.
    let diff = |s: &lab::Site, spec: &str| s.rbd(&["diff", "--whole-object", spec]);
    let (da, db) = (diff(&a, &format!("{src}@snap1")), diff(&b, &format!("{dst}@snap1")));
    assert!(db.lines().count() < da.lines().count(), "site-b should lack the all-zero object:\n{da}\n{db}");
    // Our object maps agree with the objects (check flags them invalid otherwise).
    for spec in
        [format!("{dst}@snap1"), format!("{dst}@snap2"), dst.clone()].into_iter().filter(|_| object_map)
    {
        b.rbd(&["object-map", "check", "--no-progress", &spec]);
        let flags = info(&b, &spec)["flags"].clone();
        assert_eq!(flags, serde_json::json!([]), "object map of {spec} after check: {flags}");
    }
}
