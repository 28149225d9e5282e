//! Drives one full `copy_image` between the two lab sites, for `benches/image_copy.sh`
//! (which creates the images and checks the result with the stock CLIs).
//!
//! usage: copy_bench <site-a conf> <site-b conf> <pool> <remote image id> <local image id>
//!        <remote snap id | head> <concurrency>
//! Prints one line: `objects=… copied=… bytes_written=… secs=… cpu_s=… maxrss_kib=…`.

use std::path::PathBuf;
use std::time::Instant;

use image_replayer::LocalImage;
use image_replayer::{copy_image, CopyRange, LocalSnapContext};
use rados_ffi::{ClusterConfig, Rados};
use rbd_types::cls_rbd::CEPH_NOSNAP;
use tokio_util::sync::CancellationToken;

fn cluster(conf: &str) -> ClusterConfig {
    let path = PathBuf::from(conf);
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("ceph").to_owned();
    ClusterConfig::local(&name, Some(path), "admin")
}

fn usage() -> ! {
    eprintln!(
        "usage: copy_bench <site-a conf> <site-b conf> <pool> <remote image id> <local image id> \
         <remote snap id|head> <concurrency>"
    );
    std::process::exit(2)
}

fn main() {
    // The daemon's allocator (jemalloc, linked in by rados-ffi) with its settings.
    let tuned = rados_ffi::process::allocator_settings().is_some();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [conf_a, conf_b, pool, remote_id, local_id, snap, concurrency] = args.as_slice() else { usage() };
    let end = if snap == "head" { CEPH_NOSNAP } else { snap.parse().unwrap_or_else(|_| usage()) };
    let concurrency: usize = concurrency.parse().unwrap_or_else(|_| usage());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let remote = Rados::connect(&cluster(conf_a)).await.unwrap_or_else(|e| panic!("site-a: {e}"));
        let remote_io = remote.ioctx(pool, "").await.unwrap_or_else(|e| panic!("site-a pool: {e}"));
        let local_rados = Rados::connect(&cluster(conf_b)).await.unwrap_or_else(|e| panic!("site-b: {e}"));
        let local = LocalImage::open(&local_rados, pool, "", local_id)
            .await
            .unwrap_or_else(|e| panic!("local image: {e}"));
        let (seq, snaps) = local.snap_context().await.unwrap_or_else(|e| panic!("snap context: {e}"));
        let range = CopyRange { remote_snap_id_start: None, remote_snap_id_end: end, start_object: 0 };
        let cpu0 = cpu_secs();
        let t0 = Instant::now();
        let stats = copy_image(
            &remote_io,
            remote_id,
            &local,
            &range,
            &LocalSnapContext { seq, snaps },
            concurrency,
            &image_replayer::ImageBandwidth::unlimited(),
            &mut |_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("copy: {e}"));
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "objects={} copied={} bytes_written={} secs={secs:.3} cpu_s={:.3} maxrss_kib={} rss_anon_kib={} \
             rss_file_kib={} tuned={tuned}",
            stats.object_count,
            stats.objects_copied,
            stats.bytes_written,
            cpu_secs() - cpu0,
            status_kib("VmHWM:"),
            status_kib("RssAnon:"),
            status_kib("RssFile:")
        );
    });
}

/// user + system CPU of the process so far, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

/// A `kB` field of /proc/self/status.
fn status_kib(field: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map_or_else(|| "?".to_owned(), |v| v.trim().trim_end_matches(" kB").to_owned())
}
