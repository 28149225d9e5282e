//! Snapshot-mode mirroring end to end on the lab: `rbd-mirror-rs` at site-b (started as
//! `tests/lab/lab.sh mirror-start site-b` starts the stock daemon) replicates images of
//! site-a mirrored in snapshot mode, and the stock `rbd` CLI on both sites agrees.

#[path = "../../../tests/support/lab.rs"]
mod lab;
#[path = "support/mirror.rs"]
mod mirror;

use std::time::Duration;

use mirror::{
    daemon_log, daemon_log_since, enable_snapshot_mirroring as enable, image_id, image_name, image_status,
    kill_9_daemon, log_field, mirror_snapshot, resync, sites, snapshots, wait_image_status,
    wait_new_image_id, wait_synced, Daemon, Images, Stock,
};
use serde_json::Value;

/// `rbd diff --whole-object` of `spec`: the objects that exist (holes are absent).
fn objects(site: &lab::Site, spec: &str) -> Value {
    site.rbd_json(&["diff", "--whole-object", spec])
}

fn assert_same(a: &lab::Site, b: &lab::Site, spec: &str) {
    let (sa, sb) = (a.export_sha256(spec), b.export_sha256(spec));
    assert_eq!(sa, sb, "rbd export {spec} | sha256sum differs between the sites");
    assert_eq!(objects(a, spec), objects(b, spec), "{spec}: written objects differ (holes not kept?)");
    println!("{spec}: sha256 {sa} on both sites, same objects");
}

/// Creates an image on site-a, removed at the end with the guard (mirrored once [`enable`]d).
fn new_image(a: &lab::Site, prefix: &str, size: &str) -> (String, Images) {
    let spec = format!("{}/{}", lab::POOL, lab::unique(prefix));
    a.rbd(&["create", "--size", size, &spec]);
    let images = Images(vec![spec.clone()]);
    (spec, images)
}

/// Enables mirroring of `spec`, starts our daemon at site-b and waits for the first sync.
fn enable_and_sync(a: &lab::Site, b: &lab::Site, spec: &str, timeout: Duration) -> (u64, Daemon) {
    let first = enable(a, spec);
    let daemon = Daemon::start();
    wait_synced(b, spec, first, timeout);
    (first, daemon)
}

/// The switch of docs/operations.md in snapshot mode, both ways: the STOCK daemon at site-b
/// syncs an image; ours, started in its place, syncs the next mirror snapshot incrementally
/// from the stock daemon's non-primary snapshot; the stock daemon, started again, syncs the
/// one after from ours (its debug log: `remote_snap_id_start` is our last synced snapshot,
/// not 0). The site-b image is never recreated and equals site-a's after each switch.
#[test]
fn switching_from_the_stock_daemon_to_ours_and_back_needs_no_resync() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "switch", "256M");
    a.bench(&spec, "rand", "4K", "4M");
    let first = enable(&a, &spec);
    {
        let _stock = Stock::start("site-b");
        wait_synced(&b, &spec, first, Duration::from_secs(180));
    }
    let local_id = image_id(&b, &spec);
    let global_id =
        a.rbd_json(&["info", &spec])["mirroring"]["global_id"].as_str().unwrap_or_default().to_owned();

    a.bench(&spec, "rand", "4K", "2M");
    let second = mirror_snapshot(&a, &spec);
    let log_before = daemon_log().len();
    {
        let _ours = Daemon::start();
        wait_synced(&b, &spec, second, Duration::from_secs(180));
    }
    assert_same(&a, &b, &spec);
    let ours = daemon_log_since(log_before);
    let syncs: Vec<&str> =
        ours.lines().filter(|l| l.contains(&global_id) && l.contains("syncing snapshot")).collect();
    assert!(!syncs.is_empty(), "our log shows no sync of {spec}: {ours}");
    for line in &syncs {
        assert!(
            line.contains(&format!("remote_snap_id_start=Some({first})")),
            "ours synced {spec} from the stock daemon's snapshot {first}, not from zero: {line}"
        );
    }

    a.bench(&spec, "rand", "4K", "2M");
    let third = mirror_snapshot(&a, &spec);
    let log_before = daemon_log().len();
    {
        let _stock = Stock::start_with("site-b", &["--debug-rbd-mirror", "10"]);
        wait_synced(&b, &spec, third, Duration::from_secs(180));
    }
    assert_same(&a, &b, &spec);
    let stock = daemon_log_since(log_before);
    let found = format!("remote_snap_id_end={third},");
    let lines: Vec<&str> =
        stock.lines().filter(|l| l.contains("found remote mirror snapshot") && l.contains(&found)).collect();
    assert!(!lines.is_empty(), "the stock daemon's debug log shows no sync of snapshot {third}: {stock}");
    for line in &lines {
        assert!(
            line.contains(&format!("remote_snap_id_start={second},")),
            "the stock daemon synced from our snapshot {second}, not from zero: {line}"
        );
    }
    assert_eq!(image_id(&b, &spec), local_id, "the site-b image was recreated");
}

