//! rados-ffi's librbd image wrappers against the project's Ceph lab (`tests/lab/lab.sh up`).
//!
//! Every result is checked against what the stock `rbd` CLI wrote or reports. A missing lab
//! fails these tests with instructions: they never skip.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::path::PathBuf;

use rados_ffi::rbd::{DiffExtent, Image};
use rados_ffi::{IoCtx, Rados};
use rbd_types::{MirrorImageMode, MirrorImageState, MirrorSnapshotState, SnapshotNamespace, CEPH_NOSNAP};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

/// Removes the test image (and its snapshots and mirroring) even when the test fails.
struct Cleanup {
    site: lab::Site,
    spec: String,
    files: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let spec = self.spec.as_str();
        let _ = self.site.rbd_ok(&["mirror", "image", "disable", "--force", spec]);
        // Images we opened close on the blocking pool; retry while their watches linger.
        for _ in 0..30 {
            let _ = self.site.rbd_ok(&["snap", "purge", "--no-progress", spec]);
            if self.site.rbd_ok(&["rm", "--no-progress", spec]) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        eprintln!("warning: could not remove test image {spec}");
    }
}

/// 64 MiB: a pattern in the first MiB and at 32 MiB, zeros elsewhere.
fn test_data() -> Vec<u8> {
    let mut data = vec![0u8; SIZE as usize];
    let mut x: u32 = 0x1234_5678;
    for range in [0..MIB as usize, 32 * MIB as usize..33 * MIB as usize] {
        for b in &mut data[range] {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 24) as u8;
        }
    }
    data
}

async fn open_pool(site: &lab::Site) -> IoCtx {
    let rados = Rados::connect(&site.admin_config()).await.expect("connecting to site-a");
    rados.ioctx(lab::POOL, "").await.expect("opening pool mirror")
}

fn covers(extents: &[DiffExtent], start: u64, end: u64) -> bool {
    let mut pos = start;
    let mut sorted = extents.to_vec();
    sorted.sort_by_key(|e| e.offset);
    for e in sorted.iter().filter(|e| e.exists) {
        if e.offset <= pos && e.offset + e.len > pos {
            pos = e.offset + e.len;
        }
    }
    pos >= end
}

