//! rados-ffi's image administration (`IoCtx::create_image`, `ImageRw`, `remove_image`) and
//! mgr service-map registration against the project's Ceph lab (`tests/lab/lab.sh up`).
//!
//! Every result is checked against what the stock `rbd` / `ceph` CLI reports. A missing lab
//! fails these tests with instructions: they never skip.

#[path = "../../../tests/support/lab.rs"]
mod lab;

use std::time::{Duration, Instant};

use rados_ffi::rbd::{features, Image, ImageCreateOptions, ImageRw};
use rados_ffi::{IoCtx, Rados};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Removes the test image (and its snapshots) even when the test fails.
struct Cleanup {
    site: lab::Site,
    spec: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let spec = self.spec.as_str();
        if !self.site.rbd_ok(&["info", spec]) {
            return;
        }
        // Images we opened close on the blocking pool; retry while their watches linger.
        for _ in 0..30 {
            let _ = self.site.rbd_ok(&["snap", "unprotect", &format!("{spec}@renamed")]);
            let _ = self.site.rbd_ok(&["snap", "purge", "--no-progress", spec]);
            if self.site.rbd_ok(&["rm", "--no-progress", spec]) {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        eprintln!("warning: could not remove test image {spec}");
    }
}

async fn connect(site: &lab::Site) -> Rados {
    Rados::connect(&site.admin_config()).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", site.name))
}

fn feature_names(info: &Value) -> Vec<String> {
    info["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()).collect()
}

fn snap_names(site: &lab::Site, spec: &str) -> Vec<(String, bool)> {
    site.rbd_json(&["snap", "ls", spec])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["protected"].as_str() == Some("true")))
        .collect()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// `rbd_remove` while our own handles are still closing (on the blocking pool) meets EBUSY
/// from lingering watches: retry for a while.
async fn remove_with_retry(io: &IoCtx, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match io.remove_image(name).await {
            Ok(()) => return,
            Err(e) if e.errno() == Some(libc::EBUSY) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("removing {name}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_write_snapshot_resize_metadata_and_remove_match_the_rbd_cli() {
    let site = lab::site("site-a");
    let name = lab::unique("ffi-admin");
    let spec = format!("{}/{name}", lab::POOL);
    let _cleanup = Cleanup { site: site.clone(), spec: spec.clone() };
    let rados = connect(&site).await;
    let io = rados.ioctx(lab::POOL, "").await.expect("opening pool mirror");

    // Create with options.
    let opts = ImageCreateOptions {
        order: Some(22),
        features: Some(
            features::LAYERING | features::STRIPINGV2 | features::EXCLUSIVE_LOCK | features::JOURNALING,
        ),
        stripe_unit: Some(MIB),
        stripe_count: Some(2),
        journal_order: Some(23),
        journal_splay_width: Some(2),
        ..Default::default()
    };
    io.create_image(&name, 32 * MIB, &opts).await.expect("creating the image");
    let err = io.create_image(&name, 32 * MIB, &opts).await.expect_err("creating it twice");
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");

    let info = site.rbd_json(&["info", &spec]);
    println!("rbd info: {info}");
    assert_eq!(info["order"].as_u64(), Some(22));
    assert_eq!(info["size"].as_u64(), Some(32 * MIB));
    assert_eq!(info["stripe_unit"].as_u64(), Some(MIB));
    assert_eq!(info["stripe_count"].as_u64(), Some(2));
    let mut names = feature_names(&info);
    names.sort();
    assert_eq!(names, ["exclusive-lock", "journaling", "layering", "striping"]);
    let journal = site.rbd_json(&["journal", "info", "--pool", lab::POOL, "--image", &name]);
    println!("rbd journal info: {journal}");
    assert_eq!(journal["splay_width"].as_u64(), Some(2));
    assert_eq!(journal["order"].as_u64(), Some(23));

    // Id and name lookups.
    let id = io.image_id(&name).await.expect("image id");
    assert_eq!(id, info["id"].as_str().unwrap());
    assert_eq!(io.image_name(&id).await.expect("image name"), name);
    assert!(io.image_id("no-such-image-ffi-admin").await.unwrap_err().is_not_found());

    // Data: write a pattern at an unaligned offset across a stripe boundary, flush, read back.
    let rw = ImageRw::open(&io, &name).await.expect("opening read-write");
    println!("{rw:?}");
    let want = features::LAYERING | features::STRIPINGV2 | features::EXCLUSIVE_LOCK | features::JOURNALING;
    assert_eq!(rw.features().await.expect("features"), want);
    let data = pattern(3 * MIB as usize + 123, 0xfeed);
    let offset = 5 * MIB - 4096 + 17;
    rw.write(offset, &data).await.expect("writing");
    rw.flush().await.expect("flushing");
    let ro = Image::open(&io, &name, None).await.expect("opening read-only");
    let back = ro.read(offset, data.len()).await.expect("reading back");
    assert!(back[..] == data[..], "data read back differs from what was written");
    drop(ro);
    // Discard a range aligned to `rbd_discard_granularity_bytes` (librbd skips partial ones),
    // then read through a fresh handle (a read-only handle's cache may still hold old data).
    rw.discard(6 * MIB, MIB).await.expect("discarding");
    rw.flush().await.expect("flushing");
    let ro = Image::open(&io, &name, None).await.expect("reopening read-only");
    let back = ro.read(6 * MIB, MIB as usize).await.expect("reading the discarded range");
    assert!(back.iter().all(|&b| b == 0), "discarded range does not read as zeros");
    let before = ro.read(offset, (6 * MIB - offset) as usize).await.expect("reading before it");
    assert!(before[..] == data[..before.len()], "data before the discarded range changed");
    drop(ro);

    // Snapshots.
    rw.snap_create("s1").await.expect("snap create");
    assert_eq!(snap_names(&site, &spec), [("s1".to_owned(), false)]);
    rw.snap_protect("s1").await.expect("snap protect");
    assert_eq!(snap_names(&site, &spec), [("s1".to_owned(), true)]);
    let err = rw.snap_remove("s1").await.expect_err("removing a protected snapshot");
    assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
    rw.snap_rename("s1", "renamed").await.expect("snap rename");
    assert_eq!(snap_names(&site, &spec), [("renamed".to_owned(), true)]);
    rw.snap_unprotect("renamed").await.expect("snap unprotect");
    assert_eq!(snap_names(&site, &spec), [("renamed".to_owned(), false)]);
    rw.snap_remove("renamed").await.expect("snap remove");
    assert!(snap_names(&site, &spec).is_empty());
    assert!(rw.snap_remove("renamed").await.unwrap_err().is_not_found());

    // Resize.
    rw.resize(48 * MIB).await.expect("resize");
    assert_eq!(site.rbd_json(&["info", &spec])["size"].as_u64(), Some(48 * MIB));

    // Metadata.
    rw.metadata_set("conf_rbd_cache", "false").await.expect("metadata set");
    let long = "x".repeat(1000);
    rw.metadata_set("ffi.long", &long).await.expect("metadata set (long)");
    let meta = site.rbd_json(&["image-meta", "list", &spec]);
    println!("image-meta: {meta}");
    assert_eq!(meta["conf_rbd_cache"].as_str(), Some("false"));
    assert_eq!(meta["ffi.long"].as_str(), Some(long.as_str()));
    assert_eq!(rw.metadata_get("conf_rbd_cache").await.unwrap().as_deref(), Some("false"));
    assert_eq!(rw.metadata_get("ffi.long").await.unwrap(), Some(long));
    assert_eq!(rw.metadata_get("no-such-key").await.unwrap(), None);
    rw.metadata_remove("ffi.long").await.expect("metadata remove");
    rw.metadata_remove("conf_rbd_cache").await.expect("metadata remove");
    // With no metadata left, `rbd image-meta list --format json` prints nothing at all.
    let meta = site.rbd(&["image-meta", "list", &spec, "--format", "json"]);
    assert!(matches!(meta.trim(), "" | "{}"), "metadata left: {meta}");
    assert_eq!(rw.metadata_get("ffi.long").await.unwrap(), None);

    // Features: disable journaling, then enable it again.
    rw.update_features(features::JOURNALING, false).await.expect("disabling journaling");
    assert!(!feature_names(&site.rbd_json(&["info", &spec])).contains(&"journaling".to_owned()));
    assert_eq!(rw.features().await.unwrap() & features::JOURNALING, 0);
    rw.update_features(features::JOURNALING, true).await.expect("enabling journaling");
    assert!(feature_names(&site.rbd_json(&["info", &spec])).contains(&"journaling".to_owned()));
    drop(rw);

    // Remove.
    remove_with_retry(&io, &name).await;
    assert!(!site.rbd_ok(&["info", &spec]), "rbd info still finds {spec} after remove_image");
    assert!(io.remove_image(&name).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn service_registration_shows_in_the_mgr_service_map() {
    const SERVICE: &str = "rbd-mirror-rs-test";
    let site = lab::site("site-a");
    let rados = connect(&site).await;
    let gid = rados.instance_id().to_string();
    let pool_id = rados.pool_lookup(lab::POOL).await.expect("pool id");

    rados
        .service_register(SERVICE, &gid, &[("id", "admin"), ("instance_id", &gid)])
        .await
        .expect("registering the service daemon");
    let err = rados.service_register(SERVICE, &gid, &[]).await.expect_err("registering twice");
    println!("second registration: {err}");
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
    let status = serde_json::json!({
        pool_id.to_string(): {
            "name": lab::POOL,
            "callouts": {},
            "instance_id": gid,
            "leader": true,
            "image_local_count": 0,
            "image_remote_count": 0,
        }
    })
    .to_string();
    rados.service_update_status(&[("json", &status)]).await.expect("updating the status");

    // The mgr lists the daemon after its first report (mgr_stats_period).
    let deadline = Instant::now() + Duration::from_secs(30);
    let daemon = loop {
        let dump: Value = serde_json::from_str(&site.ceph(&["service", "dump", "-f", "json"])).unwrap();
        if let Some(d) = dump["services"][SERVICE]["daemons"].get(&gid) {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "{SERVICE}.{gid} not in `ceph service dump` after 30 s: {dump}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Re-send the status in case the first report raced the registration.
        rados.service_update_status(&[("json", &status)]).await.expect("updating the status");
    };
    println!("service dump entry: {daemon}");
    assert_eq!(daemon["metadata"]["instance_id"].as_str(), Some(gid.as_str()));
    assert_eq!(daemon["metadata"]["id"].as_str(), Some("admin"));
    assert_eq!(daemon["gid"].as_u64(), Some(rados.instance_id()));

    // The status is reported by `ceph service status`.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st: Value = serde_json::from_str(&site.ceph(&["service", "status", "-f", "json"])).unwrap();
        let entry = &st[SERVICE][&gid];
        if let Some(json) = entry["status"]["json"].as_str() {
            let got: Value = serde_json::from_str(json).expect("status json is JSON");
            assert_eq!(got[pool_id.to_string()]["leader"], Value::Bool(true));
            assert_eq!(got[pool_id.to_string()]["instance_id"].as_str(), Some(gid.as_str()));
            break;
        }
        assert!(Instant::now() < deadline, "no status json for {SERVICE}.{gid} after 30 s: {st}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The registration ends with the connection; the mgr prunes it after its beacon grace.
    drop(rados);
}