/// A 1 GiB image through phases of random and sequential writes and discards, a user
/// snapshot and a mirror snapshot after each: every user snapshot and HEAD has the same
/// content on both sites, and the same objects (holes stay holes).
#[test]
fn snapshot_image_replicates_phase_by_phase() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snap", "1G");
    a.bench(&spec, "rand", "4K", "4M");
    a.rbd(&["snap", "create", &format!("{spec}@p0")]);
    let (_, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(300));
    assert_same(&a, &b, &format!("{spec}@p0"));
    assert_same(&a, &b, &spec);
    let info = b.rbd_json(&["info", &spec]);
    assert_eq!(info["mirroring"]["primary"], false);
    assert!(info["features"].to_string().contains("non-primary"), "{info}");

    let phases: [(&str, &dyn Fn()); 3] = [
        ("random 4K", &|| a.bench(&spec, "rand", "4K", "8M")),
        ("sequential 4M", &|| a.bench(&spec, "seq", "4M", "128M")),
        ("discard + random 64K", &|| {
            a.rbdio(&spec, &["discard", "0", &(32u64 << 20).to_string()]);
            a.bench(&spec, "rand", "64K", "8M");
        }),
    ];
    for (i, (what, phase)) in phases.iter().enumerate() {
        phase();
        let user = format!("{spec}@p{}", i + 1);
        a.rbd(&["snap", "create", &user]);
        let id = mirror_snapshot(&a, &spec);
        println!("phase {}: {what}, mirror snapshot {id}", i + 1);
        wait_synced(&b, &spec, id, Duration::from_secs(300));
        assert_same(&a, &b, &user);
        assert_same(&a, &b, &spec);
    }
    // Earlier user snapshots kept their content.
    assert_same(&a, &b, &format!("{spec}@p1"));

    // User snapshot changes on the primary follow with the next mirror snapshot: removal,
    // rename, protection.
    a.rbd(&["snap", "rm", &format!("{spec}@p0")]);
    a.rbd(&["snap", "rename", &format!("{spec}@p2"), &format!("{spec}@p2-renamed")]);
    a.rbd(&["snap", "protect", &format!("{spec}@p1")]);
    a.rbd(&["image-meta", "set", &spec, "rbd-mirror-rs.test", "value"]);
    a.bench(&spec, "rand", "4K", "1M");
    let id = mirror_snapshot(&a, &spec);
    wait_synced(&b, &spec, id, Duration::from_secs(300));
    assert_same(&a, &b, &spec);
    assert_same(&a, &b, &format!("{spec}@p2-renamed"));
    let names = |s: &lab::Site| -> Vec<(String, String)> {
        s.rbd_json(&["snap", "ls", &spec])
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|s| (s["name"].as_str().unwrap_or_default().to_owned(), s["protected"].to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (na, nb) = (names(&a), names(&b));
    println!("user snapshots: {nb:?}");
    assert_eq!(na, nb, "user snapshots (name, protected)");
    let meta = b.rbd(&["image-meta", "get", &spec, "rbd-mirror-rs.test"]);
    assert_eq!(meta.trim(), "value", "image-meta");
    a.rbd(&["snap", "unprotect", &format!("{spec}@p1")]);
    println!("site-a du:\n{}site-b du:\n{}", a.rbd(&["du", &spec]), b.rbd(&["du", &spec]));
    // Old non-primary snapshots are pruned: one mirror snapshot remains on site-b.
    let mirror = snapshots(&b, &spec).iter().filter(|s| s["namespace"]["type"] == "mirror").count();
    assert_eq!(mirror, 1, "{:?}", snapshots(&b, &spec));

    // As an operator's monitoring sees it (the stock perf counters' names).
    let label = format!("image=\"{}\"", image_name(&spec));
    let synced = b.metric("ceph_rbd_mirror_snapshot_image_snapshots", &label).unwrap_or(0.0);
    let bytes = b.metric("ceph_rbd_mirror_snapshot_image_replay_bytes", &label).unwrap_or(0.0);
    println!("metrics: {synced} snapshots synced, {bytes} bytes");
    assert_eq!(synced, 5.0, "the first sync, three phases and the snapshot changes");
    assert!(bytes > 0.0);
    let last_bytes = b.metric("rbd_mirror_rs_image_last_sync_bytes", &label).expect("last sync bytes");
    let last_sync =
        b.metric("rbd_mirror_rs_image_last_sync_timestamp_seconds", &label).expect("last sync time");
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    println!("last sync: {last_bytes} bytes, {:.0} s ago", now - last_sync);
    assert!(last_bytes <= bytes, "the last sync is one of them");
    assert!((0.0..600.0).contains(&(now - last_sync)), "within this test");

    let (state, description) = image_status(&b, &spec).expect("status");
    println!("site-b: {state}, {description}");
    assert_eq!(state, "up+replaying");
    let json: Value =
        serde_json::from_str(description.strip_prefix("replaying, ").expect("replaying, {json}"))
            .expect("json");
    assert_eq!(json["replay_state"], "idle");
    assert_eq!(json["local_snapshot_timestamp"], json["remote_snapshot_timestamp"]);
    assert!(json["last_snapshot_bytes"].as_u64().is_some(), "{json}");
}

/// Feature changes on the primary follow with the next mirror snapshot (issue 17, stock's
/// image state): object-map and fast-diff disabled, then enabled again (`rbd info` at site-b
/// shows the primary's features, plus `non-primary`, each time); the content stays equal,
/// synced without the object maps in between.
#[test]
fn feature_changes_on_the_primary_follow_with_the_next_mirror_snapshot() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "features", "32M");
    a.bench(&spec, "rand", "4K", "1M");
    let (_, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(120));
    let features = |s: &lab::Site| -> Vec<String> {
        let info = s.rbd_json(&["info", &spec]);
        let mut f: Vec<String> = info["features"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str())
                    .filter(|x| *x != "non-primary")
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        f.sort();
        f
    };
    assert_eq!(features(&a), features(&b), "features after the first sync");
    for (verb, what) in [("disable", ["fast-diff", "object-map"]), ("enable", ["object-map", "fast-diff"])] {
        a.rbd(&["feature", verb, &spec, what[0], what[1]]);
        a.bench(&spec, "rand", "4K", "256K");
        let id = mirror_snapshot(&a, &spec);
        wait_synced(&b, &spec, id, Duration::from_secs(120));
        let (fa, fb) = (features(&a), features(&b));
        println!("{verb}d {what:?}: site-a {fa:?}, site-b {fb:?}");
        assert_eq!(fa, fb, "site-b follows the primary's {verb} of {what:?}");
        assert_eq!(fb.contains(&"object-map".to_owned()), verb == "enable", "{fb:?}");
        assert_same(&a, &b, &spec);
    }
}