#[tokio::test(flavor = "multi_thread")]
async fn image_read_snapshots_diff_and_mirroring_match_the_rbd_cli() {
    let site = lab::site("site-a");
    let name = lab::unique("ffi-image");
    let spec = format!("{}/{name}", lab::POOL);
    let dir = std::env::temp_dir();
    let src = dir.join(format!("{name}.src"));
    let exported = dir.join(format!("{name}.export"));
    let _cleanup =
        Cleanup { site: site.clone(), spec: spec.clone(), files: vec![src.clone(), exported.clone()] };

    // An image written by the CLI.
    let data = test_data();
    std::fs::write(&src, &data).expect("writing the source file");
    site.rbd(&["import", "--no-progress", src.to_str().unwrap(), &spec]);
    let io = open_pool(&site).await;

    // Identity and geometry, as `rbd info` reports them.
    let info_json = site.rbd_json(&["info", &spec]);
    let image = Image::open(&io, &name, None).await.expect("opening the image read-only");
    let st = image.stat().await.expect("stat");
    println!("{image:?}: {st:?}");
    assert_eq!(st.size, SIZE);
    assert_eq!(st.order as i64, info_json["order"].as_i64().unwrap());
    assert_eq!(st.obj_size, 1u64 << st.order);
    assert_eq!(st.num_objs, SIZE.div_ceil(st.obj_size));
    assert_eq!(st.block_name_prefix, info_json["block_name_prefix"].as_str().unwrap());
    assert_eq!(st.parent_pool, None);
    let id = image.id().await.expect("id");
    assert_eq!(id, info_json["id"].as_str().unwrap());
    assert_eq!(st.block_name_prefix, format!("rbd_data.{id}"));
    assert_eq!(image.name().await.expect("name"), name);
    assert_eq!(image.data_pool_id().await.expect("data pool"), io.pool_id());
    let (unit, count) = image.stripe().await.expect("stripe");
    assert_eq!((unit, count), (st.obj_size, 1));
    let features = image.features().await.expect("features");
    let feature_names: Vec<&str> =
        info_json["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(features & 1 != 0, feature_names.contains(&"layering"));
    assert_eq!(features & 4 != 0, feature_names.contains(&"exclusive-lock"));
    let images = io.list_images().await.expect("list images");
    assert!(images.contains(&(id.clone(), name.clone())), "{name} missing from {images:?}");

    // Data: the whole image, and a read crossing the end.
    let all = image.read(0, SIZE as usize).await.expect("reading the whole image");
    assert!(all[..] == data[..], "image data differs from what rbd import wrote");
    let tail = image.read(SIZE - 100, 4096).await.expect("read across the end");
    assert_eq!(tail.len(), 100);
    let by_id = Image::open_by_id(&io, &id, None).await.expect("open by id");
    assert_eq!(by_id.read(32 * MIB, 4096).await.unwrap()[..], data[32 * MIB as usize..][..4096]);
    drop((image, by_id));

    // A user snapshot.
    site.rbd(&["snap", "create", "--no-progress", &format!("{spec}@s1")]);
    let image = Image::open(&io, &name, None).await.expect("reopening");
    let snaps = image.snapshots().await.expect("snapshots");
    println!("after snap create: {snaps:#?}");
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "s1");
    assert_eq!(snaps[0].namespace, SnapshotNamespace::User);
    assert_eq!(snaps[0].size, SIZE);
    assert!(snaps[0].timestamp.is_some());
    let info = image.mirror_image_info().await.expect("mirror info of an unmirrored image");
    assert_eq!(info.state, MirrorImageState::Disabled);
    drop(image);

    // Snapshot-based mirroring: librbd takes a primary mirror snapshot.
    site.rbd(&["mirror", "image", "enable", &spec, "snapshot"]);
    let info_json = site.rbd_json(&["info", &spec]);
    let image = Image::open(&io, &name, None).await.expect("reopening");
    let info = image.mirror_image_info().await.expect("mirror info");
    assert_eq!(info.state, MirrorImageState::Enabled);
    assert!(info.primary);
    assert_eq!(info.global_id, info_json["mirroring"]["global_id"].as_str().unwrap());
    assert_eq!(image.mirror_image_mode().await.expect("mirror mode"), MirrorImageMode::Snapshot);
    let status = image.mirror_image_global_status().await.expect("global status");
    println!("global status: {status:#?}");
    assert_eq!(status.name, name);
    assert_eq!(status.info, info);
    let snaps = image.snapshots().await.expect("snapshots");
    println!("after mirror enable: {snaps:#?}");
    let cli_snaps = site.rbd_json(&["snap", "ls", "--all", &spec]);
    let cli_ids: Vec<u64> = cli_snaps.as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect();
    let ids: Vec<u64> = snaps.iter().map(|s| s.id).collect();
    assert_eq!(ids, cli_ids, "snapshot ids differ from `rbd snap ls --all`");
    let mirror_snaps: Vec<_> = snaps
        .iter()
        .filter_map(|s| match &s.namespace {
            SnapshotNamespace::Mirror(m) => Some((s, m)),
            _ => None,
        })
        .collect();
    assert_eq!(mirror_snaps.len(), 1, "{snaps:?}");
    let (_, m) = mirror_snaps[0];
    assert_eq!(m.state, MirrorSnapshotState::Primary);
    assert!(m.complete);
    assert_eq!(m.primary_snap_id, CEPH_NOSNAP);
    assert!(m.primary_mirror_uuid.is_empty());
    drop(image);

    // Operator action: a new mirror snapshot, listed to the same peers as `rbd` records.
    let snap_id = io.mirror_image_create_snapshot(&name).await.expect("mirror snapshot");
    let image = Image::open(&io, &name, None).await.expect("reopening");
    let snaps = image.snapshots().await.expect("snapshots");
    let mirror = snaps.iter().find(|s| s.id == snap_id).expect("the new mirror snapshot is listed");
    let SnapshotNamespace::Mirror(m) = &mirror.namespace else { panic!("not a mirror snapshot: {mirror:?}") };
    assert_eq!(m.state, MirrorSnapshotState::Primary);
    let cli = cli_snaps_by_id(&site, &spec, snap_id);
    let cli_peers: std::collections::BTreeSet<String> = cli["namespace"]["mirror_peer_uuids"]
        .as_array()
        .map(|a| a.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(m.mirror_peer_uuids, cli_peers);
    drop(image);

    // A write after the snapshots: diffs show it, the mirror snapshot keeps the old data.
    site.bench_one_at_a_time(&spec, "seq", "4096", "65536");
    site.rbd(&["export", "--no-progress", &spec, exported.to_str().unwrap()]);
    let now = std::fs::read(&exported).expect("reading the export");
    let image = Image::open(&io, &name, None).await.expect("reopening");
    let head = image.read(0, SIZE as usize).await.expect("reading the whole image");
    assert!(head[..] == now[..], "image data differs from rbd export");
    let diff = image.diff_iterate(Some("s1"), 0, SIZE, false, false).await.expect("diff from s1");
    println!("diff since s1: {diff:?}");
    assert!(covers(&diff, 0, 65536), "diff {diff:?} misses the written extent");
    assert!(diff.iter().all(|e| e.offset < st.obj_size), "diff {diff:?} reaches past the written object");
    let whole = image.diff_iterate(Some("s1"), 0, SIZE, false, true).await.expect("whole-object diff");
    assert!(covers(&whole, 0, 65536), "whole-object diff {whole:?}");
    let full = image.diff_iterate(None, 0, SIZE, false, false).await.expect("diff from creation");
    assert!(covers(&full, 0, MIB) && covers(&full, 32 * MIB, 33 * MIB), "full diff {full:?}");
    let at_snap = Image::open_by_id_at_snap_id(&io, &id, snap_id).await.expect("opening the mirror snapshot");
    let old = at_snap.read(0, 65536).await.expect("reading the mirror snapshot");
    assert!(old[..] == data[..65536], "mirror snapshot data changed");
    drop((image, at_snap));

    // Demote and promote through the operator helpers.
    io.mirror_image_demote(&name).await.expect("demote");
    let image = Image::open(&io, &name, None).await.expect("reopening");
    assert!(!image.mirror_image_info().await.expect("mirror info").primary);
    drop(image);
    io.mirror_image_promote(&name, false).await.expect("promote");
    let image = Image::open(&io, &name, None).await.expect("reopening");
    assert!(image.mirror_image_info().await.expect("mirror info").primary);
    drop(image);
    io.mirror_image_disable(&name, false).await.expect("disable mirroring");
    let image = Image::open(&io, &name, None).await.expect("reopening");
    assert_eq!(image.mirror_image_info().await.expect("mirror info").state, MirrorImageState::Disabled);
    let missing =
        Image::open(&io, &format!("{name}-missing"), None).await.expect_err("opening a missing image");
    assert!(missing.is_not_found(), "{missing}");
}

fn cli_snaps_by_id(site: &lab::Site, spec: &str, id: u64) -> serde_json::Value {
    let all = site.rbd_json(&["snap", "ls", "--all", spec]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_u64() == Some(id))
        .cloned()
        .unwrap_or_else(|| panic!("snapshot {id} missing from `rbd snap ls --all`: {all}"))
}