/// `kill -9` during the full sync of a 1 GiB image: the restarted daemon resumes from the
/// progress recorded in the non-primary snapshot (it copies less than the image), and the
/// content is equal.
#[test]
fn kill_9_during_a_full_sync_resumes() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapkill", "1G");
    a.bench(&spec, "seq", "4M", "1G");
    let first = enable(&a, &spec);

    let _daemon = Daemon::start();
    let percent = lab::wait_for("the full sync under way", Duration::from_secs(120), || {
        let (state, description) = image_status(&b, &spec)?;
        let json: Value = description
            .strip_prefix("replaying, ")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        match json["syncing_percent"].as_u64() {
            Some(p) if p >= 10 => Ok(p),
            _ => Err(format!("{state}: {description}")),
        }
    });
    let pid = kill_9_daemon();
    println!("killed {pid} at {percent}%");
    let log_before = daemon_log().len();

    let _daemon = Daemon::start();
    wait_synced(&b, &spec, first, Duration::from_secs(300));
    let log = daemon_log_since(log_before);
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming the interrupted snapshot sync"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    println!("{resumed}");
    let start_object: u64 = log_field(resumed, "start_object");
    assert!(start_object > 0, "{resumed}");
    let done = log.lines().find(|l| l.contains("image copy done")).expect("copy done in the log");
    println!("{done}");
    let copied: u64 = log_field(done, "bytes_copied");
    assert!(copied < 1 << 30, "resumed copy read {copied} bytes, the whole image is 1 GiB");
    assert_same(&a, &b, &spec);
}

/// Failover to site-b and failback to site-a, the stock daemon running at site-a and ours
/// at site-b: each direction's data arrives, roles follow promote/demote.
#[test]
fn failover_and_failback_with_the_stock_daemon_at_site_a() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapfail", "128M");
    a.bench(&spec, "rand", "4K", "4M");
    let first = enable(&a, &spec);
    let _daemon = Daemon::start();
    let _stock = Stock::start("site-a");
    wait_synced(&b, &spec, first, Duration::from_secs(180));

    // Failover: demote site-a, our daemon syncs the demotion and stops; promote site-b.
    a.bench(&spec, "rand", "4K", "2M");
    a.rbd(&["mirror", "image", "demote", &spec]);
    wait_image_status(&b, &spec, "site-b sees the demotion", Duration::from_secs(120), |_, d| {
        d == "remote image demoted"
    });
    b.rbd(&["mirror", "image", "promote", &spec]);
    assert_eq!(b.rbd_json(&["info", &spec])["mirroring"]["primary"], true);
    assert_same(&a, &b, &spec);
    b.bench(&spec, "rand", "4K", "2M");
    let id = mirror_snapshot(&b, &spec);
    wait_synced(&a, &spec, id, Duration::from_secs(180));
    assert_same(&a, &b, &spec);
    wait_image_status(&b, &spec, "site-b: local image is primary", Duration::from_secs(60), |s, d| {
        s == "up+stopped" && d == "local image is primary"
    });

    // Failback: demote site-b, the stock daemon syncs it; promote site-a; ours follows.
    b.bench(&spec, "rand", "4K", "1M");
    b.rbd(&["mirror", "image", "demote", &spec]);
    wait_image_status(&a, &spec, "site-a sees the demotion", Duration::from_secs(120), |_, d| {
        d.contains("remote image demoted") || d.contains("demoted")
    });
    a.rbd(&["mirror", "image", "promote", &spec]);
    a.bench(&spec, "rand", "4K", "2M");
    let id = mirror_snapshot(&a, &spec);
    wait_synced(&b, &spec, id, Duration::from_secs(180));
    assert_same(&a, &b, &spec);
    assert_eq!(a.rbd_json(&["info", &spec])["mirroring"]["primary"], true);
    assert_eq!(b.rbd_json(&["info", &spec])["mirroring"]["primary"], false);
    wait_image_status(&b, &spec, "site-b replaying again", Duration::from_secs(60), |s, _| {
        s == "up+replaying"
    });
}

/// `rbd mirror image promote --force` on site-b while ours replays: the promotion completes
/// (our daemon lets go of the image when it sees the orphan snapshot) and the status says the
/// local image is primary.
#[test]
fn forced_promotion_on_site_b_stops_replay() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapforce", "64M");
    a.bench(&spec, "rand", "4K", "2M");
    let (_, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(180));
    b.rbd(&["mirror", "image", "promote", "--force", &spec]);
    assert_eq!(b.rbd_json(&["info", &spec])["mirroring"]["primary"], true);
    wait_image_status(&b, &spec, "site-b: local image is primary", Duration::from_secs(60), |s, d| {
        s == "up+stopped" && d == "local image is primary"
    });
    assert_same(&a, &b, &spec);
}

/// Split brain in snapshot mode: site-b force-promoted, written to, demoted, while site-a
/// takes a new mirror snapshot: `up+error` "split-brain", site-b's image untouched; `rbd
/// mirror image resync` recovers it.
#[test]
fn a_split_brain_is_reported_and_a_resync_recovers_it() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapsplit", "64M");
    a.bench(&spec, "rand", "4K", "1M");
    let (_, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(180));
    b.rbd(&["mirror", "image", "promote", "--force", &spec]);
    b.bench(&spec, "rand", "4K", "256K");
    b.rbd(&["mirror", "image", "demote", &spec]);
    a.bench(&spec, "rand", "4K", "256K");
    mirror_snapshot(&a, &spec);
    wait_image_status(&b, &spec, "site-b: split-brain", Duration::from_secs(120), |s, d| {
        s == "up+error" && d == "split-brain"
    });
    let held = b.export_sha256(&spec);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.export_sha256(&spec), held, "nothing written into a split brain");

    resync(&b, &spec);
    let newest = mirror_snapshot(&a, &spec);
    wait_synced(&b, &spec, newest, Duration::from_secs(180));
    assert_same(&a, &b, &spec);
}

/// `rbd mirror image resync` requested while no daemon runs: the next start recreates the
/// local image (a new id) and syncs the newest mirror snapshot fully.
#[test]
fn a_resync_requested_while_the_daemon_is_stopped_is_done_at_its_next_start() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapresyncstopped", "64M");
    a.bench(&spec, "rand", "4K", "1M");
    {
        let (_, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(180));
    }
    let old = image_id(&b, &spec);
    b.rbd(&["mirror", "image", "resync", &spec]);
    a.bench(&spec, "rand", "4K", "256K");
    let newest = mirror_snapshot(&a, &spec);
    let _daemon = Daemon::start();
    wait_new_image_id(&b, &spec, &old);
    wait_synced(&b, &spec, newest, Duration::from_secs(180));
    assert_same(&a, &b, &spec);
}

/// `rbd mirror image resync` on site-b: the local image is recreated (new id) and fully
/// synced again.
#[test]
fn resync_recreates_the_secondary() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapresync", "64M");
    a.bench(&spec, "rand", "4K", "4M");
    a.rbd(&["snap", "create", &format!("{spec}@u")]);
    let (first, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(180));
    resync(&b, &spec);
    wait_synced(&b, &spec, first, Duration::from_secs(180));
    assert_same(&a, &b, &spec);
    assert_same(&a, &b, &format!("{spec}@u"));
}

/// The mgr's snapshot schedule (`rbd mirror snapshot schedule add … 1m`) drives
/// replication with our daemon.
#[test]
fn mgr_snapshot_schedule_drives_replication() {
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "snapsched", "64M");
    let (first, _daemon) = enable_and_sync(&a, &b, &spec, Duration::from_secs(180));
    a.rbd(&["mirror", "snapshot", "schedule", "add", "--image", &spec, "1m"]);
    a.bench(&spec, "rand", "4K", "4M");
    let primary = a.export_sha256(&spec);
    let scheduled = lab::wait_for("a scheduled mirror snapshot", Duration::from_secs(200), || {
        let ids: Vec<u64> = snapshots(&a, &spec)
            .iter()
            .filter(|s| s["namespace"]["type"] == "mirror")
            .filter_map(|s| s["id"].as_u64())
            .collect();
        ids.iter().copied().max().filter(|&m| m > first).ok_or(format!("{ids:?}"))
    });
    println!("the mgr took mirror snapshot {scheduled}");
    wait_synced(&b, &spec, scheduled, Duration::from_secs(180));
    assert_eq!(b.export_sha256(&spec), primary);
}

/// The `rbd_data.` objects of `spec` on `site` (`rados ls` of the image's pool).
fn data_objects(site: &lab::Site, spec: &str) -> usize {
    let info = site.rbd_json(&["info", spec]);
    let prefix = format!("{}.", info["block_name_prefix"].as_str().expect("block_name_prefix"));
    site.rados(&["-p", lab::POOL, "ls"]).lines().filter(|l| l.starts_with(&prefix)).count()
}

/// A mirrored clone: it waits (the status says why) until the parent snapshot is synced at
/// site-b, then site-b's copy is cloned from the local copy of that snapshot (`rbd info`
/// names the parent), only the clone's own objects are copied (an object the clone zeroed
/// inside the parent overlap stays, so the parent's data does not show through), and both
/// sites read the same, after the first sync and after an incremental one; `rbd flatten` on
/// the primary flattens site-b's copy with the next mirror snapshot.
#[test]
fn a_clone_is_cloned_from_the_local_parent_snapshot_once_that_is_synced() {
    let (_serial, a, b) = sites();
    let parent = format!("{}/{}", lab::POOL, lab::unique("snap-parent"));
    let clone = format!("{}/{}", lab::POOL, lab::unique("snap-clone"));
    let _images = Images(vec![clone.clone(), parent.clone()]);
    let features = "layering,exclusive-lock,object-map,fast-diff";
    a.rbd(&["create", "--size", "32M", "--image-feature", features, &parent]);
    // Pattern bytes in all 8 objects (not zeros, which a flatten would not copy up).
    a.rbdio(&parent, &["write", "0", "33554432", "7"]);
    // Mirrored before its snapshot `base` exists: site-b gets `base` with the parent's next
    // mirror snapshot only.
    let _daemon = Daemon::start();
    let parent_first = enable(&a, &parent);
    wait_synced(&b, &parent, parent_first, Duration::from_secs(120));
    let base = format!("{parent}@base");
    a.rbd(&["snap", "create", &base]);
    a.rbd(&["snap", "protect", &base]);
    a.rbd(&["clone", "--image-feature", features, &base, &clone]);
    // The clone's own data (4 MiB objects): 4K writes into objects 0 and 5 (copy-up on the
    // primary), object 2 discarded whole (kept, zeroed), object 9 past the parent's end.
    a.rbd(&["resize", "--size", "40M", &clone]);
    a.rbdio(&clone, &["write", "4096", "4096", "1"]);
    a.rbdio(&clone, &["write", "20975616", "4096", "2"]);
    a.rbdio(&clone, &["discard", "8388608", "4194304"]);
    a.rbdio(&clone, &["write", "37748736", "8192", "3"]);
    let first = enable(&a, &clone);

    let waiting = lab::wait_for("the clone waits for its parent snapshot", Duration::from_secs(60), || {
        let v = a.rbd_json(&["mirror", "image", "status", &clone]);
        let peer = v["peer_sites"].as_array().and_then(|p| p.first()).cloned().unwrap_or_default();
        let description = peer["description"].as_str().unwrap_or("").to_owned();
        if description.contains("waiting for the parent image") {
            Ok(format!("{}: {description}", peer["state"].as_str().unwrap_or("")))
        } else {
            Err(format!("{v}"))
        }
    });
    println!("site-b's status of {clone} (at site-a): {waiting}");
    assert!(!b.rbd_ok(&["info", &clone]), "no local clone before the parent snapshot is here");

    let parent_next = mirror_snapshot(&a, &parent);
    wait_synced(&b, &parent, parent_next, Duration::from_secs(120));
    wait_synced(&b, &clone, first, Duration::from_secs(120));
    let info = b.rbd_json(&["info", &clone]);
    assert_eq!(info["parent"]["image"], image_name(&parent), "site-b's clone has the local parent: {info}");
    assert_eq!(info["parent"]["snapshot"], "base", "{info}");
    assert_same(&a, &b, &clone);
    let (own_a, own_b) = (data_objects(&a, &clone), data_objects(&b, &clone));
    assert_eq!(own_a, own_b, "site-b's clone holds the objects the primary clone holds");
    assert!(own_b <= 4, "only the clone's own objects are copied, not the parent's: {own_b} of 10");
    println!("{clone}: parent {} at site-b, {own_b} own objects of 10 on both sites", info["parent"]);

    // An incremental sync of the clone: a copy-up of object 6.
    a.rbdio(&clone, &["write", "25165824", "4096", "4"]);
    let next = mirror_snapshot(&a, &clone);
    wait_synced(&b, &clone, next, Duration::from_secs(120));
    assert_same(&a, &b, &clone);

    // `rbd flatten` on the primary: with the next mirror snapshot, site-b's clone has no
    // parent any more and the same content.
    a.rbd(&["flatten", "--no-progress", &clone]);
    let flattened = mirror_snapshot(&a, &clone);
    wait_synced(&b, &clone, flattened, Duration::from_secs(120));
    let info = b.rbd_json(&["info", &clone]);
    assert!(info.get("parent").is_none(), "site-b's clone is flattened too: {info}");
    assert_same(&a, &b, &clone);
    println!("{clone}: flattened on site-a, no parent on site-b after its next mirror snapshot");
}

/// The data objects of `spec` on `site` that exist (`rados ls`, by the image's
/// `block_name_prefix`); `None` while the image does not exist there.
fn data_object_count(site: &lab::Site, spec: &str) -> Option<usize> {
    let info = site.command_output("rbd", &["info", spec, "--format", "json"]).ok()?;
    let info: Value = serde_json::from_str(&info).ok()?;
    let prefix = format!("{}.", info["block_name_prefix"].as_str()?);
    let listed = site.command_output("rados", &["-p", lab::POOL, "ls"]).ok()?;
    Some(listed.lines().filter(|l| l.starts_with(&prefix)).count())
}

/// Issue 18's proof: a 4 MiB/s cap on the peer (`--rbd-mirror-rs-peer-bandwidth-limit 4M`)
/// holds within 10 % over a 30 s full sync of 128 MiB (32 objects of 4 MiB), measured from
/// the outside: from the first data object on site-b to the last one (`rados ls`), 31
/// objects. `/metrics` shows the cap and the waits; a runtime `config set` lifts it.
#[test]
fn the_peer_bandwidth_cap_holds_over_a_full_sync() {
    const CAP: f64 = 4.0 * 1024.0 * 1024.0;
    let (_serial, a, b) = sites();
    let (spec, _images) = new_image(&a, "bwcap", "128M");
    a.bench(&spec, "seq", "4M", "128M");
    let objects = data_object_count(&a, &spec).expect("site-a image");
    assert_eq!(objects, 32, "rbd bench wrote every object");
    let first = enable(&a, &spec);
    let _daemon = Daemon::start_with(&["--rbd-mirror-rs-peer-bandwidth-limit", "4M"]);

    let poll = |what: &str, done: &dyn Fn(usize) -> bool| {
        let start = std::time::Instant::now();
        loop {
            let n = data_object_count(&b, &spec).unwrap_or(0);
            if done(n) {
                return (std::time::Instant::now(), n);
            }
            assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}: {n} objects");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (t_first, n_first) = poll("the first object on site-b", &|n| n > 0);
    let (t_last, _) = poll("every object on site-b", &|n| n >= objects);
    let secs = (t_last - t_first).as_secs_f64();
    let bytes = ((objects - n_first) as f64) * CAP;
    let rate = bytes / secs;
    println!(
        "{} objects of 4 MiB after the first {n_first} in {secs:.2} s: {:.3} MiB/s, cap 4 MiB/s ({:+.1} %)",
        objects - n_first,
        rate / CAP * 4.0,
        (rate / CAP - 1.0) * 100.0
    );
    assert!((rate / CAP - 1.0).abs() <= 0.10, "sync rate {rate:.0} B/s is not within 10 % of the cap {CAP}");
    wait_synced(&b, &spec, first, Duration::from_secs(60));
    assert_same(&a, &b, &spec);

    let peer = "peer=\"site-a\"";
    assert_eq!(b.metric("rbd_mirror_rs_peer_bandwidth_limit_bytes", peer), Some(CAP));
    let throttled = b.metric("rbd_mirror_rs_peer_bandwidth_throttled_bytes", peer).unwrap_or(0.0);
    let waited = b.metric("rbd_mirror_rs_peer_bandwidth_wait_seconds", peer).unwrap_or(0.0);
    println!("metrics: throttled {throttled} bytes, waited {waited:.1} s");
    assert!(throttled >= 100.0 * 1024.0 * 1024.0, "throttled bytes {throttled}");
    assert!(waited >= secs, "wait seconds {waited} (summed over the objects in flight)");

    // Lifted at runtime.
    mirror::admin_command(&b, &["config", "set", "rbd_mirror_rs_peer_bandwidth_limit", "0"]);
    lab::wait_for("the cap lifted", Duration::from_secs(10), || {
        match b.metric("rbd_mirror_rs_peer_bandwidth_limit_bytes", peer) {
            Some(0.0) => Ok(()),
            v => Err(format!("{v:?}")),
        }
    });
}
